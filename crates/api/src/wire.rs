//! The JSON shapes the API sends: Replicate's prediction object and the seeds' status object.
//! Both show output files as absolute URLs under the current public URL (stored outputs hold
//! `/files/<key>` references, [`augur_core::output`]).

use std::borrow::Cow;

use bytes::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use serde::Serialize;
use serde_json::{Map, Value};

use augur_core::{Metrics, Prediction, PredictionId, Revision, Status, WebhookEvents};

/// The rendered JSON of recently read predictions, keyed by id, revision and whether the data
/// was masked as removed: a status read of an unchanged prediction serves the same bytes
/// without serializing again. Any change bumps the revision, so an entry is never stale. The
/// cache is bounded by the bytes it holds.
pub struct Rendered {
    cache: Cache<RenderedKey, Bytes, ByLength>,
}

type RenderedKey = (PredictionId, u64, bool);

/// Weighs a rendered prediction by its length plus its entry and key.
#[derive(Clone, Copy, Debug)]
struct ByLength;

impl Weighter<RenderedKey, Bytes> for ByLength {
    fn weight(&self, key: &RenderedKey, value: &Bytes) -> u64 {
        (128 + key.0.as_str().len() + value.len()) as u64
    }
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("entries", &self.cache.len())
            .field("bytes", &self.cache.weight())
            .finish()
    }
}

impl Default for Rendered {
    /// 32 MiB.
    fn default() -> Self {
        Self::new(32 << 20)
    }
}

impl Rendered {
    /// A cache of rendered predictions holding up to `bytes` (0 turns it off).
    pub fn new(bytes: u64) -> Self {
        Self {
            // Rendered predictions are typically a few KiB.
            cache: Cache::with_weighter(
                usize::try_from(bytes / 4096).unwrap_or(usize::MAX).max(1),
                bytes.max(1),
                ByLength,
            ),
        }
    }

    /// The bytes its entries weigh now.
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }

    /// The JSON under `public_url` of the prediction `p` at `revision`, from the cache or
    /// rendered now.
    pub fn json(&self, public_url: &str, p: &Prediction, revision: Revision) -> Bytes {
        let key = (p.id.clone(), revision.0, p.data_removed);
        if let Some(hit) = self.cache.get(&key) {
            return hit;
        }
        let bytes = Bytes::from(
            serde_json::to_vec(&PredictionJson::new(public_url, p))
                .expect("a prediction always serializes"),
        );
        self.cache.insert(key, bytes.clone());
        bytes
    }
}

/// Replicate's prediction object.
#[derive(Debug, Serialize)]
pub struct PredictionJson<'a> {
    id: &'a str,
    model: &'a str,
    version: &'a str,
    input: &'a Value,
    output: Option<Cow<'a, Value>>,
    /// Left out of list items, as Replicate's list endpoint does.
    #[serde(skip_serializing_if = "Option::is_none")]
    logs: Option<&'a str>,
    error: Option<&'a str>,
    status: Status,
    created_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    urls: Urls<'a>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<&'a str>,
    /// Augur's extension: the account that owns it (only it and the admin ever see it).
    account: &'a str,
    /// Augur's extension: what it costs, for a priced model (`None` when free).
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<CostJson>,
}

/// A prediction's cost: the price it was created at, the credits its create reserved, and,
/// once settled, what it was charged.
#[derive(Debug, Serialize)]
struct CostJson {
    price: augur_core::credits::Price,
    reserved: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    charged: Option<i64>,
}

fn empty_object() -> &'static Value {
    static EMPTY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Value::Object(Map::new()))
}

/// The `urls` of a prediction: `get`, `cancel`, and `stream` (which carries the stream token,
/// so it works without an `Authorization` header). Serialized straight from its parts, since
/// every response has one.
#[derive(Debug, Clone, Copy)]
pub struct Urls<'a> {
    public_url: &'a str,
    id: &'a str,
    stream_token: &'a str,
}

impl<'a> Urls<'a> {
    /// The URLs of a prediction under `public_url` (no trailing slash).
    pub fn of(public_url: &'a str, p: &'a Prediction) -> Self {
        Self {
            public_url,
            id: p.id.as_str(),
            stream_token: &p.stream_token,
        }
    }
}

/// Concatenated text, serialized without building the string first.
struct Concat<'a>(&'a [&'a str]);

impl Serialize for Concat<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Parts<'b>(&'b [&'b str]);
        impl std::fmt::Display for Parts<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.iter().try_for_each(|part| f.write_str(part))
            }
        }
        s.collect_str(&Parts(self.0))
    }
}

impl Serialize for Urls<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (base, id) = (self.public_url, self.id);
        let mut st = s.serialize_struct("Urls", 3)?;
        st.serialize_field("get", &Concat(&[base, "/v1/predictions/", id]))?;
        st.serialize_field(
            "cancel",
            &Concat(&[base, "/v1/predictions/", id, "/cancel"]),
        )?;
        st.serialize_field(
            "stream",
            &Concat(&[
                base,
                "/v1/predictions/",
                id,
                "/stream?token=",
                self.stream_token,
            ]),
        )?;
        st.end()
    }
}

impl<'a> PredictionJson<'a> {
    /// Renders a prediction with absolute URLs under `public_url`, its output files' included.
    pub fn new(public_url: &'a str, p: &'a Prediction) -> Self {
        Self {
            id: p.id.as_str(),
            model: p.model.as_str(),
            version: &p.version,
            // The clients expect an object; a tombstone's removed input is an empty one.
            input: if p.input.is_object() {
                &p.input
            } else {
                empty_object()
            },
            output: p
                .output
                .as_ref()
                .map(|output| augur_core::output::render(public_url, output)),
            logs: Some(&p.logs),
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
            batch: p.batch.as_deref(),
            run: p.run.as_deref(),
            node: p.node.as_deref(),
            deployment: p.deployment.as_deref(),
            account: p.owner.as_str(),
            cost: p.hold.map(|hold| CostJson {
                price: hold.price,
                reserved: hold.reserved,
                charged: hold.charged,
            }),
        }
    }

    /// The form list pages show: without `logs` (Replicate's list items have none; read the
    /// prediction for them), so that a page of chatty predictions stays small.
    pub fn listed(mut self) -> Self {
        self.logs = None;
        self
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
    image_url: Option<String>,
    error: Option<&'a str>,
    estimated_time: Option<u64>,
    generation_time: Option<u64>,
    created_at: i64,
    updated_at: i64,
}

impl<'a> SeedStatus<'a> {
    /// The seeds' view of a prediction (times in Unix milliseconds, URLs under `public_url`).
    pub fn new(public_url: &str, p: &'a Prediction) -> Self {
        let updated = p.completed_at.or(p.started_at).unwrap_or(p.created_at);
        Self {
            prediction_id: p.id.as_str(),
            status: p.status,
            image_url: p.output.as_ref().and_then(|output| {
                first_url(&augur_core::output::render(public_url, output)).map(str::to_owned)
            }),
            error: p.error.as_deref(),
            estimated_time: None,
            generation_time: p.metrics.predict_time.map(|s| (s * 1000.0).round() as u64),
            created_at: p.created_at.as_millis(),
            updated_at: updated.as_millis(),
        }
    }
}

/// The first URL in an output: the output itself, or the first of a list.
fn first_url(output: &Value) -> Option<&str> {
    let is_url =
        |s: &&str| s.starts_with("http://") || s.starts_with("https://") || s.starts_with("data:");
    match output {
        Value::String(s) => Some(s.as_str()).filter(is_url),
        Value::Array(items) => items.iter().filter_map(Value::as_str).find(is_url),
        _ => None,
    }
}
