//! `/v1/models`: the models this server runs, in Replicate's model and version shapes.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use augur_engine::Model;

use crate::AppState;
use crate::error::{ApiError, ApiResult, AppPath, ErrorCode};
use crate::predictions::find_model;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list))
        .route("/v1/models/{owner}/{name}", get(get_one))
        .route("/v1/models/{owner}/{name}/versions", get(versions))
        .route("/v1/models/{owner}/{name}/versions/{version}", get(version))
}

fn version_json(model: &Model) -> Value {
    json!({
        "id": model.version,
        "created_at": model.created_at.to_rfc3339(),
        "cog_version": "augur",
        "openapi_schema": model.openapi_schema(),
    })
}

fn model_json(state: &AppState, model: &Model) -> Value {
    json!({
        "url": format!("{}/v1/models/{}", state.config.public_url, model.name),
        "owner": model.name.owner(),
        "name": model.name.name(),
        "description": model.description,
        "visibility": "public",
        "github_url": null,
        "paper_url": null,
        "license_url": null,
        "run_count": 0,
        "cover_image_url": null,
        "default_example": null,
        "latest_version": version_json(model),
    })
}

async fn list(State(state): State<AppState>) -> Json<Value> {
    let results: Vec<Value> = state.models.iter().map(|m| model_json(&state, m)).collect();
    Json(json!({"previous": null, "next": null, "results": results}))
}

async fn get_one(
    State(state): State<AppState>,
    AppPath((owner, name)): AppPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let model = find_model(&state, &owner, &name)?;
    Ok(Json(model_json(&state, &model)))
}

async fn versions(
    State(state): State<AppState>,
    AppPath((owner, name)): AppPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let model = find_model(&state, &owner, &name)?;
    Ok(Json(
        json!({"previous": null, "next": null, "results": [version_json(&model)]}),
    ))
}

async fn version(
    State(state): State<AppState>,
    AppPath((owner, name, version)): AppPath<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let model = find_model(&state, &owner, &name)?;
    if model.version != version {
        return Err(ApiError::new(
            ErrorCode::VersionNotFound,
            format!(
                "model {owner}/{name} has no version {version:?}; its version is {}",
                model.version
            ),
        ));
    }
    Ok(Json(version_json(&model)))
}
