//! Credits: model prices, the hold a prediction carries, how it settles, and [`Credits`], the
//! operations on balances (reads, grants, adjustments, top-ups).
//!
//! Money moves only as ledger entries ([`crate::store::Effect::Post`]) committed in the same
//! write as what they pay for:
//!
//! - create: `reserve` holds the price's most (`held = +R`, the balance unchanged), refused
//!   with [`crate::Error::InsufficientCredits`] if the account cannot afford it;
//! - settle ([`settlement`]), in the write that makes the prediction terminal, which happens
//!   once: `charge` spends what it cost (`delta = held = -C`) and `release` hands back the
//!   rest of the hold; or `refund` hands the whole hold back.
//!
//! Entry ids are `<reason>:<prediction id>` (or `topup:<order id>`), and a backend skips an
//! entry whose id it posted before, so a repeated write cannot move credits twice.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::AccountId;
use crate::prediction::Prediction;
use crate::state::Status;
use crate::store::{self, Balance, DynStore, Effect, LedgerEntry, Posted, Reason, Write};
use crate::time::Timestamp;

/// What a model costs, in whole credits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Price {
    /// The same for every prediction.
    PerPrediction {
        /// Credits per prediction.
        per_prediction: i64,
    },
    /// By run time: `per_second` for every second (or part of one) of `metrics.predict_time`,
    /// at most `max_seconds` of them, which is what a create reserves.
    PerSecond {
        /// Credits per second of run time.
        per_second: i64,
        /// The longest run paid for; a create reserves `per_second * max_seconds`.
        max_seconds: u32,
    },
}

impl Price {
    /// Checks that the price is usable: positive amounts, a reserve that fits.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match *self {
            Price::PerPrediction { per_prediction } if per_prediction < 0 => {
                Err("per_prediction must not be negative".into())
            }
            Price::PerSecond {
                per_second,
                max_seconds,
            } if per_second < 0 || max_seconds == 0 => {
                Err("per_second must not be negative and max_seconds must be at least 1".into())
            }
            Price::PerSecond {
                per_second,
                max_seconds,
            } if per_second.checked_mul(i64::from(max_seconds)).is_none() => {
                Err("per_second * max_seconds is too large".into())
            }
            _ => Ok(()),
        }
    }

    /// What a create reserves: the most a prediction can cost.
    pub fn reserve(&self) -> i64 {
        match *self {
            Price::PerPrediction { per_prediction } => per_prediction,
            Price::PerSecond {
                per_second,
                max_seconds,
            } => per_second.saturating_mul(i64::from(max_seconds)),
        }
    }

    /// What a run of `seconds` costs: every started second is paid, up to the reserve. A
    /// per-prediction price costs the same whatever the time.
    pub fn cost(&self, seconds: f64) -> i64 {
        match *self {
            Price::PerPrediction { per_prediction } => per_prediction,
            Price::PerSecond {
                per_second,
                max_seconds,
            } => {
                let seconds = if seconds.is_finite() {
                    seconds.max(0.0)
                } else {
                    0.0
                };
                let paid = (seconds.ceil() as i64).min(i64::from(max_seconds));
                per_second.saturating_mul(paid)
            }
        }
    }
}

/// The credits a prediction holds: set at create, settled once when it becomes terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The price it was created at.
    pub price: Price,
    /// What its create reserved.
    pub reserved: i64,
    /// What it cost, once settled: the credits its `charge` entry spent (0 for a refund).
    /// Set in the write that settles it, so a reader sees the cost without the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged: Option<i64>,
}

impl Hold {
    /// The hold a create at `price` takes: the price's most, not yet settled.
    pub fn new(price: Price) -> Self {
        Self {
            price,
            reserved: price.reserve(),
            charged: None,
        }
    }
}

/// What a prediction canceled after it started costs (Replicate charges the time it ran).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanceledAfterStart {
    /// Charge the run time until the cancel, as for a success (Replicate's rule; the default).
    #[default]
    Charge,
    /// Refund it whole.
    Refund,
}

/// The entry a create posts: the hold, in the owner's ledger.
pub fn reserve(prediction: &Prediction, hold: &Hold, at: Timestamp) -> LedgerEntry {
    entry(prediction, Reason::Reserve, 0, hold.reserved, at)
}

/// The seconds a settled prediction ran: `metrics.predict_time`, else from start to
/// completion, else none.
pub fn run_seconds(prediction: &Prediction) -> f64 {
    if let Some(t) = prediction.metrics.predict_time {
        return t;
    }
    match (prediction.started_at, prediction.completed_at) {
        (Some(start), Some(end)) => end.since(start).as_secs_f64(),
        _ => 0.0,
    }
}

