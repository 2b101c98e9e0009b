//! [`AdminStore`]: capabilities, counters, announcements, and export and import by section
//! (for `augur migrate`).
//!
//! Exports walk per-shard sorted sets of ids (`T:ids:<kind>` for records and event logs,
//! `T:qi:<lane>` for items, `T:la` for ledgers) in lexicographic order, merged across shards,
//! so a page costs a few round trips whatever the store's size. Imports write each piece into
//! its owner's shard with the same scripts' helpers the writes use, then announce `Resync`.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use augur_core::service::counters;
use augur_core::store::{
    self, AdminStore, Capabilities, ChangeStream, Exported, Item, Key, Kind, Lane, Position,
    Section,
};
use augur_core::{AccountId, Revision};
use futures::future::try_join_all;
use redis::Value;

use crate::codec::{
    RecordArgs, array, bytes, decode_event, decode_item, decode_ledger, event_member,
    ledger_member, opt_text, parse_account, unexpected,
};
use crate::error::Error;
use crate::layout::{Shard, event_position};
use crate::scripts::SCRIPTS;
use crate::store::{Inner, RedisStore, clamp_limit};

/// How many ids each shard contributes to one round of an export walk (at least).
const WALK: usize = 256;

impl Inner {
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

    /// The next ids after `after` in the sorted sets `key(shard)`, merged across shards, as
    /// far as they are complete: up to the smallest last id among the shards that returned a
    /// full batch. Empty once every shard is exhausted.
    async fn walk(
        &self,
        key: &(dyn Fn(Shard) -> String + Sync),
        after: Option<&str>,
        batch: usize,
    ) -> Result<Vec<(String, Shard)>, Error> {
        let min = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let per_shard = try_join_all(self.layout.shards().map(|shard| {
            let min = &min;
            async move {
                let mut conn = self.conn()?;
                let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
                    .arg(key(shard))
                    .arg(min)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(batch)
                    .query_async(&mut conn)
                    .await?;
                Ok::<_, Error>((shard, ids))
            }
        }))
        .await?;
        let cutoff = per_shard
            .iter()
            .filter(|(_, ids)| ids.len() >= batch)
            .filter_map(|(_, ids)| ids.last().cloned())
            .min();
        let mut all: Vec<(String, Shard)> = per_shard
            .into_iter()
            .flat_map(|(shard, ids)| ids.into_iter().map(move |id| (id, shard)))
            .filter(|(id, _)| cutoff.as_ref().is_none_or(|c| id <= c))
            .collect();
        all.sort_unstable();
        Ok(all)
    }

