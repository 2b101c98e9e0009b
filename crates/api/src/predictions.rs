//! `/v1/predictions`: create (two routes), get, list and cancel, in Replicate's dialect.
//!
//! Augur's extensions, all optional: a client-supplied `id` in the create body, an
//! `Idempotency-Key` header (kept 24 h), a `Cancel-After` header (a deadline), and list filters
//! (`status`, `created_after`, `created_before`, `limit`).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use augur_core::PredictionQuery;
use augur_core::store::Cursor;
use augur_core::{
    Caller, CreateRequest, Creation, Event, ModelName, PredictionId, Status, Timestamp,
    WebhookEvent, WebhookEvents,
};
use augur_engine::Model;

use crate::AppState;
use crate::error::{ApiError, ApiResult, AppJson, AppPath, AppQuery, ErrorCode};
use crate::wire::PredictionJson;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/predictions", post(create).get(list))
        .route(
            "/v1/models/{owner}/{name}/predictions",
            post(create_for_model),
        )
        .route("/v1/predictions/{id}", get(get_one))
        .route("/v1/predictions/{id}/cancel", post(cancel))
}

/// The create body. Unknown fields are ignored, as Replicate does.
#[derive(Debug, Deserialize)]
pub(crate) struct CreateBody {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    webhook_events_filter: Option<Vec<WebhookEvent>>,
    /// Augur extension: the prediction id to use.
    #[serde(default)]
    id: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    AppJson(body): AppJson<CreateBody>,
) -> ApiResult<Response> {
    let reference = body.version.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "version is required (a version id, owner/name:version or owner/name); or use POST /v1/models/{owner}/{name}/predictions",
        )
        .with_field("version")
    })?;
    let model = state.models.resolve_version(reference).cloned().ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("version {reference:?} does not exist on this server; GET /v1/models lists the models"),
        )
        .with_field("version")
    })?;
    create_prediction(&state, &caller, &headers, model, body, None).await
}

async fn create_for_model(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath((owner, name)): AppPath<(String, String)>,
    headers: HeaderMap,
    AppJson(body): AppJson<CreateBody>,
) -> ApiResult<Response> {
    let model = find_model(&state, &owner, &name)?;
    create_prediction(&state, &caller, &headers, model, body, None).await
}

pub(crate) fn find_model(state: &AppState, owner: &str, name: &str) -> ApiResult<Arc<Model>> {
    ModelName::from_parts(owner, name)
        .ok()
        .and_then(|m| state.models.get(&m).cloned())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::ModelNotFound,
                format!("model {owner}/{name} does not exist on this server; GET /v1/models lists the models"),
            )
        })
}

/// Creates a prediction of `model` (through `deployment`, `owner/name`, if given).
pub(crate) async fn create_prediction(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    model: Arc<Model>,
    body: CreateBody,
    deployment: Option<String>,
) -> ApiResult<Response> {
    let input = body.input.ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidInput, "input is required (a JSON object)")
            .with_field("input")
    })?;
    let input = model.validate_input(&input).map_err(|e| {
        let field = e
            .field
            .as_ref()
            .map_or_else(|| "input".to_owned(), |f| format!("input.{f}"));
        ApiError::new(ErrorCode::InvalidInput, e.to_string()).with_field(field)
    })?;
    check_file_inputs(state, &caller.account, &input, "input").await?;
    let wait = prefer_wait(headers, state.config.max_wait)?;
    let limits = check_create_rate(state, caller).await?;
    let request = CreateRequest {
        id: body.id.as_deref().map(parse_client_id).transpose()?,
        owner: caller.account.clone(),
        model: model.name.clone(),
        version: model.version.clone(),
        input,
        webhook: body
            .webhook
            .as_deref()
            .map(|w| parse_webhook(w, &state.config.destinations))
            .transpose()?,
        webhook_events_filter: body
            .webhook_events_filter
            .map_or(WebhookEvents::ALL, |events| events.into_iter().collect()),
        deadline: cancel_after(headers)?,
        idempotency_key: idempotency_key(headers)?,
        // The operator's own predictions (the admin token's) are free.
        price: if caller.admin { None } else { model.price },
        max_active: limits.max_active,
    };
    let creation = state.service.create_through(request, deployment).await?;
    let (status, replayed) = match &creation {
        Creation::Created(_) => (StatusCode::CREATED, false),
        Creation::Replayed(_) => (StatusCode::OK, true),
    };
    let mut prediction = creation.prediction().clone();
    if let Some(wait) = wait {
        prediction = state
            .service
            .wait_until_settled(&prediction.value.id, wait)
            .await?;
    }
    let mut json = PredictionJson::new(&state.config.public_url, &prediction.value);
    if wait.is_some() {
        json = json.still_running();
    }
    let mut response = (status, Json(json)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!(
        "{}/v1/predictions/{}",
        state.config.public_url, prediction.value.id
    )) {
        headers.insert(header::LOCATION, location);
    }
    if wait.is_some() {
        headers.insert("preference-applied", HeaderValue::from_static("wait"));
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The caller's limits, after counting one create (a prediction or a batch) against its
/// creates per minute on this node: 429 with `Retry-After` over it.
pub(crate) async fn check_create_rate(
    state: &AppState,
    caller: &Caller,
) -> ApiResult<augur_core::account::Limits> {
    let limits = state.accounts.limits(&caller.account).await?;
    if let Some(per_minute) = limits.creates_per_minute
        && let Err(after) = state.create_limiter.check(&caller.account, per_minute)
    {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "account {} may create {per_minute} predictions (or batches) a minute; retry in {} s",
                caller.account,
                after.as_secs().max(1)
            ),
        )
        .with("limit", per_minute)
        .with_retry_after(after));
    }
    Ok(limits)
}

