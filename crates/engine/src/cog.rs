//! The Cog provider: runs predictions on a Cog model server (coglet) over HTTP.
//!
//! Augur does not start model servers; the operator runs each one (`python -m
//! cog.server.http`, see `tests/fixtures/cog/`) and names it under `[[models]]`. For each
//! prediction the provider:
//!
//! 1. checks `GET /health-check` (not `READY`: a retryable error; `BUSY`: deferred, see below);
//! 2. sends `PUT /predictions/{id}` with `Prefer: respond-async`, all webhook events, and a
//!    webhook URL back to Augur that only this prediction can use ([`CogHooks`]: an HMAC of
//!    the prediction id, never logged), and returns [`Outcome::Submitted`];
//! 3. hears coglet's cumulative webhooks through [`CogHooks::receive_webhook`], which the API
//!    serves, and turns them into transitions; file outputs arrive through coglet's
//!    `--upload-url` ([`CogHooks::receive_upload`]) or as data URIs that are decoded and
//!    stored, so outputs always point at Augur's own file URLs;
//! 4. when the worker calls `run` again (every `check_interval`), checks that the server is
//!    still the one that took the prediction and still up, and fails the prediction with a
//!    clear message when it restarted (it forgets everything) or stayed down past
//!    `down_grace` (coglet has no `GET /predictions/{id}`, and a killed server sends nothing).
//!
//! coglet has no queue: a server whose slots are all busy answers 409. The provider keeps at
//! most the model's `concurrency` predictions on the server and answers
//! [`Outcome::Deferred`] beyond that or on a 409, so the prediction stays `starting` in
//! Augur's queue without spending an attempt. A 422 fails the prediction with coglet's detail.
//!
//! Cancel: `POST /predictions/{id}/cancel`, from the worker (timeouts) and from a small task
//! per submitted prediction that notices when Augur settled it first (a user's cancel).

mod hooks;
mod schema;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use augur_core::{ModelName, Prediction, PredictionId};

use crate::provider::{InputError, Outcome, Provider, ProviderError, RunContext};

pub use hooks::{CogHooks, HookError, WebhookPayload, upload_url_for};

/// How long one call to a model server may take: health and cancel, then the create (its
/// body carries the input, which may hold data URIs).
const QUICK_TIMEOUT: Duration = Duration::from_secs(5);
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a prediction waits in the queue before trying a busy server again.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// Settings of one Cog model. `Debug` masks the URL's credentials.
#[derive(Clone)]
pub struct CogOptions {
    /// The model server's base URL, e.g. `http://127.0.0.1:5055`.
    pub url: url::Url,
    /// Predictions on the server at once (its `COG_MAX_CONCURRENCY`).
    pub concurrency: usize,
    /// How often a submitted prediction is checked on.
    pub check_interval: Duration,
    /// How long the server may be down or unhealthy while running a prediction before the
    /// prediction fails.
    pub down_grace: Duration,
}

/// A Cog model server and how to reach it. `Debug` masks the URL's credentials.
pub(crate) struct CogServer {
    /// The model it serves.
    pub(crate) model: ModelName,
    /// Its base URL, without a trailing slash.
    base: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for CogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CogOptions")
            .field("url", &augur_core::redact::url(self.url.as_str()))
            .field("concurrency", &self.concurrency)
            .field("check_interval", &self.check_interval)
            .field("down_grace", &self.down_grace)
            .finish()
    }
}

impl std::fmt::Debug for CogServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CogServer")
            .field("model", &self.model)
            .field("base", &augur_core::redact::url(&self.base))
            .finish_non_exhaustive()
    }
}

/// What `/health-check` said.
#[derive(Clone, Debug, Deserialize)]
struct Health {
    status: String,
    #[serde(default)]
    setup: Option<Setup>,
}

#[derive(Clone, Debug, Deserialize)]
struct Setup {
    #[serde(default)]
    started_at: Option<String>,
}

impl Health {
    /// Identifies one run of the server process: a restarted server has a new setup time.
    fn epoch(&self) -> Option<String> {
        self.setup.as_ref().and_then(|s| s.started_at.clone())
    }
}

