//! [`CogHooks`]: how Cog model servers call Augur back, shared by every Cog model of a
//! server: per-prediction webhook tokens, the webhook and upload receivers the API serves,
//! and the table of predictions this process has on model servers.
//!
//! A webhook URL carries an HMAC of its prediction id under a key derived from the admin
//! token, so it works for that prediction only, stays valid across restarts and on every
//! node that shares the admin token, and needs no storage. Tokens are never logged.
//!
//! coglet's webhooks carry the prediction's whole state so far (cumulative logs and output).
//! They are turned into transitions through [`Predictions`], so the state machine makes
//! repeats and stragglers harmless: a stale log or output report changes nothing, a report
//! after the prediction settled is refused and ignored (the webhook still gets a 2xx, so
//! coglet does not retry it).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use augur_core::{Event, Logs, ModelName, PredictionId, Predictions, Secret, Status};

use super::CogServer;
use crate::callback::{CallbackKey, hex};
use crate::files::{FilesError, OutputFiles};

/// How often the task that follows a submitted prediction re-reads it from the store, in
/// case a settlement elsewhere was not announced to this process.
const FOLLOW_RECHECK: Duration = Duration::from_secs(5);

/// A webhook body from coglet: the prediction's state so far.
#[derive(Clone, Debug, Deserialize)]
pub struct WebhookPayload {
    /// The prediction id (the one Augur gave).
    #[serde(default)]
    pub id: Option<String>,
    /// `processing`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    /// Everything logged so far.
    #[serde(default)]
    pub logs: Option<String>,
    /// The output so far, or the final output.
    #[serde(default)]
    pub output: Option<Value>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Metrics (`predict_time` and the model's own).
    #[serde(default)]
    pub metrics: Option<Map<String, Value>>,
}

/// What a webhook did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookReceipt {
    /// The prediction changed.
    Applied,
    /// Nothing new (a repeat).
    Unchanged,
    /// Not applicable any more (the prediction settled, or the report went backwards).
    Ignored,
}

/// Why a callback from a model server was refused.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The URL's token is not the prediction's.
    #[error("invalid callback token")]
    InvalidToken,
    /// No such prediction (or not one a Cog model runs).
    #[error("prediction {0} not found")]
    NotFound(PredictionId),
    /// The prediction has settled; nothing can be added to it.
    #[error("prediction {0} is not running")]
    NotRunning(PredictionId),
    /// The request does not make sense.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] augur_core::Error),
    /// The file store failed.
    #[error("cannot store an output file: {0}")]
    Files(#[from] FilesError),
}

/// A prediction this process has on a model server.
#[derive(Debug)]
struct Submission {
    server: Arc<CogServer>,
    /// The server process's identity when it took the prediction.
    epoch: Option<String>,
    /// Since when checks have found the server down.
    down_since: Option<Instant>,
    /// The server reported the end itself (so there is nothing to cancel there).
    ended_on_server: bool,
}

/// The `--upload-url` of `model`'s server for an Augur reached at `callback_url`, with
/// tokens derived from `root` (the admin token): what `augur cog upload-url` prints.
pub fn upload_url_for(root: &Secret, callback_url: &str, model: &ModelName) -> String {
    let key = CallbackKey::derive(root, COG_LABEL);
    upload_url(callback_url.trim_end_matches('/'), &key, model)
}

fn upload_url(callback_url: &str, key: &CallbackKey, model: &ModelName) -> String {
    format!(
        "{callback_url}/internal/cog/uploads/{model}/{}/",
        key.upload_token(model)
    )
}

const COG_LABEL: &[u8] = b"augur cog callbacks v1";

/// Callbacks from Cog model servers, and the predictions this process has on them.
pub struct CogHooks {
    key: CallbackKey,
    /// Where model servers reach Augur, without a trailing slash.
    callback_url: String,
    service: Predictions,
    files: OutputFiles,
    http: reqwest::Client,
    submissions: Mutex<HashMap<PredictionId, Submission>>,
    models: RwLock<HashSet<ModelName>>,
}

impl fmt::Debug for CogHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CogHooks")
            .field("key", &"<redacted>")
            .field("callback_url", &self.callback_url)
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

