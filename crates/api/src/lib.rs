//! Augur's HTTP API, built as an axum [`Router`] by [`router`].
//!
//! - `/v1/...`: Replicate's predictions and models API (so the official clients work), plus
//!   Augur's extensions (client ids, `Idempotency-Key`, `Cancel-After`, list filters).
//! - `/api/predictions/{id}`: the seeds' status route, in the seeds' shape.
//! - `/files/...`: output files (unauthenticated, unguessable URLs).
//! - `/v1/files`: the files API (uploads) and signed download URLs.
//! - `/v1/batches`: batches of predictions ([`batches`]).
//! - `/v1/workflows`, `/v1/runs`: workflows of predictions and their runs ([`workflows`]).
//! - `/v1/deployments`, `/v1/hardware`, `/v1/collections`: Replicate's deployments, hardware
//!   and collections (`deployments`, `models`).
//! - `/internal/cog/...`: callbacks from Cog model servers (per-prediction and per-model
//!   tokens, checked before the body is read).
//! - `/internal/replicate/...`: webhooks from upstream Replicate APIs (per-prediction tokens).
//! - `/v1/admin/status`: the operator's health and per-model figures ([`admin`]).
//! - `/healthz`, `/readyz`, `/metrics`, `/openapi.json`: operations ([`ops`]); also alone on a
//!   listener of their own ([`ops_router`]).
//!
//! Handlers parse, call [`augur_core::Predictions`], and render; HTTP statuses are decided in
//! [`error`] only. The API never names a store backend.

mod accounts;
pub mod admin;
pub mod auth;
pub mod batches;
pub mod callbacks;
mod cog_hooks;
mod compat;
mod deployments;
pub mod error;
mod files;
mod json_bounds;
mod limits;
mod models;
pub mod ops;
mod pages;
mod paging;
pub mod payments;
mod predictions;
mod replicate_hooks;
mod stream;
mod telemetry;
mod uploads;
mod webhooks;
pub mod wire;
pub mod workflows;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use augur_core::{Accounts, Credits, Predictions, Secret};
use augur_engine::{ModelRegistry, OutputFiles};

pub use error::{ApiError, ErrorCode};

/// Settings of the API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The base of every absolute URL the API hands out (`urls.get`, `next`, output files),
    /// without a trailing slash.
    pub public_url: String,
    /// The admin bearer token.
    pub admin_token: Secret,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The longest `Prefer: wait` honoured (Replicate's is 60 s).
    pub max_wait: Duration,
    /// The largest upload accepted by `POST /v1/files`, in bytes.
    pub max_file_bytes: u64,
    /// How long an uploaded file is kept.
    pub file_expiry: Duration,
    /// The most items a batch may have.
    pub max_batch_items: usize,
    /// The largest `POST /v1/batches` body accepted, in bytes.
    pub max_batch_body_bytes: usize,
    /// Signs and checks files' download URLs; by default keyed by a secret derived from the
    /// admin token.
    pub url_signer: augur_core::file::UrlSigner,
    /// The Standard Webhooks signing secret (`whsec_…`) shown at
    /// `GET /v1/webhooks/default/secret`; by default derived from the admin token (see
    /// [`ApiConfig::derived_webhook_secret`]).
    pub webhook_secret: Secret,
    /// Where webhooks may go: a webhook URL naming an address this refuses is a 422 at
    /// create (the dispatcher checks again when it connects, after resolving names).
    pub destinations: augur_outbound::Policy,
    /// How long a request may take to be answered (its head; streams then run on), plus
    /// [`ApiConfig::max_wait`] for a `Prefer: wait`; uploads are not bounded by it.
    pub request_timeout: Duration,
    /// Who may read `/metrics` and `/readyz`'s detail on this router.
    pub ops: ops::OpsAccess,
    /// A list page stops taking items once its JSON reaches this many bytes (at least one item
    /// is always listed); its `next` URL continues from there.
    pub list_page_bytes: usize,
}

impl ApiConfig {
    /// Defaults for a server at `public_url` with `admin_token`.
    pub fn new(public_url: impl Into<String>, admin_token: Secret) -> Self {
        Self {
            public_url: public_url.into().trim_end_matches('/').to_owned(),
            webhook_secret: Self::derived_webhook_secret(&admin_token),
            url_signer: augur_core::file::UrlSigner::derived_from(&admin_token),
            max_file_bytes: 100 << 20,
            file_expiry: Duration::from_secs(24 * 3600),
            max_batch_items: augur_core::batch::DEFAULT_MAX_ITEMS,
            max_batch_body_bytes: 16 << 20,
            admin_token,
            max_body_bytes: 1 << 20,
            list_page_bytes: paging::DEFAULT_PAGE_BYTES,
            max_wait: Duration::from_secs(60),
            destinations: augur_outbound::Policy::default(),
            request_timeout: Duration::from_secs(30),
            ops: ops::OpsAccess::default(),
        }
    }