/// Why a call to the server did not get an answer, in words fit for a prediction's logs
/// (never the URL, which is the operator's business).
fn unreachable(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the request timed out".into()
    } else if e.is_connect() {
        "the connection was refused".into()
    } else {
        "the request failed".into()
    }
}

impl CogServer {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn health(&self) -> Result<Health, String> {
        let response = self
            .http
            .get(self.url("/health-check"))
            .timeout(QUICK_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                tracing::debug!(model = %self.model, error = %e, "cog health check failed");
                unreachable(&e)
            })?;
        let status = response.status();
        match response.json::<Health>().await {
            Ok(health) => Ok(health),
            Err(_) => Err(format!("the health check answered {status}")),
        }
    }

    async fn openapi(&self) -> Result<Value, String> {
        let response = self
            .http
            .get(self.url("/openapi.json"))
            .timeout(QUICK_TIMEOUT)
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            // coglet serves a schema only from `.cog/openapi_schema.json`, which `cog build`
            // writes; without Docker, scripts/cog_schema.py writes it from the predictor.
            return Err(
                "GET /openapi.json answered 503: the model server has no schema (coglet needs \
                 .cog/openapi_schema.json in its directory; scripts/cog_schema.py writes it)"
                    .into(),
            );
        }
        if !response.status().is_success() {
            return Err(format!("GET /openapi.json answered {}", response.status()));
        }
        response
            .json::<Value>()
            .await
            .map_err(|e| format!("GET /openapi.json is not JSON: {e}"))
    }

    pub(crate) async fn cancel(&self, id: &PredictionId) -> Result<(), ProviderError> {
        let response = self
            .http
            .post(self.url(&format!("/predictions/{id}/cancel")))
            .timeout(QUICK_TIMEOUT)
            .send()
            .await
            .map_err(|e| ProviderError::Retryable(unreachable(&e)))?;
        match response.status().as_u16() {
            // 404: the server does not run it (finished, or never got it).
            200..=299 | 404 => Ok(()),
            other => Err(ProviderError::Retryable(format!(
                "the model server answered {other} to the cancel"
            ))),
        }
    }
}

/// Runs one model's predictions on a Cog model server.
#[derive(Debug)]
pub struct CogProvider {
    server: Arc<CogServer>,
    hooks: Arc<CogHooks>,
    options: CogOptions,
    /// The server's OpenAPI schema, once fetched.
    schema: RwLock<Option<Arc<Value>>>,
}

impl CogProvider {
    /// A provider for `model`, served at `options.url`, calling back through `hooks`.
    pub fn new(hooks: Arc<CogHooks>, model: ModelName, options: CogOptions) -> Self {
        hooks.add_model(&model);
        let server = Arc::new(CogServer {
            model,
            base: options.url.as_str().trim_end_matches('/').to_owned(),
            http: hooks.http().clone(),
        });
        Self {
            server,
            hooks,
            options,
            schema: RwLock::new(None),
        }
    }

