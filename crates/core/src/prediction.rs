//! The prediction record as stored, and the small value types it carries.
//!
//! This is the domain record, not the wire format: `api` renders it as Replicate's JSON (adding
//! absolute `urls`), stores serialize it as they see fit. Fields that only Augur needs (owner,
//! attempts, stream token) live here too; `api` decides what the public sees.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::{AccountId, ModelName, PredictionId};
use crate::state::Status;
use crate::store::{self, Entity, Key, Kind, Record, decode_json, encode_json};
use crate::time::Timestamp;

/// A prediction: one run of a model on one input, from creation until it settles.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Unique id.
    pub id: PredictionId,
    /// The account that created it; every read and write is scoped to it.
    pub owner: AccountId,
    /// The model, `owner/name`.
    pub model: ModelName,
    /// The model version id (Replicate's `version`).
    pub version: String,
    /// The validated input object. `Null` once the data was removed.
    #[serde(default)]
    pub input: Value,
    /// The output so far (progress) or the final output.
    #[serde(default)]
    pub output: Option<Value>,
    /// Everything the model logged, capped at [`MAX_LOGS_BYTES`] (the head is dropped).
    #[serde(default)]
    pub logs: String,
    /// Where `logs` starts in everything the model logged: the bytes dropped from the head so
    /// far. With it a change's new log text is known even once the window slides, so stream
    /// events carry only that (see [`crate::notices::stream_events`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub logs_start: u64,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
    /// Where it is in its lifecycle.
    pub status: Status,
    /// When it was created.
    pub created_at: Timestamp,
    /// When a provider started running it.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// When it settled.
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
    /// Timings and model-reported metrics.
    #[serde(default)]
    pub metrics: Metrics,
    /// True once retention removed the input, output and logs.
    #[serde(default)]
    pub data_removed: bool,
    /// Where to POST updates, if anywhere.
    #[serde(default)]
    pub webhook: Option<String>,
    /// Which updates to send to `webhook`.
    #[serde(default)]
    pub webhook_events_filter: WebhookEvents,
    /// Cancel the prediction if it has not settled by then (`Cancel-After`).
    #[serde(default)]
    pub deadline: Option<Timestamp>,
    /// When retention removes its data (set when it settles).
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// How many times a worker has claimed its job.
    #[serde(default)]
    pub attempts: u32,
    /// Secret part of the unauthenticated stream URL.
    #[serde(default)]
    pub stream_token: String,
    /// What the external service a provider handed the prediction to calls it (an upstream
    /// Replicate API's prediction id), so that any node, after any restart, can look the
    /// work up or cancel it. Internal: never shown to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The credits its create reserved, settled when it becomes terminal; `None` for a free
    /// model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<crate::credits::Hold>,
    /// True if it counts against its owner's limit on predictions running at once (the
    /// counter `predictions_active@<owner>`), which its settlement then lowers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub limited: bool,
    /// The batch it is an item of ([`crate::batch::Batch`]), if any: stored as the record's
    /// parent, so a batch lists its items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// The workflow run it is a node of ([`crate::workflow::Run`]), if any: stored as the
    /// record's parent, so a run lists its predictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Its node in that run's blueprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The deployment it was created through (`owner/name`), if any: its job is queued on the
    /// deployment's topic ([`crate::deployment::Deployment::queue`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

impl Prediction {
    /// The queue topic of its job: its deployment's, or its model's.
    pub fn queue(&self) -> String {
        match &self.deployment {
            Some(d) => format!("{}{d}", crate::deployment::QUEUE_PREFIX),
            None => self.model.to_string(),
        }
    }
}

/// Logs longer than this lose their oldest part, so a chatty model cannot grow a record without
/// bound.
pub const MAX_LOGS_BYTES: usize = 1 << 20;

impl Prediction {
    /// A new prediction in `starting`, created now.
    pub fn new(
        id: PredictionId,
        owner: AccountId,
        model: ModelName,
        version: String,
        input: Value,
    ) -> Self {
        Self {
            id,
            owner,
            model,
            version,
            input,
            output: None,
            logs: String::new(),
            logs_start: 0,
            error: None,
            status: Status::Starting,
            created_at: Timestamp::now(),
            started_at: None,
            completed_at: None,
            metrics: Metrics::default(),
            data_removed: false,
            webhook: None,
            webhook_events_filter: WebhookEvents::ALL,
            deadline: None,
            expires_at: None,
            hold: None,
            limited: false,
            batch: None,
            run: None,
            node: None,
            deployment: None,
            attempts: 0,
            stream_token: new_secret_token(),
            external_id: None,
        }
    }

    /// True once the prediction has settled.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// True if retention should have removed its data by `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        !self.data_removed && self.expires_at.is_some_and(|at| at <= now)
    }

    /// Turns the record into the tombstone retention leaves behind: no input, output or logs.
    pub fn remove_data(&mut self) {
        self.input = Value::Null;
        self.output = None;
        self.logs = String::new();
        self.logs_start = 0;
        self.data_removed = true;
    }

    /// The record as a reader at `now` must see it: a tombstone if retention is overdue (the
    /// sweeper may lag), the record otherwise.
    pub fn as_seen_at(mut self, now: Timestamp) -> Prediction {
        if self.is_expired(now) {
            self.remove_data();
        }
        self
    }
}

