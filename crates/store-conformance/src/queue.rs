//! Conformance tests for the job queue: claims, leases, retries, hand-backs and contention.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::store::{ClaimRequest, DynStore, Effect, Error};
use augur_core::{Timestamp, WorkerId};

use crate::fixtures::{QUEUE, claim, enqueue_now, eventually, insert, prediction};

const LONG: Duration = Duration::from_secs(60);

/// A claimed job is invisible to other claimers until its lease lapses, then claimable again
/// with its attempt count incremented.
pub async fn claim_is_exclusive_until_lease_expires(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[enqueue_now()]).await;
    let (a, b) = (WorkerId::generate(), WorkerId::generate());
    let first = store
        .claim_jobs(&claim(&a, Duration::from_millis(400), 10))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].job.prediction_id, p.id);
    assert_eq!(first[0].job.attempts, 1);
    assert_eq!(first[0].job.queue, QUEUE);
    assert_eq!(first[0].worker, a);
    assert!(
        store
            .claim_jobs(&claim(&b, LONG, 10))
            .await
            .unwrap()
            .is_empty()
    );

    let second = eventually("the lease to lapse", Duration::from_secs(10), || {
        let store = store.clone();
        let b = b.clone();
        async move {
            let got = store.claim_jobs(&claim(&b, LONG, 10)).await.unwrap();
            (!got.is_empty()).then_some(got)
        }
    })
    .await;
    assert_eq!(second[0].job.prediction_id, p.id);
    assert_eq!(second[0].job.attempts, 2);
    assert_ne!(second[0].token, first[0].token);
    // The first holder's lease is gone.
    assert!(matches!(
        store.renew_lease(&first[0], LONG).await,
        Err(Error::LeaseLost)
    ));
}

/// A job is not claimable before its `run_at`.
pub async fn claim_respects_run_at(store: DynStore) {
    let p = prediction();
    let run_at = Timestamp::now().plus(Duration::from_millis(500));
    insert(
        &store,
        &p,
        &[Effect::EnqueueJob {
            queue: QUEUE.into(),
            run_at,
        }],
    )
    .await;
    let w = WorkerId::generate();
    assert!(
        store
            .claim_jobs(&claim(&w, LONG, 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.queue_stats().await.unwrap().delayed, 1);
    let got = eventually("run_at to pass", Duration::from_secs(10), || {
        let store = store.clone();
        let w = w.clone();
        async move {
            let got = store.claim_jobs(&claim(&w, LONG, 10)).await.unwrap();
            (!got.is_empty()).then_some(got)
        }
    })
    .await;
    assert!(Timestamp::now() >= run_at);
    assert_eq!(got[0].job.prediction_id, p.id);
}

/// Claims take the oldest `run_at` first and honour `max`.
pub async fn claim_orders_by_run_at(store: DynStore) {
    let now = Timestamp::now();
    let mut expected = Vec::new();
    for offset in [3_000i64, 1_000, 2_000] {
        let p = prediction();
        insert(
            &store,
            &p,
            &[Effect::EnqueueJob {
                queue: QUEUE.into(),
                run_at: Timestamp::from_micros(now.as_micros() - offset * 1000),
            }],
        )
        .await;
        expected.push((offset, p.id));
    }
    expected.sort_by_key(|(offset, _)| std::cmp::Reverse(*offset));
    let w = WorkerId::generate();
    let first = store.claim_jobs(&claim(&w, LONG, 2)).await.unwrap();
    let rest = store.claim_jobs(&claim(&w, LONG, 2)).await.unwrap();
    let got: Vec<_> = first
        .iter()
        .chain(&rest)
        .map(|l| l.job.prediction_id.clone())
        .collect();
    let want: Vec<_> = expected.into_iter().map(|(_, id)| id).collect();
    assert_eq!(first.len(), 2);
    assert_eq!(got, want);
}

/// Jobs on excluded queues are skipped.
pub async fn claim_skips_excluded_queues(store: DynStore) {
    let busy = prediction();
    insert(
        &store,
        &busy,
        &[Effect::EnqueueJob {
            queue: "acme/busy".into(),
            run_at: Timestamp::now().minus(Duration::from_secs(5)),
        }],
    )
    .await;
    let free = prediction();
    insert(&store, &free, &[enqueue_now()]).await;
    let request = ClaimRequest {
        exclude_queues: vec!["acme/busy".into()],
        ..claim(&WorkerId::generate(), LONG, 10)
    };
    let got = store.claim_jobs(&request).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job.prediction_id, free.id);
}

/// Renewing a live lease pushes its expiry out, and the job stays invisible.
pub async fn renew_extends_the_lease(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[enqueue_now()]).await;
    let w = WorkerId::generate();
    let lease = store
        .claim_jobs(&claim(&w, Duration::from_millis(500), 1))
        .await
        .unwrap()
        .remove(0);
    let renewed = store.renew_lease(&lease, LONG).await.unwrap();
    assert!(renewed.expires_at > lease.expires_at);
    assert_eq!(renewed.token, lease.token);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        store
            .claim_jobs(&claim(&WorkerId::generate(), LONG, 10))
            .await
            .unwrap()
            .is_empty()
    );
    store.renew_lease(&renewed, LONG).await.unwrap();
}

