//! The Replicate provider: forwards predictions to an upstream Replicate-compatible API
//! (`https://api.replicate.com`, or another Augur) and mirrors what happens there.
//!
//! For each prediction the provider:
//!
//! 1. creates the upstream prediction (`POST /v1/models/{owner}/{name}/predictions`, or
//!    `POST /v1/predictions` with the configured `version`) with the operator's token, the
//!    input, every webhook event, and a webhook URL back to Augur that only this prediction can
//!    use ([`ReplicateHooks`]: an HMAC of the prediction id, never logged); an
//!    `Idempotency-Key` derived from Augur's id lets an upstream Augur answer a repeated
//!    create (after a lost answer) with the prediction it already made;
//! 2. records the upstream prediction's id in the prediction ([`Prediction::external_id`],
//!    with the start), so every node and every later run can find it, and returns
//!    [`Outcome::Submitted`];
//! 3. hears the upstream's webhooks (the prediction JSON) through
//!    [`ReplicateHooks::receive_webhook`] and turns them into transitions;
//! 4. when the worker calls `run` again (every `poll_interval`), reads the upstream
//!    prediction (`GET /v1/predictions/{id}`) and applies it the same way, so a lost or
//!    unreachable webhook only delays the result.
//!
//! Reports are cumulative and go through the state machine, so repeats, stragglers and a
//! webhook racing a poll are harmless. The final output's `http(s)` URLs (the upstream's
//! delivery URLs, which expire) are copied into Augur's file store
//! ([`OutputFiles::import_urls`]) before the prediction succeeds, except URLs that appear in
//! the input: an upstream model that echoes its input must not make Augur fetch URLs of a
//! client's choosing. Outputs reported while the prediction runs keep the upstream's URLs.
//!
//! Cancel: `POST /v1/predictions/{id}/cancel` upstream, from the worker (timeouts) and from
//! a small task per submitted prediction that notices when Augur settled it first (a user's
//! cancel). A prediction canceled while no node followed it (all restarted) is not canceled
//! upstream; the upstream then runs it to its end, and its result is ignored.
//!
//! Upstream answers map to outcomes: 401 or 403 (a bad token), 404 (no such model or
//! version), 400, 402 and 422 (the input, billing) fail the prediction with the upstream's
//! `detail`; 429 defers it without spending an attempt; 5xx and unreachable upstreams are
//! retried. A poll that gets no answer checks again later: only the model's `max_run_time`
//! bounds how long an upstream may stay unreachable while it runs a prediction.

mod hooks;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use augur_core::{Event, Logs, ModelName, Prediction, PredictionId, Secret, Status};

use crate::files::{ImportError, OutputFiles, replace_strings, visit_strings};
use crate::provider::{Outcome, Provider, ProviderError, RunContext};

pub use hooks::{CallbackError, ReplicateHooks, WebhookReceipt};

/// How long a create may take (its body carries the input, which may hold data URIs).
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a read or a cancel may take.
const QUICK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a prediction waits after a 429 without `Retry-After`.
const RATE_LIMITED_RETRY: Duration = Duration::from_secs(5);

/// Settings of one model served by an upstream Replicate-compatible API. `Debug` masks the
/// URL's credentials (the token is a [`Secret`]).
#[derive(Clone)]
pub struct ReplicateOptions {
    /// The upstream's base URL, e.g. `https://api.replicate.com` (paths start with `/v1`).
    pub url: url::Url,
    /// The upstream model, `owner/name`.
    pub model: ModelName,
    /// A version id of the upstream model; without one, the model's latest version runs.
    pub version: Option<String>,
    /// The upstream API token, sent as `Authorization: Bearer`.
    pub token: Secret,
    /// How often a submitted prediction is read back from the upstream, in case its
    /// webhooks do not arrive.
    pub poll_interval: Duration,
}

