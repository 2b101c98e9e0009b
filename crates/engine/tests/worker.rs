//! The worker against the memory store: outcomes, retries, limits, cancel, leases, shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use augur_core::forward_store;
use augur_core::store::memory::MemoryStore;
use augur_core::store::{DynStore, Key, ListQuery, Op, Page, RecordStore, Stored, Write, Written};
use augur_core::{
    AccountId, CreateRequest, Event, ModelName, PredictionId, Predictions, Revision, ServiceConfig,
    Status, Timestamp, WebhookEvents,
};
use augur_engine::{
    Model, ModelRegistry, ModelSettings, Outcome, OutputFiles, Provider, ProviderError,
    RetryPolicy, RunContext, Worker, WorkerOptions,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A provider whose behaviour the test scripts.
#[derive(Debug, Default)]
struct Scripted {
    /// Fail retryably this many times, then succeed.
    flaky_times: usize,
    /// Sleep this long before answering.
    sleep: Duration,
    /// Fail for good with this message.
    fail_with: Option<String>,
    calls: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

#[async_trait]
impl Provider for Scripted {
    async fn run(&self, ctx: RunContext) -> Result<Outcome, ProviderError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.running);
        tokio::time::sleep(self.sleep).await;
        if let Some(msg) = &self.fail_with {
            return Err(ProviderError::Failed(msg.clone()));
        }
        if call < self.flaky_times {
            return Err(ProviderError::Retryable(format!("busy (call {call})")));
        }
        Ok(Outcome::Succeeded(json!({"attempt": ctx.attempt})))
    }
}

struct Harness {
    service: Predictions,
    models: Arc<ModelRegistry>,
    files: OutputFiles,
}

impl Harness {
    fn new(scripted: Vec<(&str, Arc<Scripted>, ModelSettings)>) -> Self {
        Self::on(Arc::new(MemoryStore::new()), scripted)
    }

    fn on(store: DynStore, scripted: Vec<(&str, Arc<Scripted>, ModelSettings)>) -> Self {
        let service = Predictions::new(store, ServiceConfig::default());
        let mut models = ModelRegistry::new();
        augur_engine::builtin::register(&mut models);
        for (name, provider, settings) in scripted {
            models.register(Model::new(
                ModelName::parse(name).unwrap(),
                "1",
                "test model",
                settings,
                provider,
            ));
        }
        Self {
            service,
            models: Arc::new(models),
            files: OutputFiles::in_memory("http://127.0.0.1:1"),
        }
    }

    fn options() -> WorkerOptions {
        WorkerOptions {
            idle_poll: Duration::from_millis(20),
            retry: RetryPolicy {
                base: Duration::from_millis(20),
                max: Duration::from_millis(100),
            },
            ..WorkerOptions::default()
        }
    }

