//! Accounts, API tokens and credits over HTTP.
//!
//! - `GET /v1/account`: the caller's account in Replicate's shape (`type`, `username`, `name`,
//!   `github_url`).
//! - `POST /v1/accounts`, `GET /v1/accounts` (admin): create and page through accounts;
//!   `GET /v1/accounts/{username}` (admin, or the account itself); `PATCH` (admin) sets its
//!   name and limits.
//! - Tokens: `POST /v1/accounts/{username}/tokens` (admin), and the caller's own:
//!   `POST`/`GET /v1/account/tokens`, `DELETE /v1/account/tokens/{id}`. A new token is shown
//!   once, in the answer to its creation.
//! - Credits: `GET /v1/account/credits` (`balance`, `reserved`, `available`),
//!   `GET /v1/account/ledger` (newest first, cursor pages); admin: the same under
//!   `/v1/accounts/{username}/...`, and `POST /v1/accounts/{username}/credits`
//!   (`{"amount", "reason": "grant" | "adjust", "memo"}`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use augur_core::account::{Account, Limits, Token};
use augur_core::credits::Posting;
use augur_core::store::{Posted, Reason};
use augur_core::{AccountId, Caller, Timestamp};

use crate::AppState;
use crate::auth::require_admin;
use crate::error::{ApiError, ApiResult, AppJson, AppPath, AppQuery, ErrorCode};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/account", get(me))
        .route("/v1/accounts", post(create).get(list))
        .route("/v1/accounts/{username}", get(get_one).patch(update))
        .route("/v1/accounts/{username}/tokens", post(create_token_for))
        .route(
            "/v1/accounts/{username}/credits",
            get(credits_of).post(post_credits),
        )
        .route("/v1/accounts/{username}/ledger", get(ledger_of))
        .route("/v1/account/tokens", post(create_own_token).get(own_tokens))
        .route("/v1/account/tokens/{id}", delete(revoke_own_token))
        .route("/v1/account/credits", get(own_credits))
        .route("/v1/account/ledger", get(own_ledger))
}

fn account_json(a: &Account) -> Value {
    json!({
        "type": "user",
        "username": a.id,
        "name": a.name,
        "github_url": null,
        "created_at": a.created_at.to_rfc3339(),
        "limits": a.limits,
    })
}

fn token_json(t: &Token) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "created_at": t.created_at.to_rfc3339(),
        "last_used_at": t.last_used_at.map(Timestamp::to_rfc3339),
    })
}

