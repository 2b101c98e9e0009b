//! Writes the conformance suite does not make, checked against the reference: the same writes
//! on `MemoryStore` and on the embedded store give the same outcomes and leave the same
//! records, items and events. They pin how the embedded store applies writes that name one key
//! twice (checked against the state before the write, applied as they come), which must never
//! turn into an internal error that rolls back the rest of a group.

use std::sync::Arc;
use std::time::Duration;

use augur_core::store::memory::MemoryStore;
use augur_core::store::{
    DynStore, Effect, Entity, Lane, Op, Reason, Record, StreamEventData, StreamEventKind, Write,
};
use augur_core::{Revision, Timestamp};
use augur_store_conformance::entry;
use augur_store_conformance::fixtures::{enqueue_now, prediction};
use augur_store_embedded::{EmbeddedOptions, EmbeddedStore};

fn logs(data: &str) -> StreamEventData {
    StreamEventData {
        kind: StreamEventKind::Logs,
        data: data.into(),
    }
}

/// What a store shows of a record after a write: its outcome, then the record, its jobs and
/// its events.
async fn outcome(store: &DynStore, write: &Write, key_of: &Record) -> String {
    let result = match store.write(write).await {
        Ok(written) => format!(
            "ok {:?} skipped {:?}",
            written.revisions, written.skipped_entries
        ),
        Err(e) => format!("error {}", e.kind()),
    };
    let stored = store
        .get(&key_of.key)
        .await
        .unwrap()
        .map(|s| (s.revision, s.record.body.clone()));
    let jobs: Vec<(String, u64)> = store
        .items(Lane::Jobs, &key_of.key)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.id, i.claims.into()))
        .collect();
    let events: Vec<(Revision, u32, String)> = store
        .read_events(&key_of.key, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.revision, e.index, e.event.data))
        .collect();
    format!("{result} / {stored:?} / {jobs:?} / {events:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_naming_one_key_twice_apply_as_in_the_memory_store() {
    let dir = tempfile::tempdir().unwrap();
    let embedded: DynStore =
        Arc::new(EmbeddedStore::open(EmbeddedOptions::new(dir.path())).unwrap());
    let memory: DynStore = Arc::new(MemoryStore::new());

    let p = prediction();
    let record = p.to_record().unwrap();
    let mut second = record.clone();
    second.body = second.body.replace("\"v1\"", "\"v2\"");
    let events = |data: &str| Effect::AppendEvents {
        stream: p.key(),
        events: vec![logs(data)],
    };
    let writes = [
        // Inserted twice in one write: the second replaces the first.
        Write::new(p.owner.clone())
            .op(Op::Insert(record.clone()))
            .op(Op::Insert(second.clone()))
            .effects([enqueue_now(&p), events("a")]),
        // Deleted, then updated at the revision it had: put back.
        Write::new(p.owner.clone())
            .op(Op::Delete(p.key()))
            .op(Op::Update {
                record: record.clone(),
                expected: Revision::FIRST,
            })
            .effects([events("b")]),
        // Updated twice from the same revision: both checked before, both applied.
        Write::new(p.owner.clone())
            .op(Op::Update {
                record: second.clone(),
                expected: Revision(2),
            })
            .op(Op::Update {
                record: record.clone(),
                expected: Revision(2),
            })
            .effects([events("c"), events("d")]),
        // A guarded write (a ledger entry) that fails its guard after its operations' checks
        // pass writes nothing.
        Write::new(p.owner.clone())
            .op(Op::Update {
                record: second.clone(),
                expected: Revision(3),
            })
            .effects([
                events("e"),
                Effect::Post(Box::new(entry(&p.owner, "spend", -5, 0, Reason::Adjust))),
            ]),
        // A repeated entry id in one write is posted once and reported.
        Write::new(p.owner.clone()).effects([
            Effect::Post(Box::new(entry(&p.owner, "grant", 5, 0, Reason::Grant))),
            Effect::Post(Box::new(entry(&p.owner, "grant", 5, 0, Reason::Grant))),
        ]),
        // Deleted and inserted again in one write: refused, the insert being checked against
        // the state before the write.
        Write::new(p.owner.clone())
            .op(Op::Delete(p.key()))
            .op(Op::Insert(second.clone())),
    ];
    for (n, write) in writes.iter().enumerate() {
        let want = outcome(&memory, write, &record).await;
        let got = outcome(&embedded, write, &record).await;
        assert_eq!(got, want, "write {n}");
    }
    assert_eq!(
        embedded.balance(&p.owner).await.unwrap(),
        memory.balance(&p.owner).await.unwrap()
    );
}

