//! [`CachedStore`]: a bounded read cache of predictions in front of any store.
//!
//! Reads by id are served from memory; every write through this decorator updates or
//! invalidates its entry at once, so a process never reads its own write stale. This is exact
//! when the process is the store's only writer ([`Capabilities::shared`] is false: the embedded
//! and memory stores). For stores shared by several nodes the cache must also hear of the other
//! nodes' writes (see [`CachedStore::invalidate`]), and bounds staleness with a time to live.
//!
//! Entries carry their revision and only a newer revision replaces an older one, so a slow read
//! that raced a write cannot put an old record back. After a failed write (whose outcome is
//! unknown) or a delete, the entry becomes a *floor*: reads below that revision are not cached
//! until a write or read at or above it.
//!
//! Hits and misses are counted as `augur_cache_reads_total{result}`.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use quick_cache::sync::Cache;

use super::{
    Attempt, Capabilities, ChangeStream, ClaimRequest, Created, DeliveryLease, DeliveryOutcome,
    DeliveryState, DynStore, Effect, Error, IdempotencyRecord, Job, Lease, ListQuery,
    NewPrediction, Page, QueueStats, Record, Result, Store, StreamEvent,
};
use crate::id::{AccountId, PredictionId, WorkerId};
use crate::prediction::{Prediction, Revision, Versioned};
use crate::time::Timestamp;

#[derive(Clone)]
enum Entry {
    /// A record at its revision, cached at `at`.
    Value(Arc<Versioned<Prediction>>, Instant),
    /// No record cached; records below this revision must not be.
    Floor(Revision),
}

impl Entry {
    fn revision(&self) -> Revision {
        match self {
            Entry::Value(v, _) => v.revision,
            Entry::Floor(r) => *r,
        }
    }
}

/// Stripes of the lock that makes "compare revisions, then insert" atomic per id.
const STRIPES: usize = 64;

