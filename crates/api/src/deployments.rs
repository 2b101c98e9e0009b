//! `/v1/deployments` and `/v1/hardware`: Replicate's deployments (named, account-owned routes
//! to a model version with their own concurrency) in Replicate's shapes, and the hardware a
//! deployment may name. The rules live in [`augur_core::deployment`].
//!
//! - `POST /v1/deployments` `{"name", "model", "version", "hardware", "min_instances",
//!   "max_instances"}` (release 1), `GET /v1/deployments` (cursor pages), `GET`, `PATCH` (a
//!   new release) and `DELETE /v1/deployments/{owner}/{name}`.
//! - `POST /v1/deployments/{owner}/{name}/predictions`: a prediction of the current release's
//!   model, charged like any other, that names the deployment and is queued on its topic.
//! - `GET /v1/hardware`: Augur does not pick hardware (each model runs where its operator set
//!   it up), so there is one SKU, [`HARDWARE_SKU`].

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use augur_core::deployment::{Configuration, Deployment, DeploymentChange, Release};
use augur_core::{AccountId, Caller, ModelName, Timestamp};

use crate::AppState;
use crate::error::{ApiError, ApiResult, AppJson, AppPath, AppQuery, ErrorCode};
use crate::predictions::{CreateBody, create_prediction, creation_response};

/// The one hardware SKU: wherever the operator runs each model.
pub(crate) const HARDWARE_SKU: &str = "default";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/deployments", post(create).get(list))
        .route(
            "/v1/deployments/{owner}/{name}",
            get(read).patch(update).delete(remove),
        )
        .route(
            "/v1/deployments/{owner}/{name}/predictions",
            post(create_prediction_through),
        )
        .route("/v1/hardware", get(hardware))
}

async fn hardware() -> Json<serde_json::Value> {
    Json(json!([{
        "sku": HARDWARE_SKU,
        "name": "Where the operator runs each model (Augur does not choose hardware)",
    }]))
}

/// A deployment as Replicate renders it.
#[derive(Debug, Serialize)]
struct DeploymentJson<'a> {
    owner: &'a str,
    name: &'a str,
    current_release: ReleaseJson<'a>,
}

#[derive(Debug, Serialize)]
struct ReleaseJson<'a> {
    number: u32,
    model: &'a str,
    version: &'a str,
    created_at: String,
    created_by: serde_json::Value,
    configuration: &'a Configuration,
}

impl<'a> DeploymentJson<'a> {
    fn new(d: &'a Deployment) -> Self {
        let r = &d.current_release;
        Self {
            owner: d.owner.as_str(),
            name: &d.name,
            current_release: ReleaseJson {
                number: r.number,
                model: r.model.as_str(),
                version: &r.version,
                created_at: r.created_at.to_rfc3339(),
                created_by: json!({
                    "type": "user",
                    "username": r.created_by.as_str(),
                    "name": r.created_by.as_str(),
                    "github_url": null,
                }),
                configuration: &r.configuration,
            },
        }
    }
}

/// The create body. Replicate requires every field; Augur defaults `version` (the model's),
/// `hardware` ([`HARDWARE_SKU`]), `min_instances` (0) and `max_instances` (1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateDeploymentBody {
    name: Option<String>,
    model: Option<String>,
    version: Option<String>,
    hardware: Option<String>,
    #[serde(default, deserialize_with = "augur_core::whole::option")]
    min_instances: Option<u32>,
    #[serde(default, deserialize_with = "augur_core::whole::option")]
    max_instances: Option<u32>,
}

/// The update body: each field present changes the new release.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateDeploymentBody {
    model: Option<String>,
    version: Option<String>,
    hardware: Option<String>,
    #[serde(default, deserialize_with = "augur_core::whole::option")]
    min_instances: Option<u32>,
    #[serde(default, deserialize_with = "augur_core::whole::option")]
    max_instances: Option<u32>,
}

/// Refuses a release this server cannot honour: a model it does not run, a version that is
/// not the model's, hardware it does not offer, or instance counts out of range.
fn check_release(state: &AppState, release: &Release) -> ApiResult<()> {
    let model = state.models.get(&release.model).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "model {} does not exist on this server; GET /v1/models lists the models",
                release.model
            ),
        )
        .with_field("model")
    })?;
    if model.version != release.version {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "model {} has no version {:?}; its version is {}",
                release.model, release.version, model.version
            ),
        )
        .with_field("version"));
    }
    if release.configuration.hardware != HARDWARE_SKU {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "hardware must be {HARDWARE_SKU:?} (GET /v1/hardware): Augur runs each model where its operator set it up, got {:?}",
                release.configuration.hardware
            ),
        )
        .with_field("hardware"));
    }
    Deployment::check_configuration(&release.configuration)
        .map_err(|(field, why)| ApiError::new(ErrorCode::InvalidRequest, why).with_field(field))
}

