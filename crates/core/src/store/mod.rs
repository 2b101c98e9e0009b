//! The storage contract: the [`Store`] trait every backend implements, and its vocabulary.
//!
//! A store is the durable home of predictions, their jobs (the work queue), idempotency keys
//! and counters. Its methods are primitives a backend can perform atomically; business rules
//! (which transitions are legal, which side effects a transition has) live in
//! [`crate::state`] and [`crate::service`], never in a backend. In particular backends never
//! read a prediction's `status`: they only guarantee that [`Store::update`] is a
//! compare-and-set on the [`Revision`] and that its [`Effect`]s commit with it or not at all.
//!
//! Backends in this workspace: [`memory::MemoryStore`] (tests), `augur-store-embedded`
//! (SQLite, the default). Every backend passes the `augur-store-conformance` suite; each
//! `# Behavior` bullet below names the conformance test that pins it.

pub mod cached;
pub mod fallback;
pub mod memory;
pub mod metered;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

use crate::id::{AccountId, LeaseToken, PredictionId, WorkerId};
use crate::prediction::{Prediction, Revision, Versioned, WebhookEvent};
use crate::state::Status;
use crate::time::Timestamp;

/// A shared, dynamically chosen store.
pub type DynStore = Arc<dyn Store>;

/// The result type of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed error source from a backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a backend can and cannot do; code asks this instead of matching on backend names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// An acknowledged write survives a crash of the machine (power loss included), not only
    /// of the process: it is on stable storage (fsync, or a replicated quorum) before the call
    /// returns.
    pub durable: bool,
    /// Several Augur processes may share the store.
    pub shared: bool,
    /// The backend expires records itself; the sweeper only cleans up after it.
    pub native_ttl: bool,
    /// [`Store::subscribe`] announces every node's writes.
    pub change_notifications: bool,
}

/// A change announced by a backend, so that every node sharing it learns of every node's
/// writes (to wake waiting clients and idle workers, and to invalidate caches).
///
/// Announcements are hints, delivered at most once and possibly late: consumers re-read the
/// store for the truth, and poll as a backstop.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A prediction was created, changed or deleted; it is now at this revision (or gone).
    Prediction {
        /// Which prediction.
        id: PredictionId,
        /// Its revision after the write.
        revision: Revision,
    },
    /// Jobs were queued.
    Work,
    /// Announcements may have been missed (the subscription reconnected): everything derived
    /// from earlier ones must be refreshed.
    Resync,
}

/// The announcements of [`Store::subscribe`], as they happen.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Change> + Send>>;

/// A store's content, one record at a time, for `augur migrate`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Record {
    /// A prediction at its revision.
    Prediction(Box<Versioned<Prediction>>),
    /// A job (leases are not migrated: a migrated job is claimable from its `run_at`).
    Job(Job),
    /// An idempotency key.
    IdempotencyKey(IdempotencyRecord),
    /// A counter and its value.
    Counter {
        /// Its name.
        name: String,
        /// Its value.
        value: i64,
    },
    /// A webhook message with its history.
    Delivery(Box<DeliveryState>),
    /// An event of a prediction's event log.
    Event(PredictionId, StreamEvent),
}

/// A side effect that commits atomically with a prediction write.
///
/// Effects are scoped to the prediction being written: its job is keyed by its id. New kinds
/// (webhook deliveries, credit entries) are added here, and every backend must apply them in
/// the same atomic step as the write.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Effect {
    /// Put the prediction's job on `queue`, runnable from `run_at`. Replaces an existing job
    /// for the same prediction (and drops its lease).
    EnqueueJob {
        /// The queue (a model name).
        queue: String,
        /// Not claimable before this time.
        run_at: Timestamp,
    },
    /// Put the prediction's job on `queue` already claimed: its first attempt, under a lease
    /// held by `worker` with `token` until `expires_at`. The node that creates a prediction
    /// uses it to run the job at once, without a trip through the queue; if that node dies the
    /// lease lapses and the job is claimable like any other.
    EnqueueClaimed {
        /// The queue (a model name).
        queue: String,
        /// Who holds the lease.
        worker: WorkerId,
        /// The lease's token.
        token: LeaseToken,
        /// When the lease lapses unless renewed.
        expires_at: Timestamp,
    },
    /// Remove the prediction's job, if it has one, whoever holds its lease.
    CompleteJob,
    /// Add `delta` to the durable counter `name`.
    Count {
        /// Counter name, e.g. `predictions_settled_total`.
        name: String,
        /// Amount to add.
        delta: i64,
    },
    /// Put a webhook delivery in the prediction's outbox, after the ones already there; a
    /// message whose id the outbox already holds is not added again.
    EnqueueDelivery(Box<Delivery>),
    /// Append events to the prediction's event log, numbered `(revision of this write,
    /// index among the events of this write)`, counting across all its `AppendEvents`.
    AppendEvents(Vec<StreamEventData>),
}

