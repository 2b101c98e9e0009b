//! Conformance tests for the webhook outbox (deliveries, their leases, attempts and order) and
//! the per-prediction event log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::store::{
    Attempt, Created, Delivery, DeliveryOutcome, DeliveryStatus, DynStore, Effect, Error,
    NewPrediction, Record, StreamEvent, StreamEventData, StreamEventKind,
};
use augur_core::{Prediction, PredictionId, Revision, Status, Timestamp, WebhookEvent, WorkerId};
use serde_json::json;

use crate::fixtures::{eventually, insert, prediction};

const LONG: Duration = Duration::from_secs(60);

/// The effect that puts message number `n` of `p` in its outbox.
pub fn delivery(p: &Prediction, n: u32) -> Effect {
    Effect::EnqueueDelivery(Box::new(delivery_of(p, n)))
}

fn delivery_of(p: &Prediction, n: u32) -> Delivery {
    Delivery {
        id: format!("msg_{}_{n}", p.id),
        prediction_id: p.id.clone(),
        url: "https://hooks.example.com/augur?x=1".into(),
        event: if n == 0 {
            WebhookEvent::Start
        } else {
            WebhookEvent::Completed
        },
        payload: Box::new(p.clone()),
        created_at: Timestamp::now(),
    }
}

fn attempt(status: u16) -> Attempt {
    Attempt {
        at: Timestamp::now(),
        status: Some(status),
        error: None,
        duration_ms: 3,
    }
}

fn event(kind: StreamEventKind, data: &str) -> StreamEventData {
    StreamEventData {
        kind,
        data: data.into(),
    }
}

/// Deliveries are written with the write that makes them, numbered in order, and a write that
/// loses its compare-and-set enqueues none.
pub async fn deliveries_are_enqueued_with_their_write(store: DynStore) {
    let mut p = prediction();
    p.webhook = Some("https://hooks.example.com/augur?x=1".into());
    let rev = insert(&store, &p, &[delivery(&p, 0)]).await;
    let mut next = p.clone();
    next.status = Status::Processing;
    let rev2 = store
        .update(&p.id, rev, &next, &[delivery(&next, 1)])
        .await
        .unwrap();
    // A stale write: refused, and its delivery is not written.
    let refused = store.update(&p.id, rev, &next, &[delivery(&next, 2)]).await;
    assert!(
        matches!(refused, Err(Error::Conflict { .. })),
        "{refused:?}"
    );
    assert!(rev2 > rev);

    let listed = store.list_deliveries(&p.id).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        listed[0].delivery,
        delivery_of(&p, 0).with_time(&listed[0].delivery)
    );
    assert_eq!(listed[0].delivery.payload.as_ref(), &p);
    assert_eq!(listed[1].delivery.payload.status, Status::Processing);
    assert!(listed[0].seq < listed[1].seq);
    for d in &listed {
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert!(d.attempts.is_empty());
        assert!(d.next_attempt_at.is_some());
    }
    // Another prediction's outbox is its own.
    assert!(
        store
            .list_deliveries(&PredictionId::generate())
            .await
            .unwrap()
            .is_empty()
    );
}

trait WithTime {
    fn with_time(self, other: &Delivery) -> Delivery;
}

impl WithTime for Delivery {
    /// The fixture with the stored `created_at` (made separately, a moment apart).
    fn with_time(mut self, other: &Delivery) -> Delivery {
        self.created_at = other.created_at;
        self
    }
}