/// Refuses an input that names an uploaded file (its `urls.get`) the prediction's owner does
/// not have (missing, expired, deleted, or another account's), naming the field: the worker
/// would fail the prediction anyway, and the client learns it at once.
pub(crate) async fn check_file_inputs(
    state: &AppState,
    owner: &augur_core::AccountId,
    value: &Value,
    field: &str,
) -> ApiResult<()> {
    let prefix = format!("{}/v1/files/", state.config.public_url);
    let mut found = Vec::new();
    collect_file_urls(value, field, &prefix, &mut found);
    for (field, url) in found {
        let id = &url[prefix.len()..];
        match state.service.files().get(id).await? {
            Some(file) if file.owner == *owner => {}
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidInput,
                    format!("{field}: file {url} was not found: it expired, was deleted, or belongs to another account"),
                )
                .with_field(field));
            }
        }
    }
    Ok(())
}

/// The strings in `value` that are uploaded files' `urls.get`, with their field paths.
fn collect_file_urls(value: &Value, path: &str, prefix: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s)
            if s.strip_prefix(prefix)
                .is_some_and(augur_core::file::FileObject::is_valid_id) =>
        {
            out.push((path.to_owned(), s.clone()));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_file_urls(item, &format!("{path}[{i}]"), prefix, out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                collect_file_urls(item, &format!("{path}.{key}"), prefix, out);
            }
        }
        _ => {}
    }
}

/// Reads a prediction the caller may see; another account's is not found, like a missing one.
pub(crate) async fn read_visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<augur_core::Versioned<Arc<augur_core::Prediction>>> {
    let id = parse_path_id(id)?;
    let p = state.service.read(&id).await?;
    if caller.may_see(&p.value.owner) {
        Ok(p)
    } else {
        Err(augur_core::Error::NotFound(id).into())
    }
}

