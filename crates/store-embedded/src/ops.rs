//! The SQL of every store operation, run on a plain connection: writes inside the writer
//! thread's group transaction, reads on a read-only connection.
//!
//! Every write checks before it writes: a refusal (not found, conflict, lease lost, unknown
//! effect) is decided before the first statement that changes anything, because the writer
//! runs a group of requests without savepoints between them.
//!
//! These functions mirror `augur_core::store::memory::MemoryStore` step by step; where they
//! differ only in representation (a job's `visible_at` column instead of an ordered set), the
//! comments say so.

use std::time::Duration;

use augur_core::store::{
    ClaimRequest, Created, Cursor, Effect, IdempotencyRecord, Job, Lease, ListQuery, Page,
    QueueStats, StreamEvent, StreamEventData,
};
use augur_core::{
    AccountId, LeaseToken, ModelName, Prediction, PredictionId, Revision, Timestamp, Versioned,
    WorkerId,
};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::Error;
use crate::outbox::{self, ImportedDelivery, NewDelivery};
use crate::writer::Ctx;

/// A prediction encoded for its row: the indexed columns plus the JSON body. Encoding happens
/// on the caller's task, so the writer thread only runs SQL.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) id: PredictionId,
    owner: AccountId,
    model: ModelName,
    status: &'static str,
    created_at: i64,
    expires_at: Option<i64>,
    data_removed: bool,
    body: String,
}

impl Record {
    pub(crate) fn encode(p: &Prediction) -> Result<Self, Error> {
        Ok(Self {
            id: p.id.clone(),
            owner: p.owner.clone(),
            model: p.model.clone(),
            status: p.status.as_str(),
            created_at: p.created_at.as_micros(),
            expires_at: p.expires_at.map(Timestamp::as_micros),
            data_removed: p.data_removed,
            body: serde_json::to_string(p).map_err(Error::Encode)?,
        })
    }
}

/// A count or limit as an SQL integer (saturating; SQLite has no unsigned integers).
fn sql_int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn revision_from(value: i64) -> Result<Revision, Error> {
    u64::try_from(value)
        .map(Revision)
        .map_err(|_| Error::OutOfRange {
            what: "revision",
            value,
        })
}

fn revision_to_sql(revision: Revision) -> i64 {
    // A revision beyond i64 cannot be stored, so it matches no row: -1 never does either.
    i64::try_from(revision.0).unwrap_or(-1)
}

fn token_to_sql(token: LeaseToken) -> i64 {
    token.0.cast_signed()
}

fn parse_id<T>(
    what: &'static str,
    text: String,
    parse: impl FnOnce(&str) -> Result<T, augur_core::InvalidId>,
) -> Result<T, Error> {
    parse(&text).map_err(|e| Error::InvalidStored {
        what,
        reason: e.reason.to_owned(),
        text,
    })
}

/// Decodes a `(revision, body)` row.
fn versioned(row: &Row<'_>) -> Result<Versioned<Prediction>, Error> {
    let revision = revision_from(row.get(0)?)?;
    let value = match row.get_ref(1)? {
        ValueRef::Text(body) => serde_json::from_slice(body).map_err(Error::Decode)?,
        other => {
            return Err(Error::InvalidStored {
                what: "prediction body",
                text: format!("{:?}", other.data_type()),
                reason: "not text".into(),
            });
        }
    };
    Ok(Versioned { value, revision })
}

/// Reads a prediction.
pub(crate) fn get(
    conn: &Connection,
    id: &PredictionId,
) -> Result<Option<Versioned<Prediction>>, Error> {
    let mut stmt = conn.prepare_cached("SELECT revision, body FROM predictions WHERE id = ?1")?;
    let mut rows = stmt.query([id.as_str()])?;
    match rows.next()? {
        Some(row) => Ok(Some(versioned(row)?)),
        None => Ok(None),
    }
}

