//! Conformance tests for the leased queue: claims, leases, outcomes, fairness and contention.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::jobs;
use augur_core::store::Entity;
use augur_core::store::{
    ClaimRequest, DynStore, Effect, Error, Finish, ItemLease, ItemStatus, Lane, NewItem, Outcome,
};
use augur_core::{AccountId, LeaseToken, ModelName, Timestamp, WorkerId};

use crate::fixtures::{
    LONG, QUEUE, account, claim_jobs, claim_on, counter, enqueue_at, enqueue_now, eventually, get,
    insert, prediction, prediction_for, update,
};

fn finish(outcome: Outcome) -> Finish {
    Finish {
        outcome,
        attempt: None,
    }
}

/// A claimed item is invisible to other claimers until its lease lapses, then claimable again
/// with its claim count incremented; the first holder's lease is gone.
pub async fn claim_is_exclusive_until_lease_expires(store: DynStore) {
    let p = prediction();
    insert(&store, &p, vec![enqueue_now(&p)]).await;
    let (a, b) = (WorkerId::generate(), WorkerId::generate());
    let first = claim_jobs(&store, &a, Duration::from_millis(400), 10).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].item.id, p.id.as_str());
    assert_eq!(first[0].item.claims, 1);
    assert_eq!(first[0].item.topic, QUEUE);
    assert_eq!(first[0].item.group, p.key());
    assert_eq!(first[0].item.owner, p.owner);
    assert_eq!(first[0].worker, a);
    assert!(claim_jobs(&store, &b, LONG, 10).await.is_empty());

    let second = eventually("the lease to lapse", Duration::from_secs(10), || {
        let (store, b) = (store.clone(), b.clone());
        async move {
            let got = claim_jobs(&store, &b, LONG, 10).await;
            (!got.is_empty()).then_some(got)
        }
    })
    .await;
    assert_eq!(second[0].item.id, p.id.as_str());
    assert_eq!(second[0].item.claims, 2);
    assert_ne!(second[0].token, first[0].token);
    assert!(matches!(
        store.renew(&first[0], LONG).await,
        Err(Error::LeaseLost)
    ));
}

/// An item is not claimable before its `run_at`.
pub async fn claim_respects_run_at(store: DynStore) {
    let p = prediction();
    let run_at = Timestamp::now().plus(Duration::from_millis(500));
    insert(&store, &p, vec![enqueue_at(&p, run_at)]).await;
    let w = WorkerId::generate();
    assert!(claim_jobs(&store, &w, LONG, 10).await.is_empty());
    let got = eventually("run_at to pass", Duration::from_secs(10), || {
        let (store, w) = (store.clone(), w.clone());
        async move { claim_jobs(&store, &w, LONG, 10).await.into_iter().next() }
    })
    .await;
    assert!(Timestamp::now() >= run_at);
    assert_eq!(got.item.id, p.id.as_str());
}

/// Claims are fair: an account's items go in the order it queued them, and another account's
/// first item goes right after the first of a long backlog, not behind it.
pub async fn claims_are_fair_across_accounts(store: DynStore) {
    let (busy, quiet) = (account("busy"), account("quiet"));
    let now = Timestamp::now();
    let mut backlog = Vec::new();
    for i in 0..20i64 {
        let p = prediction_for(&busy);
        // Due times out of order: within an account, the order queued wins.
        let run_at = Timestamp::from_micros(now.as_micros() - ((i * 7) % 5) * 1000);
        insert(&store, &p, vec![enqueue_at(&p, run_at)]).await;
        backlog.push(p.id.to_string());
    }
    assert_a_newcomer_goes_second(&store, &backlog, &quiet).await;
}

/// Claims two of `backlog` (queued in that order by one account), queues one item for
/// `quiet`, and checks that it is among the next two claimed, the backlog going on in order.
async fn assert_a_newcomer_goes_second(store: &DynStore, backlog: &[String], quiet: &AccountId) {
    let w = WorkerId::generate();
    let first = claim_jobs(store, &w, LONG, 2).await;
    assert_eq!(
        first.iter().map(|l| l.item.id.clone()).collect::<Vec<_>>(),
        backlog[..2].to_vec()
    );
    assert_the_next_two_take_a_newcomer(store, &w, &backlog[2..4], quiet).await;
}

