//! Batches: many predictions of one model created in one atomic step, tracked as one record
//! ([`Batch`]) whose counts follow its items, and completed exactly once.
//!
//! - **Creation** ([`Predictions::create_batch`]) is one [`Write`]: the batch record, every
//!   item (a prediction whose `batch` names the batch, the record's `parent`), their jobs,
//!   their credit reservations and the optional idempotency key. An account that cannot
//!   afford every item gets [`Error::InsufficientCredits`] and nothing exists.
//! - **Counting.** Every status change of an item queues, in the same write, the batch's
//!   *tally task* on [`Lane::Tasks`] (id `batch:<id>`, replacing any earlier one, which ends
//!   its lease). A tally ([`Predictions::tally_batch`], run by the engine's batch loop) lists
//!   the items, writes the counts into the batch record, and, once every item is terminal,
//!   the terminal status with the `batch.completed` webhook message in the same
//!   compare-and-set. The task is finished only if its lease survived the tally: an item that
//!   changed meanwhile replaced the task, so another tally follows. A crash leaves the task
//!   queued (its lease lapses), so some node tallies again. Completion is a compare-and-set of
//!   the batch record from non-terminal to terminal, and its message id is fixed: exactly one
//!   completion, one message, whatever order items settle in and on whichever node.
//! - **Cancel** ([`Predictions::cancel_batch`]) records the request on the batch, then cancels
//!   every non-terminal item (each refunded by its own settlement); a tally finishes any the
//!   canceller did not reach (it crashed).
//!
//! Status model: `starting` (no item started yet), `processing`, then one of `succeeded`
//! (every item succeeded), `failed` (none succeeded), `completed_with_errors` (some
//! succeeded, some failed or were canceled) and `canceled` (the batch was canceled).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::credits::{self, Hold, Price};
use crate::error::{Error, Result};
use crate::id::{AccountId, ModelName, PredictionId};
use crate::idempotency::IdempotencyKey;
use crate::jobs;
use crate::outbox::{Delivery, Payload};
use crate::prediction::{Prediction, Revision, Versioned, WebhookEvent, WebhookEvents};
use crate::service::{Predictions, counters};
use crate::state::{Event, Status};
use crate::store::{
    self, Cursor, Effect, Entity, Key, Kind, Lane, ListQuery, NewItem, Op, Record, StoreExt, Write,
    decode_json, encode_json,
};
use crate::time::Timestamp;

/// The most items a batch may have unless the operator says otherwise.
pub const DEFAULT_MAX_ITEMS: usize = 1000;

/// The topic of tally tasks on [`Lane::Tasks`].
pub const TALLY_TOPIC: &str = "batch";

/// Where a batch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// No item has started yet.
    Starting,
    /// Some item started or settled; not all settled.
    Processing,
    /// Every item succeeded.
    Succeeded,
    /// Every item settled and none succeeded.
    Failed,
    /// Every item settled, some succeeded and some failed or were canceled.
    CompletedWithErrors,
    /// The batch was canceled; every item settled.
    Canceled,
}

impl BatchStatus {
    /// Every status.
    pub const ALL: [BatchStatus; 6] = [
        BatchStatus::Starting,
        BatchStatus::Processing,
        BatchStatus::Succeeded,
        BatchStatus::Failed,
        BatchStatus::CompletedWithErrors,
        BatchStatus::Canceled,
    ];

    /// The name clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Starting => "starting",
            BatchStatus::Processing => "processing",
            BatchStatus::Succeeded => "succeeded",
            BatchStatus::Failed => "failed",
            BatchStatus::CompletedWithErrors => "completed_with_errors",
            BatchStatus::Canceled => "canceled",
        }
    }

    /// The status with this name.
    pub fn parse(name: &str) -> Option<BatchStatus> {
        BatchStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// True once every item settled.
    pub fn is_terminal(self) -> bool {
        !matches!(self, BatchStatus::Starting | BatchStatus::Processing)
    }
}

