//! Records: the kinds of record a store keeps, their keys and partitions, and
//! [`RecordStore`], the writes and reads over them.
//!
//! A record is a JSON body a backend stores without reading it, plus the few columns it indexes
//! (owner, creation time, status, parent, expiry). Every kind of record (predictions,
//! idempotency keys, accounts, tokens, files, ...) is stored the same way, so a new kind costs a
//! domain module ([`crate::store::Entity`]) and conformance cases, never a backend method.
//!
//! Writes are [`Write`]s: record operations and their [`Effect`]s, all within one account's
//! [`Partition`], committed together or not at all.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use super::{Effect, Error, Result};
use crate::id::AccountId;
use crate::prediction::Revision;
use crate::time::Timestamp;

/// The kinds of record. Backends store [`Kind::as_str`] and never branch on the kind, except
/// through [`Kind::on_expiry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// An account.
    Account,
    /// A batch of predictions ([`crate::batch::Batch`]); its items name it as their parent.
    Batch,
    /// A deployment ([`crate::deployment::Deployment`]): a named route to a model version.
    Deployment,
    /// An uploaded file's metadata ([`crate::file::FileObject`]); its bytes are in an object
    /// store.
    File,
    /// An `Idempotency-Key` and the prediction it created.
    IdempotencyKey,
    /// A node serving from the store ([`crate::node::Node`]): short-lived, renewed while the
    /// node runs, never migrated.
    Node,
    /// A prediction ([`crate::Prediction`]).
    Prediction,
    /// A workflow run ([`crate::workflow::Run`]); its node predictions name it as their
    /// parent.
    Run,
    /// An API token (its hash, never the token).
    Token,
    /// A workflow's blueprint, at its latest version ([`crate::workflow::Workflow`]).
    Workflow,
}

/// What retention does to a record whose `expires_at` has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExpiry {
    /// Keep a tombstone: the body stays, `data` goes, `data_removed` is set and the revision
    /// moves on. The record's event log and finished queue items go with the data.
    RemoveData,
    /// Delete the record (it reads as absent from `expires_at` on, even before a sweep).
    Delete,
}

impl Kind {
    /// Every kind, in [`Kind::as_str`] order, which is also their `Ord` order (the order of
    /// exports).
    pub const ALL: [Kind; 10] = [
        Kind::Account,
        Kind::Batch,
        Kind::Deployment,
        Kind::File,
        Kind::IdempotencyKey,
        Kind::Node,
        Kind::Prediction,
        Kind::Run,
        Kind::Token,
        Kind::Workflow,
    ];

