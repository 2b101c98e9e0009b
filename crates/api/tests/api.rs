//! The HTTP API through the router (no sockets): happy paths, Replicate's shapes, and every
//! kind of bad input answered with a JSON error naming the problem.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use augur_api::{ApiConfig, AppParts, AppState, router};
use augur_core::store::memory::MemoryStore;
use augur_core::{Accounts, AccountsConfig, Credits, Predictions, Secret, ServiceConfig};
use augur_engine::{ModelRegistry, OutputFiles, Worker, WorkerOptions};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "test-token";
const BASE: &str = "http://augur.test";

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("recorder")
        })
        .clone()
}

struct App {
    router: Router,
    state: AppState,
    _stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn state() -> AppState {
    let store: augur_core::store::DynStore = Arc::new(MemoryStore::new());
    state_on(BASE, store, OutputFiles::in_memory(BASE))
}

/// The API's state at `public_url` over `store` and `files`.
fn state_on(public_url: &str, store: augur_core::store::DynStore, files: OutputFiles) -> AppState {
    state_with(public_url, store, files, |_| {})
}

/// [`state_on`] with its configuration changed by `tweak`.
fn state_with(
    public_url: &str,
    store: augur_core::store::DynStore,
    files: OutputFiles,
    tweak: impl FnOnce(&mut ApiConfig),
) -> AppState {
    let mut models = ModelRegistry::new();
    augur_engine::builtin::register(&mut models);
    // augur/demo-image costs 3 credits; augur/echo stays free.
    let priced = augur_core::ModelName::parse("augur/demo-image").unwrap();
    assert!(models.set_price(
        &priced,
        Some(augur_core::Price::PerPrediction { per_prediction: 3 })
    ));
    let mut config = ApiConfig::new(public_url, Secret::new(TOKEN));
    config.max_body_bytes = 64 * 1024;
    tweak(&mut config);
    let models = Arc::new(models);
    AppState::new(AppParts {
        rendered: Default::default(),
        service: Predictions::new(store.clone(), ServiceConfig::default()),
        accounts: Accounts::new(store.clone(), AccountsConfig::default()),
        credits: Credits::new(store),
        create_limiter: Default::default(),
        callback_budget: Default::default(),
        payments: None,
        catalog: Arc::new(augur_engine::ModelCatalog::new(models.clone(), public_url)),
        models,
        files,
        config,
        metrics: Some(metrics_handle()),
    })
}

/// The API without workers: predictions stay `starting`.
fn app() -> App {
    let state = state();
    App {
        router: router(state.clone()),
        state,
        _stop: None,
    }
}

/// The API on `state`, without workers.
fn app_on(state: AppState) -> App {
    App {
        router: router(state.clone()),
        state,
        _stop: None,
    }
}

/// The API with a worker running the built-in models.
fn app_with_worker() -> App {
    with_worker(app())
}

/// `app` with a worker running the built-in models.
fn with_worker(mut app: App) -> App {
    let worker = Worker::new(
        app.state.service.clone(),
        app.state.models.clone(),
        app.state.files.clone(),
        WorkerOptions {
            idle_poll: Duration::from_millis(20),
            ..Default::default()
        },
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(worker.run(async move {
        let _ = rx.await;
    }));
    app._stop = Some(tx);
    app
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts an error answer: status, code, and a detail mentioning `needle`.
    fn assert_error(&self, status: u16, code: &str, needle: &str) {
        let body = self.json();
        assert_eq!(self.status.as_u16(), status, "{body}");
        assert_eq!(body["status"], status, "{body}");
        assert_eq!(body["code"], code, "{body}");
        let detail = body["detail"].as_str().expect("detail");
        assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
        assert!(body["title"].is_string());
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/json",
            "errors are JSON"
        );
    }
}

impl App {
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(
            Request::get(path)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.post_with(path, body, &[]).await
    }

