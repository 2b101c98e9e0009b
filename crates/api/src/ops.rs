//! Operations endpoints: `/healthz` (the process is up), `/readyz` (the store answers),
//! `/metrics` (Prometheus) and `/openapi.json`.
//!
//! `/metrics` and `/readyz`'s detail (the store, the queue, a store error's text) are for the
//! operator: [`OpsAccess`] says who else may read them on the API's router. A caller without
//! that right gets `/readyz`'s status alone (`ready` or 503) and a 401 from `/metrics`. On a
//! listener of their own (`trusted_routes`) they are open.

use std::time::Duration;

use augur_core::Secret;
use augur_core::store::Lane;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};

/// Who may read `/metrics` and `/readyz`'s detail on the API's router.
#[derive(Clone, Debug)]
pub struct OpsAccess {
    /// Everyone may (the server listens on loopback only and no operations token or listener
    /// is configured).
    pub open: bool,
    /// Callers with this bearer token may, as may the admin token's.
    pub token: Option<Secret>,
}

impl Default for OpsAccess {
    fn default() -> Self {
        Self {
            open: true,
            token: None,
        }
    }
}

/// Marks requests that came in on the operations listener.
#[derive(Clone, Copy, Debug)]
struct Trusted;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The operations endpoints, open to every caller (for a listener of their own).
pub(crate) fn trusted_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(Extension(Trusted))
}

/// Whether the caller may see the operator's detail.
fn entitled(state: &AppState, trusted: Option<Extension<Trusted>>, headers: &HeaderMap) -> bool {
    if trusted.is_some() || state.config.ops.open {
        return true;
    }
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return false;
    };
    let ops = state.config.ops.token.as_ref();
    ops.is_some_and(|ops| ops.matches(token)) || state.config.admin_token.matches(token)
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(
    State(state): State<AppState>,
    trusted: Option<Extension<Trusted>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let store = state.service.ops();
    let probe = tokio::time::timeout(Duration::from_secs(2), store.queue_stats(Lane::Jobs)).await;
    if !entitled(&state, trusted, &headers) {
        return match probe {
            Ok(Ok(_)) => Ok(Json(json!({"status": "ready"}))),
            _ => Err(ApiError::new(ErrorCode::StoreUnavailable, "not ready")
                .with_retry_after(Duration::from_secs(2))),
        };
    }
    match probe {
        Ok(Ok(stats)) => Ok(Json(json!({
            "status": "ready",
            "store": store.backend(),
            "queue": {"ready": stats.ready, "leased": stats.leased, "delayed": stats.delayed},
        }))),
        Ok(Err(e)) => Err(ApiError::new(
            ErrorCode::StoreUnavailable,
            format!("the {} store is not answering: {e}", store.backend()),
        )
        .with_retry_after(Duration::from_secs(2))),
        Err(_) => Err(ApiError::new(
            ErrorCode::StoreUnavailable,
            format!("the {} store did not answer within 2s", store.backend()),
        )
        .with_retry_after(Duration::from_secs(2))),
    }
}

/// Renders Prometheus metrics, first sampling the queue depth and the store's durable
/// counters so that they are current at every scrape.
async fn metrics(
    State(state): State<AppState>,
    trusted: Option<Extension<Trusted>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if !entitled(&state, trusted, &headers) {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "metrics need the operations token (or the admin token): send Authorization: Bearer <token>",
        ));
    }
    let Some(handle) = &state.metrics else {
        return Err(ApiError::new(
            ErrorCode::RouteNotFound,
            "metrics are not enabled on this server",
        ));
    };
    let store = state.service.ops();
    for (lane, gauge) in [
        (Lane::Jobs, "augur_queue_jobs"),
        (Lane::Webhooks, "augur_queue_webhooks"),
    ] {
        if let Ok(stats) = store.queue_stats(lane).await {
            for (label, value) in [
                ("ready", stats.ready),
                ("leased", stats.leased),
                ("delayed", stats.delayed),
            ] {
                metrics::gauge!(gauge, "state" => label).set(value as f64);
            }
        }
    }
    if let Ok(counters) = store.counters().await {
        for (name, value) in counters {
            metrics::counter!(format!("augur_{name}")).absolute(u64::try_from(value).unwrap_or(0));
        }
    }
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

async fn openapi() -> Response {
    let mut response = include_str!("../openapi.json").into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
