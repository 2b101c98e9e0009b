//! The SQL of the webhook outbox (`deliveries`) and the per-prediction event log (`events`):
//! enqueueing and appending inside a prediction write, claims, finishes and redeliveries in the
//! writer thread, listing and reading on a read connection, and the cleanup that expiry and
//! delete do. The prediction writes themselves live in `ops`.
//!
//! Like `ops`, every write checks before it writes, and these functions mirror
//! `augur_core::store::memory::MemoryStore`. The one difference in representation is the
//! `claimable_at` column: only the head of each outbox (its oldest pending message) has one,
//! `max(next_attempt_at, lease_expires_at)`, so a claim reads the due heads off one partial
//! index and never walks the messages queued behind a head that is waiting for a retry.

use std::time::Duration;

use augur_core::store::{
    Attempt, Delivery, DeliveryOutcome, DeliveryState, DeliveryStatus, StreamEvent,
    StreamEventData, StreamEventKind,
};
use augur_core::{LeaseToken, PredictionId, Revision, Timestamp, WebhookEvent, WorkerId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::Error;

/// An unsigned position (sequence number, revision, index) as an SQL integer, saturating.
fn position_to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn position_from(what: &'static str, value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::OutOfRange { what, value })
}

fn status_to_sql(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Failed => "failed",
    }
}

fn status_from(text: String) -> Result<DeliveryStatus, Error> {
    Ok(match text.as_str() {
        "pending" => DeliveryStatus::Pending,
        "delivered" => DeliveryStatus::Delivered,
        "failed" => DeliveryStatus::Failed,
        _ => return Err(invalid("delivery status", text)),
    })
}

fn event_to_sql(event: WebhookEvent) -> &'static str {
    match event {
        WebhookEvent::Start => "start",
        WebhookEvent::Output => "output",
        WebhookEvent::Logs => "logs",
        WebhookEvent::Completed => "completed",
    }
}

fn event_from(text: String) -> Result<WebhookEvent, Error> {
    Ok(match text.as_str() {
        "start" => WebhookEvent::Start,
        "output" => WebhookEvent::Output,
        "logs" => WebhookEvent::Logs,
        "completed" => WebhookEvent::Completed,
        _ => return Err(invalid("webhook event", text)),
    })
}

fn kind_from(text: String) -> Result<StreamEventKind, Error> {
    Ok(match text.as_str() {
        "output" => StreamEventKind::Output,
        "logs" => StreamEventKind::Logs,
        "error" => StreamEventKind::Error,
        "done" => StreamEventKind::Done,
        _ => return Err(invalid("stream event kind", text)),
    })
}

fn invalid(what: &'static str, text: String) -> Error {
    Error::InvalidStored {
        what,
        text,
        reason: "unknown name".into(),
    }
}

/// A message to enqueue, encoded on the caller's task.
#[derive(Debug)]
pub(crate) struct NewDelivery {
    id: String,
    url: String,
    event: &'static str,
    payload: String,
    created_at: i64,
}

impl NewDelivery {
    pub(crate) fn encode(d: &Delivery) -> Result<Self, Error> {
        Ok(Self {
            id: d.id.clone(),
            url: d.url.clone(),
            event: event_to_sql(d.event),
            payload: serde_json::to_string(&d.payload).map_err(Error::Encode)?,
            created_at: d.created_at.as_micros(),
        })
    }
}

/// A message with its history, encoded for import on the caller's task.
#[derive(Debug)]
pub(crate) struct ImportedDelivery {
    pub(crate) prediction_id: PredictionId,
    seq: i64,
    message: NewDelivery,
    status: &'static str,
    attempts: String,
    next_attempt_at: Option<i64>,
}

impl ImportedDelivery {
    pub(crate) fn encode(state: &DeliveryState) -> Result<Self, Error> {
        Ok(Self {
            prediction_id: state.delivery.prediction_id.clone(),
            seq: position_to_sql(state.seq),
            message: NewDelivery::encode(&state.delivery)?,
            status: status_to_sql(state.status),
            attempts: serde_json::to_string(&state.attempts).map_err(Error::Encode)?,
            next_attempt_at: state.next_attempt_at.map(Timestamp::as_micros),
        })
    }
}

/// The columns of a message as read, decoded on the caller's task (see [`StoredDelivery::decode`]).
const DELIVERY_COLUMNS: &str =
    "prediction_id, seq, id, url, event, payload, created_at, status, attempts, next_attempt_at";

/// A message row as stored.
#[derive(Debug)]
pub(crate) struct StoredDelivery {
    prediction_id: String,
    seq: i64,
    id: String,
    url: String,
    event: String,
    payload: String,
    created_at: i64,
    status: String,
    attempts: String,
    next_attempt_at: Option<i64>,
}

