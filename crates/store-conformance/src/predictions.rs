//! Conformance tests for prediction records: create, get, compare-and-set update, delete,
//! list, expiry, idempotency keys and counters.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use augur_core::service::counters;
use augur_core::store::{
    Created, Cursor, DynStore, Effect, Error, IdempotencyRecord, ListQuery, NewPrediction,
};
use augur_core::{
    AccountId, Event, Predictions, Revision, ServiceConfig, Status, Timestamp, TransitionError,
};
use serde_json::json;

use crate::fixtures::{enqueue_now, insert, prediction, prediction_for};

fn counter(all: &[(String, i64)], name: &str) -> i64 {
    all.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
}

/// A created prediction reads back identical, at revision 1.
pub async fn create_then_get_round_trips(store: DynStore) {
    let mut p = prediction();
    p.webhook = Some("https://example.com/hook?a=1".into());
    p.metrics.extra.insert("custom".into(), json!(1.5));
    p.deadline = Some(Timestamp::from_micros(1_700_000_000_000_000));
    let rev = insert(&store, &p, &[]).await;
    assert_eq!(rev, Revision::FIRST);
    let got = store.get(&p.id).await.unwrap();
    assert_eq!(got.revision, Revision::FIRST);
    assert_eq!(got.value, p);
}

/// Reading an unknown id is `NotFound`.
pub async fn get_unknown_is_not_found(store: DynStore) {
    let p = prediction();
    assert!(matches!(store.get(&p.id).await, Err(Error::NotFound(id)) if id == p.id));
}

/// Creating an id that exists writes nothing and returns the stored record.
pub async fn create_is_idempotent_on_id(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[enqueue_now()]).await;
    let mut other = p.clone();
    other.input = json!({"different": true});
    let again = store
        .create(NewPrediction {
            prediction: &other,
            idempotency: None,
            effects: &[enqueue_now(), Effect::count("c", 1)],
        })
        .await
        .unwrap();
    match again {
        Created::ExistingId(existing) => assert_eq!(existing.value, p),
        other => panic!("expected ExistingId, got {other:?}"),
    }
    assert_eq!(counter(&store.counters().await.unwrap(), "c"), 0);
    assert_eq!(store.queue_stats().await.unwrap().ready, 1);
}

/// A create's effects (job, counters) are applied with it.
pub async fn create_applies_effects_atomically(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[enqueue_now(), Effect::count("made", 2)]).await;
    assert_eq!(store.queue_stats().await.unwrap().ready, 1);
    assert_eq!(counter(&store.counters().await.unwrap(), "made"), 2);
}

fn key_record(
    owner: &AccountId,
    key: &str,
    fp: &str,
    p: &augur_core::Prediction,
) -> IdempotencyRecord {
    IdempotencyRecord {
        owner: owner.clone(),
        key: key.into(),
        fingerprint: fp.into(),
        prediction_id: p.id.clone(),
        expires_at: Timestamp::now().plus(Duration::from_secs(3600)),
    }
}

