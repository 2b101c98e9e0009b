//! [`FallbackStore`]: reads from a secondary store while the primary is unavailable; writes
//! only ever go to the primary.
//!
//! This is the seeds' `getStatusWithFallback`, done so that it cannot split the data: a read
//! that fails on the primary with a retryable error ([`Error::is_retryable`]) is answered by the
//! secondary (typically a read replica, or a store kept in step by `augur migrate`), and is
//! counted as `augur_store_fallback_reads_total{operation}`. A write that fails on the primary
//! fails loudly: it is never sent to the secondary, where it would fork the history. The
//! secondary may lag, so a fallback read can be stale; that is the trade this decorator makes
//! for availability of status reads during an outage.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Attempt, Capabilities, ChangeStream, ClaimRequest, Created, DeliveryLease, DeliveryOutcome,
    DeliveryState, DynStore, Effect, IdempotencyRecord, Job, Lease, ListQuery, NewPrediction, Page,
    QueueStats, Record, Result, Store, StreamEvent,
};
use crate::id::{AccountId, PredictionId, WorkerId};
use crate::prediction::{Prediction, Revision, Versioned};
use crate::time::Timestamp;

/// Primary for everything, secondary for reads while the primary is unavailable.
#[derive(Debug)]
pub struct FallbackStore {
    primary: DynStore,
    secondary: DynStore,
}

impl FallbackStore {
    /// Reads fall back from `primary` to `secondary`; writes go to `primary` only.
    pub fn new(primary: DynStore, secondary: DynStore) -> Self {
        Self { primary, secondary }
    }

    async fn read<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T>
    where
        F: Fn(DynStore) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match call(self.primary.clone()).await {
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, operation, "primary store unavailable; reading from the fallback");
                metrics::counter!("augur_store_fallback_reads_total", "operation" => operation)
                    .increment(1);
                call(self.secondary.clone()).await
            }
            other => other,
        }
    }
}

