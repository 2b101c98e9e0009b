//! The embedded store's webhook outbox and event log beyond the shared suite: how it numbers
//! events, repeated message ids, long backlogs and redelivery of an earlier message.

use std::sync::Arc;
use std::time::Duration;

use augur_core::store::{
    Attempt, DeliveryOutcome, DeliveryStatus, DynStore, Effect, StreamEventData, StreamEventKind,
};
use augur_core::{Revision, Timestamp, WorkerId};
use augur_store_conformance::delivery;
use augur_store_conformance::fixtures::{insert, prediction};
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
    insert(
        &store,
        &p,
        &[
            Effect::AppendEvents(vec![logs("a"), logs("b")]),
            Effect::count("x", 1),
            Effect::AppendEvents(vec![logs("c")]),
        ],
    )
    .await;
    let read = store.read_events(&p.id, None, 10).await.unwrap();
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

/// A message id names one message of a prediction: enqueueing it again adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_message_id_is_enqueued_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let p = prediction();
    let rev = insert(&store, &p, &[delivery(&p, 0), delivery(&p, 0)]).await;
    store
        .update(&p.id, rev, &p, &[delivery(&p, 0), delivery(&p, 1)])
        .await
        .unwrap();
    let listed = store.list_deliveries(&p.id).await.unwrap();
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
    let p = prediction();
    let effects: Vec<Effect> = (0..300).map(|n| delivery(&p, n)).collect();
    insert(&store, &p, &effects).await;
    let w = WorkerId::generate();
    let head = store
        .claim_deliveries(&w, LONG, 10)
        .await
        .unwrap()
        .remove(0);
    let soon = Timestamp::now().plus(Duration::from_millis(300));
    store
        .finish_delivery(&head, &ok(), DeliveryOutcome::RetryAt(soon))
        .await
        .unwrap();
    let q = prediction();
    insert(&store, &q, &[delivery(&q, 0)]).await;
    let got = store.claim_deliveries(&w, LONG, 1).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].state.delivery.prediction_id, q.id);

    let mut sent = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sent.len() < 300 {
        assert!(std::time::Instant::now() < deadline, "sent {}", sent.len());
        let leases = store.claim_deliveries(&w, LONG, 10).await.unwrap();
        if leases.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_eq!(leases.len(), 1, "one message of p at a time");
        sent.push(leases[0].state.delivery.id.clone());
        store
            .finish_delivery(&leases[0], &ok(), DeliveryOutcome::Delivered)
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
    let p = prediction();
    insert(&store, &p, &[delivery(&p, 0), delivery(&p, 1)]).await;
    let w = WorkerId::generate();
    let first = store
        .claim_deliveries(&w, LONG, 10)
        .await
        .unwrap()
        .remove(0);
    store
        .finish_delivery(&first, &ok(), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    let second = store
        .claim_deliveries(&w, LONG, 10)
        .await
        .unwrap()
        .remove(0);
    store
        .redeliver(&p.id, &first.state.delivery.id)
        .await
        .unwrap();
    let again = store.claim_deliveries(&w, LONG, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].state.delivery.id, first.state.delivery.id);
    store
        .finish_delivery(&second, &ok(), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    store
        .finish_delivery(&again[0], &ok(), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    let listed = store.list_deliveries(&p.id).await.unwrap();
    assert!(listed.iter().all(|d| d.status == DeliveryStatus::Delivered));
    assert_eq!(listed[0].attempts.len(), 2);
    assert!(
        store
            .claim_deliveries(&w, LONG, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
