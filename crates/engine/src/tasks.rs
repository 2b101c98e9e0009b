//! [`TaskLoop`]: runs internal tasks as they come due: batch tallies
//! ([`augur_core::batch`]) and workflow run advances ([`augur_core::workflow`]), and the
//! periodic reconciliation of runs.
//!
//! Every status change of a batch's item (a run's node prediction) queues or replaces the
//! batch's tally task (the run's advance task) in the same write. This loop claims due tasks,
//! runs each batch's tally at most once per [`TaskLoopOptions::min_interval`] on this node
//! (each run's advance at most once per [`TaskLoopOptions::run_min_interval`]; a task that
//! comes back sooner is handed back until then, so a batch whose items settle by the hundred
//! costs a few tallies a second, not one per item), and finishes the task only if its lease
//! survived. It wakes on this node's writes and on other nodes' (through the store's
//! announcements), when a task it handed back comes due, and polls as a backstop. Every
//! [`TaskLoopOptions::reconcile_every`] it reconciles every unsettled run (re-creating lost
//! node predictions and re-queuing lost jobs); every node does, and that is safe.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use std::sync::Arc;

use augur_core::batch::{Tallies, tally_target};
use augur_core::store::{self, ItemLease, Outcome};
use augur_core::workflow::{Catalog, RUN_TOPIC, run_target};
use augur_core::{Predictions, Status, Timestamp, WorkerId};

/// Runs with at most this many node predictions running advance without waiting for
/// [`TaskLoopOptions::run_min_interval`].
const FEW_RUNNING: usize = 8;

/// Settings of the task loop.
#[derive(Clone, Debug)]
pub struct TaskLoopOptions {
    /// The shortest time between two tallies of one batch on this node.
    pub min_interval: Duration,
    /// The shortest time between two advances of one workflow run on this node.
    pub run_min_interval: Duration,
    /// How often every unsettled run is reconciled.
    pub reconcile_every: Duration,
    /// How often the queue is checked without a wake-up.
    pub poll_interval: Duration,
    /// How long a claimed task is held before another node may take it.
    pub lease_for: Duration,
    /// Tasks claimed at once.
    pub max_claim: usize,
}

impl Default for TaskLoopOptions {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_millis(200),
            run_min_interval: Duration::from_millis(20),
            reconcile_every: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            lease_for: Duration::from_secs(60),
            max_claim: 16,
        }
    }
}

/// Claims and runs tasks until shut down.
#[derive(Debug)]
pub struct TaskLoop {
    service: Predictions,
    tallies: Tallies,
    catalog: Arc<dyn Catalog>,
    worker: WorkerId,
    options: TaskLoopOptions,
    /// When each batch (`batch:<id>`) or run (`run:<id>`) was last handled here.
    /// With the interval its next run waits for.
    last_tally: HashMap<String, (Instant, Duration)>,
    last_reconcile: Instant,
    /// The earliest time a task this loop handed back comes due, so the loop wakes for it
    /// rather than at the next poll.
    next_due: Option<Instant>,
}

impl TaskLoop {
    /// A loop over `service`'s tasks; `catalog` is what workflow runs start models from.
    pub fn new(service: Predictions, catalog: Arc<dyn Catalog>, options: TaskLoopOptions) -> Self {
        Self {
            tallies: service.tallies(),
            service,
            catalog,
            worker: WorkerId::generate(),
            options,
            last_tally: HashMap::new(),
            last_reconcile: Instant::now(),
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
                    tracing::trace!(claimed = leases.len(), "tasks claimed");
                    self.handle_all(leases).await;
                    idle
                }
                Err(e) => {
                    errors = errors.saturating_add(1);
                    tracing::warn!(error = %e, "cannot claim tasks");
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
            if self.last_reconcile.elapsed() >= self.options.reconcile_every {
                self.last_reconcile = Instant::now();
                self.reconcile_all().await;
            }
        }
    }

