//! Augur's core: the prediction domain, its state machine and the storage contract.
//!
//! - [`prediction`]: the stored record and its value types.
//! - [`state`]: the state machine, the only place that decides transitions.
//! - [`store`]: the [`store::Store`] trait every backend implements, its error vocabulary,
//!   [`store::memory::MemoryStore`] and the [`store::metered::MeteredStore`] decorator.
//! - [`service`]: [`service::Predictions`], the operations the API and workers call.
//! - [`hub`]: in-process change notifications.
//! - [`notices`]: the stream events and webhook messages a change makes.
//!
//! This crate does no I/O of its own and names no backend.

pub mod error;
pub mod hub;
pub mod id;
pub mod notices;
pub mod prediction;
pub mod secret;
pub mod service;
pub mod state;
pub mod store;
pub mod time;

pub use error::{Error, Result};
pub use id::{AccountId, InvalidId, LeaseToken, ModelName, PredictionId, WorkerId};
pub use prediction::{Metrics, Prediction, Revision, Versioned, WebhookEvent, WebhookEvents};
pub use secret::Secret;
pub use service::{
    CreateRequest, Creation, Dispatch, Predictions, ServiceConfig, Slot, Transition,
};
pub use state::{Applied, Event, Logs, Status, TransitionError};
pub use time::Timestamp;
