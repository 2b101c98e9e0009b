//! The Redis store backend: Augur's storage contract on Redis, Redis Cluster or Valkey, one
//! Lua script per operation.
#![doc = include_str!("../README.md")]

mod admin;
mod changes;
mod codec;
mod config;
mod conn;
mod error;
mod events;
mod layout;
mod queue;
mod scripts;
mod store;

pub use config::{CLUSTER_SCHEME, DEFAULT_PREFIX, DEFAULT_TIMEOUT, RedisOptions, SCHEME, Topology};
pub use store::RedisStore;