/// The entries that settle `prediction`'s hold, given that it just became terminal: a charge
/// and a release of the rest (succeeded, or canceled after it started under
/// [`CanceledAfterStart::Charge`]), or a refund (failed, canceled before it started).
pub fn settlement(
    prediction: &Prediction,
    hold: &Hold,
    canceled_after_start: CanceledAfterStart,
    at: Timestamp,
) -> Vec<LedgerEntry> {
    let charged = match prediction.status {
        Status::Succeeded => true,
        Status::Canceled => {
            prediction.started_at.is_some() && canceled_after_start == CanceledAfterStart::Charge
        }
        Status::Failed | Status::Starting | Status::Processing => false,
    };
    let cost = if charged {
        hold.price.cost(run_seconds(prediction)).min(hold.reserved)
    } else {
        0
    };
    let mut entries = Vec::with_capacity(2);
    if cost > 0 {
        entries.push(entry(prediction, Reason::Charge, -cost, -cost, at));
    }
    let rest = hold.reserved - cost;
    if rest > 0 {
        let reason = if charged {
            Reason::Release
        } else {
            Reason::Refund
        };
        entries.push(entry(prediction, reason, 0, -rest, at));
    }
    entries
}

fn entry(
    prediction: &Prediction,
    reason: Reason,
    delta: i64,
    held: i64,
    at: Timestamp,
) -> LedgerEntry {
    LedgerEntry {
        account: prediction.owner.clone(),
        id: format!("{}:{}", reason.as_str(), prediction.id),
        delta,
        held,
        reason,
        reference: Some(prediction.id.to_string()),
        memo: None,
        at,
    }
}

/// An account's credits as clients see them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditSummary {
    /// Credits the account has.
    pub balance: i64,
    /// Credits held for predictions that have not settled.
    pub reserved: i64,
    /// What it can spend: `balance - reserved`.
    pub available: i64,
}

impl From<Balance> for CreditSummary {
    fn from(b: Balance) -> Self {
        Self {
            balance: b.balance,
            reserved: b.reserved,
            available: b.available(),
        }
    }
}

/// What [`Credits::post`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Posting {
    /// The entry was posted.
    Posted,
    /// An entry with its id was posted before; nothing changed.
    Repeated,
}

/// Balances and ledgers, and the credit changes that do not come from predictions (grants,
/// adjustments, top-ups). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Credits {
    store: DynStore,
}

/// The longest memo kept on an entry.
pub const MAX_MEMO_CHARS: usize = 200;

impl Credits {
    /// Credits over `store`.
    pub fn new(store: DynStore) -> Self {
        Self { store }
    }

    /// An account's totals.
    pub async fn balance(&self, account: &AccountId) -> Result<CreditSummary> {
        Ok(self.store.balance(account).await?.into())
    }

