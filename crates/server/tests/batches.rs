//! Batches on the real binary, on every backend: 200 items succeed with exact counts and one
//! `batch.completed` webhook that the PyPI `standardwebhooks` library verifies; an account
//! that cannot afford every item gets 402 and nothing is created; a cancel mid-batch refunds
//! exactly the canceled items; `kill -9` mid-batch (embedded, and one of two nodes on Redis
//! and on PostgreSQL) still ends with every item terminal, one completion message by
//! `webhook-id`, and balanced ledgers.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::hooks::{Inbox, listen_on};
use common::money::{As, assert_balanced};
use common::{TOKEN, TestServer, eventually};

/// Echo costs 1 credit, demo-image 1 per prediction; a prediction canceled after it started
/// is refunded, so a cancel refunds every item it stops.
const PRICED: &str = r#"
[accounts]
canceled_after_start = "refund"

[[models]]
name = "augur/echo"
price = { per_prediction = 1 }

[[models]]
name = "augur/demo-image"
price = { per_prediction = 1 }
"#;

fn config_file(dir: &Path) -> String {
    let file = dir.join("augur.toml");
    std::fs::write(&file, PRICED).unwrap();
    file.display().to_string()
}

/// A webhook receiver on a free loopback port; returns its URL.
async fn receiver(inbox: &Inbox) -> (String, tokio::task::JoinHandle<()>) {
    let addr = common::hooks::free_port();
    let task = listen_on(addr, inbox.clone()).await;
    (format!("http://{addr}/hook"), task)
}

