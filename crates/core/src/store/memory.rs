//! [`MemoryStore`]: the whole storage contract in process memory, for tests and `memory://`.
//!
//! One mutex guards everything, which makes every operation trivially atomic. Nothing survives
//! the process; `capabilities().durable` says so. Writes are announced to
//! [`Store::subscribe`]rs, so that the multi-node machinery (cache invalidation, waking other
//! services' waiters) can be tested without a server.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use futures::StreamExt;
use tokio::sync::broadcast;

use super::{
    Attempt, Capabilities, Change, ChangeStream, ClaimRequest, Created, Cursor, DeliveryLease,
    DeliveryOutcome, DeliveryState, DeliveryStatus, Effect, Error, IdempotencyRecord, Job, Lease,
    ListQuery, NewPrediction, Page, QueueStats, Record, Result, Store, StreamEvent,
};
use crate::id::{AccountId, LeaseToken, PredictionId, WorkerId};
use crate::prediction::{Prediction, Revision, Versioned};
use crate::time::Timestamp;

/// The in-memory backend.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Change>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            changes: broadcast::channel(1024).0,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    predictions: HashMap<PredictionId, Versioned<Prediction>>,
    /// `(created_at, id)` of every prediction, for listing.
    by_created: BTreeSet<(Timestamp, PredictionId)>,
    /// `(expires_at, id)` of predictions whose data retention has yet to remove.
    by_expiry: BTreeSet<(Timestamp, PredictionId)>,
    jobs: HashMap<PredictionId, JobEntry>,
    /// `(visible_at, seq, id)` of every job: claimable once `visible_at` has passed. For a job
    /// under lease `visible_at` is the lease expiry, so a lapsed lease needs no sweeping.
    visibility: BTreeSet<(Timestamp, u64, PredictionId)>,
    keys: HashMap<(AccountId, String), IdempotencyRecord>,
    counters: BTreeMap<String, i64>,
    seq: u64,
    /// Each prediction's webhook outbox, in order.
    deliveries: HashMap<PredictionId, Vec<DeliveryEntry>>,
    /// Each prediction's event log, in order.
    events: HashMap<PredictionId, Vec<StreamEvent>>,
}

#[derive(Debug, Clone)]
struct DeliveryEntry {
    state: DeliveryState,
    /// `(worker, token, expires_at)` of the lease, while claimed.
    lease: Option<(WorkerId, LeaseToken, Timestamp)>,
}

