//! Augur's execution engine: what runs predictions.
//!
//! - [`provider`]: the [`provider::Provider`] trait every model adapter implements.
//! - [`models`]: the [`models::ModelRegistry`] of models this server runs, with their limits.
//! - [`builtin`]: `augur/demo-image` and `augur/echo`.
//! - [`cog`]: the [`cog::CogProvider`] for models served by Cog model servers (coglet), and
//!   the [`cog::CogHooks`] they call back (webhooks, file uploads).
//! - [`command`]: the [`command::CommandProvider`] for models that are local programs, run
//!   once per prediction.
//! - [`replicate`]: the [`replicate::ReplicateProvider`] for models run by an upstream
//!   Replicate-compatible API (Replicate itself, or another Augur), and the
//!   [`replicate::ReplicateHooks`] its webhooks reach.
//! - [`worker`]: the [`worker::Worker`] pool that claims jobs, runs providers and settles
//!   predictions through [`augur_core::Predictions`].
//! - [`files`]: [`files::OutputFiles`], output files in the operator's object storage.
//! - [`sweeper`] applies retention.
//! - [`tasks`]: the [`tasks::TaskLoop`] that tallies batches and advances and reconciles
//!   workflow runs, each completed once; [`workflows`]: the models as runs see them.
//! - [`changes`] brings other nodes' writes into this process (cache, waiters, workers).
//!
//! The engine never names a store backend: it works through `augur_core`'s contract.

pub mod builtin;
mod callback;
pub mod changes;
pub mod cog;
pub mod command;
pub mod files;
pub mod models;
pub mod provider;
pub mod replicate;
pub mod sweeper;
pub mod tasks;
pub mod worker;
pub mod workflows;

pub use changes::ChangeListener;
pub use files::{FileInputs, ImportError, OutputFiles, ResolvedInput, UrlImportLimits};
pub use models::{Model, ModelRegistry, ModelSettings};
pub use provider::{InputError, Outcome, Progress, Provider, ProviderError, RunContext};
pub use sweeper::Sweeper;
pub use tasks::{TaskLoop, TaskLoopOptions};
pub use worker::{RetryPolicy, Worker, WorkerOptions};
pub use workflows::ModelCatalog;
