//! The workflow operations of [`Predictions`]: store blueprints, create runs, advance,
//! reconcile and cancel them, read and list both.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::{Blueprint, Catalog, NodeRun, NodeStatus, Observed, Run, Workflow};
use crate::credits;
use crate::error::{Error, Result};
use crate::id::{AccountId, PredictionId};
use crate::idempotency::IdempotencyKey;
use crate::jobs;
use crate::outbox::{Delivery, Payload};
use crate::prediction::{Prediction, Revision, Versioned, WebhookEvent, WebhookEvents};
use crate::service::{Predictions, Slot, counters, has_delivery, request_digest};
use crate::state::{Event, Status};
use crate::store::{self, Cursor, Effect, Entity, Kind, Lane, ListQuery, Op, StoreExt, Write};
use crate::time::Timestamp;

/// How often an advance starts over after losing the run record's compare-and-set.
const MAX_ADVANCE_ATTEMPTS: usize = 16;

/// How many node predictions an advance reads at a time.
const OBSERVE_PAGE: usize = 500;

/// Up to this many unsettled node predictions are read one by one rather than listed.
const OBSERVE_ONE_BY_ONE: usize = 8;

/// What [`Predictions::put_workflow`] did.
#[derive(Clone, Debug)]
pub enum WorkflowPut {
    /// A new workflow, at version 1.
    Created(Workflow),
    /// A new version of an existing one.
    Updated(Workflow),
    /// The same blueprint again: the version stays.
    Unchanged(Workflow),
}

impl WorkflowPut {
    /// The workflow as stored.
    pub fn workflow(&self) -> &Workflow {
        match self {
            WorkflowPut::Created(w) | WorkflowPut::Updated(w) | WorkflowPut::Unchanged(w) => w,
        }
    }
}

/// A validated request to run a workflow.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// Who runs it (and owns its predictions).
    pub owner: AccountId,
    /// The workflow, at the version the run keeps.
    pub workflow: Workflow,
    /// The run's input.
    pub input: Value,
    /// Where `run.completed` goes.
    pub webhook: Option<String>,
    /// Which node prediction events also go there.
    pub webhook_events_filter: WebhookEvents,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// True if its predictions cost nothing (the admin's).
    pub free: bool,
}

/// What [`Predictions::create_run`] did.
#[derive(Clone, Debug)]
pub enum RunCreation {
    /// A new run.
    Created(Versioned<Run>),
    /// The run an earlier request with the same idempotency key created.
    Replayed(Versioned<Run>),
}

impl RunCreation {
    /// The run, new or earlier.
    pub fn run(&self) -> &Versioned<Run> {
        match self {
            RunCreation::Created(r) | RunCreation::Replayed(r) => r,
        }
    }
}

/// A page of runs or workflows.
#[derive(Clone, Debug)]
pub struct RunPage<T> {
    /// Newest first.
    pub items: Vec<T>,
    /// Where the next page starts.
    pub next: Option<Cursor>,
}

/// The run id an advance task's payload names.
pub fn run_target(payload: &str) -> Option<String> {
    crate::store::NewItem::task_target(payload).filter(|id| Run::is_valid_id(id))
}

/// Predictions a write starts, with the worker slots that run them at once once it commits.
type Started = Vec<(Box<dyn Slot>, jobs::Lease)>;

/// The effects that store `plan`'s new predictions: records, jobs, reservations, notices.
/// A job goes to a free slot of this process's worker pool when there is one, leased from the
/// start (as a create does), so it needs no claim; [`hand_over`] starts them after the commit.
fn start_effects(
    service: &Predictions,
    start: &[Prediction],
    write: &mut Write,
    now: Timestamp,
) -> Result<(i64, Started)> {
    let mut reserved = 0;
    let mut started = Vec::new();
    for p in start {
        write.ops.push(Op::Insert(p.to_record()?));
        match service.reserve_slot(p.model.as_str()) {
            Some(slot) => {
                let (lease, effect) = jobs::Lease::claimed_at_create(
                    &p.id,
                    &p.owner,
                    p.model.as_str(),
                    slot.worker(),
                    slot.lease_for(),
                    now,
                );
                write.effects.push(effect);
                started.push((slot, lease));
            }
            None => write
                .effects
                .push(jobs::enqueue(&p.id, &p.owner, p.model.as_str(), now)),
        }
        if let Some(hold) = &p.hold {
            reserved += hold.reserved;
            write
                .effects
                .push(Effect::Post(Box::new(credits::reserve(p, hold, now))));
        }
        write.effects.extend(service.notices().effects(None, p, 0)?);
    }
    if !start.is_empty() {
        write
            .effects
            .push(Effect::count(counters::CREATED, start.len() as i64));
    }
    Ok((reserved, started))
}

