//! [`Worker`]: claims jobs, runs their model's provider and settles the predictions.
//!
//! One worker runs up to `concurrency` jobs at once, each under a lease it renews while the
//! provider runs. Every outcome goes through [`Predictions`], so the state machine decides and
//! the store commits the result with its side effects:
//!
//! - output: `succeeded` (the job is completed in the same commit), after copying the
//!   output's `http(s)` URLs into the file store for providers that ask for it;
//! - submitted to an external server: the job is handed back to be checked on later;
//! - deferred (the external server is at capacity): the job is handed back unchanged;
//! - a retryable error: logged, and the job rescheduled with exponential backoff and jitter,
//!   until the model's attempt limit, then `failed` with the reason;
//! - a model error: `failed`;
//! - the model's maximum run time: `failed`, "timed out"; a `Cancel-After` deadline: `canceled`;
//! - the prediction settled elsewhere (a cancel): the provider is dropped (and asked to stop);
//! - the lease lost: the provider is dropped, nothing is written;
//! - shutdown: the provider is dropped and the lease handed back, so another worker (or this
//!   one after a restart) takes the job at once.
//!
//! A prediction is therefore run at least once and settled exactly once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use augur_core::deployment::Deployment;
use augur_core::jobs::{Jobs, Lease};
use augur_core::{
    Dispatch, Event, Logs, Prediction, PredictionId, Predictions, Slot, Timestamp, WorkerId,
};

use crate::files::OutputFiles;
use crate::models::{Model, ModelRegistry};
use crate::provider::{Outcome, Progress, Provider, ProviderError, RunContext};

/// How retries back off.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// The delay before the second attempt.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (from 1): `base · 2^(attempt-1)` capped at
    /// `max`, then "equal jitter" (a random point in its upper half) so that retries of many
    /// predictions that failed together spread out.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        let half = capped / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// Settings of a worker.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Its identity in leases.
    pub worker_id: WorkerId,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Lease length; leases are renewed every third of it.
    pub lease_for: Duration,
    /// The longest wait between claims when idle (new work in this process wakes it at once).
    pub idle_poll: Duration,
    /// How retries back off.
    pub retry: RetryPolicy,
    /// A model that finishes within this time after it was claimed is written as started and
    /// finished in one step; one that runs longer is marked `processing` when it expires.
    pub start_grace: Duration,
    /// How long shutdown waits for running jobs to hand their leases back.
    pub shutdown_grace: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            worker_id: WorkerId::generate(),
            concurrency: 64,
            lease_for: Duration::from_secs(30),
            idle_poll: Duration::from_millis(500),
            retry: RetryPolicy::default(),
            start_grace: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A pool of job runners.
#[derive(Clone, Debug)]
pub struct Worker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    service: Predictions,
    jobs: Jobs,
    models: Arc<ModelRegistry>,
    files: OutputFiles,
    options: WorkerOptions,
    /// Running (or reserved) jobs per queue, for per-model concurrency limits.
    running: Mutex<HashMap<String, usize>>,
    /// Running and reserved jobs in all.
    active: AtomicUsize,
    /// Where reserved slots send their lease to be run; `None` unless `run` is running.
    direct: Mutex<Option<mpsc::UnboundedSender<(Lease, RunningGuard)>>>,
    /// True while the queue holds more jobs than this worker could take at its last claim, or
    /// since a create found every slot taken and queued its prediction.
    /// New predictions then go through the queue, whose fair order decides who runs next,
    /// instead of taking a free slot at once: a slot taken at create would let a busy
    /// account's new predictions pass everyone's queued ones (and lift the queue's
    /// fair-queuing clock to the busy account's rank, sending other accounts to the back).
    backlogged: AtomicBool,
    /// The same for queues with a concurrency limit of their own (models, deployments): those
    /// whose jobs wait because the queue was full. A claim takes no more of them than the
    /// queue has room for (see [`Inner::claim_size`]).
    backlogged_queues: Mutex<HashSet<String>>,
    /// The concurrency limits of deployments' queues (`max_instances`, within the model's own
    /// limit), as last read from their records, and when: re-read after
    /// [`DEPLOYMENT_LIMIT_TTL`], so a new release's limit applies within it.
    deployment_limits: Mutex<HashMap<String, (Option<usize>, Instant)>>,
}

