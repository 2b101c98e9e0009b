//! Conformance tests for change announcements and for migration (exporting and importing every
//! section).

use std::sync::Arc;
use std::time::Duration;

use augur_core::jobs::Jobs;
use augur_core::outbox::{DeliveryOutcome, Outbox};
use augur_core::store::memory::MemoryStore;
use augur_core::store::{
    Attempt, Change, DynStore, Effect, Entity, Exported, Key, Kind, Lane, ListQuery, Op, Position,
    Reason, Section, StreamEventData, StreamEventKind, Write,
};
use augur_core::{Revision, Status, Timestamp, WorkerId};
use futures::StreamExt;
use serde_json::json;

use crate::fixtures::{
    LONG, account, claim_jobs, enqueue_now, get, insert, prediction, prediction_for, update,
};
use crate::ledger::{assert_balanced, entry, posting};
use crate::outbox::delivery;

/// Writes are announced with their revision, and queued jobs as work (skipped for backends
/// without announcements).
pub async fn changes_are_announced(store: DynStore) {
    if !store.capabilities().change_notifications {
        assert!(store.subscribe().await.unwrap().is_none());
        return;
    }
    let mut changes = store.subscribe().await.unwrap().expect("announcements");
    // Some backends need a moment before a fresh subscription receives anything.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p = prediction();
    insert(&store, &p, vec![enqueue_now(&p)]).await;
    let mut next = p.clone();
    next.logs = "x".into();
    update(&store, &next, Revision::FIRST, vec![])
        .await
        .unwrap();

    let second = Change::Record {
        key: p.key(),
        revision: Revision(2),
    };
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(seen.contains(&Change::Work(Lane::Jobs)) && seen.contains(&second)) {
        match tokio::time::timeout_at(until, changes.next()).await {
            Ok(Some(change)) => seen.push(change),
            Ok(None) => panic!("the announcement stream ended; saw {seen:?}"),
            Err(_) => panic!("announcements missing; saw {seen:?}"),
        }
    }
    assert!(
        seen.contains(&Change::Record {
            key: p.key(),
            revision: Revision::FIRST
        }),
        "the insert was not announced: {seen:?}"
    );
}

/// Pages through a whole section, `page` pieces at a time.
pub async fn export_all(store: &DynStore, section: Section, page: usize) -> Vec<Exported> {
    let mut all = Vec::new();
    let mut after: Option<Position> = None;
    loop {
        let got = store.export(section, after.as_ref(), page).await.unwrap();
        assert!(got.len() <= page);
        let Some(last) = got.last() else { break };
        after = Some(last.position());
        for piece in &got {
            assert_eq!(piece.section(), section);
        }
        all.extend(got);
    }
    all
}

