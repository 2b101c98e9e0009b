//! The SQL of records, event logs, counters and ledgers, run on a plain connection: writes
//! inside the writer thread's group transaction, reads on a read-only connection. The queue's
//! SQL is in `queue`, export and import in `transfer`.
//!
//! Every write decides a refusal (exists, not found, conflict, insufficient credits, a counter
//! at its limit) before the first statement that changes anything, because the writer runs a
//! group of requests without savepoints between them. A write of one operation and no guarded
//! effect lets that operation's statement be its own check (an `INSERT … DO NOTHING` or an
//! `UPDATE … WHERE revision = ?` that changes nothing has written nothing); any other write
//! reads what it checks first.
//!
//! These functions mirror `augur_core::store::memory::MemoryStore` step by step; where they
//! differ only in representation, the comments say so.

use std::collections::{HashMap, HashSet};

use augur_core::store::{
    Balance, Cursor, Effect, Key, Kind, LedgerEntry, ListQuery, OnExpiry, Op, Partition, Posted,
    Reason, Record, StreamEvent, StreamEventData, StreamEventKind, Write, Written,
};
use augur_core::{AccountId, Revision, Timestamp};
use rusqlite::types::Value;
use rusqlite::{CachedStatement, Connection, OptionalExtension, Row, params};

use crate::error::Error;
use crate::queue;
use crate::writer::Ctx;

/// A count or limit as an SQL integer (saturating; SQLite has no unsigned integers).
pub(crate) fn sql_int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An unsigned position (revision, sequence number) as an SQL integer, saturating.
pub(crate) fn u64_to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn u64_from(what: &'static str, value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::OutOfRange { what, value })
}

pub(crate) fn u32_from(what: &'static str, value: i64) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| Error::OutOfRange { what, value })
}

pub(crate) fn revision_from(value: i64) -> Result<Revision, Error> {
    u64_from("revision", value).map(Revision)
}

/// A revision as an SQL integer. One beyond `i64` cannot be stored, so it matches no row: -1
/// never does either.
pub(crate) fn revision_to_sql(revision: Revision) -> i64 {
    i64::try_from(revision.0).unwrap_or(-1)
}

pub(crate) fn partition_from(value: i64) -> Result<Partition, Error> {
    u8::try_from(value)
        .map(Partition)
        .map_err(|_| Error::OutOfRange {
            what: "partition",
            value,
        })
}

fn invalid(what: &'static str, text: String, reason: impl Into<String>) -> Error {
    Error::InvalidStored {
        what,
        text,
        reason: reason.into(),
    }
}

pub(crate) fn kind_from(text: String) -> Result<Kind, Error> {
    Kind::parse(&text).ok_or_else(|| invalid("record kind", text, "unknown name"))
}

pub(crate) fn account_from(text: String) -> Result<AccountId, Error> {
    AccountId::parse(&text).map_err(|e| invalid("account id", text, e.reason))
}

pub(crate) fn key_from(kind: String, id: String, partition: i64) -> Result<Key, Error> {
    Ok(Key {
        kind: kind_from(kind)?,
        id,
        partition: partition_from(partition)?,
    })
}

fn stream_kind_from(text: String) -> Result<StreamEventKind, Error> {
    StreamEventKind::parse(&text).ok_or_else(|| invalid("stream event kind", text, "unknown name"))
}

fn reason_from(text: String) -> Result<Reason, Error> {
    Reason::parse(&text).ok_or_else(|| invalid("ledger reason", text, "unknown name"))
}

/// The time from which a record reads as absent: its expiry, for kinds deleted on expiry.
fn gone_at(record: &Record) -> Option<i64> {
    match record.key.kind.on_expiry() {
        OnExpiry::Delete => record.expires_at.map(Timestamp::as_micros),
        OnExpiry::RemoveData => None,
    }
}

