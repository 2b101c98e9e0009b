//! Test fixtures: a scripted webhook receiver on a real socket, predictions with messages in
//! a `MemoryStore` outbox, and a dispatcher with fast settings.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::outbox::{Delivery, DeliveryState, DeliveryStatus, Outbox};
use augur_core::store::memory::MemoryStore;
use augur_core::store::{DynStore, Effect, Entity, Op, Write};
use augur_core::{
    AccountId, ModelName, Prediction, PredictionId, Timestamp, WebhookEvent, WorkerId,
};
use augur_webhooks::{
    Backoff, Dispatcher, DispatcherHandle, DispatcherOptions, Render, WebhookSecret,
};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the receiver does with a request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answer with this status.
    Status(u16),
    /// Answer 302 with this location.
    Redirect(String),
    /// Wait this long, then answer with this status.
    Hang(Duration, u16),
}

/// Chooses the reply to the `n`th request (from 0) to `path`.
pub type Script = Arc<dyn Fn(&str, usize) -> Reply + Send + Sync>;

/// A request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status it was answered with (the planned one, for a hanging reply).
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
            .unwrap_or("")
    }

    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id")
    }
}

#[derive(Clone)]
struct ReceiverState {
    script: Script,
    log: Arc<Mutex<Vec<Received>>>,
}

/// A webhook receiver on `127.0.0.1:0` that answers as its script says and records every
/// request.
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            script: Arc::new(script),
            log: log.clone(),
        };
        let app = axum::Router::new().fallback(receive).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self { addr, log, task }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// The requests to `path` so far.
    pub fn requests_to(&self, path: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(state): State<ReceiverState>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .expect("body");
    let reply = {
        let mut log = state.log.lock().unwrap();
        let n = log.iter().filter(|r| r.path == path).count();
        let reply = (state.script)(&path, n);
        let answered = match &reply {
            Reply::Status(s) | Reply::Hang(_, s) => *s,
            Reply::Redirect(_) => 302,
        };
        log.push(Received {
            path,
            headers,
            body,
            answered,
        });
        reply
    };
    match reply {
        Reply::Status(s) => status(s).into_response(),
        Reply::Redirect(to) => {
            (StatusCode::FOUND, [(header::LOCATION, to)], Body::empty()).into_response()
        }
        Reply::Hang(wait, s) => {
            tokio::time::sleep(wait).await;
            status(s).into_response()
        }
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("valid status")
}

/// A fresh in-memory store.
pub fn store() -> DynStore {
    Arc::new(MemoryStore::new())
}

/// The test secret.
pub fn secret() -> WebhookSecret {
    WebhookSecret::parse("whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap()
}

/// Renders a prediction as its JSON.
pub fn render() -> Render {
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

/// Settings that keep tests fast.
pub fn fast_options() -> DispatcherOptions {
    DispatcherOptions {
        worker_id: WorkerId::parse("test-dispatcher").unwrap(),
        concurrency: 8,
        lease_for: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        attempt_timeout: Duration::from_millis(500),
        backoff: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
        max_age: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(2),
        // The receivers are on loopback, which only the operator's allowlist opens.
        destinations: loopback_allowed(),
    }
}

/// A destination policy that lets messages go to loopback receivers.
pub fn loopback_allowed() -> augur_outbound::Policy {
    augur_outbound::Policy::parse_allowlist("127.0.0.0/8,::1/128").unwrap()
}

/// The id of message `n` of prediction `id`.
pub fn message_id(id: &PredictionId, n: usize) -> String {
    format!("msg_{id}_{n}")
}

/// The message number in an id made by [`message_id`].
pub fn message_number(webhook_id: &str) -> usize {
    webhook_id
        .rsplit('_')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a message id of the tests")
}

/// Creates a prediction with `messages` messages to `url` in its outbox; each carries a
/// different payload (its logs say which message it is).
pub async fn create_with_messages(store: &DynStore, url: &str, messages: usize) -> PredictionId {
    let mut p = Prediction::new(
        PredictionId::generate(),
        AccountId::admin(),
        ModelName::parse("augur/echo").unwrap(),
        "v1".into(),
        serde_json::json!({"prompt": "hi"}),
    );
    p.webhook = Some(url.to_owned());
    let effects: Vec<Effect> = (0..messages)
        .map(|n| {
            let mut payload = p.clone();
            payload.logs = format!("message {n}\n");
            Delivery {
                id: message_id(&p.id, n),
                url: url.to_owned(),
                event: if n + 1 == messages {
                    WebhookEvent::Completed
                } else {
                    WebhookEvent::Logs
                },
                payload: augur_core::outbox::Payload::Prediction(Box::new(payload)),
                created_at: Timestamp::now(),
            }
            .enqueue(&p.owner)
            .expect("encodes")
        })
        .collect();
    store
        .write(&Write {
            account: p.owner.clone(),
            ops: vec![Op::Insert(p.to_record().expect("encodes"))],
            effects,
        })
        .await
        .expect("create");
    p.id
}

/// A dispatcher running in the background.
pub struct Running {
    pub handle: DispatcherHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    pub fn start(store: &DynStore, options: DispatcherOptions) -> Self {
        let dispatcher =
            Dispatcher::new(Outbox::new(store.clone()), secret(), render(), options).unwrap();
        let handle = dispatcher.handle();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(dispatcher.run(async {
            let _ = rx.await;
        }));
        Self {
            handle,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Shuts the dispatcher down and waits for `run` to return, failing after `within`.
    pub async fn stop(mut self, within: Duration) {
        let _ = self.stop.take().expect("running").send(());
        let task = self.task.take().expect("running");
        tokio::time::timeout(within, task)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Polls `check` until it returns `Some`, failing after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The prediction's messages once none is pending any more.
pub async fn settled(store: &DynStore, id: &PredictionId, within: Duration) -> Vec<DeliveryState> {
    eventually(within, "the messages to settle", || async {
        let states = list(store, id).await;
        let done = !states.is_empty() && states.iter().all(|s| s.status != DeliveryStatus::Pending);
        done.then_some(states)
    })
    .await
}

/// The prediction's messages and their attempts.
pub async fn list(store: &DynStore, id: &PredictionId) -> Vec<DeliveryState> {
    Outbox::new(store.clone())
        .list(id)
        .await
        .expect("list deliveries")
}
