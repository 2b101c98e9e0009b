//! Two "nodes" (two services) over one store that announces writes: the listener brings one
//! node's writes into the other's cache, waiters and workers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_core::store::DynStore;
use augur_core::store::cached::CachedStore;
use augur_core::store::memory::MemoryStore;
use augur_core::{
    AccountId, CreateRequest, Event, ModelName, Predictions, ServiceConfig, Status, WebhookEvents,
};
use augur_engine::{ChangeListener, ModelRegistry, OutputFiles, Worker, WorkerOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Node {
    service: Predictions,
    cache: Arc<CachedStore>,
}

fn node(shared: &Arc<MemoryStore>, stop: &CancellationToken) -> Node {
    // A cache that would never expire on its own: only announcements keep it fresh.
    let cache = Arc::new(CachedStore::new(
        shared.clone(),
        augur_core::store::cached::CacheBudget::bytes(1 << 20),
        Some(Duration::from_secs(3600)),
    ));
    let store: DynStore = cache.clone();
    let service = Predictions::new(store, ServiceConfig::default());
    let listener = ChangeListener::new(service.clone(), Some(cache.clone()));
    tokio::spawn(listener.run(stop.clone().cancelled_owned()));
    Node { service, cache }
}

fn request(model: &str, input: serde_json::Value) -> CreateRequest {
    CreateRequest {
        id: None,
        owner: AccountId::admin(),
        model: ModelName::parse(model).unwrap(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_write_reaches_this_nodes_cache_and_waiters() {
    let shared = Arc::new(MemoryStore::new());
    let stop = CancellationToken::new();
    let (a, b) = (node(&shared, &stop), node(&shared, &stop));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let id = a
        .service
        .create(request("augur/echo", json!({})))
        .await
        .unwrap()
        .prediction()
        .value
        .id
        .clone();
    // Node A has the record cached.
    assert_eq!(
        a.service.get(&id).await.unwrap().value.status,
        Status::Starting
    );
    let waiter = {
        let service = a.service.clone();
        let id = id.clone();
        tokio::spawn(async move {
            service
                .wait_until_settled(&id, Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    b.service.transition(&id, &Event::canceled()).await.unwrap();
    let settled = waiter.await.unwrap().unwrap();
    assert_eq!(settled.value.status, Status::Canceled);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the waiter on the other node heard late: {:?}",
        started.elapsed()
    );
    // And node A's cache no longer holds the old record.
    assert_eq!(
        a.service.get(&id).await.unwrap().value.status,
        Status::Canceled
    );
    let _ = &a.cache;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_another_node_stops_the_run_here() {
    let shared = Arc::new(MemoryStore::new());
    let stop = CancellationToken::new();
    let (a, b) = (node(&shared, &stop), node(&shared, &stop));
    let mut models = ModelRegistry::new();
    augur_engine::builtin::register(&mut models);
    let worker = Worker::new(
        a.service.clone(),
        Arc::new(models),
        OutputFiles::in_memory("http://x"),
        WorkerOptions {
            idle_poll: Duration::from_millis(20),
            ..Default::default()
        },
    );
    tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    // Created on node B (no worker there): node A claims and runs it.
    let id = b
        .service
        .create(request(
            "augur/demo-image",
            json!({"prompt": "x", "width": 16, "height": 16, "steps": 100, "step_ms": 50}),
        ))
        .await
        .unwrap()
        .prediction()
        .value
        .id
        .clone();
    let until = Instant::now() + Duration::from_secs(10);
    while !b
        .service
        .get(&id)
        .await
        .unwrap()
        .value
        .logs
        .contains("2/100")
    {
        assert!(Instant::now() < until, "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let canceled = b.service.transition(&id, &Event::canceled()).await.unwrap();
    let logs_at_cancel = canceled.prediction.value.logs.clone();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = b.service.get(&id).await.unwrap().value;
    assert_eq!(after.status, Status::Canceled);
    assert_eq!(
        after.logs, logs_at_cancel,
        "the run on the other node kept going"
    );
    stop.cancel();
}
