//! The embedded store's queue, webhook outbox and event log beyond the shared suite: how it
//! numbers events, repeated message ids, long backlogs, redelivery of an earlier message, and
//! claims that stay cheap however many items are leased, due later or queued behind a head.

use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_core::jobs::Jobs;
use augur_core::outbox::{DeliveryOutcome, DeliveryStatus, Outbox};
use augur_core::store::{
    Attempt, DynStore, Effect, Entity, Lane, StreamEventData, StreamEventKind,
};
use augur_core::{Revision, Timestamp, WorkerId};
use augur_store_conformance::delivery;
use augur_store_conformance::fixtures::{
    account, claim_jobs, enqueue_at, enqueue_now, insert, prediction, prediction_for, update,
};
use augur_store_embedded::{EmbeddedOptions, EmbeddedStore};

const LONG: Duration = Duration::from_secs(3600);

fn open(dir: &std::path::Path) -> DynStore {
    Arc::new(EmbeddedStore::open(EmbeddedOptions::new(dir)).expect("open store"))
}

fn ok() -> Attempt {
    Attempt {
        at: Timestamp::now(),
        status: Some(200),
        error: None,
        duration_ms: 2,
    }
}

fn logs(data: &str) -> StreamEventData {
    StreamEventData {
        kind: StreamEventKind::Logs,
        data: data.into(),
    }
}

/// Two `AppendEvents` in one write get consecutive indexes, so no position is used twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_numbers_events_across_its_append_effects() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = prediction();
    let append = |events| Effect::AppendEvents {
        stream: p.key(),
        events,
    };
    insert(
        &store,
        &p,
        vec![
            append(vec![logs("a"), logs("b")]),
            Effect::count("x", 1),
            append(vec![logs("c")]),
        ],
    )
    .await;
    let read = store.read_events(&p.key(), None, 10).await.unwrap();
    let got: Vec<(Revision, u32, &str)> = read
        .iter()
        .map(|e| (e.revision, e.index, e.event.data.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Revision(1), 0, "a"),
            (Revision(1), 1, "b"),
            (Revision(1), 2, "c")
        ]
    );
}

/// A message id names one message of a prediction: enqueueing it again adds nothing, in the
/// same write or a later one, and the messages are numbered from 1 in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_message_id_is_enqueued_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let outbox = Outbox::new(store.clone());
    let p = prediction();
    let rev = insert(&store, &p, vec![delivery(&p, 0), delivery(&p, 0)]).await;
    update(&store, &p, rev, vec![delivery(&p, 0), delivery(&p, 1)])
        .await
        .unwrap();
    let listed = outbox.list(&p.id).await.unwrap();
    let ids: Vec<(u64, String)> = listed
        .iter()
        .map(|d| (d.seq, d.delivery.id.clone()))
        .collect();
    assert_eq!(
        ids,
        vec![
            (1, format!("msg_{}_0", p.id)),
            (2, format!("msg_{}_1", p.id))
        ]
    );
}

/// Hundreds of messages queued behind a head that waits for a retry do not delay another
/// prediction's message, and go out in order once the head is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_behind_a_waiting_head_delays_no_other_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let outbox = Outbox::new(store.clone());
    let p = prediction();
    let effects: Vec<Effect> = (0..300).map(|n| delivery(&p, n)).collect();
    insert(&store, &p, effects).await;
    let w = WorkerId::generate();
    let head = outbox.claim(&w, LONG, 10).await.unwrap().remove(0);
    let soon = Timestamp::now().plus(Duration::from_millis(300));
    outbox
        .finish(&head, &ok(), DeliveryOutcome::RetryAt(soon))
        .await
        .unwrap();
    let q = prediction();
    insert(&store, &q, vec![delivery(&q, 0)]).await;
    let got = outbox.claim(&w, LONG, 1).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].state.delivery.subject_id(), q.id.as_str());

    let mut sent = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent.len() < 300 {
        assert!(Instant::now() < deadline, "sent {}", sent.len());
        let leases = outbox.claim(&w, LONG, 10).await.unwrap();
        if leases.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_eq!(leases.len(), 1, "one message of p at a time");
        sent.push(leases[0].state.delivery.id.clone());
        outbox
            .finish(&leases[0], &ok(), DeliveryOutcome::Delivered)
            .await
            .unwrap();
    }
    let expected: Vec<String> = (0..300).map(|n| format!("msg_{}_{n}", p.id)).collect();
    assert_eq!(sent, expected);
}