/// Queues one item for `quiet` and claims three: `quiet`'s must be among the first two, the
/// others `next` (the backlog's next two, in order).
async fn assert_the_next_two_take_a_newcomer(
    store: &DynStore,
    w: &WorkerId,
    next: &[String],
    quiet: &AccountId,
) {
    let newcomer = prediction_for(quiet);
    insert(store, &newcomer, vec![enqueue_now(&newcomer)]).await;
    let claimed = claim_jobs(store, w, LONG, 3).await;
    let ids: Vec<String> = claimed.iter().map(|l| l.item.id.clone()).collect();
    assert!(
        ids[..2].contains(&newcomer.id.to_string()),
        "the other account's item waited behind the backlog: {ids:?}"
    );
    let rest: Vec<&String> = ids
        .iter()
        .filter(|id| **id != newcomer.id.as_str())
        .collect();
    assert_eq!(rest, next.iter().collect::<Vec<_>>());
}

/// Items handed back at once ([`Outcome::HandBack`]: a claim that took more than a model had
/// room for) go back to their places, and the fair-queuing clock their claim raised goes back
/// with them: another account's next item is ranked among them, not behind them. One released
/// for later (an asynchronous run to check on) leaves the clock where it is.
pub async fn a_hand_back_gives_the_clock_back(store: DynStore) {
    let (busy, quiet) = (account("busy"), account("quiet"));
    let backlog = queue_for(&store, &busy, 20).await;
    let w = WorkerId::generate();
    let claimed = claim_jobs(&store, &w, LONG, 10).await;
    assert_eq!(claimed.len(), 10);
    // The first runs, the second is checked on later, the other eight go back.
    let later = Timestamp::now().plus(Duration::from_secs(3600));
    store
        .finish(&claimed[1], &finish(Outcome::Release(later)))
        .await
        .unwrap();
    for lease in &claimed[2..] {
        store
            .finish(lease, &finish(Outcome::HandBack))
            .await
            .unwrap();
    }
    assert_the_next_two_take_a_newcomer(&store, &w, &backlog[2..4], &quiet).await;
}

/// Queues `n` items of `owner`, one write each; returns their ids in that order.
async fn queue_for(store: &DynStore, owner: &AccountId, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let p = prediction_for(owner);
        insert(store, &p, vec![enqueue_now(&p)]).await;
        ids.push(p.id.to_string());
    }
    ids
}

/// Items handed back for later (asynchronous runs to check on) keep the place their claim
/// took: the clock stays, and another account's next item is ranked after the backlog's next.
/// Only where both accounts share a clock (a store that shards by account keeps one per
/// shard, and then the other account's item is ranked by its own).
pub async fn a_hand_back_for_later_keeps_the_clock(store: DynStore) {
    let (busy, quiet) = (account("busy"), account("quiet"));
    let w = WorkerId::generate();
    if !share_a_clock(&store, &w, &busy, &quiet).await {
        eprintln!("the two accounts are ranked by clocks of their own: nothing to check");
        return;
    }
    let backlog = queue_for(&store, &busy, 20).await;
    let later = Timestamp::now().plus(Duration::from_secs(3600));
    for lease in claim_jobs(&store, &w, LONG, 10).await {
        store
            .finish(&lease, &finish(Outcome::Release(later)))
            .await
            .unwrap();
    }
    let newcomer = prediction_for(&quiet);
    insert(&store, &newcomer, vec![enqueue_now(&newcomer)]).await;
    let next = claim_jobs(&store, &w, LONG, 2).await;
    let ids: Vec<String> = next.iter().map(|l| l.item.id.clone()).collect();
    assert_eq!(ids, [backlog[10].clone(), newcomer.id.to_string()]);
}