impl std::fmt::Debug for ReplicateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicateOptions")
            .field("url", &augur_core::redact::url(self.url.as_str()))
            .field("model", &self.model)
            .field("version", &self.version)
            .field("token", &self.token)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

/// A prediction as the upstream shows it (its webhooks and `GET /v1/predictions/{id}`).
/// Unknown fields are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct UpstreamPrediction {
    /// The upstream's id of it.
    #[serde(default)]
    pub id: Option<String>,
    /// `starting`, `processing`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    /// Everything logged so far.
    #[serde(default)]
    pub logs: Option<String>,
    /// The output so far, or the final output.
    #[serde(default)]
    pub output: Option<Value>,
    /// Why it failed (usually a string).
    #[serde(default)]
    pub error: Option<Value>,
    /// Timings and the model's own metrics.
    #[serde(default)]
    pub metrics: Option<Map<String, Value>>,
}

/// What an upstream prediction means for Augur's.
#[derive(Clone, Debug, PartialEq)]
enum Mapped {
    /// Not started upstream: nothing to report.
    Waiting,
    /// Running: logs, output so far and metrics.
    Running(Event),
    /// Finished with this output (after the last progress report).
    Succeeded(Event, Value),
    /// Failed for this reason.
    Failed(Event, String),
    /// Canceled upstream.
    Canceled(Event),
}

impl Mapped {
    /// The transitions that report it, or none.
    fn into_events(self) -> Vec<Event> {
        match self {
            Mapped::Waiting => Vec::new(),
            Mapped::Running(progress) => vec![progress],
            // A terminal report follows a `processing` one, so that a prediction whose start
            // was not recorded yet may still settle.
            Mapped::Succeeded(progress, output) => vec![progress, Event::succeeded(output)],
            Mapped::Failed(progress, error) => vec![progress, Event::failed(error)],
            Mapped::Canceled(progress) => vec![progress, Event::canceled()],
        }
    }

    fn is_terminal(&self) -> bool {
        matches!(
            self,
            Mapped::Succeeded(..) | Mapped::Failed(..) | Mapped::Canceled(..)
        )
    }
}

impl UpstreamPrediction {
    /// Maps it onto Augur's prediction, whose output so far is `current_output`.
    fn map(self, current_output: Option<&Value>) -> Result<Mapped, String> {
        let status = match self.status.as_str() {
            "aborted" => Status::Failed,
            other => Status::parse(other).ok_or_else(|| {
                format!(
                    "unknown prediction status {:?}",
                    other.chars().take(40).collect::<String>()
                )
            })?,
        };
        if status == Status::Starting {
            return Ok(Mapped::Waiting);
        }
        let mut progress = Event::processing();
        if let Some(logs) = self.logs {
            progress = progress.with_logs(Logs::Cumulative(logs));
        }
        progress.metrics = self.metrics.unwrap_or_default(); // Prediction::apply keeps timings Augur's own
        Ok(match status {
            Status::Starting => Mapped::Waiting,
            Status::Processing => {
                if let Some(output) = self.output
                    && !is_stale_output(current_output, &output)
                {
                    progress = progress.with_output(output);
                }
                Mapped::Running(progress)
            }
            Status::Succeeded => Mapped::Succeeded(progress, self.output.unwrap_or(Value::Null)),
            Status::Failed if self.status == "aborted" => Mapped::Failed(
                progress,
                "the upstream aborted the prediction before it ran".into(),
            ),
            Status::Failed => Mapped::Failed(progress, error_message(self.error)),
            Status::Canceled => Mapped::Canceled(progress),
        })
    }
}

/// The upstream API of one model.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// The model as Augur's clients name it.
    model: ModelName,
    /// The base URL, without a trailing slash or `/v1`.
    base: String,
    options: ReplicateOptions,
    http: reqwest::Client,
}

