//! The Rust part of schema migration 3, run inside its transaction: version 2's tables
//! (`predictions`, `jobs`, `idempotency_keys`, `deliveries`, `events`, renamed `events_v2` by
//! the migration's SQL) move into version 3's (`records`, `items`, `events`), then go.
//! `counters` keeps its shape and its rows.
//!
//! This is Rust rather than SQL because a prediction's JSON is split into a body and the data
//! retention removes exactly as `augur_core`'s `Entity` impl does, and idempotency keys and
//! webhook messages become the domain types (`IdempotencyKey`, `Delivery`) the new code reads.
//! Queue items go in through the same function as an import, so they are ranked and their
//! groups' heads set as in any other store; no lease survives (the previous process is gone,
//! as at every open).

use augur_core::idempotency::IdempotencyKey;
use augur_core::outbox::{Delivery, Payload};
use augur_core::store::{
    Attempt, Entity, Item, ItemStatus, Key, Kind, Lane, StreamEventData, StreamEventKind,
};
use augur_core::{AccountId, Prediction, PredictionId, Revision, Timestamp, WebhookEvent};
use rusqlite::Connection;

use crate::error::Error;
use crate::ops::{self, revision_from, u32_from, u64_from};
use crate::queue::{self, ImportedItem};

fn upgrade(what: impl std::fmt::Display) -> Error {
    Error::Upgrade(what.to_string())
}

fn prediction_id(text: &str) -> Result<PredictionId, Error> {
    PredictionId::parse(text).map_err(|e| upgrade(format!("prediction id {text:?}: {e}")))
}

fn account(text: &str) -> Result<AccountId, Error> {
    AccountId::parse(text).map_err(|e| upgrade(format!("account id {text:?}: {e}")))
}

/// Moves everything of a version-2 database into the version-3 tables and drops the old ones.
pub(crate) fn from_v2(conn: &Connection) -> Result<(), Error> {
    let now = Timestamp::now();
    predictions(conn)?;
    idempotency_keys(conn)?;
    events(conn)?;
    jobs(conn, now)?;
    deliveries(conn, now)?;
    conn.execute_batch(
        "DROP TABLE predictions; DROP TABLE jobs; DROP TABLE idempotency_keys; \
         DROP TABLE deliveries; DROP TABLE events_v2;",
    )?;
    Ok(())
}

/// Each prediction becomes a record at its revision, split as `Prediction::to_record` does.
fn predictions(conn: &Connection) -> Result<(), Error> {
    let mut select = conn.prepare("SELECT revision, body FROM predictions ORDER BY rowid")?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let revision = revision_from(row.get(0)?)?;
        let body: String = row.get(1)?;
        let p: Prediction = serde_json::from_str(&body).map_err(Error::Decode)?;
        let record = p
            .to_record()
            .map_err(|e| upgrade(format!("prediction {}: {e}", p.id)))?;
        ops::replace_record(conn, &record, revision)?;
    }
    Ok(())
}

/// Each key becomes an `IdempotencyKey` record in its owner's partition. Version 2 did not
/// record when a key was made: its prediction's creation time stands in (the key was made
/// with it), or its expiry if the prediction is gone.
fn idempotency_keys(conn: &Connection) -> Result<(), Error> {
    let mut select = conn.prepare(
        "SELECT k.owner, k.key, k.fingerprint, k.prediction_id, k.expires_at, p.created_at \
         FROM idempotency_keys AS k LEFT JOIN predictions AS p ON p.id = k.prediction_id \
         ORDER BY k.owner, k.key",
    )?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let owner: String = row.get(0)?;
        let prediction: String = row.get(3)?;
        let expires_at: i64 = row.get(4)?;
        let created_at: Option<i64> = row.get(5)?;
        let key = IdempotencyKey {
            owner: account(&owner)?,
            key: row.get(1)?,
            fingerprint: row.get(2)?,
            prediction_id: prediction_id(&prediction)?,
            batch_id: None,
            run_id: None,
            created_at: Timestamp::from_micros(created_at.unwrap_or(expires_at)),
            expires_at: Timestamp::from_micros(expires_at),
        };
        let record = key
            .to_record()
            .map_err(|e| upgrade(format!("idempotency key of {owner}: {e}")))?;
        ops::replace_record(conn, &record, Revision::FIRST)?;
    }
    Ok(())
}

