//! Durability of the embedded store: reopening keeps everything, leases of a dead process (on
//! jobs and webhook messages) are claimable at once, the directory lock, URL errors, and
//! `kill -9` during concurrent writes loses nothing that was acknowledged.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_core::idempotency::IdempotencyKey;
use augur_core::jobs::Jobs;
use augur_core::outbox::{DeliveryOutcome, Outbox};
use augur_core::store::{
    AdminStore, Attempt, DynStore, Effect, Entity, Error, Kind, Lane, ListQuery, Op, Reason,
    StreamEventData, StreamEventKind, Write,
};
use augur_core::{
    AccountId, CreateRequest, Creation, ModelName, Predictions, Revision, ServiceConfig, Timestamp,
    WebhookEvents, WorkerId,
};
use augur_store_conformance::fixtures::{
    QUEUE, account, claim_jobs, counter, enqueue_at, enqueue_now, get, insert, prediction, update,
};
use augur_store_conformance::{assert_balanced, delivery, entry, posting};
use augur_store_embedded::{EmbeddedOptions, EmbeddedStore, SyncMode};
use serde_json::json;

const LONG: Duration = Duration::from_secs(3600);

fn open(dir: &std::path::Path) -> DynStore {
    Arc::new(EmbeddedStore::open(EmbeddedOptions::new(dir)).expect("open store"))
}

fn keyed_request(owner: &AccountId) -> CreateRequest {
    CreateRequest {
        id: None,
        owner: owner.clone(),
        model: ModelName::parse(QUEUE).unwrap(),
        version: "v1".into(),
        input: json!({"text": "hello", "x": 0.1}),
        webhook: None,
        webhook_events_filter: WebhookEvents::ALL,
        deadline: None,
        idempotency_key: Some("k-1".into()),
        price: None,
        max_active: None,
    }
}

/// Predictions, revisions, jobs with their claims and run times, idempotency keys and counters
/// all survive a close and reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let owner = AccountId::admin();
    let (updated, retried, delayed) = (prediction(), prediction(), prediction());
    let later = Timestamp::now().plus(LONG);
    let keyed = {
        let store = open(dir.path());
        let service = Predictions::new(store.clone(), ServiceConfig::default());
        let keyed = match service.create(keyed_request(&owner)).await.unwrap() {
            Creation::Created(p) => p.value,
            other => panic!("expected a new prediction, got {other:?}"),
        };
        insert(&store, &updated, vec![Effect::count("made", 1)]).await;
        let mut next = updated.clone();
        next.logs = "step 1".into();
        update(
            &store,
            &next,
            Revision::FIRST,
            vec![Effect::count("steps", 1)],
        )
        .await
        .unwrap();
        insert(&store, &retried, vec![enqueue_now(&retried)]).await;
        // The keyed prediction's job is older: claim both, retry the other one.
        let jobs = Jobs::new(store.clone());
        let leases = jobs
            .claim(&WorkerId::generate(), LONG, 2, vec![])
            .await
            .unwrap();
        for lease in &leases {
            if lease.job.prediction_id == retried.id {
                jobs.retry(lease, Timestamp::now()).await.unwrap();
            } else {
                jobs.release(lease, Timestamp::now()).await.unwrap();
            }
        }
        insert(&store, &delayed, vec![enqueue_at(&delayed, later)]).await;
        keyed
    };

    let store = open(dir.path());
    assert_eq!(get(&store, &keyed.id).await.unwrap().value, keyed);
    let got = get(&store, &updated.id).await.unwrap();
    assert_eq!(
        (got.revision, got.value.logs.as_str()),
        (Revision(2), "step 1")
    );
    assert_eq!(
        (
            counter(&store, "made").await,
            counter(&store, "steps").await
        ),
        (1, 1)
    );
    let stats = store.queue_stats(Lane::Jobs).await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.delayed), (2, 0, 1));
    let again = claim_jobs(&store, &WorkerId::generate(), LONG, 10).await;
    assert_eq!(again.len(), 2);
    let claims = |id: &str| again.iter().find(|l| l.item.id == id).unwrap().item.claims;
    assert_eq!(
        claims(retried.id.as_str()),
        2,
        "the retried claim still counts"
    );
    assert_eq!(claims(keyed.id.as_str()), 1, "the released claim does not");
    let delayed_job = store.items(Lane::Jobs, &delayed.key()).await.unwrap();
    assert_eq!(delayed_job[0].due_at, Some(later));

    let key = store
        .get(&IdempotencyKey::record_key(&owner, "k-1"))
        .await
        .unwrap()
        .expect("the key survives");
    assert_eq!(
        key.decode::<IdempotencyKey>().unwrap().prediction_id,
        keyed.id
    );
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    match service.create(keyed_request(&owner)).await.unwrap() {
        Creation::Replayed(p) => assert_eq!(p.value.id, keyed.id),
        other => panic!("expected the stored prediction, got {other:?}"),
    }
}