    async fn get_without_token(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    async fn post_with(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.send(request.body(Body::from(body.to_string())).unwrap())
            .await
    }

    async fn create_echo(&self, input: Value) -> Value {
        let reply = self
            .post("/v1/models/augur/echo/predictions", json!({"input": input}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json());
        reply.json()
    }
}

#[tokio::test]
async fn create_returns_replicates_prediction_shape() {
    let app = app();
    let reply = app
        .post(
            "/v1/models/augur/demo-image/predictions",
            json!({"input": {"prompt": "a cat", "width": 64}, "webhook": "https://example.com/h",
                   "webhook_events_filter": ["completed"], "stream": true, "unknown_field": 1}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let p = reply.json();
    let id = p["id"].as_str().unwrap();
    assert_eq!(id.len(), 26);
    assert_eq!(p["model"], "augur/demo-image");
    assert_eq!(p["version"].as_str().unwrap().len(), 64);
    assert_eq!(p["status"], "starting");
    assert_eq!(p["input"]["prompt"], "a cat");
    assert_eq!(p["input"]["width"], 64);
    assert_eq!(p["input"]["height"], 512, "defaults are filled in");
    assert_eq!(p["logs"], "");
    assert!(p["error"].is_null() && p["output"].is_null());
    assert!(p["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(p["urls"]["get"], format!("{BASE}/v1/predictions/{id}"));
    assert_eq!(
        p["urls"]["cancel"],
        format!("{BASE}/v1/predictions/{id}/cancel")
    );
    assert!(
        p["urls"]["stream"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{BASE}/v1/predictions/{id}/stream?token="))
    );
    assert_eq!(p["webhook"], "https://example.com/h");
    assert_eq!(p["webhook_events_filter"], json!(["completed"]));
    assert_eq!(p["data_removed"], false);
    assert_eq!(
        reply.headers[header::LOCATION],
        format!("{BASE}/v1/predictions/{id}")
    );

    let got = app.get(&format!("/v1/predictions/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["id"], id);
}

#[tokio::test]
async fn create_by_version_accepts_replicates_reference_forms() {
    let app = app();
    let version = app.get("/v1/models/augur/echo").await.json()["latest_version"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for reference in [
        version.clone(),
        format!("augur/echo:{version}"),
        "augur/echo".into(),
    ] {
        let reply = app
            .post(
                "/v1/predictions",
                json!({"version": reference, "input": {"x": 1}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reference}");
        assert_eq!(reply.json()["version"], version);
    }
    app.post("/v1/predictions", json!({"version": "nope", "input": {}}))
        .await
        .assert_error(422, "invalid_request", "version \"nope\" does not exist");
    app.post("/v1/predictions", json!({"input": {}}))
        .await
        .assert_error(422, "invalid_request", "version is required");
    app.post(
        "/v1/predictions",
        json!({"version": "augur/echo:0000", "input": {}}),
    )
    .await
    .assert_error(422, "invalid_request", "does not exist");
}

#[tokio::test]
async fn bad_input_gets_clear_json_errors() {
    let app = app();
    app.post("/v1/models/acme/missing/predictions", json!({"input": {}}))
        .await
        .assert_error(404, "model_not_found", "acme/missing");
    app.post(
        "/v1/models/augur/demo-image/predictions",
        json!({"input": {"prompt": "x", "width": "wide"}}),
    )
    .await
    .assert_error(422, "invalid_input", "input.width");
    let reply = app
        .post(
            "/v1/models/augur/demo-image/predictions",
            json!({"input": {"prompt": "x", "steps": 0}}),
        )
        .await;
    reply.assert_error(422, "invalid_input", "between 1 and");
    assert_eq!(reply.json()["field"], "input.steps");
    app.post(
        "/v1/models/augur/demo-image/predictions",
        json!({"input": {}}),
    )
    .await
    .assert_error(422, "invalid_input", "prompt");
    app.post(
        "/v1/models/augur/echo/predictions",
        json!({"input": "not an object"}),
    )
    .await
    .assert_error(422, "invalid_input", "object");
    app.post("/v1/models/augur/echo/predictions", json!({}))
        .await
        .assert_error(422, "invalid_input", "input is required");
    app.post(
        "/v1/models/augur/echo/predictions",
        json!({"input": {}, "webhook_events_filter": ["bogus"]}),
    )
    .await
    .assert_error(
        422,
        "invalid_request",
        "webhook_events_filter[0]: must be one of start, output, logs, completed, got bogus",
    );
    app.post(
        "/v1/models/augur/echo/predictions",
        json!({"input": {}, "webhook_events_filter": 5}),
    )
    .await
    .assert_error(422, "invalid_request", "webhook_events_filter");
    app.post(
        "/v1/models/augur/echo/predictions",
        json!({"input": {}, "webhook": "ftp://x"}),
    )
    .await
    .assert_error(
        422,
        "invalid_request",
        "webhook must be an absolute http or https URL",
    );
    app.post(
        "/v1/models/augur/echo/predictions",
        json!({"input": {}, "id": "Bad Id"}),
    )
    .await
    .assert_error(422, "invalid_request", "prediction id");
    app.post("/v1/models/augur/echo/predictions", json!([1, 2]))
        .await
        .assert_error(422, "invalid_request", "");

    // Not JSON at all.
    let reply = app
        .send(
            Request::post("/v1/models/augur/echo/predictions")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"input\": {"))
                .unwrap(),
        )
        .await;
    reply.assert_error(400, "invalid_json", "not valid JSON");
    // No content type.
    let reply = app
        .send(
            Request::post("/v1/models/augur/echo/predictions")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    reply.assert_error(415, "unsupported_media_type", "application/json");
    // Too big.
    let big = json!({"input": {"blob": "x".repeat(100 * 1024)}});
    app.post("/v1/models/augur/echo/predictions", big)
        .await
        .assert_error(413, "payload_too_large", "too large");
    // Bad headers.
    app.post_with(
        "/v1/models/augur/echo/predictions",
        json!({"input": {}}),
        &[("prefer", "wait=0")],
    )
    .await
    .assert_error(400, "invalid_header", "Prefer");
    app.post_with(
        "/v1/models/augur/echo/predictions",
        json!({"input": {}}),
        &[("cancel-after", "soon")],
    )
    .await
    .assert_error(400, "invalid_header", "Cancel-After");
    app.post_with(
        "/v1/models/augur/echo/predictions",
        json!({"input": {}}),
        &[("idempotency-key", "has space")],
    )
    .await
    .assert_error(400, "invalid_header", "Idempotency-Key");
    // Nothing was created by any of that.
    let list = app.get("/v1/predictions").await.json();
    assert_eq!(list["results"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn unknown_ids_routes_and_methods_are_json_errors() {
    let app = app();
    app.get("/v1/predictions/doesnotexist").await.assert_error(
        404,
        "prediction_not_found",
        "doesnotexist",
    );
    app.get("/v1/predictions/NOT%20VALID").await.assert_error(
        404,
        "prediction_not_found",
        "not found",
    );
    app.post("/v1/predictions/doesnotexist/cancel", json!({}))
        .await
        .assert_error(404, "prediction_not_found", "doesnotexist");
    app.get("/v1/predictions/%FF%FE")
        .await
        .assert_error(400, "invalid_path", "invalid path");
    app.get("/files/%FF")
        .await
        .assert_error(400, "invalid_path", "invalid path");
    app.send(
        Request::get("/v1/predictions/x/stream?token=a&token=b")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .assert_error(400, "invalid_query", "invalid query string");
    app.get("/v1/nothing-here")
        .await
        .assert_error(404, "route_not_found", "/v1/nothing-here");
    app.send(
        Request::delete("/v1/predictions")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .assert_error(405, "method_not_allowed", "DELETE");
    app.get("/v1/models/augur/echo/versions/0123")
        .await
        .assert_error(404, "version_not_found", "0123");
    app.get("/files/p1/0123456789abcdef0123456789abcdef/out.png")
        .await
        .assert_error(404, "file_not_found", "no such file");
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let app = app();
    for path in ["/v1/predictions", "/v1/models", "/api/predictions/x"] {
        let reply = app
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        reply.assert_error(401, "unauthenticated", "Authorization");
        let reply = app
            .send(
                Request::get(path)
                    .header(header::AUTHORIZATION, "Bearer wrong")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        reply.assert_error(401, "invalid_token", "not valid");
        let reply = app
            .send(
                Request::get(path)
                    .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        reply.assert_error(401, "unauthenticated", "Bearer");
    }
    // Operations endpoints are open.
    for path in ["/healthz", "/readyz", "/openapi.json", "/metrics"] {
        let reply = app
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn cancel_is_idempotent_and_refuses_finished_predictions() {
    let app = app_with_worker();
    let slow = app
        .post(
            "/v1/models/augur/demo-image/predictions",
            json!({"input": {"prompt": "x", "steps": 50, "step_ms": 100}}),
        )
        .await
        .json();
    let id = slow["id"].as_str().unwrap();
    let canceled = app
        .post(&format!("/v1/predictions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(canceled.status, StatusCode::OK);
    assert_eq!(canceled.json()["status"], "canceled");
    let again = app
        .post(&format!("/v1/predictions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["status"], "canceled");

    let done = app
        .post_with(
            "/v1/models/augur/echo/predictions",
            json!({"input": {"a": 1}}),
            &[("prefer", "wait")],
        )
        .await
        .json();
    assert_eq!(done["status"], "succeeded");
    let id = done["id"].as_str().unwrap();
    app.post(&format!("/v1/predictions/{id}/cancel"), json!({}))
        .await
        .assert_error(
            409,
            "invalid_transition",
            "invalid transition from succeeded to canceled",
        );
}

#[tokio::test]
async fn prefer_wait_returns_the_settled_prediction_or_starting() {
    let app = app_with_worker();
    let reply = app
        .post_with(
            "/v1/models/augur/echo/predictions",
            json!({"input": {"text": "hi"}}),
            &[("prefer", "wait=10")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.headers["preference-applied"], "wait");
    let p = reply.json();
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["output"], json!({"text": "hi"}));
    assert!(p["metrics"]["predict_time"].is_number());
    assert!(p["completed_at"].is_string());

    let reply = app
        .post_with(
            "/v1/models/augur/demo-image/predictions",
            json!({"input": {"prompt": "x", "steps": 30, "step_ms": 100, "width": 16, "height": 16}}),
            &[("prefer", "wait=1")],
        )
        .await;
    let p = reply.json();
    assert_eq!(
        p["status"], "starting",
        "a running prediction is reported as starting"
    );
    assert!(p["output"].is_null());
}

#[tokio::test]
async fn idempotency_keys_and_client_ids_replay_or_refuse() {
    let app = app();
    let key = [("idempotency-key", "order-42")];
    let first = app
        .post_with(
            "/v1/models/augur/echo/predictions",
            json!({"input": {"n": 1}}),
            &key,
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = app
        .post_with(
            "/v1/models/augur/echo/predictions",
            json!({"input": {"n": 1}}),
            &key,
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json()["id"], first.json()["id"]);
    let reply = app
        .post_with(
            "/v1/models/augur/echo/predictions",
            json!({"input": {"n": 2}}),
            &key,
        )
        .await;
    reply.assert_error(422, "idempotency_key_reused", "order-42");
    assert_eq!(reply.json()["field"], "Idempotency-Key");
    // Another webhook is another request too.
    app.post_with(
        "/v1/models/augur/echo/predictions",
        json!({"input": {"n": 1}, "webhook": "https://example.com/elsewhere"}),
        &key,
    )
    .await
    .assert_error(422, "idempotency_key_reused", "order-42");
    // And so is another event filter.
    app.post_with(
        "/v1/models/augur/echo/predictions",
        json!({"input": {"n": 1}, "webhook_events_filter": ["completed"]}),
        &key,
    )
    .await
    .assert_error(422, "idempotency_key_reused", "order-42");

    let mine = json!({"id": "my-own-id-1", "input": {"n": 1}});
    let created = app
        .post("/v1/models/augur/echo/predictions", mine.clone())
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["id"], "my-own-id-1");
    let replay = app.post("/v1/models/augur/echo/predictions", mine).await;
    assert_eq!(replay.status, StatusCode::OK);
    app.post(
        "/v1/models/augur/echo/predictions",
        json!({"id": "my-own-id-1", "input": {"n": 9}}),
    )
    .await
    .assert_error(409, "id_conflict", "my-own-id-1");
}

#[tokio::test]
async fn reads_of_different_predictions_get_their_own_bodies() {
    // Rendered JSON is cached by id and revision: two predictions at the same revision must
    // never share a body.
    let app = app();
    let a = app.create_echo(json!({"which": "a"})).await;
    let b = app.create_echo(json!({"which": "b"})).await;
    for _ in 0..2 {
        for (p, which) in [(&a, "a"), (&b, "b")] {
            let id = p["id"].as_str().unwrap();
            let got = app.get(&format!("/v1/predictions/{id}")).await.json();
            assert_eq!(
                (got["id"].as_str(), got["input"]["which"].as_str()),
                (Some(id), Some(which))
            );
            let seeds = app.get(&format!("/api/predictions/{id}")).await.json();
            assert_eq!(seeds["data"]["predictionId"], id);
        }
    }
}

#[tokio::test]
async fn list_pages_with_absolute_next_urls_and_filters() {
    let app = app();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            app.create_echo(json!({"i": i})).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut url = "/v1/predictions?limit=3".to_owned();
    loop {
        let page = app.get(&url).await;
        assert_eq!(page.status, StatusCode::OK);
        let page = page.json();
        // Only the first page has nothing before it.
        assert_eq!(page["previous"].is_null(), pages.is_empty(), "{page}");
        pages.push(page["results"].clone());
        for p in page["results"].as_array().unwrap() {
            seen.push(p["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with(&format!("{BASE}/v1/predictions?cursor=")),
                    "{next}"
                );
                assert!(next.contains("limit=3"));
                url = next.strip_prefix(BASE).unwrap().to_owned();
            }
            None => break,
        }
    }
    assert_eq!(seen, ids);
    // Back from the last page through `previous`: the same pages, with filters and limit.
    let mut back = Vec::new();
    loop {
        let page = app.get(&url).await.json();
        back.push(page["results"].clone());
        match page["previous"].as_str() {
            Some(previous) => {
                assert!(previous.contains("limit=3"), "{previous}");
                url = previous.strip_prefix(BASE).unwrap().to_owned();
            }
            None => break,
        }
        assert!(back.len() <= pages.len(), "previous does not end");
    }
    back.reverse();
    assert_eq!(back, pages);
    let starting = app.get("/v1/predictions?status=starting").await.json();
    assert_eq!(starting["results"].as_array().unwrap().len(), 7);
    let none = app.get("/v1/predictions?status=failed").await.json();
    assert_eq!(none["results"].as_array().unwrap().len(), 0);
    let future = app
        .get("/v1/predictions?created_after=2999-01-01T00:00:00Z")
        .await
        .json();
    assert_eq!(future["results"].as_array().unwrap().len(), 0);
    app.get("/v1/predictions?status=done").await.assert_error(
        400,
        "invalid_query",
        "status must be one of",
    );
    app.get("/v1/predictions?cursor=garbage")
        .await
        .assert_error(400, "invalid_cursor", "cursor");
    app.get("/v1/predictions?created_after=yesterday")
        .await
        .assert_error(400, "invalid_query", "RFC 3339");
    app.get("/v1/predictions?limit=0")
        .await
        .assert_error(400, "invalid_query", "limit");
    app.get("/v1/predictions?limit=x")
        .await
        .assert_error(400, "invalid_query", "limit");
}

/// A stored output keeps `/files/<key>`, not the public URL of the node that wrote it: the
/// same store and files served under another public URL show the output (REST, the seeds'
/// route, SSE) under the new one, and its bytes are there.
#[tokio::test]
async fn outputs_follow_the_current_public_url() {
    let store: augur_core::store::DynStore = Arc::new(MemoryStore::new());
    let files = OutputFiles::in_memory(BASE);
    let app = with_worker(app_on(state_on(BASE, store.clone(), files.clone())));
    let p = app
        .post_with(
            "/v1/models/augur/demo-image/predictions",
            json!({"input": {"prompt": "x", "steps": 1, "step_ms": 0, "width": 16, "height": 16}}),
            &[("prefer", "wait")],
        )
        .await
        .json();
    assert_eq!(p["status"], "succeeded", "{p}");
    let id = p["id"].as_str().unwrap();
    let shown = p["output"].as_str().unwrap();
    let key = shown
        .strip_prefix(&format!("{BASE}/files/"))
        .unwrap_or_else(|| panic!("{shown} is under {BASE}"));
    let stored = app
        .state
        .service
        .get(&augur_core::PredictionId::parse(id).unwrap())
        .await
        .unwrap();
    assert_eq!(
        stored.value.output,
        Some(json!(format!("/files/{key}"))),
        "the record keeps the reference"
    );

    let moved = "https://moved.example/augur";
    let other = app_on(state_on(moved, store, files));
    let again = other.get(&format!("/v1/predictions/{id}")).await.json();
    assert_eq!(again["output"], format!("{moved}/files/{key}"));
    let seeds = other.get(&format!("/api/predictions/{id}")).await.json();
    assert_eq!(seeds["data"]["imageUrl"], format!("{moved}/files/{key}"));
    let listed = other.get("/v1/predictions").await.json();
    assert_eq!(
        listed["results"][0]["output"],
        format!("{moved}/files/{key}")
    );
    let file = other.get_without_token(&format!("/files/{key}")).await;
    assert_eq!(file.status, StatusCode::OK);
    assert!(file.body.starts_with(b"\x89PNG"), "the bytes are served");
    let token = again["urls"]["stream"]
        .as_str()
        .unwrap()
        .split("token=")
        .nth(1)
        .unwrap()
        .to_owned();
    let stream = other
        .get_without_token(&format!("/v1/predictions/{id}/stream?token={token}"))
        .await;
    let text = String::from_utf8_lossy(&stream.body);
    assert!(
        text.contains("event: output\n") && text.contains(&format!("data: {moved}/files/{key}\n")),
        "{text}"
    );
    assert!(!text.contains(BASE), "{text}");
}

#[tokio::test]
async fn seeds_route_speaks_the_seeds_shape() {
    let app = app_with_worker();
    let p = app
        .post_with(
            "/v1/models/augur/demo-image/predictions",
            json!({"input": {"prompt": "x", "steps": 1, "step_ms": 0, "width": 16, "height": 16}}),
            &[("prefer", "wait")],
        )
        .await
        .json();
    assert_eq!(p["status"], "succeeded", "{p}");
    let id = p["id"].as_str().unwrap();
    let reply = app.get(&format!("/api/predictions/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["success"], true);
    let data = &body["data"];
    assert_eq!(data["predictionId"], id);
    assert_eq!(data["status"], "succeeded");
    assert_eq!(data["imageUrl"], p["output"]);
    assert!(data["createdAt"].as_i64().unwrap() > 1_600_000_000_000);
    assert!(data["updatedAt"].as_i64().unwrap() >= data["createdAt"].as_i64().unwrap());
    assert!(data["generationTime"].is_u64());

    // The output file is served without auth.
    let url = p["output"].as_str().unwrap();
    let path = url.strip_prefix(BASE).unwrap();
    let file = app
        .send(Request::get(path).body(Body::empty()).unwrap())
        .await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.headers[header::CONTENT_TYPE], "image/png");
    assert_eq!(&file.body[..8], b"\x89PNG\r\n\x1a\n");

    let missing = app.get("/api/predictions/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let body = missing.json();
    assert_eq!(body["success"], false);
    assert_eq!(body["errorCode"], "prediction_not_found");
    assert!(body["error"].as_str().unwrap().contains("not found"));
}

#[tokio::test]
async fn models_are_described_with_their_schema() {
    let app = app();
    let models = app.get("/v1/models").await.json();
    let names: Vec<_> = models["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["owner"].as_str().unwrap(),
                m["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, ["augur/demo-image", "augur/echo"]);
    // The price says what a prediction costs (the dashboard shows it); a free model's is null.
    assert_eq!(models["results"][0]["price"], json!({"per_prediction": 3}));
    assert_eq!(models["results"][1]["price"], Value::Null);
    let model = app.get("/v1/models/augur/demo-image").await.json();
    assert_eq!(model["price"], json!({"per_prediction": 3}));
    let version = &model["latest_version"];
    let schema = &version["openapi_schema"]["components"]["schemas"]["Input"];
    assert_eq!(schema["required"], json!(["prompt"]));
    assert_eq!(schema["properties"]["width"]["maximum"], 2048);
    let id = version["id"].as_str().unwrap();
    let fetched = app
        .get(&format!("/v1/models/augur/demo-image/versions/{id}"))
        .await
        .json();
    assert_eq!(&fetched, version);
    let versions = app.get("/v1/models/augur/demo-image/versions").await.json();
    assert_eq!(versions["results"][0]["id"], id);
}

#[tokio::test]
async fn stream_works_with_the_url_token_and_ends_with_done() {
    let app = app_with_worker();
    let p = app
        .post_with(
            "/v1/models/augur/echo/predictions",
            json!({"input": {"text": "x"}}),
            &[("prefer", "wait")],
        )
        .await
        .json();
    let stream_url = p["urls"]["stream"].as_str().unwrap();
    let path = stream_url.strip_prefix(BASE).unwrap();
    let reply = app
        .send(Request::get(path).body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "text/event-stream");
    let text = String::from_utf8(reply.body).unwrap();
    assert!(text.contains("event: output\n"), "{text}");
    assert!(text.contains(r#"data: {"text":"x"}"#), "{text}");
    assert!(
        text.trim_end().ends_with("event: done\ndata: {}") || text.contains("event: done\nid: "),
        "{text}"
    );
    assert!(text.contains("id: "), "every event has an id: {text}");

    // A wrong stream token, no credentials and an unknown id all get the same answer, so
    // the route does not tell which ids exist.
    let id = p["id"].as_str().unwrap();
    let mut bodies = Vec::new();
    for path in [
        format!("/v1/predictions/{id}/stream?token=wrong"),
        format!("/v1/predictions/{id}/stream"),
        "/v1/predictions/nosuchprediction/stream".to_owned(),
    ] {
        let reply = app
            .send(Request::get(&path).body(Body::empty()).unwrap())
            .await;
        reply.assert_error(404, "prediction_not_found", "not found");
        let mut body = reply.json();
        body["detail"] = Value::Null;
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    let authed = app.get(&format!("/v1/predictions/{id}/stream")).await;
    assert_eq!(authed.status, StatusCode::OK);
}

/// The document names every status the server answers with that schemathesis can reach with
/// any request (scripts/schemathesis.sh): a 401 on every operation behind the token, a 400
/// and a 415 on every operation with a JSON body, a 400 on every operation with a query.
#[tokio::test]
async fn openapi_document_names_the_generic_errors_of_every_operation() {
    let app = app();
    let spec = app.get("/openapi.json").await.json();
    let default_security = spec["security"].as_array().unwrap().clone();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let security = op["security"].as_array().unwrap_or(&default_security);
            let needs_token = !security.is_empty()
                && security
                    .iter()
                    .all(|req| !req.as_object().unwrap().is_empty());
            if needs_token {
                assert!(
                    responses.contains_key("401"),
                    "{method} {path} lacks its 401"
                );
            }
            if op["requestBody"]["content"]["application/json"].is_object() {
                for code in ["400", "415"] {
                    assert!(
                        responses.contains_key(code),
                        "{method} {path} lacks its {code}"
                    );
                }
            }
            let has_query = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            if has_query {
                assert!(
                    responses.contains_key("400"),
                    "{method} {path} lacks its 400"
                );
            }
            if let Some(limit) = op["parameters"].as_array().and_then(|ps| {
                ps.iter()
                    .find(|p| p["in"] == "query" && p["name"] == "limit")
            }) {
                assert_eq!(limit["schema"]["minimum"], 1, "{method} {path} limit");
                assert_eq!(limit["schema"]["maximum"], 1000, "{method} {path} limit");
            }
        }
    }
}

/// A method `/v1/models` does not take is a 405 that names the ones it does (RFC 9110), as
/// every other route's is (schemathesis' `unsupported_method` check).
#[tokio::test]
async fn models_root_names_its_methods_in_a_405() {
    let app = app();
    let reply = app
        .send(
            Request::builder()
                .method("TRACE")
                .uri("/v1/models")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers["allow"], "GET,HEAD,QUERY");
    assert_eq!(reply.json()["code"], "method_not_allowed");
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let app = app();
    let spec = app.get("/openapi.json").await.json();
    assert_eq!(spec["openapi"], "3.2.0");
    let paths = spec["paths"].as_object().unwrap();
    for path in [
        "/v1/predictions",
        "/v1/predictions/{id}",
        "/v1/predictions/{id}/cancel",
        "/v1/predictions/{id}/stream",
        "/v1/predictions/{id}/webhooks",
        "/v1/events",
        "/v1/webhooks/default/secret",
        "/v1/webhooks/default/secret/rotate",
        "/v1/account",
        "/v1/accounts",
        "/v1/accounts/{username}/tokens",
        "/v1/accounts/{username}/credits",
        "/v1/account/tokens/{id}",
        "/v1/account/credits",
        "/v1/account/ledger",
        "/v1/admin/status",
        "/v1/payments/webhook",
        "/v1/files",
        "/v1/files/{id}",
        "/v1/files/{id}/download",
        "/v1/batches",
        "/v1/batches/{id}",
        "/v1/batches/{id}/predictions",
        "/v1/batches/{id}/cancel",
        "/v1/batches/{id}/stream",
        "/v1/workflows",
        "/v1/workflows/{owner}/{name}",
        "/v1/workflows/{owner}/{name}/runs",
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/cancel",
        "/v1/runs/{id}/reconcile",
        "/v1/runs/{id}/stream",
        "/v1/models/{owner}/{name}/predictions",
        "/v1/models/{owner}/{name}",
        "/api/predictions/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    // Every documented path is routed (a concrete request does not hit the fallback).
    for path in paths.keys() {
        if path == "/v1/events" {
            // An endless event stream; routed, as the streaming test shows.
            continue;
        }
        let concrete = path
            .replace("{owner}/{name}", "augur/echo")
            .replace("{id}", "x")
            .replace("{version}", "x")
            .replace("{slug}", "x")
            .replace("{key}", "x");
        let reply = app.get(&concrete).await;
        if reply.status == StatusCode::NOT_FOUND || reply.status == StatusCode::METHOD_NOT_ALLOWED {
            assert_ne!(
                reply.json()["code"],
                "route_not_found",
                "{concrete} is not routed"
            );
        }
    }
}

#[tokio::test]
async fn metrics_report_requests_queue_depth_and_counters() {
    let app = app();
    app.create_echo(json!({})).await;
    let reply = app
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8(reply.body).unwrap();
    assert!(
        text.contains("augur_http_request_duration_seconds_count"),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/v1/models/{owner}/{name}/predictions""#),
        "{text}"
    );
    assert!(
        text.contains(r#"augur_queue_jobs{state="ready"}"#),
        "{text}"
    );
    assert!(text.contains("augur_predictions_created_total"), "{text}");
    assert!(text.contains("augur_store_operation_duration_seconds") || !text.is_empty());
}

#[tokio::test]
async fn readyz_reports_the_store() {
    let app = app();
    let reply = app
        .send(Request::get("/readyz").body(Body::empty()).unwrap())
        .await;
    let body = reply.json();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["store"], "memory");
}

impl App {
    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(b) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    /// Creates an account with the admin token and returns a token of its own.
    async fn account(&self, username: &str) -> String {
        let created = self
            .call(
                "POST",
                "/v1/accounts",
                TOKEN,
                Some(json!({"username": username, "name": username.to_uppercase()})),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.json());
        let token = self
            .call(
                "POST",
                &format!("/v1/accounts/{username}/tokens"),
                TOKEN,
                Some(json!({"name": "test"})),
            )
            .await;
        assert_eq!(token.status, StatusCode::CREATED, "{}", token.json());
        token.json()["token"].as_str().unwrap().to_owned()
    }

    async fn create_as(&self, token: &str, model: &str) -> Reply {
        self.call(
            "POST",
            &format!("/v1/models/{model}/predictions"),
            token,
            Some(if model == "augur/echo" {
                json!({"input": {"text": "hi"}})
            } else {
                json!({"input": {"prompt": "p", "width": 8, "height": 8, "steps": 1, "step_ms": 1}})
            }),
        )
        .await
    }
}

#[tokio::test]
async fn accounts_see_only_their_own_predictions_and_the_admin_sees_all() {
    let app = app();
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    let a = app.create_as(&alice, "augur/echo").await.json();
    let id = a["id"].as_str().unwrap();
    app.create_as(&bob, "augur/echo").await;

    for (method, path) in [
        ("GET", format!("/v1/predictions/{id}")),
        ("POST", format!("/v1/predictions/{id}/cancel")),
        ("GET", format!("/v1/predictions/{id}/webhooks")),
        ("GET", format!("/v1/predictions/{id}/stream")),
    ] {
        let theirs = app.call(method, &path, &bob, None).await;
        let missing = app
            .call(method, &path.replace(id, "nosuchprediction"), &bob, None)
            .await;
        theirs.assert_error(404, "prediction_not_found", "not found");
        assert_eq!(theirs.status, missing.status, "{path}");
        assert_eq!(theirs.json()["code"], missing.json()["code"], "{path}");
    }
    let seed = app
        .call("GET", &format!("/api/predictions/{id}"), &bob, None)
        .await;
    assert_eq!(seed.status, StatusCode::NOT_FOUND);
    assert_eq!(seed.json()["success"], false);

    let listed = |reply: Reply| -> Vec<String> {
        reply.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let bobs = listed(app.call("GET", "/v1/predictions", &bob, None).await);
    assert_eq!(bobs.len(), 1);
    assert!(!bobs.contains(&id.to_owned()));
    let alices = listed(app.call("GET", "/v1/predictions", &alice, None).await);
    assert_eq!(alices, vec![id.to_owned()]);
    let all = listed(app.call("GET", "/v1/predictions", TOKEN, None).await);
    assert_eq!(all.len(), 2);
    // Alice still reads and cancels her own.
    assert_eq!(
        app.call("GET", &format!("/v1/predictions/{id}"), &alice, None)
            .await
            .status,
        StatusCode::OK
    );
    let canceled = app
        .call(
            "POST",
            &format!("/v1/predictions/{id}/cancel"),
            &alice,
            None,
        )
        .await;
    assert_eq!(canceled.json()["status"], "canceled");
}

#[tokio::test]
async fn account_routes_answer_replicates_shape_and_refuse_non_admins() {
    let app = app();
    let alice = app.account("alice").await;
    let me = app.call("GET", "/v1/account", &alice, None).await.json();
    assert_eq!(
        (&me["type"], &me["username"], &me["name"]),
        (&json!("user"), &json!("alice"), &json!("ALICE"))
    );
    assert!(me.as_object().unwrap().contains_key("github_url"));
    app.call(
        "POST",
        "/v1/accounts",
        &alice,
        Some(json!({"username": "x"})),
    )
    .await
    .assert_error(403, "admin_required", "admin token");
    app.call("GET", "/v1/accounts", &alice, None)
        .await
        .assert_error(403, "admin_required", "admin token");
    app.call("GET", "/v1/accounts/bob", &alice, None)
        .await
        .assert_error(404, "account_not_found", "bob");
    app.call(
        "POST",
        "/v1/accounts",
        TOKEN,
        Some(json!({"username": "alice"})),
    )
    .await
    .assert_error(409, "account_exists", "alice");
    app.call(
        "POST",
        "/v1/accounts",
        TOKEN,
        Some(json!({"username": "Not Valid"})),
    )
    .await
    .assert_error(422, "invalid_request", "account id");
    let listed = app.call("GET", "/v1/accounts", TOKEN, None).await.json();
    assert_eq!(listed["results"][0]["username"], "alice");
}

/// `GET /v1/admin/status` counts each model's queued and running predictions over every
/// account, shows the store and the queue's lanes, and is the admin's alone.
#[tokio::test]
async fn admin_status_counts_models_queues_and_refuses_non_admins() {
    use augur_core::{Event, PredictionId};
    let app = app();
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    let first = app.create_as(&alice, "augur/echo").await.json();
    app.create_as(&alice, "augur/echo").await;
    app.create_as(&bob, "augur/echo").await;
    let drawn = app.create_as(&bob, "augur/demo-image").await;
    assert_eq!(drawn.status, StatusCode::CREATED, "{}", drawn.json());
    let id = PredictionId::parse(first["id"].as_str().unwrap()).unwrap();
    app.state
        .service
        .transition(&id, &Event::processing())
        .await
        .unwrap();

    let status = app.get("/v1/admin/status").await;
    assert_eq!(status.status, StatusCode::OK);
    let status = status.json();
    assert_eq!(status["store"]["backend"], "memory", "{status}");
    assert_eq!(status["store"]["status"], "ok", "{status}");
    assert!(status["store"]["probe_ms"].as_f64().unwrap() >= 0.0);
    let model = |name: &str| -> Value {
        status["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {status}"))
            .clone()
    };
    let echo = model("augur/echo");
    assert_eq!((&echo["queued"], &echo["running"]), (&json!(2), &json!(1)));
    assert!(echo["concurrency"].is_null(), "{echo}");
    let image = model("augur/demo-image");
    assert_eq!(
        (&image["queued"], &image["running"]),
        (&json!(1), &json!(0))
    );
    let jobs = &status["queue"]["jobs"];
    assert_eq!(jobs["total"], 4, "{status}");
    assert_eq!(status["webhook_backlog"], 0, "{status}");
    assert_eq!(
        status["counters"]["predictions_created_total"], 4,
        "{status}"
    );
    assert_eq!(status["counted"]["queued_truncated"], false);
    // Per-account counters stay out of the operator's totals.
    assert!(
        status["counters"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.contains('@')),
        "{status}"
    );

    app.call("GET", "/v1/admin/status", &alice, None)
        .await
        .assert_error(403, "admin_required", "admin token");
    let anonymous = app.get_without_token("/v1/admin/status").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_are_shown_once_listed_without_secrets_and_revoked() {
    let app = app();
    let alice = app.account("alice").await;
    assert!(alice.starts_with("aug_"));
    let second = app
        .call(
            "POST",
            "/v1/account/tokens",
            &alice,
            Some(json!({"name": "ci"})),
        )
        .await
        .json();
    let second_token = second["token"].as_str().unwrap().to_owned();
    let listed = app.call("GET", "/v1/account/tokens", &alice, None).await;
    let text = String::from_utf8(listed.body.clone()).unwrap();
    assert!(!text.contains(&second_token) && !text.contains(&alice));
    assert_eq!(listed.json()["results"].as_array().unwrap().len(), 2);
    let id = second["id"].as_str().unwrap();
    let revoked = app
        .call("DELETE", &format!("/v1/account/tokens/{id}"), &alice, None)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    app.call("GET", "/v1/account", &second_token, None)
        .await
        .assert_error(401, "invalid_token", "not valid");
    app.call("DELETE", &format!("/v1/account/tokens/{id}"), &alice, None)
        .await
        .assert_error(404, "token_not_found", id);
    // A token that differs in its last character is refused.
    let mut forged = alice.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'a' { 'b' } else { 'a' });
    app.call("GET", "/v1/account", &forged, None)
        .await
        .assert_error(401, "invalid_token", "not valid");
}

#[tokio::test]
async fn priced_predictions_reserve_charge_and_refuse_with_402() {
    let app = app_with_worker();
    let alice = app.account("alice").await;
    let credits = app.call("GET", "/v1/account/credits", &alice, None).await;
    assert_eq!(
        credits.json(),
        json!({"balance": 10, "reserved": 0, "available": 10})
    );
    // demo-image costs 3: three fit in 10, the fourth does not while they hold credits.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let reply = app.create_as(&alice, "augur/demo-image").await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json());
        ids.push(reply.json()["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.state
            .service
            .wait_until_settled(
                &augur_core::PredictionId::parse(id).unwrap(),
                Duration::from_secs(20),
            )
            .await
            .unwrap();
    }
    let after = app
        .call("GET", "/v1/account/credits", &alice, None)
        .await
        .json();
    assert_eq!(after, json!({"balance": 1, "reserved": 0, "available": 1}));
    let refused = app.create_as(&alice, "augur/demo-image").await;
    refused.assert_error(402, "insufficient_credits", "costs 3 credits");
    let body = refused.json();
    assert_eq!(
        (&body["price"], &body["available"], &body["model"]),
        (&json!(3), &json!(1), &json!("augur/demo-image"))
    );
    let listed = app
        .call("GET", "/v1/predictions", &alice, None)
        .await
        .json();
    assert_eq!(
        listed["results"].as_array().unwrap().len(),
        3,
        "nothing created"
    );
    // Free models still run.
    assert_eq!(
        app.create_as(&alice, "augur/echo").await.status,
        StatusCode::CREATED
    );

    // The ledger, newest first, with running balances, in pages.
    let page = app
        .call("GET", "/v1/account/ledger?limit=4", &alice, None)
        .await
        .json();
    let results = page["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["balance_after"], 1);
    let next = page["next"].as_str().unwrap().strip_prefix(BASE).unwrap();
    let rest = app.call("GET", next, &alice, None).await.json();
    let total = results.len() + rest["results"].as_array().unwrap().len();
    assert_eq!(total, 7, "grant + 3 reserves + 3 charges");
    let reasons: Vec<_> = rest["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.last(), Some(&"grant"));

    // The admin grants, and sees the same ledger.
    let granted = app
        .call(
            "POST",
            "/v1/accounts/alice/credits",
            TOKEN,
            Some(json!({"amount": 5, "memo": "welcome back"})),
        )
        .await;
    assert_eq!(granted.json()["balance"], 6, "{}", granted.json());
    app.call(
        "POST",
        "/v1/accounts/alice/credits",
        TOKEN,
        Some(json!({"amount": -100, "reason": "adjust"})),
    )
    .await
    .assert_error(402, "insufficient_credits", "100");
    // Amounts past the bound of one change, to i64's ends, are refused, never a 500, and so is
    // a body that is a list (schemathesis sent each).
    for amount in [
        json!(i64::MIN),
        json!(i64::MAX),
        json!(1_000_000_000_000_001_i64),
    ] {
        app.call(
            "POST",
            "/v1/accounts/alice/credits",
            TOKEN,
            Some(json!({"amount": amount, "reason": "adjust"})),
        )
        .await
        .assert_error(422, "invalid_request", "amount must be between");
    }
    app.call(
        "POST",
        "/v1/accounts/alice/credits",
        TOKEN,
        Some(json!([5, "grant"])),
    )
    .await
    .assert_error(422, "invalid_request", "object");
    app.call(
        "POST",
        "/v1/accounts/alice/credits",
        &alice,
        Some(json!({"amount": 5})),
    )
    .await
    .assert_error(403, "admin_required", "admin");
    let admin_view = app
        .call("GET", "/v1/accounts/alice/ledger", TOKEN, None)
        .await
        .json();
    assert_eq!(admin_view["results"][0]["memo"], "welcome back");
}

#[tokio::test]
async fn limits_answer_429_with_retry_after() {
    let app = app();
    let alice = app.account("alice").await;
    let set = app
        .call(
            "PATCH",
            "/v1/accounts/alice",
            TOKEN,
            Some(json!({"limits": {"max_active": 2}})),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.json());
    // No worker: predictions stay unsettled.
    for _ in 0..2 {
        assert_eq!(
            app.create_as(&alice, "augur/echo").await.status,
            StatusCode::CREATED
        );
    }
    let refused = app.create_as(&alice, "augur/echo").await;
    refused.assert_error(429, "rate_limited", "limit");
    assert!(refused.headers.contains_key(header::RETRY_AFTER));

    let bob = app.account("bob").await;
    app.call(
        "PATCH",
        "/v1/accounts/bob",
        TOKEN,
        Some(json!({"limits": {"creates_per_minute": 2}})),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            app.create_as(&bob, "augur/echo").await.status,
            StatusCode::CREATED
        );
    }
    let throttled = app.create_as(&bob, "augur/echo").await;
    throttled.assert_error(429, "rate_limited", "a minute");
    let after: u64 = throttled.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&after), "{after}");
}

#[tokio::test]
async fn webhook_secrets_are_per_account_and_rotate() {
    let app = app();
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    let key = |reply: Reply| reply.json()["key"].as_str().unwrap().to_owned();
    let a = key(app
        .call("GET", "/v1/webhooks/default/secret", &alice, None)
        .await);
    let b = key(app
        .call("GET", "/v1/webhooks/default/secret", &bob, None)
        .await);
    let admin = key(app
        .call("GET", "/v1/webhooks/default/secret", TOKEN, None)
        .await);
    assert!(a.starts_with("whsec_") && a != b && a != admin && b != admin);
    let rotated = app
        .call("POST", "/v1/webhooks/default/secret/rotate", &alice, None)
        .await
        .json();
    assert_ne!(rotated["key"], a);
    assert!(rotated["retiring_until"].is_string());
    assert_eq!(
        key(app
            .call("GET", "/v1/webhooks/default/secret", &alice, None)
            .await),
        rotated["key"].as_str().unwrap()
    );
}

/// A body with a multipart `content` field holding `bytes`.
fn multipart(bytes: &[u8], extra: &str) -> (String, Vec<u8>) {
    let boundary = "b0undary";
    let mut body = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"content\"; filename=\"page.html\"\r\ncontent-type: text/html\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n{extra}--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn files_need_a_token_and_html_is_served_as_an_attachment() {
    let app = app();
    let (content_type, body) = multipart(b"<script>alert(1)</script>", "");
    let upload = |token: Option<&str>| {
        let mut request = Request::post("/v1/files").header(header::CONTENT_TYPE, &content_type);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::from(body.clone())).unwrap()
    };
    app.send(upload(None))
        .await
        .assert_error(401, "unauthenticated", "Authorization");
    app.get_without_token("/v1/files")
        .await
        .assert_error(401, "unauthenticated", "Authorization");
    let created = app.send(upload(Some(TOKEN))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let file = created.json();
    assert_eq!(file["content_type"], "text/html");
    assert_eq!(file["size"], 25);
    let download = file["urls"]["download"].as_str().unwrap();
    let served = app
        .get_without_token(download.strip_prefix(BASE).unwrap())
        .await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    // The signed URL's query is closed: a stray key is named, not ignored (schemathesis
    // sent `expiry[x]=false` beside a token and was served the bytes).
    let file_id = file["id"].as_str().unwrap();
    app.get(&format!("/v1/files/{file_id}/download?expiry%5Bx%5D=false"))
        .await
        .assert_error(400, "invalid_query", "expiry[x]");
    assert!(
        served.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment"),
        "{:?}",
        served.headers
    );
    let listed = app.get("/v1/files").await.json();
    assert_eq!(listed["results"][0]["id"], file["id"]);

    let not_multipart = Request::post("/v1/files")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    app.send(not_multipart).await.assert_error(
        415,
        "unsupported_media_type",
        "multipart/form-data",
    );
    let missing = app.get("/v1/files/0123456789abcdefghijklmnop").await;
    missing.assert_error(404, "file_not_found", "not found");

    // Metadata is a JSON object: `null` (schemathesis's multipart text for a null), a list or
    // a number is refused naming the field, and nothing is stored.
    for value in ["null", "[1]", "7", "\"text\""] {
        let field = format!(
            "--b0undary\r\ncontent-disposition: form-data; name=\"metadata\"\r\n\r\n{value}\r\n"
        );
        let (content_type, body) = multipart(b"hello", &field);
        let request = Request::post("/v1/files")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let reply = app.send(request).await;
        assert_eq!(
            reply.json()["field"],
            "metadata",
            "{value}: {}",
            reply.json()
        );
        reply.assert_error(422, "invalid_request", "JSON object");
    }

    // A small field sent twice is refused, not settled by whichever came last.
    for name in ["filename", "type", "metadata"] {
        let value = if name == "metadata" {
            "{}"
        } else {
            "text/plain"
        };
        let field = format!(
            "--b0undary\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        );
        let (content_type, body) = multipart(b"hello", &field.repeat(2));
        let twice = Request::post("/v1/files")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let reply = app.send(twice).await;
        assert_eq!(reply.json()["field"], name, "{}", reply.json());
        reply.assert_error(reply.status.as_u16(), "invalid_request", "more than once");
        assert!(reply.status.is_client_error());
    }
}

/// A batch request that is wrong in any way is refused with a 422 (or 404 for a model that
/// does not exist) naming the problem, before anything is written.
#[tokio::test]
async fn batch_requests_are_validated_before_anything_is_written() {
    let app = app();
    let cases = [
        (json!({"inputs": [{"text": "a"}]}), "model"),
        (
            json!({"model": "augur/echo", "version": "x", "inputs": [{}]}),
            "model",
        ),
        (json!({"model": "augur/echo"}), "inputs"),
        (json!({"model": "augur/echo", "inputs": []}), "inputs"),
        (
            json!({"model": "augur/echo", "inputs": [{}], "files": ["x"]}),
            "files",
        ),
        (
            json!({"model": "augur/echo", "files": ["not a file id"]}),
            "files[0]",
        ),
        (
            json!({"model": "augur/echo", "input": [1], "files": []}),
            "input",
        ),
        (
            json!({"model": "augur/demo-image", "inputs": [{"prompt": "a"}, {"prompt": "b", "steps": "many"}]}),
            "inputs[1].steps",
        ),
        (
            json!({"model": "augur/echo", "inputs": [{}], "webhook": "ftp://x"}),
            "webhook",
        ),
    ];
    for (body, field) in cases {
        let reply = app.post("/v1/batches", body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.json()
        );
        assert_eq!(reply.json()["field"], field, "{body}: {}", reply.json());
    }
    let too_many: Vec<Value> = (0..1001).map(|_| json!({})).collect();
    let reply = app
        .post(
            "/v1/batches",
            json!({"model": "augur/echo", "inputs": too_many}),
        )
        .await;
    reply.assert_error(422, "invalid_request", "1 to 1000 items");
    assert_eq!(reply.json()["max_items"], 1000);
    let reply = app
        .post(
            "/v1/batches",
            json!({"model": "augur/nope", "inputs": [{}]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = app
        .post(
            "/v1/batches",
            json!({"model": "augur/echo", "inputs": [{}], "extra": 1}),
        )
        .await;
    assert_eq!(reply.status.as_u16() / 100, 4, "{}", reply.json());
    // Nothing was written.
    assert_eq!(app.get("/v1/batches").await.json()["results"], json!([]));
    assert_eq!(
        app.get("/v1/predictions").await.json()["results"],
        json!([])
    );
}

/// Batches are their account's: another account's batch, its items, its stream and its
/// cancel are 404s like a missing one; the admin sees every account's batch.
#[tokio::test]
async fn a_batch_is_its_accounts_alone() {
    let app = app();
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    let created = app
        .call(
            "POST",
            "/v1/batches",
            &alice,
            Some(json!({"model": "augur/echo", "inputs": [{"text": "a"}, {"text": "b"}]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json());
    let batch = created.json();
    assert_eq!(batch["status"], "starting");
    assert_eq!(batch["counts"]["starting"], 2);
    let id = batch["id"].as_str().unwrap();
    for (method, path) in [
        ("GET", format!("/v1/batches/{id}")),
        ("GET", format!("/v1/batches/{id}/predictions")),
        ("GET", format!("/v1/batches/{id}/stream")),
        ("POST", format!("/v1/batches/{id}/cancel")),
    ] {
        let reply = app.call(method, &path, &bob, None).await;
        reply.assert_error(404, "batch_not_found", id);
        let missing = path.replace(id, "01m96st33z4wag1yer7xrfe00k");
        let reply = app.call(method, &missing, &bob, None).await;
        reply.assert_error(404, "batch_not_found", "01m96st33z4wag1yer7xrfe00k");
    }
    assert_eq!(
        app.call("GET", "/v1/batches", &bob, None).await.json()["results"],
        json!([])
    );
    let mine = app
        .call(
            "GET",
            &format!("/v1/batches/{id}/predictions"),
            &alice,
            None,
        )
        .await
        .json();
    assert_eq!(mine["results"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.get(&format!("/v1/batches/{id}")).await.status,
        StatusCode::OK
    );
    // Alice cancels: both items (never started) are canceled and the batch with them.
    let canceled = app
        .call("POST", &format!("/v1/batches/{id}/cancel"), &alice, None)
        .await
        .json();
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert_eq!(canceled["counts"]["canceled"], 2);
    // Canceling again changes nothing.
    let again = app
        .call("POST", &format!("/v1/batches/{id}/cancel"), &alice, None)
        .await
        .json();
    assert_eq!(again, canceled);
}

/// Once a prediction's logs pass the 1 MiB window, each further line is streamed (and kept in
/// the event log) as that line alone, not as the whole window again.
#[tokio::test]
async fn log_lines_past_the_window_stream_only_what_is_new() {
    use augur_core::{Event, Logs, PredictionId};
    let app = app();
    let p = app.create_echo(json!({"text": "x"})).await;
    let id = PredictionId::parse(p["id"].as_str().unwrap()).unwrap();
    let service = &app.state.service;
    let line = format!("{}\n", "y".repeat(99));
    let big = line.repeat(augur_core::prediction::MAX_LOGS_BYTES / line.len() + 1_000);
    service
        .transition(&id, &Event::processing().with_logs(Logs::Append(big)))
        .await
        .unwrap();
    let log_bytes = |events: &[augur_core::store::StreamEvent]| -> usize {
        events.iter().map(|e| e.event.data.len()).sum()
    };
    let before = log_bytes(&service.read_events(&id, None, 10_000).await.unwrap());
    for i in 0..20 {
        service
            .transition(
                &id,
                &Event::processing().with_logs(Logs::Append(format!("line {i}\n"))),
            )
            .await
            .unwrap();
    }
    service
        .transition(&id, &Event::succeeded(json!("ok")))
        .await
        .unwrap();
    let events = service.read_events(&id, None, 10_000).await.unwrap();
    let grown = log_bytes(&events) - before;
    assert!(
        grown < 1_000,
        "the event log grew by {grown} bytes for 20 lines"
    );

    let token = p["urls"]["stream"].as_str().unwrap();
    let path = token.strip_prefix(BASE).unwrap();
    let reply = app
        .send(Request::get(path).body(Body::empty()).unwrap())
        .await;
    let text = String::from_utf8(reply.body).unwrap();
    let logs: Vec<&str> = text
        .split("\n\n")
        .filter(|e| e.starts_with("event: logs\n"))
        .collect();
    assert_eq!(logs.len(), 21, "the window, then one event per line");
    for (i, event) in logs[1..].iter().enumerate() {
        assert!(event.ends_with(&format!("data: line {i}")), "{event:?}");
        assert!(
            event.len() < 100,
            "a {}-byte event for one line",
            event.len()
        );
    }
    // The record still holds the last 1 MiB, ending with the new lines.
    let got = app.get(&format!("/v1/predictions/{id}")).await.json();
    let logs = got["logs"].as_str().unwrap();
    assert_eq!(logs.len(), augur_core::prediction::MAX_LOGS_BYTES);
    assert!(logs.ends_with("line 18\nline 19\n"));
}

/// A list page ends at its byte budget however high its `limit`, `next` continues right
/// after the last item shown, and items leave out `logs` (as Replicate's do).
#[tokio::test]
async fn list_pages_end_at_their_byte_budget() {
    let store: augur_core::store::DynStore = Arc::new(MemoryStore::new());
    let app = app_on(state_with(
        BASE,
        store,
        OutputFiles::in_memory(BASE),
        |config| config.list_page_bytes = 8 * 1024,
    ));
    let mut ids = Vec::new();
    for i in 0..12 {
        let p = app
            .create_echo(json!({"i": i, "text": "x".repeat(2_000)}))
            .await;
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let (mut seen, mut sizes) = (Vec::new(), Vec::new());
    let mut url = "/v1/predictions?limit=100".to_owned();
    loop {
        let reply = app.get(&url).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.body.len() < 8 * 1024 + 3_000,
            "{} bytes",
            reply.body.len()
        );
        let page = reply.json();
        let results = page["results"].as_array().unwrap();
        sizes.push(results.len());
        for p in results {
            assert!(p.get("logs").is_none(), "{p}");
            assert_eq!(p["input"]["text"].as_str().unwrap().len(), 2_000);
            seen.push(p["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => {
                assert!(next.contains("limit=100"), "{next}");
                url = next.strip_prefix(BASE).unwrap().to_owned();
            }
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
    // A read of the prediction still has its logs.
    let p = app.get(&format!("/v1/predictions/{}", ids[0])).await.json();
    assert_eq!(p["logs"], "");
}

#[tokio::test]
async fn list_filters_by_model_and_by_account_for_the_admin() {
    let app = app();
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    let id = |reply: Reply| reply.json()["id"].as_str().unwrap().to_owned();
    let a1 = id(app.create_as(&alice, "augur/echo").await);
    let b1 = id(app.create_as(&bob, "augur/echo").await);
    let d1 = app
        .post(
            "/v1/models/augur/demo-image/predictions",
            json!({"input": {"prompt": "p", "width": 8, "height": 8, "steps": 1, "step_ms": 1}}),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ids = |page: Value| -> Vec<String> {
        page["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let demo = app.get("/v1/predictions?model=augur/demo-image").await;
    assert_eq!(ids(demo.json()), [d1.as_str()]);
    let echo = app.get("/v1/predictions?model=augur/echo").await.json();
    assert_eq!(ids(echo), [b1.as_str(), a1.as_str()]);
    // The admin lists one account's; every item names its account.
    let of_alice = app.get("/v1/predictions?account=alice").await.json();
    assert_eq!(of_alice["results"][0]["account"], "alice");
    assert_eq!(ids(of_alice), [a1.as_str()]);
    let both = app
        .get("/v1/predictions?account=bob&model=augur/echo&limit=1")
        .await
        .json();
    assert_eq!(ids(both), [b1.as_str()]);
    // An account may name itself, not another.
    let own = app
        .call("GET", "/v1/predictions?account=alice", &alice, None)
        .await;
    assert_eq!(ids(own.json()), [a1.as_str()]);
    app.call("GET", "/v1/predictions?account=alice", &bob, None)
        .await
        .assert_error(403, "admin_required", "account=");
    app.get("/v1/predictions?model=not-a-model")
        .await
        .assert_error(400, "invalid_query", "model must be a model name");
    app.get("/v1/predictions?account=Not%20Valid")
        .await
        .assert_error(400, "invalid_query", "account must be a username");
    assert!(d1.len() > 10);
}

#[tokio::test]
async fn a_model_filter_scans_a_bounded_number_of_records_per_page_and_continues() {
    let app = app();
    let demo = app
        .post(
            "/v1/models/augur/demo-image/predictions",
            json!({"input": {"prompt": "p", "width": 8, "height": 8, "steps": 1, "step_ms": 1}}),
        )
        .await
        .json();
    // More newer records than one page may scan, none of them the model's.
    for i in 0..2100 {
        app.create_echo(json!({"i": i})).await;
    }
    let first = app
        .get("/v1/predictions?model=augur/demo-image&limit=5")
        .await
        .json();
    assert_eq!(first["results"], json!([]), "the scan stops at its budget");
    let next = first["next"]
        .as_str()
        .expect("a next link continues the scan");
    assert!(next.contains("model=augur%2Fdemo-image"), "{next}");
    let second = app.get(next.strip_prefix(BASE).unwrap()).await.json();
    assert_eq!(second["results"][0]["id"], demo["id"]);
    assert_eq!(second["results"].as_array().unwrap().len(), 1);
    assert!(second["next"].is_null(), "{second}");
}

#[tokio::test]
async fn a_priced_prediction_shows_its_cost_reserved_then_charged() {
    let app = app_with_worker();
    let alice = app.account("alice").await;
    let grant = app
        .call(
            "POST",
            "/v1/accounts/alice/credits",
            TOKEN,
            Some(json!({"amount": 10, "reason": "grant"})),
        )
        .await;
    assert_eq!(grant.status, StatusCode::OK, "{}", grant.json());
    let created = app.create_as(&alice, "augur/demo-image").await.json();
    assert_eq!(created["account"], "alice");
    assert_eq!(
        created["cost"],
        json!({"price": {"per_prediction": 3}, "reserved": 3})
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let mut settled = Value::Null;
    for _ in 0..200 {
        settled = app
            .call("GET", &format!("/v1/predictions/{id}"), &alice, None)
            .await
            .json();
        if settled["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(settled["status"], "succeeded", "{settled}");
    assert_eq!(settled["cost"]["charged"], 3, "{settled}");
    // Free predictions (the admin's) carry no cost.
    assert!(
        app.create_echo(json!({"text": "x"}))
            .await
            .get("cost")
            .is_none()
    );
}

/// An app whose list pages end at 1 KiB.
fn small_pages_app() -> App {
    let store: augur_core::store::DynStore = Arc::new(MemoryStore::new());
    app_on(state_with(
        BASE,
        store,
        OutputFiles::in_memory(BASE),
        |config| config.list_page_bytes = 1024,
    ))
}

/// Follows a list's `next` links from `url` to the end: every item's `field`, and each page's
/// length.
async fn walk_pages(app: &App, url: &str, field: &str) -> (Vec<String>, Vec<usize>) {
    let (mut seen, mut sizes) = (Vec::new(), Vec::new());
    let mut url = url.to_owned();
    loop {
        let reply = app.get(&url).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json());
        let page = reply.json();
        let results = page["results"].as_array().unwrap();
        sizes.push(results.len());
        seen.extend(
            results
                .iter()
                .map(|item| item[field].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => url = next.strip_prefix(BASE).unwrap().to_owned(),
            None => return (seen, sizes),
        }
    }
}

/// The batch list is bounded by bytes the way the prediction list is: a page ends at its
/// byte budget however high its `limit`, and `next` continues right after the last batch
/// shown, so every batch is listed once.
#[tokio::test]
async fn the_batch_list_ends_its_pages_at_their_byte_budget() {
    let app = small_pages_app();
    let mut ids = Vec::new();
    for i in 0..9 {
        let reply = app
            .post(
                "/v1/batches",
                json!({"model": "augur/echo", "inputs": [{"i": i}]}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json());
        ids.push(reply.json()["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let (seen, sizes) = walk_pages(&app, "/v1/batches?limit=100", "id").await;
    assert_eq!(seen, ids);
    assert!(sizes.len() > 1 && sizes.iter().all(|&n| n < 9), "{sizes:?}");
}

/// The workflow list is bounded by bytes like the others: with a small page budget, every
/// blueprint is still listed once across pages, and the operator's shared blueprints that
/// follow an account's own on its first page stay within the budget too.
#[tokio::test]
async fn the_workflow_list_ends_its_pages_at_their_byte_budget() {
    let app = small_pages_app();
    let mut names = Vec::new();
    for i in 0..9 {
        let name = format!("admin/flow{i}");
        let reply = app
            .post(
                "/v1/workflows",
                json!({
                    "name": name,
                    "nodes": {"only": {"model": "augur/echo", "input": {"text": "x".repeat(200), "i": i}}},
                    "output": "{{ nodes.only.output }}",
                }),
            )
            .await;
        assert!(reply.status.is_success(), "{}", reply.json());
        names.push(name);
    }
    names.reverse();
    let (seen, sizes) = walk_pages(&app, "/v1/workflows?limit=100", "name").await;
    assert_eq!(seen, names);
    assert!(sizes.len() > 1 && sizes.iter().all(|&n| n < 9), "{sizes:?}");

    // An account with none of its own sees the operator's, as many as fit the budget.
    let alice = app.account("alice").await;
    let reply = app.call("GET", "/v1/workflows", &alice, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let shown = reply.json()["results"].as_array().unwrap().len();
    assert!((1..9).contains(&shown), "{shown} of the operator's 9 shown");
    assert!(reply.body.len() < 2 * 1024, "{} bytes", reply.body.len());
}
