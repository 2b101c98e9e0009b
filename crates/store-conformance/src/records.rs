//! Conformance tests for records: writes (insert, compare-and-set update, delete, several
//! records at once), reads, listings, retention, counters and idempotency keys.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use augur_core::idempotency::IdempotencyKey;
use augur_core::service::counters;
use augur_core::store::{
    Cursor, DynStore, Effect, Entity, Error, Key, Kind, Lane, ListQuery, Op, Partition, Record,
    Write,
};
use augur_core::{
    AccountId, CreateRequest, Creation, Event, ModelName, PredictionId, Predictions, Revision,
    ServiceConfig, Status, Timestamp, TransitionError, WebhookEvents,
};
use serde_json::json;

use crate::fixtures::{
    account, counter, enqueue_now, get, insert, insert_write, prediction, prediction_for, update,
    update_write,
};

/// A stored prediction reads back identical, at revision 1.
pub async fn insert_then_get_round_trips(store: DynStore) {
    let mut p = prediction();
    p.webhook = Some("https://example.com/hook?a=1".into());
    p.metrics.extra.insert("custom".into(), json!(1.5));
    p.deadline = Some(Timestamp::from_micros(1_700_000_000_000_000));
    p.external_id = Some("upstream-1".into());
    p.deployment = Some("acme/web".into());
    let rev = insert(&store, &p, vec![]).await;
    assert_eq!(rev, Revision::FIRST);
    let got = get(&store, &p.id).await.expect("present");
    assert_eq!(got.revision, Revision::FIRST);
    assert_eq!(got.value, p);
    let stored = store.get(&p.key()).await.unwrap().unwrap();
    assert_eq!(
        stored.record,
        p.to_record().unwrap(),
        "indexed columns kept"
    );
}

/// Reading an unknown key is `None`.
pub async fn get_unknown_is_none(store: DynStore) {
    let p = prediction();
    assert!(store.get(&p.key()).await.unwrap().is_none());
}

/// Inserting a key that exists is `Exists`, writes nothing, effects included, and leaves the
/// stored record as it was.
pub async fn insert_of_an_existing_key_writes_nothing(store: DynStore) {
    let p = prediction();
    insert(&store, &p, vec![enqueue_now(&p)]).await;
    let mut other = p.clone();
    other.input = json!({"different": true});
    let again = store
        .write(&insert_write(
            &other,
            vec![enqueue_now(&other), Effect::count("c", 1)],
        ))
        .await;
    assert!(
        matches!(&again, Err(Error::Exists(k)) if *k == p.key()),
        "{again:?}"
    );
    assert_eq!(counter(&store, "c").await, 0);
    assert_eq!(store.queue_stats(Lane::Jobs).await.unwrap().ready, 1);
    assert_eq!(get(&store, &p.id).await.unwrap().value, p);
}

/// A write's effects (a job, counters) are applied with it.
pub async fn a_write_applies_its_effects(store: DynStore) {
    let p = prediction();
    insert(&store, &p, vec![enqueue_now(&p), Effect::count("made", 2)]).await;
    assert_eq!(store.queue_stats(Lane::Jobs).await.unwrap().ready, 1);
    assert_eq!(counter(&store, "made").await, 2);
}