/// A job leased by a process that died is claimable at once after reopen, its claim counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_jobs_are_claimable_at_once_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = prediction();
    {
        let store = open(dir.path());
        insert(&store, &p, vec![enqueue_now(&p)]).await;
        let leases = claim_jobs(&store, &WorkerId::generate(), LONG, 1).await;
        assert_eq!(leases.len(), 1);
        assert_eq!(store.queue_stats(Lane::Jobs).await.unwrap().leased, 1);
    }
    let store = open(dir.path());
    let stats = store.queue_stats(Lane::Jobs).await.unwrap();
    assert_eq!((stats.ready, stats.leased), (1, 0));
    let leases = claim_jobs(&store, &WorkerId::generate(), LONG, 1).await;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].item.id, p.id.as_str());
    assert_eq!(leases[0].item.claims, 2);
}

/// A job queued already claimed by a process that died is claimable at once after reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_claimed_at_create_are_claimable_at_once_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = prediction();
    {
        let store = open(dir.path());
        let (_lease, effect) = augur_core::jobs::Lease::claimed_at_create(
            &p.id,
            &p.owner,
            p.model.as_str(),
            &WorkerId::generate(),
            LONG,
            Timestamp::now(),
        );
        insert(&store, &p, vec![effect]).await;
        assert!(
            claim_jobs(&store, &WorkerId::generate(), LONG, 1)
                .await
                .is_empty()
        );
    }
    let store = open(dir.path());
    let leases = claim_jobs(&store, &WorkerId::generate(), LONG, 1).await;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].item.claims, 2);
}

/// Webhook messages (with their attempts) and events survive a reopen, and a message leased by
/// a process that died is claimable at once, not when its lease would have lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_and_events_survive_reopen_and_leases_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = prediction();
    let events = vec![
        StreamEventData {
            kind: StreamEventKind::Logs,
            data: "starting\n".into(),
        },
        StreamEventData {
            kind: StreamEventKind::Output,
            data: "tok ✓".into(),
        },
    ];
    let (listed, held) = {
        let store = open(dir.path());
        let outbox = Outbox::new(store.clone());
        insert(
            &store,
            &p,
            vec![
                delivery(&p, 0),
                delivery(&p, 1),
                Effect::AppendEvents {
                    stream: p.key(),
                    events: events.clone(),
                },
            ],
        )
        .await;
        let w = WorkerId::generate();
        let lease = outbox.claim(&w, LONG, 10).await.unwrap().remove(0);
        outbox
            .finish(
                &lease,
                &Attempt {
                    at: Timestamp::now(),
                    status: Some(200),
                    error: None,
                    duration_ms: 7,
                },
                DeliveryOutcome::Delivered,
            )
            .await
            .unwrap();
        let mut held = outbox.claim(&w, LONG, 10).await.unwrap();
        assert_eq!(held.len(), 1);
        assert!(outbox.claim(&w, LONG, 10).await.unwrap().is_empty());
        (outbox.list(&p.id).await.unwrap(), held.remove(0))
    };

    let store = open(dir.path());
    let outbox = Outbox::new(store.clone());
    assert_eq!(outbox.list(&p.id).await.unwrap(), listed);
    assert_eq!(listed[0].attempts.len(), 1);
    let read = store.read_events(&p.key(), None, 10).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        events
    );
    let again = outbox.claim(&WorkerId::generate(), LONG, 10).await.unwrap();
    assert_eq!(again.len(), 1, "the dead process's lease is over");
    assert_eq!(again[0].state.delivery.id, held.state.delivery.id);
    let late = outbox
        .finish(
            &held,
            &Attempt {
                at: Timestamp::now(),
                status: Some(200),
                error: None,
                duration_ms: 1,
            },
            DeliveryOutcome::Delivered,
        )
        .await;
    assert!(matches!(late, Err(Error::LeaseLost)), "{late:?}");
}

/// Ledgers survive a reopen and go on from where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledgers_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = account("saver");
    {
        let store = open(dir.path());
        store
            .write(&posting(
                &a,
                vec![
                    entry(&a, "g", 10, 0, Reason::Grant),
                    entry(&a, "r", 0, 4, Reason::Reserve),
                ],
            ))
            .await
            .unwrap();
    }
    let store = open(dir.path());
    let totals = assert_balanced(&store, &a).await;
    assert_eq!((totals.balance, totals.reserved), (10, 4));
    let more = entry(&a, "c", 0, 7, Reason::Reserve);
    assert!(matches!(
        store.write(&posting(&a, vec![more])).await,
        Err(Error::InsufficientCredits {
            available: 6,
            needed: 7,
            ..
        })
    ));
    assert_eq!(store.ledger(&a, None, 10).await.unwrap()[0].seq, 2);
}

