//! [`ReplicateHooks`]: how upstream Replicate-compatible APIs call Augur back, shared by every
//! Replicate model of a server: per-prediction webhook tokens, the webhook receiver the API
//! serves, and the predictions this process follows (to cancel them upstream when Augur
//! settles them first).
//!
//! A webhook URL carries an HMAC of its prediction id under a key derived from the admin token
//! (with its own label, so Cog's and Replicate's tokens differ), so it works for that
//! prediction only, stays valid across restarts and on every node that shares the admin token,
//! and needs no storage. Tokens are never logged.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use augur_core::{Event, ModelName, PredictionId, Predictions, Secret, Status};

use super::{Mapped, Upstream, UpstreamPrediction, import_outputs, valid_upstream_id};
use crate::callback::CallbackKey;
use crate::files::OutputFiles;

/// How often the task that follows a submitted prediction re-reads it from the store, in case
/// a settlement elsewhere was not announced to this process.
const FOLLOW_RECHECK: Duration = Duration::from_secs(5);

/// What a webhook did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookReceipt {
    /// The prediction changed.
    Applied,
    /// Nothing new (a repeat).
    Unchanged,
    /// Not applicable (the prediction settled, the report went backwards, or it is about an
    /// upstream prediction this one no longer uses).
    Ignored,
}

/// Why a callback from an upstream was refused.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The URL's token is not the prediction's.
    #[error("invalid callback token")]
    InvalidToken,
    /// No such prediction (or not one a Replicate model runs).
    #[error("prediction {0} not found")]
    NotFound(PredictionId),
    /// The body does not make sense.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] augur_core::Error),
}

/// A prediction this process follows.
#[derive(Debug)]
struct Followed {
    upstream: Arc<Upstream>,
    upstream_id: String,
    /// The upstream reported the end itself (so there is nothing to cancel there).
    ended_upstream: bool,
}

/// Callbacks from upstream APIs, and the predictions this process has sent there.
pub struct ReplicateHooks {
    key: CallbackKey,
    /// Where upstreams reach Augur, without a trailing slash.
    callback_url: String,
    service: Predictions,
    files: OutputFiles,
    http: reqwest::Client,
    followed: Mutex<HashMap<PredictionId, Followed>>,
    /// Predictions whose final output is being copied into the file store.
    importing: Mutex<HashSet<PredictionId>>,
    models: RwLock<HashSet<ModelName>>,
}

impl fmt::Debug for ReplicateHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicateHooks")
            .field("key", &"<redacted>")
            .field("callback_url", &self.callback_url)
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

