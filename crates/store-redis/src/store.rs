//! [`RedisStore`]: connecting (layout and durability checks) and the [`Store`]
//! implementation, which hands each operation to its script (see [`crate::scripts`]).
//!
//! Operations on one prediction run one script on its shard. Operations over every
//! prediction (listing, claiming, statistics, counters, migration listings) fan out over the
//! shards and merge; on a single server the claim and statistics scripts take every shard at
//! once, since one server has no slots to respect.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use augur_core::store::{
    self, Attempt as DeliveryAttempt, Capabilities, ChangeStream, ClaimRequest, Created, Cursor,
    DeliveryLease, DeliveryOutcome, DeliveryState, Effect, IdempotencyRecord, Job, Lease,
    ListQuery, NewPrediction, Page, QueueStats, Record, Store, StreamEvent,
};
use augur_core::{AccountId, Prediction, PredictionId, Revision, Timestamp, Versioned, WorkerId};
use futures::future::try_join_all;
use redis::Value;
use tokio_util::sync::CancellationToken;

use crate::codec::{
    EncodedRecord, array, decode_record, effect_args, parse_id, parse_int, parse_time, text,
    unexpected,
};
use crate::config::RedisOptions;
use crate::conn::Conn;
use crate::error::Error;
use crate::layout::{
    LAYOUT_VERSION, Layout, Shard, created_bound, created_key, expiry_millis, parse_created_key,
};
use crate::scripts::SCRIPTS;

/// The Redis backend: the storage contract on one Redis (or Valkey) server or a Redis
/// Cluster, shared by any number of Augur processes.
///
/// Connect once per process and share it (`Arc<dyn Store>`); clones are cheap and share the
/// connection.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) options: RedisOptions,
    pub(crate) layout: Layout,
    pub(crate) conn: Conn,
    pub(crate) channel: String,
    durable: bool,
    /// Stops the announcement subscriptions at `close`.
    pub(crate) shutdown: CancellationToken,
    closed: AtomicBool,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.options.to_string())
            .field("durable", &self.inner.durable)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the store a `redis://` or `redis+cluster://` URL names (see
    /// [`RedisOptions::from_url`]).
    pub async fn connect(url: &str) -> Result<Self, store::Error> {
        Self::connect_with(RedisOptions::from_url(url)?).await
    }

    /// Connects with parsed options.
    ///
    /// Fails with [`store::Error::Unavailable`] when no server answers, and with
    /// [`store::Error::Other`] when the prefix holds data of an incompatible layout.
    pub async fn connect_with(options: RedisOptions) -> Result<Self, store::Error> {
        Ok(Self::connect_inner(options).await?)
    }

    async fn connect_inner(options: RedisOptions) -> Result<Self, Error> {
        let mut conn = Conn::connect(&options).await?;
        let layout = Layout::new(&options.prefix);
        check_layout(&mut conn, &layout, &options.prefix).await?;
        let durable = check_durability(&mut conn, &options).await;
        let channel = layout.channel();
        tracing::debug!(url = %options, durable, "connected to the Redis store");
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                layout,
                conn,
                channel,
                durable,
                shutdown: CancellationToken::new(),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The options it was connected with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }
}

