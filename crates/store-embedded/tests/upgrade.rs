//! Upgrading a data directory of schema version 2 (the release before storage contract v2:
//! tables `predictions`, `jobs`, `idempotency_keys`, `counters`, `deliveries`, `events`) to the
//! current schema at open: everything it held reads back through the new API, and the store
//! works on from there.

use std::sync::Arc;
use std::time::Duration;

use augur_core::idempotency::IdempotencyKey;
use augur_core::outbox::{DeliveryStatus, Outbox};
use augur_core::store::{
    DynStore, Effect, Entity, Kind, Lane, ListQuery, Partition, StreamEventKind,
};
use augur_core::{
    AccountId, ModelName, Prediction, PredictionId, Revision, Status, Timestamp, WebhookEvent,
    WorkerId,
};
use augur_store_conformance::fixtures::{claim_jobs, counter, get, update};
use augur_store_embedded::{EmbeddedOptions, EmbeddedStore};
use rusqlite::{Connection, params};
use serde_json::json;

/// Schema version 1, as released (`MIGRATIONS[0]` then; never edited).
const V1: &str = r"
    -- One row per prediction. `body` is the whole record (augur_core::Prediction as JSON); the
    -- other columns repeat the fields that queries filter or sort on.
    CREATE TABLE predictions (
        id           TEXT PRIMARY KEY NOT NULL,
        owner        TEXT NOT NULL,
        model        TEXT NOT NULL,
        status       TEXT NOT NULL,
        created_at   INTEGER NOT NULL,           -- microseconds since the Unix epoch
        expires_at   INTEGER,                    -- when retention removes the data; NULL: never
        data_removed INTEGER NOT NULL DEFAULT 0, -- 1 once retention left a tombstone
        revision     INTEGER NOT NULL,           -- compare-and-set version, 1 on insert
        body         TEXT NOT NULL
    ) STRICT;
    -- Listing, newest first: one account's predictions, and everyone's.
    CREATE INDEX predictions_by_owner ON predictions (owner, created_at DESC, id DESC);
    CREATE INDEX predictions_by_created ON predictions (created_at DESC, id DESC);
    -- The retention sweep: only records that still hold data and have an expiry.
    CREATE INDEX predictions_by_expiry ON predictions (expires_at)
        WHERE data_removed = 0 AND expires_at IS NOT NULL;

    -- The work queue: at most one job per prediction. A job is claimable once
    -- visible_at <= now; visible_at is run_at while unleased and the lease expiry while leased,
    -- so a lapsed lease needs no sweeping. seq breaks ties first in, first out.
    CREATE TABLE jobs (
        prediction_id TEXT PRIMARY KEY NOT NULL,
        queue         TEXT NOT NULL,
        attempts      INTEGER NOT NULL,
        run_at        INTEGER NOT NULL,
        visible_at    INTEGER NOT NULL,
        seq           INTEGER NOT NULL,
        lease_token   INTEGER,                   -- NULL: not leased
        lease_worker  TEXT
    ) STRICT;
    CREATE INDEX jobs_by_visibility ON jobs (visible_at, seq);

    -- Idempotency keys, per account.
    CREATE TABLE idempotency_keys (
        owner         TEXT NOT NULL,
        key           TEXT NOT NULL,
        fingerprint   TEXT NOT NULL,
        prediction_id TEXT NOT NULL,
        expires_at    INTEGER NOT NULL,
        PRIMARY KEY (owner, key)
    ) STRICT;
    CREATE INDEX idempotency_keys_by_prediction ON idempotency_keys (prediction_id);
    CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);

    -- Durable counters, changed by Effect::Count.
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL
    ) STRICT;
    ";