/// The account named in a path, if the caller may act on it: the admin on any, an account on
/// itself; anything else is not found, like a missing one.
async fn visible_account(state: &AppState, caller: &Caller, username: &str) -> ApiResult<Account> {
    let not_found = || {
        ApiError::new(
            ErrorCode::AccountNotFound,
            format!(
                "account {:?} not found",
                username.chars().take(80).collect::<String>()
            ),
        )
    };
    let id = AccountId::parse(username).map_err(|_| not_found())?;
    if !caller.may_see(&id) {
        return Err(not_found());
    }
    match state.accounts.get(&id).await {
        Ok(a) => Ok((*a).clone()),
        Err(augur_core::Error::AccountNotFound(_)) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

async fn me(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    if caller.admin {
        return Ok(Json(json!({
            "type": "organization",
            "username": caller.account,
            "name": "Administrator",
            "github_url": null,
            // Augur's extension: the dashboard shows admin pages to this token only.
            "admin": true,
        }))
        .into_response());
    }
    let account = state.accounts.get(&caller.account).await?;
    Ok(Json(account_json(&account)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    username: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "limits_object")]
    limits: Option<Limits>,
}

/// `limits` as the document has it: an object or `null`. (A derived struct would also take a
/// list of its fields in order, `[null, null]`, which no client means.)
fn limits_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Limits>, D::Error> {
    match Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)? {
        Some(map) => serde_json::from_value(serde_json::Value::Object(map))
            .map(Some)
            .map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppJson(body): AppJson<CreateBody>,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    let id = AccountId::parse(&body.username).map_err(|e| {
        ApiError::new(ErrorCode::InvalidRequest, e.to_string()).with_field("username")
    })?;
    let name = body.name.unwrap_or_else(|| id.to_string());
    let mut account = state.accounts.create(id.clone(), &name).await?;
    if let Some(limits) = body.limits {
        account = state.accounts.set_limits(&id, limits).await?;
    }
    Ok((StatusCode::CREATED, Json(account_json(&account))).into_response())
}

#[derive(Debug, Deserialize)]
struct PageParams {
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppQuery(params): AppQuery<PageParams>,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    let (limit, after) = crate::paging::start(params.limit, params.cursor.as_deref())?;
    let asked = after.clone();
    let page = state.accounts.list(after, limit).await?;
    let public = &state.config.public_url;
    let (next, previous) = crate::pages::Route {
        url: format!("{public}/v1/accounts"),
        filters: &[],
        limit: Some(limit),
    }
    .links(asked.as_ref(), page.next.as_ref(), &page.items);
    let results: Vec<_> = page.items.iter().map(|a| account_json(a)).collect();
    Ok(Json(json!({"previous": previous, "next": next, "results": results})).into_response())
}

async fn get_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(username): AppPath<String>,
) -> ApiResult<Response> {
    let account = visible_account(&state, &caller, &username).await?;
    Ok(Json(account_json(&account)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "limits_object")]
    limits: Option<Limits>,
}

async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(username): AppPath<String>,
    AppJson(body): AppJson<UpdateBody>,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    let mut account = visible_account(&state, &caller, &username).await?;
    if let Some(name) = &body.name {
        account = state.accounts.rename(&account.id, name).await?;
    }
    if let Some(limits) = body.limits {
        account = state.accounts.set_limits(&account.id, limits).await?;
    }
    Ok(Json(account_json(&account)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    #[serde(default)]
    name: Option<String>,
}

/// The token body, which may be empty.
fn token_body(bytes: &[u8]) -> ApiResult<TokenBody> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(TokenBody::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the body must be {{\"name\": \"...\"}} or empty: {e}"),
        )
    })
}

async fn issue_token(state: &AppState, owner: &AccountId, body: TokenBody) -> ApiResult<Response> {
    let name = body.name.unwrap_or_else(|| "default".to_owned());
    let (token, text) = state.accounts.create_token(owner, &name).await?;
    let mut json = token_json(&token);
    json["token"] = Value::from(text.expose());
    json["owner"] = Value::from(owner.as_str());
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

async fn create_token_for(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(username): AppPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    let account = visible_account(&state, &caller, &username).await?;
    issue_token(&state, &account.id, token_body(&body)?).await
}

fn own_account(caller: &Caller) -> ApiResult<&AccountId> {
    if caller.admin {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the admin token has no account of its own; use /v1/accounts/{username}/... for an account",
        ))
    } else {
        Ok(&caller.account)
    }
}

async fn create_own_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let owner = own_account(&caller)?;
    issue_token(&state, owner, token_body(&body)?).await
}

async fn own_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    let owner = own_account(&caller)?;
    let tokens = state.accounts.tokens(owner).await?;
    let results: Vec<_> = tokens.iter().map(|t| token_json(t)).collect();
    Ok(Json(json!({ "results": results })).into_response())
}

