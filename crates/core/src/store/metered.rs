//! [`MeteredStore`]: a decorator that records the latency and outcome of every store operation.
//!
//! It wraps any [`Store`] and reports through the `metrics` facade as
//! `augur_store_operation_duration_seconds{backend, operation, outcome}` (a histogram; its
//! `_count` series counts operations). The outcome is `ok` or the [`Error::kind`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    Attempt, Capabilities, ChangeStream, ClaimRequest, Created, DeliveryLease, DeliveryOutcome,
    DeliveryState, DynStore, IdempotencyRecord, Job, Lease, ListQuery, NewPrediction, Page,
    QueueStats, Record, Result, Store, StreamEvent,
};
use crate::id::{AccountId, PredictionId, WorkerId};
use crate::prediction::{Prediction, Revision, Versioned};
use crate::store::Effect;
use crate::time::Timestamp;

/// Records metrics for every operation of the wrapped store.
#[derive(Debug)]
pub struct MeteredStore {
    inner: DynStore,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: DynStore) -> Self {
        Self { inner }
    }

    async fn observe<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let result = fut.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        metrics::histogram!(
            "augur_store_operation_duration_seconds",
            "backend" => self.inner.backend(),
            "operation" => operation,
            "outcome" => outcome,
        )
        .record(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl Store for MeteredStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn create(&self, new: NewPrediction<'_>) -> Result<Created> {
        self.observe("create", self.inner.create(new)).await
    }

    async fn get(&self, id: &PredictionId) -> Result<Versioned<Prediction>> {
        self.observe("get", self.inner.get(id)).await
    }

    async fn get_uncached(&self, id: &PredictionId) -> Result<Versioned<Prediction>> {
        self.observe("get", self.inner.get_uncached(id)).await
    }

    async fn get_shared(&self, id: &PredictionId) -> Result<Arc<Versioned<Prediction>>> {
        self.observe("get", self.inner.get_shared(id)).await
    }

    async fn update(
        &self,
        id: &PredictionId,
        expected: Revision,
        next: &Prediction,
        effects: &[Effect],
    ) -> Result<Revision> {
        self.observe("update", self.inner.update(id, expected, next, effects))
            .await
    }

    async fn delete(&self, id: &PredictionId) -> Result<()> {
        self.observe("delete", self.inner.delete(id)).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        self.observe("list", self.inner.list(query)).await
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> Result<Vec<PredictionId>> {
        self.observe("expire", self.inner.expire(now, limit)).await
    }

    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<Lease>> {
        self.observe("claim_jobs", self.inner.claim_jobs(request))
            .await
    }

    async fn renew_lease(&self, lease: &Lease, extend_by: Duration) -> Result<Lease> {
        self.observe("renew_lease", self.inner.renew_lease(lease, extend_by))
            .await
    }

    async fn retry_job(&self, lease: &Lease, run_at: Timestamp) -> Result<()> {
        self.observe("retry_job", self.inner.retry_job(lease, run_at))
            .await
    }

    async fn release_job(&self, lease: &Lease, run_at: Timestamp) -> Result<()> {
        self.observe("release_job", self.inner.release_job(lease, run_at))
            .await
    }

    async fn complete_job(&self, id: &PredictionId) -> Result<()> {
        self.observe("complete_job", self.inner.complete_job(id))
            .await
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        self.observe("queue_stats", self.inner.queue_stats()).await
    }

    async fn counters(&self) -> Result<Vec<(String, i64)>> {
        self.observe("counters", self.inner.counters()).await
    }

    async fn subscribe(&self) -> Result<Option<ChangeStream>> {
        self.observe("subscribe", self.inner.subscribe()).await
    }

    async fn list_jobs(&self, after: Option<&PredictionId>, limit: usize) -> Result<Vec<Job>> {
        self.observe("list_jobs", self.inner.list_jobs(after, limit))
            .await
    }

    async fn list_idempotency_keys(
        &self,
        after: Option<(&AccountId, &str)>,
        limit: usize,
    ) -> Result<Vec<IdempotencyRecord>> {
        self.observe(
            "list_idempotency_keys",
            self.inner.list_idempotency_keys(after, limit),
        )
        .await
    }

    async fn import(&self, records: &[Record]) -> Result<()> {
        self.observe("import", self.inner.import(records)).await
    }

    async fn claim_deliveries(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
    ) -> Result<Vec<DeliveryLease>> {
        self.observe(
            "claim_deliveries",
            self.inner.claim_deliveries(worker, lease_for, max),
        )
        .await
    }

    async fn finish_delivery(
        &self,
        lease: &DeliveryLease,
        attempt: &Attempt,
        outcome: DeliveryOutcome,
    ) -> Result<()> {
        self.observe(
            "finish_delivery",
            self.inner.finish_delivery(lease, attempt, outcome),
        )
        .await
    }

    async fn list_deliveries(&self, id: &PredictionId) -> Result<Vec<DeliveryState>> {
        self.observe("list_deliveries", self.inner.list_deliveries(id))
            .await
    }

    async fn redeliver(&self, id: &PredictionId, delivery_id: &str) -> Result<()> {
        self.observe("redeliver", self.inner.redeliver(id, delivery_id))
            .await
    }

    async fn read_events(
        &self,
        id: &PredictionId,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> Result<Vec<StreamEvent>> {
        self.observe("read_events", self.inner.read_events(id, after, limit))
            .await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