impl StoredDelivery {
    /// Reads the [`DELIVERY_COLUMNS`] of a row.
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            prediction_id: row.get(0)?,
            seq: row.get(1)?,
            id: row.get(2)?,
            url: row.get(3)?,
            event: row.get(4)?,
            payload: row.get(5)?,
            created_at: row.get(6)?,
            status: row.get(7)?,
            attempts: row.get(8)?,
            next_attempt_at: row.get(9)?,
        })
    }

    pub(crate) fn decode(self) -> Result<DeliveryState, Error> {
        let prediction_id =
            PredictionId::parse(&self.prediction_id).map_err(|e| Error::InvalidStored {
                what: "prediction id",
                reason: e.reason.to_owned(),
                text: self.prediction_id.clone(),
            })?;
        let attempts: Vec<Attempt> = serde_json::from_str(&self.attempts).map_err(Error::Decode)?;
        Ok(DeliveryState {
            delivery: Delivery {
                id: self.id,
                prediction_id,
                url: self.url,
                event: event_from(self.event)?,
                payload: serde_json::from_str(&self.payload).map_err(Error::Decode)?,
                created_at: Timestamp::from_micros(self.created_at),
            },
            seq: position_from("delivery sequence number", self.seq)?,
            status: status_from(self.status)?,
            attempts,
            next_attempt_at: self.next_attempt_at.map(Timestamp::from_micros),
        })
    }
}

/// A message claimed by the writer, decoded into a lease on the caller's task.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) row: StoredDelivery,
    pub(crate) token: LeaseToken,
    pub(crate) expires_at: Timestamp,
}

/// Recomputes which message of `id`'s outbox is claimable and from when: its oldest pending
/// message, at `max(next_attempt_at, lease_expires_at)`; no other. Called after every change
/// that can move the head (a finish, a redelivery, an import).
pub(crate) fn refresh_head(conn: &Connection, id: &str) -> Result<(), Error> {
    // At most one row per prediction has `claimable_at`: the index on it finds it directly.
    conn.prepare_cached(
        "UPDATE deliveries SET claimable_at = NULL \
         WHERE prediction_id = ?1 AND claimable_at IS NOT NULL",
    )?
    .execute([id])?;
    conn.prepare_cached(
        "UPDATE deliveries \
         SET claimable_at = MAX(COALESCE(next_attempt_at, 0), COALESCE(lease_expires_at, 0)) \
         WHERE prediction_id = ?1 AND seq = (SELECT MIN(seq) FROM deliveries \
             WHERE prediction_id = ?1 AND status = 'pending')",
    )?
    .execute([id])?;
    Ok(())
}

/// Puts a message at the end of `id`'s outbox, due now (`Effect::EnqueueDelivery`). It is the
/// head, claimable at once, if nothing else of the prediction is pending.
///
/// Message ids are unique per prediction (they name a revision and an event): a second
/// message with an id already in the outbox is the same message, and is not added again.
pub(crate) fn enqueue(conn: &Connection, id: &PredictionId, d: &NewDelivery) -> Result<(), Error> {
    let now = Timestamp::now().as_micros();
    conn.prepare_cached(
        "INSERT INTO deliveries (prediction_id, seq, id, url, event, payload, created_at, \
             status, attempts, next_attempt_at, claimable_at) \
         SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6, 'pending', '[]', ?7, \
             CASE WHEN EXISTS (SELECT 1 FROM deliveries \
                 WHERE prediction_id = ?1 AND status = 'pending') THEN NULL ELSE ?7 END \
         FROM deliveries WHERE prediction_id = ?1 \
         ON CONFLICT (prediction_id, id) DO NOTHING",
    )?
    .execute(params![
        id.as_str(),
        d.id,
        d.url,
        d.event,
        d.payload,
        d.created_at,
        now
    ])?;
    Ok(())
}

/// Appends `events` to `id`'s log at `(revision, first_index + i)` (`Effect::AppendEvents`) and
/// returns the next free index of the write.
pub(crate) fn append_events(
    conn: &Connection,
    id: &PredictionId,
    revision: Revision,
    first_index: u32,
    events: &[StreamEventData],
) -> Result<u32, Error> {
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO events (prediction_id, revision, idx, kind, data) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut index = first_index;
    for event in events {
        insert.execute(params![
            id.as_str(),
            position_to_sql(revision.0),
            index,
            event.kind.as_str(),
            event.data
        ])?;
        index = index.saturating_add(1);
    }
    Ok(index)
}

/// What expiry removes besides the prediction's data: its event log and its finished messages.
/// Pending messages stay and still go out (see [`finish`]).
pub(crate) fn remove_for_expiry(conn: &Connection, id: &str) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM events WHERE prediction_id = ?1")?
        .execute([id])?;
    conn.prepare_cached("DELETE FROM deliveries WHERE prediction_id = ?1 AND status <> 'pending'")?
        .execute([id])?;
    Ok(())
}