    /// An account's entries before `before` (a `seq`), newest first.
    pub async fn ledger(
        &self,
        account: &AccountId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Posted>> {
        Ok(self.store.ledger(account, before, limit.max(1)).await?)
    }

    /// Posts a grant (`amount > 0`) or an adjustment (either sign) by the operator. `id`
    /// makes it idempotent (a repeat with the same id changes nothing); without one, a fresh
    /// id is used. An adjustment that would leave less than nothing available is refused with
    /// [`Error::InsufficientCredits`].
    pub async fn post(
        &self,
        account: &AccountId,
        reason: Reason,
        amount: i64,
        id: Option<String>,
        memo: Option<String>,
    ) -> Result<Posting> {
        let id = id.unwrap_or_else(|| {
            format!(
                "{}:{}",
                reason.as_str(),
                ulid::Ulid::new().to_string().to_ascii_lowercase()
            )
        });
        let entry = LedgerEntry {
            account: account.clone(),
            id,
            delta: amount,
            held: 0,
            reason,
            reference: None,
            memo: memo.map(|m| m.chars().take(MAX_MEMO_CHARS).collect()),
            at: Timestamp::now(),
        };
        self.post_entry(entry).await
    }

    /// Credits a paid order once, however often it is delivered: the entry's id is
    /// `topup:<order>`.
    pub async fn topup(&self, account: &AccountId, order: &str, credits: i64) -> Result<Posting> {
        let entry = LedgerEntry {
            account: account.clone(),
            id: format!("topup:{order}"),
            delta: credits,
            held: 0,
            reason: Reason::Topup,
            reference: Some(order.to_owned()),
            memo: None,
            at: Timestamp::now(),
        };
        self.post_entry(entry).await
    }

    async fn post_entry(&self, entry: LedgerEntry) -> Result<Posting> {
        let account = entry.account.clone();
        let amount = -entry.available_delta();
        let write = Write::new(account.clone()).effects([Effect::Post(Box::new(entry))]);
        match self.store.write(&write).await {
            Ok(written) if written.skipped_entries.is_empty() => Ok(Posting::Posted),
            Ok(_) => Ok(Posting::Repeated),
            Err(store::Error::InsufficientCredits { available, .. }) => {
                Err(Error::InsufficientCredits {
                    account,
                    available,
                    price: amount,
                    model: None,
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// How long a rotated-out webhook secret keeps signing beside the new one.
pub const RETIRING_SECRET_GRACE: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{ModelName, PredictionId};
    use proptest::prelude::*;
    use serde_json::json;

    fn prediction(status: Status, started: bool, predict_time: Option<f64>) -> Prediction {
        let mut p = Prediction::new(
            PredictionId::parse("p1").unwrap(),
            AccountId::parse("alice").unwrap(),
            ModelName::parse("augur/echo").unwrap(),
            "v1".into(),
            json!({}),
        );
        p.status = status;
        if started {
            p.started_at = Some(p.created_at);
        }
        p.metrics.predict_time = predict_time;
        p
    }

    fn per_second(per_second: i64, max_seconds: u32) -> Hold {
        let price = Price::PerSecond {
            per_second,
            max_seconds,
        };
        Hold::new(price)
    }

    fn amounts(entries: &[LedgerEntry]) -> Vec<(Reason, i64, i64)> {
        entries
            .iter()
            .map(|e| (e.reason, e.delta, e.held))
            .collect()
    }

    #[test]
    fn prices_parse_from_config_shapes() {
        let p: Price = serde_json::from_value(json!({"per_prediction": 3})).unwrap();
        assert_eq!(p, Price::PerPrediction { per_prediction: 3 });
        let p: Price = serde_json::from_value(json!({"per_second": 2, "max_seconds": 60})).unwrap();
        assert_eq!(p.reserve(), 120);
        assert!(serde_json::from_value::<Price>(json!({"per_minute": 2})).is_err());
        assert!(
            Price::PerSecond {
                per_second: 1,
                max_seconds: 0
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn a_success_charges_started_seconds_and_releases_the_rest() {
        let hold = per_second(2, 60);
        let p = prediction(Status::Succeeded, true, Some(4.2));
        let e = settlement(&p, &hold, CanceledAfterStart::Charge, p.created_at);
        assert_eq!(
            amounts(&e),
            [(Reason::Charge, -10, -10), (Reason::Release, 0, -110)]
        );
        assert_eq!(e[0].id, "charge:p1");
    }

    #[test]
    fn a_run_past_its_limit_costs_the_reserve_and_releases_nothing() {
        let hold = per_second(2, 60);
        let p = prediction(Status::Succeeded, true, Some(999.0));
        let e = settlement(&p, &hold, CanceledAfterStart::Charge, p.created_at);
        assert_eq!(amounts(&e), [(Reason::Charge, -120, -120)]);
    }

    #[test]
    fn failures_and_early_cancels_refund_whole() {
        let hold = Hold::new(Price::PerPrediction { per_prediction: 5 });
        for p in [
            prediction(Status::Failed, true, Some(3.0)),
            prediction(Status::Canceled, false, None),
        ] {
            let e = settlement(&p, &hold, CanceledAfterStart::Charge, p.created_at);
            assert_eq!(amounts(&e), [(Reason::Refund, 0, -5)]);
        }
    }

    #[test]
    fn a_cancel_after_start_follows_the_policy() {
        let hold = per_second(1, 10);
        let p = prediction(Status::Canceled, true, Some(2.5));
        let charged = settlement(&p, &hold, CanceledAfterStart::Charge, p.created_at);
        assert_eq!(
            amounts(&charged),
            [(Reason::Charge, -3, -3), (Reason::Release, 0, -7)]
        );
        let refunded = settlement(&p, &hold, CanceledAfterStart::Refund, p.created_at);
        assert_eq!(amounts(&refunded), [(Reason::Refund, 0, -10)]);
    }

    proptest! {
        /// Whatever happens, a settlement releases exactly what was held and never charges
        /// more than it.
        #[test]
        fn settlements_release_exactly_the_hold(
            per in 0i64..1000,
            max in 1u32..3600,
            seconds in proptest::option::of(-10.0f64..10_000.0),
            status in prop::sample::select(vec![Status::Succeeded, Status::Failed, Status::Canceled]),
            started: bool,
            refund_cancels: bool,
        ) {
            let hold = per_second(per, max);
            let p = prediction(status, started, seconds);
            let policy = if refund_cancels { CanceledAfterStart::Refund } else { CanceledAfterStart::Charge };
            let e = settlement(&p, &hold, policy, p.created_at);
            let held: i64 = e.iter().map(|e| e.held).sum();
            let spent: i64 = e.iter().map(|e| -e.delta).sum();
            prop_assert_eq!(held, -hold.reserved);
            prop_assert!((0..=hold.reserved).contains(&spent));
            prop_assert!(e.iter().all(|e| e.available_delta() >= 0));
        }
    }
}
