//! [`Predictions`]: the business operations on predictions, over any [`Store`](crate::store::Store).
//!
//! This is where a request becomes a stored prediction with its job, and where a report
//! becomes a transition: read, apply the state machine, compare-and-set with the transition's
//! side effects, retry on conflict, publish the change. The HTTP API and the workers both go
//! through here; nothing else writes predictions.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::credits::{self, CanceledAfterStart, Hold, Price};
use crate::error::{Error, Result};
use crate::hub::{Hub, Watch};
use crate::id::{AccountId, ModelName, PredictionId, WorkerId};
use crate::idempotency::IdempotencyKey;
use crate::jobs::{self, Jobs, Lease};
use crate::notices::Notices;
use crate::ops::Ops;
use crate::outbox::Outbox;
use crate::prediction::{Prediction, Revision, Versioned, WebhookEvents};
use crate::state::{Applied, Event, Status};
use crate::store::{
    self, Cursor, DynStore, Effect, Entity, Kind, Lane, ListQuery, Op, StoreExt, StreamEvent, Write,
};
use crate::time::Timestamp;
use crate::workflow::Catalog;

/// Settings of the prediction service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// How long a settled prediction keeps its input, output and logs.
    pub retention: Duration,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// What a priced prediction canceled after it started costs.
    pub canceled_after_start: CanceledAfterStart,
    /// How long after its id's time a prediction's tombstone is deleted
    /// ([`Predictions::prune_tombstones`]); a client-chosen id whose time is older than this
    /// is refused, so that no id is used twice.
    pub tombstone_retention: Duration,
}

/// The default of [`ServiceConfig::tombstone_retention`]: 30 days.
pub const DEFAULT_TOMBSTONE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How close to the tombstone horizon a client-chosen id is already refused: more than any
/// clock difference between nodes.
const RETIRED_ID_MARGIN: Duration = Duration::from_secs(3600);

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(3600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            canceled_after_start: CanceledAfterStart::default(),
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
        }
    }
}

/// Names of the durable counters the service maintains.
pub mod counters {
    use crate::id::AccountId;

    /// Predictions created.
    pub const CREATED: &str = "predictions_created_total";
    /// Predictions that reached a terminal state. Each prediction adds exactly one.
    pub const SETTLED: &str = "predictions_settled_total";
    /// An account's unsettled predictions that count against its `max_active` limit (a
    /// per-account counter, see [`per_account`]).
    pub const ACTIVE: &str = "predictions_active";

    /// The counter for predictions that settled with `status`.
    pub fn settled_as(status: crate::state::Status) -> String {
        format!("predictions_{status}_total")
    }

    /// The name of an account's own counter `name`: `name@account`. A counter with a limit
    /// must be one of these, changed only in the account's writes.
    pub fn per_account(name: &str, account: &AccountId) -> String {
        format!("{name}@{account}")
    }

    /// The account of a per-account counter, if it is one.
    pub fn account_of(counter: &str) -> Option<&str> {
        counter.rsplit_once('@').map(|(_, account)| account)
    }
}

/// A validated request to create a prediction.
#[derive(Clone, Debug)]
pub struct CreateRequest {
    /// A client-supplied id, or `None` to generate one.
    pub id: Option<PredictionId>,
    /// Who creates it.
    pub owner: AccountId,
    /// Which model runs it.
    pub model: ModelName,
    /// The model version id.
    pub version: String,
    /// The validated input.
    pub input: Value,
    /// Where to send updates.
    pub webhook: Option<String>,
    /// Which updates to send.
    pub webhook_events_filter: WebhookEvents,
    /// Cancel if not settled by then.
    pub deadline: Option<Timestamp>,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// The model's price: the create reserves it from the owner's credits, or fails with
    /// [`Error::InsufficientCredits`]. `None` is free.
    pub price: Option<Price>,
    /// The owner's limit on unsettled predictions: the create fails with
    /// [`Error::TooManyActive`] at it. `None` is unlimited.
    pub max_active: Option<u32>,
}

impl CreateRequest {
    /// A digest of everything that defines the prediction, to recognise a retried request.
    fn fingerprint(&self) -> String {
        let canonical = serde_json::json!({
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "webhook": self.webhook,
            "webhook_events_filter": self.webhook_events_filter,
        });
        request_digest(&canonical)
    }

    fn same_parameters(&self, p: &Prediction) -> bool {
        p.owner == self.owner
            && p.model == self.model
            && p.version == self.version
            && (p.input == self.input || p.data_removed)
            && p.webhook == self.webhook
            && p.webhook_events_filter == self.webhook_events_filter
    }
}