/// How many of a batch's items are in each prediction status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Queued, not started.
    pub starting: u32,
    /// Running.
    pub processing: u32,
    /// Succeeded.
    pub succeeded: u32,
    /// Failed.
    pub failed: u32,
    /// Canceled.
    pub canceled: u32,
}

impl Counts {
    /// Adds one item in `status`.
    pub fn add(&mut self, status: Status) {
        *match status {
            Status::Starting => &mut self.starting,
            Status::Processing => &mut self.processing,
            Status::Succeeded => &mut self.succeeded,
            Status::Failed => &mut self.failed,
            Status::Canceled => &mut self.canceled,
        } += 1;
    }

    /// Items that settled.
    pub fn settled(&self) -> u32 {
        self.succeeded + self.failed + self.canceled
    }
}

/// A batch of predictions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Its id (shaped like a prediction id, in its owner's partition).
    pub id: String,
    /// The account that created it.
    pub owner: AccountId,
    /// The model of every item.
    pub model: ModelName,
    /// The model version.
    pub version: String,
    /// How many items it has.
    pub total: u32,
    /// Where it stands.
    pub status: BatchStatus,
    /// Its items by status, as of the last tally.
    pub counts: Counts,
    /// Where `batch.completed` goes (and item messages, for the events in
    /// `webhook_events_filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Which item events also go to `webhook`.
    #[serde(default)]
    pub webhook_events_filter: WebhookEvents,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its last item settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// True once a cancel was asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
}

impl Batch {
    /// The record key of batch `id`.
    pub fn key_of(id: &str) -> Key {
        Key::new(Kind::Batch, id)
    }

    /// Whether `id` has the shape of a batch id.
    pub fn is_valid_id(id: &str) -> bool {
        PredictionId::parse(id).is_ok()
    }

    /// Settled items over all items, from 0 to 1.
    pub fn progress(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            f64::from(self.counts.settled()) / f64::from(self.total)
        }
    }

    /// The status its counts make.
    fn status_for(&self, counts: &Counts) -> BatchStatus {
        if counts.settled() < self.total {
            if counts.starting == self.total {
                BatchStatus::Starting
            } else {
                BatchStatus::Processing
            }
        } else if self.cancel_requested {
            BatchStatus::Canceled
        } else if counts.succeeded == self.total {
            BatchStatus::Succeeded
        } else if counts.succeeded == 0 {
            BatchStatus::Failed
        } else {
            BatchStatus::CompletedWithErrors
        }
    }

    /// The message id of its `batch.completed` webhook: one per batch.
    pub fn completion_message_id(&self) -> String {
        format!("msg_{}_completed", self.id)
    }
}

impl Entity for Batch {
    const KIND: Kind = Kind::Batch;

    fn key(&self) -> Key {
        Self::key_of(&self.id)
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
            parent: None,
            expires_at: None,
            data_removed: false,
            body: encode_json(self)?,
            data: None,
        })
    }

    fn from_record(record: &Record) -> store::Result<Self> {
        decode_json(&record.body)
    }
}

/// The effect that queues a tally of `batch` (replacing a queued one, and ending the lease of
/// one being tallied, so that a tally follows every change).
pub fn tally_task(batch: &str, owner: &AccountId, now: Timestamp) -> Effect {
    Effect::Enqueue(Box::new(NewItem::task(
        format!("batch:{batch}"),
        Batch::key_of(batch),
        TALLY_TOPIC,
        owner,
        batch,
        now,
    )))
}

/// The batch id a tally task's payload names.
pub fn tally_target(payload: &str) -> Option<String> {
    NewItem::task_target(payload).filter(|id| Batch::is_valid_id(id))
}

/// The queue of tally tasks, for the engine's batch loop. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tallies {
    store: store::DynStore,
}

