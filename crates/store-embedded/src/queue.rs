//! The SQL of the leased queue (`items`, `queue_ranks`): enqueueing and completing inside a
//! write, claims, renewals, finishes and requeues in the writer thread, listings and
//! statistics on a read connection, and what deleting or expiring a record does to its items.
//!
//! Like `ops`, every operation checks before it writes, and these functions mirror
//! `augur_core::store::memory::MemoryStore`. The difference in representation is how claim
//! candidates are kept. The memory store walks its set of group heads in rank order and skips
//! those leased or due later; here only a group's head (its oldest pending item) carries
//! `ready_rank` (claimable now: its rank) or `wake_at` (claimable from then: due later, or
//! leased until then), each under a partial index. A claim first moves the heads whose
//! `wake_at` has passed to `ready_rank`, then takes the lowest ranks. Both are range scans
//! that touch only what they return, so thousands of leased items, items due later or items
//! queued behind a head cost a claim nothing (and excluded topics little: see [`candidates`]). The invariant that keeps this right: at most one
//! item per lane and group has `ready_rank` or `wake_at`, and it is the group's head
//! ([`refresh_head`] restores it after every change that can move the head).

use std::time::Duration;

use augur_core::store::{
    Attempt, ClaimRequest, Finish, Item, ItemLease, ItemStatus, Key, Lane, NewItem, Outcome,
    QueueStats,
};
use augur_core::{LeaseToken, Timestamp, WorkerId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::Error;
use crate::ops::{self, sql_int, u32_from, u64_from};

/// Every lane's stored name, as the SQL below spells them (checked by a test). Macros, so that
/// statements are `const`s (`concat!`), prepared without building a string per call.
macro_rules! lanes {
    () => {
        "('jobs', 'tasks', 'webhooks')"
    };
}

/// Every item status's stored name, as the SQL below spells them (checked by a test). Listed
/// in conditions on `items_by_group` so that a group's items are a few index ranges, whatever
/// their status.
macro_rules! statuses {
    () => {
        "('pending', 'done', 'failed')"
    };
}

/// The columns of an item as read, in [`ItemRow::read`]'s order.
macro_rules! item_columns {
    () => {
        "lane, id, group_kind, group_id, group_partition, topic, owner, payload, seq, status, \
         claims, attempts, due_at, created_at"
    };
}

// The statements, named so that the schema's tests can check their plans.

/// A group's head: its oldest pending item.
pub(crate) const FIND_HEAD: &str = "SELECT rowid FROM items WHERE lane = ?1 \
     AND status = 'pending' AND group_kind = ?2 AND group_id = ?3 ORDER BY seq LIMIT 1";
/// Unmarks a group's items other than `?4` that are marked as its head.
pub(crate) const CLEAR_HEADS: &str = concat!(
    "UPDATE items SET ready_rank = NULL, wake_at = NULL WHERE lane = ?1 AND status IN ",
    statuses!(),
    " AND group_kind = ?2 AND group_id = ?3 \
     AND (ready_rank IS NOT NULL OR wake_at IS NOT NULL) AND rowid IS NOT ?4"
);
/// Marks item `?1` as its group's head at time `?2`.
pub(crate) const SET_HEAD: &str = "UPDATE items SET \
     ready_rank = CASE WHEN MAX(due_at, COALESCE(lease_expires_at, 0)) <= ?2 THEN rank END, \
     wake_at = CASE WHEN MAX(due_at, COALESCE(lease_expires_at, 0)) > ?2 \
         THEN MAX(due_at, COALESCE(lease_expires_at, 0)) END \
     WHERE rowid = ?1";
/// An item to remove: its rowid, whether it is its group's head, and the group's next pending
/// item (itself excluded). A `SELECT` and then [`DELETE_ITEM`] rather than one `DELETE …
/// RETURNING`, which SQLite runs through a temporary table (a page cache of its own, opened
/// and zeroed at every run) to hold what it returns.
pub(crate) const ITEM_TO_REMOVE: &str = "SELECT rowid, ready_rank IS NOT NULL OR wake_at IS NOT NULL, \
     (SELECT n.rowid FROM items AS n WHERE n.lane = items.lane AND n.status = 'pending' \
      AND n.group_kind = items.group_kind AND n.group_id = items.group_id \
      AND n.rowid <> items.rowid ORDER BY n.seq LIMIT 1) \
     FROM items WHERE lane = ?1 AND id = ?2";
pub(crate) const DELETE_ITEM: &str = "DELETE FROM items WHERE rowid = ?1";
/// The last `seq` of a group's items of one status: an index seek (no aggregate).
macro_rules! last_seq {
    ($status:literal) => {
        concat!(
            "COALESCE((SELECT seq FROM items WHERE lane = ?1 AND status = '",
            $status,
            "' AND group_kind = ?2 AND group_id = ?3 ORDER BY seq DESC LIMIT 1), 0)"
        )
    };
}

/// The last `seq`s of a group's pending items and of all its items (a new item's place is one
/// past it; it is its group's head if nothing is pending), and a new item's fair-queuing rank
/// (one past the larger of its account's last rank and the clock). Each is a seek on a
/// primary key or `items_by_group`, one per status and one per rank row: an `IN` list, on a
/// status or on the two rank rows, would make SQLite build a temporary table for it at every
/// run, and `MAX()` over rows an aggregate.
pub(crate) const PLACEMENT: &str = concat!(
    "SELECT ",
    last_seq!("pending"),
    ", MAX(",
    last_seq!("done"),
    ", ",
    last_seq!("failed"),
    "), MAX(COALESCE((SELECT rank FROM queue_ranks WHERE lane = ?1 AND topic = ?4 \
     AND owner = ''), 0), COALESCE((SELECT rank FROM queue_ranks WHERE lane = ?1 \
     AND topic = ?4 AND owner = ?5), 0)) + 1"
);
pub(crate) const INSERT_ITEM: &str = "INSERT INTO items (lane, id, group_kind, group_id, \
     group_partition, topic, owner, payload, seq, status, claims, attempts, due_at, created_at, \
     rank, lease_token, lease_worker, lease_expires_at, ready_rank, wake_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, '[]', ?11, ?12, ?13, ?14, ?15, \
     ?16, ?17, ?18) ON CONFLICT (lane, id) DO NOTHING";
/// An account's last rank; ranks only grow, so `MAX` keeps the newest.
pub(crate) const RANKED: &str = "INSERT INTO queue_ranks (lane, topic, owner, rank) \
     VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (lane, topic, owner) DO UPDATE SET rank = MAX(rank, excluded.rank)";
/// An account's last rank and the clock (owner `''`), for an item queued already claimed.
pub(crate) const RANKED_AND_CLAIMED: &str = "INSERT INTO queue_ranks (lane, topic, owner, rank) \
     VALUES (?1, ?2, ?3, ?4), (?1, ?2, '', ?4) \
     ON CONFLICT (lane, topic, owner) DO UPDATE SET rank = MAX(rank, excluded.rank)";
/// The clock, raised to a rank claimed.
pub(crate) const CLAIMED: &str = "INSERT INTO queue_ranks (lane, topic, owner, rank) \
     VALUES (?1, ?2, '', ?3) \
     ON CONFLICT (lane, topic, owner) DO UPDATE SET rank = MAX(rank, excluded.rank)";
pub(crate) const REMOVE_GROUP: &str = concat!(
    "DELETE FROM items WHERE lane IN ",
    lanes!(),
    " AND status IN ",
    statuses!(),
    " AND group_kind = ?1 AND group_id = ?2"
);
pub(crate) const REMOVE_FINISHED: &str = "DELETE FROM items WHERE lane = ?1 \
     AND status IN ('done', 'failed') AND group_kind = ?2 AND group_id = ?3";
/// Whether a head's run time came or its lease lapsed: [`PROMOTE`] runs only then, since an
/// `UPDATE` of the column its index is on collects the rows in a temporary table first, even
/// when there are none.
pub(crate) const ANY_WAKING: &str =
    "SELECT EXISTS (SELECT 1 FROM items WHERE lane = ?1 AND wake_at <= ?2)";
/// Heads whose run time came or whose lease lapsed become claimable.
pub(crate) const PROMOTE: &str =
    "UPDATE items SET ready_rank = rank, wake_at = NULL WHERE lane = ?1 AND wake_at <= ?2";
/// The claimable heads, lowest rank first (ties in rowid order: the order queued).
pub(crate) const CANDIDATES: &str = "SELECT rowid, topic, rank FROM items \
     WHERE lane = ?1 AND ready_rank IS NOT NULL ORDER BY ready_rank";
/// The next topic after `?2` with claimable heads (one probe per topic: a skip scan).
pub(crate) const NEXT_READY_TOPIC: &str = "SELECT topic FROM items \
     WHERE lane = ?1 AND ready_rank IS NOT NULL AND topic > ?2 ORDER BY topic LIMIT 1";
/// A topic's claimable heads, lowest rank first.
pub(crate) const TOPIC_CANDIDATES: &str = "SELECT rowid, rank FROM items \
     WHERE lane = ?1 AND topic = ?2 AND ready_rank IS NOT NULL ORDER BY ready_rank LIMIT ?3";
/// Leases item `?1`; [`TAKEN`] then reads it (not `RETURNING`, which SQLite runs through a
/// temporary table).
pub(crate) const TAKE: &str = "UPDATE items SET claims = claims + 1, lease_token = ?2, \
     lease_worker = ?3, lease_expires_at = ?4, ready_rank = NULL, wake_at = MAX(due_at, ?4) \
     WHERE rowid = ?1";
/// The item [`TAKE`] leased.
pub(crate) const TAKEN: &str = concat!("SELECT ", item_columns!(), " FROM items WHERE rowid = ?1");
pub(crate) const RENEW: &str = "UPDATE items SET lease_expires_at = ?3, \
     wake_at = CASE WHEN wake_at IS NOT NULL THEN MAX(due_at, ?3) END \
     WHERE lane = ?1 AND id = ?2 AND lease_token = ?4 AND lease_expires_at > ?5";
/// The item under a live lease with this token.
pub(crate) const HELD: &str = "SELECT rowid, group_kind, group_id, seq FROM items \
     WHERE lane = ?1 AND id = ?2 AND lease_token = ?3 AND lease_expires_at > ?4";
pub(crate) const GROUP_ITEMS: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM items WHERE lane = ?1 AND status IN ",
    statuses!(),
    " AND group_kind = ?2 AND group_id = ?3 ORDER BY seq"
);
pub(crate) const STATS: &str = "SELECT COALESCE(SUM(lease_expires_at > ?2), 0), \
     COALESCE(SUM(COALESCE(lease_expires_at, 0) <= ?2 AND due_at <= ?2 \
         AND (ready_rank IS NOT NULL OR wake_at IS NOT NULL)), 0), \
     COUNT(*) FROM items WHERE lane = ?1 AND status = 'pending'";