/// What [`Predictions::create`] did.
#[derive(Clone, Debug)]
pub enum Creation {
    /// A new prediction was stored and queued.
    Created(Versioned<Prediction>),
    /// The request repeated an earlier one (same id or idempotency key, same parameters);
    /// this is the prediction it created.
    Replayed(Versioned<Prediction>),
}

impl Creation {
    /// The prediction, new or replayed.
    pub fn prediction(&self) -> &Versioned<Prediction> {
        match self {
            Creation::Created(p) | Creation::Replayed(p) => p,
        }
    }
}

/// The result of a transition.
#[derive(Clone, Debug)]
pub struct Transition {
    /// The prediction after the report.
    pub prediction: Versioned<Prediction>,
    /// False if the report changed nothing (an identical repeat).
    pub changed: bool,
}

/// A listing of predictions. Results are newest first.
#[derive(Clone, Debug, Default)]
pub struct PredictionQuery {
    /// Only this account's predictions.
    pub owner: Option<AccountId>,
    /// Only predictions with this status.
    pub status: Option<Status>,
    /// Only predictions created at or after this time.
    pub created_after: Option<Timestamp>,
    /// Only predictions created strictly before this time.
    pub created_before: Option<Timestamp>,
    /// Continue after this one.
    pub after: Option<Cursor>,
    /// At most this many results (at least 1).
    pub limit: usize,
}

/// One page of predictions.
#[derive(Clone, Debug, Default)]
pub struct PredictionPage {
    /// The predictions, newest first, as a reader must see them now.
    pub items: Vec<Versioned<Arc<Prediction>>>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// How often [`Predictions::wait_until_settled`] re-reads the store even without a notification.
pub const WAIT_RECHECK: Duration = Duration::from_secs(1);

/// Runs new predictions in this process at once, without a trip through the queue.
///
/// The worker pool implements it. When it has a free slot, a create commits the prediction
/// with its job already leased to that worker and hands the lease over once the commit is
/// durable: no claim, no wake-up, one write fewer per prediction.
pub trait Dispatch: Send + Sync + fmt::Debug {
    /// Reserves a slot to run a job of `queue` now; `None` when none is free.
    fn reserve(&self, queue: &str) -> Option<Box<dyn Slot>>;

    /// Notes that jobs of `queue` were just queued here without asking for a slot (a batch's
    /// items), so that the pool takes them in the queue's fair order and, for a queue with a
    /// limit of its own, no more at a time than it has room for.
    fn queued(&self, _queue: &str) {}
}

/// A reserved slot of a [`Dispatch`]. Dropping it without [`Slot::start`] frees it.
pub trait Slot: Send {
    /// The worker that will hold the lease.
    fn worker(&self) -> &WorkerId;
    /// The lease's first length.
    fn lease_for(&self) -> Duration;
    /// Runs the job under `lease`; called once the create that holds the lease is durable.
    fn start(self: Box<Self>, lease: Lease);
}

/// Hex SHA-256 of a request's canonical JSON: the fingerprint an idempotency key keeps, to
/// recognise a retried request.
pub(crate) fn request_digest(canonical: &Value) -> String {
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// True if the effects put a message in a webhook outbox.
pub(crate) fn has_delivery(effects: &[Effect]) -> bool {
    effects
        .iter()
        .any(|e| matches!(e, Effect::Enqueue(item) if item.lane == Lane::Webhooks))
}

/// Hands a cache in front of the store the prediction just written at `revision`, so that the
/// next read (the worker's, the transition's) does not decode the JSON it was just encoded
/// into. Not for a prediction whose data is removed: its record decodes without input and
/// output, which the value may still hold.
fn remember(store: &dyn store::Store, prediction: &Prediction, revision: Revision) {
    if !prediction.data_removed {
        store.remember_decoded(&prediction.key(), revision, Arc::new(prediction.clone()));
    }
}

/// How often a transition re-reads and retries after losing a compare-and-set.
const MAX_CAS_ATTEMPTS: usize = 64;

/// How often a create starts over when what it collided with vanished meanwhile (an
/// idempotency key that expired, a prediction deleted).
const MAX_CREATE_ATTEMPTS: usize = 4;

/// The prediction service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Predictions {
    store: DynStore,
    hub: Hub,
    config: Arc<ServiceConfig>,
    dispatch: Arc<OnceLock<Arc<dyn Dispatch>>>,
    catalog: Arc<OnceLock<Arc<dyn Catalog>>>,
    notices: Arc<Notices>,
}

impl Predictions {
    /// A service over `store`.
    pub fn new(store: DynStore, config: ServiceConfig) -> Self {
        Self {
            store,
            hub: Hub::new(),
            config: Arc::new(config),
            dispatch: Arc::default(),
            catalog: Arc::default(),
            notices: Arc::default(),
        }
    }