/// An expired idempotency key, with items and events of its own, is replaced whole by an
/// insert, as in the memory store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_over_an_expired_record_replaces_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let embedded: DynStore =
        Arc::new(EmbeddedStore::open(EmbeddedOptions::new(dir.path())).unwrap());
    let memory: DynStore = Arc::new(MemoryStore::new());
    let p = prediction();
    let mut key = p.to_record().unwrap();
    key.key.kind = augur_core::store::Kind::IdempotencyKey;
    key.expires_at = Some(Timestamp::now().plus(Duration::from_millis(100)));
    let task = Effect::Enqueue(Box::new(augur_core::store::NewItem {
        lane: Lane::Jobs,
        id: format!("task-{}", p.id),
        group: key.key.clone(),
        topic: "t".into(),
        owner: p.owner.clone(),
        payload: String::new(),
        run_at: Timestamp::now(),
        replace: false,
        claimed: None,
    }));
    let first = Write::new(p.owner.clone())
        .op(Op::Insert(key.clone()))
        .effects([
            task,
            Effect::AppendEvents {
                stream: key.key.clone(),
                events: vec![logs("old")],
            },
        ]);
    for store in [&memory, &embedded] {
        store.write(&first).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = key.clone();
    again.expires_at = None;
    let second = Write::new(p.owner.clone()).op(Op::Insert(again));
    let want = outcome(&memory, &second, &key).await;
    let got = outcome(&embedded, &second, &key).await;
    assert_eq!(got, want);
    assert!(got.contains("[] / []"), "{got}");
}

/// Claims with and without excluded topics take the same items in the same order as the
/// memory store, across owners and topics, also when the excluded topic's backlog is long
/// enough that the embedded store looks topic by topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_take_what_the_memory_store_takes() {
    use augur_core::ModelName;
    use augur_store_conformance::fixtures::{account, claim_on, insert, prediction_for};

    let dir = tempfile::tempdir().unwrap();
    let embedded: DynStore =
        Arc::new(EmbeddedStore::open(EmbeddedOptions::new(dir.path())).unwrap());
    let memory: DynStore = Arc::new(MemoryStore::new());
    let owners = [account("left"), account("right")];
    let topic = |n: usize| ModelName::parse(&format!("acme/m{n}")).unwrap();
    // A backlog of topic 0 from 150 accounts, all at the lowest rank and queued first (so a
    // claim that excludes topic 0 meets all of them first, in rank order), then interleaved
    // items of topics 1 and 2 from two accounts.
    let mut writes = Vec::new();
    for _ in 0..150 {
        let mut p = prediction_for(&account("many"));
        p.model = topic(0);
        writes.push(p);
    }
    for i in 0..30 {
        let mut p = prediction_for(&owners[i % 2]);
        p.model = topic(1 + (i / 3) % 2);
        writes.push(p);
    }
    for p in &writes {
        for store in [&memory, &embedded] {
            insert(store, p, vec![enqueue_now(p)]).await;
        }
    }
    let w = augur_core::WorkerId::generate();
    let rounds: [(usize, Vec<String>); 5] = [
        (4, vec![]),
        (7, vec![topic(0).to_string()]),
        (5, vec![topic(0).to_string(), topic(2).to_string()]),
        (20, vec![topic(1).to_string()]),
        (500, vec![]),
    ];
    for (n, (max, exclude)) in rounds.into_iter().enumerate() {
        let request = augur_core::store::ClaimRequest {
            exclude_topics: exclude,
            ..claim_on(Lane::Jobs, &w, Duration::from_secs(60), max)
        };
        let mut got = Vec::new();
        for store in [&memory, &embedded] {
            let ids: Vec<String> = store
                .claim(&request)
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.item.id)
                .collect();
            got.push(ids);
        }
        assert!(!got[0].is_empty(), "round {n} claimed nothing");
        assert_eq!(got[1], got[0], "round {n}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = EmbeddedStore::open(EmbeddedOptions::new(&data)).unwrap();
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
    drop(store);
}