/// Redelivering a message before the one in flight makes it the head again (as in the memory
/// store), and both can still be finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivering_an_earlier_message_makes_it_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let outbox = Outbox::new(store.clone());
    let p = prediction();
    insert(&store, &p, vec![delivery(&p, 0), delivery(&p, 1)]).await;
    let w = WorkerId::generate();
    let first = outbox.claim(&w, LONG, 10).await.unwrap().remove(0);
    outbox
        .finish(&first, &ok(), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    let second = outbox.claim(&w, LONG, 10).await.unwrap().remove(0);
    outbox
        .redeliver(&p.id, &first.state.delivery.id)
        .await
        .unwrap();
    let again = outbox.claim(&w, LONG, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].state.delivery.id, first.state.delivery.id);
    outbox
        .finish(&second, &ok(), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    outbox
        .finish(&again[0], &ok(), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    let listed = outbox.list(&p.id).await.unwrap();
    assert!(listed.iter().all(|d| d.status == DeliveryStatus::Delivered));
    assert_eq!(listed[0].attempts.len(), 2);
    assert!(outbox.claim(&w, LONG, 10).await.unwrap().is_empty());
}

/// With thousands of jobs leased and thousands due later, a claim still finds the one due job
/// at once and the others stay where they are; the leased jobs are claimable again the moment
/// their leases lapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_skip_thousands_of_leased_and_later_items() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = account("busy");
    let later = Timestamp::now().plus(LONG);
    let write = |i: usize| {
        let store = store.clone();
        let owner = owner.clone();
        async move {
            let p = prediction_for(&owner);
            let effect = if i.is_multiple_of(2) {
                enqueue_now(&p)
            } else {
                enqueue_at(&p, later)
            };
            insert(&store, &p, vec![effect]).await;
        }
    };
    // Concurrent writes, so that group commit makes this quick.
    let writes: Vec<_> = (0..4000).map(|i| tokio::spawn(write(i))).collect();
    for w in writes {
        w.await.unwrap();
    }
    let w = WorkerId::generate();
    let short = Duration::from_millis(500);
    let mut leased = 0;
    loop {
        let got = claim_jobs(&store, &w, short, 500).await;
        if got.is_empty() {
            break;
        }
        leased += got.len();
    }
    assert_eq!(leased, 2000);
    let stats = store.queue_stats(Lane::Jobs).await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.delayed), (0, 2000, 2000));

    let newcomer = prediction_for(&account("quiet"));
    insert(&store, &newcomer, vec![enqueue_now(&newcomer)]).await;
    let started = Instant::now();
    let got = claim_jobs(&store, &w, LONG, 10).await;
    let took = started.elapsed();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].item.id, newcomer.id.as_str());
    // Not a benchmark (a debug build on a shared machine): a claim that walked 4,000 items
    // would still pass this, so the plans are pinned by the schema's tests; this pins the
    // behaviour.
    assert!(took < Duration::from_secs(2), "{took:?}");

    tokio::time::sleep(short).await;
    let jobs = Jobs::new(store.clone());
    let mut again = 0;
    loop {
        let got = jobs.claim(&w, LONG, 500, vec![]).await.unwrap();
        if got.is_empty() {
            break;
        }
        assert!(got.iter().all(|l| l.job.attempts == 2));
        again += got.len();
    }
    assert_eq!(again, 2000, "every lapsed lease is claimable");
    let stats = store.queue_stats(Lane::Jobs).await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.delayed), (0, 2001, 2000));
}
