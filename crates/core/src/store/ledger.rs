//! Ledgers: each account's append-only log of credit changes with its running totals, and
//! [`LedgerStore`], which reads them.
//!
//! Entries are posted only as [`Effect::Post`](super::Effect::Post), in the same write as the
//! change they pay for (a prediction's create reserves, its settlement charges or refunds).
//! The backend keeps two totals per account, `balance` (the sum of every entry's `delta`) and
//! `reserved` (the sum of every `held`), and stamps each entry with them as they stand after
//! it, so that `balance = Σ delta` holds at every moment a reader can observe.

use std::fmt;

use async_trait::async_trait;

use super::Result;
use crate::id::AccountId;
use crate::time::Timestamp;

/// Why credits moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Held for a prediction that was created (`held > 0`).
    Reserve,
    /// Spent on a prediction that ran (`delta < 0`, and as much released from the hold).
    Charge,
    /// The part of a hold a prediction did not need.
    Release,
    /// A hold given back whole (the prediction failed or was canceled before it ran).
    Refund,
    /// Credits given by the operator or on sign-up.
    Grant,
    /// Credits bought (a payment provider's paid order).
    Topup,
    /// A correction by the operator (either sign).
    Adjust,
}

impl Reason {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Reserve => "reserve",
            Reason::Charge => "charge",
            Reason::Release => "release",
            Reason::Refund => "refund",
            Reason::Grant => "grant",
            Reason::Topup => "topup",
            Reason::Adjust => "adjust",
        }
    }

    /// The reason with this stored name.
    pub fn parse(name: &str) -> Option<Reason> {
        [
            Reason::Reserve,
            Reason::Charge,
            Reason::Release,
            Reason::Refund,
            Reason::Grant,
            Reason::Topup,
            Reason::Adjust,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)
    }
}

/// A credit change to post.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LedgerEntry {
    /// Whose credits.
    pub account: AccountId,
    /// Unique within the account: an entry whose id was posted before is skipped, so a
    /// repeated top-up credits once.
    pub id: String,
    /// Change of the balance.
    pub delta: i64,
    /// Change of the reserved amount.
    pub held: i64,
    /// Why.
    pub reason: Reason,
    /// What it is for: a prediction id, an order id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// A note from whoever made it (an operator's grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    /// When.
    pub at: Timestamp,
}

impl LedgerEntry {
    /// How the entry changes what the account can spend (`balance - reserved`).
    pub fn available_delta(&self) -> i64 {
        self.delta - self.held
    }
}

/// An account's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Balance {
    /// Credits the account has: the sum of its entries' deltas.
    pub balance: i64,
    /// Credits held for running predictions: the sum of its entries' `held`.
    pub reserved: i64,
}

impl Balance {
    /// What it can spend.
    pub fn available(self) -> i64 {
        self.balance - self.reserved
    }

    /// The totals after `entry`.
    pub fn after(self, entry: &LedgerEntry) -> Balance {
        Balance {
            balance: self.balance + entry.delta,
            reserved: self.reserved + entry.held,
        }
    }
}

/// A posted entry: its place in the account's ledger and the totals after it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Posted {
    /// Its place in the account's ledger, from 1.
    pub seq: u64,
    /// The entry.
    pub entry: LedgerEntry,
    /// The account's totals right after it.
    pub after: Balance,
}

/// Reads ledgers.
#[async_trait]
pub trait LedgerStore: Send + Sync + fmt::Debug + 'static {
    /// An account's totals (zero for an account with no entries).
    ///
    /// # Behavior
    /// - Totals are the sums of the posted entries (`posted_entries_add_up`).
    async fn balance(&self, account: &AccountId) -> Result<Balance>;

    /// An account's entries before `before` (a `seq`; from the newest if `None`), newest
    /// first, at most `limit`.
    ///
    /// # Behavior
    /// - Pages newest first without gaps (`ledger_pages_newest_first`).
    async fn ledger(
        &self,
        account: &AccountId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Posted>>;
}
