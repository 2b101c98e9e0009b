//! Runs: one execution of a blueprint, kept as one record ([`Run`]) with every node's items
//! (their predictions, attempt by attempt), and [`Run::plan`], the pure step that folds what
//! the node predictions became into the run and decides what starts, what is canceled and
//! whether the run settles.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Catalog;
use super::blueprint::{Blueprint, OnFailure};
use super::template::{self, Reference, Scope};
use crate::credits::Hold;
use crate::id::{AccountId, ModelName, PredictionId};
use crate::prediction::{Prediction, WebhookEvents};
use crate::state::Status;
use crate::store::{self, Entity, Key, Kind, Record, decode_json, encode_json};
use crate::time::Timestamp;

/// The most items one fan-out may have.
pub const MAX_FAN_OUT: usize = 1000;

/// Where a node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Not started: some node it depends on has not settled.
    Waiting,
    /// Its predictions exist; none has started.
    Starting,
    /// Some of its predictions started or settled.
    Processing,
    /// Every item succeeded.
    Succeeded,
    /// Some item failed (after its retries) or was canceled.
    Failed,
    /// The run was canceled while the node ran.
    Canceled,
    /// Never started: the run ended first.
    Skipped,
}

impl NodeStatus {
    /// True once the node will not change again.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            NodeStatus::Succeeded | NodeStatus::Failed | NodeStatus::Canceled | NodeStatus::Skipped
        )
    }

    /// The name clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Waiting => "waiting",
            NodeStatus::Starting => "starting",
            NodeStatus::Processing => "processing",
            NodeStatus::Succeeded => "succeeded",
            NodeStatus::Failed => "failed",
            NodeStatus::Canceled => "canceled",
            NodeStatus::Skipped => "skipped",
        }
    }
}

/// One item of a node (the node itself, without `for_each`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemRun {
    /// Its predictions, one per attempt; the last is the current one.
    pub ids: Vec<PredictionId>,
    /// The current prediction's status, as last seen.
    pub status: Status,
    /// Its output once it succeeded (stored form: file references, not URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ItemRun {
    fn current(&self) -> Option<&PredictionId> {
        self.ids.last()
    }
}

/// One node of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRun {
    /// Where it stands.
    pub status: NodeStatus,
    /// The nodes it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<String>,
    /// Its items, once started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemRun>,
    /// Its output once settled: the item's output, or the list of items' outputs for a
    /// fan-out (`null` for an item that failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl NodeRun {
    /// Every prediction id of the node, attempts included, in item order.
    pub fn prediction_ids(&self) -> impl Iterator<Item = &PredictionId> {
        self.items.iter().flat_map(|i| i.ids.iter())
    }
}

/// One run of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Its id (shaped like a prediction id, in its owner's partition).
    pub id: String,
    /// The account that started it; its node predictions are this account's.
    pub owner: AccountId,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow version it runs.
    pub version: u32,
    /// That version's blueprint: a run keeps it whatever later versions say.
    pub blueprint: Blueprint,
    /// Node names, each after those it depends on.
    pub order: Vec<String>,
    /// The run's input.
    pub input: Value,
    /// Where it stands: Replicate's five statuses.
    pub status: Status,
    /// Every node by name.
    pub nodes: BTreeMap<String, NodeRun>,
    /// The output once it succeeded (stored form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why it failed, once a node failed with `on_failure: fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where `run.completed` goes (and node predictions' messages, for the events in
    /// `webhook_events_filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Which node prediction events also go to `webhook`.
    #[serde(default)]
    pub webhook_events_filter: WebhookEvents,
    /// True if its predictions are free (the admin's runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub free: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its first prediction started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// True once a cancel was asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// Secret salt of its node prediction ids (never shown): ids are derived from it, the
    /// node, the item and the attempt, so starting a node twice would collide on the id, and
    /// nobody can claim one of those ids in advance.
    pub seed: String,
}

/// What a node prediction was seen as.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// Its status, with output and error once terminal.
    Seen {
        /// Its status.
        status: Status,
        /// Its output, if it succeeded.
        output: Option<Value>,
        /// Its error, if it failed.
        error: Option<String>,
    },
    /// It does not exist (lost): it is created again, under the same id.
    Missing,
}

/// What one step decided.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The run as it is after the step.
    pub run: Run,
    /// Predictions to create, in the write that stores `run`.
    pub start: Vec<Prediction>,
    /// Predictions to cancel once `run` is stored (the run is failing or canceled).
    pub cancel: Vec<PredictionId>,
}