/// How long a deployment's limit is trusted before it is read again.
const DEPLOYMENT_LIMIT_TTL: Duration = Duration::from_secs(2);

type Direct = (Lease, RunningGuard);

/// How a job ended, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobOutcome {
    Succeeded,
    Failed,
    Retried,
    TimedOut,
    Canceled,
    Submitted,
    Deferred,
    Released,
    LeaseLost,
    Stale,
    StoreError,
}

impl JobOutcome {
    fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Retried => "retried",
            JobOutcome::TimedOut => "timed_out",
            JobOutcome::Canceled => "canceled",
            JobOutcome::Submitted => "submitted",
            JobOutcome::Deferred => "deferred",
            JobOutcome::Released => "released",
            JobOutcome::LeaseLost => "lease_lost",
            JobOutcome::Stale => "stale",
            JobOutcome::StoreError => "store_error",
        }
    }
}

impl Worker {
    /// A worker over `service` running the models of `models`.
    pub fn new(
        service: Predictions,
        models: Arc<ModelRegistry>,
        files: OutputFiles,
        options: WorkerOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                jobs: service.jobs(),
                service,
                models,
                files,
                options,
                running: Mutex::new(HashMap::new()),
                active: AtomicUsize::new(0),
                direct: Mutex::new(None),
                backlogged: AtomicBool::new(false),
                backlogged_queues: Mutex::new(HashSet::new()),
                deployment_limits: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The handle through which new predictions created in this process run here at once
    /// (see [`Dispatch`]); pass it to [`Predictions::set_dispatch`].
    pub fn dispatcher(&self) -> Arc<dyn Dispatch> {
        Arc::new(Dispatcher {
            inner: self.inner.clone(),
        })
    }

    fn spawn_job(
        &self,
        tasks: &mut JoinSet<()>,
        lease: Lease,
        guard: RunningGuard,
        stop: &CancellationToken,
    ) {
        let (worker, stop) = (self.clone(), stop.clone());
        tasks.spawn(async move {
            let _guard = guard;
            worker.run_job(lease, stop).await;
        });
    }

    /// Claims and runs jobs until `shutdown` completes, then stops claiming, hands back the
    /// leases of running jobs and returns once they have (or after `shutdown_grace`).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let inner = &self.inner;
        let stop = CancellationToken::new();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut idle = Duration::from_millis(5);
        let (direct_tx, mut direct_rx) = mpsc::unbounded_channel::<Direct>();
        *inner.direct.lock().unwrap_or_else(|e| e.into_inner()) = Some(direct_tx);
        tokio::pin!(shutdown);
        tracing::info!(worker = %inner.options.worker_id, concurrency = inner.options.concurrency, "worker started");
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "job task panicked");
                }
            }
            while let Ok((lease, guard)) = direct_rx.try_recv() {
                self.spawn_job(&mut tasks, lease, guard, &stop);
            }
            let free = inner
                .options
                .concurrency
                .saturating_sub(inner.active.load(Ordering::Acquire));
            if free > 0 {
                inner.refresh_deployment_limits(None).await;
                let excluded = inner.full_queues();
                let max = inner.claim_size(free, &excluded);
                let claimed = inner
                    .jobs
                    .claim(
                        &inner.options.worker_id,
                        inner.options.lease_for,
                        max,
                        excluded.clone(),
                    )
                    .await;
                if let Ok(leases) = &claimed {
                    inner.claimed(leases.len() >= max, &excluded);
                }
                match claimed {
                    Ok(leases) if !leases.is_empty() => {
                        inner
                            .refresh_deployment_limits(Some(
                                leases.iter().map(|l| l.job.queue.as_str()).collect(),
                            ))
                            .await;
                        for lease in leases {
                            // One claim can return more jobs of a model than its limit
                            // allows; hand the excess back (the queue is excluded next time).
                            if inner.is_full(&lease.job.queue) {
                                inner.queued_behind(&lease.job.queue);
                                let _ = inner.jobs.hand_back(&lease).await;
                                continue;
                            }
                            let guard = RunningGuard::enter(inner.clone(), &lease.job.queue);
                            self.spawn_job(&mut tasks, lease, guard, &stop);
                        }
                        idle = Duration::from_millis(5);
                        // A store that answers without suspending (memory) would otherwise
                        // keep this loop on its thread while work keeps coming.
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot claim jobs");
                        idle = inner.options.idle_poll;
                    }
                }
            }
            tokio::select! {
                _ = &mut shutdown => break,
                Some((lease, guard)) = direct_rx.recv() => {
                    self.spawn_job(&mut tasks, lease, guard, &stop);
                }
                _ = inner.service.hub().work_queued(), if free > 0 => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = tokio::time::sleep(idle) => {
                    idle = (idle * 2).min(inner.options.idle_poll);
                }
            }
        }
        tracing::info!(
            running = tasks.len(),
            "worker stopping; handing leases back"
        );
        // No new direct runs; hand back the leases of those already on their way.
        inner
            .direct
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        direct_rx.close();
        while let Some((lease, _guard)) = direct_rx.recv().await {
            let _ = inner.jobs.hand_back(&lease).await;
        }
        stop.cancel();
        let drained = tokio::time::timeout(inner.options.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "jobs did not stop in time; their leases will lapse"
            );
            tasks.abort_all();
        }
        tracing::info!("worker stopped");
    }

    async fn run_job(&self, lease: Lease, stop: CancellationToken) {
        let model_label = lease.job.queue.clone();
        let started = Instant::now();
        let outcome = self.execute(&lease, &stop).await;
        metrics::counter!("augur_jobs_total", "model" => model_label.clone(), "outcome" => outcome.as_str())
            .increment(1);
        metrics::histogram!("augur_job_duration_seconds", "model" => model_label)
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(prediction_id = %lease.job.prediction_id, outcome = outcome.as_str(), "job finished");
    }

    async fn execute(&self, lease: &Lease, stop: &CancellationToken) -> JobOutcome {
        let inner = &self.inner;
        let id = &lease.job.prediction_id;
        let current = match inner.service.get(id).await {
            Ok(p) => p.value,
            Err(augur_core::Error::NotFound(_)) => {
                let _ = inner.jobs.complete(lease).await;
                return JobOutcome::Stale;
            }
            Err(e) => {
                tracing::warn!(prediction_id = %id, error = %e, "cannot read prediction; the lease will lapse");
                return JobOutcome::StoreError;
            }
        };
        if current.is_terminal() {
            let _ = inner.jobs.complete(lease).await;
            return JobOutcome::Stale;
        }
        let Some(model) = inner.models.get(&current.model).cloned() else {
            let reason = format!("model {} is not available on this server", current.model);
            return self
                .settle(lease, &[Event::failed(reason)], JobOutcome::Failed)
                .await;
        };
        let now = Timestamp::now();
        if current.deadline.is_some_and(|d| d <= now) {
            let event = Event::canceled().with_logs(Logs::Append(
                "deadline passed before the prediction started\n".into(),
            ));
            return self.settle(lease, &[event], JobOutcome::Canceled).await;
        }
        if lease.job.attempts > model.settings.max_attempts {
            let reason = format!(
                "gave up after {} attempts (the server stopped while running it)",
                model.settings.max_attempts
            );
            return self
                .settle(lease, &[Event::failed(reason)], JobOutcome::Failed)
                .await;
        }
        self.run_provider(lease, &model, current, stop).await
    }

    async fn run_provider(
        &self,
        lease: &Lease,
        model: &Arc<Model>,
        prediction: Prediction,
        stop: &CancellationToken,
    ) -> JobOutcome {
        let inner = &self.inner;
        let id = prediction.id.clone();
        let attempt = lease.job.attempts;
        if attempt > 1 {
            tracing::info!(prediction_id = %id, model = %model.name, attempt, max_attempts = model.settings.max_attempts, "prediction retried");
        }
        let progress = Progress::new(inner.service.clone(), id.clone(), attempt, false);
        let mut watch = inner.service.watch(&id);

        // The run ends at the model's maximum run time (counted from the first start) or at
        // the prediction's deadline, whichever comes first.
        let run_started = prediction.started_at.unwrap_or_else(Timestamp::now);
        let time_left = model
            .settings
            .max_run_time
            .saturating_sub(Timestamp::now().since(run_started));
        let deadline_left = prediction.deadline.map(|d| d.since(Timestamp::now()));
        let (limit, limit_is_deadline) = match deadline_left {
            Some(d) if d < time_left => (d, true),
            _ => (time_left, false),
        };
        let limit_at = tokio::time::Instant::now() + limit;

        let ctx = RunContext {
            prediction: prediction.clone(),
            attempt,
            progress: progress.clone(),
            files: inner.files.clone(),
        };
        let provider = model.provider.clone();
        let run = run_and_import(
            provider,
            ctx,
            inner.files.clone(),
            inner.service.files(),
            id.clone(),
        );
        tokio::pin!(run);
        let renew = renew_lease(
            inner.service.clone(),
            inner.jobs.clone(),
            lease.clone(),
            inner.options.lease_for,
        );
        tokio::pin!(renew);
        let grace = tokio::time::sleep(inner.options.start_grace);
        tokio::pin!(grace);
        let mut grace_done = false;

        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                _ = &mut grace, if !grace_done => {
                    grace_done = true;
                    if progress.start().await == Err(ProviderError::Stopped) {
                        break Err(ProviderError::Stopped);
                    }
                }
                _ = tokio::time::sleep_until(limit_at) => {
                    let _ = model.provider.cancel(&prediction).await;
                    return if limit_is_deadline {
                        let event = Event::canceled().with_logs(Logs::Append("deadline reached; canceled\n".into()));
                        self.settle_started(lease, &progress, event, JobOutcome::Canceled).await
                    } else {
                        let reason = format!("prediction timed out after {}", humanize(model.settings.max_run_time));
                        self.settle_started(lease, &progress, Event::failed(reason), JobOutcome::TimedOut).await
                    };
                }
                changed = watch.changed() => {
                    if changed.is_some_and(|p| p.value.is_terminal()) {
                        let _ = model.provider.cancel(&prediction).await;
                        return JobOutcome::Canceled;
                    }
                }
                _ = stop.cancelled() => {
                    let _ = inner.jobs.hand_back(lease).await;
                    return JobOutcome::Released;
                }
                end = &mut renew => {
                    if end == RunEnd::SettledElsewhere {
                        let _ = model.provider.cancel(&prediction).await;
                        return JobOutcome::Canceled;
                    }
                    tracing::warn!(prediction_id = %id, "lease lost while running; stopping this run");
                    return JobOutcome::LeaseLost;
                }
            }
        };

        match result {
            Ok(Outcome::Succeeded(output)) => {
                self.settle_started(
                    lease,
                    &progress,
                    Event::succeeded(output),
                    JobOutcome::Succeeded,
                )
                .await
            }
            Ok(Outcome::Submitted { check_after }) => {
                if progress.start().await == Err(ProviderError::Stopped) {
                    return JobOutcome::Canceled;
                }
                // Checking on submitted work later is not a new attempt.
                let run_at = Timestamp::now().plus(check_after);
                match inner.jobs.release(lease, run_at).await {
                    Ok(()) => JobOutcome::Submitted,
                    Err(_) => JobOutcome::LeaseLost,
                }
            }
            Ok(Outcome::Deferred { retry_after }) => {
                // Not started: no attempt spent (the release refunds the claim).
                let run_at = Timestamp::now().plus(retry_after);
                match inner.jobs.release(lease, run_at).await {
                    Ok(()) => JobOutcome::Deferred,
                    Err(_) => JobOutcome::LeaseLost,
                }
            }
            Err(ProviderError::Stopped) => JobOutcome::Canceled,
            Err(ProviderError::Failed(reason)) => {
                self.settle_started(lease, &progress, Event::failed(reason), JobOutcome::Failed)
                    .await
            }
            Err(ProviderError::Retryable(reason)) => {
                self.retry_or_fail(lease, model, &progress, reason).await
            }
        }
    }

    async fn retry_or_fail(
        &self,
        lease: &Lease,
        model: &Model,
        progress: &Progress,
        reason: String,
    ) -> JobOutcome {
        let attempt = lease.job.attempts;
        let id = &lease.job.prediction_id;
        if attempt >= model.settings.max_attempts {
            tracing::warn!(prediction_id = %id, model = %model.name, attempt, reason = %reason, "prediction attempt failed; no attempts left, failing it");
            let reason = format!("{reason} (gave up after {attempt} attempts)");
            return self
                .settle_started(lease, progress, Event::failed(reason), JobOutcome::Failed)
                .await;
        }
        let delay = self.inner.options.retry.delay(attempt);
        tracing::warn!(prediction_id = %id, model = %model.name, attempt, max_attempts = model.settings.max_attempts, retry_in = %humanize(delay), reason = %reason, "prediction attempt failed; retrying");
        let note = format!(
            "attempt {attempt} failed: {reason}; retrying in {}\n",
            humanize(delay)
        );
        if progress
            .report(Event::processing().with_logs(Logs::Append(note)))
            .await
            == Err(ProviderError::Stopped)
        {
            return JobOutcome::Canceled;
        }
        match self
            .inner
            .jobs
            .retry(lease, Timestamp::now().plus(delay))
            .await
        {
            Ok(()) => JobOutcome::Retried,
            Err(_) => JobOutcome::LeaseLost,
        }
    }

    /// Settles a prediction whose provider may not have reported a start yet.
    async fn settle_started(
        &self,
        lease: &Lease,
        progress: &Progress,
        event: Event,
        outcome: JobOutcome,
    ) -> JobOutcome {
        let events = progress.with_start(event);
        self.settle(lease, &events, outcome).await
    }

    /// Writes a terminal report, retrying while the store is unavailable. If it cannot be
    /// written the lease lapses and the job runs again: at least once, settled once.
    async fn settle(&self, lease: &Lease, events: &[Event], outcome: JobOutcome) -> JobOutcome {
        let id = &lease.job.prediction_id;
        let mut delay = Duration::from_millis(50);
        for _ in 0..8 {
            match self.inner.service.transition_all(id, events, &[]).await {
                Ok(_) => return outcome,
                Err(augur_core::Error::Transition(_) | augur_core::Error::NotFound(_)) => {
                    // Settled by someone else first (a cancel): that report won.
                    let _ = self.inner.jobs.complete(lease).await;
                    return JobOutcome::Canceled;
                }
                Err(e) => {
                    tracing::warn!(prediction_id = %id, error = %e, "cannot store the result yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
        JobOutcome::StoreError
    }
}

impl Inner {
    fn limit_of(&self, queue: &str) -> Option<usize> {
        if Deployment::parse_queue(queue).is_some() {
            // A deployment whose limit was never read counts as full: its jobs go through
            // the queue until a claim reads it.
            let limits = self
                .deployment_limits
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            return limits.get(queue).map_or(Some(0), |(limit, _)| *limit);
        }
        self.model_limit(queue)
    }

    fn model_limit(&self, model: &str) -> Option<usize> {
        augur_core::ModelName::parse(model)
            .ok()
            .and_then(|name| self.models.get(&name))
            .and_then(|m| m.settings.concurrency)
    }

    /// Reads the limits of deployments' queues that are unknown or older than
    /// [`DEPLOYMENT_LIMIT_TTL`]: those of `claimed` jobs, or with `None` those running here.
    async fn refresh_deployment_limits(&self, claimed: Option<Vec<&str>>) {
        let queues: Vec<String> = match claimed {
            Some(queues) => queues.into_iter().map(str::to_owned).collect(),
            None => self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned()
                .collect(),
        };
        for queue in queues {
            let Some((owner, name)) = Deployment::parse_queue(&queue) else {
                continue;
            };
            let fresh = self
                .deployment_limits
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&queue)
                .is_some_and(|(_, at)| at.elapsed() < DEPLOYMENT_LIMIT_TTL);
            if fresh {
                continue;
            }
            let limit = match self.service.find_deployment(&owner, &name).await {
                Ok(Some(d)) => {
                    let release = &d.current_release;
                    let own = release.configuration.max_instances as usize;
                    Some(
                        self.model_limit(release.model.as_str())
                            .map_or(own, |m| m.min(own)),
                    )
                }
                // Deleted: its queued predictions still run, limited by the worker only.
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(deployment = %format!("{owner}/{name}"), error = %e, "cannot read a deployment's limit");
                    // Keep what was known, else run one at a time until it can be read.
                    let known = self
                        .deployment_limits
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&queue)
                        .map(|(limit, _)| *limit);
                    known.unwrap_or(Some(1))
                }
            };
            let mut limits = self
                .deployment_limits
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if limits.len() > 10_000 {
                limits.retain(|_, (_, at)| at.elapsed() < DEPLOYMENT_LIMIT_TTL);
            }
            limits.insert(queue, (limit, Instant::now()));
        }
    }

    /// The queues whose model runs at its concurrency limit.
    fn full_queues(&self) -> Vec<String> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .iter()
            .filter(|(queue, n)| self.limit_of(queue).is_some_and(|limit| **n >= limit))
            .map(|(queue, _)| queue.clone())
            .collect()
    }

    /// How many jobs the next claim may take of `free` slots: no more than any backlogged
    /// queue outside `excluded` has room for. A claim that took more would hand the excess
    /// back: the store then lowers the queue's fair-queuing clock again, but a newcomer
    /// queued meanwhile would wait behind them, and the claim and hand-backs are wasted
    /// writes.
    fn claim_size(&self, free: usize, excluded: &[String]) -> usize {
        let backlogged: Vec<String> = self
            .backlogged_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|q| !excluded.contains(q))
            .cloned()
            .collect();
        if backlogged.is_empty() {
            return free;
        }
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        backlogged
            .iter()
            .filter_map(|q| {
                let limit = self.limit_of(q)?;
                Some(limit.saturating_sub(running.get(q).copied().unwrap_or(0)))
            })
            .filter(|&room| room > 0)
            .fold(free, usize::min)
    }

    /// Notes what a claim found: `filled` if it took as many jobs as it asked for (more may
    /// wait). Otherwise every queue it did not exclude is drained.
    fn claimed(&self, filled: bool, excluded: &[String]) {
        self.backlogged.store(filled, Ordering::Release);
        if !filled {
            self.backlogged_queues
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|q| excluded.contains(q));
        }
    }

    /// Notes that a job of `queue` waits in the queue because this worker had no room for it:
    /// every slot taken, or the queue at its own limit.
    fn queued_behind(&self, queue: &str) {
        if self.active.load(Ordering::Acquire) >= self.options.concurrency {
            self.backlogged.store(true, Ordering::Release);
        }
        if self.is_full(queue) {
            self.mark_backlogged(queue);
        }
    }

    /// Marks `queue`, a queue with a limit of its own, as having jobs that wait for room.
    fn mark_backlogged(&self, queue: &str) {
        self.backlogged_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(queue.to_owned());
    }

    /// True while jobs of `queue` wait for room under its own limit.
    fn is_backlogged(&self, queue: &str) -> bool {
        self.backlogged_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(queue)
    }

    fn is_full(&self, queue: &str) -> bool {
        let Some(limit) = self.limit_of(queue) else {
            return false;
        };
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.get(queue).copied().unwrap_or(0) >= limit
    }
}

