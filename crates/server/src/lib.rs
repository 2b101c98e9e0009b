//! The `augur` binary's library half: configuration, backend selection, server wiring and the
//! client commands. `main.rs` only parses the command line.

pub mod backend;
pub mod cli;
pub mod config;
pub mod http;
pub mod migrate;
pub mod models;
pub mod server;
pub mod workflows;

pub use config::Config;
pub use server::serve;