/// Polls the batch until it is terminal; returns it.
async fn settled_batch(api: &As, id: &str, deadline: Duration) -> Value {
    let until = Instant::now() + deadline;
    loop {
        let (status, batch) = api.call("GET", &format!("/v1/batches/{id}"), None).await;
        assert_eq!(status, 200, "{batch}");
        if matches!(
            batch["status"].as_str(),
            Some("succeeded" | "failed" | "canceled" | "completed_with_errors")
        ) {
            return batch;
        }
        assert!(Instant::now() < until, "batch {id} did not finish: {batch}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every item of a batch (`id`, `status`), through the paged list.
async fn items(api: &As, id: &str, status: Option<&str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut path = format!("/v1/batches/{id}/predictions?limit=75");
    if let Some(status) = status {
        path.push_str(&format!("&status={status}"));
    }
    loop {
        let (code, page) = api.call("GET", &path, None).await;
        assert_eq!(code, 200, "{page}");
        for p in page["results"].as_array().unwrap() {
            out.push((
                p["id"].as_str().unwrap().to_owned(),
                p["status"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next"].as_str() {
            Some(next) => path = next.strip_prefix(&api.base).unwrap().to_owned(),
            None => return out,
        }
    }
}

/// The deliveries of `batch`'s completion message, and how many distinct message ids they
/// carry.
fn completions(inbox: &Inbox, batch: &str) -> (Vec<common::hooks::Received>, usize) {
    let got: Vec<_> = inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|r| {
            serde_json::from_str::<Value>(&r.body).is_ok_and(|b| b["id"] == batch)
                && r.headers["webhook-id"].ends_with("_completed")
        })
        .cloned()
        .collect();
    let ids: HashSet<_> = got
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    (got, ids.len())
}

/// Verifies deliveries with the official verifiers and the secret `api`'s account signs
/// with.
async fn verify(api: &As, dir: &Path, received: &[common::hooks::Received]) {
    let Some(python) = common::python() else {
        return;
    };
    let (_, secret) = api.call("GET", "/v1/webhooks/default/secret", None).await;
    common::hooks::verify(&python, dir, received, secret["key"].as_str().unwrap());
}

/// 200 echo items succeed: exact counts, the items listed and filtered, one signed completion
/// message; the batch's idempotency key replays it; a bad item refuses the whole batch.
async fn two_hundred_succeed(api: &As, dir: &Path) {
    let inbox: Inbox = Default::default();
    let (hook, receiver) = receiver(&inbox).await;
    let inputs: Vec<Value> = (0..200)
        .map(|i| json!({"text": format!("item {i}")}))
        .collect();
    let body = json!({"model": "augur/echo", "inputs": inputs, "webhook": hook});
    let response = api
        .http
        .post(format!("{}/v1/batches", api.base))
        .bearer_auth(&api.token)
        .header("Idempotency-Key", "batch-200")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["total"], 200, "{created}");

    let done = settled_batch(api, &id, Duration::from_secs(90)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["counts"],
        json!({"starting": 0, "processing": 0, "succeeded": 200, "failed": 0, "canceled": 0})
    );
    assert_eq!(done["progress"], 1.0);
    assert!(done["completed_at"].is_string(), "{done}");
    let all = items(api, &id, None).await;
    assert_eq!(all.len(), 200);
    assert!(all.iter().all(|(_, s)| s == "succeeded"), "{all:?}");
    assert_eq!(
        all.iter().map(|(i, _)| i).collect::<HashSet<_>>().len(),
        200
    );
    assert_eq!(items(api, &id, Some("succeeded")).await.len(), 200);
    assert!(items(api, &id, Some("failed")).await.is_empty());

    eventually("the completion webhook", Duration::from_secs(30), || {
        let inbox = inbox.clone();
        let id = id.clone();
        async move { !completions(&inbox, &id).0.is_empty() }
    })
    .await;
    // Time for a second message, if there were one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (received, distinct) = completions(&inbox, &id);
    assert_eq!(distinct, 1, "one completion message: {received:?}");
    let sent: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(sent["status"], "succeeded");
    assert_eq!(sent["counts"]["succeeded"], 200);
    // No item messages: the filter was left empty.
    assert_eq!(inbox.lock().unwrap().len(), received.len());
    verify(api, dir, &received).await;

    // The same key and body: the same batch, not a second one.
    let again = api
        .http
        .post(format!("{}/v1/batches", api.base))
        .bearer_auth(&api.token)
        .header("Idempotency-Key", "batch-200")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], id);

    // One bad item refuses the batch, naming the item and field.
    let (_, before) = api.call("GET", "/v1/batches", None).await;
    let (status, error) = api
        .call(
            "POST",
            "/v1/batches",
            Some(json!({"model": "augur/demo-image", "inputs": [{"prompt": "ok"}, {"prompt": "x", "width": "wide"}]})),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["field"].as_str().unwrap().starts_with("inputs[1]"),
        "{error}"
    );
    let (_, after) = api.call("GET", "/v1/batches", None).await;
    assert_eq!(before["results"], after["results"]);
    receiver.abort();
}

/// The seeds' flow: uploaded images plus one shared prompt make one item per file, and the
/// model sees each file's bytes.
async fn one_item_per_uploaded_file(api: &As) {
    let mut ids = Vec::new();
    for n in 0..3u8 {
        let file = common::upload(&api.http, &api.base, &format!("img{n}.bin"), &[n; 5]).await;
        ids.push(file["id"].as_str().unwrap().to_owned());
    }
    let (status, created) = api
        .call(
            "POST",
            "/v1/batches",
            Some(json!({"model": "augur/echo", "input": {"prompt": "make it blue"}, "files": ids, "file_input": "image"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let done = settled_batch(api, id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let (_, page) = api
        .call("GET", &format!("/v1/batches/{id}/predictions"), None)
        .await;
    let mut seen = Vec::new();
    for item in page["results"].as_array().unwrap() {
        assert_eq!(item["input"]["prompt"], "make it blue");
        let url = item["input"]["image"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("{}/v1/files/", api.base)),
            "{item}"
        );
        // Built-in models get the bytes as a data URI.
        let data = item["output"]["image"].as_str().unwrap();
        assert!(data.starts_with("data:"), "{item}");
        seen.push(data.to_owned());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "each item saw its own file: {seen:?}");
}

/// An account with 30 credits asks for 50 items: 402, and nothing exists.
async fn unaffordable_batch_creates_nothing(admin: &As, user: &str) {
    let token = admin.account(user, 20).await;
    let api = As::new(&admin.base, &token);
    let inputs: Vec<Value> = (0..50).map(|i| json!({"text": format!("{i}")})).collect();
    let (status, error) = api
        .call(
            "POST",
            "/v1/batches",
            Some(json!({"model": "augur/echo", "inputs": inputs})),
        )
        .await;
    assert_eq!(status, 402, "{error}");
    assert_eq!(error["available"], 30, "{error}");
    assert_eq!(error["price"], 50, "{error}");
    let (_, batches) = api.call("GET", "/v1/batches", None).await;
    assert_eq!(batches["results"], json!([]));
    let (_, predictions) = api.call("GET", "/v1/predictions", None).await;
    assert_eq!(predictions["results"], json!([]));
    assert_eq!(assert_balanced(admin, user).await, 30);
}

/// A cancel mid-batch: every item ends succeeded or canceled, and exactly the canceled ones
/// are refunded.
async fn cancel_refunds_the_canceled_items(admin: &As, user: &str) {
    let token = admin.account(user, 90).await;
    let api = As::new(&admin.base, &token);
    let inputs: Vec<Value> = (0..20)
        .map(|i| json!({"prompt": format!("slow {i}"), "width": 8, "height": 8, "steps": 10, "step_ms": 100}))
        .collect();
    let (status, created) = api
        .call(
            "POST",
            "/v1/batches",
            Some(json!({"model": "augur/demo-image", "inputs": inputs})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let progress = tokio::spawn(read_progress(api.clone(), id.clone()));
    eventually("an item to succeed", Duration::from_secs(60), || {
        let (api, id) = (api.clone(), id.clone());
        async move {
            let (_, b) = api.call("GET", &format!("/v1/batches/{id}"), None).await;
            b["counts"]["succeeded"].as_u64().unwrap_or(0) >= 1
        }
    })
    .await;
    let (status, canceled) = api
        .call("POST", &format!("/v1/batches/{id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{canceled}");
    let done = settled_batch(&api, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "canceled", "{done}");
    let succeeded = done["counts"]["succeeded"].as_i64().unwrap();
    let canceled = done["counts"]["canceled"].as_i64().unwrap();
    assert_eq!(succeeded + canceled, 20, "{done}");
    assert!(
        canceled > 0,
        "the cancel came too late to test anything: {done}"
    );
    let all = items(&api, &id, None).await;
    assert_eq!(
        all.iter().filter(|(_, s)| s == "canceled").count() as i64,
        canceled
    );
    // The progress stream showed the batch filling up, and ended with it canceled.
    let events = tokio::time::timeout(Duration::from_secs(30), progress)
        .await
        .expect("the progress stream ends")
        .unwrap();
    let (last_kind, last) = events.last().unwrap();
    assert_eq!(last_kind, "done", "{events:?}");
    assert_eq!(last["status"], "canceled");
    assert_eq!(last["counts"], done["counts"]);
    let settled: Vec<u64> = events
        .iter()
        .map(|(_, b)| {
            ["succeeded", "failed", "canceled"]
                .iter()
                .map(|s| b["counts"][s].as_u64().unwrap())
                .sum()
        })
        .collect();
    assert!(settled.windows(2).all(|w| w[0] <= w[1]), "{settled:?}");
    assert!(
        events
            .iter()
            .any(|(k, b)| k == "batch" && b["status"] == "processing"),
        "progress was shown before the end: {events:?}"
    );
    let balance = assert_balanced(admin, user).await;
    assert_eq!(
        balance,
        100 - succeeded,
        "charged exactly the succeeded items"
    );
    let ledger = admin.ledger(user).await;
    let refunds = ledger.iter().filter(|e| e["reason"] == "refund").count() as i64;
    assert_eq!(refunds, canceled, "refunded exactly the canceled items");
}

/// Reads a batch's progress stream (`event`, JSON `data`) until it ends.
async fn read_progress(api: As, id: String) -> Vec<(String, Value)> {
    use futures::StreamExt;
    let response = api
        .http
        .get(format!("{}/v1/batches/{id}/stream", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let (mut buffer, mut events, mut kind) = (String::new(), Vec::new(), String::new());
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let line = line.trim_end();
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                events.push((kind.clone(), serde_json::from_str(data).unwrap()));
            }
        }
    }
    events
}

/// Everything one backend must do with batches.
async fn batches_work_on(store_url: &str, dir: &Path) {
    let config = config_file(dir);
    let env = [("AUGUR_CONFIG", config.as_str()), ("AUGUR_WORKERS", "4")];
    let server = TestServer::start_on(store_url, &dir.join("node"), &env);
    let admin = As::new(&server.url, TOKEN);
    two_hundred_succeed(&admin, dir).await;
    one_item_per_uploaded_file(&admin).await;
    unaffordable_batch_creates_nothing(&admin, "poor").await;
    cancel_refunds_the_canceled_items(&admin, "canceler").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded://{}", dir.path().join("data").display());
    batches_work_on(&url, dir.path()).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_on_redis() {
    let Some(backend) = common::backends::redis() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    batches_work_on(&backend.url, dir.path()).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_on_redis_cluster() {
    let Some(backend) = common::backends::redis_cluster() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    batches_work_on(&backend.url, dir.path()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_on_postgres() {
    let Some(backend) = common::backends::postgres() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    batches_work_on(&backend.url, dir.path()).await;
}

/// One account's 200-item batch does not hold up another account's prediction of the same
/// model: the queue takes turns between accounts, batch or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_big_batch_does_not_starve_another_account() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let env = [("AUGUR_CONFIG", config.as_str()), ("AUGUR_WORKERS", "2")];
    let server = TestServer::start(&dir.path().join("data"), &env);
    let admin = As::new(&server.url, TOKEN);
    let big = As::new(&server.url, &admin.account("big", 200).await);
    let small = As::new(&server.url, &admin.account("small", 0).await);
    let inputs: Vec<Value> = (0..200)
        .map(|i| json!({"prompt": format!("{i}"), "width": 8, "height": 8, "steps": 5, "step_ms": 20}))
        .collect();
    let (status, created) = big
        .call(
            "POST",
            "/v1/batches",
            Some(json!({"model": "augur/demo-image", "inputs": inputs})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, mine) = small
        .call(
            "POST",
            "/v1/models/augur/demo-image/predictions",
            Some(json!({"input": {"prompt": "me", "width": 8, "height": 8, "steps": 5, "step_ms": 20}})),
        )
        .await;
    assert_eq!(status, 201, "{mine}");
    let api = common::Api {
        http: reqwest::Client::new(),
        base: server.url.clone(),
    };
    let settled = api
        .settled(mine["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(settled["status"], "succeeded");
    let (_, batch) = big.call("GET", &format!("/v1/batches/{id}"), None).await;
    let done = batch["counts"]["succeeded"].as_u64().unwrap();
    assert!(
        done < 50,
        "the other account waited for {done} batch items: {batch}"
    );
    settled_batch(&big, &id, Duration::from_secs(120)).await;
    assert_balanced(&admin, "big").await;
}

/// Starts a priced batch of 200 slowish items for a fresh account, kills `victim` (-9) once
/// some have settled, restarts it with `restart`, and checks the end state through `survivor`:
/// every item terminal, the batch succeeded, one completion message id, the ledger balanced.
async fn kill_9_mid_batch(
    mut victim: TestServer,
    restart: impl FnOnce() -> TestServer,
    survivor_url: Option<String>,
    dir: &Path,
) {
    let inbox: Inbox = Default::default();
    let (hook, receiver) = receiver(&inbox).await;
    let admin = As::new(&victim.url, TOKEN);
    let token = admin.account("crashy", 200).await;
    let api = As::new(&victim.url, &token);
    let inputs: Vec<Value> = (0..200)
        .map(|i| json!({"prompt": format!("item {i}"), "width": 8, "height": 8, "steps": 4, "step_ms": 25}))
        .collect();
    let (status, created) = api
        .call(
            "POST",
            "/v1/batches",
            Some(json!({"model": "augur/demo-image", "inputs": inputs, "webhook": hook})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    eventually("some items to settle", Duration::from_secs(60), || {
        let (api, id) = (api.clone(), id.clone());
        async move {
            let (_, b) = api.call("GET", &format!("/v1/batches/{id}"), None).await;
            b["counts"]["succeeded"].as_u64().unwrap_or(0) >= 20
        }
    })
    .await;
    victim.kill9();
    let restarted = restart();
    let base = survivor_url.unwrap_or_else(|| restarted.url.clone());
    let api = As::new(&base, &token);
    let admin = As::new(&base, TOKEN);
    let done = settled_batch(&api, &id, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["succeeded"], 200, "{done}");
    let all = items(&api, &id, None).await;
    assert_eq!(all.len(), 200);
    assert!(all.iter().all(|(_, s)| s == "succeeded"), "{all:?}");
    eventually("the completion webhook", Duration::from_secs(60), || {
        let inbox = inbox.clone();
        let id = id.clone();
        async move { !completions(&inbox, &id).0.is_empty() }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (received, distinct) = completions(&inbox, &id);
    assert_eq!(distinct, 1, "one completion message id: {received:?}");
    // Signed with the account's own secret, which its token reads.
    verify(&api, dir, &received[..1]).await;
    assert_eq!(assert_balanced(&admin, "crashy").await, 210 - 200);
    receiver.abort();
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_batch_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let data = dir.path().join("data");
    let env = [
        ("AUGUR_CONFIG", config.as_str()),
        ("AUGUR_WORKERS", "4"),
        ("AUGUR_LEASE", "3s"),
    ];
    let victim = TestServer::start(&data, &env);
    kill_9_mid_batch(victim, || TestServer::start(&data, &env), None, dir.path()).await;
}

/// Two nodes share `store_url`; the one the batch was created on dies.
#[cfg(any(feature = "redis", feature = "postgres"))]
async fn kill_9_one_of_two_nodes(store_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let env = [
        ("AUGUR_CONFIG", config.as_str()),
        ("AUGUR_WORKERS", "4"),
        ("AUGUR_LEASE", "3s"),
    ];
    let a = TestServer::start_on(store_url, &dir.path().join("a"), &env);
    let b = TestServer::start_on(store_url, &dir.path().join("b"), &env);
    let a_dir = dir.path().join("a");
    kill_9_mid_batch(
        a,
        || TestServer::start_on(store_url, &a_dir, &env),
        Some(b.url.clone()),
        dir.path(),
    )
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_one_of_two_nodes_mid_batch_on_redis() {
    let Some(backend) = common::backends::redis() else {
        return;
    };
    kill_9_one_of_two_nodes(&backend.url).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_one_of_two_nodes_mid_batch_on_postgres() {
    let Some(backend) = common::backends::postgres() else {
        return;
    };
    kill_9_one_of_two_nodes(&backend.url).await;
}
