//! The webhook outbox (claims, leases, attempts, redelivery, listing) and the per-prediction
//! event log (reading), plus the import of both: the Rust side of their scripts in
//! [`crate::scripts`]. Writing messages and events is an effect of `create`/`update`
//! (`codec::effect_args`), so it commits in the same script as the record.
//!
//! A prediction's messages live in its shard. Pending ones (and the counter that numbers
//! them) are in the hash `T:o:<id>`, with their seqs in the sorted set `T:op:<id>`; finished
//! ones move to the hash `T:of:<id>`, which expires with the prediction's data. The shard's
//! sorted set `T:oh` holds every prediction with a pending message, scored by when its oldest
//! one is claimable (its next attempt, or the end of its live lease), so a claim reads the
//! due heads off the front of one sorted set per shard, like the job queue. Each message is
//! a group of hash fields `<f>:<seq>`: `m` the message (JSON), `a` its attempts (a JSON
//! array), `n` its next attempt (µs), `s` its status (finished ones), `d` its id, `t`/`w`/`l`
//! its lease (token, worker, expiry); `i:<message id>` maps an id back to its seq.
//!
//! The event log `T:e:<id>` is a sorted set of members `<revision, 20 digits><index, 10
//! digits> <event JSON>`, all at score 0, so byte order is position order and a read from a
//! position is one `ZRANGEBYLEX`. It expires with the prediction's data.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use augur_core::store::{
    Attempt, Delivery, DeliveryLease, DeliveryOutcome, DeliveryState, DeliveryStatus, StreamEvent,
    StreamEventData,
};
use augur_core::{LeaseToken, PredictionId, Revision, Timestamp, WorkerId};
use futures::future::try_join_all;
use redis::Value;

use crate::codec::{array, bytes, opt_bytes, parse_id, parse_int, parse_time, text, unexpected};
use crate::error::Error;
use crate::layout::Shard;
use crate::queue::{CLAIM_ROUNDS, MAX_CLAIM, micros};
use crate::scripts::SCRIPTS;
use crate::store::{Inner, clamp_limit};

impl Inner {
    pub(crate) async fn claim_deliveries(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
    ) -> Result<Vec<DeliveryLease>, Error> {
        let max = max.min(MAX_CLAIM);
        if max == 0 {
            return Ok(Vec::new());
        }
        if self.single() {
            // One server: one script looks at every shard's heads, orders them and leases.
            let shards: Vec<Shard> = self.layout.shards().collect();
            return self.take_deliveries(&shards, worker, lease_for, max).await;
        }
        // A cluster: as for jobs, look at every shard's due heads, pick the oldest `max`,
        // then lease on each shard as many as it holds of those; a shortfall (another
        // claimer was faster) is looked for again.
        let mut leases: Vec<DeliveryLease> = Vec::new();
        let mut rank: HashMap<PredictionId, usize> = HashMap::new();
        for _ in 0..CLAIM_ROUNDS {
            let wanted = max - leases.len();
            let peeked = try_join_all(
                self.layout
                    .shards()
                    .map(|shard| self.peek_deliveries(shard, wanted)),
            )
            .await?;
            let mut candidates: Vec<(i64, PredictionId, Shard)> =
                peeked.into_iter().flatten().collect();
            if candidates.is_empty() {
                break;
            }
            candidates.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            candidates.truncate(wanted);
            let mut per_shard: BTreeMap<usize, usize> = BTreeMap::new();
            for (_, id, shard) in &candidates {
                *per_shard.entry(shard.0).or_default() += 1;
                let next = rank.len();
                rank.entry(id.clone()).or_insert(next);
            }
            let taken = try_join_all(per_shard.iter().map(|(shard, n)| async move {
                self.take_deliveries(&[Shard(*shard)], worker, lease_for, *n)
                    .await
            }))
            .await?;
            let before = leases.len();
            leases.extend(taken.into_iter().flatten());
            if leases.len() >= max || leases.len() == before {
                break;
            }
        }
        leases.sort_by_key(|l| {
            rank.get(&l.state.delivery.prediction_id)
                .copied()
                .unwrap_or(usize::MAX)
        });
        Ok(leases)
    }

