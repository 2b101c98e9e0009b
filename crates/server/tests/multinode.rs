//! Several real `augur` nodes (and racing processes) on one shared store: Redis, Redis Cluster,
//! PostgreSQL and Cloudflare (the Worker on a local workerd). Each test runs in a fresh namespace (key prefix or schema).

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use augur_core::store::{DynStore, Kind, ListQuery};
use augur_core::{
    AccountId, CreateRequest, Event, ModelName, PredictionId, Predictions, ServiceConfig, Status,
    Timestamp, TransitionError, WebhookEvents,
};
use common::TestServer;
use common::backends::{self, Backend};
use serde_json::json;

async fn open(backend: &Backend) -> DynStore {
    augur_server::backend::open(&backend.url)
        .await
        .unwrap_or_else(|e| panic!("cannot open {}: {e:#}", backend.name))
        .store
}

fn request(input: serde_json::Value) -> CreateRequest {
    CreateRequest {
        id: None,
        owner: AccountId::admin(),
        model: ModelName::parse("augur/echo").unwrap(),
        version: "v".into(),
        input,
        webhook: None,
        webhook_events_filter: WebhookEvents::ALL,
        deadline: None,
        idempotency_key: None,
        price: None,
        max_active: None,
    }
}

async fn counter(store: &DynStore, name: &str) -> i64 {
    store
        .counters()
        .await
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| v)
}

async fn all(store: &DynStore) -> Vec<augur_core::Prediction> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListQuery {
                after,
                ..ListQuery::of(Kind::Prediction, 1000)
            })
            .await
            .unwrap();
        out.extend(
            page.items
                .iter()
                .map(|s| (*s.decode::<augur_core::Prediction>().unwrap()).clone()),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

async fn wait_for(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Two nodes drain one queue of 5,000 jobs (1,000 on the Cloudflare Worker, whose local
// workerd takes about 15 ms per claim round: 5,000 took 80 s of the test command's budget):
// each completes exactly once.

async fn two_nodes_drain_one_queue_once(backend: Backend) {
    let store = open(&backend).await;
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    let n: usize = if backend.name == "cloudflare" {
        1000
    } else {
        5000
    };
    for i in 0..n {
        service.create(request(json!({"i": i}))).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start_on(&backend.url, &dir.path().join("a"), &[]);
    let b = TestServer::start_on(&backend.url, &dir.path().join("b"), &[]);
    wait_for(
        "every job to settle",
        Duration::from_secs(180),
        async || counter(&store, "predictions_settled_total").await >= n as i64,
    )
    .await;
    let (api_a, api_b) = (a.client(), b.client());
    let (done_a, done_b) = (
        api_a.jobs_with_outcome("succeeded").await,
        api_b.jobs_with_outcome("succeeded").await,
    );
    assert_eq!(done_a + done_b, n as i64, "jobs run: {done_a} + {done_b}");
    assert!(
        done_a > 0 && done_b > 0,
        "one node did all the work: {done_a} / {done_b}"
    );
    assert_eq!(counter(&store, "predictions_settled_total").await, n as i64);
    let predictions = all(&store).await;
    assert_eq!(predictions.len(), n);
    for p in &predictions {
        assert_eq!((p.status, p.attempts), (Status::Succeeded, 1), "{p:?}");
    }
    assert_eq!(
        store
            .queue_stats(augur_core::store::Lane::Jobs)
            .await
            .unwrap(),
        Default::default()
    );
    eprintln!("{}: node a ran {done_a}, node b ran {done_b}", backend.name);
}

// ---------------------------------------------------------------------------------------------
// Two processes race conflicting terminal transitions on the same predictions.

const RACER_ENV: &str = "AUGUR_TEST_RACER";

/// Not a test on its own: the body of a racing child process (see below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racer_child() {
    let Ok(role) = std::env::var(RACER_ENV) else {
        return;
    };
    let url = std::env::var("AUGUR_TEST_RACER_URL").unwrap();
    let ids: Vec<PredictionId> = std::env::var("AUGUR_TEST_RACER_IDS")
        .unwrap()
        .split(',')
        .map(|id| PredictionId::parse(id).unwrap())
        .collect();
    let start_at: i64 = std::env::var("AUGUR_TEST_RACER_START")
        .unwrap()
        .parse()
        .unwrap();
    let store = augur_server::backend::open(&url).await.unwrap().store;
    let service = Predictions::new(store, ServiceConfig::default());
    let wait = Timestamp::from_micros(start_at).since(Timestamp::now());
    tokio::time::sleep(wait).await;
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let (service, role) = (service.clone(), role.clone());
            tokio::spawn(async move {
                let event = if role == "a" {
                    Event::succeeded(json!("a"))
                } else {
                    Event::failed("b")
                };
                match service.transition(&id, &event).await {
                    Ok(t) if t.changed => Some(id),
                    Ok(_) => None,
                    Err(augur_core::Error::Transition(
                        TransitionError::ConflictingTerminal { .. } | TransitionError::Invalid(_),
                    )) => None,
                    Err(e) => panic!("unexpected error for {id}: {e}"),
                }
            })
        })
        .collect();
    for t in tasks {
        if let Some(id) = t.await.unwrap() {
            println!("WON {id}");
        }
    }
}

async fn terminal_races_across_processes_have_one_winner(backend: Backend) {
    let store = open(&backend).await;
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    let mut ids = Vec::new();
    for i in 0..200 {
        let id = service
            .create(request(json!({"i": i})))
            .await
            .unwrap()
            .prediction()
            .value
            .id
            .clone();
        service.transition(&id, &Event::processing()).await.unwrap();
        ids.push(id);
    }
    let joined = ids
        .iter()
        .map(|id| id.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let start = Timestamp::now()
        .plus(Duration::from_millis(1500))
        .as_micros()
        .to_string();
    let children: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|role| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "racer_child",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(RACER_ENV, role)
                .env("AUGUR_TEST_RACER_URL", &backend.url)
                .env("AUGUR_TEST_RACER_IDS", &joined)
                .env("AUGUR_TEST_RACER_START", &start)
                .output_async()
        })
        .collect();
    let mut winners: HashMap<String, &str> = HashMap::new();
    for (role, child) in ["a", "b"].into_iter().zip(children) {
        let out = child.await.unwrap();
        assert!(
            out.status.success(),
            "racer {role} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // libtest may have printed its own text on the same line first.
            if let Some(id) = line.split("WON ").nth(1) {
                assert!(
                    winners.insert(id.to_owned(), role).is_none(),
                    "{id} won twice"
                );
            }
        }
    }
    assert_eq!(winners.len(), ids.len(), "some predictions had no winner");
    let roles: HashSet<_> = winners.values().collect();
    eprintln!("{}: winners by role {:?}", backend.name, roles);
    for id in &ids {
        let p = (*store
            .get(&id.key())
            .await
            .unwrap()
            .unwrap()
            .decode::<augur_core::Prediction>()
            .unwrap())
        .clone();
        let expected = if winners[id.as_str()] == "a" {
            Status::Succeeded
        } else {
            Status::Failed
        };
        assert_eq!(
            p.status, expected,
            "{id}: the stored result is not the winner's"
        );
    }
    assert_eq!(
        counter(&store, "predictions_settled_total").await,
        ids.len() as i64
    );
}

