//! The shard objects' alarms, against the Worker `AUGUR_TEST_CLOUDFLARE_URL` names: when a
//! job's lease runs out, or a delayed job becomes due, the Worker announces its lane by itself
//! (no Augur call in between), so a node waiting on the announcements claims it at once
//! instead of at its next poll.

mod common;

use std::time::Duration;

use augur_core::jobs::Jobs;
use augur_core::store::{Change, ChangeStream, Lane};
use augur_core::{Timestamp, WorkerId};
use augur_store_conformance::fixtures::{enqueue_now, insert, prediction};
use futures::StreamExt;
use tokio::time::Instant;

/// Discards what is announced for `quiet`, failing if the jobs lane is announced meanwhile.
async fn expect_no_work_for(changes: &mut ChangeStream, quiet: Duration, why: &str) {
    let until = Instant::now() + quiet;
    while let Ok(next) = tokio::time::timeout_at(until, changes.next()).await {
        let change = next.expect("the announcement stream ended");
        assert_ne!(change, Change::Work(Lane::Jobs), "announced early: {why}");
    }
}

/// Waits until the jobs lane is announced; returns when, or panics after `deadline`.
async fn next_work(changes: &mut ChangeStream, deadline: Duration, what: &str) -> Instant {
    let until = Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(until, changes.next()).await {
            Ok(Some(Change::Work(Lane::Jobs))) => return Instant::now(),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the announcement stream ended"),
            Err(_) => panic!("{what} was not announced within {deadline:?}"),
        }
    }
}

/// Drains what is already queued on the stream (the announcements of our own writes).
async fn drain(changes: &mut ChangeStream) {
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), changes.next()).await {
    }
}

#[tokio::test]
async fn a_lapsed_lease_and_a_delay_that_ends_are_announced_by_the_worker() {
    let Some(store) = common::store().await else {
        return;
    };
    let mut changes = store
        .subscribe()
        .await
        .unwrap()
        .expect("the Cloudflare store announces changes");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p = prediction();
    insert(&store, &p, vec![enqueue_now(&p)]).await;
    let jobs = Jobs::new(store.clone());
    let worker = WorkerId::generate();

    // A lease of 1.5 s that nobody renews or finishes.
    let lease_for = Duration::from_millis(1500);
    let claimed_at = Instant::now();
    let lease = jobs
        .claim(&worker, lease_for, 1, vec![])
        .await
        .unwrap()
        .pop()
        .expect("the job is claimed");
    drain(&mut changes).await;
    expect_no_work_for(
        &mut changes,
        Duration::from_millis(700),
        "the lease has not run out",
    )
    .await;
    let announced = next_work(&mut changes, Duration::from_secs(6), "the lapsed lease").await;
    let after = announced - claimed_at;
    assert!(
        after >= lease_for,
        "announced {after:?} after the claim, before the lease ran out"
    );
    // The announcement is true: the job can be claimed again, by another worker.
    let again = jobs
        .claim(&WorkerId::generate(), Duration::from_secs(60), 1, vec![])
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "the lapsed job is claimable");
    assert_eq!(again[0].job.prediction_id, p.id);
    assert!(
        jobs.retry(&lease, Timestamp::now()).await.is_err(),
        "the first lease is gone"
    );

    // A retry 1.5 s from now: announced when it is due, not before.
    let delay = Duration::from_millis(1500);
    let retried_at = Instant::now();
    jobs.retry(&again[0], Timestamp::now().plus(delay))
        .await
        .unwrap();
    drain(&mut changes).await;
    expect_no_work_for(&mut changes, Duration::from_millis(700), "the delay runs").await;
    let announced = next_work(&mut changes, Duration::from_secs(6), "the ended delay").await;
    let after = announced - retried_at;
    assert!(after >= delay, "announced {after:?} after the retry");
    let third = jobs
        .claim(&worker, Duration::from_secs(60), 1, vec![])
        .await
        .unwrap();
    assert_eq!(third.len(), 1, "the delayed job is claimable once due");
}
