//! The protocol's JSON types (PROTOCOL.md, "Encodings" and "Methods") and their conversions
//! to and from the contract's types: timestamps and durations as integer microseconds, lease
//! tokens as decimal strings, enums by their `as_str` names, absent values as `null`.
//!
//! Encoding never fails; decoding an answer checks every name and id and fails with a
//! description of what the Worker sent that this client cannot read.

use std::time::Duration;

use augur_core::store::Change;
use augur_core::store::{
    Attempt, Balance, Claim, ClaimRequest, Cursor, Effect, Exported, Item, ItemLease, ItemStatus,
    Key, Kind, Lane, LedgerEntry, ListQuery, NewItem, Op, Outcome, Partition, Position, Posted,
    QueueStats, Reason, Record, Section, Stored, StreamEvent, StreamEventData, Write, Written,
};
use augur_core::{AccountId, LeaseToken, Revision, Timestamp, WorkerId};
use serde::{Deserialize, Serialize};

/// What an answer held that cannot be read.
pub(crate) type Decoded<T> = Result<T, String>;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn kind(name: &str) -> Decoded<Kind> {
    Kind::parse(name).ok_or_else(|| format!("unknown record kind {name:?}"))
}

fn lane(name: &str) -> Decoded<Lane> {
    Lane::parse(name).ok_or_else(|| format!("unknown lane {name:?}"))
}

fn account(id: &str) -> Decoded<AccountId> {
    AccountId::parse(id).map_err(|e| e.to_string())
}

fn worker(id: &str) -> Decoded<WorkerId> {
    WorkerId::parse(id).map_err(|e| e.to_string())
}

/// Lease tokens are `u64`s, beyond a JavaScript number's exact range: decimal strings.
mod token {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(token: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(token)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("invalid lease token {text:?}")))
    }
}

/// `Key`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WKey {
    pub(crate) kind: String,
    pub(crate) id: String,
    pub(crate) partition: u8,
}

impl From<&Key> for WKey {
    fn from(key: &Key) -> Self {
        Self {
            kind: key.kind.as_str().to_owned(),
            id: key.id.clone(),
            partition: key.partition.0,
        }
    }
}

impl WKey {
    pub(crate) fn decode(self) -> Decoded<Key> {
        Ok(Key {
            kind: kind(&self.kind)?,
            id: self.id,
            partition: Partition(self.partition),
        })
    }
}

/// `Record`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WRecord {
    key: WKey,
    owner: String,
    created_at: i64,
    status: Option<String>,
    parent: Option<String>,
    expires_at: Option<i64>,
    data_removed: bool,
    body: String,
    data: Option<String>,
}

impl From<&Record> for WRecord {
    fn from(r: &Record) -> Self {
        Self {
            key: (&r.key).into(),
            owner: r.owner.as_str().to_owned(),
            created_at: r.created_at.as_micros(),
            status: r.status.clone(),
            parent: r.parent.clone(),
            expires_at: r.expires_at.map(Timestamp::as_micros),
            data_removed: r.data_removed,
            body: r.body.clone(),
            data: r.data.clone(),
        }
    }
}

impl WRecord {
    fn decode(self) -> Decoded<Record> {
        Ok(Record {
            key: self.key.decode()?,
            owner: account(&self.owner)?,
            created_at: Timestamp::from_micros(self.created_at),
            status: self.status,
            parent: self.parent,
            expires_at: self.expires_at.map(Timestamp::from_micros),
            data_removed: self.data_removed,
            body: self.body,
            data: self.data,
        })
    }
}

/// `Stored`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WStored {
    record: WRecord,
    revision: u64,
}

impl WStored {
    pub(crate) fn decode(self) -> Decoded<Stored> {
        Ok(Stored::new(self.record.decode()?, Revision(self.revision)))
    }
}

/// `Op`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WOp {
    Insert(WRecord),
    Update { record: WRecord, expected: u64 },
    Delete(WKey),
}

impl From<&Op> for WOp {
    fn from(op: &Op) -> Self {
        match op {
            Op::Insert(r) => WOp::Insert(r.into()),
            Op::Update { record, expected } => WOp::Update {
                record: record.into(),
                expected: expected.0,
            },
            Op::Delete(key) => WOp::Delete(key.into()),
        }
    }
}

/// `Claim`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WClaim {
    worker: String,
    #[serde(with = "token")]
    token: u64,
    expires_at: i64,
}

