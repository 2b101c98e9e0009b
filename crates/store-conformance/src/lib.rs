//! The storage contract's conformance suite: one named test per promise of
//! [`augur_core::store::Store`] (each trait method's `# Behavior` bullets name them), run
//! against every backend.
//!
//! Each test is a plain `pub async fn name(store: DynStore)` that pins one property (its doc
//! line says which). [`conformance_suite!`] turns all of them into `#[tokio::test]`s for a
//! backend, given a setup function that returns a fresh, empty store (its own namespace) or
//! `None` when the backend's server is not configured. Use [`skip_unless_configured`] in setup
//! functions: with `AUGUR_STORE_TESTS_REQUIRED=1` a missing server fails instead of skipping.
//!
//! ```ignore
//! async fn setup() -> Option<DynStore> { Some(Arc::new(MemoryStore::new())) }
//! augur_store_conformance::conformance_suite!(setup);
//! ```

mod changes;
mod credits;
mod deployments;
mod files;
pub mod fixtures;
mod ledger;
mod outbox;
mod queue;
mod records;
mod workflows;

pub use changes::*;
pub use credits::*;
pub use deployments::*;
pub use files::*;
pub use ledger::*;
pub use outbox::*;
pub use queue::*;
pub use records::*;
pub use workflows::*;

/// Decides what a setup function does when its backend's URL variable is unset: returns the
/// URL if set; otherwise panics when `AUGUR_STORE_TESTS_REQUIRED=1`, or prints why it skips
/// and returns `None`.
pub fn skip_unless_configured(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let required = std::env::var("AUGUR_STORE_TESTS_REQUIRED").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{var} is not set and AUGUR_STORE_TESTS_REQUIRED=1: the backend's server is missing"
            );
            eprintln!("skipping: set {var} to run this backend's conformance tests");
            None
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance test, each calling `$setup().await` for a
/// fresh store and returning early (a skip) when it yields `None`.
#[macro_export]
macro_rules! conformance_suite {
    ($setup:path) => {
        $crate::conformance_suite!(@tests $setup;
            insert_then_get_round_trips,
            get_unknown_is_none,
            insert_of_an_existing_key_writes_nothing,
            a_write_applies_its_effects,
            a_write_of_several_records_is_atomic,
            kinds_are_separate_namespaces,
            a_run_of_inserts_with_one_taken_writes_nothing,
            misplaced_ids_are_found,
            concurrent_inserts_succeed_once,
            update_rejects_stale_revision,
            failed_update_applies_no_effects,
            update_unknown_is_not_found,
            writes_stay_within_their_account,
            concurrent_updates_have_one_winner,
            racing_terminal_transitions_have_one_winner,
            idempotency_key_returns_first_prediction,
            idempotency_keys_are_scoped_to_owner,
            concurrent_creates_with_one_key_make_one_prediction,
            delete_removes_record_items_and_events,
            list_pages_newest_first_without_gaps,
            list_filters_combine,
            list_pages_back_without_gaps,
            expire_leaves_tombstones,
            old_tombstones_are_deleted_and_their_ids_never_reused,
            expired_records_of_delete_kinds_are_absent,
            counters_accumulate,
            limited_counters_refuse_to_pass_their_limit,
            large_and_unicode_records_round_trip,
            claim_is_exclusive_until_lease_expires,
            claim_respects_run_at,
            claims_are_fair_across_accounts,
            a_hand_back_gives_the_clock_back,
            a_hand_back_for_later_keeps_the_clock,
            items_queued_by_one_write_are_ranked_one_after_another,
            claim_skips_excluded_topics,
            renew_extends_the_lease,
            renew_fails_after_lease_is_lost,
            lapsed_leases_are_lost_even_when_unclaimed,
            retry_reschedules,
            release_refunds_the_claim,
            completing_through_a_write_removes_the_item,
            enqueue_replaces_or_keeps_an_existing_id,
            enqueue_claimed_creates_a_leased_item,
            queue_stats_counts_items,
            lanes_are_separate,
            done_removes_or_keeps_by_lane,
            concurrent_claims_take_each_item_once,
            deliveries_are_enqueued_with_their_write,
            groups_go_out_in_order,
            delivery_claims_are_exclusive_until_the_lease_lapses,
            finishing_needs_the_current_lease,
            attempts_are_recorded_and_outcomes_applied,
            requeue_makes_an_item_pending_again,
            concurrent_claims_of_groups_deliver_each_once,
            events_are_appended_with_their_write_and_resumable,
            racing_writes_apply_only_the_winners_effects,
            expiry_and_delete_remove_events_and_items,
            posted_entries_add_up,
            ledger_pages_newest_first,
            repeated_entry_ids_are_skipped,
            entries_that_overdraw_refuse_the_write,
            ledger_entries_commit_with_their_write,
            concurrent_reservations_never_overdraw,
            ledgers_are_per_account,
            accounts_and_tokens_round_trip,
            files_round_trip_list_and_delete_per_owner,
            expired_files_are_absent_and_reported_to_retention,
            concurrent_priced_creates_never_overdraw,
            settle_racing_cancel_settles_once,
            concurrent_topups_credit_an_order_once,
            max_active_limits_unsettled_predictions,
            ledger_invariant_holds_over_random_sequences,
            changes_are_announced,
            migration_round_trips_every_section,
            a_join_starts_once_when_its_parents_settle_at_once,
            settlements_advance_their_runs_in_the_same_write,
            reconcile_restores_lost_work_once,
            deployments_round_trip_and_racing_updates_get_their_own_releases,
            deployments_stay_within_their_account,
            deployment_predictions_queue_on_their_own_topic,
        );
    };
    (@tests $setup:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(store) = $setup().await else { return };
                $crate::$name(store).await;
            }
        )*
    };
}