    /// Lets a workflow node prediction's status change advance its run in the same write
    /// (set once, by the server; without it every change goes through the run's advance
    /// task).
    pub fn set_catalog(&self, catalog: Arc<dyn Catalog>) {
        if self.catalog.set(catalog).is_err() {
            tracing::warn!("a workflow catalog was already set; keeping the first");
        }
    }

    /// The models as workflow runs see them, once set.
    pub(crate) fn catalog(&self) -> Option<Arc<dyn Catalog>> {
        self.catalog.get().cloned()
    }

    /// Lets new predictions run in this process at once (set once, by the worker pool).
    pub fn set_dispatch(&self, dispatch: Arc<dyn Dispatch>) {
        if self.dispatch.set(dispatch).is_err() {
            tracing::warn!("a dispatcher was already set; keeping the first");
        }
    }

    /// The job queue (for the worker pool).
    pub fn jobs(&self) -> Jobs {
        Jobs::new(self.store.clone())
    }

    /// The webhook outbox (for the dispatcher and the delivery log).
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.store.clone())
    }

    /// Uploaded files' records (for the files API and the worker).
    pub fn files(&self) -> crate::file::Files {
        crate::file::Files::new(self.store.clone())
    }

    /// The store's capabilities, counters and announcements (for operations).
    pub fn ops(&self) -> Ops {
        Ops::new(self.store.clone())
    }

    /// The change notifications of this process.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// A free slot of this process's worker pool for a job of `queue`, if there is one (for the
    /// service's other modules: workflow runs start their nodes this way).
    pub(crate) fn reserve_slot(&self, queue: &str) -> Option<Box<dyn Slot>> {
        self.dispatch.get().and_then(|d| d.reserve(queue))
    }

    /// Tells the local worker pool that jobs of `queue` were queued without a slot
    /// ([`Dispatch::queued`]).
    pub(crate) fn note_queued(&self, queue: &str) {
        if let Some(d) = self.dispatch.get() {
            d.queued(queue);
        }
    }

    /// The store, for the service's other modules (batches).
    pub(crate) fn store(&self) -> &DynStore {
        &self.store
    }

    /// What changes announce, for the service's other modules (batches).
    pub(crate) fn notices(&self) -> &Notices {
        &self.notices
    }

    /// The service settings.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Stores a new prediction and queues its job on the model's queue, in one atomic step.
    ///
    /// A request that repeats an earlier one (same client id, or same idempotency key, with
    /// the same parameters) returns the earlier prediction; one that reuses an id or key with
    /// different parameters is refused.
    pub async fn create(&self, request: CreateRequest) -> Result<Creation> {
        self.create_through(request, None).await
    }

    /// Like [`Predictions::create`], through `deployment` (`owner/name`) if given: the
    /// prediction records it, and its job goes on the deployment's queue topic.
    pub async fn create_through(
        &self,
        request: CreateRequest,
        deployment: Option<String>,
    ) -> Result<Creation> {
        for _ in 0..MAX_CREATE_ATTEMPTS {
            match self.try_create(&request, deployment.as_deref()).await? {
                Some(creation) => return Ok(creation),
                None => tokio::task::yield_now().await,
            }
        }
        Err(Error::Contention(
            request.id.unwrap_or_else(PredictionId::generate),
        ))
    }

    /// One attempt at [`Predictions::create`]; `None` if it must start over.
    async fn try_create(
        &self,
        request: &CreateRequest,
        deployment: Option<&str>,
    ) -> Result<Option<Creation>> {
        let now = Timestamp::now();
        if let Some(id) = &request.id
            && self.id_is_retired(id, now)
        {
            return Err(Error::IdRetired(id.clone()));
        }
        let id = request
            .id
            .clone()
            .unwrap_or_else(|| PredictionId::generate_for(&request.owner));
        let mut prediction = Prediction::new(
            id.clone(),
            request.owner.clone(),
            request.model.clone(),
            request.version.clone(),
            request.input.clone(),
        );
        prediction.created_at = now;
        prediction.webhook = request.webhook.clone();
        prediction.webhook_events_filter = request.webhook_events_filter;
        prediction.deadline = request.deadline;
        let reserve = request.price.map(|p| p.reserve()).filter(|r| *r > 0);
        if let (Some(price), Some(reserved)) = (request.price, reserve) {
            prediction.hold = Some(Hold {
                price,
                reserved,
                charged: None,
            });
        }
        prediction.limited = request.max_active.is_some();
        prediction.deployment = deployment.map(str::to_owned);

        let key = request.idempotency_key.as_ref().map(|key| IdempotencyKey {
            owner: request.owner.clone(),
            key: key.clone(),
            fingerprint: request.fingerprint(),
            prediction_id: id.clone(),
            batch_id: None,
            run_id: None,
            created_at: now,
            expires_at: now.plus(self.config.idempotency_ttl),
        });
        let mut write = Write::new(request.owner.clone()).op(Op::Insert(prediction.to_record()?));
        if let Some(key) = &key {
            write.ops.push(Op::Insert(key.to_record()?));
        }
        let queue = prediction.queue();
        let slot = self.dispatch.get().and_then(|d| d.reserve(&queue));
        let (lease, enqueue) = match &slot {
            Some(slot) => {
                let (lease, effect) = Lease::claimed_at_create(
                    &id,
                    &request.owner,
                    &queue,
                    slot.worker(),
                    slot.lease_for(),
                    now,
                );
                (Some(lease), effect)
            }
            None => (None, jobs::enqueue(&id, &request.owner, &queue, now)),
        };
        write.effects.push(enqueue);
        write.effects.push(Effect::count(counters::CREATED, 1));
        if let Some(hold) = &prediction.hold {
            write.effects.push(Effect::Post(Box::new(credits::reserve(
                &prediction,
                hold,
                now,
            ))));
        }
        if let Some(limit) = request.max_active {
            write.effects.push(Effect::Count {
                name: counters::per_account(counters::ACTIVE, &request.owner),
                delta: 1,
                limit: Some(i64::from(limit)),
            });
        }
        write
            .effects
            .extend(self.notices.effects(None, &prediction, 0)?);
        let outbox = has_delivery(&write.effects);
        let leased = slot.is_some();
        let store = self.store.clone();
        let hub = self.hub.clone();
        let commit = async move {
            store.write(&write).await?;
            remember(&*store, &prediction, Revision::FIRST);
            let record = Versioned {
                value: prediction,
                revision: Revision::FIRST,
            };
            hub.publish(&record);
            if outbox {
                hub.notify_outbox();
            }
            match (slot, lease) {
                (Some(slot), Some(lease)) => slot.start(lease),
                _ => hub.notify_work(),
            }
            Ok::<_, store::Error>(record)
        };
        // With a slot reserved, the commit leases the job to this process: it must reach
        // `slot.start` even if the caller goes away meanwhile (a client hanging up drops the
        // request's future), or the job would sit leased to nobody until the lease lapsed.
        let committed = if leased {
            tokio::spawn(commit).await.map_err(|e| {
                Error::Store(store::Error::Other {
                    backend: "service",
                    source: Box::new(e),
                })
            })?
        } else {
            commit.await
        };
        match committed {
            Ok(record) => Ok(Some(Creation::Created(record))),
            Err(store::Error::Exists(taken)) if taken.kind == Kind::Prediction => {
                let Some(existing) = self.find(&id).await? else {
                    return Ok(None);
                };
                if request.same_parameters(&existing.value) {
                    Ok(Some(Creation::Replayed(self.seen_now(existing))))
                } else {
                    Err(Error::IdConflict(id))
                }
            }
            Err(store::Error::Exists(taken)) if taken.kind == Kind::IdempotencyKey => {
                let Some(first) = self.store.get_entity::<IdempotencyKey>(&taken).await? else {
                    return Ok(None);
                };
                let mine = key.as_ref().map(|k| k.fingerprint.as_str());
                if mine != Some(first.value.fingerprint.as_str()) {
                    return Err(Error::IdempotencyKeyReused {
                        key: first.value.key.clone(),
                    });
                }
                match self.find(&first.value.prediction_id).await? {
                    Some(p) => Ok(Some(Creation::Replayed(self.seen_now(p)))),
                    None => Err(Error::NotFound(first.value.prediction_id.clone())),
                }
            }
            Err(store::Error::InsufficientCredits { available, .. }) => {
                Err(Error::InsufficientCredits {
                    account: request.owner.clone(),
                    available,
                    price: reserve.unwrap_or_default(),
                    model: Some(request.model.clone()),
                })
            }
            Err(store::Error::LimitReached { .. }) => Err(Error::TooManyActive {
                account: request.owner.clone(),
                limit: request.max_active.unwrap_or_default(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn seen_now(&self, mut record: Versioned<Prediction>) -> Versioned<Prediction> {
        record.value = record.value.as_seen_at(Timestamp::now());
        record
    }

    /// The stored prediction, if there is one.
    async fn find(&self, id: &PredictionId) -> Result<Option<Versioned<Prediction>>> {
        Ok(self
            .store
            .get_entity::<Prediction>(&id.key())
            .await?
            .map(|v| Versioned {
                value: Arc::unwrap_or_clone(v.value),
                revision: v.revision,
            }))
    }

    /// Reads a prediction as a client must see it (a tombstone once retention is due).
    pub async fn get(&self, id: &PredictionId) -> Result<Versioned<Prediction>> {
        match self.find(id).await? {
            Some(p) => Ok(self.seen_now(p)),
            None => Err(Error::NotFound(id.clone())),
        }
    }

    /// Like [`Predictions::get`], never from a cache: for re-reads whose point is to see
    /// other nodes' writes.
    pub async fn get_uncached(&self, id: &PredictionId) -> Result<Versioned<Prediction>> {
        let stored = self
            .store
            .get_uncached(&id.key())
            .await?
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        let value = Arc::unwrap_or_clone(stored.decode::<Prediction>()?);
        Ok(self.seen_now(Versioned {
            value,
            revision: stored.revision,
        }))
    }

    /// Reads a prediction like [`Predictions::get`], shared rather than copied when a cache
    /// holds it (the hot path of status reads).
    pub async fn read(&self, id: &PredictionId) -> Result<Versioned<Arc<Prediction>>> {
        let stored = self
            .store
            .get(&id.key())
            .await?
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        let value = stored.decode::<Prediction>()?;
        let value = if value.is_expired(Timestamp::now()) {
            Arc::new((*value).clone().as_seen_at(Timestamp::now()))
        } else {
            value
        };
        Ok(Versioned {
            value,
            revision: stored.revision,
        })
    }

    /// Lists predictions, newest first.
    pub async fn list(&self, query: &PredictionQuery) -> Result<PredictionPage> {
        let page = self
            .store
            .list(&ListQuery {
                kind: Kind::Prediction,
                owner: query.owner.clone(),
                status: query.status.map(|s| s.as_str().to_owned()),
                parent: None,
                created_after: query.created_after,
                created_before: query.created_before,
                after: query.after.clone(),
                limit: query.limit,
            })
            .await?;
        let now = Timestamp::now();
        let mut items = Vec::with_capacity(page.items.len());
        for stored in &page.items {
            let mut value = stored.decode::<Prediction>()?;
            if value.is_expired(now) {
                value = Arc::new((*value).clone().as_seen_at(now));
            }
            items.push(Versioned {
                value,
                revision: stored.revision,
            });
        }
        Ok(PredictionPage {
            items,
            next: page.next,
        })
    }

    /// The prediction's stream events after position `after`, at most `limit`.
    pub async fn read_events(
        &self,
        id: &PredictionId,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> Result<Vec<StreamEvent>> {
        Ok(self.store.read_events(&id.key(), after, limit).await?)
    }

    /// Applies a report to a prediction: the state machine decides, the store commits the new
    /// record with the transition's side effects, and watchers hear of it.
    ///
    /// Lost compare-and-sets are retried on a fresh read, so concurrent reporters are
    /// serialised: of several conflicting terminal reports exactly one wins and the others get
    /// [`crate::state::TransitionError::ConflictingTerminal`].
    pub async fn transition(&self, id: &PredictionId, event: &Event) -> Result<Transition> {
        self.transition_with(id, event, &[]).await
    }

    /// Like [`Predictions::transition`], committing `extra` effects too if the report changes
    /// the record.
    pub async fn transition_with(
        &self,
        id: &PredictionId,
        event: &Event,
        extra: &[Effect],
    ) -> Result<Transition> {
        self.transition_all(id, std::slice::from_ref(event), extra)
            .await
    }

    /// Applies several reports in order and writes only the final record, in one
    /// compare-and-set. A worker uses this when a model finishes before its start was written
    /// (`processing` then `succeeded`), saving a write. Each report must be legal after the
    /// previous one; reports that change nothing are skipped.
    pub async fn transition_all(
        &self,
        id: &PredictionId,
        events: &[Event],
        extra: &[Effect],
    ) -> Result<Transition> {
        // A run advance rides along while that can succeed: after a lost compare-and-set it
        // is planned again from a fresh read of the run. Besides the occasional advance or
        // cancel, at most `FUSE_AT_MOST` settlements contend for the run record; after more
        // lost compare-and-sets than that, or a refused reservation, the change is written
        // alone and the run's advance task takes over.
        let mut fuse_tries = 0;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some(current) = self.find(id).await? else {
                return Err(Error::NotFound(id.clone()));
            };
            let now = Timestamp::now().max(current.value.created_at);
            let mut next: Option<Prediction> = None;
            for event in events {
                let base = next.as_ref().unwrap_or(&current.value);
                if let Applied::Changed(changed) = base.apply(event, now)? {
                    next = Some(*changed);
                }
            }
            let Some(mut next) = next else {
                return Ok(Transition {
                    prediction: self.seen_now(current),
                    changed: false,
                });
            };
            let mut effects = Vec::with_capacity(4 + extra.len());
            if next.is_terminal() && !current.value.is_terminal() {
                next.expires_at = Some(now.plus(self.config.retention));
                effects.push(jobs::complete(id));
                effects.push(Effect::count(counters::SETTLED, 1));
                effects.push(Effect::count(counters::settled_as(next.status), 1));
                if let Some(hold) = next.hold {
                    let entries =
                        credits::settlement(&next, &hold, self.config.canceled_after_start, now);
                    let charged = entries
                        .iter()
                        .filter(|e| e.reason == crate::store::Reason::Charge)
                        .map(|e| -e.delta)
                        .sum();
                    next.hold = Some(Hold {
                        charged: Some(charged),
                        ..hold
                    });
                    effects.extend(entries.into_iter().map(|e| Effect::Post(Box::new(e))));
                }
                if next.limited {
                    effects.push(Effect::count(
                        counters::per_account(counters::ACTIVE, &next.owner),
                        -1,
                    ));
                }
            }
            let mut fused = None;
            let tally = next.status != current.value.status
                && match (&next.batch, &next.run) {
                    (Some(batch), _) => {
                        effects.push(crate::batch::tally_task(batch, &next.owner, now));
                        true
                    }
                    (None, Some(run)) => {
                        if fuse_tries <= crate::workflow::FUSE_AT_MOST {
                            fused = self.advance_in_write(&next, fuse_tries > 0, now).await?;
                        }
                        if fused.is_none() {
                            effects.push(crate::workflow::advance_task(run, &next.owner, now));
                        }
                        fused.is_none()
                    }
                    (None, None) => false,
                };
            effects.extend_from_slice(extra);
            effects.extend(self.notices.effects(
                Some(&current.value),
                &next,
                current.revision.0,
            )?);
            let mut ops = vec![Op::Update {
                record: next.to_record()?,
                expected: current.revision,
            }];
            if let Some(advance) = &mut fused {
                ops.append(&mut advance.ops);
                effects.append(&mut advance.effects);
            }
            let write = Write {
                account: next.owner.clone(),
                ops,
                effects,
            };
            match self.store.write(&write).await {
                Ok(_) => {
                    remember(&*self.store, &next, current.revision.next());
                    if let Some(advance) = fused {
                        advance.committed(self);
                    }
                    let record = Versioned {
                        value: next,
                        revision: current.revision.next(),
                    };
                    self.hub.publish(&record);
                    if has_delivery(&write.effects) {
                        self.hub.notify_outbox();
                    }
                    if tally {
                        self.hub.notify_tasks();
                    }
                    return Ok(Transition {
                        prediction: record,
                        changed: true,
                    });
                }
                Err(store::Error::Conflict { .. }) => {
                    self.notices.forget(id);
                    fuse_tries = fuse_tries.saturating_add(usize::from(fused.is_some()));
                    tokio::task::yield_now().await;
                }
                Err(store::Error::InsufficientCredits { .. }) if fused.is_some() => {
                    self.notices.forget(id);
                    fuse_tries = usize::MAX;
                }
                Err(store::Error::NotFound(_)) => return Err(Error::NotFound(id.clone())),
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Contention(id.clone()))
    }

    /// Watches a prediction's changes made through this process.
    pub fn watch(&self, id: &PredictionId) -> Watch {
        self.hub.subscribe(id)
    }

    /// Waits until the prediction settles or `timeout` passes, and returns its latest state.
    ///
    /// Notifications wake the wait at once; the store is also re-read every
    /// [`WAIT_RECHECK`], so a notification that never comes (another node's write on a
    /// backend without change notifications, a dropped connection) delays the answer by at
    /// most that much.
    pub async fn wait_until_settled(
        &self,
        id: &PredictionId,
        timeout: Duration,
    ) -> Result<Versioned<Prediction>> {
        let mut watch = self.watch(id);
        let mut latest = self.get(id).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        while !latest.value.is_terminal() {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let wake = deadline.min(now + WAIT_RECHECK);
            match tokio::time::timeout_at(wake, watch.changed()).await {
                Ok(Some(record)) => {
                    if record.revision > latest.revision {
                        latest = self.seen_now((*record).clone());
                    }
                }
                Ok(None) => break,
                Err(_) if wake < deadline => {
                    latest = self.get_uncached(id).await?;
                }
                Err(_) => break,
            }
        }
        Ok(latest)
    }

    /// Applies retention to up to `limit` records whose time ran out; returns what lost its
    /// data: predictions (so that their output files can go too) and files (so that their
    /// bytes and then their tombstones can go).
    pub async fn expire_due(&self, limit: usize) -> Result<Expired> {
        let keys = self.store.expire(Timestamp::now(), limit).await?;
        let mut expired = Expired {
            count: keys.len(),
            ..Expired::default()
        };
        for key in keys {
            match key.kind {
                Kind::Prediction => expired
                    .predictions
                    .extend(PredictionId::parse(&key.id).ok()),
                Kind::File => expired.files.push(key.id),
                _ => {}
            }
        }
        Ok(expired)
    }
}

impl Predictions {
    /// True if `id`'s time is so old that its tombstone may have been deleted: such an id is
    /// never used again (a margin before the horizon covers clock differences).
    fn id_is_retired(&self, id: &PredictionId, now: Timestamp) -> bool {
        id.ulid_time()
            .is_some_and(|t| t.plus(self.config.tombstone_retention) <= now.plus(RETIRED_ID_MARGIN))
    }

    /// Deletes up to `limit` prediction tombstones past the second horizon, looking at one
    /// page of predictions created before it, from `after` on; returns how many it deleted and
    /// where the next call continues (`None`: start again from the newest).
    ///
    /// A tombstone goes once its data was removed and its id's time
    /// ([`PredictionId::ulid_time`]) is [`ServiceConfig::tombstone_retention`] old: such an id
    /// is never generated again (ids carry their time) and is refused as a client-chosen id
    /// (see `create`), so deleting it cannot let an id be used twice. Predictions with other
    /// ids (a client's own, not ULID-shaped) keep their tombstones. Uses only `list` and
    /// `Op::Delete`, so every backend does it the same way.
    pub async fn prune_tombstones(
        &self,
        after: Option<store::Cursor>,
        limit: usize,
    ) -> Result<(usize, Option<store::Cursor>)> {
        let now = Timestamp::now();
        let horizon = now.minus(self.config.tombstone_retention);
        let mut query = store::ListQuery::of(Kind::Prediction, limit.max(1));
        query.created_before = Some(horizon);
        query.after = after;
        let page = self.store.list(&query).await?;
        let mut deleted = 0;
        for stored in &page.items {
            let record = &stored.record;
            let Ok(id) = PredictionId::parse(&record.key.id) else {
                continue;
            };
            let retired = id
                .ulid_time()
                .is_some_and(|t| t.plus(self.config.tombstone_retention) <= now);
            if !record.data_removed || !retired {
                continue;
            }
            let write = Write::new(record.owner.clone()).op(Op::Delete(record.key.clone()));
            self.store.write(&write).await?;
            deleted += 1;
        }
        Ok((deleted, page.next))
    }
}

/// What one [`Predictions::expire_due`] call expired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Records retention acted on, of every kind.
    pub count: usize,
    /// Predictions that lost their data.
    pub predictions: Vec<PredictionId>,
    /// Ids of files that became tombstones.
    pub files: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Status, TransitionError};
    use crate::store::memory::MemoryStore;
    use serde_json::json;

    fn service() -> Predictions {
        Predictions::new(Arc::new(MemoryStore::new()), ServiceConfig::default())
    }

    fn service_on(store: &DynStore) -> Predictions {
        Predictions::new(store.clone(), ServiceConfig::default())
    }

    fn request(input: Value) -> CreateRequest {
        CreateRequest {
            id: None,
            owner: AccountId::admin(),
            model: ModelName::parse("augur/echo").unwrap(),
            version: "v1".into(),
            input,
            webhook: None,
            webhook_events_filter: WebhookEvents::ALL,
            deadline: None,
            idempotency_key: None,
            price: None,
            max_active: None,
        }
    }

    #[tokio::test]
    async fn create_queues_a_job_and_counts() {
        let svc = service();
        let created = svc.create(request(json!({"a": 1}))).await.unwrap();
        assert!(matches!(created, Creation::Created(_)));
        let stats = svc.ops().queue_stats(Lane::Jobs).await.unwrap();
        assert_eq!(stats.ready, 1);
        let counters = svc.ops().counters().await.unwrap();
        assert!(counters.contains(&(counters::CREATED.to_owned(), 1)));
    }

    #[tokio::test]
    async fn client_ids_replay_or_conflict() {
        let svc = service();
        let mut req = request(json!({"a": 1}));
        req.id = Some(PredictionId::parse("mine").unwrap());
        assert!(matches!(
            svc.create(req.clone()).await.unwrap(),
            Creation::Created(_)
        ));
        assert!(matches!(
            svc.create(req.clone()).await.unwrap(),
            Creation::Replayed(_)
        ));
        req.input = json!({"a": 2});
        assert!(matches!(
            svc.create(req).await.unwrap_err(),
            Error::IdConflict(_)
        ));
    }

    #[tokio::test]
    async fn idempotency_keys_replay_or_refuse() {
        let svc = service();
        let mut req = request(json!({"a": 1}));
        req.idempotency_key = Some("k1".into());
        let first = svc.create(req.clone()).await.unwrap();
        let again = svc.create(req.clone()).await.unwrap();
        assert!(matches!(again, Creation::Replayed(_)));
        assert_eq!(first.prediction().value.id, again.prediction().value.id);
        req.input = json!({"a": 2});
        let err = svc.create(req).await.unwrap_err();
        assert!(matches!(err, Error::IdempotencyKeyReused { ref key } if key == "k1"));
    }

    #[tokio::test]
    async fn settling_completes_the_job_sets_retention_and_counts_once() {
        let svc = service();
        let id = svc
            .create(request(json!({})))
            .await
            .unwrap()
            .prediction()
            .value
            .id
            .clone();
        svc.transition(&id, &Event::processing()).await.unwrap();
        let done = svc
            .transition(&id, &Event::succeeded(json!("out")))
            .await
            .unwrap();
        assert!(done.changed);
        assert!(done.prediction.value.expires_at.is_some());
        let again = svc
            .transition(&id, &Event::succeeded(json!("out")))
            .await
            .unwrap();
        assert!(!again.changed);
        let stats = svc.ops().queue_stats(Lane::Jobs).await.unwrap();
        assert_eq!(stats, Default::default());
        let counters = svc.ops().counters().await.unwrap();
        assert!(counters.contains(&(counters::SETTLED.to_owned(), 1)));
        assert!(counters.contains(&(counters::settled_as(Status::Succeeded), 1)));
    }

    #[tokio::test]
    async fn racing_terminal_reports_have_exactly_one_winner() {
        let svc = service();
        let id = svc
            .create(request(json!({})))
            .await
            .unwrap()
            .prediction()
            .value
            .id
            .clone();
        svc.transition(&id, &Event::processing()).await.unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let svc = svc.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    let event = match i % 3 {
                        0 => Event::succeeded(json!(i)),
                        1 => Event::failed(format!("error {i}")),
                        _ => Event::canceled(),
                    };
                    svc.transition(&id, &event).await
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(t) if t.changed => winners += 1,
                Ok(_) => {}
                Err(Error::Transition(
                    TransitionError::ConflictingTerminal { .. } | TransitionError::Invalid(_),
                )) => {}
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(winners, 1);
        let counters = svc.ops().counters().await.unwrap();
        assert!(counters.contains(&(counters::SETTLED.to_owned(), 1)));
    }

    #[tokio::test]
    async fn wait_until_settled_wakes_on_the_terminal_write() {
        let svc = service();
        let id = svc
            .create(request(json!({})))
            .await
            .unwrap()
            .prediction()
            .value
            .id
            .clone();
        let waiter = {
            let svc = svc.clone();
            let id = id.clone();
            tokio::spawn(async move { svc.wait_until_settled(&id, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        svc.transition(&id, &Event::canceled()).await.unwrap();
        let settled = waiter.await.unwrap().unwrap();
        assert_eq!(settled.value.status, Status::Canceled);
    }

    #[tokio::test]
    async fn wait_until_settled_returns_latest_on_timeout() {
        let svc = service();
        let id = svc
            .create(request(json!({})))
            .await
            .unwrap()
            .prediction()
            .value
            .id
            .clone();
        let p = svc
            .wait_until_settled(&id, Duration::from_millis(30))
            .await
            .unwrap();
        assert_eq!(p.value.status, Status::Starting);
    }

    #[tokio::test]
    async fn transition_all_writes_start_and_finish_at_once() {
        let svc = service();
        let id = svc
            .create(request(json!({})))
            .await
            .unwrap()
            .prediction()
            .value
            .id
            .clone();
        let done = svc
            .transition_all(
                &id,
                &[
                    Event::processing().with_attempt(1),
                    Event::succeeded(json!(1)),
                ],
                &[],
            )
            .await
            .unwrap();
        assert_eq!(done.prediction.revision, crate::Revision(2));
        let p = done.prediction.value;
        assert_eq!((p.status, p.attempts), (Status::Succeeded, 1));
        assert!(p.started_at.is_some() && p.completed_at.is_some());
        let illegal = svc
            .transition_all(&id, &[Event::processing()], &[])
            .await
            .unwrap_err();
        assert!(matches!(illegal, Error::Transition(_)));
    }

    #[tokio::test]
    async fn wait_until_settled_notices_writes_it_was_not_told_about() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let svc = service_on(&store);
        let id = svc
            .create(request(json!({})))
            .await
            .unwrap()
            .prediction()
            .value
            .id
            .clone();
        // Another node settles it: the write reaches the store but not this process's hub.
        let other_node = service_on(&store);
        let waiter = {
            let svc = svc.clone();
            let id = id.clone();
            tokio::spawn(async move { svc.wait_until_settled(&id, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        other_node
            .transition(&id, &Event::canceled())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let settled = waiter.await.unwrap().unwrap();
        assert_eq!(settled.value.status, Status::Canceled);
        assert!(started.elapsed() < WAIT_RECHECK + Duration::from_millis(500));
    }
}