/// Renewing fails with `LeaseLost` once the job was completed or taken over.
pub async fn renew_fails_after_lease_is_lost(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[enqueue_now()]).await;
    let w = WorkerId::generate();
    let lease = store
        .claim_jobs(&claim(&w, LONG, 1))
        .await
        .unwrap()
        .remove(0);
    store.complete_job(&p.id).await.unwrap();
    assert!(matches!(
        store.renew_lease(&lease, LONG).await,
        Err(Error::LeaseLost)
    ));
    assert!(matches!(
        store.retry_job(&lease, Timestamp::now()).await,
        Err(Error::LeaseLost)
    ));
    assert!(matches!(
        store.release_job(&lease, Timestamp::now()).await,
        Err(Error::LeaseLost)
    ));
}

/// Retrying ends the lease and makes the job claimable from `run_at`, keeping the attempt
/// count; the old lease cannot be used again.
pub async fn retry_job_reschedules(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[enqueue_now()]).await;
    let w = WorkerId::generate();
    let lease = store
        .claim_jobs(&claim(&w, LONG, 1))
        .await
        .unwrap()
        .remove(0);
    let run_at = Timestamp::now().plus(Duration::from_millis(300));
    store.retry_job(&lease, run_at).await.unwrap();
    assert!(matches!(
        store.retry_job(&lease, run_at).await,
        Err(Error::LeaseLost)
    ));
    assert_eq!(store.queue_stats().await.unwrap().delayed, 1);
    let again = eventually("the retry to become due", Duration::from_secs(10), || {
        let store = store.clone();
        let w = w.clone();
        async move {
            let got = store.claim_jobs(&claim(&w, LONG, 1)).await.unwrap();
            got.into_iter().next()
        }
    })
    .await;
    assert_eq!(again.job.attempts, 2);
}

