//! `/v1/batches`: many predictions of one model in one request, created atomically (all or
//! nothing, credits included), followed as one object with counts and progress, cancelable, and
//! announced once by a signed `batch.completed` webhook. The rules live in
//! [`augur_core::batch`]; this module parses, validates every item first, and renders.
//!
//! - `POST /v1/batches` `{"model" | "version", "inputs": [{...}, ...], "webhook",
//!   "webhook_events_filter"}`, or a shared `"input"` plus `"files": [file ids]` (one item per
//!   file, the file's URL under the input `"file_input"`, `"image"` by default).
//! - `GET /v1/batches` (newest first, cursor pages), `GET /v1/batches/{id}`,
//!   `GET /v1/batches/{id}/predictions` (`status`, cursor pages), `POST /v1/batches/{id}/cancel`,
//!   `GET /v1/batches/{id}/stream` (Server-Sent Events: `batch` on each change, then `done`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use augur_core::batch::{Batch, BatchCreation, BatchRequest, Counts};
use augur_core::file::FileObject;
use augur_core::{Caller, ModelName, WebhookEvent, WebhookEvents};
use augur_engine::Model;

use crate::AppState;
use crate::error::{ApiError, ApiResult, AppJson, AppPath, AppQuery, ErrorCode};
use crate::predictions::{
    check_create_rate, check_file_inputs, creation_response, find_model, idempotency_key,
    parse_webhook, status_param,
};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/batches", post(create).get(list))
        .route("/v1/batches/{id}", get(read))
        .route("/v1/batches/{id}/predictions", get(items))
        .route("/v1/batches/{id}/cancel", post(cancel))
        .route("/v1/batches/{id}/stream", get(stream))
}

/// How often a progress stream re-reads its batch.
const STREAM_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    inputs: Option<Vec<Value>>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    files: Option<Vec<String>>,
    #[serde(default)]
    file_input: Option<String>,
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    webhook_events_filter: Option<Vec<WebhookEvent>>,
}

/// A batch as clients see it.
#[derive(Debug, Serialize)]
pub struct BatchJson<'a> {
    id: &'a str,
    model: &'a str,
    version: &'a str,
    status: &'static str,
    total: u32,
    counts: &'a Counts,
    progress: f64,
    created_at: String,
    completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<&'a str>,
    urls: Value,
}

impl<'a> BatchJson<'a> {
    /// Renders a batch with absolute URLs under `public_url`.
    pub fn new(public_url: &str, b: &'a Batch) -> Self {
        let base = format!("{public_url}/v1/batches/{}", b.id);
        Self {
            id: &b.id,
            model: b.model.as_str(),
            version: &b.version,
            status: b.status.as_str(),
            total: b.total,
            counts: &b.counts,
            progress: b.progress(),
            created_at: b.created_at.to_rfc3339(),
            completed_at: b.completed_at.map(|t| t.to_rfc3339()),
            webhook: b.webhook.as_deref(),
            urls: json!({
                "get": base,
                "predictions": format!("{base}/predictions"),
                "cancel": format!("{base}/cancel"),
                "stream": format!("{base}/stream"),
            }),
        }
    }
}

/// The model a batch names (`model` or `version`, exactly one).
fn batch_model(state: &AppState, body: &CreateBody) -> ApiResult<Arc<Model>> {
    match (&body.model, &body.version) {
        (Some(model), None) => {
            let name = ModelName::parse(model).map_err(|e| {
                ApiError::new(ErrorCode::InvalidRequest, e.to_string()).with_field("model")
            })?;
            let (owner, name) = name.as_str().split_once('/').unwrap_or_default();
            find_model(state, owner, name)
        }
        (None, Some(reference)) => state
            .models
            .resolve_version(reference)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("version {reference:?} does not exist on this server; GET /v1/models lists the models"),
                )
                .with_field("version")
            }),
        _ => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "give exactly one of model (owner/name) and version",
        )
        .with_field("model")),
    }
}

