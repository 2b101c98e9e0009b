//! Operations endpoints: `/healthz` (the process is up), `/readyz` (the store answers),
//! `/metrics` (Prometheus) and `/openapi.json`.

use std::time::Duration;

use augur_core::store::Lane;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let store = state.service.ops();
    let probe = tokio::time::timeout(Duration::from_secs(2), store.queue_stats(Lane::Jobs)).await;
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
async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
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