    /// Starts a worker; dropping (or sending on) the returned sender stops it.
    fn start(&self, options: WorkerOptions) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let worker = Worker::new(
            self.service.clone(),
            self.models.clone(),
            self.files.clone(),
            options,
        );
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(worker.run(async move {
            let _ = rx.await;
        }));
        (tx, handle)
    }

    async fn create(&self, model: &str, input: Value) -> PredictionId {
        let model = ModelName::parse(model).unwrap();
        let input = self
            .models
            .get(&model)
            .unwrap()
            .validate_input(&input)
            .unwrap();
        self.create_with(model, input, None).await
    }

    async fn create_with(
        &self,
        model: ModelName,
        input: Value,
        deadline: Option<Timestamp>,
    ) -> PredictionId {
        self.service
            .create(CreateRequest {
                id: None,
                owner: AccountId::admin(),
                model,
                version: "v".into(),
                input,
                webhook: None,
                webhook_events_filter: WebhookEvents::ALL,
                deadline,
                idempotency_key: None,
                price: None,
                max_active: None,
            })
            .await
            .unwrap()
            .prediction()
            .value
            .id
            .clone()
    }

    async fn settled(&self, id: &PredictionId) -> augur_core::Prediction {
        let p = self
            .service
            .wait_until_settled(id, Duration::from_secs(20))
            .await
            .unwrap();
        assert!(p.value.is_terminal(), "not settled in time: {:?}", p.value);
        p.value
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_settles_in_one_write_after_create() {
    let h = Harness::new(vec![]);
    let (_stop, _w) = h.start(Harness::options());
    let id = h.create("augur/echo", json!({"text": "hi"})).await;
    let p = h.settled(&id).await;
    assert_eq!(p.status, Status::Succeeded);
    assert_eq!(p.output, Some(json!({"text": "hi"})));
    assert_eq!(p.attempts, 1);
    assert!(p.started_at.is_some() && p.completed_at.is_some());
    // Created at revision 1, started and finished together at revision 2.
    assert_eq!(h.service.get(&id).await.unwrap().revision, Revision(2));
    assert_eq!(h.service.jobs().stats().await.unwrap(), Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_image_logs_each_step_and_stores_a_png() {
    let h = Harness::new(vec![]);
    let (_stop, _w) = h.start(Harness::options());
    let id = h
        .create(
            "augur/demo-image",
            json!({"prompt": "a fox", "width": 40, "height": 24, "steps": 3, "step_ms": 10, "seed": 1}),
        )
        .await;
    let p = h.settled(&id).await;
    assert_eq!(p.status, Status::Succeeded, "{p:?}");
    assert!(p.logs.contains("seed 1"), "{}", p.logs);
    assert!(p.logs.contains("100%|██████████| 3/3"), "{}", p.logs);
    let url = p.output.unwrap().as_str().unwrap().to_owned();
    let key = url.strip_prefix("/files/").unwrap();
    let file = h.files.get(key).await.unwrap().expect("output file exists");
    let decoder = png::Decoder::new(std::io::Cursor::new(file.bytes.to_vec()));
    let info = decoder.read_info().unwrap();
    assert_eq!((info.info().width, info.info().height), (40, 24));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_errors_are_retried_with_backoff_then_succeed() {
    let flaky = Arc::new(Scripted {
        flaky_times: 2,
        ..Default::default()
    });
    let h = Harness::new(vec![(
        "test/flaky",
        flaky.clone(),
        ModelSettings::default(),
    )]);
    let (_stop, _w) = h.start(Harness::options());
    let id = h.create("test/flaky", json!({})).await;
    let p = h.settled(&id).await;
    assert_eq!(p.status, Status::Succeeded);
    assert_eq!(p.output, Some(json!({"attempt": 3})));
    assert_eq!(p.attempts, 3);
    assert!(
        p.logs
            .contains("attempt 1 failed: busy (call 0); retrying in"),
        "{}",
        p.logs
    );
    assert!(p.logs.contains("attempt 2 failed"), "{}", p.logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_max_attempts_and_fail_with_the_reason() {
    let flaky = Arc::new(Scripted {
        flaky_times: 100,
        ..Default::default()
    });
    let settings = ModelSettings {
        max_attempts: 2,
        ..Default::default()
    };
    let h = Harness::new(vec![("test/flaky", flaky.clone(), settings)]);
    let (_stop, _w) = h.start(Harness::options());
    let id = h.create("test/flaky", json!({})).await;
    let p = h.settled(&id).await;
    assert_eq!(p.status, Status::Failed);
    assert_eq!(
        p.error.as_deref(),
        Some("busy (call 1) (gave up after 2 attempts)")
    );
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_errors_fail_at_once() {
    let broken = Arc::new(Scripted {
        fail_with: Some("CUDA out of memory".into()),
        ..Default::default()
    });
    let h = Harness::new(vec![(
        "test/broken",
        broken.clone(),
        ModelSettings::default(),
    )]);
    let (_stop, _w) = h.start(Harness::options());
    let id = h.create("test/broken", json!({})).await;
    let p = h.settled(&id).await;
    assert_eq!(
        (p.status, p.error.as_deref()),
        (Status::Failed, Some("CUDA out of memory"))
    );
    assert_eq!(broken.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_run_time_fails_with_timed_out() {
    let slow = Arc::new(Scripted {
        sleep: Duration::from_secs(30),
        ..Default::default()
    });
    let settings = ModelSettings {
        max_run_time: Duration::from_millis(300),
        ..Default::default()
    };
    let h = Harness::new(vec![("test/slow", slow, settings)]);
    let (_stop, _w) = h.start(Harness::options());
    let id = h.create("test/slow", json!({})).await;
    let p = h.settled(&id).await;
    assert_eq!(p.status, Status::Failed);
    assert_eq!(p.error.as_deref(), Some("prediction timed out after 300ms"));
    assert!(p.started_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_deadline_cancels_a_running_prediction() {
    let slow = Arc::new(Scripted {
        sleep: Duration::from_secs(30),
        ..Default::default()
    });
    let h = Harness::new(vec![("test/slow", slow, ModelSettings::default())]);
    let (_stop, _w) = h.start(Harness::options());
    let deadline = Timestamp::now().plus(Duration::from_millis(300));
    let id = h
        .create_with(
            ModelName::parse("test/slow").unwrap(),
            json!({}),
            Some(deadline),
        )
        .await;
    let p = h.settled(&id).await;
    assert_eq!(p.status, Status::Canceled);
    assert!(p.logs.contains("deadline reached"), "{}", p.logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_demo_image() {
    let h = Harness::new(vec![]);
    let (_stop, _w) = h.start(Harness::options());
    let id = h
        .create(
            "augur/demo-image",
            json!({"prompt": "slow", "width": 16, "height": 16, "steps": 100, "step_ms": 50}),
        )
        .await;
    // Wait until it is visibly running, then cancel.
    let mut watch = h.service.watch(&id);
    loop {
        let p = watch.changed().await.unwrap();
        if p.value.logs.contains("2/100") {
            break;
        }
    }
    let canceled = h.service.transition(&id, &Event::canceled()).await.unwrap();
    assert_eq!(canceled.prediction.value.status, Status::Canceled);
    let logs_at_cancel = canceled.prediction.value.logs.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = h.service.get(&id).await.unwrap().value;
    assert_eq!(after.status, Status::Canceled);
    assert_eq!(
        after.logs, logs_at_cancel,
        "the model kept running after cancel"
    );
    assert!(after.output.is_none());
    assert_eq!(h.service.jobs().stats().await.unwrap(), Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_model_concurrency_is_respected() {
    let limited = Arc::new(Scripted {
        sleep: Duration::from_millis(100),
        ..Default::default()
    });
    let settings = ModelSettings {
        concurrency: Some(2),
        ..Default::default()
    };
    let h = Harness::new(vec![("test/limited", limited.clone(), settings)]);
    let (_stop, _w) = h.start(Harness::options());
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(h.create("test/limited", json!({})).await);
    }
    let echo = h.create("augur/echo", json!({})).await;
    for id in &ids {
        assert_eq!(h.settled(id).await.status, Status::Succeeded);
    }
    assert_eq!(h.settled(&echo).await.status, Status::Succeeded);
    assert_eq!(limited.max_running.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_while_a_long_job_runs() {
    let slow = Arc::new(Scripted {
        sleep: Duration::from_millis(1200),
        ..Default::default()
    });
    let h = Harness::new(vec![("test/slow", slow.clone(), ModelSettings::default())]);
    let short_lease = WorkerOptions {
        lease_for: Duration::from_millis(300),
        ..Harness::options()
    };
    let (_stop_a, _a) = h.start(short_lease.clone());
    let (_stop_b, _b) = h.start(short_lease);
    let id = h.create("test/slow", json!({})).await;
    let p = h.settled(&id).await;
    assert_eq!(p.status, Status::Succeeded);
    assert_eq!(p.attempts, 1, "another worker took over a live job");
    assert_eq!(slow.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_the_lease_back_at_once() {
    let slow = Arc::new(Scripted {
        sleep: Duration::from_secs(60),
        ..Default::default()
    });
    let h = Harness::new(vec![("test/slow", slow.clone(), ModelSettings::default())]);
    let (stop, worker) = h.start(Harness::options());
    let id = h.create("test/slow", json!({})).await;
    // Wait until it runs.
    let jobs = h.service.jobs();
    for _ in 0..200 {
        let started = h.service.get(&id).await.unwrap().value.status == Status::Processing;
        if started && slow.running.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("worker stops promptly")
        .unwrap();
    let stats = jobs.stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased), (1, 0), "lease not handed back");
    assert_eq!(
        slow.running.load(Ordering::SeqCst),
        0,
        "provider not stopped"
    );
    let p = h.service.get(&id).await.unwrap().value;
    assert_eq!(p.status, Status::Processing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_fail_with_a_clear_reason() {
    let h = Harness::new(vec![]);
    let (_stop, _w) = h.start(Harness::options());
    let id = h
        .create_with(ModelName::parse("acme/gone").unwrap(), json!({}), None)
        .await;
    let p = h.settled(&id).await;
    assert_eq!(p.status, Status::Failed);
    assert_eq!(
        p.error.as_deref(),
        Some("model acme/gone is not available on this server")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_predictions_run_here_at_once_when_a_slot_is_free() {
    let slow = Arc::new(Scripted {
        sleep: Duration::from_millis(400),
        ..Default::default()
    });
    let h = Harness::new(vec![("test/slow", slow.clone(), ModelSettings::default())]);
    let worker = Worker::new(
        h.service.clone(),
        h.models.clone(),
        h.files.clone(),
        WorkerOptions {
            concurrency: 1,
            ..Harness::options()
        },
    );
    h.service.set_dispatch(worker.dispatcher());
    let (_stop, rx) = oneshot::channel::<()>();
    tokio::spawn(worker.run(async move {
        let _ = rx.await;
    }));
    // Let the worker loop start (it opens the direct channel).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let jobs = h.service.jobs();

    let first = h.create("test/slow", json!({})).await;
    let stats = jobs.stats().await.unwrap();
    assert_eq!(
        (stats.ready, stats.leased),
        (0, 1),
        "the create did not commit the job already leased to the free slot"
    );
    // No slot left: the next one waits in the queue, and runs when the first is done.
    let second = h.create("test/slow", json!({})).await;
    let stats = jobs.stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased), (1, 1));
    for id in [&first, &second] {
        let p = h.settled(id).await;
        assert_eq!((p.status, p.attempts), (Status::Succeeded, 1));
    }
    assert_eq!(slow.max_running.load(Ordering::SeqCst), 1);
    assert_eq!(jobs.stats().await.unwrap(), Default::default());
}

/// Answers `Deferred` (its server is full) a few times, then succeeds.
#[derive(Debug, Default)]
struct Deferring {
    defer_times: usize,
    calls: AtomicUsize,
}

#[async_trait]
impl Provider for Deferring {
    async fn run(&self, ctx: RunContext) -> Result<Outcome, ProviderError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.defer_times {
            return Ok(Outcome::Deferred {
                retry_after: Duration::from_millis(30),
            });
        }
        Ok(Outcome::Succeeded(json!({"attempt": ctx.attempt})))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_runs_stay_queued_and_spend_no_attempt() {
    let deferring = Arc::new(Deferring {
        defer_times: 3,
        ..Default::default()
    });
    // One attempt allowed: deferrals must not count as attempts.
    let settings = ModelSettings {
        max_attempts: 1,
        ..Default::default()
    };
    let mut h = Harness::new(vec![]);
    let mut models = ModelRegistry::new();
    models.register(Model::new(
        ModelName::parse("test/full").unwrap(),
        "1",
        "a model whose server is full at first",
        settings,
        deferring.clone(),
    ));
    h.models = Arc::new(models);
    let (_stop, _w) = h.start(Harness::options());
    let id = h.create("test/full", json!({})).await;
    let p = h.settled(&id).await;
    assert_eq!(p.status, Status::Succeeded, "{p:?}");
    assert_eq!(p.output, Some(json!({"attempt": 1})));
    assert_eq!(p.attempts, 1);
    assert_eq!(deferring.calls.load(Ordering::SeqCst), 4);
    assert!(p.logs.is_empty(), "deferrals are not failures: {}", p.logs);
}

/// A store whose writes that settle a prediction fail (as if the connection dropped before
/// the commit) while `failing` is set.
#[derive(Debug)]
struct TerminalWritesFail {
    inner: DynStore,
    failing: std::sync::atomic::AtomicBool,
    refused: AtomicUsize,
}

#[async_trait]
impl RecordStore for TerminalWritesFail {
    async fn write(&self, write: &Write) -> augur_core::store::Result<Written> {
        let settles = write.ops.iter().any(|op| {
            matches!(op, Op::Update { record, .. }
                if record.status.as_deref().and_then(Status::parse).is_some_and(Status::is_terminal))
        });
        if settles && self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(augur_core::store::Error::Unavailable {
                backend: "test",
                source: "connection reset".into(),
            });
        }
        self.inner.write(write).await
    }
    async fn get(&self, key: &Key) -> augur_core::store::Result<Option<Arc<Stored>>> {
        self.inner.get(key).await
    }
    async fn list(&self, query: &ListQuery) -> augur_core::store::Result<Page> {
        self.inner.list(query).await
    }
    async fn expire(&self, now: Timestamp, limit: usize) -> augur_core::store::Result<Vec<Key>> {
        self.inner.expire(now, limit).await
    }
}

forward_store!(QueueStore for TerminalWritesFail => inner);
forward_store!(EventStore for TerminalWritesFail => inner);
forward_store!(LedgerStore for TerminalWritesFail => inner);
forward_store!(AdminStore for TerminalWritesFail => inner);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlives_a_terminal_write_that_failed() {
    let store = Arc::new(TerminalWritesFail {
        inner: Arc::new(MemoryStore::new()),
        failing: std::sync::atomic::AtomicBool::new(true),
        refused: AtomicUsize::new(0),
    });
    let h = Harness::on(
        store.clone(),
        vec![(
            "test/quick",
            Arc::new(Scripted::default()),
            ModelSettings::default(),
        )],
    );
    let (_stop, _worker) = h.start(Harness::options());
    let id = h.create("test/quick", json!({})).await;
    for _ in 0..500 {
        if store.refused.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        store.refused.load(Ordering::SeqCst) > 0,
        "the worker never tried to settle"
    );
    // The run finished but its result is not stored: the job must still be there, or
    // nobody would ever run it again.
    assert!(!h.service.get(&id).await.unwrap().value.is_terminal());
    let stats = h.service.jobs().stats().await.unwrap();
    assert_eq!(stats.ready + stats.leased + stats.delayed, 1, "{stats:?}");

    store.failing.store(false, Ordering::SeqCst);
    let p = h.settled(&id).await;
    assert_eq!(p.status, Status::Succeeded);
    assert_eq!(h.service.jobs().stats().await.unwrap(), Default::default());
    let settled = h
        .service
        .ops()
        .counters()
        .await
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == augur_core::service::counters::SETTLED)
        .map_or(0, |(_, v)| v);
    assert_eq!(settled, 1);
}