/// When retention still has to act on a record (the memory store's `expiry_of`).
fn sweep_at(record: &Record) -> Option<i64> {
    let pending = match record.key.kind.on_expiry() {
        OnExpiry::RemoveData => !record.data_removed,
        OnExpiry::Delete => true,
    };
    record
        .expires_at
        .filter(|_| pending)
        .map(Timestamp::as_micros)
}

/// The columns of a record as read, in [`read_record`]'s order. A macro, so that statements
/// naming them are `const`s (`concat!`), prepared without building a string per call.
macro_rules! record_columns {
    () => {
        "kind, id, partition, owner, created_at, status, parent, expires_at, data_removed, \
         revision, body, data"
    };
}
pub(crate) use record_columns;

/// Reads the [`record_columns!`] of a row.
pub(crate) fn read_record(row: &Row<'_>) -> Result<(Record, Revision), Error> {
    let record = Record {
        key: key_from(row.get(0)?, row.get(1)?, row.get(2)?)?,
        owner: account_from(row.get(3)?)?,
        created_at: Timestamp::from_micros(row.get(4)?),
        status: row.get(5)?,
        parent: row.get(6)?,
        expires_at: row.get::<_, Option<i64>>(7)?.map(Timestamp::from_micros),
        data_removed: row.get(8)?,
        body: row.get(10)?,
        data: row.get(11)?,
    };
    Ok((record, revision_from(row.get(9)?)?))
}

/// Runs `stmt` (an `INSERT` of every column of `records`) for `record` at `revision`.
pub(crate) fn put_record(
    stmt: &mut CachedStatement<'_>,
    record: &Record,
    revision: i64,
) -> Result<usize, Error> {
    Ok(stmt.execute(params![
        record.key.kind.as_str(),
        record.key.id,
        record.key.partition.0,
        record.owner.as_str(),
        record.created_at.as_micros(),
        record.status,
        record.parent,
        record.expires_at.map(Timestamp::as_micros),
        record.data_removed,
        revision,
        record.body,
        record.data,
        gone_at(record),
        sweep_at(record),
    ])?)
}

macro_rules! insert_record {
    ($verb:literal, $tail:literal) => {
        concat!(
            $verb,
            " INTO records (kind, id, partition, owner, created_at, status, parent, expires_at, \
             data_removed, revision, body, data, gone_at, sweep_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            $tail
        )
    };
}

/// Inserts a record if its key is free; 0 if it is taken (nothing written).
fn insert_new(conn: &Connection, record: &Record) -> Result<usize, Error> {
    let mut stmt = conn.prepare_cached(insert_record!(
        "INSERT",
        " ON CONFLICT (kind, id) DO NOTHING"
    ))?;
    put_record(&mut stmt, record, 1)
}

/// Writes a record at `revision`, replacing the row of its key (import).
pub(crate) fn replace_record(
    conn: &Connection,
    record: &Record,
    revision: Revision,
) -> Result<(), Error> {
    let mut stmt = conn.prepare_cached(insert_record!("INSERT OR REPLACE", ""))?;
    put_record(&mut stmt, record, revision_to_sql(revision))?;
    Ok(())
}

/// Replaces every column of the record with `record`'s key, at `revision`; 0 if there is none.
fn overwrite(conn: &Connection, record: &Record, revision: Revision) -> Result<usize, Error> {
    Ok(conn
        .prepare_cached(
            "UPDATE records SET partition = ?3, owner = ?4, created_at = ?5, status = ?6, \
             parent = ?7, expires_at = ?8, data_removed = ?9, revision = ?10, body = ?11, \
             data = ?12, gone_at = ?13, sweep_at = ?14 WHERE kind = ?1 AND id = ?2",
        )?
        .execute(params![
            record.key.kind.as_str(),
            record.key.id,
            record.key.partition.0,
            record.owner.as_str(),
            record.created_at.as_micros(),
            record.status,
            record.parent,
            record.expires_at.map(Timestamp::as_micros),
            record.data_removed,
            revision_to_sql(revision),
            record.body,
            record.data,
            gone_at(record),
            sweep_at(record),
        ])?)
}

