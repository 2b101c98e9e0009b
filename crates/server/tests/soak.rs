//! Soak: `kill -9` cycles under a mixed load on the real binary, on the embedded store and on
//! two nodes sharing Redis or PostgreSQL. Eight clients of two accounts create priced
//! predictions with a completion webhook to a loopback receiver; every cycle also submits a
//! batch and a workflow run (each with a webhook); then one node dies (`kill -9`) at a random
//! moment and comes back. After the last cycle everything must settle, and the test prints and
//! checks: acknowledged (creates answered 2xx), lost (acknowledged but gone), never settled,
//! settled twice (by the ledger), ledger imbalance (for every account, the balance against the
//! sum of its ledger, and nothing left reserved) and duplicate completion webhooks (a second
//! message id for one object's completion; a redelivery of the same id is allowed).
//!
//! The test command runs a few cycles (`AUGUR_SOAK_CYCLES`, default 6); `bench/soak.sh` runs
//! 100 and records the figures in BENCHMARKS.md.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::hooks::{Inbox, listen_on};
use common::money::As;
use common::{TOKEN, TestServer};

/// Echo costs 1 credit a prediction, demo-image 2 a started second (20 reserved); a
/// prediction canceled after it started is refunded.
const CONFIG: &str = r#"
[accounts]
canceled_after_start = "refund"

[[models]]
name = "augur/echo"
price = { per_prediction = 1 }

[[models]]
name = "augur/demo-image"
price = { per_second = 2, max_seconds = 10 }
"#;

const ACCOUNTS: [&str; 2] = ["soak-a", "soak-b"];
const GRANT: i64 = 10_000_000;
const CLIENTS: usize = 8;
const WORKFLOW: &str = "soak-a/chain";