/// Removes every message and event of a deleted prediction.
pub(crate) fn remove_all(conn: &Connection, id: &PredictionId) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM deliveries WHERE prediction_id = ?1")?
        .execute([id.as_str()])?;
    conn.prepare_cached("DELETE FROM events WHERE prediction_id = ?1")?
        .execute([id.as_str()])?;
    Ok(())
}

/// Claims up to `max` outbox heads that are due and not under a live lease, earliest first.
pub(crate) fn claim(
    conn: &Connection,
    worker: &WorkerId,
    lease_for: Duration,
    max: usize,
) -> Result<Vec<Claimed>, Error> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let now = Timestamp::now();
    let expires_at = now.plus(lease_for);
    let heads: Vec<StoredDelivery> = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries \
             WHERE claimable_at <= ?1 ORDER BY claimable_at LIMIT ?2"
        ))?
        .query_map(
            params![now.as_micros(), i64::try_from(max).unwrap_or(i64::MAX)],
            StoredDelivery::read,
        )?
        .collect::<Result<_, _>>()?;
    let mut take = conn.prepare_cached(
        "UPDATE deliveries SET lease_token = ?3, lease_worker = ?4, lease_expires_at = ?5, \
         claimable_at = ?5 WHERE prediction_id = ?1 AND seq = ?2",
    )?;
    let mut claimed = Vec::with_capacity(heads.len());
    for row in heads {
        let token = LeaseToken::generate();
        take.execute(params![
            row.prediction_id,
            row.seq,
            token.0.cast_signed(),
            worker.as_str(),
            expires_at.as_micros(),
        ])?;
        claimed.push(Claimed {
            row,
            token,
            expires_at,
        });
    }
    Ok(claimed)
}

/// A claimed message's identity and lease, and the attempt to record, encoded on the caller's
/// task.
#[derive(Debug)]
pub(crate) struct Finish {
    pub(crate) prediction_id: PredictionId,
    pub(crate) delivery_id: String,
    pub(crate) token: LeaseToken,
    pub(crate) attempt: String,
    pub(crate) outcome: DeliveryOutcome,
}

impl Finish {
    pub(crate) fn encode(
        lease: &augur_core::store::DeliveryLease,
        attempt: &Attempt,
        outcome: DeliveryOutcome,
    ) -> Result<Self, Error> {
        Ok(Self {
            prediction_id: lease.state.delivery.prediction_id.clone(),
            delivery_id: lease.state.delivery.id.clone(),
            token: lease.token,
            attempt: serde_json::to_string(attempt).map_err(Error::Encode)?,
            outcome,
        })
    }
}

/// Records an attempt under a live lease and applies its outcome (see `Store::finish_delivery`).
/// Once a prediction's data is removed, its finished messages are dropped.
pub(crate) fn finish(conn: &Connection, f: &Finish) -> Result<(), Error> {
    let now = Timestamp::now().as_micros();
    let id = f.prediction_id.as_str();
    let seq: i64 = conn
        .prepare_cached(
            "SELECT seq FROM deliveries WHERE prediction_id = ?1 AND id = ?2 \
             AND status = 'pending' AND lease_token = ?3 AND lease_expires_at > ?4",
        )?
        .query_row(
            params![id, f.delivery_id, f.token.0.cast_signed(), now],
            |r| r.get(0),
        )
        .optional()?
        .ok_or(Error::LeaseLost)?;
    let (status, next_attempt_at) = match f.outcome {
        DeliveryOutcome::Delivered => (DeliveryStatus::Delivered, None),
        DeliveryOutcome::RetryAt(at) => (DeliveryStatus::Pending, Some(at.as_micros())),
        DeliveryOutcome::GiveUp { .. } => (DeliveryStatus::Failed, None),
    };
    conn.prepare_cached(
        "UPDATE deliveries SET status = ?3, next_attempt_at = ?4, \
         attempts = json_insert(attempts, '$[#]', json(?5)), \
         lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL, claimable_at = NULL \
         WHERE prediction_id = ?1 AND seq = ?2",
    )?
    .execute(params![
        id,
        seq,
        status_to_sql(status),
        next_attempt_at,
        f.attempt
    ])?;
    if let DeliveryOutcome::GiveUp { drop_rest: true } = f.outcome {
        conn.prepare_cached(
            "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, \
             lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL, \
             claimable_at = NULL \
             WHERE prediction_id = ?1 AND seq > ?2 AND status = 'pending'",
        )?
        .execute(params![id, seq])?;
    }
    let data_removed: Option<bool> = conn
        .prepare_cached("SELECT data_removed FROM predictions WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    if data_removed.unwrap_or(true) {
        // Retention ran while it was pending: keep no data once it is done.
        conn.prepare_cached(
            "DELETE FROM deliveries WHERE prediction_id = ?1 AND status <> 'pending'",
        )?
        .execute([id])?;
    }
    refresh_head(conn, id)
}