/// The read cache decorator.
pub struct CachedStore {
    inner: DynStore,
    cache: Cache<PredictionId, Entry>,
    ttl: Option<Duration>,
    stripes: Vec<Mutex<()>>,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field("entries", &self.cache.len())
            .field("capacity", &self.cache.capacity())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl CachedStore {
    /// A cache of up to `capacity` predictions in front of `inner`. `ttl` bounds how long an
    /// entry is trusted (`None`: until this process writes it; only right for a store this
    /// process alone writes).
    pub fn new(inner: DynStore, capacity: usize, ttl: Option<Duration>) -> Self {
        Self {
            inner,
            cache: Cache::new(capacity.max(1)),
            ttl,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    fn lock(&self, id: &PredictionId) -> MutexGuard<'_, ()> {
        static HASHER: OnceLock<RandomState> = OnceLock::new();
        let hash = HASHER.get_or_init(RandomState::new).hash_one(id);
        self.stripes[(hash as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A cache that trusts its entries until this process writes them: right only when
    /// `inner.capabilities().shared` is false.
    pub fn exclusive(inner: DynStore, capacity: usize) -> Self {
        Self::new(inner, capacity, None)
    }

    /// Forgets everything (announcements may have been missed).
    pub fn clear(&self) {
        self.cache.clear();
    }

    /// Forgets a prediction (another node changed it).
    pub fn invalidate(&self, id: &PredictionId) {
        let _guard = self.lock(id);
        self.cache.remove(id);
    }

    /// Forgets a prediction unless its entry is already at `revision` or later: what an
    /// announcement that the prediction is now at `revision` calls for. A node hears its own
    /// writes announced too, and the entry they left is the announced revision, so it stays.
    pub fn invalidate_below(&self, id: &PredictionId, revision: Revision) {
        let _guard = self.lock(id);
        match self.cache.get(id) {
            Some(Entry::Value(existing, _)) if existing.revision >= revision => {}
            Some(Entry::Floor(floor)) if floor >= revision => {}
            Some(_) => {
                self.cache.remove(id);
            }
            None => {}
        }
    }

    /// Caches `record` unless an entry at a newer revision (or a higher floor) is there. An
    /// entry at the same revision is the same record: it is replaced, which restarts its time
    /// to live (a record read again after its entry expired is trusted for another `ttl`).
    fn offer(&self, record: impl Into<Arc<Versioned<Prediction>>>) {
        let record = record.into();
        let id = record.value.id.clone();
        let _guard = self.lock(&id);
        let stale = match self.cache.get(&id) {
            Some(Entry::Value(existing, _)) => existing.revision > record.revision,
            Some(Entry::Floor(floor)) => floor > record.revision,
            None => false,
        };
        if !stale {
            self.cache.insert(id, Entry::Value(record, Instant::now()));
        }
    }

    /// Caches the result of a successful write unless a newer revision is already there.
    fn record_write(&self, record: Versioned<Prediction>) {
        let id = record.value.id.clone();
        let _guard = self.lock(&id);
        match self.cache.get(&id) {
            Some(Entry::Value(existing, _)) if existing.revision > record.revision => {}
            _ => self
                .cache
                .insert(id, Entry::Value(Arc::new(record), Instant::now())),
        }
    }

    /// After a write whose outcome is unknown (or a conflict), distrust what is cached.
    fn raise_floor(&self, id: &PredictionId, floor: Revision) {
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

    fn cached(&self, id: &PredictionId) -> Option<Arc<Versioned<Prediction>>> {
        let hit = match self.cache.get(id) {
            Some(Entry::Value(record, at)) if self.ttl.is_none_or(|ttl| at.elapsed() < ttl) => {
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
impl Store for CachedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn create(&self, new: NewPrediction<'_>) -> Result<Created> {
        let created = self.inner.create(new).await;
        match &created {
            Ok(Created::Inserted(revision)) => self.record_write(Versioned {
                value: new.prediction.clone(),
                revision: *revision,
            }),
            Ok(Created::ExistingId(existing)) => self.offer(existing.clone()),
            Ok(Created::ExistingKey { prediction, .. }) => {
                if let Some(p) = prediction {
                    self.offer(p.clone());
                }
            }
            Err(_) => self.invalidate(&new.prediction.id),
        }
        created
    }

    async fn get(&self, id: &PredictionId) -> Result<Versioned<Prediction>> {
        Ok(Arc::unwrap_or_clone(self.get_shared(id).await?))
    }

    async fn get_uncached(&self, id: &PredictionId) -> Result<Versioned<Prediction>> {
        let record = self.inner.get_uncached(id).await?;
        self.offer(record.clone());
        Ok(record)
    }

    async fn get_shared(&self, id: &PredictionId) -> Result<Arc<Versioned<Prediction>>> {
        if let Some(hit) = self.cached(id) {
            return Ok(hit);
        }
        let record = self.inner.get_shared(id).await?;
        self.offer(record.clone());
        Ok(record)
    }

    async fn update(
        &self,
        id: &PredictionId,
        expected: Revision,
        next: &Prediction,
        effects: &[Effect],
    ) -> Result<Revision> {
        let result = self.inner.update(id, expected, next, effects).await;
        match &result {
            Ok(revision) => self.record_write(Versioned {
                value: next.clone(),
                revision: *revision,
            }),
            Err(Error::Conflict { actual, .. }) => self.raise_floor(id, *actual),
            Err(Error::NotFound(_)) => self.invalidate(id),
            // The write may or may not have committed.
            Err(_) => self.raise_floor(id, expected.next()),
        }
        result
    }

    async fn delete(&self, id: &PredictionId) -> Result<()> {
        let result = self.inner.delete(id).await;
        self.raise_floor(id, Revision(u64::MAX));
        result
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        self.inner.list(query).await
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> Result<Vec<PredictionId>> {
        let expired = self.inner.expire(now, limit).await?;
        for id in &expired {
            self.invalidate(id);
        }
        Ok(expired)
    }

    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<Lease>> {
        self.inner.claim_jobs(request).await
    }

    async fn renew_lease(&self, lease: &Lease, extend_by: Duration) -> Result<Lease> {
        self.inner.renew_lease(lease, extend_by).await
    }

    async fn retry_job(&self, lease: &Lease, run_at: Timestamp) -> Result<()> {
        self.inner.retry_job(lease, run_at).await
    }

    async fn release_job(&self, lease: &Lease, run_at: Timestamp) -> Result<()> {
        self.inner.release_job(lease, run_at).await
    }

    async fn complete_job(&self, id: &PredictionId) -> Result<()> {
        self.inner.complete_job(id).await
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        self.inner.queue_stats().await
    }

    async fn counters(&self) -> Result<Vec<(String, i64)>> {
        self.inner.counters().await
    }

    async fn subscribe(&self) -> Result<Option<ChangeStream>> {
        self.inner.subscribe().await
    }

    async fn list_jobs(&self, after: Option<&PredictionId>, limit: usize) -> Result<Vec<Job>> {
        self.inner.list_jobs(after, limit).await
    }

    async fn list_idempotency_keys(
        &self,
        after: Option<(&AccountId, &str)>,
        limit: usize,
    ) -> Result<Vec<IdempotencyRecord>> {
        self.inner.list_idempotency_keys(after, limit).await
    }

    async fn import(&self, records: &[Record]) -> Result<()> {
        let result = self.inner.import(records).await;
        self.clear();
        result
    }

    async fn claim_deliveries(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
    ) -> Result<Vec<DeliveryLease>> {
        self.inner.claim_deliveries(worker, lease_for, max).await
    }

    async fn finish_delivery(
        &self,
        lease: &DeliveryLease,
        attempt: &Attempt,
        outcome: DeliveryOutcome,
    ) -> Result<()> {
        self.inner.finish_delivery(lease, attempt, outcome).await
    }

    async fn list_deliveries(&self, id: &PredictionId) -> Result<Vec<DeliveryState>> {
        self.inner.list_deliveries(id).await
    }

    async fn redeliver(&self, id: &PredictionId, delivery_id: &str) -> Result<()> {
        self.inner.redeliver(id, delivery_id).await
    }

    async fn read_events(
        &self,
        id: &PredictionId,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> Result<Vec<StreamEvent>> {
        self.inner.read_events(id, after, limit).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::id::{AccountId, ModelName};
    use crate::store::memory::MemoryStore;

    /// Commits updates but may then report them as failed (an unknown outcome).
    #[derive(Debug, Default)]
    struct Lossy {
        inner: MemoryStore,
        fail_after_commit: AtomicBool,
        reads: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl Store for Lossy {
        fn backend(&self) -> &'static str {
            "lossy"
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        async fn create(&self, new: NewPrediction<'_>) -> Result<Created> {
            self.inner.create(new).await
        }
        async fn get(&self, id: &PredictionId) -> Result<Versioned<Prediction>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.get(id).await
        }
        async fn update(
            &self,
            id: &PredictionId,
            expected: Revision,
            next: &Prediction,
            effects: &[Effect],
        ) -> Result<Revision> {
            let rev = self.inner.update(id, expected, next, effects).await?;
            if self.fail_after_commit.load(Ordering::SeqCst) {
                return Err(Error::Unavailable {
                    backend: "lossy",
                    source: "connection reset after commit".into(),
                });
            }
            Ok(rev)
        }
        async fn delete(&self, id: &PredictionId) -> Result<()> {
            self.inner.delete(id).await
        }
        async fn list(&self, q: &ListQuery) -> Result<Page> {
            self.inner.list(q).await
        }
        async fn expire(&self, now: Timestamp, limit: usize) -> Result<Vec<PredictionId>> {
            self.inner.expire(now, limit).await
        }
        async fn claim_jobs(&self, r: &ClaimRequest) -> Result<Vec<Lease>> {
            self.inner.claim_jobs(r).await
        }
        async fn renew_lease(&self, l: &Lease, d: Duration) -> Result<Lease> {
            self.inner.renew_lease(l, d).await
        }
        async fn retry_job(&self, l: &Lease, t: Timestamp) -> Result<()> {
            self.inner.retry_job(l, t).await
        }
        async fn release_job(&self, l: &Lease, t: Timestamp) -> Result<()> {
            self.inner.release_job(l, t).await
        }
        async fn complete_job(&self, id: &PredictionId) -> Result<()> {
            self.inner.complete_job(id).await
        }
        async fn queue_stats(&self) -> Result<QueueStats> {
            self.inner.queue_stats().await
        }
        async fn counters(&self) -> Result<Vec<(String, i64)>> {
            self.inner.counters().await
        }
        async fn list_jobs(&self, a: Option<&PredictionId>, l: usize) -> Result<Vec<Job>> {
            self.inner.list_jobs(a, l).await
        }
        async fn list_idempotency_keys(
            &self,
            a: Option<(&AccountId, &str)>,
            l: usize,
        ) -> Result<Vec<IdempotencyRecord>> {
            self.inner.list_idempotency_keys(a, l).await
        }
        async fn import(&self, r: &[Record]) -> Result<()> {
            self.inner.import(r).await
        }
        async fn claim_deliveries(
            &self,
            worker: &WorkerId,
            lease_for: Duration,
            max: usize,
        ) -> Result<Vec<DeliveryLease>> {
            self.inner.claim_deliveries(worker, lease_for, max).await
        }

        async fn finish_delivery(
            &self,
            lease: &DeliveryLease,
            attempt: &Attempt,
            outcome: DeliveryOutcome,
        ) -> Result<()> {
            self.inner.finish_delivery(lease, attempt, outcome).await
        }

        async fn list_deliveries(&self, id: &PredictionId) -> Result<Vec<DeliveryState>> {
            self.inner.list_deliveries(id).await
        }

        async fn redeliver(&self, id: &PredictionId, delivery_id: &str) -> Result<()> {
            self.inner.redeliver(id, delivery_id).await
        }

        async fn read_events(
            &self,
            id: &PredictionId,
            after: Option<(Revision, u32)>,
            limit: usize,
        ) -> Result<Vec<StreamEvent>> {
            self.inner.read_events(id, after, limit).await
        }
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

    async fn setup() -> (Arc<Lossy>, CachedStore, Prediction) {
        let lossy = Arc::new(Lossy::default());
        let cached = CachedStore::exclusive(lossy.clone(), 100);
        let p = prediction();
        cached
            .create(NewPrediction {
                prediction: &p,
                idempotency: None,
                effects: &[],
            })
            .await
            .unwrap();
        (lossy, cached, p)
    }

    #[tokio::test]
    async fn reads_after_writes_come_from_memory_and_are_fresh() {
        let (lossy, cached, mut p) = setup().await;
        assert_eq!(cached.get(&p.id).await.unwrap().revision, Revision::FIRST);
        p.logs = "new".into();
        cached
            .update(&p.id, Revision::FIRST, &p, &[])
            .await
            .unwrap();
        let got = cached.get(&p.id).await.unwrap();
        assert_eq!(
            (got.revision, got.value.logs.as_str()),
            (Revision(2), "new")
        );
        assert_eq!(lossy.reads.load(Ordering::SeqCst), 0, "the store was read");
    }

    #[tokio::test]
    async fn a_stale_read_cannot_replace_a_newer_entry() {
        let (_, cached, p) = setup().await;
        let old = cached.get(&p.id).await.unwrap();
        let mut next = p.clone();
        next.logs = "new".into();
        cached
            .update(&p.id, Revision::FIRST, &next, &[])
            .await
            .unwrap();
        cached.offer(old);
        assert_eq!(cached.get(&p.id).await.unwrap().revision, Revision(2));
    }

    #[tokio::test]
    async fn an_unknown_write_outcome_sends_reads_to_the_store() {
        let (lossy, cached, p) = setup().await;
        lossy.fail_after_commit.store(true, Ordering::SeqCst);
        let mut next = p.clone();
        next.logs = "committed anyway".into();
        assert!(
            cached
                .update(&p.id, Revision::FIRST, &next, &[])
                .await
                .is_err()
        );
        let got = cached.get(&p.id).await.unwrap();
        assert_eq!(got.revision, Revision(2), "served the pre-write record");
        assert_eq!(lossy.reads.load(Ordering::SeqCst), 1);
        // The fresh read is cached again.
        cached.get(&p.id).await.unwrap();
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
            .update(&p.id, Revision::FIRST, &other, &[])
            .await
            .unwrap();
        assert_eq!(cached.get(&p.id).await.unwrap().revision, Revision::FIRST);
        let result = cached.update(&p.id, Revision::FIRST, &p, &[]).await;
        assert!(matches!(result, Err(Error::Conflict { .. })));
        let got = cached.get(&p.id).await.unwrap();
        assert_eq!(got.value.logs, "elsewhere");
    }

    #[tokio::test]
    async fn ttl_bounds_staleness_for_shared_stores() {
        let lossy = Arc::new(Lossy::default());
        let cached = CachedStore::new(lossy.clone(), 100, Some(Duration::from_millis(50)));
        let p = prediction();
        cached
            .create(NewPrediction {
                prediction: &p,
                idempotency: None,
                effects: &[],
            })
            .await
            .unwrap();
        let mut other = p.clone();
        other.logs = "elsewhere".into();
        lossy
            .inner
            .update(&p.id, Revision::FIRST, &other, &[])
            .await
            .unwrap();
        assert_eq!(cached.get(&p.id).await.unwrap().revision, Revision::FIRST);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(cached.get(&p.id).await.unwrap().revision, Revision(2));
        cached.invalidate(&p.id);
    }

    #[tokio::test]
    async fn an_announcement_drops_only_older_entries() {
        let lossy = Arc::new(Lossy::default());
        let cached = CachedStore::new(lossy.clone(), 100, Some(Duration::from_secs(60)));
        let p = prediction();
        cached
            .create(NewPrediction {
                prediction: &p,
                idempotency: None,
                effects: &[],
            })
            .await
            .unwrap();
        // Its own write announced: the entry stays.
        cached.invalidate_below(&p.id, Revision::FIRST);
        cached.get(&p.id).await.unwrap();
        assert_eq!(lossy.reads.load(Ordering::SeqCst), 0);
        // Another node's write: the next read goes to the store and sees it.
        let mut other = p.clone();
        other.logs = "elsewhere".into();
        lossy
            .inner
            .update(&p.id, Revision::FIRST, &other, &[])
            .await
            .unwrap();
        cached.invalidate_below(&p.id, Revision(2));
        assert_eq!(cached.get(&p.id).await.unwrap().value.logs, "elsewhere");
        assert_eq!(lossy.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_record_read_again_after_its_ttl_is_cached_again() {
        let lossy = Arc::new(Lossy::default());
        let cached = CachedStore::new(lossy.clone(), 100, Some(Duration::from_millis(50)));
        let p = prediction();
        cached
            .create(NewPrediction {
                prediction: &p,
                idempotency: None,
                effects: &[],
            })
            .await
            .unwrap();
        cached.get(&p.id).await.unwrap();
        assert_eq!(
            lossy.reads.load(Ordering::SeqCst),
            0,
            "served by the write's entry"
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        // Expired: read from the store, at the same revision, and trusted again.
        cached.get(&p.id).await.unwrap();
        cached.get(&p.id).await.unwrap();
        cached.get(&p.id).await.unwrap();
        assert_eq!(lossy.reads.load(Ordering::SeqCst), 1);
    }
}
