//! The seeds' status route, `GET /api/predictions/{id}`, in the seeds' response shape:
//! `{"success": true, "data": {"predictionId", "status", "imageUrl", ...}}`, and on error
//! `{"success": false, "error": "...", "errorCode": "..."}`.

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use augur_core::Caller;

use crate::AppState;
use crate::error::AppPath;
use crate::wire::SeedStatus;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/predictions/{id}", get(get_status))
}

async fn get_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> Response {
    match crate::predictions::read_visible(&state, &caller, &id).await {
        Ok(p) => Json(
            json!({"success": true, "data": SeedStatus::new(&state.config.public_url, &p.value)}),
        )
        .into_response(),
        Err(e) => {
            let status = e.code().status();
            let body = json!({"success": false, "error": e.detail(), "errorCode": e.code()});
            (status, Json(body)).into_response()
        }
    }
}