/// Whether `a`'s and `b`'s items are ranked by one clock: `a` queues two items and one is
/// claimed, then `b` queues one. By one clock, `b`'s ties with `a`'s second and goes after it
/// (queued later); by a clock of its own, it goes first. Leaves all three claimed.
async fn share_a_clock(store: &DynStore, w: &WorkerId, a: &AccountId, b: &AccountId) -> bool {
    let (a1, a2, b1) = (prediction_for(a), prediction_for(a), prediction_for(b));
    for p in [&a1, &a2] {
        insert(store, p, vec![enqueue_now(p)]).await;
    }
    let first = claim_jobs(store, w, LONG, 1).await;
    assert_eq!(first[0].item.id, a1.id.as_str());
    insert(store, &b1, vec![enqueue_now(&b1)]).await;
    let next: Vec<String> = claim_jobs(store, w, LONG, 2)
        .await
        .iter()
        .map(|l| l.item.id.clone())
        .collect();
    next == [a2.id.to_string(), b1.id.to_string()]
}

/// Many records and their items queued by one write (a batch) are ranked as if queued one
/// write at a time: in order, and another account's first item still goes right after the
/// first of them, not behind them all.
pub async fn items_queued_by_one_write_are_ranked_one_after_another(store: DynStore) {
    let (busy, quiet) = (account("batch"), account("quiet"));
    let backlog: Vec<_> = (0..20).map(|_| prediction_for(&busy)).collect();
    let write = augur_core::store::Write {
        account: busy.clone(),
        ops: backlog
            .iter()
            .map(|p| augur_core::store::Op::Insert(p.to_record().expect("encodes")))
            .collect(),
        effects: backlog.iter().map(enqueue_now).collect(),
    };
    store.write(&write).await.expect("the batch's write");
    let backlog: Vec<String> = backlog.iter().map(|p| p.id.to_string()).collect();
    assert_a_newcomer_goes_second(&store, &backlog, &quiet).await;
}

/// Items of excluded topics are skipped.
pub async fn claim_skips_excluded_topics(store: DynStore) {
    let mut busy = prediction();
    busy.model = ModelName::parse("acme/busy").unwrap();
    insert(
        &store,
        &busy,
        vec![enqueue_at(
            &busy,
            Timestamp::now().minus(Duration::from_secs(5)),
        )],
    )
    .await;
    let free = prediction();
    insert(&store, &free, vec![enqueue_now(&free)]).await;
    let w = WorkerId::generate();
    let got = store
        .claim(&ClaimRequest {
            exclude_topics: vec!["acme/busy".into()],
            ..claim_on(Lane::Jobs, &w, LONG, 10)
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].item.id, free.id.as_str());
}

/// Renewing extends a live lease.
pub async fn renew_extends_the_lease(store: DynStore) {
    let p = prediction();
    insert(&store, &p, vec![enqueue_now(&p)]).await;
    let w = WorkerId::generate();
    let lease = claim_jobs(&store, &w, Duration::from_millis(300), 1)
        .await
        .remove(0);
    let renewed = store.renew(&lease, LONG).await.unwrap();
    assert!(renewed.expires_at > lease.expires_at);
    assert_eq!(renewed.token, lease.token);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = WorkerId::generate();
    assert!(
        claim_jobs(&store, &other, LONG, 10).await.is_empty(),
        "the renewed lease held"
    );
    store.renew(&renewed, LONG).await.unwrap();
}

/// Renew, retry and release fail with `LeaseLost` once the item was completed.
pub async fn renew_fails_after_lease_is_lost(store: DynStore) {
    let p = prediction();
    let rev = insert(&store, &p, vec![enqueue_now(&p)]).await;
    let w = WorkerId::generate();
    let lease = claim_jobs(&store, &w, LONG, 1).await.remove(0);
    update(&store, &p, rev, vec![jobs::complete(&p.id)])
        .await
        .unwrap();
    assert!(matches!(
        store.renew(&lease, LONG).await,
        Err(Error::LeaseLost)
    ));
    for outcome in [
        Outcome::Retry(Timestamp::now()),
        Outcome::Release(Timestamp::now()),
        Outcome::HandBack,
        Outcome::Done,
    ] {
        assert!(matches!(
            store.finish(&lease, &finish(outcome)).await,
            Err(Error::LeaseLost)
        ));
    }
}

