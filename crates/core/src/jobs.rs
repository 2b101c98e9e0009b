//! Jobs: runs of predictions, queued on the [`Lane::Jobs`] lane in the same write as the
//! prediction, and [`Jobs`], the handle the worker pool uses to claim and settle them.

use std::time::Duration;

use crate::id::{AccountId, LeaseToken, PredictionId, WorkerId};
use crate::store::{
    self, Claim, ClaimRequest, DynStore, Effect, Finish, ItemLease, Lane, NewItem, Outcome,
    QueueStats,
};
use crate::time::Timestamp;

/// A unit of work: run the prediction with this id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The prediction to run. A prediction has at most one job.
    pub prediction_id: PredictionId,
    /// The queue it is on (a model name).
    pub queue: String,
    /// How many times it has been claimed, this claim included.
    pub attempts: u32,
    /// When it became claimable.
    pub run_at: Timestamp,
}

/// A claimed job and the lease that makes the claim exclusive until it lapses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job: Job,
    item: ItemLease,
}

impl Lease {
    fn from_item(item: ItemLease) -> store::Result<Self> {
        let prediction_id =
            PredictionId::parse(&item.item.id).map_err(|e| store::Error::Corrupt {
                backend: "jobs",
                source: Box::new(e),
            })?;
        Ok(Self {
            job: Job {
                prediction_id,
                queue: item.item.topic.clone(),
                attempts: item.item.claims,
                run_at: item.item.due_at.unwrap_or(item.item.created_at),
            },
            item,
        })
    }

    /// Who holds it.
    pub fn worker(&self) -> &WorkerId {
        &self.item.worker
    }

    /// When it lapses unless renewed.
    pub fn expires_at(&self) -> Timestamp {
        self.item.expires_at
    }

    /// A lease the creating node holds from the start, with the effect that queues the job
    /// already claimed by `worker` (the claimed form of [`enqueue`]).
    pub fn claimed_at_create(
        prediction_id: &PredictionId,
        owner: &AccountId,
        queue: &str,
        worker: &WorkerId,
        lease_for: Duration,
        now: Timestamp,
    ) -> (Lease, Effect) {
        let claim = Claim {
            worker: worker.clone(),
            token: LeaseToken::generate(),
            expires_at: now.plus(lease_for),
        };
        let new = new_item(prediction_id, owner, queue, now, Some(claim.clone()));
        let lease = Lease {
            job: Job {
                prediction_id: prediction_id.clone(),
                queue: queue.to_owned(),
                attempts: 1,
                run_at: now,
            },
            item: ItemLease {
                item: store::Item {
                    lane: Lane::Jobs,
                    id: new.id.clone(),
                    group: new.group.clone(),
                    topic: new.topic.clone(),
                    owner: owner.clone(),
                    payload: String::new(),
                    seq: 1,
                    status: store::ItemStatus::Pending,
                    claims: 1,
                    attempts: Vec::new(),
                    due_at: Some(now),
                    created_at: now,
                },
                worker: claim.worker,
                token: claim.token,
                expires_at: claim.expires_at,
            },
        };
        (lease, Effect::Enqueue(Box::new(new)))
    }
}

fn new_item(
    prediction_id: &PredictionId,
    owner: &AccountId,
    queue: &str,
    run_at: Timestamp,
    claimed: Option<Claim>,
) -> NewItem {
    NewItem {
        lane: Lane::Jobs,
        id: prediction_id.to_string(),
        group: prediction_id.key(),
        topic: queue.to_owned(),
        owner: owner.clone(),
        payload: String::new(),
        run_at,
        replace: true,
        claimed,
    }
}

/// The effect that queues a prediction's job on `queue` (its model, or its deployment's topic:
/// [`crate::Prediction::queue`]), claimable from `run_at` (replacing a job it already has).
pub fn enqueue(
    prediction_id: &PredictionId,
    owner: &AccountId,
    queue: &str,
    run_at: Timestamp,
) -> Effect {
    Effect::Enqueue(Box::new(new_item(
        prediction_id,
        owner,
        queue,
        run_at,
        None,
    )))
}

/// The effect that removes a prediction's job, whoever holds it.
pub fn complete(prediction_id: &PredictionId) -> Effect {
    Effect::Complete {
        lane: Lane::Jobs,
        id: prediction_id.to_string(),
    }
}

/// The job queue over a store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Jobs {
    store: DynStore,
}

impl Jobs {
    /// The job queue of `store`.
    pub fn new(store: DynStore) -> Self {
        Self { store }
    }

    /// Claims up to `max` jobs, skipping models in `exclude` (at their concurrency limit).
    pub async fn claim(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
        exclude: Vec<String>,
    ) -> store::Result<Vec<Lease>> {
        let leases = self
            .store
            .claim(&ClaimRequest {
                lane: Lane::Jobs,
                worker: worker.clone(),
                lease_for,
                max,
                exclude_topics: exclude,
            })
            .await?;
        leases.into_iter().map(Lease::from_item).collect()
    }

    /// Extends a live lease to `now + extend_by`; [`store::Error::LeaseLost`] once it is not.
    pub async fn renew(&self, lease: &Lease, extend_by: Duration) -> store::Result<Lease> {
        let item = self.store.renew(&lease.item, extend_by).await?;
        Ok(Lease {
            job: lease.job.clone(),
            item,
        })
    }

    /// Ends the lease; the job is claimable again from `run_at`, the claim counted as an
    /// attempt.
    pub async fn retry(&self, lease: &Lease, run_at: Timestamp) -> store::Result<()> {
        self.end(lease, Outcome::Retry(run_at)).await
    }

    /// Hands the lease back for later; the job is claimable again from `run_at`, keeps the
    /// place its claim took, and the claim does not count.
    pub async fn release(&self, lease: &Lease, run_at: Timestamp) -> store::Result<()> {
        self.end(lease, Outcome::Release(run_at)).await
    }

    /// Hands the job back to the queue at once, at its place in the fair order (a claim
    /// beyond a model's limit, a graceful shutdown); the claim does not count.
    pub async fn hand_back(&self, lease: &Lease) -> store::Result<()> {
        self.end(lease, Outcome::HandBack).await
    }

    async fn end(&self, lease: &Lease, outcome: Outcome) -> store::Result<()> {
        self.store
            .finish(
                &lease.item,
                &Finish {
                    outcome,
                    attempt: None,
                },
            )
            .await
    }

    /// Removes a prediction's job whoever holds it; a missing job is not an error. Outside of
    /// a settlement (which completes the job in its own write) only for predictions that are
    /// already settled or gone.
    pub async fn complete(&self, lease: &Lease) -> store::Result<()> {
        match self.end(lease, Outcome::Done).await {
            Err(store::Error::LeaseLost) => Ok(()),
            other => other,
        }
    }

    /// Job counts by state.
    pub async fn stats(&self) -> store::Result<QueueStats> {
        self.store.queue_stats(Lane::Jobs).await
    }
}
