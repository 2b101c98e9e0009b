//! Replicate compatibility through the router (no sockets): deployments (CRUD, releases,
//! ownership, predictions through them and their concurrency cap), hardware, collections,
//! model search with the QUERY method, and `previous` links on list pages.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use augur_api::{ApiConfig, AppParts, AppState, router};
use augur_core::store::DynStore;
use augur_core::store::memory::MemoryStore;
use augur_core::{
    Accounts, AccountsConfig, Credits, ModelName, Predictions, Price, Secret, ServiceConfig,
};
use augur_engine::{
    Model, ModelRegistry, ModelSettings, Outcome, OutputFiles, Provider, ProviderError, RunContext,
    Worker, WorkerOptions,
};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "test-token";
const BASE: &str = "http://augur.test";

/// `test/slow`: sleeps 150 ms, counting how many of its runs overlap.
#[derive(Debug, Default)]
struct Slow {
    running: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait]
impl Provider for Slow {
    async fn run(&self, ctx: RunContext) -> Result<Outcome, ProviderError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(Outcome::Succeeded(ctx.prediction.input))
    }
}

struct App {
    router: Router,
    state: AppState,
    slow: Arc<Slow>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The API with the built-in models, `test/slow` (priced at 2 credits) and a worker.
fn app() -> App {
    let store: DynStore = Arc::new(MemoryStore::new());
    let mut models = ModelRegistry::new();
    augur_engine::builtin::register(&mut models);
    let slow = Arc::new(Slow::default());
    let name = ModelName::parse("test/slow").unwrap();
    models.register(Model::new(
        name.clone(),
        "1",
        "sleeps a little",
        ModelSettings::default(),
        slow.clone(),
    ));
    assert!(models.set_price(&name, Some(Price::PerPrediction { per_prediction: 2 })));
    let models = Arc::new(models);
    let files = OutputFiles::in_memory(BASE);
    let state = AppState::new(AppParts {
        rendered: Default::default(),
        service: Predictions::new(store.clone(), ServiceConfig::default()),
        accounts: Accounts::new(store.clone(), AccountsConfig::default()),
        credits: Credits::new(store),
        create_limiter: Default::default(),
        callback_budget: Default::default(),
        payments: None,
        catalog: Arc::new(augur_engine::ModelCatalog::new(models.clone(), BASE)),
        models,
        files,
        config: ApiConfig::new(BASE, Secret::new(TOKEN)),
        metrics: None,
    });
    let worker = Worker::new(
        state.service.clone(),
        state.models.clone(),
        state.files.clone(),
        WorkerOptions {
            idle_poll: Duration::from_millis(20),
            ..Default::default()
        },
    );
    state.service.set_dispatch(worker.dispatcher());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(worker.run(async move {
        let _ = rx.await;
    }));
    App {
        router: router(state.clone()),
        state,
        slow,
        _stop: tx,
    }
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn assert_error(&self, status: u16, code: &str, field: Option<&str>) {
        let body = self.json();
        assert_eq!(self.status.as_u16(), status, "{body}");
        assert_eq!(body["code"], code, "{body}");
        if let Some(field) = field {
            assert_eq!(body["field"], field, "{body}");
        }
    }
}

impl App {
    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(Value::String(text)) => {
                request = request.header(header::CONTENT_TYPE, "text/plain");
                Body::from(text)
            }
            Some(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply { status, body }
    }

    /// A new account with `credits` and its token.
    async fn account(&self, name: &str, credits: i64) -> String {
        let made = self
            .call(
                "POST",
                "/v1/accounts",
                TOKEN,
                Some(json!({"username": name})),
            )
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.json());
        let token = self
            .call(
                "POST",
                &format!("/v1/accounts/{name}/tokens"),
                TOKEN,
                Some(json!({})),
            )
            .await;
        assert_eq!(token.status, StatusCode::CREATED, "{}", token.json());
        let grant = self
            .call(
                "POST",
                &format!("/v1/accounts/{name}/credits"),
                TOKEN,
                Some(json!({"amount": credits - 10})),
            )
            .await;
        assert!(grant.status.is_success(), "{}", grant.json());
        token.json()["token"].as_str().unwrap().to_owned()
    }