/// Every item's input as given: `inputs`, or `input` with each of `files` under `file_input`.
fn raw_inputs(state: &AppState, body: &mut CreateBody) -> ApiResult<(Vec<Value>, &'static str)> {
    match (body.inputs.take(), body.files.take()) {
        (Some(inputs), None) => {
            if body.input.is_some() || body.file_input.is_some() {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "input and file_input go with files, not with inputs",
                )
                .with_field("input"));
            }
            Ok((inputs, "inputs"))
        }
        (None, Some(files)) => {
            let template = match body.input.take() {
                None => serde_json::Map::new(),
                Some(Value::Object(map)) => map,
                Some(_) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidInput,
                        "input must be a JSON object",
                    )
                    .with_field("input"));
                }
            };
            let field = body.file_input.take().unwrap_or_else(|| "image".to_owned());
            let uploads = format!("{}/v1/files/", state.config.public_url);
            let mut inputs = Vec::with_capacity(files.len());
            for (i, file) in files.iter().enumerate() {
                if !FileObject::is_valid_id(file) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidInput,
                        format!("files[{i}]: {file:?} is not a file id (POST /v1/files returns them)"),
                    )
                    .with_field(format!("files[{i}]")));
                }
                let mut input = template.clone();
                input.insert(field.clone(), Value::String(format!("{uploads}{file}")));
                inputs.push(Value::Object(input));
            }
            Ok((inputs, "files"))
        }
        (None, None) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "inputs (a list of input objects) or files (a list of file ids, with a shared input) is required",
        )
        .with_field("inputs")),
        (Some(_), Some(_)) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "give inputs or files, not both",
        )
        .with_field("files")),
    }
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    AppJson(mut body): AppJson<CreateBody>,
) -> ApiResult<Response> {
    let model = batch_model(&state, &body)?;
    let (raw, list_field) = raw_inputs(&state, &mut body)?;
    let max = state.config.max_batch_items;
    if raw.is_empty() || raw.len() > max {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("a batch has 1 to {max} items, got {}", raw.len()),
        )
        .with_field(list_field)
        .with("max_items", max));
    }
    let mut inputs = Vec::with_capacity(raw.len());
    for (i, input) in raw.iter().enumerate() {
        let input = model.validate_input(input).map_err(|e| {
            let field = e.field.as_ref().map_or_else(
                || format!("{list_field}[{i}]"),
                |f| format!("{list_field}[{i}].{f}"),
            );
            ApiError::new(ErrorCode::InvalidInput, format!("{field}: {e}")).with_field(field)
        })?;
        check_file_inputs(
            &state,
            &caller.account,
            &input,
            &format!("{list_field}[{i}]"),
        )
        .await?;
        inputs.push(input);
    }
    let limits = check_create_rate(&state, &caller).await?;
    let request = BatchRequest {
        owner: caller.account.clone(),
        model: model.name.clone(),
        version: model.version.clone(),
        inputs,
        webhook: body
            .webhook
            .as_deref()
            .map(|w| parse_webhook(w, &state.config.destinations))
            .transpose()?,
        // Items send their own messages only for the events asked for.
        webhook_events_filter: body
            .webhook_events_filter
            .map_or(WebhookEvents::NONE, |events| events.into_iter().collect()),
        idempotency_key: idempotency_key(&headers)?,
        price: if caller.admin { None } else { model.price },
        max_active: limits.max_active,
    };
    let creation = state.service.create_batch(&request).await?;
    let replayed = matches!(creation, BatchCreation::Replayed(_));
    let batch = &creation.batch().value;
    let public = &state.config.public_url;
    Ok(creation_response(
        BatchJson::new(public, batch),
        &format!("{public}/v1/batches/{}", batch.id),
        replayed,
    ))
}

/// The batch the caller may see (the admin sees every account's).
async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<augur_core::Versioned<Batch>> {
    let owner = (!caller.admin).then_some(&caller.account);
    Ok(state.service.get_batch(owner, id).await?)
}

async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Response> {
    let batch = visible(&state, &caller, &id).await?;
    Ok(Json(BatchJson::new(&state.config.public_url, &batch.value)).into_response())
}