pub(crate) const RECOVER: &str = concat!(
    "UPDATE items SET lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL, \
     ready_rank = CASE WHEN due_at <= ?1 THEN rank END, \
     wake_at = CASE WHEN due_at > ?1 THEN due_at END WHERE lane IN ",
    lanes!(),
    " AND wake_at > ?1 AND lease_expires_at > ?1"
);
pub(crate) const EXPORT: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM items WHERE (lane, id) > (?1, ?2) ORDER BY lane, id LIMIT ?3"
);

fn token_to_sql(token: LeaseToken) -> i64 {
    token.0.cast_signed()
}

fn lane_from(text: String) -> Result<Lane, Error> {
    Lane::parse(&text).ok_or_else(|| Error::InvalidStored {
        what: "queue lane",
        text,
        reason: "unknown name".into(),
    })
}

fn status_from(text: String) -> Result<ItemStatus, Error> {
    ItemStatus::parse(&text).ok_or_else(|| Error::InvalidStored {
        what: "item status",
        text,
        reason: "unknown name".into(),
    })
}

/// An item as stored, decoded on the caller's task ([`ItemRow::decode`]), not in the writer
/// thread.
#[derive(Debug)]
pub(crate) struct ItemRow {
    lane: String,
    id: String,
    group_kind: String,
    group_id: String,
    group_partition: i64,
    topic: String,
    owner: String,
    payload: String,
    seq: i64,
    status: String,
    claims: i64,
    attempts: String,
    due_at: Option<i64>,
    created_at: i64,
}