    async fn wait_settled(&self, token: &str, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let p = self
                .call("GET", &format!("/v1/predictions/{id}"), token, None)
                .await
                .json();
            if ["succeeded", "failed", "canceled"].contains(&p["status"].as_str().unwrap()) {
                return p;
            }
            assert!(tokio::time::Instant::now() < deadline, "{p}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn deployments_are_created_read_listed_released_and_deleted_in_replicates_shape() {
    let app = app();
    let alice = app.account("alice", 100).await;
    let version = app
        .state
        .models
        .iter()
        .find(|m| m.name.as_str() == "augur/echo")
        .unwrap()
        .version
        .clone();

    let made = app
        .call(
            "POST",
            "/v1/deployments",
            &alice,
            Some(
                json!({"name": "web", "model": "augur/echo", "version": version,
                        "hardware": "default", "min_instances": 0, "max_instances": 2}),
            ),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.json());
    let d = made.json();
    assert_eq!(d["owner"], "alice");
    assert_eq!(d["name"], "web");
    let release = &d["current_release"];
    assert_eq!(release["number"], 1);
    assert_eq!(release["model"], "augur/echo");
    assert_eq!(release["version"], version.as_str());
    assert_eq!(release["created_by"]["username"], "alice");
    assert_eq!(release["created_by"]["type"], "user");
    assert_eq!(
        release["configuration"],
        json!({"hardware": "default", "min_instances": 0, "max_instances": 2})
    );
    assert!(release["created_at"].as_str().unwrap().ends_with('Z'));

    // The same name again is a conflict; defaults fill what Replicate would require.
    app.call(
        "POST",
        "/v1/deployments",
        &alice,
        Some(json!({"name": "web", "model": "augur/echo"})),
    )
    .await
    .assert_error(409, "deployment_exists", Some("name"));
    let second = app
        .call(
            "POST",
            "/v1/deployments",
            &alice,
            Some(json!({"name": "alice/api", "model": "augur/demo-image"})),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.json());
    assert_eq!(
        second.json()["name"],
        "api",
        "the client's owner/ prefix is dropped"
    );
    assert_eq!(
        second.json()["current_release"]["configuration"]["max_instances"],
        1
    );

    // Each PATCH is a new release; unnamed fields stay.
    let patched = app
        .call(
            "PATCH",
            "/v1/deployments/alice/web",
            &alice,
            Some(json!({"max_instances": 5})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.json());
    let r = &patched.json()["current_release"];
    assert_eq!(
        (
            r["number"].clone(),
            r["configuration"]["max_instances"].clone()
        ),
        (json!(2), json!(5))
    );
    assert_eq!(r["configuration"]["min_instances"], 0);
    let patched = app
        .call(
            "PATCH",
            "/v1/deployments/alice/web",
            &alice,
            Some(json!({"model": "augur/demo-image"})),
        )
        .await;
    let r = &patched.json()["current_release"];
    assert_eq!(
        (r["number"].clone(), r["model"].clone()),
        (json!(3), json!("augur/demo-image"))
    );
    assert_ne!(
        r["version"],
        version.as_str(),
        "a new model takes its own version"
    );
    let got = app
        .call("GET", "/v1/deployments/alice/web", &alice, None)
        .await;
    assert_eq!(got.json(), patched.json());

    let listed = app
        .call("GET", "/v1/deployments", &alice, None)
        .await
        .json();
    let names: Vec<_> = listed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(names, [json!("api"), json!("web")], "{listed}");
    assert!(listed["previous"].is_null() && listed["next"].is_null());
    let page = app
        .call("GET", "/v1/deployments?limit=1", &alice, None)
        .await
        .json();
    let next = page["next"]
        .as_str()
        .unwrap()
        .strip_prefix(BASE)
        .unwrap()
        .to_owned();
    let rest = app.call("GET", &next, &alice, None).await.json();
    assert_eq!(rest["results"][0]["name"], "web", "{rest}");

    assert_eq!(
        app.call("DELETE", "/v1/deployments/alice/api", &alice, None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    app.call("GET", "/v1/deployments/alice/api", &alice, None)
        .await
        .assert_error(404, "deployment_not_found", None);
    app.call("DELETE", "/v1/deployments/alice/api", &alice, None)
        .await
        .assert_error(404, "deployment_not_found", None);
}

#[tokio::test]
async fn bad_deployments_are_refused_naming_the_field() {
    let app = app();
    let alice = app.account("alice", 100).await;
    let post = |body: Value| app.call("POST", "/v1/deployments", &alice, Some(body));
    post(json!({"model": "augur/echo"}))
        .await
        .assert_error(422, "invalid_request", Some("name"));
    post(json!({"name": "Web!", "model": "augur/echo"}))
        .await
        .assert_error(422, "invalid_request", Some("name"));
    post(json!({"name": "w"}))
        .await
        .assert_error(422, "invalid_request", Some("model"));
    post(json!({"name": "w", "model": "nobody/nothing"}))
        .await
        .assert_error(422, "invalid_request", Some("model"));
    post(json!({"name": "w", "model": "augur/echo", "version": "abc"}))
        .await
        .assert_error(422, "invalid_request", Some("version"));
    post(json!({"name": "w", "model": "augur/echo", "hardware": "gpu-a100-large"}))
        .await
        .assert_error(422, "invalid_request", Some("hardware"));
    post(json!({"name": "w", "model": "augur/echo", "max_instances": 0}))
        .await
        .assert_error(422, "invalid_request", Some("max_instances"));
    post(json!({"name": "w", "model": "augur/echo", "min_instances": 3, "max_instances": 2}))
        .await
        .assert_error(422, "invalid_request", Some("min_instances"));
    post(json!({"name": "w", "model": "augur/echo", "max_instances": -1}))
        .await
        .assert_error(422, "invalid_request", Some("max_instances"));
    post(json!({"name": "w", "model": "augur/echo", "colour": "red"}))
        .await
        .assert_error(422, "invalid_request", None);
    assert_eq!(
        post(json!({"name": "w", "model": "augur/echo"}))
            .await
            .status,
        StatusCode::CREATED
    );
    // A refused update stores nothing: the release number stays.
    app.call(
        "PATCH",
        "/v1/deployments/alice/w",
        &alice,
        Some(json!({"max_instances": 5000})),
    )
    .await
    .assert_error(422, "invalid_request", Some("max_instances"));
    let d = app
        .call("GET", "/v1/deployments/alice/w", &alice, None)
        .await
        .json();
    assert_eq!(d["current_release"]["number"], 1);
}

#[tokio::test]
async fn another_accounts_deployment_is_not_found_but_the_admin_reaches_it() {
    let app = app();
    let alice = app.account("alice", 100).await;
    let bob = app.account("bob", 100).await;
    let made = app
        .call(
            "POST",
            "/v1/deployments",
            &alice,
            Some(json!({"name": "web", "model": "augur/echo"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED);
    let missing = app
        .call("GET", "/v1/deployments/alice/nothing", &bob, None)
        .await;
    for (method, path, body) in [
        ("GET", "/v1/deployments/alice/web", None),
        (
            "PATCH",
            "/v1/deployments/alice/web",
            Some(json!({"max_instances": 3})),
        ),
        ("DELETE", "/v1/deployments/alice/web", None),
        (
            "POST",
            "/v1/deployments/alice/web/predictions",
            Some(json!({"input": {}})),
        ),
    ] {
        let reply = app.call(method, path, &bob, body).await;
        reply.assert_error(404, "deployment_not_found", None);
        assert_eq!(
            reply.json()["detail"]
                .as_str()
                .unwrap()
                .replace("web", "nothing"),
            missing.json()["detail"].as_str().unwrap(),
            "{method} {path}: answered like a missing one"
        );
    }
    let bobs = app.call("GET", "/v1/deployments", &bob, None).await.json();
    assert_eq!(bobs["results"], json!([]));
    // The admin token acts on every account's.
    let admin = app
        .call("GET", "/v1/deployments/alice/web", TOKEN, None)
        .await;
    assert_eq!(admin.status, StatusCode::OK);
    let all = app.call("GET", "/v1/deployments", TOKEN, None).await.json();
    assert_eq!(all["results"].as_array().unwrap().len(), 1);
    // Still alice's, unchanged.
    let d = app
        .call("GET", "/v1/deployments/alice/web", &alice, None)
        .await
        .json();
    assert_eq!(d["current_release"]["number"], 1);
}

#[tokio::test]
async fn predictions_through_a_deployment_name_it_are_charged_and_keep_to_max_instances() {
    let app = app();
    let alice = app.account("alice", 100).await;
    let made = app
        .call(
            "POST",
            "/v1/deployments",
            &alice,
            Some(json!({"name": "slow", "model": "test/slow", "max_instances": 2})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.json());
    let mut ids = Vec::new();
    for i in 0..6 {
        let reply = app
            .call(
                "POST",
                "/v1/deployments/alice/slow/predictions",
                &alice,
                Some(json!({"input": {"i": i}})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json());
        let p = reply.json();
        assert_eq!(p["deployment"], "alice/slow");
        assert_eq!(p["model"], "test/slow");
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let p = app.wait_settled(&alice, id).await;
        assert_eq!(p["status"], "succeeded", "{p}");
        assert_eq!(p["deployment"], "alice/slow");
    }
    assert_eq!(
        app.slow.most.load(Ordering::SeqCst),
        2,
        "at most max_instances ran at once"
    );
    // Charged like any prediction: 6 x 2 credits of 100.
    let credits = app
        .call("GET", "/v1/account/credits", &alice, None)
        .await
        .json();
    assert_eq!(credits["balance"], 88, "{credits}");

    // A new release's limit applies to predictions queued after it (within the worker's
    // re-read of the limit).
    let patched = app
        .call(
            "PATCH",
            "/v1/deployments/alice/slow",
            &alice,
            Some(json!({"max_instances": 4})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    app.slow.most.store(0, Ordering::SeqCst);
    let mut ids = Vec::new();
    for _ in 0..8 {
        let reply = app
            .call(
                "POST",
                "/v1/deployments/alice/slow/predictions",
                &alice,
                Some(json!({"input": {}})),
            )
            .await;
        ids.push(reply.json()["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert_eq!(app.wait_settled(&alice, id).await["status"], "succeeded");
    }
    assert_eq!(app.slow.most.load(Ordering::SeqCst), 4);

    // Predictions of the model itself are not held by the deployment's cap.
    app.slow.most.store(0, Ordering::SeqCst);
    let mut ids = Vec::new();
    for _ in 0..6 {
        let reply = app
            .call(
                "POST",
                "/v1/models/test/slow/predictions",
                &alice,
                Some(json!({"input": {}})),
            )
            .await;
        let p = reply.json();
        assert!(p.get("deployment").is_none(), "{p}");
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_settled(&alice, id).await;
    }
    assert_eq!(app.slow.most.load(Ordering::SeqCst), 6);

    // Bad input is a 422 naming the field, as for a model.
    app.call(
        "POST",
        "/v1/deployments/alice/slow/predictions",
        &alice,
        Some(json!({})),
    )
    .await
    .assert_error(422, "invalid_input", Some("input"));
}

#[tokio::test]
async fn hardware_and_collections_say_what_the_server_offers() {
    let app = app();
    let hardware = app.call("GET", "/v1/hardware", TOKEN, None).await;
    assert_eq!(hardware.status, StatusCode::OK);
    let hardware = hardware.json();
    assert_eq!(hardware.as_array().unwrap().len(), 1, "{hardware}");
    assert_eq!(hardware[0]["sku"], "default");
    assert!(hardware[0]["name"].is_string());

    let collections = app.call("GET", "/v1/collections", TOKEN, None).await.json();
    assert_eq!(
        collections["results"].as_array().unwrap().len(),
        1,
        "{collections}"
    );
    assert_eq!(collections["results"][0]["slug"], "all");
    assert!(collections["results"][0].get("models").is_none());
    let all = app
        .call("GET", "/v1/collections/all", TOKEN, None)
        .await
        .json();
    let names: Vec<_> = all["models"]
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
    assert_eq!(names, ["augur/demo-image", "augur/echo", "test/slow"]);
    app.call("GET", "/v1/collections/text-to-image", TOKEN, None)
        .await
        .assert_error(404, "collection_not_found", None);
}

#[tokio::test]
async fn the_query_method_searches_models() {
    let app = app();
    let search = |text: &str| {
        app.call(
            "QUERY",
            "/v1/models",
            TOKEN,
            Some(Value::String(text.into())),
        )
    };
    let names = |page: Value| -> Vec<String> {
        page["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let found = search("echo").await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(names(found.json()), ["echo"]);
    assert_eq!(
        names(search("SLEEPS little").await.json()),
        ["slow"],
        "words of the description, any case"
    );
    assert_eq!(names(search("augur").await.json()), ["demo-image", "echo"]);
    assert!(
        names(search("augur nothing").await.json()).is_empty(),
        "every word must match"
    );
    assert_eq!(names(search("").await.json()).len(), 3);
    // GET still lists; other methods are refused.
    assert_eq!(
        names(app.call("GET", "/v1/models", TOKEN, None).await.json()).len(),
        3
    );
    app.call("DELETE", "/v1/models", TOKEN, None)
        .await
        .assert_error(405, "method_not_allowed", None);
    let unauthenticated = app
        .call(
            "QUERY",
            "/v1/models",
            "wrong-token",
            Some(Value::String("echo".into())),
        )
        .await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
}