impl Run {
    /// The record key of run `id`.
    pub fn key_of(id: &str) -> Key {
        Key::new(Kind::Run, id)
    }

    /// Whether `id` has the shape of a run id.
    pub fn is_valid_id(id: &str) -> bool {
        PredictionId::parse(id).is_ok()
    }

    /// The message id of its `run.completed` webhook: one per run.
    pub fn completion_message_id(&self) -> String {
        format!("msg_{}_completed", self.id)
    }

    /// The prediction id of `node`'s item `index`, attempt `attempt`: derived from the run's
    /// secret seed, in the owner's partition, sorting with the run's time.
    pub fn prediction_id(&self, node: &str, index: usize, attempt: usize) -> PredictionId {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{}/{node}/{index}/{attempt}", self.seed));
        let mut random = [0u8; 16];
        random.copy_from_slice(&digest[..16]);
        let ms = u64::try_from(self.created_at.as_millis()).unwrap_or_default();
        let ulid = ulid::Ulid::from_parts(ms, u128::from_be_bytes(random));
        PredictionId::derived_for(&ulid.to_string().to_ascii_lowercase(), &self.owner)
    }

    /// Ids of the current predictions of items not yet settled.
    pub fn unsettled(&self) -> Vec<PredictionId> {
        self.nodes
            .values()
            .flat_map(|n| n.items.iter())
            .filter(|i| !i.status.is_terminal())
            .filter_map(|i| i.current().cloned())
            .collect()
    }

    /// True once the run is failing or canceled: nothing new starts.
    fn stopping(&self) -> bool {
        self.cancel_requested || self.error.is_some()
    }

    /// Folds `observed` (by prediction id) into the run and decides the next step: retries,
    /// nodes that settle, nodes whose inputs all exist (started, each item as a new
    /// prediction), cancels when failing, and the run's own status. `affordable: false`
    /// fails every priced start with `insufficient credits` (the write that would reserve
    /// them was refused). Pure: the caller stores the result.
    pub fn plan(
        &self,
        observed: &HashMap<PredictionId, Observed>,
        catalog: &dyn Catalog,
        now: Timestamp,
        affordable: bool,
    ) -> Plan {
        let mut run = self.clone();
        let mut start = Vec::new();
        // 1. What the predictions became; lost ones are created again.
        for name in &self.order {
            let node = run.nodes.get_mut(name).expect("order names every node");
            for (index, item) in node.items.iter_mut().enumerate() {
                if item.status.is_terminal() {
                    continue;
                }
                let Some(id) = item.current().cloned() else {
                    continue;
                };
                match observed.get(&id) {
                    Some(Observed::Seen {
                        status,
                        output,
                        error,
                    }) => {
                        item.status = *status;
                        if status.is_terminal() {
                            item.output = output.clone();
                            item.error = error.clone();
                        }
                    }
                    Some(Observed::Missing) => {
                        let attempt = item.ids.len() - 1;
                        match self.node_prediction(name, index, attempt, catalog, now, affordable) {
                            Some(p) => start.push(p),
                            None => {
                                item.status = Status::Failed;
                                item.error =
                                    Some("its prediction was lost and cannot be made again".into());
                            }
                        }
                    }
                    None => {}
                }
            }
        }
        // 2. Retries and node settlements.
        for name in &self.order {
            let spec = &self.blueprint.nodes[name];
            let stopping = run.stopping();
            let node = run.nodes.get_mut(name).expect("order names every node");
            if node.items.is_empty() || node.status.is_settled() {
                continue;
            }
            for (index, item) in node.items.iter_mut().enumerate() {
                let failed = item.status.is_terminal() && item.status != Status::Succeeded;
                let attempts = item.ids.len();
                if failed
                    && !stopping
                    && attempts > 0
                    && attempts <= spec.retries as usize
                    && let Some(p) =
                        self.node_prediction(name, index, attempts, catalog, now, affordable)
                {
                    item.ids.push(p.id.clone());
                    item.status = Status::Starting;
                    item.output = None;
                    item.error = None;
                    start.push(p);
                }
            }
            settle_node(node, spec.for_each.is_some(), stopping);
            if node.status == NodeStatus::Failed && spec.on_failure == OnFailure::Fail && !stopping
            {
                run.error = Some(format!(
                    "node {name} failed: {}",
                    node.error.as_deref().unwrap_or("no error given")
                ));
            }
        }
        // 3. Failing or canceled: cancel what runs, skip what waits, settle when all did.
        if run.stopping() {
            return self.stop(run, start, now);
        }
        // 4. Start every node whose inputs all exist. The run as it was before the first start
        // is kept (only once one is ready: most advances start nothing) to undo this step's
        // starts if one of them fails the run.
        let mut before_frontier: Option<(Run, usize)> = None;
        loop {
            let mut progressed = false;
            for name in &self.order {
                if run.nodes[name].status != NodeStatus::Waiting {
                    continue;
                }
                let ready = run.nodes[name].deps.iter().all(|d| {
                    let dep = &run.nodes[d];
                    dep.status == NodeStatus::Succeeded
                        || (dep.status == NodeStatus::Failed
                            && self.blueprint.nodes[d].on_failure == OnFailure::Continue)
                });
                if !ready {
                    continue;
                }
                progressed = true;
                if before_frontier.is_none() {
                    before_frontier = Some((run.clone(), start.len()));
                }
                self.start_node(&mut run, name, catalog, now, affordable, &mut start);
                let spec = &self.blueprint.nodes[name];
                if run.nodes[name].status == NodeStatus::Failed
                    && spec.on_failure == OnFailure::Fail
                {
                    // Nothing of this step starts: the run fails instead.
                    let error = format!(
                        "node {name} failed: {}",
                        run.nodes[name].error.as_deref().unwrap_or("no error given")
                    );
                    let failed_node = run.nodes[name].clone();
                    let (before, started) =
                        before_frontier.take().expect("kept at the first start");
                    run = before;
                    start.truncate(started);
                    run.nodes.insert(name.clone(), failed_node);
                    run.error = Some(error);
                    return self.stop(run, start, now);
                }
            }
            if !progressed {
                break;
            }
        }
        // 5. The run's status.
        if run.nodes.values().all(|n| n.status.is_settled()) {
            run.status = Status::Succeeded;
            run.output = self
                .blueprint
                .output
                .as_ref()
                .map(|o| template::render(o, &RunScope::new(&run, None, None)));
            run.completed_at = Some(now.max(run.created_at));
            run.started_at = run.started_at.or(run.completed_at);
        } else if run
            .nodes
            .values()
            .flat_map(|n| n.items.iter())
            .any(|i| i.status != Status::Starting)
        {
            run.status = Status::Processing;
            run.started_at = run.started_at.or(Some(now.max(run.created_at)));
        }
        Plan {
            run,
            start,
            cancel: Vec::new(),
        }
    }

