//! Tests of the webhook outbox and the event log that are particular to the PostgreSQL
//! backend: U+0000 in messages, attempts and events; writes that lose their compare-and-set
//! while carrying the same messages and events as the winner; and enqueues racing finishes,
//! which must never leave a message stranded nor two of one prediction's messages in flight.
//! Each test works in its own schema of `AUGUR_TEST_POSTGRES_URL` (skipped when it is unset).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::store::{
    Attempt, Delivery, DeliveryOutcome, DeliveryStatus, Effect, Error, NewPrediction, Record,
    Store, StreamEvent, StreamEventData, StreamEventKind,
};
use augur_core::{
    AccountId, ModelName, Prediction, PredictionId, Revision, Timestamp, WebhookEvent, WorkerId,
};

const LONG: Duration = Duration::from_secs(60);

fn prediction() -> Prediction {
    Prediction::new(
        PredictionId::generate(),
        AccountId::admin(),
        ModelName::parse("augur/echo").unwrap(),
        "v1".into(),
        serde_json::json!({"text": "hi"}),
    )
}

fn delivery(p: &Prediction, id: &str) -> Delivery {
    Delivery {
        id: id.into(),
        prediction_id: p.id.clone(),
        url: "https://hooks.example.com/augur".into(),
        event: WebhookEvent::Output,
        payload: Box::new(p.clone()),
        created_at: Timestamp::now(),
    }
}

fn enqueue(p: &Prediction, id: &str) -> Effect {
    Effect::EnqueueDelivery(Box::new(delivery(p, id)))
}

fn attempt(error: Option<&str>) -> Attempt {
    Attempt {
        at: Timestamp::now(),
        status: Some(200),
        error: error.map(str::to_owned),
        duration_ms: 2,
    }
}

async fn insert(store: &dyn Store, p: &Prediction, effects: &[Effect]) {
    store
        .create(NewPrediction {
            prediction: p,
            idempotency: None,
            effects,
        })
        .await
        .expect("create");
}

/// Messages, attempts and events holding U+0000 (and the escape character) round-trip, and a
/// message whose id holds it can be redelivered by that id.
#[tokio::test]
async fn outbox_records_holding_nul_characters_round_trip() {
    let Some(store) = common::store().await else {
        return;
    };
    let mut p = prediction();
    p.logs = "binary\0 log \u{f8ff}".into();
    let odd = delivery(&p, "msg\0\u{f8ff}0");
    let plain = delivery(&p, "msg_plain");
    let events = vec![
        StreamEventData {
            kind: StreamEventKind::Logs,
            data: "a\0b\u{f8ff}".into(),
        },
        StreamEventData {
            kind: StreamEventKind::Output,
            data: "\u{f8ff}0".into(),
        },
    ];
    insert(
        &store,
        &p,
        &[
            Effect::EnqueueDelivery(Box::new(odd.clone())),
            Effect::EnqueueDelivery(Box::new(plain.clone())),
            Effect::AppendEvents(events.clone()),
        ],
    )
    .await;
    let listed = store.list_deliveries(&p.id).await.unwrap();
    assert_eq!(listed[0].delivery, odd);
    assert_eq!(listed[1].delivery, plain);
    let read = store.read_events(&p.id, None, 10).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        events
    );

    let w = WorkerId::generate();
    let lease = store
        .claim_deliveries(&w, LONG, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(lease.state.delivery, odd);
    let failed = attempt(Some("reset \0 by peer"));
    store
        .finish_delivery(&lease, &failed, DeliveryOutcome::Delivered)
        .await
        .unwrap();
    store.redeliver(&p.id, &odd.id).await.unwrap();
    let listed = store.list_deliveries(&p.id).await.unwrap();
    assert_eq!(listed[0].attempts, vec![failed]);
    assert_eq!(listed[0].status, DeliveryStatus::Pending);

    // And through an export and import, into another store.
    let Some(other) = common::store().await else {
        return;
    };
    let mut records: Vec<Record> = listed
        .iter()
        .map(|d| Record::Delivery(Box::new(d.clone())))
        .collect();
    records.extend(read.iter().map(|e| Record::Event(p.id.clone(), e.clone())));
    other.import(&records).await.unwrap();
    other.import(&records).await.unwrap();
    assert_eq!(other.list_deliveries(&p.id).await.unwrap(), listed);
    assert_eq!(other.read_events(&p.id, None, 10).await.unwrap(), read);
}