/// Why a call to the upstream did not give what was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Refusal {
    /// No answer: the words say why (never the URL or the token).
    Unreachable(String),
    /// An answer with this status and the detail of its problem body.
    Status {
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// A 2xx answer that is not a prediction.
    Garbled(String),
}

/// Why a call got no answer, in words fit for a prediction's logs.
fn unreachable(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the request timed out".into()
    } else if e.is_connect() {
        "the connection failed".into()
    } else {
        "the request failed".into()
    }
}

impl Upstream {
    fn new(model: ModelName, options: ReplicateOptions, http: reqwest::Client) -> Self {
        let base = options.url.as_str().trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base).to_owned();
        Self {
            model,
            base,
            options,
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with the token and reads a prediction from the answer.
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<UpstreamPrediction, Refusal> {
        let response = request
            .header(
                AUTHORIZATION,
                format!("Bearer {}", self.options.token.expose()),
            )
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                tracing::debug!(model = %self.model, error = %e, "upstream request failed");
                Refusal::Unreachable(unreachable(&e))
            })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(Refusal::Status {
                status,
                detail: problem_detail(&text),
                retry_after,
            });
        }
        serde_json::from_str(&text).map_err(|e| {
            Refusal::Garbled(format!("the upstream's answer is not a prediction: {e}"))
        })
    }

    /// Creates the upstream prediction of `id`.
    async fn create(
        &self,
        id: &PredictionId,
        input: &Value,
        webhook: &str,
    ) -> Result<UpstreamPrediction, Refusal> {
        let mut body = json!({
            "input": input,
            "webhook": webhook,
            "webhook_events_filter": ["start", "output", "logs", "completed"],
        });
        let path = match &self.options.version {
            Some(version) => {
                body["version"] = Value::String(version.clone());
                "/v1/predictions".to_owned()
            }
            None => format!("/v1/models/{}/predictions", self.options.model),
        };
        let request = self
            .http
            .post(self.url(&path))
            .header("idempotency-key", format!("augur-{id}"))
            .json(&body);
        self.call(request, SUBMIT_TIMEOUT).await
    }

    /// Reads an upstream prediction.
    async fn get(&self, upstream_id: &str) -> Result<UpstreamPrediction, Refusal> {
        let request = self
            .http
            .get(self.url(&format!("/v1/predictions/{upstream_id}")));
        self.call(request, QUICK_TIMEOUT).await
    }

    /// Asks the upstream to cancel a prediction.
    pub(crate) async fn cancel(&self, upstream_id: &str) -> Result<(), ProviderError> {
        let request = self
            .http
            .post(self.url(&format!("/v1/predictions/{upstream_id}/cancel")));
        match self.call(request, QUICK_TIMEOUT).await {
            // A prediction that already finished upstream answers 200 (Replicate) or a
            // refusal of the transition (Augur): either way nothing runs.
            Ok(_) | Err(Refusal::Garbled(_)) => Ok(()),
            Err(Refusal::Status {
                status: 404 | 409, ..
            }) => Ok(()),
            Err(Refusal::Status { status, detail, .. }) => Err(ProviderError::Retryable(format!(
                "the upstream answered {status} to the cancel: {detail}"
            ))),
            Err(Refusal::Unreachable(why)) => Err(ProviderError::Retryable(format!(
                "the upstream is unreachable: {why}"
            ))),
        }
    }

    /// The error a refused create means.
    fn create_refused(&self, refusal: Refusal) -> Result<Outcome, ProviderError> {
        let target = match &self.options.version {
            Some(version) => format!("version {version} of {}", self.options.model),
            None => format!("model {}", self.options.model),
        };
        match refusal {
            Refusal::Unreachable(why) => Err(ProviderError::Retryable(format!(
                "the upstream is unreachable: {why}"
            ))),
            Refusal::Garbled(why) => Err(ProviderError::Retryable(why)),
            Refusal::Status {
                status: 429,
                retry_after,
                ..
            } => Ok(Outcome::Deferred {
                retry_after: retry_after
                    .unwrap_or(RATE_LIMITED_RETRY)
                    .min(Duration::from_secs(300)),
            }),
            Refusal::Status { status, detail, .. } => Err(match status {
                401 | 403 => ProviderError::Failed(format!(
                    "the upstream refused the configured token ({status}): {detail}"
                )),
                404 => ProviderError::Failed(format!(
                    "the upstream has no {target} ({status}): {detail}"
                )),
                400 | 402 | 409 | 413 | 422 => ProviderError::Failed(format!(
                    "the upstream rejected the prediction ({status}): {detail}"
                )),
                _ => ProviderError::Retryable(format!("the upstream answered {status}: {detail}")),
            }),
        }
    }
}