impl ReplicateHooks {
    /// Callbacks reaching Augur at `callback_url`, with tokens derived from `root` (the admin
    /// token), writing through `service` and copying output files into `files`.
    pub fn new(
        service: Predictions,
        files: OutputFiles,
        root: &Secret,
        callback_url: &str,
    ) -> Arc<Self> {
        let key = CallbackKey::derive(root, b"augur replicate callbacks v1");
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("augur/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with default TLS settings");
        Arc::new(Self {
            key,
            callback_url: callback_url.trim_end_matches('/').to_owned(),
            service,
            files,
            http,
            followed: Mutex::new(HashMap::new()),
            importing: Mutex::new(HashSet::new()),
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

    /// Whether a Replicate provider runs `model`.
    pub fn is_replicate_model(&self, model: &ModelName) -> bool {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(model)
    }

    /// The webhook URL of one prediction (secret: never log it).
    pub(crate) fn webhook_url(&self, id: &PredictionId) -> String {
        let token = self.key.token(id);
        format!(
            "{}/internal/replicate/predictions/{id}/webhook/{token}",
            self.callback_url
        )
    }

    /// Whether `token` is the webhook token of `id` (compared in constant time).
    pub fn token_matches(&self, id: &PredictionId, token: &str) -> bool {
        self.key.matches(id, token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PredictionId, Followed>> {
        self.followed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The upstream id of a prediction this process follows.
    pub(crate) fn upstream_id(&self, id: &PredictionId) -> Option<String> {
        self.lock().get(id).map(|f| f.upstream_id.clone())
    }

    /// The upstream id recorded in the store.
    pub(crate) async fn stored_upstream_id(&self, id: &PredictionId) -> Option<String> {
        self.service.get(id).await.ok()?.value.external_id
    }

    /// Claims the copy of a prediction's final output for the caller, unless someone in this
    /// process is at it already.
    pub(crate) fn begin_import(self: &Arc<Self>, id: &PredictionId) -> Option<Importing> {
        let fresh = self
            .importing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        fresh.then(|| Importing {
            hooks: self.clone(),
            id: id.clone(),
        })
    }

    /// Copies a final output's files and settles the prediction as succeeded. A failed copy
    /// is left to the next poll, which tries again (and fails the prediction if it fails too).
    async fn finish_success(
        self: Arc<Self>,
        importing: Importing,
        input: serde_json::Value,
        output: serde_json::Value,
    ) {
        let id = &importing.id;
        match import_outputs(&self.files, id, &input, output).await {
            Ok(output) => self.settle(id, vec![Event::succeeded(output)]).await,
            Err(e) => {
                tracing::warn!(prediction_id = %id, error = %e, "output not copied; the next poll tries again");
            }
        }
    }

    /// Whether the upstream reported the end of a prediction this process follows.
    pub(crate) fn has_ended_upstream(&self, id: &PredictionId) -> bool {
        self.lock().get(id).is_some_and(|f| f.ended_upstream)
    }

    /// Notes that the upstream ended the prediction itself.
    pub(crate) fn ended_upstream(&self, id: &PredictionId) {
        if let Some(f) = self.lock().get_mut(id) {
            f.ended_upstream = true;
        }
    }

    /// Follows a prediction sent upstream until it settles (once per process), then cancels
    /// it upstream if Augur settled it first.
    pub(crate) fn follow(
        self: &Arc<Self>,
        id: &PredictionId,
        upstream: Arc<Upstream>,
        upstream_id: String,
    ) {
        let mut followed = self.lock();
        if let Some(f) = followed.get_mut(id) {
            f.upstream_id = upstream_id;
            return;
        }
        followed.insert(
            id.clone(),
            Followed {
                upstream,
                upstream_id,
                ended_upstream: false,
            },
        );
        drop(followed);
        tokio::spawn(self.clone().follow_until_settled(id.clone()));
    }

    async fn follow_until_settled(self: Arc<Self>, id: PredictionId) {
        let mut watch = self.service.watch(&id);
        let mut next_read = tokio::time::Instant::now();
        let settled = loop {
            if tokio::time::Instant::now() >= next_read {
                match self.service.get_uncached(&id).await {
                    Ok(p) if p.value.is_terminal() => break Some(p.value.status),
                    Err(augur_core::Error::NotFound(_)) => break None,
                    _ => {}
                }
                next_read = tokio::time::Instant::now() + FOLLOW_RECHECK;
            }
            tokio::select! {
                changed = watch.changed() => match changed {
                    Some(p) if p.value.is_terminal() => break Some(p.value.status),
                    Some(_) => {}
                    None => break None,
                },
                _ = tokio::time::sleep_until(next_read) => {}
            }
        };
        let Some(followed) = self.lock().remove(&id) else {
            return;
        };
        // Settled by the upstream's own report: nothing runs there any more. Otherwise
        // (a cancel, a timeout, a deleted prediction) stop it there too.
        let ended = followed.ended_upstream || settled == Some(Status::Succeeded);
        if !ended {
            match followed.upstream.cancel(&followed.upstream_id).await {
                Ok(()) => tracing::debug!(prediction_id = %id, "canceled upstream"),
                Err(e) => {
                    tracing::warn!(prediction_id = %id, error = %e, "upstream cancel not delivered");
                }
            }
        }
    }

    /// Applies transitions, ignoring refusals (the prediction settled meanwhile).
    pub(crate) async fn settle(&self, id: &PredictionId, events: Vec<Event>) {
        if let Err(e) = self.service.transition_all(id, &events, &[]).await {
            tracing::debug!(prediction_id = %id, reason = %e, "upstream report not applied");
        }
    }

    /// Applies a webhook from the upstream to prediction `id`, whose URL carried `token`.
    ///
    /// A success is applied in the background once its output files are copied, so the
    /// upstream gets its answer at once.
    pub async fn receive_webhook(
        self: &Arc<Self>,
        id: &PredictionId,
        token: &str,
        payload: UpstreamPrediction,
    ) -> Result<WebhookReceipt, CallbackError> {
        if !self.token_matches(id, token) {
            return Err(CallbackError::InvalidToken);
        }
        let current = match self.service.get(id).await {
            Ok(p) => p.value,
            Err(augur_core::Error::NotFound(_)) => return Err(CallbackError::NotFound(id.clone())),
            Err(e) => return Err(e.into()),
        };
        if !self.is_replicate_model(&current.model) {
            return Err(CallbackError::NotFound(id.clone()));
        }
        let body_id = payload
            .id
            .clone()
            .filter(|u| valid_upstream_id(u))
            .ok_or_else(|| {
                CallbackError::Invalid("the webhook body has no valid prediction id".into())
            })?;
        let known = current.external_id.clone().or_else(|| self.upstream_id(id));
        if known.as_ref().is_some_and(|known| *known != body_id) {
            // An upstream prediction an earlier attempt made and this one replaced.
            tracing::debug!(prediction_id = %id, "webhook about another upstream prediction ignored");
            return Ok(WebhookReceipt::Ignored);
        }
        let mapped = payload
            .map(current.output.as_ref())
            .map_err(CallbackError::Invalid)?;
        if mapped.is_terminal() {
            self.ended_upstream(id);
        }
        if current.is_terminal() {
            // A repeat of the terminal webhook, or one that lost to a cancel or timeout.
            return Ok(WebhookReceipt::Ignored);
        }
        let (mut events, output) = match mapped {
            Mapped::Succeeded(progress, output) => (vec![progress], Some(output)),
            other => (other.into_events(), None),
        };
        if events.is_empty() {
            return Ok(WebhookReceipt::Ignored);
        }
        if current.external_id.is_none() {
            // The webhook beat the create's answer: record the id now.
            events[0] = events[0].clone().with_external_id(body_id);
        }
        match self.service.transition_all(id, &events, &[]).await {
            Ok(_) if output.is_some() => {
                if let (Some(importing), Some(output)) = (self.begin_import(id), output) {
                    let hooks = self.clone();
                    tokio::spawn(hooks.finish_success(importing, current.input, output));
                }
                Ok(WebhookReceipt::Applied)
            }
            Ok(t) if t.changed => Ok(WebhookReceipt::Applied),
            Ok(_) => Ok(WebhookReceipt::Unchanged),
            Err(augur_core::Error::Transition(e)) => {
                tracing::debug!(prediction_id = %id, reason = %e, "upstream webhook ignored");
                Ok(WebhookReceipt::Ignored)
            }
            Err(augur_core::Error::NotFound(_)) => Err(CallbackError::NotFound(id.clone())),
            Err(e) => Err(e.into()),
        }
    }
}

/// A claim on copying one prediction's final output; released when dropped.
pub(crate) struct Importing {
    hooks: Arc<ReplicateHooks>,
    id: PredictionId,
}

impl Drop for Importing {
    fn drop(&mut self) {
        self.hooks
            .importing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_core::store::memory::MemoryStore;
    use augur_core::{AccountId, CreateRequest, ServiceConfig, WebhookEvents};
    use serde_json::{Value, json};

    fn setup() -> (Arc<ReplicateHooks>, Predictions) {
        let service = Predictions::new(Arc::new(MemoryStore::new()), ServiceConfig::default());
        let hooks = ReplicateHooks::new(
            service.clone(),
            OutputFiles::in_memory("http://augur.test"),
            &Secret::new("test-admin-token-0123456789"),
            "http://augur.test/",
        );
        hooks.add_model(&ModelName::parse("acme/upstream").unwrap());
        (hooks, service)
    }

    async fn create(service: &Predictions) -> PredictionId {
        let created = service
            .create(CreateRequest {
                id: None,
                owner: AccountId::admin(),
                model: ModelName::parse("acme/upstream").unwrap(),
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

    fn token_of(hooks: &ReplicateHooks, id: &PredictionId) -> String {
        hooks.webhook_url(id).rsplit('/').next().unwrap().to_owned()
    }

    fn payload(value: Value) -> UpstreamPrediction {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn tokens_belong_to_one_prediction_and_differ_from_cogs() {
        let (hooks, _) = setup();
        let a = PredictionId::parse("a1").unwrap();
        let b = PredictionId::parse("b1").unwrap();
        let url = hooks.webhook_url(&a);
        assert!(url.starts_with("http://augur.test/internal/replicate/predictions/a1/webhook/"));
        let token = token_of(&hooks, &a);
        assert_eq!(token.len(), 64);
        assert!(hooks.token_matches(&a, &token));
        assert!(!hooks.token_matches(&b, &token));
        assert!(!hooks.token_matches(&a, ""));
        assert!(!format!("{hooks:?}").contains(&token));
    }

    #[tokio::test]
    async fn webhooks_settle_once_whatever_their_order() {
        let (hooks, service) = setup();
        let id = create(&service).await;
        let token = token_of(&hooks, &id);
        let receive = |p: Value| {
            let hooks = hooks.clone();
            let (id, token) = (id.clone(), token.clone());
            async move {
                hooks
                    .receive_webhook(&id, &token, payload(p))
                    .await
                    .unwrap()
            }
        };
        let start = json!({"id": "up1", "status": "starting", "logs": ""});
        let logs2 = json!({"id": "up1", "status": "processing", "logs": "a\nb\n"});
        let logs1 = json!({"id": "up1", "status": "processing", "logs": "a\n"});
        let done = json!({"id": "up1", "status": "succeeded", "logs": "a\nb\n", "output": "hi",
                          "metrics": {"predict_time": 1.0, "steps": 2}});
        let other = json!({"id": "up0", "status": "failed", "error": "boom"});
        assert_eq!(receive(start.clone()).await, WebhookReceipt::Ignored);
        assert_eq!(receive(logs2).await, WebhookReceipt::Applied);
        assert_eq!(
            service.get(&id).await.unwrap().value.external_id.as_deref(),
            Some("up1"),
            "the first webhook records the upstream id"
        );
        assert_eq!(receive(logs1).await, WebhookReceipt::Unchanged);
        assert_eq!(receive(other).await, WebhookReceipt::Ignored);
        assert_eq!(receive(done.clone()).await, WebhookReceipt::Applied);
        // The success is written once its output is copied, in the background.
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while !service.get(&id).await.unwrap().value.is_terminal() {
            assert!(tokio::time::Instant::now() < until, "never settled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(receive(done).await, WebhookReceipt::Ignored);
        assert_eq!(receive(start).await, WebhookReceipt::Ignored);
        let p = service.get(&id).await.unwrap().value;
        assert_eq!(p.status, Status::Succeeded);
        assert_eq!(p.output, Some(json!("hi")));
        assert_eq!(p.logs, "a\nb\n");
        assert_eq!(p.metrics.extra.get("steps"), Some(&json!(2)));
        assert!(p.metrics.extra.get("predict_time").is_none());
    }

    #[tokio::test]
    async fn wrong_tokens_bodies_and_models_are_refused() {
        let (hooks, service) = setup();
        let id = create(&service).await;
        let other = create(&service).await;
        let token = token_of(&hooks, &id);
        let p = || payload(json!({"id": "up1", "status": "processing"}));
        assert!(matches!(
            hooks.receive_webhook(&other, &token, p()).await,
            Err(CallbackError::InvalidToken)
        ));
        for bad in [
            json!({"status": "processing"}),
            json!({"id": "../x", "status": "processing"}),
            json!({"id": "up1", "status": "exploded"}),
        ] {
            assert!(matches!(
                hooks.receive_webhook(&id, &token, payload(bad)).await,
                Err(CallbackError::Invalid(_))
            ));
        }
        let gone = PredictionId::parse("gone").unwrap();
        assert!(matches!(
            hooks
                .receive_webhook(&gone, &token_of(&hooks, &gone), p())
                .await,
            Err(CallbackError::NotFound(_))
        ));
        let cog_only = ReplicateHooks::new(
            service.clone(),
            OutputFiles::in_memory("http://augur.test"),
            &Secret::new("test-admin-token-0123456789"),
            "http://augur.test",
        );
        assert!(matches!(
            cog_only.receive_webhook(&id, &token, p()).await,
            Err(CallbackError::NotFound(_))
        ));
    }
}
