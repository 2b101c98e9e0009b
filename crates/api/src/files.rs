//! `GET /files/{key}`: output files, served without authentication (their URLs are
//! unguessable) and cached forever (a key never changes content), with the headers that keep a
//! browser from running them ([`crate::uploads::safe_headers`]).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use augur_engine::files::FilesError;

use crate::AppState;
use crate::error::{ApiError, ApiResult, AppPath, ErrorCode};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/files/{*key}", get(download))
}

async fn download(
    State(state): State<AppState>,
    AppPath(key): AppPath<String>,
) -> ApiResult<Response> {
    let not_found = || ApiError::new(ErrorCode::FileNotFound, "no such file");
    let file = match state.files.get(&key).await {
        Ok(Some(file)) => file,
        Ok(None) | Err(FilesError::InvalidKey(_)) => return Err(not_found()),
        Err(e) => return Err(ApiError::internal(e)),
    };
    let mut response = file.bytes.into_response();
    let headers = response.headers_mut();
    let name = key.rsplit('/').next().unwrap_or_default();
    crate::uploads::safe_headers(headers, file.content_type, name);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(response)
}
