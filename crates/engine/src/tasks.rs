//! [`BatchLoop`]: runs batch tallies ([`augur_core::batch`]) as their tasks come due.
//!
//! Every status change of a batch's item queues (or replaces) the batch's tally task in the
//! same write. This loop claims due tasks, tallies each batch at most once per
//! [`BatchLoopOptions::min_interval`] on this node (a task that comes back sooner is handed
//! back until then, so a batch whose items settle by the hundred costs a few tallies a second,
//! not one per item), and finishes the task only if its lease survived the tally. It wakes on
//! this node's writes and on other nodes' (through the store's announcements), when a task it
//! handed back comes due, and polls as a backstop.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use augur_core::batch::{Tallies, tally_target};
use augur_core::store::{self, ItemLease, Outcome};
use augur_core::{Predictions, Timestamp, WorkerId};

/// Settings of the batch loop.
#[derive(Clone, Debug)]
pub struct BatchLoopOptions {
    /// The shortest time between two tallies of one batch on this node.
    pub min_interval: Duration,
    /// How often the queue is checked without a wake-up.
    pub poll_interval: Duration,
    /// How long a claimed task is held before another node may take it.
    pub lease_for: Duration,
    /// Tasks claimed at once.
    pub max_claim: usize,
}

impl Default for BatchLoopOptions {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_millis(200),
            poll_interval: Duration::from_millis(500),
            lease_for: Duration::from_secs(60),
            max_claim: 16,
        }
    }
}

/// Claims and runs tally tasks until shut down.
#[derive(Debug)]
pub struct BatchLoop {
    service: Predictions,
    tallies: Tallies,
    worker: WorkerId,
    options: BatchLoopOptions,
    last_tally: HashMap<String, Instant>,
    /// The earliest time a task this loop handed back comes due, so the loop wakes for it
    /// rather than at the next poll.
    next_due: Option<Instant>,
}

impl BatchLoop {
    /// A loop over `service`'s tally tasks.
    pub fn new(service: Predictions, options: BatchLoopOptions) -> Self {
        Self {
            tallies: service.tallies(),
            service,
            worker: WorkerId::generate(),
            options,
            last_tally: HashMap::new(),
            next_due: None,
        }
    }

    /// Runs until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let signal = self.service.hub().tasks_signal();
        let mut errors = 0u32;
        loop {
            let claimed = self
                .tallies
                .claim(&self.worker, self.options.lease_for, self.options.max_claim)
                .await;
            let idle = match claimed {
                Ok(leases) => {
                    errors = 0;
                    let idle = leases.is_empty();
                    for lease in leases {
                        self.handle(lease).await;
                    }
                    idle
                }
                Err(e) => {
                    errors = errors.saturating_add(1);
                    tracing::warn!(error = %e, "cannot claim batch tallies");
                    true
                }
            };
            if idle {
                let mut wait = self.options.poll_interval * errors.clamp(1, 20);
                // Kept until it passes: a wake-up before it (a stale notification) must not
                // lose it.
                match self.next_due {
                    Some(due) if due <= Instant::now() => self.next_due = None,
                    Some(due) => wait = wait.min(due - Instant::now()),
                    None => {}
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = signal.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            } else if futures::poll!(&mut shutdown).is_ready() {
                break;
            }
            self.forget_old();
        }
    }

    /// Tallies one claimed task's batch, or hands it back until the batch may be tallied.
    async fn handle(&mut self, lease: ItemLease) {
        let Some(batch) = tally_target(&lease.item.payload) else {
            tracing::warn!(task = %lease.item.id, "a tally task names no batch; dropping it");
            self.finish(&lease, Outcome::GiveUp { rest: false }).await;
            return;
        };
        if let Some(last) = self.last_tally.get(&batch) {
            let ready_at = *last + self.options.min_interval;
            let now = Instant::now();
            if ready_at > now {
                let at = Timestamp::now().plus(ready_at - now);
                self.finish(&lease, Outcome::Release(at)).await;
                self.next_due = Some(self.next_due.map_or(ready_at, |d| d.min(ready_at)));
                return;
            }
        }
        self.last_tally.insert(batch.clone(), Instant::now());
        let outcome = match self.service.tally_batch(&lease.item.owner, &batch).await {
            Ok(tallied) => {
                tracing::debug!(%batch, status = tallied.value.status.as_str(), "batch tallied");
                Outcome::Done
            }
            Err(augur_core::Error::BatchNotFound(_)) => Outcome::Done,
            Err(e) => {
                tracing::warn!(%batch, error = %e, "batch tally failed; retrying");
                Outcome::Retry(Timestamp::now().plus(Duration::from_secs(1)))
            }
        };
        self.finish(&lease, outcome).await;
    }

    async fn finish(&self, lease: &ItemLease, outcome: Outcome) {
        match self.tallies.finish(lease, outcome).await {
            // Replaced by a newer task meanwhile: that one runs next.
            Ok(()) | Err(store::Error::LeaseLost) => {}
            Err(e) => {
                tracing::warn!(task = %lease.item.id, error = %e, "cannot finish a batch tally")
            }
        }
    }

    /// Drops throttling state older than it can matter.
    fn forget_old(&mut self) {
        if self.last_tally.len() > 1024 {
            let horizon = self.options.min_interval;
            self.last_tally.retain(|_, at| at.elapsed() < horizon);
        }
    }
}