/// A write of several records is all or nothing, and the first failing operation names the
/// error: a prediction with a new key commits with it; a second prediction reusing the key
/// fails on the key and leaves no trace; one reusing the first's id fails on the id first.
pub async fn a_write_of_several_records_is_atomic(store: DynStore) {
    let owner = AccountId::admin();
    let now = Timestamp::now();
    let key_of = |p: &augur_core::Prediction, fp: &str| IdempotencyKey {
        owner: owner.clone(),
        key: "key-1 ✓".into(),
        fingerprint: fp.into(),
        prediction_id: p.id.clone(),
        batch_id: None,
        run_id: None,
        created_at: now,
        expires_at: now.plus(Duration::from_secs(3600)),
    };
    let first = prediction();
    let mut write = insert_write(&first, vec![enqueue_now(&first)]);
    write
        .ops
        .push(Op::Insert(key_of(&first, "fp-a").to_record().unwrap()));
    let written = store.write(&write).await.unwrap();
    assert_eq!(written.revisions, vec![Some(Revision::FIRST); 2]);

    let second = prediction();
    let mut retry = insert_write(&second, vec![enqueue_now(&second), Effect::count("c", 1)]);
    let key = key_of(&second, "fp-b");
    retry.ops.push(Op::Insert(key.to_record().unwrap()));
    let refused = store.write(&retry).await;
    assert!(
        matches!(&refused, Err(Error::Exists(k)) if *k == key.key()),
        "{refused:?}"
    );
    assert!(
        get(&store, &second.id).await.is_none(),
        "no part of it was written"
    );
    assert_eq!(counter(&store, "c").await, 0);
    assert_eq!(store.queue_stats(Lane::Jobs).await.unwrap().ready, 1);
    let stored = store.get(&key.key()).await.unwrap().unwrap();
    let stored = stored.decode::<IdempotencyKey>().unwrap();
    assert_eq!(
        (stored.prediction_id.clone(), stored.fingerprint.as_str()),
        (first.id.clone(), "fp-a")
    );

    let mut both = insert_write(&first, vec![]);
    both.ops.push(Op::Insert(key.to_record().unwrap()));
    let refused = store.write(&both).await;
    assert!(
        matches!(&refused, Err(Error::Exists(k)) if *k == first.key()),
        "{refused:?}"
    );
}

/// A write inserting several predictions, one of which exists, is `Exists` naming that one
/// (the first taken in operation order), and writes none of them.
pub async fn a_run_of_inserts_with_one_taken_writes_nothing(store: DynStore) {
    let owner = crate::fixtures::account("run");
    let taken = crate::fixtures::prediction_for(&owner);
    insert(&store, &taken, vec![]).await;
    let fresh: Vec<_> = (0..4)
        .map(|_| crate::fixtures::prediction_for(&owner))
        .collect();
    let mut write = insert_write(&fresh[0], vec![enqueue_now(&fresh[0])]);
    for p in [&fresh[1], &taken, &fresh[2], &fresh[3]] {
        write.ops.push(Op::Insert(p.to_record().unwrap()));
    }
    let refused = store.write(&write).await;
    assert!(
        matches!(&refused, Err(Error::Exists(k)) if *k == taken.key()),
        "{refused:?}"
    );
    for p in &fresh {
        assert!(
            get(&store, &p.id).await.is_none(),
            "no part of it was written"
        );
    }
}

/// Keys are per kind: a record of another kind with the same id is another record.
pub async fn kinds_are_separate_namespaces(store: DynStore) {
    let p = prediction();
    insert(&store, &p, vec![]).await;
    let other = Record {
        key: Key::new(Kind::Account, p.id.as_str()),
        owner: p.owner.clone(),
        created_at: Timestamp::now(),
        status: None,
        parent: None,
        expires_at: None,
        data_removed: false,
        body: "{\"same id\": true}".into(),
        data: None,
    };
    store
        .write(&Write::new(p.owner.clone()).op(Op::Insert(other.clone())))
        .await
        .unwrap();
    assert_eq!(store.get(&other.key).await.unwrap().unwrap().record, other);
    assert_eq!(get(&store, &p.id).await.unwrap().value, p);
}

/// A record whose id lies outside its owner's partition (a client-chosen id) is stored,
/// found by id alone, updated, listed by owner and refused a second insert like any other.
pub async fn misplaced_ids_are_found(store: DynStore) {
    let owner = account("misplaced");
    for n in 0..8 {
        let mut p = prediction_for(&owner);
        p.id = PredictionId::parse(&format!("client-chosen-{n}-{}", PredictionId::generate()))
            .unwrap();
        let record = p.to_record().unwrap();
        if record.is_placed() {
            continue;
        }
        insert(&store, &p, vec![enqueue_now(&p)]).await;
        assert_eq!(get(&store, &p.id).await.unwrap().value, p);
        let mut next = p.clone();
        next.status = Status::Processing;
        update(&store, &next, Revision::FIRST, vec![])
            .await
            .unwrap();
        assert_eq!(
            get(&store, &p.id).await.unwrap().value.status,
            Status::Processing
        );
        let mut stranger = prediction_for(&account("stranger"));
        stranger.id = p.id.clone();
        let taken = store.write(&insert_write(&stranger, vec![])).await;
        assert!(matches!(taken, Err(Error::Exists(_))), "{taken:?}");
        let listed = store
            .list(&ListQuery {
                owner: Some(owner.clone()),
                ..ListQuery::of(Kind::Prediction, 10)
            })
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 1);
        return;
    }
    panic!("no generated id fell outside the owner's partition");
}