/// Only one open store per directory; the error names the directory. Dropping or closing the
/// store releases the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_directory_cannot_be_opened_twice() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let err = EmbeddedStore::open(EmbeddedOptions::new(dir.path())).unwrap_err();
    let text = err.to_string();
    assert!(err.is_retryable(), "{text}");
    assert!(text.contains("locked"), "{text}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    drop(first);

    let second = open(dir.path());
    let p = prediction();
    insert(&second, &p, vec![]).await;
    second.close().await;
    second.close().await;
    assert!(matches!(
        second.get(&p.key()).await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        second
            .write(&Write::new(p.owner.clone()).op(Op::Delete(p.key())))
            .await,
        Err(Error::Unavailable { .. })
    ));
    let third = open(dir.path());
    assert_eq!(get(&third, &p.id).await.unwrap().value, p);
}

/// Bad URLs fail and say what is wrong; good ones open the directory they name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_validated() {
    for (url, needle) in [
        ("embedded://x?cache=big", "unknown option `cache`"),
        ("embedded://x?sync=sometimes", "\"sometimes\" for `sync`"),
        ("embedded://", "names no directory"),
        ("sqlite://x", "must start with embedded://"),
    ] {
        let err = EmbeddedStore::open_url(url).unwrap_err().to_string();
        assert!(err.contains(needle), "{url}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let url = format!("embedded://{}?sync=normal", data.display());
    let store = EmbeddedStore::open_url(&url).unwrap();
    assert_eq!(store.options().sync, SyncMode::Normal);
    assert!(!store.capabilities().durable);
    assert!(data.join("augur.db").exists());
    assert_eq!(store.backend(), "embedded");
    let debug = format!("{store:?}");
    assert!(
        debug.contains("augur.db") && debug.contains("Normal"),
        "{debug}"
    );
}

const CHILD_ENV: &str = "AUGUR_EMBEDDED_CRASH_CHILD_DIR";
const CRASH_TEST: &str = "kill_9_loses_no_acknowledged_write";

/// The child half of the crash test: 32 tasks create predictions (each with a job and a
/// counter) as fast as they can and print every acknowledged id, until killed.
async fn crash_child(dir: String) {
    let store = open(std::path::Path::new(&dir));
    let started = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                // A safety net: the parent kills us long before this.
                while started.elapsed() < Duration::from_secs(60) {
                    let p = prediction();
                    let written = store
                        .write(&Write {
                            account: p.owner.clone(),
                            ops: vec![Op::Insert(p.to_record().unwrap())],
                            effects: vec![enqueue_now(&p), Effect::count("made", 1)],
                        })
                        .await
                        .expect("create");
                    assert_eq!(written.revisions, vec![Some(Revision::FIRST)]);
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack:{};", p.id).expect("stdout");
                    out.flush().expect("stdout");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Three times: a child process writes concurrently, is killed with SIGKILL about a second
/// after its first acknowledgement, and every id it printed as acknowledged is in the store;
/// counters and jobs match the predictions exactly (the effects committed with them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        crash_child(dir).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashSet<String> = HashSet::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", CRASH_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the writer process");
        let stdout = child.stdout.take().unwrap();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // A line cut short by the kill has no closing `;` and does not count.
                if let Some(id) = line.strip_prefix("ack:").and_then(|l| l.strip_suffix(';')) {
                    if ids.is_empty() {
                        let _ = first_tx.send(());
                    }
                    ids.push(id.to_owned());
                }
            }
            ids
        });
        first_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the writer acknowledged nothing");
        tokio::time::sleep(Duration::from_secs(1)).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let ids = reader.join().unwrap();
        assert!(ids.len() > 10, "round {round}: only {} writes", ids.len());
        acked.extend(ids);

        let reopened = Instant::now();
        let store = open(dir.path());
        let opened_in = reopened.elapsed();
        let all = store
            .list(&ListQuery::of(Kind::Prediction, 10_000_000))
            .await
            .unwrap();
        let rows = all.items.len();
        let stored: HashSet<&str> = all.items.iter().map(|s| s.record.key.id.as_str()).collect();
        let missing: Vec<_> = acked
            .iter()
            .filter(|id| !stored.contains(id.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged writes lost: {missing:?}"
        );
        // And through point reads, for a sample.
        for id in acked.iter().take(200) {
            let id = augur_core::PredictionId::parse(id).unwrap();
            get(&store, &id).await.expect("acknowledged prediction");
        }
        let made = counter(&store, "made").await;
        assert_eq!(
            made, rows as i64,
            "counter effect committed apart from its row"
        );
        let stats = store.queue_stats(Lane::Jobs).await.unwrap();
        assert_eq!(
            stats.ready, rows as u64,
            "job effect committed apart from its row"
        );
        eprintln!(
            "round {round}: {} acknowledged so far, {rows} stored, reopened in {opened_in:?}",
            acked.len()
        );
    }
}
