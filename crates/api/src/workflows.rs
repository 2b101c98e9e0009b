//! `/v1/workflows` and `/v1/runs`: blueprints of predictions as durable DAGs, and their runs.
//! The rules live in [`augur_core::workflow`]; this module parses, checks and renders.
//!
//! - `POST /v1/workflows` (the blueprint as the body: create, or a new version when it
//!   changed), `GET /v1/workflows` (the caller's, then the operator's), `GET
//!   /v1/workflows/{owner}/{name}`.
//! - `POST /v1/workflows/{owner}/{name}/runs` `{"input", "webhook", "webhook_events_filter"}`
//!   (with `Idempotency-Key`), `GET /v1/runs` (`status`, cursor pages), `GET /v1/runs/{id}`,
//!   `POST /v1/runs/{id}/cancel`, `GET /v1/runs/{id}/stream` (Server-Sent Events: `node` when
//!   a node changes, `run` at each change, then `done`), and the operator's
//!   `POST /v1/runs/{id}/reconcile`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use augur_core::workflow::{
    Blueprint, NodeRun, Run, RunCreation, RunRequest, Workflow, WorkflowPut,
};
use augur_core::{AccountId, Caller, ModelName, WebhookEvent, WebhookEvents};

use crate::AppState;
use crate::error::{ApiError, ApiResult, AppJson, AppPath, AppQuery, ErrorCode};
use crate::predictions::{
    check_create_rate, creation_response, idempotency_key, parse_webhook, status_param,
};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workflows", post(put).get(list))
        .route("/v1/workflows/{owner}/{name}", get(read))
        .route("/v1/workflows/{owner}/{name}/runs", post(create_run))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(read_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/runs/{id}/reconcile", post(reconcile_run))
        .route("/v1/runs/{id}/stream", get(stream))
}

/// How often a run's event stream re-reads the run.
const STREAM_POLL: Duration = Duration::from_millis(250);

/// A workflow as clients see it.
#[derive(Debug, Serialize)]
pub struct WorkflowJson<'a> {
    name: &'a str,
    owner: &'a str,
    version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_schema: Option<&'a Value>,
    nodes: &'a BTreeMap<String, augur_core::workflow::Node>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a Value>,
    created_at: String,
    updated_at: String,
}

impl<'a> WorkflowJson<'a> {
    /// Renders a workflow.
    pub fn new(w: &'a Workflow) -> Self {
        let b = &w.blueprint;
        Self {
            name: &b.name,
            owner: b.name.split_once('/').map_or("", |(o, _)| o),
            version: w.version,
            description: b.description.as_deref(),
            input_schema: b.input_schema.as_ref(),
            nodes: &b.nodes,
            output: b.output.as_ref(),
            created_at: w.created_at.to_rfc3339(),
            updated_at: w.updated_at.to_rfc3339(),
        }
    }
}

/// A node of a run as clients see it.
#[derive(Debug, Serialize, PartialEq)]
struct NodeJson {
    status: &'static str,
    prediction_ids: Vec<String>,
    output: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl NodeJson {
    fn new(public_url: &str, node: &NodeRun) -> Self {
        Self {
            status: node.status.as_str(),
            prediction_ids: node.prediction_ids().map(|id| id.to_string()).collect(),
            output: node.output.as_ref().map_or(Value::Null, |o| {
                augur_core::output::render(public_url, o).into_owned()
            }),
            error: node.error.clone(),
        }
    }
}

/// A run as clients see it (never its seed).
#[derive(Debug, Serialize)]
pub struct RunJson<'a> {
    id: &'a str,
    workflow: &'a str,
    version: u32,
    status: &'static str,
    input: &'a Value,
    output: Value,
    error: Option<&'a str>,
    nodes: BTreeMap<&'a str, NodeJson>,
    created_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<&'a str>,
    urls: Value,
}

impl<'a> RunJson<'a> {
    /// Renders a run with absolute URLs under `public_url`.
    pub fn new(public_url: &str, r: &'a Run) -> Self {
        let base = format!("{public_url}/v1/runs/{}", r.id);
        Self {
            id: &r.id,
            workflow: &r.workflow,
            version: r.version,
            status: r.status.as_str(),
            input: &r.input,
            output: r.output.as_ref().map_or(Value::Null, |o| {
                augur_core::output::render(public_url, o).into_owned()
            }),
            error: r.error.as_deref(),
            nodes: r
                .nodes
                .iter()
                .map(|(name, node)| (name.as_str(), NodeJson::new(public_url, node)))
                .collect(),
            created_at: r.created_at.to_rfc3339(),
            started_at: r.started_at.map(|t| t.to_rfc3339()),
            completed_at: r.completed_at.map(|t| t.to_rfc3339()),
            webhook: r.webhook.as_deref(),
            urls: json!({
                "get": base,
                "cancel": format!("{base}/cancel"),
                "stream": format!("{base}/stream"),
            }),
        }
    }
}