async fn revoke_own_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Response> {
    let owner = own_account(&caller)?;
    state.accounts.revoke_token(owner, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn credits_json(state: &AppState, account: &AccountId) -> ApiResult<Response> {
    let summary = state.credits.balance(account).await?;
    Ok(Json(json!(summary)).into_response())
}

async fn own_credits(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    credits_json(&state, own_account(&caller)?).await
}

async fn credits_of(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(username): AppPath<String>,
) -> ApiResult<Response> {
    let account = visible_account(&state, &caller, &username).await?;
    credits_json(&state, &account.id).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditsBody {
    #[serde(deserialize_with = "augur_core::whole::deserialize")]
    amount: i64,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    memo: Option<String>,
    /// Makes the change idempotent: a repeat with the same id changes nothing.
    #[serde(default)]
    id: Option<String>,
}

/// The largest credit change one request makes, either way.
const MAX_CREDIT_CHANGE: u64 = 1_000_000_000_000_000;

async fn post_credits(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(username): AppPath<String>,
    AppJson(body): AppJson<CreditsBody>,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    let account = visible_account(&state, &caller, &username).await?;
    // A bound on one change keeps balances and holds far from i64's ends (i64::MIN was a 500).
    if body.amount.unsigned_abs() > MAX_CREDIT_CHANGE {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("amount must be between -{MAX_CREDIT_CHANGE} and {MAX_CREDIT_CHANGE}"),
        )
        .with_field("amount"));
    }
    let reason = match body.reason.as_deref().unwrap_or("grant") {
        "grant" if body.amount > 0 => Reason::Grant,
        "grant" => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "a grant's amount must be positive; use reason \"adjust\" to take credits away",
            )
            .with_field("amount"));
        }
        "adjust" if body.amount != 0 => Reason::Adjust,
        "adjust" => {
            return Err(
                ApiError::new(ErrorCode::InvalidRequest, "amount must not be 0")
                    .with_field("amount"),
            );
        }
        other => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("reason must be \"grant\" or \"adjust\", got {other:?}"),
            )
            .with_field("reason"));
        }
    };
    let id = body
        .id
        .map(|id| {
            if id.is_empty() || id.len() > 100 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "id must be 1 to 100 printable ASCII characters",
                )
                .with_field("id"))
            } else {
                Ok(format!("{}:{id}", reason.as_str()))
            }
        })
        .transpose()?;
    let posting = state
        .credits
        .post(&account.id, reason, body.amount, id, body.memo)
        .await?;
    let summary = state.credits.balance(&account.id).await?;
    let mut json = json!(summary);
    json["posted"] = Value::from(posting == Posting::Posted);
    Ok(Json(json).into_response())
}

#[derive(Debug, Deserialize)]
struct LedgerParams {
    cursor: Option<String>,
    limit: Option<usize>,
}

fn entry_json(p: &Posted) -> Value {
    json!({
        "id": p.entry.id,
        "seq": p.seq,
        "delta": p.entry.delta,
        "held": p.entry.held,
        "balance_after": p.after.balance,
        "reserved_after": p.after.reserved,
        "reason": p.entry.reason,
        "reference": p.entry.reference,
        "memo": p.entry.memo,
        "created_at": p.entry.at.to_rfc3339(),
    })
}

async fn ledger_json(
    state: &AppState,
    account: &AccountId,
    path: &str,
    params: LedgerParams,
) -> ApiResult<Response> {
    let limit = crate::error::page_limit(params.limit)?;
    let before = params
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<u64>().map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidCursor,
                    "cursor is not one this server issued; follow the next URL of a previous page",
                )
                .with_field("cursor")
            })
        })
        .transpose()?;
    let entries = state.credits.ledger(account, before, limit).await?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten()
        .filter(|seq| *seq > 1)
        .map(|seq| {
            format!(
                "{}{path}?cursor={seq}&limit={limit}",
                state.config.public_url
            )
        });
    let results: Vec<_> = entries.iter().map(entry_json).collect();
    Ok(Json(json!({"previous": null, "next": next, "results": results})).into_response())
}

async fn own_ledger(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppQuery(params): AppQuery<LedgerParams>,
) -> ApiResult<Response> {
    let owner = own_account(&caller)?;
    ledger_json(&state, owner, "/v1/account/ledger", params).await
}

async fn ledger_of(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(username): AppPath<String>,
    AppQuery(params): AppQuery<LedgerParams>,
) -> ApiResult<Response> {
    let account = visible_account(&state, &caller, &username).await?;
    let path = format!("/v1/accounts/{}/ledger", account.id);
    ledger_json(&state, &account.id, &path, params).await
}