/// `std::process::Command::output` on a blocking thread, so both children run at once.
trait OutputAsync {
    fn output_async(&mut self) -> tokio::task::JoinHandle<std::process::Output>;
}

impl OutputAsync for Command {
    fn output_async(&mut self) -> tokio::task::JoinHandle<std::process::Output> {
        let child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
    }
}

// ---------------------------------------------------------------------------------------------
// A node killed with kill -9 mid-load: the other finishes its work once the leases lapse.

async fn a_killed_nodes_work_is_finished_by_the_other(backend: Backend) {
    let store = open(&backend).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("AUGUR_LEASE", "3s")];
    let mut a = TestServer::start_on(&backend.url, &dir.path().join("a"), &env);
    let b = TestServer::start_on(&backend.url, &dir.path().join("b"), &env);
    let (api_a, api_b) = (a.client(), b.client());
    let mut acked = Vec::new();
    // Slow ones first, created on A: they run on A (direct dispatch) and die with it.
    for i in 0..8 {
        let (status, body) = api_a
            .create(
                "augur/demo-image",
                json!({"prompt": format!("slow {i}"), "width": 16, "height": 16, "steps": 30, "step_ms": 100}),
            )
            .await
            .unwrap();
        assert_eq!(status, 201);
        acked.push(body["id"].as_str().unwrap().to_owned());
    }
    // Quick ones on both nodes while A is killed.
    let mut loads = Vec::new();
    for api in [api_a.clone(), api_b.clone()] {
        loads.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..150 {
                if let Ok((201, body)) = api.create("augur/echo", json!({"i": i})).await {
                    ids.push(body["id"].as_str().unwrap().to_owned());
                }
            }
            ids
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.kill9();
    for load in loads {
        acked.extend(load.await.unwrap());
    }
    for id in &acked {
        let p = api_b.settled(id, Duration::from_secs(60)).await;
        assert_eq!(p["status"], "succeeded", "{p}");
    }
    let created = counter(&store, "predictions_created_total").await;
    wait_for(
        "every created prediction to settle",
        Duration::from_secs(60),
        async || counter(&store, "predictions_settled_total").await >= created,
    )
    .await;
    assert_eq!(
        counter(&store, "predictions_settled_total").await,
        created,
        "settled twice"
    );
    eprintln!(
        "{}: {} acknowledged, {created} created",
        backend.name,
        acked.len()
    );
}