/// `NewItem`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WNewItem {
    lane: String,
    id: String,
    group: WKey,
    topic: String,
    owner: String,
    payload: String,
    run_at: i64,
    replace: bool,
    claimed: Option<WClaim>,
}

impl From<&NewItem> for WNewItem {
    fn from(item: &NewItem) -> Self {
        Self {
            lane: item.lane.as_str().to_owned(),
            id: item.id.clone(),
            group: (&item.group).into(),
            topic: item.topic.clone(),
            owner: item.owner.as_str().to_owned(),
            payload: item.payload.clone(),
            run_at: item.run_at.as_micros(),
            replace: item.replace,
            claimed: item.claimed.as_ref().map(|c: &Claim| WClaim {
                worker: c.worker.as_str().to_owned(),
                token: c.token.0,
                expires_at: c.expires_at.as_micros(),
            }),
        }
    }
}

/// `LedgerEntry`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WLedgerEntry {
    account: String,
    id: String,
    delta: i64,
    held: i64,
    reason: String,
    reference: Option<String>,
    memo: Option<String>,
    at: i64,
}

impl From<&LedgerEntry> for WLedgerEntry {
    fn from(e: &LedgerEntry) -> Self {
        Self {
            account: e.account.as_str().to_owned(),
            id: e.id.clone(),
            delta: e.delta,
            held: e.held,
            reason: e.reason.as_str().to_owned(),
            reference: e.reference.clone(),
            memo: e.memo.clone(),
            at: e.at.as_micros(),
        }
    }
}

impl WLedgerEntry {
    fn decode(self) -> Decoded<LedgerEntry> {
        Ok(LedgerEntry {
            account: account(&self.account)?,
            id: self.id,
            delta: self.delta,
            held: self.held,
            reason: Reason::parse(&self.reason)
                .ok_or_else(|| format!("unknown ledger reason {:?}", self.reason))?,
            reference: self.reference,
            memo: self.memo,
            at: Timestamp::from_micros(self.at),
        })
    }
}

/// `Posted`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WPosted {
    seq: u64,
    entry: WLedgerEntry,
    after: Balance,
}

impl From<&Posted> for WPosted {
    fn from(p: &Posted) -> Self {
        Self {
            seq: p.seq,
            entry: (&p.entry).into(),
            after: p.after,
        }
    }
}

impl WPosted {
    pub(crate) fn decode(self) -> Decoded<Posted> {
        Ok(Posted {
            seq: self.seq,
            entry: self.entry.decode()?,
            after: self.after,
        })
    }
}

/// `Effect`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WEffect {
    Enqueue(WNewItem),
    Complete {
        lane: String,
        id: String,
    },
    Count {
        name: String,
        delta: i64,
        limit: Option<i64>,
    },
    AppendEvents {
        stream: WKey,
        events: Vec<StreamEventData>,
    },
    Post(WLedgerEntry),
}

impl From<&Effect> for WEffect {
    fn from(effect: &Effect) -> Self {
        match effect {
            Effect::Enqueue(item) => WEffect::Enqueue(item.as_ref().into()),
            Effect::Complete { lane, id } => WEffect::Complete {
                lane: lane.as_str().to_owned(),
                id: id.clone(),
            },
            Effect::Count { name, delta, limit } => WEffect::Count {
                name: name.clone(),
                delta: *delta,
                limit: *limit,
            },
            Effect::AppendEvents { stream, events } => WEffect::AppendEvents {
                stream: stream.into(),
                events: events.clone(),
            },
            Effect::Post(entry) => WEffect::Post(entry.as_ref().into()),
        }
    }
}

/// `Write`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WWrite {
    account: String,
    ops: Vec<WOp>,
    effects: Vec<WEffect>,
}

impl From<&Write> for WWrite {
    fn from(w: &Write) -> Self {
        Self {
            account: w.account.as_str().to_owned(),
            ops: w.ops.iter().map(WOp::from).collect(),
            effects: w.effects.iter().map(WEffect::from).collect(),
        }
    }
}

/// `Written`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WWritten {
    revisions: Vec<Option<u64>>,
    skipped_entries: Vec<String>,
}

impl WWritten {
    pub(crate) fn decode(self) -> Written {
        Written {
            revisions: self
                .revisions
                .into_iter()
                .map(|r| r.map(Revision))
                .collect(),
            skipped_entries: self.skipped_entries,
        }
    }
}