impl ItemRow {
    /// Reads the [`item_columns!`] of a row.
    pub(crate) fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            lane: row.get(0)?,
            id: row.get(1)?,
            group_kind: row.get(2)?,
            group_id: row.get(3)?,
            group_partition: row.get(4)?,
            topic: row.get(5)?,
            owner: row.get(6)?,
            payload: row.get(7)?,
            seq: row.get(8)?,
            status: row.get(9)?,
            claims: row.get(10)?,
            attempts: row.get(11)?,
            due_at: row.get(12)?,
            created_at: row.get(13)?,
        })
    }

    pub(crate) fn decode(self) -> Result<Item, Error> {
        let attempts: Vec<Attempt> = serde_json::from_str(&self.attempts).map_err(Error::Decode)?;
        Ok(Item {
            lane: lane_from(self.lane)?,
            id: self.id,
            group: ops::key_from(self.group_kind, self.group_id, self.group_partition)?,
            topic: self.topic,
            owner: ops::account_from(self.owner)?,
            payload: self.payload,
            seq: u64_from("item sequence number", self.seq)?,
            status: status_from(self.status)?,
            claims: u32_from("claim count", self.claims)?,
            attempts,
            due_at: self.due_at.map(Timestamp::from_micros),
            created_at: Timestamp::from_micros(self.created_at),
        })
    }
}