impl Tallies {
    /// Claims up to `max` due tally tasks under a lease each.
    pub async fn claim(
        &self,
        worker: &crate::id::WorkerId,
        lease_for: std::time::Duration,
        max: usize,
    ) -> store::Result<Vec<store::ItemLease>> {
        self.store
            .claim(&store::ClaimRequest {
                lane: Lane::Tasks,
                worker: worker.clone(),
                lease_for,
                max,
                exclude_topics: Vec::new(),
            })
            .await
    }

    /// Ends a claimed task's lease with `outcome`. [`store::Error::LeaseLost`] means the
    /// task was replaced meanwhile (an item changed): another tally follows.
    pub async fn finish(
        &self,
        lease: &store::ItemLease,
        outcome: store::Outcome,
    ) -> store::Result<()> {
        self.store
            .finish(
                lease,
                &store::Finish {
                    outcome,
                    attempt: None,
                },
            )
            .await
    }
}

/// A validated request to create a batch.
#[derive(Clone, Debug)]
pub struct BatchRequest {
    /// Who creates it.
    pub owner: AccountId,
    /// The model of every item.
    pub model: ModelName,
    /// The model version id.
    pub version: String,
    /// Each item's validated input, in order.
    pub inputs: Vec<Value>,
    /// Where `batch.completed` goes.
    pub webhook: Option<String>,
    /// Which item events also go there.
    pub webhook_events_filter: WebhookEvents,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// The model's price per item (`None`: free).
    pub price: Option<Price>,
    /// The owner's limit on unsettled predictions.
    pub max_active: Option<u32>,
}

impl BatchRequest {
    fn fingerprint(&self) -> String {
        let canonical = serde_json::json!({
            "batch": true,
            "model": self.model,
            "version": self.version,
            "inputs": self.inputs,
            "webhook": self.webhook,
            "webhook_events_filter": self.webhook_events_filter,
        });
        crate::service::request_digest(&canonical)
    }
}

/// What [`Predictions::create_batch`] did.
#[derive(Clone, Debug)]
pub enum BatchCreation {
    /// A new batch.
    Created(Versioned<Batch>),
    /// The batch an earlier request with the same idempotency key created.
    Replayed(Versioned<Batch>),
}

impl BatchCreation {
    /// The batch, new or earlier.
    pub fn batch(&self) -> &Versioned<Batch> {
        match self {
            BatchCreation::Created(b) | BatchCreation::Replayed(b) => b,
        }
    }
}

/// A page of batches or of a batch's items.
#[derive(Clone, Debug)]
pub struct BatchPage<T> {
    /// Newest first.
    pub items: Vec<T>,
    /// Where the next page starts.
    pub next: Option<Cursor>,
}

/// How many items a tally reads at a time.
const TALLY_PAGE: usize = 500;

/// How often a tally starts over after losing the batch record's compare-and-set.
const MAX_TALLY_ATTEMPTS: usize = 16;

impl Predictions {
    /// The queue of batch tally tasks (for the engine's batch loop).
    pub fn tallies(&self) -> Tallies {
        Tallies {
            store: self.store().clone(),
        }
    }

    /// Creates a batch and all its items, with their jobs and credit reservations, in one
    /// atomic write (see the module docs).
    pub async fn create_batch(&self, request: &BatchRequest) -> Result<BatchCreation> {
        for _ in 0..4 {
            if let Some(created) = self.try_create_batch(request).await? {
                return Ok(created);
            }
        }
        Err(Error::Busy("the batch's Idempotency-Key".into()))
    }