/// The body of a `run.completed` webhook: the run as `GET /v1/runs/{id}` shows it.
pub fn webhook_body(public_url: &str, run: &Run) -> Vec<u8> {
    serde_json::to_vec(&RunJson::new(public_url, run)).expect("a run always serializes")
}

fn workflow_name(owner: &str, name: &str) -> ApiResult<String> {
    ModelName::from_parts(owner, name)
        .map(|n| n.to_string())
        .map_err(|_| {
            ApiError::new(
                ErrorCode::WorkflowNotFound,
                format!("workflow {owner}/{name} not found"),
            )
        })
}

async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppJson(blueprint): AppJson<Blueprint>,
) -> ApiResult<Response> {
    let put = state
        .service
        .put_workflow(&caller.account, blueprint, &*state.catalog)
        .await?;
    let status = match put {
        WorkflowPut::Created(_) => StatusCode::CREATED,
        WorkflowPut::Updated(_) | WorkflowPut::Unchanged(_) => StatusCode::OK,
    };
    let w = put.workflow();
    let mut response = (status, Json(WorkflowJson::new(w))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!(
        "{}/v1/workflows/{}",
        state.config.public_url, w.blueprint.name
    )) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
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
    let (limit, after) = crate::paging::start(params.limit, params.cursor.as_deref())?;
    let asked = after.clone();
    let first_page = after.is_none();
    let budget = state.config.list_page_bytes;
    let public = &state.config.public_url;
    // The names on the page, so that the operator's workflows of the same name are not listed
    // again after them.
    let own_names = std::sync::Mutex::new(std::collections::HashSet::new());
    let mut page = crate::paging::fill(
        limit,
        budget,
        after,
        |after, limit| {
            let (service, owner) = (&state.service, &caller.account);
            async move {
                let page = service.list_workflows(owner, after, limit).await?;
                Ok((page.items, page.next))
            }
        },
        |w: &Workflow, out: &mut Vec<u8>| {
            own_names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(w.blueprint.name.clone());
            crate::paging::write_json(out, &WorkflowJson::new(w));
        },
    )
    .await?;
    // The operator's workflows, which every account may run, follow on the first page, within
    // the same byte budget; the links are the caller's own workflows'.
    if first_page && caller.account != AccountId::admin() {
        let shared = state
            .service
            .list_workflows(&AccountId::admin(), None, 100)
            .await?;
        let own_names = own_names.into_inner().unwrap_or_else(|e| e.into_inner());
        page.extend_within(
            budget,
            shared
                .items
                .into_iter()
                .filter(|w| !own_names.contains(&w.blueprint.name)),
            |w, out| crate::paging::write_json(out, &WorkflowJson::new(w)),
        );
    }
    let route = crate::pages::Route {
        url: format!("{public}/v1/workflows"),
        filters: &[],
        limit: params.limit.map(|_| limit),
    };
    Ok(page.into_response(&route, asked.as_ref()))
}