/// A live idempotency key returns the record and prediction of its first use; nothing new is
/// written.
pub async fn idempotency_key_returns_first_prediction(store: DynStore) {
    let owner = AccountId::admin();
    let first = prediction();
    let record = key_record(&owner, "key-1", "fp-a", &first);
    let created = store
        .create(NewPrediction {
            prediction: &first,
            idempotency: Some(&record),
            effects: &[enqueue_now()],
        })
        .await
        .unwrap();
    assert_eq!(created, Created::Inserted(Revision::FIRST));

    let second = prediction();
    let retry = key_record(&owner, "key-1", "fp-b", &second);
    match store
        .create(NewPrediction {
            prediction: &second,
            idempotency: Some(&retry),
            effects: &[enqueue_now()],
        })
        .await
        .unwrap()
    {
        Created::ExistingKey {
            record: stored,
            prediction: Some(p),
        } => {
            assert_eq!(stored.fingerprint, "fp-a");
            assert_eq!(stored.prediction_id, first.id);
            assert_eq!(p.value.id, first.id);
        }
        other => panic!("expected ExistingKey, got {other:?}"),
    }
    assert!(matches!(
        store.get(&second.id).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.queue_stats().await.unwrap().ready, 1);
}

/// The same key used by two owners creates two predictions.
pub async fn idempotency_keys_are_scoped_to_owner(store: DynStore) {
    let alice = AccountId::parse("alice").unwrap();
    let bob = AccountId::parse("bob").unwrap();
    for owner in [&alice, &bob] {
        let p = prediction_for(owner);
        let record = key_record(owner, "shared-key", "fp", &p);
        let created = store
            .create(NewPrediction {
                prediction: &p,
                idempotency: Some(&record),
                effects: &[],
            })
            .await
            .unwrap();
        assert_eq!(created, Created::Inserted(Revision::FIRST), "{owner}");
    }
}

/// Of 20 concurrent creates of one id, exactly one inserts and applies its effects.
pub async fn concurrent_creates_insert_once(store: DynStore) {
    let p = prediction();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let p = p.clone();
            tokio::spawn(async move {
                store
                    .create(NewPrediction {
                        prediction: &p,
                        idempotency: None,
                        effects: &[Effect::count("inserted", 1)],
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut inserted = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Created::Inserted(_)) {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1);
    assert_eq!(counter(&store.counters().await.unwrap(), "inserted"), 1);
}

/// An update naming a stale revision is a `Conflict` and changes nothing.
pub async fn update_rejects_stale_revision(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[]).await;
    let mut next = p.clone();
    next.logs = "first".into();
    let rev = store
        .update(&p.id, Revision::FIRST, &next, &[])
        .await
        .unwrap();
    assert_eq!(rev, Revision(2));
    let mut stale = p.clone();
    stale.logs = "second".into();
    match store.update(&p.id, Revision::FIRST, &stale, &[]).await {
        Err(Error::Conflict { expected, actual }) => {
            assert_eq!((expected, actual), (Revision::FIRST, Revision(2)));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let got = store.get(&p.id).await.unwrap();
    assert_eq!(
        (got.revision, got.value.logs.as_str()),
        (Revision(2), "first")
    );
}

/// A refused update applies none of its effects.
pub async fn failed_update_applies_no_effects(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[enqueue_now()]).await;
    let result = store
        .update(
            &p.id,
            Revision(7),
            &p,
            &[Effect::CompleteJob, Effect::count("never", 1)],
        )
        .await;
    assert!(matches!(result, Err(Error::Conflict { .. })));
    assert_eq!(counter(&store.counters().await.unwrap(), "never"), 0);
    assert_eq!(store.queue_stats().await.unwrap().ready, 1);
}

/// Updating an unknown id is `NotFound`.
pub async fn update_unknown_is_not_found(store: DynStore) {
    let p = prediction();
    let result = store.update(&p.id, Revision::FIRST, &p, &[]).await;
    assert!(matches!(result, Err(Error::NotFound(_))));
}

/// Of 50 concurrent updates from the same revision exactly one succeeds; the rest conflict.
pub async fn concurrent_updates_have_one_winner(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[]).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            let mut next = p.clone();
            next.logs = format!("writer {i}");
            tokio::spawn(async move {
                store
                    .update(
                        &next.id,
                        Revision::FIRST,
                        &next,
                        &[Effect::count("wins", 1)],
                    )
                    .await
            })
        })
        .collect();
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(rev) => {
                assert_eq!(rev, Revision(2));
                ok += 1;
            }
            Err(Error::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 49));
    assert_eq!(counter(&store.counters().await.unwrap(), "wins"), 1);
}