    /// The failing or canceled end of a step.
    fn stop(&self, mut run: Run, start: Vec<Prediction>, now: Timestamp) -> Plan {
        let mut cancel = Vec::new();
        for node in run.nodes.values_mut() {
            match node.status {
                NodeStatus::Waiting => node.status = NodeStatus::Skipped,
                NodeStatus::Starting | NodeStatus::Processing => {
                    cancel.extend(
                        node.items
                            .iter()
                            .filter(|i| !i.status.is_terminal())
                            .filter_map(|i| i.current().cloned()),
                    );
                }
                _ => {}
            }
        }
        // Nothing starts in a stopping run: a retry planned in this step is dropped (the item
        // stays failed), and a lost prediction is not created again (it counts as canceled).
        let planned: Vec<PredictionId> = start.iter().map(|p| p.id.clone()).collect();
        for (name, node) in &mut run.nodes {
            for (index, item) in node.items.iter_mut().enumerate() {
                let Some(current) = item.current().cloned() else {
                    continue;
                };
                if !planned.contains(&current) {
                    continue;
                }
                let before = self.nodes.get(name).and_then(|n| n.items.get(index));
                match before {
                    Some(b) if !b.ids.contains(&current) => *item = b.clone(),
                    _ => item.status = Status::Canceled,
                }
            }
        }
        cancel.retain(|id| !planned.contains(id));
        // Only a failing or canceled run stops here: what it canceled shows as canceled.
        let canceling = true;
        for (name, node) in &mut run.nodes {
            if !node.status.is_settled() && node.items.iter().all(|i| i.status.is_terminal()) {
                settle_node(
                    node,
                    self.blueprint.nodes[name].for_each.is_some(),
                    canceling,
                );
            }
        }
        if cancel.is_empty() && run.nodes.values().all(|n| n.status.is_settled()) {
            run.status = if run.cancel_requested {
                Status::Canceled
            } else {
                Status::Failed
            };
            run.completed_at = Some(now.max(run.created_at));
        } else if run.status == Status::Starting
            && run
                .nodes
                .values()
                .flat_map(|n| n.items.iter())
                .any(|i| i.status != Status::Starting)
        {
            run.status = Status::Processing;
            run.started_at = run.started_at.or(Some(now.max(run.created_at)));
        }
        Plan {
            run,
            start: Vec::new(),
            cancel,
        }
    }

