//! `/internal/cog/...`: where Cog model servers (coglet) call Augur back. Not for clients,
//! and not behind the admin token (coglet cannot send it):
//!
//! - `POST /internal/cog/predictions/{id}/webhook/{token}`: coglet's webhooks; the token is
//!   the prediction's own ([`augur_engine::cog::CogHooks`] makes and checks it). Any 2xx
//!   tells coglet to stop; a 5xx makes it retry a terminal webhook.
//! - `PUT /internal/cog/uploads/{owner}/{model}/{token}/{name}`: coglet's `--upload-url`
//!   file uploads (the URL `augur cog upload-url <model>` prints, with the model's own
//!   upload token), for the running prediction of that model named by `X-Prediction-ID`;
//!   answers `201` with the file's public URL in `Location`, which coglet puts in the output.
//!
//! Tokens are checked before a byte of the body is read, and bodies are read within a limit
//! and the shared [`crate::callbacks::Budget`]. The mapping from coglet's payloads to
//! transitions lives in the engine; this module only speaks HTTP.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};

use augur_core::{ModelName, PredictionId};
use augur_engine::cog::{CogHooks, HookError, WebhookPayload};

use crate::AppState;
use crate::error::{ApiError, ApiResult, AppPath, ErrorCode};

/// The largest webhook accepted: outputs arrive in them as data URIs when coglet has no
/// `--upload-url` (the JSON tree of a webhook takes a few times its size while it is read).
const MAX_WEBHOOK_BYTES: usize = 64 << 20;

/// The largest uploaded file.
const MAX_UPLOAD_BYTES: usize = 256 << 20;

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
            .route(
                "/internal/cog/uploads/{owner}/{model}/{token}/{name}",
                put(upload),
            )
            .route("/internal/cog/uploads/{name}", put(upload_without_token)),
        MAX_UPLOAD_BYTES,
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
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let hooks = hooks(&state)?;
    let prediction = PredictionId::parse(&id).map_err(|_| not_found(&id))?;
    if !hooks.token_matches(&prediction, &token) {
        return Err(hook_error(HookError::InvalidToken));
    }
    let bytes = state
        .callback_budget
        .read(&headers, body, MAX_WEBHOOK_BYTES)
        .await?;
    let payload: WebhookPayload = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the webhook body is not a Cog prediction: {e}"),
        )
    })?;
    drop(bytes);
    let receipt = hooks
        .receive_webhook(&prediction, &token, payload)
        .await
        .map_err(hook_error)?;
    tracing::debug!(prediction_id = %prediction, ?receipt, "cog webhook");
    Ok(StatusCode::OK)
}

/// The unauthenticated upload route of earlier versions: refused without reading the body.
async fn upload_without_token(State(state): State<AppState>) -> ApiResult<Response> {
    hooks(&state)?;
    Err(ApiError::new(
        ErrorCode::InvalidToken,
        "uploads need the model's upload URL: start coglet with the --upload-url that `augur cog upload-url <model>` prints",
    ))
}

async fn upload(
    State(state): State<AppState>,
    AppPath((owner, model, token, name)): AppPath<(String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let hooks = hooks(&state)?;
    let model = ModelName::from_parts(&owner, &model)
        .ok()
        .filter(|m| hooks.upload_token_matches(m, &token))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidToken,
                "the upload URL's token is not this model's; use what `augur cog upload-url <model>` prints",
            )
        })?;
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
    let body = state
        .callback_budget
        .read(&headers, body, MAX_UPLOAD_BYTES)
        .await?;
    let url = hooks
        .receive_upload(&model, &prediction, &name, body)
        .await
        .map_err(hook_error)?;
    let mut response = StatusCode::CREATED.into_response();
    let location = HeaderValue::from_str(&url).map_err(ApiError::internal)?;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}