/// Secrets never reach `Debug` output (the stream token grants read access).
impl fmt::Debug for Prediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prediction")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("model", &self.model)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("started_at", &self.started_at)
            .field("completed_at", &self.completed_at)
            .field("error", &self.error)
            .field("attempts", &self.attempts)
            .field("data_removed", &self.data_removed)
            .field("stream_token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A random 128-bit token in lowercase hex, for unguessable URLs.
pub fn new_secret_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl PredictionId {
    /// The key of the prediction with this id.
    pub fn key(&self) -> Key {
        Key::new(Kind::Prediction, self.as_str())
    }
}

/// A prediction is stored with its input, output and logs as the data retention removes, and
/// everything else as the body: a tombstone is the body alone.
impl Entity for Prediction {
    const KIND: Kind = Kind::Prediction;

    fn key(&self) -> Key {
        self.id.key()
    }

    fn owner(&self) -> &AccountId {
        &self.owner
    }

    fn to_record(&self) -> store::Result<Record> {
        Ok(Record {
            key: self.key(),
            owner: self.owner.clone(),
            created_at: self.created_at,
            status: Some(self.status.as_str().to_owned()),
            parent: self.batch.clone().or_else(|| self.run.clone()),
            expires_at: self.expires_at,
            data_removed: self.data_removed,
            body: encode_json(&Body(self))?,
            data: (!self.data_removed)
                .then(|| {
                    encode_json(&DataRef {
                        input: &self.input,
                        output: &self.output,
                        logs: &self.logs,
                        logs_start: self.logs_start,
                    })
                })
                .transpose()?,
        })
    }

    fn from_record(record: &Record) -> store::Result<Self> {
        let mut p: Prediction = decode_json(&record.body)?;
        match &record.data {
            Some(data) => {
                let data: Data = decode_json(data)?;
                p.input = data.input;
                p.output = data.output;
                p.logs = data.logs;
                p.logs_start = data.logs_start;
            }
            None => p.remove_data(),
        }
        p.data_removed = record.data_removed;
        Ok(p)
    }
}

/// What retention removes from a prediction.
#[derive(Serialize)]
struct DataRef<'a> {
    input: &'a Value,
    output: &'a Option<Value>,
    logs: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    logs_start: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    input: Value,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    logs: String,
    #[serde(default)]
    logs_start: u64,
}

/// A prediction's body: every field but the data, under the names `Prediction` derives (so a
/// body decodes as a `Prediction` with no data).
struct Body<'a>(&'a Prediction);

impl Serialize for Body<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let p = self.0;
        let mut b = s.serialize_struct("Prediction", 23)?;
        b.serialize_field("id", &p.id)?;
        b.serialize_field("owner", &p.owner)?;
        b.serialize_field("model", &p.model)?;
        b.serialize_field("version", &p.version)?;
        b.serialize_field("error", &p.error)?;
        b.serialize_field("status", &p.status)?;
        b.serialize_field("created_at", &p.created_at)?;
        b.serialize_field("started_at", &p.started_at)?;
        b.serialize_field("completed_at", &p.completed_at)?;
        b.serialize_field("metrics", &p.metrics)?;
        b.serialize_field("data_removed", &p.data_removed)?;
        b.serialize_field("webhook", &p.webhook)?;
        b.serialize_field("webhook_events_filter", &p.webhook_events_filter)?;
        b.serialize_field("deadline", &p.deadline)?;
        b.serialize_field("expires_at", &p.expires_at)?;
        b.serialize_field("attempts", &p.attempts)?;
        b.serialize_field("stream_token", &p.stream_token)?;
        if let Some(hold) = &p.hold {
            b.serialize_field("hold", hold)?;
        }
        if p.limited {
            b.serialize_field("limited", &p.limited)?;
        }
        if let Some(external) = &p.external_id {
            b.serialize_field("external_id", external)?;
        }
        if let Some(batch) = &p.batch {
            b.serialize_field("batch", batch)?;
        }
        if let Some(run) = &p.run {
            b.serialize_field("run", run)?;
        }
        if let Some(node) = &p.node {
            b.serialize_field("node", node)?;
        }
        if let Some(deployment) = &p.deployment {
            b.serialize_field("deployment", deployment)?;
        }
        b.end()
    }
}

/// Timings (seconds) plus any metrics the model reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Time the model spent running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predict_time: Option<f64>,
    /// Time from creation to settlement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_time: Option<f64>,
    /// Model-reported metrics (Cog's `record_metric`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Metrics {
    /// Whether `key` names one of Augur's own timings, which model-reported metrics may not
    /// set.
    pub fn is_timing(key: &str) -> bool {
        matches!(key, "predict_time" | "total_time")
    }
}

