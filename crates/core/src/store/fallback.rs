//! [`FallbackStore`]: reads from a secondary store while the primary is unavailable; writes
//! only ever go to the primary.
//!
//! This is the seeds' `getStatusWithFallback`, done so that it cannot split the data: a read
//! that fails on the primary with a retryable error ([`Error::is_retryable`](super::Error::is_retryable)) is answered by the
//! secondary (typically a read replica, or a store kept in step by `augur migrate`), and is
//! counted as `augur_store_fallback_reads_total{operation}`. A write that fails on the primary
//! fails loudly: it is never sent to the secondary, where it would fork the history. The
//! secondary may lag, so a fallback read can be stale; that is the trade this decorator makes
//! for availability of status reads during an outage.

use async_trait::async_trait;

use super::{
    Access, AdminStore, Capabilities, ChangeStream, DynStore, Exported, Position, Result, Section,
};
use crate::forward_store;

#[cfg(test)]
use super::Error;

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

    async fn route<T, F, Fut>(&self, access: Access, operation: &'static str, call: F) -> Result<T>
    where
        F: Fn(DynStore) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match call(self.primary.clone()).await {
            Err(e) if e.is_retryable() && access == Access::Read => {
                tracing::warn!(error = %e, operation, "primary store unavailable; reading from the fallback");
                metrics::counter!("augur_store_fallback_reads_total", "operation" => operation)
                    .increment(1);
                call(self.secondary.clone()).await
            }
            other => other,
        }
    }
}

forward_store!(RecordStore for FallbackStore => primary via route);
forward_store!(QueueStore for FallbackStore => primary via route);
forward_store!(EventStore for FallbackStore => primary via route);
forward_store!(LedgerStore for FallbackStore => primary via route);

/// Everything of the primary's, but closing closes both.
#[async_trait]
impl AdminStore for FallbackStore {
    fn backend(&self) -> &'static str {
        self.primary.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.primary.capabilities()
    }

    async fn counters(&self) -> Result<Vec<(String, i64)>> {
        self.route(
            Access::Read,
            "counters",
            |s| async move { s.counters().await },
        )
        .await
    }

    async fn subscribe(&self) -> Result<Option<ChangeStream>> {
        self.primary.subscribe().await
    }

    async fn export(
        &self,
        section: Section,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Exported>> {
        self.primary.export(section, after, limit).await
    }

    async fn import(&self, pieces: &[Exported]) -> Result<()> {
        self.primary.import(pieces).await
    }

    async fn close(&self) {
        self.primary.close().await;
        self.secondary.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::id::{AccountId, ModelName, PredictionId};
    use crate::prediction::{Prediction, Revision};
    use crate::store::memory::MemoryStore;
    use crate::store::{Entity, Kind, Lane, ListQuery, Op, QueueStore, RecordStore, Write};

    /// A primary that can be switched off.
    #[derive(Debug)]
    struct Switchable {
        inner: DynStore,
        down: AtomicBool,
    }

    impl Switchable {
        async fn checked<T, F, Fut>(&self, _: Access, _: &'static str, call: F) -> Result<T>
        where
            F: FnOnce(DynStore) -> Fut,
            Fut: Future<Output = Result<T>>,
        {
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::Unavailable {
                    backend: "switchable",
                    source: "connection refused".into(),
                });
            }
            call(self.inner.clone()).await
        }
    }

    forward_store!(RecordStore for Switchable => inner via checked);
    forward_store!(QueueStore for Switchable => inner via checked);
    forward_store!(EventStore for Switchable => inner via checked);
    forward_store!(LedgerStore for Switchable => inner via checked);
    forward_store!(AdminStore for Switchable => inner via checked);

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

    #[tokio::test]
    async fn reads_fall_back_and_writes_fail_loudly() {
        let primary = Arc::new(Switchable {
            inner: Arc::new(MemoryStore::new()),
            down: AtomicBool::new(false),
        });
        let secondary = Arc::new(MemoryStore::new());
        let store = FallbackStore::new(primary.clone(), secondary.clone());
        let p = prediction();
        store.write(&insert(&p)).await.unwrap();
        // The secondary is a replica: copy the record there as replication would.
        secondary.write(&insert(&p)).await.unwrap();

        primary.down.store(true, Ordering::SeqCst);
        let got = store
            .get(&p.key())
            .await
            .unwrap()
            .expect("read from the fallback");
        assert_eq!(*got.decode::<Prediction>().unwrap(), p);
        let listed = store
            .list(&ListQuery::of(Kind::Prediction, 10))
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 1);

        let mut next = p.clone();
        next.logs = "written while down".into();
        let update = Write::new(p.owner.clone()).op(Op::Update {
            record: next.to_record().unwrap(),
            expected: Revision::FIRST,
        });
        let written = store.write(&update).await;
        assert!(
            matches!(written, Err(Error::Unavailable { .. })),
            "{written:?}"
        );
        assert_eq!(
            secondary.get(&p.key()).await.unwrap().unwrap().revision,
            Revision::FIRST,
            "no split write"
        );
        assert!(
            store.queue_stats(Lane::Jobs).await.is_err(),
            "queue depth is the primary's only"
        );

        primary.down.store(false, Ordering::SeqCst);
        store.write(&update).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_record_is_not_a_reason_to_fall_back() {
        let primary: DynStore = Arc::new(MemoryStore::new());
        let secondary = Arc::new(MemoryStore::new());
        let p = prediction();
        secondary.write(&insert(&p)).await.unwrap();
        let store = FallbackStore::new(primary, secondary);
        assert!(store.get(&p.key()).await.unwrap().is_none());
    }
}
