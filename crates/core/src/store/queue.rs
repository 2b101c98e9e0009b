//! The leased queue: one primitive for jobs, webhook messages and internal work, each in its
//! own [`Lane`], and [`QueueStore`], its claims, leases and outcomes.
//!
//! An item belongs to a record (its *group*): the items of a group go out one at a time, in
//! the order they were queued (a prediction's webhook messages), and are removed with the
//! record. Items are put on the queue only as [`Effect::Enqueue`](super::Effect::Enqueue), in
//! the same write as the change that makes them.
//!
//! Claims are fair across accounts: within a lane and topic (a model), an account's items are
//! served in the order it queued them, and accounts take turns (start-time fair queuing: an
//! item's *rank* is one past the larger of its account's last rank and the rank last claimed,
//! and claims take the lowest ranks first). So one account's ten thousand queued items cannot
//! starve another account's next one.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::{Key, Result};
use crate::id::{AccountId, LeaseToken, WorkerId};
use crate::time::Timestamp;

/// A queue of one kind of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Runs of predictions (one item per prediction; its topic is the model).
    Jobs,
    /// Internal work (settlements, completion checks).
    Tasks,
    /// Outgoing webhook messages (each prediction's in order; kept with their attempts once
    /// finished, as the delivery log).
    Webhooks,
}

impl Lane {
    /// Every lane, in [`Lane::as_str`] order, which is also their `Ord` order.
    pub const ALL: [Lane; 3] = [Lane::Jobs, Lane::Tasks, Lane::Webhooks];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Jobs => "jobs",
            Lane::Webhooks => "webhooks",
            Lane::Tasks => "tasks",
        }
    }

    /// The lane with this stored name.
    pub fn parse(name: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.as_str() == name)
    }

    /// True if finished items stay (with their attempts) until their record's data goes;
    /// false if finishing removes them.
    pub fn keeps_finished(self) -> bool {
        matches!(self, Lane::Webhooks)
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An item to put on a queue ([`super::Effect::Enqueue`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewItem {
    /// The lane.
    pub lane: Lane,
    /// Unique within the lane.
    pub id: String,
    /// The record the item belongs to. A group's pending items are claimable one at a time,
    /// oldest first; deleting the record removes them, and its expiry removes the finished
    /// ones.
    pub group: Key,
    /// What claims may skip ([`ClaimRequest::exclude_topics`]) and the scope of fairness: the
    /// model, for jobs.
    pub topic: String,
    /// The account: the write's.
    pub owner: AccountId,
    /// What the consumer needs (JSON; the store never reads it).
    pub payload: String,
    /// Not claimable before this time.
    pub run_at: Timestamp,
    /// An item with this id already in the lane is replaced (it leaves its group, its lease
    /// ends) if true; if false this one is dropped and the other kept.
    pub replace: bool,
    /// Queue it already claimed, under this lease (its first attempt): the node that creates a
    /// prediction runs it at once this way. If that node dies, the lease lapses and the item
    /// is claimable like any other.
    pub claimed: Option<Claim>,
}

impl NewItem {
    /// An internal task on [`Lane::Tasks`] about the record `group`, due `run_at`, whose
    /// payload names `target` (a JSON string): it replaces a queued task with the same `id`
    /// and ends the lease of one in progress, so a change always gets a run of the task after
    /// it ([`NewItem::task_target`] reads the target back).
    pub fn task(
        id: String,
        group: Key,
        topic: &str,
        owner: &AccountId,
        target: &str,
        run_at: Timestamp,
    ) -> NewItem {
        NewItem {
            lane: Lane::Tasks,
            id,
            group,
            topic: topic.to_owned(),
            owner: owner.clone(),
            payload: serde_json::Value::String(target.to_owned()).to_string(),
            run_at,
            replace: true,
            claimed: None,
        }
    }

    /// The target a [`NewItem::task`]'s payload names.
    pub fn task_target(payload: &str) -> Option<String> {
        serde_json::from_str::<String>(payload).ok()
    }
}

/// A lease given with [`NewItem::claimed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Who holds it.
    pub worker: WorkerId,
    /// Its token.
    pub token: LeaseToken,
    /// When it lapses unless renewed.
    pub expires_at: Timestamp,
}

/// Where an item stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Waiting to be claimed, or claimed.
    Pending,
    /// Finished (kept only in lanes that keep finished items).
    Done,
    /// Given up.
    Failed,
}

impl ItemStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Done => "done",
            ItemStatus::Failed => "failed",
        }
    }

    /// The status with this stored name.
    pub fn parse(name: &str) -> Option<ItemStatus> {
        [ItemStatus::Pending, ItemStatus::Done, ItemStatus::Failed]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// One recorded try at an item (a webhook delivery attempt).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// When it started.
    pub at: Timestamp,
    /// The HTTP status the receiver answered, if it answered.
    pub status: Option<u16>,
    /// What went wrong, if anything did.
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// An item as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The lane.
    pub lane: Lane,
    /// Unique within the lane.
    pub id: String,
    /// The record it belongs to.
    pub group: Key,
    /// Its topic.
    pub topic: String,
    /// Its account.
    pub owner: AccountId,
    /// Its payload.
    pub payload: String,
    /// Its place in its group, from 1, in the order queued.
    pub seq: u64,
    /// Where it stands.
    pub status: ItemStatus,
    /// How many times it was claimed (hand-backs with [`Outcome::Release`] excluded), this
    /// claim included.
    pub claims: u32,
    /// The attempts recorded by [`Finish::attempt`], oldest first.
    pub attempts: Vec<Attempt>,
    /// While pending, when it may next be claimed (a lease aside); `None` once finished.
    pub due_at: Option<Timestamp>,
    /// When it was queued.
    pub created_at: Timestamp,
}

