//! Shared setup for this crate's tests: a store in a fresh schema of the test database
//! (`AUGUR_TEST_POSTGRES_URL`), whose schema is dropped again when the store is dropped.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use augur_core::store::{
    self, Attempt, Capabilities, ChangeStream, ClaimRequest, Created, DeliveryLease,
    DeliveryOutcome, DeliveryState, Effect, IdempotencyRecord, Job, Lease, ListQuery,
    NewPrediction, Page, QueueStats, Record, Store, StreamEvent,
};
use augur_core::{AccountId, Prediction, PredictionId, Revision, Timestamp, Versioned, WorkerId};
use augur_store_postgres::PostgresStore;
use tokio_postgres::NoTls;

/// The prefix of every schema the tests create.
const PREFIX: &str = "augur_test_";
/// Test schemas older than this are left over from killed runs, and dropped.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// The test database's URL, or `None` (a skip) when it is not configured.
pub(crate) fn url() -> Option<String> {
    augur_store_conformance::skip_unless_configured("AUGUR_TEST_POSTGRES_URL")
}

/// A schema name no other test uses: the creation time (for the stale sweep), the process
/// and a counter.
pub(crate) fn fresh_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "{PREFIX}{secs}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with `schema` as its schema (replacing any query the variable had).
pub(crate) fn url_with_schema(url: &str, schema: &str) -> String {
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    format!("{base}?schema={schema}")
}

/// A plain connection to the test database, for looking behind the store's back.
pub(crate) async fn raw_client(url: &str) -> tokio_postgres::Client {
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    let (client, connection) = tokio_postgres::connect(base, NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Drops the test schemas that runs killed before they could clean up left behind.
async fn drop_stale_schemas(url: &str) {
    let client = raw_client(url).await;
    let rows = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
            &[&PREFIX],
        )
        .await
        .expect("list test schemas");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for row in rows {
        let name: String = row.get(0);
        let created: Option<u64> = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse().ok());
        if created.is_some_and(|c| now.saturating_sub(c) > STALE_AFTER.as_secs()) {
            // Another process may be dropping it too.
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .await;
        }
    }
}

/// A store in a fresh schema, or `None` (a skip) when no database is configured.
pub(crate) async fn store() -> Option<TestStore> {
    let url = url()?;
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT.get_or_init(|| drop_stale_schemas(&url)).await;
    let schema = fresh_schema();
    let inner = PostgresStore::connect(&url_with_schema(&url, &schema))
        .await
        .expect("connect to the test database");
    Some(TestStore {
        inner: Arc::new(inner),
        url,
    })
}

/// A [`PostgresStore`] that drops its schema when dropped.
#[derive(Debug)]
pub(crate) struct TestStore {
    pub(crate) inner: Arc<PostgresStore>,
    url: String,
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.inner.options().schema.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its
        // own runtime does the work, and is waited for so the process does not exit first.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let client = raw_client(&url).await;
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("cannot drop a test schema: {e}");
        }
    }
}

#[async_trait]
impl Store for TestStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn create(&self, new: NewPrediction<'_>) -> store::Result<Created> {
        self.inner.create(new).await
    }
    async fn get(&self, id: &PredictionId) -> store::Result<Versioned<Prediction>> {
        self.inner.get(id).await
    }
    async fn update(
        &self,
        id: &PredictionId,
        expected: Revision,
        next: &Prediction,
        effects: &[Effect],
    ) -> store::Result<Revision> {
        self.inner.update(id, expected, next, effects).await
    }
    async fn delete(&self, id: &PredictionId) -> store::Result<()> {
        self.inner.delete(id).await
    }
    async fn list(&self, query: &ListQuery) -> store::Result<Page> {
        self.inner.list(query).await
    }
    async fn expire(&self, now: Timestamp, limit: usize) -> store::Result<Vec<PredictionId>> {
        self.inner.expire(now, limit).await
    }
    async fn claim_jobs(&self, request: &ClaimRequest) -> store::Result<Vec<Lease>> {
        self.inner.claim_jobs(request).await
    }
    async fn renew_lease(&self, lease: &Lease, extend_by: Duration) -> store::Result<Lease> {
        self.inner.renew_lease(lease, extend_by).await
    }
    async fn retry_job(&self, lease: &Lease, run_at: Timestamp) -> store::Result<()> {
        self.inner.retry_job(lease, run_at).await
    }
    async fn release_job(&self, lease: &Lease, run_at: Timestamp) -> store::Result<()> {
        self.inner.release_job(lease, run_at).await
    }
    async fn complete_job(&self, id: &PredictionId) -> store::Result<()> {
        self.inner.complete_job(id).await
    }
    async fn queue_stats(&self) -> store::Result<QueueStats> {
        self.inner.queue_stats().await
    }
    async fn counters(&self) -> store::Result<Vec<(String, i64)>> {
        self.inner.counters().await
    }
    async fn subscribe(&self) -> store::Result<Option<ChangeStream>> {
        self.inner.subscribe().await
    }
    async fn list_jobs(
        &self,
        after: Option<&PredictionId>,
        limit: usize,
    ) -> store::Result<Vec<Job>> {
        self.inner.list_jobs(after, limit).await
    }
    async fn list_idempotency_keys(
        &self,
        after: Option<(&AccountId, &str)>,
        limit: usize,
    ) -> store::Result<Vec<IdempotencyRecord>> {
        self.inner.list_idempotency_keys(after, limit).await
    }
    async fn import(&self, records: &[Record]) -> store::Result<()> {
        self.inner.import(records).await
    }
    async fn claim_deliveries(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
    ) -> store::Result<Vec<DeliveryLease>> {
        self.inner.claim_deliveries(worker, lease_for, max).await
    }
    async fn finish_delivery(
        &self,
        lease: &DeliveryLease,
        attempt: &Attempt,
        outcome: DeliveryOutcome,
    ) -> store::Result<()> {
        self.inner.finish_delivery(lease, attempt, outcome).await
    }
    async fn list_deliveries(&self, id: &PredictionId) -> store::Result<Vec<DeliveryState>> {
        self.inner.list_deliveries(id).await
    }
    async fn redeliver(&self, id: &PredictionId, delivery_id: &str) -> store::Result<()> {
        self.inner.redeliver(id, delivery_id).await
    }
    async fn read_events(
        &self,
        id: &PredictionId,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> store::Result<Vec<StreamEvent>> {
        self.inner.read_events(id, after, limit).await
    }
    async fn close(&self) {
        self.inner.close().await;
    }
}