#[async_trait]
impl Store for FallbackStore {
    fn backend(&self) -> &'static str {
        self.primary.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.primary.capabilities()
    }

    async fn create(&self, new: NewPrediction<'_>) -> Result<Created> {
        self.primary.create(new).await
    }

    async fn get(&self, id: &PredictionId) -> Result<Versioned<Prediction>> {
        self.read("get", |s| async move { s.get(id).await }).await
    }

    async fn get_uncached(&self, id: &PredictionId) -> Result<Versioned<Prediction>> {
        self.read("get", |s| async move { s.get_uncached(id).await })
            .await
    }

    async fn get_shared(&self, id: &PredictionId) -> Result<Arc<Versioned<Prediction>>> {
        self.read("get", |s| async move { s.get_shared(id).await })
            .await
    }

    async fn update(
        &self,
        id: &PredictionId,
        expected: Revision,
        next: &Prediction,
        effects: &[Effect],
    ) -> Result<Revision> {
        self.primary.update(id, expected, next, effects).await
    }

    async fn delete(&self, id: &PredictionId) -> Result<()> {
        self.primary.delete(id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        self.read("list", |s| async move { s.list(query).await })
            .await
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> Result<Vec<PredictionId>> {
        self.primary.expire(now, limit).await
    }

    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<Lease>> {
        self.primary.claim_jobs(request).await
    }

    async fn renew_lease(&self, lease: &Lease, extend_by: Duration) -> Result<Lease> {
        self.primary.renew_lease(lease, extend_by).await
    }

    async fn retry_job(&self, lease: &Lease, run_at: Timestamp) -> Result<()> {
        self.primary.retry_job(lease, run_at).await
    }

    async fn release_job(&self, lease: &Lease, run_at: Timestamp) -> Result<()> {
        self.primary.release_job(lease, run_at).await
    }

    async fn complete_job(&self, id: &PredictionId) -> Result<()> {
        self.primary.complete_job(id).await
    }

    /// Queue depth comes from the primary only: a fallback figure would look healthy while
    /// nothing can be claimed.
    async fn queue_stats(&self) -> Result<QueueStats> {
        self.primary.queue_stats().await
    }

    async fn counters(&self) -> Result<Vec<(String, i64)>> {
        self.read("counters", |s| async move { s.counters().await })
            .await
    }

    async fn subscribe(&self) -> Result<Option<ChangeStream>> {
        self.primary.subscribe().await
    }

    async fn list_jobs(&self, after: Option<&PredictionId>, limit: usize) -> Result<Vec<Job>> {
        self.primary.list_jobs(after, limit).await
    }

    async fn list_idempotency_keys(
        &self,
        after: Option<(&AccountId, &str)>,
        limit: usize,
    ) -> Result<Vec<IdempotencyRecord>> {
        self.primary.list_idempotency_keys(after, limit).await
    }

    async fn import(&self, records: &[Record]) -> Result<()> {
        self.primary.import(records).await
    }

    async fn claim_deliveries(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
    ) -> Result<Vec<DeliveryLease>> {
        self.primary.claim_deliveries(worker, lease_for, max).await
    }

    async fn finish_delivery(
        &self,
        lease: &DeliveryLease,
        attempt: &Attempt,
        outcome: DeliveryOutcome,
    ) -> Result<()> {
        self.primary.finish_delivery(lease, attempt, outcome).await
    }

    async fn list_deliveries(&self, id: &PredictionId) -> Result<Vec<DeliveryState>> {
        self.read(
            "list_deliveries",
            |s| async move { s.list_deliveries(id).await },
        )
        .await
    }

    async fn redeliver(&self, id: &PredictionId, delivery_id: &str) -> Result<()> {
        self.primary.redeliver(id, delivery_id).await
    }

    async fn read_events(
        &self,
        id: &PredictionId,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> Result<Vec<StreamEvent>> {
        self.read("read_events", |s| async move {
            s.read_events(id, after, limit).await
        })
        .await
    }

    async fn close(&self) {
        self.primary.close().await;
        self.secondary.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::id::ModelName;
    use crate::store::Error;
    use crate::store::memory::MemoryStore;

    /// A primary that can be switched off.
    #[derive(Debug, Default)]
    struct Switchable {
        inner: MemoryStore,
        down: AtomicBool,
    }

    impl Switchable {
        fn check(&self) -> Result<()> {
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::Unavailable {
                    backend: "switchable",
                    source: "connection refused".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl Store for Switchable {
        fn backend(&self) -> &'static str {
            "switchable"
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        async fn create(&self, new: NewPrediction<'_>) -> Result<Created> {
            self.check()?;
            self.inner.create(new).await
        }
        async fn get(&self, id: &PredictionId) -> Result<Versioned<Prediction>> {
            self.check()?;
            self.inner.get(id).await
        }
        async fn update(
            &self,
            id: &PredictionId,
            expected: Revision,
            next: &Prediction,
            effects: &[Effect],
        ) -> Result<Revision> {
            self.check()?;
            self.inner.update(id, expected, next, effects).await
        }
        async fn delete(&self, id: &PredictionId) -> Result<()> {
            self.check()?;
            self.inner.delete(id).await
        }
        async fn list(&self, q: &ListQuery) -> Result<Page> {
            self.check()?;
            self.inner.list(q).await
        }
        async fn expire(&self, now: Timestamp, limit: usize) -> Result<Vec<PredictionId>> {
            self.check()?;
            self.inner.expire(now, limit).await
        }
        async fn claim_jobs(&self, r: &ClaimRequest) -> Result<Vec<Lease>> {
            self.check()?;
            self.inner.claim_jobs(r).await
        }
        async fn renew_lease(&self, l: &Lease, d: Duration) -> Result<Lease> {
            self.check()?;
            self.inner.renew_lease(l, d).await
        }
        async fn retry_job(&self, l: &Lease, t: Timestamp) -> Result<()> {
            self.check()?;
            self.inner.retry_job(l, t).await
        }
        async fn release_job(&self, l: &Lease, t: Timestamp) -> Result<()> {
            self.check()?;
            self.inner.release_job(l, t).await
        }
        async fn complete_job(&self, id: &PredictionId) -> Result<()> {
            self.check()?;
            self.inner.complete_job(id).await
        }
        async fn queue_stats(&self) -> Result<QueueStats> {
            self.check()?;
            self.inner.queue_stats().await
        }
        async fn counters(&self) -> Result<Vec<(String, i64)>> {
            self.check()?;
            self.inner.counters().await
        }
        async fn list_jobs(&self, a: Option<&PredictionId>, l: usize) -> Result<Vec<Job>> {
            self.check()?;
            self.inner.list_jobs(a, l).await
        }
        async fn list_idempotency_keys(
            &self,
            a: Option<(&AccountId, &str)>,
            l: usize,
        ) -> Result<Vec<IdempotencyRecord>> {
            self.check()?;
            self.inner.list_idempotency_keys(a, l).await
        }
        async fn import(&self, r: &[Record]) -> Result<()> {
            self.check()?;
            self.inner.import(r).await
        }
        async fn claim_deliveries(
            &self,
            worker: &WorkerId,
            lease_for: Duration,
            max: usize,
        ) -> Result<Vec<DeliveryLease>> {
            self.check()?;
            self.inner.claim_deliveries(worker, lease_for, max).await
        }

        async fn finish_delivery(
            &self,
            lease: &DeliveryLease,
            attempt: &Attempt,
            outcome: DeliveryOutcome,
        ) -> Result<()> {
            self.check()?;
            self.inner.finish_delivery(lease, attempt, outcome).await
        }

        async fn list_deliveries(&self, id: &PredictionId) -> Result<Vec<DeliveryState>> {
            self.check()?;
            self.inner.list_deliveries(id).await
        }

        async fn redeliver(&self, id: &PredictionId, delivery_id: &str) -> Result<()> {
            self.check()?;
            self.inner.redeliver(id, delivery_id).await
        }

        async fn read_events(
            &self,
            id: &PredictionId,
            after: Option<(Revision, u32)>,
            limit: usize,
        ) -> Result<Vec<StreamEvent>> {
            self.check()?;
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

    #[tokio::test]
    async fn reads_fall_back_and_writes_fail_loudly() {
        let primary = Arc::new(Switchable::default());
        let secondary = Arc::new(MemoryStore::new());
        let store = FallbackStore::new(primary.clone(), secondary.clone());
        let p = prediction();
        let new = NewPrediction {
            prediction: &p,
            idempotency: None,
            effects: &[],
        };
        store.create(new).await.unwrap();
        // The secondary is a replica: copy the record there as replication would.
        secondary.create(new).await.unwrap();

        primary.down.store(true, Ordering::SeqCst);
        assert_eq!(
            store.get(&p.id).await.unwrap().value,
            p,
            "read from the fallback"
        );
        assert_eq!(
            store
                .list(&ListQuery {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap()
                .items
                .len(),
            1
        );

        let mut next = p.clone();
        next.logs = "written while down".into();
        let write = store.update(&p.id, Revision::FIRST, &next, &[]).await;
        assert!(matches!(write, Err(Error::Unavailable { .. })), "{write:?}");
        assert_eq!(
            secondary.get(&p.id).await.unwrap().revision,
            Revision::FIRST,
            "no split write"
        );
        assert!(
            store.queue_stats().await.is_err(),
            "queue depth is the primary's only"
        );

        primary.down.store(false, Ordering::SeqCst);
        store
            .update(&p.id, Revision::FIRST, &next, &[])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_missing_record_is_not_a_reason_to_fall_back() {
        let primary = Arc::new(Switchable::default());
        let secondary = Arc::new(MemoryStore::new());
        let p = prediction();
        secondary
            .create(NewPrediction {
                prediction: &p,
                idempotency: None,
                effects: &[],
            })
            .await
            .unwrap();
        let store = FallbackStore::new(primary, secondary);
        assert!(matches!(store.get(&p.id).await, Err(Error::NotFound(_))));
    }
}