/// `Cursor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WCursor {
    created_at: i64,
    id: String,
    backward: bool,
}

impl From<&Cursor> for WCursor {
    fn from(c: &Cursor) -> Self {
        Self {
            created_at: c.created_at.as_micros(),
            id: c.id.clone(),
            backward: c.backward,
        }
    }
}

impl WCursor {
    pub(crate) fn decode(self) -> Cursor {
        Cursor {
            created_at: Timestamp::from_micros(self.created_at),
            id: self.id,
            backward: self.backward,
        }
    }
}

/// `Attempt`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WAttempt {
    at: i64,
    status: Option<u16>,
    error: Option<String>,
    duration_ms: u64,
}

impl From<&Attempt> for WAttempt {
    fn from(a: &Attempt) -> Self {
        Self {
            at: a.at.as_micros(),
            status: a.status,
            error: a.error.clone(),
            duration_ms: a.duration_ms,
        }
    }
}

impl WAttempt {
    fn decode(self) -> Attempt {
        Attempt {
            at: Timestamp::from_micros(self.at),
            status: self.status,
            error: self.error,
            duration_ms: self.duration_ms,
        }
    }
}

/// `Item`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WItem {
    lane: String,
    id: String,
    group: WKey,
    topic: String,
    owner: String,
    payload: String,
    seq: u64,
    status: String,
    claims: u32,
    attempts: Vec<WAttempt>,
    due_at: Option<i64>,
    created_at: i64,
}

impl From<&Item> for WItem {
    fn from(i: &Item) -> Self {
        Self {
            lane: i.lane.as_str().to_owned(),
            id: i.id.clone(),
            group: (&i.group).into(),
            topic: i.topic.clone(),
            owner: i.owner.as_str().to_owned(),
            payload: i.payload.clone(),
            seq: i.seq,
            status: i.status.as_str().to_owned(),
            claims: i.claims,
            attempts: i.attempts.iter().map(WAttempt::from).collect(),
            due_at: i.due_at.map(Timestamp::as_micros),
            created_at: i.created_at.as_micros(),
        }
    }
}

impl WItem {
    pub(crate) fn decode(self) -> Decoded<Item> {
        Ok(Item {
            lane: lane(&self.lane)?,
            id: self.id,
            group: self.group.decode()?,
            topic: self.topic,
            owner: account(&self.owner)?,
            payload: self.payload,
            seq: self.seq,
            status: ItemStatus::parse(&self.status)
                .ok_or_else(|| format!("unknown item status {:?}", self.status))?,
            claims: self.claims,
            attempts: self.attempts.into_iter().map(WAttempt::decode).collect(),
            due_at: self.due_at.map(Timestamp::from_micros),
            created_at: Timestamp::from_micros(self.created_at),
        })
    }
}

/// `ItemLease`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WItemLease {
    item: WItem,
    worker: String,
    #[serde(with = "token")]
    token: u64,
    expires_at: i64,
}

impl From<&ItemLease> for WItemLease {
    fn from(l: &ItemLease) -> Self {
        Self {
            item: (&l.item).into(),
            worker: l.worker.as_str().to_owned(),
            token: l.token.0,
            expires_at: l.expires_at.as_micros(),
        }
    }
}

impl WItemLease {
    pub(crate) fn decode(self) -> Decoded<ItemLease> {
        Ok(ItemLease {
            item: self.item.decode()?,
            worker: worker(&self.worker)?,
            token: LeaseToken(self.token),
            expires_at: Timestamp::from_micros(self.expires_at),
        })
    }
}

/// `Outcome`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WOutcome {
    Done,
    Retry(i64),
    Release(i64),
    HandBack,
    GiveUp { rest: bool },
}

impl From<&Outcome> for WOutcome {
    fn from(o: &Outcome) -> Self {
        match *o {
            Outcome::Done => WOutcome::Done,
            Outcome::Retry(at) => WOutcome::Retry(at.as_micros()),
            Outcome::Release(at) => WOutcome::Release(at.as_micros()),
            Outcome::HandBack => WOutcome::HandBack,
            Outcome::GiveUp { rest } => WOutcome::GiveUp { rest },
        }
    }
}

/// `Position`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WPosition {
    Record(String, String),
    Item(String, String),
    Event(String, String, u64, u32),
    Ledger(String, u64),
    Counter(String),
}

