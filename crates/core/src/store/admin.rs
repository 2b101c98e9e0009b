//! Administration: what a backend is and can do, its counters, its change announcements, and
//! export and import of everything it holds (for `augur migrate`), by section rather than by
//! table, so that a new kind of record migrates without a new method.

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

use super::{Item, Key, Kind, Lane, Posted, Record, Result, StreamEvent};
use crate::id::AccountId;
use crate::prediction::Revision;

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
    /// [`AdminStore::subscribe`] announces every node's writes.
    pub change_notifications: bool,
}

/// A change announced by a backend, so that every node sharing it learns of every node's
/// writes (to wake waiting clients and idle workers, and to invalidate caches).
///
/// Announcements are hints, delivered at most once and possibly late: consumers re-read the
/// store for the truth, and poll as a backstop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A record was created, changed or deleted; it is now at this revision (or gone).
    Record {
        /// Which record.
        key: Key,
        /// Its revision after the write.
        revision: Revision,
    },
    /// Claimable items were queued on a lane.
    Work(Lane),
    /// Announcements may have been missed (the subscription reconnected): everything derived
    /// from earlier ones must be refreshed.
    Resync,
}

/// The announcements of [`AdminStore::subscribe`], as they happen.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Change> + Send>>;

/// A part of a store's content, exported in its own order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    /// Records of every kind, by `(kind, id)`.
    Records,
    /// Queue items of every lane, by `(lane, id)`.
    Items,
    /// Events, by `(stream kind, stream id, revision, index)`.
    Events,
    /// Ledger entries, by `(account, seq)`.
    Ledger,
    /// Counters, by name.
    Counters,
}

impl Section {
    /// Every section, in the order a migration copies them.
    pub const ALL: [Section; 5] = [
        Section::Records,
        Section::Items,
        Section::Events,
        Section::Ledger,
        Section::Counters,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Records => "records",
            Section::Items => "items",
            Section::Events => "events",
            Section::Ledger => "ledger",
            Section::Counters => "counters",
        }
    }
}

/// One exported piece of a store's content.
#[derive(Clone, Debug, PartialEq)]
pub enum Exported {
    /// A record at its revision.
    Record {
        /// The record.
        record: Box<Record>,
        /// Its revision.
        revision: Revision,
    },
    /// A queue item with its history (leases are not exported: an imported pending item is
    /// claimable from its `due_at`).
    Item(Box<Item>),
    /// An event of a record's log.
    Event {
        /// The record whose log it is.
        stream: Key,
        /// The event.
        event: StreamEvent,
    },
    /// A ledger entry with the totals after it.
    Ledger(Box<Posted>),
    /// A counter and its value.
    Counter {
        /// Its name.
        name: String,
        /// Its value.
        value: i64,
    },
}

/// Where an export page ends: pass it back to continue after it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Position {
    /// After this record.
    Record(Kind, String),
    /// After this item.
    Item(Lane, String),
    /// After this event.
    Event(Kind, String, Revision, u32),
    /// After this ledger entry.
    Ledger(AccountId, u64),
    /// After this counter.
    Counter(String),
}

impl Exported {
    /// The section it belongs to.
    pub fn section(&self) -> Section {
        match self {
            Exported::Record { .. } => Section::Records,
            Exported::Item(_) => Section::Items,
            Exported::Event { .. } => Section::Events,
            Exported::Ledger(_) => Section::Ledger,
            Exported::Counter { .. } => Section::Counters,
        }
    }

    /// Its position in its section.
    pub fn position(&self) -> Position {
        match self {
            Exported::Record { record, .. } => {
                Position::Record(record.key.kind, record.key.id.clone())
            }
            Exported::Item(item) => Position::Item(item.lane, item.id.clone()),
            Exported::Event { stream, event } => {
                Position::Event(stream.kind, stream.id.clone(), event.revision, event.index)
            }
            Exported::Ledger(posted) => Position::Ledger(posted.entry.account.clone(), posted.seq),
            Exported::Counter { name, .. } => Position::Counter(name.clone()),
        }
    }
}

/// What a backend is, its counters, announcements, export and import.
#[async_trait]
pub trait AdminStore: Send + Sync + fmt::Debug + 'static {
    /// Short backend name for metrics and logs (`memory`, `embedded`, ...).
    fn backend(&self) -> &'static str;

    /// What this backend guarantees.
    fn capabilities(&self) -> Capabilities;

    /// Reads all durable counters.
    ///
    /// # Behavior
    /// - Counters add up across effects (`counters_accumulate`), and limited counters refuse
    ///   to pass their limit (`limited_counters_refuse_to_pass_their_limit`).
    async fn counters(&self) -> Result<Vec<(String, i64)>>;

    /// Subscribes to the announcements of every node's writes. `Ok(None)` when the backend
    /// announces nothing (`capabilities().change_notifications` is false: a store with one
    /// writing process, where this process's own writes are all there is).
    ///
    /// # Behavior
    /// - Writes are announced with their revision, and queued items as work
    ///   (`changes_are_announced`).
    async fn subscribe(&self) -> Result<Option<ChangeStream>> {
        Ok(None)
    }

    /// Up to `limit` pieces of a section, in the section's order, after `after`.
    ///
    /// # Behavior
    /// - Pages through every piece once (`migration_round_trips_every_section`).
    async fn export(
        &self,
        section: Section,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Exported>>;

    /// Writes exported pieces as they are, replacing what is there: records at their revision
    /// (indexes and expiry follow), items unleased with their history, events at their
    /// position, ledger entries at their place (the account's totals become those after its
    /// last entry), counters set to their value. Idempotent, so an interrupted migration can
    /// run again.
    ///
    /// # Behavior
    /// - What is imported exports identically, and takes part in writes, claims and reads
    ///   (`migration_round_trips_every_section`).
    async fn import(&self, pieces: &[Exported]) -> Result<()>;

    /// Finishes queued writes and releases background resources before the process exits.
    /// Operations after `close` may fail. The default does nothing.
    async fn close(&self) {}
}