#[derive(Debug, Clone)]
struct JobEntry {
    job: Job,
    visible_at: Timestamp,
    seq: u64,
    lease: Option<(WorkerId, LeaseToken)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn announce(&self, change: Change) {
        // No subscriber is not an error.
        let _ = self.changes.send(change);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied operation behind (every
        // operation validates before it mutates), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Stores a record in place of whatever had its id, keeping the indexes right.
    fn put(&mut self, record: Versioned<Prediction>) {
        let id = record.value.id.clone();
        if let Some(old) = self.predictions.get(&id) {
            let (created_at, expires_at) = (old.value.created_at, old.value.expires_at);
            self.unindex(&id, created_at, expires_at);
        }
        self.by_created
            .insert((record.value.created_at, id.clone()));
        if let Some(at) = record
            .value
            .expires_at
            .filter(|_| !record.value.data_removed)
        {
            self.by_expiry.insert((at, id.clone()));
        }
        self.predictions.insert(id, record);
    }

    /// Removes a prediction's index entries.
    fn unindex(&mut self, id: &PredictionId, created_at: Timestamp, expires_at: Option<Timestamp>) {
        self.by_created.remove(&(created_at, id.clone()));
        if let Some(at) = expires_at {
            self.by_expiry.remove(&(at, id.clone()));
        }
    }

    fn apply_effects(&mut self, id: &PredictionId, effects: &[Effect], revision: Revision) {
        // Events of one write are numbered across all its `AppendEvents` lists.
        let mut next_index = 0u32;
        for effect in effects {
            match effect {
                Effect::EnqueueJob { queue, run_at } => {
                    self.remove_job(id);
                    self.seq += 1;
                    let entry = JobEntry {
                        job: Job {
                            prediction_id: id.clone(),
                            queue: queue.clone(),
                            attempts: 0,
                            run_at: *run_at,
                        },
                        visible_at: *run_at,
                        seq: self.seq,
                        lease: None,
                    };
                    self.visibility.insert((*run_at, self.seq, id.clone()));
                    self.jobs.insert(id.clone(), entry);
                }
                Effect::EnqueueClaimed {
                    queue,
                    worker,
                    token,
                    expires_at,
                } => {
                    self.remove_job(id);
                    self.seq += 1;
                    let entry = JobEntry {
                        job: Job {
                            prediction_id: id.clone(),
                            queue: queue.clone(),
                            attempts: 1,
                            run_at: Timestamp::now(),
                        },
                        visible_at: *expires_at,
                        seq: self.seq,
                        lease: Some((worker.clone(), *token)),
                    };
                    self.visibility.insert((*expires_at, self.seq, id.clone()));
                    self.jobs.insert(id.clone(), entry);
                }
                Effect::CompleteJob => self.remove_job(id),
                Effect::Count { name, delta } => {
                    *self.counters.entry(name.clone()).or_default() += delta;
                }
                Effect::EnqueueDelivery(delivery) => {
                    let outbox = self.deliveries.entry(id.clone()).or_default();
                    if outbox.iter().any(|d| d.state.delivery.id == delivery.id) {
                        // A message id is enqueued once.
                        continue;
                    }
                    let seq = outbox.last().map_or(1, |d| d.state.seq + 1);
                    outbox.push(DeliveryEntry {
                        state: DeliveryState {
                            delivery: (**delivery).clone(),
                            seq,
                            status: DeliveryStatus::Pending,
                            attempts: Vec::new(),
                            next_attempt_at: Some(Timestamp::now()),
                        },
                        lease: None,
                    });
                }
                Effect::AppendEvents(events) => {
                    let log = self.events.entry(id.clone()).or_default();
                    for event in events {
                        log.push(StreamEvent {
                            revision,
                            index: next_index,
                            event: event.clone(),
                        });
                        next_index += 1;
                    }
                }
            }
        }
    }

    fn remove_job(&mut self, id: &PredictionId) {
        if let Some(entry) = self.jobs.remove(id) {
            self.visibility
                .remove(&(entry.visible_at, entry.seq, id.clone()));
        }
    }

    fn set_visible_at(&mut self, id: &PredictionId, at: Timestamp) {
        if let Some(entry) = self.jobs.get_mut(id) {
            self.visibility
                .remove(&(entry.visible_at, entry.seq, id.clone()));
            entry.visible_at = at;
            self.visibility.insert((at, entry.seq, id.clone()));
        }
    }

    /// The job entry if `lease` is still its current, unexpired lease.
    fn held(&mut self, lease: &Lease, now: Timestamp) -> Result<&mut JobEntry> {
        match self.jobs.get_mut(&lease.job.prediction_id) {
            Some(entry)
                if entry.lease.as_ref().map(|(_, t)| *t) == Some(lease.token)
                    && entry.visible_at > now =>
            {
                Ok(entry)
            }
            _ => Err(Error::LeaseLost),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: false,
            shared: false,
            native_ttl: false,
            change_notifications: true,
        }
    }

    async fn create(&self, new: NewPrediction<'_>) -> Result<Created> {
        let now = Timestamp::now();
        let mut inner = self.lock();
        let p = new.prediction;
        if let Some(existing) = inner.predictions.get(&p.id) {
            return Ok(Created::ExistingId(existing.clone()));
        }
        if let Some(key) = new.idempotency {
            let slot = (key.owner.clone(), key.key.clone());
            if let Some(record) = inner.keys.get(&slot).filter(|r| r.expires_at > now) {
                let prediction = inner.predictions.get(&record.prediction_id).cloned();
                return Ok(Created::ExistingKey {
                    record: record.clone(),
                    prediction,
                });
            }
            inner.keys.insert(slot, key.clone());
        }
        inner.put(Versioned {
            value: p.clone(),
            revision: Revision::FIRST,
        });
        inner.apply_effects(&p.id, new.effects, Revision::FIRST);
        drop(inner);
        self.announce(Change::Prediction {
            id: p.id.clone(),
            revision: Revision::FIRST,
        });
        if queues_work(new.effects) {
            self.announce(Change::Work);
        }
        Ok(Created::Inserted(Revision::FIRST))
    }

    async fn get(&self, id: &PredictionId) -> Result<Versioned<Prediction>> {
        self.lock()
            .predictions
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.clone()))
    }

