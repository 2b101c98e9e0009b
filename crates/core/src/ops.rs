//! [`Ops`]: what operations need to know of the store (its name and capabilities, counters,
//! queue depths, change announcements), without reaching its records.

use crate::store::{self, Capabilities, ChangeStream, DynStore, Lane, QueueStats};

/// Operational views of a store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ops {
    store: DynStore,
}

impl Ops {
    /// The views of `store`.
    pub fn new(store: DynStore) -> Self {
        Self { store }
    }

    /// The backend's short name.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// What the backend guarantees.
    pub fn capabilities(&self) -> Capabilities {
        self.store.capabilities()
    }

    /// Every durable counter.
    pub async fn counters(&self) -> store::Result<Vec<(String, i64)>> {
        self.store.counters().await
    }

    /// A lane's item counts.
    pub async fn queue_stats(&self, lane: Lane) -> store::Result<QueueStats> {
        self.store.queue_stats(lane).await
    }

    /// The announcements of every node's writes, if the backend makes them.
    pub async fn subscribe(&self) -> store::Result<Option<ChangeStream>> {
        self.store.subscribe().await
    }
}
