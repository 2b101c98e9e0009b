//! Conformance tests for change announcements and for migration (listing and importing every
//! record).

use std::collections::BTreeMap;
use std::time::Duration;

use augur_core::store::{Change, DynStore, Effect, IdempotencyRecord, Job, ListQuery, Record};
use augur_core::{AccountId, PredictionId, Revision, Status, Timestamp, Versioned};
use futures::StreamExt;
use serde_json::json;

use crate::fixtures::{QUEUE, enqueue_now, insert, prediction, prediction_for};

/// Creates and updates are announced with their revision, and queued jobs as work
/// (skipped for backends without announcements).
pub async fn changes_are_announced(store: DynStore) {
    if !store.capabilities().change_notifications {
        assert!(store.subscribe().await.unwrap().is_none());
        return;
    }
    let mut changes = store.subscribe().await.unwrap().expect("announcements");
    // Some backends need a moment before a fresh subscription receives anything.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p = prediction();
    insert(&store, &p, &[enqueue_now()]).await;
    let mut next = p.clone();
    next.logs = "x".into();
    store
        .update(&p.id, Revision::FIRST, &next, &[])
        .await
        .unwrap();

    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(seen.contains(&Change::Work)
        && seen.contains(&Change::Prediction {
            id: p.id.clone(),
            revision: Revision(2),
        }))
    {
        match tokio::time::timeout_at(until, changes.next()).await {
            Ok(Some(change)) => seen.push(change),
            Ok(None) => panic!("the announcement stream ended; saw {seen:?}"),
            Err(_) => panic!("announcements missing; saw {seen:?}"),
        }
    }
    assert!(
        seen.contains(&Change::Prediction {
            id: p.id.clone(),
            revision: Revision::FIRST
        }),
        "the create was not announced: {seen:?}"
    );
}

/// Everything imported reads back identical through every listing, and imported jobs are
/// claimable with their attempts (migration in and out of a backend).
pub async fn migration_round_trips_every_record(store: DynStore) {
    let owners = [
        AccountId::parse("mig-a").unwrap(),
        AccountId::parse("mig-b").unwrap(),
    ];
    let now = Timestamp::now();
    let mut records = Vec::new();
    let mut predictions = BTreeMap::new();
    for i in 0..25 {
        let mut p = prediction_for(&owners[i % 2]);
        p.created_at = Timestamp::from_micros(now.as_micros() - i as i64 * 1000);
        p.logs = format!("log {i} ✓");
        if i % 3 == 0 {
            p.status = Status::Succeeded;
            p.output = Some(json!({"i": i}));
            p.completed_at = Some(now);
            p.expires_at = Some(now.plus(Duration::from_secs(3600)));
        }
        let v = Versioned {
            value: p.clone(),
            revision: Revision(1 + i as u64 % 4),
        };
        predictions.insert(p.id.clone(), v.clone());
        records.push(Record::Prediction(Box::new(v)));
        if i % 3 != 0 {
            records.push(Record::Job(Job {
                prediction_id: p.id.clone(),
                queue: QUEUE.into(),
                attempts: (i % 2) as u32,
                run_at: now.minus(Duration::from_secs(1)),
            }));
        }
        if i % 5 == 0 {
            records.push(Record::IdempotencyKey(IdempotencyRecord {
                owner: p.owner.clone(),
                key: format!("key-{i}"),
                fingerprint: format!("fp-{i}"),
                prediction_id: p.id.clone(),
                expires_at: now.plus(Duration::from_secs(3600)),
            }));
        }
    }
    records.push(Record::Counter {
        name: "migrated_total".into(),
        value: 42,
    });
    // In two batches, the second repeated: imports are idempotent.
    let (first, second) = records.split_at(records.len() / 2);
    store.import(first).await.unwrap();
    store.import(second).await.unwrap();
    store.import(second).await.unwrap();

    // Predictions, through the paginated listing and by id.
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListQuery {
                after: after.clone(),
                limit: 7,
                ..Default::default()
            })
            .await
            .unwrap();
        listed.extend(page.items);
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(listed.len(), predictions.len());
    for got in &listed {
        assert_eq!(
            Some(got),
            predictions.get(&got.value.id),
            "listed record differs"
        );
        assert_eq!(&store.get(&got.value.id).await.unwrap(), got);
    }
    let by_owner = store
        .list(&ListQuery {
            owner: Some(owners[1].clone()),
            status: Some(Status::Succeeded),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let expected = predictions
        .values()
        .filter(|p| p.value.owner == owners[1] && p.value.status == Status::Succeeded)
        .count();
    assert_eq!(
        by_owner.items.len(),
        expected,
        "indexes follow imported records"
    );

    // Jobs, paged.
    let mut jobs = Vec::new();
    let mut after: Option<PredictionId> = None;
    loop {
        let page = store.list_jobs(after.as_ref(), 4).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|j| j.prediction_id.clone());
        jobs.extend(page);
    }
    let mut expected_jobs: Vec<&Job> = records
        .iter()
        .filter_map(|r| match r {
            Record::Job(j) => Some(j),
            _ => None,
        })
        .collect();
    expected_jobs.sort_by(|a, b| a.prediction_id.cmp(&b.prediction_id));
    assert_eq!(jobs.iter().collect::<Vec<_>>(), expected_jobs);

    // Keys, paged.
    let mut keys = Vec::new();
    let mut after: Option<(AccountId, String)> = None;
    loop {
        let page = store
            .list_idempotency_keys(after.as_ref().map(|(o, k)| (o, k.as_str())), 2)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|k| (k.owner.clone(), k.key.clone()));
        keys.extend(page);
    }
    let mut expected_keys: Vec<&IdempotencyRecord> = records
        .iter()
        .filter_map(|r| match r {
            Record::IdempotencyKey(k) => Some(k),
            _ => None,
        })
        .collect();
    expected_keys.sort_by(|a, b| (&a.owner, &a.key).cmp(&(&b.owner, &b.key)));
    assert_eq!(keys.iter().collect::<Vec<_>>(), expected_keys);

    // Counters are set, not added.
    let counters = store.counters().await.unwrap();
    assert!(
        counters.contains(&("migrated_total".to_owned(), 42)),
        "{counters:?}"
    );

    // Imported jobs are claimable, with their attempts carried over.
    let worker = augur_core::WorkerId::generate();
    let claimed = store
        .claim_jobs(&crate::fixtures::claim(
            &worker,
            Duration::from_secs(60),
            100,
        ))
        .await
        .unwrap();
    assert_eq!(claimed.len(), expected_jobs.len());
    for lease in &claimed {
        let original = expected_jobs
            .iter()
            .find(|j| j.prediction_id == lease.job.prediction_id)
            .unwrap();
        assert_eq!(lease.job.attempts, original.attempts + 1);
    }
    // And an imported record takes part in compare-and-set at its revision.
    let (id, v) = predictions.iter().next().unwrap();
    store
        .update(
            id,
            v.revision,
            &v.value,
            &[Effect::count("after_import", 1)],
        )
        .await
        .unwrap();
}
