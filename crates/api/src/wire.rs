//! The JSON shapes the API sends: Replicate's prediction object and the seeds' status object.

use serde::Serialize;
use serde_json::{Map, Value};

use augur_core::{Metrics, Prediction, Status, WebhookEvents};

/// Replicate's prediction object.
#[derive(Debug, Serialize)]
pub struct PredictionJson<'a> {
    id: &'a str,
    model: &'a str,
    version: &'a str,
    input: Value,
    output: Option<&'a Value>,
    logs: &'a str,
    error: Option<&'a str>,
    status: Status,
    created_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    urls: Urls,
    metrics: &'a Metrics,
    data_removed: bool,
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<&'a str>,
    webhook_events_filter: WebhookEvents,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    attempts: u32,
}

/// The `urls` of a prediction.
#[derive(Debug, Serialize)]
pub struct Urls {
    /// Where to read it.
    pub get: String,
    /// Where to cancel it.
    pub cancel: String,
    /// Its Server-Sent Events stream; works without an `Authorization` header.
    pub stream: String,
}

impl Urls {
    /// The URLs of a prediction under `public_url` (no trailing slash).
    pub fn of(public_url: &str, p: &Prediction) -> Self {
        let get = format!("{public_url}/v1/predictions/{}", p.id);
        Self {
            cancel: format!("{get}/cancel"),
            stream: format!("{get}/stream?token={}", p.stream_token),
            get,
        }
    }
}

impl<'a> PredictionJson<'a> {
    /// Renders a prediction with absolute URLs under `public_url`.
    pub fn new(public_url: &str, p: &'a Prediction) -> Self {
        Self {
            id: p.id.as_str(),
            model: p.model.as_str(),
            version: &p.version,
            // The clients expect an object; a tombstone's removed input is an empty one.
            input: if p.input.is_object() {
                p.input.clone()
            } else {
                Value::Object(Map::new())
            },
            output: p.output.as_ref(),
            logs: &p.logs,
            error: p.error.as_deref(),
            status: p.status,
            created_at: p.created_at.to_rfc3339(),
            started_at: p.started_at.map(|t| t.to_rfc3339()),
            completed_at: p.completed_at.map(|t| t.to_rfc3339()),
            urls: Urls::of(public_url, p),
            metrics: &p.metrics,
            data_removed: p.data_removed,
            source: "api",
            webhook: p.webhook.as_deref(),
            webhook_events_filter: p.webhook_events_filter,
            deadline: p.deadline.map(|t| t.to_rfc3339()),
            expires_at: p.expires_at.map(|t| t.to_rfc3339()),
            attempts: p.attempts,
        }
    }

    /// The form `Prefer: wait` answers with while the prediction is still running: status
    /// `starting` and no partial output, because the clients' `run()` takes any other status
    /// as finished.
    pub fn still_running(mut self) -> Self {
        if !self.status.is_terminal() {
            self.status = Status::Starting;
            self.output = None;
        }
        self
    }
}

/// The seeds' `GET /api/predictions/{id}` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedStatus<'a> {
    prediction_id: &'a str,
    status: Status,
    image_url: Option<&'a str>,
    error: Option<&'a str>,
    estimated_time: Option<u64>,
    generation_time: Option<u64>,
    created_at: i64,
    updated_at: i64,
}

impl<'a> SeedStatus<'a> {
    /// The seeds' view of a prediction (times in Unix milliseconds).
    pub fn new(p: &'a Prediction) -> Self {
        let updated = p.completed_at.or(p.started_at).unwrap_or(p.created_at);
        Self {
            prediction_id: p.id.as_str(),
            status: p.status,
            image_url: first_url(p.output.as_ref()),
            error: p.error.as_deref(),
            estimated_time: None,
            generation_time: p.metrics.predict_time.map(|s| (s * 1000.0).round() as u64),
            created_at: p.created_at.as_millis(),
            updated_at: updated.as_millis(),
        }
    }
}

/// The first URL in an output: the output itself, or the first of a list.
fn first_url(output: Option<&Value>) -> Option<&str> {
    let is_url =
        |s: &&str| s.starts_with("http://") || s.starts_with("https://") || s.starts_with("data:");
    match output? {
        Value::String(s) => Some(s.as_str()).filter(is_url),
        Value::Array(items) => items.iter().filter_map(Value::as_str).find(is_url),
        _ => None,
    }
}