/// Schema version 2, as released (`MIGRATIONS[1]` then; never edited).
const V2: &str = r"
    -- One row per webhook message, in each prediction's order (seq). A prediction's messages
    -- go out one at a time: only its oldest pending message, the head, may be claimed, and
    -- only the head has claimable_at = max(next_attempt_at, lease_expires_at), so a claim
    -- reads due heads off one partial index and never walks the messages queued behind them.
    CREATE TABLE deliveries (
        prediction_id    TEXT NOT NULL,
        seq              INTEGER NOT NULL,       -- place in the prediction's outbox, from 1
        id               TEXT NOT NULL,          -- the message id (webhook-id)
        url              TEXT NOT NULL,
        event            TEXT NOT NULL,          -- start | output | logs | completed
        payload          TEXT NOT NULL,          -- the prediction as JSON, as in predictions.body
        created_at       INTEGER NOT NULL,       -- microseconds since the Unix epoch
        status           TEXT NOT NULL,          -- pending | delivered | failed
        attempts         TEXT NOT NULL,          -- JSON array of attempts, oldest first
        next_attempt_at  INTEGER,                -- while pending
        lease_token      INTEGER,                -- NULL: not leased
        lease_worker     TEXT,
        lease_expires_at INTEGER,
        claimable_at     INTEGER,                -- the head only; NULL for every other row
        PRIMARY KEY (prediction_id, seq),
        UNIQUE (prediction_id, id)
    ) STRICT;
    -- The claim: due heads, earliest first.
    CREATE INDEX deliveries_by_claimable ON deliveries (claimable_at)
        WHERE claimable_at IS NOT NULL;
    -- A prediction's head (to move it), and its oldest pending message (the next head).
    CREATE INDEX deliveries_head ON deliveries (prediction_id)
        WHERE claimable_at IS NOT NULL;
    CREATE INDEX deliveries_pending ON deliveries (prediction_id, seq)
        WHERE status = 'pending';

    -- Each prediction's event log, at (revision of the write that appended it, index in it).
    CREATE TABLE events (
        prediction_id TEXT NOT NULL,
        revision      INTEGER NOT NULL,
        idx           INTEGER NOT NULL,
        kind          TEXT NOT NULL,             -- output | logs | error | done
        data          TEXT NOT NULL,
        PRIMARY KEY (prediction_id, revision, idx)
    ) STRICT, WITHOUT ROWID;
    ";

/// A prediction body exactly as version 2 wrote it (`serde_json::to_string(&Prediction)`).
const BODY_A: &str = r#"{"id":"01jz0v2old0prediction0000a","owner":"acct-old","model":"augur/echo","version":"v1","input":{"text":"hello","x":0.1},"output":["https://x/y.png"],"logs":"step 1\n","error":null,"status":"succeeded","created_at":"2023-11-14T22:13:20.000000Z","started_at":"2023-11-14T22:13:21.000000Z","completed_at":"2023-11-14T22:13:22.000000Z","metrics":{"predict_time":1.0},"data_removed":false,"webhook":"https://hooks.example.com/h","webhook_events_filter":["start","output","logs","completed"],"deadline":null,"expires_at":"2023-11-14T23:13:22.000000Z","attempts":1,"stream_token":"d7422ee7a5b5e89da8e48da8716f52cb"}"#;

const HOUR: Duration = Duration::from_secs(3600);

fn prediction(id: &str, owner: &AccountId, created_at: Timestamp) -> Prediction {
    let mut p = Prediction::new(
        PredictionId::parse(id).unwrap(),
        owner.clone(),
        ModelName::parse("augur/echo").unwrap(),
        "v1".into(),
        json!({"prompt": "ein Bär 🐻", "n": 2.5}),
    );
    p.created_at = created_at;
    p
}

/// Writes `p`'s row as version 2 did.
fn put_prediction(conn: &Connection, p: &Prediction, body: &str, revision: i64) {
    conn.execute(
        "INSERT INTO predictions (id, owner, model, status, created_at, expires_at, \
         data_removed, revision, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            p.id.as_str(),
            p.owner.as_str(),
            p.model.as_str(),
            p.status.as_str(),
            p.created_at.as_micros(),
            p.expires_at.map(Timestamp::as_micros),
            p.data_removed,
            revision,
            body,
        ],
    )
    .unwrap();
}