/// Of 20 concurrent inserts of one key, exactly one succeeds and applies its effects.
pub async fn concurrent_inserts_succeed_once(store: DynStore) {
    let p = prediction();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let p = p.clone();
            tokio::spawn(async move {
                store
                    .write(&insert_write(&p, vec![Effect::count("inserted", 1)]))
                    .await
            })
        })
        .collect();
    let mut inserted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => inserted += 1,
            Err(Error::Exists(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(inserted, 1);
    assert_eq!(counter(&store, "inserted").await, 1);
}

/// An update naming a stale revision is a `Conflict` and changes nothing.
pub async fn update_rejects_stale_revision(store: DynStore) {
    let p = prediction();
    insert(&store, &p, vec![]).await;
    let mut next = p.clone();
    next.logs = "first".into();
    let written = update(&store, &next, Revision::FIRST, vec![])
        .await
        .unwrap();
    assert_eq!(written.revisions, vec![Some(Revision(2))]);
    let mut stale = p.clone();
    stale.logs = "second".into();
    match update(&store, &stale, Revision::FIRST, vec![]).await {
        Err(Error::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, p.key());
            assert_eq!((expected, actual), (Revision::FIRST, Revision(2)));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let got = get(&store, &p.id).await.unwrap();
    assert_eq!(
        (got.revision, got.value.logs.as_str()),
        (Revision(2), "first")
    );
}

/// A refused update applies none of its effects.
pub async fn failed_update_applies_no_effects(store: DynStore) {
    let p = prediction();
    insert(&store, &p, vec![enqueue_now(&p)]).await;
    let result = update(
        &store,
        &p,
        Revision(7),
        vec![augur_core::jobs::complete(&p.id), Effect::count("never", 1)],
    )
    .await;
    assert!(matches!(result, Err(Error::Conflict { .. })));
    assert_eq!(counter(&store, "never").await, 0);
    assert_eq!(store.queue_stats(Lane::Jobs).await.unwrap().ready, 1);
}

/// Updating an unknown key is `NotFound`.
pub async fn update_unknown_is_not_found(store: DynStore) {
    let p = prediction();
    let result = update(&store, &p, Revision::FIRST, vec![]).await;
    assert!(matches!(result, Err(Error::NotFound(k)) if k == p.key()));
}

/// A write reaches only its own account's records: updating another account's record is
/// `NotFound` (and changes nothing), deleting one leaves it alone.
pub async fn writes_stay_within_their_account(store: DynStore) {
    // Both in one partition, so that a sharded backend must check the owner itself.
    let alice = account("alice");
    let mallory = std::iter::repeat_with(|| account("mallory"))
        .find(|m| Partition::of_account(m) == Partition::of_account(&alice))
        .expect("some account shares the partition");
    let p = prediction_for(&alice);
    insert(&store, &p, vec![enqueue_now(&p)]).await;
    let mut taken = p.clone();
    taken.owner = mallory.clone();
    taken.logs = "mine now".into();
    let mut write = update_write(&taken, Revision::FIRST, vec![]);
    write.account = mallory.clone();
    assert!(matches!(store.write(&write).await, Err(Error::NotFound(_))));
    let delete = Write::new(mallory.clone()).op(Op::Delete(p.key()));
    store.write(&delete).await.unwrap();
    let got = get(&store, &p.id).await.expect("still there");
    assert_eq!((got.value, got.revision), (p.clone(), Revision::FIRST));
    assert_eq!(store.queue_stats(Lane::Jobs).await.unwrap().ready, 1);
}

/// Of 50 concurrent updates from the same revision exactly one succeeds; the rest conflict.
pub async fn concurrent_updates_have_one_winner(store: DynStore) {
    let p = prediction();
    insert(&store, &p, vec![]).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            let mut next = p.clone();
            next.logs = format!("writer {i}");
            tokio::spawn(async move {
                update(
                    &store,
                    &next,
                    Revision::FIRST,
                    vec![Effect::count("wins", 1)],
                )
                .await
            })
        })
        .collect();
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(written) => {
                assert_eq!(written.revisions, vec![Some(Revision(2))]);
                ok += 1;
            }
            Err(Error::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 49));
    assert_eq!(counter(&store, "wins").await, 1);
}

