//! Event logs: each record's durable, ordered log of stream events, and [`EventStore`], which
//! reads them.
//!
//! Events are appended only as [`Effect::AppendEvents`](super::Effect::AppendEvents), in the
//! same write as the record change they describe, and numbered by that write: `(revision of
//! the record after the write, index among the write's events)`. They go with the record's
//! data (retention) or the record (delete).

use std::fmt;

use async_trait::async_trait;

use super::{Key, Result};
use crate::prediction::Revision;

/// What a stream event says, before the write that appends it numbers it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamEventData {
    /// The event's name.
    pub kind: StreamEventKind,
    /// Its data (text; Replicate's clients read `output` data as raw text).
    pub data: String,
}

/// The event names of Replicate's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamEventKind {
    /// New output (a token, an item, a URL).
    Output,
    /// New log lines.
    Logs,
    /// The prediction failed; the data is the error.
    Error,
    /// The prediction settled; the stream ends.
    Done,
}

impl StreamEventKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamEventKind::Output => "output",
            StreamEventKind::Logs => "logs",
            StreamEventKind::Error => "error",
            StreamEventKind::Done => "done",
        }
    }

    /// The kind with this wire name.
    pub fn parse(name: &str) -> Option<StreamEventKind> {
        [
            StreamEventKind::Output,
            StreamEventKind::Logs,
            StreamEventKind::Error,
            StreamEventKind::Done,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// An event of a record's log. Its position `(revision, index)` is unique and increasing
/// within the record, and is the stream's `id:`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamEvent {
    /// The record's revision after the write that appended it.
    pub revision: Revision,
    /// Its place among that write's events.
    pub index: u32,
    /// What it says.
    #[serde(flatten)]
    pub event: StreamEventData,
}

/// Reads event logs.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug + 'static {
    /// The record's events after position `after` (all if `None`), in order, at most `limit`.
    ///
    /// # Behavior
    /// - Events read back in `(revision, index)` order, resumable from any position, and a
    ///   refused write appends none (`events_are_appended_with_their_write_and_resumable`).
    /// - Retention and delete remove them (`expiry_and_delete_remove_events_and_items`).
    async fn read_events(
        &self,
        stream: &Key,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> Result<Vec<StreamEvent>>;
}
