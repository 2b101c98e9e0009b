//! [`CachedStore`]: a bounded read cache of records in front of any store.
//!
//! Reads by key are served from memory; every write through this decorator updates or
//! invalidates its entries at once, so a process never reads its own write stale. This is
//! exact when the process is the store's only writer ([`Capabilities::shared`] is false: the
//! embedded and memory stores). For stores shared by several nodes the cache must also hear of
//! the other nodes' writes (see [`CachedStore::invalidate_below`]), and bounds staleness with a
//! time to live.
//!
//! Entries carry their revision and only a newer revision replaces an older one, so a slow read
//! that raced a write cannot put an old record back. After a failed write (whose outcome is
//! unknown) or a delete, the entry becomes a *floor*: reads below that revision are not cached
//! until a write or read at or above it. Cached records keep what they were decoded into
//! ([`Stored::decode`]), so a hot record is decoded once, not per read; a record written
//! through the cache is not decoded at all when its writer hands over the value it encoded
//! ([`RecordStore::remember_decoded`]).
//!
//! The cache is bounded by bytes, not entries: an entry weighs its record's text plus an
//! estimate of what that text decodes into ([`footprint`]), at least `bytes / entries` each
//! when an entry count is configured too. A record heavier than a shard of the budget is not
//! cached at all; reads of it go to the store.
//!
//! Hits and misses are counted as `augur_cache_reads_total{result}`.

use std::any::Any;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::{
    Capabilities, DynStore, Error, Key, Kind, ListQuery, Op, Page, RecordStore, Result, Stored,
    Write, Written,
};
use crate::forward_store;
use crate::prediction::Revision;
use crate::time::Timestamp;

/// A cached record's identity (the partition follows from it).
type Id = (Kind, String);

fn id_of(key: &Key) -> Id {
    (key.kind, key.id.clone())
}

#[derive(Clone)]
enum Entry {
    /// A record at its revision, cached at `at`, weighing `weight` bytes ([`footprint`]).
    Value(Arc<Stored>, Instant, u64),
    /// No record cached; records below this revision must not be.
    Floor(Revision),
}

impl Entry {
    fn revision(&self) -> Revision {
        match self {
            Entry::Value(v, ..) => v.revision,
            Entry::Floor(r) => *r,
        }
    }

    /// A record cached now.
    fn value(record: Arc<Stored>) -> Self {
        let weight = footprint(&record.record);
        Entry::Value(record, Instant::now(), weight)
    }
}

/// Bytes an entry holds besides its record's text: the entry, its key and the record's
/// small fields.
const ENTRY_OVERHEAD: u64 = 256;

/// What caching `record` may cost in memory, in bytes: its text, and an upper estimate of
/// the values it decodes into ([`decoded_estimate`]).
pub fn footprint(record: &super::Record) -> u64 {
    let text = record.key.id.len()
        + record.owner.as_str().len()
        + record.status.as_ref().map_or(0, String::len)
        + record.parent.as_ref().map_or(0, String::len)
        + record.body.len()
        + record.data.as_ref().map_or(0, String::len);
    let decoded =
        decoded_estimate(&record.body) + record.data.as_deref().map_or(0, decoded_estimate);
    ENTRY_OVERHEAD + text as u64 + decoded
}

/// An upper estimate of the heap a JSON text takes once decoded into `serde_json::Value`s
/// ([`crate::json_shape::JsonShape::decoded_bytes`], one pass over the text). Small texts
/// decode into a few times their size; a hostile one such as `[{},{},…]` into a hundred
/// times, which is why entries are not weighed by their text alone.
pub fn decoded_estimate(json: &str) -> u64 {
    crate::json_shape::JsonShape::of(json.as_bytes()).decoded_bytes()
}

/// Weighs entries by [`footprint`], at least `min` each (the budget divided by an entry
/// limit).
#[derive(Clone, Copy, Debug)]
struct ByBytes {
    min: u64,
}