/// The compare-and-set of an update that keeps the record's owner, creation time, parent and
/// partition, the usual case: it sets only the columns that change, so SQLite leaves the
/// listing indexes on the unchanged ones alone. 0 if the record is not at `expected`, absent,
/// or changes one of those (nothing written).
fn update_in_place(
    conn: &Connection,
    record: &Record,
    expected: Revision,
    now: i64,
) -> Result<usize, Error> {
    Ok(conn
        .prepare_cached(
            "UPDATE records SET status = ?5, expires_at = ?6, data_removed = ?7, body = ?8, \
             data = ?9, gone_at = ?10, sweep_at = ?11, revision = revision + 1 \
             WHERE kind = ?1 AND id = ?2 AND revision = ?3 \
             AND (gone_at IS NULL OR gone_at > ?4) AND partition = ?12 AND owner = ?13 \
             AND created_at = ?14 AND parent IS ?15",
        )?
        .execute(params![
            record.key.kind.as_str(),
            record.key.id,
            revision_to_sql(expected),
            now,
            record.status,
            record.expires_at.map(Timestamp::as_micros),
            record.data_removed,
            record.body,
            record.data,
            gone_at(record),
            sweep_at(record),
            record.key.partition.0,
            record.owner.as_str(),
            record.created_at.as_micros(),
            record.parent,
        ])?)
}

/// What a record's key holds before a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    /// No record.
    Absent,
    /// A record that reads as absent (a kind deleted on expiry, past its expiry): an insert
    /// replaces it, with its items and events.
    Gone,
    /// A record of another account than the write's: for an update, as good as absent.
    Theirs,
    /// A record of the write's account at this revision.
    Present(Revision),
}

fn find(conn: &Connection, key: &Key, account: &str, now: i64) -> Result<Found, Error> {
    let row: Option<(i64, Option<i64>, String)> = conn
        .prepare_cached("SELECT revision, gone_at, owner FROM records WHERE kind = ?1 AND id = ?2")?
        .query_row(params![key.kind.as_str(), key.id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    Ok(match row {
        None => Found::Absent,
        Some((_, Some(gone), _)) if gone <= now => Found::Gone,
        Some((_, _, owner)) if owner != account => Found::Theirs,
        Some((revision, _, _)) => Found::Present(revision_from(revision)?),
    })
}

/// The refusal of operation `op` given what its key holds, if any.
fn refusal(op: &Op, found: Found) -> Option<Error> {
    match (op, found) {
        (Op::Insert(r), Found::Present(_) | Found::Theirs) => Some(Error::Exists(r.key.clone())),
        (Op::Update { record, .. }, Found::Absent | Found::Gone | Found::Theirs) => {
            Some(Error::NotFound(record.key.clone()))
        }
        (Op::Update { record, expected }, Found::Present(actual)) if actual != *expected => {
            Some(Error::Conflict {
                key: record.key.clone(),
                expected: *expected,
                actual,
            })
        }
        _ => None,
    }
}

/// Removes a record with its queue items (every lane) and its event log.
pub(crate) fn remove(conn: &Connection, kind: &str, id: &str) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM records WHERE kind = ?1 AND id = ?2")?
        .execute(params![kind, id])?;
    queue::remove_group(conn, kind, id)?;
    conn.prepare_cached("DELETE FROM events WHERE stream_kind = ?1 AND stream_id = ?2")?
        .execute(params![kind, id])?;
    Ok(())
}

/// What the guards of a write's effects decided.
struct Guards {
    /// Which effects to apply, in order (a ledger entry posted before is skipped).
    apply: Vec<bool>,
    /// The account's ledger totals and last entry before the write, if it posts anything.
    ledger: Option<(Balance, i64)>,
}

fn ledger_totals(conn: &Connection, account: &AccountId) -> Result<(Balance, i64), Error> {
    let row = conn
        .prepare_cached("SELECT balance, reserved, seq FROM ledger_totals WHERE account = ?1")?
        .query_row([account.as_str()], |r| {
            Ok((
                Balance {
                    balance: r.get(0)?,
                    reserved: r.get(1)?,
                },
                r.get(2)?,
            ))
        })
        .optional()?;
    Ok(row.unwrap_or_default())
}

fn posted_before(conn: &Connection, entry: &LedgerEntry) -> Result<bool, Error> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM ledger WHERE account = ?1 AND id = ?2")?
        .exists(params![entry.account.as_str(), entry.id])?)
}