async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath((owner, name)): AppPath<(String, String)>,
) -> ApiResult<Response> {
    let name = workflow_name(&owner, &name)?;
    let w = state.service.get_workflow(&caller.account, &name).await?;
    Ok(Json(WorkflowJson::new(&w)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    webhook_events_filter: Option<Vec<WebhookEvent>>,
}

async fn create_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath((owner, name)): AppPath<(String, String)>,
    headers: HeaderMap,
    AppJson(body): AppJson<RunBody>,
) -> ApiResult<Response> {
    let name = workflow_name(&owner, &name)?;
    let workflow = state.service.get_workflow(&caller.account, &name).await?;
    check_create_rate(&state, &caller).await?;
    let request = RunRequest {
        owner: caller.account.clone(),
        workflow,
        input: body.input.unwrap_or_else(|| json!({})),
        webhook: body
            .webhook
            .as_deref()
            .map(|w| parse_webhook(w, &state.config.destinations))
            .transpose()?,
        webhook_events_filter: body
            .webhook_events_filter
            .map_or(WebhookEvents::NONE, |events| events.into_iter().collect()),
        idempotency_key: idempotency_key(&headers)?,
        free: caller.admin,
    };
    let creation = state.service.create_run(&request, &*state.catalog).await?;
    let replayed = matches!(creation, RunCreation::Replayed(_));
    let run = &creation.run().value;
    let public = &state.config.public_url;
    Ok(creation_response(
        RunJson::new(public, run),
        &format!("{public}/v1/runs/{}", run.id),
        replayed,
    ))
}

/// The run the caller may see (the admin sees every account's).
async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<augur_core::Versioned<Run>> {
    let owner = (!caller.admin).then_some(&caller.account);
    Ok(state.service.get_run(owner, id).await?)
}

async fn read_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Response> {
    let run = visible(&state, &caller, &id).await?;
    Ok(Json(RunJson::new(&state.config.public_url, &run.value)).into_response())
}

async fn list_runs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppQuery(params): AppQuery<ListParams>,
) -> ApiResult<Response> {
    let status = status_param(params.status.as_deref())?;
    let (limit, after) = crate::paging::start(params.limit, params.cursor.as_deref())?;
    let public = &state.config.public_url;
    let asked = after.clone();
    let page = crate::paging::fill(
        limit,
        state.config.list_page_bytes,
        after,
        |after, limit| {
            let (service, owner) = (&state.service, &caller.account);
            async move {
                let page = service.list_runs(Some(owner), status, after, limit).await?;
                Ok((page.items, page.next))
            }
        },
        |p: &Run, out: &mut Vec<u8>| {
            crate::paging::write_json(out, &RunJson::new(public, p));
        },
    )
    .await?;
    let route = crate::pages::Route {
        url: format!("{public}/v1/runs"),
        filters: &[("status", params.status.as_deref())],
        limit: params.limit.map(|_| limit),
    };
    Ok(page.into_response(&route, asked.as_ref()))
}

async fn cancel_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Response> {
    let run = visible(&state, &caller, &id).await?;
    let done = state
        .service
        .cancel_run(&run.value.owner, &run.value.id, &*state.catalog)
        .await?;
    Ok(Json(RunJson::new(&state.config.public_url, &done.value)).into_response())
}

async fn reconcile_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Response> {
    crate::auth::require_admin(&caller)?;
    let run = visible(&state, &caller, &id).await?;
    let done = state
        .service
        .advance_run(&run.value.owner, &run.value.id, &*state.catalog, true)
        .await?;
    Ok(Json(RunJson::new(&state.config.public_url, &done.value)).into_response())
}

/// Progress as Server-Sent Events: `node` (`{"node", "status", "prediction_ids", "output"}`)
/// for each node that changed, then `run` (its JSON), now and after every change; `done` (the
/// run's JSON) once it is terminal. Changes are seen by re-reading the run every
/// [`STREAM_POLL`], so they show whichever node made them.
async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let first = visible(&state, &caller, &id).await?;
    let owner = first.value.owner.clone();
    struct Seen {
        revision: Option<augur_core::Revision>,
        nodes: BTreeMap<String, NodeJson>,
        pending: std::collections::VecDeque<Event>,
        finished: bool,
    }
    let seen = Seen {
        revision: None,
        nodes: BTreeMap::new(),
        pending: Default::default(),
        finished: false,
    };
    let events = futures::stream::unfold(
        (state, owner, id, seen),
        |(state, owner, id, mut seen)| async move {
            loop {
                if let Some(event) = seen.pending.pop_front() {
                    return Some((Ok(event), (state, owner, id, seen)));
                }
                if seen.finished {
                    return None;
                }
                let run = match state.service.get_run(Some(&owner), &id).await {
                    Ok(run) => run,
                    Err(e) => {
                        tracing::debug!(run = %id, error = %e, "run stream ends");
                        return None;
                    }
                };
                if seen.revision.is_some_and(|r| r >= run.revision) {
                    tokio::time::sleep(STREAM_POLL).await;
                    continue;
                }
                seen.revision = Some(run.revision);
                let public = &state.config.public_url;
                let revision = run.revision.0.to_string();
                for (name, node) in &run.value.nodes {
                    let now = NodeJson::new(public, node);
                    if seen.nodes.get(name) != Some(&now) {
                        let mut data = serde_json::to_value(&now).unwrap_or_default();
                        data["node"] = Value::String(name.clone());
                        seen.pending.push_back(
                            Event::default()
                                .event("node")
                                .id(revision.clone())
                                .data(data.to_string()),
                        );
                        seen.nodes.insert(name.clone(), now);
                    }
                }
                let body =
                    serde_json::to_string(&RunJson::new(public, &run.value)).unwrap_or_default();
                let terminal = run.value.status.is_terminal();
                seen.pending.push_back(
                    Event::default()
                        .event(if terminal { "done" } else { "run" })
                        .id(revision)
                        .data(body),
                );
                seen.finished = terminal;
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