/// 50 tasks race conflicting terminal transitions through the service: exactly one wins, the
/// others get a conflicting-terminal or invalid-transition error, and it settles once.
pub async fn racing_terminal_transitions_have_one_winner(store: DynStore) {
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    let p = prediction();
    insert(&store, &p, &[enqueue_now()]).await;
    service
        .transition(&p.id, &Event::processing())
        .await
        .unwrap();
    let service = Arc::new(service);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let service = service.clone();
            let id = p.id.clone();
            tokio::spawn(async move {
                let event = match i % 3 {
                    0 => Event::succeeded(json!(format!("output {i}"))),
                    1 => Event::failed(format!("error {i}")),
                    _ => Event::canceled(),
                };
                service.transition(&id, &event).await
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(t) if t.changed => winners += 1,
            Ok(_) => {}
            Err(augur_core::Error::Transition(
                TransitionError::ConflictingTerminal { .. } | TransitionError::Invalid(_),
            )) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners, 1);
    let all = store.counters().await.unwrap();
    assert_eq!(counter(&all, counters::SETTLED), 1);
    assert!(store.get(&p.id).await.unwrap().value.is_terminal());
    assert_eq!(store.queue_stats().await.unwrap(), Default::default());
}

/// Delete removes the prediction and its job; deleting again is fine.
pub async fn delete_removes_prediction_and_job(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[enqueue_now()]).await;
    store.delete(&p.id).await.unwrap();
    assert!(matches!(store.get(&p.id).await, Err(Error::NotFound(_))));
    assert_eq!(store.queue_stats().await.unwrap(), Default::default());
    store.delete(&p.id).await.unwrap();
}

/// Listing pages through `(created_at, id)` descending without gaps or repeats, ties
/// included.
pub async fn list_pages_newest_first_without_gaps(store: DynStore) {
    let owner =
        AccountId::parse(&format!("lister-{}", augur_core::PredictionId::generate())).unwrap();
    let base = Timestamp::now().as_micros();
    let mut expected = Vec::new();
    for i in 0..23 {
        let mut p = prediction_for(&owner);
        // Pairs share a creation time so the id must break the tie.
        p.created_at = Timestamp::from_micros(base + (i / 2) * 1000);
        insert(&store, &p, &[]).await;
        expected.push((p.created_at, p.id.clone()));
    }
    expected.sort();
    expected.reverse();

    let mut seen = Vec::new();
    let mut after: Option<Cursor> = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(&ListQuery {
                owner: Some(owner.clone()),
                after: after.clone(),
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 5);
        seen.extend(
            page.items
                .iter()
                .map(|p| (p.value.created_at, p.value.id.clone())),
        );
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 5);
}