/// Runs one model's predictions on an upstream Replicate-compatible API.
#[derive(Debug)]
pub struct ReplicateProvider {
    upstream: Arc<Upstream>,
    hooks: Arc<ReplicateHooks>,
}

impl ReplicateProvider {
    /// A provider for `model` (as Augur's clients name it), forwarding to the upstream of
    /// `options`, called back through `hooks`.
    pub fn new(hooks: Arc<ReplicateHooks>, model: ModelName, options: ReplicateOptions) -> Self {
        hooks.add_model(&model);
        let upstream = Arc::new(Upstream::new(model, options, hooks.http().clone()));
        Self { upstream, hooks }
    }

    fn poll_interval(&self) -> Duration {
        self.upstream.options.poll_interval
    }

    /// Creates the upstream prediction and records its id.
    async fn submit(&self, ctx: &RunContext) -> Result<Outcome, ProviderError> {
        let id = &ctx.prediction.id;
        let webhook = self.hooks.webhook_url(id);
        let created = match self
            .upstream
            .create(id, &ctx.prediction.input, &webhook)
            .await
        {
            Ok(created) => created,
            Err(refusal) => {
                if let Refusal::Status { status, .. } = &refusal {
                    tracing::info!(prediction_id = %id, model = %self.upstream.model, status, "upstream refused a prediction");
                }
                return self.upstream.create_refused(refusal);
            }
        };
        let Some(upstream_id) = created.id.clone().filter(|u| valid_upstream_id(u)) else {
            return Err(ProviderError::Retryable(
                "the upstream's answer has no valid prediction id".into(),
            ));
        };
        tracing::debug!(prediction_id = %id, model = %self.upstream.model, upstream_id = %upstream_id, "submitted upstream");
        self.hooks
            .follow(id, self.upstream.clone(), upstream_id.clone());
        // The id goes into the record with the start, so later runs (on any node, after a
        // restart) poll instead of creating it again.
        ctx.progress
            .report(Event::processing().with_external_id(upstream_id))
            .await?;
        self.apply(ctx, created).await
    }

    /// Reads the upstream prediction and applies it.
    async fn check(&self, ctx: &RunContext, upstream_id: &str) -> Result<Outcome, ProviderError> {
        let id = &ctx.prediction.id;
        self.hooks
            .follow(id, self.upstream.clone(), upstream_id.to_owned());
        match self.upstream.get(upstream_id).await {
            Ok(upstream) => self.apply(ctx, upstream).await,
            Err(Refusal::Status {
                status: status @ (401 | 403),
                detail,
                ..
            }) => Err(ProviderError::Failed(format!(
                "the upstream refused the configured token ({status}): {detail}"
            ))),
            Err(Refusal::Status {
                status: 404,
                detail,
                ..
            }) => Err(ProviderError::Failed(format!(
                "the upstream no longer knows prediction {upstream_id} (404): {detail}"
            ))),
            Err(refusal) => {
                // A webhook may still come; the next check tries again. The model's maximum
                // run time bounds how long this goes on.
                tracing::warn!(prediction_id = %id, model = %self.upstream.model, reason = ?refusal, "cannot read the upstream prediction");
                Ok(Outcome::Submitted {
                    check_after: self.poll_interval(),
                })
            }
        }
    }