// ---------------------------------------------------------------------------------------------
// A waiting client on one node hears at once of a prediction another node settled.

async fn prefer_wait_hears_another_node_at_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start_on(
        &backend.url,
        &dir.path().join("a"),
        &[("AUGUR_WORKERS", "1")],
    );
    let _b = TestServer::start_on(&backend.url, &dir.path().join("b"), &[]);
    let api_a = a.client();
    // Both nodes listen for each other's writes before the timing starts.
    for api in [&api_a, &_b.client()] {
        wait_for(
            "the node to subscribe to announcements",
            Duration::from_secs(30),
            async || api.counter("augur_store_announcements_subscribed").await == 1,
        )
        .await;
    }
    // Node A's only slot is busy, so the next prediction runs on node B.
    api_a
        .create(
            "augur/demo-image",
            json!({"prompt": "busy", "width": 16, "height": 16, "steps": 100, "step_ms": 100}),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let started = Instant::now();
        let response = api_a
            .http
            .post(format!("{}/v1/models/augur/echo/predictions", api_a.base))
            .bearer_auth(common::TOKEN)
            .header("Prefer", "wait=10")
            .json(&json!({"input": {"x": 1}}))
            .send()
            .await
            .unwrap();
        let elapsed = started.elapsed();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["status"], "succeeded", "{body}");
        // Without announcements the wait would only notice on its 1 s re-read.
        assert!(
            elapsed < Duration::from_millis(800),
            "{}: took {elapsed:?}",
            backend.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A node stopped with SIGTERM hands its jobs back: the other node takes them at once, not
// after the 30 s lease.

/// The ids of the nodes `GET /v1/admin/status` lists as alive.
async fn nodes(api: &common::Api) -> Vec<String> {
    let status: serde_json::Value = api
        .http
        .get(format!("{}/v1/admin/status", api.base))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes in {status}"))
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn sigterm_hands_work_to_the_other_node_at_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut a = TestServer::start_on(&backend.url, &dir.path().join("a"), &[]);
    let b = TestServer::start_on(&backend.url, &dir.path().join("b"), &[]);
    let (api_a, api_b) = (a.client(), b.client());
    let mut ids = Vec::new();
    for i in 0..4 {
        let (status, body) = api_a
            .create(
                "augur/demo-image",
                json!({"prompt": format!("handed over {i}"), "width": 16, "height": 16, "steps": 20, "step_ms": 100}),
            )
            .await
            .unwrap();
        assert_eq!(status, 201);
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // They run on A (created there with free slots).
    wait_for("A to start them", Duration::from_secs(10), async || {
        let (_, p) = api_a.get(&ids[0]).await.unwrap();
        p["status"] == "processing"
    })
    .await;
    // Both nodes are listed as alive; a node that stops cleanly removes itself at once.
    assert_eq!(nodes(&api_b).await.len(), 2, "{}", backend.name);
    let a_id = nodes(&api_a).await;
    let (clean, _) = a.terminate();
    assert!(clean, "node A did not stop cleanly");
    let handed_over = Instant::now();
    let left = nodes(&api_b).await;
    assert_eq!(
        left.len(),
        1,
        "{}: {left:?} after A stopped ({a_id:?})",
        backend.name
    );
    for id in &ids {
        let p = api_b.settled(id, Duration::from_secs(25)).await;
        assert_eq!(p["status"], "succeeded", "{p}");
    }
    // Each run takes 2 s; waiting for the lease would take 30 s.
    assert!(
        handed_over.elapsed() < Duration::from_secs(15),
        "{}: node B took {:?}",
        backend.name,
        handed_over.elapsed()
    );
}

macro_rules! for_backends {
    ($($test:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    if let Some(backend) = super::backends::redis() {
                        super::$test(backend).await;
                    }
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    if let Some(backend) = super::backends::redis_cluster() {
                        super::$test(backend).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    if let Some(backend) = super::backends::postgres() {
                        super::$test(backend).await;
                    }
                }
            )*
        }
        #[cfg(feature = "cloudflare")]
        mod cloudflare {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    if let Some(backend) = super::backends::cloudflare() {
                        super::$test(backend).await;
                    }
                }
            )*
        }
    };
}

for_backends!(
    two_nodes_drain_one_queue_once,
    terminal_races_across_processes_have_one_winner,
    a_killed_nodes_work_is_finished_by_the_other,
    prefer_wait_hears_another_node_at_once,
    sigterm_hands_work_to_the_other_node_at_once,
);