    /// Reconciles every unsettled run (see [`Predictions::advance_run`]).
    pub async fn reconcile_all(&self) {
        for status in [Status::Starting, Status::Processing] {
            let mut after = None;
            loop {
                let page = match self.service.list_runs(None, Some(status), after, 200).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list runs to reconcile");
                        return;
                    }
                };
                for run in &page.items {
                    if let Err(e) = self
                        .service
                        .advance_run(&run.owner, &run.id, &*self.catalog, true)
                        .await
                    {
                        tracing::warn!(run = %run.id, error = %e, "cannot reconcile a run");
                    }
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
    }

    /// Runs the claimed tasks (batch tallies, run advances) at once, each target at most once,
    /// and hands back those whose batch or run was handled here too recently.
    async fn handle_all(&mut self, leases: Vec<ItemLease>) {
        let mut runnable = Vec::with_capacity(leases.len());
        for lease in leases {
            if let Some(work) = self.admit(&lease).await {
                runnable.push((lease, work));
            }
        }
        let outcomes =
            futures::future::join_all(runnable.iter().map(|(lease, (is_run, target))| {
                let this = &*self;
                async move {
                    if *is_run {
                        this.advance(lease, target).await
                    } else {
                        (this.tally(lease, target).await, None)
                    }
                }
            }))
            .await;
        for ((lease, (is_run, target)), (outcome, interval)) in runnable.iter().zip(outcomes) {
            if let (true, Some(interval)) = (is_run, interval)
                && let Some(entry) = self.last_tally.get_mut(&format!("run:{target}"))
            {
                entry.1 = interval;
            }
            self.finish(lease, outcome).await;
        }
    }

    /// What a claimed task is for (`(is a run, its id)`), if it may run now; otherwise it is
    /// dropped (it names nothing) or handed back until its batch or run may be handled again.
    async fn admit(&mut self, lease: &ItemLease) -> Option<(bool, String)> {
        let is_run = lease.item.topic == RUN_TOPIC;
        let target = if is_run {
            run_target(&lease.item.payload)
        } else {
            tally_target(&lease.item.payload)
        };
        let Some(target) = target else {
            tracing::warn!(task = %lease.item.id, "a task names nothing to work on; dropping it");
            self.finish(lease, Outcome::GiveUp { rest: false }).await;
            return None;
        };
        let (slot, interval) = if is_run {
            (format!("run:{target}"), self.options.run_min_interval)
        } else {
            (format!("batch:{target}"), self.options.min_interval)
        };
        let now = Instant::now();
        if let Some((last, interval)) = self.last_tally.get(&slot) {
            let ready_at = *last + *interval;
            if ready_at > now {
                tracing::debug!(task = %lease.item.id, wait_ms = (ready_at - now).as_millis() as u64, "task handed back until its target may run again");
                let at = Timestamp::now().plus(ready_at - now);
                self.finish(lease, Outcome::Release(at)).await;
                // The earliest hand-back still ahead: one that passed already (its task ran,
                // or will at the next claim) must not hide this one.
                self.next_due = Some(match self.next_due {
                    Some(due) if due > now => due.min(ready_at),
                    _ => ready_at,
                });
                return None;
            }
        }
        self.last_tally.insert(slot, (now, interval));
        Some((is_run, target))
    }

    /// Advances a run; also returns how long its next advance here should wait, if known.
    async fn advance(&self, lease: &ItemLease, run: &str) -> (Outcome, Option<Duration>) {
        match self
            .service
            .advance_run(&lease.item.owner, run, &*self.catalog, false)
            .await
        {
            Ok(advanced) => {
                tracing::debug!(%run, status = %advanced.value.status, "run advanced");
                // A run with few predictions running advances again at once: each advance is a
                // few reads, and a chain's next node waits for it. Many (a fan-out) are
                // counted at most once per `run_min_interval`.
                let interval = if advanced.value.unsettled().len() > FEW_RUNNING {
                    self.options.run_min_interval
                } else {
                    Duration::ZERO
                };
                (Outcome::Done, Some(interval))
            }
            Err(augur_core::Error::RunNotFound(_)) => (Outcome::Done, None),
            Err(e) => {
                tracing::warn!(%run, error = %e, "run advance failed; retrying");
                (
                    Outcome::Retry(Timestamp::now().plus(Duration::from_secs(1))),
                    None,
                )
            }
        }
    }

    async fn tally(&self, lease: &ItemLease, batch: &str) -> Outcome {
        match self.service.tally_batch(&lease.item.owner, batch).await {
            Ok(tallied) => {
                tracing::debug!(%batch, status = tallied.value.status.as_str(), "batch tallied");
                Outcome::Done
            }
            Err(augur_core::Error::BatchNotFound(_)) => Outcome::Done,
            Err(e) => {
                tracing::warn!(%batch, error = %e, "batch tally failed; retrying");
                Outcome::Retry(Timestamp::now().plus(Duration::from_secs(1)))
            }
        }
    }

    async fn finish(&self, lease: &ItemLease, outcome: Outcome) {
        match self.tallies.finish(lease, outcome).await {
            // Replaced by a newer task meanwhile: that one runs next.
            Ok(()) | Err(store::Error::LeaseLost) => {}
            Err(e) => {
                tracing::warn!(task = %lease.item.id, error = %e, "cannot finish a task")
            }
        }
    }

    /// Drops throttling state older than it can matter.
    fn forget_old(&mut self) {
        if self.last_tally.len() > 1024 {
            let horizon = self.options.min_interval.max(self.options.run_min_interval);
            self.last_tally.retain(|_, (at, _)| at.elapsed() < horizon);
        }
    }
}
