//! Conformance tests for the webhook outbox (items of the webhooks lane: each prediction's
//! messages in order, with their attempts) and the per-record event log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::outbox::{Delivery, DeliveryOutcome, DeliveryStatus, Outbox};
use augur_core::store::Entity;
use augur_core::store::{
    Attempt, DynStore, Effect, Error, Lane, Op, StreamEventData, StreamEventKind, Write,
};
use augur_core::{Prediction, PredictionId, Revision, Status, Timestamp, WebhookEvent, WorkerId};
use serde_json::json;

use crate::fixtures::{
    LONG, enqueue_now, eventually, get, insert, insert_write, prediction, update,
};

/// The effect that puts message number `n` of `p` in its outbox.
pub fn delivery(p: &Prediction, n: u32) -> Effect {
    delivery_of(p, n).enqueue(&p.owner).expect("encodes")
}

fn delivery_of(p: &Prediction, n: u32) -> Delivery {
    Delivery::for_prediction(
        format!("msg_{}_{n}", p.id),
        "https://hooks.example.com/augur?x=1".into(),
        if n == 0 {
            WebhookEvent::Start
        } else {
            WebhookEvent::Completed
        },
        p.clone(),
        Timestamp::now(),
    )
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

fn events(p: &Prediction, list: Vec<StreamEventData>) -> Effect {
    Effect::AppendEvents {
        stream: p.key(),
        events: list,
    }
}

/// Deliveries are written with the write that makes them, numbered in order, and a write that
/// loses its compare-and-set enqueues none.
pub async fn deliveries_are_enqueued_with_their_write(store: DynStore) {
    let outbox = Outbox::new(store.clone());
    let mut p = prediction();
    p.webhook = Some("https://hooks.example.com/augur?x=1".into());
    let rev = insert(&store, &p, vec![delivery(&p, 0)]).await;
    let mut next = p.clone();
    next.status = Status::Processing;
    update(&store, &next, rev, vec![delivery(&next, 1)])
        .await
        .unwrap();
    // A stale write: refused, and its delivery is not written.
    let refused = update(&store, &next, rev, vec![delivery(&next, 2)]).await;
    assert!(
        matches!(refused, Err(Error::Conflict { .. })),
        "{refused:?}"
    );

    let listed = outbox.list(&p.id).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0].delivery.id, format!("msg_{}_0", p.id));
    assert_eq!(listed[0].delivery.payload.prediction(), Some(&p));
    assert_eq!(
        listed[0].delivery.url,
        "https://hooks.example.com/augur?x=1"
    );
    assert_eq!(
        listed[1].delivery.payload.prediction().map(|p| p.status),
        Some(Status::Processing)
    );
    assert!(listed[0].seq < listed[1].seq);
    for d in &listed {
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert!(d.attempts.is_empty());
        assert!(d.next_attempt_at.is_some());
    }
    // Another prediction's outbox is its own.
    assert!(
        outbox
            .list(&PredictionId::generate())
            .await
            .unwrap()
            .is_empty()
    );
}