/// Each event goes to its prediction's log, at its position.
fn events(conn: &Connection) -> Result<(), Error> {
    let mut select =
        conn.prepare("SELECT prediction_id, revision, idx, kind, data FROM events_v2")?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let kind: String = row.get(3)?;
        let event = StreamEventData {
            kind: StreamEventKind::parse(&kind)
                .ok_or_else(|| upgrade(format!("stream event kind {kind:?}")))?,
            data: row.get(4)?,
        };
        ops::put_event(
            conn,
            &Key::new(Kind::Prediction, id),
            revision_from(row.get(1)?)?,
            u32_from("event index", row.get(2)?)?,
            &event,
        )?;
    }
    Ok(())
}

/// Each job becomes the Jobs-lane item of its prediction (the only item of its group), in the
/// order they were queued, with its claims counted; a lease is dropped.
fn jobs(conn: &Connection, now: Timestamp) -> Result<(), Error> {
    let mut select = conn.prepare(
        "SELECT j.prediction_id, j.queue, j.attempts, j.run_at, p.owner \
         FROM jobs AS j LEFT JOIN predictions AS p ON p.id = j.prediction_id ORDER BY j.seq",
    )?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let run_at = Timestamp::from_micros(row.get(3)?);
        // Version 2 removed a job with its prediction, so every job has one; should one not,
        // it stays queued as the admin's (a worker finds no prediction and completes it).
        let owner = match row.get::<_, Option<String>>(4)? {
            Some(owner) => account(&owner)?,
            None => AccountId::admin(),
        };
        let item = Item {
            lane: Lane::Jobs,
            group: prediction_id(&id)?.key(),
            id,
            topic: row.get(1)?,
            owner,
            payload: String::new(),
            seq: 1,
            status: ItemStatus::Pending,
            claims: u32_from("job attempts", row.get(2)?)?,
            attempts: Vec::new(),
            due_at: Some(run_at),
            created_at: run_at,
        };
        queue::import(
            conn,
            &ImportedItem {
                item,
                attempts: "[]".into(),
            },
            now,
        )?;
    }
    Ok(())
}

/// Each webhook message becomes a Webhooks-lane item of its prediction at its place, with its
/// payload as the `augur_core::outbox::Delivery` it is now, its status and attempts (each
/// attempt was a claim); a lease is dropped.
fn deliveries(conn: &Connection, now: Timestamp) -> Result<(), Error> {
    let mut select = conn.prepare(
        "SELECT prediction_id, seq, id, url, event, payload, created_at, status, attempts, \
         next_attempt_at FROM deliveries ORDER BY created_at, prediction_id, seq",
    )?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let prediction: String = row.get(0)?;
        let event: String = row.get(4)?;
        let payload: String = row.get(5)?;
        let created_at = Timestamp::from_micros(row.get(6)?);
        let status: String = row.get(7)?;
        let attempts: String = row.get(8)?;
        let p: Box<Prediction> = serde_json::from_str(&payload).map_err(Error::Decode)?;
        if p.id != prediction_id(&prediction)? {
            return Err(upgrade(format!(
                "a message of prediction {prediction} is about {}",
                p.id
            )));
        }
        let delivery = Delivery {
            id: row.get(2)?,
            url: row.get(3)?,
            event: serde_json::from_value::<WebhookEvent>(serde_json::Value::String(event.clone()))
                .map_err(|_| upgrade(format!("webhook event {event:?}")))?,
            created_at,
            payload: Payload::Prediction(p),
        };
        let tried: Vec<Attempt> = serde_json::from_str(&attempts).map_err(Error::Decode)?;
        let item = Item {
            lane: Lane::Webhooks,
            id: delivery.id.clone(),
            group: delivery.payload.group(),
            topic: String::new(),
            owner: delivery.payload.owner().clone(),
            payload: serde_json::to_string(&delivery).map_err(Error::Encode)?,
            seq: u64_from("delivery sequence number", row.get(1)?)?,
            status: match status.as_str() {
                "pending" => ItemStatus::Pending,
                "delivered" => ItemStatus::Done,
                "failed" => ItemStatus::Failed,
                _ => return Err(upgrade(format!("delivery status {status:?}"))),
            },
            claims: u32::try_from(tried.len()).unwrap_or(u32::MAX),
            attempts: Vec::new(),
            due_at: None,
            created_at,
        };
        let next_attempt_at: Option<i64> = row.get(9)?;
        let item = Item {
            // A pending message was due at its next attempt; one without is due now.
            due_at: (item.status == ItemStatus::Pending)
                .then(|| next_attempt_at.map_or(created_at, Timestamp::from_micros)),
            ..item
        };
        queue::import(conn, &ImportedItem { item, attempts }, now)?;
    }
    Ok(())
}
