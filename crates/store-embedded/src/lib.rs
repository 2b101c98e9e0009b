//! The embedded store backend: Augur's storage contract on one SQLite database in a local
//! directory, with group commit.
#![doc = include_str!("../README.md")]

mod config;
mod error;
mod ops;
mod queue;
mod readers;
mod schema;
mod store;
mod transfer;
mod upgrade;
mod writer;

pub use config::{DATABASE_FILE, EmbeddedOptions, LOCK_FILE, SCHEME, SyncMode};
pub use store::{CommitStats, EmbeddedStore};