/// A lease that lapsed is lost even if nobody claimed the item since: it can no longer be
/// renewed, retried, released or finished, and the item is claimable.
pub async fn lapsed_leases_are_lost_even_when_unclaimed(store: DynStore) {
    let p = prediction();
    insert(&store, &p, vec![enqueue_now(&p)]).await;
    let w = WorkerId::generate();
    let lease = claim_jobs(&store, &w, Duration::from_millis(200), 1)
        .await
        .remove(0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(
        store.renew(&lease, LONG).await,
        Err(Error::LeaseLost)
    ));
    for outcome in [
        Outcome::Retry(Timestamp::now()),
        Outcome::Release(Timestamp::now()),
        Outcome::HandBack,
        Outcome::Done,
        Outcome::GiveUp { rest: false },
    ] {
        let got = store.finish(&lease, &finish(outcome)).await;
        assert!(matches!(got, Err(Error::LeaseLost)), "{outcome:?}: {got:?}");
    }
    let again = claim_jobs(&store, &w, LONG, 1).await;
    assert_eq!(again.len(), 1, "the item is claimable again");
    assert_eq!(again[0].item.claims, 2);
}

/// Retrying ends the lease and makes the item claimable from `run_at`, keeping the claim
/// count; the old lease cannot be used again.
pub async fn retry_reschedules(store: DynStore) {
    let p = prediction();
    insert(&store, &p, vec![enqueue_now(&p)]).await;
    let w = WorkerId::generate();
    let lease = claim_jobs(&store, &w, LONG, 1).await.remove(0);
    let run_at = Timestamp::now().plus(Duration::from_millis(300));
    store
        .finish(&lease, &finish(Outcome::Retry(run_at)))
        .await
        .unwrap();
    assert!(matches!(
        store.finish(&lease, &finish(Outcome::Retry(run_at))).await,
        Err(Error::LeaseLost)
    ));
    assert_eq!(store.queue_stats(Lane::Jobs).await.unwrap().delayed, 1);
    let again = eventually("the retry to become due", Duration::from_secs(10), || {
        let (store, w) = (store.clone(), w.clone());
        async move { claim_jobs(&store, &w, LONG, 1).await.into_iter().next() }
    })
    .await;
    assert_eq!(again.item.claims, 2);
}

/// Releasing hands the item back, claimable from the given time, without counting the claim.
pub async fn release_refunds_the_claim(store: DynStore) {
    let p = prediction();
    insert(&store, &p, vec![enqueue_now(&p)]).await;
    let w = WorkerId::generate();
    let lease = claim_jobs(&store, &w, LONG, 1).await.remove(0);
    assert_eq!(lease.item.claims, 1);
    store
        .finish(&lease, &finish(Outcome::Release(Timestamp::now())))
        .await
        .unwrap();
    assert!(matches!(
        store
            .finish(&lease, &finish(Outcome::Release(Timestamp::now())))
            .await,
        Err(Error::LeaseLost)
    ));
    let again = claim_jobs(&store, &w, LONG, 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].item.claims, 1);

    // Released for later: not claimable until then, and still not counted.
    store
        .finish(
            &again[0],
            &finish(Outcome::Release(
                Timestamp::now().plus(Duration::from_millis(300)),
            )),
        )
        .await
        .unwrap();
    assert!(claim_jobs(&store, &w, LONG, 1).await.is_empty());
    assert_eq!(store.queue_stats(Lane::Jobs).await.unwrap().delayed, 1);
    let later = eventually("the release time to pass", Duration::from_secs(10), || {
        let (store, w) = (store.clone(), w.clone());
        async move { claim_jobs(&store, &w, LONG, 1).await.into_iter().next() }
    })
    .await;
    assert_eq!(later.item.claims, 1);

    // Handed back: claimable at once, not counted, and the lease is gone.
    store
        .finish(&later, &finish(Outcome::HandBack))
        .await
        .unwrap();
    assert!(matches!(
        store.finish(&later, &finish(Outcome::HandBack)).await,
        Err(Error::LeaseLost)
    ));
    let back = claim_jobs(&store, &w, LONG, 1).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].item.claims, 1);
}

