//! [`RedisStore`]: connecting (layout and durability checks) and [`RecordStore`], which hands
//! each operation to its script (see [`crate::scripts`]).
//!
//! A write runs one script on its account's shard. A lookup by key runs one script on the
//! shard of the key's partition, and a second on the owner's shard when it meets a
//! forwarding entry there. Listings and retention fan out over the shards and merge.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use augur_core::store::{
    self, Cursor, Effect, Key, ListQuery, Op, Page, Partition, RecordStore, Stored, Write, Written,
};
use augur_core::{AccountId, Revision, Timestamp};
use futures::future::try_join_all;
use redis::Value;
use tokio_util::sync::CancellationToken;

use crate::codec::{
    RecordArgs, array, decode_record, event_member, parse_account, parse_int, parse_kind, status,
    text, unexpected,
};
use crate::config::RedisOptions;
use crate::conn::Conn;
use crate::error::Error;
use crate::layout::{
    LAYOUT_1, LAYOUT_VERSION, Layout, Shard, created_bound, created_key, parse_created_key,
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
    pub(crate) durable: bool,
    /// Stops the announcement subscriptions at `close`.
    pub(crate) shutdown: CancellationToken,
    pub(crate) closed: AtomicBool,
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
    /// [`store::Error::Other`] when the prefix holds data of another layout (layout 1, written
    /// before the storage contract's second version, included: see the crate's README).
    pub async fn connect_with(options: RedisOptions) -> Result<Self, store::Error> {
        Ok(Self::connect_inner(options, false).await?)
    }

    /// Connects to a store it will only read, such as a read-only replica
    /// (`--replica-read-only yes`): connecting writes nothing (the layout is checked, not
    /// recorded), so that it works where writes are refused. Reads run scripts flagged
    /// `no-writes`, which replicas accept; the caller must not write through it.
    pub async fn connect_read_only(url: &str) -> Result<Self, store::Error> {
        Ok(Self::connect_inner(RedisOptions::from_url(url)?, true).await?)
    }

    async fn connect_inner(options: RedisOptions, read_only: bool) -> Result<Self, Error> {
        let mut conn = Conn::connect(&options).await?;
        let layout = Layout::new(&options.prefix);
        if read_only {
            check_layout_read_only(&mut conn, &layout, &options.prefix).await?;
        } else {
            check_layout(&mut conn, &layout, &options.prefix).await?;
        }
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

/// Records the layout under the prefix, or checks the one recorded there. Layout 1 is
/// refused with what to do about it: reading it as layout 2 would find nothing (its keys
/// are named and placed otherwise) and writing would mix the two.
async fn check_layout(conn: &mut Conn, layout: &Layout, prefix: &str) -> Result<(), Error> {
    let key = layout.layout_key();
    let found: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(LAYOUT_VERSION)
        .arg("NX")
        .arg("GET")
        .query_async(conn)
        .await?;
    refuse_other_layout(found, prefix)
}

/// [`check_layout`] without writing: a prefix with no layout recorded yet (an empty store) is
/// read as this build's.
async fn check_layout_read_only(
    conn: &mut Conn,
    layout: &Layout,
    prefix: &str,
) -> Result<(), Error> {
    let found: Option<String> = redis::cmd("GET")
        .arg(layout.layout_key())
        .query_async(conn)
        .await?;
    refuse_other_layout(found, prefix)
}

fn refuse_other_layout(found: Option<String>, prefix: &str) -> Result<(), Error> {
    match found {
        Some(found) if found != LAYOUT_VERSION => Err(Error::Layout {
            prefix: prefix.to_owned(),
            advice: if found == LAYOUT_1 {
                ": layout 1 was written by an Augur release before storage contract 2 and is \
                 not upgraded in place. With that release, copy the data out (`augur migrate \
                 --from <this redis URL> --to embedded://<dir>`), then with this release copy it \
                 into a fresh prefix (`augur migrate --from embedded://<dir> --to <redis URL \
                 with ?prefix=<new prefix>>`) and point Augur at the new prefix; or delete the \
                 old prefix's keys if its data is not needed"
            } else {
                ": use another prefix, or the Augur release that wrote it"
            },
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
             records and queue items can be lost"
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

/// What a lookup by key found in one shard.
pub(crate) enum Found<T> {
    /// The thing looked for.
    Here(T),
    /// A forwarding entry: the record lives in this owner's shard.
    Forward(AccountId),
}

/// The largest page any listing reads at once: large enough for any sane caller, and small
/// enough to stay an exact integer through Lua's doubles.
const MAX_LIMIT: usize = u32::MAX as usize;

/// How many index entries one shard's listing script looks at before it returns a short page
/// (whose cursor continues after the last entry it looked at), so that a filter the index
/// does not cover cannot keep Redis busy.
const LIST_SCAN: usize = 4096;

/// A limit: at least 1 (as the contract says), at most [`MAX_LIMIT`].
pub(crate) fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_LIMIT)
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

    /// Where the fairness clock of a shard's items lives: one clock for every shard on a
    /// single server (shard 0's), each shard's own in a cluster.
    pub(crate) fn clock_tag(&self, shard: Shard) -> &str {
        if self.single() {
            self.layout.tag(Shard(0))
        } else {
            self.layout.tag(shard)
        }
    }

    /// Runs `call` on the shard of the key's partition and, if it finds a forwarding entry
    /// there, on the owner's shard.
    pub(crate) async fn follow<T, F, Fut>(&self, key: &Key, call: F) -> Result<Option<T>, Error>
    where
        F: Fn(Shard, bool) -> Fut,
        Fut: std::future::Future<Output = Result<Option<Found<T>>, Error>>,
    {
        let home = self.layout.shard(key.partition);
        match call(home, true).await? {
            None => Ok(None),
            Some(Found::Here(found)) => Ok(Some(found)),
            Some(Found::Forward(owner)) => {
                let shard = self.layout.shard_of_account(&owner);
                if shard == home {
                    return Ok(None);
                }
                match call(shard, false).await? {
                    Some(Found::Here(found)) => Ok(Some(found)),
                    _ => Ok(None),
                }
            }
        }
    }

    /// Claims an id whose record lives outside its partition's shard (see `FORWARD`).
    async fn forward(&self, home: Shard, key: &Key, owner: &AccountId) -> Result<bool, Error> {
        let mut conn = self.conn()?;
        let claimed: i64 = SCRIPTS
            .forward
            .key(self.layout.tag(home))
            .arg(key.kind.as_str())
            .arg(&key.id)
            .arg(owner.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(claimed == 1)
    }

    pub(crate) async fn write(&self, write: &Write) -> Result<Written, Error> {
        write.check()?;
        let shard = self.layout.shard(write.partition());
        // A record whose id lies in another shard claims the id there first (a forwarding
        // entry); a refusal becomes that operation's `Exists`, checked in order by the script.
        let mut refused = vec![false; write.ops.len()];
        for (i, op) in write.ops.iter().enumerate() {
            if let Op::Insert(record) = op {
                let home = self.layout.shard(record.key.partition);
                if home != shard && !self.forward(home, &record.key, &write.account).await? {
                    refused[i] = true;
                    break;
                }
            }
        }

        let mut invocation = SCRIPTS.write.prepare_invoke();
        invocation
            .key(self.layout.tag(shard))
            .arg(self.clock_tag(shard))
            .arg(&self.channel)
            .arg(write.account.as_str())
            // Items are stamped with the writer's clock, as the memory store does: it saves
            // the server's clock in the common write that queues a job already leased.
            .arg(Timestamp::now().as_micros())
            .arg(write.ops.len());
        for (op, refused) in write.ops.iter().zip(&refused) {
            let (kind, expected, record) = match op {
                Op::Insert(record) => ("I", String::new(), Some(record)),
                Op::Update { record, expected } => ("U", expected.0.to_string(), Some(record)),
                Op::Delete(_) => ("D", String::new(), None),
            };
            let key = op.key();
            invocation
                .arg(kind)
                .arg(key.kind.as_str())
                .arg(&key.id)
                .arg(key.partition.0)
                .arg(if *refused { "1" } else { "0" });
            if let Some(record) = record {
                invocation.arg(expected);
                RecordArgs::new(record).push(&mut invocation);
            }
        }
        invocation.arg(write.effects.len());
        let mut next_index: HashMap<&Key, u64> = HashMap::new();
        for effect in &write.effects {
            match effect {
                Effect::Enqueue(item) => {
                    let (worker, token, expires) = match &item.claimed {
                        Some(c) => (
                            c.worker.as_str(),
                            c.token.0.to_string(),
                            c.expires_at.as_micros().to_string(),
                        ),
                        None => ("", String::new(), String::new()),
                    };
                    invocation
                        .arg("Q")
                        .arg(item.lane.as_str())
                        .arg(&item.id)
                        .arg(item.group.kind.as_str())
                        .arg(&item.group.id)
                        .arg(item.group.partition.0)
                        .arg(&item.topic)
                        .arg(&item.payload)
                        .arg(item.run_at.as_micros())
                        .arg(if item.replace { "1" } else { "0" })
                        .arg(if item.claimed.is_some() { "1" } else { "0" })
                        .arg(worker)
                        .arg(token)
                        .arg(expires);
                }
                Effect::Complete { lane, id } => {
                    invocation.arg("C").arg(lane.as_str()).arg(id);
                }
                Effect::Count { name, delta, limit } => {
                    invocation
                        .arg("N")
                        .arg(name)
                        .arg(*delta)
                        .arg(limit.map_or_else(String::new, |l| l.to_string()));
                }
                Effect::AppendEvents { stream, events } => {
                    let revision = write.revision_of(stream).ok_or_else(|| {
                        unexpected("events for a record the write does not write")
                    })?;
                    let index = next_index.entry(stream).or_default();
                    invocation
                        .arg("V")
                        .arg(stream.kind.as_str())
                        .arg(&stream.id)
                        .arg(events.len());
                    for event in events {
                        invocation.arg(event_member(revision, *index, event)?);
                        *index += 1;
                    }
                }
                Effect::Post(entry) => {
                    invocation
                        .arg("L")
                        .arg(&entry.id)
                        .arg(entry.delta)
                        .arg(entry.held)
                        .arg(serde_json::to_string(entry).map_err(Error::Encode)?);
                }
            }
        }
        let mut conn = self.conn()?;
        let reply: Value = invocation.invoke_async(&mut conn).await?;
        let (word, rest) = status(&reply, "write")?;
        let op_key = |at: &Value| -> Result<Key, Error> {
            let i: usize = parse_int(at, "operation")?;
            write
                .ops
                .get(i.wrapping_sub(1))
                .map(|op| op.key().clone())
                .ok_or_else(|| unexpected("write: no such operation"))
        };
        let refusal = match (word, rest) {
            ("ok", skipped) => {
                return Ok(Written {
                    revisions: write
                        .ops
                        .iter()
                        .map(|op| match op {
                            Op::Insert(_) => Some(Revision::FIRST),
                            Op::Update { expected, .. } => Some(expected.next()),
                            Op::Delete(_) => None,
                        })
                        .collect(),
                    skipped_entries: skipped
                        .iter()
                        .map(|id| text(id, "entry id").map(str::to_owned))
                        .collect::<Result<_, _>>()?,
                });
            }
            ("exists", [at]) => store::Error::Exists(op_key(at)?),
            ("notfound", [at]) => store::Error::NotFound(op_key(at)?),
            ("conflict", [at, actual]) => {
                let Op::Update { expected, .. } = &write.ops[parse_int::<usize>(at, "op")? - 1]
                else {
                    return Err(unexpected(
                        "write: a conflict on an operation that is no update",
                    ));
                };
                store::Error::Conflict {
                    key: op_key(at)?,
                    expected: *expected,
                    actual: Revision(parse_int(actual, "revision")?),
                }
            }
            ("credits", [available, needed]) => store::Error::InsufficientCredits {
                account: write.account.clone(),
                available: parse_int(available, "available")?,
                needed: parse_int(needed, "needed")?,
            },
            ("limit", [counter, limit]) => store::Error::LimitReached {
                counter: text(counter, "counter")?.to_owned(),
                limit: parse_int(limit, "limit")?,
            },
            (other, _) => return Err(unexpected(&format!("write: {other}"))),
        };
        Err(Error::Contract(refusal))
    }

    async fn get_in(
        &self,
        shard: Shard,
        key: &Key,
        follow: bool,
    ) -> Result<Option<Found<Arc<Stored>>>, Error> {
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .get
            .key(self.layout.tag(shard))
            .arg(key.kind.as_str())
            .arg(&key.id)
            .arg(if follow { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        if reply == Value::Nil {
            return Ok(None);
        }
        let (word, rest) = status(&reply, "get")?;
        match (word, rest) {
            ("rec", [record]) => Ok(Some(Found::Here(decode_record(record)?))),
            ("fwd", [owner]) => Ok(Some(Found::Forward(parse_account(text(owner, "owner")?)?))),
            (other, _) => Err(unexpected(&format!("get: {other}"))),
        }
    }

    pub(crate) async fn get(&self, key: &Key) -> Result<Option<Arc<Stored>>, Error> {
        self.follow(key, |shard, follow| self.get_in(shard, key, follow))
            .await
    }

    /// Records of one kind in one shard, by id; those that are absent are left out.
    pub(crate) async fn get_many(
        &self,
        shard: Shard,
        kind: &str,
        ids: &[String],
    ) -> Result<Vec<Arc<Stored>>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .get_many
            .key(self.layout.tag(shard))
            .arg(kind)
            .arg(ids)
            .invoke_async(&mut conn)
            .await?;
        array(&reply, "get_many")?
            .iter()
            .filter(|v| **v != Value::Nil)
            .map(decode_record)
            .collect()
    }

    pub(crate) async fn list(&self, query: &ListQuery) -> Result<Page, Error> {
        let limit = clamp_limit(query.limit);
        let want = limit.saturating_add(1).min(MAX_LIMIT);
        // Index members sort like `(created_at, id)`: the range is one lexicographic range,
        // walked outward from the cursor (down going forward, up going backward).
        let backward = query.after.as_ref().is_some_and(|c| c.backward);
        let cursor = query
            .after
            .as_ref()
            .map(|c| created_key(c.created_at, &c.id));
        let before = query.created_before.map(created_bound);
        let after = query.created_after.map(created_bound);
        let (max, min) = if backward {
            let min = match (&cursor, after) {
                (Some(c), Some(a)) if a > *c => format!("[{a}"),
                (Some(c), _) => format!("({c}"),
                (None, a) => a.map_or_else(|| "-".to_owned(), |a| format!("[{a}")),
            };
            (
                before.map_or_else(|| "+".to_owned(), |b| format!("({b}")),
                min,
            )
        } else {
            let mut upper = before;
            if let Some(c) = cursor
                && upper.as_ref().is_none_or(|u| c < *u)
            {
                upper = Some(c);
            }
            (
                upper.map_or_else(|| "+".to_owned(), |u| format!("({u}")),
                after.map_or_else(|| "-".to_owned(), |a| format!("[{a}")),
            )
        };
        let owner = query.owner.as_ref().map(AccountId::as_str);
        let index = match (&query.parent, owner, &query.status) {
            (Some(parent), _, _) => format!("p:{parent}"),
            (None, Some(o), Some(s)) => format!("os:{o}:{s}"),
            (None, Some(o), None) => format!("o:{o}"),
            (None, None, Some(s)) => format!("s:{s}"),
            (None, None, None) => "a".to_owned(),
        };
        let filter = |v: &Option<String>| v.as_ref().map_or_else(String::new, |s| format!("+{s}"));
        let (status_filter, parent_filter) = (filter(&query.status), filter(&query.parent));
        // An owner's records are all in its shard; otherwise every shard has some.
        let shards: Vec<Shard> = match &query.owner {
            Some(o) => vec![self.layout.shard_of_account(o)],
            None => self.layout.shards().collect(),
        };
        let per_shard = try_join_all(shards.iter().map(|shard| {
            let (max, min, index) = (&max, &min, &index);
            let (status_filter, parent_filter) = (&status_filter, &parent_filter);
            async move {
                let mut conn = self.conn()?;
                let reply: Value = SCRIPTS
                    .list
                    .key(self.layout.tag(*shard))
                    .arg(query.kind.as_str())
                    .arg(index)
                    .arg(max)
                    .arg(min)
                    .arg(want)
                    .arg(LIST_SCAN.max(want))
                    .arg(owner.unwrap_or(""))
                    .arg(status_filter)
                    .arg(parent_filter)
                    .arg(if backward { "b" } else { "f" })
                    .invoke_async(&mut conn)
                    .await?;
                let [exhausted, last, records] = array(&reply, "list")? else {
                    return Err(unexpected("list: expected three values"));
                };
                let records = array(records, "list records")?
                    .iter()
                    .map(decode_record)
                    .collect::<Result<Vec<_>, Error>>()?;
                // Where this shard's answer is complete down to: nowhere left if it read
                // its whole range, else the last entry it looked at.
                let frontier = if text(exhausted, "exhausted")? == "1" {
                    None
                } else {
                    Some(text(last, "last entry")?.to_owned())
                };
                Ok::<_, Error>((records, frontier))
            }
        }))
        .await?;
        // Entries above the highest frontier (below the lowest, going backward) are complete
        // in every shard: the page is the `limit` of them nearest the cursor.
        let frontiers = per_shard.iter().filter_map(|(_, f)| f.clone());
        let frontier = if backward {
            frontiers.min()
        } else {
            frontiers.max()
        };
        let mut candidates: Vec<(String, Arc<Stored>)> = per_shard
            .into_iter()
            .flat_map(|(records, _)| records)
            .map(|s| (created_key(s.record.created_at, &s.record.key.id), s))
            .filter(|(position, _)| {
                frontier.as_ref().is_none_or(|f| {
                    if backward {
                        position <= f
                    } else {
                        position >= f
                    }
                })
            })
            .collect();
        if backward {
            candidates.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        } else {
            candidates.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        }
        let more = candidates.len() > limit;
        candidates.truncate(limit);
        let next = if more {
            candidates.last().map(|(_, s)| Cursor {
                created_at: s.record.created_at,
                id: s.record.key.id.clone(),
                backward,
            })
        } else if let Some(f) = frontier {
            let (created_at, id) = parse_created_key(&f)?;
            Some(Cursor {
                created_at,
                id,
                backward,
            })
        } else {
            None
        };
        if backward {
            candidates.reverse();
        }
        Ok(Page {
            items: candidates.into_iter().map(|(_, s)| s).collect(),
            next,
        })
    }

    pub(crate) async fn expire(&self, now: Timestamp, limit: usize) -> Result<Vec<Key>, Error> {
        let limit = limit.min(MAX_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
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
            Ok::<_, Error>(found.into_iter().map(move |(m, at)| (at, m, shard)))
        }))
        .await?;
        let mut due: Vec<(i64, String, Shard)> = per_shard.into_iter().flatten().collect();
        due.sort_unstable();
        due.truncate(limit);
        let mut by_shard: BTreeMap<Shard, Vec<&str>> = BTreeMap::new();
        for (_, member, shard) in &due {
            by_shard.entry(*shard).or_default().push(member);
        }
        let done = try_join_all(by_shard.iter().map(|(shard, members)| async move {
            let mut conn = self.conn()?;
            let reply: Value = SCRIPTS
                .expire
                .key(self.layout.tag(*shard))
                .arg(&self.channel)
                .arg(now.as_micros())
                .arg(members)
                .invoke_async(&mut conn)
                .await?;
            array(&reply, "expire")?
                .iter()
                .map(|key| match array(key, "expired key")? {
                    [kind, id, partition] => Ok(Key {
                        kind: parse_kind(text(kind, "kind")?)?,
                        id: text(id, "record id")?.to_owned(),
                        partition: Partition(parse_int(partition, "partition")?),
                    }),
                    _ => Err(unexpected("expire: a key is not three values")),
                })
                .collect::<Result<Vec<_>, Error>>()
        }))
        .await?;
        let done: HashMap<(String, String), Key> = done
            .into_iter()
            .flatten()
            .map(|k| ((k.kind.as_str().to_owned(), k.id.clone()), k))
            .collect();
        // In due order, as the memory store returns them.
        Ok(due
            .iter()
            .filter_map(|(_, member, _)| {
                let (kind, id) = member.split_once(':')?;
                done.get(&(kind.to_owned(), id.to_owned())).cloned()
            })
            .collect())
    }
}

#[async_trait]
impl RecordStore for RedisStore {
    async fn write(&self, write: &Write) -> store::Result<Written> {
        Ok(self.inner.write(write).await?)
    }

    async fn get(&self, key: &Key) -> store::Result<Option<Arc<Stored>>> {
        Ok(self.inner.get(key).await?)
    }

    async fn list(&self, query: &ListQuery) -> store::Result<Page> {
        Ok(self.inner.list(query).await?)
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> store::Result<Vec<Key>> {
        Ok(self.inner.expire(now, limit).await?)
    }
}
