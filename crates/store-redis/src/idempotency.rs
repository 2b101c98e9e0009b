//! `create` and idempotency keys: how a key and the prediction it creates are bound
//! atomically although they live in different shards (cluster slots).
//!
//! A prediction lives in the shard of its id and a key record in the shard of its
//! `(owner, key)` name, so one script cannot check the key and insert the prediction. The
//! commit point is the prediction's insert: a key is bound to a prediction iff that
//! prediction was inserted *with* the key (its shard's `T:pk:<id>` set names the key). The key
//! record only points at the candidate:
//!
//! 1. **Reserve** (key shard): if a live confirmed record exists, the key is taken (return
//!    it). If a live *pending* record of another request exists, resolve it (4). Otherwise
//!    write a pending record `(prediction id, fingerprint, expiry, nonce)`.
//! 2. **Insert** (prediction shard): insert with the key unless the id exists (then the key
//!    is released again, or confirmed if the existing prediction was inserted with it) or the
//!    reservation `nonce` was fenced (then start over).
//! 3. **Confirm** (key shard): mark the record confirmed. Only an optimization: a pending
//!    record whose prediction is bound to it is confirmed by whoever finds it.
//! 4. **Resolve** someone else's pending record (its prediction's shard): bound → confirm it,
//!    the key is taken; not inserted yet and younger than [`GRACE`] → wait and retry;
//!    otherwise **fence** that reservation's nonce, so its insert can never happen, and
//!    replace the record by ours with a compare-and-set on its nonce.
//!
//! So a crash between the steps never leaves two predictions for one key nor a key bound to
//! nothing forever: an abandoned reservation is taken over after [`GRACE`], and a request
//! that stalls past it finds its insert fenced and returns the winner's prediction.

use std::time::Duration;

use augur_core::store::{Created, IdempotencyRecord, NewPrediction};
use augur_core::{AccountId, LeaseToken, PredictionId, Revision, Timestamp};
use futures::future::try_join_all;
use redis::Value;

use crate::codec::{EncodedRecord, array, effect_args, parse_id, parse_time, text, unexpected};
use crate::error::Error;
use crate::layout::{Layout, expiry_millis};
use crate::scripts::SCRIPTS;
use crate::store::{Attempt, Inner, clamp_limit, status};

/// How long a reservation may stay pending before another request with the same key may
/// fence it and take the key over. Between a reservation and its insert there is one round
/// trip, so only a dead or badly stalled node takes this long.
const GRACE: Duration = Duration::from_secs(2);

/// How long a create waits on another request's pending reservation before giving up with
/// a retryable error.
const WAIT: Duration = Duration::from_secs(10);

/// How long a fence outlives the key it protects.
const FENCE_MARGIN: Duration = Duration::from_secs(3600);

/// What a reservation found.
enum Reservation {
    /// Ours, under this nonce.
    Reserved(String),
    /// Confirmed for `record.prediction_id`.
    Existing(IdempotencyRecord),
    /// Another request's pending reservation.
    Pending {
        pid: PredictionId,
        since: String,
        nonce: String,
    },
}