    /// The stored name. No name is a prefix of another.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Prediction => "prediction",
            Kind::IdempotencyKey => "idempotency_key",
            Kind::Account => "account",
            Kind::Batch => "batch",
            Kind::Deployment => "deployment",
            Kind::File => "file",
            Kind::Node => "node",
            Kind::Run => "run",
            Kind::Token => "token",
            Kind::Workflow => "workflow",
        }
    }

    /// The kind with this stored name.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// What retention does to records of this kind.
    pub fn on_expiry(self) -> OnExpiry {
        match self {
            // A file's tombstone tells the sweeper, on every backend, whose bytes to delete.
            Kind::Prediction | Kind::File => OnExpiry::RemoveData,
            Kind::IdempotencyKey | Kind::Account | Kind::Token | Kind::Deployment | Kind::Node => {
                OnExpiry::Delete
            }
            // Batches never expire (they are the history); this applies if one is given a time.
            Kind::Batch | Kind::Run | Kind::Workflow => OnExpiry::Delete,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of [`Partition::COUNT`] groups of accounts. Everything of one account (its records,
/// queue items, events, ledger) is in its account's partition, and a [`Write`] never leaves
/// one partition: a backend that shards (Redis Cluster, Durable Objects) puts a partition in one
/// shard and so commits every write in one atomic step there. Backends that do not shard
/// ignore partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition(pub u8);

impl Partition {
    /// How many partitions there are. Fixed forever: it places stored records. A backend's
    /// shard count must divide it.
    pub const COUNT: usize = 256;

    /// The partition of a piece of text: FNV-1a (64 bits) modulo [`Partition::COUNT`].
    pub fn of(text: &str) -> Partition {
        Partition((fnv1a(FNV_OFFSET, text.as_bytes()) % Self::COUNT as u64) as u8)
    }

    /// The partition of an account's records.
    pub fn of_account(account: &AccountId) -> Partition {
        Partition::of(account.as_str())
    }

    /// The shard of this partition when a backend splits its data into `shards` (a divisor of
    /// [`Partition::COUNT`]).
    pub fn shard(self, shards: usize) -> usize {
        usize::from(self.0) % shards
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Rewrites the last three characters of `id` (to lowercase letters and digits) so that
/// `Partition::of(id) == partition`, keeping everything before them: how generated ids are
/// made to live in their owner's partition, so that they can be looked up by id alone. `id`
/// must be at least three characters of ASCII.
pub(crate) fn place_in(id: &mut String, partition: Partition) {
    const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    // FNV-1a's last step maps `(h ^ c) * P` mod 256 one to one (P is odd), so the last byte
    // that lands in `partition` is unique: solve for it, and vary the two bytes before it
    // until the solution is an allowed character (about 1 try in 7; 1,296 tries in all).
    const INV_PRIME_MOD_256: u64 = 0x7b; // 0xb3 * 0x7b = 1 (mod 256)
    let len = id.len();
    assert!(
        len >= 3 && id.is_ascii(),
        "an id to place is ASCII of 3+ characters"
    );
    let want = (u64::from(partition.0) * INV_PRIME_MOD_256) % 256;
    let prefix = fnv1a(FNV_OFFSET, &id.as_bytes()[..len - 3]);
    for &third in CHARS {
        let h3 = fnv1a(prefix, &[third]);
        for &second in CHARS {
            let h = fnv1a(h3, &[second]);
            let last = (want ^ (h & 0xff)) as u8;
            if CHARS.contains(&last) {
                id.truncate(len - 3);
                id.extend([char::from(third), char::from(second), char::from(last)]);
                debug_assert_eq!(Partition::of(id), partition);
                return;
            }
        }
    }
    unreachable!("1,296 candidates cover every partition");
}

/// A record's identity: its kind, its id (unique within the kind) and where it lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The kind.
    pub kind: Kind,
    /// The id, unique within the kind.
    pub id: String,
    /// Where the record is looked up: the partition of its id for kinds looked up by id alone
    /// (whose ids are generated in their owner's partition), or its owner's.
    pub partition: Partition,
}

impl Key {
    /// A key whose partition is that of its id.
    pub fn new(kind: Kind, id: impl Into<String>) -> Key {
        let id = id.into();
        let partition = Partition::of(&id);
        Key {
            kind,
            id,
            partition,
        }
    }

    /// A key in `owner`'s partition (kinds only ever looked up with their owner at hand).
    pub fn owned(kind: Kind, id: impl Into<String>, owner: &AccountId) -> Key {
        Key {
            kind,
            id: id.into(),
            partition: Partition::of_account(owner),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// A record as a backend stores it.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// Its identity.
    pub key: Key,
    /// The account it belongs to: reads and writes are scoped to it.
    pub owner: AccountId,
    /// When it was created (listing order, with the id).
    pub created_at: Timestamp,
    /// A short status the listing may filter on.
    pub status: Option<String>,
    /// The id of a record this one belongs to (a batch, a workflow run), for listings.
    pub parent: Option<String>,
    /// When retention acts on it ([`Kind::on_expiry`]).
    pub expires_at: Option<Timestamp>,
    /// True once retention removed its data.
    pub data_removed: bool,
    /// What stays when retention removes the data (JSON; the backend never reads it).
    pub body: String,
    /// What retention removes (JSON), if anything; `None` once removed.
    pub data: Option<String>,
}

impl Record {
    /// True if the record is in its owner's partition (false for a client-chosen id that
    /// hashes elsewhere: a sharded backend then keeps a forwarding entry at the id's partition).
    pub fn is_placed(&self) -> bool {
        self.key.partition == Partition::of_account(&self.owner)
    }

    /// True if the record reads as absent at `now`: a [`OnExpiry::Delete`] kind past its
    /// `expires_at`.
    pub fn is_gone_at(&self, now: Timestamp) -> bool {
        self.key.kind.on_expiry() == OnExpiry::Delete && self.expires_at.is_some_and(|at| at <= now)
    }

    /// Its tombstone: no data, `data_removed` set.
    pub fn tombstone(&self) -> Record {
        Record {
            data: None,
            data_removed: true,
            ..self.clone()
        }
    }

    /// Stored bytes, for metrics and limits.
    pub fn size(&self) -> usize {
        self.body.len() + self.data.as_ref().map_or(0, String::len)
    }
}

/// Bodies may hold secrets (a prediction's stream token): `Debug` shows only their size.
impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key)
            .field("owner", &self.owner)
            .field("created_at", &self.created_at)
            .field("status", &self.status)
            .field("parent", &self.parent)
            .field("expires_at", &self.expires_at)
            .field("data_removed", &self.data_removed)
            .field("bytes", &self.size())
            .finish()
    }
}

/// A record read from a store, at its revision. It remembers what it was decoded into, so that
/// a cache handing the same `Arc<Stored>` to many readers decodes it once.
pub struct Stored {
    /// The record.
    pub record: Record,
    /// Its revision.
    pub revision: Revision,
    decoded: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl Stored {
    /// A record read at `revision`.
    pub fn new(record: Record, revision: Revision) -> Self {
        Self {
            record,
            revision,
            decoded: OnceLock::new(),
        }
    }

    /// Keeps `value` as what the record decodes into, unless it was decoded already.
    pub(crate) fn set_decoded(&self, value: Arc<dyn Any + Send + Sync>) {
        let _ = self.decoded.set(value);
    }

    /// The record decoded as `T`, decoded at most once per `Stored` (for the first type asked).
    pub fn decode<T: super::Entity>(&self) -> Result<Arc<T>> {
        if let Some(done) = self.decoded.get() {
            if let Ok(value) = Arc::clone(done).downcast::<T>() {
                return Ok(value);
            }
            return T::from_record(&self.record).map(Arc::new);
        }
        let value = Arc::new(T::from_record(&self.record)?);
        let _ = self.decoded.set(value.clone());
        Ok(value)
    }
}

impl Clone for Stored {
    fn clone(&self) -> Self {
        Self::new(self.record.clone(), self.revision)
    }
}

impl PartialEq for Stored {
    fn eq(&self, other: &Self) -> bool {
        self.revision == other.revision && self.record == other.record
    }
}

impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stored")
            .field("record", &self.record)
            .field("revision", &self.revision)
            .finish()
    }
}

/// One record operation of a [`Write`].
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Insert at revision 1. A record with the key that reads as present fails the write with
    /// [`Error::Exists`].
    Insert(Record),
    /// Replace the record if it is still at `expected`: [`Error::Conflict`] if not,
    /// [`Error::NotFound`] if there is none, or if it belongs to another account than the
    /// write's (a write never reaches into another account).
    Update {
        /// The new record (its key names the record replaced).
        record: Record,
        /// The revision the writer read.
        expected: Revision,
    },
    /// Remove the record, its queue items (every lane) and its event log. A missing record, or
    /// one of another account than the write's, is left alone (not an error).
    Delete(Key),
}

impl Op {
    /// The key the operation writes.
    pub fn key(&self) -> &Key {
        match self {
            Op::Insert(record) | Op::Update { record, .. } => &record.key,
            Op::Delete(key) => key,
        }
    }
}

/// An atomic write: record operations and effects, all of one account, committed together or
/// not at all.
///
/// Checks happen in order, before anything is written: each operation's precondition (in
/// `ops` order; the first that fails is the error), then the guards of the effects (credit
/// limits, counter limits). So a write that repeats an earlier create fails on the existing
/// record, not on a guard.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    /// The account every record, queue item and ledger entry of the write belongs to: the
    /// write's partition.
    pub account: AccountId,
    /// The record operations, checked and applied in order.
    pub ops: Vec<Op>,
    /// The side effects, applied in order after the operations.
    pub effects: Vec<Effect>,
}