/// A prediction's messages go out one at a time, in order: the next waits until the one before
/// it is delivered or given up, also while that one waits for a retry. Other predictions'
/// messages do not wait for it.
pub async fn groups_go_out_in_order(store: DynStore) {
    let outbox = Outbox::new(store.clone());
    let p = prediction();
    let other = prediction();
    insert(&store, &p, vec![delivery(&p, 0), delivery(&p, 1)]).await;
    insert(&store, &other, vec![delivery(&other, 0)]).await;
    let w = WorkerId::generate();

    let mut first = outbox.claim(&w, LONG, 10).await.unwrap();
    first.sort_by_key(|l| l.state.delivery.subject_id() == other.id.as_str());
    assert_eq!(first.len(), 2, "one head per prediction: {first:?}");
    assert_eq!(first[0].state.delivery.id, format!("msg_{}_0", p.id));
    assert_eq!(first[1].state.delivery.id, format!("msg_{}_0", other.id));

    // The head fails; its retry is due later, and its successor keeps waiting.
    let retry_at = Timestamp::now().plus(Duration::from_millis(400));
    outbox
        .finish(&first[0], &attempt(500), DeliveryOutcome::RetryAt(retry_at))
        .await
        .unwrap();
    outbox
        .finish(&first[1], &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert!(outbox.claim(&w, LONG, 10).await.unwrap().is_empty());

    let again = eventually("the retry to come due", Duration::from_secs(10), || {
        let (outbox, w) = (outbox.clone(), w.clone());
        async move {
            let got = outbox.claim(&w, LONG, 10).await.unwrap();
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
    outbox
        .finish(&again[0], &attempt(204), DeliveryOutcome::Delivered)
        .await
        .unwrap();

    let last = outbox.claim(&w, LONG, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].state.delivery.id, format!("msg_{}_1", p.id));
    outbox
        .finish(&last[0], &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert!(outbox.claim(&w, LONG, 10).await.unwrap().is_empty());
}

/// A claimed message is invisible to other claimers until its lease lapses; then another may
/// claim it and the first holder can no longer finish it.
pub async fn delivery_claims_are_exclusive_until_the_lease_lapses(store: DynStore) {
    let outbox = Outbox::new(store.clone());
    let p = prediction();
    insert(&store, &p, vec![delivery(&p, 0)]).await;
    let (a, b) = (WorkerId::generate(), WorkerId::generate());
    let held = outbox
        .claim(&a, Duration::from_millis(400), 10)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].worker(), &a);
    assert!(held[0].expires_at() > Timestamp::now());
    assert!(outbox.claim(&b, LONG, 10).await.unwrap().is_empty());

    let taken = eventually("the lease to lapse", Duration::from_secs(10), || {
        let (outbox, b) = (outbox.clone(), b.clone());
        async move {
            let got = outbox.claim(&b, LONG, 10).await.unwrap();
            (!got.is_empty()).then_some(got)
        }
    })
    .await;
    assert_eq!(taken[0].state.delivery.id, held[0].state.delivery.id);
    assert_ne!(taken[0].token(), held[0].token());
    let late = outbox
        .finish(&held[0], &attempt(200), DeliveryOutcome::Delivered)
        .await;
    assert!(matches!(late, Err(Error::LeaseLost)), "{late:?}");
}

/// Finishing needs the current lease: a second finish is `LeaseLost` and leaves no trace.
pub async fn finishing_needs_the_current_lease(store: DynStore) {
    let outbox = Outbox::new(store.clone());
    let p = prediction();
    insert(&store, &p, vec![delivery(&p, 0)]).await;
    let w = WorkerId::generate();
    let lease = outbox.claim(&w, LONG, 1).await.unwrap().remove(0);
    outbox
        .finish(&lease, &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert!(matches!(
        outbox
            .finish(&lease, &attempt(200), DeliveryOutcome::Delivered)
            .await,
        Err(Error::LeaseLost)
    ));
    let listed = outbox.list(&p.id).await.unwrap();
    assert_eq!(
        listed[0].attempts.len(),
        1,
        "the refused finish left no trace"
    );
}

/// Every attempt is recorded in order; `GiveUp` fails the message, and with `drop_rest` the
/// prediction's later pending messages too.
pub async fn attempts_are_recorded_and_outcomes_applied(store: DynStore) {
    let outbox = Outbox::new(store.clone());
    let p = prediction();
    insert(
        &store,
        &p,
        vec![delivery(&p, 0), delivery(&p, 1), delivery(&p, 2)],
    )
    .await;
    let q = prediction();
    insert(&store, &q, vec![delivery(&q, 0), delivery(&q, 1)]).await;
    let w = WorkerId::generate();

    let heads = outbox.claim(&w, LONG, 10).await.unwrap();
    assert_eq!(heads.len(), 2);
    for lease in &heads {
        let failure = Attempt {
            at: Timestamp::now(),
            status: None,
            error: Some("connection refused ✗".into()),
            duration_ms: 1,
        };
        let outcome = if lease.state.delivery.subject_id() == p.id.as_str() {
            // p's receiver is gone for good (410): p's messages are all given up.
            DeliveryOutcome::GiveUp { drop_rest: true }
        } else {
            // q's first message ran out of retries; the next one may still go.
            DeliveryOutcome::GiveUp { drop_rest: false }
        };
        outbox.finish(lease, &failure, outcome).await.unwrap();
    }
    let ps = outbox.list(&p.id).await.unwrap();
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

    let next = outbox.claim(&w, LONG, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].state.delivery.id, format!("msg_{}_1", q.id));
    outbox
        .finish(&next[0], &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    let qs = outbox.list(&q.id).await.unwrap();
    assert_eq!(
        qs.iter().map(|d| d.status).collect::<Vec<_>>(),
        vec![DeliveryStatus::Failed, DeliveryStatus::Delivered]
    );
    assert_eq!(qs[1].attempts.len(), 1);
    assert_eq!(qs[1].attempts[0].status, Some(200));
}

/// A requeue (redelivery) makes a finished message pending and due again, with its id and
/// history; an unknown message is `NotFound`.
pub async fn requeue_makes_an_item_pending_again(store: DynStore) {
    let outbox = Outbox::new(store.clone());
    let p = prediction();
    insert(&store, &p, vec![delivery(&p, 0)]).await;
    let w = WorkerId::generate();
    let lease = outbox.claim(&w, LONG, 1).await.unwrap().remove(0);
    outbox
        .finish(&lease, &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    let id = lease.state.delivery.id.clone();
    outbox.redeliver(&p.id, &id).await.unwrap();
    let again = outbox.claim(&w, LONG, 1).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].state.delivery.id, id);
    assert_eq!(again[0].state.attempts.len(), 1);
    assert_eq!(again[0].state.status, DeliveryStatus::Pending);
    assert!(matches!(
        outbox.redeliver(&p.id, "msg_unknown").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        outbox.redeliver(&PredictionId::generate(), &id).await,
        Err(Error::NotFound(_))
    ));
}

/// Many claimers race over many outboxes: every message is delivered exactly once, and each
/// prediction's messages in order.
pub async fn concurrent_claims_of_groups_deliver_each_once(store: DynStore) {
    const PREDICTIONS: usize = 30;
    const PER: u32 = 4;
    let outbox = Outbox::new(store.clone());
    let mut ids = Vec::new();
    for _ in 0..PREDICTIONS {
        let p = prediction();
        let effects: Vec<Effect> = (0..PER).map(|n| delivery(&p, n)).collect();
        insert(&store, &p, effects).await;
        ids.push(p.id);
    }
    let delivered: Arc<Mutex<HashMap<PredictionId, Vec<String>>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (outbox, delivered) = (outbox.clone(), delivered.clone());
        tasks.push(tokio::spawn(async move {
            let w = WorkerId::generate();
            let mut idle = 0;
            while idle < 20 {
                let leases = outbox.claim(&w, LONG, 5).await.unwrap();
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
                        .entry(
                            PredictionId::parse(lease.state.delivery.subject_id())
                                .expect("a prediction's message"),
                        )
                        .or_default()
                        .push(lease.state.delivery.id.clone());
                    outbox
                        .finish(&lease, &attempt(200), DeliveryOutcome::Delivered)
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
    let key = p.key();
    let rev = insert(
        &store,
        &p,
        vec![events(&p, vec![event(StreamEventKind::Logs, "starting\n")])],
    )
    .await;
    let rev2 = update(
        &store,
        &p,
        rev,
        vec![events(
            &p,
            vec![
                event(StreamEventKind::Output, "tok ✓"),
                event(StreamEventKind::Output, "{\"big\": \"data\"}"),
            ],
        )],
    )
    .await
    .unwrap()
    .revisions[0]
        .unwrap();
    let refused = update(
        &store,
        &p,
        rev,
        vec![events(&p, vec![event(StreamEventKind::Error, "no")])],
    )
    .await;
    assert!(matches!(refused, Err(Error::Conflict { .. })));
    let rev3 = update(
        &store,
        &p,
        rev2,
        vec![events(&p, vec![event(StreamEventKind::Done, "{}")])],
    )
    .await
    .unwrap()
    .revisions[0]
        .unwrap();

    let all = store.read_events(&key, None, 100).await.unwrap();
    let positions: Vec<(Revision, u32)> = all.iter().map(|e| (e.revision, e.index)).collect();
    assert_eq!(positions, vec![(rev, 0), (rev2, 0), (rev2, 1), (rev3, 0)]);
    assert_eq!(all[1].event, event(StreamEventKind::Output, "tok ✓"));
    assert_eq!(all[3].event.kind, StreamEventKind::Done);

    let after = store.read_events(&key, Some((rev2, 0)), 100).await.unwrap();
    assert_eq!(after, all[2..].to_vec());
    let page = store.read_events(&key, Some((rev, 0)), 1).await.unwrap();
    assert_eq!(page, all[1..2].to_vec());
    assert!(
        store
            .read_events(&key, Some((rev3, 0)), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_events(&PredictionId::generate().key(), None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Events for a record the write does not write are refused.
    let q = prediction();
    let stray =
        Write::new(q.owner.clone()).effects([events(&q, vec![event(StreamEventKind::Logs, "x")])]);
    assert!(matches!(store.write(&stray).await, Err(Error::Invalid(_))));
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
                let effects = vec![
                    enqueue_now(&p),
                    Effect::count("race_created", 1),
                    events(&p, vec![event(StreamEventKind::Output, &format!("c{i}"))]),
                ];
                (i, store.write(&insert_write(&p, effects)).await.is_ok())
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
    let stats = store.queue_stats(Lane::Jobs).await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.delayed), (1, 0, 0));

    let updates: Vec<_> = (0..20)
        .map(|i| {
            let (store, mut next) = (store.clone(), p.clone());
            next.logs = format!("u{i}");
            tokio::spawn(async move {
                let effects = vec![
                    augur_core::jobs::complete(&next.id),
                    Effect::count("race_updated", 1),
                    events(
                        &next,
                        vec![
                            event(StreamEventKind::Output, &format!("u{i}")),
                            event(StreamEventKind::Done, "{}"),
                        ],
                    ),
                ];
                (i, update(&store, &next, Revision::FIRST, effects).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in updates {
        match t.await.unwrap() {
            (i, Ok(written)) => {
                assert_eq!(written.revisions, vec![Some(Revision(2))]);
                winners.push(i);
            }
            (_, Err(Error::Conflict { .. })) => {}
            (_, Err(e)) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "updates that won: {winners:?}");
    let updated_by = winners[0];
    assert_eq!(
        get(&store, &p.id).await.unwrap().value.logs,
        format!("u{updated_by}")
    );
    let stats = store.queue_stats(Lane::Jobs).await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.delayed), (0, 0, 0));
    assert_eq!(crate::fixtures::counter(&store, "race_created").await, 1);
    assert_eq!(crate::fixtures::counter(&store, "race_updated").await, 1);
    let seen: Vec<(Revision, u32, String)> = store
        .read_events(&p.key(), None, 100)
        .await
        .unwrap()
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
pub async fn expiry_and_delete_remove_events_and_items(store: DynStore) {
    let outbox = Outbox::new(store.clone());
    let now = Timestamp::now();
    let mut p = prediction();
    p.status = Status::Succeeded;
    p.output = Some(json!("done"));
    p.expires_at = Some(now.minus(Duration::from_secs(1)));
    insert(
        &store,
        &p,
        vec![
            delivery(&p, 0),
            delivery(&p, 1),
            events(&p, vec![event(StreamEventKind::Done, "{}")]),
        ],
    )
    .await;
    let w = WorkerId::generate();
    let lease = outbox.claim(&w, LONG, 1).await.unwrap().remove(0);
    outbox
        .finish(&lease, &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert_eq!(store.expire(now, 100).await.unwrap(), vec![p.key()]);
    assert!(
        store
            .read_events(&p.key(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let left = outbox.list(&p.id).await.unwrap();
    assert_eq!(
        left.len(),
        1,
        "the pending message still goes out: {left:?}"
    );
    assert_eq!(left[0].delivery.id, format!("msg_{}_1", p.id));
    // Once it has gone, nothing of the prediction's data is kept.
    let lease = outbox.claim(&w, LONG, 1).await.unwrap().remove(0);
    outbox
        .finish(&lease, &attempt(200), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert!(outbox.list(&p.id).await.unwrap().is_empty());

    let q = prediction();
    insert(
        &store,
        &q,
        vec![
            delivery(&q, 0),
            events(&q, vec![event(StreamEventKind::Logs, "x")]),
        ],
    )
    .await;
    store
        .write(&Write::new(q.owner.clone()).op(Op::Delete(q.key())))
        .await
        .unwrap();
    assert!(outbox.list(&q.id).await.unwrap().is_empty());
    assert!(
        store
            .read_events(&q.key(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(outbox.claim(&w, LONG, 10).await.unwrap().is_empty());
}