/// The stored value of a counter plus what the group added so far.
fn counter_value(ctx: &Ctx<'_>, name: &str) -> Result<i64, Error> {
    let stored: Option<i64> = ctx
        .conn
        .prepare_cached("SELECT value FROM counters WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(stored.unwrap_or(0) + ctx.counters.get(name).copied().unwrap_or(0))
}

/// Checks the effects' guards as the memory store's `check_guards` does: a repeated ledger
/// entry is skipped; entries that lower what the account can spend must leave it at zero or
/// more; a limited counter may not pass its limit through a positive delta.
fn check_guards(ctx: &Ctx<'_>, write: &Write) -> Result<Guards, Error> {
    let mut guards = Guards {
        apply: Vec::with_capacity(write.effects.len()),
        ledger: None,
    };
    let mut running: Option<Balance> = None;
    let mut needed = 0i64;
    let mut seen: HashSet<&str> = HashSet::new();
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for effect in &write.effects {
        guards.apply.push(true);
        match effect {
            Effect::Post(entry) => {
                // `Write::check` made every entry the write's account's.
                if posted_before(ctx.conn, entry)? || !seen.insert(entry.id.as_str()) {
                    *guards.apply.last_mut().expect("pushed") = false;
                    continue;
                }
                let (before, _) = match guards.ledger {
                    Some(state) => state,
                    None => *guards
                        .ledger
                        .insert(ledger_totals(ctx.conn, &entry.account)?),
                };
                let now = running.get_or_insert(before);
                *now = now.after(entry);
                if entry.available_delta() < 0 {
                    needed -= entry.available_delta();
                    if now.available() < 0 {
                        return Err(Error::InsufficientCredits {
                            account: entry.account.clone(),
                            available: before.available(),
                            needed,
                        });
                    }
                }
            }
            Effect::Count {
                name,
                delta,
                limit: Some(limit),
            } => {
                let value = match counts.get_mut(name.as_str()) {
                    Some(value) => value,
                    None => counts
                        .entry(name.as_str())
                        .or_insert(counter_value(ctx, name)?),
                };
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
    Ok(guards)
}

/// Commits a checked [`Write`] (`Write::check` ran on the caller's task): its operations'
/// preconditions in order, then its effects' guards, then the operations and effects.
pub(crate) fn write(ctx: &mut Ctx<'_>, write: &Write) -> Result<Written, Error> {
    let conn = ctx.conn;
    let now = Timestamp::now();
    let micros = now.as_micros();
    let guarded = write
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Post(_) | Effect::Count { limit: Some(_), .. }));
    // With one operation and no guard, the operation's own statement decides its refusal
    // before anything is written. Otherwise every check reads first.
    let checked = write.ops.len() > 1 || guarded;
    let mut found = Vec::new();
    let mut guards = None;
    if checked {
        for op in &write.ops {
            let f = match op {
                // A delete has no precondition.
                Op::Delete(_) => Found::Absent,
                Op::Insert(_) | Op::Update { .. } => {
                    find(conn, op.key(), write.account.as_str(), micros)?
                }
            };
            if let Some(refused) = refusal(op, f) {
                return Err(refused);
            }
            found.push(f);
        }
        guards = Some(check_guards(ctx, write)?);
    }

    let mut written = Written {
        revisions: Vec::with_capacity(write.ops.len()),
        skipped_entries: Vec::new(),
    };
    for (i, op) in write.ops.iter().enumerate() {
        let revision = match op {
            Op::Insert(record) => {
                insert(conn, record, found.get(i).copied(), micros)?;
                Some(Revision::FIRST)
            }
            Op::Update { record, expected } => {
                if checked {
                    // Checked above: the record was there at `expected`. As in the memory
                    // store, operations on one key in one write are each checked against the
                    // state before the write and applied as they come, so an earlier delete
                    // in this write may have removed it: then it is put back.
                    if overwrite(conn, record, expected.next())? == 0 {
                        replace_record(conn, record, expected.next())?;
                    }
                } else if update_in_place(conn, record, *expected, micros)? == 0 {
                    let f = find(conn, &record.key, write.account.as_str(), micros)?;
                    if let Some(refused) = refusal(op, f) {
                        return Err(refused);
                    }
                    // At `expected`, but its owner, creation time, parent or partition change.
                    overwrite(conn, record, expected.next())?;
                }
                Some(expected.next())
            }
            Op::Delete(key) => {
                // Another account's record is left alone.
                if find(conn, key, write.account.as_str(), micros)? != Found::Theirs {
                    remove(conn, key.kind.as_str(), &key.id)?;
                }
                None
            }
        };
        written.revisions.push(revision);
    }

    let mut ledger = guards.as_ref().and_then(|g| g.ledger);
    let apply = guards.as_ref().map(|g| g.apply.as_slice());
    // Events of one write are numbered across all its `AppendEvents` for the record.
    let mut next_index: HashMap<(Kind, &str), u32> = HashMap::new();
    for (i, effect) in write.effects.iter().enumerate() {
        if apply.is_some_and(|a| !a[i]) {
            if let Effect::Post(entry) = effect {
                written.skipped_entries.push(entry.id.clone());
            }
            continue;
        }
        match effect {
            Effect::Enqueue(item) => queue::enqueue(conn, item, now)?,
            Effect::Complete { lane, id } => queue::complete(conn, *lane, id, now)?,
            Effect::Count { name, delta, .. } => {
                *ctx.counters.entry(name.clone()).or_default() += delta;
            }
            Effect::AppendEvents { stream, events } => {
                let revision = write.revision_of(stream).ok_or(Error::Internal(
                    "events for a record the write does not write",
                ))?;
                let index = next_index
                    .entry((stream.kind, stream.id.as_str()))
                    .or_default();
                *index = append_events(conn, stream, revision, *index, events)?;
            }
            Effect::Post(entry) => {
                let (totals, seq) = ledger
                    .as_mut()
                    .ok_or(Error::Internal("a ledger entry the guards did not check"))?;
                *seq += 1;
                *totals = totals.after(entry);
                insert_entry(conn, entry, *seq, *totals, false)?;
            }
        }
    }
    if let Some((totals, seq)) = ledger
        && write.effects.iter().any(|e| matches!(e, Effect::Post(_)))
    {
        set_totals(conn, &write.account, totals, seq)?;
    }
    Ok(written)
}

/// Inserts a record at revision 1. `found` is what the checks saw (`None` when the insert
/// checks itself). As in the memory store, whatever still holds the key is replaced whole, its
/// items and events removed: a record that reads as absent, or (in a write of several
/// operations) one an earlier operation of the same write put there.
fn insert(conn: &Connection, record: &Record, found: Option<Found>, now: i64) -> Result<(), Error> {
    let (kind, id) = (record.key.kind.as_str(), record.key.id.as_str());
    if found == Some(Found::Gone) {
        remove(conn, kind, id)?;
    }
    if insert_new(conn, record)? == 1 {
        return Ok(());
    }
    // Nothing was written.
    match found {
        Some(_) => remove(conn, kind, id)?,
        None => match find(conn, &record.key, record.owner.as_str(), now)? {
            Found::Gone => remove(conn, kind, id)?,
            _ => return Err(Error::Exists(record.key.clone())),
        },
    }
    if insert_new(conn, record)? == 1 {
        Ok(())
    } else {
        Err(Error::Internal(
            "an insert found its key taken after removing it",
        ))
    }
}

/// Appends `events` to `stream`'s log at `(revision, first_index + i)` and returns the next
/// free index of the write.
fn append_events(
    conn: &Connection,
    stream: &Key,
    revision: Revision,
    first_index: u32,
    events: &[StreamEventData],
) -> Result<u32, Error> {
    let mut index = first_index;
    for event in events {
        put_event(conn, stream, revision, index, event)?;
        index = index.saturating_add(1);
    }
    Ok(index)
}

/// Writes an event at its position, replacing what is there.
pub(crate) fn put_event(
    conn: &Connection,
    stream: &Key,
    revision: Revision,
    index: u32,
    event: &StreamEventData,
) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO events \
         (stream_kind, stream_id, stream_partition, revision, idx, kind, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        stream.kind.as_str(),
        stream.id,
        stream.partition.0,
        revision_to_sql(revision),
        index,
        event.kind.as_str(),
        event.data,
    ])?;
    Ok(())
}

