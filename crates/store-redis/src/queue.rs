//! [`QueueStore`]: claims, leases (renew, finish), items, requeues and statistics; the Rust
//! side of the queue scripts in [`crate::scripts`].
//!
//! Items live in their owner's shard. Only a group's head (its oldest pending item) is a
//! claim candidate, in its lane and topic's ready set, ranked by start-time fair queuing; a
//! head due later waits in a delayed set and a leased item in a lease set, both moved to the
//! ready sets by the next claim once their time has come. Every time check uses Redis's
//! `TIME`, so all nodes agree on when a lease lapses.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use augur_core::store::{
    self, ClaimRequest, Finish, Item, ItemLease, ItemStatus, Key, Lane, Outcome, QueueStats,
    QueueStore,
};
use augur_core::{LeaseToken, Timestamp};
use futures::future::try_join_all;
use redis::Value;

use crate::codec::{
    array, decode_attempts, decode_item, parse_account, parse_group, parse_int, parse_time, status,
    text, unexpected,
};
use crate::error::Error;
use crate::layout::Shard;
use crate::scripts::SCRIPTS;
use crate::store::{Found, Inner, RedisStore};

/// The most items one claim leases (each needs a fresh token sent along); a caller asking for
/// more gets this many and claims again.
pub(crate) const MAX_CLAIM: usize = 1024;

/// How many times a cluster claim goes back for items other claimers took between its look
/// and its take.
pub(crate) const CLAIM_ROUNDS: usize = 3;

pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The item id in a ready set member, `<order, 20 characters>:<id>`.
fn item_id(member: &str) -> &str {
    member.get(21..).unwrap_or(member)
}

/// A candidate seen by a cluster claim's first pass.
struct Candidate {
    rank: i64,
    member: String,
    topic: String,
    shard: Shard,
}

impl Inner {
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ItemLease>, Error> {
        let max = request.max.min(MAX_CLAIM);
        if max == 0 {
            return Ok(Vec::new());
        }
        if self.single() {
            // One server: one script looks at every shard, merges by rank and leases.
            let shards: Vec<Shard> = self.layout.shards().collect();
            return self.take(&shards, request, max, &[]).await;
        }
        // A cluster: look at every shard's best candidates, pick the best `max` overall,
        // then lease on each shard as many as it holds of those (its best at that moment),
        // raising the clock of each shard taken from to the highest rank claimed. A shortfall
        // (another claimer was faster) is looked for again.
        let mut leases: Vec<ItemLease> = Vec::new();
        let mut order: HashMap<String, usize> = HashMap::new();
        for _ in 0..CLAIM_ROUNDS {
            let wanted = max - leases.len();
            let peeked = try_join_all(
                self.layout
                    .shards()
                    .map(|shard| self.peek(shard, request, wanted)),
            )
            .await?;
            let mut candidates: Vec<Candidate> = peeked.into_iter().flatten().collect();
            if candidates.is_empty() {
                break;
            }
            candidates.sort_unstable_by(|a, b| (a.rank, &a.member).cmp(&(b.rank, &b.member)));
            candidates.truncate(wanted);
            let mut per_shard: BTreeMap<Shard, usize> = BTreeMap::new();
            let mut raise: BTreeMap<&str, i64> = BTreeMap::new();
            for c in &candidates {
                *per_shard.entry(c.shard).or_default() += 1;
                let top = raise.entry(&c.topic).or_default();
                *top = (*top).max(c.rank);
                let next = order.len();
                order.entry(item_id(&c.member).to_owned()).or_insert(next);
            }
            let raise: Vec<(&str, i64)> = raise.into_iter().collect();
            let taken = try_join_all(
                per_shard
                    .iter()
                    .map(|(shard, n)| self.take(std::slice::from_ref(shard), request, *n, &raise)),
            )
            .await?;
            let before = leases.len();
            leases.extend(taken.into_iter().flatten());
            if leases.len() >= max || leases.len() == before {
                break;
            }
        }
        // Best first, as looked at; replacements after.
        leases.sort_by_key(|l| order.get(&l.item.id).copied().unwrap_or(usize::MAX));
        Ok(leases)
    }

    fn claim_invocation(
        &self,
        mode: &str,
        shards: &[Shard],
        request: &ClaimRequest,
        n: usize,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = SCRIPTS.claim.prepare_invoke();
        for shard in shards {
            invocation.key(self.layout.tag(*shard));
        }
        let clock = if self.single() {
            self.layout.tag(Shard(0))
        } else {
            ""
        };
        invocation
            .arg(request.lane.as_str())
            .arg(mode)
            .arg(n)
            .arg(micros(request.lease_for))
            .arg(request.worker.as_str())
            .arg(clock)
            .arg(request.exclude_topics.len())
            .arg(&request.exclude_topics);
        invocation
    }