/// After the write that created them committed: hands the leased jobs to their slots, and
/// wakes the workers for the others.
fn hand_over(service: &Predictions, start: &[Prediction], started: Started) {
    let queued = start.len() > started.len();
    for (slot, lease) in started {
        slot.start(lease);
    }
    if queued {
        service.hub().notify_work();
    }
}

/// The `run.completed` message, if `run` just settled and has a webhook.
fn completion(run: &Run, now: Timestamp) -> Result<Option<Effect>> {
    match (&run.webhook, run.status.is_terminal()) {
        (Some(url), true) => Ok(Some(
            Delivery {
                id: run.completion_message_id(),
                url: url.clone(),
                event: WebhookEvent::Completed,
                payload: Payload::Run(Box::new(run.clone())),
                created_at: now,
            }
            .enqueue(&run.owner)?,
        )),
        _ => Ok(None),
    }
}

/// Up to this many unsettled node predictions, a node prediction's status change advances
/// its run in the write that makes the change ([`Predictions::advance_in_write`]); more (a
/// fan-out) go through the run's advance task, so that their settlements do not all contend
/// for the run record.
pub(crate) const FUSE_AT_MOST: usize = 8;

/// A run advance made part of a node prediction's transition: what the write must also
/// carry, and what to do once it committed.
pub(crate) struct FusedAdvance {
    /// The run record's compare-and-set, and the started predictions' records.
    pub(crate) ops: Vec<Op>,
    /// The started predictions' effects, and the `run.completed` message.
    pub(crate) effects: Vec<Effect>,
    /// The run as the write stores it, and the revision it replaces.
    run: Versioned<Run>,
    start: Vec<Prediction>,
    started: Started,
}

impl FusedAdvance {
    /// After the write committed: remembers the run for the next node's settlement, and
    /// starts the predictions it created.
    pub(crate) fn committed(self, service: &Predictions) {
        service.store().remember_decoded(
            &Run::key_of(&self.run.value.id),
            self.run.revision.next(),
            Arc::new(self.run.value),
        );
        hand_over(service, &self.start, self.started);
    }
}