/// Writes a ledger entry at `seq` with the totals after it (`replace`: whatever holds its
/// place or its id goes, for import).
pub(crate) fn insert_entry(
    conn: &Connection,
    entry: &LedgerEntry,
    seq: i64,
    after: Balance,
    replace: bool,
) -> Result<(), Error> {
    macro_rules! insert_entry {
        ($verb:literal) => {
            concat!(
                $verb,
                " INTO ledger (account, seq, id, delta, held, reason, reference, memo, at, \
                 balance, reserved) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            )
        };
    }
    let mut stmt = if replace {
        conn.prepare_cached(insert_entry!("INSERT OR REPLACE"))?
    } else {
        conn.prepare_cached(insert_entry!("INSERT"))?
    };
    stmt.execute(params![
        entry.account.as_str(),
        seq,
        entry.id,
        entry.delta,
        entry.held,
        entry.reason.as_str(),
        entry.reference,
        entry.memo,
        entry.at.as_micros(),
        after.balance,
        after.reserved,
    ])?;
    Ok(())
}

pub(crate) fn set_totals(
    conn: &Connection,
    account: &AccountId,
    totals: Balance,
    seq: i64,
) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO ledger_totals (account, balance, reserved, seq) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (account) DO UPDATE SET balance = excluded.balance, \
         reserved = excluded.reserved, seq = excluded.seq",
    )?
    .execute(params![
        account.as_str(),
        totals.balance,
        totals.reserved,
        seq
    ])?;
    Ok(())
}

