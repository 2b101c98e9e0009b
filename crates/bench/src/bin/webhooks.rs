//! `webhooks`: the webhook delivery benchmark of `bench/webhooks.sh` (issue 4): deliveries per
//! second to a local receiver and the latency from the commit that enqueued a message to its
//! receipt, beside a plain HTTP client's rate on the same machine, in one process on loopback.
//!
//! ```text
//! webhooks [--messages 20000] [--reference-messages 50000] [--concurrency 32]
//!          [--producers 32] [--steady-rate 200] [--steady-seconds 10]
//!          [--stores embedded,memory] [--dir DIR] [--sync full|normal] [--timeout 180]
//! ```
//!
//! Every phase gets a fresh receiver: an axum server on `127.0.0.1:0` that reads each request
//! body, answers 204 and records when it first saw each `webhook-id` (and counts repeats).
//!
//! - **reference**: a `reqwest` client (built as the dispatcher builds its own: no redirects,
//!   same user agent) POSTs the same body, with the same three Standard Webhooks headers signed
//!   per request, from `--concurrency` tasks, for `--reference-messages` requests (burst), then
//!   one request every 1/`--steady-rate` s for `--steady-seconds` (steady).
//! - **Augur, per store** (`embedded`: `augur_store_embedded` in a fresh directory with
//!   `--sync`, the default durable backend; `memory`: the non-durable `MemoryStore`): a
//!   [`Dispatcher`] with `--concurrency` attempts in flight drains the store's outbox. The
//!   benchmark drives the store directly, as the service would: each message is one
//!   write inserting a settled prediction with its `completed` webhook message (an
//!   `Effect::Enqueue` on the webhooks lane) in the same commit, followed by `DispatcherHandle::wake` (the server
//!   wakes the dispatcher from the hub's outbox signal after a commit). Burst: `--producers`
//!   tasks create `--messages` predictions as fast as the store takes them while the
//!   dispatcher sends. Steady: one create every 1/`--steady-rate` s for `--steady-seconds`.
//!
//! Rates are messages / (last receipt − first send or first enqueue); for Augur's burst also
//! the rate at which the backlog left when the last `create` returned drained (no creates
//! competing for the store then). Latency is receipt − the moment the `create` that enqueued
//! the message returned (its commit; a receipt that beat the creating task's wake-up counts
//! as 0 and is reported as `negative`), also receipt − the moment the `create` was called
//! (`latency_from_submit`, which adds the commit's own wait), and, for the reference,
//! receipt − the moment the request was handed to the client. CPU is the whole process's
//! (receiver and clients included) per message, from `/proc/self/stat`.
//!
//! Human-readable lines go to stderr; the last stdout line is one JSON object.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use augur_core::outbox::{Delivery, Outbox};
use augur_core::store::memory::MemoryStore;
use augur_core::store::{DynStore, Entity, Op, Write};
use augur_core::{
    AccountId, ModelName, Prediction, PredictionId, Status, Timestamp, WebhookEvent, WorkerId,
};
use augur_store_embedded::{EmbeddedOptions, EmbeddedStore, SyncMode};
use augur_webhooks::{Dispatcher, DispatcherHandle, DispatcherOptions, Render, WebhookSecret};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The server's allocator, so that the Augur phases allocate as `augur serve` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The signing secret of every phase.
const SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The dispatcher's user agent, reused by the reference client.
const USER_AGENT: &str = concat!("augur/", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Embedded,
    Memory,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Memory => "memory",
        }
    }
}