/// 50 tasks race conflicting terminal transitions through the service: exactly one wins, the
/// others get a conflicting-terminal or invalid-transition error, and it settles once.
pub async fn racing_terminal_transitions_have_one_winner(store: DynStore) {
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    let p = prediction();
    insert(&store, &p, vec![enqueue_now(&p)]).await;
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
    assert_eq!(counter(&store, counters::SETTLED).await, 1);
    assert!(get(&store, &p.id).await.unwrap().value.is_terminal());
    assert_eq!(
        store.queue_stats(Lane::Jobs).await.unwrap(),
        Default::default()
    );
}

fn create_request(owner: &AccountId, key: &str, input: serde_json::Value) -> CreateRequest {
    CreateRequest {
        id: None,
        owner: owner.clone(),
        model: ModelName::parse(crate::fixtures::QUEUE).unwrap(),
        version: "v1".into(),
        input,
        webhook: None,
        webhook_events_filter: WebhookEvents::ALL,
        deadline: None,
        idempotency_key: Some(key.into()),
        price: None,
        max_active: None,
    }
}

/// Through the service: a live idempotency key returns the prediction of its first use and
/// writes nothing new; the same key with other parameters is refused.
pub async fn idempotency_key_returns_first_prediction(store: DynStore) {
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    let owner = AccountId::admin();
    let first = service
        .create(create_request(&owner, "key-1", json!({"a": 1})))
        .await
        .unwrap();
    assert!(matches!(first, Creation::Created(_)));
    let again = service
        .create(create_request(&owner, "key-1", json!({"a": 1})))
        .await
        .unwrap();
    assert!(matches!(again, Creation::Replayed(_)));
    assert_eq!(again.prediction().value.id, first.prediction().value.id);
    let other = service
        .create(create_request(&owner, "key-1", json!({"a": 2})))
        .await;
    assert!(
        matches!(other, Err(augur_core::Error::IdempotencyKeyReused { .. })),
        "{other:?}"
    );
    assert_eq!(store.queue_stats(Lane::Jobs).await.unwrap().ready, 1);
    assert_eq!(counter(&store, counters::CREATED).await, 1);
}

/// Through the service: the same key used by two owners creates two predictions.
pub async fn idempotency_keys_are_scoped_to_owner(store: DynStore) {
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    let mut ids = HashSet::new();
    for owner in [account("alice"), account("bob")] {
        let created = service
            .create(create_request(&owner, "shared-key", json!({})))
            .await
            .unwrap();
        assert!(matches!(created, Creation::Created(_)), "{owner}");
        ids.insert(created.prediction().value.id.clone());
    }
    assert_eq!(ids.len(), 2);
}