    /// Fetches the server's OpenAPI schema (`GET /openapi.json`), which then describes the
    /// model and validates inputs.
    pub async fn refresh_schema(&self) -> Result<(), String> {
        let schema = self.server.openapi().await?;
        if schema.pointer("/components/schemas/Input").is_none() {
            return Err("the schema has no components.schemas.Input".into());
        }
        *self.schema.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(schema));
        tracing::info!(model = %self.server.model, "cog model schema loaded");
        Ok(())
    }

    /// Whether the schema is known.
    pub fn has_schema(&self) -> bool {
        self.schema
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Retries [`CogProvider::refresh_schema`] with growing pauses (1 s to 30 s) until the
    /// schema is known; for a server that was not up when Augur started.
    pub async fn refresh_schema_until_available(self: Arc<Self>) {
        let mut pause = Duration::from_secs(1);
        while !self.has_schema() {
            tokio::time::sleep(pause).await;
            if let Err(e) = self.refresh_schema().await {
                tracing::debug!(model = %self.server.model, error = %e, "cog model schema still unavailable");
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    /// Starts the prediction on the server.
    async fn submit(&self, prediction: &Prediction) -> Result<Outcome, ProviderError> {
        let id = &prediction.id;
        let model = &self.server.model;
        if self.hooks.running_on(model) >= self.options.concurrency {
            return Ok(Outcome::Deferred {
                retry_after: jittered(BUSY_RETRY),
            });
        }
        let health = self.server.health().await.map_err(|why| {
            ProviderError::Retryable(format!("the model server is unreachable: {why}"))
        })?;
        match health.status.as_str() {
            "READY" => {}
            "BUSY" => {
                return Ok(Outcome::Deferred {
                    retry_after: jittered(BUSY_RETRY),
                });
            }
            "STARTING" => {
                return Err(ProviderError::Retryable(
                    "the model server is still starting (its setup has not finished)".into(),
                ));
            }
            other => {
                return Err(ProviderError::Retryable(format!(
                    "the model server is not ready (it reports {other})"
                )));
            }
        }
        if !self.has_schema()
            && let Err(e) = self.refresh_schema().await
        {
            tracing::debug!(model = %model, error = %e, "cog model schema still unavailable");
        }
        // Counted from before the request, so concurrent runs see the slot taken.
        let reservation = self.hooks.reserve(id, self.server.clone(), health.epoch());
        let body = json!({
            "id": id,
            "input": prediction.input,
            "webhook": self.hooks.webhook_url(id),
            "webhook_events_filter": ["start", "output", "logs", "completed"],
        });
        let response = self
            .server
            .http
            .put(self.server.url(&format!("/predictions/{id}")))
            .header("prefer", "respond-async")
            .json(&body)
            .timeout(SUBMIT_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(prediction_id = %id, model = %model, error = %e, "cog submit failed");
                ProviderError::Retryable(format!("the model server is unreachable: {}", unreachable(&e)))
            })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        match status {
            200..=299 => {
                tracing::debug!(prediction_id = %id, model = %model, "submitted to the cog server");
                reservation.keep();
                Ok(Outcome::Submitted {
                    check_after: self.options.check_interval,
                })
            }
            409 => Ok(Outcome::Deferred {
                retry_after: jittered(BUSY_RETRY),
            }),
            422 => {
                // Augur's copy of the schema let this input through: the server may have
                // been restarted with another model, so read its schema again.
                if let Err(e) = self.refresh_schema().await {
                    tracing::debug!(model = %model, error = %e, "cog model schema refresh failed");
                }
                Err(ProviderError::Failed(format!(
                    "the model rejected the input: {}",
                    validation_detail(&text)
                )))
            }
            503 => Err(ProviderError::Retryable(
                "the model server is not ready (503)".into(),
            )),
            other => {
                tracing::warn!(prediction_id = %id, model = %model, status = other, body = %truncate(&text, 500), "cog server refused a prediction");
                Err(ProviderError::Retryable(format!(
                    "the model server answered {other}: {}",
                    truncate(&error_text(&text), 300)
                )))
            }
        }
    }

    /// Checks on a prediction this process submitted.
    async fn check(
        &self,
        id: &PredictionId,
        epoch: Option<String>,
    ) -> Result<Outcome, ProviderError> {
        let reason = match self.server.health().await {
            Ok(health) => {
                let restarted =
                    matches!((&epoch, health.epoch()), (Some(then), Some(now)) if *then != now);
                if restarted {
                    tracing::warn!(prediction_id = %id, model = %self.server.model, "cog server restarted while running a prediction");
                    // A new server process may serve a new model.
                    let _ = self.refresh_schema().await;
                    return Err(ProviderError::Failed(
                        "the model server restarted while running this prediction; its result was lost".into(),
                    ));
                }
                if matches!(health.status.as_str(), "READY" | "BUSY") {
                    self.hooks.mark_up(id);
                    return Ok(Outcome::Submitted {
                        check_after: self.options.check_interval,
                    });
                }
                format!("it reports {}", health.status)
            }
            Err(why) => why,
        };
        let down_for = self.hooks.mark_down(id, Instant::now());
        tracing::warn!(prediction_id = %id, model = %self.server.model, reason = %reason, down_for = ?down_for, "cog server down while running a prediction");
        if down_for >= self.options.down_grace {
            return Err(ProviderError::Failed(format!(
                "the model server stopped responding while running this prediction ({reason}) and did not recover within {}",
                humantime_short(self.options.down_grace)
            )));
        }
        let left = self.options.down_grace - down_for;
        Ok(Outcome::Submitted {
            check_after: self.options.check_interval.min(left),
        })
    }
}

#[async_trait]
impl Provider for CogProvider {
    /// It fetches inputs itself, without Augur's token.
    fn file_inputs(&self) -> crate::files::FileInputs {
        crate::files::FileInputs::SignedUrl
    }

    fn validate_input(&self, input: &Map<String, Value>) -> Result<Map<String, Value>, InputError> {
        let schema = self
            .schema
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match schema {
            Some(schema) => schema::validate(&schema, input),
            // Unknown until the server answers; coglet validates on submit (422).
            None => Ok(input.clone()),
        }
    }

    fn openapi_schema(&self) -> Option<Value> {
        self.schema
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .cloned()
    }

    async fn run(&self, ctx: RunContext) -> Result<Outcome, ProviderError> {
        let id = &ctx.prediction.id;
        match self.hooks.submitted(id) {
            Some(epoch) => self.check(id, epoch).await,
            // Not submitted by this process (or this process restarted): submit. A server
            // that still runs it answers with its state and does not start it twice.
            None => self.submit(&ctx.prediction).await,
        }
    }

    async fn cancel(&self, prediction: &Prediction) -> Result<(), ProviderError> {
        self.server.cancel(&prediction.id).await
    }
}

/// coglet's 422 body `{"detail":[{"loc":["body","input","steps"],"msg":"..."}]}` as
/// `input.steps: ...`.
fn validation_detail(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return truncate(body, 300);
    };
    let Some(details) = value.get("detail").and_then(Value::as_array) else {
        return truncate(&error_text(body), 300);
    };
    let parts: Vec<String> = details
        .iter()
        .map(|d| {
            let loc: Vec<String> = d
                .get("loc")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .skip_while(|p| p.as_str() == Some("body"))
                        .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let msg = d.get("msg").and_then(Value::as_str).unwrap_or("invalid");
            if loc.is_empty() {
                msg.to_owned()
            } else {
                format!("{}: {msg}", loc.join("."))
            }
        })
        .collect();
    truncate(&parts.join("; "), 500)
}

/// The `error` of a coglet error body, or the body.
fn error_text(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.to_owned())
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}...")
    }
}