/// A `Complete` effect in a write removes the item, even while someone holds its lease.
pub async fn completing_through_a_write_removes_the_item(store: DynStore) {
    let p = prediction();
    let rev = insert(&store, &p, vec![enqueue_now(&p)]).await;
    let w = WorkerId::generate();
    let lease = claim_jobs(&store, &w, LONG, 1).await.remove(0);
    update(&store, &p, rev, vec![jobs::complete(&p.id)])
        .await
        .unwrap();
    assert_eq!(
        store.queue_stats(Lane::Jobs).await.unwrap(),
        Default::default()
    );
    assert!(matches!(
        store.renew(&lease, LONG).await,
        Err(Error::LeaseLost)
    ));
    assert!(store.items(Lane::Jobs, &p.key()).await.unwrap().is_empty());
}

/// Enqueueing an id the lane holds replaces it when asked to (one job per prediction; the old
/// lease ends) and is dropped otherwise (a message id is enqueued once).
pub async fn enqueue_replaces_or_keeps_an_existing_id(store: DynStore) {
    let p = prediction();
    let rev = insert(&store, &p, vec![enqueue_now(&p)]).await;
    let w = WorkerId::generate();
    let lease = claim_jobs(&store, &w, LONG, 1).await.remove(0);
    update(&store, &p, rev, vec![enqueue_now(&p)])
        .await
        .unwrap();
    let stats = store.queue_stats(Lane::Jobs).await.unwrap();
    assert_eq!((stats.ready, stats.leased), (1, 0));
    assert!(matches!(
        store.renew(&lease, LONG).await,
        Err(Error::LeaseLost)
    ));
    assert_eq!(claim_jobs(&store, &w, LONG, 10).await.len(), 1);

    let q = prediction();
    let task = |payload: &str| {
        Effect::Enqueue(Box::new(NewItem {
            lane: Lane::Tasks,
            id: format!("task-{}", q.id),
            group: q.key(),
            topic: "settle".into(),
            owner: q.owner.clone(),
            payload: payload.into(),
            run_at: Timestamp::now(),
            replace: false,
            claimed: None,
        }))
    };
    let rev = insert(&store, &q, vec![task("first"), task("second")]).await;
    update(&store, &q, rev, vec![task("third")]).await.unwrap();
    let items = store.items(Lane::Tasks, &q.key()).await.unwrap();
    assert_eq!(items.len(), 1, "a message id is enqueued once: {items:?}");
    assert_eq!(items[0].payload, "first");
}

/// A job enqueued already claimed is leased by its creator: invisible to claimers, renewable
/// with its token, and claimable (as a second claim) once the lease lapses.
pub async fn enqueue_claimed_creates_a_leased_item(store: DynStore) {
    let p = prediction();
    let me = WorkerId::generate();
    let (lease, effect) = jobs::Lease::claimed_at_create(
        &p.id,
        &p.owner,
        p.model.as_str(),
        &me,
        Duration::from_millis(400),
        Timestamp::now(),
    );
    insert(&store, &p, vec![effect]).await;
    let stats = store.queue_stats(Lane::Jobs).await.unwrap();
    assert_eq!((stats.ready, stats.leased), (0, 1));
    let other = WorkerId::generate();
    assert!(claim_jobs(&store, &other, LONG, 10).await.is_empty());
    let renewed = jobs::Jobs::new(store.clone())
        .renew(&lease, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(lease.job.attempts, 1);
    let taken = eventually(
        "the claimed lease to lapse",
        Duration::from_secs(10),
        || {
            let (store, other) = (store.clone(), other.clone());
            async move {
                claim_jobs(&store, &other, LONG, 10)
                    .await
                    .into_iter()
                    .next()
            }
        },
    )
    .await;
    assert_eq!(taken.item.id, p.id.as_str());
    assert_eq!(taken.item.claims, 2);
    assert!(matches!(
        jobs::Jobs::new(store.clone()).renew(&renewed, LONG).await,
        Err(Error::LeaseLost)
    ));
    // A token for an item someone else holds is refused too.
    let forged = ItemLease {
        token: LeaseToken::generate(),
        ..taken.clone()
    };
    assert!(matches!(
        store.renew(&forged, LONG).await,
        Err(Error::LeaseLost)
    ));
}

/// Queue statistics count ready, leased and delayed items.
pub async fn queue_stats_counts_items(store: DynStore) {
    for _ in 0..3 {
        let p = prediction();
        insert(&store, &p, vec![enqueue_now(&p)]).await;
    }
    let later = prediction();
    insert(
        &store,
        &later,
        vec![enqueue_at(&later, Timestamp::now().plus(LONG))],
    )
    .await;
    let w = WorkerId::generate();
    claim_jobs(&store, &w, LONG, 1).await;
    let stats = store.queue_stats(Lane::Jobs).await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.delayed), (2, 1, 1));
    assert_eq!(
        store.queue_stats(Lane::Webhooks).await.unwrap(),
        Default::default()
    );
}

