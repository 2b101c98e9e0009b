//! [`ChangeListener`]: brings other nodes' writes into this process.
//!
//! A store shared by several nodes announces every write ([`Store::subscribe`]). The listener
//! turns those announcements into what this node would have done for its own writes: it drops
//! the read cache's entry, re-reads a prediction that someone here is watching (a `Prefer: wait`,
//! an event stream, a worker watching for a cancel) and publishes it on the hub, and wakes idle
//! workers when jobs were queued. After a gap (`Change::Resync`, or the stream ending) it
//! clears the cache and re-reads everything watched, then subscribes again.
//!
//! Metrics: `augur_store_announcements_subscribed` (1 while subscribed) and
//! `augur_store_announcements_total{kind}`.
//!
//! [`Store::subscribe`]: augur_core::store::AdminStore::subscribe

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use augur_core::store::cached::CachedStore;
use augur_core::store::{Change, Kind, Lane};
use augur_core::{PredictionId, Predictions};

/// Forwards a shared store's announcements into this process.
#[derive(Clone, Debug)]
pub struct ChangeListener {
    service: Predictions,
    cache: Option<Arc<CachedStore>>,
}

impl ChangeListener {
    /// A listener for `service`'s store, invalidating `cache` if there is one in front of it.
    pub fn new(service: Predictions, cache: Option<Arc<CachedStore>>) -> Self {
        Self { service, cache }
    }

    /// Listens until `shutdown` completes, resubscribing after errors with backoff.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        let ops = self.service.ops();
        loop {
            let stream = tokio::select! {
                _ = &mut shutdown => return,
                subscribed = ops.subscribe() => subscribed,
            };
            let mut stream = match stream {
                Ok(Some(stream)) => {
                    backoff = Duration::from_millis(100);
                    metrics::gauge!("augur_store_announcements_subscribed").set(1.0);
                    tracing::info!("listening for other nodes' writes");
                    stream
                }
                Ok(None) => {
                    tracing::debug!("the store announces nothing; no listener needed");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to store announcements; retrying");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // What happened while we were not subscribed is unknown.
            self.resync().await;
            loop {
                let change = tokio::select! {
                    _ = &mut shutdown => return,
                    change = stream.next() => change,
                };
                match change {
                    Some(change) => self.apply(change).await,
                    None => {
                        metrics::gauge!("augur_store_announcements_subscribed").set(0.0);
                        tracing::warn!("store announcements ended; subscribing again");
                        break;
                    }
                }
            }
        }
    }

    /// Applies one announcement.
    pub async fn apply(&self, change: Change) {
        let kind = match &change {
            Change::Record { .. } => "record",
            Change::Work(_) => "work",
            Change::Resync => "resync",
        };
        metrics::counter!("augur_store_announcements_total", "kind" => kind).increment(1);
        match change {
            Change::Record { key, revision } => {
                if let Some(cache) = &self.cache {
                    cache.invalidate_below(&key, revision);
                }
                if key.kind == Kind::Prediction
                    && let Ok(id) = PredictionId::parse(&key.id)
                    && self.service.hub().is_watched(&id)
                {
                    self.republish(&id, Some(revision)).await;
                }
            }
            Change::Work(Lane::Jobs) => self.service.hub().notify_work(),
            Change::Work(Lane::Webhooks) => self.service.hub().notify_outbox(),
            Change::Work(Lane::Tasks) => self.service.hub().notify_tasks(),
            Change::Resync => self.resync().await,
        }
    }

    async fn resync(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        for id in self.service.hub().watched_ids() {
            self.republish(&id, None).await;
        }
        self.service.hub().notify_work();
        self.service.hub().notify_outbox();
    }

    async fn republish(&self, id: &PredictionId, at_least: Option<augur_core::Revision>) {
        match self.service.get(id).await {
            Ok(record) => {
                if at_least.is_some_and(|r| record.revision < r) {
                    // A lagging read; the watcher's own re-read will catch up.
                    tracing::debug!(prediction_id = %id, "announcement ahead of the read");
                }
                self.service.hub().publish(&record);
            }
            Err(e) => {
                tracing::debug!(prediction_id = %id, error = %e, "cannot re-read a watched prediction")
            }
        }
    }
}