fn parse_model(text: &str) -> ApiResult<ModelName> {
    ModelName::parse(text).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("model must be owner/name: {e}"),
        )
        .with_field("model")
    })
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppJson(body): AppJson<CreateDeploymentBody>,
) -> ApiResult<Response> {
    let missing = |field: &str| {
        ApiError::new(ErrorCode::InvalidRequest, format!("{field} is required")).with_field(field)
    };
    let name = body.name.ok_or_else(|| missing("name"))?;
    // The official Python client strips an `owner/` prefix; accept the caller's own.
    let name = match name.split_once('/') {
        Some((owner, rest)) if owner == caller.account.as_str() => rest.to_owned(),
        _ => name,
    };
    if !Deployment::is_valid_name(&name) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("name must be 1 to 64 characters of lowercase letters, digits, '.', '-' and '_', got {:?}", name.chars().take(80).collect::<String>()),
        )
        .with_field("name"));
    }
    let model = parse_model(body.model.as_deref().ok_or_else(|| missing("model"))?)?;
    let version = match body.version {
        Some(v) => v,
        None => state
            .models
            .get(&model)
            .map(|m| m.version.clone())
            .unwrap_or_default(),
    };
    let now = Timestamp::now();
    let deployment = Deployment {
        owner: caller.account.clone(),
        name,
        current_release: Release {
            number: 1,
            model,
            version,
            created_at: now,
            created_by: caller.account.clone(),
            configuration: Configuration {
                hardware: body.hardware.unwrap_or_else(|| HARDWARE_SKU.to_owned()),
                min_instances: body.min_instances.unwrap_or(0),
                max_instances: body.max_instances.unwrap_or(1),
            },
        },
        created_at: now,
    };
    check_release(&state, &deployment.current_release)?;
    state.service.create_deployment(&deployment).await?;
    let location = format!(
        "{}/v1/deployments/{}",
        state.config.public_url,
        deployment.full_name()
    );
    Ok(creation_response(
        DeploymentJson::new(&deployment),
        &location,
        false,
    ))
}

/// The owner a path names, if the caller may act on its deployments (the admin on any); a
/// deployment of another account is not found, like a missing one.
fn path_owner(caller: &Caller, owner: &str, name: &str) -> ApiResult<AccountId> {
    match AccountId::parse(owner) {
        Ok(owner) if caller.may_see(&owner) => Ok(owner),
        _ => Err(augur_core::Error::DeploymentNotFound(format!(
            "{}/{}",
            owner.chars().take(64).collect::<String>(),
            name.chars().take(64).collect::<String>()
        ))
        .into()),
    }
}

async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath((owner, name)): AppPath<(String, String)>,
) -> ApiResult<Response> {
    let owner = path_owner(&caller, &owner, &name)?;
    let d = state.service.get_deployment(&owner, &name).await?;
    Ok(Json(DeploymentJson::new(&d)).into_response())
}

async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath((owner, name)): AppPath<(String, String)>,
    AppJson(body): AppJson<UpdateDeploymentBody>,
) -> ApiResult<Response> {
    let owner = path_owner(&caller, &owner, &name)?;
    let model = body.model.as_deref().map(parse_model).transpose()?;
    // A new model without a version takes the model's.
    let version = match (&model, body.version) {
        (_, Some(v)) => Some(v),
        (Some(m), None) => Some(
            state
                .models
                .get(m)
                .map(|m| m.version.clone())
                .unwrap_or_default(),
        ),
        (None, None) => None,
    };
    let change = DeploymentChange {
        model,
        version,
        hardware: body.hardware,
        min_instances: body.min_instances,
        max_instances: body.max_instances,
    };
    let mut refusal = None;
    let result = state
        .service
        .update_deployment(&owner, &name, &caller.account, &change, |release| {
            check_release(&state, release).map_err(|e| {
                let message = e.detail().to_owned();
                refusal = Some(e);
                augur_core::Error::Invalid(message)
            })
        })
        .await;
    match result {
        Ok(d) => Ok(Json(DeploymentJson::new(&d)).into_response()),
        Err(augur_core::Error::Invalid(_)) if refusal.is_some() => Err(refusal
            .take()
            .unwrap_or_else(|| ApiError::internal("lost refusal"))),
        Err(e) => Err(e.into()),
    }
}

async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath((owner, name)): AppPath<(String, String)>,
) -> ApiResult<Response> {
    let owner = path_owner(&caller, &owner, &name)?;
    state.service.delete_deployment(&owner, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppQuery(params): AppQuery<crate::paging::PageParams>,
) -> ApiResult<Response> {
    let (limit, after) = crate::paging::start(params.limit, params.cursor.as_deref())?;
    let asked = after.clone();
    // The admin token sees every account's deployments.
    let owner = (!caller.admin).then_some(&caller.account);
    let page = crate::paging::fill(
        limit,
        state.config.list_page_bytes,
        after,
        |after, limit| {
            let service = &state.service;
            async move {
                let page = service.list_deployments(owner, after, limit).await?;
                Ok((page.items, page.next))
            }
        },
        |d: &Deployment, out: &mut Vec<u8>| {
            crate::paging::write_json(out, &DeploymentJson::new(d));
        },
    )
    .await?;
    let route = crate::pages::Route {
        url: format!("{}/v1/deployments", state.config.public_url),
        filters: &[],
        limit: params.limit.map(|_| limit),
    };
    Ok(page.into_response(&route, asked.as_ref()))
}

async fn create_prediction_through(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath((owner, name)): AppPath<(String, String)>,
    headers: HeaderMap,
    AppJson(body): AppJson<CreateBody>,
) -> ApiResult<Response> {
    let owner = path_owner(&caller, &owner, &name)?;
    let d = state.service.get_deployment(&owner, &name).await?;
    let release = &d.current_release;
    let model = state
        .models
        .get(&release.model)
        .filter(|m| m.version == release.version)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "deployment {} routes to {}:{}, which this server no longer runs; PATCH the deployment with a model and version from GET /v1/models",
                    d.full_name(),
                    release.model,
                    release.version
                ),
            )
            .with_field("version")
        })?;
    create_prediction(&state, &caller, &headers, model, body, Some(d.full_name())).await
}