struct Args {
    messages: usize,
    reference_messages: usize,
    concurrency: usize,
    producers: usize,
    steady_rate: u64,
    steady_seconds: u64,
    stores: Vec<Backend>,
    dir: Option<PathBuf>,
    sync: SyncMode,
    timeout: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: webhooks [--messages 20000] [--reference-messages 50000] [--concurrency 32] \
         [--producers 32] [--steady-rate 200] [--steady-seconds 10] \
         [--stores embedded,memory] [--dir DIR] [--sync full|normal] [--timeout 180]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        messages: 20_000,
        reference_messages: 50_000,
        concurrency: 32,
        producers: 32,
        steady_rate: 200,
        steady_seconds: 10,
        stores: vec![Backend::Embedded, Backend::Memory],
        dir: None,
        sync: SyncMode::Full,
        timeout: Duration::from_secs(180),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else { usage() };
        let number = || value.parse::<u64>().unwrap_or_else(|_| usage()).max(1);
        match flag.as_str() {
            "--messages" => args.messages = number() as usize,
            "--reference-messages" => args.reference_messages = number() as usize,
            "--concurrency" => args.concurrency = number() as usize,
            "--producers" => args.producers = number() as usize,
            "--steady-rate" => args.steady_rate = number(),
            "--steady-seconds" => args.steady_seconds = number(),
            "--timeout" => args.timeout = Duration::from_secs(number()),
            "--dir" => args.dir = Some(PathBuf::from(&value)),
            "--stores" => {
                args.stores = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| match s {
                        "embedded" => Backend::Embedded,
                        "memory" => Backend::Memory,
                        _ => usage(),
                    })
                    .collect();
            }
            "--sync" => {
                args.sync = match value.as_str() {
                    "full" => SyncMode::Full,
                    "normal" => SyncMode::Normal,
                    _ => usage(),
                }
            }
            _ => usage(),
        }
    }
    args
}

/// Nanoseconds since `base`, at least 1 (0 marks "not yet" in the time tables).
fn since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A table of one time (nanoseconds since the run's base) per message; 0 = not yet.
fn times(n: usize) -> Arc<Vec<AtomicU64>> {
    Arc::new((0..n).map(|_| AtomicU64::new(0)).collect())
}

/// The process's CPU time (user + system) in microseconds.
fn cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After "pid (comm) ": state is field 3, utime field 14, stime field 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // /proc reports in USER_HZ, 100 per second on Linux.
    (ticks(11) + ticks(12)) * 10_000
}

/// What a receiver saw.
struct ReceiverLog {
    base: Instant,
    /// When each message (by the number at the end of its `webhook-id`) first arrived.
    received: Arc<Vec<AtomicU64>>,
    unique: AtomicUsize,
    requests: AtomicUsize,
    duplicates: AtomicUsize,
    unknown: AtomicUsize,
    body_bytes: AtomicUsize,
}

/// A webhook receiver on `127.0.0.1:0` answering 204 to everything.
struct Receiver {
    url: String,
    log: Arc<ReceiverLog>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start(base: Instant, messages: usize) -> Self {
        let log = Arc::new(ReceiverLog {
            base,
            received: times(messages),
            unique: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            unknown: AtomicUsize::new(0),
            body_bytes: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("serve the receiver");
        });
        Self {
            url: format!("http://{addr}/hooks/augur"),
            log,
            task,
        }
    }

