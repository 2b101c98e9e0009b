//! The Cloudflare store backend: Augur's storage contract on Durable Objects, through the
//! Worker in `cloudflare/`, one signed HTTPS request per call.
#![doc = include_str!("../README.md")]

mod changes;
mod client;
mod config;
mod error;
mod sign;
mod store;
mod wire;

pub use config::{
    CloudflareOptions, DEFAULT_NAMESPACE, DEFAULT_POOL, DEFAULT_TIMEOUT, HTTP_SCHEME, SCHEME,
    Secret, redact_url,
};
pub use store::CloudflareStore;