    /// The `(visible_at, prediction id)` of up to `n` due heads of a shard, oldest first.
    async fn peek_deliveries(
        &self,
        shard: Shard,
        n: usize,
    ) -> Result<Vec<(i64, PredictionId, Shard)>, Error> {
        let reply = self
            .invoke_claim_deliveries("peek", &[shard], None, Duration::ZERO, n)
            .await?;
        array(&reply, "peek deliveries")?
            .chunks(2)
            .map(|pair| match pair {
                [at, id] => Ok((parse_int(at, "visible_at")?, parse_id(id)?, shard)),
                _ => Err(unexpected("peek deliveries: an odd number of values")),
            })
            .collect()
    }

    /// Leases the heads of up to `n` predictions of the given shards.
    async fn take_deliveries(
        &self,
        shards: &[Shard],
        worker: &WorkerId,
        lease_for: Duration,
        n: usize,
    ) -> Result<Vec<DeliveryLease>, Error> {
        let reply = self
            .invoke_claim_deliveries("take", shards, Some(worker), lease_for, n)
            .await?;
        let parts = array(&reply, "claim deliveries")?;
        let Some((expires_at, taken)) = parts.split_first() else {
            return Err(unexpected("claim deliveries: empty reply"));
        };
        let expires_at = parse_time(expires_at, "lease expiry")?;
        taken
            .iter()
            .map(|lease| match array(lease, "delivery lease")? {
                [id, seq, message, attempts, next, token] => {
                    let id = parse_id(id)?;
                    Ok(DeliveryLease {
                        state: decode_state(
                            &id,
                            parse_int(seq, "delivery seq")?,
                            DeliveryStatus::Pending,
                            &Fields {
                                message: opt_bytes(message),
                                attempts: opt_bytes(attempts),
                                next: opt_bytes(next),
                            },
                        )?,
                        worker: worker.clone(),
                        token: LeaseToken(parse_int(token, "lease token")?),
                        expires_at,
                    })
                }
                _ => Err(unexpected("claim deliveries: a lease is not six values")),
            })
            .collect()
    }

    async fn invoke_claim_deliveries(
        &self,
        mode: &str,
        shards: &[Shard],
        worker: Option<&WorkerId>,
        lease_for: Duration,
        n: usize,
    ) -> Result<Value, Error> {
        let mut invocation = SCRIPTS.claim_deliveries.prepare_invoke();
        for shard in shards {
            invocation.key(self.layout.outbox_heads(*shard));
        }
        invocation
            .arg(mode)
            .arg(n)
            .arg(micros(lease_for))
            .arg(worker.map_or("", WorkerId::as_str))
            .arg(shards.len())
            .arg(
                shards
                    .iter()
                    .map(|s| self.layout.tag(*s))
                    .collect::<Vec<_>>(),
            );
        if mode == "take" {
            // Lease tokens are made here: Lua's random numbers are deterministic in Redis.
            let tokens: Vec<String> = (0..n)
                .map(|_| LeaseToken::generate().0.to_string())
                .collect();
            invocation.arg(tokens);
        }
        let mut conn = self.conn()?;
        Ok(invocation.invoke_async(&mut conn).await?)
    }