async fn get_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Response> {
    let p = read_visible(&state, &caller, &id).await?;
    let body = state
        .rendered
        .json(&state.config.public_url, &p.value, p.revision);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Response> {
    let p = read_visible(&state, &caller, &id).await?;
    let done = state
        .service
        .transition(&p.value.id, &Event::canceled())
        .await?;
    Ok(Json(PredictionJson::new(
        &state.config.public_url,
        &done.prediction.value,
    ))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct ListParams {
    cursor: Option<String>,
    status: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    limit: Option<usize>,
    /// Only this model's (`owner/name`).
    model: Option<String>,
    /// Only this account's (the admin token's filter; an account may name only itself).
    account: Option<String>,
}

/// The most records one `GET /v1/predictions?model=` page reads while looking for matches: the
/// store has no index by model, so the filter scans, and a page whose scan runs out lists what
/// it found (maybe nothing) with a `next` link that continues the scan.
pub(crate) const MODEL_SCAN_BUDGET: usize = 2000;

/// Records read per store round of a model scan.
const MODEL_SCAN_ROUND: usize = 250;

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppQuery(params): AppQuery<ListParams>,
) -> ApiResult<Response> {
    let status = status_param(params.status.as_deref())?;
    let limit = crate::error::page_limit(params.limit)?;
    let model = params.model.as_deref().map(model_param).transpose()?;
    let owner = match params.account.as_deref() {
        Some(account) => Some(account_param(&caller, account)?),
        // The admin token sees every account's predictions.
        None => (!caller.admin).then(|| caller.account.clone()),
    };
    let query = PredictionQuery {
        owner,
        status,
        created_after: params
            .created_after
            .as_deref()
            .map(|t| parse_time("created_after", t))
            .transpose()?,
        created_before: params
            .created_before
            .as_deref()
            .map(|t| parse_time("created_before", t))
            .transpose()?,
        after: params.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    };
    let public = &state.config.public_url;
    let scanned = AtomicUsize::new(0);
    let page = crate::paging::fill(
        limit,
        state.config.list_page_bytes,
        query.after.clone(),
        |after, limit| {
            let query = PredictionQuery {
                after,
                limit,
                ..query.clone()
            };
            let service = &state.service;
            let model = model.as_ref();
            let scanned = &scanned;
            async move {
                match model {
                    None => {
                        let page = service.list(&query).await?;
                        Ok((page.items, page.next))
                    }
                    Some(model) => scan_for_model(service, query, model, scanned).await,
                }
            }
        },
        |p: &augur_core::Versioned<Arc<augur_core::Prediction>>, out: &mut Vec<u8>| {
            crate::paging::write_json(out, &PredictionJson::new(public, &p.value).listed());
        },
    )
    .await?;
    let route = crate::pages::Route {
        url: format!("{public}/v1/predictions"),
        filters: &[
            ("status", params.status.as_deref()),
            ("created_after", params.created_after.as_deref()),
            ("created_before", params.created_before.as_deref()),
            ("model", params.model.as_deref()),
            ("account", params.account.as_deref()),
        ],
        limit: params.limit.map(|_| limit),
    };
    Ok(page.into_response(&route, query.after.as_ref()))
}

/// Reads up to `query.limit` predictions of `model` from `query.after` on, scanning at most
/// [`MODEL_SCAN_BUDGET`] records for the whole page (`scanned` counts them across rounds).
/// The cursor returned continues right after the last record looked at: after the last match
/// when the page is full, else after the last record scanned (so nothing is skipped or
/// listed twice). A backward cursor takes one store read, filtered.
async fn scan_for_model(
    service: &augur_core::Predictions,
    query: PredictionQuery,
    model: &ModelName,
    scanned: &AtomicUsize,
) -> ApiResult<(
    Vec<augur_core::Versioned<Arc<augur_core::Prediction>>>,
    Option<Cursor>,
)> {
    let wanted = query.limit;
    if query.after.as_ref().is_some_and(|c| c.backward) {
        let page = service.list(&query).await?;
        scanned.fetch_add(page.items.len(), Relaxed);
        let items = page
            .items
            .into_iter()
            .filter(|p| p.value.model == *model)
            .collect();
        return Ok((items, page.next));
    }
    let mut found = Vec::new();
    let mut after = query.after.clone();
    loop {
        let budget = MODEL_SCAN_BUDGET.saturating_sub(scanned.load(Relaxed));
        if budget == 0 {
            return Ok((found, after));
        }
        let page = service
            .list(&PredictionQuery {
                after: after.clone(),
                limit: MODEL_SCAN_ROUND.min(budget),
                ..query.clone()
            })
            .await?;
        for item in page.items {
            scanned.fetch_add(1, Relaxed);
            after = Some(crate::pages::cursor_at(&item, false));
            if item.value.model == *model {
                found.push(item);
                if found.len() == wanted {
                    return Ok((found, after));
                }
            }
        }
        if page.next.is_none() {
            return Ok((found, None));
        }
        after = page.next;
    }
}

/// The `model` filter: `owner/name`.
fn model_param(text: &str) -> ApiResult<ModelName> {
    ModelName::parse(text).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!("model must be a model name such as augur/demo-image, got {text:?}"),
        )
        .with_field("model")
    })
}

