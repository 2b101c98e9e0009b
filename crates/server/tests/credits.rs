//! Accounts and credits on the real binary: `kill -9` under a load of priced predictions
//! (embedded, and two nodes sharing Redis or PostgreSQL) leaves every ledger balanced; the
//! payment webhook, signed by the PyPI `standardwebhooks` library, credits an order once;
//! two accounts are isolated from each other through the official Python client.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::money::{As, assert_balanced};
use common::{TOKEN, TestServer};
use serde_json::{Value, json};

/// A config that prices the built-in models: echo 1 credit, demo-image 2 a second (at most
/// 10 s, so 20 reserved).
const PRICED: &str = r#"
[[models]]
name = "augur/echo"
price = { per_prediction = 1 }

[[models]]
name = "augur/demo-image"
price = { per_second = 2, max_seconds = 10 }

[[credit_packs]]
product_id = "prod_100"
credits = 100
"#;

const PAYMENTS_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwJrgtuYvUXtM=";

fn config_file(dir: &Path) -> String {
    let file = dir.join("augur.toml");
    std::fs::write(&file, PRICED).unwrap();
    file.display().to_string()
}

/// Runs `clients` loops creating echo predictions (and a few slow priced ones) across the
/// accounts' tokens until `stop`; returns the acknowledged ids.
fn load(
    nodes: Vec<String>,
    tokens: Vec<String>,
    clients: usize,
    total: usize,
) -> (Arc<Mutex<Vec<String>>>, Vec<tokio::task::JoinHandle<()>>) {
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api = As::new(&nodes[c % nodes.len()], &tokens[c % tokens.len()]);
        let (acked, next) = (acked.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= total {
                    return;
                }
                let (model, input) = if n % 50 == 0 {
                    (
                        "augur/demo-image",
                        json!({"prompt": "slow", "width": 8, "height": 8, "steps": 10, "step_ms": 100}),
                    )
                } else {
                    ("augur/echo", json!({"text": format!("{n}")}))
                };
                match api.try_create(model, input).await {
                    Ok((status, body)) if (200..300).contains(&status) => {
                        acked
                            .lock()
                            .unwrap()
                            .push(body["id"].as_str().unwrap().to_owned());
                    }
                    // 402 once an account runs dry; anything else is a node dying under it.
                    Ok(_) | Err(_) => {}
                }
            }
        }));
    }
    (acked, tasks)
}

async fn wait_for(count: &Arc<Mutex<Vec<String>>>, at_least: usize) {
    let until = Instant::now() + Duration::from_secs(60);
    while count.lock().unwrap().len() < at_least && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// Every acknowledged prediction settles; every account's ledger balances.
async fn check_after_restart(admin: &As, acked: &[String]) {
    let api = common::Api {
        http: reqwest::Client::new(),
        base: admin.base.clone(),
    };
    for id in acked {
        api.settled(id, Duration::from_secs(90)).await;
    }
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = api
            .all_ids()
            .await
            .into_iter()
            .filter(|(_, s)| !matches!(s.as_str(), "succeeded" | "failed" | "canceled"))
            .count();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < until, "{pending} never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for user in USERS {
        let balance = assert_balanced(admin, user).await;
        assert!(balance >= 0, "{user}: {balance}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_priced_load_keeps_every_ledger_balanced() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_file(dir.path());
    let env = [("AUGUR_CONFIG", config.as_str())];
    let mut server = TestServer::start(&data, &env);
    let admin = As::new(&server.url, TOKEN);
    let mut tokens = Vec::new();
    for user in USERS {
        // Sign-up 10 + 140: some accounts run dry under the load and get 402s.
        tokens.push(admin.account(user, 140).await);
    }
    let (acked, tasks) = load(vec![server.url.clone()], tokens, 32, 1000);
    wait_for(&acked, 300).await;
    server.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= 300, "only {} acknowledged", acked.len());
    eprintln!("{} priced creates acknowledged before kill -9", acked.len());

    let server = TestServer::start(&data, &env);
    let admin = As::new(&server.url, TOKEN);
    check_after_restart(&admin, &acked).await;
}

/// Two nodes share `backend`; one is killed mid-load and restarted.
#[cfg(any(feature = "redis", feature = "postgres", feature = "cloudflare"))]
async fn two_nodes_killed_under_priced_load(backend: common::backends::Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let env = [("AUGUR_CONFIG", config.as_str())];
    let mut a = TestServer::start_on(&backend.url, &dir.path().join("a"), &env);
    let b = TestServer::start_on(&backend.url, &dir.path().join("b"), &env);
    let admin = As::new(&b.url, TOKEN);
    let mut tokens = Vec::new();
    for user in USERS {
        tokens.push(admin.account(user, 90).await);
    }
    let (acked, tasks) = load(vec![a.url.clone(), b.url.clone()], tokens, 32, 600);
    wait_for(&acked, 150).await;
    a.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    eprintln!(
        "{}: {} priced creates acknowledged around kill -9",
        backend.name,
        acked.len()
    );
    let _a = TestServer::start_on(&backend.url, &dir.path().join("a"), &env);
    check_after_restart(&admin, &acked).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_redis_killed_under_priced_load_keep_ledgers_balanced() {
    let Some(backend) = common::backends::redis() else {
        return;
    };
    two_nodes_killed_under_priced_load(backend).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_postgres_killed_under_priced_load_keep_ledgers_balanced() {
    let Some(backend) = common::backends::postgres() else {
        return;
    };
    two_nodes_killed_under_priced_load(backend).await;
}

#[cfg(feature = "cloudflare")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_cloudflare_killed_under_priced_load_keep_ledgers_balanced() {
    let Some(backend) = common::backends::cloudflare() else {
        return;
    };
    two_nodes_killed_under_priced_load(backend).await;
}

fn script(name: &str) -> String {
    format!("{}/tests/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_are_isolated_through_the_python_client() {
    let Some(python) = common::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let admin = As::new(&server.url, TOKEN);
    let alice = admin.account("alice", 0).await;
    let bob = admin.account("bob", 0).await;
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script("isolation.py"))
            .env("AUGUR_URL", &server.url)
            .env("AUGUR_ADMIN_TOKEN", TOKEN)
            .env("AUGUR_TOKEN_A", alice)
            .env("AUGUR_TOKEN_B", bob)
            .output()
            .map(|o| (o, server))
    })
    .await
    .unwrap()
    .expect("run python");
    let (output, server) = output;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("all isolation checks passed"),
        "{stdout}\n{stderr}\nserver log:\n{}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
}