/// What the version-2 directory held, for the checks after the upgrade.
struct Old {
    a: Prediction,
    tombstone: Prediction,
    leased: Prediction,
    later: Prediction,
    later_run_at: Timestamp,
}

/// A version-2 database with a bit of everything: a settled prediction with webhook messages
/// (delivered, pending and leased by the dead process, pending behind it) and events; a
/// tombstone; a prediction whose job a dead process held, with an idempotency key; one whose
/// job is due later; counters.
fn build_v2(path: &std::path::Path) -> Old {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;\n{V1}\n{V2}\nPRAGMA user_version = 2;"
    ))
    .unwrap();
    let now = Timestamp::now();
    let owner = AccountId::parse("acct-old").unwrap();
    let other = AccountId::parse("acct-other").unwrap();

    let a: Prediction = serde_json::from_str(BODY_A).unwrap();
    put_prediction(&conn, &a, BODY_A, 3);

    let mut tombstone = prediction(
        "01jz0v2old0prediction0000b",
        &owner,
        Timestamp::from_micros(1_700_000_100_000_000),
    );
    tombstone.status = Status::Failed;
    tombstone.error = Some("boom".into());
    tombstone.remove_data();
    tombstone.data_removed = true;
    put_prediction(
        &conn,
        &tombstone,
        &serde_json::to_string(&tombstone).unwrap(),
        4,
    );

    let leased = prediction("01jz0v2old0prediction0000c", &other, now.minus(HOUR));
    put_prediction(&conn, &leased, &serde_json::to_string(&leased).unwrap(), 1);
    let later = prediction("01jz0v2old0prediction0000d", &owner, now);
    put_prediction(&conn, &later, &serde_json::to_string(&later).unwrap(), 1);
    let later_run_at = now.plus(HOUR);

    // Jobs: one leased by the process that died (visible again only when its lease lapses),
    // one due in an hour.
    conn.execute(
        "INSERT INTO jobs (prediction_id, queue, attempts, run_at, visible_at, seq, \
         lease_token, lease_worker) VALUES (?1, 'augur/echo', 1, ?2, ?3, 1, 77, 'worker-dead')",
        params![
            leased.id.as_str(),
            now.minus(HOUR).as_micros(),
            now.plus(HOUR).as_micros()
        ],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO jobs (prediction_id, queue, attempts, run_at, visible_at, seq, \
         lease_token, lease_worker) VALUES (?1, 'augur/echo', 0, ?2, ?2, 2, NULL, NULL)",
        params![later.id.as_str(), later_run_at.as_micros()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO idempotency_keys (owner, key, fingerprint, prediction_id, expires_at) \
         VALUES (?1, 'key ✓', 'fp-1', ?2, ?3)",
        params![
            other.as_str(),
            leased.id.as_str(),
            now.plus(HOUR).as_micros()
        ],
    )
    .unwrap();
    conn.execute_batch(
        "INSERT INTO counters (name, value) VALUES ('predictions_created_total', 4), ('made', 3);",
    )
    .unwrap();

    // A's outbox: delivered; pending, leased by the dead process (the head); pending behind it.
    let attempt =
        r#"[{"at":"2023-11-14T22:13:23.000000Z","status":500,"error":"no ✗","duration_ms":7}]"#;
    let delivered =
        r#"[{"at":"2023-11-14T22:13:23.000000Z","status":200,"error":null,"duration_ms":3}]"#;
    for (seq, event, status, attempts, next, lease) in [
        (1, "start", "delivered", delivered, None, None),
        (
            2,
            "completed",
            "pending",
            attempt,
            Some(now.minus(HOUR).as_micros()),
            Some(now.plus(HOUR).as_micros()),
        ),
        (3, "completed", "pending", "[]", Some(now.as_micros()), None),
    ] {
        conn.execute(
            "INSERT INTO deliveries (prediction_id, seq, id, url, event, payload, created_at, \
             status, attempts, next_attempt_at, lease_token, lease_worker, lease_expires_at, \
             claimable_at) VALUES (?1, ?2, ?3, 'https://hooks.example.com/h', ?4, ?5, ?6, ?7, \
             ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                a.id.as_str(),
                seq,
                format!("msg_{}_{seq}", a.id),
                event,
                BODY_A,
                1_700_000_002_000_000i64 + seq,
                status,
                attempts,
                next,
                lease.map(|_| 99i64),
                lease.map(|_| "worker-dead"),
                lease,
                (seq == 2).then_some(lease.unwrap_or_default()),
            ],
        )
        .unwrap();
    }
    for (id, revision, idx, kind, data) in [
        (a.id.as_str(), 1, 0, "logs", "step 1\n"),
        (a.id.as_str(), 3, 0, "done", "{}"),
        (leased.id.as_str(), 1, 0, "output", "tok ✓"),
    ] {
        conn.execute(
            "INSERT INTO events (prediction_id, revision, idx, kind, data) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, revision, idx, kind, data],
        )
        .unwrap();
    }
    Old {
        a,
        tombstone,
        leased,
        later,
        later_run_at,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_directory_upgrades_at_open_and_reads_back_through_the_new_api() {
    let dir = tempfile::tempdir().unwrap();
    let old = build_v2(&dir.path().join("augur.db"));
    let store: DynStore =
        Arc::new(EmbeddedStore::open(EmbeddedOptions::new(dir.path())).expect("open and upgrade"));

    // Predictions: records at their revisions, split into body and data as `to_record` does.
    let stored = store.get(&old.a.key()).await.unwrap().expect("A");
    assert_eq!(stored.revision, Revision(3));
    assert_eq!(stored.record, old.a.to_record().unwrap());
    assert!(stored.record.data.as_deref().unwrap().contains("step 1"));
    assert!(!stored.record.body.contains("step 1"));
    assert_eq!(get(&store, &old.a.id).await.unwrap().value, old.a);
    let stored = store.get(&old.tombstone.key()).await.unwrap().expect("B");
    assert_eq!(stored.revision, Revision(4));
    assert!(stored.record.data_removed && stored.record.data.is_none());
    let tombstone = get(&store, &old.tombstone.id).await.unwrap().value;
    assert_eq!(tombstone, old.tombstone);
    for p in [&old.leased, &old.later] {
        let got = get(&store, &p.id).await.unwrap();
        assert_eq!((got.revision, &got.value), (Revision::FIRST, p));
    }
    // Listings see them (indexes built), newest first.
    let listed = store
        .list(&ListQuery {
            owner: Some(old.a.owner.clone()),
            ..ListQuery::of(Kind::Prediction, 10)
        })
        .await
        .unwrap();
    let ids: Vec<&str> = listed
        .items
        .iter()
        .map(|s| s.record.key.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            old.later.id.as_str(),
            old.tombstone.id.as_str(),
            old.a.id.as_str()
        ]
    );
    let failed = store
        .list(&ListQuery {
            status: Some("failed".into()),
            ..ListQuery::of(Kind::Prediction, 10)
        })
        .await
        .unwrap();
    assert_eq!(failed.items.len(), 1);

    // The idempotency key: a record in its owner's partition.
    let key = store
        .get(&IdempotencyKey::record_key(&old.leased.owner, "key ✓"))
        .await
        .unwrap()
        .expect("the key");
    assert_eq!(
        key.record.key.partition,
        Partition::of_account(&old.leased.owner)
    );
    let key = key.decode::<IdempotencyKey>().unwrap();
    assert_eq!(
        (
            key.prediction_id.clone(),
            key.fingerprint.as_str(),
            key.created_at
        ),
        (old.leased.id.clone(), "fp-1", old.leased.created_at)
    );

    // Counters as they were.
    assert_eq!(counter(&store, "made").await, 3);
    assert_eq!(counter(&store, "predictions_created_total").await, 4);

    // Jobs: the dead process's lease is over, the later job waits.
    let stats = store.queue_stats(Lane::Jobs).await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.delayed), (1, 0, 1));
    let w = WorkerId::generate();
    let claimed = claim_jobs(&store, &w, HOUR, 10).await;
    assert_eq!(claimed.len(), 1);
    let job = &claimed[0].item;
    assert_eq!(
        (job.id.as_str(), job.claims, job.topic.as_str()),
        (old.leased.id.as_str(), 2, "augur/echo")
    );
    assert_eq!(
        (&job.group, &job.owner),
        (&old.leased.key(), &old.leased.owner)
    );
    let later = store.items(Lane::Jobs, &old.later.key()).await.unwrap();
    assert_eq!(later[0].due_at, Some(old.later_run_at));

    // Webhook messages: in order, with their history, as `Delivery`s; the leased head is
    // claimable at once.
    let outbox = Outbox::new(store.clone());
    let listed = outbox.list(&old.a.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.status).collect::<Vec<_>>(),
        [
            DeliveryStatus::Delivered,
            DeliveryStatus::Pending,
            DeliveryStatus::Pending
        ]
    );
    assert_eq!(listed.iter().map(|d| d.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(listed[0].attempts[0].status, Some(200));
    assert_eq!(listed[1].attempts[0].error.as_deref(), Some("no ✗"));
    assert!(listed[2].attempts.is_empty());
    assert_eq!(listed[1].delivery.event, WebhookEvent::Completed);
    assert_eq!(listed[1].delivery.payload.prediction(), Some(&old.a));
    assert_eq!(listed[1].delivery.url, "https://hooks.example.com/h");
    assert_eq!(listed[0].next_attempt_at, None);
    let heads = outbox.claim(&w, HOUR, 10).await.unwrap();
    assert_eq!(heads.len(), 1, "one message of A at a time");
    assert_eq!(heads[0].state.delivery.id, format!("msg_{}_2", old.a.id));
    assert_eq!(heads[0].state.attempts.len(), 1);

    // Events, under their record's key.
    let events = store.read_events(&old.a.key(), None, 10).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.revision, e.index, e.event.kind))
            .collect::<Vec<_>>(),
        [
            (Revision(1), 0, StreamEventKind::Logs),
            (Revision(3), 0, StreamEventKind::Done)
        ]
    );
    let events = store
        .read_events(&old.leased.key(), None, 10)
        .await
        .unwrap();
    assert_eq!(events[0].event.data, "tok ✓");

    // The store works on: a compare-and-set at the carried-over revision, then retention
    // (A expired long ago): a tombstone, its events and finished messages gone.
    let mut next = old.a.clone();
    next.metrics.extra.insert("upgraded".into(), json!(true));
    update(&store, &next, Revision(3), vec![Effect::count("made", 1)])
        .await
        .unwrap();
    let expired = store.expire(Timestamp::now(), 100).await.unwrap();
    assert_eq!(expired, [old.a.key()]);
    let a = get(&store, &old.a.id).await.unwrap();
    assert!(a.value.data_removed && a.value.input.is_null());
    assert_eq!(a.revision, Revision(5));
    assert!(
        store
            .read_events(&old.a.key(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(outbox.list(&old.a.id).await.unwrap().len(), 2);

    // The old tables are gone and the version is recorded.
    store.close().await;
    let conn = Connection::open(dir.path().join("augur.db")).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4, "the latest schema");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        [
            "counters",
            "events",
            "items",
            "ledger",
            "ledger_totals",
            "queue_ranks",
            "records"
        ]
    );
}