    /// Starts node `name`: its items, each a new prediction (or a failed item when its input
    /// is refused, its model is gone, or it cannot be afforded).
    fn start_node(
        &self,
        run: &mut Run,
        name: &str,
        catalog: &dyn Catalog,
        now: Timestamp,
        affordable: bool,
        start: &mut Vec<Prediction>,
    ) {
        let spec = &self.blueprint.nodes[name];
        let fanned = spec.for_each.is_some();
        let items = match self.items_of(run, name) {
            Ok(items) => items,
            Err(error) => {
                let node = run.nodes.get_mut(name).expect("a node");
                node.status = NodeStatus::Failed;
                node.error = Some(error);
                node.output = Some(Value::Null);
                return;
            }
        };
        let count = items.as_ref().map_or(1, Vec::len);
        let mut made = Vec::with_capacity(count);
        for index in 0..count {
            let id = run.prediction_id(name, index, 0);
            let item = items.as_ref().map(|list| &list[index]);
            let result = self.build_prediction(run, name, index, item, id.clone(), catalog, now);
            let result = match result {
                Ok(p) if !affordable && p.hold.is_some() => {
                    Err("insufficient credits to start this node".to_owned())
                }
                other => other,
            };
            match result {
                Ok(p) => {
                    made.push(ItemRun {
                        ids: vec![id],
                        status: Status::Starting,
                        output: None,
                        error: None,
                    });
                    start.push(p);
                }
                Err(error) => made.push(ItemRun {
                    ids: Vec::new(),
                    status: Status::Failed,
                    output: None,
                    error: Some(error),
                }),
            }
        }
        let node = run.nodes.get_mut(name).expect("a node");
        node.items = made;
        node.status = NodeStatus::Starting;
        settle_node(node, fanned, false);
    }

    /// The list a fan-out node runs over (`None` without `for_each`), from the run as it is.
    fn items_of(&self, run: &Run, name: &str) -> Result<Option<Vec<Value>>, String> {
        let Some(each) = &self.blueprint.nodes[name].for_each else {
            return Ok(None);
        };
        let value = template::render(
            &Value::String(each.clone()),
            &RunScope::new(run, None, None),
        );
        match value {
            Value::Array(items) if items.len() <= MAX_FAN_OUT => Ok(Some(items)),
            Value::Array(items) => Err(format!(
                "for_each {each} has {} items, more than {MAX_FAN_OUT}",
                items.len()
            )),
            other => Err(format!(
                "for_each {each} is not a list (it is {})",
                type_name(&other)
            )),
        }
    }

    /// The prediction of `name`'s item `index` at `attempt`, as [`Run::start_node`] makes it;
    /// `None` if it can no longer be made (its model is gone, its input refused, or it is
    /// priced and the account could not afford this step).
    fn node_prediction(
        &self,
        name: &str,
        index: usize,
        attempt: usize,
        catalog: &dyn Catalog,
        now: Timestamp,
        affordable: bool,
    ) -> Option<Prediction> {
        let items = self.items_of(self, name).ok()?;
        let item = match &items {
            Some(list) => Some(list.get(index)?),
            None => None,
        };
        let id = self.prediction_id(name, index, attempt);
        self.build_prediction(self, name, index, item, id, catalog, now)
            .ok()
            .filter(|p| affordable || p.hold.is_none())
    }

    #[allow(clippy::too_many_arguments)]
    fn build_prediction(
        &self,
        run: &Run,
        name: &str,
        index: usize,
        item: Option<&Value>,
        id: PredictionId,
        catalog: &dyn Catalog,
        now: Timestamp,
    ) -> Result<Prediction, String> {
        let spec = &self.blueprint.nodes[name];
        let model = ModelName::parse(&spec.model).map_err(|e| e.to_string())?;
        let info = catalog
            .model(&model)
            .ok_or_else(|| format!("model {model} no longer exists on this server"))?;
        let scope = RunScope::new(run, item, Some(index)).for_model(catalog);
        let input = template::render(&spec.input, &scope);
        let input = catalog
            .validate(&model, &input)
            .map_err(|p| match p.field {
                Some(field) => format!("input.{field}: {}", p.message),
                None => format!("input: {}", p.message),
            })?;
        let mut p = Prediction::new(id, self.owner.clone(), model, info.version, input);
        p.created_at = now;
        p.run = Some(self.id.clone());
        p.node = Some(name.to_owned());
        p.webhook = self
            .webhook
            .clone()
            .filter(|_| self.webhook_events_filter != WebhookEvents::NONE);
        p.webhook_events_filter = self.webhook_events_filter;
        p.deadline = spec
            .max_run_time
            .map(|s| now.plus(std::time::Duration::from_secs_f64(s)));
        if let Some(price) = info.price.filter(|_| !self.free) {
            let reserved = price.reserve();
            if reserved > 0 {
                p.hold = Some(Hold {
                    price,
                    reserved,
                    charged: None,
                });
            }
        }
        Ok(p)
    }
}

