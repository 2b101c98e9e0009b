//! Bearer-token authentication for `/v1` and `/api` routes.
//!
//! Until accounts exist there is one admin token. Clients send `Authorization: Bearer <token>`
//! (the Replicate clients do; `Token <token>`, Replicate's older scheme, is accepted too).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

/// Rejects requests without the admin token.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check(&state, request.headers())?;
    Ok(next.run(request).await)
}

/// Checks the `Authorization` header against the admin token.
pub fn check(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "missing Authorization header; send Authorization: Bearer <token>",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("Token "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "the Authorization header must be Bearer <token>",
            )
        })?;
    if state.config.admin_token.matches(token) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidToken,
            "the API token is not valid",
        ))
    }
}