/// Counts a running (or reserved) job against the worker's and its queue's concurrency while
/// alive.
#[derive(Debug)]
struct RunningGuard {
    inner: Arc<Inner>,
    queue: String,
}

impl RunningGuard {
    /// Counts a claimed job (the claim already respected the limits).
    fn enter(inner: Arc<Inner>, queue: &str) -> Self {
        let mut running = inner.running.lock().unwrap_or_else(|e| e.into_inner());
        *running.entry(queue.to_owned()).or_default() += 1;
        inner.active.fetch_add(1, Ordering::AcqRel);
        drop(running);
        Self {
            inner,
            queue: queue.to_owned(),
        }
    }

    /// Counts a job if both the worker and the queue have room.
    fn try_enter(inner: &Arc<Inner>, queue: &str) -> Option<Self> {
        let mut running = inner.running.lock().unwrap_or_else(|e| e.into_inner());
        let queue_full = inner
            .limit_of(queue)
            .is_some_and(|limit| running.get(queue).copied().unwrap_or(0) >= limit);
        if queue_full || inner.active.load(Ordering::Acquire) >= inner.options.concurrency {
            return None;
        }
        *running.entry(queue.to_owned()).or_default() += 1;
        inner.active.fetch_add(1, Ordering::AcqRel);
        drop(running);
        Some(Self {
            inner: inner.clone(),
            queue: queue.to_owned(),
        })
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.queue) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.queue);
            }
        }
        self.inner.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The worker's [`Dispatch`]: reserves a slot for a prediction being created here.
