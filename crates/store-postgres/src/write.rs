//! Writes ([`RecordStore::write`](augur_core::store::RecordStore::write)): a [`Write`] is
//! planned once (encoded, checked for texts PostgreSQL cannot store), then made in one round
//! trip, by one of two paths that leave the same state (`tests/paths.rs` runs every shape of
//! write through both):
//!
//! - **fused**: one statement ([`sql::fused`]) for the common writes: one record of a kind
//!   that keeps a tombstone inserted or compare-and-set, with queue effects on that record's
//!   own group (at most one item per lane enqueued or completed), unlimited counters, the
//!   record's events and the account's ledger entries. A prediction's create, start and
//!   settlement are this, with or without a webhook message, priced or free.
//! - **general**: the write's statements pipelined in one transaction (`BEGIN`, locks, one
//!   statement per operation and per queue effect, the guards, the other effects, `COMMIT`),
//!   each check refusing with `augur_refuse`, which aborts the rest. Every write can take it.
//!   A run of consecutive inserts is one statement ([`sql::INSERT_RECORDS`]), and so is a run
//!   of consecutive unclaimed enqueues in distinct groups: a batch of a thousand predictions
//!   is a handful of statements, not two thousand.
//!
//! The fused statement hands a write over to the general path when it cannot decide alone (an
//! item to complete or replace lies in another group, the new record's advisory lock is held
//! by a queue write, a stray item waits in a new record's group, an enqueued id is taken, two
//! writes number one group at once, a ledger entry was posted before or the account cannot
//! afford its entries or has no totals yet), and tries again when its compare-and-set saw a
//! record that was bumped after its snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;

use augur_core::Revision;
use augur_core::store::{self, Change, Effect, Lane, NewItem, OnExpiry, Op, Write, Written};
use serde_json::Value;

use crate::codec::{
    Param, RecordRow, RecordRows, Ts, encode_event_data, revision_from_sql, revision_to_sql,
    storable, token_to_sql,
};
use crate::error::Error;
use crate::sql::{self, Fair, FusedShape, FusedWrite, Posting};
use crate::store::{PostgresStore, Step};

/// How often a write starts over after a race it cannot report (a record bumped by a queue
/// write between the fused statement's snapshot and its lock, two writes numbering one group).
/// One retry practically always suffices.
const MAX_TRIES: usize = 8;

/// Items to enqueue, as the arrays [`sql::ENQUEUE`] (all thirteen) and the fused statement
/// (nine: no group or owner, which are the written record's) take them.
#[derive(Debug, Default)]
struct Enqueues<'w> {
    lane: Vec<&'static str>,
    id: Vec<&'w str>,
    gk: Vec<&'static str>,
    gid: Vec<&'w str>,
    gp: Vec<i16>,
    owner: Vec<&'w str>,
    topic: Vec<&'w str>,
    payload: Vec<&'w str>,
    run_at: Vec<Ts>,
    replace: Vec<bool>,
    worker: Vec<Option<&'w str>>,
    token: Vec<Option<i64>>,
    expires: Vec<Option<Ts>>,
    /// The items' `(lane, id)` and `(lane, group)`, which [`Enqueues::takes`] checks.
    ids: HashSet<(&'static str, &'w str)>,
    groups: HashSet<(&'static str, &'static str, &'w str)>,
}

impl<'w> Enqueues<'w> {
    /// True if `item` can join these items in one [`sql::ENQUEUE`]: all of them (and it) are
    /// unclaimed, and its group and id in its lane are not among theirs.
    fn takes(&self, item: &NewItem) -> bool {
        item.claimed.is_none()
            && self.worker.iter().all(Option::is_none)
            && !self.ids.contains(&(item.lane.as_str(), item.id.as_str()))
            && !self.groups.contains(&(
                item.lane.as_str(),
                item.group.kind.as_str(),
                item.group.id.as_str(),
            ))
    }

