//! The Replicate provider end to end: a second `augur` serves as the upstream Replicate API
//! (its built-in `augur/echo` and `augur/demo-image`), and a first one forwards predictions
//! to it through `provider = "replicate"` models in its `[[models]]` configuration.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Api, TOKEN, TestServer};

/// Which upstream models the first Augur forwards to, under what names.
const ECHO: &str = "acme/upstream-echo";
const IMAGE: &str = "acme/upstream-image";
const BAD_TOKEN: &str = "acme/upstream-bad-token";

/// An upstream Augur and a front Augur that forwards to it.
struct Pair {
    upstream: TestServer,
    up: Api,
    front: TestServer,
    api: Api,
    _dir: tempfile::TempDir,
}

struct Options {
    /// The front's `callback_url` (default: its own URL, which the upstream can reach).
    callback_url: Option<String>,
    /// The models' `poll_interval`.
    poll_interval: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            callback_url: None,
            // Long: these predictions settle through webhooks.
            poll_interval: "1m",
        }
    }
}

async fn pair(options: Options) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let upstream = TestServer::start(&dir.path().join("upstream"), &[]);
    let up = upstream.client();
    let (status, echo) = get(&up, "/v1/models/augur/echo").await;
    assert_eq!(status, 200, "{echo}");
    let echo_version = echo["latest_version"]["id"].as_str().unwrap().to_owned();
    let config = dir.path().join("front.toml");
    let url = &upstream.url;
    let poll = options.poll_interval;
    std::fs::write(
        &config,
        format!(
            r#"
[[models]]
name = "{ECHO}"
provider = "replicate"
url = "{url}"
model = "augur/echo"
version = "{echo_version}"
token = "{TOKEN}"
poll_interval = "{poll}"

[[models]]
name = "{IMAGE}"
provider = "replicate"
url = "{url}/v1"
model = "augur/demo-image"
token = "{TOKEN}"
poll_interval = "{poll}"
max_run_time = "1m"

[[models]]
name = "{BAD_TOKEN}"
provider = "replicate"
url = "{url}"
model = "augur/echo"
token = "not-the-upstream-token"
"#
        ),
    )
    .unwrap();
    let mut env = vec![("AUGUR_CONFIG", config.to_str().unwrap().to_owned())];
    if let Some(callback) = options.callback_url {
        env.push(("AUGUR_CALLBACK_URL", callback));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let front = TestServer::start(&dir.path().join("front"), &env);
    let api = front.client();
    Pair {
        upstream,
        up,
        front,
        api,
        _dir: dir,
    }
}

