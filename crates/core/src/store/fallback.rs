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
//!
//! A primary that is down answers each call only after its client's timeout (seconds), so a
//! circuit breaker stops asking it: after [`Breaker::failures`] retryable errors in a row the
//! breaker opens, reads go straight to the secondary and writes fail at once with
//! [`Error::Unavailable`] for [`Breaker::cooldown`]; then one call (a probe) goes to the
//! primary while the others keep to the secondary, and its answer closes the breaker or opens
//! it for another cool-down. The state is `augur_store_breaker_open` (0 or 1).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    Access, AdminStore, Capabilities, ChangeStream, DynStore, Error, Exported, Position, Result,
    Section,
};
use crate::forward_store;

/// When the breaker opens and how long it stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breaker {
    /// Retryable errors in a row from the primary that open the breaker (at least 1).
    pub failures: u32,
    /// How long reads skip the primary (and writes fail at once) before a probe.
    pub cooldown: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            failures: 3,
            cooldown: Duration::from_secs(5),
        }
    }
}

/// Primary for everything, secondary for reads while the primary is unavailable.
#[derive(Debug)]
pub struct FallbackStore {
    primary: DynStore,
    secondary: DynStore,
    breaker: Breaker,
    /// Retryable errors in a row from the primary.
    failures: AtomicU32,
    /// While open: until when calls skip the primary.
    open_until: Mutex<Option<Instant>>,
    /// A probe is on its way to the primary.
    probing: AtomicBool,
}

/// Where one call goes.
enum Route {
    /// The primary, as usual (the breaker is closed).
    Primary,
    /// The primary, as the one probe of an open breaker.
    Probe,
    /// Not the primary: the breaker is open.
    Skip,
}

/// Lets the next caller probe once dropped.
struct ProbeTurn<'a>(&'a AtomicBool);

impl Drop for ProbeTurn<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl FallbackStore {
    /// Reads fall back from `primary` to `secondary`; writes go to `primary` only. The
    /// breaker has its default settings.
    pub fn new(primary: DynStore, secondary: DynStore) -> Self {
        Self::with_breaker(primary, secondary, Breaker::default())
    }

    /// Like [`FallbackStore::new`], with the breaker's settings.
    pub fn with_breaker(primary: DynStore, secondary: DynStore, breaker: Breaker) -> Self {
        Self {
            primary,
            secondary,
            breaker: Breaker {
                failures: breaker.failures.max(1),
                ..breaker
            },
            failures: AtomicU32::new(0),
            open_until: Mutex::new(None),
            probing: AtomicBool::new(false),
        }
    }

    /// Whether the breaker is open (calls skip the primary, but for probes).
    pub fn breaker_open(&self) -> bool {
        self.open_until.lock().expect("breaker lock").is_some()
    }

    fn route_for_call(&self) -> Route {
        let open_until = *self.open_until.lock().expect("breaker lock");
        match open_until {
            None => Route::Primary,
            Some(until) if Instant::now() < until => Route::Skip,
            Some(_) => {
                match self
                    .probing
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                {
                    Ok(_) => Route::Probe,
                    Err(_) => Route::Skip,
                }
            }
        }
    }

    /// Records what the primary answered: a retryable error counts towards opening (or, from
    /// a probe, reopens at once); anything else closes the breaker.
    fn record(&self, route: &Route, unavailable: bool) {
        let mut open_until = self.open_until.lock().expect("breaker lock");
        if unavailable {
            let failures = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
            if matches!(route, Route::Probe) || failures >= self.breaker.failures {
                if open_until.is_none() {
                    tracing::warn!(
                        failures,
                        cooldown = ?self.breaker.cooldown,
                        "primary store unavailable; reads go to the fallback until a probe succeeds"
                    );
                }
                *open_until = Some(Instant::now() + self.breaker.cooldown);
                metrics::gauge!("augur_store_breaker_open").set(1.0);
            }
        } else {
            self.failures.store(0, Ordering::SeqCst);
            if open_until.take().is_some() {
                tracing::info!("primary store answers again; the breaker is closed");
                metrics::gauge!("augur_store_breaker_open").set(0.0);
            }
        }
    }

