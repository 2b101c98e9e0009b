//! `/internal/replicate/...`: where upstream Replicate-compatible APIs (Replicate, another
//! Augur) send the webhooks of predictions Augur forwarded to them. Not for clients, and not
//! behind the admin token (the upstream cannot send it):
//!
//! - `POST /internal/replicate/predictions/{id}/webhook/{token}`: the upstream prediction's
//!   JSON; the token is the prediction's own ([`augur_engine::replicate::ReplicateHooks`]
//!   makes and checks it). Any 2xx tells the upstream to stop; a 5xx makes it retry.
//!
//! The token is checked before a byte of the body is read, and the body is read within a
//! limit and the shared [`crate::callbacks::Budget`]. The mapping from upstream predictions to
//! transitions lives in the engine; this module only speaks HTTP.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use augur_core::PredictionId;
use augur_engine::replicate::{CallbackError, ReplicateHooks, UpstreamPrediction};

use crate::AppState;
use crate::error::{ApiError, ApiResult, AppPath, ErrorCode};

/// The largest webhook accepted: outputs arrive in them (possibly as data URIs; an upstream
/// Replicate API sends URLs).
const MAX_WEBHOOK_BYTES: usize = 32 << 20;

/// The callback route with its own layers: the same metrics and panic handling as the rest of
/// the API, and a request log that names the route template instead of the URI (which carries
/// the prediction's token).
pub(crate) fn routes(state: AppState) -> Router {
    crate::callback_routes(
        Router::new().route(
            "/internal/replicate/predictions/{id}/webhook/{token}",
            post(webhook),
        ),
        MAX_WEBHOOK_BYTES,
        state,
    )
}

fn hooks(state: &AppState) -> ApiResult<&std::sync::Arc<ReplicateHooks>> {
    state.models.replicate_hooks().ok_or_else(|| {
        ApiError::new(
            ErrorCode::RouteNotFound,
            "this server has no Replicate models; configure them under [[models]]",
        )
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::PredictionNotFound,
        format!(
            "prediction {:?} not found",
            id.chars().take(80).collect::<String>()
        ),
    )
}

fn callback_error(e: CallbackError) -> ApiError {
    match e {
        CallbackError::InvalidToken => ApiError::new(
            ErrorCode::InvalidToken,
            "the callback token is not this prediction's",
        ),
        CallbackError::NotFound(id) => not_found(id.as_str()),
        CallbackError::Invalid(why) => ApiError::new(ErrorCode::InvalidRequest, why),
        CallbackError::Store(e) => e.into(),
    }
}

async fn webhook(
    State(state): State<AppState>,
    AppPath((id, token)): AppPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let hooks = hooks(&state)?;
    let prediction = PredictionId::parse(&id).map_err(|_| not_found(&id))?;
    if !hooks.token_matches(&prediction, &token) {
        return Err(callback_error(CallbackError::InvalidToken));
    }
    let bytes = state
        .callback_budget
        .read(&headers, body, MAX_WEBHOOK_BYTES)
        .await?;
    let payload: UpstreamPrediction = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the webhook body is not a prediction: {e}"),
        )
    })?;
    drop(bytes);
    let receipt = hooks
        .receive_webhook(&prediction, &token, payload)
        .await
        .map_err(callback_error)?;
    tracing::debug!(prediction_id = %prediction, ?receipt, "upstream webhook");
    Ok(StatusCode::OK)
}
