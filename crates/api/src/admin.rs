//! `GET /v1/admin/status` (admin token only): what the dashboard's admin page shows that no
//! other route answers in one read: the store's health (backend, capabilities, how long a probe
//! took), the queue's lanes (jobs, internal tasks, the webhook backlog), the durable prediction
//! counters, and each model's queued and running predictions beside its concurrency limit.
//!
//! Per-model figures are counted from the store's status index (`starting` is queued,
//! `processing` is running), over every account and so every node sharing the store, not from
//! one node's memory. The count reads at most [`COUNT_LIMIT`] predictions of each status and
//! says when it stopped there (`"truncated": true`), so the route stays cheap however deep the
//! queue is. `nodes` lists the nodes serving from the store, from the records each keeps
//! renewed ([`augur_core::node`]): a node that crashed drops out within
//! [`augur_core::node::TTL`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use augur_core::store::{Lane, QueueStats};
use augur_core::{Caller, PredictionQuery, Status};

use crate::AppState;
use crate::auth::require_admin;
use crate::error::{ApiError, ApiResult, ErrorCode};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/admin/status", get(status))
}

/// The most predictions of one status a status read counts.
pub const COUNT_LIMIT: usize = 10_000;

/// How many predictions one store read of the count takes.
const COUNT_PAGE: usize = 1_000;

/// How long the store may take to answer the health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

fn lane_json(stats: &QueueStats) -> Value {
    json!({
        "ready": stats.ready,
        "leased": stats.leased,
        "delayed": stats.delayed,
        "total": stats.ready + stats.leased + stats.delayed,
    })
}

/// Predictions in `status` per model, across accounts: `(counts, truncated)`.
async fn count_by_model(
    state: &AppState,
    status: Status,
) -> ApiResult<(BTreeMap<String, u64>, bool)> {
    let mut counts = BTreeMap::new();
    let mut seen = 0;
    let mut after = None;
    loop {
        let page = state
            .service
            .list(&PredictionQuery {
                owner: None,
                status: Some(status),
                created_after: None,
                created_before: None,
                after,
                limit: COUNT_PAGE.min(COUNT_LIMIT - seen),
            })
            .await?;
        for p in &page.items {
            // The index may lag a write; count what the record says.
            if p.value.status == status {
                *counts.entry(p.value.model.to_string()).or_insert(0) += 1;
            }
        }
        seen += page.items.len();
        match page.next {
            Some(next) if seen < COUNT_LIMIT => after = Some(next),
            Some(_) => return Ok((counts, true)),
            None => return Ok((counts, false)),
        }
    }
}

async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    let ops = state.service.ops();
    let started = Instant::now();
    let probe = tokio::time::timeout(PROBE_TIMEOUT, ops.queue_stats(Lane::Jobs)).await;
    let probe_ms = started.elapsed().as_secs_f64() * 1000.0;
    let jobs = match probe {
        Ok(Ok(stats)) => stats,
        Ok(Err(e)) => {
            return Err(ApiError::new(
                ErrorCode::StoreUnavailable,
                format!("the {} store is not answering: {e}", ops.backend()),
            )
            .with_retry_after(Duration::from_secs(2)));
        }
        Err(_) => {
            return Err(ApiError::new(
                ErrorCode::StoreUnavailable,
                format!(
                    "the {} store did not answer within {}s",
                    ops.backend(),
                    PROBE_TIMEOUT.as_secs()
                ),
            )
            .with_retry_after(Duration::from_secs(2)));
        }
    };
    let tasks = ops.queue_stats(Lane::Tasks).await?;
    let webhooks = ops.queue_stats(Lane::Webhooks).await?;
    let counters: BTreeMap<String, i64> = ops
        .counters()
        .await?
        .into_iter()
        // Per-account counters (`name@account`) are each account's business, not the node's.
        .filter(|(name, _)| augur_core::service::counters::account_of(name).is_none())
        .collect();
    let (queued, queued_truncated) = count_by_model(&state, Status::Starting).await?;
    let (running, running_truncated) = count_by_model(&state, Status::Processing).await?;
    let mut models: Vec<Value> = state
        .models
        .iter()
        .map(|m| {
            let name = m.name.to_string();
            json!({
                "name": name,
                "description": m.description,
                "concurrency": m.settings.concurrency,
                "queued": queued.get(&name).copied().unwrap_or(0),
                "running": running.get(&name).copied().unwrap_or(0),
            })
        })
        .collect();
    // Predictions of a model this node no longer runs still count somewhere.
    let known: Vec<String> = state.models.iter().map(|m| m.name.to_string()).collect();
    let others: std::collections::BTreeSet<&String> = queued
        .keys()
        .chain(running.keys())
        .filter(|name| !known.contains(name))
        .collect();
    for name in others {
        models.push(json!({
            "name": name,
            "description": null,
            "concurrency": null,
            "queued": queued.get(name).copied().unwrap_or(0),
            "running": running.get(name).copied().unwrap_or(0),
        }));
    }
    let nodes: Vec<Value> = state
        .service
        .nodes()
        .await?
        .into_iter()
        .map(|n| {
            json!({
                "id": n.id,
                "hostname": n.hostname,
                "version": n.version,
                "public_url": n.public_url,
                "models": n.models,
                "started_at": n.started_at.to_rfc3339(),
                "last_seen": n.last_seen.to_rfc3339(),
            })
        })
        .collect();
    let capabilities = ops.capabilities();
    Ok(Json(json!({
        "store": {
            "backend": ops.backend(),
            "status": "ok",
            "probe_ms": (probe_ms * 100.0).round() / 100.0,
            "durable": capabilities.durable,
            "shared": capabilities.shared,
            "native_ttl": capabilities.native_ttl,
            "change_notifications": capabilities.change_notifications,
        },
        "queue": {
            "jobs": lane_json(&jobs),
            "tasks": lane_json(&tasks),
            "webhooks": lane_json(&webhooks),
        },
        "webhook_backlog": webhooks.ready + webhooks.leased + webhooks.delayed,
        "counters": counters,
        "models": models,
        "nodes": nodes,
        "counted": {
            "limit": COUNT_LIMIT,
            "queued_truncated": queued_truncated,
            "running_truncated": running_truncated,
        },
    }))
    .into_response())
}
