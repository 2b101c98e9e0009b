//! The job queue: claims, leases (renew, retry, release), completion and statistics.
//!
//! A job is claimable iff its `visible_at` (its score in the shard's `T:q` sorted set) is at
//! or before the server's clock: the run time while unleased, the lease expiry while leased,
//! so a lapsed lease needs no sweeping. Every time check uses Redis's `TIME`, so all nodes
//! agree on when a lease lapses.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use augur_core::store::{ClaimRequest, Job, Lease, QueueStats};
use augur_core::{LeaseToken, PredictionId, Timestamp};
use futures::future::try_join_all;
use redis::Value;

use crate::codec::{array, parse_id, parse_int, parse_time, text, unexpected};
use crate::error::Error;
use crate::layout::Shard;
use crate::scripts::SCRIPTS;
use crate::store::Inner;

/// The most jobs (or webhook messages) one claim leases (each needs a fresh token sent along); a caller asking
/// for more gets this many and claims again.
pub(crate) const MAX_CLAIM: usize = 1024;

/// How many times a cluster claim goes back for jobs other claimers took between its look
/// and its take.
pub(crate) const CLAIM_ROUNDS: usize = 3;

pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Inner {
    pub(crate) async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Lease>, Error> {
        let max = request.max.min(MAX_CLAIM);
        if max == 0 {
            return Ok(Vec::new());
        }
        if self.single() {
            // One server: one script looks at every shard, orders by `visible_at` and leases.
            let shards: Vec<Shard> = self.layout.shards().collect();
            return self.claim_script(&shards, request, max).await;
        }
        // A cluster: look at every shard's oldest claimable jobs, pick the oldest `max`
        // overall, then lease on each shard as many as it holds of those. A job another
        // claimer took in between is replaced by the shard's next one; a shard that ran dry
        // leaves a shortfall, looked for again in the next round.
        let mut leases: Vec<Lease> = Vec::new();
        let mut rank: HashMap<PredictionId, usize> = HashMap::new();
        for _ in 0..CLAIM_ROUNDS {
            let wanted = max - leases.len();
            let peeked = try_join_all(
                self.layout
                    .shards()
                    .map(|shard| self.peek(shard, request, wanted)),
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
                self.claim_script(&[Shard(*shard)], request, *n).await
            }))
            .await?;
            let before = leases.len();
            leases.extend(taken.into_iter().flatten());
            if leases.len() >= max || leases.len() == before {
                break;
            }
        }
        // Oldest first, as looked at; replacements after.
        leases.sort_by_key(|l| {
            rank.get(&l.job.prediction_id)
                .copied()
                .unwrap_or(usize::MAX)
        });
        Ok(leases)
    }

    /// The `(visible_at, id)` of up to `n` claimable jobs of a shard, oldest first.
    async fn peek(
        &self,
        shard: Shard,
        request: &ClaimRequest,
        n: usize,
    ) -> Result<Vec<(i64, PredictionId, Shard)>, Error> {
        let reply = self.invoke_claim("peek", &[shard], request, n).await?;
        array(&reply, "peek")?
            .chunks(2)
            .map(|pair| match pair {
                [at, id] => Ok((parse_int(at, "visible_at")?, parse_id(id)?, shard)),
                _ => Err(unexpected("peek: an odd number of values")),
            })
            .collect()
    }

    /// Leases up to `n` jobs of the given shards.
    async fn claim_script(
        &self,
        shards: &[Shard],
        request: &ClaimRequest,
        n: usize,
    ) -> Result<Vec<Lease>, Error> {
        let reply = self.invoke_claim("take", shards, request, n).await?;
        let parts = array(&reply, "claim")?;
        let Some((expires_at, taken)) = parts.split_first() else {
            return Err(unexpected("claim: empty reply"));
        };
        let expires_at = parse_time(expires_at, "lease expiry")?;
        taken
            .iter()
            .map(|lease| match array(lease, "lease")? {
                [id, queue, attempts, run_at, token] => Ok(Lease {
                    job: Job {
                        prediction_id: parse_id(id)?,
                        queue: text(queue, "queue")?.to_owned(),
                        attempts: parse_int(attempts, "attempt count")?,
                        run_at: parse_time(run_at, "run time")?,
                    },
                    worker: request.worker.clone(),
                    token: LeaseToken(parse_int(token, "lease token")?),
                    expires_at,
                }),
                _ => Err(unexpected("claim: a lease is not five values")),
            })
            .collect()
    }

    async fn invoke_claim(
        &self,
        mode: &str,
        shards: &[Shard],
        request: &ClaimRequest,
        n: usize,
    ) -> Result<Value, Error> {
        let mut invocation = SCRIPTS.claim.prepare_invoke();
        for shard in shards {
            invocation.key(self.layout.queue(*shard));
        }
        invocation
            .arg(mode)
            .arg(n)
            .arg(micros(request.lease_for))
            .arg(request.worker.as_str())
            .arg(request.exclude_queues.len())
            .arg(&request.exclude_queues)
            .arg(shards.len())
            .arg(
                shards
                    .iter()
                    .map(|s| self.layout.tag(*s))
                    .collect::<Vec<_>>(),
            );
        if mode == "take" {
            let tokens: Vec<String> = (0..n)
                .map(|_| LeaseToken::generate().0.to_string())
                .collect();
            invocation.arg(tokens);
        }
        let mut conn = self.conn()?;
        Ok(invocation.invoke_async(&mut conn).await?)
    }

    pub(crate) async fn renew(&self, lease: &Lease, extend_by: Duration) -> Result<Lease, Error> {
        let id = &lease.job.prediction_id;
        let shard = self.layout.shard_of(id);
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .renew
            .key(self.layout.job_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(id.as_str())
            .arg(lease.token.0.to_string())
            .arg(micros(extend_by))
            .invoke_async(&mut conn)
            .await?;
        if reply == Value::Nil {
            return Err(Error::LeaseLost);
        }
        Ok(Lease {
            expires_at: parse_time(&reply, "lease expiry")?,
            ..lease.clone()
        })
    }

    /// Retry (`refund` false) or release (`refund` true) a live lease.
    pub(crate) async fn requeue(
        &self,
        lease: &Lease,
        run_at: Timestamp,
        refund: bool,
    ) -> Result<(), Error> {
        let id = &lease.job.prediction_id;
        let shard = self.layout.shard_of(id);
        let mut conn = self.conn()?;
        let done: i64 = SCRIPTS
            .requeue
            .key(self.layout.job_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(&self.channel)
            .arg(id.as_str())
            .arg(lease.token.0.to_string())
            .arg(run_at.as_micros())
            .arg(if refund { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        if done == 1 {
            Ok(())
        } else {
            Err(Error::LeaseLost)
        }
    }

    pub(crate) async fn complete(&self, id: &PredictionId) -> Result<(), Error> {
        let shard = self.layout.shard_of(id);
        let mut conn = self.conn()?;
        let _: Value = SCRIPTS
            .complete
            .key(self.layout.job_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(id.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    pub(crate) async fn queue_stats(&self) -> Result<QueueStats, Error> {
        let groups: Vec<Vec<Shard>> = if self.single() {
            vec![self.layout.shards().collect()]
        } else {
            self.layout.shards().map(|s| vec![s]).collect()
        };
        let counts = try_join_all(groups.iter().map(|shards| async move {
            let mut invocation = SCRIPTS.stats.prepare_invoke();
            for shard in shards {
                invocation.key(self.layout.queue(*shard));
            }
            invocation.arg(
                shards
                    .iter()
                    .map(|s| self.layout.tag(*s))
                    .collect::<Vec<_>>(),
            );
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