    /// Applies what the upstream said (a create's or a poll's answer) and says what is next.
    async fn apply(
        &self,
        ctx: &RunContext,
        upstream: UpstreamPrediction,
    ) -> Result<Outcome, ProviderError> {
        let id = &ctx.prediction.id;
        let mapped = upstream
            .map(ctx.prediction.output.as_ref())
            .map_err(|why| ProviderError::Retryable(format!("the upstream answered {why}")))?;
        if mapped.is_terminal() {
            self.hooks.ended_upstream(id);
        }
        let submitted = Ok(Outcome::Submitted {
            check_after: self.poll_interval(),
        });
        match mapped {
            Mapped::Waiting => submitted,
            Mapped::Running(progress) => {
                ctx.progress.report(progress).await?;
                submitted
            }
            Mapped::Succeeded(progress, output) => {
                ctx.progress.report(progress).await?;
                let Some(_importing) = self.hooks.begin_import(id) else {
                    // A webhook's copy of the output is under way; it settles the prediction.
                    return Ok(Outcome::Submitted {
                        check_after: self.poll_interval().min(Duration::from_secs(1)),
                    });
                };
                let output = import_outputs(&ctx.files, id, &ctx.prediction.input, output)
                    .await
                    .map_err(|e| ProviderError::Failed(e.to_string()))?;
                Ok(Outcome::Succeeded(output))
            }
            Mapped::Failed(progress, error) => {
                ctx.progress.report(progress).await?;
                Err(ProviderError::Failed(error))
            }
            canceled @ Mapped::Canceled(_) => {
                self.hooks.settle(id, canceled.into_events()).await;
                Err(ProviderError::Stopped)
            }
        }
    }
}

#[async_trait]
impl Provider for ReplicateProvider {
    /// It fetches inputs itself, without Augur's token.
    fn file_inputs(&self) -> crate::files::FileInputs {
        crate::files::FileInputs::SignedUrl
    }

    async fn run(&self, ctx: RunContext) -> Result<Outcome, ProviderError> {
        let known = ctx
            .prediction
            .external_id
            .clone()
            .or_else(|| self.hooks.upstream_id(&ctx.prediction.id));
        match known {
            Some(upstream_id) => self.check(&ctx, &upstream_id).await,
            None => self.submit(&ctx).await,
        }
    }

    async fn cancel(&self, prediction: &Prediction) -> Result<(), ProviderError> {
        if self.hooks.has_ended_upstream(&prediction.id) {
            // The upstream's own report settled it (the worker asks after any settlement).
            return Ok(());
        }
        let known = prediction
            .external_id
            .clone()
            .or_else(|| self.hooks.upstream_id(&prediction.id));
        let upstream_id = match known {
            Some(upstream_id) => upstream_id,
            // The snapshot predates the submission: read the record.
            None => match self.hooks.stored_upstream_id(&prediction.id).await {
                Some(upstream_id) => upstream_id,
                None => return Ok(()),
            },
        };
        self.hooks.ended_upstream(&prediction.id);
        self.upstream.cancel(&upstream_id).await
    }
}

/// Copies the `http(s)` URLs of a final output into the file store, except those that appear
/// in the prediction's input (see the module docs).
pub(crate) async fn import_outputs(
    files: &OutputFiles,
    id: &PredictionId,
    input: &Value,
    output: Value,
) -> Result<Value, ImportError> {
    let mut given = HashSet::new();
    visit_strings(input, &mut |s| {
        given.insert(s.to_owned());
    });
    let mut wanted: Vec<String> = Vec::new();
    visit_strings(&output, &mut |s| {
        if !given.contains(s) && !wanted.iter().any(|w| w == s) {
            wanted.push(s.to_owned());
        }
    });
    if wanted.is_empty() {
        return Ok(output);
    }
    // `import_urls` leaves strings that are not URLs (and Augur's own URLs) as they are.
    let list = Value::Array(wanted.iter().cloned().map(Value::String).collect());
    let Value::Array(copied) = files.import_urls(id, list).await? else {
        unreachable!("import_urls keeps the shape of its value")
    };
    let copies: HashMap<String, String> = wanted
        .into_iter()
        .zip(copied)
        .filter_map(|(from, to)| match to {
            Value::String(to) if to != from => Some((from, to)),
            _ => None,
        })
        .collect();
    Ok(replace_strings(output, &|s| copies.get(s).cloned()))
}