/// Writers racing from one revision, each carrying the same message id and events: one wins,
/// the others get `Conflict` (not an error from meeting the winner's rows), and the outbox
/// and log hold the winner's only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_writes_with_the_winners_messages_conflict_cleanly() {
    let Some(store) = common::store().await else {
        return;
    };
    let store = Arc::new(store);
    let p = prediction();
    insert(&*store, &p, &[]).await;
    let mut revision = Revision::FIRST;
    const ROUNDS: u64 = 6;
    for round in 0..ROUNDS {
        let racers = (0..6).map(|_| {
            let (store, p) = (store.clone(), p.clone());
            tokio::spawn(async move {
                let effects = [
                    enqueue(&p, &format!("msg_{round}")),
                    Effect::AppendEvents(vec![StreamEventData {
                        kind: StreamEventKind::Output,
                        data: format!("round {round}"),
                    }]),
                ];
                store.update(&p.id, revision, &p, &effects).await
            })
        });
        let mut won = Vec::new();
        for result in futures::future::join_all(racers).await {
            match result.unwrap() {
                Ok(r) => won.push(r),
                Err(Error::Conflict { .. }) => {}
                Err(e) => panic!("round {round}: a losing write failed otherwise: {e:?}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}");
        revision = won[0];
    }
    let listed = store.list_deliveries(&p.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.seq).collect::<Vec<_>>(),
        (1..=ROUNDS).collect::<Vec<_>>()
    );
    let events = store.read_events(&p.id, None, 100).await.unwrap();
    assert_eq!(events.len() as u64, ROUNDS);
    assert!(
        events
            .windows(2)
            .all(|w| (w[0].revision, w[0].index) < (w[1].revision, w[1].index))
    );
}

/// Writes enqueue messages while claimers finish the ones before them. Each message goes out
/// exactly once, in order, with never two of one prediction's messages in flight; and at the
/// end, only each prediction's oldest pending message (none here) is marked claimable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueues_racing_finishes_strand_nothing() {
    let Some(store) = common::store().await else {
        return;
    };
    let store = Arc::new(store);
    const PREDICTIONS: usize = 4;
    const PER: usize = 15;
    let mut writers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..PREDICTIONS {
        let p = prediction();
        insert(&*store, &p, &[]).await;
        ids.push(p.id.clone());
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut revision = Revision::FIRST;
            for n in 0..PER {
                let effects = [enqueue(&p, &format!("msg_{n:02}"))];
                revision = store.update(&p.id, revision, &p, &effects).await.unwrap();
                tokio::time::sleep(Duration::from_millis(n as u64 % 3)).await;
            }
        }));
    }
    let in_flight: Arc<Mutex<HashSet<PredictionId>>> = Arc::default();
    let delivered: Arc<Mutex<HashMap<PredictionId, Vec<String>>>> = Arc::default();
    let mut claimers = Vec::new();
    for _ in 0..3 {
        let (store, in_flight, delivered) = (store.clone(), in_flight.clone(), delivered.clone());
        claimers.push(tokio::spawn(async move {
            let w = WorkerId::generate();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let done = delivered
                    .lock()
                    .unwrap()
                    .values()
                    .map(Vec::len)
                    .sum::<usize>();
                if done == PREDICTIONS * PER {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "stranded: {done} of {} delivered",
                    PREDICTIONS * PER
                );
                let leases = store.claim_deliveries(&w, LONG, 10).await.unwrap();
                if leases.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                for lease in &leases {
                    let id = lease.state.delivery.prediction_id.clone();
                    assert!(
                        in_flight.lock().unwrap().insert(id.clone()),
                        "two messages of {id} in flight"
                    );
                    delivered
                        .lock()
                        .unwrap()
                        .entry(id)
                        .or_default()
                        .push(lease.state.delivery.id.clone());
                }
                for lease in leases {
                    in_flight
                        .lock()
                        .unwrap()
                        .remove(&lease.state.delivery.prediction_id);
                    store
                        .finish_delivery(&lease, &attempt(None), DeliveryOutcome::Delivered)
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for task in writers.into_iter().chain(claimers) {
        task.await.unwrap();
    }
    let expected: Vec<String> = (0..PER).map(|n| format!("msg_{n:02}")).collect();
    let delivered = delivered.lock().unwrap().clone();
    for id in &ids {
        assert_eq!(delivered.get(id), Some(&expected), "{id}");
    }

    // Behind the store's back: no message is left marked claimable.
    let url = common::url().unwrap();
    let schema = &store.inner.options().schema;
    let marked: i64 = common::raw_client(&url)
        .await
        .query_one(
            &format!("SELECT count(*) FROM {schema}.deliveries WHERE visible_at IS NOT NULL"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(marked, 0);
}

/// A message redelivered while a later one waits becomes the head again: it goes out first,
/// then the later one, and at no point are both claimable.
#[tokio::test]
async fn a_redelivered_message_goes_before_the_waiting_ones() {
    let Some(store) = common::store().await else {
        return;
    };
    let p = prediction();
    insert(&store, &p, &[enqueue(&p, "msg_a"), enqueue(&p, "msg_b")]).await;
    let w = WorkerId::generate();
    let first = store.claim_deliveries(&w, LONG, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    store
        .finish_delivery(&first[0], &attempt(None), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    store.redeliver(&p.id, "msg_a").await.unwrap();
    let again = store.claim_deliveries(&w, LONG, 10).await.unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].state.delivery.id, "msg_a");
    store
        .finish_delivery(&again[0], &attempt(None), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    let last = store.claim_deliveries(&w, LONG, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].state.delivery.id, "msg_b");
    let events: Vec<StreamEvent> = store.read_events(&p.id, None, 10).await.unwrap();
    assert!(events.is_empty());
}