/// An item claimed by the writer, decoded into a lease on the caller's task.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) row: ItemRow,
    pub(crate) token: LeaseToken,
    pub(crate) expires_at: Timestamp,
}

/// Makes the group's oldest pending item (and only it) a claim candidate: `ready_rank` if it
/// is due and not under a live lease, else `wake_at`, when it will be.
fn refresh_head(
    conn: &Connection,
    lane: &str,
    group_kind: &str,
    group_id: &str,
    now: i64,
) -> Result<(), Error> {
    let head: Option<i64> = conn
        .prepare_cached(FIND_HEAD)?
        .query_row(params![lane, group_kind, group_id], |r| r.get(0))
        .optional()?;
    conn.prepare_cached(CLEAR_HEADS)?
        .execute(params![lane, group_kind, group_id, head])?;
    match head {
        Some(head) => set_head(conn, head, now),
        None => Ok(()),
    }
}

/// Makes item `rowid` its group's claim candidate (the caller knows that it is the head and
/// that no other item of the group is marked as one).
fn set_head(conn: &Connection, rowid: i64, now: i64) -> Result<(), Error> {
    conn.prepare_cached(SET_HEAD)?
        .execute(params![rowid, now])?;
    Ok(())
}

/// Removes an item; if it was its group's head, the next pending item (found by the statement
/// that finds the item, so that completing a job whose group holds nothing else is a seek and
/// a delete) becomes the head.
fn remove_item(conn: &Connection, lane: &str, id: &str, now: i64) -> Result<(), Error> {
    let found: Option<(i64, bool, Option<i64>)> = conn
        .prepare_cached(ITEM_TO_REMOVE)?
        .query_row(params![lane, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((rowid, head, next)) = found else {
        return Ok(());
    };
    conn.prepare_cached(DELETE_ITEM)?.execute([rowid])?;
    match (head, next) {
        (true, Some(next)) => set_head(conn, next, now),
        _ => Ok(()),
    }
}

/// The place, head status and fair-queuing rank a new item of a group would get.
fn placement(
    conn: &Connection,
    lane: &str,
    group: &Key,
    topic: &str,
    owner: &str,
) -> Result<(i64, bool, i64), Error> {
    let (pending, finished, rank): (i64, i64, i64) = conn.prepare_cached(PLACEMENT)?.query_row(
        params![lane, group.kind.as_str(), group.id, topic, owner],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok((pending.max(finished) + 1, pending == 0, rank))
}

/// Records a rank given to `owner`'s item, and with `claimed` also that it was claimed (the
/// clock, owner `''`, moves up to it). Ranks only grow, so `MAX` keeps the right one in both
/// rows.
fn record_rank(
    conn: &Connection,
    lane: &str,
    topic: &str,
    owner: &str,
    rank: i64,
    claimed: bool,
) -> Result<(), Error> {
    let sql = if claimed { RANKED_AND_CLAIMED } else { RANKED };
    conn.prepare_cached(sql)?
        .execute(params![lane, topic, owner, rank])?;
    Ok(())
}

/// The columns `(ready_rank, wake_at)` of a group head that is due at `due_at` and leased
/// until `lease_until`.
fn head_columns(
    rank: i64,
    due_at: i64,
    lease_until: Option<i64>,
    now: i64,
) -> (Option<i64>, Option<i64>) {
    let from = due_at.max(lease_until.unwrap_or(0));
    if from <= now {
        (Some(rank), None)
    } else {
        (None, Some(from))
    }
}

/// Puts an item on its lane (`Effect::Enqueue`): at the end of its group, ranked for fair
/// queuing, already leased if `claimed`. An item with the same id in the lane is replaced
/// (`replace`) or keeps its place and this one is dropped.
pub(crate) fn enqueue(conn: &Connection, item: &NewItem, now: Timestamp) -> Result<(), Error> {
    enqueue_at(conn, item, item.replace, now.as_micros())
}

fn enqueue_at(conn: &Connection, item: &NewItem, replace: bool, now: i64) -> Result<(), Error> {
    let lane = item.lane.as_str();
    let owner = item.owner.as_str();
    let (seq, head, rank) = placement(conn, lane, &item.group, &item.topic, owner)?;
    let lease_until = item.claimed.as_ref().map(|c| c.expires_at.as_micros());
    let due_at = item.run_at.as_micros();
    let (ready_rank, wake_at) = if head {
        head_columns(rank, due_at, lease_until, now)
    } else {
        (None, None)
    };
    let inserted = conn.prepare_cached(INSERT_ITEM)?.execute(params![
        lane,
        item.id,
        item.group.kind.as_str(),
        item.group.id,
        item.group.partition.0,
        item.topic,
        owner,
        item.payload,
        seq,
        i64::from(item.claimed.is_some()),
        due_at,
        now,
        rank,
        item.claimed.as_ref().map(|c| token_to_sql(c.token)),
        item.claimed.as_ref().map(|c| c.worker.as_str()),
        lease_until,
        ready_rank,
        wake_at,
    ])?;
    if inserted == 0 {
        if !replace {
            // A message id is enqueued once: the item there stays.
            return Ok(());
        }
        // The item there leaves its group (its lease ends) and this one takes its id. Its
        // group may be this one, so this item's place is computed again.
        remove_item(conn, lane, &item.id, now)?;
        return enqueue_at(conn, item, false, now);
    }
    record_rank(conn, lane, &item.topic, owner, rank, item.claimed.is_some())
}

/// Removes an item whoever holds it (`Effect::Complete`); a missing item is not an error.
pub(crate) fn complete(
    conn: &Connection,
    lane: Lane,
    id: &str,
    now: Timestamp,
) -> Result<(), Error> {
    remove_item(conn, lane.as_str(), id, now.as_micros())
}

/// Removes every item of a record, in every lane (the record is deleted).
pub(crate) fn remove_group(conn: &Connection, kind: &str, id: &str) -> Result<(), Error> {
    conn.prepare_cached(REMOVE_GROUP)?
        .execute(params![kind, id])?;
    Ok(())
}

/// Removes a record's finished items in the lanes that keep them (its data was removed). The
/// head is pending, so it stays where it is.
pub(crate) fn remove_finished(conn: &Connection, kind: &str, id: &str) -> Result<(), Error> {
    let mut delete = conn.prepare_cached(REMOVE_FINISHED)?;
    for lane in Lane::ALL.into_iter().filter(|l| l.keeps_finished()) {
        delete.execute(params![lane.as_str(), kind, id])?;
    }
    Ok(())
}

/// Claims up to `request.max` claimable items of a lane, lowest rank first (ties in the order
/// queued), each under a new lease; raises the lane's clocks to the ranks claimed.
pub(crate) fn claim(conn: &Connection, request: &ClaimRequest) -> Result<Vec<Claimed>, Error> {
    if request.max == 0 {
        return Ok(Vec::new());
    }
    let lane = request.lane.as_str();
    let now = Timestamp::now();
    let expires_at = now.plus(request.lease_for);
    // Heads whose run time came or whose lease lapsed are claimable now.
    let waking: bool = conn
        .prepare_cached(ANY_WAKING)?
        .query_row(params![lane, now.as_micros()], |r| r.get(0))?;
    if waking {
        conn.prepare_cached(PROMOTE)?
            .execute(params![lane, now.as_micros()])?;
    }
    let picked = candidates(conn, lane, request.max, &request.exclude_topics)?;
    let mut take = conn.prepare_cached(TAKE)?;
    let mut taken = conn.prepare_cached(TAKEN)?;
    let mut claimed = Vec::with_capacity(picked.len());
    let mut clocks: Vec<(String, i64)> = Vec::new();
    for (rowid, topic, rank) in picked {
        let token = LeaseToken::generate();
        take.execute(params![
            rowid,
            token_to_sql(token),
            request.worker.as_str(),
            expires_at.as_micros()
        ])?;
        let row = taken.query_row([rowid], ItemRow::read)?;
        claimed.push(Claimed {
            row,
            token,
            expires_at,
        });
        match clocks.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, highest)) => *highest = (*highest).max(rank),
            None => clocks.push((topic, rank)),
        }
    }
    let mut clock = conn.prepare_cached(CLAIMED)?;
    for (topic, rank) in clocks {
        clock.execute(params![lane, topic, rank])?;
    }
    Ok(claimed)
}