/// Makes a message pending and due now, keeping its id and attempts; `NotFound` if `id` has no
/// message `delivery_id`.
pub(crate) fn redeliver(
    conn: &Connection,
    id: &PredictionId,
    delivery_id: &str,
) -> Result<(), Error> {
    let changed = conn
        .prepare_cached(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = ?3, \
             lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL \
             WHERE prediction_id = ?1 AND id = ?2",
        )?
        .execute(params![
            id.as_str(),
            delivery_id,
            Timestamp::now().as_micros()
        ])?;
    // At most one row matches the unique `(prediction_id, id)`, so nothing changed means
    // nothing was written.
    if changed == 0 {
        return Err(Error::NotFound(id.clone()));
    }
    refresh_head(conn, id.as_str())
}

/// Writes an imported message as it is, not leased, replacing the same message (by id) or
/// the one at its place. The caller refreshes the outbox's head afterwards ([`refresh_head`]).
pub(crate) fn import_delivery(conn: &Connection, d: &ImportedDelivery) -> Result<(), Error> {
    // `OR REPLACE` removes whatever row holds the same `(prediction_id, seq)` or
    // `(prediction_id, id)`.
    conn.prepare_cached(
        "INSERT OR REPLACE INTO deliveries (prediction_id, seq, id, url, event, payload, \
             created_at, status, attempts, next_attempt_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        d.prediction_id.as_str(),
        d.seq,
        d.message.id,
        d.message.url,
        d.message.event,
        d.message.payload,
        d.message.created_at,
        d.status,
        d.attempts,
        d.next_attempt_at,
    ])?;
    Ok(())
}

/// Writes an imported event at its position, replacing what is there.
pub(crate) fn import_event(
    conn: &Connection,
    id: &PredictionId,
    event: &StreamEvent,
) -> Result<(), Error> {
    append_events(
        conn,
        id,
        event.revision,
        event.index,
        std::slice::from_ref(&event.event),
    )?;
    Ok(())
}

/// Ends every delivery lease, leaving the messages due as they were. Only sound when no other
/// process can hold a lease, i.e. right after taking the directory lock.
pub(crate) fn drop_all_leases(conn: &Connection) -> Result<usize, Error> {
    // A live lease is on a head (`claimable_at` is its expiry, in the future), so the claim
    // index finds them all. A lapsed lease needs no clearing: it no longer delays anything.
    Ok(conn
        .prepare_cached(
            "UPDATE deliveries SET claimable_at = COALESCE(next_attempt_at, 0), \
             lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL \
             WHERE claimable_at > ?1 AND lease_token IS NOT NULL",
        )?
        .execute([Timestamp::now().as_micros()])?)
}

/// A prediction's messages in order, with their attempts.
pub(crate) fn list(conn: &Connection, id: &PredictionId) -> Result<Vec<DeliveryState>, Error> {
    let rows: Vec<StoredDelivery> = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE prediction_id = ?1 ORDER BY seq"
        ))?
        .query_map([id.as_str()], StoredDelivery::read)?
        .collect::<Result<_, _>>()?;
    rows.into_iter().map(StoredDelivery::decode).collect()
}

/// A prediction's events after `after` (from the start if `None`), in order, at most `limit`.
pub(crate) fn read_events(
    conn: &Connection,
    id: &PredictionId,
    after: Option<(Revision, u32)>,
    limit: usize,
) -> Result<Vec<StreamEvent>, Error> {
    // Positions start at (1, 0), so (0, -1) is before all of them.
    let (revision, index) = after.map_or((0, -1), |(r, i)| (position_to_sql(r.0), i64::from(i)));
    let mut stmt = conn.prepare_cached(
        "SELECT revision, idx, kind, data FROM events \
         WHERE prediction_id = ?1 AND (revision, idx) > (?2, ?3) \
         ORDER BY revision, idx LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![
            id.as_str(),
            revision,
            index,
            i64::try_from(limit.max(1)).unwrap_or(i64::MAX)
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        },
    )?;
    let mut events = Vec::new();
    for row in rows {
        let (revision, index, kind, data) = row?;
        events.push(StreamEvent {
            revision: Revision(position_from("event revision", revision)?),
            index: u32::try_from(index).map_err(|_| Error::OutOfRange {
                what: "event index",
                value: index,
            })?,
            event: StreamEventData {
                kind: kind_from(kind)?,
                data,
            },
        });
    }
    Ok(events)
}