/// The live (unexpired at `now`) idempotency key `(owner, key)`.
fn live_key(
    conn: &Connection,
    owner: &AccountId,
    key: &str,
    now: Timestamp,
) -> Result<Option<IdempotencyRecord>, Error> {
    let found = conn
        .prepare_cached(
            "SELECT fingerprint, prediction_id, expires_at FROM idempotency_keys \
             WHERE owner = ?1 AND key = ?2 AND expires_at > ?3",
        )?
        .query_row(params![owner.as_str(), key, now.as_micros()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((fingerprint, prediction_id, expires_at)) = found else {
        return Ok(None);
    };
    Ok(Some(IdempotencyRecord {
        owner: owner.clone(),
        key: key.to_owned(),
        fingerprint,
        prediction_id: parse_id("prediction id", prediction_id, PredictionId::parse)?,
        expires_at: Timestamp::from_micros(expires_at),
    }))
}

/// Inserts a prediction with its key and effects (see `Store::create`).
pub(crate) fn create(
    ctx: &mut Ctx<'_>,
    record: &Record,
    key: Option<&IdempotencyRecord>,
    effects: &[EncodedEffect],
) -> Result<Created, Error> {
    let conn = ctx.conn;
    if let Some(existing) = get(conn, &record.id)? {
        return Ok(Created::ExistingId(existing));
    }
    if let Some(key) = key {
        let now = Timestamp::now();
        if let Some(found) = live_key(conn, &key.owner, &key.key, now)? {
            let prediction = get(conn, &found.prediction_id)?;
            return Ok(Created::ExistingKey {
                record: found,
                prediction,
            });
        }
        // Replaces an expired key the sweeper has not forgotten yet.
        conn.prepare_cached(
            "INSERT OR REPLACE INTO idempotency_keys \
             (owner, key, fingerprint, prediction_id, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            key.owner.as_str(),
            key.key,
            key.fingerprint,
            key.prediction_id.as_str(),
            key.expires_at.as_micros(),
        ])?;
    }
    conn.prepare_cached(
        "INSERT INTO predictions \
         (id, owner, model, status, created_at, expires_at, data_removed, revision, body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8)",
    )?
    .execute(params![
        record.id.as_str(),
        record.owner.as_str(),
        record.model.as_str(),
        record.status,
        record.created_at,
        record.expires_at,
        record.data_removed,
        record.body,
    ])?;
    apply_effects(ctx, &record.id, Revision::FIRST, effects)?;
    Ok(Created::Inserted(Revision::FIRST))
}

/// Compare-and-set on the revision, then the effects (see `Store::update`).
pub(crate) fn update(
    ctx: &mut Ctx<'_>,
    id: &PredictionId,
    expected: Revision,
    record: &Record,
    effects: &[EncodedEffect],
) -> Result<Revision, Error> {
    let conn = ctx.conn;
    let changed = conn
        .prepare_cached(
            "UPDATE predictions SET owner = ?2, model = ?3, status = ?4, created_at = ?5, \
             expires_at = ?6, data_removed = ?7, body = ?8, revision = revision + 1 \
             WHERE id = ?1 AND revision = ?9",
        )?
        .execute(params![
            id.as_str(),
            record.owner.as_str(),
            record.model.as_str(),
            record.status,
            record.created_at,
            record.expires_at,
            record.data_removed,
            record.body,
            revision_to_sql(expected),
        ])?;
    if changed == 0 {
        let actual: Option<i64> = conn
            .prepare_cached("SELECT revision FROM predictions WHERE id = ?1")?
            .query_row([id.as_str()], |r| r.get(0))
            .optional()?;
        return Err(match actual {
            None => Error::NotFound(id.clone()),
            Some(actual) => Error::Conflict {
                expected,
                actual: revision_from(actual)?,
            },
        });
    }
    apply_effects(ctx, id, expected.next(), effects)?;
    Ok(expected.next())
}

/// A write's effect, checked and encoded on the caller's task (see [`encode_effects`]).
#[derive(Debug)]
pub(crate) enum EncodedEffect {
    EnqueueJob {
        queue: String,
        run_at: Timestamp,
    },
    EnqueueClaimed {
        queue: String,
        worker: WorkerId,
        token: LeaseToken,
        expires_at: Timestamp,
    },
    CompleteJob,
    Count {
        name: String,
        delta: i64,
    },
    EnqueueDelivery(NewDelivery),
    AppendEvents(Vec<StreamEventData>),
}

/// Encodes a write's effects, refusing the kinds this build does not know before anything is
/// sent to the writer.
pub(crate) fn encode_effects(effects: &[Effect]) -> Result<Vec<EncodedEffect>, Error> {
    effects
        .iter()
        .map(|effect| {
            Ok(match effect {
                Effect::EnqueueJob { queue, run_at } => EncodedEffect::EnqueueJob {
                    queue: queue.clone(),
                    run_at: *run_at,
                },
                Effect::EnqueueClaimed {
                    queue,
                    worker,
                    token,
                    expires_at,
                } => EncodedEffect::EnqueueClaimed {
                    queue: queue.clone(),
                    worker: worker.clone(),
                    token: *token,
                    expires_at: *expires_at,
                },
                Effect::CompleteJob => EncodedEffect::CompleteJob,
                Effect::Count { name, delta } => EncodedEffect::Count {
                    name: name.clone(),
                    delta: *delta,
                },
                Effect::EnqueueDelivery(delivery) => {
                    EncodedEffect::EnqueueDelivery(NewDelivery::encode(delivery)?)
                }
                Effect::AppendEvents(events) => EncodedEffect::AppendEvents(events.clone()),
                // `Effect` is non-exhaustive: a kind this build does not know must fail the
                // write, never be skipped.
                other => return Err(Error::UnsupportedEffect(format!("{other:?}"))),
            })
        })
        .collect()
}

/// Applies a write's effects. Counters are added to the group's deltas, written once before
/// `COMMIT`. Events are numbered `(revision, i)` with `i` counting across the write's
/// `AppendEvents` effects, so that two of them in one write cannot collide.
fn apply_effects(
    ctx: &mut Ctx<'_>,
    id: &PredictionId,
    revision: Revision,
    effects: &[EncodedEffect],
) -> Result<(), Error> {
    let mut event_index = 0;
    for effect in effects {
        match effect {
            EncodedEffect::EnqueueJob { queue, run_at } => {
                // Replaces the prediction's job, lease and attempts included.
                *ctx.seq += 1;
                ctx.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO jobs (prediction_id, queue, attempts, run_at, \
                         visible_at, seq, lease_token, lease_worker) \
                         VALUES (?1, ?2, 0, ?3, ?3, ?4, NULL, NULL)",
                    )?
                    .execute(params![id.as_str(), queue, run_at.as_micros(), *ctx.seq])?;
            }
            EncodedEffect::EnqueueClaimed {
                queue,
                worker,
                token,
                expires_at,
            } => {
                *ctx.seq += 1;
                ctx.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO jobs (prediction_id, queue, attempts, run_at, \
                         visible_at, seq, lease_token, lease_worker) \
                         VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        id.as_str(),
                        queue,
                        Timestamp::now().as_micros(),
                        expires_at.as_micros(),
                        *ctx.seq,
                        token_to_sql(*token),
                        worker.as_str(),
                    ])?;
            }
            EncodedEffect::CompleteJob => complete(ctx.conn, id)?,
            EncodedEffect::Count { name, delta } => {
                *ctx.counters.entry(name.clone()).or_default() += delta;
            }
            EncodedEffect::EnqueueDelivery(delivery) => outbox::enqueue(ctx.conn, id, delivery)?,
            EncodedEffect::AppendEvents(events) => {
                event_index = outbox::append_events(ctx.conn, id, revision, event_index, events)?;
            }
        }
    }
    Ok(())
}