/// How many claimable items of excluded topics a claim steps over in rank order before it
/// looks topic by topic instead.
const SKIP_LIMIT: usize = 64;

/// The `(rowid, topic, rank)` of up to `max` claimable heads of `lane` not of an `excluded`
/// topic, lowest rank first (ties in the order queued).
///
/// They are read off `items_ready` in rank order, stepping over excluded topics. A backlog of
/// an excluded topic (a model at its concurrency limit) would make that walk long, so after
/// [`SKIP_LIMIT`] steps the claim instead lists the topics with claimable heads (one probe per
/// topic), reads up to `max` of each other topic off `items_ready_by_topic`, and merges them.
fn candidates(
    conn: &Connection,
    lane: &str,
    max: usize,
    excluded: &[String],
) -> Result<Vec<(i64, String, i64)>, Error> {
    let mut picked = Vec::new();
    let mut skipped = 0;
    {
        let mut stmt = conn.prepare_cached(CANDIDATES)?;
        let mut rows = stmt.query([lane])?;
        while picked.len() < max {
            let Some(row) = rows.next()? else {
                return Ok(picked);
            };
            let topic: String = row.get(1)?;
            if excluded.contains(&topic) {
                skipped += 1;
                if skipped > SKIP_LIMIT {
                    break;
                }
                continue;
            }
            picked.push((row.get(0)?, topic, row.get(2)?));
        }
    }
    if picked.len() == max {
        return Ok(picked);
    }
    let mut topics = Vec::new();
    let mut after = String::new();
    let mut next = conn.prepare_cached(NEXT_READY_TOPIC)?;
    while let Some(topic) = next
        .query_row(params![lane, after], |r| r.get::<_, String>(0))
        .optional()?
    {
        if !excluded.contains(&topic) {
            topics.push(topic.clone());
        }
        after = topic;
    }
    let mut merged: Vec<(i64, i64, String)> = Vec::new();
    let mut of_topic = conn.prepare_cached(TOPIC_CANDIDATES)?;
    for topic in topics {
        let mut rows = of_topic.query(params![lane, topic, sql_int(max)])?;
        while let Some(row) = rows.next()? {
            merged.push((row.get(1)?, row.get(0)?, topic.clone()));
        }
    }
    merged.sort_unstable_by_key(|(rank, rowid, _)| (*rank, *rowid));
    merged.truncate(max);
    Ok(merged
        .into_iter()
        .map(|(rank, rowid, topic)| (rowid, topic, rank))
        .collect())
}

