//! `/internal/cog/...`: where Cog model servers (coglet) call Augur back. Not for clients,
//! and not behind the admin token (coglet cannot send it):
//!
//! - `POST /internal/cog/predictions/{id}/webhook/{token}`: coglet's webhooks; the token is
//!   the prediction's own ([`augur_engine::cog::CogHooks`] makes and checks it). Any 2xx
//!   tells coglet to stop; a 5xx makes it retry a terminal webhook.
//! - `PUT /internal/cog/uploads/{name}`: coglet's `--upload-url` file uploads, for the
//!   running prediction named by `X-Prediction-ID`; answers `201` with the file's public URL
//!   in `Location`, which coglet puts in the output.
//!
//! The mapping from coglet's payloads to transitions lives in the engine; this module only
//! speaks HTTP.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};

use augur_core::PredictionId;
use augur_engine::cog::{CogHooks, HookError, WebhookPayload};

use crate::AppState;
use crate::error::{ApiError, ApiResult, AppJson, AppPath, ErrorCode};

/// The largest webhook or upload accepted: outputs arrive in them (as data URIs in webhooks
/// when coglet has no `--upload-url`).
const MAX_CALLBACK_BYTES: usize = 512 << 20;

/// The callback routes with their own layers: the same metrics and panic handling as the
/// rest of the API, a request log that names the route template instead of the URI (which
/// carries the prediction's token), and a body limit big enough for output files.
pub(crate) fn routes(state: AppState) -> Router {
    crate::callback_routes(
        Router::new()
            .route(
                "/internal/cog/predictions/{id}/webhook/{token}",
                post(webhook),
            )
            .route("/internal/cog/uploads/{name}", put(upload)),
        MAX_CALLBACK_BYTES,
        state,
    )
}

fn hooks(state: &AppState) -> ApiResult<&std::sync::Arc<CogHooks>> {
    state.models.cog_hooks().ok_or_else(|| {
        ApiError::new(
            ErrorCode::RouteNotFound,
            "this server has no Cog models; configure them under [[models]]",
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

fn hook_error(e: HookError) -> ApiError {
    match e {
        HookError::InvalidToken => ApiError::new(
            ErrorCode::InvalidToken,
            "the callback token is not this prediction's",
        ),
        HookError::NotFound(id) => not_found(id.as_str()),
        HookError::NotRunning(id) => ApiError::new(
            ErrorCode::InvalidTransition,
            format!("prediction {id} has settled; it takes no more files"),
        ),
        HookError::Invalid(why) => ApiError::new(ErrorCode::InvalidRequest, why),
        HookError::Store(e) => e.into(),
        HookError::Files(e) => ApiError::internal(e),
    }
}

async fn webhook(
    State(state): State<AppState>,
    AppPath((id, token)): AppPath<(String, String)>,
    AppJson(payload): AppJson<WebhookPayload>,
) -> ApiResult<StatusCode> {
    let hooks = hooks(&state)?;
    let prediction = PredictionId::parse(&id).map_err(|_| not_found(&id))?;
    let receipt = hooks
        .receive_webhook(&prediction, &token, payload)
        .await
        .map_err(hook_error)?;
    tracing::debug!(prediction_id = %prediction, ?receipt, "cog webhook");
    Ok(StatusCode::OK)
}

async fn upload(
    State(state): State<AppState>,
    AppPath(name): AppPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let hooks = hooks(&state)?;
    let id = headers
        .get("x-prediction-id")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidHeader,
                "X-Prediction-ID is required: the prediction the file belongs to",
            )
            .with_field("X-Prediction-ID")
        })?;
    let prediction = PredictionId::parse(id).map_err(|_| not_found(id))?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::PayloadTooLarge, "the file is too large")
        } else {
            ApiError::new(ErrorCode::InvalidRequest, e.body_text())
        }
    })?;
    let url = hooks
        .receive_upload(&prediction, &name, body)
        .await
        .map_err(hook_error)?;
    let mut response = StatusCode::CREATED.into_response();
    let location = HeaderValue::from_str(&url).map_err(ApiError::internal)?;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}