/// What a stream event says, before it is numbered by the write that appends it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamEventData {
    /// The event's name.
    pub kind: StreamEventKind,
    /// Its data (text; Replicate's clients read `output` data as raw text).
    pub data: String,
}

/// The event names of Replicate's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamEventKind {
    /// New output (a token, an item, a URL).
    Output,
    /// New log lines.
    Logs,
    /// The prediction failed; the data is the error.
    Error,
    /// The prediction settled; the stream ends.
    Done,
}

impl StreamEventKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamEventKind::Output => "output",
            StreamEventKind::Logs => "logs",
            StreamEventKind::Error => "error",
            StreamEventKind::Done => "done",
        }
    }
}

/// An event of a prediction's durable event log. Its position `(revision, index)` is unique
/// and increasing within the prediction, and is the stream's `id:`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamEvent {
    /// The revision of the write that appended it.
    pub revision: Revision,
    /// Its place among that write's events.
    pub index: u32,
    /// What it says.
    #[serde(flatten)]
    pub event: StreamEventData,
}

/// A webhook message for one prediction, as written into the outbox.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    /// The message id (`webhook-id`), the same for every attempt: unique per prediction,
    /// revision and event.
    pub id: String,
    /// The prediction it is about.
    pub prediction_id: PredictionId,
    /// Where it goes.
    pub url: String,
    /// Which event it announces.
    pub event: WebhookEvent,
    /// The prediction as it was when the event happened; the body is rendered from it, the
    /// same bytes at every attempt.
    pub payload: Box<Prediction>,
    /// When it was enqueued.
    pub created_at: Timestamp,
}

/// One try at delivering a message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// When it started.
    pub at: Timestamp,
    /// The HTTP status the receiver answered, if it answered.
    pub status: Option<u16>,
    /// What went wrong, if anything did.
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// Where a message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryState {
    /// The message.
    pub delivery: Delivery,
    /// Its place in the prediction's outbox (deliveries go out in this order).
    pub seq: u64,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<Timestamp>,
}

/// A claimed message: the oldest pending one of its prediction, under a lease.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryLease {
    /// The message and its history.
    pub state: DeliveryState,
    /// Who holds it.
    pub worker: WorkerId,
    /// Proof of holding it.
    pub token: LeaseToken,
    /// When the lease lapses.
    pub expires_at: Timestamp,
}

/// How an attempt ended, for [`Store::finish_delivery`].
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

impl Effect {
    /// Shorthand for [`Effect::Count`].
    pub fn count(name: impl Into<String>, delta: i64) -> Self {
        Effect::Count {
            name: name.into(),
            delta,
        }
    }
}

/// An idempotency key as recorded by [`Store::create`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The account the key belongs to (keys are per account).
    pub owner: AccountId,
    /// The client's key.
    pub key: String,
    /// A digest of the request that first used the key.
    pub fingerprint: String,
    /// The prediction that request created.
    pub prediction_id: PredictionId,
    /// When the key may be forgotten.
    pub expires_at: Timestamp,
}

/// The arguments of [`Store::create`].
#[derive(Clone, Copy, Debug)]
pub struct NewPrediction<'a> {
    /// The record to insert.
    pub prediction: &'a Prediction,
    /// The idempotency key to record with it, if the client sent one.
    pub idempotency: Option<&'a IdempotencyRecord>,
    /// Side effects to commit with the insert.
    pub effects: &'a [Effect],
}

/// What [`Store::create`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Created {
    /// The prediction was inserted with its effects.
    Inserted(Revision),
    /// A prediction with this id already exists; nothing was written.
    ExistingId(Versioned<Prediction>),
    /// The idempotency key was already used (and has not expired); nothing was written.
    ExistingKey {
        /// The key as first recorded.
        record: IdempotencyRecord,
        /// The prediction it created, unless that was deleted since.
        prediction: Option<Versioned<Prediction>>,
    },
}