/// Settles `node` once every item settled: its status, output and error. A node that did
/// not succeed is `failed` (whatever its `on_failure`, which decides only what the run does),
/// or `canceled` when `canceling` (the run is failing or was canceled) and only cancels
/// stopped it.
fn settle_node(node: &mut NodeRun, fanned: bool, canceling: bool) {
    if node.items.is_empty() {
        if fanned && node.status == NodeStatus::Starting {
            node.status = NodeStatus::Succeeded;
            node.output = Some(Value::Array(Vec::new()));
        }
        return;
    }
    if !node.items.iter().all(|i| i.status.is_terminal()) {
        if node.items.iter().any(|i| i.status != Status::Starting) {
            node.status = NodeStatus::Processing;
        }
        return;
    }
    let outputs: Vec<Value> = node
        .items
        .iter()
        .map(|i| {
            i.output
                .clone()
                .filter(|_| i.status == Status::Succeeded)
                .unwrap_or(Value::Null)
        })
        .collect();
    let failed = node.items.iter().find(|i| i.status != Status::Succeeded);
    node.output = Some(if fanned {
        Value::Array(outputs)
    } else {
        outputs.into_iter().next().unwrap_or(Value::Null)
    });
    let only_canceled = node
        .items
        .iter()
        .all(|i| matches!(i.status, Status::Succeeded | Status::Canceled));
    node.status = match failed {
        None => NodeStatus::Succeeded,
        Some(_) if canceling && only_canceled => NodeStatus::Canceled,
        Some(_) => NodeStatus::Failed,
    };
    if let Some(item) = failed {
        node.error = Some(
            item.error
                .clone()
                .unwrap_or_else(|| format!("its prediction was {}", item.status)),
        );
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// What a run's templates see.
struct RunScope<'a> {
    run: &'a Run,
    item: Option<&'a Value>,
    index: Option<usize>,
    /// Set when rendering a model's input: output file references become URLs.
    catalog: Option<&'a dyn Catalog>,
}

impl<'a> RunScope<'a> {
    fn new(run: &'a Run, item: Option<&'a Value>, index: Option<usize>) -> Self {
        Self {
            run,
            item,
            index,
            catalog: None,
        }
    }

    fn for_model(mut self, catalog: &'a dyn Catalog) -> Self {
        self.catalog = Some(catalog);
        self
    }
}

impl Scope for RunScope<'_> {
    fn lookup(&self, reference: &Reference) -> Value {
        let value = match reference {
            Reference::Input(path) => template::follow(&self.run.input, path),
            Reference::Node { name, path } => self
                .run
                .nodes
                .get(name)
                .and_then(|n| n.output.as_ref())
                .map_or(Value::Null, |o| template::follow(o, path)),
            Reference::Item(path) => self.item.map_or(Value::Null, |i| template::follow(i, path)),
            Reference::Index => self.index.map_or(Value::Null, Value::from),
        };
        match (self.catalog, reference) {
            (Some(catalog), Reference::Node { .. } | Reference::Item(_)) => {
                catalog.render_files(value)
            }
            _ => value,
        }
    }
}

impl Entity for Run {
    const KIND: Kind = Kind::Run;

    fn key(&self) -> Key {
        Self::key_of(&self.id)
    }

    fn owner(&self) -> &AccountId {
        &self.owner
    }

    fn to_record(&self) -> store::Result<Record> {
        Ok(Record {
            key: self.key(),
            owner: self.owner.clone(),
            created_at: self.created_at,
            status: Some(self.status.as_str().to_owned()),
            parent: None,
            expires_at: None,
            data_removed: false,
            body: encode_json(self)?,
            data: None,
        })
    }

    fn from_record(record: &Record) -> store::Result<Self> {
        decode_json(&record.body)
    }
}