impl From<&Position> for WPosition {
    fn from(p: &Position) -> Self {
        match p {
            Position::Record(kind, id) => WPosition::Record(kind.as_str().to_owned(), id.clone()),
            Position::Item(lane, id) => WPosition::Item(lane.as_str().to_owned(), id.clone()),
            Position::Event(kind, id, revision, index) => {
                WPosition::Event(kind.as_str().to_owned(), id.clone(), revision.0, *index)
            }
            Position::Ledger(account, seq) => WPosition::Ledger(account.as_str().to_owned(), *seq),
            Position::Counter(name) => WPosition::Counter(name.clone()),
        }
    }
}

/// `Exported`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WExported {
    Record { record: WRecord, revision: u64 },
    Item(WItem),
    Event { stream: WKey, event: StreamEvent },
    Ledger(WPosted),
    Counter { name: String, value: i64 },
}

impl From<&Exported> for WExported {
    fn from(e: &Exported) -> Self {
        match e {
            Exported::Record { record, revision } => WExported::Record {
                record: record.as_ref().into(),
                revision: revision.0,
            },
            Exported::Item(item) => WExported::Item(item.as_ref().into()),
            Exported::Event { stream, event } => WExported::Event {
                stream: stream.into(),
                event: event.clone(),
            },
            Exported::Ledger(posted) => WExported::Ledger(posted.as_ref().into()),
            Exported::Counter { name, value } => WExported::Counter {
                name: name.clone(),
                value: *value,
            },
        }
    }
}

impl WExported {
    pub(crate) fn decode(self) -> Decoded<Exported> {
        Ok(match self {
            WExported::Record { record, revision } => Exported::Record {
                record: Box::new(record.decode()?),
                revision: Revision(revision),
            },
            WExported::Item(item) => Exported::Item(Box::new(item.decode()?)),
            WExported::Event { stream, event } => Exported::Event {
                stream: stream.decode()?,
                event,
            },
            WExported::Ledger(posted) => Exported::Ledger(Box::new(posted.decode()?)),
            WExported::Counter { name, value } => Exported::Counter { name, value },
        })
    }
}

/// `Change`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WChange {
    Record { key: WKey, revision: Option<u64> },
    Work(String),
}

impl WChange {
    /// The contract's change; a record announced without a revision (gone) is announced at
    /// revision 0, which no live record has, so caches drop it.
    pub(crate) fn decode(self) -> Decoded<Change> {
        Ok(match self {
            WChange::Record { key, revision } => Change::Record {
                key: key.decode()?,
                revision: Revision(revision.unwrap_or(0)),
            },
            WChange::Work(name) => Change::Work(lane(&name)?),
        })
    }
}

// Requests and answers, one pair per method.

/// An answer with nothing in it (`{}`).
#[derive(Debug, Deserialize)]
pub(crate) struct Empty {}

/// `hello`'s request.
#[derive(Debug, Serialize)]
pub(crate) struct HelloRequest {}

/// `hello`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct HelloAnswer {
    pub(crate) protocol: u64,
    pub(crate) shards: u64,
}

/// `get`'s request.
#[derive(Debug, Serialize)]
pub(crate) struct GetRequest {
    pub(crate) key: WKey,
}

/// `get`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct GetAnswer {
    pub(crate) stored: Option<WStored>,
}

/// `list`'s request.
#[derive(Debug, Serialize)]
pub(crate) struct ListRequest {
    kind: &'static str,
    owner: Option<String>,
    status: Option<String>,
    parent: Option<String>,
    created_after: Option<i64>,
    created_before: Option<i64>,
    after: Option<WCursor>,
    limit: usize,
}

impl From<&ListQuery> for ListRequest {
    fn from(q: &ListQuery) -> Self {
        Self {
            kind: q.kind.as_str(),
            owner: q.owner.as_ref().map(|o| o.as_str().to_owned()),
            status: q.status.clone(),
            parent: q.parent.clone(),
            created_after: q.created_after.map(Timestamp::as_micros),
            created_before: q.created_before.map(Timestamp::as_micros),
            after: q.after.as_ref().map(WCursor::from),
            limit: q.limit,
        }
    }
}

/// `list`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct ListAnswer {
    pub(crate) items: Vec<WStored>,
    pub(crate) next: Option<WCursor>,
}

/// `expire`'s request.
#[derive(Debug, Serialize)]
pub(crate) struct ExpireRequest {
    pub(crate) now: i64,
    pub(crate) limit: usize,
}