/// Records the layout under the prefix, or checks the one recorded there.
async fn check_layout(conn: &mut Conn, layout: &Layout, prefix: &str) -> Result<(), Error> {
    let key = layout.layout_key();
    let found: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(LAYOUT_VERSION)
        .arg("NX")
        .arg("GET")
        .query_async(conn)
        .await?;
    match found {
        Some(found) if found != LAYOUT_VERSION => Err(Error::Layout {
            prefix: prefix.to_owned(),
            found,
            expected: LAYOUT_VERSION.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Durable only if every primary appends every write to its log and fsyncs it before
/// answering (`appendonly yes`, `appendfsync always`). Anything else, or a server that does
/// not let us read its configuration, counts as not durable.
async fn check_durability(conn: &mut Conn, options: &RedisOptions) -> bool {
    let all =
        |values: &[String], want: &str| !values.is_empty() && values.iter().all(|v| v == want);
    let append = conn.config_get("appendonly").await;
    let fsync = conn.config_get("appendfsync").await;
    match conn.config_get("maxmemory-policy").await {
        Ok(policies) if policies.iter().any(|p| p != "noeviction") => tracing::warn!(
            url = %options,
            ?policies,
            "Redis may evict keys when full (maxmemory-policy is not noeviction): \
             predictions and jobs can be lost"
        ),
        _ => {}
    }
    match (append, fsync) {
        (Ok(append), Ok(fsync)) => all(&append, "yes") && all(&fsync, "always"),
        (Err(e), _) | (_, Err(e)) => {
            tracing::info!(url = %options, error = %e, "cannot read the Redis configuration; assuming writes are not durable");
            false
        }
    }
}

/// What one attempt to insert a prediction found.
pub(crate) enum Attempt {
    Inserted,
    /// The id exists: its record, and whether it was created with the idempotency key given.
    Exists(Box<Versioned<Prediction>>, bool),
    /// The key reservation this insert was made under was fenced by another request.
    Fenced,
}

impl Inner {
    pub(crate) fn conn(&self) -> Result<Conn, Error> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        Ok(self.conn.clone())
    }

    pub(crate) fn single(&self) -> bool {
        matches!(self.conn, Conn::Single(..))
    }

    /// One insert attempt (see `CREATE` in [`crate::scripts`]).
    pub(crate) async fn create_once(
        &self,
        id: &PredictionId,
        key: Option<(&str, &str)>,
        record: &EncodedRecord,
        effects: &[String],
    ) -> Result<Attempt, Error> {
        let shard = self.layout.shard_of(id);
        let (name, nonce) = key.unwrap_or(("", ""));
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .create
            .key(self.layout.prediction_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(&self.channel)
            .arg(id.as_str())
            .arg(name)
            .arg(nonce)
            .arg(&record.args[..])
            .arg(effects)
            .invoke_async(&mut conn)
            .await?;
        let parts = array(&reply, "create")?;
        match (status(parts)?, parts) {
            ("inserted", _) => Ok(Attempt::Inserted),
            ("fenced", _) => Ok(Attempt::Fenced),
            ("exists", [_, record, now, bound]) => Ok(Attempt::Exists(
                Box::new(decode_record(record, parse_time(now, "server time")?)?),
                parse_int::<i64>(bound, "bound flag")? == 1,
            )),
            ("bad_effects", _) => Err(unexpected("the script refused the effects")),
            (other, _) => Err(unexpected(&format!("create: {other}"))),
        }
    }

    /// Reads a prediction, `None` if there is none.
    pub(crate) async fn get_opt(
        &self,
        id: &PredictionId,
    ) -> Result<Option<Versioned<Prediction>>, Error> {
        let shard = self.layout.shard_of(id);
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .get
            .key(self.layout.prediction_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(id.as_str())
            .invoke_async(&mut conn)
            .await?;
        if reply == Value::Nil {
            return Ok(None);
        }
        match array(&reply, "get")? {
            [record, now] => Ok(Some(decode_record(
                record,
                parse_time(now, "server time")?,
            )?)),
            _ => Err(unexpected("get: expected a record and the time")),
        }
    }

    /// Reads predictions of one shard (those that exist).
    async fn get_many(
        &self,
        shard: Shard,
        ids: &[PredictionId],
    ) -> Result<HashMap<PredictionId, Versioned<Prediction>>, Error> {
        let Some(first) = ids.first() else {
            return Ok(HashMap::new());
        };
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .get_many
            .key(self.layout.prediction_key(shard, first))
            .arg(self.layout.tag(shard))
            .arg(ids.iter().map(PredictionId::as_str).collect::<Vec<_>>())
            .invoke_async(&mut conn)
            .await?;
        let parts = array(&reply, "get_many")?;
        let (now, records) = parts
            .split_first()
            .ok_or_else(|| unexpected("get_many: empty reply"))?;
        let now = parse_time(now, "server time")?;
        let mut found = HashMap::with_capacity(records.len());
        for (id, record) in ids.iter().zip(records) {
            if *record != Value::Nil {
                found.insert(id.clone(), decode_record(record, now)?);
            }
        }
        Ok(found)
    }

    async fn update(
        &self,
        id: &PredictionId,
        expected: Revision,
        next: &Prediction,
        effects: &[Effect],
    ) -> Result<Revision, Error> {
        let effects = effect_args(effects)?;
        let record = EncodedRecord::encode(id, next)?;
        let shard = self.layout.shard_of(id);
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .update
            .key(self.layout.prediction_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(&self.channel)
            .arg(id.as_str())
            .arg(expected.0.to_string())
            .arg(&record.args[..])
            .arg(effects)
            .invoke_async(&mut conn)
            .await?;
        let parts = array(&reply, "update")?;
        match (status(parts)?, parts) {
            ("ok", [_, rev]) => Ok(Revision(parse_int(rev, "revision")?)),
            ("conflict", [_, rev]) => Err(Error::Conflict {
                expected,
                actual: Revision(parse_int(rev, "revision")?),
            }),
            ("notfound", _) => Err(Error::NotFound(id.clone())),
            ("bad_effects", _) => Err(unexpected("the script refused the effects")),
            (other, _) => Err(unexpected(&format!("update: {other}"))),
        }
    }

    async fn delete(&self, id: &PredictionId) -> Result<(), Error> {
        let shard = self.layout.shard_of(id);
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .delete
            .key(self.layout.prediction_key(shard, id))
            .arg(self.layout.tag(shard))
            .arg(&self.channel)
            .arg(id.as_str())
            .invoke_async(&mut conn)
            .await?;
        // The keys that pointed at it live in their own shards: forget each there, unless it
        // was reused for another prediction meanwhile.
        for name in array(&reply, "delete")? {
            let name = text(name, "key name")?;
            self.unbind_key(name, id).await?;
        }
        Ok(())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, Error> {
        let limit = clamp_limit(query.limit);
        let owner = query.owner.as_ref().map(AccountId::as_str);
        let status = query.status.map(|s| s.as_str());
        // Index members sort like `(created_at, id)`: the range is one lexicographic range.
        let mut upper = query.created_before.map(created_bound);
        if let Some(c) = &query.after {
            let cursor = created_key(c.created_at, &c.id);
            if upper.as_ref().is_none_or(|u| cursor < *u) {
                upper = Some(cursor);
            }
        }
        let max = upper.map_or_else(|| "+".to_owned(), |u| format!("({u}"));
        let min = query
            .created_after
            .map_or_else(|| "-".to_owned(), |a| format!("[{}", created_bound(a)));

        // Each shard's newest `limit + 1`, merged: the first `limit` are the page.
        let per_shard = try_join_all(self.layout.shards().map(|shard| {
            let (max, min) = (&max, &min);
            async move {
                let mut conn = self.conn()?;
                let members: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
                    .arg(self.layout.index(shard, owner, status))
                    .arg(max)
                    .arg(min)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit + 1)
                    .query_async(&mut conn)
                    .await?;
                Ok::<_, Error>(members.into_iter().map(move |m| (m, shard)))
            }
        }))
        .await?;
        let mut candidates: Vec<(String, Shard)> = per_shard.into_iter().flatten().collect();
        candidates.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        let more = candidates.len() > limit;
        candidates.truncate(limit);

        let mut wanted: BTreeMap<usize, Vec<PredictionId>> = BTreeMap::new();
        let mut parsed = Vec::with_capacity(candidates.len());
        for (member, shard) in &candidates {
            let (created_at, id) = parse_created_key(member)?;
            wanted.entry(shard.0).or_default().push(id.clone());
            parsed.push((created_at, id));
        }
        let fetched = try_join_all(
            wanted
                .iter()
                .map(|(shard, ids)| self.get_many(Shard(*shard), ids)),
        )
        .await?;
        let mut records: HashMap<PredictionId, Versioned<Prediction>> =
            fetched.into_iter().flatten().collect();

        let mut items = Vec::with_capacity(parsed.len());
        for (created_at, id) in &parsed {
            // Between reading the index and the records, a record may have been deleted or
            // changed so that it no longer matches: skip it (the cursor still moves past it).
            let Some(p) = records.remove(id) else {
                continue;
            };
            if p.value.created_at != *created_at
                || owner.is_some_and(|o| o != p.value.owner.as_str())
                || query.status.is_some_and(|s| s != p.value.status)
            {
                continue;
            }
            items.push(p);
        }
        let next = if more {
            parsed.last().map(|(created_at, id)| Cursor {
                created_at: *created_at,
                id: id.clone(),
            })
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> Result<Vec<PredictionId>, Error> {
        let limit = limit.min(MAX_LIMIT);
        let mut due: Vec<(i64, PredictionId, Shard)> = Vec::new();
        if limit > 0 {
            let per_shard = try_join_all(self.layout.shards().map(|shard| async move {
                let mut conn = self.conn()?;
                let found: Vec<(String, i64)> = redis::cmd("ZRANGEBYSCORE")
                    .arg(self.layout.expiry(shard))
                    .arg("-inf")
                    .arg(now.as_micros())
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut conn)
                    .await?;
                found
                    .into_iter()
                    .map(|(id, at)| {
                        let id = PredictionId::parse(&id).map_err(|e| Error::InvalidStored {
                            what: "prediction id",
                            detail: e.to_string(),
                        })?;
                        Ok((at, id, shard))
                    })
                    .collect::<Result<Vec<_>, Error>>()
            }))
            .await?;
            due = per_shard.into_iter().flatten().collect();
            due.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            due.truncate(limit);
        }

        let mut by_shard: BTreeMap<usize, Vec<&PredictionId>> = BTreeMap::new();
        for (_, id, shard) in &due {
            by_shard.entry(shard.0).or_default().push(id);
        }
        let done = try_join_all(by_shard.iter().map(|(shard, ids)| async move {
            let shard = Shard(*shard);
            let mut conn = self.conn()?;
            let reply: Value = SCRIPTS
                .expire
                .key(self.layout.expiry(shard))
                .arg(self.layout.tag(shard))
                .arg(&self.channel)
                .arg(now.as_micros())
                .arg(ids.iter().map(|id| id.as_str()).collect::<Vec<_>>())
                .invoke_async(&mut conn)
                .await?;
            array(&reply, "expire")?
                .iter()
                .map(parse_id)
                .collect::<Result<Vec<_>, Error>>()
        }))
        .await?;
        let done: std::collections::HashSet<PredictionId> = done.into_iter().flatten().collect();

        // Expired idempotency keys, in batches per shard.
        try_join_all(self.layout.shards().map(|shard| async move {
            loop {
                let mut conn = self.conn()?;
                let n: i64 = SCRIPTS
                    .expire_keys
                    .key(self.layout.key_expiry(shard))
                    .arg(self.layout.tag(shard))
                    .arg(now.as_micros())
                    .arg(1000)
                    .invoke_async(&mut conn)
                    .await?;
                if n < 1000 {
                    return Ok::<_, Error>(());
                }
            }
        }))
        .await?;

        Ok(due
            .into_iter()
            .map(|(_, id, _)| id)
            .filter(|id| done.contains(id))
            .collect())
    }

    async fn counters(&self) -> Result<Vec<(String, i64)>, Error> {
        let per_shard = try_join_all(self.layout.shards().map(|shard| async move {
            let mut conn = self.conn()?;
            let all: Vec<(String, i64)> = redis::cmd("HGETALL")
                .arg(self.layout.counters(shard))
                .query_async(&mut conn)
                .await?;
            Ok::<_, Error>(all)
        }))
        .await?;
        let mut sums: BTreeMap<String, i64> = BTreeMap::new();
        for (name, value) in per_shard.into_iter().flatten() {
            let sum = sums.entry(name).or_default();
            *sum = sum.wrapping_add(value);
        }
        Ok(sums.into_iter().collect())
    }

    async fn list_jobs(
        &self,
        after: Option<&PredictionId>,
        limit: usize,
    ) -> Result<Vec<Job>, Error> {
        let limit = clamp_limit(limit);
        let after = after.map_or("", PredictionId::as_str);
        let per_shard = try_join_all(self.layout.shards().map(|shard| async move {
            let mut conn = self.conn()?;
            let reply: Value = SCRIPTS
                .list_jobs
                .key(self.layout.jobs_by_id(shard))
                .arg(self.layout.tag(shard))
                .arg(after)
                .arg(limit)
                .invoke_async(&mut conn)
                .await?;
            array(&reply, "list_jobs")?
                .iter()
                .map(|job| match array(job, "job")? {
                    [id, queue, attempts, run_at] => Ok(Job {
                        prediction_id: parse_id(id)?,
                        queue: text(queue, "queue")?.to_owned(),
                        attempts: parse_int(attempts, "attempt count")?,
                        run_at: parse_time(run_at, "run time")?,
                    }),
                    _ => Err(unexpected("list_jobs: a job is not four values")),
                })
                .collect::<Result<Vec<_>, Error>>()
        }))
        .await?;
        let mut jobs: Vec<Job> = per_shard.into_iter().flatten().collect();
        jobs.sort_unstable_by(|a, b| a.prediction_id.cmp(&b.prediction_id));
        jobs.truncate(limit);
        Ok(jobs)
    }

    async fn import(&self, records: &[Record]) -> Result<(), Error> {
        // Each shard's writes run in order, shards side by side; counters (spread over every
        // shard) come last.
        let mut per_shard: Vec<Vec<ImportOp<'_>>> =
            self.layout.shards().map(|_| Vec::new()).collect();
        let mut counters = Vec::new();
        for record in records {
            match record {
                Record::Prediction(p) => {
                    let id = &p.value.id;
                    per_shard[self.layout.shard_of(id).0].push(ImportOp::Prediction(
                        id,
                        p.revision,
                        EncodedRecord::encode(id, &p.value)?,
                    ));
                }
                Record::Job(job) => {
                    per_shard[self.layout.shard_of(&job.prediction_id).0].push(ImportOp::Job(job));
                }
                Record::IdempotencyKey(key) => {
                    let name = Layout::key_name(&key.owner, &key.key);
                    per_shard[self.layout.shard_of_key(&name).0]
                        .push(ImportOp::Key(name.clone(), key));
                    per_shard[self.layout.shard_of(&key.prediction_id).0]
                        .push(ImportOp::KeyLink(name, &key.prediction_id));
                }
                Record::Counter { name, value } => counters.push((name, *value)),
                Record::Delivery(state) => {
                    per_shard[self.layout.shard_of(&state.delivery.prediction_id).0]
                        .push(ImportOp::Delivery(state));
                }
                Record::Event(id, event) => {
                    per_shard[self.layout.shard_of(id).0].push(ImportOp::Event(id, event));
                }
                other => {
                    return Err(Error::Config(format!(
                        "cannot import {other:?}: this build of the Redis store does not know the record kind"
                    )));
                }
            }
        }
        try_join_all(
            per_shard
                .into_iter()
                .enumerate()
                .map(|(shard, ops)| async move {
                    let shard = Shard(shard);
                    for op in ops {
                        self.import_one(shard, op).await?;
                    }
                    Ok::<_, Error>(())
                }),
        )
        .await?;
        for (name, value) in counters {
            // The value lives in shard 0; other shards' shares of it are dropped.
            try_join_all(self.layout.shards().map(|shard| async move {
                let mut conn = self.conn()?;
                if shard.0 == 0 {
                    let _: () = redis::cmd("HSET")
                        .arg(self.layout.counters(shard))
                        .arg(name)
                        .arg(value)
                        .query_async(&mut conn)
                        .await?;
                } else {
                    let _: () = redis::cmd("HDEL")
                        .arg(self.layout.counters(shard))
                        .arg(name)
                        .query_async(&mut conn)
                        .await?;
                }
                Ok::<_, Error>(())
            }))
            .await?;
        }
        // Whatever was derived from earlier announcements is stale now.
        let mut conn = self.conn()?;
        let _: () = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg("r")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn import_one(&self, shard: Shard, op: ImportOp<'_>) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let tag = self.layout.tag(shard);
        match op {
            ImportOp::Prediction(id, revision, record) => {
                let _: Value = SCRIPTS
                    .import_prediction
                    .key(self.layout.prediction_key(shard, id))
                    .arg(tag)
                    .arg(id.as_str())
                    .arg(revision.0.to_string())
                    .arg(&record.args[..])
                    .invoke_async(&mut conn)
                    .await?;
            }
            ImportOp::Job(job) => {
                let _: Value = SCRIPTS
                    .import_job
                    .key(self.layout.job_key(shard, &job.prediction_id))
                    .arg(tag)
                    .arg(job.prediction_id.as_str())
                    .arg(&job.queue)
                    .arg(job.attempts)
                    .arg(job.run_at.as_micros())
                    .invoke_async(&mut conn)
                    .await?;
            }
            ImportOp::Key(name, key) => {
                let _: Value = SCRIPTS
                    .import_key
                    .key(self.layout.idempotency_key(shard, &name))
                    .arg(tag)
                    .arg(&name)
                    .arg(key.prediction_id.as_str())
                    .arg(&key.fingerprint)
                    .arg(key.expires_at.as_micros())
                    .arg(expiry_millis(key.expires_at))
                    .invoke_async(&mut conn)
                    .await?;
            }
            ImportOp::Delivery(state) => self.import_delivery(shard, state).await?,
            ImportOp::Event(id, event) => self.import_event(shard, id, event).await?,
            ImportOp::KeyLink(name, id) => {
                let _: () = redis::cmd("SADD")
                    .arg(self.layout.prediction_keys_set(shard, id))
                    .arg(&name)
                    .query_async(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }
}

enum ImportOp<'a> {
    Prediction(&'a PredictionId, Revision, EncodedRecord),
    Job(&'a Job),
    Key(String, &'a IdempotencyRecord),
    /// Records on the prediction's shard that the key points at it, so `delete` finds it.
    KeyLink(String, &'a PredictionId),
    Delivery(&'a DeliveryState),
    Event(&'a PredictionId, &'a StreamEvent),
}

/// The largest page any listing reads at once: large enough for any sane caller, and small
/// enough to stay an exact integer through Lua's doubles.
const MAX_LIMIT: usize = u32::MAX as usize;

/// A listing's limit: at least 1 (as the contract says), at most [`MAX_LIMIT`].
pub(crate) fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_LIMIT)
}

/// The status word a script reply starts with.
pub(crate) fn status(parts: &[Value]) -> Result<&str, Error> {
    text(
        parts.first().ok_or_else(|| unexpected("an empty reply"))?,
        "status",
    )
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        crate::error::BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: self.inner.durable,
            shared: true,
            native_ttl: true,
            change_notifications: true,
        }
    }

    async fn create(&self, new: NewPrediction<'_>) -> store::Result<Created> {
        Ok(self.inner.create(new).await?)
    }

    async fn get(&self, id: &PredictionId) -> store::Result<Versioned<Prediction>> {
        self.inner
            .get_opt(id)
            .await?
            .ok_or_else(|| store::Error::NotFound(id.clone()))
    }

    async fn update(
        &self,
        id: &PredictionId,
        expected: Revision,
        next: &Prediction,
        effects: &[Effect],
    ) -> store::Result<Revision> {
        Ok(self.inner.update(id, expected, next, effects).await?)
    }

    async fn delete(&self, id: &PredictionId) -> store::Result<()> {
        Ok(self.inner.delete(id).await?)
    }

    async fn list(&self, query: &ListQuery) -> store::Result<Page> {
        Ok(self.inner.list(query).await?)
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> store::Result<Vec<PredictionId>> {
        Ok(self.inner.expire(now, limit).await?)
    }

    async fn claim_jobs(&self, request: &ClaimRequest) -> store::Result<Vec<Lease>> {
        Ok(self.inner.claim(request).await?)
    }

    async fn renew_lease(&self, lease: &Lease, extend_by: Duration) -> store::Result<Lease> {
        Ok(self.inner.renew(lease, extend_by).await?)
    }

    async fn retry_job(&self, lease: &Lease, run_at: Timestamp) -> store::Result<()> {
        Ok(self.inner.requeue(lease, run_at, false).await?)
    }

    async fn release_job(&self, lease: &Lease, run_at: Timestamp) -> store::Result<()> {
        Ok(self.inner.requeue(lease, run_at, true).await?)
    }

    async fn complete_job(&self, id: &PredictionId) -> store::Result<()> {
        Ok(self.inner.complete(id).await?)
    }

    async fn queue_stats(&self) -> store::Result<QueueStats> {
        Ok(self.inner.queue_stats().await?)
    }

    async fn counters(&self) -> store::Result<Vec<(String, i64)>> {
        Ok(self.inner.counters().await?)
    }

    async fn subscribe(&self) -> store::Result<Option<ChangeStream>> {
        Ok(Some(self.inner.subscribe().await?))
    }

    async fn list_jobs(
        &self,
        after: Option<&PredictionId>,
        limit: usize,
    ) -> store::Result<Vec<Job>> {
        Ok(self.inner.list_jobs(after, limit).await?)
    }

    async fn list_idempotency_keys(
        &self,
        after: Option<(&AccountId, &str)>,
        limit: usize,
    ) -> store::Result<Vec<IdempotencyRecord>> {
        Ok(self.inner.list_keys(after, limit).await?)
    }

    async fn import(&self, records: &[Record]) -> store::Result<()> {
        Ok(self.inner.import(records).await?)
    }

    async fn claim_deliveries(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
    ) -> store::Result<Vec<DeliveryLease>> {
        Ok(self.inner.claim_deliveries(worker, lease_for, max).await?)
    }

    async fn finish_delivery(
        &self,
        lease: &DeliveryLease,
        attempt: &DeliveryAttempt,
        outcome: DeliveryOutcome,
    ) -> store::Result<()> {
        Ok(self.inner.finish_delivery(lease, attempt, outcome).await?)
    }

    async fn list_deliveries(&self, id: &PredictionId) -> store::Result<Vec<DeliveryState>> {
        Ok(self.inner.list_deliveries(id).await?)
    }

    async fn redeliver(&self, id: &PredictionId, delivery_id: &str) -> store::Result<()> {
        Ok(self.inner.redeliver(id, delivery_id).await?)
    }

    async fn read_events(
        &self,
        id: &PredictionId,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> store::Result<Vec<StreamEvent>> {
        Ok(self.inner.read_events(id, after, limit).await?)
    }

    /// Stops the announcement subscriptions; later operations fail as unavailable. The
    /// connection itself closes when the last clone is dropped. Every acknowledged write is
    /// already on the server, so nothing needs flushing.
    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.shutdown.cancel();
    }
}