pub(crate) const GET_RECORD: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM records WHERE kind = ?1 AND id = ?2 AND (gone_at IS NULL OR gone_at > ?3)"
);

/// Reads a record; `None` if there is none or it reads as absent at `now`.
pub(crate) fn get(
    conn: &Connection,
    key: &Key,
    now: Timestamp,
) -> Result<Option<(Record, Revision)>, Error> {
    let mut stmt = conn.prepare_cached(GET_RECORD)?;
    let mut rows = stmt.query(params![key.kind.as_str(), key.id, now.as_micros()])?;
    match rows.next()? {
        Some(row) => Ok(Some(read_record(row)?)),
        None => Ok(None),
    }
}

/// Records with their revisions, as read.
pub(crate) type Rows = Vec<(Record, Revision)>;

/// Lists records newest first. The index is chosen by the filters the query names (parent,
/// then owner and status, then owner, else creation time), with `INDEXED BY`, so the plan
/// never depends on statistics; each serves the order and the cursor without a sort, and the
/// filters it does not hold are checked on the rows it walks.
pub(crate) fn list(
    conn: &Connection,
    query: &ListQuery,
    now: Timestamp,
) -> Result<(Rows, Option<Cursor>), Error> {
    let limit = query.limit.max(1);
    let index = match (&query.parent, &query.owner, &query.status) {
        (Some(_), _, _) => "records_by_parent",
        (None, Some(_), Some(_)) => "records_by_owner_status",
        (None, Some(_), None) => "records_by_owner",
        (None, None, _) => "records_by_created",
    };
    let mut sql = format!(
        "SELECT {} FROM records INDEXED BY {index} WHERE kind = ?",
        record_columns!()
    );
    let mut values: Vec<Value> = vec![Value::Text(query.kind.as_str().to_owned())];
    if let Some(parent) = &query.parent {
        sql.push_str(" AND parent = ?");
        values.push(Value::Text(parent.clone()));
    }
    if let Some(owner) = &query.owner {
        sql.push_str(" AND owner = ?");
        values.push(Value::Text(owner.as_str().to_owned()));
    }
    if let Some(status) = &query.status {
        sql.push_str(" AND status = ?");
        values.push(Value::Text(status.clone()));
    }
    if let Some(after) = query.created_after {
        sql.push_str(" AND created_at >= ?");
        values.push(Value::Integer(after.as_micros()));
    }
    if let Some(before) = query.created_before {
        sql.push_str(" AND created_at < ?");
        values.push(Value::Integer(before.as_micros()));
    }
    let backward = query.after.as_ref().is_some_and(|c| c.backward);
    if let Some(cursor) = &query.after {
        sql.push_str(if backward {
            " AND (created_at, id) > (?, ?)"
        } else {
            " AND (created_at, id) < (?, ?)"
        });
        values.push(Value::Integer(cursor.created_at.as_micros()));
        values.push(Value::Text(cursor.id.clone()));
    }
    // Outward from the position: newest first forward, oldest first backward.
    sql.push_str(if backward {
        " AND (gone_at IS NULL OR gone_at > ?) ORDER BY created_at ASC, id ASC LIMIT ?"
    } else {
        " AND (gone_at IS NULL OR gone_at > ?) ORDER BY created_at DESC, id DESC LIMIT ?"
    });
    values.push(Value::Integer(now.as_micros()));
    // One more than asked, to learn whether a next page exists.
    values.push(Value::Integer(sql_int(limit).saturating_add(1)));

    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
    let mut items: Rows = Vec::with_capacity(limit.min(1024));
    let mut next = None;
    while let Some(row) = rows.next()? {
        if items.len() == limit {
            next = items.last().map(|(last, _)| {
                if backward {
                    Cursor::before(last)
                } else {
                    Cursor::after(last)
                }
            });
            break;
        }
        items.push(read_record(row)?);
    }
    if backward {
        items.reverse();
    }
    Ok((items, next))
}