/// A claimed item and the lease that makes the claim exclusive until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemLease {
    /// The item, as claimed.
    pub item: Item,
    /// Who holds it.
    pub worker: WorkerId,
    /// Proof of holding it.
    pub token: LeaseToken,
    /// When the lease lapses and the item becomes claimable again.
    pub expires_at: Timestamp,
}

/// The arguments of [`QueueStore::claim`].
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    /// Which lane.
    pub lane: Lane,
    /// Who claims.
    pub worker: WorkerId,
    /// How long the lease lasts unless renewed.
    pub lease_for: Duration,
    /// At most this many items.
    pub max: usize,
    /// Skip items of these topics (models at their concurrency limit).
    pub exclude_topics: Vec<String>,
}

/// How a claimed item ended, for [`QueueStore::finish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    /// What follows.
    pub outcome: Outcome,
    /// The attempt to record, if the lane keeps a history.
    pub attempt: Option<Attempt>,
}

/// What happens to a claimed item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It is done: removed, or kept as [`ItemStatus::Done`] in lanes that keep finished items;
    /// its group's next item may go.
    Done,
    /// Claimable again from this time; the claim counts as an attempt.
    Retry(Timestamp),
    /// Handed back for later, claimable again from this time (an asynchronous run to check
    /// on, a model server at capacity, a task not due yet); the claim does not count. The
    /// item keeps the place its claim took in its topic's fair order.
    Release(Timestamp),
    /// Handed back to the queue at once (a claim beyond a model's limit, a graceful
    /// shutdown): claimable again now, the claim does not count, and the place its claim took
    /// goes back too: its topic's fair-queuing clock is lowered below the item's rank, so a
    /// newcomer is not ranked behind an item nobody kept.
    HandBack,
    /// Given up: [`ItemStatus::Failed`] (or removed, in lanes that keep nothing); with `rest`,
    /// the group's later pending items too.
    GiveUp {
        /// Fail the group's later pending items as well.
        rest: bool,
    },
}

/// Item counts of a lane, for metrics and back-pressure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Claimable now.
    pub ready: u64,
    /// Claimed under a live lease.
    pub leased: u64,
    /// Pending but not claimable now: due later, or waiting behind their group's head.
    pub delayed: u64,
}

