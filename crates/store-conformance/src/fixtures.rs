//! Test data and small helpers shared by the conformance tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use augur_core::jobs;
use augur_core::store::{
    ClaimRequest, DynStore, Effect, Entity, ItemLease, Lane, Op, Result, Write, Written,
};
use augur_core::{
    AccountId, ModelName, Prediction, PredictionId, Revision, Timestamp, Versioned, WorkerId,
};
use serde_json::json;

/// The queue (model) the fixtures put jobs on.
pub const QUEUE: &str = "augur/echo";

/// A lease long enough never to lapse during a test.
pub const LONG: Duration = Duration::from_secs(60);

/// A fresh prediction in `starting` owned by the admin, its id in the admin's partition.
pub fn prediction() -> Prediction {
    prediction_for(&AccountId::admin())
}

/// A fresh prediction owned by `owner`, its id in `owner`'s partition.
pub fn prediction_for(owner: &AccountId) -> Prediction {
    Prediction::new(
        PredictionId::generate_for(owner),
        owner.clone(),
        ModelName::parse(QUEUE).expect("valid model"),
        "v1".into(),
        json!({"text": "hello", "n": 1}),
    )
}

/// A fresh account id, unique per call.
pub fn account(prefix: &str) -> AccountId {
    AccountId::parse(&format!("{prefix}-{}", PredictionId::generate())).expect("valid account")
}

/// The effect that queues `p`'s job now.
pub fn enqueue_now(p: &Prediction) -> Effect {
    enqueue_at(p, Timestamp::now())
}

/// The effect that queues `p`'s job, claimable from `run_at`.
pub fn enqueue_at(p: &Prediction, run_at: Timestamp) -> Effect {
    jobs::enqueue(&p.id, &p.owner, p.model.as_str(), run_at)
}

/// A write inserting `p` with `effects`.
pub fn insert_write(p: &Prediction, effects: Vec<Effect>) -> Write {
    Write {
        account: p.owner.clone(),
        ops: vec![Op::Insert(p.to_record().expect("encodes"))],
        effects,
    }
}

/// A write replacing `p` at `expected` with `effects`.
pub fn update_write(p: &Prediction, expected: Revision, effects: Vec<Effect>) -> Write {
    Write {
        account: p.owner.clone(),
        ops: vec![Op::Update {
            record: p.to_record().expect("encodes"),
            expected,
        }],
        effects,
    }
}

/// Inserts `p` with `effects`, asserting it was new.
pub async fn insert(store: &DynStore, p: &Prediction, effects: Vec<Effect>) -> Revision {
    let written = store
        .write(&insert_write(p, effects))
        .await
        .expect("insert");
    written.revisions[0].expect("an insert has a revision")
}

/// Replaces `p` at `expected` with `effects`.
pub async fn update(
    store: &DynStore,
    p: &Prediction,
    expected: Revision,
    effects: Vec<Effect>,
) -> Result<Written> {
    store.write(&update_write(p, expected, effects)).await
}

/// Reads a prediction, if present.
pub async fn get(store: &DynStore, id: &PredictionId) -> Option<Versioned<Prediction>> {
    store
        .get(&id.key())
        .await
        .expect("get")
        .map(|stored| Versioned {
            value: Arc::unwrap_or_clone(stored.decode::<Prediction>().expect("decodes")),
            revision: stored.revision,
        })
}

/// A claim request on `lane` for `worker`.
pub fn claim_on(lane: Lane, worker: &WorkerId, lease_for: Duration, max: usize) -> ClaimRequest {
    ClaimRequest {
        lane,
        worker: worker.clone(),
        lease_for,
        max,
        exclude_topics: Vec::new(),
    }
}

/// Claims up to `max` jobs.
pub async fn claim_jobs(
    store: &DynStore,
    worker: &WorkerId,
    lease_for: Duration,
    max: usize,
) -> Vec<ItemLease> {
    store
        .claim(&claim_on(Lane::Jobs, worker, lease_for, max))
        .await
        .expect("claim")
}

/// The value of counter `name` (0 if it was never written).
pub async fn counter(store: &DynStore, name: &str) -> i64 {
    store
        .counters()
        .await
        .expect("counters")
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| v)
}

/// A unique counter name, so tests sharing a store do not see each other's counts.
pub fn counter_name(what: &str) -> String {
    format!("{what}_{}", PredictionId::generate())
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