    fn push(&mut self, item: &'w NewItem) -> Result<(), Error> {
        storable("an item id", &item.id)?;
        storable("an item topic", &item.topic)?;
        storable("an item payload", &item.payload)?;
        storable("an item group", &item.group.id)?;
        self.ids.insert((item.lane.as_str(), &item.id));
        self.groups
            .insert((item.lane.as_str(), item.group.kind.as_str(), &item.group.id));
        self.lane.push(item.lane.as_str());
        self.id.push(&item.id);
        self.gk.push(item.group.kind.as_str());
        self.gid.push(&item.group.id);
        self.gp.push(i16::from(item.group.partition.0));
        self.owner.push(item.owner.as_str());
        self.topic.push(&item.topic);
        self.payload.push(&item.payload);
        self.run_at.push(Ts(item.run_at));
        self.replace.push(item.replace);
        self.worker
            .push(item.claimed.as_ref().map(|c| c.worker.as_str()));
        self.token
            .push(item.claimed.as_ref().map(|c| token_to_sql(c.token)));
        self.expires
            .push(item.claimed.as_ref().map(|c| Ts(c.expires_at)));
        Ok(())
    }

    fn params(&self) -> [Param<'_>; 13] {
        [
            &self.lane,
            &self.id,
            &self.gk,
            &self.gid,
            &self.gp,
            &self.owner,
            &self.topic,
            &self.payload,
            &self.run_at,
            &self.replace,
            &self.worker,
            &self.token,
            &self.expires,
        ]
    }

    fn fused_params(&self) -> [Param<'_>; 9] {
        [
            &self.lane,
            &self.id,
            &self.topic,
            &self.payload,
            &self.run_at,
            &self.replace,
            &self.worker,
            &self.token,
            &self.expires,
        ]
    }
}

/// One queue effect of the general path, in effect order.
#[derive(Debug)]
enum QueueStep<'w> {
    Enqueue(Box<Enqueues<'w>>),
    Complete(&'static str, &'w str),
}

/// A record operation, encoded.
#[derive(Debug)]
enum OpPlan<'w> {
    Insert {
        row: RecordRow<'w>,
        index: i32,
        /// The kind's records read as absent once expired: one may have to be cleared first.
        clear_gone: bool,
    },
    Update {
        row: RecordRow<'w>,
        expected: i64,
        index: i32,
    },
    Delete {
        kind: &'static str,
        id: &'w str,
    },
}

/// A write, encoded for either path.
#[derive(Debug)]
struct Plan<'w> {
    write: &'w Write,
    account: &'w str,
    ops: Vec<OpPlan<'w>>,
    /// Advisory locks the general path takes: every operation's record and every enqueued
    /// item's group, as `"<kind> <id>"`.
    lock_names: Vec<String>,
    /// Items `(lane, id)` whose current group is locked and bumped too: those completed, and
    /// those an enqueue replaces.
    lock_items: (Vec<&'static str>, Vec<&'w str>),
    /// Records of enqueued items' groups that no operation of the write writes: bumped.
    bump: (Vec<&'static str>, Vec<&'w str>),
    queue: Vec<QueueStep<'w>>,
    /// Counter names (sorted, distinct) and their summed deltas.
    counts: (Vec<&'w str>, Vec<i64>),
    /// Limited counters in effect order: names, deltas, limits, effect indexes; and the
    /// distinct names, sorted, whose locks are taken.
    limited: (Vec<&'w str>, Vec<i64>, Vec<i64>, Vec<i32>),
    limited_names: Vec<&'w str>,
    events: Events<'w>,
    posts: Posts<'w>,
    /// The sums and the need of `posts`, as the fused statement takes them; `None` if a sum
    /// overflows (the general path refuses such a write).
    posting: Option<Posting>,
    /// Lanes where the write queues claimable work (announced).
    work: Vec<Lane>,
    /// The operations as [`sql::PRECHECK`] takes them, if a key appears in several.
    precheck: Option<Precheck<'w>>,
    /// Runs of two or more consecutive inserts that clear nothing first, each made by one
    /// [`sql::INSERT_RECORDS`]: the index of its first operation, and its rows.
    insert_runs: Vec<(usize, RecordRows<'w>)>,
}

/// Operations, as the arrays [`sql::PRECHECK`] takes.
#[derive(Debug, Default)]
struct Precheck<'w> {
    op: Vec<i32>,
    kind: Vec<&'static str>,
    id: Vec<&'w str>,
    expected: Vec<Option<i64>>,
    n: Vec<i32>,
}

/// Events, as the arrays [`sql::APPEND_EVENTS`] takes.
#[derive(Debug, Default)]
struct Events<'w> {
    stream_kind: Vec<&'static str>,
    stream_id: Vec<&'w str>,
    stream_partition: Vec<i16>,
    revision: Vec<i64>,
    idx: Vec<i32>,
    kind: Vec<&'static str>,
    data: Vec<String>,
    escaped: Vec<bool>,
}