/// Twenty concurrent creates with one idempotency key make one prediction; all twenty get it.
pub async fn concurrent_creates_with_one_key_make_one_prediction(store: DynStore) {
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    let owner = account("racer");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (service, owner) = (service.clone(), owner.clone());
            tokio::spawn(async move {
                service
                    .create(create_request(&owner, "one-key", json!({"x": 1})))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut created = 0;
    for t in tasks {
        let c = t.await.unwrap();
        created += usize::from(matches!(c, Creation::Created(_)));
        ids.insert(c.prediction().value.id.clone());
    }
    assert_eq!((created, ids.len()), (1, 1));
}

/// Delete removes the record, its queue items and its events; deleting again is fine.
pub async fn delete_removes_record_items_and_events(store: DynStore) {
    let p = prediction();
    insert(&store, &p, vec![enqueue_now(&p)]).await;
    let delete = Write::new(p.owner.clone()).op(Op::Delete(p.key()));
    let written = store.write(&delete).await.unwrap();
    assert_eq!(written.revisions, vec![None]);
    assert!(get(&store, &p.id).await.is_none());
    assert_eq!(
        store.queue_stats(Lane::Jobs).await.unwrap(),
        Default::default()
    );
    store.write(&delete).await.unwrap();
}

/// Listing pages through `(created_at, id)` descending without gaps or repeats, ties
/// included.
pub async fn list_pages_newest_first_without_gaps(store: DynStore) {
    let owner = account("lister");
    let base = Timestamp::now().as_micros();
    let mut expected = Vec::new();
    for i in 0..23 {
        let mut p = prediction_for(&owner);
        // Pairs share a creation time so the id must break the tie.
        p.created_at = Timestamp::from_micros(base + (i / 2) * 1000);
        insert(&store, &p, vec![]).await;
        expected.push((p.created_at, p.id.to_string()));
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
                ..ListQuery::of(Kind::Prediction, 5)
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 5);
        seen.extend(
            page.items
                .iter()
                .map(|s| (s.record.created_at, s.record.key.id.clone())),
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

/// Walking back with backward cursors, from the last page to the first, gives the forward
/// pages exactly (ties included, another owner's records interleaved and skipped).
pub async fn list_pages_back_without_gaps(store: DynStore) {
    let owner = account("backlister");
    let other = account("backother");
    let base = Timestamp::now().as_micros();
    for i in 0..23 {
        let mut p = prediction_for(&owner);
        // Pairs share a creation time so the id must break the tie.
        p.created_at = Timestamp::from_micros(base + (i / 2) * 1000);
        insert(&store, &p, vec![]).await;
        let mut q = prediction_for(&other);
        q.created_at = p.created_at;
        insert(&store, &q, vec![]).await;
    }
    let query = |after: Option<Cursor>| ListQuery {
        owner: Some(owner.clone()),
        after,
        ..ListQuery::of(Kind::Prediction, 5)
    };
    let ids = |page: &augur_core::store::Page| -> Vec<String> {
        page.items.iter().map(|s| s.record.key.id.clone()).collect()
    };
    let mut forward = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(&query(after.clone())).await.unwrap();
        forward.push(page.clone());
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
        assert!(forward.len() < 10, "pagination does not end");
    }
    assert_eq!(forward.len(), 5);
    // Back from the last page: each page before is the forward one, and the first page
    // has no page before it.
    let mut at = Cursor::before(&forward[4].items[0].record);
    for expected in forward[..4].iter().rev() {
        let page = store.list(&query(Some(at.clone()))).await.unwrap();
        assert_eq!(ids(&page), ids(expected));
        match page.next {
            Some(c) => {
                assert!(
                    !std::ptr::eq(expected, &forward[0]),
                    "the first page has none before"
                );
                assert!(c.backward, "{c:?}");
                at = c;
            }
            None => {
                assert!(std::ptr::eq(expected, &forward[0]), "ended early");
                break;
            }
        }
    }
    // Back from the middle of a page: the five records just newer, newest first.
    let middle = &forward[2].items[2].record;
    let page = store
        .list(&query(Some(Cursor::before(middle))))
        .await
        .unwrap();
    let all: Vec<String> = forward.iter().flat_map(&ids).collect();
    assert_eq!(ids(&page), all[7..12].to_vec());
    assert!(page.next.is_some());
}

/// Kind, owner, status, parent and creation-range filters combine.
pub async fn list_filters_combine(store: DynStore) {
    let owner = account("filter");
    let other = account("other");
    let base = Timestamp::now().as_micros();
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut p = prediction_for(if i == 5 { &other } else { &owner });
        p.created_at = Timestamp::from_micros(base + i * 1_000_000);
        if i % 2 == 1 {
            p.status = Status::Failed;
        }
        let mut record = p.to_record().unwrap();
        record.parent = (i < 3).then(|| "batch-1".to_owned());
        store
            .write(&Write::new(p.owner.clone()).op(Op::Insert(record)))
            .await
            .unwrap();
        ids.push(p.id.to_string());
    }
    // A record of another kind, same owner and times, never shows up.
    let mut stray = prediction_for(&owner).to_record().unwrap();
    stray.key = Key::new(Kind::Account, format!("stray-{}", PredictionId::generate()));
    stray.created_at = Timestamp::from_micros(base + 2_000_000);
    store
        .write(&Write::new(owner.clone()).op(Op::Insert(stray)))
        .await
        .unwrap();

    let query = |status: Option<Status>, after: Option<i64>, before: Option<i64>| ListQuery {
        owner: Some(owner.clone()),
        status: status.map(|s| s.as_str().to_owned()),
        created_after: after.map(|s| Timestamp::from_micros(base + s * 1_000_000)),
        created_before: before.map(|s| Timestamp::from_micros(base + s * 1_000_000)),
        ..ListQuery::of(Kind::Prediction, 100)
    };
    let ids_of = |page: augur_core::store::Page| -> Vec<String> {
        page.items.iter().map(|s| s.record.key.id.clone()).collect()
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
    let mut in_batch = query(None, None, None);
    in_batch.parent = Some("batch-1".into());
    let batch = ids_of(store.list(&in_batch).await.unwrap());
    assert_eq!(batch, vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]);
    in_batch.status = Some(Status::Failed.as_str().into());
    assert_eq!(
        ids_of(store.list(&in_batch).await.unwrap()),
        vec![ids[1].clone()]
    );
    let all_owners = store
        .list(&ListQuery {
            created_after: Some(Timestamp::from_micros(base)),
            ..ListQuery::of(Kind::Prediction, 100)
        })
        .await
        .unwrap();
    let seen: HashSet<String> = ids_of(all_owners).into_iter().collect();
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
        insert(&store, p, vec![]).await;
    }
    let expired = store.expire(now, 1000).await.unwrap();
    assert_eq!(expired, vec![due.key()]);
    let got = get(&store, &due.id).await.unwrap();
    assert_eq!(got.revision, Revision(2));
    assert!(got.value.data_removed);
    assert!(got.value.input.is_null() && got.value.output.is_none() && got.value.logs.is_empty());
    assert_eq!(got.value.status, Status::Succeeded);
    let stored = store.get(&due.key()).await.unwrap().unwrap();
    assert!(stored.record.data.is_none() && stored.record.data_removed);
    assert_eq!(get(&store, &later.id).await.unwrap().value, later);
    assert_eq!(get(&store, &never.id).await.unwrap().value, never);
    // A second sweep finds nothing more to do for the tombstone.
    assert!(store.expire(now, 1000).await.unwrap().is_empty());
    assert_eq!(get(&store, &due.id).await.unwrap().revision, Revision(2));
}

/// Through the service: tombstones whose id's time is past the second horizon are deleted (and
/// the id is refused as a client's from then on); predictions with data, and tombstones of
/// ids that carry no time, stay.
pub async fn old_tombstones_are_deleted_and_their_ids_never_reused(store: DynStore) {
    let service = Predictions::new(
        store.clone(),
        ServiceConfig {
            tombstone_retention: Duration::ZERO,
            ..ServiceConfig::default()
        },
    );
    let now = Timestamp::now();
    let expired = |mut p: augur_core::Prediction| {
        p.status = Status::Succeeded;
        p.output = Some(json!("out"));
        p.expires_at = Some(now.minus(Duration::from_secs(1)));
        p
    };
    let old = expired(prediction());
    let mut timeless = expired(prediction());
    timeless.id = PredictionId::parse(&format!("mine-{}", old.id)).unwrap();
    let live = prediction();
    for p in [&old, &timeless, &live] {
        insert(&store, p, vec![]).await;
    }
    assert_eq!(store.expire(now, 1000).await.unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(5)).await;

    let (mut deleted, mut after) = service.prune_tombstones(None, 1).await.unwrap();
    while after.is_some() {
        let (more, next) = service.prune_tombstones(after, 1).await.unwrap();
        deleted += more;
        after = next;
    }
    assert_eq!(deleted, 1);
    assert!(store.get(&old.key()).await.unwrap().is_none());
    assert!(get(&store, &timeless.id).await.unwrap().value.data_removed);
    assert_eq!(get(&store, &live.id).await.unwrap().value, live);
    let listed = store
        .list(&ListQuery::of(Kind::Prediction, 100))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);

    // The deleted tombstone's id is not taken again.
    let mut again = create_request(&old.owner, "k-again", json!({}));
    again.idempotency_key = None;
    again.id = Some(old.id.clone());
    let refused = service.create(again).await;
    assert!(
        matches!(refused, Err(augur_core::Error::IdRetired(_))),
        "{refused:?}"
    );
    assert!(store.get(&old.key()).await.unwrap().is_none());
}