/// A prediction's messages go out one at a time, in order: the next waits until the one before
/// it is delivered or given up, also while that one waits for a retry. Other predictions'
/// messages do not wait for it.
pub async fn deliveries_go_out_in_order_per_prediction(store: DynStore) {
    let p = prediction();
    let other = prediction();
    insert(&store, &p, &[delivery(&p, 0), delivery(&p, 1)]).await;
    insert(&store, &other, &[delivery(&other, 0)]).await;
    let w = WorkerId::generate();

    let mut first = store.claim_deliveries(&w, LONG, 10).await.unwrap();
    first.sort_by_key(|l| l.state.delivery.prediction_id == other.id);
    assert_eq!(first.len(), 2, "one head per prediction: {first:?}");
    assert_eq!(first[0].state.delivery.id, format!("msg_{}_0", p.id));
    assert_eq!(first[1].state.delivery.id, format!("msg_{}_0", other.id));

    // The head fails; its retry is due later, and its successor keeps waiting.
    let retry_at = Timestamp::now().plus(Duration::from_millis(400));
    store
        .finish_delivery(&first[0], &attempt(500), DeliveryOutcome::RetryAt(retry_at))
        .await
        .unwrap();
    store
        .finish_delivery(&first[1], &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries(&w, LONG, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let again = eventually("the retry to come due", Duration::from_secs(10), || {
        let (store, w) = (store.clone(), w.clone());
        async move {
            let got = store.claim_deliveries(&w, LONG, 10).await.unwrap();
            (!got.is_empty()).then_some(got)
        }
    })
    .await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].state.delivery.id, format!("msg_{}_0", p.id));
    assert_eq!(
        again[0].state.attempts.len(),
        1,
        "the first attempt is kept"
    );
    assert!(Timestamp::now() >= retry_at);
    store
        .finish_delivery(&again[0], &attempt(204), DeliveryOutcome::Delivered)
        .await
        .unwrap();

    let last = store.claim_deliveries(&w, LONG, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].state.delivery.id, format!("msg_{}_1", p.id));
    store
        .finish_delivery(&last[0], &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries(&w, LONG, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A claimed message is invisible to other claimers until its lease lapses; then another may
/// claim it and the first holder can no longer finish it.
pub async fn delivery_claims_are_exclusive_until_the_lease_lapses(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[delivery(&p, 0)]).await;
    let (a, b) = (WorkerId::generate(), WorkerId::generate());
    let held = store
        .claim_deliveries(&a, Duration::from_millis(400), 10)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].worker, a);
    assert!(held[0].expires_at > Timestamp::now());
    assert!(
        store
            .claim_deliveries(&b, LONG, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let taken = eventually("the lease to lapse", Duration::from_secs(10), || {
        let (store, b) = (store.clone(), b.clone());
        async move {
            let got = store.claim_deliveries(&b, LONG, 10).await.unwrap();
            (!got.is_empty()).then_some(got)
        }
    })
    .await;
    assert_eq!(taken[0].state.delivery.id, held[0].state.delivery.id);
    assert_ne!(taken[0].token, held[0].token);
    let late = store
        .finish_delivery(&held[0], &attempt(200), DeliveryOutcome::Delivered)
        .await;
    assert!(matches!(late, Err(Error::LeaseLost)), "{late:?}");
}

/// Finishing needs the current lease: a forged token, or a second finish, is `LeaseLost`.
pub async fn finishing_needs_the_current_delivery_lease(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[delivery(&p, 0)]).await;
    let w = WorkerId::generate();
    let lease = store.claim_deliveries(&w, LONG, 1).await.unwrap().remove(0);
    let mut forged = lease.clone();
    forged.token = augur_core::LeaseToken::generate();
    assert!(matches!(
        store
            .finish_delivery(&forged, &attempt(200), DeliveryOutcome::Delivered)
            .await,
        Err(Error::LeaseLost)
    ));
    store
        .finish_delivery(&lease, &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert!(matches!(
        store
            .finish_delivery(&lease, &attempt(200), DeliveryOutcome::Delivered)
            .await,
        Err(Error::LeaseLost)
    ));
    let listed = store.list_deliveries(&p.id).await.unwrap();
    assert_eq!(
        listed[0].attempts.len(),
        1,
        "the refused finishes left no trace"
    );
}

/// Every attempt is recorded in order; `GiveUp` fails the message, and with `drop_rest` the
/// prediction's later pending messages too.
pub async fn attempts_are_recorded_and_outcomes_applied(store: DynStore) {
    let p = prediction();
    insert(
        &store,
        &p,
        &[delivery(&p, 0), delivery(&p, 1), delivery(&p, 2)],
    )
    .await;
    let q = prediction();
    insert(&store, &q, &[delivery(&q, 0), delivery(&q, 1)]).await;
    let w = WorkerId::generate();

    let heads = store.claim_deliveries(&w, LONG, 10).await.unwrap();
    assert_eq!(heads.len(), 2);
    for lease in &heads {
        let failure = Attempt {
            at: Timestamp::now(),
            status: None,
            error: Some("connection refused ✗".into()),
            duration_ms: 1,
        };
        let outcome = if lease.state.delivery.prediction_id == p.id {
            // p's receiver is gone for good (410): p's messages are all given up.
            DeliveryOutcome::GiveUp { drop_rest: true }
        } else {
            // q's first message ran out of retries; the next one may still go.
            DeliveryOutcome::GiveUp { drop_rest: false }
        };
        store
            .finish_delivery(lease, &failure, outcome)
            .await
            .unwrap();
    }
    let ps = store.list_deliveries(&p.id).await.unwrap();
    assert_eq!(
        ps.iter().map(|d| d.status).collect::<Vec<_>>(),
        vec![DeliveryStatus::Failed; 3]
    );
    assert_eq!(ps[0].attempts.len(), 1);
    assert_eq!(
        ps[0].attempts[0].error.as_deref(),
        Some("connection refused ✗")
    );
    assert!(ps[1].attempts.is_empty());
    assert!(ps.iter().all(|d| d.next_attempt_at.is_none()));

    let next = store.claim_deliveries(&w, LONG, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].state.delivery.id, format!("msg_{}_1", q.id));
    store
        .finish_delivery(&next[0], &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    let qs = store.list_deliveries(&q.id).await.unwrap();
    assert_eq!(
        qs.iter().map(|d| d.status).collect::<Vec<_>>(),
        vec![DeliveryStatus::Failed, DeliveryStatus::Delivered]
    );
    assert_eq!(qs[1].attempts, vec![attempt_like(&qs[1].attempts[0], 200)]);
}

fn attempt_like(got: &Attempt, status: u16) -> Attempt {
    Attempt {
        at: got.at,
        status: Some(status),
        error: None,
        duration_ms: 3,
    }
}

/// A redelivery makes a finished message pending and due again, with its id and history; an
/// unknown message is `NotFound`.
pub async fn redeliver_requeues_a_message(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[delivery(&p, 0)]).await;
    let w = WorkerId::generate();
    let lease = store.claim_deliveries(&w, LONG, 1).await.unwrap().remove(0);
    store
        .finish_delivery(&lease, &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    let id = lease.state.delivery.id.clone();
    store.redeliver(&p.id, &id).await.unwrap();
    let again = store.claim_deliveries(&w, LONG, 1).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].state.delivery.id, id);
    assert_eq!(again[0].state.attempts.len(), 1);
    assert_eq!(again[0].state.status, DeliveryStatus::Pending);
    assert!(matches!(
        store.redeliver(&p.id, "msg_unknown").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.redeliver(&PredictionId::generate(), &id).await,
        Err(Error::NotFound(_))
    ));
}