/// Everything of every section (records of several kinds, queue items of several lanes with
/// their history, events, ledgers, counters) made by real writes in a memory store, exported
/// page by page and imported (twice: imports are idempotent), exports identically; and what
/// was imported takes part in reads, listings, claims, writes and further postings.
pub async fn migration_round_trips_every_section(store: DynStore) {
    let source: DynStore = Arc::new(MemoryStore::new());
    let owners = [account("mig-a"), account("mig-b")];
    let now = Timestamp::now();
    let mut ids = Vec::new();
    for i in 0..25 {
        let owner = &owners[i % 2];
        let mut p = prediction_for(owner);
        p.created_at = Timestamp::from_micros(now.as_micros() - i as i64 * 1000);
        p.logs = format!("log {i} ✓");
        let mut effects = vec![Effect::AppendEvents {
            stream: p.key(),
            events: vec![StreamEventData {
                kind: StreamEventKind::Logs,
                data: format!("log {i} ✓"),
            }],
        }];
        if i % 3 == 0 {
            p.status = Status::Succeeded;
            p.output = Some(json!({"i": i}));
            p.completed_at = Some(now);
            p.expires_at = Some(now.plus(Duration::from_secs(3600)));
        } else {
            effects.push(enqueue_now(&p));
        }
        if i % 5 == 0 {
            effects.push(delivery(&p, 0));
            effects.push(delivery(&p, 1));
        }
        effects.push(Effect::Post(Box::new(entry(
            owner,
            &format!("e{i}"),
            2,
            i64::from(i % 2 == 0),
            Reason::Grant,
        ))));
        insert(&source, &p, effects).await;
        ids.push(p.id);
    }
    let mut account_record = prediction_for(&owners[0]).to_record().unwrap();
    account_record.key = Key::new(Kind::Account, owners[0].as_str());
    source
        .write(&Write::new(owners[0].clone()).op(Op::Insert(account_record)))
        .await
        .unwrap();
    source
        .write(
            &posting(
                &owners[1],
                vec![entry(&owners[1], "topup", 40, 0, Reason::Topup)],
            )
            .effects([Effect::count("migrated_total", 42)]),
        )
        .await
        .unwrap();
    // History: a claimed-and-retried job, a delivered and a failed message.
    let w = WorkerId::generate();
    let jobs = Jobs::new(source.clone());
    let lease = jobs.claim(&w, LONG, 1, vec![]).await.unwrap().remove(0);
    jobs.retry(&lease, Timestamp::now()).await.unwrap();
    let outbox = Outbox::new(source.clone());
    let attempt = Attempt {
        at: Timestamp::now(),
        status: Some(500),
        error: Some("no ✗".into()),
        duration_ms: 7,
    };
    for (n, lease) in outbox.claim(&w, LONG, 2).await.unwrap().iter().enumerate() {
        let outcome = if n == 0 {
            DeliveryOutcome::Delivered
        } else {
            DeliveryOutcome::GiveUp { drop_rest: false }
        };
        outbox.finish(lease, &attempt, outcome).await.unwrap();
    }

    for section in Section::ALL {
        let pieces = export_all(&source, section, 7).await;
        assert!(!pieces.is_empty(), "{section:?} has content");
        let (first, second) = pieces.split_at(pieces.len() / 2);
        store.import(first).await.unwrap();
        store.import(second).await.unwrap();
        store.import(second).await.unwrap();
        assert_eq!(
            export_all(&store, section, 4).await,
            pieces,
            "{section:?} differs"
        );
    }

    // Records: by id and through the listings, indexes included.
    for id in &ids {
        assert_eq!(get(&store, id).await, get(&source, id).await);
    }
    let by_owner = |query: ListQuery| {
        let (store, source) = (store.clone(), source.clone());
        async move {
            let a = store
                .list(&query)
                .await
                .unwrap()
                .items
                .iter()
                .map(|s| s.record.key.id.clone())
                .collect::<Vec<_>>();
            let b = source
                .list(&query)
                .await
                .unwrap()
                .items
                .iter()
                .map(|s| s.record.key.id.clone())
                .collect::<Vec<_>>();
            assert!(!a.is_empty());
            assert_eq!(a, b, "indexes follow imported records");
        }
    };
    by_owner(ListQuery {
        owner: Some(owners[1].clone()),
        status: Some(Status::Starting.as_str().into()),
        ..ListQuery::of(Kind::Prediction, 100)
    })
    .await;
    by_owner(ListQuery::of(Kind::Account, 100)).await;

    // Imported pending jobs are claimable, with their claims carried over.
    let waiting = store.queue_stats(Lane::Jobs).await.unwrap();
    let claimed = claim_jobs(&store, &w, LONG, 100).await;
    assert_eq!(claimed.len() as u64, waiting.ready + waiting.delayed);
    assert!(
        claimed.iter().any(|l| l.item.claims == 2),
        "the retried job's claim was kept"
    );
    // Imported pending messages go out in order: the same heads as in the source.
    let heads = |store: DynStore| {
        let w = w.clone();
        async move {
            let mut ids: Vec<String> = Outbox::new(store)
                .claim(&w, LONG, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.state.delivery.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let expected = heads(source.clone()).await;
    assert_eq!(expected.iter().filter(|id| id.ends_with("_1")).count(), 2);
    assert_eq!(heads(store.clone()).await, expected);
    // An imported record takes part in compare-and-set at its revision.
    let p = get(&store, &ids[1]).await.unwrap();
    update(
        &store,
        &p.value,
        p.revision,
        vec![Effect::count("after_import", 1)],
    )
    .await
    .unwrap();
    // Ledgers balance and go on from where they were.
    for owner in &owners {
        assert_eq!(
            store.balance(owner).await.unwrap(),
            source.balance(owner).await.unwrap()
        );
        store
            .write(&posting(
                owner,
                vec![entry(owner, "after", 1, 0, Reason::Grant)],
            ))
            .await
            .unwrap();
        assert_balanced(&store, owner).await;
    }
}