    pub(crate) async fn finish_delivery(
        &self,
        lease: &DeliveryLease,
        attempt: &Attempt,
        outcome: DeliveryOutcome,
    ) -> Result<(), Error> {
        let id = &lease.state.delivery.prediction_id;
        let shard = self.layout.shard_of(id);
        let (kind, retry_at) = match outcome {
            DeliveryOutcome::Delivered => ("d", 0),
            DeliveryOutcome::RetryAt(at) => ("r", at.as_micros()),
            DeliveryOutcome::GiveUp { drop_rest: false } => ("f", 0),
            DeliveryOutcome::GiveUp { drop_rest: true } => ("F", 0),
        };
        let mut conn = self.conn()?;
        let done: i64 = SCRIPTS
            .finish_delivery
            .key(self.layout.outbox_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(id.as_str())
            .arg(lease.state.seq)
            .arg(lease.token.0.to_string())
            .arg(serde_json::to_string(attempt).map_err(Error::Encode)?)
            .arg(kind)
            .arg(retry_at)
            .invoke_async(&mut conn)
            .await?;
        if done == 1 {
            Ok(())
        } else {
            Err(Error::LeaseLost)
        }
    }

    pub(crate) async fn list_deliveries(
        &self,
        id: &PredictionId,
    ) -> Result<Vec<DeliveryState>, Error> {
        let shard = self.layout.shard_of(id);
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .list_deliveries
            .key(self.layout.outbox_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(id.as_str())
            .invoke_async(&mut conn)
            .await?;
        let [pending, finished] = array(&reply, "list deliveries")? else {
            return Err(unexpected("list deliveries: expected two hashes"));
        };
        // seq → (finished?, field letter → value)
        let mut messages: BTreeMap<u64, (bool, HashMap<&str, &Value>)> = BTreeMap::new();
        for (hash, is_finished) in [(pending, false), (finished, true)] {
            for pair in array(hash, "outbox hash")?.chunks(2) {
                let [field, value] = pair else {
                    return Err(unexpected("outbox hash: an odd number of values"));
                };
                let field = text(field, "outbox field")?;
                // `seq` (the counter) and `i:<message id>` (the index) are not messages.
                let Some((letter, seq)) = field.split_once(':') else {
                    continue;
                };
                if letter == "i" {
                    continue;
                }
                let seq: u64 = seq.parse().map_err(|_| Error::InvalidStored {
                    what: "outbox field",
                    detail: format!("{field:?}"),
                })?;
                let entry = messages
                    .entry(seq)
                    .or_insert_with(|| (is_finished, HashMap::new()));
                entry.1.insert(letter, value);
            }
        }
        messages
            .into_iter()
            .map(|(seq, (is_finished, fields))| {
                let status = if is_finished {
                    match fields.get("s").map(|v| text(v, "delivery status")) {
                        Some(Ok("delivered")) => DeliveryStatus::Delivered,
                        Some(Ok("failed")) => DeliveryStatus::Failed,
                        other => {
                            return Err(Error::InvalidStored {
                                what: "delivery status",
                                detail: format!("{other:?}"),
                            });
                        }
                    }
                } else {
                    DeliveryStatus::Pending
                };
                let field = |letter: &str| fields.get(letter).and_then(|v| opt_bytes(v));
                decode_state(
                    id,
                    seq,
                    status,
                    &Fields {
                        message: field("m"),
                        attempts: field("a"),
                        next: field("n"),
                    },
                )
            })
            .collect()
    }

    pub(crate) async fn redeliver(
        &self,
        id: &PredictionId,
        delivery_id: &str,
    ) -> Result<(), Error> {
        let shard = self.layout.shard_of(id);
        let mut conn = self.conn()?;
        let done: i64 = SCRIPTS
            .redeliver
            .key(self.layout.outbox_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(id.as_str())
            .arg(delivery_id)
            .invoke_async(&mut conn)
            .await?;
        if done == 1 {
            Ok(())
        } else {
            Err(Error::NotFound(id.clone()))
        }
    }

    pub(crate) async fn read_events(
        &self,
        id: &PredictionId,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> Result<Vec<StreamEvent>, Error> {
        let shard = self.layout.shard_of(id);
        // Every member at or after the next position: the index can go one past `u32::MAX`
        // and still fit its ten digits.
        let min = after.map_or_else(
            || "-".to_owned(),
            |(revision, index)| format!("[{:020}{:010}", revision.0, u64::from(index) + 1),
        );
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .read_events
            .key(self.layout.events_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(id.as_str())
            .arg(min)
            .arg(clamp_limit(limit))
            .invoke_async(&mut conn)
            .await?;
        array(&reply, "read events")?
            .iter()
            .map(|member| decode_event(bytes(member, "event")?))
            .collect()
    }

    pub(crate) async fn import_delivery(
        &self,
        shard: Shard,
        state: &DeliveryState,
    ) -> Result<(), Error> {
        let id = &state.delivery.prediction_id;
        let attempts = if state.attempts.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&state.attempts).map_err(Error::Encode)?
        };
        let mut conn = self.conn()?;
        let _: Value = SCRIPTS
            .import_delivery
            .key(self.layout.outbox_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(id.as_str())
            .arg(&state.delivery.id)
            .arg(state.seq)
            .arg(status_name(state.status))
            .arg(serde_json::to_string(&state.delivery).map_err(Error::Encode)?)
            .arg(attempts)
            .arg(
                state
                    .next_attempt_at
                    .map_or_else(String::new, |t| t.as_micros().to_string()),
            )
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    pub(crate) async fn import_event(
        &self,
        shard: Shard,
        id: &PredictionId,
        event: &StreamEvent,
    ) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let _: Value = SCRIPTS
            .import_event
            .key(self.layout.events_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(id.as_str())
            .arg(format!("{:020}{:010}", event.revision.0, event.index))
            .arg(serde_json::to_string(&event.event).map_err(Error::Encode)?)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Failed => "failed",
    }
}

/// A message's stored fields.
struct Fields<'a> {
    message: Option<&'a [u8]>,
    attempts: Option<&'a [u8]>,
    next: Option<&'a [u8]>,
}

fn decode_state(
    id: &PredictionId,
    seq: u64,
    status: DeliveryStatus,
    fields: &Fields<'_>,
) -> Result<DeliveryState, Error> {
    let message = fields.message.ok_or_else(|| Error::InvalidStored {
        what: "webhook message",
        detail: format!("message {seq} of {id} has no body"),
    })?;
    let delivery: Delivery = serde_json::from_slice(message).map_err(Error::Decode)?;
    let attempts: Vec<Attempt> = match fields.attempts {
        Some(a) if !a.is_empty() => serde_json::from_slice(a).map_err(Error::Decode)?,
        _ => Vec::new(),
    };
    let next_attempt_at = match fields.next {
        Some(n) if !n.is_empty() => Some(Timestamp::from_micros(
            std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::InvalidStored {
                    what: "next attempt time",
                    detail: String::from_utf8_lossy(n).into_owned(),
                })?,
        )),
        _ => None,
    };
    Ok(DeliveryState {
        delivery,
        seq,
        status,
        attempts,
        next_attempt_at,
    })
}

/// Splits an event log member, `<revision, 20 digits><index, 10 digits> <event JSON>`.
fn decode_event(member: &[u8]) -> Result<StreamEvent, Error> {
    let invalid = || Error::InvalidStored {
        what: "event log member",
        detail: String::from_utf8_lossy(&member[..member.len().min(40)]).into_owned(),
    };
    if member.len() < 31 || member[30] != b' ' {
        return Err(invalid());
    }
    let digits = std::str::from_utf8(&member[..30]).map_err(|_| invalid())?;
    let revision: u64 = digits[..20].parse().map_err(|_| invalid())?;
    let index: u32 = digits[20..].parse().map_err(|_| invalid())?;
    let event: StreamEventData = serde_json::from_slice(&member[31..]).map_err(Error::Decode)?;
    Ok(StreamEvent {
        revision: Revision(revision),
        index,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_core::store::StreamEventKind;

    #[test]
    fn event_members_round_trip_and_sort_by_position() {
        let member = |rev: u64, index: u32, data: &str| {
            let event = StreamEventData {
                kind: StreamEventKind::Output,
                data: data.into(),
            };
            format!(
                "{rev:020}{index:010} {}",
                serde_json::to_string(&event).unwrap()
            )
        };
        let mut members = [
            member(10, 0, "c"),
            member(2, 1, "b ✓"),
            member(2, 0, "zzz"),
            member(u64::MAX, u32::MAX, ""),
        ];
        members.sort();
        let decoded: Vec<(u64, u32, String)> = members
            .iter()
            .map(|m| {
                let e = decode_event(m.as_bytes()).unwrap();
                (e.revision.0, e.index, e.event.data)
            })
            .collect();
        assert_eq!(
            decoded,
            vec![
                (2, 0, "zzz".into()),
                (2, 1, "b ✓".into()),
                (10, 0, "c".into()),
                (u64::MAX, u32::MAX, String::new()),
            ]
        );
        assert!(decode_event(b"12 {}").is_err());
    }
}