/// Deletes a prediction, its job, its webhook messages and events, and the idempotency keys
/// that point at it.
pub(crate) fn delete(conn: &Connection, id: &PredictionId) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM predictions WHERE id = ?1")?
        .execute([id.as_str()])?;
    complete(conn, id)?;
    outbox::remove_all(conn, id)?;
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE prediction_id = ?1")?
        .execute([id.as_str()])?;
    Ok(())
}

/// Lists predictions newest first. The owner filter picks the `(owner, created_at, id)` index,
/// otherwise `(created_at, id)`; both serve the order and the cursor without sorting.
pub(crate) fn list(conn: &Connection, query: &ListQuery) -> Result<Page, Error> {
    let limit = query.limit.max(1);
    let mut sql = String::from("SELECT revision, body FROM predictions");
    let mut conditions: Vec<&str> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    if let Some(owner) = &query.owner {
        conditions.push("owner = ?");
        values.push(Value::Text(owner.as_str().to_owned()));
    }
    if let Some(status) = query.status {
        conditions.push("status = ?");
        values.push(Value::Text(status.as_str().to_owned()));
    }
    if let Some(after) = query.created_after {
        conditions.push("created_at >= ?");
        values.push(Value::Integer(after.as_micros()));
    }
    if let Some(before) = query.created_before {
        conditions.push("created_at < ?");
        values.push(Value::Integer(before.as_micros()));
    }
    if let Some(cursor) = &query.after {
        conditions.push("(created_at, id) < (?, ?)");
        values.push(Value::Integer(cursor.created_at.as_micros()));
        values.push(Value::Text(cursor.id.as_str().to_owned()));
    }
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
    // One more than asked, to learn whether a next page exists.
    values.push(Value::Integer(sql_int(limit).saturating_add(1)));

    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
    let mut items: Vec<Versioned<Prediction>> = Vec::with_capacity(limit.min(1024));
    let mut next = None;
    while let Some(row) = rows.next()? {
        if items.len() == limit {
            next = items.last().map(|last| Cursor {
                created_at: last.value.created_at,
                id: last.value.id.clone(),
            });
            break;
        }
        items.push(versioned(row)?);
    }
    Ok(Page { items, next })
}

