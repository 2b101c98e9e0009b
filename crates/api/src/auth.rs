//! Bearer-token authentication for `/v1` and `/api` routes, and per-account create limits.
//!
//! Clients send `Authorization: Bearer <token>` (the Replicate clients do; `Token <token>`,
//! Replicate's older scheme, is accepted too). The token is the admin token, which acts on
//! every account, or an account's API token (`aug_…`, see [`augur_core::account::Token`]).
//! The middleware puts the [`Caller`] in the request's extensions; handlers take it with
//! `Extension<Caller>` and scope everything they read or change to it
//! ([`Caller::may_see`]): another account's prediction is a 404, exactly like a missing one.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use augur_core::{AccountId, Caller};

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

/// Rejects requests without a valid token; passes the [`Caller`] on to handlers.
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = check(&state, request.headers()).await?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// Authenticates the `Authorization` header.
pub async fn check(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
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
    match state
        .accounts
        .authenticate(token, &state.config.admin_token)
        .await?
    {
        Some(caller) => Ok(caller),
        None => Err(ApiError::new(
            ErrorCode::InvalidToken,
            "the API token is not valid",
        )),
    }
}

/// Refuses a non-admin caller.
pub fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::AdminRequired,
            "this route needs the admin token",
        ))
    }
}

/// Each account's limiter of creates per minute, on this node. An account's limit is spread
/// over the minute (a burst of up to the whole minute's allowance, refilled evenly), the way
/// Replicate throttles.
#[derive(Debug, Default)]
pub struct CreateLimiter {
    limiters: Mutex<HashMap<AccountId, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl CreateLimiter {
    /// Takes one create from `account`'s allowance of `per_minute`; on refusal, how long
    /// until one is available.
    pub fn check(&self, account: &AccountId, per_minute: u32) -> Result<(), Duration> {
        let Some(quota) = NonZeroU32::new(per_minute).map(Quota::per_minute) else {
            return Err(Duration::from_secs(60));
        };
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
            match limiters.get(account) {
                Some((limit, limiter)) if *limit == per_minute => limiter.clone(),
                _ => {
                    let limiter = Arc::new(RateLimiter::direct(quota));
                    limiters.insert(account.clone(), (per_minute, limiter.clone()));
                    limiter
                }
            }
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}
