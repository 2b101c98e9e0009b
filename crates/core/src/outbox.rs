//! The webhook outbox: messages about predictions, queued on the [`Lane::Webhooks`] lane in the
//! same write as the change they announce, and [`Outbox`], the handle the dispatcher and the
//! delivery-log routes use.
//!
//! A message is a queue item whose group is its prediction, so a prediction's messages go out
//! one at a time, in order; finished ones stay with their attempts as the delivery log until
//! the prediction's data goes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{AccountId, LeaseToken, PredictionId, WorkerId};
use crate::prediction::{Prediction, WebhookEvent};
use crate::store::{
    self, Attempt, ClaimRequest, DynStore, Effect, Finish, Item, ItemLease, ItemStatus, Lane,
    NewItem, Outcome, decode_json, encode_json,
};
use crate::time::Timestamp;

/// A webhook message about one prediction or one batch, as written into the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The message id (`webhook-id`), the same for every attempt: unique per prediction,
    /// revision and event (per batch, for `batch.completed`).
    pub id: String,
    /// Where it goes.
    pub url: String,
    /// Which event it announces.
    pub event: WebhookEvent,
    /// What it is about, as it was when the event happened; the body is rendered from it, the
    /// same bytes at every attempt.
    #[serde(flatten)]
    pub payload: Payload,
    /// When it was enqueued.
    pub created_at: Timestamp,
}

/// What a message is about. Stored under the key `payload` (a prediction, as messages always
/// were) or `batch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// A prediction's `start`, `output`, `logs` or `completed`.
    #[serde(rename = "payload")]
    Prediction(Box<Prediction>),
    /// A batch's `batch.completed`.
    #[serde(rename = "batch")]
    Batch(Box<crate::batch::Batch>),
    /// A workflow run's `run.completed`.
    #[serde(rename = "run")]
    Run(Box<crate::workflow::Run>),
}

impl Payload {
    /// The account whose secret signs it.
    pub fn owner(&self) -> &AccountId {
        match self {
            Payload::Prediction(p) => &p.owner,
            Payload::Batch(b) => &b.owner,
            Payload::Run(r) => &r.owner,
        }
    }

    /// The record whose outbox holds it.
    pub fn group(&self) -> store::Key {
        match self {
            Payload::Prediction(p) => p.id.key(),
            Payload::Batch(b) => crate::batch::Batch::key_of(&b.id),
            Payload::Run(r) => crate::workflow::Run::key_of(&r.id),
        }
    }

    /// The prediction, for a prediction's message.
    pub fn prediction(&self) -> Option<&Prediction> {
        match self {
            Payload::Prediction(p) => Some(p),
            Payload::Batch(_) | Payload::Run(_) => None,
        }
    }
}

impl Delivery {
    /// A message about a prediction.
    pub fn for_prediction(
        id: String,
        url: String,
        event: WebhookEvent,
        prediction: Prediction,
        created_at: Timestamp,
    ) -> Self {
        Self {
            id,
            url,
            event,
            payload: Payload::Prediction(Box::new(prediction)),
            created_at,
        }
    }

    /// The id of what it is about: the prediction's, the batch's or the run's.
    pub fn subject_id(&self) -> &str {
        match &self.payload {
            Payload::Prediction(p) => p.id.as_str(),
            Payload::Batch(b) => &b.id,
            Payload::Run(r) => &r.id,
        }
    }

    /// The effect that puts the message in its prediction's (or batch's) outbox (once: a
    /// message id the outbox holds is not added again).
    pub fn enqueue(&self, owner: &AccountId) -> store::Result<Effect> {
        Ok(Effect::Enqueue(Box::new(NewItem {
            lane: Lane::Webhooks,
            id: self.id.clone(),
            group: self.payload.group(),
            topic: String::new(),
            owner: owner.clone(),
            payload: encode_json(self)?,
            run_at: self.created_at,
            replace: false,
            claimed: None,
        })))
    }
}

/// Where a message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Retries ran out, or the receiver answered 410 Gone.
    Failed,
}