/// `expire`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct ExpireAnswer {
    pub(crate) keys: Vec<WKey>,
}

/// `claim`'s request.
#[derive(Debug, Serialize)]
pub(crate) struct ClaimRequestBody {
    lane: &'static str,
    worker: String,
    lease_for: i64,
    max: usize,
    exclude_topics: Vec<String>,
}

impl From<&ClaimRequest> for ClaimRequestBody {
    fn from(r: &ClaimRequest) -> Self {
        Self {
            lane: r.lane.as_str(),
            worker: r.worker.as_str().to_owned(),
            lease_for: micros(r.lease_for),
            max: r.max,
            exclude_topics: r.exclude_topics.clone(),
        }
    }
}

/// `claim`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct ClaimAnswer {
    pub(crate) leases: Vec<WItemLease>,
}

/// `renew`'s request.
#[derive(Debug, Serialize)]
pub(crate) struct RenewRequest {
    pub(crate) lease: WItemLease,
    pub(crate) extend_by: i64,
}

impl RenewRequest {
    pub(crate) fn new(lease: &ItemLease, extend_by: Duration) -> Self {
        Self {
            lease: lease.into(),
            extend_by: micros(extend_by),
        }
    }
}

/// `renew`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct RenewAnswer {
    pub(crate) lease: WItemLease,
}

/// `finish`'s request.
#[derive(Debug, Serialize)]
pub(crate) struct FinishRequest {
    pub(crate) lease: WItemLease,
    pub(crate) outcome: WOutcome,
    pub(crate) attempt: Option<WAttempt>,
}

impl FinishRequest {
    pub(crate) fn new(lease: &ItemLease, finish: &augur_core::store::Finish) -> Self {
        Self {
            lease: lease.into(),
            outcome: (&finish.outcome).into(),
            attempt: finish.attempt.as_ref().map(WAttempt::from),
        }
    }
}

/// `items`' request.
#[derive(Debug, Serialize)]
pub(crate) struct ItemsRequest {
    pub(crate) lane: &'static str,
    pub(crate) group: WKey,
}

/// `items`' answer.
#[derive(Debug, Deserialize)]
pub(crate) struct ItemsAnswer {
    pub(crate) items: Vec<WItem>,
}

/// `requeue`'s request.
#[derive(Debug, Serialize)]
pub(crate) struct RequeueRequest {
    pub(crate) lane: &'static str,
    pub(crate) group: WKey,
    pub(crate) id: String,
}

/// `queue_stats`' request.
#[derive(Debug, Serialize)]
pub(crate) struct QueueStatsRequest {
    pub(crate) lane: &'static str,
}

/// `queue_stats`' answer.
#[derive(Debug, Deserialize)]
pub(crate) struct QueueStatsAnswer {
    ready: u64,
    leased: u64,
    delayed: u64,
}

impl QueueStatsAnswer {
    pub(crate) fn decode(self) -> QueueStats {
        QueueStats {
            ready: self.ready,
            leased: self.leased,
            delayed: self.delayed,
        }
    }
}

/// `read_events`' request.
#[derive(Debug, Serialize)]
pub(crate) struct ReadEventsRequest {
    pub(crate) stream: WKey,
    pub(crate) after: Option<(u64, u32)>,
    pub(crate) limit: usize,
}

/// `read_events`' answer.
#[derive(Debug, Deserialize)]
pub(crate) struct ReadEventsAnswer {
    pub(crate) events: Vec<StreamEvent>,
}

/// `balance`'s request.
#[derive(Debug, Serialize)]
pub(crate) struct BalanceRequest {
    pub(crate) account: String,
}

/// `ledger`'s request.
#[derive(Debug, Serialize)]
pub(crate) struct LedgerRequest {
    pub(crate) account: String,
    pub(crate) before: Option<u64>,
    pub(crate) limit: usize,
}

/// `ledger`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct LedgerAnswer {
    pub(crate) entries: Vec<WPosted>,
}

/// `counters`' request.
#[derive(Debug, Serialize)]
pub(crate) struct CountersRequest {}

/// `counters`' answer.
#[derive(Debug, Deserialize)]
pub(crate) struct CountersAnswer {
    pub(crate) counters: Vec<(String, i64)>,
}

/// `export`'s request.
#[derive(Debug, Serialize)]
pub(crate) struct ExportRequest {
    section: &'static str,
    after: Option<WPosition>,
    limit: usize,
}