    /// The webhook signing secret that goes with an admin token:
    /// `whsec_` + base64(HMAC-SHA256(admin token, "augur webhook secret v1")). Every node that
    /// shares a store shares the admin token, so they sign alike with nothing stored; changing
    /// the admin token changes it (unless `AUGUR_WEBHOOK_SECRET` pins it).
    pub fn derived_webhook_secret(admin_token: &Secret) -> Secret {
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(admin_token.expose().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"augur webhook secret v1");
        let key = mac.finalize().into_bytes();
        Secret::new(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ))
    }
}

/// Everything handlers need.
#[derive(Debug)]
pub struct AppParts {
    /// Rendered JSON of recently read predictions (see [`wire::Rendered`]).
    #[doc(hidden)]
    pub rendered: wire::Rendered,
    /// The prediction service.
    pub service: Predictions,
    /// Accounts and tokens.
    pub accounts: Accounts,
    /// Balances, ledgers, grants and top-ups.
    pub credits: Credits,
    /// The memory model servers' callback bodies share while they are read.
    #[doc(hidden)]
    pub callback_budget: callbacks::Budget,
    /// Node-local limits on creates per minute.
    #[doc(hidden)]
    pub create_limiter: auth::CreateLimiter,
    /// Top-ups by a payment provider's webhook; `None` leaves `POST /v1/payments/webhook`
    /// answering 404.
    pub payments: Option<payments::PaymentsConfig>,
    /// The models this server runs.
    pub models: Arc<ModelRegistry>,
    /// The models as workflow runs see them.
    pub catalog: Arc<dyn augur_core::workflow::Catalog>,
    /// Output files.
    pub files: OutputFiles,
    /// API settings.
    pub config: ApiConfig,
    /// Renders `/metrics`; `None` if no Prometheus recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

/// The handlers' shared state: one `Arc`, so the clone every extractor makes is one atomic
/// increment.
#[derive(Clone, Debug)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    /// Shares `parts` with every handler, and gives the service the catalog, so that a
    /// workflow node's settlement can advance its run in the same write.
    pub fn new(parts: AppParts) -> Self {
        parts.service.set_catalog(parts.catalog.clone());
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let authenticate = || middleware::from_fn_with_state(state.clone(), auth::require_token);
    let routes = Router::new()
        .merge(predictions::routes())
        .merge(models::routes())
        .merge(compat::routes())
        .merge(webhooks::routes())
        .merge(accounts::routes())
        .merge(admin::routes())
        .merge(stream::account_routes())
        .merge(uploads::routes())
        .merge(workflows::routes())
        .merge(deployments::routes())
        .route_layer(authenticate())
        .merge(stream::routes())
        .merge(payments::routes())
        .merge(files::routes())
        .merge(ops::routes());
    // Inside the router-wide limit, so this one wins for batches.
    let batches = batches::routes()
        .layer(DefaultBodyLimit::max(state.config.max_batch_body_bytes))
        .route_layer(authenticate());
    // The shared limits outside authentication, so that a refused request's body is read too.
    Router::new()
        .merge(limits::apply(routes, &state, state.config.max_body_bytes))
        .merge(limits::apply(
            batches,
            &state,
            state.config.max_batch_body_bytes,
        ))
        // Uploads check their size as they stream, with no request timeout.
        .merge(limits::apply_streaming(
            uploads::upload_routes(),
            &state,
            uploads::DRAIN_LIMIT,
        ))
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn(telemetry::record_request))
        .layer(TraceLayer::new_for_http().make_span_with(telemetry::request_span))
        .layer(CatchPanicLayer::custom(telemetry::panic_response))
        .with_state(state.clone())
        // Outside the layers above: their request log would show the callback tokens.
        .merge(cog_hooks::routes(state.clone()))
        .merge(replicate_hooks::routes(state))
}

/// The operations endpoints alone (`/healthz`, `/readyz`, `/metrics`), open to every caller,
/// for a listener of their own (`AUGUR_OPS_LISTEN`).
pub fn ops_router(state: AppState) -> Router {
    ops::trusted_routes()
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(CatchPanicLayer::custom(telemetry::panic_response))
        .with_state(state)
}

/// Model servers' callback routes (Cog, Replicate), with the API's metrics and panic handling
/// but their own body limit, outside the main router's request log: their URIs carry
/// per-prediction tokens, so their log names the route template only.
fn callback_routes(routes: Router<AppState>, max_body: usize, state: AppState) -> Router {
    routes
        .method_not_allowed_fallback(error::method_not_allowed)
        .route_layer(middleware::from_fn(telemetry::record_request))
        .route_layer(TraceLayer::new_for_http().make_span_with(telemetry::request_span))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(telemetry::panic_response))
        .with_state(state)
}