impl Weighter<Id, Entry> for ByBytes {
    fn weight(&self, id: &Id, entry: &Entry) -> u64 {
        let own = match entry {
            Entry::Value(_, _, weight) => *weight,
            Entry::Floor(_) => ENTRY_OVERHEAD + id.1.len() as u64,
        };
        own.max(self.min)
    }
}

/// How much a [`CachedStore`] may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheBudget {
    /// Bytes of records (and what they decode into), estimated by [`footprint`].
    pub bytes: u64,
    /// Records at most, if bounded by count too.
    pub entries: Option<usize>,
}

impl CacheBudget {
    /// A budget of `bytes`.
    pub fn bytes(bytes: u64) -> Self {
        Self {
            bytes,
            entries: None,
        }
    }
}

/// Stripes of the lock that makes "compare revisions, then insert" atomic per id.
const STRIPES: usize = 64;

/// The read cache decorator.
pub struct CachedStore {
    inner: DynStore,
    cache: Cache<Id, Entry, ByBytes>,
    ttl: Option<Duration>,
    stripes: Vec<Mutex<()>>,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field("entries", &self.cache.len())
            .field("bytes", &self.cache.weight())
            .field("capacity_bytes", &self.cache.capacity())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl CachedStore {
    /// A cache within `budget` in front of `inner`. `ttl` bounds how long an entry is
    /// trusted (`None`: until this process writes it; only right for a store this process
    /// alone writes).
    pub fn new(inner: DynStore, budget: CacheBudget, ttl: Option<Duration>) -> Self {
        let bytes = budget.bytes.max(1);
        let min = budget
            .entries
            .map_or(0, |entries| bytes.div_ceil(entries.max(1) as u64));
        // Room for the shard count: records are typically a few KiB.
        let estimated = budget
            .entries
            .unwrap_or(usize::MAX)
            .min(usize::try_from(bytes / 4096).unwrap_or(usize::MAX))
            .max(1);
        Self {
            inner,
            cache: Cache::with_weighter(estimated, bytes, ByBytes { min }),
            ttl,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    fn lock(&self, id: &Id) -> MutexGuard<'_, ()> {
        static HASHER: OnceLock<RandomState> = OnceLock::new();
        let hash = HASHER.get_or_init(RandomState::new).hash_one(id);
        self.stripes[(hash as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A cache that trusts its entries until this process writes them: right only when
    /// `inner.capabilities().shared` is false.
    pub fn exclusive(inner: DynStore, budget: CacheBudget) -> Self {
        Self::new(inner, budget, None)
    }

    /// The bytes its entries weigh now ([`footprint`]).
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }

    /// Forgets everything (announcements may have been missed).
    pub fn clear(&self) {
        self.cache.clear();
    }

    /// Forgets a record (another node changed it).
    pub fn invalidate(&self, key: &Key) {
        let id = id_of(key);
        let _guard = self.lock(&id);
        self.cache.remove(&id);
    }

    /// Forgets a record unless its entry is already at `revision` or later: what an
    /// announcement that the record is now at `revision` calls for. A node hears its own
    /// writes announced too, and the entry they left is the announced revision, so it stays.
    pub fn invalidate_below(&self, key: &Key, revision: Revision) {
        let id = id_of(key);
        let _guard = self.lock(&id);
        match self.cache.get(&id) {
            Some(Entry::Value(existing, ..)) if existing.revision >= revision => {}
            Some(Entry::Floor(floor)) if floor >= revision => {}
            Some(_) => {
                self.cache.remove(&id);
            }
            None => {}
        }
    }

    /// Caches `record` unless an entry at a newer revision (or a higher floor) is there. An
    /// entry at the same revision is the same record: it is replaced, which restarts its time
    /// to live (a record read again after its entry expired is trusted for another `ttl`).
    fn offer(&self, record: Arc<Stored>) {
        let id = id_of(&record.record.key);
        let _guard = self.lock(&id);
        let stale = match self.cache.get(&id) {
            Some(Entry::Value(existing, ..)) => existing.revision > record.revision,
            Some(Entry::Floor(floor)) => floor > record.revision,
            None => false,
        };
        if !stale {
            self.cache.insert(id, Entry::value(record));
        }
    }

    /// Caches the result of a successful write unless a newer revision is already there.
    fn record_write(&self, record: Arc<Stored>) {
        let id = id_of(&record.record.key);
        let _guard = self.lock(&id);
        match self.cache.get(&id) {
            Some(Entry::Value(existing, ..)) if existing.revision > record.revision => {}
            _ => self.cache.insert(id, Entry::value(record)),
        }
    }

    /// After a write whose outcome is unknown (or a conflict), distrust what is cached.
    fn raise_floor(&self, key: &Key, floor: Revision) {
        let id = id_of(key);
        let id = &id;
        let _guard = self.lock(id);
        match self.cache.get(id) {
            Some(existing) if existing.revision() >= floor => {
                if let Entry::Value(..) = existing {
                    // A cached record at or above the floor could still be older than the
                    // unknown write; drop it and keep only the floor.
                    self.cache.insert(id.clone(), Entry::Floor(floor));
                }
            }
            _ => self.cache.insert(id.clone(), Entry::Floor(floor)),
        }
    }

    fn cached(&self, key: &Key) -> Option<Arc<Stored>> {
        let hit = match self.cache.get(&id_of(key)) {
            Some(Entry::Value(record, at, _))
                if self.ttl.is_none_or(|ttl| at.elapsed() < ttl)
                    && !record.record.is_gone_at(Timestamp::now()) =>
            {
                Some(record)
            }
            _ => None,
        };
        let result = if hit.is_some() { "hit" } else { "miss" };
        metrics::counter!("augur_cache_reads_total", "result" => result).increment(1);
        hit
    }
}

#[async_trait]
impl RecordStore for CachedStore {
    async fn write(&self, write: &Write) -> Result<Written> {
        let result = self.inner.write(write).await;
        match &result {
            Ok(written) => {
                for (op, revision) in write.ops.iter().zip(&written.revisions) {
                    match (op, revision) {
                        (Op::Insert(record) | Op::Update { record, .. }, Some(revision)) => {
                            self.record_write(Arc::new(Stored::new(record.clone(), *revision)));
                        }
                        _ => self.raise_floor(op.key(), Revision(u64::MAX)),
                    }
                }
            }
            Err(Error::Conflict { key, actual, .. }) => self.raise_floor(key, *actual),
            Err(Error::Exists(key) | Error::NotFound(key)) => self.invalidate(key),
            // Refused before anything was written.
            Err(
                Error::InsufficientCredits { .. } | Error::LimitReached { .. } | Error::Invalid(_),
            ) => {}
            // The write may or may not have committed.
            Err(_) => {
                for op in &write.ops {
                    let floor = match op {
                        Op::Insert(_) => Revision::FIRST,
                        Op::Update { expected, .. } => expected.next(),
                        Op::Delete(_) => Revision(u64::MAX),
                    };
                    self.raise_floor(op.key(), floor);
                }
            }
        }
        result
    }

    fn remember_decoded(&self, key: &Key, revision: Revision, value: Arc<dyn Any + Send + Sync>) {
        if let Some(Entry::Value(stored, ..)) = self.cache.get(&id_of(key))
            && stored.revision == revision
        {
            stored.set_decoded(value);
        }
    }

    async fn get(&self, key: &Key) -> Result<Option<Arc<Stored>>> {
        if let Some(hit) = self.cached(key) {
            return Ok(Some(hit));
        }
        let record = self.inner.get(key).await?;
        if let Some(record) = &record {
            self.offer(record.clone());
        }
        Ok(record)
    }

    async fn get_uncached(&self, key: &Key) -> Result<Option<Arc<Stored>>> {
        let record = self.inner.get_uncached(key).await?;
        if let Some(record) = &record {
            self.offer(record.clone());
        }
        Ok(record)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        self.inner.list(query).await
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> Result<Vec<Key>> {
        let expired = self.inner.expire(now, limit).await?;
        for key in &expired {
            self.invalidate(key);
        }
        Ok(expired)
    }
}

forward_store!(QueueStore for CachedStore => inner);
forward_store!(EventStore for CachedStore => inner);
forward_store!(LedgerStore for CachedStore => inner);

/// Imports replace records behind the cache's back: it forgets everything after one.
#[async_trait]
impl super::AdminStore for CachedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn counters(&self) -> Result<Vec<(String, i64)>> {
        self.inner.counters().await
    }

    async fn subscribe(&self) -> Result<Option<super::ChangeStream>> {
        self.inner.subscribe().await
    }

    async fn export(
        &self,
        section: super::Section,
        after: Option<&super::Position>,
        limit: usize,
    ) -> Result<Vec<super::Exported>> {
        self.inner.export(section, after, limit).await
    }

    async fn import(&self, pieces: &[super::Exported]) -> Result<()> {
        let result = self.inner.import(pieces).await;
        self.clear();
        result
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::id::{AccountId, ModelName, PredictionId};
    use crate::prediction::Prediction;
    use crate::store::memory::MemoryStore;
    use crate::store::{Access, Entity};

    /// Commits writes but may then report them as failed (an unknown outcome), and counts
    /// reads.
    #[derive(Debug)]
    struct Lossy {
        inner: DynStore,
        fail_after_commit: AtomicBool,
        reads: AtomicUsize,
    }

    impl Lossy {
        async fn call<T, F, Fut>(&self, access: Access, _: &'static str, call: F) -> Result<T>
        where
            F: FnOnce(DynStore) -> Fut,
            Fut: Future<Output = Result<T>>,
        {
            if access == Access::Read {
                self.reads.fetch_add(1, Ordering::SeqCst);
            }
            let result = call(self.inner.clone()).await;
            if access == Access::Write && self.fail_after_commit.load(Ordering::SeqCst) {
                return Err(Error::Unavailable {
                    backend: "lossy",
                    source: "connection reset after commit".into(),
                });
            }
            result
        }
    }

    forward_store!(RecordStore for Lossy => inner via call);
    forward_store!(QueueStore for Lossy => inner via call);
    forward_store!(EventStore for Lossy => inner via call);
    forward_store!(LedgerStore for Lossy => inner via call);
    forward_store!(AdminStore for Lossy => inner via call);

    fn lossy() -> Arc<Lossy> {
        Arc::new(Lossy {
            inner: Arc::new(MemoryStore::new()),
            fail_after_commit: AtomicBool::new(false),
            reads: AtomicUsize::new(0),
        })
    }

    fn prediction() -> Prediction {
        Prediction::new(
            PredictionId::generate(),
            AccountId::admin(),
            ModelName::parse("augur/echo").unwrap(),
            "v".into(),
            serde_json::json!({}),
        )
    }

    fn insert(p: &Prediction) -> Write {
        Write::new(p.owner.clone()).op(Op::Insert(p.to_record().unwrap()))
    }

    fn update(p: &Prediction, expected: Revision) -> Write {
        Write::new(p.owner.clone()).op(Op::Update {
            record: p.to_record().unwrap(),
            expected,
        })
    }

    async fn read(store: &dyn RecordStore, p: &Prediction) -> (Revision, Prediction) {
        let got = store.get(&p.key()).await.unwrap().expect("present");
        (got.revision, (*got.decode::<Prediction>().unwrap()).clone())
    }

    async fn setup() -> (Arc<Lossy>, CachedStore, Prediction) {
        let lossy = lossy();
        let cached = CachedStore::exclusive(lossy.clone(), CacheBudget::bytes(1 << 20));
        let p = prediction();
        cached.write(&insert(&p)).await.unwrap();
        (lossy, cached, p)
    }

    #[tokio::test]
    async fn reads_after_writes_come_from_memory_and_are_fresh() {
        let (lossy, cached, mut p) = setup().await;
        assert_eq!(read(&cached, &p).await.0, Revision::FIRST);
        p.logs = "new".into();
        cached.write(&update(&p, Revision::FIRST)).await.unwrap();
        let (rev, got) = read(&cached, &p).await;
        assert_eq!((rev, got.logs.as_str()), (Revision(2), "new"));
        assert_eq!(lossy.reads.load(Ordering::SeqCst), 0, "the store was read");
    }

    #[tokio::test]
    async fn a_cached_record_is_decoded_once() {
        let (_, cached, p) = setup().await;
        let a = cached
            .get(&p.key())
            .await
            .unwrap()
            .unwrap()
            .decode::<Prediction>()
            .unwrap();
        let b = cached
            .get(&p.key())
            .await
            .unwrap()
            .unwrap()
            .decode::<Prediction>()
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[tokio::test]
    async fn a_written_record_reads_as_the_value_its_writer_remembered() {
        let (_, cached, p) = setup().await;
        let mut next = p.clone();
        next.logs = "new".into();
        cached.write(&update(&next, Revision::FIRST)).await.unwrap();
        let value = Arc::new(next.clone());
        // Another revision's value is not taken.
        cached.remember_decoded(&p.key(), Revision::FIRST, Arc::new(p.clone()));
        cached.remember_decoded(&p.key(), Revision(2), value.clone());
        let stored = cached.get(&p.key()).await.unwrap().unwrap();
        let got = stored.decode::<Prediction>().unwrap();
        assert!(Arc::ptr_eq(&got, &value));
        assert_eq!(*got, Prediction::from_record(&stored.record).unwrap());
    }

    #[tokio::test]
    async fn a_stale_read_cannot_replace_a_newer_entry() {
        let (_, cached, p) = setup().await;
        let old = cached.get(&p.key()).await.unwrap().unwrap();
        let mut next = p.clone();
        next.logs = "new".into();
        cached.write(&update(&next, Revision::FIRST)).await.unwrap();
        cached.offer(old);
        assert_eq!(read(&cached, &p).await.0, Revision(2));
    }

    #[tokio::test]
    async fn an_unknown_write_outcome_sends_reads_to_the_store() {
        let (lossy, cached, p) = setup().await;
        lossy.fail_after_commit.store(true, Ordering::SeqCst);
        let mut next = p.clone();
        next.logs = "committed anyway".into();
        assert!(cached.write(&update(&next, Revision::FIRST)).await.is_err());
        lossy.fail_after_commit.store(false, Ordering::SeqCst);
        let (rev, _) = read(&cached, &p).await;
        assert_eq!(rev, Revision(2), "served the pre-write record");
        assert_eq!(lossy.reads.load(Ordering::SeqCst), 1);
        // The fresh read is cached again.
        read(&cached, &p).await;
        assert_eq!(lossy.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_conflict_drops_the_cached_record() {
        let (lossy, cached, p) = setup().await;
        // Another writer (not through the cache) moves the record to revision 2.
        let mut other = p.clone();
        other.logs = "elsewhere".into();
        lossy
            .inner
            .write(&update(&other, Revision::FIRST))
            .await
            .unwrap();
        assert_eq!(read(&cached, &p).await.0, Revision::FIRST);
        let result = cached.write(&update(&p, Revision::FIRST)).await;
        assert!(matches!(result, Err(Error::Conflict { .. })));
        assert_eq!(read(&cached, &p).await.1.logs, "elsewhere");
    }

    #[tokio::test]
    async fn ttl_bounds_staleness_for_shared_stores() {
        let lossy = lossy();
        let cached = CachedStore::new(
            lossy.clone(),
            CacheBudget::bytes(1 << 20),
            Some(Duration::from_millis(50)),
        );
        let p = prediction();
        cached.write(&insert(&p)).await.unwrap();
        let mut other = p.clone();
        other.logs = "elsewhere".into();
        lossy
            .inner
            .write(&update(&other, Revision::FIRST))
            .await
            .unwrap();
        assert_eq!(read(&cached, &p).await.0, Revision::FIRST);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(read(&cached, &p).await.0, Revision(2));
        cached.invalidate(&p.key());
    }

    #[tokio::test]
    async fn an_announcement_drops_only_older_entries() {
        let lossy = lossy();
        let cached = CachedStore::new(
            lossy.clone(),
            CacheBudget::bytes(1 << 20),
            Some(Duration::from_secs(60)),
        );
        let p = prediction();
        cached.write(&insert(&p)).await.unwrap();
        // Its own write announced: the entry stays.
        cached.invalidate_below(&p.key(), Revision::FIRST);
        read(&cached, &p).await;
        assert_eq!(lossy.reads.load(Ordering::SeqCst), 0);
        // Another node's write: the next read goes to the store and sees it.
        let mut other = p.clone();
        other.logs = "elsewhere".into();
        lossy
            .inner
            .write(&update(&other, Revision::FIRST))
            .await
            .unwrap();
        cached.invalidate_below(&p.key(), Revision(2));
        assert_eq!(read(&cached, &p).await.1.logs, "elsewhere");
        assert_eq!(lossy.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_record_read_again_after_its_ttl_is_cached_again() {
        let lossy = lossy();
        let cached = CachedStore::new(
            lossy.clone(),
            CacheBudget::bytes(1 << 20),
            Some(Duration::from_millis(50)),
        );
        let p = prediction();
        cached.write(&insert(&p)).await.unwrap();
        read(&cached, &p).await;
        assert_eq!(
            lossy.reads.load(Ordering::SeqCst),
            0,
            "served by the write's entry"
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        // Expired: read from the store, at the same revision, and trusted again.
        for _ in 0..3 {
            read(&cached, &p).await;
        }
        assert_eq!(lossy.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_byte_budget() {
        let lossy = lossy();
        let budget = 8 << 20;
        let cached = CachedStore::exclusive(lossy.clone(), CacheBudget::bytes(budget));
        let mut ps = Vec::new();
        for i in 0..100 {
            let mut p = prediction();
            p.input = serde_json::json!({ "prompt": format!("{i}{}", "x".repeat(100_000)) });
            cached.write(&insert(&p)).await.unwrap();
            read(&cached, &p).await;
            ps.push(p);
        }
        assert!(
            cached.weight() <= budget,
            "{} bytes cached",
            cached.weight()
        );
        assert!(
            cached.weight() > budget / 2,
            "{} bytes cached",
            cached.weight()
        );
        // Every record still reads back, from the store when no longer cached.
        for p in &ps {
            assert_eq!(read(&cached, p).await.1.input, p.input);
        }
        // A record heavier than a shard of the budget is never cached.
        let mut huge = prediction();
        huge.input = serde_json::json!({ "prompt": "x".repeat(2 << 20) });
        cached.write(&insert(&huge)).await.unwrap();
        let reads = lossy.reads.load(Ordering::SeqCst);
        read(&cached, &huge).await;
        read(&cached, &huge).await;
        assert_eq!(lossy.reads.load(Ordering::SeqCst), reads + 2);
    }

    #[tokio::test]
    async fn an_entry_limit_still_bounds_the_count() {
        let cached = CachedStore::exclusive(
            lossy(),
            CacheBudget {
                bytes: 64 << 20,
                entries: Some(100),
            },
        );
        for _ in 0..1000 {
            cached.write(&insert(&prediction())).await.unwrap();
        }
        assert!(cached.cache.len() <= 100, "{} entries", cached.cache.len());
    }

    #[test]
    fn a_json_tree_is_weighed_by_what_it_decodes_into() {
        // Text: a string weighs about its length.
        let text = format!("{{\"prompt\":\"{}\"}}", "x".repeat(10_000));
        let estimate = decoded_estimate(&text);
        assert!((10_000..12_000).contains(&estimate), "{estimate}");
        // Structural characters inside strings do not count.
        let quoted = format!("{{\"prompt\":\"{}\\\"\"}}", "{,[".repeat(1_000));
        assert!(decoded_estimate(&quoted) < 5_000);
        // Many small objects decode into far more than their text, and the estimate says so.
        let tree = format!("[{}{{}}]", "{},".repeat(10_000));
        let decoded: serde_json::Value = serde_json::from_str(&tree).unwrap();
        assert_eq!(decoded.as_array().unwrap().len(), 10_001);
        assert!(decoded_estimate(&tree) > 100 * tree.len() as u64);
    }
}
