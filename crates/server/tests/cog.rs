//! The Cog provider against a real Cog model server: coglet 0.23.1 from PyPI running
//! `tests/fixtures/cog/predict.py` (a small PNG drawn step by step), routed to by a
//! `[[models]]` entry, with the real `augur` binary.
//!
//! The test command (`scripts/test.sh`) installs coglet in the virtualenv it makes and sets
//! `AUGUR_TEST_PYTHON` to its interpreter. Without it these tests skip, unless
//! `AUGUR_E2E_REQUIRED=1`, which turns the skip into a failure. Each test starts its own
//! coglet on a free loopback port and stops it by PID.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Api, TOKEN, TestServer};

const MODEL: &str = "acme/sketch";

/// The Python interpreter with coglet installed, or `None` (a skip) when not configured.
fn python() -> Option<String> {
    let required = std::env::var("AUGUR_E2E_REQUIRED").as_deref() == Ok("1");
    let Some(python) = std::env::var("AUGUR_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        assert!(
            !required,
            "AUGUR_TEST_PYTHON is not set and AUGUR_E2E_REQUIRED=1"
        );
        eprintln!(
            "skipping: set AUGUR_TEST_PYTHON to a Python with coglet (scripts/test.sh makes one)"
        );
        return None;
    };
    let has_coglet = Command::new(&python)
        .args(["-c", "import cog, coglet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_coglet {
        assert!(
            !required,
            "{python} cannot import coglet and AUGUR_E2E_REQUIRED=1; pip install -r scripts/requirements-test.txt"
        );
        eprintln!("skipping: {python} has no coglet; pip install -r scripts/requirements-test.txt");
        return None;
    }
    Some(python)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cog")
}

/// A coglet process serving the fixture predictor.
struct Coglet {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Coglet {
    /// Starts coglet on `port` and waits until it reports `READY`.
    async fn start(python: &str, port: u16, upload_url: Option<&str>, log: PathBuf) -> Coglet {
        // coglet starts its worker as `python` from PATH, so the venv's bin goes first.
        let bin = Path::new(python).parent().unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(python);
        command
            .args(["-m", "cog.server.http", "--host", "127.0.0.1"])
            .current_dir(fixture_dir())
            .env("PATH", path)
            .env("PORT", port.to_string())
            .env("COG_PREDICT_TYPE_STUB", "predict.py:Predictor")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if let Some(upload) = upload_url {
            command.args(["--upload-url", upload]);
        }
        let child = command.spawn().expect("spawn coglet");
        Coglet::ready(child, port, log).await
    }