    async fn try_create_batch(&self, request: &BatchRequest) -> Result<Option<BatchCreation>> {
        let now = Timestamp::now();
        let owner = &request.owner;
        let total = u32::try_from(request.inputs.len())
            .map_err(|_| Error::Invalid("too many items".into()))?;
        let batch = Batch {
            id: PredictionId::generate_for(owner).to_string(),
            owner: owner.clone(),
            model: request.model.clone(),
            version: request.version.clone(),
            total,
            status: BatchStatus::Starting,
            counts: Counts {
                starting: total,
                ..Counts::default()
            },
            webhook: request.webhook.clone(),
            webhook_events_filter: request.webhook_events_filter,
            created_at: now,
            completed_at: None,
            cancel_requested: false,
        };
        let mut write = Write::new(owner.clone()).op(Op::Insert(batch.to_record()?));
        let key = request.idempotency_key.as_ref();
        // Hashes every input: computed once, and only for a request with a key.
        let fingerprint = key.map(|_| request.fingerprint());
        let mut reserved_total = 0i64;
        let item_webhook = request
            .webhook
            .clone()
            .filter(|_| request.webhook_events_filter != WebhookEvents::NONE);
        let mut first_item = None;
        for input in &request.inputs {
            let id = PredictionId::generate_for(owner);
            let mut p = Prediction::new(
                id.clone(),
                owner.clone(),
                request.model.clone(),
                request.version.clone(),
                input.clone(),
            );
            p.created_at = now;
            p.batch = Some(batch.id.clone());
            p.webhook = item_webhook.clone();
            p.webhook_events_filter = request.webhook_events_filter;
            p.limited = request.max_active.is_some();
            if let Some(price) = request.price {
                let reserved = price.reserve();
                if reserved > 0 {
                    p.hold = Some(Hold {
                        price,
                        reserved,
                        charged: None,
                    });
                    reserved_total += reserved;
                }
            }
            write.ops.push(Op::Insert(p.to_record()?));
            write
                .effects
                .push(jobs::enqueue(&id, owner, request.model.as_str(), now));
            if let Some(hold) = &p.hold {
                write
                    .effects
                    .push(Effect::Post(Box::new(credits::reserve(&p, hold, now))));
            }
            write.effects.extend(self.notices().effects(None, &p, 0)?);
            first_item.get_or_insert(id);
        }
        write
            .effects
            .push(Effect::count(counters::CREATED, i64::from(total)));
        if let Some(limit) = request.max_active {
            write.effects.push(Effect::Count {
                name: counters::per_account(counters::ACTIVE, owner),
                delta: i64::from(total),
                limit: Some(i64::from(limit)),
            });
        }
        let idempotency = match (key, first_item) {
            (Some(key), Some(first)) => Some(IdempotencyKey {
                owner: owner.clone(),
                key: key.clone(),
                fingerprint: fingerprint.clone().unwrap_or_default(),
                prediction_id: first,
                batch_id: Some(batch.id.clone()),
                run_id: None,
                created_at: now,
                expires_at: now.plus(self.config().idempotency_ttl),
            }),
            _ => None,
        };
        if let Some(k) = &idempotency {
            write.ops.push(Op::Insert(k.to_record()?));
        }
        // Before the write: a claim that runs right after it must already take no more of the
        // items than their model has room for.
        self.note_queued(request.model.as_str());
        match self.store().write(&write).await {
            Ok(_) => {
                if crate::service::has_delivery(&write.effects) {
                    self.hub().notify_outbox();
                }
                self.hub().notify_work();
                Ok(Some(BatchCreation::Created(Versioned {
                    value: batch,
                    revision: Revision::FIRST,
                })))
            }
            Err(store::Error::Exists(taken)) if taken.kind == Kind::IdempotencyKey => {
                let Some(first) = self.store().get_entity::<IdempotencyKey>(&taken).await? else {
                    return Ok(None);
                };
                let Some(batch_id) = first.value.batch_id.clone() else {
                    return Err(Error::IdempotencyKeyReused {
                        key: first.value.key.clone(),
                    });
                };
                if fingerprint.as_deref() != Some(first.value.fingerprint.as_str()) {
                    return Err(Error::IdempotencyKeyReused {
                        key: first.value.key.clone(),
                    });
                }
                Ok(Some(BatchCreation::Replayed(
                    self.get_batch(Some(owner), &batch_id).await?,
                )))
            }
            Err(store::Error::InsufficientCredits { available, .. }) => {
                Err(Error::InsufficientCredits {
                    account: owner.clone(),
                    available,
                    price: reserved_total,
                    model: Some(request.model.clone()),
                })
            }
            Err(store::Error::LimitReached { .. }) => Err(Error::TooManyActive {
                account: owner.clone(),
                limit: request.max_active.unwrap_or_default(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Batch `id`, if it is `owner`'s (another account's reads as missing); `None` reads any
    /// account's (the admin's view).
    pub async fn get_batch(&self, owner: Option<&AccountId>, id: &str) -> Result<Versioned<Batch>> {
        let missing = || Error::BatchNotFound(id.to_owned());
        if !Batch::is_valid_id(id) {
            return Err(missing());
        }
        let stored = self
            .store()
            .get_uncached(&Batch::key_of(id))
            .await?
            .ok_or_else(missing)?;
        if owner.is_some_and(|o| *o != stored.record.owner) {
            return Err(missing());
        }
        Ok(Versioned {
            value: Arc::unwrap_or_clone(stored.decode::<Batch>()?),
            revision: stored.revision,
        })
    }

    /// `owner`'s batches, newest first.
    pub async fn list_batches(
        &self,
        owner: &AccountId,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<BatchPage<Batch>> {
        let mut query = ListQuery::of(Kind::Batch, limit.max(1));
        query.owner = Some(owner.clone());
        query.after = after;
        let page = self.store().list(&query).await?;
        let items = page
            .items
            .iter()
            .map(|s| s.decode::<Batch>().map(Arc::unwrap_or_clone))
            .collect::<store::Result<Vec<_>>>()?;
        Ok(BatchPage {
            items,
            next: page.next,
        })
    }

    /// A batch's items, newest first, optionally only those in `status`.
    pub async fn batch_items(
        &self,
        batch: &Batch,
        status: Option<Status>,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<BatchPage<Arc<Prediction>>> {
        let mut query = ListQuery::of(Kind::Prediction, limit.max(1));
        query.owner = Some(batch.owner.clone());
        query.parent = Some(batch.id.clone());
        query.status = status.map(|s| s.as_str().to_owned());
        query.after = after;
        let page = self.store().list(&query).await?;
        let now = Timestamp::now();
        let items = page
            .items
            .iter()
            .map(|s| {
                s.decode::<Prediction>().map(|p| {
                    if p.is_expired(now) {
                        Arc::new((*p).clone().as_seen_at(now))
                    } else {
                        p
                    }
                })
            })
            .collect::<store::Result<Vec<_>>>()?;
        Ok(BatchPage {
            items,
            next: page.next,
        })
    }

    /// Cancels `owner`'s batch: records the request, cancels every item not yet settled, and
    /// tallies. A settled batch is returned as it is.
    pub async fn cancel_batch(&self, owner: &AccountId, id: &str) -> Result<Versioned<Batch>> {
        // A batch whose items all settled before the cancel (and whose tally has not run yet)
        // completed on its own: it is not canceled.
        if self
            .tally_batch(owner, id)
            .await?
            .value
            .status
            .is_terminal()
        {
            return self.get_batch(Some(owner), id).await;
        }
        for _ in 0..MAX_TALLY_ATTEMPTS {
            let current = self.get_batch(Some(owner), id).await?;
            if current.value.status.is_terminal() || current.value.cancel_requested {
                break;
            }
            let mut next = current.value.clone();
            next.cancel_requested = true;
            let write = Write {
                account: owner.clone(),
                ops: vec![Op::Update {
                    record: next.to_record()?,
                    expected: current.revision,
                }],
                effects: vec![tally_task(id, owner, Timestamp::now())],
            };
            match self.store().write(&write).await {
                Ok(_) => {
                    self.hub().notify_tasks();
                    break;
                }
                Err(store::Error::Conflict { .. }) => tokio::task::yield_now().await,
                Err(e) => return Err(e.into()),
            }
        }
        self.tally_batch(owner, id).await
    }

    /// Brings a batch's record up to date with its items: counts, status, and (once every
    /// item settled) completion with its `batch.completed` message, in one compare-and-set.
    /// Cancels items not yet settled first if the batch was canceled. Idempotent.
    pub async fn tally_batch(&self, owner: &AccountId, id: &str) -> Result<Versioned<Batch>> {
        for _ in 0..MAX_TALLY_ATTEMPTS {
            let current = self.get_batch(Some(owner), id).await?;
            if current.value.status.is_terminal() {
                return Ok(current);
            }
            let mut counts = Counts::default();
            let mut unsettled = Vec::new();
            let mut query = ListQuery::of(Kind::Prediction, TALLY_PAGE);
            query.owner = Some(owner.clone());
            query.parent = Some(id.to_owned());
            loop {
                let page = self.store().list(&query).await?;
                for stored in &page.items {
                    let status = stored
                        .record
                        .status
                        .as_deref()
                        .and_then(Status::parse)
                        .ok_or_else(|| {
                            Error::Store(store::Error::Corrupt {
                                backend: "batch",
                                source: format!("item {} has no status", stored.record.key.id)
                                    .into(),
                            })
                        })?;
                    if current.value.cancel_requested && !status.is_terminal() {
                        unsettled.push(stored.record.key.id.clone());
                    } else {
                        counts.add(status);
                    }
                }
                match page.next {
                    Some(next) => query.after = Some(next),
                    None => break,
                }
            }
            for item in unsettled {
                let Ok(item) = PredictionId::parse(&item) else {
                    continue;
                };
                let status = match self.transition(&item, &Event::canceled()).await {
                    Ok(t) => t.prediction.value.status,
                    // Settled otherwise meanwhile: read what it became.
                    Err(Error::Transition(_)) => self.get(&item).await?.value.status,
                    Err(e) => return Err(e),
                };
                counts.add(status);
            }
            let mut next = current.value.clone();
            next.status = next.status_for(&counts);
            next.counts = counts;
            if next == current.value {
                return Ok(current);
            }
            let now = Timestamp::now();
            let mut effects = Vec::new();
            if next.status.is_terminal() {
                next.completed_at = Some(now.max(next.created_at));
                if let Some(url) = &next.webhook {
                    let message = Delivery {
                        id: next.completion_message_id(),
                        url: url.clone(),
                        event: WebhookEvent::Completed,
                        payload: Payload::Batch(Box::new(next.clone())),
                        created_at: now,
                    };
                    effects.push(message.enqueue(owner)?);
                }
            }
            let write = Write {
                account: owner.clone(),
                ops: vec![Op::Update {
                    record: next.to_record()?,
                    expected: current.revision,
                }],
                effects,
            };
            match self.store().write(&write).await {
                Ok(_) => {
                    if !write.effects.is_empty() {
                        self.hub().notify_outbox();
                    }
                    return Ok(Versioned {
                        value: next,
                        revision: current.revision.next(),
                    });
                }
                Err(store::Error::Conflict { .. }) => tokio::task::yield_now().await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Busy(format!("batch {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ServiceConfig;
    use crate::store::memory::MemoryStore;
    use crate::store::{DynStore, Outcome};

    fn batch(total: u32) -> Batch {
        Batch {
            id: PredictionId::generate().to_string(),
            owner: AccountId::admin(),
            model: ModelName::parse("augur/echo").unwrap(),
            version: "v".into(),
            total,
            status: BatchStatus::Starting,
            counts: Counts::default(),
            webhook: None,
            webhook_events_filter: WebhookEvents::default(),
            created_at: Timestamp::now(),
            completed_at: None,
            cancel_requested: false,
        }
    }

    fn counts(s: u32, p: u32, ok: u32, failed: u32, canceled: u32) -> Counts {
        Counts {
            starting: s,
            processing: p,
            succeeded: ok,
            failed,
            canceled,
        }
    }

    #[test]
    fn status_follows_the_counts() {
        let b = batch(4);
        assert_eq!(b.status_for(&counts(4, 0, 0, 0, 0)), BatchStatus::Starting);
        assert_eq!(
            b.status_for(&counts(3, 1, 0, 0, 0)),
            BatchStatus::Processing
        );
        assert_eq!(
            b.status_for(&counts(3, 0, 1, 0, 0)),
            BatchStatus::Processing
        );
        assert_eq!(b.status_for(&counts(0, 0, 4, 0, 0)), BatchStatus::Succeeded);
        assert_eq!(b.status_for(&counts(0, 0, 0, 3, 1)), BatchStatus::Failed);
        assert_eq!(
            b.status_for(&counts(0, 0, 3, 1, 0)),
            BatchStatus::CompletedWithErrors
        );
        let canceled = Batch {
            cancel_requested: true,
            ..b
        };
        assert_eq!(
            canceled.status_for(&counts(0, 0, 4, 0, 0)),
            BatchStatus::Canceled
        );
        assert_eq!(
            canceled.status_for(&counts(1, 0, 3, 0, 0)),
            BatchStatus::Processing
        );
    }

    #[test]
    fn statuses_round_trip_and_terminal_ones_are_named() {
        for s in BatchStatus::ALL {
            assert_eq!(BatchStatus::parse(s.as_str()), Some(s));
        }
        let terminal: Vec<_> = BatchStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(BatchStatus::as_str)
            .collect();
        assert_eq!(
            terminal,
            ["succeeded", "failed", "completed_with_errors", "canceled"]
        );
    }

    #[test]
    fn tally_tasks_name_their_batch() {
        let b = batch(1);
        let Effect::Enqueue(item) = tally_task(&b.id, &b.owner, Timestamp::now()) else {
            panic!("a tally task is an enqueue");
        };
        assert!(item.replace);
        assert_eq!(item.lane, Lane::Tasks);
        assert_eq!(tally_target(&item.payload), Some(b.id.clone()));
        assert_eq!(tally_target("\"../x\""), None);
    }

    fn request(n: usize) -> BatchRequest {
        BatchRequest {
            owner: AccountId::admin(),
            model: ModelName::parse("augur/echo").unwrap(),
            version: "v".into(),
            inputs: (0..n).map(|i| serde_json::json!({"i": i})).collect(),
            webhook: Some("http://127.0.0.1:9/hook".into()),
            webhook_events_filter: WebhookEvents::NONE,
            idempotency_key: Some("k".into()),
            price: None,
            max_active: None,
        }
    }

    /// Claims and runs tally tasks, as the engine's loop does, until the batch is terminal.
    async fn tally_until_done(service: Predictions, batch: String) -> usize {
        let tallies = service.tallies();
        let worker = crate::id::WorkerId::generate();
        let mut runs = 0;
        loop {
            let leases = tallies
                .claim(&worker, std::time::Duration::from_secs(30), 4)
                .await
                .unwrap();
            for lease in leases {
                let id = tally_target(&lease.item.payload).unwrap();
                let tallied = service.tally_batch(&lease.item.owner, &id).await.unwrap();
                runs += 1;
                match tallies.finish(&lease, Outcome::Done).await {
                    Ok(()) | Err(store::Error::LeaseLost) => {}
                    Err(e) => panic!("{e}"),
                }
                if tallied.value.status.is_terminal() && id == batch {
                    return runs;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Items settle from eight tasks at once, in no particular order, while tallies run: the
    /// counts end exact, the batch completes once, and its outbox holds one message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_batch_completes_once_however_its_items_settle() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let service = Predictions::new(store.clone(), ServiceConfig::default());
        let created = service.create_batch(&request(120)).await.unwrap();
        let batch = created.batch().value.clone();
        let items = service
            .batch_items(&batch, None, None, 1000)
            .await
            .unwrap()
            .items;
        assert_eq!(items.len(), 120);
        let runner = tokio::spawn(tally_until_done(service.clone(), batch.id.clone()));
        let mut settlers = Vec::new();
        for chunk in items.chunks(15) {
            let ids: Vec<_> = chunk.iter().map(|p| p.id.clone()).collect();
            let service = service.clone();
            settlers.push(tokio::spawn(async move {
                for (n, id) in ids.iter().enumerate() {
                    service.transition(id, &Event::processing()).await.unwrap();
                    let last = if n % 5 == 0 {
                        Event::failed("no")
                    } else {
                        Event::succeeded(serde_json::json!(n))
                    };
                    service.transition(id, &last).await.unwrap();
                    tokio::task::yield_now().await;
                }
            }));
        }
        for s in settlers {
            s.await.unwrap();
        }
        tokio::time::timeout(std::time::Duration::from_secs(20), runner)
            .await
            .expect("the batch completes")
            .unwrap();
        let done = service.get_batch(None, &batch.id).await.unwrap().value;
        assert_eq!(done.status, BatchStatus::CompletedWithErrors);
        assert_eq!(
            done.counts,
            Counts {
                succeeded: 96,
                failed: 24,
                ..Counts::default()
            }
        );
        // A late tally changes nothing.
        let again = service.tally_batch(&batch.owner, &batch.id).await.unwrap();
        assert_eq!(again.value, done);
        let messages = store.items(Lane::Webhooks, &batch.key()).await.unwrap();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert_eq!(messages[0].id, done.completion_message_id());
        // The idempotency key replays the batch.
        match service.create_batch(&request(120)).await.unwrap() {
            BatchCreation::Replayed(b) => assert_eq!(b.value.id, batch.id),
            BatchCreation::Created(_) => panic!("a second batch for the same key"),
        }
    }

    /// A cancel stops every unsettled item, and a tally after a crash between the request and
    /// the cancels (simulated: the flag set, nothing canceled) finishes the job.
    #[tokio::test]
    async fn a_canceled_batch_cancels_what_the_canceller_did_not_reach() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let service = Predictions::new(store.clone(), ServiceConfig::default());
        let batch = service
            .create_batch(&request(10))
            .await
            .unwrap()
            .batch()
            .value
            .clone();
        let items = service
            .batch_items(&batch, None, None, 100)
            .await
            .unwrap()
            .items;
        for p in &items[..3] {
            service
                .transition_all(
                    &p.id,
                    &[Event::processing(), Event::succeeded(serde_json::json!(1))],
                    &[],
                )
                .await
                .unwrap();
        }
        // The request recorded, then a crash before any item was canceled.
        let current = service.get_batch(None, &batch.id).await.unwrap();
        let mut flagged = current.value.clone();
        flagged.cancel_requested = true;
        store
            .write(&Write {
                account: batch.owner.clone(),
                ops: vec![Op::Update {
                    record: flagged.to_record().unwrap(),
                    expected: current.revision,
                }],
                effects: vec![],
            })
            .await
            .unwrap();
        let done = service
            .tally_batch(&batch.owner, &batch.id)
            .await
            .unwrap()
            .value;
        assert_eq!(done.status, BatchStatus::Canceled);
        assert_eq!(
            done.counts,
            Counts {
                succeeded: 3,
                canceled: 7,
                ..Counts::default()
            }
        );
    }

    /// A cancel that comes after every item settled, before any tally ran, leaves the batch
    /// as its items made it.
    #[tokio::test]
    async fn a_cancel_after_the_last_item_settled_does_not_cancel_the_batch() {
        let service = Predictions::new(Arc::new(MemoryStore::new()), ServiceConfig::default());
        let batch = service
            .create_batch(&request(2))
            .await
            .unwrap()
            .batch()
            .value
            .clone();
        for p in service
            .batch_items(&batch, None, None, 10)
            .await
            .unwrap()
            .items
        {
            service
                .transition_all(
                    &p.id,
                    &[Event::processing(), Event::succeeded(serde_json::json!(1))],
                    &[],
                )
                .await
                .unwrap();
        }
        let after = service.cancel_batch(&batch.owner, &batch.id).await.unwrap();
        assert_eq!(after.value.status, BatchStatus::Succeeded);
        assert!(!after.value.cancel_requested);
    }
}