/// Extends a live lease to `now + extend_by`.
pub(crate) fn renew(
    conn: &Connection,
    lease: &ItemLease,
    extend_by: Duration,
) -> Result<ItemLease, Error> {
    let now = Timestamp::now();
    let expires_at = now.plus(extend_by);
    let changed = conn.prepare_cached(RENEW)?.execute(params![
        lease.item.lane.as_str(),
        lease.item.id,
        expires_at.as_micros(),
        token_to_sql(lease.token),
        now.as_micros(),
    ])?;
    if changed == 0 {
        return Err(Error::LeaseLost);
    }
    Ok(ItemLease {
        expires_at,
        ..lease.clone()
    })
}

/// A finish, with its attempt encoded on the caller's task.
#[derive(Debug)]
pub(crate) struct FinishRequest {
    pub(crate) lane: Lane,
    pub(crate) id: String,
    pub(crate) token: LeaseToken,
    pub(crate) outcome: Outcome,
    /// The attempt as JSON.
    pub(crate) attempt: Option<String>,
}

impl FinishRequest {
    pub(crate) fn encode(lease: &ItemLease, finish: &Finish) -> Result<Self, Error> {
        Ok(Self {
            lane: lease.item.lane,
            id: lease.item.id.clone(),
            token: lease.token,
            outcome: finish.outcome,
            attempt: finish
                .attempt
                .as_ref()
                .map(|a| serde_json::to_string(a).map_err(Error::Encode))
                .transpose()?,
        })
    }
}