/// Signs `payload` as the payment provider would, with the PyPI library.
fn sign(python: &str, msg_id: &str, timestamp: i64, payload: &str) -> String {
    sign_with(python, PAYMENTS_SECRET, msg_id, timestamp, payload)
}

/// Signs `payload` with `secret` (`whsec_…`, or Polar's `polar_whs_…` signed as Polar does).
fn sign_with(python: &str, secret: &str, msg_id: &str, timestamp: i64, payload: &str) -> String {
    let output = Command::new(python)
        .arg(script("sign_payment.py"))
        .args([secret, msg_id, &timestamp.to_string(), payload])
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn deliver(
    http: &reqwest::Client,
    base: &str,
    msg_id: &str,
    timestamp: i64,
    signature: &str,
    payload: &str,
) -> (u16, Value) {
    let response = http
        .post(format!("{base}/v1/payments/webhook"))
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header("content-type", "application/json")
        .body(payload.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn order(id: &str, product: &str, customer: &str) -> String {
    json!({
        "type": "order.paid",
        "timestamp": "2026-12-06T10:00:00Z",
        "data": {
            "id": id,
            "status": "paid",
            "product_id": product,
            "total_amount": 1000,
            "currency": "usd",
            "customer": {"id": "cus_1", "external_id": customer, "email": "a@example.com"},
        }
    })
    .to_string()
}

/// A server with the priced config whose payment webhooks are signed with `secret`.
fn payments_server(dir: &Path, secret: &str) -> TestServer {
    let config = config_file(dir);
    TestServer::start(
        &dir.join("data"),
        &[
            ("AUGUR_CONFIG", config.as_str()),
            ("AUGUR_PAYMENTS_WEBHOOK_SECRET", secret),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paid_orders_are_credited_once_and_forged_ones_refused() {
    let Some(python) = common::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = payments_server(dir.path(), PAYMENTS_SECRET);
    let admin = As::new(&server.url, TOKEN);
    admin.account("alice", 0).await;
    let http = reqwest::Client::new();
    let payload = order("ord_1", "prod_100", "alice");
    let now = now_secs();
    let signature = sign(&python, "msg_1", now, &payload);

    // Replays, in sequence and 10 at once: credited once.
    for _ in 0..3 {
        let (status, body) = deliver(&http, &server.url, "msg_1", now, &signature, &payload).await;
        assert_eq!(status, 200, "{body}");
    }
    let concurrent: Vec<_> = (0..10)
        .map(|_| {
            let (http, base, signature, payload) = (
                http.clone(),
                server.url.clone(),
                signature.clone(),
                payload.clone(),
            );
            tokio::spawn(
                async move { deliver(&http, &base, "msg_1", now, &signature, &payload).await },
            )
        })
        .collect();
    for c in concurrent {
        assert_eq!(c.await.unwrap().0, 200);
    }
    let (_, credits) = admin.call("GET", "/v1/accounts/alice/credits", None).await;
    assert_eq!(
        credits["balance"], 110,
        "10 at sign-up + one pack: {credits}"
    );

    // A bad signature and a stale timestamp: 401, nothing changes.
    let other = order("ord_2", "prod_100", "alice");
    let (status, body) = deliver(&http, &server.url, "msg_2", now, &signature, &other).await;
    assert_eq!(status, 401, "{body}");
    let stale = now - 600;
    let stale_signature = sign(&python, "msg_2", stale, &other);
    let (status, body) =
        deliver(&http, &server.url, "msg_2", stale, &stale_signature, &other).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("5 minutes"),
        "{body}"
    );

    // Unknown product or account: a 4xx the provider sees.
    for (payload, needle) in [
        (order("ord_3", "prod_unknown", "alice"), "prod_unknown"),
        (order("ord_4", "prod_100", "mallory"), "mallory"),
    ] {
        let signature = sign(&python, "msg_3", now, &payload);
        let (status, body) = deliver(&http, &server.url, "msg_3", now, &signature, &payload).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["detail"].as_str().unwrap().contains(needle), "{body}");
    }
    let (_, credits) = admin.call("GET", "/v1/accounts/alice/credits", None).await;
    assert_eq!(credits["balance"], 110, "{credits}");
    let topups: Vec<_> = admin
        .ledger("alice")
        .await
        .into_iter()
        .filter(|e| e["reason"] == "topup")
        .collect();
    assert_eq!(topups.len(), 1, "{topups:?}");
    assert_eq!(topups[0]["reference"], "ord_1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polars_dashboard_secret_is_taken_as_shown() {
    let Some(python) = common::python() else {
        return;
    };
    const POLAR_SECRET: &str = "polar_whs_Hq3b7uLqY0hX2WdJ9vKc5mTnR8sAeZpF1oGiBy4wDxE";
    let dir = tempfile::tempdir().unwrap();
    let server = payments_server(dir.path(), POLAR_SECRET);
    let admin = As::new(&server.url, TOKEN);
    admin.account("gus", 0).await;
    let http = reqwest::Client::new();
    let payload = order("ord_p1", "prod_100", "gus");
    let now = now_secs();
    // Signed with another secret: refused.
    let forged = sign(&python, "msg_p1", now, &payload);
    let (status, body) = deliver(&http, &server.url, "msg_p1", now, &forged, &payload).await;
    assert_eq!(status, 401, "{body}");
    // Signed as Polar signs with the secret its dashboard shows: credited.
    let signature = sign_with(&python, POLAR_SECRET, "msg_p1", now, &payload);
    let (status, body) = deliver(&http, &server.url, "msg_p1", now, &signature, &payload).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(assert_balanced(&admin, "gus").await, 110);
}

/// Runs the `augur` CLI against `server` with the admin token.
fn cli(server: &TestServer, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_augur"))
        .args(args)
        .env("AUGUR_URL", &server.url)
        .env("AUGUR_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "augur {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_accounts_issues_tokens_and_grants_credits() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let created = cli(&server, &["accounts", "create", "erin", "--name", "Erin"]);
    assert!(created.contains("\"username\": \"erin\""), "{created}");
    let listed = cli(&server, &["accounts", "list"]);
    assert!(listed.starts_with("erin\tErin\t"), "{listed}");
    let token = cli(&server, &["accounts", "token", "erin"]);
    let token = token.trim();
    assert!(token.starts_with("aug_"), "{token}");
    let granted = cli(
        &server,
        &["credits", "grant", "erin", "15", "--memo", "hello"],
    );
    assert_eq!(granted.trim(), "balance 25 reserved 0 available 25");
    let taken = cli(&server, &["credits", "grant", "erin", "-5"]);
    assert_eq!(taken.trim(), "balance 20 reserved 0 available 20");
    assert_eq!(
        cli(&server, &["credits", "show", "erin"]).trim(),
        "balance 20 reserved 0 available 20"
    );
    // The token works, as erin.
    let (status, me) = As::new(&server.url, token)
        .call("GET", "/v1/account", None)
        .await;
    assert_eq!((status, me["username"].as_str()), (200, Some("erin")));
    let admin = As::new(&server.url, TOKEN);
    assert_eq!(assert_balanced(&admin, "erin").await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_accounts_backlog_does_not_starve_another_on_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    // Two slots, so that a backlog forms.
    let server = TestServer::start(&dir.path().join("data"), &[("AUGUR_WORKERS", "2")]);
    let input = json!({"prompt": "p", "width": 8, "height": 8, "steps": 1, "step_ms": 20});
    assert_a_backlog_starves_nobody(&server, "augur/demo-image", input, Backlog::Creates).await;
}

/// A model that takes about 20 ms and runs two at a time, whatever the server's slots.
const NAP_MODEL: &str = "[[models]]\nname = \"acme/nap\"\nprovider = \"command\"\n\
    command = [\"/bin/sh\", \"-c\", \"sleep 0.02; echo '{}'\"]\nconcurrency = 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_behind_a_models_own_limit_starves_nobody() {
    // The server has its 64 slots; the model runs two at a time.
    let dir = tempfile::tempdir().unwrap();
    let server = start_configured(dir.path(), NAP_MODEL);
    assert_a_backlog_starves_nobody(&server, "acme/nap", json!({}), Backlog::Creates).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_behind_a_models_own_limit_starves_nobody() {
    // The batch's 1,000 items are queued in one write, with no slot asked for.
    let dir = tempfile::tempdir().unwrap();
    let server = start_configured(dir.path(), NAP_MODEL);
    assert_a_backlog_starves_nobody(&server, "acme/nap", json!({}), Backlog::Batch).await;
}

/// How the busy account queues its 1,000 predictions.
enum Backlog {
    /// One create at a time, from 16 clients.
    Creates,
    /// One batch.
    Batch,
}

/// A server on an embedded store in `dir`, configured by `toml` (written to `dir/augur.toml`).
fn start_configured(dir: &Path, toml: &str) -> TestServer {
    let config = dir.join("augur.toml");
    std::fs::write(&config, toml).unwrap();
    let config = config.display().to_string();
    TestServer::start(&dir.join("data"), &[("AUGUR_CONFIG", config.as_str())])
}

/// One account queues 1,000 predictions of `model` (each about 20 ms, two at a time: a backlog
/// of about ten seconds), then another account creates one: it must start next, not after
/// the backlog.
async fn assert_a_backlog_starves_nobody(
    server: &TestServer,
    model: &str,
    input: Value,
    backlog: Backlog,
) {
    let admin = As::new(&server.url, TOKEN);
    let busy = As::new(&server.url, &admin.account("busy", 0).await);
    let quiet = As::new(&server.url, &admin.account("quiet", 0).await);
    queue_backlog(&busy, model, &input, backlog).await;
    assert_the_newcomer_goes_next(&busy, &quiet, model, input, 8).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_another_node_finds_on_postgres_starves_nobody() {
    if let Some(backend) = common::backends::postgres() {
        // PostgreSQL keeps an account's last rank in a row per connection, so creates that
        // commit at the same moment on different connections may share a rank: the newcomer
        // may tie with as many of the backlog as it had clients (16).
        assert_a_backlog_another_node_finds_starves_nobody(backend, 8 + 16).await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_another_node_finds_on_redis_starves_nobody() {
    if let Some(backend) = common::backends::redis() {
        assert_a_backlog_another_node_finds_starves_nobody(backend, 8).await;
    }
}

/// Node a queues the backlog; node b starts once it is queued, with its 64 slots free and no
/// sign of a backlog of its own, so its first claim takes more of the model than the model
/// has room for and hands the rest back. The hand-back must give back the place in the fair
/// order that the claim took, or the next account's prediction waits behind it.
#[cfg(any(feature = "redis", feature = "postgres"))]
async fn assert_a_backlog_another_node_finds_starves_nobody(
    backend: common::backends::Backend,
    allowed: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("augur.toml");
    std::fs::write(&config, NAP_MODEL).unwrap();
    let env = [("AUGUR_CONFIG", config.to_str().unwrap())];
    let a = TestServer::start_on(&backend.url, &dir.path().join("a"), &env);
    let admin = As::new(&a.url, TOKEN);
    let busy = As::new(&a.url, &admin.account("busy", 0).await);
    let quiet = As::new(&a.url, &admin.account("quiet", 0).await);
    queue_backlog(&busy, "acme/nap", &json!({}), Backlog::Creates).await;
    let b = TestServer::start_on(&backend.url, &dir.path().join("b"), &env);
    let b_api = b.client();
    let started = Instant::now();
    while b_api.jobs_with_outcome("succeeded").await == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "b ran nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // b's first claim took its jobs and handed the rest back (now, or in the next moments):
    // the newcomer comes while most of those are still queued.
    assert_the_newcomer_goes_next(&busy, &quiet, "acme/nap", json!({}), allowed).await;
}

/// `busy` queues 1,000 predictions of `model`.
async fn queue_backlog(busy: &As, model: &str, input: &Value, backlog: Backlog) {
    match backlog {
        Backlog::Creates => {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (busy, input, next) = (busy.clone(), input.clone(), next.clone());
                    let model = model.to_owned();
                    tokio::spawn(async move {
                        while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 1000 {
                            let (status, body) =
                                busy.try_create(&model, input.clone()).await.unwrap();
                            assert_eq!(status, 201, "{body}");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
        Backlog::Batch => {
            let (status, body) = busy
                .call(
                    "POST",
                    "/v1/batches",
                    Some(json!({"model": model, "inputs": vec![input.clone(); 1000]})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
    }
}

/// `quiet` creates one prediction of `model` behind `busy`'s backlog: it must start next, with
/// at most `allowed` of the backlog starting meanwhile.
async fn assert_the_newcomer_goes_next(
    busy: &As,
    quiet: &As,
    model: &str,
    input: Value,
    allowed: usize,
) {
    let started = Instant::now();
    let (status, mine) = quiet.try_create(model, input).await.unwrap();
    assert_eq!(status, 201, "{mine}");
    let id = mine["id"].as_str().unwrap().to_owned();
    let mine = loop {
        let (_, p) = quiet
            .call("GET", &format!("/v1/predictions/{id}"), None)
            .await;
        if p["status"] == "succeeded" {
            break p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the quiet account's prediction waited behind the backlog: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let waited = started.elapsed();
    // Fairness is an order, not a time (a loaded machine makes every wait longer): count the
    // busy account's predictions that started while the quiet one was queued. The two slots'
    // running predictions and a tie of fair-queuing ranks may start in that window; the
    // backlog, 700 or more, must not.
    let (created, ran) = (
        mine["created_at"].as_str().unwrap().to_owned(),
        mine["started_at"].as_str().unwrap().to_owned(),
    );
    let (mut still_queued, mut overtook) = (0, 0);
    for p in busy.every("/v1/predictions?limit=1000").await {
        match p["started_at"].as_str() {
            None => still_queued += 1,
            // RFC 3339 with a fixed number of digits, in UTC: ordered as text.
            Some(at) if at > created.as_str() && at < ran.as_str() => overtook += 1,
            Some(_) => {}
        }
    }
    eprintln!(
        "the quiet account's prediction ran after {waited:?}; {overtook} of the busy account's \
         started while it was queued, {still_queued} still queued"
    );
    assert!(
        still_queued > 500,
        "the busy account's backlog drained first ({still_queued} left after {waited:?})"
    );
    assert!(
        overtook <= allowed,
        "{overtook} of the busy account's predictions started while the quiet one was queued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_second_model_that_finishes_at_once_is_charged_its_started_second() {
    // Echo reports nothing while it runs, so the worker writes its start and its success in one
    // step: the run still counts from when it was handed to the model.
    let dir = tempfile::tempdir().unwrap();
    let server = start_configured(
        dir.path(),
        "[[models]]\nname = \"augur/echo\"\nprice = { per_second = 3, max_seconds = 3 }\n",
    );
    let admin = As::new(&server.url, TOKEN);
    let fay = As::new(&server.url, &admin.account("fay", 0).await);
    let (status, created) = fay
        .try_create("augur/echo", json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let done = loop {
        let (_, p) = fay
            .call("GET", &format!("/v1/predictions/{id}"), None)
            .await;
        if p["status"] == "succeeded" {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        done["metrics"]["predict_time"].as_f64().unwrap() > 0.0,
        "{done}"
    );
    let charge: Vec<_> = admin
        .ledger("fay")
        .await
        .into_iter()
        .filter(|e| e["reason"] == "charge")
        .collect();
    assert_eq!(charge.len(), 1, "{charge:?}");
    assert_eq!(charge[0]["delta"], -3, "one started second at 3 credits");
    // The sign-up grant of 10, less one second.
    assert_eq!(assert_balanced(&admin, "fay").await, 7);
}