/// The leased queue.
#[async_trait]
pub trait QueueStore: Send + Sync + fmt::Debug + 'static {
    /// Claims up to `max` claimable items of a lane under a new lease each, lowest rank first.
    ///
    /// An item is claimable when it is pending, due, the oldest pending item of its group, not
    /// under a live lease, and not of an excluded topic. Claiming counts a claim.
    ///
    /// # Behavior
    /// - A claimed item is not claimable again until its lease lapses, then its claims count
    ///   on (`claim_is_exclusive_until_lease_expires`).
    /// - Items wait for their `run_at` (`claim_respects_run_at`).
    /// - An account's items go in the order queued and accounts take turns
    ///   (`claims_are_fair_across_accounts`); items handed back at once give back the place
    ///   their claim took in that turn ([`Outcome::HandBack`], `a_hand_back_gives_the_clock_back`;
    ///   handed back for later, they keep it: `a_hand_back_for_later_keeps_the_clock`).
    /// - Excluded topics are skipped (`claim_skips_excluded_topics`).
    /// - A group's items go one at a time in order (`groups_go_out_in_order`).
    /// - Concurrent claimers get each item once (`concurrent_claims_take_each_item_once`,
    ///   `concurrent_claims_of_groups_deliver_each_once`).
    /// - Lanes are separate (`lanes_are_separate`).
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ItemLease>>;

    /// Extends a live lease to `now + extend_by`.
    ///
    /// # Behavior
    /// - Extends (`renew_extends_the_lease`); fails with [`super::Error::LeaseLost`] once the
    ///   item was finished, removed, or claimed by someone else
    ///   (`renew_fails_after_lease_is_lost`), or once the lease lapsed even if nobody claimed
    ///   it since (`lapsed_leases_are_lost_even_when_unclaimed`).
    async fn renew(&self, lease: &ItemLease, extend_by: Duration) -> Result<ItemLease>;

    /// Ends a lease with an outcome, recording the attempt if one is given. In a lane that
    /// keeps finished items, an item finished after its record's data was removed (or the
    /// record deleted) is dropped instead of kept.
    ///
    /// # Behavior
    /// - Needs the current, live lease ([`super::Error::LeaseLost`] otherwise)
    ///   (`finishing_needs_the_current_lease`, `lapsed_leases_are_lost_even_when_unclaimed`).
    /// - `Retry` keeps the claim count and reschedules (`retry_reschedules`); `Release` hands
    ///   it back uncounted (`release_refunds_the_claim`); `Done` removes or keeps it
    ///   (`done_removes_or_keeps_by_lane`); `GiveUp` fails it and with `rest` the group's later
    ///   items (`attempts_are_recorded_and_outcomes_applied`).
    async fn finish(&self, lease: &ItemLease, finish: &Finish) -> Result<()>;

    /// A group's items in a lane, in order, pending and finished.
    async fn items(&self, lane: Lane, group: &Key) -> Result<Vec<Item>>;

    /// Makes an item pending again and due now, keeping its place, claims and attempts (a
    /// manual redelivery).
    ///
    /// # Behavior
    /// - An unknown item is [`super::Error::NotFound`] (`requeue_makes_an_item_pending_again`).
    async fn requeue(&self, lane: Lane, group: &Key, id: &str) -> Result<()>;

    /// Counts a lane's pending items by state.
    ///
    /// # Behavior
    /// - Reflects ready, leased and delayed items (`queue_stats_counts_items`).
    async fn queue_stats(&self, lane: Lane) -> Result<QueueStats>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_names_round_trip_in_ord_order() {
        let mut by_name = Lane::ALL;
        by_name.sort_by_key(|l| l.as_str());
        let mut by_ord = Lane::ALL;
        by_ord.sort();
        assert_eq!((by_name, by_ord), (Lane::ALL, Lane::ALL));
        for l in Lane::ALL {
            assert_eq!(Lane::parse(l.as_str()), Some(l));
        }
    }
}