/// The set of webhook events a prediction's owner asked for: `start`, `output`, `logs`,
/// `completed` (Replicate's `webhook_events_filter`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WebhookEvents(u8);

/// One kind of webhook event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    /// The prediction started running.
    Start,
    /// New output.
    Output,
    /// New logs.
    Logs,
    /// The prediction settled.
    Completed,
}

impl WebhookEvent {
    const ALL: [WebhookEvent; 4] = [
        WebhookEvent::Start,
        WebhookEvent::Output,
        WebhookEvent::Logs,
        WebhookEvent::Completed,
    ];

    fn bit(self) -> u8 {
        match self {
            WebhookEvent::Start => 1,
            WebhookEvent::Output => 2,
            WebhookEvent::Logs => 4,
            WebhookEvent::Completed => 8,
        }
    }
}

impl WebhookEvents {
    /// Every event (Replicate's default).
    pub const ALL: WebhookEvents = WebhookEvents(15);
    /// No event.
    pub const NONE: WebhookEvents = WebhookEvents(0);

    /// Whether `event` is in the set.
    pub fn contains(self, event: WebhookEvent) -> bool {
        self.0 & event.bit() != 0
    }

    /// The events in the set, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = WebhookEvent> {
        WebhookEvent::ALL
            .into_iter()
            .filter(move |e| self.contains(*e))
    }
}

impl FromIterator<WebhookEvent> for WebhookEvents {
    fn from_iter<I: IntoIterator<Item = WebhookEvent>>(iter: I) -> Self {
        WebhookEvents(iter.into_iter().fold(0, |acc, e| acc | e.bit()))
    }
}

impl Default for WebhookEvents {
    fn default() -> Self {
        Self::ALL
    }
}

impl fmt::Debug for WebhookEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for WebhookEvents {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for WebhookEvents {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<WebhookEvent>::deserialize(d)?.into_iter().collect())
    }
}

/// The compare-and-set version of a stored record. Every successful write increments it; an
/// update names the revision it read and fails with a conflict if another write came first.
///
/// It is called a revision so that it is never confused with a prediction's `version` field,
/// which is Replicate's model version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision of a freshly created record.
    pub const FIRST: Revision = Revision(1);

    /// The revision after this one.
    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A stored value together with the revision it was read at.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its revision.
    pub revision: Revision,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Prediction {
        Prediction::new(
            PredictionId::parse("p1").unwrap(),
            AccountId::admin(),
            ModelName::parse("augur/echo").unwrap(),
            "v1".into(),
            serde_json::json!({"text": "hi"}),
        )
    }

    #[test]
    fn webhook_filter_round_trips_and_defaults_to_all() {
        let f: WebhookEvents = serde_json::from_str(r#"["completed","start"]"#).unwrap();
        assert!(f.contains(WebhookEvent::Start) && f.contains(WebhookEvent::Completed));
        assert!(!f.contains(WebhookEvent::Logs));
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"["start","completed"]"#
        );
        assert!(serde_json::from_str::<WebhookEvents>(r#"["bogus"]"#).is_err());
        assert_eq!(WebhookEvents::default(), WebhookEvents::ALL);
    }

    #[test]
    fn debug_output_hides_the_stream_token() {
        let p = sample();
        let dbg = format!("{p:?}");
        assert!(!dbg.contains(&p.stream_token));
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn tombstone_drops_data_but_keeps_identity() {
        let mut p = sample();
        p.output = Some(serde_json::json!("x"));
        p.logs = "log".into();
        p.expires_at = Some(Timestamp::from_micros(10));
        assert!(p.is_expired(Timestamp::from_micros(10)));
        let t = p.clone().as_seen_at(Timestamp::from_micros(11));
        assert!(t.data_removed && t.output.is_none() && t.logs.is_empty() && t.input.is_null());
        assert_eq!(t.id, p.id);
        assert!(!t.is_expired(Timestamp::from_micros(11)));
        assert_eq!(p.clone().as_seen_at(Timestamp::from_micros(9)), p);
    }

    #[test]
    fn records_round_trip_and_tombstones_drop_the_data() {
        let mut p = sample();
        p.output = Some(serde_json::json!(["a", 1]));
        p.logs = "step 1\n".into();
        p.error = Some("e".into());
        p.external_id = Some("up-1".into());
        p.metrics.predict_time = Some(0.5);
        let record = p.to_record().unwrap();
        assert!(
            !record.body.contains("step 1") && record.data.as_ref().unwrap().contains("step 1")
        );
        assert_eq!(Prediction::from_record(&record).unwrap(), p);
        let mut tomb = p.clone();
        tomb.remove_data();
        assert_eq!(Prediction::from_record(&record.tombstone()).unwrap(), tomb);
    }

    #[test]
    fn stored_form_round_trips() {
        let mut p = sample();
        p.metrics.extra.insert("steps".into(), serde_json::json!(3));
        p.metrics.predict_time = Some(1.5);
        let text = serde_json::to_string(&p).unwrap();
        let back: Prediction = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
    }
}
