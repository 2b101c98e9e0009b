//! What the fuzz targets share: Augur's whole HTTP API over a memory store, driven through
//! the router without sockets on a paused clock (so `Prefer: wait` and streams cost no real
//! time), and the checks every answer must pass: no 500 (a handler panic or an internal
//! error on input the client chose) and a JSON body on every error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use augur_api::payments::PaymentsConfig;
use augur_api::{ApiConfig, AppParts, AppState, router};
use augur_core::store::memory::MemoryStore;
use augur_core::{Accounts, AccountsConfig, Credits, Predictions, Secret, ServiceConfig};
use augur_engine::{ModelRegistry, OutputFiles};
use augur_webhooks::WebhookSecret;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub use arbitrary;

/// The admin token of the fuzzed server.
pub const ADMIN_TOKEN: &str = "fuzz-admin-token-0123456789";

/// The payment provider's signing secret of the fuzzed server (`POST /v1/payments/webhook`).
pub const PAYMENTS_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const BASE: &str = "http://augur.fuzz";

/// How long an answer's body is read (on the paused clock) before it counts as a stream
/// that stays open, which is fine.
const BODY_WINDOW: Duration = Duration::from_secs(120);

/// A runtime for the router (one thread, time paused and advanced whenever every task
/// waits) and the server's state, shared by a fuzzing process's runs: building the state
/// and the router take long enough to dominate a run. A fresh state
/// every [`REQUESTS_PER_STATE`] requests keeps the memory store small.
pub struct Api {
    runtime: tokio::runtime::Runtime,
    app: Mutex<(Router, usize)>,
}

/// How many requests one state serves before a fresh one replaces it.
const REQUESTS_PER_STATE: usize = 2000;

impl Api {
    /// The process's runtime and state.
    pub fn shared() -> &'static Api {
        static API: OnceLock<Api> = OnceLock::new();
        API.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a current-thread runtime");
            let app = runtime.block_on(async { router(state()) });
            Api {
                runtime,
                app: Mutex::new((app, 0)),
            }
        })
    }

    /// Sends `setup` requests (each answered however it is), then `request`, and checks
    /// the answer: never a 5xx but 503, and an error's body is JSON. Returns the status and
    /// body.
    pub fn send(&self, setup: Vec<Request<Body>>, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let app = {
            let mut shared = self.app.lock().unwrap_or_else(|e| e.into_inner());
            shared.1 += 1;
            if shared.1 > REQUESTS_PER_STATE {
                *shared = (self.runtime.block_on(async { router(state()) }), 1);
            }
            shared.0.clone()
        };
        self.runtime.block_on(async move {
            for r in setup {
                let _ = app.clone().oneshot(r).await;
            }
            let head = request.method() == axum::http::Method::HEAD;
            let described = format!("{} {}", request.method(), request.uri());
            let response = app
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let status = response.status();
            let body = match tokio::time::timeout(BODY_WINDOW, response.into_body().collect()).await
            {
                Ok(Ok(collected)) => collected.to_bytes().to_vec(),
                Ok(Err(e)) => panic!("{described}: the body failed: {e}"),
                Err(_) => Vec::new(), // an open stream
            };
            // An answer to HEAD has no body (the router drops it), errors included.
            check(&described, status, if head { b"{}" } else { &body });
            (status, body)
        })
    }
}

/// What every answer must be.
fn check(described: &str, status: StatusCode, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{described}: answered {status}: {text}"
    );
    if status.is_client_error() {
        assert!(
            serde_json::from_slice::<serde_json::Value>(body).is_ok(),
            "{described}: the {status} error is not JSON: {text}"
        );
    }
}

/// A request with the admin token, a JSON body and `headers`.
pub fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &[u8])],
    body: Vec<u8>,
) -> Option<Request<Body>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body)).ok()
}

/// The Standard Webhooks headers of a payment webhook carrying `body`, signed with
/// [`PAYMENTS_SECRET`] now.
pub fn payment_signature(msg_id: &str, body: &[u8]) -> (String, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let secret = WebhookSecret::parse(PAYMENTS_SECRET).expect("a valid secret");
    (now.to_string(), secret.sign(msg_id, now, body))
}

/// The API's state over a fresh memory store: the built-in models (`augur/demo-image`
/// priced), payments configured, no workers (predictions stay `starting`).
fn state() -> AppState {
    let store: augur_core::store::DynStore = Arc::new(MemoryStore::new());
    let mut models = ModelRegistry::new();
    augur_engine::builtin::register(&mut models);
    let priced = augur_core::ModelName::parse("augur/demo-image").expect("a model name");
    models.set_price(
        &priced,
        Some(augur_core::Price::PerPrediction { per_prediction: 3 }),
    );
    let mut config = ApiConfig::new(BASE, Secret::new(ADMIN_TOKEN));
    config.max_body_bytes = 64 * 1024;
    let models = Arc::new(models);
    AppState::new(AppParts {
        rendered: Default::default(),
        service: Predictions::new(store.clone(), ServiceConfig::default()),
        accounts: Accounts::new(store.clone(), AccountsConfig::default()),
        credits: Credits::new(store),
        create_limiter: Default::default(),
        callback_budget: Default::default(),
        payments: Some(PaymentsConfig {
            secret: WebhookSecret::parse(PAYMENTS_SECRET).expect("a valid secret"),
            packs: BTreeMap::from([("pack-100".to_owned(), 100)]),
        }),
        catalog: Arc::new(augur_engine::ModelCatalog::new(models.clone(), BASE)),
        models,
        files: OutputFiles::in_memory(BASE),
        config,
        metrics: None,
    })
}
