//! The webhook outbox and the event log: how messages, attempts and events are stored (rows,
//! JSON, U+0000 escaping), and the operations on them that are not part of a prediction write
//! (claim, finish, list, redeliver, read).
//!
//! A message's payload (the prediction) is JSONB as serde writes it, its attempts a JSONB
//! array of `{at, status, error, duration_ms}`; both read well in psql. PostgreSQL cannot
//! store U+0000 in `text` or JSONB: a message whose id, url or payload holds it is stored with
//! all three escaped as prediction rows are (`codec::escape`) and `escaped` set; an attempt
//! holding it is escaped on its own and marked inside its object (it is appended later, to a
//! row that may or may not be escaped); an event's data likewise, with its row's `escaped`.

use std::time::Duration;

use augur_core::store::{
    Attempt, Delivery, DeliveryLease, DeliveryOutcome, DeliveryState, DeliveryStatus, StreamEvent,
    StreamEventData,
};
use augur_core::{LeaseToken, PredictionId, Revision, WorkerId};
use serde_json::Value;
use tokio_postgres::Row;

use crate::codec::{
    ESCAPED, Interval, Ts, column, escape, from_name, json_holds_nul, map_json_text, name_of,
    parse_id, revision_from_sql, revision_to_sql, sql_int, token_to_sql, unescape,
};
use crate::error::Error;
use crate::sql;
use crate::store::{Param, PostgresStore, pipeline};

/// A message encoded for its row, as enqueued or imported.
#[derive(Debug)]
pub(crate) struct DeliveryRow {
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) event: String,
    pub(crate) payload: Value,
    pub(crate) created_at: Ts,
    pub(crate) escaped: bool,
}

impl DeliveryRow {
    /// Encodes a message: its payload as serde writes it, all escaped if any holds U+0000.
    pub(crate) fn encode(d: &Delivery) -> Result<Self, Error> {
        let mut payload = serde_json::to_value(&*d.payload).map_err(Error::Encode)?;
        let escaped = d.id.contains('\0') || d.url.contains('\0') || json_holds_nul(&payload);
        let (id, url) = if escaped {
            map_json_text(&mut payload, &escape);
            (escape(&d.id), escape(&d.url))
        } else {
            (d.id.clone(), d.url.clone())
        };
        Ok(Self {
            id,
            url,
            event: name_of(serde_json::to_value(d.event))?,
            payload,
            created_at: Ts(d.created_at),
            escaped,
        })
    }
}

/// A write's new messages, as the arrays [`sql::ENQUEUE_DELIVERIES`] takes.
#[derive(Debug, Default)]
pub(crate) struct NewDeliveries {
    pub(crate) ids: Vec<String>,
    pub(crate) urls: Vec<String>,
    pub(crate) events: Vec<String>,
    pub(crate) payloads: Vec<Value>,
    pub(crate) created_at: Vec<Ts>,
    pub(crate) escaped: Vec<bool>,
}