/// How many `kill -9` cycles to run: `AUGUR_SOAK_CYCLES`, default 6.
fn cycles() -> usize {
    std::env::var("AUGUR_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// A small xorshift generator: kill moments vary, and the seed is printed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The nodes of one soak: each restarts on its own work directory, sharing one store.
struct Nodes {
    store_url: String,
    dirs: Vec<PathBuf>,
    env: Vec<(String, String)>,
    servers: Vec<Option<TestServer>>,
    /// The nodes' current URLs (a restarted node listens on a new port); the load reads them.
    bases: Arc<RwLock<Vec<String>>>,
}

impl Nodes {
    fn new(store_url: String, dirs: Vec<PathBuf>, config: &Path) -> Nodes {
        let env = [
            ("AUGUR_CONFIG", config.display().to_string()),
            ("AUGUR_WORKERS", "8".to_owned()),
            // A dead node's jobs wait this long before the other node (or its restart) takes
            // them.
            ("AUGUR_LEASE", "3s".to_owned()),
            // The webhook receiver is on loopback.
            ("AUGUR_OUTBOUND_ALLOW", "127.0.0.0/8,::1/128".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let n = dirs.len();
        let mut nodes = Nodes {
            store_url,
            dirs,
            env,
            servers: (0..n).map(|_| None).collect(),
            bases: Arc::new(RwLock::new(vec![String::new(); n])),
        };
        for i in 0..n {
            nodes.start(i);
        }
        nodes
    }

    fn start(&mut self, i: usize) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let server = TestServer::start_on(&self.store_url, &self.dirs[i], &env);
        self.bases.write().unwrap()[i] = server.url.clone();
        self.servers[i] = Some(server);
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut server) = self.servers[i].take() {
            server.kill9();
        }
    }

    fn restart_dead(&mut self) {
        for i in 0..self.servers.len() {
            if self.servers[i].is_none() {
                self.start(i);
            }
        }
    }

    fn base(&self, i: usize) -> String {
        self.bases.read().unwrap()[i % self.servers.len()].clone()
    }
}

/// What the servers acknowledged (answered 2xx with an id).
#[derive(Default)]
struct Acked {
    predictions: Mutex<Vec<String>>,
    batches: Mutex<Vec<String>>,
    runs: Mutex<Vec<String>>,
}

/// POSTs `body`; the answer's body when it is 2xx and complete, else `None` (refused, or the
/// node died under the request: not acknowledged).
async fn post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: &Value,
) -> Option<Value> {
    let response = http
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["id"].as_str().is_some().then_some(body)
}

/// One client: creates priced predictions with a completion webhook on node `c % nodes` until
/// `stop`.
async fn client(
    c: usize,
    bases: Arc<RwLock<Vec<String>>>,
    token: String,
    hook: String,
    acked: Arc<Acked>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let base = {
            let bases = bases.read().unwrap();
            bases[c % bases.len()].clone()
        };
        let (model, input) = if n.is_multiple_of(10) {
            (
                "augur/demo-image",
                json!({"prompt": format!("c{c} n{n}"), "width": 8, "height": 8, "steps": 5, "step_ms": 50}),
            )
        } else {
            ("augur/echo", json!({"c": c, "n": n}))
        };
        let body = json!({"input": input, "webhook": hook, "webhook_events_filter": ["completed"]});
        let path = format!("/v1/models/{model}/predictions");
        match post(&http, &base, &token, &path, &body).await {
            Some(p) => acked
                .predictions
                .lock()
                .unwrap()
                .push(p["id"].as_str().unwrap().to_owned()),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Every item of a paged list at `path`.
async fn list_all(api: &As, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = path.to_owned();
    loop {
        let (status, page) = api.call("GET", &path, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        out.extend(page["results"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => path = next.strip_prefix(&api.base).unwrap().to_owned(),
            None => return out,
        }
    }
}

fn terminal(status: &Value) -> bool {
    matches!(
        status.as_str(),
        Some("succeeded" | "failed" | "canceled" | "completed_with_errors")
    )
}

/// The figures a soak ends with.
#[derive(Debug, Default)]
struct Figures {
    predictions: usize,
    batches: usize,
    runs: usize,
    lost: usize,
    never_settled: usize,
    settled_twice: usize,
    imbalance: i64,
    duplicate_webhooks: usize,
    missing_webhooks: usize,
    redeliveries: usize,
}

/// Runs `cycles` kill cycles on `nodes` and returns the figures.
async fn soak(name: &str, mut nodes: Nodes, cycles: usize) -> Figures {
    let started = Instant::now();
    let inbox: Inbox = Arc::default();
    let addr = common::hooks::free_port();
    let receiver = listen_on(addr, inbox.clone()).await;
    let hook = format!("http://{addr}/hook");

    let admin = As::new(&nodes.base(0), TOKEN);
    let mut tokens = Vec::new();
    for account in ACCOUNTS {
        tokens.push(admin.account(account, GRANT).await);
    }
    let owner = As::new(&nodes.base(0), &tokens[0]);
    let (status, workflow) = owner
        .call(
            "POST",
            "/v1/workflows",
            Some(json!({
                "name": WORKFLOW,
                "input_schema": {"type": "object", "required": ["prompt"],
                                 "properties": {"prompt": {"type": "string"}}},
                "nodes": {
                    "draw": {"model": "augur/demo-image",
                             "input": {"prompt": "{{ input.prompt }}", "width": 8, "height": 8,
                                       "steps": 3, "step_ms": 50}},
                    "note": {"model": "augur/echo", "input": {"image": "{{ nodes.draw.output }}"}}
                },
                "output": "{{ nodes.note.output }}"
            })),
        )
        .await;
    assert_eq!(status, 201, "{workflow}");

    let acked = Arc::new(Acked::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client(
                c,
                nodes.bases.clone(),
                tokens[c % tokens.len()].clone(),
                hook.clone(),
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("soak {name}: seed {seed}");
    let mut rng = Rng(seed);
    let http = reqwest::Client::new();
    for cycle in 0..cycles {
        nodes.restart_dead();
        // A batch on one node and a workflow run on the other, in flight when the kill comes.
        let extras = {
            let (http, acked, hook) = (http.clone(), acked.clone(), hook.clone());
            let (batch_base, run_base) = (nodes.base(cycle), nodes.base(cycle + 1));
            let tokens = tokens.clone();
            tokio::spawn(async move {
                let inputs: Vec<Value> = (0..10)
                    .map(|i| json!({"cycle": cycle, "item": i}))
                    .collect();
                let batch = json!({"model": "augur/echo", "inputs": inputs, "webhook": hook});
                if let Some(b) = post(&http, &batch_base, &tokens[1], "/v1/batches", &batch).await {
                    acked
                        .batches
                        .lock()
                        .unwrap()
                        .push(b["id"].as_str().unwrap().to_owned());
                }
                let run = json!({"input": {"prompt": format!("cycle {cycle}")}, "webhook": hook});
                let path = format!("/v1/workflows/{WORKFLOW}/runs");
                if let Some(r) = post(&http, &run_base, &tokens[0], &path, &run).await {
                    acked
                        .runs
                        .lock()
                        .unwrap()
                        .push(r["id"].as_str().unwrap().to_owned());
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(300 + rng.below(900))).await;
        nodes.kill9(cycle % nodes.servers.len());
        let _ = extras.await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    nodes.restart_dead();
    let load_took = started.elapsed();

    let acked_predictions = std::mem::take(&mut *acked.predictions.lock().unwrap());
    let acked_batches = std::mem::take(&mut *acked.batches.lock().unwrap());
    let acked_runs = std::mem::take(&mut *acked.runs.lock().unwrap());
    let mut figures = Figures {
        predictions: acked_predictions.len(),
        batches: acked_batches.len(),
        runs: acked_runs.len(),
        ..Figures::default()
    };

    // Everything settles (or the deadline passes and what is left counts as never settled).
    let base = nodes.base(0);
    let admin = As::new(&base, TOKEN);
    let accounts: Vec<As> = tokens.iter().map(|t| As::new(&base, t)).collect();
    let until = Instant::now() + Duration::from_secs(300);
    let (stored, batches, runs) = loop {
        let mut stored: HashMap<String, Value> = HashMap::new();
        for api in &accounts {
            for p in list_all(api, "/v1/predictions?limit=1000").await {
                stored.insert(p["id"].as_str().unwrap().to_owned(), p["status"].clone());
            }
        }
        let mut batches = HashMap::new();
        for id in &acked_batches {
            let (code, b) = accounts[1]
                .call("GET", &format!("/v1/batches/{id}"), None)
                .await;
            batches.insert(id.clone(), (code, b["status"].clone()));
        }
        let mut runs = HashMap::new();
        for id in &acked_runs {
            let (code, r) = accounts[0]
                .call("GET", &format!("/v1/runs/{id}"), None)
                .await;
            runs.insert(id.clone(), (code, r["status"].clone()));
        }
        let settled = stored.values().all(terminal)
            && batches.values().all(|(_, s)| terminal(s))
            && runs.values().all(|(_, s)| terminal(s));
        if settled || Instant::now() > until {
            break (stored, batches, runs);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for id in &acked_predictions {
        if !stored.contains_key(id) {
            let (code, _) = accounts[0]
                .call("GET", &format!("/v1/predictions/{id}"), None)
                .await;
            let (code_b, _) = accounts[1]
                .call("GET", &format!("/v1/predictions/{id}"), None)
                .await;
            if code != 200 && code_b != 200 {
                eprintln!("soak {name}: lost prediction {id}");
                figures.lost += 1;
            }
        }
    }
    for (what, objects) in [("batch", &batches), ("run", &runs)] {
        for (id, (code, status)) in objects {
            if *code == 404 {
                eprintln!("soak {name}: lost {what} {id}");
                figures.lost += 1;
            } else if !terminal(status) {
                eprintln!("soak {name}: {what} {id} never settled ({code} {status})");
                figures.never_settled += 1;
            }
        }
    }
    for (id, status) in &stored {
        if !terminal(status) {
            eprintln!("soak {name}: prediction {id} never settled ({status})");
            figures.never_settled += 1;
        }
    }

    // The money: every account balanced, every prediction reserved once and settled once.
    for account in ACCOUNTS {
        let (_, credits) = admin
            .call("GET", &format!("/v1/accounts/{account}/credits"), None)
            .await;
        let ledger = admin.ledger(account).await;
        let delta: i64 = ledger.iter().map(|e| e["delta"].as_i64().unwrap()).sum();
        let held: i64 = ledger.iter().map(|e| e["held"].as_i64().unwrap_or(0)).sum();
        let balance = credits["balance"].as_i64().unwrap();
        let reserved = credits["reserved"].as_i64().unwrap();
        let off = (balance - delta).abs() + reserved.abs() + held.abs();
        if off != 0 {
            eprintln!(
                "soak {name}: {account} imbalance: balance {balance}, Σ ledger {delta}, reserved {reserved}, Σ held {held}"
            );
        }
        figures.imbalance += off;
        let mut per_prediction: HashMap<&str, (usize, usize)> = HashMap::new();
        for entry in &ledger {
            let Some(reference) = entry["reference"].as_str() else {
                continue;
            };
            let counts = per_prediction.entry(reference).or_default();
            match entry["reason"].as_str() {
                Some("reserve") => counts.0 += 1,
                Some("charge" | "refund") => counts.1 += 1,
                _ => {}
            }
        }
        for (reference, (reserves, settlements)) in per_prediction {
            if reserves > 1 || settlements > 1 {
                eprintln!("soak {name}: {reference} reserved {reserves}x, settled {settlements}x");
                figures.settled_twice += 1;
            } else if settlements == 0 {
                eprintln!("soak {name}: {reference} reserved but never settled");
                figures.never_settled += 1;
            }
        }
    }

    // Completion webhooks: one message id per acknowledged object (redeliveries of the same
    // id are at-least-once delivery, counted apart).
    let expected: HashSet<&String> = acked_predictions
        .iter()
        .chain(&acked_batches)
        .chain(&acked_runs)
        .collect();
    let completions = |inbox: &Inbox| {
        let mut per_object: HashMap<String, Vec<String>> = HashMap::new();
        for r in inbox.lock().unwrap().iter() {
            let Ok(body) = serde_json::from_str::<Value>(&r.body) else {
                continue;
            };
            let message = r.headers.get("webhook-id").cloned().unwrap_or_default();
            if message.ends_with("_completed") || terminal(&body["status"]) {
                per_object
                    .entry(body["id"].as_str().unwrap_or_default().to_owned())
                    .or_default()
                    .push(message);
            }
        }
        per_object
    };
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let got = completions(&inbox);
        if expected.iter().all(|id| got.contains_key(*id)) || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A little longer, for a second message that should not come.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = completions(&inbox);
    for id in &expected {
        match got.get(*id) {
            None => {
                eprintln!("soak {name}: no completion webhook for {id}");
                figures.missing_webhooks += 1;
            }
            Some(messages) => {
                let distinct: HashSet<_> = messages.iter().collect();
                if distinct.len() > 1 {
                    eprintln!("soak {name}: {id} completion messages {distinct:?}");
                }
                figures.duplicate_webhooks += distinct.len() - 1;
                figures.redeliveries += messages.len() - distinct.len();
            }
        }
    }
    receiver.abort();

    eprintln!(
        "soak {name}: {cycles} kill -9 cycles on {} node(s), load {:.0} s, total {:.0} s\n\
         soak {name}: acknowledged {} (predictions {}, batches {}, workflow runs {})\n\
         soak {name}: lost {}\n\
         soak {name}: never settled {}\n\
         soak {name}: settled twice {}\n\
         soak {name}: ledger imbalance {}\n\
         soak {name}: duplicate completion webhooks {}\n\
         soak {name}: missing completion webhooks {} (redeliveries of one message id: {})",
        nodes.servers.len(),
        load_took.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        figures.predictions + figures.batches + figures.runs,
        figures.predictions,
        figures.batches,
        figures.runs,
        figures.lost,
        figures.never_settled,
        figures.settled_twice,
        figures.imbalance,
        figures.duplicate_webhooks,
        figures.missing_webhooks,
        figures.redeliveries,
    );
    figures
}

fn check(figures: &Figures, cycles: usize) {
    assert!(
        figures.predictions > 0 && figures.batches > 0 && figures.runs > 0,
        "nothing of some kind was acknowledged: {figures:?}"
    );
    assert!(figures.batches + figures.runs <= 2 * cycles, "{figures:?}");
    assert_eq!(figures.lost, 0, "{figures:?}");
    assert_eq!(figures.never_settled, 0, "{figures:?}");
    assert_eq!(figures.settled_twice, 0, "{figures:?}");
    assert_eq!(figures.imbalance, 0, "{figures:?}");
    assert_eq!(figures.duplicate_webhooks, 0, "{figures:?}");
    assert_eq!(figures.missing_webhooks, 0, "{figures:?}");
}

fn config_file(dir: &Path) -> PathBuf {
    let file = dir.join("augur.toml");
    std::fs::write(&file, CONFIG).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_kill_9_cycles_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let data = dir.path().join("data");
    let url = format!("embedded://{}", data.display());
    let nodes = Nodes::new(url, vec![data], &config);
    let cycles = cycles();
    check(&soak("embedded", nodes, cycles).await, cycles);
}

/// Two nodes share `store_url`; they die in turn.
#[cfg(any(feature = "redis", feature = "postgres"))]
async fn two_nodes(name: &str, store_url: String) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let dirs = vec![dir.path().join("a"), dir.path().join("b")];
    let nodes = Nodes::new(store_url, dirs, &config);
    let cycles = cycles();
    check(&soak(name, nodes, cycles).await, cycles);
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_kill_9_cycles_on_two_nodes_over_redis() {
    let Some(backend) = common::backends::redis() else {
        return;
    };
    two_nodes("redis", backend.url).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_kill_9_cycles_on_two_nodes_over_postgres() {
    let Some(backend) = common::backends::postgres() else {
        return;
    };
    two_nodes("postgres", backend.url).await;
}