impl ExportRequest {
    pub(crate) fn new(section: Section, after: Option<&Position>, limit: usize) -> Self {
        Self {
            section: section.as_str(),
            after: after.map(WPosition::from),
            limit,
        }
    }
}

/// `export`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct ExportAnswer {
    pub(crate) pieces: Vec<WExported>,
}

/// `import`'s request.
#[derive(Debug, Serialize)]
pub(crate) struct ImportRequest {
    pub(crate) pieces: Vec<WExported>,
}

/// `changes`' request.
#[derive(Debug, Serialize)]
pub(crate) struct ChangesRequest {
    pub(crate) after: Option<u64>,
    pub(crate) epoch: Option<String>,
    pub(crate) wait_ms: u64,
}

/// `changes`' answer.
#[derive(Debug, Deserialize)]
pub(crate) struct ChangesAnswer {
    pub(crate) epoch: String,
    pub(crate) seq: u64,
    pub(crate) changes: Vec<WChange>,
    pub(crate) resync: bool,
}

#[cfg(test)]
mod tests {
    use augur_core::store::{Finish, StreamEventKind};
    use serde_json::{Value, json};

    use super::*;

    fn encode<T: Serialize>(value: &T) -> Value {
        serde_json::to_value(value).unwrap()
    }

    fn acct() -> AccountId {
        AccountId::parse("acct").unwrap()
    }

    fn key() -> Key {
        Key {
            kind: Kind::Prediction,
            id: "p1".into(),
            partition: Partition(7),
        }
    }

    fn key_json() -> Value {
        json!({"kind": "prediction", "id": "p1", "partition": 7})
    }

    fn record() -> Record {
        Record {
            key: key(),
            owner: acct(),
            created_at: Timestamp::from_micros(1_700_000_000_000_001),
            status: Some("starting".into()),
            parent: None,
            expires_at: Some(Timestamp::from_micros(1_800_000_000_000_000)),
            data_removed: false,
            body: "{\"a\":1}".into(),
            data: None,
        }
    }

    fn record_json() -> Value {
        json!({"key": key_json(), "owner": "acct", "created_at": 1_700_000_000_000_001_i64,
               "status": "starting", "parent": null, "expires_at": 1_800_000_000_000_000_i64,
               "data_removed": false, "body": "{\"a\":1}", "data": null})
    }

    fn item() -> Item {
        Item {
            lane: Lane::Webhooks,
            id: "i1".into(),
            group: key(),
            topic: "m".into(),
            owner: acct(),
            payload: "{}".into(),
            seq: 2,
            status: ItemStatus::Pending,
            claims: 1,
            attempts: vec![Attempt {
                at: Timestamp::from_micros(5),
                status: Some(500),
                error: None,
                duration_ms: 12,
            }],
            due_at: Some(Timestamp::from_micros(6)),
            created_at: Timestamp::from_micros(4),
        }
    }

    fn item_json() -> Value {
        json!({"lane": "webhooks", "id": "i1", "group": key_json(), "topic": "m",
               "owner": "acct", "payload": "{}", "seq": 2, "status": "pending", "claims": 1,
               "attempts": [{"at": 5, "status": 500, "error": null, "duration_ms": 12}],
               "due_at": 6, "created_at": 4})
    }

    fn entry() -> LedgerEntry {
        LedgerEntry {
            account: acct(),
            id: "e1".into(),
            delta: -3,
            held: 2,
            reason: Reason::Charge,
            reference: Some("p1".into()),
            memo: None,
            at: Timestamp::from_micros(9),
        }
    }

    fn entry_json() -> Value {
        json!({"account": "acct", "id": "e1", "delta": -3, "held": 2, "reason": "charge",
               "reference": "p1", "memo": null, "at": 9})
    }

    #[test]
    fn records_and_keys_match_the_protocol_and_round_trip() {
        assert_eq!(encode(&WKey::from(&key())), key_json());
        assert_eq!(encode(&WRecord::from(&record())), record_json());
        let back: WStored =
            serde_json::from_value(json!({"record": record_json(), "revision": 3})).unwrap();
        let back = back.decode().unwrap();
        assert_eq!((back.record, back.revision), (record(), Revision(3)));
        let bad: WKey =
            serde_json::from_value(json!({"kind": "nope", "id": "x", "partition": 1})).unwrap();
        assert!(bad.decode().unwrap_err().contains("nope"));
    }