    async fn route<T, F, Fut>(&self, access: Access, operation: &'static str, call: F) -> Result<T>
    where
        F: Fn(DynStore) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let route = self.route_for_call();
        let error = match route {
            Route::Skip => Error::Unavailable {
                backend: self.primary.backend(),
                source: "the primary store is not answering; retry in a few seconds".into(),
            },
            Route::Primary | Route::Probe => {
                // The probe's turn ends with it, even if its caller gives up waiting.
                let _probe = matches!(route, Route::Probe).then(|| ProbeTurn(&self.probing));
                let answer = call(self.primary.clone()).await;
                // Only an unreachable primary opens the breaker: one that is full still
                // answers reads.
                self.record(&route, matches!(&answer, Err(Error::Unavailable { .. })));
                match answer {
                    Err(e) if e.is_retryable() => e,
                    other => return other,
                }
            }
        };
        if access == Access::Write {
            return Err(error);
        }
        tracing::debug!(error = %error, operation, "reading from the fallback store");
        metrics::counter!("augur_store_fallback_reads_total", "operation" => operation)
            .increment(1);
        call(self.secondary.clone()).await
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

    /// A primary that can be switched off, and counts the calls it gets.
    #[derive(Debug)]
    struct Switchable {
        inner: DynStore,
        down: AtomicBool,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Switchable {
        async fn checked<T, F, Fut>(&self, _: Access, _: &'static str, call: F) -> Result<T>
        where
            F: FnOnce(DynStore) -> Fut,
            Fut: Future<Output = Result<T>>,
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
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
            calls: Default::default(),
        });
        let secondary = Arc::new(MemoryStore::new());
        // The breaker stays closed here: every call asks the primary.
        let never = Breaker {
            failures: u32::MAX,
            ..Breaker::default()
        };
        let store = FallbackStore::with_breaker(primary.clone(), secondary.clone(), never);
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

    #[tokio::test]
    async fn the_breaker_stops_asking_a_primary_that_is_down_and_probes_it() {
        let primary = Arc::new(Switchable {
            inner: Arc::new(MemoryStore::new()),
            down: AtomicBool::new(true),
            calls: Default::default(),
        });
        let secondary = Arc::new(MemoryStore::new());
        let breaker = Breaker {
            failures: 2,
            cooldown: std::time::Duration::from_millis(200),
        };
        let store = FallbackStore::with_breaker(primary.clone(), secondary.clone(), breaker);
        let p = prediction();
        secondary.write(&insert(&p)).await.unwrap();
        let calls = || primary.calls.load(Ordering::SeqCst);

        for _ in 0..2 {
            assert!(store.get(&p.key()).await.unwrap().is_some());
        }
        assert_eq!(calls(), 2);
        assert!(store.breaker_open());
        // Open: reads skip the primary, writes fail at once with a retryable error.
        for _ in 0..10 {
            assert!(store.get(&p.key()).await.unwrap().is_some());
        }
        let written = store.write(&insert(&prediction())).await;
        assert!(
            matches!(&written, Err(e) if e.is_retryable()),
            "{written:?}"
        );
        assert_eq!(calls(), 2, "the open breaker still asked the primary");

        // After the cool-down one probe goes to the primary; it fails: open again.
        tokio::time::sleep(breaker.cooldown).await;
        assert!(store.get(&p.key()).await.unwrap().is_some());
        assert_eq!(calls(), 3);
        assert!(store.breaker_open());
        store.get(&p.key()).await.unwrap();
        assert_eq!(calls(), 3);

        // The primary is back: the next probe closes the breaker and everything goes there.
        primary.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(breaker.cooldown).await;
        assert!(
            store.get(&p.key()).await.unwrap().is_none(),
            "the probe read the primary"
        );
        assert!(!store.breaker_open());
        store.write(&insert(&p)).await.unwrap();
        assert_eq!(calls(), 5);
    }
}
