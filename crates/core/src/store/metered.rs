//! [`MeteredStore`]: a decorator that records the latency and outcome of every store operation.
//!
//! It wraps any [`Store`](super::Store) and reports through the `metrics` facade as
//! `augur_store_operation_duration_seconds{backend, operation, outcome}` (a histogram; its
//! `_count` series counts operations). The outcome is `ok` or the [`Error::kind`](super::Error::kind).

use std::time::Instant;

use super::{Access, DynStore, Result};
use crate::forward_store;

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

    async fn observe<T, F, Fut>(
        &self,
        _access: Access,
        operation: &'static str,
        call: F,
    ) -> Result<T>
    where
        F: FnOnce(DynStore) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let result = call(self.inner.clone()).await;
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

forward_store!(RecordStore for MeteredStore => inner via observe);
forward_store!(QueueStore for MeteredStore => inner via observe);
forward_store!(EventStore for MeteredStore => inner via observe);
forward_store!(LedgerStore for MeteredStore => inner via observe);
forward_store!(AdminStore for MeteredStore => inner via observe);