/// Many claimers race over many outboxes: every message is delivered exactly once, and each
/// prediction's messages in order.
pub async fn concurrent_delivery_claims_deliver_each_once(store: DynStore) {
    const PREDICTIONS: usize = 30;
    const PER: u32 = 4;
    let mut ids = Vec::new();
    for _ in 0..PREDICTIONS {
        let p = prediction();
        let effects: Vec<Effect> = (0..PER).map(|n| delivery(&p, n)).collect();
        insert(&store, &p, &effects).await;
        ids.push(p.id);
    }
    let delivered: Arc<Mutex<HashMap<PredictionId, Vec<String>>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (store, delivered) = (store.clone(), delivered.clone());
        tasks.push(tokio::spawn(async move {
            let w = WorkerId::generate();
            let mut idle = 0;
            while idle < 20 {
                let leases = store.claim_deliveries(&w, LONG, 5).await.unwrap();
                if leases.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                idle = 0;
                for lease in leases {
                    delivered
                        .lock()
                        .unwrap()
                        .entry(lease.state.delivery.prediction_id.clone())
                        .or_default()
                        .push(lease.state.delivery.id.clone());
                    store
                        .finish_delivery(&lease, &attempt(200), DeliveryOutcome::Delivered)
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let delivered = delivered.lock().unwrap();
    for id in &ids {
        let expected: Vec<String> = (0..PER).map(|n| format!("msg_{id}_{n}")).collect();
        assert_eq!(delivered.get(id), Some(&expected), "{id}");
    }
}

/// Events are appended with their write, numbered `(revision, index)`, and read back in order
/// from any position; a refused write appends none.
pub async fn events_are_appended_with_their_write_and_resumable(store: DynStore) {
    let p = prediction();
    let rev = insert(
        &store,
        &p,
        &[Effect::AppendEvents(vec![event(
            StreamEventKind::Logs,
            "starting\n",
        )])],
    )
    .await;
    let rev2 = store
        .update(
            &p.id,
            rev,
            &p,
            &[Effect::AppendEvents(vec![
                event(StreamEventKind::Output, "tok ✓"),
                event(StreamEventKind::Output, "{\"big\": \"data\"}"),
            ])],
        )
        .await
        .unwrap();
    let refused = store
        .update(
            &p.id,
            rev,
            &p,
            &[Effect::AppendEvents(vec![event(
                StreamEventKind::Error,
                "no",
            )])],
        )
        .await;
    assert!(matches!(refused, Err(Error::Conflict { .. })));
    let rev3 = store
        .update(
            &p.id,
            rev2,
            &p,
            &[Effect::AppendEvents(vec![event(
                StreamEventKind::Done,
                "{}",
            )])],
        )
        .await
        .unwrap();

    let all = store.read_events(&p.id, None, 100).await.unwrap();
    let positions: Vec<(Revision, u32)> = all.iter().map(|e| (e.revision, e.index)).collect();
    assert_eq!(positions, vec![(rev, 0), (rev2, 0), (rev2, 1), (rev3, 0)]);
    assert_eq!(all[1].event, event(StreamEventKind::Output, "tok ✓"));
    assert_eq!(all[3].event.kind, StreamEventKind::Done);

    let after = store
        .read_events(&p.id, Some((rev2, 0)), 100)
        .await
        .unwrap();
    assert_eq!(after, all[2..].to_vec());
    let page = store.read_events(&p.id, Some((rev, 0)), 1).await.unwrap();
    assert_eq!(page, all[1..2].to_vec());
    assert!(
        store
            .read_events(&p.id, Some((rev3, 0)), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_events(&PredictionId::generate(), None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Of 20 concurrent creates of one id, and then of 20 concurrent updates from one revision,
/// each carrying a job step, a counter and stream events, exactly one wins and only its effects
/// are written: one job, counters of one, and the winner's events alone at its revision.
pub async fn racing_writes_apply_only_the_winners_effects(store: DynStore) {
    let p = prediction();
    let creates: Vec<_> = (0..20)
        .map(|i| {
            let (store, p) = (store.clone(), p.clone());
            tokio::spawn(async move {
                let effects = [
                    crate::fixtures::enqueue_now(),
                    Effect::count("race_created", 1),
                    Effect::AppendEvents(vec![event(StreamEventKind::Output, &format!("c{i}"))]),
                ];
                let created = store
                    .create(NewPrediction {
                        prediction: &p,
                        idempotency: None,
                        effects: &effects,
                    })
                    .await
                    .unwrap();
                (i, matches!(created, Created::Inserted(_)))
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in creates {
        let (i, inserted) = t.await.unwrap();
        if inserted {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "creates that inserted: {winners:?}");
    let created_by = winners[0];
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.delayed), (1, 0, 0));

    let updates: Vec<_> = (0..20)
        .map(|i| {
            let (store, mut next) = (store.clone(), p.clone());
            next.logs = format!("u{i}");
            tokio::spawn(async move {
                let effects = [
                    Effect::CompleteJob,
                    Effect::count("race_updated", 1),
                    Effect::AppendEvents(vec![
                        event(StreamEventKind::Output, &format!("u{i}")),
                        event(StreamEventKind::Done, "{}"),
                    ]),
                ];
                let result = store
                    .update(&next.id, Revision::FIRST, &next, &effects)
                    .await;
                (i, result)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in updates {
        match t.await.unwrap() {
            (i, Ok(rev)) => {
                assert_eq!(rev, Revision(2));
                winners.push(i);
            }
            (_, Err(Error::Conflict { .. })) => {}
            (_, Err(e)) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "updates that won: {winners:?}");
    let updated_by = winners[0];
    assert_eq!(
        store.get(&p.id).await.unwrap().value.logs,
        format!("u{updated_by}")
    );
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.delayed), (0, 0, 0));
    let counters: HashMap<String, i64> = store.counters().await.unwrap().into_iter().collect();
    assert_eq!(counters.get("race_created"), Some(&1));
    assert_eq!(counters.get("race_updated"), Some(&1));
    let events = store.read_events(&p.id, None, 100).await.unwrap();
    let seen: Vec<(Revision, u32, String)> = events
        .iter()
        .map(|e| (e.revision, e.index, e.event.data.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (Revision(1), 0, format!("c{created_by}")),
            (Revision(2), 0, format!("u{updated_by}")),
            (Revision(2), 1, "{}".to_owned()),
        ]
    );
}

/// Expiry removes the event log and finished messages (they hold the prediction's data) and
/// keeps pending ones; deleting a prediction removes all of them.
pub async fn expiry_and_delete_remove_events_and_deliveries(store: DynStore) {
    let now = Timestamp::now();
    let mut p = prediction();
    p.status = Status::Succeeded;
    p.output = Some(json!("done"));
    p.expires_at = Some(now.minus(Duration::from_secs(1)));
    insert(
        &store,
        &p,
        &[
            delivery(&p, 0),
            delivery(&p, 1),
            Effect::AppendEvents(vec![event(StreamEventKind::Done, "{}")]),
        ],
    )
    .await;
    let w = WorkerId::generate();
    let lease = store.claim_deliveries(&w, LONG, 1).await.unwrap().remove(0);
    store
        .finish_delivery(&lease, &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert_eq!(store.expire(now, 100).await.unwrap(), vec![p.id.clone()]);
    assert!(store.read_events(&p.id, None, 10).await.unwrap().is_empty());
    let left = store.list_deliveries(&p.id).await.unwrap();
    assert_eq!(
        left.len(),
        1,
        "the pending message still goes out: {left:?}"
    );
    assert_eq!(left[0].delivery.id, format!("msg_{}_1", p.id));
    // Once it has gone, nothing of the prediction's data is kept.
    let lease = store.claim_deliveries(&w, LONG, 1).await.unwrap().remove(0);
    store
        .finish_delivery(&lease, &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert!(store.list_deliveries(&p.id).await.unwrap().is_empty());

    let q = prediction();
    insert(
        &store,
        &q,
        &[
            delivery(&q, 0),
            Effect::AppendEvents(vec![event(StreamEventKind::Logs, "x")]),
        ],
    )
    .await;
    store.delete(&q.id).await.unwrap();
    assert!(store.list_deliveries(&q.id).await.unwrap().is_empty());
    assert!(store.read_events(&q.id, None, 10).await.unwrap().is_empty());
    assert!(
        store
            .claim_deliveries(&w, LONG, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Deliveries (with their attempts and status) and events survive an export/import: imported
/// pending messages are claimable, in order.
pub async fn outbox_and_events_migrate(store: DynStore) {
    let p = prediction();
    let mut records = vec![Record::Prediction(Box::new(augur_core::Versioned {
        value: p.clone(),
        revision: Revision(3),
    }))];
    let mut states = BTreeMap::new();
    for (n, status) in [
        (0, DeliveryStatus::Delivered),
        (1, DeliveryStatus::Pending),
        (2, DeliveryStatus::Pending),
    ] {
        let state = augur_core::store::DeliveryState {
            delivery: delivery_of(&p, n),
            seq: u64::from(n) + 1,
            status,
            attempts: if n == 0 { vec![attempt(200)] } else { vec![] },
            next_attempt_at: (status == DeliveryStatus::Pending).then(Timestamp::now),
        };
        states.insert(n, state.clone());
        records.push(Record::Delivery(Box::new(state)));
    }
    let events: Vec<StreamEvent> = (0..3)
        .map(|i| StreamEvent {
            revision: Revision(1 + i / 2),
            index: (i % 2) as u32,
            event: event(StreamEventKind::Output, &format!("o{i}")),
        })
        .collect();
    records.extend(
        events
            .iter()
            .map(|e| Record::Event(p.id.clone(), e.clone())),
    );
    store.import(&records).await.unwrap();
    store.import(&records).await.unwrap();

    let listed = store.list_deliveries(&p.id).await.unwrap();
    assert_eq!(listed, states.into_values().collect::<Vec<_>>());
    assert_eq!(store.read_events(&p.id, None, 10).await.unwrap(), events);
    let w = WorkerId::generate();
    let head = store.claim_deliveries(&w, LONG, 10).await.unwrap();
    assert_eq!(head.len(), 1);
    assert_eq!(head[0].state.delivery.id, format!("msg_{}_1", p.id));
}