/// The `account` filter: any account for the admin token; an account may name only itself.
fn account_param(caller: &Caller, text: &str) -> ApiResult<augur_core::AccountId> {
    let account = augur_core::AccountId::parse(text).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!("account must be a username, got {text:?}"),
        )
        .with_field("account")
    })?;
    if !caller.admin && account != caller.account {
        return Err(ApiError::new(
            ErrorCode::AdminRequired,
            "account= names another account; only the admin token lists other accounts' predictions",
        )
        .with_field("account"));
    }
    Ok(account)
}

/// The `status` filter of a prediction listing, if given.
pub(crate) fn status_param(status: Option<&str>) -> ApiResult<Option<Status>> {
    status
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("status must be one of starting, processing, succeeded, failed, canceled; got {s:?}"),
                )
                .with_field("status")
            })
        })
        .transpose()
}

fn parse_time(field: &str, text: &str) -> ApiResult<Timestamp> {
    Timestamp::parse_rfc3339(text).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!("{field} must be an RFC 3339 time such as 2024-01-31T12:00:00Z, got {text:?}"),
        )
        .with_field(field)
    })
}

/// A cursor as text: `v1:` (after the position) or `b1:` (before it), the creation time in
/// microseconds and the record id, in URL-safe base64.
pub(crate) fn encode_cursor(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}:{}:{}",
        if cursor.backward { "b1" } else { "v1" },
        cursor.created_at.as_micros(),
        cursor.id
    ))
}

pub(crate) fn decode_cursor(text: &str) -> ApiResult<Cursor> {
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidCursor,
            "cursor is not one this server issued; follow the next URL of a previous page",
        )
        .with_field("cursor")
    };
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, ':');
    let (Some(direction @ ("v1" | "b1")), Some(micros), Some(id)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    // Record ids: a prediction's, a file's, or `owner/name` forms (workflows, deployments).
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(invalid());
    }
    Ok(Cursor {
        created_at: Timestamp::from_micros(micros.parse().map_err(|_| invalid())?),
        id: id.to_owned(),
        backward: direction == "b1",
    })
}

fn parse_path_id(id: &str) -> ApiResult<PredictionId> {
    // An id that cannot exist is simply not found (no oracle about the id syntax needed).
    PredictionId::parse(id).map_err(|_| {
        ApiError::new(
            ErrorCode::PredictionNotFound,
            format!(
                "prediction {:?} not found",
                id.chars().take(80).collect::<String>()
            ),
        )
    })
}

fn parse_client_id(id: &str) -> ApiResult<PredictionId> {
    PredictionId::parse(id)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()).with_field("id"))
}

/// A webhook URL: absolute, http(s), and not naming an address the destination policy
/// refuses (a host name is checked when the dispatcher connects, since DNS may change).
pub(crate) fn parse_webhook(
    text: &str,
    destinations: &augur_outbound::Policy,
) -> ApiResult<String> {
    let invalid = |why: &str| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "webhook must be an absolute http or https URL ({why}), got {:?}",
                text.chars().take(200).collect::<String>()
            ),
        )
        .with_field("webhook")
    };
    let url = url::Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("unsupported scheme"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if text.len() > 2048 {
        return Err(invalid("longer than 2048 characters"));
    }
    if let Err(refused) = destinations.check_url(&url) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "webhook names an address outgoing requests may not reach ({})",
                refused.range()
            ),
        )
        .with_field("webhook"));
    }
    Ok(url.to_string())
}

/// `Prefer: wait` (60 s) or `Prefer: wait=N` (1 to 60 s); other preferences are ignored.
fn prefer_wait(headers: &HeaderMap, max: Duration) -> ApiResult<Option<Duration>> {
    let mut wait = None;
    for value in headers.get_all("prefer") {
        let text = value.to_str().map_err(|_| bad_prefer("it is not ASCII"))?;
        for pref in text.split(',').map(str::trim) {
            if pref == "wait" {
                wait = Some(max);
            } else if let Some(n) = pref.strip_prefix("wait=") {
                let secs: u64 = n
                    .trim()
                    .parse()
                    .map_err(|_| bad_prefer("wait=N needs whole seconds"))?;
                if !(1..=max.as_secs()).contains(&secs) {
                    return Err(bad_prefer(&format!(
                        "wait=N must be between 1 and {}",
                        max.as_secs()
                    )));
                }
                wait = Some(Duration::from_secs(secs));
            }
        }
    }
    Ok(wait)
}