/// A message with its history, as the delivery log shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// The message.
    pub delivery: Delivery,
    /// Its place in the prediction's outbox (messages go out in this order).
    pub seq: u64,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<Timestamp>,
}

impl DeliveryState {
    fn from_item(item: &Item) -> store::Result<Self> {
        Ok(Self {
            delivery: decode_json(&item.payload)?,
            seq: item.seq,
            status: match item.status {
                ItemStatus::Pending => DeliveryStatus::Pending,
                ItemStatus::Done => DeliveryStatus::Delivered,
                ItemStatus::Failed => DeliveryStatus::Failed,
            },
            attempts: item.attempts.clone(),
            next_attempt_at: item.due_at,
        })
    }
}

/// A claimed message: the oldest pending one of its prediction, under a lease.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryLease {
    /// The message and its history.
    pub state: DeliveryState,
    lease: ItemLease,
}

impl DeliveryLease {
    /// Who holds it.
    pub fn worker(&self) -> &WorkerId {
        &self.lease.worker
    }

    /// Proof of holding it.
    pub fn token(&self) -> LeaseToken {
        self.lease.token
    }

    /// When the lease lapses.
    pub fn expires_at(&self) -> Timestamp {
        self.lease.expires_at
    }
}

/// How an attempt ended, for [`Outbox::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Delivered: the next message of the prediction may go.
    Delivered,
    /// Try again at this time.
    RetryAt(Timestamp),
    /// Give up on this message (it becomes `Failed`); with `drop_rest`, on the prediction's
    /// later pending messages too (the receiver answered 410 Gone).
    GiveUp {
        /// Fail the prediction's later pending messages as well.
        drop_rest: bool,
    },
}

/// The webhook outbox over a store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox {
    store: DynStore,
}

impl Outbox {
    /// The outbox of `store`.
    pub fn new(store: DynStore) -> Self {
        Self { store }
    }

    /// Claims up to `max` messages under a lease each: for every prediction whose oldest
    /// pending message is due and not under a live lease, that message.
    pub async fn claim(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
    ) -> store::Result<Vec<DeliveryLease>> {
        let leases = self
            .store
            .claim(&ClaimRequest {
                lane: Lane::Webhooks,
                worker: worker.clone(),
                lease_for,
                max,
                exclude_topics: Vec::new(),
            })
            .await?;
        leases
            .into_iter()
            .map(|lease| {
                Ok(DeliveryLease {
                    state: DeliveryState::from_item(&lease.item)?,
                    lease,
                })
            })
            .collect()
    }

    /// Records an attempt at a claimed message and what follows from it, ending the lease.
    /// Fails with [`store::Error::LeaseLost`] unless the lease is still current.
    pub async fn finish(
        &self,
        lease: &DeliveryLease,
        attempt: &Attempt,
        outcome: DeliveryOutcome,
    ) -> store::Result<()> {
        let outcome = match outcome {
            DeliveryOutcome::Delivered => Outcome::Done,
            DeliveryOutcome::RetryAt(at) => Outcome::Retry(at),
            DeliveryOutcome::GiveUp { drop_rest } => Outcome::GiveUp { rest: drop_rest },
        };
        self.store
            .finish(
                &lease.lease,
                &Finish {
                    outcome,
                    attempt: Some(attempt.clone()),
                },
            )
            .await
    }

    /// A prediction's messages, in order, with their attempts.
    pub async fn list(&self, id: &PredictionId) -> store::Result<Vec<DeliveryState>> {
        self.store
            .items(Lane::Webhooks, &id.key())
            .await?
            .iter()
            .map(DeliveryState::from_item)
            .collect()
    }

    /// Makes a message pending again and due now (a manual redelivery), keeping its id and
    /// history; [`store::Error::NotFound`] if the prediction has no such message.
    pub async fn redeliver(&self, id: &PredictionId, message: &str) -> store::Result<()> {
        self.store.requeue(Lane::Webhooks, &id.key(), message).await
    }

    /// How many messages wait, are in flight, or wait for a retry.
    pub async fn stats(&self) -> store::Result<store::QueueStats> {
        self.store.queue_stats(Lane::Webhooks).await
    }
}