impl CogHooks {
    /// Callbacks reaching Augur at `callback_url`, with tokens derived from `root` (the admin
    /// token), writing through `service` and storing files in `files`.
    pub fn new(
        service: Predictions,
        files: OutputFiles,
        root: &Secret,
        callback_url: &str,
    ) -> Arc<Self> {
        let key = CallbackKey::derive(root, COG_LABEL);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client with default TLS settings");
        Arc::new(Self {
            key,
            callback_url: callback_url.trim_end_matches('/').to_owned(),
            service,
            files,
            http,
            submissions: Mutex::new(HashMap::new()),
            models: RwLock::new(HashSet::new()),
        })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn add_model(&self, model: &ModelName) {
        self.models
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(model.clone());
    }

    /// Whether a Cog provider runs `model`.
    pub fn is_cog_model(&self, model: &ModelName) -> bool {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(model)
    }

    /// The URL to give `model`'s server as `--upload-url` (secret: it carries the model's
    /// upload token). Only that model's running predictions take files through it.
    pub fn upload_url(&self, model: &ModelName) -> String {
        upload_url(&self.callback_url, &self.key, model)
    }

    /// Whether `token` is `model`'s upload token (compared in constant time).
    pub fn upload_token_matches(&self, model: &ModelName, token: &str) -> bool {
        self.key.upload_matches(model, token)
    }

    /// The webhook URL of one prediction (secret: never log it).
    pub(crate) fn webhook_url(&self, id: &PredictionId) -> String {
        let token = self.key.token(id);
        format!(
            "{}/internal/cog/predictions/{id}/webhook/{token}",
            self.callback_url
        )
    }

    /// Whether `token` is the webhook token of `id` (compared in constant time).
    pub fn token_matches(&self, id: &PredictionId, token: &str) -> bool {
        self.key.matches(id, token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PredictionId, Submission>> {
        self.submissions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many predictions this process has on `model`'s server.
    pub(crate) fn running_on(&self, model: &ModelName) -> usize {
        self.lock()
            .values()
            .filter(|s| s.server.model == *model)
            .count()
    }

    /// The server epoch a prediction was submitted under, if this process submitted it.
    pub(crate) fn submitted(&self, id: &PredictionId) -> Option<Option<String>> {
        self.lock().get(id).map(|s| s.epoch.clone())
    }

    pub(crate) fn mark_up(&self, id: &PredictionId) {
        if let Some(s) = self.lock().get_mut(id) {
            s.down_since = None;
        }
    }

    /// Records that the server was found down at `now`; returns for how long it has been.
    pub(crate) fn mark_down(&self, id: &PredictionId, now: Instant) -> Duration {
        match self.lock().get_mut(id) {
            Some(s) => now.duration_since(*s.down_since.get_or_insert(now)),
            None => Duration::ZERO,
        }
    }

    /// Counts a prediction as on `server` until the returned reservation is dropped, or,
    /// once kept, until the prediction settles.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        id: &PredictionId,
        server: Arc<CogServer>,
        epoch: Option<String>,
    ) -> Reservation {
        self.lock().insert(
            id.clone(),
            Submission {
                server,
                epoch,
                down_since: None,
                ended_on_server: false,
            },
        );
        Reservation {
            hooks: self.clone(),
            id: Some(id.clone()),
        }
    }

    /// Follows a submitted prediction until it settles, then forgets it; if Augur settled
    /// it first (a cancel, a timeout), asks the server to stop it.
    async fn follow(self: Arc<Self>, id: PredictionId) {
        let mut watch = self.service.watch(&id);
        let mut next_read = tokio::time::Instant::now();
        let settled = loop {
            if tokio::time::Instant::now() >= next_read {
                match self.service.get_uncached(&id).await {
                    Ok(p) if p.value.is_terminal() => break true,
                    Err(augur_core::Error::NotFound(_)) => break false,
                    _ => {}
                }
                next_read = tokio::time::Instant::now() + FOLLOW_RECHECK;
            }
            tokio::select! {
                changed = watch.changed() => match changed {
                    Some(p) if p.value.is_terminal() => break true,
                    Some(_) => {}
                    None => break false,
                },
                _ = tokio::time::sleep_until(next_read) => {}
            }
        };
        let Some(submission) = self.lock().remove(&id) else {
            return;
        };
        if settled
            && !submission.ended_on_server
            && let Err(e) = submission.server.cancel(&id).await
        {
            tracing::debug!(prediction_id = %id, error = %e, "cog cancel not delivered");
        }
    }

    /// Applies a webhook from coglet to prediction `id`, whose URL carried `token`.
    pub async fn receive_webhook(
        &self,
        id: &PredictionId,
        token: &str,
        payload: WebhookPayload,
    ) -> Result<WebhookReceipt, HookError> {
        if !self.token_matches(id, token) {
            return Err(HookError::InvalidToken);
        }
        if let Some(body_id) = &payload.id
            && body_id != id.as_str()
        {
            return Err(HookError::Invalid(format!(
                "the webhook body is about prediction {body_id:?}, the URL about {id}"
            )));
        }
        let status = Status::parse(&payload.status).ok_or_else(|| {
            HookError::Invalid(format!(
                "unknown prediction status {:?}",
                payload.status.chars().take(40).collect::<String>()
            ))
        })?;
        if status == Status::Starting {
            return Ok(WebhookReceipt::Ignored);
        }
        if status.is_terminal()
            && let Some(s) = self.lock().get_mut(id)
        {
            s.ended_on_server = true;
        }
        let current = match self.service.get(id).await {
            Ok(p) => p.value,
            Err(augur_core::Error::NotFound(_)) => return Err(HookError::NotFound(id.clone())),
            Err(e) => return Err(e.into()),
        };
        if current.is_terminal() {
            // A repeat of the terminal webhook, or one that lost to a cancel or timeout.
            return Ok(WebhookReceipt::Ignored);
        }
        let output = match payload.output {
            Some(output) => Some(self.store_data_uris(id, output).await?),
            None => None,
        };
        let mut progress = Event::processing();
        if let Some(logs) = payload.logs {
            progress = progress.with_logs(Logs::Cumulative(logs));
        }
        progress.metrics = payload.metrics.unwrap_or_default(); // Prediction::apply keeps timings Augur's own
        // A terminal report follows a `processing` one, so that a prediction whose start
        // was not recorded yet (a lost or late first webhook) may still settle.
        let events = match status {
            Status::Processing => {
                if let Some(output) = output
                    && !is_stale_output(current.output.as_ref(), &output)
                {
                    progress = progress.with_output(output);
                }
                vec![progress]
            }
            Status::Succeeded => vec![progress, Event::succeeded(output.unwrap_or(Value::Null))],
            Status::Failed => vec![progress, Event::failed(clean_error(payload.error))],
            Status::Canceled => vec![progress, Event::canceled()],
            Status::Starting => unreachable!("ignored above"),
        };
        match self.service.transition_all(id, &events, &[]).await {
            Ok(t) if t.changed => Ok(WebhookReceipt::Applied),
            Ok(_) => Ok(WebhookReceipt::Unchanged),
            Err(augur_core::Error::Transition(e)) => {
                tracing::debug!(prediction_id = %id, reason = %e, "cog webhook ignored");
                Ok(WebhookReceipt::Ignored)
            }
            Err(augur_core::Error::NotFound(_)) => Err(HookError::NotFound(id.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a file `model`'s server uploads for prediction `id` (its `X-Prediction-ID`)
    /// and returns its public URL. Only a running prediction of that model takes uploads (the
    /// caller checked the model's upload token).
    pub async fn receive_upload(
        &self,
        model: &ModelName,
        id: &PredictionId,
        name: &str,
        bytes: Bytes,
    ) -> Result<String, HookError> {
        let current = match self.service.get(id).await {
            Ok(p) => p.value,
            Err(augur_core::Error::NotFound(_)) => return Err(HookError::NotFound(id.clone())),
            Err(e) => return Err(e.into()),
        };
        if !self.is_cog_model(&current.model) || current.model != *model {
            return Err(HookError::NotFound(id.clone()));
        }
        if current.is_terminal() {
            return Err(HookError::NotRunning(id.clone()));
        }
        Ok(self.files.put(id, name, bytes).await?)
    }

    /// Replaces every base64 `data:` URI in `value` by the URL of a stored file. The key
    /// depends on the prediction and the content only, so the cumulative webhooks that
    /// repeat an output store it once.
    async fn store_data_uris(&self, id: &PredictionId, value: Value) -> Result<Value, HookError> {
        let mut found = Vec::new();
        collect_data_uris(&value, &mut found);
        if found.is_empty() {
            return Ok(value);
        }
        let mut urls = HashMap::new();
        for uri in found {
            if urls.contains_key(&uri) {
                continue;
            }
            let Some((mime, bytes)) = decode_data_uri(&uri) else {
                continue;
            };
            let digest = Sha256::digest(&bytes);
            let token = hex(&self.key.mac(&[b"file", id.as_str().as_bytes(), &digest]));
            let name = format!("output.{}", extension_for(&mime));
            let url = self
                .files
                .put_keyed(id, &token[..32], &name, Bytes::from(bytes))
                .await?;
            urls.insert(uri, url);
        }
        Ok(replace_data_uris(value, &urls))
    }
}

/// A submission being made; dropped without [`Reservation::keep`], it is forgotten.
pub(crate) struct Reservation {
    hooks: Arc<CogHooks>,
    id: Option<PredictionId>,
}

impl Reservation {
    /// The server took the prediction: follow it until it settles.
    pub(crate) fn keep(mut self) {
        if let Some(id) = self.id.take() {
            tokio::spawn(self.hooks.clone().follow(id));
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.hooks.lock().remove(&id);
        }
    }
}

/// coglet says `Prediction failed: Prediction failed: ValueError: ...`; keep the cause.
fn clean_error(error: Option<String>) -> String {
    let Some(mut text) = error.filter(|e| !e.trim().is_empty()) else {
        return "the model failed without saying why".into();
    };
    while let Some(rest) = text.strip_prefix("Prediction failed: ") {
        text = rest.to_owned();
    }
    text
}

/// An output list that is a strict prefix of the one stored is an older webhook's.
fn is_stale_output(current: Option<&Value>, incoming: &Value) -> bool {
    match (current, incoming) {
        (Some(Value::Array(have)), Value::Array(new)) => {
            new.len() < have.len() && have.starts_with(new)
        }
        _ => false,
    }
}

fn collect_data_uris(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.starts_with("data:") => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_data_uris(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_data_uris(v, out)),
        _ => {}
    }
}

fn replace_data_uris(value: Value, urls: &HashMap<String, String>) -> Value {
    match value {
        Value::String(s) => match urls.get(&s) {
            Some(url) => Value::String(url.clone()),
            None => Value::String(s),
        },
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| replace_data_uris(v, urls))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, replace_data_uris(v, urls)))
                .collect(),
        ),
        other => other,
    }
}

/// `data:image/png;base64,AAAA` → (`image/png`, bytes). Only base64 URIs are decoded (coglet
/// sends no others).
fn decode_data_uri(uri: &str) -> Option<(String, Vec<u8>)> {
    let (meta, data) = uri.strip_prefix("data:")?.split_once(',')?;
    let mut params = meta.split(';');
    let mime = params
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()?;
    Some((mime, bytes))
}

/// A file extension for a media type, so the file is served with that type again.
fn extension_for(mime: &str) -> &'static str {
    match mime {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/svg+xml" => "svg",
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "text/plain" => "txt",
        "application/json" => "json",
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_core::store::memory::MemoryStore;
    use augur_core::{AccountId, CreateRequest, ServiceConfig, WebhookEvents};
    use serde_json::json;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\nfake";

    fn setup() -> (Arc<CogHooks>, Predictions, OutputFiles) {
        let service = Predictions::new(Arc::new(MemoryStore::new()), ServiceConfig::default());
        let files = OutputFiles::in_memory("http://augur.test");
        let hooks = CogHooks::new(
            service.clone(),
            files.clone(),
            &Secret::new("test-admin-token-0123456789"),
            "http://augur.test/",
        );
        hooks.add_model(&ModelName::parse("acme/sketch").unwrap());
        (hooks, service, files)
    }

    async fn create(service: &Predictions) -> PredictionId {
        let created = service
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
            .unwrap();
        created.prediction().value.id.clone()
    }

    fn token_of(hooks: &CogHooks, id: &PredictionId) -> String {
        hooks.webhook_url(id).rsplit('/').next().unwrap().to_owned()
    }

    fn payload(value: Value) -> WebhookPayload {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn tokens_belong_to_one_prediction() {
        let (hooks, _, _) = setup();
        let a = PredictionId::parse("a1").unwrap();
        let b = PredictionId::parse("b1").unwrap();
        let url = hooks.webhook_url(&a);
        assert!(url.starts_with("http://augur.test/internal/cog/predictions/a1/webhook/"));
        let token = token_of(&hooks, &a);
        assert_eq!(token.len(), 64);
        assert!(hooks.token_matches(&a, &token));
        assert!(!hooks.token_matches(&b, &token));
        assert!(!hooks.token_matches(&a, "zz"));
        assert!(!hooks.token_matches(&a, ""));
        assert!(!format!("{hooks:?}").contains(&token));
    }

    #[tokio::test]
    async fn cumulative_webhooks_settle_once_whatever_their_order() {
        let (hooks, service, files) = setup();
        let id = create(&service).await;
        let token = token_of(&hooks, &id);
        let uri = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(PNG)
        );
        let start = payload(json!({"id": id, "status": "processing", "logs": "", "metrics": {}}));
        let logs2 =
            payload(json!({"id": id, "status": "processing", "logs": "a\nb\n", "metrics": {}}));
        let logs1 =
            payload(json!({"id": id, "status": "processing", "logs": "a\n", "metrics": {}}));
        let out = payload(
            json!({"id": id, "status": "processing", "logs": "a\nb\n", "output": [uri], "metrics": {"steps": 2}}),
        );
        let done = payload(
            json!({"id": id, "status": "succeeded", "logs": "a\nb\n", "output": uri,
                                  "metrics": {"predict_time": 1.5, "steps": 2}}),
        );
        let late = payload(
            json!({"id": id, "status": "failed", "error": "Prediction failed: Prediction failed: boom"}),
        );

        let receive = |p: WebhookPayload| {
            let hooks = hooks.clone();
            let (id, token) = (id.clone(), token.clone());
            async move { hooks.receive_webhook(&id, &token, p).await.unwrap() }
        };
        assert_eq!(receive(start.clone()).await, WebhookReceipt::Applied);
        assert_eq!(receive(logs2).await, WebhookReceipt::Applied);
        assert_eq!(receive(logs1).await, WebhookReceipt::Unchanged);
        assert_eq!(receive(out).await, WebhookReceipt::Applied);
        assert_eq!(receive(done.clone()).await, WebhookReceipt::Applied);
        assert_eq!(receive(done).await, WebhookReceipt::Ignored);
        assert_eq!(receive(late).await, WebhookReceipt::Ignored);
        assert_eq!(receive(start).await, WebhookReceipt::Ignored);

        let p = service.get(&id).await.unwrap().value;
        assert_eq!(p.status, Status::Succeeded);
        assert_eq!(p.logs, "a\nb\n");
        assert_eq!(p.metrics.extra.get("steps"), Some(&json!(2)));
        assert!(p.metrics.extra.get("predict_time").is_none());
        let url = p.output.unwrap().as_str().unwrap().to_owned();
        let key = url.strip_prefix("/files/").unwrap();
        assert!(key.ends_with("/output.png"), "{key}");
        let file = files.get(key).await.unwrap().unwrap();
        assert_eq!(&file.bytes[..], PNG);
        // The output webhook and the terminal one stored the same file once.
        assert_eq!(files.delete_for(&id).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_terminal_webhook_settles_a_prediction_not_yet_started() {
        let (hooks, service, _) = setup();
        let id = create(&service).await;
        let token = token_of(&hooks, &id);
        let failed = payload(json!({"id": id, "status": "failed", "logs": "x\n",
                                    "error": "Prediction failed: Prediction failed: ValueError: boom"}));
        assert_eq!(
            hooks.receive_webhook(&id, &token, failed).await.unwrap(),
            WebhookReceipt::Applied
        );
        let p = service.get(&id).await.unwrap().value;
        assert_eq!(p.status, Status::Failed);
        assert_eq!(p.error.as_deref(), Some("ValueError: boom"));
        assert_eq!(p.logs, "x\n");
        assert!(p.started_at.is_some());
    }

    #[tokio::test]
    async fn wrong_tokens_ids_and_statuses_are_refused() {
        let (hooks, service, _) = setup();
        let id = create(&service).await;
        let other = create(&service).await;
        let token = token_of(&hooks, &id);
        let p = payload(json!({"id": id, "status": "processing"}));
        assert!(matches!(
            hooks.receive_webhook(&other, &token, p.clone()).await,
            Err(HookError::InvalidToken)
        ));
        let mismatched = payload(json!({"id": other, "status": "processing"}));
        assert!(matches!(
            hooks.receive_webhook(&id, &token, mismatched).await,
            Err(HookError::Invalid(_))
        ));
        let odd = payload(json!({"id": id, "status": "exploded"}));
        assert!(matches!(
            hooks.receive_webhook(&id, &token, odd).await,
            Err(HookError::Invalid(_))
        ));
        let gone = PredictionId::parse("gone").unwrap();
        let gone_token = token_of(&hooks, &gone);
        assert!(matches!(
            hooks
                .receive_webhook(&gone, &gone_token, payload(json!({"status": "processing"})))
                .await,
            Err(HookError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn uploads_go_to_running_predictions_of_their_model_only() {
        let (hooks, service, files) = setup();
        let id = create(&service).await;
        let model = service.get(&id).await.unwrap().value.model;
        let url = hooks
            .receive_upload(&model, &id, "out.png", Bytes::from_static(PNG))
            .await
            .unwrap();
        let again = hooks
            .receive_upload(&model, &id, "out.png", Bytes::from_static(PNG))
            .await
            .unwrap();
        assert_ne!(url, again, "same basename, unique keys");
        let key = url.strip_prefix("/files/").unwrap();
        assert_eq!(&files.get(key).await.unwrap().unwrap().bytes[..], PNG);
        // Another model's upload URL does not reach this model's predictions.
        let other = ModelName::parse("acme/other").unwrap();
        assert!(matches!(
            hooks
                .receive_upload(&other, &id, "out.png", Bytes::new())
                .await,
            Err(HookError::NotFound(_))
        ));
        service.transition(&id, &Event::canceled()).await.unwrap();
        assert!(matches!(
            hooks
                .receive_upload(&model, &id, "out.png", Bytes::new())
                .await,
            Err(HookError::NotRunning(_))
        ));
        let missing = PredictionId::parse("missing").unwrap();
        assert!(matches!(
            hooks
                .receive_upload(&model, &missing, "out.png", Bytes::new())
                .await,
            Err(HookError::NotFound(_))
        ));
    }

    #[test]
    fn upload_urls_carry_a_token_per_model() {
        let (hooks, _, _) = setup();
        let a = ModelName::parse("acme/a").unwrap();
        let b = ModelName::parse("acme/b").unwrap();
        let url = hooks.upload_url(&a);
        let token = url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        assert!(url.contains("/internal/cog/uploads/acme/a/"), "{url}");
        assert!(hooks.upload_token_matches(&a, &token));
        assert!(!hooks.upload_token_matches(&b, &token));
        assert!(!hooks.upload_token_matches(&a, "00"));
        assert_ne!(hooks.upload_url(&b), url);
    }

    #[test]
    fn data_uris_and_errors_are_read_carefully() {
        assert_eq!(
            decode_data_uri("data:image/png;base64,aGk="),
            Some(("image/png".into(), b"hi".to_vec()))
        );
        assert_eq!(decode_data_uri("data:text/plain,hi"), None);
        assert_eq!(decode_data_uri("data:image/png;base64,!!"), None);
        assert_eq!(clean_error(None), "the model failed without saying why");
        assert_eq!(clean_error(Some("Worker crashed".into())), "Worker crashed");
        assert!(is_stale_output(Some(&json!(["a", "b"])), &json!(["a"])));
        assert!(!is_stale_output(Some(&json!(["a"])), &json!(["a", "b"])));
        assert!(!is_stale_output(Some(&json!(["a"])), &json!("a")));
    }
}