    /// The best `n` candidates of a shard (making due ones ready first).
    async fn peek(
        &self,
        shard: Shard,
        request: &ClaimRequest,
        n: usize,
    ) -> Result<Vec<Candidate>, Error> {
        let invocation = self.claim_invocation("peek", &[shard], request, n);
        let mut conn = self.conn()?;
        let reply: Value = invocation.invoke_async(&mut conn).await?;
        array(&reply, "peek")?
            .chunks(3)
            .map(|c| match c {
                [rank, member, topic] => Ok(Candidate {
                    rank: parse_int(rank, "rank")?,
                    member: text(member, "candidate")?.to_owned(),
                    topic: text(topic, "topic")?.to_owned(),
                    shard,
                }),
                _ => Err(unexpected("peek: not triples")),
            })
            .collect()
    }

    /// Leases up to `n` items of the given shards.
    async fn take(
        &self,
        shards: &[Shard],
        request: &ClaimRequest,
        n: usize,
        raise: &[(&str, i64)],
    ) -> Result<Vec<ItemLease>, Error> {
        let mut invocation = self.claim_invocation("take", shards, request, n);
        invocation.arg(raise.len());
        for (topic, rank) in raise {
            invocation.arg(*topic).arg(*rank);
        }
        // Lease tokens are made here: Lua's random numbers are deterministic in Redis.
        let tokens: Vec<String> = (0..n)
            .map(|_| LeaseToken::generate().0.to_string())
            .collect();
        invocation.arg(tokens);
        let mut conn = self.conn()?;
        let reply: Value = invocation.invoke_async(&mut conn).await?;
        let parts = array(&reply, "claim")?;
        let Some((expires_at, taken)) = parts.split_first() else {
            return Err(unexpected("claim: empty reply"));
        };
        let expires_at = parse_time(expires_at, "lease expiry")?;
        taken
            .iter()
            .map(|lease| {
                let [
                    id,
                    group,
                    group_partition,
                    topic,
                    owner,
                    payload,
                    seq,
                    claims,
                    attempts,
                    due,
                    created,
                    token,
                ] = array(lease, "lease")?
                else {
                    return Err(unexpected("claim: a lease is not twelve values"));
                };
                Ok(ItemLease {
                    item: Item {
                        lane: request.lane,
                        id: text(id, "item id")?.to_owned(),
                        group: parse_group(group, group_partition)?,
                        topic: text(topic, "topic")?.to_owned(),
                        owner: parse_account(text(owner, "owner")?)?,
                        payload: text(payload, "payload")?.to_owned(),
                        seq: parse_int(seq, "seq")?,
                        status: ItemStatus::Pending,
                        claims: parse_int(claims, "claims")?,
                        attempts: decode_attempts(attempts)?,
                        due_at: Some(parse_time(due, "due time")?),
                        created_at: parse_time(created, "creation time")?,
                    },
                    worker: request.worker.clone(),
                    token: LeaseToken(parse_int(token, "lease token")?),
                    expires_at,
                })
            })
            .collect()
    }

    async fn renew(&self, lease: &ItemLease, extend_by: Duration) -> Result<ItemLease, Error> {
        let shard = self.layout.shard_of_account(&lease.item.owner);
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .renew
            .key(self.layout.tag(shard))
            .arg(lease.item.lane.as_str())
            .arg(&lease.item.id)
            .arg(lease.token.0.to_string())
            .arg(micros(extend_by))
            .invoke_async(&mut conn)
            .await?;
        if reply == Value::Nil {
            return Err(store::Error::LeaseLost.into());
        }
        Ok(ItemLease {
            expires_at: parse_time(&reply, "lease expiry")?,
            ..lease.clone()
        })
    }

    async fn finish(&self, lease: &ItemLease, finish: &Finish) -> Result<(), Error> {
        let shard = self.layout.shard_of_account(&lease.item.owner);
        let (outcome, at) = match finish.outcome {
            Outcome::Done => ("done", None),
            Outcome::Retry(at) => ("retry", Some(at)),
            Outcome::Release(at) => ("release", Some(at)),
            Outcome::HandBack => ("hand_back", None),
            Outcome::GiveUp { rest: false } => ("fail", None),
            Outcome::GiveUp { rest: true } => ("fail_rest", None),
        };
        let attempt = match &finish.attempt {
            Some(a) => serde_json::to_string(a).map_err(Error::Encode)?,
            None => String::new(),
        };
        let lane = lease.item.lane;
        let mut conn = self.conn()?;
        let done: i64 = SCRIPTS
            .finish
            .key(self.layout.tag(shard))
            .arg(&self.channel)
            .arg(lane.as_str())
            .arg(&lease.item.id)
            .arg(lease.token.0.to_string())
            .arg(outcome)
            .arg(at.map_or_else(String::new, |t: Timestamp| t.as_micros().to_string()))
            .arg(attempt)
            .arg(if lane.keeps_finished() { "1" } else { "0" })
            .arg(self.clock_tag(shard))
            .invoke_async(&mut conn)
            .await?;
        if done == 1 {
            Ok(())
        } else {
            Err(store::Error::LeaseLost.into())
        }
    }