/// Replaces up to `limit` expired predictions by tombstones (dropping their event logs and
/// finished webhook messages) and forgets expired keys.
pub(crate) fn expire(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<PredictionId>, Error> {
    let due: Vec<(String, String)> = conn
        .prepare_cached(
            "SELECT id, body FROM predictions \
             WHERE data_removed = 0 AND expires_at IS NOT NULL AND expires_at <= ?1 \
             ORDER BY expires_at LIMIT ?2",
        )?
        .query_map(params![now.as_micros(), sql_int(limit)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut tombstone = conn.prepare_cached(
        "UPDATE predictions SET body = ?2, data_removed = 1, revision = revision + 1 \
         WHERE id = ?1",
    )?;
    for (id, body) in &due {
        let mut p: Prediction = serde_json::from_str(body).map_err(Error::Decode)?;
        p.remove_data();
        let body = serde_json::to_string(&p).map_err(Error::Encode)?;
        tombstone.execute(params![id, body])?;
        outbox::remove_for_expiry(conn, id)?;
    }
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE expires_at <= ?1")?
        .execute([now.as_micros()])?;
    due.into_iter()
        .map(|(id, _)| {
            PredictionId::parse(&id).map_err(|e| Error::InvalidStored {
                what: "prediction id",
                text: id.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Claims up to `request.max` claimable jobs, oldest `visible_at` first (`run_at` for jobs
/// never leased or rescheduled), first in first out among equals.
pub(crate) fn claim(ctx: &mut Ctx<'_>, request: &ClaimRequest) -> Result<Vec<Lease>, Error> {
    if request.max == 0 {
        return Ok(Vec::new());
    }
    let conn = ctx.conn;
    let now = Timestamp::now();
    let expires_at = now.plus(request.lease_for);
    let mut picked: Vec<(String, String, i64, i64)> = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT prediction_id, queue, attempts, run_at FROM jobs \
             WHERE visible_at <= ?1 ORDER BY visible_at, seq",
        )?;
        let mut rows = stmt.query([now.as_micros()])?;
        while picked.len() < request.max {
            let Some(row) = rows.next()? else { break };
            let queue: String = row.get(1)?;
            if request.exclude_queues.contains(&queue) {
                continue;
            }
            picked.push((row.get(0)?, queue, row.get(2)?, row.get(3)?));
        }
    }
    let mut take = conn.prepare_cached(
        "UPDATE jobs SET attempts = attempts + 1, lease_token = ?2, lease_worker = ?3, \
         visible_at = ?4 WHERE prediction_id = ?1",
    )?;
    let mut leases = Vec::with_capacity(picked.len());
    for (id, queue, attempts, run_at) in picked {
        let token = LeaseToken::generate();
        take.execute(params![
            id,
            token_to_sql(token),
            request.worker.as_str(),
            expires_at.as_micros()
        ])?;
        let attempts = u32::try_from(attempts)
            .map_err(|_| Error::OutOfRange {
                what: "attempt count",
                value: attempts,
            })?
            .saturating_add(1);
        leases.push(Lease {
            job: Job {
                prediction_id: parse_id("prediction id", id, PredictionId::parse)?,
                queue,
                attempts,
                run_at: Timestamp::from_micros(run_at),
            },
            worker: request.worker.clone(),
            token,
            expires_at,
        });
    }
    Ok(leases)
}

/// Extends a live lease (the token must match and the lease must not have lapsed).
pub(crate) fn renew(conn: &Connection, lease: &Lease, extend_by: Duration) -> Result<Lease, Error> {
    let now = Timestamp::now();
    let expires_at = now.plus(extend_by);
    let changed = conn
        .prepare_cached(
            "UPDATE jobs SET visible_at = ?2 \
             WHERE prediction_id = ?1 AND lease_token = ?3 AND visible_at > ?4",
        )?
        .execute(params![
            lease.job.prediction_id.as_str(),
            expires_at.as_micros(),
            token_to_sql(lease.token),
            now.as_micros(),
        ])?;
    if changed == 0 {
        return Err(Error::LeaseLost);
    }
    Ok(Lease {
        expires_at,
        ..lease.clone()
    })
}

/// Ends a live lease and reschedules the job at `run_at`, keeping its attempts.
pub(crate) fn retry(conn: &Connection, lease: &Lease, run_at: Timestamp) -> Result<(), Error> {
    let now = Timestamp::now();
    let changed = conn
        .prepare_cached(
            "UPDATE jobs SET lease_token = NULL, lease_worker = NULL, run_at = ?2, visible_at = ?2 \
             WHERE prediction_id = ?1 AND lease_token = ?3 AND visible_at > ?4",
        )?
        .execute(params![
            lease.job.prediction_id.as_str(),
            run_at.as_micros(),
            token_to_sql(lease.token),
            now.as_micros(),
        ])?;
    if changed == 0 {
        return Err(Error::LeaseLost);
    }
    Ok(())
}

/// Hands a live lease back: claimable from `run_at`, the attempt refunded.
pub(crate) fn release(conn: &Connection, lease: &Lease, run_at: Timestamp) -> Result<(), Error> {
    let now = Timestamp::now();
    let changed = conn
        .prepare_cached(
            "UPDATE jobs SET lease_token = NULL, lease_worker = NULL, \
             attempts = MAX(attempts - 1, 0), run_at = ?2, visible_at = ?2 \
             WHERE prediction_id = ?1 AND lease_token = ?3 AND visible_at > ?4",
        )?
        .execute(params![
            lease.job.prediction_id.as_str(),
            run_at.as_micros(),
            token_to_sql(lease.token),
            now.as_micros(),
        ])?;
    if changed == 0 {
        return Err(Error::LeaseLost);
    }
    Ok(())
}

/// Removes a prediction's job, if any.
pub(crate) fn complete(conn: &Connection, id: &PredictionId) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM jobs WHERE prediction_id = ?1")?
        .execute([id.as_str()])?;
    Ok(())
}

/// Makes every leased job claimable at once, keeping its attempts. Only sound when no other
/// process can hold a lease, i.e. right after taking the directory lock.
pub(crate) fn drop_all_leases(conn: &Connection) -> Result<usize, Error> {
    Ok(conn.execute(
        "UPDATE jobs SET visible_at = run_at, lease_token = NULL, lease_worker = NULL \
         WHERE lease_token IS NOT NULL",
        [],
    )?)
}

/// The highest job sequence number in use (0 when there are no jobs).
pub(crate) fn max_job_seq(conn: &Connection) -> Result<i64, Error> {
    Ok(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM jobs", [], |r| r.get(0))?)
}

/// Counts jobs: ready (visible now, including lapsed leases), leased (live lease), delayed.
pub(crate) fn queue_stats(conn: &Connection) -> Result<QueueStats, Error> {
    let now = Timestamp::now().as_micros();
    let (ready, leased, delayed): (i64, i64, i64) = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(visible_at <= ?1), 0), \
             COALESCE(SUM(visible_at > ?1 AND lease_token IS NOT NULL), 0), \
             COALESCE(SUM(visible_at > ?1 AND lease_token IS NULL), 0) FROM jobs",
        )?
        .query_row([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let count = |value: i64| {
        u64::try_from(value).map_err(|_| Error::OutOfRange {
            what: "job count",
            value,
        })
    };
    Ok(QueueStats {
        ready: count(ready)?,
        leased: count(leased)?,
        delayed: count(delayed)?,
    })
}

/// Jobs in prediction-id order after `after` (migration).
pub(crate) fn list_jobs(
    conn: &Connection,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Job>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT prediction_id, queue, attempts, run_at FROM jobs \
         WHERE ?1 IS NULL OR prediction_id > ?1 ORDER BY prediction_id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, sql_int(limit.max(1))], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut jobs = Vec::new();
    for row in rows {
        let (id, queue, attempts, run_at) = row?;
        jobs.push(Job {
            prediction_id: parse_id("prediction id", id, PredictionId::parse)?,
            queue,
            attempts: u32::try_from(attempts).map_err(|_| Error::OutOfRange {
                what: "attempt count",
                value: attempts,
            })?,
            run_at: Timestamp::from_micros(run_at),
        });
    }
    Ok(jobs)
}

/// Idempotency keys in `(owner, key)` order after `after` (migration).
pub(crate) fn list_keys(
    conn: &Connection,
    after: Option<(&str, &str)>,
    limit: usize,
) -> Result<Vec<IdempotencyRecord>, Error> {
    let (owner, key) = after.unzip();
    let mut stmt = conn.prepare_cached(
        "SELECT owner, key, fingerprint, prediction_id, expires_at FROM idempotency_keys \
         WHERE ?1 IS NULL OR (owner, key) > (?1, ?2) ORDER BY owner, key LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![owner, key, sql_int(limit.max(1))], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut keys = Vec::new();
    for row in rows {
        let (owner, key, fingerprint, prediction_id, expires_at) = row?;
        keys.push(IdempotencyRecord {
            owner: parse_id("account id", owner, AccountId::parse)?,
            key,
            fingerprint,
            prediction_id: parse_id("prediction id", prediction_id, PredictionId::parse)?,
            expires_at: Timestamp::from_micros(expires_at),
        });
    }
    Ok(keys)
}

/// A record to import, encoded on the caller's task.
#[derive(Debug)]
pub(crate) enum Import {
    Prediction(Record, Revision),
    Job(Job),
    Key(IdempotencyRecord),
    Counter(String, i64),
    Delivery(ImportedDelivery),
    Event(PredictionId, StreamEvent),
}

/// Writes imported records as they are, replacing what is there.
pub(crate) fn import(ctx: &mut Ctx<'_>, records: &[Import]) -> Result<(), Error> {
    let conn = ctx.conn;
    let mut outboxes = std::collections::BTreeSet::new();
    for record in records {
        match record {
            Import::Prediction(r, revision) => {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO predictions \
                     (id, owner, model, status, created_at, expires_at, data_removed, revision, body) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    r.id.as_str(),
                    r.owner.as_str(),
                    r.model.as_str(),
                    r.status,
                    r.created_at,
                    r.expires_at,
                    r.data_removed,
                    revision_to_sql(*revision),
                    r.body,
                ])?;
            }
            Import::Job(job) => {
                *ctx.seq += 1;
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO jobs (prediction_id, queue, attempts, run_at, \
                     visible_at, seq, lease_token, lease_worker) \
                     VALUES (?1, ?2, ?3, ?4, ?4, ?5, NULL, NULL)",
                )?
                .execute(params![
                    job.prediction_id.as_str(),
                    job.queue,
                    i64::from(job.attempts),
                    job.run_at.as_micros(),
                    *ctx.seq
                ])?;
            }
            Import::Key(key) => {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO idempotency_keys \
                     (owner, key, fingerprint, prediction_id, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    key.owner.as_str(),
                    key.key,
                    key.fingerprint,
                    key.prediction_id.as_str(),
                    key.expires_at.as_micros(),
                ])?;
            }
            Import::Counter(name, value) => {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO counters (name, value) VALUES (?1, ?2)",
                )?
                .execute(params![name, value])?;
            }
            Import::Delivery(d) => {
                outbox::import_delivery(conn, d)?;
                outboxes.insert(d.prediction_id.as_str());
            }
            Import::Event(id, event) => outbox::import_event(conn, id, event)?,
        }
    }
    for id in outboxes {
        outbox::refresh_head(conn, id)?;
    }
    Ok(())
}

/// Every counter, by name.
pub(crate) fn counters(conn: &Connection) -> Result<Vec<(String, i64)>, Error> {
    Ok(conn
        .prepare_cached("SELECT name, value FROM counters ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}