#[derive(Debug)]
struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatch for Dispatcher {
    fn queued(&self, queue: &str) {
        if self.inner.limit_of(queue).is_some() {
            self.inner.mark_backlogged(queue);
        }
    }

    fn reserve(&self, queue: &str) -> Option<Box<dyn Slot>> {
        let tx = self
            .inner
            .direct
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        if self.inner.backlogged.load(Ordering::Acquire) || self.inner.is_backlogged(queue) {
            return None;
        }
        let Some(guard) = RunningGuard::try_enter(&self.inner, queue) else {
            // This prediction waits in the queue: from now on new ones queue behind it until a
            // claim finds the queue drained. Without this, a slot freed before the worker's
            // next claim would go to whichever create came first, passing the queued ones and
            // lifting the fair-queuing clock past them.
            self.inner.queued_behind(queue);
            return None;
        };
        Some(Box::new(DirectSlot {
            worker: self.inner.options.worker_id.clone(),
            lease_for: self.inner.options.lease_for,
            guard,
            tx,
        }))
    }
}

/// A reserved slot; dropping it frees the reservation.
struct DirectSlot {
    worker: WorkerId,
    lease_for: Duration,
    guard: RunningGuard,
    tx: mpsc::UnboundedSender<Direct>,
}

impl Slot for DirectSlot {
    fn worker(&self) -> &WorkerId {
        &self.worker
    }