async fn get(api: &Api, path: &str) -> (u16, Value) {
    let response = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

impl Pair {
    async fn create(&self, model: &str, input: Value) -> String {
        let (status, body) = self.api.create(model, input).await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    fn logs(&self) -> String {
        format!(
            "front log:\n{}\nupstream log:\n{}",
            std::fs::read_to_string(&self.front.log).unwrap_or_default(),
            std::fs::read_to_string(&self.upstream.log).unwrap_or_default()
        )
    }

    /// Polls the front until `done` holds for the prediction; panics with both logs after
    /// `deadline`.
    async fn until(&self, id: &str, deadline: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let (_, body) = self.api.get(id).await.unwrap();
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < until,
                "prediction {id} never got there: {body}\n{}",
                self.logs()
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

    /// The upstream's predictions, newest first.
    async fn upstream_predictions(&self) -> Vec<Value> {
        let (status, page) = get(&self.up, "/v1/predictions").await;
        assert_eq!(status, 200, "{page}");
        page["results"].as_array().unwrap().clone()
    }

    /// The one upstream prediction of `model`, read whole (list items leave out `logs`).
    async fn upstream_prediction(&self, model: &str) -> Value {
        let found: Vec<Value> = self
            .upstream_predictions()
            .await
            .into_iter()
            .filter(|p| p["model"] == model)
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        let id = found[0]["id"].as_str().unwrap();
        let (status, prediction) = get(&self.up, &format!("/v1/predictions/{id}")).await;
        assert_eq!(status, 200, "{prediction}");
        prediction
    }
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `text` holds a callback token (64 hex digits after `/webhook/`).
fn shows_a_callback_token(text: &str) -> bool {
    text.match_indices("/webhook/").any(|(at, m)| {
        let rest = &text[at + m.len()..];
        rest.len() >= 64 && rest[..64].bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Checks that two URLs serve the same PNG.
async fn assert_same_file(ours: &str, theirs: &str) {
    let fetch = |url: String| async move {
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.headers()["content-type"], "image/png", "{url}");
        response.bytes().await.unwrap()
    };
    assert_eq!(fetch(ours.to_owned()).await, fetch(theirs.to_owned()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_settle_with_the_upstreams_output_and_logs() {
    let pair = pair(Options::default()).await;

    // By version (`POST /v1/predictions`).
    let input = json!({"text": "hello", "n": 3});
    let id = pair.create(ECHO, input.clone()).await;
    let done = pair.settled(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", pair.logs());
    assert_eq!(done["output"], input);
    assert_eq!(done["model"], ECHO);
    assert!(done["started_at"].is_string(), "{done}");
    let upstream = pair.upstream_prediction("augur/echo").await;
    assert_eq!(upstream["input"], input);
    assert_eq!(upstream["status"], "succeeded");
    let upstream_id = upstream["id"].as_str().unwrap();
    assert!(
        !done.to_string().contains(upstream_id),
        "the upstream id is internal: {done}"
    );

    // By model name (`POST /v1/models/{owner}/{name}/predictions`), with logs and a file.
    let id = pair
        .create(
            IMAGE,
            json!({"prompt": "a cat", "steps": 4, "step_ms": 150, "width": 16, "height": 16}),
        )
        .await;
    let running = pair
        .until(&id, Duration::from_secs(30), |p| {
            p["status"] == "processing" && !p["logs"].as_str().unwrap_or("").is_empty()
        })
        .await;
    assert!(running["started_at"].is_string(), "{running}");
    let done = pair.settled(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", pair.logs());
    let upstream = pair.upstream_prediction("augur/demo-image").await;
    assert_eq!(done["logs"], upstream["logs"], "{done}\n{upstream}");
    assert!(done["logs"].as_str().unwrap().contains("4/4"), "{done}");
    // The output file was copied into the front's own file store.
    let url = done["output"].as_str().expect("one output URL");
    let own = format!("{}/files/{id}/", pair.front.url);
    assert!(url.starts_with(&own), "{url}");
    assert_same_file(url, upstream["output"].as_str().unwrap()).await;

    let front_log = std::fs::read_to_string(&pair.front.log).unwrap();
    assert!(!shows_a_callback_token(&front_log), "{front_log}");
    assert!(!front_log.contains(TOKEN), "{front_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_mid_run_cancels_the_upstream_prediction_too() {
    let pair = pair(Options::default()).await;
    let id = pair
        .create(
            IMAGE,
            json!({"prompt": "slow", "steps": 100, "step_ms": 100, "width": 16, "height": 16}),
        )
        .await;
    pair.until(&id, Duration::from_secs(30), |p| {
        !p["logs"].as_str().unwrap_or("").is_empty()
    })
    .await;
    let canceled = pair
        .api
        .http
        .post(format!("{}/v1/predictions/{id}/cancel", pair.front.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 200);
    let done = pair.settled(&id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "canceled", "{done}");

    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let upstream = pair.upstream_prediction("augur/demo-image").await;
        if upstream["status"] == "canceled" {
            break;
        }
        assert!(
            Instant::now() < until,
            "the upstream prediction was not canceled: {upstream}\n{}",
            pair.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_settles_predictions_whose_webhooks_cannot_arrive() {
    let pair = pair(Options {
        callback_url: Some(format!("http://127.0.0.1:{}", closed_port())),
        poll_interval: "300ms",
    })
    .await;
    let id = pair
        .create(
            IMAGE,
            json!({"prompt": "polled", "steps": 3, "step_ms": 200, "width": 16, "height": 16}),
        )
        .await;
    let done = pair.settled(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", pair.logs());
    assert!(done["logs"].as_str().unwrap().contains("3/3"), "{done}");
    let upstream = pair.upstream_prediction("augur/demo-image").await;
    let url = done["output"].as_str().expect("one output URL");
    assert!(url.starts_with(&pair.front.url), "{url}");
    assert_same_file(url, upstream["output"].as_str().unwrap()).await;

    let input = json!({"polled": true});
    let id = pair.create(ECHO, input.clone()).await;
    let done = pair.settled(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], input);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_or_a_refused_input_fails_with_the_upstreams_reason() {
    let pair = pair(Options::default()).await;

    let id = pair.create(BAD_TOKEN, json!({"x": 1})).await;
    let done = pair.settled(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.starts_with("the upstream refused the configured token (401): "),
        "{error}"
    );
    assert!(!error.contains("not-the-upstream-token"), "{error}");
    assert_eq!(done["attempts"], 1, "not retried: {done}");

    let id = pair
        .create(IMAGE, json!({"prompt": "too long", "steps": 999}))
        .await;
    let done = pair.settled(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.starts_with("the upstream rejected the prediction (422): "),
        "{error}"
    );
    assert!(
        error.contains("steps") && error.contains("999"),
        "the upstream's detail: {error}"
    );
    assert!(
        pair.upstream_predictions().await.is_empty(),
        "nothing was created upstream"
    );
    let front_log = std::fs::read_to_string(&pair.front.log).unwrap();
    assert!(!front_log.contains("not-the-upstream-token"), "{front_log}");
}