#[derive(Debug, Deserialize)]
struct ListParams {
    cursor: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppQuery(params): AppQuery<ListParams>,
) -> ApiResult<Response> {
    if params.status.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "GET /v1/batches does not filter by status; GET /v1/batches/{id}/predictions does",
        )
        .with_field("status"));
    }
    let (limit, after) = crate::paging::start(params.limit, params.cursor.as_deref())?;
    let asked = after.clone();
    let public = &state.config.public_url;
    let page = crate::paging::fill(
        limit,
        state.config.list_page_bytes,
        after,
        |after, limit| {
            let (service, owner) = (&state.service, &caller.account);
            async move {
                let page = service.list_batches(owner, after, limit).await?;
                Ok((page.items, page.next))
            }
        },
        |b: &Batch, out: &mut Vec<u8>| crate::paging::write_json(out, &BatchJson::new(public, b)),
    )
    .await?;
    let route = crate::pages::Route {
        url: format!("{public}/v1/batches"),
        filters: &[],
        limit: params.limit.map(|_| limit),
    };
    Ok(page.into_response(&route, asked.as_ref()))
}

async fn items(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
    AppQuery(params): AppQuery<ListParams>,
) -> ApiResult<Response> {
    let batch = visible(&state, &caller, &id).await?;
    let status = status_param(params.status.as_deref())?;
    let (limit, after) = crate::paging::start(params.limit, params.cursor.as_deref())?;
    let public = &state.config.public_url;
    let asked = after.clone();
    let page = crate::paging::fill(
        limit,
        state.config.list_page_bytes,
        after,
        |after, limit| {
            let (service, batch) = (&state.service, &batch.value);
            async move {
                let page = service.batch_items(batch, status, after, limit).await?;
                Ok((page.items, page.next))
            }
        },
        |p: &Arc<augur_core::Prediction>, out: &mut Vec<u8>| {
            crate::paging::write_json(out, &crate::wire::PredictionJson::new(public, p).listed());
        },
    )
    .await?;
    let route = crate::pages::Route {
        url: format!("{public}/v1/batches/{}/predictions", batch.value.id),
        filters: &[("status", params.status.as_deref())],
        limit: params.limit.map(|_| limit),
    };
    Ok(page.into_response(&route, asked.as_ref()))
}

async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Response> {
    let batch = visible(&state, &caller, &id).await?;
    let done = state
        .service
        .cancel_batch(&batch.value.owner, &batch.value.id)
        .await?;
    Ok(Json(BatchJson::new(&state.config.public_url, &done.value)).into_response())
}

/// Progress as Server-Sent Events: the batch (`event: batch`, its JSON) now and after every
/// change, then `event: done` once it is terminal. Changes are seen by re-reading the batch
/// every [`STREAM_POLL`], so they show whichever node made them.
async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let first = visible(&state, &caller, &id).await?;
    let owner = first.value.owner.clone();
    let events = futures::stream::unfold(
        (state, owner, id, None::<augur_core::Revision>, false),
        |(state, owner, id, mut seen, finished)| async move {
            if finished {
                return None;
            }
            loop {
                let batch = match state.service.get_batch(Some(&owner), &id).await {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::debug!(batch = %id, error = %e, "batch stream ends");
                        return None;
                    }
                };
                if seen.is_some_and(|r| r >= batch.revision) {
                    tokio::time::sleep(STREAM_POLL).await;
                    continue;
                }
                seen = Some(batch.revision);
                let body =
                    serde_json::to_string(&BatchJson::new(&state.config.public_url, &batch.value))
                        .unwrap_or_default();
                let terminal = batch.value.status.is_terminal();
                let event = Event::default()
                    .event(if terminal { "done" } else { "batch" })
                    .id(batch.revision.0.to_string())
                    .data(body);
                return Some((Ok(event), (state, owner, id, seen, terminal)));
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The body of a `batch.completed` webhook: the batch as `GET /v1/batches/{id}` shows it.
pub fn webhook_body(public_url: &str, batch: &Batch) -> Vec<u8> {
    serde_json::to_vec(&BatchJson::new(public_url, batch)).expect("a batch always serializes")
}