/// Ends a live lease with an outcome (see `QueueStore::finish`).
pub(crate) fn finish(conn: &Connection, f: &FinishRequest) -> Result<(), Error> {
    let now = Timestamp::now().as_micros();
    let lane = f.lane.as_str();
    let (rowid, group_kind, group_id, seq): (i64, String, String, i64) = conn
        .prepare_cached(HELD)?
        .query_row(params![lane, f.id, token_to_sql(f.token), now], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?
        .ok_or(Error::LeaseLost)?;
    macro_rules! attempt {
        () => {
            "attempts = CASE WHEN ?3 IS NULL THEN attempts \
             ELSE json_insert(attempts, '$[#]', json(?3)) END"
        };
    }
    match f.outcome {
        Outcome::Done | Outcome::GiveUp { .. } => {
            let status = if f.outcome == Outcome::Done {
                ItemStatus::Done
            } else {
                ItemStatus::Failed
            };
            let keep = f.lane.keeps_finished() && holds_data(conn, &group_kind, &group_id)?;
            if keep {
                conn.prepare_cached(concat!(
                    "UPDATE items SET status = ?2, due_at = NULL, lease_token = NULL, \
                     lease_worker = NULL, lease_expires_at = NULL, ",
                    attempt!(),
                    " WHERE rowid = ?1"
                ))?
                .execute(params![rowid, status.as_str(), f.attempt])?;
            } else {
                conn.prepare_cached("DELETE FROM items WHERE rowid = ?1")?
                    .execute([rowid])?;
            }
            if f.outcome == (Outcome::GiveUp { rest: true }) {
                macro_rules! later {
                    () => {
                        " WHERE lane = ?1 AND status = 'pending' AND group_kind = ?2 \
                         AND group_id = ?3 AND seq > ?4"
                    };
                }
                let sql = if keep {
                    concat!(
                        "UPDATE items SET status = 'failed', due_at = NULL, lease_token = NULL, \
                         lease_worker = NULL, lease_expires_at = NULL",
                        later!()
                    )
                } else {
                    concat!("DELETE FROM items", later!())
                };
                conn.prepare_cached(sql)?
                    .execute(params![lane, group_kind, group_id, seq])?;
            }
        }
        Outcome::Retry(_) | Outcome::Release(_) | Outcome::HandBack => {
            let at = match f.outcome {
                Outcome::Retry(at) | Outcome::Release(at) => at.as_micros(),
                _ => now,
            };
            let refund = i64::from(!matches!(f.outcome, Outcome::Retry(_)));
            conn.prepare_cached(concat!(
                "UPDATE items SET due_at = ?2, claims = MAX(claims - ?4, 0), lease_token = NULL, \
                 lease_worker = NULL, lease_expires_at = NULL, ",
                attempt!(),
                " WHERE rowid = ?1"
            ))?
            .execute(params![rowid, at, f.attempt, refund])?;
            if f.outcome == Outcome::HandBack {
                // Back in the queue at its rank: the clock its claim raised goes back below it.
                conn.prepare_cached(
                    "UPDATE queue_ranks SET rank = i.rank - 1 FROM items AS i \
                     WHERE i.rowid = ?1 AND queue_ranks.lane = i.lane \
                     AND queue_ranks.topic = i.topic AND queue_ranks.owner = '' \
                     AND queue_ranks.rank >= i.rank",
                )?
                .execute([rowid])?;
            }
        }
    }
    refresh_head(conn, lane, &group_kind, &group_id, now)
}

/// True if the record a group belongs to still holds its data.
fn holds_data(conn: &Connection, kind: &str, id: &str) -> Result<bool, Error> {
    let removed: Option<bool> = conn
        .prepare_cached("SELECT data_removed FROM records WHERE kind = ?1 AND id = ?2")?
        .query_row(params![kind, id], |r| r.get(0))
        .optional()?;
    Ok(removed == Some(false))
}

/// Makes an item pending again and due now, keeping its place, claims and attempts;
/// `NotFound` (naming the group) if the group has no such item.
pub(crate) fn requeue(conn: &Connection, lane: Lane, group: &Key, id: &str) -> Result<(), Error> {
    let now = Timestamp::now().as_micros();
    let changed = conn
        .prepare_cached(
            "UPDATE items SET status = 'pending', due_at = ?5, lease_token = NULL, \
             lease_worker = NULL, lease_expires_at = NULL \
             WHERE lane = ?1 AND id = ?2 AND group_kind = ?3 AND group_id = ?4",
        )?
        .execute(params![
            lane.as_str(),
            id,
            group.kind.as_str(),
            group.id,
            now
        ])?;
    // At most one row matches the unique `(lane, id)`, so nothing changed means nothing was
    // written.
    if changed == 0 {
        return Err(Error::NotFound(group.clone()));
    }
    refresh_head(conn, lane.as_str(), group.kind.as_str(), &group.id, now)
}

/// A group's items in a lane, in order.
pub(crate) fn items(conn: &Connection, lane: Lane, group: &Key) -> Result<Vec<ItemRow>, Error> {
    Ok(conn
        .prepare_cached(GROUP_ITEMS)?
        .query_map(
            params![lane.as_str(), group.kind.as_str(), group.id],
            ItemRow::read,
        )?
        .collect::<Result<_, _>>()?)
}

/// Counts a lane's pending items: leased (a live lease), ready (a head, due, not leased),
/// delayed (the rest).
pub(crate) fn stats(conn: &Connection, lane: Lane) -> Result<QueueStats, Error> {
    let now = Timestamp::now().as_micros();
    let (leased, ready, pending): (i64, i64, i64) = conn
        .prepare_cached(STATS)?
        .query_row(params![lane.as_str(), now], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let count = |value: i64| u64_from("item count", value);
    Ok(QueueStats {
        ready: count(ready)?,
        leased: count(leased)?,
        delayed: count(pending - ready - leased)?,
    })
}

/// Ends every live lease at open, leaving the items due as they were. Only sound when no other
/// process can hold a lease, i.e. right after taking the directory lock. A live lease on a
/// head delays it (its `wake_at` is the lease's expiry), so the waking index finds them all; a
/// lease on an item behind its head (after a redelivery of an earlier one) delays nothing yet
/// and simply lapses.
pub(crate) fn drop_all_leases(conn: &Connection) -> Result<usize, Error> {
    Ok(conn
        .prepare_cached(RECOVER)?
        .execute([Timestamp::now().as_micros()])?)
}

/// An exported item to write as it is, unleased (import), encoded on the caller's task.
#[derive(Debug)]
pub(crate) struct ImportedItem {
    pub(crate) item: Item,
    pub(crate) attempts: String,
}

impl ImportedItem {
    pub(crate) fn encode(item: &Item) -> Result<Self, Error> {
        Ok(Self {
            item: item.clone(),
            attempts: serde_json::to_string(&item.attempts).map_err(Error::Encode)?,
        })
    }
}

/// Writes an imported item in place of any with its id, at its place in its group, ranked as
/// if queued now (the memory store's `insert`), and unleased.
pub(crate) fn import(
    conn: &Connection,
    imported: &ImportedItem,
    now: Timestamp,
) -> Result<(), Error> {
    let item = &imported.item;
    let lane = item.lane.as_str();
    let now = now.as_micros();
    remove_item(conn, lane, &item.id, now)?;
    let owner = item.owner.as_str();
    let (_, _, rank) = placement(conn, lane, &item.group, &item.topic, owner)?;
    conn.prepare_cached(
        "INSERT INTO items (lane, id, group_kind, group_id, group_partition, topic, owner, \
         payload, seq, status, claims, attempts, due_at, created_at, rank) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        lane,
        item.id,
        item.group.kind.as_str(),
        item.group.id,
        item.group.partition.0,
        item.topic,
        owner,
        item.payload,
        ops::u64_to_sql(item.seq),
        item.status.as_str(),
        i64::from(item.claims),
        imported.attempts,
        item.due_at.map(Timestamp::as_micros),
        item.created_at.as_micros(),
        rank,
    ])?;
    record_rank(conn, lane, &item.topic, owner, rank, false)?;
    refresh_head(conn, lane, item.group.kind.as_str(), &item.group.id, now)
}

/// Items by `(lane, id)` after `after`, for export.
pub(crate) fn export(
    conn: &Connection,
    after: Option<(&str, &str)>,
    limit: usize,
) -> Result<Vec<ItemRow>, Error> {
    let (lane, id) = after.unwrap_or(("", ""));
    Ok(conn
        .prepare_cached(EXPORT)?
        .query_map(params![lane, id, sql_int(limit)], ItemRow::read)?
        .collect::<Result<_, _>>()?)
}

/// The lease of a claimed item, decoded on the caller's task.
pub(crate) fn lease_of(claimed: Claimed, worker: &WorkerId) -> Result<ItemLease, Error> {
    Ok(ItemLease {
        item: claimed.row.decode()?,
        worker: worker.clone(),
        token: claimed.token,
        expires_at: claimed.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_in_the_sql_are_the_stored_names() {
        let lanes: Vec<String> = Lane::ALL
            .iter()
            .map(|l| format!("'{}'", l.as_str()))
            .collect();
        assert_eq!(lanes!(), format!("({})", lanes.join(", ")));
        let statuses: Vec<String> = [ItemStatus::Pending, ItemStatus::Done, ItemStatus::Failed]
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        assert_eq!(statuses!(), format!("({})", statuses.join(", ")));
    }
}
