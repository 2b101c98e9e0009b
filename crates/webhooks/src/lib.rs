//! Augur's outgoing webhooks: Standard Webhooks signatures and the dispatcher that drains the
//! durable outbox.
//!
//! - [`WebhookSecret`]: the `whsec_…` signing secret; [`WebhookSecret::sign`] makes the
//!   `webhook-signature` header, [`WebhookSecret::verify`] checks one.
//! - [`Signers`]: which secrets sign a message: [`AccountSigners`] signs with its owner's
//!   own (current and retiring), or the server's for the admin's predictions.
//! - [`Dispatcher`]: claims messages from [`augur_core::store::Store`]'s outbox, POSTs them
//!   signed, and records every attempt and its outcome. [`DispatcherHandle::wake`] nudges it
//!   after a commit that enqueued a message. It reaches only the destinations its
//!   [`augur_outbound::Policy`] permits (`DispatcherOptions::destinations`), checked when it
//!   connects, and records only coarse errors.
//! - [`classify`] and [`Backoff`]: what a receiver's answer means, and when to try again.
//!
//! Messages are put in the outbox by the service, in the same commit as the transition they
//! announce (an [`augur_core::store::Effect::Enqueue`] on the webhooks lane); this crate only sends them.
//!
//! Metrics: `augur_webhook_attempts_total{outcome="delivered|retried|dropped|gave_up"}` and
//! `augur_webhook_delivery_latency_seconds` (from enqueue to the receiver's 2xx).

mod dispatcher;
mod policy;
mod secret;
mod signers;

pub use dispatcher::{Dispatcher, DispatcherHandle, DispatcherOptions, Error, Render};
pub use policy::{Backoff, Verdict, classify};
pub use secret::{MAX_KEY_BYTES, MIN_KEY_BYTES, SecretError, WebhookSecret};
pub use signers::{AccountSigners, Signers, signature_header};
