//! Durability of the embedded store: reopening keeps everything, leases of a dead process (on
//! jobs and webhook messages) are claimable at once, the directory lock, URL errors, and
//! `kill -9` during concurrent writes loses nothing that was acknowledged.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_core::store::{
    Attempt, ClaimRequest, Created, DeliveryOutcome, Effect, Error, IdempotencyRecord, ListQuery,
    NewPrediction, Store, StreamEventData, StreamEventKind,
};
use augur_core::{AccountId, ModelName, Prediction, PredictionId, Revision, Timestamp, WorkerId};
use augur_store_embedded::{EmbeddedOptions, EmbeddedStore, SyncMode};
use serde_json::json;

const QUEUE: &str = "augur/echo";
const LONG: Duration = Duration::from_secs(3600);

fn prediction() -> Prediction {
    Prediction::new(
        PredictionId::generate(),
        AccountId::admin(),
        ModelName::parse(QUEUE).unwrap(),
        "v1".into(),
        json!({"text": "hello", "x": 0.1}),
    )
}

fn enqueue() -> Effect {
    Effect::EnqueueJob {
        queue: QUEUE.into(),
        run_at: Timestamp::now(),
    }
}

fn open(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedOptions::new(dir)).expect("open store")
}

fn claim(worker: &WorkerId, max: usize) -> ClaimRequest {
    ClaimRequest {
        worker: worker.clone(),
        lease_for: LONG,
        max,
        exclude_queues: Vec::new(),
    }
}

fn counter(all: &[(String, i64)], name: &str) -> i64 {
    all.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
}

async fn create(store: &EmbeddedStore, p: &Prediction, effects: &[Effect]) -> Created {
    store
        .create(NewPrediction {
            prediction: p,
            idempotency: None,
            effects,
        })
        .await
        .expect("create")
}

/// Predictions, revisions, jobs with their attempts and run times, idempotency keys and
/// counters all survive a close and reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let owner = AccountId::admin();
    let keyed = prediction();
    let key = IdempotencyRecord {
        owner: owner.clone(),
        key: "k-1".into(),
        fingerprint: "fp".into(),
        prediction_id: keyed.id.clone(),
        expires_at: Timestamp::now().plus(LONG),
    };
    let (updated, retried, delayed) = (prediction(), prediction(), prediction());
    let later = Timestamp::now().plus(LONG);
    {
        let store = open(dir.path());
        store
            .create(NewPrediction {
                prediction: &keyed,
                idempotency: Some(&key),
                effects: &[Effect::count("made", 1)],
            })
            .await
            .unwrap();
        create(&store, &updated, &[Effect::count("made", 1)]).await;
        let mut next = updated.clone();
        next.logs = "step 1".into();
        store
            .update(
                &updated.id,
                Revision::FIRST,
                &next,
                &[Effect::count("steps", 1)],
            )
            .await
            .unwrap();
        create(&store, &retried, &[enqueue()]).await;
        let lease = store
            .claim_jobs(&claim(&WorkerId::generate(), 1))
            .await
            .unwrap()
            .remove(0);
        store.retry_job(&lease, Timestamp::now()).await.unwrap();
        create(
            &store,
            &delayed,
            &[Effect::EnqueueJob {
                queue: QUEUE.into(),
                run_at: later,
            }],
        )
        .await;
    }

    let store = open(dir.path());
    assert_eq!(store.get(&keyed.id).await.unwrap().value, keyed);
    let got = store.get(&updated.id).await.unwrap();
    assert_eq!(
        (got.revision, got.value.logs.as_str()),
        (Revision(2), "step 1")
    );
    let counters = store.counters().await.unwrap();
    assert_eq!(
        (counter(&counters, "made"), counter(&counters, "steps")),
        (2, 1)
    );
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.delayed), (1, 0, 1));
    let again = store
        .claim_jobs(&claim(&WorkerId::generate(), 10))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job.prediction_id, retried.id);
    assert_eq!(again[0].job.attempts, 2, "the retried attempt still counts");

    let other = prediction();
    let retry_key = IdempotencyRecord {
        prediction_id: other.id.clone(),
        ..key.clone()
    };
    match store
        .create(NewPrediction {
            prediction: &other,
            idempotency: Some(&retry_key),
            effects: &[],
        })
        .await
        .unwrap()
    {
        Created::ExistingKey { record, prediction } => {
            assert_eq!(record.prediction_id, keyed.id);
            assert_eq!(prediction.unwrap().value, keyed);
        }
        other => panic!("expected the stored key, got {other:?}"),
    }
}

