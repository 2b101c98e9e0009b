//! Workflows: blueprints of predictions as durable DAGs ([`Blueprint`], stored as a
//! versioned [`Workflow`]) and their runs ([`Run`]), started, advanced and settled exactly
//! once on every backend.
//!
//! - **A node is a prediction** (one per item with `for_each`): stored, charged, run,
//!   streamed and webhooked like any other, owned by the run's account, with the run as its
//!   record's `parent`. Its id is derived from the run's secret seed, the node, the item and
//!   the attempt ([`Run::prediction_id`]), so a node cannot be created twice: a second create
//!   of the same id fails in the store.
//! - **Advancing** ([`Predictions::advance_run`](crate::Predictions::advance_run)) follows
//!   the batch tally pattern: every status change of a node prediction replaces the run's
//!   *advance task* ([`Lane::Tasks`](store::Lane::Tasks), id `run:<id>`, `replace: true`)
//!   in the same write as the change, so the fact that the
//!   run must move on commits with the parent's terminal transition and a crash cannot split
//!   them. An advance reads the run, observes its unsettled predictions, plans the step
//!   ([`Run::plan`]: settlements, retries, the ready frontier, failure and cancel) and stores
//!   the new run record with the predictions it starts (their jobs and credit reservations)
//!   as one compare-and-set write: two advances racing on two nodes cannot both start a node
//!   (one loses the compare-and-set, re-reads, and finds the node started), and a join fires
//!   once. The write that makes the run terminal enqueues its one `run.completed` message
//!   (`msg_<run>_completed`).
//! - **Advancing in the settlement's own write**: once the server has set a catalog
//!   ([`Predictions::set_catalog`](crate::Predictions::set_catalog)), a node prediction's
//!   status change in a run with few unsettled predictions (at most 8) does the same step
//!   itself, observing only that prediction: the prediction's update, the run record's
//!   compare-and-set and the predictions it starts are one write, and no advance task is
//!   queued. A chain thus costs one write per node and no task claim. A lost compare-and-set
//!   plans again from a fresh read; a refused reservation, or a wide fan-out, falls back to
//!   the advance task above.
//! - **Reconciling** (the same advance with `reconcile`) also re-creates node predictions
//!   that are missing and re-queues jobs of unsettled node predictions that have none; a job
//!   is queued without `replace`, so reconcilers on every node at once queue it once.
//! - **Credits**: creating a run reserves its first stage (every node that depends on no
//!   other node, each item of its fan-out) in the write that creates it, so a run the account
//!   cannot afford to start is refused whole. Later nodes reserve when they start; a node
//!   that cannot be afforded then fails with "insufficient credits", and its `on_failure`
//!   decides what the run does.

mod blueprint;
mod run;
mod service;
pub mod template;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use blueprint::{
    Blueprint, BlueprintError, MAX_NODES, MAX_RETRIES, Node, OnFailure, Shape, is_valid_node_name,
};
pub use run::{ItemRun, MAX_FAN_OUT, NodeRun, NodeStatus, Observed, Plan, Run};
pub(crate) use service::FUSE_AT_MOST;
pub use service::{RunCreation, RunPage, RunRequest, WorkflowPut, run_target};

use crate::credits::Price;
use crate::id::{AccountId, ModelName};
use crate::store::{self, Entity, Key, Kind, Record, decode_json, encode_json};
use crate::time::Timestamp;

/// The topic of run advance tasks on [`Lane::Tasks`](store::Lane::Tasks).
pub const RUN_TOPIC: &str = "workflow";

/// What a run needs to know of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// The version id its predictions record.
    pub version: String,
    /// What one prediction costs (`None`: free).
    pub price: Option<Price>,
}

/// Why a model refused an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputProblem {
    /// The input field at fault, if one is.
    pub field: Option<String>,
    /// Why.
    pub message: String,
}

/// The models a server runs, as workflows see them: implemented by the engine over its model
/// registry.
pub trait Catalog: Send + Sync + fmt::Debug {
    /// The model, if this server runs it.
    fn model(&self, name: &ModelName) -> Option<ModelInfo>;
    /// The input as the model takes it (defaults filled), or why it is refused.
    fn validate(&self, name: &ModelName, input: &Value) -> Result<Value, InputProblem>;
    /// `value` with every output file reference (`/files/<key>`) made an absolute URL that a
    /// model server can fetch: how a node's output reaches the next node's input.
    fn render_files(&self, value: Value) -> Value;
}

/// A stored workflow: the latest version of an account's blueprint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    /// The account it belongs to. The admin's workflows (the operator's) are visible to every
    /// account.
    pub owner: AccountId,
    /// The blueprint.
    pub blueprint: Blueprint,
    /// 1 for the first blueprint; each changed one adds 1.
    pub version: u32,
    /// A digest of the blueprint: an identical one keeps the version.
    pub digest: String,
    /// When version 1 was stored.
    pub created_at: Timestamp,
    /// When this version was stored.
    pub updated_at: Timestamp,
}

impl Workflow {
    /// The record key of `owner`'s workflow `name`.
    pub fn key_of(owner: &AccountId, name: &str) -> Key {
        Key::owned(Kind::Workflow, format!("{owner}/{name}"), owner)
    }
}

impl Entity for Workflow {
    const KIND: Kind = Kind::Workflow;

    fn key(&self) -> Key {
        Self::key_of(&self.owner, &self.blueprint.name)
    }

    fn owner(&self) -> &AccountId {
        &self.owner
    }

    fn to_record(&self) -> store::Result<Record> {
        Ok(Record {
            key: self.key(),
            owner: self.owner.clone(),
            created_at: self.created_at,
            status: None,
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

/// The effect that queues an advance of run `id` (replacing a queued one, and ending the
/// lease of one in progress, so that an advance follows every change).
pub fn advance_task(id: &str, owner: &AccountId, now: Timestamp) -> store::Effect {
    store::Effect::Enqueue(Box::new(store::NewItem::task(
        format!("run:{id}"),
        Run::key_of(id),
        RUN_TOPIC,
        owner,
        id,
        now,
    )))
}

#[cfg(test)]
mod tests;
