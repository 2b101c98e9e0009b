//! [`Hub`]: in-process change notifications, so that waiters learn of a write without polling.
//!
//! Every successful write through [`crate::service::Predictions`] publishes the new record
//! here. Requests holding `Prefer: wait`, live streams and workers watching for a cancel
//! subscribe to one prediction. The hub only knows about writes made in this process; a
//! backend shared by several nodes feeds other nodes' writes in through [`Hub::publish`].
//! [`Hub::subscribe_all`] is the firehose of every change (`GET /v1/events`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use quick_cache::sync::Cache;
use tokio::sync::{Notify, broadcast, watch};

use crate::id::PredictionId;
use crate::prediction::{Prediction, Versioned};

type Slot = watch::Sender<Option<Arc<Versioned<Prediction>>>>;

/// Per-prediction change notifications, plus a wake-up for idle workers when new work is
/// queued. Cheap to clone (a shared handle).
#[derive(Clone, Debug)]
pub struct Hub {
    watchers: Arc<Mutex<HashMap<PredictionId, Slot>>>,
    work: Arc<Notify>,
    outbox: Arc<Notify>,
    tasks: Arc<Notify>,
    all: broadcast::Sender<Arc<Versioned<Prediction>>>,
    /// The latest revision sent to the firehose per recently changed prediction, so a change
    /// published twice (written here, then heard back from the store) goes out once.
    sent_to_all: Arc<Cache<PredictionId, u64>>,
}

/// How many changes a slow firehose subscriber may fall behind before it misses some.
const FIREHOSE_BUFFER: usize = 4096;

impl Default for Hub {
    fn default() -> Self {
        Self {
            watchers: Arc::default(),
            work: Arc::default(),
            outbox: Arc::default(),
            tasks: Arc::default(),
            all: broadcast::channel(FIREHOSE_BUFFER).0,
            sent_to_all: Arc::new(Cache::new(FIREHOSE_BUFFER)),
        }
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PredictionId, Slot>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches one prediction. The watch sees every publish made after this call (the latest
    /// one, if several come in quick succession).
    pub fn subscribe(&self, id: &PredictionId) -> Watch {
        let rx = self
            .lock()
            .entry(id.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Watch {
            id: id.clone(),
            rx,
            hub: self.clone(),
        }
    }

    /// Announces a new revision of a prediction. Older revisions than the one already
    /// announced are ignored, so concurrent publishers cannot move a watcher backwards.
    pub fn publish(&self, record: &Versioned<Prediction>) {
        if self.all.receiver_count() > 0 {
            let id = &record.value.id;
            let newer = self
                .sent_to_all
                .get(id)
                .is_none_or(|sent| sent < record.revision.0);
            if newer {
                self.sent_to_all.insert(id.clone(), record.revision.0);
                let _ = self.all.send(Arc::new(record.clone()));
            }
        }
        let watchers = self.lock();
        let Some(slot) = watchers.get(&record.value.id) else {
            return;
        };
        slot.send_if_modified(|current| {
            if current
                .as_ref()
                .is_some_and(|c| c.revision >= record.revision)
            {
                return false;
            }
            *current = Some(Arc::new(record.clone()));
            true
        });
    }

    /// Tells idle workers that a job was queued.
    pub fn notify_work(&self) {
        self.work.notify_waiters();
        self.work.notify_one();
    }

    /// Tells the webhook dispatcher that a write put a message in an outbox.
    pub fn notify_outbox(&self) {
        self.outbox.notify_one();
    }

    /// Tells the internal-task loop (batch tallies) that a write queued a task.
    pub fn notify_tasks(&self) {
        self.tasks.notify_one();
    }

    /// What [`Hub::notify_tasks`] signals, for the task loop to wait on.
    pub fn tasks_signal(&self) -> Arc<Notify> {
        self.tasks.clone()
    }

    /// What [`Hub::notify_outbox`] signals, for the webhook dispatcher to wait on.
    pub fn outbox_signal(&self) -> Arc<Notify> {
        self.outbox.clone()
    }

    /// Completes when [`Hub::notify_work`] is called (or was called since the last wait
    /// completed).
    pub async fn work_queued(&self) {
        self.work.notified().await;
    }

    /// Whether anyone in this process watches `id`.
    pub fn is_watched(&self, id: &PredictionId) -> bool {
        self.all.receiver_count() > 0 || self.lock().contains_key(id)
    }

    /// Every change published from now on, of every prediction (the firehose). A subscriber
    /// that falls more than a few thousand changes behind misses the oldest
    /// ([`broadcast::error::RecvError::Lagged`]).
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<Versioned<Prediction>>> {
        self.all.subscribe()
    }

    /// The predictions someone in this process watches.
    pub fn watched_ids(&self) -> Vec<PredictionId> {
        self.lock().keys().cloned().collect()
    }

    /// How many predictions are being watched (for tests and metrics).
    pub fn watched(&self) -> usize {
        self.lock().len()
    }
}

/// A subscription to one prediction's changes. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Watch {
    id: PredictionId,
    rx: watch::Receiver<Option<Arc<Versioned<Prediction>>>>,
    hub: Hub,
}

impl Watch {
    /// Waits for the next publish and returns it. Returns `None` only if the hub is gone.
    pub async fn changed(&mut self) -> Option<Arc<Versioned<Prediction>>> {
        self.rx.changed().await.ok()?;
        self.rx.borrow_and_update().clone()
    }

    /// The latest publish seen since subscribing, if any.
    pub fn latest(&self) -> Option<Arc<Versioned<Prediction>>> {
        self.rx.borrow().clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watchers = self.hub.lock();
        // Our receiver is still alive here, so the last watcher sees a count of one.
        if watchers
            .get(&self.id)
            .is_some_and(|slot| slot.receiver_count() <= 1)
        {
            watchers.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{AccountId, ModelName};
    use crate::prediction::Revision;

    fn record(rev: u64) -> Versioned<Prediction> {
        Versioned {
            value: Prediction::new(
                PredictionId::parse("p1").unwrap(),
                AccountId::admin(),
                ModelName::parse("augur/echo").unwrap(),
                "v".into(),
                serde_json::json!({}),
            ),
            revision: Revision(rev),
        }
    }

    #[tokio::test]
    async fn watchers_see_newer_revisions_only_and_clean_up() {
        let hub = Hub::new();
        let mut w = hub.subscribe(&PredictionId::parse("p1").unwrap());
        hub.publish(&record(2));
        assert_eq!(w.changed().await.unwrap().revision, Revision(2));
        hub.publish(&record(1));
        assert_eq!(w.latest().unwrap().revision, Revision(2));
        let w2 = hub.subscribe(&PredictionId::parse("p1").unwrap());
        drop(w);
        assert_eq!(hub.watched(), 1);
        drop(w2);
        assert_eq!(hub.watched(), 0);
    }

    #[test]
    fn publishing_without_watchers_is_free() {
        let hub = Hub::new();
        hub.publish(&record(1));
        assert_eq!(hub.watched(), 0);
    }
}