/// A position in a listing: continue after the record with this creation time and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the last record returned.
    pub created_at: Timestamp,
    /// Id of the last record returned.
    pub id: PredictionId,
}

/// A listing request. Results are newest first, ordered by `(created_at, id)` descending.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Only this account's predictions.
    pub owner: Option<AccountId>,
    /// Only predictions with this status.
    pub status: Option<Status>,
    /// Only predictions created at or after this time.
    pub created_after: Option<Timestamp>,
    /// Only predictions created strictly before this time.
    pub created_before: Option<Timestamp>,
    /// Continue after this record.
    pub after: Option<Cursor>,
    /// At most this many results (at least 1).
    pub limit: usize,
}

/// One page of a listing.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The predictions, newest first.
    pub items: Vec<Versioned<Prediction>>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

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

/// A claimed job and the lease that makes the claim exclusive until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job: Job,
    /// Who holds it.
    pub worker: WorkerId,
    /// Proof of holding it.
    pub token: LeaseToken,
    /// When the lease lapses and the job becomes claimable again.
    pub expires_at: Timestamp,
}

/// The arguments of [`Store::claim_jobs`].
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    /// Who claims.
    pub worker: WorkerId,
    /// How long the lease lasts unless renewed.
    pub lease_for: Duration,
    /// At most this many jobs.
    pub max: usize,
    /// Skip jobs on these queues (models at their concurrency limit).
    pub exclude_queues: Vec<String>,
}

/// Job counts, for metrics and back-pressure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Claimable now.
    pub ready: u64,
    /// Claimed under a live lease.
    pub leased: u64,
    /// Waiting for their `run_at` (retries with backoff).
    pub delayed: u64,
}

