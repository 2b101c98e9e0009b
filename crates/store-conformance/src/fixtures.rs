//! Test data and small helpers shared by the conformance tests.

use std::future::Future;
use std::time::Duration;

use augur_core::store::{ClaimRequest, DynStore, Effect, NewPrediction};
use augur_core::{AccountId, ModelName, Prediction, PredictionId, Revision, Timestamp, WorkerId};
use serde_json::json;

/// The queue the fixtures put jobs on.
pub const QUEUE: &str = "augur/echo";

/// A fresh prediction in `starting` with a unique id.
pub fn prediction() -> Prediction {
    prediction_for(&AccountId::admin())
}

/// A fresh prediction owned by `owner`.
pub fn prediction_for(owner: &AccountId) -> Prediction {
    Prediction::new(
        PredictionId::generate(),
        owner.clone(),
        ModelName::parse(QUEUE).expect("valid model"),
        "v1".into(),
        json!({"text": "hello", "n": 1}),
    )
}

/// The effect that queues a prediction's job now.
pub fn enqueue_now() -> Effect {
    Effect::EnqueueJob {
        queue: QUEUE.into(),
        run_at: Timestamp::now(),
    }
}

/// Inserts `p` with `effects`, asserting it was new.
pub async fn insert(store: &DynStore, p: &Prediction, effects: &[Effect]) -> Revision {
    match store
        .create(NewPrediction {
            prediction: p,
            idempotency: None,
            effects,
        })
        .await
        .expect("create")
    {
        augur_core::store::Created::Inserted(rev) => rev,
        other => panic!("expected a new insert, got {other:?}"),
    }
}

/// A claim request for `worker` with the given lease length.
pub fn claim(worker: &WorkerId, lease_for: Duration, max: usize) -> ClaimRequest {
    ClaimRequest {
        worker: worker.clone(),
        lease_for,
        max,
        exclude_queues: Vec::new(),
    }
}

/// Polls `check` until it returns `Some` or `deadline` passes (then panics with `what`).
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
