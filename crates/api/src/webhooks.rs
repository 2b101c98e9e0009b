//! Outgoing webhooks as the API shows them: the caller's signing secret
//! (`GET /v1/webhooks/default/secret`, rotated with `POST /v1/webhooks/default/secret/rotate`),
//! a prediction's delivery log
//! (`GET /v1/predictions/{id}/webhooks`) and manual redelivery
//! (`POST /v1/predictions/{id}/webhooks/{webhook_id}/redeliver`).
//!
//! The messages themselves are written by the service into the store's outbox, atomically with
//! the transition that caused them, and sent by the dispatcher (crate `augur-webhooks`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;

use augur_core::outbox::{DeliveryState, DeliveryStatus};
use augur_core::store::Attempt;
use augur_core::{Caller, Timestamp, WebhookEvent};

use crate::AppState;
use crate::error::{ApiError, ApiResult, AppPath, ErrorCode};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/default/secret", get(secret))
        .route("/v1/webhooks/default/secret/rotate", post(rotate))
        .route("/v1/predictions/{id}/webhooks", get(log))
        .route(
            "/v1/predictions/{id}/webhooks/{webhook_id}/redeliver",
            post(redeliver),
        )
}

/// Replicate's shape: `{"key": "whsec_..."}`: the caller's account's secret (the admin's is
/// the server's, `AUGUR_WEBHOOK_SECRET` or derived from the admin token).
async fn secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    if caller.admin {
        return Ok(
            Json(serde_json::json!({ "key": state.config.webhook_secret.expose() }))
                .into_response(),
        );
    }
    let account = state.accounts.get(&caller.account).await?;
    Ok(Json(serde_json::json!({ "key": account.webhook_secret.expose() })).into_response())
}

/// A new secret for the caller's account; the old one keeps signing beside it for a day
/// (`retiring_until`), so webhooks of predictions already running still verify.
async fn rotate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    if caller.admin {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the admin's webhook secret is the server's: change AUGUR_WEBHOOK_SECRET (or the admin token it is derived from)",
        ));
    }
    let account = state
        .accounts
        .rotate_webhook_secret(&caller.account)
        .await?;
    Ok(Json(serde_json::json!({
        "key": account.webhook_secret.expose(),
        "retiring_until": account.retiring_webhook_secret.as_ref().map(|r| r.until.to_rfc3339()),
    }))
    .into_response())
}

#[derive(Debug, Serialize)]
struct LogJson {
    prediction_id: String,
    results: Vec<MessageJson>,
}

#[derive(Debug, Serialize)]
struct MessageJson {
    /// The `webhook-id` header of every attempt.
    id: String,
    event: WebhookEvent,
    url: String,
    status: DeliveryStatus,
    created_at: String,
    next_attempt_at: Option<String>,
    attempts: Vec<AttemptJson>,
}

#[derive(Debug, Serialize)]
struct AttemptJson {
    at: String,
    status_code: Option<u16>,
    error: Option<String>,
    duration_ms: u64,
}

fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339()
}

impl From<&DeliveryState> for MessageJson {
    fn from(d: &DeliveryState) -> Self {
        Self {
            id: d.delivery.id.clone(),
            event: d.delivery.event,
            url: d.delivery.url.clone(),
            status: d.status,
            created_at: rfc3339(d.delivery.created_at),
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            attempts: d.attempts.iter().map(AttemptJson::from).collect(),
        }
    }
}

impl From<&Attempt> for AttemptJson {
    fn from(a: &Attempt) -> Self {
        Self {
            at: rfc3339(a.at),
            status_code: a.status,
            error: a.error.clone(),
            duration_ms: a.duration_ms,
        }
    }
}

/// Every message of the prediction, oldest first, with its attempts and next retry.
async fn log(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Response> {
    // 404 for an unknown prediction (or another account's), rather than an empty log.
    let id = crate::predictions::read_visible(&state, &caller, &id)
        .await?
        .value
        .id
        .clone();
    let deliveries = state.service.outbox().list(&id).await?;
    Ok(Json(LogJson {
        prediction_id: id.to_string(),
        results: deliveries.iter().map(MessageJson::from).collect(),
    })
    .into_response())
}

/// Makes a message pending and due now again, with the same `webhook-id`; answers 202 with
/// the message.
async fn redeliver(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath((id, webhook_id)): AppPath<(String, String)>,
) -> ApiResult<Response> {
    let id = crate::predictions::read_visible(&state, &caller, &id)
        .await?
        .value
        .id
        .clone();
    let not_found = || {
        ApiError::new(
            ErrorCode::WebhookNotFound,
            format!(
                "prediction {id} has no webhook message {:?}; GET /v1/predictions/{id}/webhooks lists them",
                webhook_id.chars().take(80).collect::<String>()
            ),
        )
    };
    match state.service.outbox().redeliver(&id, &webhook_id).await {
        Ok(()) => {}
        Err(augur_core::store::Error::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    }
    state.service.hub().notify_outbox();
    let message = state
        .service
        .outbox()
        .list(&id)
        .await?
        .iter()
        .find(|d| d.delivery.id == webhook_id)
        .map(MessageJson::from)
        .ok_or_else(not_found)?;
    Ok((StatusCode::ACCEPTED, Json(message)).into_response())
}