    fn lease_for(&self) -> Duration {
        self.lease_for
    }

    fn start(self: Box<Self>, lease: Lease) {
        // If the worker stopped meanwhile the lease lapses and the job is claimed later.
        let _ = self.tx.send((lease, self.guard));
    }
}

/// Runs the provider, with uploaded files in its input in the form it takes
/// ([`OutputFiles::resolve_inputs`]), and, for providers that ask for it, brings the `http(s)`
/// URLs of a successful output into the file store ([`OutputFiles::import_urls`]). Reads and
/// downloads are part of the run, so cancels, timeouts and lost leases stop them too.
async fn run_and_import(
    provider: Arc<dyn Provider>,
    mut ctx: RunContext,
    files: OutputFiles,
    records: augur_core::file::Files,
    id: PredictionId,
) -> Result<Outcome, ProviderError> {
    let input = std::mem::take(&mut ctx.prediction.input);
    let resolved = files
        .resolve_inputs(
            &records,
            &ctx.prediction.owner,
            input,
            provider.file_inputs(),
        )
        .await
        .map_err(ProviderError::Failed)?;
    ctx.prediction.input = resolved.input;
    let result = match provider.run(ctx).await {
        Ok(Outcome::Succeeded(output)) if provider.imports_output_urls() => files
            .import_urls(&id, output)
            .await
            .map(Outcome::Succeeded)
            .map_err(|e| ProviderError::Failed(e.to_string())),
        other => other,
    };
    // Local copies of input files last as long as the run; they go off the async threads
    // since they may be large. (A dropped run removes them in place.)
    if let Some(copies) = resolved.local_copies {
        let _ = tokio::task::spawn_blocking(move || drop(copies)).await;
    }
    result
}