/// Records of kinds that expire by deletion (idempotency keys) read as absent once their time
/// is past, can be inserted afresh, and are deleted by a sweep.
pub async fn expired_records_of_delete_kinds_are_absent(store: DynStore) {
    let owner = AccountId::admin();
    let now = Timestamp::now();
    let key = |fp: &str, ttl: Duration| IdempotencyKey {
        owner: owner.clone(),
        key: "short-lived".into(),
        fingerprint: fp.into(),
        prediction_id: PredictionId::generate_for(&owner),
        batch_id: None,
        run_id: None,
        created_at: now,
        expires_at: Timestamp::now().plus(ttl),
    };
    let first = key("fp", Duration::from_millis(200));
    store
        .write(&Write::new(owner.clone()).op(Op::Insert(first.to_record().unwrap())))
        .await
        .unwrap();
    assert!(store.get(&first.key()).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store.get(&first.key()).await.unwrap().is_none(),
        "absent once expired"
    );
    let second = key("fp2", Duration::from_secs(3600));
    store
        .write(&Write::new(owner.clone()).op(Op::Insert(second.to_record().unwrap())))
        .await
        .expect("an expired key can be used afresh");
    let got = store.get(&second.key()).await.unwrap().unwrap();
    assert_eq!(got.revision, Revision::FIRST);
    assert_eq!(got.decode::<IdempotencyKey>().unwrap().fingerprint, "fp2");

    let third = IdempotencyKey {
        key: "swept".into(),
        ..key("fp3", Duration::from_millis(100))
    };
    store
        .write(&Write::new(owner.clone()).op(Op::Insert(third.to_record().unwrap())))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    store.expire(Timestamp::now(), 1000).await.unwrap();
    assert!(store.get(&third.key()).await.unwrap().is_none());
    let listed = store
        .list(&ListQuery::of(Kind::IdempotencyKey, 100))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "only the live key is listed");
}