/// An upstream id goes into URL paths: letters, digits, `-` and `_` only.
fn valid_upstream_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The upstream's `error`: a string, or an object with a message.
fn error_message(error: Option<Value>) -> String {
    let text = match error {
        Some(Value::String(s)) => s,
        Some(Value::Object(map)) => ["detail", "message", "error"]
            .iter()
            .find_map(|k| map.get(*k).and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| Value::Object(map).to_string()),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    if text.trim().is_empty() {
        "the upstream prediction failed without saying why".into()
    } else {
        truncate(&text, 2000)
    }
}

/// The `detail` of an RFC 7807 problem body (Replicate's and Augur's errors), else its
/// `title`, else the body itself, shortened.
fn problem_detail(body: &str) -> String {
    let value = serde_json::from_str::<Value>(body).ok();
    let field = |k: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let text = field("detail")
        .or_else(|| field("title"))
        .or_else(|| field("error"))
        .unwrap_or_else(|| body.trim().to_owned());
    if text.is_empty() {
        "no details given".into()
    } else {
        truncate(&text, 500)
    }
}

/// An output list that is a strict prefix of the one stored is an older report's.
fn is_stale_output(current: Option<&Value>, incoming: &Value) -> bool {
    match (current, incoming) {
        (Some(Value::Array(have)), Value::Array(new)) => {
            new.len() < have.len() && have.starts_with(new)
        }
        _ => false,
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(value: Value) -> UpstreamPrediction {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn upstream_predictions_map_onto_reports() {
        assert_eq!(
            upstream(json!({"id": "u1", "status": "starting"})).map(None),
            Ok(Mapped::Waiting)
        );
        let Ok(Mapped::Running(progress)) = upstream(json!({
            "id": "u1", "status": "processing", "logs": "a\n", "output": ["x"],
            "metrics": {"predict_time": 1.0, "tokens": 3}
        }))
        .map(Some(&json!(["x", "y"]))) else {
            panic!("processing maps to progress")
        };
        assert_eq!(progress.output, None, "an older output list is stale");
        assert_eq!(progress.logs, Some(Logs::Cumulative("a\n".into())));
        assert_eq!(progress.metrics.get("tokens"), Some(&json!(3)));

        let done = upstream(json!({"status": "succeeded", "output": "hi", "logs": null}));
        let Ok(Mapped::Succeeded(progress, output)) = done.map(None) else {
            panic!("succeeded")
        };
        assert_eq!(output, json!("hi"));
        assert_eq!(progress.logs, None);

        let failed = upstream(json!({"status": "failed", "error": "ValueError: boom"}));
        assert!(matches!(failed.map(None), Ok(Mapped::Failed(_, e)) if e == "ValueError: boom"));
        let silent = upstream(json!({"status": "failed", "error": null}));
        assert!(
            matches!(silent.map(None), Ok(Mapped::Failed(_, e)) if e.contains("without saying why"))
        );
        let canceled = upstream(json!({"status": "canceled"})).map(None).unwrap();
        assert_eq!(canceled.clone().into_events().len(), 2);
        assert!(canceled.is_terminal());
        assert!(upstream(json!({"status": "exploded"})).map(None).is_err());
    }

    #[test]
    fn problem_bodies_give_their_detail() {
        assert_eq!(
            problem_detail(
                r#"{"title":"Invalid input","detail":"input.steps: too many","status":422}"#
            ),
            "input.steps: too many"
        );
        assert_eq!(
            problem_detail(r#"{"title":"Unauthenticated"}"#),
            "Unauthenticated"
        );
        assert_eq!(problem_detail("bad gateway"), "bad gateway");
        assert_eq!(problem_detail(""), "no details given");
    }

    #[test]
    fn upstream_ids_are_checked_before_they_go_into_paths() {
        assert!(valid_upstream_id("vgcm4plb7tgzlyznry5d5jkgvu"));
        assert!(valid_upstream_id("a-b_c"));
        assert!(!valid_upstream_id(""));
        assert!(!valid_upstream_id("../admin"));
        assert!(!valid_upstream_id("a/b"));
    }

    #[tokio::test]
    async fn urls_from_the_input_are_not_fetched() {
        let files = OutputFiles::in_memory("http://augur.test");
        let id = PredictionId::parse("p1").unwrap();
        // Nothing listens there: a fetch would fail.
        let given = "http://127.0.0.1:9/secret.png";
        let output =
            json!({"echo": given, "text": "not a url", "own": "http://augur.test/files/x"});
        let input = json!({"image": given});
        assert_eq!(
            import_outputs(&files, &id, &input, output.clone()).await,
            Ok(output)
        );
        let err = import_outputs(&files, &id, &json!({}), json!([given]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
    }

    #[test]
    fn the_base_url_may_end_in_v1() {
        let http = reqwest::Client::new();
        let options = |url: &str| ReplicateOptions {
            url: url::Url::parse(url).unwrap(),
            model: ModelName::parse("acme/up").unwrap(),
            version: None,
            token: Secret::new("r8_secret"),
            poll_interval: Duration::from_secs(1),
        };
        let name = ModelName::parse("acme/local").unwrap();
        for url in ["https://api.replicate.com", "https://api.replicate.com/v1/"] {
            let upstream = Upstream::new(name.clone(), options(url), http.clone());
            assert_eq!(
                upstream.url("/v1/predictions"),
                "https://api.replicate.com/v1/predictions"
            );
            assert!(!format!("{upstream:?}").contains("r8_secret"));
        }
    }

    #[test]
    fn refused_creates_fail_defer_or_retry() {
        let upstream = Upstream::new(
            ModelName::parse("acme/local").unwrap(),
            ReplicateOptions {
                url: url::Url::parse("http://up.test").unwrap(),
                model: ModelName::parse("acme/up").unwrap(),
                version: None,
                token: Secret::new("t"),
                poll_interval: Duration::from_secs(1),
            },
            reqwest::Client::new(),
        );
        let status = |status: u16, detail: &str| Refusal::Status {
            status,
            detail: detail.into(),
            retry_after: None,
        };
        assert_eq!(
            upstream.create_refused(status(401, "Invalid token")),
            Err(ProviderError::Failed(
                "the upstream refused the configured token (401): Invalid token".into()
            ))
        );
        assert_eq!(
            upstream.create_refused(status(422, "input.steps: too many")),
            Err(ProviderError::Failed(
                "the upstream rejected the prediction (422): input.steps: too many".into()
            ))
        );
        assert!(
            matches!(upstream.create_refused(status(404, "x")), Err(ProviderError::Failed(e)) if e.contains("no model acme/up"))
        );
        assert!(matches!(
            upstream.create_refused(status(429, "slow down")),
            Ok(Outcome::Deferred { .. })
        ));
        assert!(matches!(
            upstream.create_refused(status(502, "x")),
            Err(ProviderError::Retryable(_))
        ));
        assert!(matches!(
            upstream.create_refused(Refusal::Unreachable("the connection failed".into())),
            Err(ProviderError::Retryable(e)) if e == "the upstream is unreachable: the connection failed"
        ));
    }
}
