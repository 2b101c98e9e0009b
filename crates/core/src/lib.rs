//! Augur's core: the prediction domain, its state machine and the storage contract.
//!
//! - [`prediction`]: the stored record and its value types.
//! - [`state`]: the state machine, the only place that decides transitions.
//! - [`store`]: the storage contract every backend implements ([`store::Store`] and its parts),
//!   its error vocabulary, [`store::memory::MemoryStore`] and the decorators.
//! - [`service`]: [`service::Predictions`], the operations the API and workers call, and the
//!   handles they reach the store through: [`jobs::Jobs`], [`outbox::Outbox`], [`ops::Ops`].
//! - [`account`], [`accounts`]: accounts and API tokens, and the service over them.
//! - [`credits`]: prices, holds, settlements and the credit operations.
//! - [`idempotency`]: idempotency keys as records.
//! - [`mod@file`]: uploaded files' metadata as records, and the [`file::Files`] handle.
//! - [`output`]: output files as `/files/<key>` references in stored outputs, rendered as
//!   absolute URLs for clients.
//! - [`hub`]: in-process change notifications.
//! - [`notices`]: the stream events and webhook messages a change makes.
//! - [`whole`]: whole numbers read from JSON as JSON Schema reads them (`2.0` is `2`).
//!
//! This crate does no I/O of its own and names no backend.

pub mod account;
pub mod accounts;
pub mod batch;
pub mod credits;
pub mod deployment;
pub mod error;
pub mod file;
pub mod hub;
pub mod id;
pub mod idempotency;
pub mod jobs;
pub mod json_shape;
pub mod node;
pub mod notices;
pub mod ops;
pub mod outbox;
pub mod output;
pub mod percent;
pub mod prediction;
pub mod redact;
pub mod secret;
pub mod service;
pub mod state;
pub mod store;
pub mod time;
pub mod whole;
pub mod workflow;

pub use accounts::{Accounts, AccountsConfig, Caller};
pub use credits::{CanceledAfterStart, Credits, Price};
pub use error::{Error, Result};
pub use id::{AccountId, InvalidId, LeaseToken, ModelName, PredictionId, WorkerId};
pub use prediction::{Metrics, Prediction, Revision, Versioned, WebhookEvent, WebhookEvents};
pub use secret::Secret;
pub use service::{
    CreateRequest, Creation, Dispatch, Expired, PredictionPage, PredictionQuery, Predictions,
    ServiceConfig, Slot, Transition,
};
pub use state::{Applied, Event, Logs, Status, TransitionError};
pub use time::Timestamp;

/// What [`forward_store!`] needs from this crate's dependencies.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
}