/// Releasing hands the job back, claimable from the given time, without counting the attempt.
pub async fn release_job_refunds_the_attempt(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[enqueue_now()]).await;
    let w = WorkerId::generate();
    let lease = store
        .claim_jobs(&claim(&w, LONG, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(lease.job.attempts, 1);
    store.release_job(&lease, Timestamp::now()).await.unwrap();
    assert!(matches!(
        store.release_job(&lease, Timestamp::now()).await,
        Err(Error::LeaseLost)
    ));
    let again = store.claim_jobs(&claim(&w, LONG, 1)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job.attempts, 1);

    // Released for later: not claimable until then, and still not counted.
    store
        .release_job(&again[0], Timestamp::now().plus(Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(
        store
            .claim_jobs(&claim(&w, LONG, 1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.queue_stats().await.unwrap().delayed, 1);
    let later = eventually("the release time to pass", Duration::from_secs(10), || {
        let store = store.clone();
        let w = w.clone();
        async move {
            store
                .claim_jobs(&claim(&w, LONG, 1))
                .await
                .unwrap()
                .into_iter()
                .next()
        }
    })
    .await;
    assert_eq!(later.job.attempts, 1);
}

/// A `CompleteJob` effect on an update removes the job, even while someone holds its lease.
pub async fn completing_through_an_update_removes_the_job(store: DynStore) {
    let p = prediction();
    let rev = insert(&store, &p, &[enqueue_now()]).await;
    let w = WorkerId::generate();
    let lease = store
        .claim_jobs(&claim(&w, LONG, 1))
        .await
        .unwrap()
        .remove(0);
    store
        .update(&p.id, rev, &p, &[Effect::CompleteJob])
        .await
        .unwrap();
    assert_eq!(store.queue_stats().await.unwrap(), Default::default());
    assert!(matches!(
        store.renew_lease(&lease, LONG).await,
        Err(Error::LeaseLost)
    ));
}

/// Enqueueing a prediction that already has a job replaces it (one job per prediction) and
/// drops the old lease.
pub async fn enqueue_replaces_an_existing_job(store: DynStore) {
    let p = prediction();
    let rev = insert(&store, &p, &[enqueue_now()]).await;
    let w = WorkerId::generate();
    let lease = store
        .claim_jobs(&claim(&w, LONG, 1))
        .await
        .unwrap()
        .remove(0);
    store
        .update(&p.id, rev, &p, &[enqueue_now()])
        .await
        .unwrap();
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased), (1, 0));
    assert!(matches!(
        store.renew_lease(&lease, LONG).await,
        Err(Error::LeaseLost)
    ));
    let again = store.claim_jobs(&claim(&w, LONG, 10)).await.unwrap();
    assert_eq!(again.len(), 1);
}

/// A job enqueued already claimed is leased by its creator: invisible to claimers, renewable
/// with its token, and claimable (as a second attempt) once the lease lapses.
pub async fn enqueue_claimed_creates_a_leased_job(store: DynStore) {
    let p = prediction();
    let me = WorkerId::generate();
    let token = augur_core::LeaseToken::generate();
    let expires_at = Timestamp::now().plus(Duration::from_millis(400));
    insert(
        &store,
        &p,
        &[Effect::EnqueueClaimed {
            queue: QUEUE.into(),
            worker: me.clone(),
            token,
            expires_at,
        }],
    )
    .await;
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased), (0, 1));
    let other = WorkerId::generate();
    assert!(
        store
            .claim_jobs(&claim(&other, LONG, 10))
            .await
            .unwrap()
            .is_empty()
    );
    let lease = augur_core::store::Lease {
        job: augur_core::store::Job {
            prediction_id: p.id.clone(),
            queue: QUEUE.into(),
            attempts: 1,
            run_at: Timestamp::now(),
        },
        worker: me,
        token,
        expires_at,
    };
    let renewed = store
        .renew_lease(&lease, Duration::from_millis(300))
        .await
        .unwrap();
    let taken = eventually(
        "the claimed lease to lapse",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            let other = other.clone();
            async move {
                store
                    .claim_jobs(&claim(&other, LONG, 10))
                    .await
                    .unwrap()
                    .into_iter()
                    .next()
            }
        },
    )
    .await;
    assert_eq!(taken.job.prediction_id, p.id);
    assert_eq!(taken.job.attempts, 2);
    assert!(matches!(
        store.renew_lease(&renewed, LONG).await,
        Err(Error::LeaseLost)
    ));
}

/// Queue statistics count ready, leased and delayed jobs.
pub async fn queue_stats_counts_jobs(store: DynStore) {
    for _ in 0..3 {
        insert(&store, &prediction(), &[enqueue_now()]).await;
    }
    insert(
        &store,
        &prediction(),
        &[Effect::EnqueueJob {
            queue: QUEUE.into(),
            run_at: Timestamp::now().plus(LONG),
        }],
    )
    .await;
    let w = WorkerId::generate();
    store.claim_jobs(&claim(&w, LONG, 1)).await.unwrap();
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.delayed), (2, 1, 1));
}

/// 8 workers drain one queue of 1,000 jobs: every job is claimed and completed exactly once.
pub async fn concurrent_claims_complete_each_job_once(store: DynStore) {
    const JOBS: usize = 1000;
    let mut ids = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        let p = prediction();
        insert(&store, &p, &[enqueue_now()]).await;
        ids.push(p.id);
    }
    let claimed: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let claimed = claimed.clone();
            tokio::spawn(async move {
                let me = WorkerId::generate();
                let mut idle_rounds = 0;
                while idle_rounds < 3 {
                    let leases = store.claim_jobs(&claim(&me, LONG, 7)).await.unwrap();
                    if leases.is_empty() {
                        idle_rounds += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    idle_rounds = 0;
                    for lease in leases {
                        *claimed
                            .lock()
                            .unwrap()
                            .entry(lease.job.prediction_id.to_string())
                            .or_default() += 1;
                        let current = store.get(&lease.job.prediction_id).await.unwrap();
                        store
                            .update(
                                &lease.job.prediction_id,
                                current.revision,
                                &current.value,
                                &[Effect::CompleteJob, Effect::count("done", 1)],
                            )
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let claimed = std::mem::take(&mut *claimed.lock().unwrap());
    assert_eq!(claimed.len(), JOBS, "some jobs were never claimed");
    let doubles: Vec<_> = claimed.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubles.is_empty(), "claimed more than once: {doubles:?}");
    let done = store
        .counters()
        .await
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "done")
        .map_or(0, |(_, v)| v);
    assert_eq!(done, JOBS as i64);
    assert_eq!(store.queue_stats().await.unwrap(), Default::default());
}
