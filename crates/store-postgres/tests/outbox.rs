//! Tests of the webhook outbox (items of the webhooks lane) and the event log that are
//! particular to the PostgreSQL backend: U+0000 in messages, attempts and events; writes that
//! lose their compare-and-set while carrying the same messages and events as the winner;
//! enqueues racing finishes, which must never leave a message stranded nor two of one
//! prediction's messages in flight; and a redelivered message overtaking the waiting ones.
//! Each test works in its own schema of `AUGUR_TEST_POSTGRES_URL` (skipped when it is unset).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::outbox::{Delivery, DeliveryOutcome, DeliveryStatus, Outbox};
use augur_core::store::{
    AdminStore, Attempt, DynStore, Effect, Entity, Error, Exported, Lane, NewItem, Op, Position,
    RecordStore, Section, StreamEvent, StreamEventData, StreamEventKind, Write,
};
use augur_core::{
    AccountId, ModelName, Prediction, PredictionId, Revision, Timestamp, WebhookEvent, WorkerId,
};

const LONG: Duration = Duration::from_secs(60);

fn prediction() -> Prediction {
    Prediction::new(
        PredictionId::generate_for(&AccountId::admin()),
        AccountId::admin(),
        ModelName::parse("augur/echo").unwrap(),
        "v1".into(),
        serde_json::json!({"text": "hi"}),
    )
}

fn delivery(p: &Prediction, id: &str) -> Delivery {
    Delivery {
        id: id.into(),
        url: "https://hooks.example.com/augur".into(),
        event: WebhookEvent::Output,
        payload: augur_core::outbox::Payload::Prediction(Box::new(p.clone())),
        created_at: Timestamp::now(),
    }
}

fn enqueue(p: &Prediction, id: &str) -> Effect {
    delivery(p, id).enqueue(&p.owner).unwrap()
}

fn events(p: &Prediction, list: Vec<StreamEventData>) -> Effect {
    Effect::AppendEvents {
        stream: p.key(),
        events: list,
    }
}

fn attempt(error: Option<&str>) -> Attempt {
    Attempt {
        at: Timestamp::now(),
        status: Some(200),
        error: error.map(str::to_owned),
        duration_ms: 2,
    }
}

async fn insert(store: &dyn RecordStore, p: &Prediction, effects: Vec<Effect>) {
    store
        .write(
            &Write::new(p.owner.clone())
                .op(Op::Insert(p.to_record().unwrap()))
                .effects(effects),
        )
        .await
        .expect("insert");
}

async fn update(
    store: &dyn RecordStore,
    p: &Prediction,
    expected: Revision,
    effects: Vec<Effect>,
) -> augur_core::store::Result<Revision> {
    let written = store
        .write(
            &Write::new(p.owner.clone())
                .op(Op::Update {
                    record: p.to_record().unwrap(),
                    expected,
                })
                .effects(effects),
        )
        .await?;
    Ok(written.revisions[0].expect("an update has a revision"))
}

async fn export_all(store: &dyn AdminStore, section: Section) -> Vec<Exported> {
    let mut all = Vec::new();
    let mut after: Option<Position> = None;
    loop {
        let page = store.export(section, after.as_ref(), 3).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.position());
        all.extend(page);
    }
    all
}

/// Messages, attempts and events holding U+0000 (and the escape character of older versions)
/// round-trip, through an export and import too; an item id holding it is refused.
#[tokio::test]
async fn outbox_records_holding_nul_characters_round_trip() {
    let Some(store) = common::store().await else {
        return;
    };
    let dyn_store: DynStore = Arc::new(store);
    let outbox = Outbox::new(dyn_store.clone());
    let mut p = prediction();
    p.logs = "binary\0 log \u{f8ff}".into();
    let odd = delivery(&p, "msg_odd");
    let plain = delivery(&p, "msg_plain");
    let logged = vec![
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
        &*dyn_store,
        &p,
        vec![
            odd.enqueue(&p.owner).unwrap(),
            plain.enqueue(&p.owner).unwrap(),
            events(&p, logged.clone()),
        ],
    )
    .await;
    let listed = outbox.list(&p.id).await.unwrap();
    assert_eq!(listed[0].delivery, odd);
    assert_eq!(listed[1].delivery, plain);
    let read = dyn_store.read_events(&p.key(), None, 10).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        logged
    );

    let w = WorkerId::generate();
    let lease = outbox.claim(&w, LONG, 10).await.unwrap().remove(0);
    assert_eq!(lease.state.delivery, odd);
    let failed = attempt(Some("reset \0 by peer \u{f8ff}"));
    outbox
        .finish(&lease, &failed, DeliveryOutcome::Delivered)
        .await
        .unwrap();
    outbox.redeliver(&p.id, &odd.id).await.unwrap();
    let listed = outbox.list(&p.id).await.unwrap();
    assert_eq!(listed[0].attempts, vec![failed]);
    assert_eq!(listed[0].status, DeliveryStatus::Pending);

    // And through an export and import, into another store.
    let Some(other) = common::store().await else {
        return;
    };
    let mut pieces = export_all(&*dyn_store, Section::Items).await;
    pieces.extend(export_all(&*dyn_store, Section::Events).await);
    other.import(&pieces).await.unwrap();
    other.import(&pieces).await.unwrap();
    let other: DynStore = Arc::new(other);
    assert_eq!(
        Outbox::new(other.clone()).list(&p.id).await.unwrap(),
        listed
    );
    assert_eq!(other.read_events(&p.key(), None, 10).await.unwrap(), read);

    // PostgreSQL cannot store U+0000 in an id: such an item is refused, nothing is written.
    let q = prediction();
    let stray = Effect::Enqueue(Box::new(NewItem {
        lane: Lane::Tasks,
        id: "task\0".into(),
        group: q.key(),
        topic: String::new(),
        owner: q.owner.clone(),
        payload: "{}".into(),
        run_at: Timestamp::now(),
        replace: true,
        claimed: None,
    }));
    let refused = dyn_store
        .write(
            &Write::new(q.owner.clone())
                .op(Op::Insert(q.to_record().unwrap()))
                .effects([stray]),
        )
        .await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    assert!(dyn_store.get(&q.key()).await.unwrap().is_none());
    assert!(matches!(
        outbox.redeliver(&p.id, "msg\0").await,
        Err(Error::NotFound(_))
    ));
}

