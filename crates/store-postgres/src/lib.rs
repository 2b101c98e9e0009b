//! The PostgreSQL store backend: Augur's storage contract on one PostgreSQL database that
//! many nodes share.
#![doc = include_str!("../README.md")]

mod admin;
mod codec;
mod config;
mod error;
mod notify;
mod queue;
mod schema;
mod sql;
mod store;
mod write;

pub use config::{DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, PostgresOptions, SCHEMES};
pub use schema::{MIGRATIONS, Migration};
pub use store::PostgresStore;