/// Ledger entries, as the arrays [`sql::POST`] takes.
#[derive(Debug, Default)]
struct Posts<'w> {
    id: Vec<&'w str>,
    delta: Vec<i64>,
    held: Vec<i64>,
    reason: Vec<&'static str>,
    reference: Vec<Option<&'w str>>,
    memo: Vec<Option<&'w str>>,
    at: Vec<Ts>,
    n: Vec<i32>,
}

impl Posts<'_> {
    /// The entries' seven arrays, in the order [`sql::POST`] and the fused statement take
    /// them: ids, deltas, helds, reasons, references, memos, times.
    fn entries(&self) -> [Param<'_>; 7] {
        [
            &self.id,
            &self.delta,
            &self.held,
            &self.reason,
            &self.reference,
            &self.memo,
            &self.at,
        ]
    }
}

fn effect_index(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl<'w> Plan<'w> {
    fn new(write: &'w Write) -> Result<Self, Error> {
        let mut ops = Vec::with_capacity(write.ops.len());
        let mut lock_names = Vec::new();
        let mut op_keys: BTreeSet<(&'static str, &'w str)> = BTreeSet::new();
        for (i, op) in write.ops.iter().enumerate() {
            let key = op.key();
            storable("a record id", &key.id)?;
            lock_names.push(format!("{} {}", key.kind, key.id));
            op_keys.insert((key.kind.as_str(), key.id.as_str()));
            ops.push(match op {
                Op::Insert(record) => OpPlan::Insert {
                    row: RecordRow::new(record)?,
                    index: effect_index(i),
                    clear_gone: record.key.kind.on_expiry() == OnExpiry::Delete,
                },
                Op::Update { record, expected } => OpPlan::Update {
                    row: RecordRow::new(record)?,
                    expected: revision_to_sql(*expected),
                    index: effect_index(i),
                },
                Op::Delete(key) => OpPlan::Delete {
                    kind: key.kind.as_str(),
                    id: &key.id,
                },
            });
        }
        let precheck = (op_keys.len() < write.ops.len()).then(|| {
            let mut p = Precheck::default();
            for (i, op) in write.ops.iter().enumerate() {
                let (code, expected) = match op {
                    Op::Insert(_) => (0, None),
                    Op::Update { expected, .. } => (1, Some(revision_to_sql(*expected))),
                    Op::Delete(_) => (2, None),
                };
                p.op.push(code);
                p.kind.push(op.key().kind.as_str());
                p.id.push(&op.key().id);
                p.expected.push(expected);
                p.n.push(effect_index(i));
            }
            p
        });
        let mut insert_runs: Vec<(usize, RecordRows<'w>)> = Vec::new();
        let mut run: Option<(usize, RecordRows<'w>)> = None;
        for (i, op) in ops.iter().enumerate() {
            match op {
                OpPlan::Insert {
                    row,
                    index,
                    clear_gone: false,
                } => run
                    .get_or_insert_with(|| (i, RecordRows::default()))
                    .1
                    .push(row, *index),
                _ => insert_runs.extend(run.take()),
            }
        }
        insert_runs.extend(run);
        insert_runs.retain(|(_, rows)| rows.len() >= 2);
        let mut plan = Plan {
            write,
            precheck,
            insert_runs,
            account: write.account.as_str(),
            ops,
            lock_names,
            lock_items: Default::default(),
            bump: Default::default(),
            queue: Vec::new(),
            counts: Default::default(),
            limited: Default::default(),
            limited_names: Vec::new(),
            events: Events::default(),
            posts: Posts::default(),
            posting: None,
            work: Vec::new(),
        };
        let mut counts: BTreeMap<&'w str, i64> = BTreeMap::new();
        let mut limited_names: BTreeSet<&'w str> = BTreeSet::new();
        let mut bumped: BTreeSet<(&'static str, &'w str)> = BTreeSet::new();
        // Events of one write are numbered across all its `AppendEvents` for the record.
        let mut next_index: HashMap<(&'static str, &'w str), i32> = HashMap::new();
        for (n, effect) in write.effects.iter().enumerate() {
            match effect {
                Effect::Enqueue(item) => {
                    // Consecutive unclaimed new items in distinct groups go in one statement
                    // (a batch's thousand predictions: one `ENQUEUE`, not a thousand).
                    match plan.queue.last_mut() {
                        Some(QueueStep::Enqueue(many)) if many.takes(item) => many.push(item)?,
                        _ => {
                            let mut one = Enqueues::default();
                            one.push(item)?;
                            plan.queue.push(QueueStep::Enqueue(Box::new(one)));
                        }
                    }
                    let group = (item.group.kind.as_str(), item.group.id.as_str());
                    plan.lock_names.push(format!("{} {}", group.0, group.1));
                    if !op_keys.contains(&group) && bumped.insert(group) {
                        plan.bump.0.push(group.0);
                        plan.bump.1.push(group.1);
                    }
                    if item.replace {
                        plan.lock_items.0.push(item.lane.as_str());
                        plan.lock_items.1.push(&item.id);
                    }
                }
                Effect::Complete { lane, id } => {
                    storable("an item id", id)?;
                    plan.lock_items.0.push(lane.as_str());
                    plan.lock_items.1.push(id);
                    plan.queue.push(QueueStep::Complete(lane.as_str(), id));
                }
                Effect::Count { name, delta, limit } => {
                    storable("a counter name", name)?;
                    let sum = counts.entry(name).or_default();
                    *sum = sum.saturating_add(*delta);
                    if let Some(limit) = limit {
                        plan.limited.0.push(name);
                        plan.limited.1.push(*delta);
                        plan.limited.2.push(*limit);
                        plan.limited.3.push(effect_index(n));
                        limited_names.insert(name);
                    }
                }
                Effect::AppendEvents { stream, events } => {
                    let revision = write
                        .revision_of(stream)
                        .expect("checked: the write writes the stream's record");
                    let index = next_index
                        .entry((stream.kind.as_str(), stream.id.as_str()))
                        .or_default();
                    for event in events {
                        let (data, escaped) = encode_event_data(&event.data);
                        plan.events.stream_kind.push(stream.kind.as_str());
                        plan.events.stream_id.push(&stream.id);
                        plan.events
                            .stream_partition
                            .push(i16::from(stream.partition.0));
                        plan.events.revision.push(revision_to_sql(revision));
                        plan.events.idx.push(*index);
                        plan.events.kind.push(event.kind.as_str());
                        plan.events.data.push(data);
                        plan.events.escaped.push(escaped);
                        *index = index.saturating_add(1);
                    }
                }
                Effect::Post(entry) => {
                    storable("a ledger entry id", &entry.id)?;
                    for text in [&entry.reference, &entry.memo].into_iter().flatten() {
                        storable("a ledger entry's text", text)?;
                    }
                    plan.posts.id.push(&entry.id);
                    plan.posts.delta.push(entry.delta);
                    plan.posts.held.push(entry.held);
                    plan.posts.reason.push(entry.reason.as_str());
                    plan.posts.reference.push(entry.reference.as_deref());
                    plan.posts.memo.push(entry.memo.as_deref());
                    plan.posts.at.push(Ts(entry.at));
                    plan.posts.n.push(effect_index(n));
                }
            }
        }
        plan.counts = (
            counts.keys().copied().collect(),
            counts.into_values().collect(),
        );
        plan.limited_names = limited_names.into_iter().collect();
        plan.posting = Posting::of(
            plan.posts
                .delta
                .iter()
                .copied()
                .zip(plan.posts.held.iter().copied()),
        );
        let mut lanes: Vec<Lane> = write
            .effects
            .iter()
            .filter_map(Effect::queues_work)
            .collect();
        lanes.sort();
        lanes.dedup();
        plan.work = lanes;
        Ok(plan)
    }

    /// The fused statement's shape, if the write is one it makes (see the module docs).
    fn fused_shape(&self) -> Option<FusedShape> {
        let [op] = self.write.ops.as_slice() else {
            return None;
        };
        let (write, record) = match op {
            Op::Insert(record) => (FusedWrite::Insert, record),
            Op::Update { record, .. } => (FusedWrite::Update, record),
            Op::Delete(_) => return None,
        };
        if record.key.kind.on_expiry() != OnExpiry::RemoveData {
            return None;
        }
        let mut enqueued = BTreeSet::new();
        let mut completed = BTreeSet::new();
        let mut fair = Fair::default();
        for effect in &self.write.effects {
            match effect {
                Effect::Enqueue(item) => {
                    if item.group != record.key || !enqueued.insert(item.lane) {
                        return None;
                    }
                    fair.claimed |= item.claimed.is_some();
                    fair.unclaimed |= item.claimed.is_none();
                }
                Effect::Complete { lane, .. } => {
                    if !completed.insert(*lane) {
                        return None;
                    }
                }
                Effect::Count { limit: Some(_), .. } => return None,
                Effect::Count { .. } | Effect::AppendEvents { .. } | Effect::Post(_) => {}
            }
        }
        if enqueued.intersection(&completed).next().is_some() {
            return None;
        }
        let posts = !self.posts.id.is_empty();
        if posts {
            // An entry repeated within the write is skipped by the general path's rule, and
            // sums that overflow are its to refuse.
            let ids: BTreeSet<&str> = self.posts.id.iter().copied().collect();
            if ids.len() < self.posts.id.len() || self.posting.is_none() {
                return None;
            }
        }
        Some(FusedShape {
            write,
            enqueue: (!enqueued.is_empty()).then_some(fair),
            complete: !completed.is_empty(),
            counts: !self.counts.0.is_empty(),
            events: !self.events.kind.is_empty(),
            posts,
        })
    }

    /// What committing the write announces: each record written, and the lanes with new
    /// claimable work.
    fn changes(&self, revisions: &[Option<Revision>]) -> Vec<Change> {
        let mut changes: Vec<Change> = self
            .write
            .ops
            .iter()
            .zip(revisions)
            .filter_map(|(op, revision)| {
                revision.map(|revision| Change::Record {
                    key: op.key().clone(),
                    revision,
                })
            })
            .collect();
        changes.extend(self.work.iter().copied().map(Change::Work));
        changes
    }

    /// The contract error a refusal of the general path stands for; `None` for a race.
    fn refusal(&self, reason: &Value) -> Option<Error> {
        let unexpected = || Some(Error::Config(format!("unexpected refusal {reason}")));
        let int = |v: &Value| v.as_i64().unwrap_or_default();
        if let Some(i) = reason.get("op") {
            let op = i
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| self.write.ops.get(i));
            let Some(op) = op else {
                return unexpected();
            };
            let key = op.key().clone();
            if reason.get("exists").is_some() {
                return Some(store::Error::Exists(key).into());
            }
            let Some(actual) = reason.get("actual").and_then(Value::as_i64) else {
                return Some(store::Error::NotFound(key).into());
            };
            let expected = match op {
                Op::Update { expected, .. } => *expected,
                _ => Revision::FIRST,
            };
            return Some(match revision_from_sql(actual) {
                Ok(actual) => store::Error::Conflict {
                    key,
                    expected,
                    actual,
                }
                .into(),
                Err(e) => e,
            });
        }
        if let Some(credits) = reason.get("credits") {
            return Some(
                store::Error::InsufficientCredits {
                    account: self.write.account.clone(),
                    available: int(&credits["available"]),
                    needed: int(&credits["needed"]),
                }
                .into(),
            );
        }
        if let Some(n) = reason.get("limit") {
            let effect = usize::try_from(n.as_u64()?)
                .ok()
                .and_then(|n| self.write.effects.get(n));
            if let Some(Effect::Count {
                name,
                limit: Some(limit),
                ..
            }) = effect
            {
                return Some(
                    store::Error::LimitReached {
                        counter: name.clone(),
                        limit: *limit,
                    }
                    .into(),
                );
            }
        }
        if reason.get("retry").is_some() {
            return None;
        }
        unexpected()
    }
}

/// How a fused attempt ended.
enum Fused {
    Done(Option<Revision>),
    /// The compare-and-set met a record bumped after the statement's snapshot: again.
    Again,
    /// The general path must make the write.
    General,
}

impl PostgresStore {
    pub(crate) async fn write_inner(&self, write: &Write) -> Result<Written, Error> {
        write.check()?;
        if write.ops.is_empty() && write.effects.is_empty() {
            return Ok(Written::default());
        }
        let plan = Plan::new(write)?;
        let shape = if self.general_only {
            None
        } else {
            plan.fused_shape()
        };
        if let Some(shape) = shape {
            for _ in 0..MAX_TRIES {
                let decided = self.write_fused(&plan, shape).await;
                if matches!(decided, Ok(Fused::Done(_)) | Err(Error::Contract(_))) {
                    self.fused.fetch_add(1, Ordering::Relaxed);
                }
                match decided? {
                    Fused::Done(revision) => {
                        let revisions = vec![revision];
                        self.announce(plan.changes(&revisions));
                        return Ok(Written {
                            revisions,
                            skipped_entries: Vec::new(),
                        });
                    }
                    Fused::Again => {}
                    Fused::General => break,
                }
            }
        }
        for _ in 0..MAX_TRIES {
            match self.write_general(&plan).await {
                Ok((written, announced)) => {
                    self.announce(plan.changes(&announced));
                    return Ok(written);
                }
                Err(e) if e.is_race() => {}
                Err(Error::Refused(reason)) => {
                    if let Some(e) = plan.refusal(&reason) {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended(format!(
            "a write kept colliding with concurrent writes; giving up after {MAX_TRIES} tries"
        )))
    }

    async fn write_fused(&self, plan: &Plan<'_>, shape: FusedShape) -> Result<Fused, Error> {
        let (row, expected) = match &plan.ops[0] {
            OpPlan::Insert { row, .. } => (row, None),
            OpPlan::Update { row, expected, .. } => (row, Some(expected)),
            OpPlan::Delete { .. } => unreachable!("deletes are not fused"),
        };
        let mut enqueues = Enqueues::default();
        let mut complete: (Vec<&'static str>, Vec<&str>) = Default::default();
        for effect in &plan.write.effects {
            match effect {
                Effect::Enqueue(item) => enqueues.push(item)?,
                Effect::Complete { lane, id } => {
                    complete.0.push(lane.as_str());
                    complete.1.push(id);
                }
                _ => {}
            }
        }
        let mut params: Vec<Param<'_>> = row.params().to_vec();
        if let Some(expected) = expected {
            params.push(expected);
        }
        if shape.enqueue.is_some() {
            params.extend(enqueues.fused_params());
        }
        if shape.complete {
            params.extend([&complete.0 as Param<'_>, &complete.1]);
        }
        if shape.counts {
            params.extend([&plan.counts.0 as Param<'_>, &plan.counts.1]);
        }
        if shape.events {
            params.extend([
                &plan.events.kind as Param<'_>,
                &plan.events.data,
                &plan.events.escaped,
            ]);
        }
        if let Some(posting) = plan.posting.as_ref().filter(|_| shape.posts) {
            params.push(&plan.account);
            params.extend(plan.posts.entries());
            params.extend([
                &posting.delta as Param<'_>,
                &posting.held,
                &posting.count,
                &posting.need,
            ]);
        }
        let rows = match self.query(sql::fused(shape), &params).await {
            Ok(rows) => rows,
            Err(Error::Refused(_)) => return Ok(Fused::General),
            Err(e) if e.is_race() => return Ok(Fused::General),
            Err(e) => return Err(e),
        };
        let row = rows
            .first()
            .ok_or_else(|| Error::decode("fused write", "no row"))?;
        let written: Option<i64> = row.try_get(0).map_err(|e| Error::decode("revision", e))?;
        if let Some(revision) = written {
            return Ok(Fused::Done(Some(revision_from_sql(revision)?)));
        }
        let key = plan.write.ops[0].key().clone();
        match expected {
            // Not allowed (the key's lock taken, or items of its group left): the general
            // path decides. (A taken key fails the statement instead, see `sql::fused`.)
            None => Ok(Fused::General),
            Some(expected) => {
                // Why nothing was written: a second statement, whose snapshot holds the write
                // that won (only losers pay for it).
                let kind = key.kind.as_str();
                let rows = self
                    .query(sql::REVISION, &[&kind, &key.id.as_str()])
                    .await?;
                let actual = match rows.first() {
                    Some(row) if row.try_get::<_, &str>(1).ok() == Some(plan.account) => row
                        .try_get::<_, i64>(0)
                        .map_err(|e| Error::decode("revision", e))?,
                    _ => return Err(store::Error::NotFound(key).into()),
                };
                if actual == *expected {
                    return Ok(Fused::Again);
                }
                Err(store::Error::Conflict {
                    key,
                    expected: revision_from_sql(*expected)?,
                    actual: revision_from_sql(actual)?,
                }
                .into())
            }
        }
    }

    async fn write_general(
        &self,
        plan: &Plan<'_>,
    ) -> Result<(Written, Vec<Option<Revision>>), Error> {
        let account = &plan.account;
        let mut steps: Vec<Step<'_>> = Vec::new();
        if !plan.lock_names.is_empty() || !plan.lock_items.0.is_empty() {
            steps.push((
                sql::LOCK_GROUPS,
                vec![&plan.lock_names, &plan.lock_items.0, &plan.lock_items.1],
            ));
        }
        if !plan.bump.0.is_empty() || !plan.lock_items.0.is_empty() {
            steps.push((
                sql::BUMP_GROUPS,
                vec![
                    &plan.bump.0,
                    &plan.bump.1,
                    &plan.lock_items.0,
                    &plan.lock_items.1,
                ],
            ));
        }
        if let Some(p) = &plan.precheck {
            steps.push((
                sql::PRECHECK,
                vec![&p.op, &p.kind, &p.id, &p.expected, &p.n, account],
            ));
        }
        // Where each delete's result is: the revision it announces.
        let mut op_steps: Vec<Option<usize>> = Vec::with_capacity(plan.ops.len());
        let mut runs = plan.insert_runs.iter().peekable();
        let mut in_run_until = 0;
        for (i, op) in plan.ops.iter().enumerate() {
            if let Some((_, rows)) = runs.next_if(|(first, _)| *first == i) {
                steps.push((sql::INSERT_RECORDS.as_str(), rows.params().to_vec()));
                in_run_until = i + rows.len();
            }
            if i < in_run_until {
                op_steps.push(None);
                continue;
            }
            match op {
                OpPlan::Insert {
                    row,
                    index,
                    clear_gone,
                } => {
                    if *clear_gone {
                        steps.push((sql::CLEAR_GONE, row.params()[..2].to_vec()));
                    }
                    let mut params = row.params().to_vec();
                    params.push(index);
                    steps.push((sql::INSERT_RECORD.as_str(), params));
                    op_steps.push(None);
                }
                OpPlan::Update {
                    row,
                    expected,
                    index,
                } => {
                    let mut params = row.params().to_vec();
                    params.extend([expected as Param<'_>, index]);
                    steps.push((sql::UPDATE_RECORD.as_str(), params));
                    op_steps.push(None);
                }
                OpPlan::Delete { kind, id } => {
                    op_steps.push(Some(steps.len()));
                    steps.push((sql::DELETE_RECORD, vec![kind as Param<'_>, id, account]));
                    steps.push((sql::DELETE_REST, vec![kind as Param<'_>, id, account]));
                }
            }
        }
        let posts = !plan.posts.id.is_empty();
        if posts {
            steps.push((sql::LOCK_TOTALS, vec![account]));
        }
        if !plan.limited_names.is_empty() {
            steps.push((sql::LOCK_COUNTERS, vec![&plan.limited_names]));
        }
        if posts || !plan.limited_names.is_empty() {
            steps.push((
                sql::GUARDS,
                vec![
                    account,
                    &plan.posts.id,
                    &plan.posts.delta,
                    &plan.posts.held,
                    &plan.posts.n,
                    &plan.limited.0,
                    &plan.limited.1,
                    &plan.limited.2,
                    &plan.limited.3,
                ],
            ));
        }
        for step in &plan.queue {
            match step {
                QueueStep::Enqueue(one) => {
                    steps.push((sql::ENQUEUE.as_str(), one.params().to_vec()));
                }
                QueueStep::Complete(lane, id) => {
                    steps.push((sql::COMPLETE.as_str(), vec![lane, id]));
                }
            }
        }
        if !plan.counts.0.is_empty() {
            steps.push((sql::COUNT, vec![&plan.counts.0, &plan.counts.1]));
        }
        let e = &plan.events;
        if !e.kind.is_empty() {
            steps.push((
                sql::APPEND_EVENTS.as_str(),
                vec![
                    &e.stream_kind,
                    &e.stream_id,
                    &e.stream_partition,
                    &e.revision,
                    &e.idx,
                    &e.kind,
                    &e.data,
                    &e.escaped,
                ],
            ));
        }
        let post_step = steps.len();
        if posts {
            let mut params = vec![account as Param<'_>];
            params.extend(plan.posts.entries());
            params.push(&plan.posts.n);
            steps.push((sql::POST, params));
        }
        let results = self.transaction(&steps).await?;
        // What each operation announces: its revision after the write, or for a delete of a
        // record that was there, the one after its last.
        let mut announced = Vec::with_capacity(plan.ops.len());
        let mut revisions = Vec::with_capacity(plan.ops.len());
        for (op, step) in plan.write.ops.iter().zip(&op_steps) {
            let (revision, announce) = match (op, step) {
                (Op::Insert(_), _) => (Some(Revision::FIRST), Some(Revision::FIRST)),
                (Op::Update { expected, .. }, _) => (Some(expected.next()), Some(expected.next())),
                (Op::Delete(_), Some(step)) => {
                    let after = results[*step]
                        .first()
                        .map(|row| row.try_get::<_, i64>(0).map_err(Error::from))
                        .transpose()?
                        .map(revision_from_sql)
                        .transpose()?;
                    (None, after)
                }
                (Op::Delete(_), None) => (None, None),
            };
            revisions.push(revision);
            announced.push(announce);
        }
        let skipped_entries = if posts {
            results[post_step]
                .iter()
                .map(|row| row.try_get::<_, String>(0).map_err(Error::from))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let written = Written {
            revisions,
            skipped_entries,
        };
        Ok((written, announced))
    }
}