impl NewDeliveries {
    /// Adds a message, unless the write already enqueues one with its id.
    pub(crate) fn push(&mut self, d: &Delivery) -> Result<(), Error> {
        let row = DeliveryRow::encode(d)?;
        if self.ids.contains(&row.id) {
            return Ok(());
        }
        self.ids.push(row.id);
        self.urls.push(row.url);
        self.events.push(row.event);
        self.payloads.push(row.payload);
        self.created_at.push(row.created_at);
        self.escaped.push(row.escaped);
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The parameters `$2` … `$7` of [`sql::ENQUEUE_DELIVERIES`].
    pub(crate) fn params(&self) -> [Param<'_>; 6] {
        [
            &self.ids,
            &self.urls,
            &self.events,
            &self.payloads,
            &self.created_at,
            &self.escaped,
        ]
    }
}

/// An event's `(kind, data, escaped)` columns.
pub(crate) fn encode_event(event: &StreamEventData) -> (String, String, bool) {
    let kind = event.kind.as_str().to_owned();
    if event.data.contains('\0') {
        (kind, escape(&event.data), true)
    } else {
        (kind, event.data.clone(), false)
    }
}

/// A write's new events, as the arrays [`sql::APPEND_EVENTS`] takes. All the write's
/// `AppendEvents` effects go into one list, numbered from 0.
#[derive(Debug, Default)]
pub(crate) struct NewEvents {
    pub(crate) kinds: Vec<String>,
    pub(crate) data: Vec<String>,
    pub(crate) escaped: Vec<bool>,
}

impl NewEvents {
    pub(crate) fn push(&mut self, event: &StreamEventData) {
        let (kind, data, escaped) = encode_event(event);
        self.kinds.push(kind);
        self.data.push(data);
        self.escaped.push(escaped);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The parameters `$3` … `$5` of [`sql::APPEND_EVENTS`].
    pub(crate) fn params(&self) -> [Param<'_>; 3] {
        [&self.kinds, &self.data, &self.escaped]
    }
}

/// An attempt as a JSON object, escaped and marked if it holds U+0000.
pub(crate) fn encode_attempt(attempt: &Attempt) -> Result<Value, Error> {
    let mut value = serde_json::to_value(attempt).map_err(Error::Encode)?;
    if json_holds_nul(&value) {
        map_json_text(&mut value, &escape);
        if let Value::Object(map) = &mut value {
            map.insert(ESCAPED.into(), Value::Bool(true));
        }
    }
    Ok(value)
}

/// A message's attempts, as [`encode_attempt`] wrote them.
pub(crate) fn encode_attempts(attempts: &[Attempt]) -> Result<Value, Error> {
    Ok(Value::Array(
        attempts
            .iter()
            .map(encode_attempt)
            .collect::<Result<_, _>>()?,
    ))
}

fn decode_attempts(value: Value) -> Result<Vec<Attempt>, Error> {
    let Value::Array(items) = value else {
        return Err(Error::decode("delivery attempts", "not an array"));
    };
    items
        .into_iter()
        .map(|mut item| {
            if let Value::Object(map) = &mut item
                && map.remove(ESCAPED) == Some(Value::Bool(true))
            {
                map_json_text(&mut item, &unescape);
            }
            serde_json::from_value(item).map_err(|e| Error::decode("delivery attempt", e))
        })
        .collect()
}

/// A message's `seq` as `bigint`; one beyond it matches no row.
pub(crate) fn seq_to_sql(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(-1)
}

/// A delivery status's column value.
pub(crate) fn status_name(status: DeliveryStatus) -> Result<String, Error> {
    name_of(serde_json::to_value(status))
}

/// Decodes a message selected as [`sql::LIST_DELIVERIES`] does (starting at column `at`).
pub(crate) fn delivery_from_row(row: &Row, at: usize) -> Result<DeliveryState, Error> {
    let escaped: bool = column(row, at + 10, "delivery escaped")?;
    let text = |i: usize, what: &'static str| -> Result<String, Error> {
        let text: String = column(row, at + i, what)?;
        Ok(if escaped { unescape(&text) } else { text })
    };
    let prediction_id = parse_id(
        "delivery prediction id",
        &column::<String>(row, at, "delivery prediction id")?,
        PredictionId::parse,
    )?;
    let seq: i64 = column(row, at + 1, "delivery seq")?;
    let mut payload: Value = column(row, at + 5, "delivery payload")?;
    if escaped {
        map_json_text(&mut payload, &unescape);
    }
    let delivery = Delivery {
        id: text(2, "delivery id")?,
        prediction_id,
        url: text(3, "delivery url")?,
        event: from_name(
            "delivery event",
            column(row, at + 4, "delivery event")?,
            serde_json::from_value,
        )?,
        payload: Box::new(
            serde_json::from_value(payload).map_err(|e| Error::decode("delivery payload", e))?,
        ),
        created_at: column::<Ts>(row, at + 6, "delivery created_at")?.0,
    };
    Ok(DeliveryState {
        delivery,
        seq: u64::try_from(seq).map_err(|_| Error::decode("delivery seq", seq))?,
        status: from_name(
            "delivery status",
            column(row, at + 7, "delivery status")?,
            serde_json::from_value,
        )?,
        attempts: decode_attempts(column(row, at + 8, "delivery attempts")?)?,
        next_attempt_at: column::<Option<Ts>>(row, at + 9, "delivery next_attempt_at")?
            .map(|t| t.0),
    })
}

/// Decodes a row of [`sql::READ_EVENTS`].
fn event_from_row(row: &Row) -> Result<StreamEvent, Error> {
    let index: i32 = column(row, 1, "event index")?;
    let data: String = column(row, 3, "event data")?;
    let escaped: bool = column(row, 4, "event escaped")?;
    Ok(StreamEvent {
        revision: revision_from_sql(column(row, 0, "event revision")?)?,
        index: u32::try_from(index).map_err(|_| Error::decode("event index", index))?,
        event: StreamEventData {
            kind: from_name(
                "event kind",
                column(row, 2, "event kind")?,
                serde_json::from_value,
            )?,
            data: if escaped { unescape(&data) } else { data },
        },
    })
}

impl PostgresStore {
    pub(crate) async fn claim_deliveries_inner(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
    ) -> Result<Vec<DeliveryLease>, Error> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql::CLAIM_DELIVERIES).await?;
        let rows = client
            .query(
                &stmt,
                &[&sql_int(max), &worker.as_str(), &Interval(lease_for)],
            )
            .await?;
        let mut leases = Vec::with_capacity(rows.len());
        for row in &rows {
            let lease = DeliveryLease {
                state: delivery_from_row(row, 0)?,
                worker: worker.clone(),
                token: LeaseToken(column::<i64>(row, 11, "delivery lease token")?.cast_unsigned()),
                expires_at: column::<Ts>(row, 12, "delivery lease expiry")?.0,
            };
            let picked_at: Ts = column(row, 13, "delivery visible_at")?;
            leases.push((
                (picked_at.0, lease.state.delivery.prediction_id.clone()),
                lease,
            ));
        }
        // In the order they were picked.
        leases.sort_by(|(a, _), (b, _)| a.cmp(b));
        Ok(leases.into_iter().map(|(_, lease)| lease).collect())
    }

    pub(crate) async fn finish_delivery_inner(
        &self,
        lease: &DeliveryLease,
        attempt: &Attempt,
        outcome: DeliveryOutcome,
    ) -> Result<(), Error> {
        let id = lease.state.delivery.prediction_id.as_str();
        let seq = seq_to_sql(lease.state.seq);
        let token = token_to_sql(lease.token);
        let attempt = encode_attempt(attempt)?;
        let (status, next_attempt_at, drop_rest) = match outcome {
            DeliveryOutcome::Delivered => (DeliveryStatus::Delivered, None, false),
            DeliveryOutcome::RetryAt(at) => (DeliveryStatus::Pending, Some(Ts(at)), false),
            DeliveryOutcome::GiveUp { drop_rest } => (DeliveryStatus::Failed, None, drop_rest),
        };
        let status = status_name(status)?;

        let mut client = self.client().await?;
        let lock = client.prepare_cached(sql::LOCK_PREDICTION).await?;
        let finish = client.prepare_cached(sql::FINISH_DELIVERY).await?;
        let rest = client.prepare_cached(sql::DROP_REST).await?;
        let rehead = client.prepare_cached(sql::REHEAD).await?;
        let drop_finished = client.prepare_cached(sql::DROP_FINISHED_IF_REMOVED).await?;
        let finish_params: [Param<'_>; 6] =
            [&id, &seq, &token, &attempt, &status, &next_attempt_at];
        let rest_params: [Param<'_>; 2] = [&id, &seq];
        let id_param: [Param<'_>; 1] = [&id];

        let txn = client.transaction().await?;
        let mut steps: Vec<(&tokio_postgres::Statement, &[Param<'_>])> =
            vec![(&lock, &id_param), (&finish, &finish_params)];
        if drop_rest {
            steps.push((&rest, &rest_params));
        }
        steps.push((&rehead, &id_param));
        steps.push((&drop_finished, &id_param));
        let results = pipeline(&txn, &steps).await?;
        if results[1].is_empty() {
            txn.rollback().await?;
            return Err(Error::LeaseLost);
        }
        txn.commit().await?;
        Ok(())
    }

    pub(crate) async fn list_deliveries_inner(
        &self,
        id: &PredictionId,
    ) -> Result<Vec<DeliveryState>, Error> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql::LIST_DELIVERIES).await?;
        let rows = client.query(&stmt, &[&id.as_str()]).await?;
        rows.iter().map(|row| delivery_from_row(row, 0)).collect()
    }

    pub(crate) async fn redeliver_inner(
        &self,
        id: &PredictionId,
        delivery_id: &str,
    ) -> Result<(), Error> {
        let pid = id.as_str();
        let escaped_id = escape(delivery_id);
        // An id holding U+0000 can only be stored escaped (and cannot be sent unescaped).
        let plain_id = (!delivery_id.contains('\0')).then_some(delivery_id);
        let mut client = self.client().await?;
        let lock = client.prepare_cached(sql::LOCK_PREDICTION).await?;
        let redeliver = client.prepare_cached(sql::REDELIVER).await?;
        let rehead = client.prepare_cached(sql::REHEAD).await?;
        let id_param: [Param<'_>; 1] = [&pid];
        let redeliver_params: [Param<'_>; 3] = [&pid, &plain_id, &escaped_id];
        let txn = client.transaction().await?;
        let results = pipeline(
            &txn,
            &[
                (&lock, &id_param),
                (&redeliver, &redeliver_params),
                (&rehead, &id_param),
            ],
        )
        .await?;
        if results[1].is_empty() {
            txn.rollback().await?;
            return Err(Error::NotFound(id.clone()));
        }
        txn.commit().await?;
        Ok(())
    }

    pub(crate) async fn read_events_inner(
        &self,
        id: &PredictionId,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> Result<Vec<StreamEvent>, Error> {
        let (revision, index) = match after {
            None => (-1, -1),
            // Beyond any stored revision: nothing comes after it.
            Some((revision, _)) if revision_to_sql(revision) < 0 => return Ok(Vec::new()),
            // No stored index exceeds `i32::MAX` (import refuses them).
            Some((revision, index)) => (
                revision_to_sql(revision),
                i32::try_from(index).unwrap_or(i32::MAX),
            ),
        };
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql::READ_EVENTS).await?;
        let rows = client
            .query(
                &stmt,
                &[&id.as_str(), &revision, &index, &sql_int(limit.max(1))],
            )
            .await?;
        rows.iter().map(event_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use augur_core::Timestamp;

    use super::*;

    #[test]
    fn attempts_holding_nul_round_trip() {
        let attempts = vec![
            Attempt {
                at: Timestamp::from_micros(1_700_000_000_000_000),
                status: None,
                error: Some("bad \0 byte \u{f8ff}".into()),
                duration_ms: 4,
            },
            Attempt {
                at: Timestamp::from_micros(1_700_000_000_000_001),
                status: Some(200),
                error: None,
                duration_ms: 1,
            },
        ];
        let stored = encode_attempts(&attempts).unwrap();
        assert!(!json_holds_nul(&stored));
        assert_eq!(stored[1].get(ESCAPED), None, "only the one holding U+0000");
        assert_eq!(decode_attempts(stored).unwrap(), attempts);
    }

    #[test]
    fn events_holding_nul_are_escaped() {
        let event = StreamEventData {
            kind: augur_core::store::StreamEventKind::Logs,
            data: "a\0b".into(),
        };
        let (kind, data, escaped) = encode_event(&event);
        assert_eq!(kind, "logs");
        assert!(escaped && !data.contains('\0'));
        assert_eq!(unescape(&data), event.data);
    }
}