/// The storage contract.
///
/// Every method is atomic. Methods that take effects apply them in the same atomic step.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Short backend name for metrics and logs (`memory`, `embedded`, ...).
    fn backend(&self) -> &'static str;

    /// What this backend guarantees.
    fn capabilities(&self) -> Capabilities;

    /// Inserts a prediction with its effects and idempotency key, at revision 1.
    ///
    /// # Behavior
    /// - A new id is inserted and its effects applied (`create_then_get_round_trips`,
    ///   `create_applies_effects_atomically`).
    /// - An existing id writes nothing and returns the stored record
    ///   (`create_is_idempotent_on_id`).
    /// - A live idempotency key of the same owner writes nothing and returns the record and
    ///   its prediction (`idempotency_key_returns_first_prediction`); keys are per owner
    ///   (`idempotency_keys_are_scoped_to_owner`).
    /// - Concurrent creates of one id insert exactly once (`concurrent_creates_insert_once`).
    async fn create(&self, new: NewPrediction<'_>) -> Result<Created>;

    /// Reads a prediction.
    ///
    /// # Behavior
    /// - Unknown ids give [`Error::NotFound`] (`get_unknown_is_not_found`).
    async fn get(&self, id: &PredictionId) -> Result<Versioned<Prediction>>;

    /// Like [`Store::get`], but never served from a cache: for re-reads whose point is to see
    /// other nodes' writes (a waiter's periodic check). The default is `get`.
    async fn get_uncached(&self, id: &PredictionId) -> Result<Versioned<Prediction>> {
        self.get(id).await
    }

    /// Like [`Store::get`], shared: a cache can hand out the record it holds without copying
    /// it. The default wraps `get`.
    async fn get_shared(&self, id: &PredictionId) -> Result<Arc<Versioned<Prediction>>> {
        Ok(Arc::new(self.get(id).await?))
    }

    /// Replaces a prediction if its revision is still `expected`, applying `effects` in the same
    /// atomic step, and returns the new revision.
    ///
    /// # Behavior
    /// - A stale `expected` gives [`Error::Conflict`] and writes nothing, effects included
    ///   (`update_rejects_stale_revision`, `failed_update_applies_no_effects`).
    /// - Of many concurrent updates from one revision exactly one succeeds
    ///   (`concurrent_updates_have_one_winner`).
    /// - Unknown ids give [`Error::NotFound`] (`update_unknown_is_not_found`).
    async fn update(
        &self,
        id: &PredictionId,
        expected: Revision,
        next: &Prediction,
        effects: &[Effect],
    ) -> Result<Revision>;

    /// Deletes a prediction, its job and the idempotency keys that point at it.
    ///
    /// # Behavior
    /// - Afterwards `get` gives [`Error::NotFound`]; deleting twice is not an error
    ///   (`delete_removes_prediction_and_job`).
    async fn delete(&self, id: &PredictionId) -> Result<()>;

    /// Lists predictions newest first, filtered and paginated.
    ///
    /// # Behavior
    /// - Pages follow `(created_at, id)` descending with no gaps or repeats
    ///   (`list_pages_newest_first_without_gaps`).
    /// - Filters by owner, status and creation range combine (`list_filters_combine`).
    async fn list(&self, query: &ListQuery) -> Result<Page>;

    /// Replaces up to `limit` predictions whose `expires_at` is at or before `now` by their
    /// tombstones (bumping their revision), forgets expired idempotency keys, and returns the
    /// ids it tombstoned (so that their output files can be deleted too). `now` is a
    /// parameter, unlike in other operations, so that retention can be driven by the caller.
    ///
    /// # Behavior
    /// - Expired predictions keep id and status but lose input, output and logs
    ///   (`expire_leaves_tombstones`); others are untouched.
    /// - Expired idempotency keys are forgotten (`expired_idempotency_keys_are_forgotten`).
    async fn expire(&self, now: Timestamp, limit: usize) -> Result<Vec<PredictionId>>;

    /// Claims up to `max` claimable jobs (oldest `run_at` first) under a new lease each.
    ///
    /// A job is claimable when its `run_at` has passed and it has no live lease. Claiming
    /// increments its attempt count.
    ///
    /// # Behavior
    /// - A claimed job is not claimable again until its lease lapses
    ///   (`claim_is_exclusive_until_lease_expires`).
    /// - Jobs wait for their `run_at` (`claim_respects_run_at`).
    /// - Excluded queues are skipped (`claim_skips_excluded_queues`).
    /// - Concurrent claimers get each job once (`concurrent_claims_complete_each_job_once`).
    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<Lease>>;

    /// Extends a live lease to `now + extend_by`.
    ///
    /// # Behavior
    /// - Fails with [`Error::LeaseLost`] once the job was completed, released or claimed by
    ///   someone else (`renew_fails_after_lease_is_lost`).
    async fn renew_lease(&self, lease: &Lease, extend_by: Duration) -> Result<Lease>;

    /// Ends a lease and makes the job claimable again from `run_at`, keeping its attempt
    /// count (a retry after an error).
    ///
    /// # Behavior
    /// - Requires the current lease ([`Error::LeaseLost`] otherwise) (`retry_job_reschedules`).
    async fn retry_job(&self, lease: &Lease, run_at: Timestamp) -> Result<()>;

    /// Hands a lease back: the job is claimable again from `run_at` and the claim does not
    /// count as an attempt (graceful shutdown, claims beyond a model's limit, an asynchronous
    /// provider to be checked on later).
    ///
    /// # Behavior
    /// - Requires the current lease ([`Error::LeaseLost`] otherwise)
    ///   (`release_job_refunds_the_attempt`).
    async fn release_job(&self, lease: &Lease, run_at: Timestamp) -> Result<()>;

    /// Removes a prediction's job whoever holds it; a missing job is not an error.
    async fn complete_job(&self, id: &PredictionId) -> Result<()>;

    /// Counts jobs by state.
    ///
    /// # Behavior
    /// - Reflects ready, leased and delayed jobs (`queue_stats_counts_jobs`).
    async fn queue_stats(&self) -> Result<QueueStats>;

    /// Reads all durable counters.
    ///
    /// # Behavior
    /// - Counters add up across effects (`counters_accumulate`).
    async fn counters(&self) -> Result<Vec<(String, i64)>>;

    /// Subscribes to the announcements of every node's writes. `Ok(None)` when the backend
    /// announces nothing (`capabilities().change_notifications` is false: a store with one
    /// writing process, where this process's own writes are all there is).
    ///
    /// # Behavior
    /// - Creates and updates are announced with their revision, and queued jobs as work
    ///   (`changes_are_announced`).
    async fn subscribe(&self) -> Result<Option<ChangeStream>> {
        Ok(None)
    }

    /// Lists jobs in prediction-id order, starting after `after` (migration).
    ///
    /// # Behavior
    /// - Pages through every job once (`migration_round_trips_every_record`).
    async fn list_jobs(&self, after: Option<&PredictionId>, limit: usize) -> Result<Vec<Job>>;

    /// Lists idempotency keys in `(owner, key)` order, starting after `after` (migration).
    ///
    /// # Behavior
    /// - Pages through every key once (`migration_round_trips_every_record`).
    async fn list_idempotency_keys(
        &self,
        after: Option<(&AccountId, &str)>,
        limit: usize,
    ) -> Result<Vec<IdempotencyRecord>>;

    /// Writes records as they are, replacing what is there: predictions at their revision
    /// (indexes and expiry follow), jobs unleased with their attempts and run time, keys, and
    /// counters set to their value. Idempotent, so an interrupted migration can run again.
    ///
    /// # Behavior
    /// - What is imported reads back identical through every listing
    ///   (`migration_round_trips_every_record`).
    async fn import(&self, records: &[Record]) -> Result<()>;

    /// Claims up to `max` webhook messages under a lease each: for every prediction whose
    /// oldest pending message is due and not under a live lease, that message. A prediction's
    /// messages therefore go out one at a time, in order.
    ///
    /// # Behavior
    /// - Later messages of a prediction wait for the earlier ones, delivered or given up
    ///   (`deliveries_go_out_in_order_per_prediction`).
    /// - A claimed message is invisible to other claimers until its lease lapses
    ///   (`delivery_claims_are_exclusive_until_the_lease_lapses`).
    async fn claim_deliveries(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
    ) -> Result<Vec<DeliveryLease>>;

    /// Records an attempt at a claimed message and what follows from it, ending the lease.
    ///
    /// # Behavior
    /// - Requires the current lease ([`Error::LeaseLost`] otherwise)
    ///   (`finishing_needs_the_current_delivery_lease`).
    /// - `RetryAt` keeps the message pending (and the rest of the prediction's queue waiting)
    ///   until then; `GiveUp { drop_rest }` fails it, and with `drop_rest` the prediction's
    ///   later pending messages too (`attempts_are_recorded_and_outcomes_applied`).
    async fn finish_delivery(
        &self,
        lease: &DeliveryLease,
        attempt: &Attempt,
        outcome: DeliveryOutcome,
    ) -> Result<()>;

    /// A prediction's webhook messages, in order, with their attempts.
    async fn list_deliveries(&self, id: &PredictionId) -> Result<Vec<DeliveryState>>;

    /// Makes a message pending again and due now (a manual redelivery), keeping its id and
    /// history.
    ///
    /// # Behavior
    /// - An unknown message is [`Error::NotFound`] (`redeliver_requeues_a_message`).
    async fn redeliver(&self, id: &PredictionId, delivery_id: &str) -> Result<()>;

    /// The prediction's events after position `after` (all if `None`), in order, at most
    /// `limit`. Events are appended by [`Effect::AppendEvents`] and removed with the
    /// prediction's data (expiry) or the prediction.
    ///
    /// # Behavior
    /// - Events read back in `(revision, index)` order, resumable from any position
    ///   (`events_are_appended_with_their_write_and_resumable`).
    async fn read_events(
        &self,
        id: &PredictionId,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> Result<Vec<StreamEvent>>;

    /// Finishes queued writes and releases background resources before the process exits.
    /// Operations after `close` may fail. The default does nothing.
    async fn close(&self) {}
}

/// Errors every backend speaks. Backends convert their private errors into these at one spot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such prediction.
    #[error("prediction {0} not found")]
    NotFound(PredictionId),
    /// The compare-and-set lost: someone else wrote first.
    #[error("revision conflict: expected {expected}, found {actual}")]
    Conflict {
        /// The revision the writer read.
        expected: Revision,
        /// The revision in the store.
        actual: Revision,
    },
    /// The job's lease lapsed, was handed back, or the job is gone.
    #[error("job lease lost")]
    LeaseLost,
    /// The backend cannot be reached or is overloaded; retrying later may succeed.
    #[error("{backend} store unavailable: {source}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// Underlying error.
        source: BoxError,
    },
    /// Stored data could not be decoded.
    #[error("{backend} store holds corrupt data: {source}")]
    Corrupt {
        /// Backend name.
        backend: &'static str,
        /// Underlying error.
        source: BoxError,
    },
    /// Anything else the backend reported.
    #[error("{backend} store error: {source}")]
    Other {
        /// Backend name.
        backend: &'static str,
        /// Underlying error.
        source: BoxError,
    },
}

impl Error {
    /// True if the same call may succeed later without any change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// A stable short name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::Conflict { .. } => "conflict",
            Error::LeaseLost => "lease_lost",
            Error::Unavailable { .. } => "unavailable",
            Error::Corrupt { .. } => "corrupt",
            Error::Other { .. } => "other",
        }
    }
}