/// Writers racing from one revision, each carrying the same message id and events: one wins,
/// the others get `Conflict` (not an error from meeting the winner's rows), and the outbox and
/// log hold the winner's only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_writes_with_the_winners_messages_conflict_cleanly() {
    let Some(store) = common::store().await else {
        return;
    };
    let store: DynStore = Arc::new(store);
    let p = prediction();
    insert(&*store, &p, vec![]).await;
    let mut revision = Revision::FIRST;
    const ROUNDS: u64 = 6;
    for round in 0..ROUNDS {
        let racers = (0..6).map(|_| {
            let (store, p) = (store.clone(), p.clone());
            tokio::spawn(async move {
                let effects = vec![
                    enqueue(&p, &format!("msg_{}_{round}", p.id)),
                    events(
                        &p,
                        vec![StreamEventData {
                            kind: StreamEventKind::Output,
                            data: format!("round {round}"),
                        }],
                    ),
                ];
                update(&*store, &p, revision, effects).await
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
    let listed = Outbox::new(store.clone()).list(&p.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.seq).collect::<Vec<_>>(),
        (1..=ROUNDS).collect::<Vec<_>>()
    );
    let logged: Vec<StreamEvent> = store.read_events(&p.key(), None, 100).await.unwrap();
    assert_eq!(logged.len() as u64, ROUNDS);
    assert!(
        logged
            .windows(2)
            .all(|w| (w[0].revision, w[0].index) < (w[1].revision, w[1].index))
    );
}

/// Writes enqueue messages while claimers finish the ones before them. Each message goes out
/// exactly once, in order, with never two of one prediction's messages in flight; and at the
/// end no message is left marked as its prediction's head.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueues_racing_finishes_strand_nothing() {
    if let Some(store) = common::store().await {
        strand_nothing(store).await;
    }
}

/// The same with every write on the general path.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueues_racing_finishes_strand_nothing_on_the_general_path() {
    if let Some(store) = common::general_store().await {
        strand_nothing(store).await;
    }
}

async fn strand_nothing(store: common::TestStore) {
    let schema = store.inner.options().schema.clone();
    let store: DynStore = Arc::new(store);
    const PREDICTIONS: usize = 4;
    const PER: usize = 15;
    let mut writers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..PREDICTIONS {
        let p = prediction();
        insert(&*store, &p, vec![]).await;
        ids.push(p.id.clone());
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut revision = Revision::FIRST;
            for n in 0..PER {
                // Message ids are unique in the lane: they name their prediction.
                let effects = vec![enqueue(&p, &format!("msg_{}_{n:02}", p.id))];
                revision = update(&*store, &p, revision, effects).await.unwrap();
                tokio::time::sleep(Duration::from_millis(n as u64 % 3)).await;
            }
        }));
    }
    let in_flight: Arc<Mutex<HashSet<PredictionId>>> = Arc::default();
    let delivered: Arc<Mutex<HashMap<PredictionId, Vec<String>>>> = Arc::default();
    let mut claimers = Vec::new();
    for _ in 0..3 {
        let (outbox, in_flight, delivered) = (
            Outbox::new(store.clone()),
            in_flight.clone(),
            delivered.clone(),
        );
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
                let leases = outbox.claim(&w, LONG, 10).await.unwrap();
                if leases.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                for lease in &leases {
                    let id = PredictionId::parse(lease.state.delivery.subject_id()).unwrap();
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
                        .remove(&PredictionId::parse(lease.state.delivery.subject_id()).unwrap());
                    outbox
                        .finish(&lease, &attempt(None), DeliveryOutcome::Delivered)
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for task in writers.into_iter().chain(claimers) {
        task.await.unwrap();
    }
    let delivered = delivered.lock().unwrap().clone();
    for id in &ids {
        let expected: Vec<String> = (0..PER).map(|n| format!("msg_{id}_{n:02}")).collect();
        assert_eq!(delivered.get(id), Some(&expected), "{id}");
    }

    // Behind the store's back: no message is left marked as a head.
    let url = common::url().unwrap();
    let marked: i64 = common::raw_client(&url)
        .await
        .query_one(
            &format!("SELECT count(*) FROM {schema}.items WHERE head IS NOT NULL"),
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
    let store: DynStore = Arc::new(store);
    let outbox = Outbox::new(store.clone());
    let p = prediction();
    insert(
        &*store,
        &p,
        vec![enqueue(&p, "msg_a"), enqueue(&p, "msg_b")],
    )
    .await;
    let w = WorkerId::generate();
    let first = outbox.claim(&w, LONG, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    outbox
        .finish(&first[0], &attempt(None), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    outbox.redeliver(&p.id, "msg_a").await.unwrap();
    let again = outbox.claim(&w, LONG, 10).await.unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].state.delivery.id, "msg_a");
    outbox
        .finish(&again[0], &attempt(None), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    let last = outbox.claim(&w, LONG, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].state.delivery.id, "msg_b");
    assert!(
        store
            .read_events(&p.key(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