    async fn items_in(
        &self,
        shard: Shard,
        lane: Lane,
        group: &Key,
        follow: bool,
    ) -> Result<Option<Found<Vec<Item>>>, Error> {
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .items
            .key(self.layout.tag(shard))
            .arg(lane.as_str())
            .arg(group.kind.as_str())
            .arg(&group.id)
            .arg(if follow { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        let (word, rest) = status(&reply, "items")?;
        match (word, rest) {
            ("fwd", [owner]) => Ok(Some(Found::Forward(parse_account(text(owner, "owner")?)?))),
            ("items", items) => {
                let mut items = items
                    .iter()
                    .map(|v| decode_item(lane, v))
                    .collect::<Result<Vec<_>, Error>>()?;
                items.sort_by_key(|i| i.seq);
                Ok(Some(Found::Here(items)))
            }
            (other, _) => Err(unexpected(&format!("items: {other}"))),
        }
    }

    async fn items(&self, lane: Lane, group: &Key) -> Result<Vec<Item>, Error> {
        Ok(self
            .follow(group, |shard, follow| {
                self.items_in(shard, lane, group, follow)
            })
            .await?
            .unwrap_or_default())
    }

    async fn requeue_in(
        &self,
        shard: Shard,
        lane: Lane,
        group: &Key,
        id: &str,
        follow: bool,
    ) -> Result<Option<Found<()>>, Error> {
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .requeue
            .key(self.layout.tag(shard))
            .arg(&self.channel)
            .arg(lane.as_str())
            .arg(group.kind.as_str())
            .arg(&group.id)
            .arg(id)
            .arg(if follow { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        match &reply {
            Value::Int(1) => Ok(Some(Found::Here(()))),
            Value::Int(_) => Ok(None),
            other => match status(other, "requeue")? {
                ("fwd", rest) => match rest {
                    [owner] => Ok(Some(Found::Forward(parse_account(text(owner, "owner")?)?))),
                    _ => Err(unexpected("requeue: a forwarding entry without its owner")),
                },
                (word, _) => Err(unexpected(&format!("requeue: {word}"))),
            },
        }
    }

    async fn requeue(&self, lane: Lane, group: &Key, id: &str) -> Result<(), Error> {
        self.follow(group, |shard, follow| {
            self.requeue_in(shard, lane, group, id, follow)
        })
        .await?
        .ok_or_else(|| store::Error::NotFound(group.clone()).into())
    }

    async fn queue_stats(&self, lane: Lane) -> Result<QueueStats, Error> {
        let groups: Vec<Vec<Shard>> = if self.single() {
            vec![self.layout.shards().collect()]
        } else {
            self.layout.shards().map(|s| vec![s]).collect()
        };
        let counts = try_join_all(groups.iter().map(|shards| async move {
            let mut invocation = SCRIPTS.stats.prepare_invoke();
            for shard in shards {
                invocation.key(self.layout.tag(*shard));
            }
            invocation.arg(lane.as_str());
            let mut conn = self.conn()?;
            let (ready, leased, delayed): (u64, u64, u64) =
                invocation.invoke_async(&mut conn).await?;
            Ok::<_, Error>(QueueStats {
                ready,
                leased,
                delayed,
            })
        }))
        .await?;
        Ok(counts
            .into_iter()
            .fold(QueueStats::default(), |a, b| QueueStats {
                ready: a.ready + b.ready,
                leased: a.leased + b.leased,
                delayed: a.delayed + b.delayed,
            }))
    }
}

#[async_trait]
impl QueueStore for RedisStore {
    async fn claim(&self, request: &ClaimRequest) -> store::Result<Vec<ItemLease>> {
        Ok(self.inner.claim(request).await?)
    }

    async fn renew(&self, lease: &ItemLease, extend_by: Duration) -> store::Result<ItemLease> {
        Ok(self.inner.renew(lease, extend_by).await?)
    }

    async fn finish(&self, lease: &ItemLease, finish: &Finish) -> store::Result<()> {
        Ok(self.inner.finish(lease, finish).await?)
    }

    async fn items(&self, lane: Lane, group: &Key) -> store::Result<Vec<Item>> {
        Ok(self.inner.items(lane, group).await?)
    }

    async fn requeue(&self, lane: Lane, group: &Key, id: &str) -> store::Result<()> {
        Ok(self.inner.requeue(lane, group, id).await?)
    }

    async fn queue_stats(&self, lane: Lane) -> store::Result<QueueStats> {
        Ok(self.inner.queue_stats(lane).await?)
    }
}