fn bad_prefer(why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidHeader,
        format!("invalid Prefer header: {why}; use Prefer: wait or Prefer: wait=N"),
    )
    .with_field("Prefer")
}

/// `Cancel-After: 90s` / `5m` / `1h30m`: cancel the prediction if it has not settled by then.
fn cancel_after(headers: &HeaderMap) -> ApiResult<Option<Timestamp>> {
    let Some(value) = headers.get("cancel-after") else {
        return Ok(None);
    };
    let bad = |why: String| {
        ApiError::new(
            ErrorCode::InvalidHeader,
            format!("invalid Cancel-After header: {why}; use a duration such as 30s, 5m or 1h30m"),
        )
        .with_field("Cancel-After")
    };
    let text = value.to_str().map_err(|_| bad("it is not ASCII".into()))?;
    let duration = humantime::parse_duration(text.trim()).map_err(|e| bad(e.to_string()))?;
    if duration < Duration::from_secs(1) || duration > Duration::from_secs(7 * 24 * 3600) {
        return Err(bad("it must be between 1s and 7 days".into()));
    }
    Ok(Some(Timestamp::now().plus(duration)))
}

/// The answer to a create that may be a replay: 201 with `Location`, or, for a request an
/// `Idempotency-Key` replayed, 200 with `idempotent-replayed: true` (batches and runs).
pub(crate) fn creation_response(
    body: impl serde::Serialize,
    location: &str,
    replayed: bool,
) -> Response {
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()));
    key.map(|k| Some(k.to_owned())).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidHeader,
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
        )
        .with_field("Idempotency-Key")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            created_at: Timestamp::from_micros(123),
            id: "abc".into(),
            backward: false,
        };
        assert_eq!(decode_cursor(&encode_cursor(&c)).unwrap(), c);
        let back = Cursor {
            id: "acme/web".into(),
            backward: true,
            ..c
        };
        assert_eq!(decode_cursor(&encode_cursor(&back)).unwrap(), back);
        for bad in ["", "!!", "djE6eDp5", &URL_SAFE_NO_PAD.encode("v2:1:abc")] {
            assert_eq!(
                decode_cursor(bad).unwrap_err().code(),
                ErrorCode::InvalidCursor
            );
        }
    }

    #[test]
    fn prefer_wait_parses_replicates_forms() {
        let max = Duration::from_secs(60);
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("prefer", HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(prefer_wait(&HeaderMap::new(), max).unwrap(), None);
        assert_eq!(prefer_wait(&h("wait"), max).unwrap(), Some(max));
        assert_eq!(
            prefer_wait(&h("wait=5"), max).unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            prefer_wait(&h("respond-async, wait=2"), max).unwrap(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(prefer_wait(&h("respond-async"), max).unwrap(), None);
        for bad in ["wait=0", "wait=61", "wait=abc", "wait=1.5"] {
            assert_eq!(
                prefer_wait(&h(bad), max).unwrap_err().code(),
                ErrorCode::InvalidHeader,
                "{bad}"
            );
        }
    }

    #[test]
    fn webhooks_must_be_absolute_http_urls() {
        let public = augur_outbound::Policy::default();
        assert!(parse_webhook("https://example.com/hook?x=1", &public).is_ok());
        for bad in ["/relative", "ftp://x/y", "not a url", "https://"] {
            assert!(parse_webhook(bad, &public).is_err(), "{bad}");
        }
        // An address the policy refuses is refused at once, however it is spelled; a host
        // name passes (it is checked after resolution, when the dispatcher connects).
        for internal in [
            "http://127.0.0.1:9/h",
            "http://0x7f000001/h",
            "http://2130706433/h",
            "http://[::1]/h",
            "http://[::ffff:10.0.0.1]/h",
            "http://169.254.169.254/latest",
        ] {
            let err = parse_webhook(internal, &public).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidRequest, "{internal}");
            assert!(
                err.detail().contains("may not reach"),
                "{internal}: {err:?}"
            );
        }
        assert!(parse_webhook("http://localhost:9/h", &public).is_ok());
        let loopback = augur_outbound::Policy::parse_allowlist("127.0.0.0/8").unwrap();
        assert!(parse_webhook("http://127.0.0.1:9/h", &loopback).is_ok());
    }
}
