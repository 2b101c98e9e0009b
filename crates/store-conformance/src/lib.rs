//! The storage contract's conformance suite: one named test per promise of
//! [`augur_core::store::Store`], run against every backend.
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
pub mod fixtures;
mod outbox;
mod predictions;
mod queue;

pub use changes::*;
pub use outbox::*;
pub use predictions::*;
pub use queue::*;

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
            create_then_get_round_trips,
            get_unknown_is_not_found,
            create_is_idempotent_on_id,
            create_applies_effects_atomically,
            idempotency_key_returns_first_prediction,
            idempotency_keys_are_scoped_to_owner,
            concurrent_creates_insert_once,
            update_rejects_stale_revision,
            failed_update_applies_no_effects,
            update_unknown_is_not_found,
            concurrent_updates_have_one_winner,
            racing_terminal_transitions_have_one_winner,
            delete_removes_prediction_and_job,
            list_pages_newest_first_without_gaps,
            list_filters_combine,
            expire_leaves_tombstones,
            expired_idempotency_keys_are_forgotten,
            counters_accumulate,
            large_and_unicode_records_round_trip,
            claim_is_exclusive_until_lease_expires,
            claim_respects_run_at,
            claim_orders_by_run_at,
            claim_skips_excluded_queues,
            renew_extends_the_lease,
            renew_fails_after_lease_is_lost,
            retry_job_reschedules,
            release_job_refunds_the_attempt,
            completing_through_an_update_removes_the_job,
            enqueue_replaces_an_existing_job,
            queue_stats_counts_jobs,
            enqueue_claimed_creates_a_leased_job,
            concurrent_claims_complete_each_job_once,
            changes_are_announced,
            migration_round_trips_every_record,
            deliveries_are_enqueued_with_their_write,
            deliveries_go_out_in_order_per_prediction,
            delivery_claims_are_exclusive_until_the_lease_lapses,
            finishing_needs_the_current_delivery_lease,
            attempts_are_recorded_and_outcomes_applied,
            redeliver_requeues_a_message,
            concurrent_delivery_claims_deliver_each_once,
            events_are_appended_with_their_write_and_resumable,
            racing_writes_apply_only_the_winners_effects,
            expiry_and_delete_remove_events_and_deliveries,
            outbox_and_events_migrate,
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