impl Predictions {
    /// Stores `owner`'s blueprint after validating it: a new workflow at version 1, a new
    /// version when it changed, nothing when it is the same.
    pub async fn put_workflow(
        &self,
        owner: &AccountId,
        blueprint: Blueprint,
        catalog: &dyn Catalog,
    ) -> Result<WorkflowPut> {
        blueprint
            .validate(catalog)
            .map_err(Error::InvalidBlueprint)?;
        let digest = request_digest(
            &serde_json::to_value(&blueprint)
                .map_err(|e| Error::Invalid(format!("cannot encode the blueprint: {e}")))?,
        );
        let key = Workflow::key_of(owner, &blueprint.name);
        for _ in 0..MAX_ADVANCE_ATTEMPTS {
            let now = Timestamp::now();
            let current = self.store().get_entity::<Workflow>(&key).await?;
            let (next, op) = match &current {
                None => {
                    let w = Workflow {
                        owner: owner.clone(),
                        blueprint: blueprint.clone(),
                        version: 1,
                        digest: digest.clone(),
                        created_at: now,
                        updated_at: now,
                    };
                    let op = Op::Insert(w.to_record()?);
                    (w, op)
                }
                Some(old) if old.value.digest == digest => {
                    return Ok(WorkflowPut::Unchanged(Arc::unwrap_or_clone(
                        old.value.clone(),
                    )));
                }
                Some(old) => {
                    let w = Workflow {
                        blueprint: blueprint.clone(),
                        version: old.value.version + 1,
                        digest: digest.clone(),
                        updated_at: now.max(old.value.created_at),
                        ..(*old.value).clone()
                    };
                    let op = Op::Update {
                        record: w.to_record()?,
                        expected: old.revision,
                    };
                    (w, op)
                }
            };
            match self.store().write(&Write::new(owner.clone()).op(op)).await {
                Ok(_) if current.is_none() => return Ok(WorkflowPut::Created(next)),
                Ok(_) => return Ok(WorkflowPut::Updated(next)),
                Err(store::Error::Conflict { .. } | store::Error::Exists(_)) => {
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Busy(format!("workflow {}", blueprint.name)))
    }

    /// Workflow `name` as `owner` sees it: its own, else the operator's (the admin's).
    pub async fn get_workflow(&self, owner: &AccountId, name: &str) -> Result<Workflow> {
        let mut owners = vec![owner.clone()];
        if *owner != AccountId::admin() {
            owners.push(AccountId::admin());
        }
        for o in owners {
            if let Some(w) = self
                .store()
                .get_entity::<Workflow>(&Workflow::key_of(&o, name))
                .await?
            {
                return Ok(Arc::unwrap_or_clone(w.value));
            }
        }
        Err(Error::WorkflowNotFound(name.to_owned()))
    }

    /// `owner`'s workflows, newest first.
    pub async fn list_workflows(
        &self,
        owner: &AccountId,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<RunPage<Workflow>> {
        let mut query = ListQuery::of(Kind::Workflow, limit.max(1));
        query.owner = Some(owner.clone());
        query.after = after;
        let page = self.store().list(&query).await?;
        let items = page
            .items
            .iter()
            .map(|s| s.decode::<Workflow>().map(Arc::unwrap_or_clone))
            .collect::<store::Result<Vec<_>>>()?;
        Ok(RunPage {
            items,
            next: page.next,
        })
    }

    /// Creates a run and its first stage's predictions (their jobs and reservations) in one
    /// write: an account that cannot afford the first stage gets
    /// [`Error::InsufficientCredits`] and nothing exists.
    pub async fn create_run(
        &self,
        request: &RunRequest,
        catalog: &dyn Catalog,
    ) -> Result<RunCreation> {
        let blueprint = &request.workflow.blueprint;
        blueprint
            .check_input(&request.input)
            .map_err(Error::InvalidBlueprint)?;
        let shape = blueprint.shape().map_err(Error::InvalidBlueprint)?;
        let fingerprint = request.idempotency_key.as_ref().map(|_| {
            request_digest(&serde_json::json!({
                "run": request.workflow.blueprint.name,
                "version": request.workflow.version,
                "input": request.input,
                "webhook": request.webhook,
                "webhook_events_filter": request.webhook_events_filter,
            }))
        });
        for _ in 0..4 {
            let now = Timestamp::now();
            let owner = &request.owner;
            let id = PredictionId::generate_for(owner);
            let run = Run {
                id: id.to_string(),
                owner: owner.clone(),
                workflow: blueprint.name.clone(),
                version: request.workflow.version,
                blueprint: blueprint.clone(),
                order: shape.order.clone(),
                input: request.input.clone(),
                status: Status::Starting,
                nodes: shape
                    .deps
                    .iter()
                    .map(|(name, deps)| {
                        (
                            name.clone(),
                            NodeRun {
                                status: NodeStatus::Waiting,
                                deps: deps.iter().cloned().collect(),
                                items: Vec::new(),
                                output: None,
                                error: None,
                            },
                        )
                    })
                    .collect::<BTreeMap<_, _>>(),
                output: None,
                error: None,
                webhook: request.webhook.clone(),
                webhook_events_filter: request.webhook_events_filter,
                free: request.free,
                created_at: now,
                started_at: None,
                completed_at: None,
                cancel_requested: false,
                seed: crate::prediction::new_secret_token(),
            };
            let plan = run.plan(&HashMap::new(), catalog, now, true);
            let mut write = Write::new(owner.clone()).op(Op::Insert(plan.run.to_record()?));
            let (reserved, started) = start_effects(self, &plan.start, &mut write, now)?;
            write.effects.extend(completion(&plan.run, now)?);
            if let (Some(key), Some(fingerprint)) = (&request.idempotency_key, &fingerprint) {
                let k = IdempotencyKey {
                    owner: owner.clone(),
                    key: key.clone(),
                    fingerprint: fingerprint.clone(),
                    prediction_id: id.clone(),
                    batch_id: None,
                    run_id: Some(run.id.clone()),
                    created_at: now,
                    expires_at: now.plus(self.config().idempotency_ttl),
                };
                write.ops.push(Op::Insert(k.to_record()?));
            }
            match self.store().write(&write).await {
                Ok(_) => {
                    if has_delivery(&write.effects) {
                        self.hub().notify_outbox();
                    }
                    hand_over(self, &plan.start, started);
                    return Ok(RunCreation::Created(Versioned {
                        value: plan.run,
                        revision: Revision::FIRST,
                    }));
                }
                Err(store::Error::Exists(taken)) if taken.kind == Kind::IdempotencyKey => {
                    let Some(first) = self.store().get_entity::<IdempotencyKey>(&taken).await?
                    else {
                        continue;
                    };
                    match &first.value.run_id {
                        Some(run_id) if Some(&first.value.fingerprint) == fingerprint.as_ref() => {
                            return Ok(RunCreation::Replayed(
                                self.get_run(Some(owner), run_id).await?,
                            ));
                        }
                        _ => {
                            return Err(Error::IdempotencyKeyReused {
                                key: first.value.key.clone(),
                            });
                        }
                    }
                }
                Err(store::Error::InsufficientCredits { available, .. }) => {
                    return Err(Error::InsufficientCredits {
                        account: owner.clone(),
                        available,
                        price: reserved,
                        model: None,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Busy("the run's Idempotency-Key".into()))
    }

    /// Run `id`, if it is `owner`'s (another account's reads as missing); `None` reads any
    /// account's (the admin's view).
    pub async fn get_run(&self, owner: Option<&AccountId>, id: &str) -> Result<Versioned<Run>> {
        let missing = || Error::RunNotFound(id.to_owned());
        if !Run::is_valid_id(id) {
            return Err(missing());
        }
        let stored = self
            .store()
            .get_uncached(&Run::key_of(id))
            .await?
            .ok_or_else(missing)?;
        if owner.is_some_and(|o| *o != stored.record.owner) {
            return Err(missing());
        }
        Ok(Versioned {
            value: Arc::unwrap_or_clone(stored.decode::<Run>()?),
            revision: stored.revision,
        })
    }

    /// `owner`'s runs (every account's for `None`), newest first, optionally only those in
    /// `status`.
    pub async fn list_runs(
        &self,
        owner: Option<&AccountId>,
        status: Option<Status>,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<RunPage<Run>> {
        let mut query = ListQuery::of(Kind::Run, limit.max(1));
        query.owner = owner.cloned();
        query.status = status.map(|s| s.as_str().to_owned());
        query.after = after;
        let page = self.store().list(&query).await?;
        let items = page
            .items
            .iter()
            .map(|s| s.decode::<Run>().map(Arc::unwrap_or_clone))
            .collect::<store::Result<Vec<_>>>()?;
        Ok(RunPage {
            items,
            next: page.next,
        })
    }

    /// What the run's unsettled predictions became, and which are missing. Reads bypass the
    /// cache (the point is to see other nodes' writes): a few unsettled predictions are read
    /// one by one; more, through one listing of the run's predictions (status column), with
    /// the output read only for those that settled.
    async fn observe(&self, run: &Run) -> Result<HashMap<PredictionId, Observed>> {
        let unsettled = run.unsettled();
        let mut observed = HashMap::with_capacity(unsettled.len());
        let seen = |p: &Prediction| Observed::Seen {
            status: p.status,
            output: p.output.clone(),
            error: p.error.clone(),
        };
        if unsettled.len() <= OBSERVE_ONE_BY_ONE {
            for id in unsettled {
                let found = self.store().get_uncached(&id.key()).await?;
                let state = match found {
                    Some(stored) => seen(&*stored.decode::<Prediction>()?),
                    None => Observed::Missing,
                };
                observed.insert(id, state);
            }
            return Ok(observed);
        }
        let mut statuses: HashMap<String, Status> = HashMap::new();
        let mut query = ListQuery::of(Kind::Prediction, OBSERVE_PAGE);
        query.owner = Some(run.owner.clone());
        query.parent = Some(run.id.clone());
        loop {
            let page = self.store().list(&query).await?;
            for stored in &page.items {
                if let Some(status) = stored.record.status.as_deref().and_then(Status::parse) {
                    statuses.insert(stored.record.key.id.clone(), status);
                }
            }
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        for id in unsettled {
            let state = match statuses.get(id.as_str()) {
                None => Observed::Missing,
                Some(status) if status.is_terminal() => {
                    match self.store().get_uncached(&id.key()).await? {
                        Some(stored) => seen(&*stored.decode::<Prediction>()?),
                        None => Observed::Missing,
                    }
                }
                Some(status) => Observed::Seen {
                    status: *status,
                    output: None,
                    error: None,
                },
            };
            observed.insert(id, state);
        }
        Ok(observed)
    }

    /// Moves run `id` on (see the module docs): folds in what its predictions became, starts
    /// what is ready, cancels what a failure or a cancel stops, and settles the run once.
    /// With `reconcile`, also queues the job of any unsettled node prediction that has none.
    /// Idempotent, and safe to run on every node at once.
    pub async fn advance_run(
        &self,
        owner: &AccountId,
        id: &str,
        catalog: &dyn Catalog,
        reconcile: bool,
    ) -> Result<Versioned<Run>> {
        'attempt: for _ in 0..MAX_ADVANCE_ATTEMPTS {
            let current = self.get_run(Some(owner), id).await?;
            if current.value.status.is_terminal() {
                return Ok(current);
            }
            let observed = self.observe(&current.value).await?;
            let mut requeue = Vec::new();
            if reconcile {
                for (pid, seen) in &observed {
                    if let Observed::Seen { status, .. } = seen
                        && !status.is_terminal()
                        && self.store().items(Lane::Jobs, &pid.key()).await?.is_empty()
                    {
                        requeue.push(pid.clone());
                    }
                }
            }
            let mut affordable = true;
            loop {
                let now = Timestamp::now();
                let plan = current.value.plan(&observed, catalog, now, affordable);
                let changed = plan.run != current.value || !plan.start.is_empty();
                if !changed && requeue.is_empty() {
                    self.cancel_nodes(&plan.cancel).await?;
                    return Ok(current);
                }
                let mut write = Write::new(owner.clone()).op(Op::Update {
                    record: plan.run.to_record()?,
                    expected: current.revision,
                });
                let (_, started) = start_effects(self, &plan.start, &mut write, now)?;
                for pid in &requeue {
                    if let Ok(p) = self.get(pid).await {
                        write
                            .effects
                            .push(jobs::enqueue(pid, owner, p.value.model.as_str(), now));
                    }
                }
                write.effects.extend(completion(&plan.run, now)?);
                match self.store().write(&write).await {
                    Ok(_) => {
                        if has_delivery(&write.effects) {
                            self.hub().notify_outbox();
                        }
                        hand_over(self, &plan.start, started);
                        if !requeue.is_empty() {
                            self.hub().notify_work();
                        }
                        if !requeue.is_empty() {
                            tracing::info!(
                                run = id,
                                jobs = requeue.len(),
                                "reconcile re-queued lost jobs"
                            );
                        }
                        self.cancel_nodes(&plan.cancel).await?;
                        return Ok(Versioned {
                            value: plan.run,
                            revision: current.revision.next(),
                        });
                    }
                    Err(store::Error::InsufficientCredits { .. }) if affordable => {
                        affordable = false;
                    }
                    Err(store::Error::Conflict { .. } | store::Error::Exists(_)) => {
                        tokio::task::yield_now().await;
                        continue 'attempt;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(Error::Busy(format!("run {id}")))
    }

    /// The run advance that `prediction`'s change can carry in its own write,
    /// if it can: a catalog is set ([`Predictions::set_catalog`]), the run has at most
    /// [`FUSE_AT_MOST`] unsettled predictions, and the step cancels nothing (cancels are
    /// transitions of their own). The step observes only this prediction: every other
    /// prediction's change came with an advance of its own (fused, or the run's advance
    /// task). `fresh` reads the run past the cache (after a lost compare-and-set). A write
    /// refused for the credits the step reserves is made again without it, and the advance
    /// task takes over.
    pub(crate) async fn advance_in_write(
        &self,
        prediction: &Prediction,
        fresh: bool,
        now: Timestamp,
    ) -> Result<Option<FusedAdvance>> {
        let (Some(run_id), Some(catalog)) = (&prediction.run, self.catalog()) else {
            return Ok(None);
        };
        let key = Run::key_of(run_id);
        let current = if fresh {
            match self.store().get_uncached(&key).await? {
                Some(stored) => Some(Versioned {
                    value: stored.decode::<Run>()?,
                    revision: stored.revision,
                }),
                None => None,
            }
        } else {
            self.store().get_entity::<Run>(&key).await?
        };
        let Some(current) = current else {
            return Ok(None);
        };
        let run = &*current.value;
        if run.status.is_terminal() || run.owner != prediction.owner {
            return Ok(None);
        }
        let unsettled = run.unsettled();
        if unsettled.len() > FUSE_AT_MOST || !unsettled.contains(&prediction.id) {
            return Ok(None);
        }
        let observed = HashMap::from([(
            prediction.id.clone(),
            Observed::Seen {
                status: prediction.status,
                output: prediction.output.clone(),
                error: prediction.error.clone(),
            },
        )]);
        let plan = run.plan(&observed, &*catalog, now, true);
        if !plan.cancel.is_empty() || (plan.run == *run && plan.start.is_empty()) {
            return Ok(None);
        }
        let mut write = Write::new(run.owner.clone()).op(Op::Update {
            record: plan.run.to_record()?,
            expected: current.revision,
        });
        let (_, started) = start_effects(self, &plan.start, &mut write, now)?;
        write.effects.extend(completion(&plan.run, now)?);
        Ok(Some(FusedAdvance {
            ops: write.ops,
            effects: write.effects,
            run: Versioned {
                value: plan.run,
                revision: current.revision,
            },
            start: plan.start,
            started,
        }))
    }

    /// Cancels node predictions (each refunded by its own settlement); one that settled
    /// otherwise meanwhile is left as it is.
    async fn cancel_nodes(&self, ids: &[PredictionId]) -> Result<()> {
        for pid in ids {
            match self.transition(pid, &Event::canceled()).await {
                Ok(_) | Err(Error::Transition(_) | Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Cancels run `id`: records the request, then cancels its running predictions and skips
    /// what never started (an advance finishes what a crash interrupted).
    pub async fn cancel_run(
        &self,
        owner: &AccountId,
        id: &str,
        catalog: &dyn Catalog,
    ) -> Result<Versioned<Run>> {
        for _ in 0..MAX_ADVANCE_ATTEMPTS {
            let current = self.get_run(Some(owner), id).await?;
            if current.value.status.is_terminal() || current.value.cancel_requested {
                break;
            }
            let mut next = current.value.clone();
            next.cancel_requested = true;
            let write = Write {
                account: owner.clone(),
                ops: vec![Op::Update {
                    record: next.to_record()?,
                    expected: current.revision,
                }],
                effects: vec![super::advance_task(id, owner, Timestamp::now())],
            };
            match self.store().write(&write).await {
                Ok(_) => {
                    self.hub().notify_tasks();
                    break;
                }
                Err(store::Error::Conflict { .. }) => tokio::task::yield_now().await,
                Err(e) => return Err(e.into()),
            }
        }
        self.advance_run(owner, id, catalog, false).await
    }
}
