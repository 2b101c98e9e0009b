//! [`MemoryStore`]: the whole storage contract in process memory, for tests and `memory://`.
//!
//! One mutex guards everything, which makes every operation trivially atomic. Nothing survives
//! the process; `capabilities().durable` says so. Writes are announced to subscribers, so that
//! the multi-node machinery (cache invalidation, waking other services' waiters) can be tested
//! without a server. It is the reference the other backends are written against: where they
//! differ only in representation, their comments say so.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::broadcast;

use super::{
    AdminStore, Balance, Capabilities, Change, ChangeStream, ClaimRequest, Cursor, Effect, Error,
    EventStore, Exported, Finish, Item, ItemLease, ItemStatus, Key, Kind, Lane, LedgerEntry,
    LedgerStore, ListQuery, NewItem, OnExpiry, Op, Outcome, Page, Position, Posted, QueueStats,
    QueueStore, Record, RecordStore, Result, Section, Stored, StreamEvent, Write, Written,
};
use crate::id::{AccountId, LeaseToken, WorkerId};
use crate::prediction::Revision;
use crate::time::Timestamp;

/// The in-memory backend.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Change>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            changes: broadcast::channel(1024).0,
        }
    }
}

/// A record's identity without its partition (which this backend ignores).
type Id = (Kind, String);

fn id_of(key: &Key) -> Id {
    (key.kind, key.id.clone())
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<Id, (Record, Revision)>,
    /// `(kind, created_at, id)` of every record, for listing.
    by_created: BTreeSet<(Kind, Timestamp, String)>,
    /// `(expires_at, kind, id)` of records retention has yet to act on.
    by_expiry: BTreeSet<(Timestamp, Kind, String)>,
    queue: Queue,
    /// Each record's event log, in order, under the record's key.
    events: HashMap<Id, (Key, Vec<StreamEvent>)>,
    ledgers: HashMap<AccountId, Ledger>,
    counters: BTreeMap<String, i64>,
}

#[derive(Debug, Default)]
struct Ledger {
    totals: Balance,
    entries: BTreeMap<u64, Posted>,
    ids: HashSet<String>,
}

#[derive(Debug, Default)]
struct Queue {
    items: HashMap<(Lane, String), Entry>,
    /// Each group's items, by seq.
    groups: HashMap<(Lane, Id), BTreeMap<u64, String>>,
    /// The last seq given in each group (seqs keep rising after removals).
    group_seq: HashMap<(Lane, Id), u64>,
    /// `(lane, rank, order, id)` of every group head (its oldest pending item): the claim
    /// candidates, lowest rank first.
    heads: BTreeSet<(Lane, u64, u64, String)>,
    /// The highest rank claimed per lane and topic (the fair-queuing clock).
    clock: HashMap<(Lane, String), u64>,
    /// The last rank given per lane, topic and account.
    last: HashMap<(Lane, String, AccountId), u64>,
    /// Enqueue order, the tie-break between equal ranks.
    order: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    item: Item,
    rank: u64,
    order: u64,
    /// `(worker, token, expires_at)` while claimed.
    lease: Option<(WorkerId, LeaseToken, Timestamp)>,
}