impl Write {
    /// A write for `account`'s partition with nothing in it yet.
    pub fn new(account: AccountId) -> Self {
        Self {
            account,
            ops: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// Adds an operation.
    pub fn op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    /// Adds effects.
    pub fn effects(mut self, effects: impl IntoIterator<Item = Effect>) -> Self {
        self.effects.extend(effects);
        self
    }

    /// The partition everything of the write lives in.
    pub fn partition(&self) -> Partition {
        Partition::of_account(&self.account)
    }

    /// The revision the record written by the operation on `key` will have if the write
    /// commits, or `None` if no operation inserts or updates it.
    pub fn revision_of(&self, key: &Key) -> Option<Revision> {
        self.ops.iter().rev().find_map(|op| match op {
            Op::Insert(r) if &r.key == key => Some(Revision::FIRST),
            Op::Update { record, expected } if &record.key == key => Some(expected.next()),
            _ => None,
        })
    }

    /// Checks that the write stays within its account: every record, queue item and ledger
    /// entry belongs to `account`, and every event log appended to is a record the write
    /// inserts or updates. Backends call it before anything else.
    pub fn check(&self) -> Result<()> {
        let foreign = |what: String| Err(Error::Invalid(what));
        for op in &self.ops {
            if let Op::Insert(r) | Op::Update { record: r, .. } = op
                && r.owner != self.account
            {
                return foreign(format!(
                    "{} belongs to {}, not {}",
                    r.key, r.owner, self.account
                ));
            }
        }
        for effect in &self.effects {
            match effect {
                Effect::Enqueue(item) if item.owner != self.account => {
                    return foreign(format!("queue item {} belongs to {}", item.id, item.owner));
                }
                Effect::Post(entry) if entry.account != self.account => {
                    return foreign(format!(
                        "ledger entry {} is for {}",
                        entry.id, entry.account
                    ));
                }
                Effect::AppendEvents { stream, .. } if self.revision_of(stream).is_none() => {
                    return foreign(format!(
                        "events for {stream}, which the write does not write"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// What a committed [`Write`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// The revision of each operation's record after the write (`None` for a delete), in
    /// `ops` order.
    pub revisions: Vec<Option<Revision>>,
    /// Ids of ledger entries that were already posted and so were skipped.
    pub skipped_entries: Vec<String>,
}

/// A position in a listing: continue after the record with this creation time and id (the
/// next, older page), or, `backward`, before it (the previous, newer page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the record at the position.
    pub created_at: Timestamp,
    /// Id of the record at the position.
    pub id: String,
    /// False: the records older than the position (the page after it). True: the records
    /// newer than it, the `limit` nearest to it (the page before it), still newest first.
    pub backward: bool,
}

impl Cursor {
    /// The position after `record` (older records).
    pub fn after(record: &Record) -> Cursor {
        Cursor {
            created_at: record.created_at,
            id: record.key.id.clone(),
            backward: false,
        }
    }

    /// The position before `record` (newer records).
    pub fn before(record: &Record) -> Cursor {
        Cursor {
            backward: true,
            ..Cursor::after(record)
        }
    }
}

/// A listing request. Results are newest first, ordered by `(created_at, id)` descending.
#[derive(Clone, Debug)]
pub struct ListQuery {
    /// Records of this kind.
    pub kind: Kind,
    /// Only this account's.
    pub owner: Option<AccountId>,
    /// Only those with this status.
    pub status: Option<String>,
    /// Only those with this parent.
    pub parent: Option<String>,
    /// Only those created at or after this time.
    pub created_after: Option<Timestamp>,
    /// Only those created strictly before this time.
    pub created_before: Option<Timestamp>,
    /// Continue from this position: after it (older records) or, with
    /// [`Cursor::backward`], before it (newer ones).
    pub after: Option<Cursor>,
    /// At most this many results (at least 1).
    pub limit: usize,
}

impl ListQuery {
    /// Every record of `kind`, `limit` at a time.
    pub fn of(kind: Kind, limit: usize) -> Self {
        Self {
            kind,
            owner: None,
            status: None,
            parent: None,
            created_after: None,
            created_before: None,
            after: None,
            limit,
        }
    }

    /// True if `record` passes the filters (not the cursor).
    pub fn matches(&self, record: &Record) -> bool {
        record.key.kind == self.kind
            && self.owner.as_ref().is_none_or(|o| *o == record.owner)
            && self
                .status
                .as_ref()
                .is_none_or(|s| Some(s) == record.status.as_ref())
            && self
                .parent
                .as_ref()
                .is_none_or(|p| Some(p) == record.parent.as_ref())
            && self.created_after.is_none_or(|a| record.created_at >= a)
            && self.created_before.is_none_or(|b| record.created_at < b)
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The records, newest first.
    pub items: Vec<Arc<Stored>>,
    /// Where the next page in the listing's direction starts; `None` at the end. Going
    /// forward (older): after the last record. Going backward: before the first (newest)
    /// record, a backward cursor, when newer records remain.
    pub next: Option<Cursor>,
}

/// Records: atomic writes, reads, listings and retention.
#[async_trait]
pub trait RecordStore: Send + Sync + fmt::Debug + 'static {
    /// Commits a write: its operations and effects, all or nothing.
    ///
    /// # Behavior
    /// - An insert reads back identical at revision 1 (`insert_then_get_round_trips`,
    ///   `large_and_unicode_records_round_trip`); its effects are applied with it
    ///   (`a_write_applies_its_effects`).
    /// - An insert of a present key is [`Error::Exists`] and writes nothing, effects included
    ///   (`insert_of_an_existing_key_writes_nothing`); of many concurrent inserts of one key
    ///   exactly one succeeds (`concurrent_inserts_succeed_once`).
    /// - An update at a stale revision is [`Error::Conflict`] and writes nothing
    ///   (`update_rejects_stale_revision`, `failed_update_applies_no_effects`); of many
    ///   concurrent updates from one revision exactly one wins
    ///   (`concurrent_updates_have_one_winner`, `racing_writes_apply_only_the_winners_effects`).
    /// - An update of a missing key is [`Error::NotFound`] (`update_unknown_is_not_found`), and
    ///   so is one of another account's record, whose delete does nothing
    ///   (`writes_stay_within_their_account`).
    /// - The first failing check names the error; a write of several records is all or nothing
    ///   (`a_write_of_several_records_is_atomic`).
    /// - Idempotency keys and other [`OnExpiry::Delete`] kinds read as absent past their
    ///   expiry and can be inserted again (`expired_records_of_delete_kinds_are_absent`).
    /// - Keys are per kind (`kinds_are_separate_namespaces`), and a record whose id lies in
    ///   another partition than its owner's is found by id (`misplaced_ids_are_found`).
    async fn write(&self, write: &Write) -> Result<Written>;

    /// Reads a record; `None` if there is none (or it expired, for [`OnExpiry::Delete`] kinds).
    ///
    /// # Behavior
    /// - Unknown keys are `None` (`get_unknown_is_none`).
    async fn get(&self, key: &Key) -> Result<Option<Arc<Stored>>>;

    /// Like [`RecordStore::get`], but never served from a cache: for re-reads whose point is
    /// to see other nodes' writes. The default is `get`.
    async fn get_uncached(&self, key: &Key) -> Result<Option<Arc<Stored>>> {
        self.get(key).await
    }

    /// Hands a cache what the record this process just wrote at `revision` decodes into
    /// (`value` must be what [`Entity::from_record`](super::Entity::from_record) makes of the
    /// written record), so that the next read of it does not decode it again. A cache keeps it
    /// only with its entry at that revision; the default does nothing.
    fn remember_decoded(&self, key: &Key, revision: Revision, value: Arc<dyn Any + Send + Sync>) {
        let _ = (key, revision, value);
    }

    /// Lists records newest first, filtered and paginated.
    ///
    /// # Behavior
    /// - Pages follow `(created_at, id)` descending with no gaps or repeats
    ///   (`list_pages_newest_first_without_gaps`).
    /// - Filters by kind, owner, status, parent and creation range combine
    ///   (`list_filters_combine`).
    /// - A backward cursor gives the page before a position: the `limit` records nearest it
    ///   on the newer side, newest first, and a backward `next` while newer ones remain, so
    ///   walking back repeats the forward pages exactly (`list_pages_back_without_gaps`).
    async fn list(&self, query: &ListQuery) -> Result<Page>;

    /// Applies retention to up to `limit` records whose `expires_at` is at or before `now`
    /// ([`Kind::on_expiry`]: tombstones, removing their event logs and finished queue items,
    /// or deletes), and returns their keys. `now` is a parameter so that the caller drives
    /// retention.
    ///
    /// # Behavior
    /// - Due records of [`OnExpiry::RemoveData`] kinds become tombstones at the next revision;
    ///   others are untouched (`expire_leaves_tombstones`).
    /// - Due records of [`OnExpiry::Delete`] kinds are deleted
    ///   (`expired_records_of_delete_kinds_are_absent`).
    async fn expire(&self, now: Timestamp, limit: usize) -> Result<Vec<Key>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placing_an_id_moves_it_to_the_partition_and_keeps_its_prefix() {
        for p in 0..=255u8 {
            let mut id = "01jz3q4r5s6t7v8w9x0y1z2a3b".to_owned();
            place_in(&mut id, Partition(p));
            assert_eq!(Partition::of(&id), Partition(p));
            assert!(id.starts_with("01jz3q4r5s6t7v8w9x0y1z2"));
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            );
        }
    }

    #[test]
    fn partitions_are_fixed_forever() {
        // A different answer would strand stored records.
        assert_eq!(fnv1a(FNV_OFFSET, b"abc"), 0xe71f_a219_0541_574b);
        assert_eq!(Partition::of("abc"), Partition(0x4b));
        assert_eq!(Partition(0x4b).shard(16), 0xb);
    }

    #[test]
    fn kind_names_round_trip_and_none_is_a_prefix_of_another() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            for other in Kind::ALL {
                assert!(k == other || !other.as_str().starts_with(k.as_str()));
            }
        }
        let mut by_name = Kind::ALL;
        by_name.sort_by_key(|k| k.as_str());
        let mut by_ord = Kind::ALL;
        by_ord.sort();
        assert_eq!((by_name, by_ord), (Kind::ALL, Kind::ALL));
    }
}