/// Lanes are separate queues: a claim on one never returns another's items.
pub async fn lanes_are_separate(store: DynStore) {
    let p = prediction();
    let task = Effect::Enqueue(Box::new(NewItem {
        lane: Lane::Tasks,
        id: p.id.to_string(),
        group: p.key(),
        topic: QUEUE.into(),
        owner: p.owner.clone(),
        payload: "{\"do\":\"it\"}".into(),
        run_at: Timestamp::now(),
        replace: true,
        claimed: None,
    }));
    insert(&store, &p, vec![enqueue_now(&p), task]).await;
    let w = WorkerId::generate();
    let jobs = claim_jobs(&store, &w, LONG, 10).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].item.lane, Lane::Jobs);
    assert!(
        store
            .claim(&claim_on(Lane::Webhooks, &w, LONG, 10))
            .await
            .unwrap()
            .is_empty()
    );
    let tasks = store
        .claim(&claim_on(Lane::Tasks, &w, LONG, 10))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].item.payload, "{\"do\":\"it\"}");
    store
        .finish(&tasks[0], &finish(Outcome::Done))
        .await
        .unwrap();
    assert_eq!(store.queue_stats(Lane::Jobs).await.unwrap().leased, 1);
}

/// `Done` removes the item in lanes that keep nothing and keeps it (as done) in lanes that
/// keep finished items.
pub async fn done_removes_or_keeps_by_lane(store: DynStore) {
    let p = prediction();
    let message = Effect::Enqueue(Box::new(NewItem {
        lane: Lane::Webhooks,
        id: format!("msg_{}_0", p.id),
        group: p.key(),
        topic: String::new(),
        owner: p.owner.clone(),
        payload: "{}".into(),
        run_at: Timestamp::now(),
        replace: false,
        claimed: None,
    }));
    insert(&store, &p, vec![enqueue_now(&p), message]).await;
    let w = WorkerId::generate();
    for lane in [Lane::Jobs, Lane::Webhooks] {
        let lease = store
            .claim(&claim_on(lane, &w, LONG, 1))
            .await
            .unwrap()
            .remove(0);
        store.finish(&lease, &finish(Outcome::Done)).await.unwrap();
    }
    assert!(store.items(Lane::Jobs, &p.key()).await.unwrap().is_empty());
    let kept = store.items(Lane::Webhooks, &p.key()).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!((kept[0].status, kept[0].due_at), (ItemStatus::Done, None));
}

/// 8 workers drain one queue of 1,000 jobs: every job is claimed and completed exactly once.
pub async fn concurrent_claims_take_each_item_once(store: DynStore) {
    const JOBS: usize = 1000;
    let owners: Vec<AccountId> = (0..4).map(|_| account("drain")).collect();
    for i in 0..JOBS {
        let p = prediction_for(&owners[i % owners.len()]);
        insert(&store, &p, vec![enqueue_now(&p)]).await;
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
                    let leases = claim_jobs(&store, &me, LONG, 7).await;
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
                            .entry(lease.item.id.clone())
                            .or_default() += 1;
                        let id = augur_core::PredictionId::parse(&lease.item.id).unwrap();
                        let current = get(&store, &id).await.unwrap();
                        update(
                            &store,
                            &current.value,
                            current.revision,
                            vec![jobs::complete(&id), Effect::count("done", 1)],
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
    assert_eq!(counter(&store, "done").await, JOBS as i64);
    assert_eq!(
        store.queue_stats(Lane::Jobs).await.unwrap(),
        Default::default()
    );
}