    async fn update(
        &self,
        id: &PredictionId,
        expected: Revision,
        next: &Prediction,
        effects: &[Effect],
    ) -> Result<Revision> {
        let mut inner = self.lock();
        let stored = inner
            .predictions
            .get(id)
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        if stored.revision != expected {
            return Err(Error::Conflict {
                expected,
                actual: stored.revision,
            });
        }
        let revision = expected.next();
        let mut record = next.clone();
        // The record is stored under `id` whatever `next.id` says.
        record.id = id.clone();
        inner.put(Versioned {
            value: record,
            revision,
        });
        inner.apply_effects(id, effects, revision);
        drop(inner);
        self.announce(Change::Prediction {
            id: id.clone(),
            revision,
        });
        if queues_work(effects) {
            self.announce(Change::Work);
        }
        Ok(revision)
    }

    async fn delete(&self, id: &PredictionId) -> Result<()> {
        let mut inner = self.lock();
        let removed = inner.predictions.remove(id);
        if let Some(p) = &removed {
            inner.unindex(id, p.value.created_at, p.value.expires_at);
        }
        inner.remove_job(id);
        inner.keys.retain(|_, r| r.prediction_id != *id);
        inner.deliveries.remove(id);
        inner.events.remove(id);
        drop(inner);
        if let Some(p) = removed {
            self.announce(Change::Prediction {
                id: id.clone(),
                revision: p.revision.next(),
            });
        }
        Ok(())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        let inner = self.lock();
        let limit = query.limit.max(1);
        let mut items = Vec::with_capacity(limit.min(1024));
        let mut next = None;
        let upper = query.after.as_ref().map(|c| (c.created_at, c.id.clone()));
        let iter = inner
            .by_created
            .iter()
            .rev()
            .filter(|key| upper.as_ref().is_none_or(|u| *key < u));
        for (created_at, id) in iter {
            if query.created_before.is_some_and(|b| *created_at >= b) {
                continue;
            }
            if query.created_after.is_some_and(|a| *created_at < a) {
                break;
            }
            let Some(p) = inner.predictions.get(id) else {
                continue;
            };
            if query.owner.as_ref().is_some_and(|o| *o != p.value.owner)
                || query.status.is_some_and(|s| s != p.value.status)
            {
                continue;
            }
            if items.len() == limit {
                let last: &Versioned<Prediction> = items.last().expect("limit is at least 1");
                next = Some(Cursor {
                    created_at: last.value.created_at,
                    id: last.value.id.clone(),
                });
                break;
            }
            items.push(p.clone());
        }
        Ok(Page { items, next })
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> Result<Vec<PredictionId>> {
        let mut inner = self.lock();
        let due: Vec<PredictionId> = inner
            .by_expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        let mut changes = Vec::with_capacity(due.len());
        for id in &due {
            if let Some(mut p) = inner.predictions.get(id).cloned() {
                p.value.remove_data();
                p.revision = p.revision.next();
                changes.push(Change::Prediction {
                    id: id.clone(),
                    revision: p.revision,
                });
                inner.put(p);
                inner.events.remove(id);
                if let Some(outbox) = inner.deliveries.get_mut(id) {
                    outbox.retain(|d| d.state.status == DeliveryStatus::Pending);
                }
            }
        }
        inner.keys.retain(|_, r| r.expires_at > now);
        drop(inner);
        changes.into_iter().for_each(|c| self.announce(c));
        Ok(due)
    }

    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<Lease>> {
        let now = Timestamp::now();
        let mut inner = self.lock();
        let mut picked = Vec::new();
        for (visible_at, _, id) in inner.visibility.iter() {
            if *visible_at > now || picked.len() >= request.max {
                break;
            }
            let entry = &inner.jobs[id];
            if !request.exclude_queues.contains(&entry.job.queue) {
                picked.push(id.clone());
            }
        }
        let expires_at = now.plus(request.lease_for);
        let mut leases = Vec::with_capacity(picked.len());
        for id in picked {
            inner.set_visible_at(&id, expires_at);
            let entry = inner.jobs.get_mut(&id).expect("picked from the index");
            let token = LeaseToken::generate();
            entry.job.attempts += 1;
            entry.lease = Some((request.worker.clone(), token));
            leases.push(Lease {
                job: entry.job.clone(),
                worker: request.worker.clone(),
                token,
                expires_at,
            });
        }
        Ok(leases)
    }

    async fn renew_lease(&self, lease: &Lease, extend_by: Duration) -> Result<Lease> {
        let now = Timestamp::now();
        let mut inner = self.lock();
        inner.held(lease, now)?;
        let expires_at = now.plus(extend_by);
        inner.set_visible_at(&lease.job.prediction_id, expires_at);
        Ok(Lease {
            expires_at,
            ..lease.clone()
        })
    }

    async fn retry_job(&self, lease: &Lease, run_at: Timestamp) -> Result<()> {
        let now = Timestamp::now();
        let mut inner = self.lock();
        let entry = inner.held(lease, now)?;
        entry.lease = None;
        entry.job.run_at = run_at;
        inner.set_visible_at(&lease.job.prediction_id, run_at);
        drop(inner);
        self.announce(Change::Work);
        Ok(())
    }

    async fn release_job(&self, lease: &Lease, run_at: Timestamp) -> Result<()> {
        let now = Timestamp::now();
        let mut inner = self.lock();
        let entry = inner.held(lease, now)?;
        entry.lease = None;
        entry.job.attempts = entry.job.attempts.saturating_sub(1);
        entry.job.run_at = run_at;
        inner.set_visible_at(&lease.job.prediction_id, run_at);
        drop(inner);
        self.announce(Change::Work);
        Ok(())
    }

    async fn complete_job(&self, id: &PredictionId) -> Result<()> {
        self.lock().remove_job(id);
        Ok(())
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        let now = Timestamp::now();
        let inner = self.lock();
        let mut stats = QueueStats::default();
        for entry in inner.jobs.values() {
            if entry.lease.is_some() && entry.visible_at > now {
                stats.leased += 1;
            } else if entry.visible_at > now {
                stats.delayed += 1;
            } else {
                stats.ready += 1;
            }
        }
        Ok(stats)
    }

    async fn counters(&self) -> Result<Vec<(String, i64)>> {
        Ok(self
            .lock()
            .counters
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect())
    }

    async fn subscribe(&self) -> Result<Option<ChangeStream>> {
        let rx = self.changes.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let change = match rx.recv().await {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(_)) => Change::Resync,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((change, rx))
        });
        Ok(Some(stream.boxed()))
    }

    async fn list_jobs(&self, after: Option<&PredictionId>, limit: usize) -> Result<Vec<Job>> {
        let inner = self.lock();
        let mut jobs: Vec<Job> = inner
            .jobs
            .values()
            .filter(|e| after.is_none_or(|a| e.job.prediction_id > *a))
            .map(|e| e.job.clone())
            .collect();
        jobs.sort_by(|a, b| a.prediction_id.cmp(&b.prediction_id));
        jobs.truncate(limit.max(1));
        Ok(jobs)
    }

    async fn list_idempotency_keys(
        &self,
        after: Option<(&AccountId, &str)>,
        limit: usize,
    ) -> Result<Vec<IdempotencyRecord>> {
        let inner = self.lock();
        let mut keys: Vec<IdempotencyRecord> = inner
            .keys
            .values()
            .filter(|r| after.is_none_or(|(o, k)| (&r.owner, r.key.as_str()) > (o, k)))
            .cloned()
            .collect();
        keys.sort_by(|a, b| (&a.owner, &a.key).cmp(&(&b.owner, &b.key)));
        keys.truncate(limit.max(1));
        Ok(keys)
    }

    async fn import(&self, records: &[Record]) -> Result<()> {
        let mut inner = self.lock();
        for record in records {
            match record {
                Record::Prediction(p) => inner.put((**p).clone()),
                Record::Job(job) => {
                    let id = job.prediction_id.clone();
                    inner.remove_job(&id);
                    inner.seq += 1;
                    let seq = inner.seq;
                    inner.visibility.insert((job.run_at, seq, id.clone()));
                    inner.jobs.insert(
                        id,
                        JobEntry {
                            job: job.clone(),
                            visible_at: job.run_at,
                            seq,
                            lease: None,
                        },
                    );
                }
                Record::IdempotencyKey(key) => {
                    inner
                        .keys
                        .insert((key.owner.clone(), key.key.clone()), key.clone());
                }
                Record::Counter { name, value } => {
                    inner.counters.insert(name.clone(), *value);
                }
                Record::Delivery(state) => {
                    let outbox = inner
                        .deliveries
                        .entry(state.delivery.prediction_id.clone())
                        .or_default();
                    outbox.retain(|d| d.state.delivery.id != state.delivery.id);
                    outbox.push(DeliveryEntry {
                        state: (**state).clone(),
                        lease: None,
                    });
                    outbox.sort_by_key(|d| d.state.seq);
                }
                Record::Event(id, event) => {
                    let log = inner.events.entry(id.clone()).or_default();
                    let key = (event.revision, event.index);
                    log.retain(|e| (e.revision, e.index) != key);
                    log.push(event.clone());
                    log.sort_by_key(|e| (e.revision, e.index));
                }
            }
        }
        drop(inner);
        self.announce(Change::Resync);
        Ok(())
    }
    async fn claim_deliveries(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
    ) -> Result<Vec<DeliveryLease>> {
        let now = Timestamp::now();
        let expires_at = now.plus(lease_for);
        let mut inner = self.lock();
        // The head of each outbox: its first pending message, if due and not leased.
        let mut heads: Vec<(Timestamp, PredictionId)> = inner
            .deliveries
            .iter()
            .filter_map(|(id, outbox)| {
                let head = outbox
                    .iter()
                    .find(|d| d.state.status == DeliveryStatus::Pending)?;
                let due = head.state.next_attempt_at.unwrap_or(now);
                let leased = head
                    .lease
                    .as_ref()
                    .is_some_and(|(_, _, until)| *until > now);
                (due <= now && !leased).then(|| (due, id.clone()))
            })
            .collect();
        heads.sort();
        heads.truncate(max);
        let mut leases = Vec::with_capacity(heads.len());
        for (_, id) in heads {
            let outbox = inner.deliveries.get_mut(&id).expect("found above");
            let head = outbox
                .iter_mut()
                .find(|d| d.state.status == DeliveryStatus::Pending)
                .expect("found above");
            let token = LeaseToken::generate();
            head.lease = Some((worker.clone(), token, expires_at));
            leases.push(DeliveryLease {
                state: head.state.clone(),
                worker: worker.clone(),
                token,
                expires_at,
            });
        }
        Ok(leases)
    }

    async fn finish_delivery(
        &self,
        lease: &DeliveryLease,
        attempt: &Attempt,
        outcome: DeliveryOutcome,
    ) -> Result<()> {
        let now = Timestamp::now();
        let mut inner = self.lock();
        let id = &lease.state.delivery.prediction_id;
        let data_removed = inner
            .predictions
            .get(id)
            .is_none_or(|p| p.value.data_removed);
        let outbox = inner.deliveries.get_mut(id).ok_or(Error::LeaseLost)?;
        let position = outbox
            .iter()
            .position(|d| {
                d.state.delivery.id == lease.state.delivery.id
                    && d.lease
                        .as_ref()
                        .is_some_and(|(_, token, until)| *token == lease.token && *until > now)
            })
            .ok_or(Error::LeaseLost)?;
        let entry = &mut outbox[position];
        entry.lease = None;
        entry.state.attempts.push(attempt.clone());
        match outcome {
            DeliveryOutcome::Delivered => {
                entry.state.status = DeliveryStatus::Delivered;
                entry.state.next_attempt_at = None;
            }
            DeliveryOutcome::RetryAt(at) => entry.state.next_attempt_at = Some(at),
            DeliveryOutcome::GiveUp { drop_rest } => {
                entry.state.status = DeliveryStatus::Failed;
                entry.state.next_attempt_at = None;
                if drop_rest {
                    for later in outbox.iter_mut().skip(position + 1) {
                        if later.state.status == DeliveryStatus::Pending {
                            later.state.status = DeliveryStatus::Failed;
                            later.state.next_attempt_at = None;
                            later.lease = None;
                        }
                    }
                }
            }
        }
        if data_removed {
            // Retention ran while it was pending: keep no data once it is done.
            outbox.retain(|d| d.state.status == DeliveryStatus::Pending);
        }
        Ok(())
    }

    async fn list_deliveries(&self, id: &PredictionId) -> Result<Vec<DeliveryState>> {
        Ok(self
            .lock()
            .deliveries
            .get(id)
            .map(|outbox| outbox.iter().map(|d| d.state.clone()).collect())
            .unwrap_or_default())
    }

    async fn redeliver(&self, id: &PredictionId, delivery_id: &str) -> Result<()> {
        let mut inner = self.lock();
        let entry = inner
            .deliveries
            .get_mut(id)
            .and_then(|outbox| {
                outbox
                    .iter_mut()
                    .find(|d| d.state.delivery.id == delivery_id)
            })
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        entry.state.status = DeliveryStatus::Pending;
        entry.state.next_attempt_at = Some(Timestamp::now());
        entry.lease = None;
        Ok(())
    }

    async fn read_events(
        &self,
        id: &PredictionId,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> Result<Vec<StreamEvent>> {
        Ok(self
            .lock()
            .events
            .get(id)
            .map(|log| {
                log.iter()
                    .filter(|e| after.is_none_or(|a| (e.revision, e.index) > a))
                    .take(limit.max(1))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn queues_work(effects: &[Effect]) -> bool {
    effects
        .iter()
        .any(|e| matches!(e, Effect::EnqueueJob { .. }))
}