/// Renews a lease every third of its length; completes when the lease is lost or the
/// prediction settled elsewhere (a cancel on another node whose announcement never came).
async fn renew_lease(
    service: Predictions,
    jobs: Jobs,
    mut lease: Lease,
    lease_for: Duration,
) -> RunEnd {
    let every = lease_for / 3;
    loop {
        tokio::time::sleep(every).await;
        if service
            .get_uncached(&lease.job.prediction_id)
            .await
            .is_ok_and(|p| p.value.is_terminal())
        {
            return RunEnd::SettledElsewhere;
        }
        match jobs.renew(&lease, lease_for).await {
            Ok(renewed) => lease = renewed,
            Err(augur_core::store::Error::LeaseLost) => return RunEnd::LeaseLost,
            Err(e) => {
                // Keep trying: the lease is still ours until it lapses, and a lapsed lease
                // shows up as LeaseLost on the next attempt.
                tracing::warn!(prediction_id = %lease.job.prediction_id, error = %e, "cannot renew lease");
            }
        }
    }
}

/// Why the lease keeper stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunEnd {
    /// Someone else holds the job now (or it was completed).
    LeaseLost,
    /// The prediction settled (a cancel) without this process hearing of it.
    SettledElsewhere,
}

/// `1.5s`, `2m`, `1h30m`: short human durations for messages.
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60 {
        let tenths = d.as_millis() / 100 % 10;
        if tenths == 0 {
            format!("{secs}s")
        } else {
            format!("{secs}.{tenths}s")
        }
    } else if secs < 3600 {
        format!(
            "{}m{}",
            secs / 60,
            if secs.is_multiple_of(60) {
                String::new()
            } else {
                format!("{}s", secs % 60)
            }
        )
    } else {
        format!(
            "{}h{}",
            secs / 3600,
            if secs.is_multiple_of(3600) {
                String::new()
            } else {
                format!("{}m", secs % 3600 / 60)
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_in_the_upper_half() {
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        for (attempt, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (30, 10)] {
            for _ in 0..50 {
                let d = policy.delay(attempt);
                let full = Duration::from_secs(full);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(humanize(Duration::from_millis(250)), "250ms");
        assert_eq!(humanize(Duration::from_millis(1500)), "1.5s");
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
        assert_eq!(humanize(Duration::from_secs(1800)), "30m");
        assert_eq!(humanize(Duration::from_secs(5400)), "1h30m");
    }
}
