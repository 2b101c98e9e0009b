//! A steady load of prediction creates for the tests that break the store under it (an outage,
//! a full disk): what was acknowledged, what was refused as retryable, and anything else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// What a load saw.
#[derive(Debug, Default)]
pub struct Load {
    /// The ids of acknowledged (201) creates.
    pub acked: Vec<String>,
    /// Retryable refusals: a 503 with `Retry-After`.
    pub refused: usize,
    /// The JSON of the first retryable refusal.
    pub refusal: Option<Value>,
    /// Anything else: a status and body, or the client's error.
    pub other: Vec<String>,
}

/// How one load creates.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Bytes of filler in each input (besides a counter).
    pub blob_bytes: usize,
    /// How long a create may take before it counts as failed.
    pub timeout: Duration,
    /// The pause after each create.
    pub pause: Duration,
}

/// After a retryable refusal, a load waits this long before it tries again.
const AFTER_REFUSAL: Duration = Duration::from_millis(20);

/// Creates `augur/echo` predictions through `api`, one after another, until `stop` is set,
/// recording each answer in `load`.
pub fn spawn(
    api: super::Api,
    pace: Pace,
    load: Arc<Mutex<Load>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let blob = "x".repeat(pace.blob_bytes);
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let response = api
                .http
                .post(format!("{}/v1/models/augur/echo/predictions", api.base))
                .bearer_auth(super::TOKEN)
                .json(&json!({"input": {"i": i, "blob": blob}}))
                .timeout(pace.timeout)
                .send()
                .await;
            let mut pause = pace.pause;
            match response {
                Ok(r) if r.status().as_u16() == 201 => {
                    let body: Value = r.json().await.unwrap_or_default();
                    let id = body["id"].as_str().unwrap_or_default().to_owned();
                    load.lock().unwrap().acked.push(id);
                }
                Ok(r) if r.status().as_u16() == 503 => {
                    let retry_after = r.headers().contains_key("retry-after");
                    let body: Value = r.json().await.unwrap_or_default();
                    let mut load = load.lock().unwrap();
                    if retry_after {
                        load.refused += 1;
                        load.refusal.get_or_insert(body);
                    } else {
                        load.other.push(format!("503 without Retry-After: {body}"));
                    }
                    pause = pause.max(AFTER_REFUSAL);
                }
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    load.lock().unwrap().other.push(format!("{status}: {body}"));
                }
                Err(e) => load
                    .lock()
                    .unwrap()
                    .other
                    .push(format!("request failed: {e}")),
            }
            tokio::time::sleep(pause).await;
        }
    })
}