/// `d` ± 25%, so predictions deferred together do not come back together.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.75 + rand::random::<f64>() / 2.0)
}

fn humantime_short(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{}ms", d.as_millis())
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use augur_core::store::memory::MemoryStore;
    use augur_core::{AccountId, CreateRequest, Predictions, Secret, ServiceConfig, WebhookEvents};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::files::OutputFiles;
    use crate::provider::Progress;

    /// What the fake model server answers, and what it was asked.
    #[derive(Default)]
    struct Script {
        health: (u16, String),
        put: (u16, String),
        requests: Vec<String>,
    }

    /// A fake coglet: answers `/health-check` and `PUT /predictions/{id}` from a script.
    async fn fake_server(script: Arc<Mutex<Script>>) -> url::Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let script = script.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let request = loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + length {
                                break text;
                            }
                        }
                    };
                    let (status, body) = {
                        let mut script = script.lock().unwrap();
                        script.requests.push(request.clone());
                        if request.starts_with("GET /health-check") {
                            script.health.clone()
                        } else if request.starts_with("PUT /predictions/") {
                            script.put.clone()
                        } else {
                            (404, "{}".to_owned())
                        }
                    };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        url::Url::parse(&url).unwrap()
    }

    fn health(status: &str, epoch: &str) -> (u16, String) {
        (
            200,
            json!({"status": status, "setup": {"started_at": epoch, "status": "succeeded"}})
                .to_string(),
        )
    }

    struct Fixture {
        provider: CogProvider,
        service: Predictions,
        script: Arc<Mutex<Script>>,
    }

    async fn fixture(concurrency: usize, down_grace: Duration) -> Fixture {
        let script = Arc::new(Mutex::new(Script {
            health: health("READY", "epoch-1"),
            put: (202, r#"{"id":"x","status":"starting"}"#.into()),
            requests: Vec::new(),
        }));
        let url = fake_server(script.clone()).await;
        let service = Predictions::new(Arc::new(MemoryStore::new()), ServiceConfig::default());
        let hooks = CogHooks::new(
            service.clone(),
            OutputFiles::in_memory("http://augur.test"),
            &Secret::new("test-admin-token-0123456789"),
            "http://augur.test",
        );
        let provider = CogProvider::new(
            hooks,
            ModelName::parse("acme/sketch").unwrap(),
            CogOptions {
                url,
                concurrency,
                check_interval: Duration::from_millis(500),
                down_grace,
            },
        );
        Fixture {
            provider,
            service,
            script,
        }
    }

    impl Fixture {
        async fn prediction(&self) -> Prediction {
            self.service
                .create(CreateRequest {
                    id: None,
                    owner: AccountId::admin(),
                    model: ModelName::parse("acme/sketch").unwrap(),
                    version: "v".into(),
                    input: json!({"prompt": "x"}),
                    webhook: None,
                    webhook_events_filter: WebhookEvents::ALL,
                    deadline: None,
                    idempotency_key: None,
                    price: None,
                    max_active: None,
                })
                .await
                .unwrap()
                .prediction()
                .value
                .clone()
        }

        async fn run(&self, prediction: &Prediction) -> Result<Outcome, ProviderError> {
            self.provider
                .run(RunContext {
                    prediction: prediction.clone(),
                    attempt: 1,
                    progress: Progress::new(self.service.clone(), prediction.id.clone(), 1, false),
                    files: OutputFiles::in_memory("http://augur.test"),
                })
                .await
        }

        fn set(&self, f: impl FnOnce(&mut Script)) {
            f(&mut self.script.lock().unwrap());
        }
    }

    #[tokio::test]
    async fn submits_async_with_a_private_webhook_then_notices_a_restart() {
        let f = fixture(2, Duration::from_secs(30)).await;
        let p = f.prediction().await;
        assert!(matches!(f.run(&p).await, Ok(Outcome::Submitted { .. })));
        let put = f.script.lock().unwrap().requests.last().unwrap().clone();
        assert!(
            put.starts_with(&format!("PUT /predictions/{} ", p.id)),
            "{put}"
        );
        assert!(
            put.to_ascii_lowercase()
                .contains("prefer: respond-async\r\n"),
            "{put}"
        );
        let webhook = format!(
            "http://augur.test/internal/cog/predictions/{}/webhook/",
            p.id
        );
        assert!(put.contains(&webhook), "{put}");
        assert!(
            put.contains(r#""webhook_events_filter":["start","output","logs","completed"]"#),
            "{put}"
        );
        // Checking on it: same server process, still up.
        assert!(matches!(f.run(&p).await, Ok(Outcome::Submitted { .. })));
        assert_eq!(
            f.script
                .lock()
                .unwrap()
                .requests
                .iter()
                .filter(|r| r.starts_with("PUT"))
                .count(),
            1
        );
        // The server restarted: it forgot the prediction.
        f.set(|s| s.health = health("READY", "epoch-2"));
        let Err(ProviderError::Failed(why)) = f.run(&p).await else {
            panic!("a restart must fail the prediction")
        };
        assert!(why.contains("restarted"), "{why}");
    }

    #[tokio::test]
    async fn a_busy_server_defers_and_answers_map_to_outcomes() {
        let f = fixture(1, Duration::from_secs(30)).await;
        let p = f.prediction().await;
        f.set(|s| s.health = health("BUSY", "e"));
        assert!(matches!(f.run(&p).await, Ok(Outcome::Deferred { .. })));
        f.set(|s| {
            s.health = health("READY", "e");
            s.put = (
                409,
                r#"{"error":"At capacity - all prediction slots busy","status":"failed"}"#.into(),
            );
        });
        assert!(matches!(f.run(&p).await, Ok(Outcome::Deferred { .. })));
        assert_eq!(
            f.provider.hooks.running_on(&f.provider.server.model),
            0,
            "a refused submission is not counted"
        );
        f.set(|s| s.put = (422, r#"{"detail":[{"loc":["body","input","steps"],"msg":"99 is greater than the maximum of 50","type":"value_error"}]}"#.into()));
        assert_eq!(
            f.run(&p).await,
            Err(ProviderError::Failed(
                "the model rejected the input: input.steps: 99 is greater than the maximum of 50"
                    .into()
            ))
        );
        f.set(|s| {
            s.put = (
                503,
                r#"{"error":"Setup has not finished yet","status":"failed"}"#.into(),
            )
        });
        assert!(matches!(f.run(&p).await, Err(ProviderError::Retryable(_))));
        f.set(|s| s.health = health("STARTING", "e"));
        assert!(
            matches!(f.run(&p).await, Err(ProviderError::Retryable(why)) if why.contains("starting"))
        );
        f.set(|s| s.health = health("UNHEALTHY", "e"));
        assert!(
            matches!(f.run(&p).await, Err(ProviderError::Retryable(why)) if why.contains("UNHEALTHY"))
        );

        // At the model's concurrency, the next one waits without asking the server.
        f.set(|s| {
            s.health = health("READY", "e");
            s.put = (202, "{}".into());
        });
        assert!(matches!(f.run(&p).await, Ok(Outcome::Submitted { .. })));
        let q = f.prediction().await;
        let asked = f.script.lock().unwrap().requests.len();
        assert!(matches!(f.run(&q).await, Ok(Outcome::Deferred { .. })));
        assert_eq!(f.script.lock().unwrap().requests.len(), asked);
        // Once the first settles, the slot is free again.
        f.service
            .transition(&p.id, &augur_core::Event::canceled())
            .await
            .unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while f.provider.hooks.running_on(&f.provider.server.model) > 0 {
            assert!(
                Instant::now() < until,
                "the settled prediction still holds its slot"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(f.run(&q).await, Ok(Outcome::Submitted { .. })));
    }

    #[tokio::test]
    async fn a_server_down_past_the_grace_period_fails_the_prediction() {
        let f = fixture(1, Duration::from_millis(300)).await;
        let p = f.prediction().await;
        assert!(matches!(f.run(&p).await, Ok(Outcome::Submitted { .. })));
        f.set(|s| s.health = health("UNHEALTHY", "epoch-1"));
        let Ok(Outcome::Submitted { check_after }) = f.run(&p).await else {
            panic!("within the grace period it is checked again")
        };
        assert!(check_after <= Duration::from_millis(300));
        // Back up in time: the grace period starts over.
        f.set(|s| s.health = health("READY", "epoch-1"));
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(matches!(f.run(&p).await, Ok(Outcome::Submitted { .. })));
        f.set(|s| s.health = health("UNHEALTHY", "epoch-1"));
        assert!(matches!(f.run(&p).await, Ok(Outcome::Submitted { .. })));
        tokio::time::sleep(Duration::from_millis(350)).await;
        let Err(ProviderError::Failed(why)) = f.run(&p).await else {
            panic!("down past the grace period must fail")
        };
        assert!(
            why.contains("stopped responding") && why.contains("UNHEALTHY"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_retried() {
        let f = fixture(1, Duration::from_secs(30)).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = url::Url::parse(&format!("http://{}", closed.local_addr().unwrap())).unwrap();
        drop(closed);
        let provider = CogProvider::new(
            f.provider.hooks.clone(),
            ModelName::parse("acme/gone").unwrap(),
            CogOptions {
                url,
                ..f.provider.options.clone()
            },
        );
        let p = f.prediction().await;
        let result = provider
            .run(RunContext {
                prediction: p.clone(),
                attempt: 1,
                progress: Progress::new(f.service.clone(), p.id.clone(), 1, false),
                files: OutputFiles::in_memory("http://augur.test"),
            })
            .await;
        assert_eq!(
            result,
            Err(ProviderError::Retryable(
                "the model server is unreachable: the connection was refused".into()
            ))
        );
    }

    #[test]
    fn coglet_validation_errors_become_one_line() {
        let body = r#"{"detail":[{"loc":["body","input","steps"],"msg":"99 is greater than the maximum of 50","type":"value_error"}]}"#;
        assert_eq!(
            validation_detail(body),
            "input.steps: 99 is greater than the maximum of 50"
        );
        assert_eq!(validation_detail("not json"), "not json");
        assert_eq!(
            validation_detail(r#"{"error":"bad","status":"failed"}"#),
            "bad"
        );
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(4));
            assert!(d >= Duration::from_secs(3) && d <= Duration::from_secs(5));
        }
    }
}
