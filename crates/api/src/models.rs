//! `/v1/models`: the models this server runs, in Replicate's model and version shapes (plus
//! Augur's `price`: what a prediction costs in credits, null when free, so that a client (the
//! dashboard's run form) can say so before it runs); their
//! search (`QUERY /v1/models`, a text body, as the official clients send it); and
//! `/v1/collections`, whose one collection, [`ALL_COLLECTION`], holds every model (Augur has no
//! curated collections).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{Value, json};

use augur_engine::Model;

use crate::AppState;
use crate::error::{ApiError, ApiResult, AppPath, ErrorCode};
use crate::predictions::find_model;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        // `any`, because search is the QUERY method, which axum's method filters do not name.
        .route("/v1/models", any(models_root))
        .route("/v1/collections", get(collections))
        .route("/v1/collections/{slug}", get(collection))
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
        "price": model.price,
    })
}

/// The slug of the one collection: every model this server runs.
pub(crate) const ALL_COLLECTION: &str = "all";

/// Every model is on one page (a server runs a handful), so `previous` and `next` are null.
fn list(state: &AppState, keep: impl Fn(&Model) -> bool) -> Json<Value> {
    let results: Vec<Value> = state
        .models
        .iter()
        .filter(|m| keep(m))
        .map(|m| model_json(state, m))
        .collect();
    Json(json!({"previous": null, "next": null, "results": results}))
}

/// `GET /v1/models` lists; `QUERY /v1/models` searches: every word of the text body must appear
/// (ignoring case) in the model's `owner/name` or description. An empty query lists them all.
async fn models_root(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    match method.as_str() {
        "GET" | "HEAD" => list(&state, |_| true).into_response(),
        "QUERY" => {
            let Ok(text) = std::str::from_utf8(&body) else {
                return ApiError::new(
                    ErrorCode::InvalidRequest,
                    "the search query (the QUERY body) must be UTF-8 text",
                )
                .into_response();
            };
            // The JS client sends the query JSON-encoded (a quoted string); Python as is.
            let text = serde_json::from_str::<String>(text.trim()).unwrap_or_else(|_| text.into());
            let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
            list(&state, |m| {
                let haystack = format!("{} {}", m.name, m.description).to_lowercase();
                words.iter().all(|w| haystack.contains(w.as_str()))
            })
            .into_response()
        }
        _ => {
            let mut response = crate::error::method_not_allowed(method, uri)
                .await
                .into_response();
            // RFC 9110: a 405 names the methods the resource takes.
            response.headers_mut().insert(
                axum::http::header::ALLOW,
                axum::http::HeaderValue::from_static("GET,HEAD,QUERY"),
            );
            response
        }
    }
}

fn collection_json(with_models: Option<Vec<Value>>) -> Value {
    let mut c = json!({
        "slug": ALL_COLLECTION,
        "name": "All models",
        "description": "Every model this server runs (Augur has no curated collections)",
    });
    if let Some(models) = with_models {
        c["models"] = Value::Array(models);
    }
    c
}

async fn collections() -> Json<Value> {
    Json(json!({"previous": null, "next": null, "results": [collection_json(None)]}))
}

async fn collection(
    State(state): State<AppState>,
    AppPath(slug): AppPath<String>,
) -> ApiResult<Json<Value>> {
    if slug != ALL_COLLECTION {
        return Err(ApiError::new(
            ErrorCode::CollectionNotFound,
            format!(
                "collection {:?} not found; this server has one, {ALL_COLLECTION:?}",
                slug.chars().take(80).collect::<String>()
            ),
        ));
    }
    let models = state.models.iter().map(|m| model_json(&state, m)).collect();
    Ok(Json(collection_json(Some(models))))
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