    #[test]
    fn writes_match_the_protocol() {
        let new_item = NewItem {
            lane: Lane::Jobs,
            id: "j1".into(),
            group: key(),
            topic: "m".into(),
            owner: acct(),
            payload: "{}".into(),
            run_at: Timestamp::from_micros(1),
            replace: false,
            claimed: Some(Claim {
                worker: WorkerId::parse("w1").unwrap(),
                token: LeaseToken(u64::MAX),
                expires_at: Timestamp::from_micros(2),
            }),
        };
        let write = Write::new(acct())
            .op(Op::Insert(record()))
            .op(Op::Update {
                record: record(),
                expected: Revision(4),
            })
            .op(Op::Delete(key()))
            .effects([
                Effect::Enqueue(Box::new(new_item)),
                Effect::Complete {
                    lane: Lane::Tasks,
                    id: "t1".into(),
                },
                Effect::Count {
                    name: "max_active".into(),
                    delta: 1,
                    limit: Some(5),
                },
                Effect::count("n", -1),
                Effect::AppendEvents {
                    stream: key(),
                    events: vec![StreamEventData {
                        kind: StreamEventKind::Output,
                        data: "hi".into(),
                    }],
                },
                Effect::Post(Box::new(entry())),
            ]);
        assert_eq!(
            encode(&WWrite::from(&write)),
            json!({
                "account": "acct",
                "ops": [
                    {"insert": record_json()},
                    {"update": {"record": record_json(), "expected": 4}},
                    {"delete": key_json()},
                ],
                "effects": [
                    {"enqueue": {"lane": "jobs", "id": "j1", "group": key_json(), "topic": "m",
                                 "owner": "acct", "payload": "{}", "run_at": 1, "replace": false,
                                 "claimed": {"worker": "w1", "token": "18446744073709551615",
                                             "expires_at": 2}}},
                    {"complete": {"lane": "tasks", "id": "t1"}},
                    {"count": {"name": "max_active", "delta": 1, "limit": 5}},
                    {"count": {"name": "n", "delta": -1, "limit": null}},
                    {"append_events": {"stream": key_json(),
                                       "events": [{"kind": "output", "data": "hi"}]}},
                    {"post": entry_json()},
                ],
            })
        );
        let written: WWritten =
            serde_json::from_value(json!({"revisions": [1, 5, null], "skipped_entries": ["e1"]}))
                .unwrap();
        assert_eq!(
            written.decode(),
            Written {
                revisions: vec![Some(Revision(1)), Some(Revision(5)), None],
                skipped_entries: vec!["e1".into()],
            }
        );
    }

    #[test]
    fn queue_types_match_the_protocol() {
        let lease = ItemLease {
            item: item(),
            worker: WorkerId::parse("w1").unwrap(),
            token: LeaseToken(12_345_678_901_234_567_890),
            expires_at: Timestamp::from_micros(99),
        };
        let lease_json = json!({"item": item_json(), "worker": "w1",
                                "token": "12345678901234567890", "expires_at": 99});
        assert_eq!(encode(&WItemLease::from(&lease)), lease_json);
        let back: WItemLease = serde_json::from_value(lease_json.clone()).unwrap();
        assert_eq!(back.decode().unwrap(), lease);

        for (outcome, want) in [
            (Outcome::Done, json!("done")),
            (
                Outcome::Retry(Timestamp::from_micros(3)),
                json!({"retry": 3}),
            ),
            (
                Outcome::Release(Timestamp::from_micros(4)),
                json!({"release": 4}),
            ),
            (Outcome::HandBack, json!("hand_back")),
            (
                Outcome::GiveUp { rest: true },
                json!({"give_up": {"rest": true}}),
            ),
        ] {
            assert_eq!(encode(&WOutcome::from(&outcome)), want);
        }
        let finish = Finish {
            outcome: Outcome::Done,
            attempt: None,
        };
        assert_eq!(
            encode(&FinishRequest::new(&lease, &finish)),
            json!({"lease": lease_json, "outcome": "done", "attempt": null})
        );
        let claim = ClaimRequest {
            lane: Lane::Jobs,
            worker: WorkerId::parse("w1").unwrap(),
            lease_for: Duration::from_secs(30),
            max: 4,
            exclude_topics: vec!["m".into()],
        };
        assert_eq!(
            encode(&ClaimRequestBody::from(&claim)),
            json!({"lane": "jobs", "worker": "w1", "lease_for": 30_000_000, "max": 4,
                   "exclude_topics": ["m"]})
        );
    }