/// Applies retention to up to `limit` due records: tombstones (dropping their event logs and
/// the finished items of lanes that keep them) or deletes, by [`Kind::on_expiry`].
pub(crate) fn expire(conn: &Connection, now: Timestamp, limit: usize) -> Result<Vec<Key>, Error> {
    let due: Vec<(String, String, i64)> = conn
        .prepare_cached(
            "SELECT kind, id, partition FROM records WHERE sweep_at <= ?1 \
             ORDER BY sweep_at LIMIT ?2",
        )?
        .query_map(params![now.as_micros(), sql_int(limit)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut keys = Vec::with_capacity(due.len());
    for (kind, id, partition) in due {
        let key = key_from(kind, id, partition)?;
        let (kind, id) = (key.kind.as_str(), key.id.as_str());
        match key.kind.on_expiry() {
            OnExpiry::RemoveData => {
                conn.prepare_cached(
                    "UPDATE records SET data = NULL, data_removed = 1, sweep_at = NULL, \
                     revision = revision + 1 WHERE kind = ?1 AND id = ?2",
                )?
                .execute(params![kind, id])?;
                conn.prepare_cached(
                    "DELETE FROM events WHERE stream_kind = ?1 AND stream_id = ?2",
                )?
                .execute(params![kind, id])?;
                queue::remove_finished(conn, kind, id)?;
            }
            OnExpiry::Delete => remove(conn, kind, id)?,
        }
        keys.push(key);
    }
    Ok(keys)
}

/// A record's events after `after` (from the start if `None`), in order, at most `limit`.
pub(crate) fn read_events(
    conn: &Connection,
    stream: &Key,
    after: Option<(Revision, u32)>,
    limit: usize,
) -> Result<Vec<StreamEvent>, Error> {
    // Positions start at (1, 0), so (0, -1) is before all of them.
    let (revision, index) = after.map_or((0, -1), |(r, i)| (u64_to_sql(r.0), i64::from(i)));
    let mut stmt = conn.prepare_cached(
        "SELECT revision, idx, kind, data FROM events \
         WHERE stream_kind = ?1 AND stream_id = ?2 AND (revision, idx) > (?3, ?4) \
         ORDER BY revision, idx LIMIT ?5",
    )?;
    let mut rows = stmt.query(params![
        stream.kind.as_str(),
        stream.id,
        revision,
        index,
        sql_int(limit.max(1))
    ])?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        events.push(read_event(row, 0)?);
    }
    Ok(events)
}

/// Reads `revision, idx, kind, data` from column `at` on.
pub(crate) fn read_event(row: &Row<'_>, at: usize) -> Result<StreamEvent, Error> {
    Ok(StreamEvent {
        revision: revision_from(row.get(at)?)?,
        index: u32_from("event index", row.get(at + 1)?)?,
        event: StreamEventData {
            kind: stream_kind_from(row.get(at + 2)?)?,
            data: row.get(at + 3)?,
        },
    })
}

/// An account's totals.
pub(crate) fn balance(conn: &Connection, account: &AccountId) -> Result<Balance, Error> {
    Ok(ledger_totals(conn, account)?.0)
}

/// The columns of a ledger entry as read, in [`read_posted`]'s order.
macro_rules! ledger_columns {
    () => {
        "account, seq, id, delta, held, reason, reference, memo, at, balance, reserved"
    };
}
pub(crate) use ledger_columns;

pub(crate) fn read_posted(row: &Row<'_>) -> Result<Posted, Error> {
    Ok(Posted {
        seq: u64_from("ledger sequence number", row.get(1)?)?,
        entry: LedgerEntry {
            account: account_from(row.get(0)?)?,
            id: row.get(2)?,
            delta: row.get(3)?,
            held: row.get(4)?,
            reason: reason_from(row.get(5)?)?,
            reference: row.get(6)?,
            memo: row.get(7)?,
            at: Timestamp::from_micros(row.get(8)?),
        },
        after: Balance {
            balance: row.get(9)?,
            reserved: row.get(10)?,
        },
    })
}

/// An account's entries before `before`, newest first.
pub(crate) fn ledger(
    conn: &Connection,
    account: &AccountId,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<Posted>, Error> {
    let before = before.map_or(i64::MAX, u64_to_sql);
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        ledger_columns!(),
        " FROM ledger WHERE account = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
    ))?;
    let mut rows = stmt.query(params![account.as_str(), before, sql_int(limit.max(1))])?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        entries.push(read_posted(row)?);
    }
    Ok(entries)
}

/// Every counter, by name.
pub(crate) fn counters(conn: &Connection) -> Result<Vec<(String, i64)>, Error> {
    Ok(conn
        .prepare_cached("SELECT name, value FROM counters ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}