/// Counter effects add up across writes.
pub async fn counters_accumulate(store: DynStore) {
    let p = prediction();
    insert(
        &store,
        &p,
        vec![Effect::count("a", 1), Effect::count("b", 5)],
    )
    .await;
    update(
        &store,
        &p,
        Revision::FIRST,
        vec![Effect::count("a", 2), Effect::count("b", -1)],
    )
    .await
    .unwrap();
    assert_eq!(
        (counter(&store, "a").await, counter(&store, "b").await),
        (3, 4)
    );
}

/// A counter with a limit refuses (with `LimitReached`, writing nothing) a write that would
/// take it past the limit, and lets decrements through; 30 racing increments against a limit
/// of 10 end at 10.
pub async fn limited_counters_refuse_to_pass_their_limit(store: DynStore) {
    let owner = account("limited");
    let name = counters::per_account("running", &owner);
    let bump = |delta: i64| Effect::Count {
        name: name.clone(),
        delta,
        limit: Some(10),
    };
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let store = store.clone();
            let p = prediction_for(&owner);
            let effect = bump(1);
            tokio::spawn(async move { store.write(&insert_write(&p, vec![effect])).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::LimitReached { counter, limit }) => {
                assert_eq!((counter, limit), (name.clone(), 10))
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(counter(&store, &name).await, 10);
    let p = prediction_for(&owner);
    insert(&store, &p, vec![bump(-3)]).await;
    assert_eq!(counter(&store, &name).await, 7);
}

/// Large (1 MiB of logs, a big input) and non-ASCII records survive unchanged.
pub async fn large_and_unicode_records_round_trip(store: DynStore) {
    let mut p = prediction();
    p.input = json!({"prompt": "ein Bär 🐻 — «ünïcödé»", "blob": "x".repeat(200_000)});
    p.logs = "line ✓\n".repeat(100_000);
    p.output = Some(json!({"nested": [1, 2.5, null, {"k": "v"}], "emoji": "🎨"}));
    insert(&store, &p, vec![]).await;
    assert_eq!(get(&store, &p.id).await.unwrap().value, p);
}