    #[test]
    fn listings_events_and_ledgers_match_the_protocol() {
        let mut query = ListQuery::of(Kind::Prediction, 10);
        query.owner = Some(acct());
        query.created_after = Some(Timestamp::from_micros(1));
        query.after = Some(Cursor {
            created_at: Timestamp::from_micros(2),
            id: "p0".into(),
            backward: true,
        });
        assert_eq!(
            encode(&ListRequest::from(&query)),
            json!({"kind": "prediction", "owner": "acct", "status": null, "parent": null,
                   "created_after": 1, "created_before": null,
                   "after": {"created_at": 2, "id": "p0", "backward": true}, "limit": 10})
        );
        let event = StreamEvent {
            revision: Revision(3),
            index: 1,
            event: StreamEventData {
                kind: StreamEventKind::Done,
                data: "{}".into(),
            },
        };
        let answer: ReadEventsAnswer = serde_json::from_value(
            json!({"events": [{"revision": 3, "index": 1, "kind": "done", "data": "{}"}]}),
        )
        .unwrap();
        assert_eq!(answer.events, vec![event]);
        let posted = Posted {
            seq: 4,
            entry: entry(),
            after: Balance {
                balance: 10,
                reserved: 2,
            },
        };
        let posted_json =
            json!({"seq": 4, "entry": entry_json(), "after": {"balance": 10, "reserved": 2}});
        assert_eq!(encode(&WPosted::from(&posted)), posted_json);
        let back: WPosted = serde_json::from_value(posted_json).unwrap();
        assert_eq!(back.decode().unwrap(), posted);
    }

    #[test]
    fn exports_positions_and_changes_match_the_protocol() {
        let pieces = [
            (
                Exported::Record {
                    record: Box::new(record()),
                    revision: Revision(2),
                },
                json!({"record": {"record": record_json(), "revision": 2}}),
            ),
            (
                Exported::Item(Box::new(item())),
                json!({"item": item_json()}),
            ),
            (
                Exported::Event {
                    stream: key(),
                    event: StreamEvent {
                        revision: Revision(1),
                        index: 0,
                        event: StreamEventData {
                            kind: StreamEventKind::Logs,
                            data: "l".into(),
                        },
                    },
                },
                json!({"event": {"stream": key_json(),
                                 "event": {"revision": 1, "index": 0, "kind": "logs", "data": "l"}}}),
            ),
            (
                Exported::Counter {
                    name: "c".into(),
                    value: 7,
                },
                json!({"counter": {"name": "c", "value": 7}}),
            ),
        ];
        for (piece, want) in pieces {
            assert_eq!(encode(&WExported::from(&piece)), want);
            let back: WExported = serde_json::from_value(want).unwrap();
            assert_eq!(back.decode().unwrap(), piece);
        }
        for (position, want) in [
            (
                Position::Record(Kind::Prediction, "p".into()),
                json!({"record": ["prediction", "p"]}),
            ),
            (
                Position::Item(Lane::Jobs, "i".into()),
                json!({"item": ["jobs", "i"]}),
            ),
            (
                Position::Event(Kind::Run, "r".into(), Revision(2), 3),
                json!({"event": ["run", "r", 2, 3]}),
            ),
            (Position::Ledger(acct(), 5), json!({"ledger": ["acct", 5]})),
            (Position::Counter("c".into()), json!({"counter": "c"})),
        ] {
            assert_eq!(encode(&WPosition::from(&position)), want);
        }
        let answer: ChangesAnswer = serde_json::from_value(json!({
            "epoch": "e1", "seq": 9, "resync": false,
            "changes": [{"record": {"key": key_json(), "revision": 2}},
                        {"record": {"key": key_json(), "revision": null}},
                        {"work": "jobs"}],
        }))
        .unwrap();
        let changes: Vec<Change> = answer
            .changes
            .into_iter()
            .map(|c| c.decode().unwrap())
            .collect();
        assert_eq!(
            changes,
            vec![
                Change::Record {
                    key: key(),
                    revision: Revision(2)
                },
                Change::Record {
                    key: key(),
                    revision: Revision(0)
                },
                Change::Work(Lane::Jobs),
            ]
        );
    }
}