/// A job leased by a process that died is claimable at once after reopen, its attempt counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_jobs_are_claimable_at_once_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = prediction();
    {
        let store = open(dir.path());
        create(&store, &p, &[enqueue()]).await;
        let leases = store
            .claim_jobs(&claim(&WorkerId::generate(), 1))
            .await
            .unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(store.queue_stats().await.unwrap().leased, 1);
    }
    let store = open(dir.path());
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased), (1, 0));
    let leases = store
        .claim_jobs(&claim(&WorkerId::generate(), 1))
        .await
        .unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].job.prediction_id, p.id);
    assert_eq!(leases[0].job.attempts, 2);
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
        create(
            &store,
            &p,
            &[
                augur_store_conformance::delivery(&p, 0),
                augur_store_conformance::delivery(&p, 1),
                Effect::AppendEvents(events.clone()),
            ],
        )
        .await;
        let w = WorkerId::generate();
        let lease = store
            .claim_deliveries(&w, LONG, 10)
            .await
            .unwrap()
            .remove(0);
        store
            .finish_delivery(
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
        let mut held = store.claim_deliveries(&w, LONG, 10).await.unwrap();
        assert_eq!(held.len(), 1);
        assert!(
            store
                .claim_deliveries(&w, LONG, 10)
                .await
                .unwrap()
                .is_empty()
        );
        (store.list_deliveries(&p.id).await.unwrap(), held.remove(0))
    };

    let store = open(dir.path());
    assert_eq!(store.list_deliveries(&p.id).await.unwrap(), listed);
    assert_eq!(listed[0].attempts.len(), 1);
    let read = store.read_events(&p.id, None, 10).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        events
    );
    let again = store
        .claim_deliveries(&WorkerId::generate(), LONG, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "the dead process's lease is over");
    assert_eq!(again[0].state.delivery.id, held.state.delivery.id);
    let late = store
        .finish_delivery(
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
    create(&second, &p, &[]).await;
    second.close().await;
    second.close().await;
    assert!(matches!(
        second.get(&p.id).await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        second.delete(&p.id).await,
        Err(Error::Unavailable { .. })
    ));
    let third = open(dir.path());
    assert_eq!(third.get(&p.id).await.unwrap().value, p);
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
    let store = Arc::new(open(std::path::Path::new(&dir)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                // A safety net: the parent kills us long before this.
                while started.elapsed() < Duration::from_secs(60) {
                    let p = prediction();
                    let created = store
                        .create(NewPrediction {
                            prediction: &p,
                            idempotency: None,
                            effects: &[enqueue(), Effect::count("made", 1)],
                        })
                        .await
                        .expect("create");
                    assert!(matches!(created, Created::Inserted(_)));
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
            .list(&ListQuery {
                limit: 10_000_000,
                ..Default::default()
            })
            .await
            .unwrap();
        let rows = all.items.len();
        let stored: HashSet<&str> = all.items.iter().map(|p| p.value.id.as_str()).collect();
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
            let id = PredictionId::parse(id).unwrap();
            store.get(&id).await.expect("acknowledged prediction");
        }
        let made = counter(&store.counters().await.unwrap(), "made");
        assert_eq!(
            made, rows as i64,
            "counter effect committed apart from its row"
        );
        let stats = store.queue_stats().await.unwrap();
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