/// Owner, status and creation-range filters combine.
pub async fn list_filters_combine(store: DynStore) {
    let owner =
        AccountId::parse(&format!("filter-{}", augur_core::PredictionId::generate())).unwrap();
    let other =
        AccountId::parse(&format!("other-{}", augur_core::PredictionId::generate())).unwrap();
    let base = Timestamp::now().as_micros();
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut p = prediction_for(if i == 5 { &other } else { &owner });
        p.created_at = Timestamp::from_micros(base + i * 1_000_000);
        if i % 2 == 1 {
            p.status = Status::Failed;
        }
        insert(&store, &p, &[]).await;
        ids.push(p.id.clone());
    }
    let query = |status, after: Option<i64>, before: Option<i64>| ListQuery {
        owner: Some(owner.clone()),
        status,
        created_after: after.map(|s| Timestamp::from_micros(base + s * 1_000_000)),
        created_before: before.map(|s| Timestamp::from_micros(base + s * 1_000_000)),
        after: None,
        limit: 100,
    };
    let ids_of = |page: augur_core::store::Page| -> Vec<_> {
        page.items.into_iter().map(|p| p.value.id).collect()
    };
    let failed = ids_of(
        store
            .list(&query(Some(Status::Failed), None, None))
            .await
            .unwrap(),
    );
    assert_eq!(failed, vec![ids[3].clone(), ids[1].clone()]);
    let ranged = ids_of(store.list(&query(None, Some(1), Some(4))).await.unwrap());
    assert_eq!(ranged, vec![ids[3].clone(), ids[2].clone(), ids[1].clone()]);
    let both = ids_of(
        store
            .list(&query(Some(Status::Starting), Some(1), Some(5)))
            .await
            .unwrap(),
    );
    assert_eq!(both, vec![ids[4].clone(), ids[2].clone()]);
    let all_owners = store
        .list(&ListQuery {
            created_after: Some(Timestamp::from_micros(base)),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let seen: HashSet<_> = all_owners
        .items
        .iter()
        .map(|p| p.value.id.clone())
        .collect();
    assert!(ids.iter().all(|id| seen.contains(id)));
}

/// Expiry replaces due predictions by tombstones (new revision, no input, output or logs) and
/// leaves the rest alone.
pub async fn expire_leaves_tombstones(store: DynStore) {
    let now = Timestamp::now();
    let mut due = prediction();
    due.status = Status::Succeeded;
    due.output = Some(json!(["https://x/y.png"]));
    due.logs = "secret logs".into();
    due.expires_at = Some(now.minus(Duration::from_secs(1)));
    let mut later = prediction();
    later.expires_at = Some(now.plus(Duration::from_secs(3600)));
    let never = prediction();
    for p in [&due, &later, &never] {
        insert(&store, p, &[]).await;
    }
    let expired = store.expire(now, 1000).await.unwrap();
    assert_eq!(expired, vec![due.id.clone()]);
    let got = store.get(&due.id).await.unwrap();
    assert_eq!(got.revision, Revision(2));
    assert!(got.value.data_removed);
    assert!(got.value.input.is_null() && got.value.output.is_none() && got.value.logs.is_empty());
    assert_eq!(got.value.status, Status::Succeeded);
    assert_eq!(store.get(&later.id).await.unwrap().value, later);
    assert_eq!(store.get(&never.id).await.unwrap().value, never);
    // A second sweep finds nothing more to do for the tombstone.
    assert!(store.expire(now, 1000).await.unwrap().is_empty());
    assert_eq!(store.get(&due.id).await.unwrap().revision, Revision(2));
}

/// Idempotency keys past their expiry are forgotten, so the key can be used afresh.
pub async fn expired_idempotency_keys_are_forgotten(store: DynStore) {
    let owner = AccountId::admin();
    let first = prediction();
    let mut record = key_record(&owner, "short-lived", "fp", &first);
    record.expires_at = Timestamp::now().plus(Duration::from_millis(200));
    store
        .create(NewPrediction {
            prediction: &first,
            idempotency: Some(&record),
            effects: &[],
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.expire(Timestamp::now(), 1000).await.unwrap();
    let second = prediction();
    let record = key_record(&owner, "short-lived", "fp2", &second);
    let created = store
        .create(NewPrediction {
            prediction: &second,
            idempotency: Some(&record),
            effects: &[],
        })
        .await
        .unwrap();
    assert_eq!(created, Created::Inserted(Revision::FIRST));
}

/// Counter effects add up across creates and updates.
pub async fn counters_accumulate(store: DynStore) {
    let p = prediction();
    insert(&store, &p, &[Effect::count("a", 1), Effect::count("b", 5)]).await;
    store
        .update(
            &p.id,
            Revision::FIRST,
            &p,
            &[Effect::count("a", 2), Effect::count("b", -1)],
        )
        .await
        .unwrap();
    let all = store.counters().await.unwrap();
    assert_eq!((counter(&all, "a"), counter(&all, "b")), (3, 4));
}

/// Large (1 MiB of logs, a big input) and non-ASCII records survive unchanged.
pub async fn large_and_unicode_records_round_trip(store: DynStore) {
    let mut p = prediction();
    p.input = json!({"prompt": "ein Bär 🐻 — «ünïcödé»", "blob": "x".repeat(200_000)});
    p.logs = "line ✓\n".repeat(100_000);
    p.output = Some(json!({"nested": [1, 2.5, null, {"k": "v"}], "emoji": "🎨"}));
    insert(&store, &p, &[]).await;
    assert_eq!(store.get(&p.id).await.unwrap().value, p);
}