    /// Waits until every message arrived, or `limit` passed (false).
    async fn all_received(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.log.unique.load(Ordering::Acquire) < self.log.received.len() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    fn summary(&self) -> Value {
        json!({
            "requests": self.log.requests.load(Ordering::Relaxed),
            "unique": self.log.unique.load(Ordering::Relaxed),
            "duplicates": self.log.duplicates.load(Ordering::Relaxed),
            "unknown": self.log.unknown.load(Ordering::Relaxed),
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(log): State<Arc<ReceiverLog>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = since(log.base);
    log.requests.fetch_add(1, Ordering::Relaxed);
    let index = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|id| id.rsplit('_').next())
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|i| *i < log.received.len());
    match index {
        None => {
            log.unknown.fetch_add(1, Ordering::Relaxed);
        }
        Some(i) => {
            let first = log.received[i]
                .compare_exchange(0, at, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
            if first {
                log.body_bytes.store(body.len(), Ordering::Relaxed);
                log.unique.fetch_add(1, Ordering::AcqRel);
            } else {
                log.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    StatusCode::NO_CONTENT
}

/// Milliseconds at fraction `p` of sorted nanosecond values.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1e6
}

/// p50, p90, p99 and max of `received[i] − from[i]`, in ms; also how many were negative
/// (received before `from` was taken: clamped to 0).
fn latencies(received: &[AtomicU64], from: &[AtomicU64]) -> Value {
    let mut negative = 0;
    let mut values: Vec<u64> = received
        .iter()
        .zip(from)
        .map(|(r, f)| {
            let (r, f) = (r.load(Ordering::Relaxed), f.load(Ordering::Relaxed));
            if r < f {
                negative += 1;
            }
            r.saturating_sub(f)
        })
        .collect();
    values.sort_unstable();
    json!({
        "p50_ms": round3(percentile_ms(&values, 0.5)),
        "p90_ms": round3(percentile_ms(&values, 0.9)),
        "p99_ms": round3(percentile_ms(&values, 0.99)),
        "max_ms": round3(percentile_ms(&values, 1.0)),
        "negative": negative,
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn last(values: &[AtomicU64]) -> u64 {
    values
        .iter()
        .map(|v| v.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0)
}

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The settled `augur/echo` prediction every message carries (a fresh id each time).
fn template(url: &str) -> Prediction {
    let mut p = Prediction::new(
        PredictionId::generate(),
        AccountId::admin(),
        ModelName::parse("augur/echo").expect("model name"),
        "v1".into(),
        json!({"text": "hello from the benchmark"}),
    );
    let now = Timestamp::now();
    p.status = Status::Succeeded;
    p.output = Some(json!("hello from the benchmark"));
    p.logs = "echo: 24 characters\n".into();
    p.started_at = Some(now);
    p.completed_at = Some(now);
    p.metrics.predict_time = Some(0.000_021);
    p.metrics.total_time = Some(0.000_5);
    p.webhook = Some(url.to_owned());
    p
}

/// The body of a message: the prediction's JSON (the server renders the API's JSON of it,
/// `PredictionJson`, of about the same size).
fn render() -> Render {
    Arc::new(|p: &augur_core::outbox::Payload| {
        Bytes::from(
            match p {
                augur_core::outbox::Payload::Prediction(p) => serde_json::to_vec(p),
                augur_core::outbox::Payload::Batch(b) => serde_json::to_vec(b),
                augur_core::outbox::Payload::Run(r) => serde_json::to_vec(r),
            }
            .expect("serialize"),
        )
    })
}

/// How messages are produced in a phase.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// `tasks` tasks send or enqueue as fast as they can.
    Burst { tasks: usize },
    /// One every `1 / rate` s.
    Steady { rate: u64 },
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Burst { .. } => "burst",
            Load::Steady { .. } => "steady",
        }
    }
}

/// Runs `one(i)` for `i` in `0..n` as `load` says; returns when all have returned.
async fn drive<F, Fut>(n: usize, load: Load, one: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let one = Arc::new(one);
    let mut tasks = tokio::task::JoinSet::new();
    match load {
        Load::Burst { tasks: count } => {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..count {
                let (next, one) = (next.clone(), one.clone());
                tasks.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        one(i).await;
                    }
                });
            }
        }
        Load::Steady { rate } => {
            let mut interval =
                tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
            for i in 0..n {
                interval.tick().await;
                tasks.spawn(one(i));
                // Reap the finished ones so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a load task panicked");
    }
}

/// The reference: a plain reqwest client POSTing signed bodies of the same size.
async fn reference(base: Instant, args: &Args, n: usize, load: Load) -> Value {
    let receiver = Receiver::start(base, n).await;
    let body = render()(&augur_core::outbox::Payload::Prediction(Box::new(
        template(&receiver.url),
    )));
    let secret = Arc::new(WebhookSecret::parse(SECRET).expect("secret"));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
        .expect("http client");
    let sent = times(n);
    let url = reqwest::Url::parse(&receiver.url).expect("receiver url");
    let cpu = cpu_us();
    let started = since(base);
    {
        let sent = sent.clone();
        drive(n, load, move |i| {
            let (client, secret, body, url, sent) = (
                client.clone(),
                secret.clone(),
                body.clone(),
                url.clone(),
                sent.clone(),
            );
            async move {
                let id = format!("msg_reference_{i}");
                let timestamp = unix_seconds();
                let signature = secret.sign(&id, timestamp, &body);
                sent[i].store(since(base), Ordering::Relaxed);
                let response = client
                    .post(url)
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("reference request");
                assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
                let _ = response.bytes().await;
            }
        })
        .await;
    }
    let complete = receiver.all_received(args.timeout).await;
    let cpu = cpu_us() - cpu;
    let end = last(&receiver.log.received);
    let seconds = (end - started) as f64 / 1e9;
    let result = json!({
        "phase": format!("reference {}", load.name()),
        "messages": n,
        "complete": complete,
        "seconds": round3(seconds),
        "per_s": (n as f64 / seconds).round(),
        "latency": latencies(&receiver.log.received, &sent),
        "cpu_us_per_msg": (cpu as f64 / n as f64).round(),
        "receiver": receiver.summary(),
        "body_bytes": receiver.log.body_bytes.load(Ordering::Relaxed),
    });
    eprintln!("{result}");
    result
}

/// Opens a fresh store of `backend` (embedded: in `dir`).
fn open_store(backend: Backend, dir: &Path, sync: SyncMode) -> DynStore {
    match backend {
        Backend::Embedded => Arc::new(
            EmbeddedStore::open(EmbeddedOptions::new(dir).with_sync(sync))
                .expect("open the embedded store"),
        ),
        Backend::Memory => Arc::new(MemoryStore::new()),
    }
}

/// Augur: predictions created with one message each, sent by a [`Dispatcher`].
async fn augur(
    base: Instant,
    args: &Args,
    backend: Backend,
    dir: &Path,
    n: usize,
    load: Load,
) -> Value {
    let receiver = Receiver::start(base, n).await;
    let store = open_store(backend, dir, args.sync);
    let worker_id = WorkerId::parse("bench-dispatcher").expect("worker id");
    let dispatcher = Dispatcher::new(
        Outbox::new(store.clone()),
        WebhookSecret::parse(SECRET).expect("secret"),
        render(),
        DispatcherOptions {
            worker_id: worker_id.clone(),
            concurrency: args.concurrency,
            // The receiver is on loopback, which only the operator's allowlist opens.
            destinations: augur_outbound::Policy::parse_allowlist("127.0.0.0/8,::1/128")
                .expect("allowlist"),
            ..DispatcherOptions::default()
        },
    )
    .expect("dispatcher");
    let handle = dispatcher.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(dispatcher.run(async {
        let _ = stopped.await;
    }));

    let submitted = times(n);
    let committed = times(n);
    let enqueue = Arc::new(Enqueue {
        base,
        store: store.clone(),
        template: template(&receiver.url),
        handle,
        submitted: submitted.clone(),
        committed: committed.clone(),
    });
    let cpu = cpu_us();
    let started = since(base);
    drive(n, load, move |i| {
        let enqueue = enqueue.clone();
        async move { enqueue.one(i).await }
    })
    .await;
    let enqueued = since(base);
    let complete = receiver.all_received(args.timeout).await;
    let cpu = cpu_us() - cpu;
    let end = last(&receiver.log.received);
    let _ = stop.send(());
    running.await.expect("the dispatcher stops");
    // Every attempt was recorded: nothing is left to claim.
    let pending = Outbox::new(store.clone())
        .claim(&worker_id, Duration::from_secs(60), 1000)
        .await
        .expect("claim")
        .len();
    store.close().await;
    let seconds = (end - started) as f64 / 1e9;
    let enqueue_seconds = (enqueued - started) as f64 / 1e9;
    // The backlog left when the last create returned, and how fast it drained with no
    // creates competing for the store.
    let backlog = receiver
        .log
        .received
        .iter()
        .filter(|r| r.load(Ordering::Relaxed) > enqueued)
        .count();
    let drain_per_s = if backlog > 0 && end > enqueued {
        (backlog as f64 / ((end - enqueued) as f64 / 1e9)).round()
    } else {
        0.0
    };
    let result = json!({
        "phase": format!("augur {} {}", backend.name(), load.name()),
        "messages": n,
        "complete": complete,
        "pending_after": pending,
        "seconds": round3(seconds),
        "per_s": (n as f64 / seconds).round(),
        "enqueued_per_s": (n as f64 / enqueue_seconds).round(),
        "backlog_at_last_enqueue": backlog,
        "drain_per_s": drain_per_s,
        "latency": latencies(&receiver.log.received, &committed),
        "latency_from_submit": latencies(&receiver.log.received, &submitted),
        "cpu_us_per_msg": (cpu as f64 / n as f64).round(),
        "receiver": receiver.summary(),
        "body_bytes": receiver.log.body_bytes.load(Ordering::Relaxed),
    });
    eprintln!("{result}");
    result
}

/// Creates message `i`'s prediction with its delivery in one commit, then wakes the
/// dispatcher, as the service does after a commit that enqueued a message.
struct Enqueue {
    base: Instant,
    store: DynStore,
    template: Prediction,
    handle: DispatcherHandle,
    submitted: Arc<Vec<AtomicU64>>,
    committed: Arc<Vec<AtomicU64>>,
}

impl Enqueue {
    async fn one(&self, i: usize) {
        let mut p = self.template.clone();
        p.id = PredictionId::generate_for(&p.owner);
        let delivery = Delivery {
            id: format!("msg_{}_{i}", p.id),
            url: p.webhook.clone().unwrap_or_default(),
            event: WebhookEvent::Completed,
            payload: augur_core::outbox::Payload::Prediction(Box::new(p.clone())),
            created_at: Timestamp::now(),
        };
        let write = Write {
            account: p.owner.clone(),
            ops: vec![Op::Insert(p.to_record().expect("encodes"))],
            effects: vec![delivery.enqueue(&p.owner).expect("encodes")],
        };
        self.submitted[i].store(since(self.base), Ordering::Relaxed);
        self.store.write(&write).await.expect("create");
        self.committed[i].store(since(self.base), Ordering::Relaxed);
        self.handle.wake();
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let base = Instant::now();
    let temp;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir().expect("temporary directory");
            temp.path().to_owned()
        }
    };
    let burst = Load::Burst {
        tasks: args.concurrency,
    };
    let produce = Load::Burst {
        tasks: args.producers,
    };
    let steady = Load::Steady {
        rate: args.steady_rate,
    };
    let steady_n = (args.steady_rate * args.steady_seconds) as usize;
    let mut out = serde_json::Map::new();
    let mut ok = true;
    let mut record = |key: String, value: Value| {
        ok &= value["complete"] == json!(true)
            && value.get("pending_after").is_none_or(|p| *p == json!(0));
        out.insert(key, value);
    };

    record(
        "reference_burst".into(),
        reference(base, &args, args.reference_messages, burst).await,
    );
    for &backend in &args.stores {
        let phase_dir = dir.join(format!("{}-burst", backend.name()));
        let value = augur(base, &args, backend, &phase_dir, args.messages, produce).await;
        record(format!("{}_burst", backend.name()), value);
    }
    record(
        "reference_steady".into(),
        reference(base, &args, steady_n, steady).await,
    );
    for &backend in &args.stores {
        let phase_dir = dir.join(format!("{}-steady", backend.name()));
        let value = augur(base, &args, backend, &phase_dir, steady_n, steady).await;
        record(format!("{}_steady", backend.name()), value);
    }
    out.insert(
        "settings".into(),
        json!({
            "concurrency": args.concurrency,
            "producers": args.producers,
            "messages": args.messages,
            "reference_messages": args.reference_messages,
            "steady_rate": args.steady_rate,
            "steady_seconds": args.steady_seconds,
            "sync": args.sync.as_str(),
        }),
    );
    println!("{}", Value::Object(out));
    if !ok {
        eprintln!("some phase did not complete (see \"complete\" and \"pending_after\")");
        std::process::exit(1);
    }
}