impl Inner {
    pub(crate) async fn create(&self, new: NewPrediction<'_>) -> Result<Created, Error> {
        let p = new.prediction;
        let record = EncodedRecord::encode(&p.id, p)?;
        let effects = effect_args(new.effects)?;
        let Some(key) = new.idempotency else {
            return match self.create_once(&p.id, None, &record, &effects).await? {
                Attempt::Inserted => Ok(Created::Inserted(Revision::FIRST)),
                Attempt::Exists(existing, _) => Ok(Created::ExistingId(*existing)),
                Attempt::Fenced => Err(unexpected("an insert without a key was fenced")),
            };
        };

        let name = Layout::key_name(&key.owner, &key.key);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let nonce = match self.reserve(&name, key, &p.id).await? {
                Reservation::Reserved(nonce) => nonce,
                Reservation::Existing(found) => {
                    // As in the memory store, an existing id answers before an existing key.
                    if let Some(existing) = self.get_opt(&p.id).await? {
                        return Ok(Created::ExistingId(existing));
                    }
                    let prediction = self.get_opt(&found.prediction_id).await?;
                    return Ok(Created::ExistingKey {
                        record: found,
                        prediction,
                    });
                }
                Reservation::Pending { pid, since, nonce } => {
                    match self.resolve(&name, &pid, &nonce, &since, key).await? {
                        Resolved::Bound => {
                            self.settle_key(&name, &pid, &nonce, true).await?;
                            continue;
                        }
                        Resolved::Wait => {
                            if tokio::time::Instant::now() >= deadline {
                                return Err(Error::KeyBusy {
                                    key: key.key.clone(),
                                });
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        Resolved::Fenced => {
                            match self.take_over(&name, &pid, &nonce, key, &p.id).await? {
                                Some(ours) => ours,
                                None => continue,
                            }
                        }
                    }
                }
            };
            match self
                .create_once(&p.id, Some((&name, &nonce)), &record, &effects)
                .await?
            {
                Attempt::Inserted => {
                    // Best effort: an unconfirmed record is confirmed by whoever finds it.
                    if let Err(e) = self.settle_key(&name, &p.id, &nonce, true).await {
                        tracing::debug!(error = %e, "could not confirm an idempotency key");
                    }
                    return Ok(Created::Inserted(Revision::FIRST));
                }
                Attempt::Exists(existing, bound) => {
                    self.settle_key(&name, &p.id, &nonce, bound).await?;
                    return Ok(Created::ExistingId(*existing));
                }
                Attempt::Fenced => continue,
            }
        }
    }

    async fn reserve(
        &self,
        name: &str,
        key: &IdempotencyRecord,
        id: &PredictionId,
    ) -> Result<Reservation, Error> {
        let shard = self.layout.shard_of_key(name);
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .reserve_key
            .key(self.layout.idempotency_key(shard, name))
            .arg(self.layout.tag(shard))
            .arg(name)
            .arg(id.as_str())
            .arg(&key.fingerprint)
            .arg(key.expires_at.as_micros())
            .arg(expiry_millis(key.expires_at))
            .arg(LeaseToken::generate().0.to_string())
            .invoke_async(&mut conn)
            .await?;
        let parts = array(&reply, "reserve")?;
        match (status(parts)?, parts) {
            ("reserved", [_, nonce]) => Ok(Reservation::Reserved(text(nonce, "nonce")?.to_owned())),
            ("existing", [_, pid, fp, exp]) => Ok(Reservation::Existing(IdempotencyRecord {
                owner: key.owner.clone(),
                key: key.key.clone(),
                fingerprint: text(fp, "fingerprint")?.to_owned(),
                prediction_id: parse_id(pid)?,
                expires_at: parse_time(exp, "key expiry")?,
            })),
            ("pending", [_, pid, _fp, _exp, since, nonce]) => Ok(Reservation::Pending {
                pid: parse_id(pid)?,
                since: text(since, "reservation time")?.to_owned(),
                nonce: text(nonce, "nonce")?.to_owned(),
            }),
            (other, _) => Err(unexpected(&format!("reserve: {other}"))),
        }
    }

    async fn resolve(
        &self,
        name: &str,
        pid: &PredictionId,
        nonce: &str,
        since: &str,
        key: &IdempotencyRecord,
    ) -> Result<Resolved, Error> {
        let shard = self.layout.shard_of(pid);
        let fence_until = expiry_millis(key.expires_at.plus(FENCE_MARGIN))
            .max(expiry_millis(Timestamp::now().plus(FENCE_MARGIN)));
        let mut conn = self.conn()?;
        let reply: String = SCRIPTS
            .resolve_key
            .key(self.layout.prediction_key(shard, pid))
            .arg(self.layout.tag(shard))
            .arg(pid.as_str())
            .arg(name)
            .arg(nonce)
            .arg(since)
            .arg(i64::try_from(GRACE.as_micros()).unwrap_or(i64::MAX))
            .arg(fence_until)
            .invoke_async(&mut conn)
            .await?;
        match reply.as_str() {
            "bound" => Ok(Resolved::Bound),
            "wait" => Ok(Resolved::Wait),
            "fenced" => Ok(Resolved::Fenced),
            other => Err(unexpected(&format!("resolve: {other}"))),
        }
    }

    /// Replaces a fenced reservation by ours; `None` if the record changed meanwhile.
    async fn take_over(
        &self,
        name: &str,
        their_pid: &PredictionId,
        their_nonce: &str,
        key: &IdempotencyRecord,
        id: &PredictionId,
    ) -> Result<Option<String>, Error> {
        let shard = self.layout.shard_of_key(name);
        let nonce = LeaseToken::generate().0.to_string();
        let mut conn = self.conn()?;
        let replaced: i64 = SCRIPTS
            .take_over_key
            .key(self.layout.idempotency_key(shard, name))
            .arg(self.layout.tag(shard))
            .arg(name)
            .arg(their_pid.as_str())
            .arg(their_nonce)
            .arg(id.as_str())
            .arg(&key.fingerprint)
            .arg(key.expires_at.as_micros())
            .arg(expiry_millis(key.expires_at))
            .arg(&nonce)
            .invoke_async(&mut conn)
            .await?;
        Ok((replaced == 1).then_some(nonce))
    }

    /// Confirms (`bound`) or drops (not bound) a pending reservation.
    async fn settle_key(
        &self,
        name: &str,
        pid: &PredictionId,
        nonce: &str,
        bound: bool,
    ) -> Result<(), Error> {
        let shard = self.layout.shard_of_key(name);
        let mut conn = self.conn()?;
        let key = self.layout.idempotency_key(shard, name);
        let _: i64 = if bound {
            SCRIPTS
                .confirm_key
                .key(key)
                .arg(pid.as_str())
                .arg(nonce)
                .invoke_async(&mut conn)
                .await?
        } else {
            SCRIPTS
                .abort_key
                .key(key)
                .arg(self.layout.tag(shard))
                .arg(name)
                .arg(pid.as_str())
                .arg(nonce)
                .invoke_async(&mut conn)
                .await?
        };
        Ok(())
    }

    /// Forgets the key `name` if it still points at `pid`.
    pub(crate) async fn unbind_key(&self, name: &str, pid: &PredictionId) -> Result<(), Error> {
        let shard = self.layout.shard_of_key(name);
        let mut conn = self.conn()?;
        let _: i64 = SCRIPTS
            .unbind_key
            .key(self.layout.idempotency_key(shard, name))
            .arg(self.layout.tag(shard))
            .arg(name)
            .arg(pid.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    pub(crate) async fn list_keys(
        &self,
        after: Option<(&AccountId, &str)>,
        limit: usize,
    ) -> Result<Vec<IdempotencyRecord>, Error> {
        let limit = clamp_limit(limit);
        let after = after.map_or_else(String::new, |(owner, key)| Layout::key_name(owner, key));
        let per_shard = try_join_all(self.layout.shards().map(|shard| {
            let after = &after;
            async move {
                let mut conn = self.conn()?;
                let reply: Value = SCRIPTS
                    .list_keys
                    .key(self.layout.keys_by_name(shard))
                    .arg(self.layout.tag(shard))
                    .arg(after)
                    .arg(limit)
                    .invoke_async(&mut conn)
                    .await?;
                array(&reply, "list_keys")?
                    .iter()
                    .map(|k| match array(k, "key")? {
                        [name, pid, fp, exp] => {
                            let name = text(name, "key name")?;
                            let (owner, key) =
                                name.split_once(' ').ok_or_else(|| Error::InvalidStored {
                                    what: "idempotency key name",
                                    detail: format!("{name:?}"),
                                })?;
                            Ok((
                                name.to_owned(),
                                IdempotencyRecord {
                                    owner: AccountId::parse(owner).map_err(|e| {
                                        Error::InvalidStored {
                                            what: "account id",
                                            detail: e.to_string(),
                                        }
                                    })?,
                                    key: key.to_owned(),
                                    fingerprint: text(fp, "fingerprint")?.to_owned(),
                                    prediction_id: parse_id(pid)?,
                                    expires_at: parse_time(exp, "key expiry")?,
                                },
                            ))
                        }
                        _ => Err(unexpected("list_keys: a key is not four values")),
                    })
                    .collect::<Result<Vec<_>, Error>>()
            }
        }))
        .await?;
        let mut keys: Vec<(String, IdempotencyRecord)> = per_shard.into_iter().flatten().collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        keys.truncate(limit);
        Ok(keys.into_iter().map(|(_, k)| k).collect())
    }
}

enum Resolved {
    Bound,
    Wait,
    Fenced,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use augur_core::store::Store;
    use augur_store_conformance::fixtures::prediction;

    use super::*;
    use crate::RedisStore;

    async fn store() -> Option<RedisStore> {
        let url = augur_store_conformance::skip_unless_configured("AUGUR_TEST_REDIS_URL")?;
        let prefix = format!("augur-test-{}:", PredictionId::generate());
        let sep = if url.contains('?') { '&' } else { '?' };
        Some(
            RedisStore::connect(&format!("{url}{sep}prefix={prefix}"))
                .await
                .expect("connect"),
        )
    }

    fn key_for(p: &augur_core::Prediction, key: &str) -> IdempotencyRecord {
        IdempotencyRecord {
            owner: p.owner.clone(),
            key: key.into(),
            fingerprint: "fp".into(),
            prediction_id: p.id.clone(),
            expires_at: Timestamp::now().plus(Duration::from_secs(3600)),
        }
    }

    /// 20 requests race with one key and 20 ids: one inserts, the others get its prediction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_creates_with_one_key_insert_once() {
        let Some(store) = store().await else { return };
        let store = Arc::new(store);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let p = prediction();
                    let key = key_for(&p, "race");
                    let created = store
                        .create(NewPrediction {
                            prediction: &p,
                            idempotency: Some(&key),
                            effects: &[],
                        })
                        .await
                        .expect("create");
                    (p.id, created)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut pointed_at = HashSet::new();
        for task in tasks {
            match task.await.unwrap() {
                (id, Created::Inserted(_)) => winners.push(id),
                (_, Created::ExistingKey { record, prediction }) => {
                    assert_eq!(
                        prediction.map(|p| p.value.id),
                        Some(record.prediction_id.clone())
                    );
                    pointed_at.insert(record.prediction_id);
                }
                (_, other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        assert!(
            pointed_at.iter().all(|id| *id == winners[0]),
            "{pointed_at:?}"
        );
        let keys = store.list_idempotency_keys(None, 10).await.unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].prediction_id, winners[0]);
    }

    /// A request that reserved a key and died before inserting: after the grace period the
    /// next request fences its reservation and takes the key; the stalled insert, should it
    /// ever come, is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_reservations_are_fenced_and_taken_over() {
        let Some(store) = store().await else { return };
        let inner = &store.inner;
        let stalled = prediction();
        let key = key_for(&stalled, "abandoned");
        let name = Layout::key_name(&key.owner, &key.key);
        let Reservation::Reserved(stalled_nonce) =
            inner.reserve(&name, &key, &stalled.id).await.unwrap()
        else {
            panic!("a fresh key is reserved");
        };

        let started = tokio::time::Instant::now();
        let next = prediction();
        let created = store
            .create(NewPrediction {
                prediction: &next,
                idempotency: Some(&key_for(&next, "abandoned")),
                effects: &[],
            })
            .await
            .unwrap();
        assert_eq!(created, Created::Inserted(Revision::FIRST));
        assert!(started.elapsed() >= GRACE, "waited {:?}", started.elapsed());

        // The stalled request wakes up and tries to insert under its old reservation.
        let record = EncodedRecord::encode(&stalled.id, &stalled).unwrap();
        let attempt = inner
            .create_once(
                &stalled.id,
                Some((&name, &stalled_nonce)),
                &record,
                &effect_args(&[]).unwrap(),
            )
            .await
            .unwrap();
        assert!(matches!(attempt, Attempt::Fenced));
        // Going through `create` again it learns who holds the key.
        match store
            .create(NewPrediction {
                prediction: &stalled,
                idempotency: Some(&key),
                effects: &[],
            })
            .await
            .unwrap()
        {
            Created::ExistingKey {
                record,
                prediction: Some(p),
            } => {
                assert_eq!(record.prediction_id, next.id);
                assert_eq!(p.value.id, next.id);
            }
            other => panic!("expected the key's prediction, got {other:?}"),
        }
        assert!(matches!(
            store.get(&stalled.id).await,
            Err(augur_core::store::Error::NotFound(_))
        ));
    }

    /// Deleting a prediction forgets the keys that point at it, in their own shards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delete_forgets_the_key() {
        let Some(store) = store().await else { return };
        let p = prediction();
        let key = key_for(&p, "deleted");
        store
            .create(NewPrediction {
                prediction: &p,
                idempotency: Some(&key),
                effects: &[],
            })
            .await
            .unwrap();
        store.delete(&p.id).await.unwrap();
        assert!(
            store
                .list_idempotency_keys(None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let again = prediction();
        let created = store
            .create(NewPrediction {
                prediction: &again,
                idempotency: Some(&key_for(&again, "deleted")),
                effects: &[],
            })
            .await
            .unwrap();
        assert_eq!(created, Created::Inserted(Revision::FIRST));
    }
}