    async fn export(
        &self,
        section: Section,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Exported>, Error> {
        let limit = clamp_limit(limit).min(1 << 16);
        let batch = WALK.max(limit);
        let mut out = Vec::new();
        match section {
            Section::Records => {
                let (first, mut cursor) = match after {
                    Some(Position::Record(kind, id)) => (*kind, Some(id.clone())),
                    _ => (Kind::ALL[0], None),
                };
                for kind in Kind::ALL.into_iter().filter(|k| *k >= first) {
                    if kind != first {
                        cursor = None;
                    }
                    while out.len() < limit {
                        let key = |s: Shard| self.layout.ids(s, kind.as_str());
                        let ids = self.walk(&key, cursor.as_deref(), batch).await?;
                        let Some((last, _)) = ids.last() else { break };
                        cursor = Some(last.clone());
                        let found = self.by_shard(&ids, |shard, ids| async move {
                            let records = self.get_many(shard, kind.as_str(), &ids).await?;
                            Ok(records
                                .into_iter()
                                .map(|s| (s.record.key.id.clone(), s))
                                .collect())
                        });
                        let mut found = found.await?;
                        for (id, _) in &ids {
                            if let Some(stored) = found.remove(id) {
                                out.push(Exported::Record {
                                    record: Box::new(stored.record.clone()),
                                    revision: stored.revision,
                                });
                                if out.len() == limit {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            Section::Items => {
                let (first, mut cursor) = match after {
                    Some(Position::Item(lane, id)) => (*lane, Some(id.clone())),
                    _ => (Lane::ALL[0], None),
                };
                for lane in Lane::ALL.into_iter().filter(|l| *l >= first) {
                    if lane != first {
                        cursor = None;
                    }
                    while out.len() < limit {
                        let key = |s: Shard| self.layout.item_ids(s, lane.as_str());
                        let ids = self.walk(&key, cursor.as_deref(), batch).await?;
                        let Some((last, _)) = ids.last() else { break };
                        cursor = Some(last.clone());
                        let mut found = self
                            .by_shard(&ids, |shard, ids| async move {
                                Ok(self
                                    .items_by_id(shard, lane, &ids)
                                    .await?
                                    .into_iter()
                                    .map(|i| (i.id.clone(), i))
                                    .collect())
                            })
                            .await?;
                        for (id, _) in &ids {
                            if let Some(item) = found.remove(id) {
                                out.push(Exported::Item(Box::new(item)));
                                if out.len() == limit {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            Section::Events => {
                let (first, mut cursor, mut from) = match after {
                    Some(Position::Event(kind, id, rev, index)) => {
                        (*kind, Some(id.clone()), Some((id.clone(), *rev, *index)))
                    }
                    _ => (Kind::ALL[0], None, None),
                };
                for kind in Kind::ALL.into_iter().filter(|k| *k >= first) {
                    if kind != first {
                        cursor = None;
                    }
                    // The rest of the log the last page stopped in.
                    if let Some((id, rev, index)) = from.take()
                        && let Some(shard) = self.shard_holding(kind, &id).await?
                    {
                        let min = format!("[{}", event_position(rev.0, u64::from(index) + 1));
                        self.events_of(shard, kind, &[id], &min, limit - out.len(), &mut out)
                            .await?;
                    }
                    while out.len() < limit {
                        let key = |s: Shard| self.layout.ids(s, kind.as_str());
                        let ids = self.walk(&key, cursor.as_deref(), batch).await?;
                        let Some((last, _)) = ids.last() else { break };
                        cursor = Some(last.clone());
                        // Each shard's events of its ids, up to what the page still needs;
                        // merged in id order. A shard that stopped early already gave more
                        // than the page holds before the ids it did not look at.
                        let left = limit - out.len();
                        let mut per_id = self
                            .by_shard(&ids, |shard, ids| async move {
                                let mut got = Vec::new();
                                self.events_of(shard, kind, &ids, "-", left, &mut got)
                                    .await?;
                                let mut by_id: HashMap<String, Vec<Exported>> = HashMap::new();
                                for e in got {
                                    if let Exported::Event { stream, .. } = &e {
                                        by_id.entry(stream.id.clone()).or_default().push(e);
                                    }
                                }
                                Ok(by_id)
                            })
                            .await?;
                        'ids: for (id, _) in &ids {
                            for e in per_id.remove(id).unwrap_or_default() {
                                out.push(e);
                                if out.len() == limit {
                                    break 'ids;
                                }
                            }
                        }
                    }
                }
            }
            Section::Ledger => {
                let (mut cursor, mut from) = match after {
                    Some(Position::Ledger(account, seq)) => {
                        (Some(account.to_string()), Some((account.clone(), *seq)))
                    }
                    _ => (None, None),
                };
                if let Some((account, seq)) = from.take() {
                    self.entries_of(&account, seq, limit, &mut out).await?;
                }
                while out.len() < limit {
                    let key = |s: Shard| self.layout.ledger_accounts(s);
                    let accounts = self.walk(&key, cursor.as_deref(), batch).await?;
                    let Some((last, _)) = accounts.last() else {
                        break;
                    };
                    cursor = Some(last.clone());
                    for (account, _) in &accounts {
                        let account = parse_account(account)?;
                        self.entries_of(&account, 0, limit - out.len(), &mut out)
                            .await?;
                        if out.len() == limit {
                            break;
                        }
                    }
                }
            }
            Section::Counters => {
                let after = match after {
                    Some(Position::Counter(name)) => Some(name.as_str()),
                    _ => None,
                };
                out = self
                    .counters()
                    .await?
                    .into_iter()
                    .filter(|(name, _)| after.is_none_or(|a| name.as_str() > a))
                    .take(limit)
                    .map(|(name, value)| Exported::Counter { name, value })
                    .collect();
            }
        }
        Ok(out)
    }

    /// Runs `fetch` for each shard's ids of `ids` at once and merges what they found by id.
    async fn by_shard<T, F, Fut>(
        &self,
        ids: &[(String, Shard)],
        fetch: F,
    ) -> Result<HashMap<String, T>, Error>
    where
        F: Fn(Shard, Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<HashMap<String, T>, Error>>,
    {
        let mut per_shard: BTreeMap<Shard, Vec<String>> = BTreeMap::new();
        for (id, shard) in ids {
            per_shard.entry(*shard).or_default().push(id.clone());
        }
        let found =
            try_join_all(per_shard.into_iter().map(|(shard, ids)| fetch(shard, ids))).await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn items_by_id(
        &self,
        shard: Shard,
        lane: Lane,
        ids: &[String],
    ) -> Result<Vec<Item>, Error> {
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .items_by_id
            .key(self.layout.tag(shard))
            .arg(lane.as_str())
            .arg(ids)
            .invoke_async(&mut conn)
            .await?;
        array(&reply, "items by id")?
            .iter()
            .filter(|v| **v != Value::Nil)
            .map(|v| decode_item(lane, v))
            .collect()
    }

    /// Appends the events of records `ids` (of one shard, in order) from `min` (for the first;
    /// all of the others'), at most `limit`.
    async fn events_of(
        &self,
        shard: Shard,
        kind: Kind,
        ids: &[String],
        min: &str,
        limit: usize,
        out: &mut Vec<Exported>,
    ) -> Result<(), Error> {
        if limit == 0 || ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .events_of
            .key(self.layout.tag(shard))
            .arg(kind.as_str())
            .arg(min)
            .arg(limit)
            .arg(ids)
            .invoke_async(&mut conn)
            .await?;
        for (id, log) in ids.iter().zip(array(&reply, "events of")?) {
            let [partition, members] = array(log, "event log")? else {
                return Err(unexpected(
                    "events of: expected the partition and the members",
                ));
            };
            let Some(partition) = opt_text(partition, "partition")? else {
                continue;
            };
            let stream = Key {
                kind,
                id: id.clone(),
                partition: store::Partition(partition.parse().map_err(|_| {
                    Error::InvalidStored {
                        what: "partition",
                        detail: partition.clone(),
                    }
                })?),
            };
            for member in array(members, "events")? {
                out.push(Exported::Event {
                    stream: stream.clone(),
                    event: decode_event(bytes(member, "event")?)?,
                });
            }
        }
        Ok(())
    }

    /// Appends an account's ledger entries after `seq`, at most `limit`.
    async fn entries_of(
        &self,
        account: &AccountId,
        seq: u64,
        limit: usize,
        out: &mut Vec<Exported>,
    ) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let members: Vec<Value> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.layout.ledger_entries(account))
            .arg(format!("({seq}"))
            .arg("+inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        for m in &members {
            out.push(Exported::Ledger(Box::new(decode_ledger(bytes(
                m,
                "ledger entry",
            )?)?)));
        }
        Ok(())
    }

    /// The shard holding a record of `kind` with this id, if any: a position names no
    /// partition, so every shard's id index is asked.
    async fn shard_holding(&self, kind: Kind, id: &str) -> Result<Option<Shard>, Error> {
        let found = try_join_all(self.layout.shards().map(|shard| async move {
            let mut conn = self.conn()?;
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(self.layout.ids(shard, kind.as_str()))
                .arg(id)
                .query_async(&mut conn)
                .await?;
            Ok::<_, Error>(score.map(|_| shard))
        }))
        .await?;
        Ok(found.into_iter().flatten().next())
    }

    /// The shard a record lives in: its key's, or its owner's if a forwarding entry says so.
    async fn record_shard(&self, key: &Key) -> Result<Shard, Error> {
        let home = self.layout.shard(key.partition);
        let mut conn = self.conn()?;
        let owner: Option<String> = redis::cmd("HGET")
            .arg(self.layout.record(home, key))
            .arg("f")
            .query_async(&mut conn)
            .await?;
        match owner {
            Some(owner) => Ok(self.layout.shard_of_account(&parse_account(&owner)?)),
            None => Ok(home),
        }
    }

    async fn import(&self, pieces: &[Exported]) -> Result<(), Error> {
        let mut streams: HashMap<&Key, Shard> = HashMap::new();
        let mut ledgers: BTreeMap<&AccountId, Vec<&store::Posted>> = BTreeMap::new();
        for piece in pieces {
            match piece {
                Exported::Record { record, revision } => {
                    self.import_record(record, *revision).await?;
                }
                Exported::Item(item) => self.import_item(item).await?,
                Exported::Event { stream, event } => {
                    let shard = match streams.get(stream) {
                        Some(shard) => *shard,
                        None => {
                            let shard = self.record_shard(stream).await?;
                            streams.insert(stream, shard);
                            shard
                        }
                    };
                    let member =
                        event_member(event.revision, u64::from(event.index), &event.event)?;
                    let mut conn = self.conn()?;
                    let _: Value = SCRIPTS
                        .import_events
                        .key(self.layout.tag(shard))
                        .arg(stream.kind.as_str())
                        .arg(&stream.id)
                        .arg(member)
                        .invoke_async(&mut conn)
                        .await?;
                }
                Exported::Ledger(posted) => {
                    ledgers
                        .entry(&posted.entry.account)
                        .or_default()
                        .push(posted);
                }
                Exported::Counter { name, value } => self.import_counter(name, *value).await?,
            }
        }
        for (account, entries) in ledgers {
            let shard = self.layout.shard_of_account(account);
            let mut invocation = SCRIPTS.import_ledger.prepare_invoke();
            invocation.key(self.layout.tag(shard)).arg(account.as_str());
            for posted in entries {
                invocation
                    .arg(posted.seq)
                    .arg(&posted.entry.id)
                    .arg(ledger_member(posted)?);
            }
            let mut conn = self.conn()?;
            let _: Value = invocation.invoke_async(&mut conn).await?;
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

    async fn import_record(&self, record: &store::Record, revision: Revision) -> Result<(), Error> {
        let shard = self.layout.shard_of_account(&record.owner);
        let home = self.layout.shard(record.key.partition);
        if home != shard {
            let mut conn = self.conn()?;
            let claimed: i64 = SCRIPTS
                .forward
                .key(self.layout.tag(home))
                .arg(record.key.kind.as_str())
                .arg(&record.key.id)
                .arg(record.owner.as_str())
                .invoke_async(&mut conn)
                .await?;
            if claimed != 1 {
                return Err(Error::Contract(store::Error::Exists(record.key.clone())));
            }
        }
        let mut invocation = SCRIPTS.import_record.prepare_invoke();
        invocation
            .key(self.layout.tag(shard))
            .arg(record.key.kind.as_str())
            .arg(&record.key.id)
            .arg(record.key.partition.0)
            .arg(record.owner.as_str())
            .arg(revision.0);
        RecordArgs::new(record).push(&mut invocation);
        let mut conn = self.conn()?;
        let _: Value = invocation.invoke_async(&mut conn).await?;
        Ok(())
    }

    async fn import_item(&self, item: &Item) -> Result<(), Error> {
        let shard = self.layout.shard_of_account(&item.owner);
        let attempts = if item.attempts.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&item.attempts).map_err(Error::Encode)?
        };
        let status = match item.status {
            store::ItemStatus::Pending => "p",
            store::ItemStatus::Done => "d",
            store::ItemStatus::Failed => "f",
        };
        let mut conn = self.conn()?;
        let _: Value = SCRIPTS
            .import_item
            .key(self.layout.tag(shard))
            .arg(self.clock_tag(shard))
            .arg(item.lane.as_str())
            .arg(&item.id)
            .arg(item.group.kind.as_str())
            .arg(&item.group.id)
            .arg(item.group.partition.0)
            .arg(&item.topic)
            .arg(item.owner.as_str())
            .arg(&item.payload)
            .arg(item.seq)
            .arg(status)
            .arg(item.claims)
            .arg(attempts)
            .arg(
                item.due_at
                    .map_or_else(String::new, |t| t.as_micros().to_string()),
            )
            .arg(item.created_at.as_micros())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Sets a counter: in its account's shard if it is an account's own (where its limit is
    /// checked), else in shard 0; the other shards' shares of it are dropped.
    async fn import_counter(&self, name: &str, value: i64) -> Result<(), Error> {
        let home = counters::account_of(name)
            .and_then(|a| AccountId::parse(a).ok())
            .map_or(Shard(0), |a| self.layout.shard_of_account(&a));
        try_join_all(self.layout.shards().map(|shard| async move {
            let mut conn = self.conn()?;
            if shard == home {
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
        Ok(())
    }
}

#[async_trait]
impl AdminStore for RedisStore {
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

    async fn counters(&self) -> store::Result<Vec<(String, i64)>> {
        Ok(self.inner.counters().await?)
    }

    async fn subscribe(&self) -> store::Result<Option<ChangeStream>> {
        Ok(Some(self.inner.subscribe().await?))
    }

    async fn export(
        &self,
        section: Section,
        after: Option<&Position>,
        limit: usize,
    ) -> store::Result<Vec<Exported>> {
        Ok(self.inner.export(section, after, limit).await?)
    }

    async fn import(&self, pieces: &[Exported]) -> store::Result<()> {
        Ok(self.inner.import(pieces).await?)
    }

    /// Stops the announcement subscriptions; later operations fail as unavailable. The
    /// connection itself closes when the last clone is dropped. Every acknowledged write is
    /// already on the server, so nothing needs flushing.
    async fn close(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.inner.shutdown.cancel();
    }
}
