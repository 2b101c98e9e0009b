//! The storage contract: the [`Store`] every backend implements, split by concern, and its
//! vocabulary.
//!
//! A store is the durable home of records of every [`Kind`] (predictions, idempotency keys,
//! accounts, tokens, files), a leased queue with [`Lane`]s (jobs, webhook messages, internal tasks),
//! each record's event log, each account's credit ledger, and counters. Its methods are
//! primitives a backend can perform atomically; business rules (which transitions are legal,
//! what a change costs, what it tells the world) live in [`crate::state`] and
//! [`crate::service`], never in a backend. Backends never read a record's body: they compare
//! revisions, check the guards of effects, and apply them.
//!
//! - [`RecordStore`]: [`Write`]s (record operations plus [`Effect`]s, one account's, all or
//!   nothing), reads, listings, retention.
//! - [`QueueStore`]: claims, leases and outcomes of queue items.
//! - [`EventStore`]: event logs.
//! - [`LedgerStore`]: credit totals and ledgers.
//! - [`AdminStore`]: capabilities, counters, announcements, export and import. Backends that
//!   forward announcements from a background task feed the subscriber's stream through a
//!   [`ChangeSender`].
//!
//! The atomic unit is one account's [`Partition`]: a write never crosses it, so a backend that
//! shards puts each partition in one shard and commits every write in one step there.
//!
//! Backends in this workspace: [`memory::MemoryStore`] (tests), `augur-store-embedded`
//! (SQLite, the default), `augur-store-redis`, `augur-store-postgres`, `augur-store-cloudflare`
//! (Durable Objects, through the Worker in `cloudflare/`). Every backend passes the
//! `augur-store-conformance` suite; each `# Behavior` bullet names the conformance test that
//! pins it. Decorators ([`cached`], [`fallback`], [`metered`]) forward what they do not change
//! with [`forward_store!`](crate::forward_store).

mod admin;
pub mod cached;
mod changes;
mod effect;
mod entity;
mod events;
pub mod fallback;
mod forward;
mod ledger;
pub mod memory;
pub mod metered;
mod queue;
mod record;

use std::sync::Arc;

pub use admin::{AdminStore, Capabilities, Change, ChangeStream, Exported, Position, Section};
pub use changes::ChangeSender;
pub use effect::Effect;
pub use entity::{Entity, StoreExt, body_record, decode_json, encode_json};
pub use events::{EventStore, StreamEvent, StreamEventData, StreamEventKind};
pub use ledger::{Balance, LedgerEntry, LedgerStore, Posted, Reason};
pub use queue::{
    Attempt, Claim, ClaimRequest, Finish, Item, ItemLease, ItemStatus, Lane, NewItem, Outcome,
    QueueStats, QueueStore,
};
pub(crate) use record::place_in;
pub use record::{
    Cursor, Key, Kind, ListQuery, OnExpiry, Op, Page, Partition, Record, RecordStore, Stored,
    Write, Written,
};

use crate::id::AccountId;
use crate::prediction::Revision;

/// The whole contract. Implemented for every type that implements its parts.
pub trait Store: RecordStore + QueueStore + EventStore + LedgerStore + AdminStore {}

impl<T: RecordStore + QueueStore + EventStore + LedgerStore + AdminStore + ?Sized> Store for T {}

/// A shared, dynamically chosen store.
pub type DynStore = Arc<dyn Store>;

/// The result type of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed error source from a backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Whether an operation reads or writes, for decorators that treat them differently
/// ([`fallback::FallbackStore`] reads from a secondary, never writes there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// It only reads.
    Read,
    /// It changes the store.
    Write,
}

/// Errors every backend speaks. Backends convert their private errors into these at one spot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such record (or queue item, named by its group).
    #[error("{0} not found")]
    NotFound(Key),
    /// An insert found the record already there.
    #[error("{0} already exists")]
    Exists(Key),
    /// The compare-and-set lost: someone else wrote first.
    #[error("revision conflict on {key}: expected {expected}, found {actual}")]
    Conflict {
        /// The record.
        key: Key,
        /// The revision the writer read.
        expected: Revision,
        /// The revision in the store.
        actual: Revision,
    },
    /// The item's lease lapsed, was handed back, or the item is gone.
    #[error("lease lost")]
    LeaseLost,
    /// A ledger entry would have left the account with less than nothing to spend.
    #[error("account {account} has {available} credits available, {needed} needed")]
    InsufficientCredits {
        /// The account.
        account: AccountId,
        /// What it could spend before the write.
        available: i64,
        /// What the write's entries would have taken.
        needed: i64,
    },
    /// A limited counter would have passed its limit.
    #[error("counter {counter} is at its limit of {limit}")]
    LimitReached {
        /// The counter.
        counter: String,
        /// Its limit.
        limit: i64,
    },
    /// The write is malformed (it leaves its account, or appends events to a record it does
    /// not write): a bug in the caller.
    #[error("invalid write: {0}")]
    Invalid(String),
    /// The backend cannot be reached or is overloaded; retrying later may succeed.
    #[error("{backend} store unavailable: {source}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// Underlying error.
        source: BoxError,
    },
    /// The store has no room for the write (its disk is full, or Redis reached `maxmemory`):
    /// writes are refused until space is freed, reads go on; retrying later may succeed.
    #[error("{backend} store has no space left for writes: {source}")]
    NoSpace {
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

/// Which of the contract's backend-failure errors a backend's private error is: each backend
/// classifies its own errors and converts them with [`Error::classified`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// [`Error::Unavailable`]: retrying later may succeed.
    Unavailable,
    /// [`Error::NoSpace`]: the store is full.
    NoSpace,
    /// [`Error::Corrupt`]: stored data does not decode.
    Corrupt,
    /// [`Error::Other`].
    Other,
}

impl Error {
    /// The contract's error of `class` for `backend`'s private error `source`.
    pub fn classified(
        class: ErrorClass,
        backend: &'static str,
        source: impl Into<BoxError>,
    ) -> Self {
        let source = source.into();
        match class {
            ErrorClass::Unavailable => Error::Unavailable { backend, source },
            ErrorClass::NoSpace => Error::NoSpace { backend, source },
            ErrorClass::Corrupt => Error::Corrupt { backend, source },
            ErrorClass::Other => Error::Other { backend, source },
        }
    }

    /// True if the same call may succeed later without any change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::NoSpace { .. })
    }

    /// A stable short name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::Exists(_) => "exists",
            Error::Conflict { .. } => "conflict",
            Error::LeaseLost => "lease_lost",
            Error::InsufficientCredits { .. } => "insufficient_credits",
            Error::LimitReached { .. } => "limit_reached",
            Error::Invalid(_) => "invalid",
            Error::Unavailable { .. } => "unavailable",
            Error::NoSpace { .. } => "no_space",
            Error::Corrupt { .. } => "corrupt",
            Error::Other { .. } => "other",
        }
    }
}
