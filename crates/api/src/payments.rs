//! `POST /v1/payments/webhook`: top-ups by a payment provider's `order.paid` webhook (Polar's
//! shape), signed per Standard Webhooks.
//!
//! The signature (`webhook-id`, `webhook-timestamp`, `webhook-signature` over the raw body)
//! is checked before the body is parsed, and a timestamp more than five minutes from now is
//! refused: either answers 401 and changes nothing. Then `data.customer.external_id` names
//! the account (its username), `data.product_id` the credit pack (`[[credit_packs]]`), and
//! `data.id` the order, which is credited exactly once however often and however
//! concurrently it is delivered (the ledger entry `topup:<order>` is posted once). Unknown
//! products and accounts are 422s the provider shows in its delivery log, and are logged.
//! Other event types are acknowledged and ignored.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use augur_core::credits::Posting;
use augur_core::{AccountId, Timestamp};
use augur_webhooks::WebhookSecret;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};

/// How paid orders become credits.
#[derive(Clone, Debug)]
pub struct PaymentsConfig {
    /// The provider's signing secret (`AUGUR_PAYMENTS_WEBHOOK_SECRET`: `whsec_…`, or Polar's
    /// `polar_whs_…`; see [`WebhookSecret::parse_provider`]).
    pub secret: WebhookSecret,
    /// Credits per product id (`[[credit_packs]]`).
    pub packs: BTreeMap<String, i64>,
}

/// The largest payment webhook accepted (Polar's orders are a few KiB).
const MAX_BODY: usize = 256 * 1024;

/// How far a webhook's timestamp may be from now (Standard Webhooks' recommendation).
const TOLERANCE_SECS: i64 = 5 * 60;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/payments/webhook", post(webhook))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct Order {
    id: String,
    product_id: String,
    customer: Customer,
}

#[derive(Debug, Deserialize)]
struct Customer {
    external_id: Option<String>,
}

fn unauthorized(why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Unauthenticated,
        format!("payment webhook refused: {why}"),
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> ApiResult<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized(&format!("missing {name} header")))
}

/// Checks the Standard Webhooks signature and timestamp of a delivery.
fn verify(secret: &WebhookSecret, headers: &HeaderMap, body: &[u8]) -> ApiResult<()> {
    let id = header(headers, "webhook-id")?;
    let timestamp: i64 = header(headers, "webhook-timestamp")?
        .trim()
        .parse()
        .map_err(|_| unauthorized("webhook-timestamp is not Unix seconds"))?;
    let signature = header(headers, "webhook-signature")?;
    let now = Timestamp::now().as_micros().div_euclid(1_000_000);
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(unauthorized(
            "webhook-timestamp is more than 5 minutes from now",
        ));
    }
    if secret.verify(id, timestamp, body, signature) {
        Ok(())
    } else {
        Err(unauthorized("the signature does not match"))
    }
}

async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let Some(payments) = &state.payments else {
        return Err(ApiError::new(
            ErrorCode::RouteNotFound,
            "payments are not configured on this server; set AUGUR_PAYMENTS_WEBHOOK_SECRET",
        ));
    };
    verify(&payments.secret, &headers, &body)?;
    let envelope: Envelope = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the webhook body is not an event: {e}"),
        )
    })?;
    if envelope.kind != "order.paid" {
        tracing::debug!(event = %envelope.kind, "payment webhook ignored");
        return Ok(Json(json!({"ignored": envelope.kind})).into_response());
    }
    let order: Order = serde_json::from_value(envelope.data).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("order.paid needs data.id, data.product_id and data.customer.external_id: {e}"),
        )
    })?;
    let Some(credits) = payments.packs.get(&order.product_id).copied() else {
        tracing::warn!(order = %order.id, product = %order.product_id, "payment for a product that is no credit pack");
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "product {:?} is not a credit pack; add it under [[credit_packs]]",
                order.product_id
            ),
        )
        .with_field("data.product_id"));
    };
    let external = order.customer.external_id.unwrap_or_default();
    let account = match AccountId::parse(&external) {
        Ok(id) => state.accounts.cached(&id).await?.map(|a| a.id.clone()),
        Err(_) => None,
    };
    let Some(account) = account else {
        tracing::warn!(order = %order.id, customer = %external, "payment for an unknown account");
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "no account {external:?} (data.customer.external_id must be an Augur username)"
            ),
        )
        .with_field("data.customer.external_id"));
    };
    if order.id.is_empty() || order.id.len() > 200 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "data.id must be 1 to 200 characters",
        )
        .with_field("data.id"));
    }
    let posting = state.credits.topup(&account, &order.id, credits).await?;
    let credited = posting == Posting::Posted;
    tracing::info!(order = %order.id, %account, credits, credited, "payment webhook");
    Ok(Json(json!({
        "credited": credited,
        "account": account,
        "order": order.id,
        "credits": credits,
    }))
    .into_response())
}