impl Entry {
    fn leased_at(&self, now: Timestamp) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|(_, _, until)| *until > now)
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn announce(&self, change: Change) {
        // No subscriber is not an error.
        let _ = self.changes.send(change);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied operation behind (every
        // operation validates before it mutates), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn present(&self, key: &Key, now: Timestamp) -> Option<&(Record, Revision)> {
        self.records
            .get(&id_of(key))
            .filter(|(r, _)| !r.is_gone_at(now))
    }

    /// Stores a record in place of whatever had its key, keeping the indexes right.
    fn put(&mut self, record: Record, revision: Revision) {
        let id = id_of(&record.key);
        self.unindex(&id);
        self.by_created
            .insert((record.key.kind, record.created_at, record.key.id.clone()));
        if let Some(at) = expiry_of(&record) {
            self.by_expiry
                .insert((at, record.key.kind, record.key.id.clone()));
        }
        self.records.insert(id, (record, revision));
    }

    fn unindex(&mut self, id: &Id) {
        if let Some((old, _)) = self.records.get(id) {
            self.by_created
                .remove(&(old.key.kind, old.created_at, old.key.id.clone()));
            if let Some(at) = expiry_of(old) {
                self.by_expiry
                    .remove(&(at, old.key.kind, old.key.id.clone()));
            }
        }
    }

    /// Removes a record with its items and events; returns its revision if it was there.
    fn remove(&mut self, key: &Key) -> Option<Revision> {
        let id = id_of(key);
        self.unindex(&id);
        let removed = self.records.remove(&id).map(|(_, rev)| rev);
        self.events.remove(&id);
        for lane in Lane::ALL {
            self.queue.drop_group(lane, &id, |_| true);
        }
        removed
    }

    /// True if the record a queue group belongs to still holds its data.
    fn holds_data(&self, group: &Id) -> bool {
        self.records
            .get(group)
            .is_some_and(|(r, _)| !r.data_removed)
    }

    /// Checks the effects' guards; returns which effects to apply (a repeated ledger entry is
    /// skipped).
    fn check_guards(&self, write: &Write) -> Result<Vec<bool>> {
        let mut apply = Vec::with_capacity(write.effects.len());
        let mut totals: HashMap<&AccountId, Balance> = HashMap::new();
        let mut seen: HashSet<(&AccountId, &str)> = HashSet::new();
        let mut needed: HashMap<&AccountId, i64> = HashMap::new();
        let mut counts: HashMap<&str, i64> = HashMap::new();
        for effect in &write.effects {
            apply.push(true);
            match effect {
                Effect::Post(entry) => {
                    let ledger = self.ledgers.get(&entry.account);
                    let posted = ledger.is_some_and(|l| l.ids.contains(&entry.id));
                    if posted || !seen.insert((&entry.account, entry.id.as_str())) {
                        *apply.last_mut().expect("pushed") = false;
                        continue;
                    }
                    let before = ledger.map(|l| l.totals).unwrap_or_default();
                    let now = totals.entry(&entry.account).or_insert(before);
                    *now = now.after(entry);
                    if entry.available_delta() < 0 {
                        *needed.entry(&entry.account).or_default() -= entry.available_delta();
                        if now.available() < 0 {
                            return Err(Error::InsufficientCredits {
                                account: entry.account.clone(),
                                available: before.available(),
                                needed: needed[&entry.account],
                            });
                        }
                    }
                }
                Effect::Count {
                    name,
                    delta,
                    limit: Some(limit),
                } => {
                    let value = counts
                        .entry(name)
                        .or_insert_with(|| self.counters.get(name).copied().unwrap_or(0));
                    *value += delta;
                    if *delta > 0 && *value > *limit {
                        return Err(Error::LimitReached {
                            counter: name.clone(),
                            limit: *limit,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(apply)
    }

    /// Applies a checked write: its operations, then the effects `apply` selects. Returns what
    /// it did and the changes to announce.
    fn apply(&mut self, write: &Write, apply: &[bool], now: Timestamp) -> (Written, Vec<Change>) {
        let mut written = Written::default();
        let mut changes = Vec::new();
        for op in &write.ops {
            let (revision, announced) = match op {
                Op::Insert(record) => {
                    // A record that reads as absent (an expired key) is replaced whole.
                    self.remove(&record.key);
                    self.put(record.clone(), Revision::FIRST);
                    (Some(Revision::FIRST), Some(Revision::FIRST))
                }
                Op::Update { record, expected } => {
                    self.put(record.clone(), expected.next());
                    (Some(expected.next()), Some(expected.next()))
                }
                Op::Delete(key) => {
                    let theirs = self
                        .records
                        .get(&id_of(key))
                        .is_some_and(|(r, _)| r.owner != write.account);
                    (
                        None,
                        if theirs {
                            None
                        } else {
                            self.remove(key).map(Revision::next)
                        },
                    )
                }
            };
            written.revisions.push(revision);
            if let Some(revision) = announced {
                changes.push(Change::Record {
                    key: op.key().clone(),
                    revision,
                });
            }
        }
        // Events of one write are numbered across all its `AppendEvents` for the record.
        let mut next_index: HashMap<Id, u32> = HashMap::new();
        for (effect, _) in write.effects.iter().zip(apply).filter(|(_, a)| **a) {
            match effect {
                Effect::Enqueue(item) => self.queue.enqueue(item, now),
                Effect::Complete { lane, id } => self.queue.remove(*lane, id),
                Effect::Count { name, delta, .. } => {
                    *self.counters.entry(name.clone()).or_default() += delta;
                }
                Effect::AppendEvents { stream, events } => {
                    let revision = write
                        .revision_of(stream)
                        .expect("checked: the write writes the stream's record");
                    let id = id_of(stream);
                    let index = next_index.entry(id.clone()).or_default();
                    let (_, log) = self
                        .events
                        .entry(id)
                        .or_insert_with(|| (stream.clone(), Vec::new()));
                    for event in events {
                        log.push(StreamEvent {
                            revision,
                            index: *index,
                            event: event.clone(),
                        });
                        *index += 1;
                    }
                }
                Effect::Post(entry) => self.post(entry),
            }
        }
        for (effect, applied) in write.effects.iter().zip(apply) {
            if let Effect::Post(entry) = effect
                && !applied
            {
                written.skipped_entries.push(entry.id.clone());
            }
        }
        let mut lanes: Vec<Lane> = write
            .effects
            .iter()
            .filter_map(Effect::queues_work)
            .collect();
        lanes.sort();
        lanes.dedup();
        changes.extend(lanes.into_iter().map(Change::Work));
        (written, changes)
    }

    fn post(&mut self, entry: &LedgerEntry) {
        let ledger = self.ledgers.entry(entry.account.clone()).or_default();
        ledger.totals = ledger.totals.after(entry);
        let seq = ledger.entries.keys().next_back().map_or(1, |s| s + 1);
        ledger.ids.insert(entry.id.clone());
        ledger.entries.insert(
            seq,
            Posted {
                seq,
                entry: entry.clone(),
                after: ledger.totals,
            },
        );
    }
}

/// When retention acts on a record, if it still has to.
fn expiry_of(record: &Record) -> Option<Timestamp> {
    let pending = match record.key.kind.on_expiry() {
        OnExpiry::RemoveData => !record.data_removed,
        OnExpiry::Delete => true,
    };
    record.expires_at.filter(|_| pending)
}

impl Queue {
    fn head_of(&self, lane: Lane, group: &Id) -> Option<&String> {
        self.groups
            .get(&(lane, group.clone()))?
            .values()
            .find(|id| {
                self.items
                    .get(&(lane, (*id).clone()))
                    .is_some_and(|e| e.item.status == ItemStatus::Pending)
            })
    }

    /// Makes the group's oldest pending item (and only it) a claim candidate.
    fn refresh_head(&mut self, lane: Lane, group: &Id) {
        let Some(ids) = self.groups.get(&(lane, group.clone())) else {
            return;
        };
        for id in ids.values() {
            if let Some(e) = self.items.get(&(lane, id.clone())) {
                self.heads.remove(&(lane, e.rank, e.order, id.clone()));
            }
        }
        if let Some(head) = self.head_of(lane, group).cloned() {
            let e = &self.items[&(lane, head.clone())];
            self.heads.insert((lane, e.rank, e.order, head));
        }
    }

    fn enqueue(&mut self, new: &NewItem, now: Timestamp) {
        let slot = (new.lane, new.id.clone());
        if self.items.contains_key(&slot) {
            if !new.replace {
                return;
            }
            self.remove(new.lane, &new.id);
        }
        let group = id_of(&new.group);
        let seq = self.group_seq.entry((new.lane, group.clone())).or_default();
        *seq += 1;
        let seq = *seq;
        let item = Item {
            lane: new.lane,
            id: new.id.clone(),
            group: new.group.clone(),
            topic: new.topic.clone(),
            owner: new.owner.clone(),
            payload: new.payload.clone(),
            seq,
            status: ItemStatus::Pending,
            claims: u32::from(new.claimed.is_some()),
            attempts: Vec::new(),
            due_at: Some(new.run_at),
            created_at: now,
        };
        let lease = new
            .claimed
            .as_ref()
            .map(|c| (c.worker.clone(), c.token, c.expires_at));
        self.insert(item, lease);
    }

    /// Adds an item at its seq, ranked as if queued now.
    fn insert(&mut self, item: Item, lease: Option<(WorkerId, LeaseToken, Timestamp)>) {
        let (lane, group) = (item.lane, id_of(&item.group));
        let topic = (lane, item.topic.clone());
        let clock = self.clock.get(&topic).copied().unwrap_or(0);
        let last = self
            .last
            .entry((lane, item.topic.clone(), item.owner.clone()))
            .or_default();
        let rank = clock.max(*last) + 1;
        *last = rank;
        if lease.is_some() {
            let clock = self.clock.entry(topic).or_default();
            *clock = (*clock).max(rank);
        }
        self.order += 1;
        let seq = self.group_seq.entry((lane, group.clone())).or_default();
        *seq = (*seq).max(item.seq);
        self.groups
            .entry((lane, group.clone()))
            .or_default()
            .insert(item.seq, item.id.clone());
        self.items.insert(
            (lane, item.id.clone()),
            Entry {
                item,
                rank,
                order: self.order,
                lease,
            },
        );
        self.refresh_head(lane, &group);
    }

    fn remove(&mut self, lane: Lane, id: &str) {
        let Some(e) = self.items.remove(&(lane, id.to_owned())) else {
            return;
        };
        self.heads.remove(&(lane, e.rank, e.order, id.to_owned()));
        let group = id_of(&e.item.group);
        if let Some(ids) = self.groups.get_mut(&(lane, group.clone())) {
            ids.remove(&e.item.seq);
            if ids.is_empty() {
                self.groups.remove(&(lane, group.clone()));
            }
        }
        self.refresh_head(lane, &group);
    }

    /// Removes a group's items that `which` selects.
    fn drop_group(&mut self, lane: Lane, group: &Id, which: impl Fn(&Entry) -> bool) {
        let Some(ids) = self.groups.get(&(lane, group.clone())) else {
            return;
        };
        let doomed: Vec<String> = ids
            .values()
            .filter(|id| self.items.get(&(lane, (*id).clone())).is_some_and(&which))
            .cloned()
            .collect();
        for id in doomed {
            self.remove(lane, &id);
        }
    }

    /// The entry if `lease` is still its current, live lease.
    fn held(&mut self, lease: &ItemLease, now: Timestamp) -> Result<&mut Entry> {
        match self
            .items
            .get_mut(&(lease.item.lane, lease.item.id.clone()))
        {
            Some(e)
                if e.lease
                    .as_ref()
                    .is_some_and(|(_, token, until)| *token == lease.token && *until > now) =>
            {
                Ok(e)
            }
            _ => Err(Error::LeaseLost),
        }
    }
}

#[async_trait]
impl RecordStore for MemoryStore {
    async fn write(&self, write: &Write) -> Result<Written> {
        write.check()?;
        let now = Timestamp::now();
        let mut inner = self.lock();
        for op in &write.ops {
            match op {
                Op::Insert(record) => {
                    if inner.present(&record.key, now).is_some() {
                        return Err(Error::Exists(record.key.clone()));
                    }
                }
                Op::Update { record, expected } => match inner.present(&record.key, now) {
                    Some((stored, _)) if stored.owner != write.account => {
                        return Err(Error::NotFound(record.key.clone()));
                    }
                    None => return Err(Error::NotFound(record.key.clone())),
                    Some((_, actual)) if actual != expected => {
                        return Err(Error::Conflict {
                            key: record.key.clone(),
                            expected: *expected,
                            actual: *actual,
                        });
                    }
                    Some(_) => {}
                },
                Op::Delete(_) => {}
            }
        }
        let apply = inner.check_guards(write)?;
        let (written, changes) = inner.apply(write, &apply, now);
        drop(inner);
        changes.into_iter().for_each(|c| self.announce(c));
        Ok(written)
    }

    async fn get(&self, key: &Key) -> Result<Option<Arc<Stored>>> {
        let now = Timestamp::now();
        Ok(self
            .lock()
            .present(key, now)
            .map(|(r, rev)| Arc::new(Stored::new(r.clone(), *rev))))
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        use std::ops::Bound;
        let now = Timestamp::now();
        let inner = self.lock();
        let limit = query.limit.max(1);
        let mut items: Vec<Arc<Stored>> = Vec::with_capacity(limit.min(1024));
        let mut next = None;
        let lowest = (query.kind, Timestamp::from_micros(i64::MIN), String::new());
        let highest = (
            query.kind,
            Timestamp::from_micros(i64::MAX),
            "\u{10ffff}".to_owned(),
        );
        let backward = query.after.as_ref().is_some_and(|c| c.backward);
        let at = |c: &Cursor| (query.kind, c.created_at, c.id.clone());
        let range = match &query.after {
            Some(c) if c.backward => (Bound::Excluded(at(c)), Bound::Included(highest)),
            Some(c) => (Bound::Included(lowest), Bound::Excluded(at(c))),
            None => (Bound::Included(lowest), Bound::Included(highest)),
        };
        let range = inner.by_created.range(range);
        // Outward from the position: newest first forward, oldest first backward.
        let walk: Box<dyn Iterator<Item = _>> = if backward {
            Box::new(range)
        } else {
            Box::new(range.rev())
        };
        for (_, created_at, id) in walk {
            let too_new = query.created_before.is_some_and(|b| *created_at >= b);
            let too_old = query.created_after.is_some_and(|a| *created_at < a);
            match (backward, too_new, too_old) {
                (false, _, true) | (true, true, _) => break,
                (_, true, _) | (_, _, true) => continue,
                _ => {}
            }
            let Some((record, revision)) = inner.records.get(&(query.kind, id.clone())) else {
                continue;
            };
            if !query.matches(record) || record.is_gone_at(now) {
                continue;
            }
            if items.len() == limit {
                let last = &items[limit - 1].record;
                next = Some(if backward {
                    Cursor::before(last)
                } else {
                    Cursor::after(last)
                });
                break;
            }
            items.push(Arc::new(Stored::new(record.clone(), *revision)));
        }
        if backward {
            items.reverse();
        }
        Ok(Page { items, next })
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> Result<Vec<Key>> {
        let mut inner = self.lock();
        let due: Vec<(Kind, String)> = inner
            .by_expiry
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .take(limit)
            .map(|(_, kind, id)| (*kind, id.clone()))
            .collect();
        let mut changes = Vec::with_capacity(due.len());
        let mut keys = Vec::with_capacity(due.len());
        for id in due {
            let Some((record, revision)) = inner.records.get(&id).cloned() else {
                continue;
            };
            let key = record.key.clone();
            match key.kind.on_expiry() {
                OnExpiry::RemoveData => {
                    inner.put(record.tombstone(), revision.next());
                    inner.events.remove(&id);
                    for lane in Lane::ALL.into_iter().filter(|l| l.keeps_finished()) {
                        inner
                            .queue
                            .drop_group(lane, &id, |e| e.item.status != ItemStatus::Pending);
                    }
                    changes.push(Change::Record {
                        key: key.clone(),
                        revision: revision.next(),
                    });
                }
                OnExpiry::Delete => {
                    inner.remove(&key);
                    changes.push(Change::Record {
                        key: key.clone(),
                        revision: revision.next(),
                    });
                }
            }
            keys.push(key);
        }
        drop(inner);
        changes.into_iter().for_each(|c| self.announce(c));
        Ok(keys)
    }
}

#[async_trait]
impl QueueStore for MemoryStore {
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ItemLease>> {
        let now = Timestamp::now();
        let expires_at = now.plus(request.lease_for);
        let mut inner = self.lock();
        let queue = &mut inner.queue;
        let lane = request.lane;
        let mut picked = Vec::new();
        for (_, _, _, id) in queue
            .heads
            .range((lane, 0, 0, String::new())..)
            .take_while(|(l, ..)| *l == lane)
        {
            if picked.len() >= request.max {
                break;
            }
            let e = &queue.items[&(lane, id.clone())];
            let due = e.item.due_at.is_some_and(|at| at <= now);
            if due && !e.leased_at(now) && !request.exclude_topics.contains(&e.item.topic) {
                picked.push(id.clone());
            }
        }
        let mut leases = Vec::with_capacity(picked.len());
        for id in picked {
            let e = queue
                .items
                .get_mut(&(lane, id))
                .expect("picked from the index");
            let token = LeaseToken::generate();
            e.item.claims += 1;
            e.lease = Some((request.worker.clone(), token, expires_at));
            let clock = queue.clock.entry((lane, e.item.topic.clone())).or_default();
            *clock = (*clock).max(e.rank);
            leases.push(ItemLease {
                item: e.item.clone(),
                worker: request.worker.clone(),
                token,
                expires_at,
            });
        }
        Ok(leases)
    }

    async fn renew(&self, lease: &ItemLease, extend_by: Duration) -> Result<ItemLease> {
        let now = Timestamp::now();
        let mut inner = self.lock();
        let e = inner.queue.held(lease, now)?;
        let expires_at = now.plus(extend_by);
        if let Some((_, _, until)) = e.lease.as_mut() {
            *until = expires_at;
        }
        Ok(ItemLease {
            expires_at,
            ..lease.clone()
        })
    }

    async fn finish(&self, lease: &ItemLease, finish: &Finish) -> Result<()> {
        let now = Timestamp::now();
        let mut inner = self.lock();
        let lane = lease.item.lane;
        let group = id_of(&lease.item.group);
        let keep = lane.keeps_finished() && inner.holds_data(&group);
        let e = inner.queue.held(lease, now)?;
        e.lease = None;
        if let Some(attempt) = &finish.attempt {
            e.item.attempts.push(attempt.clone());
        }
        let seq = e.item.seq;
        let mut gone = Vec::new();
        match finish.outcome {
            Outcome::Done => {
                e.item.status = ItemStatus::Done;
                e.item.due_at = None;
                gone.push(e.item.id.clone());
            }
            Outcome::Retry(at) => e.item.due_at = Some(at),
            Outcome::Release(at) => {
                e.item.claims = e.item.claims.saturating_sub(1);
                e.item.due_at = Some(at);
            }
            Outcome::HandBack => {
                e.item.claims = e.item.claims.saturating_sub(1);
                e.item.due_at = Some(now);
                // Back in the queue at its rank: the clock its claim raised goes back below it.
                let (topic, rank) = (e.item.topic.clone(), e.rank);
                if let Some(clock) = inner.queue.clock.get_mut(&(lane, topic)) {
                    *clock = (*clock).min(rank - 1);
                }
            }
            Outcome::GiveUp { rest } => {
                e.item.status = ItemStatus::Failed;
                e.item.due_at = None;
                gone.push(e.item.id.clone());
                if rest {
                    let later: Vec<String> = inner.queue.groups[&(lane, group.clone())]
                        .range(seq + 1..)
                        .map(|(_, id)| id.clone())
                        .collect();
                    for id in later {
                        let e = inner
                            .queue
                            .items
                            .get_mut(&(lane, id.clone()))
                            .expect("grouped");
                        if e.item.status == ItemStatus::Pending {
                            e.item.status = ItemStatus::Failed;
                            e.item.due_at = None;
                            e.lease = None;
                            gone.push(id);
                        }
                    }
                }
            }
        }
        if !keep {
            for id in &gone {
                inner.queue.remove(lane, id);
            }
        }
        inner.queue.refresh_head(lane, &group);
        drop(inner);
        if matches!(
            finish.outcome,
            Outcome::Retry(_) | Outcome::Release(_) | Outcome::HandBack
        ) {
            self.announce(Change::Work(lane));
        }
        Ok(())
    }

    async fn items(&self, lane: Lane, group: &Key) -> Result<Vec<Item>> {
        let inner = self.lock();
        Ok(inner
            .queue
            .groups
            .get(&(lane, id_of(group)))
            .map(|ids| {
                ids.values()
                    .map(|id| inner.queue.items[&(lane, id.clone())].item.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn requeue(&self, lane: Lane, group: &Key, id: &str) -> Result<()> {
        let now = Timestamp::now();
        let mut inner = self.lock();
        let e = inner
            .queue
            .items
            .get_mut(&(lane, id.to_owned()))
            .filter(|e| e.item.group.kind == group.kind && e.item.group.id == group.id)
            .ok_or_else(|| Error::NotFound(group.clone()))?;
        e.item.status = ItemStatus::Pending;
        e.item.due_at = Some(now);
        e.lease = None;
        inner.queue.refresh_head(lane, &id_of(group));
        drop(inner);
        self.announce(Change::Work(lane));
        Ok(())
    }

    async fn queue_stats(&self, lane: Lane) -> Result<QueueStats> {
        let now = Timestamp::now();
        let inner = self.lock();
        let mut stats = QueueStats::default();
        for ((l, id), e) in &inner.queue.items {
            if *l != lane || e.item.status != ItemStatus::Pending {
                continue;
            }
            let head = inner.queue.head_of(lane, &id_of(&e.item.group)) == Some(id);
            if e.leased_at(now) {
                stats.leased += 1;
            } else if head && e.item.due_at.is_some_and(|at| at <= now) {
                stats.ready += 1;
            } else {
                stats.delayed += 1;
            }
        }
        Ok(stats)
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn read_events(
        &self,
        stream: &Key,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> Result<Vec<StreamEvent>> {
        Ok(self
            .lock()
            .events
            .get(&id_of(stream))
            .map(|(_, log)| {
                log.iter()
                    .filter(|e| after.is_none_or(|a| (e.revision, e.index) > a))
                    .take(limit.max(1))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[async_trait]
impl LedgerStore for MemoryStore {
    async fn balance(&self, account: &AccountId) -> Result<Balance> {
        Ok(self
            .lock()
            .ledgers
            .get(account)
            .map(|l| l.totals)
            .unwrap_or_default())
    }

    async fn ledger(
        &self,
        account: &AccountId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Posted>> {
        Ok(self
            .lock()
            .ledgers
            .get(account)
            .map(|l| {
                l.entries
                    .range(..before.unwrap_or(u64::MAX))
                    .rev()
                    .take(limit.max(1))
                    .map(|(_, p)| p.clone())
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[async_trait]
impl AdminStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: false,
            shared: false,
            native_ttl: false,
            change_notifications: true,
        }
    }

    async fn counters(&self) -> Result<Vec<(String, i64)>> {
        Ok(self
            .lock()
            .counters
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect())
    }

    async fn subscribe(&self) -> Result<Option<ChangeStream>> {
        let rx = self.changes.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let change = match rx.recv().await {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(_)) => Change::Resync,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((change, rx))
        });
        Ok(Some(stream.boxed()))
    }

    async fn export(
        &self,
        section: Section,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Exported>> {
        let inner = self.lock();
        let mut all: Vec<Exported> = match section {
            Section::Records => inner
                .records
                .values()
                .map(|(record, revision)| Exported::Record {
                    record: Box::new(record.clone()),
                    revision: *revision,
                })
                .collect(),
            Section::Items => inner
                .queue
                .items
                .values()
                .map(|e| Exported::Item(Box::new(e.item.clone())))
                .collect(),
            Section::Events => inner
                .events
                .values()
                .flat_map(|(stream, log)| {
                    log.iter().map(|event| Exported::Event {
                        stream: stream.clone(),
                        event: event.clone(),
                    })
                })
                .collect(),
            Section::Ledger => inner
                .ledgers
                .values()
                .flat_map(|l| l.entries.values())
                .map(|p| Exported::Ledger(Box::new(p.clone())))
                .collect(),
            Section::Counters => inner
                .counters
                .iter()
                .map(|(name, value)| Exported::Counter {
                    name: name.clone(),
                    value: *value,
                })
                .collect(),
        };
        drop(inner);
        all.retain(|e| after.is_none_or(|a| e.position() > *a));
        all.sort_by_key(Exported::position);
        all.truncate(limit.max(1));
        Ok(all)
    }

    async fn import(&self, pieces: &[Exported]) -> Result<()> {
        let mut inner = self.lock();
        for piece in pieces {
            match piece {
                Exported::Record { record, revision } => {
                    inner.put((**record).clone(), *revision);
                }
                Exported::Item(item) => {
                    inner.queue.remove(item.lane, &item.id);
                    inner.queue.insert((**item).clone(), None);
                }
                Exported::Event { stream, event } => {
                    let (_, log) = inner
                        .events
                        .entry(id_of(stream))
                        .or_insert_with(|| (stream.clone(), Vec::new()));
                    let at = (event.revision, event.index);
                    log.retain(|e| (e.revision, e.index) != at);
                    log.push(event.clone());
                    log.sort_by_key(|e| (e.revision, e.index));
                }
                Exported::Ledger(posted) => {
                    let ledger = inner
                        .ledgers
                        .entry(posted.entry.account.clone())
                        .or_default();
                    if let Some(old) = ledger.entries.insert(posted.seq, (**posted).clone()) {
                        ledger.ids.remove(&old.entry.id);
                    }
                    ledger.ids.insert(posted.entry.id.clone());
                    ledger.totals = ledger
                        .entries
                        .values()
                        .next_back()
                        .map(|p| p.after)
                        .unwrap_or_default();
                }
                Exported::Counter { name, value } => {
                    inner.counters.insert(name.clone(), *value);
                }
            }
        }
        drop(inner);
        self.announce(Change::Resync);
        Ok(())
    }
}
