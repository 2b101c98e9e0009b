//! [`Effect`]: what a write does besides writing records, committed in the same atomic step.
//!
//! The enum is exhaustive on purpose: a new effect makes the compiler name every backend that
//! must learn to apply it.

use super::{Key, Lane, LedgerEntry, NewItem, StreamEventData};

/// A side effect of a [`super::Write`], applied in the same atomic step as its operations.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Put an item on a queue ([`NewItem::replace`] says what happens to an item with the same
    /// id already there).
    Enqueue(Box<NewItem>),
    /// Remove an item, whoever holds its lease; a missing item is not an error.
    Complete {
        /// Its lane.
        lane: Lane,
        /// Its id.
        id: String,
    },
    /// Add `delta` to the durable counter `name`. With a `limit`, a positive `delta` that would
    /// take the counter above it fails the write with [`super::Error::LimitReached`]; a limited
    /// counter must only ever change in writes of one account (see
    /// [`crate::service::counters::per_account`]), whose partition holds it.
    Count {
        /// Its name, e.g. `predictions_settled_total`.
        name: String,
        /// Amount to add.
        delta: i64,
        /// The most it may reach through a positive `delta`.
        limit: Option<i64>,
    },
    /// Append events to the log of `stream`, a record the write inserts or updates. They are
    /// numbered `(that record's revision after the write, index)`, the index counting across
    /// all the write's `AppendEvents` for the record.
    AppendEvents {
        /// The record whose log it is.
        stream: Key,
        /// The events, in order.
        events: Vec<StreamEventData>,
    },
    /// Post a ledger entry (skipped if its id was posted before, and reported in
    /// [`super::Written::skipped_entries`]). An entry that lowers what the account can spend
    /// fails the write with [`super::Error::InsufficientCredits`] if `balance - reserved`
    /// would go below zero.
    Post(Box<LedgerEntry>),
}

impl Effect {
    /// Shorthand for an unlimited [`Effect::Count`].
    pub fn count(name: impl Into<String>, delta: i64) -> Self {
        Effect::Count {
            name: name.into(),
            delta,
            limit: None,
        }
    }

    /// True if applying it queues claimable work (announced as [`super::Change::Work`]).
    pub fn queues_work(&self) -> Option<Lane> {
        match self {
            Effect::Enqueue(item) if item.claimed.is_none() => Some(item.lane),
            _ => None,
        }
    }
}