    /// Waits until the coglet `child` started on `port` (its output in `log`) reports
    /// `READY`.
    async fn ready(child: Child, port: u16, log: PathBuf) -> Coglet {
        let coglet = Coglet {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if coglet.health().await.as_deref() == Some("READY") {
                return coglet;
            }
            assert!(
                Instant::now() < until,
                "coglet did not get ready; its log:\n{}",
                coglet.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn health(&self) -> Option<String> {
        let response = reqwest::get(format!("{}/health-check", self.url))
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        body["status"].as_str().map(str::to_owned)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9` the server and its worker process, by PID.
    fn kill9(&mut self) {
        let workers = children(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in workers {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            // The predictor's output file (predict.py writes one per worker process).
            let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("augur-cog-{pid}")));
        }
    }
}

impl Drop for Coglet {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The child processes of `pid` (Linux): those of all its threads, since coglet starts its
/// worker from a runtime thread.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// A coglet and an `augur serve` that routes `acme/sketch` to it.
struct Stack {
    coglet: Coglet,
    server: TestServer,
    api: Api,
    _dir: tempfile::TempDir,
}

struct Options {
    /// Start coglet with `--upload-url` (else outputs arrive as data URIs).
    upload: bool,
    /// The model's `concurrency` in Augur's configuration.
    concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            upload: true,
            concurrency: 1,
        }
    }
}

async fn stack(python: &str, options: Options) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let (cog_port, augur_port) = (free_port(), free_port());
    // What `augur cog upload-url` prints for the model.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_augur"))
        .args(["cog", "upload-url", MODEL, "--callback-url"])
        .arg(format!("http://127.0.0.1:{augur_port}"))
        .env("AUGUR_ADMIN_TOKEN", common::TOKEN)
        .env("AUGUR_STORE", "memory://")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let upload = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(upload.contains("/internal/cog/uploads/"), "{upload}");
    let coglet = Coglet::start(
        python,
        cog_port,
        options.upload.then_some(upload.as_str()),
        dir.path().join("coglet.log"),
    )
    .await;
    let config = dir.path().join("augur.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[models]]
name = "{MODEL}"
provider = "cog"
url = "{}"
concurrency = {}
max_run_time = "2m"
check_interval = "500ms"
down_grace = "2s"
"#,
            coglet.url, options.concurrency
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{augur_port}");
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("AUGUR_CONFIG", config.to_str().unwrap()),
            ("AUGUR_LISTEN", &listen),
        ],
    );
    let api = server.client();
    Stack {
        coglet,
        server,
        api,
        _dir: dir,
    }
}

impl Stack {
    async fn create(&self, input: Value) -> Value {
        let (status, body) = self.api.create(MODEL, input).await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Polls until `done` holds for the prediction; panics with both logs after `deadline`.
    async fn until(&self, id: &str, deadline: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let (_, body) = self.api.get(id).await.unwrap();
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < until,
                "prediction {id} never got there: {body}\naugur log:\n{}\ncoglet log:\n{}",
                std::fs::read_to_string(&self.server.log).unwrap_or_default(),
                self.coglet.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn settled(&self, id: &str, deadline: Duration) -> Value {
        self.until(id, deadline, |p| {
            matches!(
                p["status"].as_str(),
                Some("succeeded" | "failed" | "canceled")
            )
        })
        .await
    }
}

fn id_of(p: &Value) -> String {
    p["id"].as_str().unwrap().to_owned()
}

/// Fetches an output URL and checks it is the fixture's 8x8 PNG.
async fn assert_png(url: &str) {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "image/png"
    );
    let bytes = response.bytes().await.unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let reader = decoder.read_info().expect("a valid PNG");
    assert_eq!((reader.info().width, reader.info().height), (8, 8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cog_prediction_succeeds_with_logs_and_its_png_in_augurs_file_store() {
    let Some(python) = python() else { return };
    let stack = stack(&python, Options::default()).await;

    // The model's schema comes from coglet's /openapi.json.
    let (status, model) = stack.api_get(&format!("/v1/models/{MODEL}")).await;
    assert_eq!(status, 200, "{model}");
    let input = &model["latest_version"]["openapi_schema"]["components"]["schemas"]["Input"];
    assert_eq!(input["required"], json!(["prompt"]), "{model}");
    assert_eq!(input["properties"]["steps"]["maximum"], json!(20));

    let created = stack
        .create(json!({"prompt": "a cat", "steps": 4, "sleep": 0.3}))
        .await;
    let id = id_of(&created);
    // Logs arrive while it runs.
    let running = stack
        .until(&id, Duration::from_secs(30), |p| {
            p["status"] == "processing" && p["logs"].as_str().unwrap_or("").contains("step 1/4")
        })
        .await;
    assert!(running["started_at"].is_string(), "{running}");

    let done = stack.settled(&id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let logs = done["logs"].as_str().unwrap();
    for step in 1..=4 {
        assert!(logs.contains(&format!("step {step}/4: a cat")), "{logs}");
    }
    assert!(
        done["metrics"]["predict_time"].as_f64().unwrap() > 0.5,
        "{done}"
    );
    assert_eq!(done["attempts"], 1);
    let url = done["output"].as_str().expect("one output URL");
    let files_prefix = format!("{}/files/{id}/", stack.server.url);
    assert!(url.starts_with(&files_prefix), "{url}");
    assert_png(url).await;
    // The file lives in Augur's file store, under the prediction.
    let stored = stack.server.data_dir.join("files").join(&id);
    assert!(stored.is_dir(), "{}", stored.display());

    // A model error fails the prediction with the model's message.
    let failing = stack
        .create(json!({"prompt": "x", "steps": 1, "sleep": 0, "fail": true}))
        .await;
    let failed = stack
        .settled(&id_of(&failing), Duration::from_secs(30))
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["error"], "ValueError: you asked me to fail",
        "{failed}"
    );
    assert!(failed["logs"].as_str().unwrap().contains("step 1/1"));

    // The webhook endpoint takes only the prediction's own token.
    let response = stack
        .api
        .http
        .post(format!(
            "{}/internal/cog/predictions/{id}/webhook/{}",
            stack.server.url,
            "ab".repeat(32)
        ))
        .json(&json!({"id": id, "status": "failed", "error": "forged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (_, still) = stack.api.get(&id).await.unwrap();
    assert_eq!(still["status"], "succeeded");
}

/// An uploaded file given as an input (its `urls.get`, as the official clients send it) reaches
/// the Cog server as a signed URL it fetches without a token: the model sees the file's bytes,
/// and the stored input keeps the file's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_file_input_reaches_the_cog_model() {
    use sha2::Digest;
    let Some(python) = python() else { return };
    let stack = stack(&python, Options::default()).await;
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let uploaded = common::upload(&stack.api.http, &stack.server.url, "cat.bin", &bytes).await;
    assert_eq!(
        uploaded["checksums"]["sha256"],
        digest.as_str(),
        "{uploaded}"
    );
    let url = uploaded["urls"]["get"].as_str().unwrap();

    let created = stack
        .create(json!({"prompt": "file", "steps": 1, "sleep": 0, "image": url}))
        .await;
    let done = stack
        .settled(&id_of(&created), Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let logs = done["logs"].as_str().unwrap();
    assert!(
        logs.contains(&format!("image 5000 bytes sha256 {digest}")),
        "{logs}"
    );
    assert_eq!(
        done["input"]["image"], url,
        "the stored input keeps the URL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_uri_outputs_become_augur_files() {
    let Some(python) = python() else { return };
    let stack = stack(
        &python,
        Options {
            upload: false,
            ..Options::default()
        },
    )
    .await;
    let created = stack
        .create(json!({"prompt": "inline", "steps": 1, "sleep": 0}))
        .await;
    let done = stack
        .settled(&id_of(&created), Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let url = done["output"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/files/", stack.server.url)),
        "{url}"
    );
    assert_png(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_with_422_naming_the_field() {
    let Some(python) = python() else { return };
    let stack = stack(&python, Options::default()).await;
    for (input, field, detail) in [
        (json!({"steps": 2}), "input.prompt", "Field required"),
        (
            json!({"prompt": "x", "steps": "abc"}),
            "input.steps",
            "\"abc\" is not of type \"integer\"",
        ),
        (
            json!({"prompt": "x", "steps": 99}),
            "input.steps",
            "99 is greater than the maximum of 20",
        ),
        (
            json!({"prompt": "x", "sleep": -1}),
            "input.sleep",
            "-1 is less than the minimum of 0",
        ),
        (
            json!({"prompt": "x", "fail": "yes"}),
            "input.fail",
            "\"yes\" is not of type \"boolean\"",
        ),
    ] {
        let (status, body) = stack.api.create(MODEL, input.clone()).await.unwrap();
        assert_eq!(status, 422, "{input}: {body}");
        assert_eq!(body["field"], field, "{input}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(detail),
            "{input}: {body}"
        );
    }
    // Unknown fields are dropped, as coglet drops them.
    let created = stack
        .create(json!({"prompt": "x", "steps": 1, "sleep": 0, "colour": "red"}))
        .await;
    assert_eq!(
        created["input"],
        json!({"prompt": "x", "steps": 1, "sleep": 0})
    );
    let done = stack
        .settled(&id_of(&created), Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_run_ends_canceled_on_both_sides() {
    let Some(python) = python() else { return };
    let stack = stack(&python, Options::default()).await;
    let created = stack
        .create(json!({"prompt": "long", "steps": 20, "sleep": 0.5}))
        .await;
    let id = id_of(&created);
    stack
        .until(&id, Duration::from_secs(30), |p| {
            p["logs"].as_str().unwrap_or("").contains("step 1/20")
        })
        .await;
    let canceled = stack
        .api
        .http
        .post(format!("{}/v1/predictions/{id}/cancel", stack.server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 200);
    let done = stack.settled(&id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "canceled", "{done}");

    // coglet stopped it too: its slot is free long before the 10 s run would end, and it no
    // longer knows the prediction.
    let until = Instant::now() + Duration::from_secs(5);
    while stack.coglet.health().await.as_deref() != Some("READY") {
        assert!(
            Instant::now() < until,
            "coglet still busy after the cancel:\n{}",
            stack.coglet.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = reqwest::Client::new()
        .post(format!("{}/predictions/{id}/cancel", stack.coglet.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404, "coglet still runs {id}");
    let (_, after) = stack.api.get(&id).await.unwrap();
    assert_eq!(after["status"], "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cog_server_fails_the_prediction_in_bounded_time() {
    let Some(python) = python() else { return };
    let mut stack = stack(&python, Options::default()).await;
    let created = stack
        .create(json!({"prompt": "doomed", "steps": 20, "sleep": 0.5}))
        .await;
    let id = id_of(&created);
    stack
        .until(&id, Duration::from_secs(30), |p| {
            p["logs"].as_str().unwrap_or("").contains("step 1/20")
        })
        .await;
    stack.coglet.kill9();
    let killed_at = Instant::now();
    // check_interval 500ms + down_grace 2s: well within 20 s, never stuck.
    let done = stack.settled(&id, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("stopped responding"), "{error}");
    assert!(killed_at.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_beyond_the_servers_slots_wait_queued_then_run() {
    let Some(python) = python() else { return };
    // coglet has one slot; Augur is told two, so the second prediction reaches a busy server
    // (BUSY or 409) and must wait in Augur's queue without spending an attempt.
    let stack = stack(
        &python,
        Options {
            concurrency: 2,
            ..Options::default()
        },
    )
    .await;
    let first = stack
        .create(json!({"prompt": "first", "steps": 10, "sleep": 0.3}))
        .await;
    let first_id = id_of(&first);
    stack
        .until(&first_id, Duration::from_secs(30), |p| {
            p["status"] == "processing"
        })
        .await;
    let others = [
        id_of(
            &stack
                .create(json!({"prompt": "second", "steps": 2, "sleep": 0.1}))
                .await,
        ),
        id_of(
            &stack
                .create(json!({"prompt": "third", "steps": 2, "sleep": 0.1}))
                .await,
        ),
    ];
    // While the first is surely mid-run on coglet, the others wait. "Surely": coglet's logs
    // reach Augur within 0.5 s (its throttle), and from step 6 the run has 1.5 s left, so
    // logs without "step 6/10" mean the slot is still taken.
    let mid_run = |p: &Value| {
        p["status"] == "processing" && !p["logs"].as_str().unwrap_or("").contains("step 6/10")
    };
    let mut seen_waiting = 0;
    loop {
        let (_, p1) = stack.api.get(&first_id).await.unwrap();
        if !mid_run(&p1) {
            break;
        }
        for id in &others {
            let (_, p) = stack.api.get(id).await.unwrap();
            // Sampled after the other: mid-run now means mid-run then.
            let (_, p1_after) = stack.api.get(&first_id).await.unwrap();
            if mid_run(&p1_after) {
                assert_eq!(p["status"], "starting", "{p}");
                seen_waiting += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen_waiting > 0,
        "the first prediction ended too soon to observe the queue"
    );
    for id in std::iter::once(&first_id).chain(&others) {
        let done = stack.settled(id, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["attempts"], 1, "{done}");
    }
}

impl Stack {
    async fn api_get(&self, path: &str) -> (u16, Value) {
        let response = self
            .api
            .http
            .get(format!("{}{path}", self.server.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

/// What the webhook receiver of a test got: each request's `webhook-*` headers and raw body.
type Inbox =
    std::sync::Arc<std::sync::Mutex<Vec<(std::collections::BTreeMap<String, String>, String)>>>;

async fn receive(
    axum::extract::State(inbox): axum::extract::State<Inbox>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let headers = headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("webhook-"))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    inbox
        .lock()
        .unwrap()
        .push((headers, String::from_utf8_lossy(&body).into_owned()));
    axum::http::StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cog_predictions_webhooks_arrive_signed_filtered_and_in_order() {
    let Some(python) = python() else { return };
    let stack = stack(&python, Options::default()).await;
    let inbox: Inbox = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(inbox.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Everything but `output` events.
    let response = stack
        .api
        .http
        .post(format!("{}/v1/predictions", stack.api.base))
        .bearer_auth(TOKEN)
        .json(&json!({
            "version": MODEL,
            "input": {"prompt": "hooked", "steps": 4, "sleep": 0.6},
            "webhook": hook,
            "webhook_events_filter": ["start", "logs", "completed"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = id_of(&response.json().await.unwrap());
    let done = stack.settled(&id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // Every message delivered, per the delivery log.
    let until = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let (status, log) = stack
            .api_get(&format!("/v1/predictions/{id}/webhooks"))
            .await;
        assert_eq!(status, 200, "{log}");
        let messages = log["results"].as_array().unwrap();
        if !messages.is_empty() && messages.iter().all(|m| m["status"] == "delivered") {
            break log;
        }
        assert!(Instant::now() < until, "undelivered: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let events: Vec<&str> = log["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"start"), "{events:?}");
    assert_eq!(events.last(), Some(&"completed"), "{events:?}");
    assert!(events.contains(&"logs"), "{events:?}");
    assert!(!events.contains(&"output"), "filtered out: {events:?}");

    // The receiver saw them once each, in that order, the logs only growing, the last one
    // with the PNG in Augur's store.
    let received = inbox.lock().unwrap().clone();
    let ids: Vec<&str> = received
        .iter()
        .map(|(h, _)| h["webhook-id"].as_str())
        .collect();
    let expected: Vec<&str> = log["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected);
    let bodies: Vec<Value> = received
        .iter()
        .map(|(_, b)| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(bodies[0]["status"], "starting");
    let lengths: Vec<usize> = bodies
        .iter()
        .map(|b| b["logs"].as_str().unwrap_or("").len())
        .collect();
    assert!(lengths.windows(2).all(|w| w[0] <= w[1]), "{lengths:?}");
    let last = bodies.last().unwrap();
    assert_eq!(last["status"], "succeeded");
    let url = last["output"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/files/{id}/", stack.server.url)),
        "{url}"
    );
    assert_png(url).await;

    // Signed so that both official verifiers accept them.
    let (_, secret) = stack.api_get("/v1/webhooks/default/secret").await;
    let records: Vec<Value> = received
        .iter()
        .map(|(h, b)| json!({"headers": h, "body": b}))
        .collect();
    let file = stack._dir.path().join("cog-webhooks.json");
    std::fs::write(&file, serde_json::to_vec(&records).unwrap()).unwrap();
    let output = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/verify_webhooks.py"
        ))
        .arg(&file)
        .arg(secret["key"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    receiver.abort();
}

/// Sends a request whose body never ends after `prefix`: an answer proves the server did not
/// wait to read it.
async fn answer_without_body(url: &str, method: &str, headers: &[(&str, &str)]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = reqwest::Url::parse(url).unwrap();
    let mut stream = tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))
        .await
        .unwrap();
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1073741824\r\ncontent-type: application/json\r\n",
        url.path()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n{\"status\": \"succeeded\", \"output\": \"");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered before the body arrived")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]).to_string();
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_without_their_token_are_refused_before_the_body_is_read() {
    let Some(python) = python() else { return };
    let stack = stack(&python, Options::default()).await;
    let created = stack
        .create(json!({"prompt": "long", "steps": 20, "sleep": 0.5}))
        .await;
    let id = id_of(&created);
    stack
        .until(&id, Duration::from_secs(30), |p| {
            p["status"] == "processing"
        })
        .await;
    let base = &stack.server.url;
    let bad = "00".repeat(32);
    // A webhook with a wrong token, uploads without the model's token (the old route, a wrong
    // token, another model's path): answered at once, whatever the body.
    for (path, method) in [
        (
            format!("/internal/cog/predictions/{id}/webhook/{bad}"),
            "POST",
        ),
        ("/internal/cog/uploads/out.png".to_owned(), "PUT"),
        (
            format!("/internal/cog/uploads/{MODEL}/{bad}/out.png"),
            "PUT",
        ),
        (
            format!("/internal/cog/uploads/acme/other/{bad}/out.png"),
            "PUT",
        ),
    ] {
        let status = answer_without_body(
            &format!("{base}{path}"),
            method,
            &[("x-prediction-id", &id)],
        )
        .await;
        assert_eq!(status, 401, "{method} {path}");
    }
    // Nothing was stored: the prediction's output is still the model's to give.
    let (_, p) = stack.api.get(&id).await.unwrap();
    assert!(
        p["output"].is_null() || !p.to_string().contains("out.png"),
        "{p}"
    );
    let files = stack.server.data_dir.join("files");
    let count = walk(&files);
    assert_eq!(count, 0, "files were stored by an unauthenticated upload");
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

/// The README's worked Cog example, started as the README says: `examples/cog-sketch/serve.sh`
/// from the repository root with the virtualenv's `bin` first on `PATH` (as an activated
/// venv has it; only the port differs, through `PORT`). Its schema is derived from
/// `predict.py` at start, with no schema file written by hand, so Augur refuses a misspelt
/// field with a 422 naming it, and a prediction succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_cog_example_starts_as_written_and_refuses_a_misspelt_field() {
    let Some(python) = python() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for line in [
        "examples/cog-sketch/serve.sh",
        "name = \"acme/sketch\"",
        "url = \"http://127.0.0.1:5055\"",
    ] {
        assert!(readme.contains(line), "the README lost `{line}`");
    }
    let example = root.join("examples/cog-sketch");
    let serve = std::fs::read_to_string(example.join("serve.sh")).unwrap();
    assert!(serve.contains("PORT=\"${PORT:-5055}\""), "{serve}");
    // No schema but the one serve.sh derives.
    let _ = std::fs::remove_dir_all(example.join(".cog"));

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bin = Path::new(&python).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = dir.path().join("coglet.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("examples/cog-sketch/serve.sh")
        .current_dir(&root)
        .env("PATH", path)
        .env("PORT", port.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn serve.sh");
    let coglet = Coglet::ready(child, port, log).await;

    let config = dir.path().join("augur.toml");
    std::fs::write(
        &config,
        format!(
            "[[models]]\nname = \"{MODEL}\"\nprovider = \"cog\"\nurl = \"{}\"\n",
            coglet.url
        ),
    )
    .unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[("AUGUR_CONFIG", config.to_str().unwrap())],
    );
    let api = server.client();
    for (input, field, detail) in [
        (json!({"promt": "a cat"}), "input.prompt", "Field required"),
        (
            json!({"prompt": "a cat", "palette": "blue"}),
            "input.palette",
            "blue",
        ),
        (
            json!({"prompt": "a cat", "size": "big"}),
            "input.size",
            "\"big\" is not of type \"integer\"",
        ),
    ] {
        let (status, body) = api.create(MODEL, input.clone()).await.unwrap();
        assert_eq!(
            status,
            422,
            "{input}: {body}\ncoglet log:\n{}",
            coglet.log_text()
        );
        assert_eq!(body["field"], field, "{input}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(detail),
            "{input}: {body}"
        );
    }
    let (status, created) = api
        .create(
            MODEL,
            json!({"prompt": "a cat", "steps": 2, "palette": "cool"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let done = api
        .settled(created["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        done["logs"].as_str().unwrap().contains("step 2/2: a cat"),
        "{done}"
    );
    let url = done["output"].as_str().expect("one output URL");
    assert!(url.starts_with(&format!("{}/files/", server.url)), "{url}");
}
