//! The upgrade of a database at migration 0002 (predictions, jobs, idempotency keys,
//! webhook deliveries, events, counters in tables of their own) to 0003 (records, queue items,
//! events by stream): a schema is built with 0001 and 0002 alone and filled with rows written
//! the way the 0002-era store wrote them (U+0000 escaping included), then the store connects
//! (applying 0003), and everything is read back through the storage contract.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use augur_core::idempotency::IdempotencyKey;
use augur_core::outbox::{Delivery, DeliveryStatus, Outbox};
use augur_core::store::{
    Attempt, DynStore, Entity, Kind, Lane, ListQuery, StoreExt, StreamEventKind,
};
use augur_core::{
    AccountId, ModelName, Prediction, PredictionId, Revision, Status, Timestamp, WebhookEvent,
    WorkerId,
};
use augur_store_postgres::{MIGRATIONS, PostgresStore};
use serde_json::{Value, json};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

const ESC: char = '\u{f8ff}';

/// The 0002-era escaping of texts holding U+0000.
fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '\0' => out.extend([ESC, '0']),
            ESC => out.extend([ESC, ESC]),
            c => out.push(c),
        }
    }
    out
}

fn escape_json(value: &mut Value) {
    match value {
        Value::String(s) => *s = escape(s),
        Value::Array(items) => items.iter_mut().for_each(escape_json),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut v) in old {
                escape_json(&mut v);
                map.insert(escape(&k), v);
            }
        }
        _ => {}
    }
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// A time as the 0002-era store wrote it: `timestamptz` from integer microseconds.
const TS: &str = "('epoch'::timestamptz + $1::bigint * interval '1 microsecond')";

fn micros(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::as_micros)
}

/// Writes `p` at `revision` as a row of 0001's `predictions`, as the 0002-era store's
/// `PredictionRow::encode` did: known fields in columns, the rest in `extra`, every text
/// escaped (and `extra` marked) if any holds U+0000.
async fn old_prediction(db: &Client, p: &Prediction, revision: i64) {
    let Value::Object(mut map) = serde_json::to_value(p).unwrap() else {
        unreachable!()
    };
    let mut input = map.remove("input").unwrap_or(Value::Null);
    let mut output = map.remove("output").filter(|v| !v.is_null());
    let mut metrics = map.remove("metrics").unwrap_or(json!({}));
    for key in [
        "id",
        "owner",
        "model",
        "version",
        "status",
        "created_at",
        "started_at",
        "completed_at",
        "deadline",
        "expires_at",
        "data_removed",
        "attempts",
        "webhook",
        "error",
        "logs",
    ] {
        map.remove(key);
    }
    let mut extra = Value::Object(map);
    let (mut version, mut logs, mut webhook, mut error) = (
        p.version.clone(),
        p.logs.clone(),
        p.webhook.clone(),
        p.error.clone(),
    );
    let texts_hold_nul = [&version, &logs]
        .into_iter()
        .chain(&webhook)
        .chain(&error)
        .any(|t| t.contains('\0'))
        || [&input, &metrics, &extra]
            .into_iter()
            .chain(&output)
            .any(holds_nul);
    if texts_hold_nul {
        for t in [&mut version, &mut logs]
            .into_iter()
            .chain(&mut webhook)
            .chain(&mut error)
        {
            *t = escape(t);
        }
        for v in [&mut input, &mut metrics, &mut extra]
            .into_iter()
            .chain(&mut output)
        {
            escape_json(v);
        }
        extra["_augur_nul_escaped"] = Value::Bool(true);
    }
    let t = |n: usize| format!("('epoch'::timestamptz + ${n}::bigint * interval '1 microsecond')");
    let sql = format!(
        "INSERT INTO predictions (id, owner, model, version, status, created_at, started_at, \
         completed_at, deadline, expires_at, data_removed, attempts, revision, webhook, error, \
         logs, input, output, metrics, extra) VALUES ($1, $2, $3, $4, $5, {}, {}, {}, {}, {}, \
         $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        t(6),
        t(7),
        t(8),
        t(9),
        t(10)
    );
    let status = p.status.as_str();
    let attempts = i64::from(p.attempts);
    let params: [&(dyn ToSql + Sync); 20] = [
        &p.id.as_str(),
        &p.owner.as_str(),
        &p.model.as_str(),
        &version,
        &status,
        &p.created_at.as_micros(),
        &micros(p.started_at),
        &micros(p.completed_at),
        &micros(p.deadline),
        &micros(p.expires_at),
        &p.data_removed,
        &attempts,
        &revision,
        &webhook,
        &error,
        &logs,
        &input,
        &output,
        &metrics,
        &extra,
    ];
    db.execute(&sql, &params).await.unwrap();
}

/// Writes a webhook message of 0002's `deliveries`, escaped as the 0002-era store did.
#[allow(clippy::too_many_arguments)]
async fn old_delivery(
    db: &Client,
    d: &Delivery,
    seq: i64,
    status: &str,
    attempts: &[Attempt],
    next_attempt_at: Option<Timestamp>,
    visible_at: Option<Timestamp>,
) {
    let mut payload = serde_json::to_value(d.payload.prediction().unwrap()).unwrap();
    let escaped = d.id.contains('\0') || d.url.contains('\0') || holds_nul(&payload);
    if escaped {
        escape_json(&mut payload);
    }
    let attempts = serde_json::to_value(attempts).unwrap();
    let event = serde_json::to_value(d.event).unwrap();
    let sql = format!(
        "INSERT INTO deliveries (prediction_id, seq, id, url, event, payload, created_at, status, \
         attempts, next_attempt_at, visible_at, escaped) VALUES ($2, $3, $4, $5, $6, $7, {TS}, \
         $8, $9, ('epoch'::timestamptz + $10::bigint * interval '1 microsecond'), \
         ('epoch'::timestamptz + $11::bigint * interval '1 microsecond'), $12)"
    );
    db.execute(
        &sql,
        &[
            &d.created_at.as_micros(),
            &d.subject_id(),
            &seq,
            &d.id,
            &d.url,
            &event.as_str().unwrap(),
            &payload,
            &status,
            &attempts,
            &micros(next_attempt_at),
            &micros(visible_at),
            &escaped,
        ],
    )
    .await
    .unwrap();
}

fn prediction(owner: &AccountId) -> Prediction {
    let mut p = Prediction::new(
        PredictionId::generate(),
        owner.clone(),
        ModelName::parse("augur/echo").unwrap(),
        "v1".into(),
        json!({"text": "hello", "n": 1.5}),
    );
    p.created_at = Timestamp::from_micros(Timestamp::now().as_micros() - 60_000_000);
    p
}

fn delivery(p: &Prediction, n: u32, event: WebhookEvent) -> Delivery {
    Delivery {
        id: format!("msg_{}_{n}", p.id),
        url: "https://hooks.example.com/augur?x=1".into(),
        event,
        payload: augur_core::outbox::Payload::Prediction(Box::new(p.clone())),
        created_at: Timestamp::from_micros(p.created_at.as_micros() + i64::from(n)),
    }
}

/// A database at 0002 with predictions (live, settled, a tombstone, one holding U+0000),
/// jobs (due, leased, delayed), webhook messages (delivered, in flight, waiting), idempotency
/// keys (live, expired), events and counters upgrades to 0003 without losing any of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_at_0002_upgrades_without_losing_data() {
    let Some(url) = common::url() else { return };
    let schema = common::fresh_schema();
    let db = common::raw_client(&url).await;
    db.batch_execute(&format!(
        "CREATE SCHEMA {schema}; SET search_path = {schema}; \
         CREATE TABLE schema_migrations (version bigint PRIMARY KEY, name text NOT NULL, \
         applied_at timestamptz NOT NULL DEFAULT now());"
    ))
    .await
    .unwrap();
    for m in &MIGRATIONS[..2] {
        db.batch_execute(m.sql).await.unwrap();
        db.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .unwrap();
    }

    let alice = AccountId::parse("alice").unwrap();
    let admin = AccountId::admin();
    let now = Timestamp::now();
    let hour = Duration::from_secs(3600);

    // A settled prediction with a webhook, its three messages and its events.
    let mut settled = prediction(&alice);
    settled.status = Status::Succeeded;
    settled.output = Some(json!(["https://x/y.png", {"k": [1, 2.25, null]}]));
    settled.logs = "step 1\nstep 2 ✓\n".into();
    settled.started_at = Some(settled.created_at);
    settled.completed_at = Some(now);
    settled.expires_at = Some(now.plus(hour));
    settled.webhook = Some("https://hooks.example.com/augur?x=1".into());
    settled.metrics.predict_time = Some(0.25);
    settled.metrics.extra.insert("tokens".into(), json!(12));
    settled.attempts = 1;
    settled.external_id = Some("upstream-7".into());
    old_prediction(&db, &settled, 5).await;
    let delivered = Attempt {
        at: now,
        status: Some(200),
        error: None,
        duration_ms: 12,
    };
    let messages = [
        delivery(&settled, 0, WebhookEvent::Start),
        delivery(&settled, 1, WebhookEvent::Output),
        delivery(&settled, 2, WebhookEvent::Completed),
    ];
    old_delivery(
        &db,
        &messages[0],
        1,
        "delivered",
        std::slice::from_ref(&delivered),
        None,
        None,
    )
    .await;
    old_delivery(&db, &messages[1], 2, "pending", &[], Some(now), Some(now)).await;
    old_delivery(&db, &messages[2], 3, "pending", &[], Some(now), None).await;
    for (revision, idx, kind, data) in [
        (2i64, 0i32, "output", "tok"),
        (3, 0, "output", "tok ✓"),
        (3, 1, "done", "{}"),
    ] {
        db.execute(
            "INSERT INTO events (prediction_id, revision, idx, kind, data) VALUES ($1, $2, $3, $4, $5)",
            &[&settled.id.as_str(), &revision, &idx, &kind, &data],
        )
        .await
        .unwrap();
    }

    // A tombstone.
    let mut tombstone = prediction(&alice);
    tombstone.status = Status::Failed;
    tombstone.error = Some("no".into());
    tombstone.expires_at = Some(now.minus(hour));
    tombstone.remove_data();
    old_prediction(&db, &tombstone, 4).await;

    // One holding U+0000 (and the escape character), with a message and an event holding it.
    let mut binary = prediction(&admin);
    binary.logs = "binary\0 log \u{f8ff}0 \u{f8ff}".into();
    binary.input = json!({"a\0key": ["x\0y"], "plain": "\u{f8ff}"});
    binary.error = Some("bad \0 byte".into());
    binary.webhook = Some("https://hooks.example.com/augur?x=1".into());
    old_prediction(&db, &binary, 2).await;
    let odd = delivery(&binary, 0, WebhookEvent::Start);
    let failed = Attempt {
        at: now,
        status: None,
        error: Some("reset \0 by peer".into()),
        duration_ms: 3,
    };
    // Attempts were escaped and marked one by one.
    let mut failed_stored = serde_json::to_value(&failed).unwrap();
    escape_json(&mut failed_stored);
    failed_stored["_augur_nul_escaped"] = Value::Bool(true);
    {
        let mut payload = serde_json::to_value(&binary).unwrap();
        escape_json(&mut payload);
        db.execute(
            &format!(
                "INSERT INTO deliveries (prediction_id, seq, id, url, event, payload, created_at, \
                 status, attempts, next_attempt_at, escaped) VALUES ($2, 1, $3, $4, 'start', $5, \
                 {TS}, 'failed', $6, NULL, true)"
            ),
            &[
                &odd.created_at.as_micros(),
                &binary.id.as_str(),
                &odd.id,
                &odd.url,
                &payload,
                &json!([failed_stored]),
            ],
        )
        .await
        .unwrap();
    }
    db.execute(
        "INSERT INTO events (prediction_id, revision, idx, kind, data, escaped) \
         VALUES ($1, 2, 0, 'logs', $2, true)",
        &[&binary.id.as_str(), &escape("a\0b\u{f8ff}")],
    )
    .await
    .unwrap();

    // Jobs: one due, one leased by a node until later, one delayed.
    let due = prediction(&admin);
    let leased = {
        let mut p = prediction(&admin);
        p.status = Status::Processing;
        p.attempts = 2;
        p
    };
    let delayed = prediction(&alice);
    for (p, attempts, run_at, visible_at, token) in [
        (&due, 0i64, now.minus(hour), now.minus(hour), None),
        (&leased, 2, now.minus(hour), now.plus(hour), Some(77i64)),
        (&delayed, 1, now.plus(hour), now.plus(hour), None),
    ] {
        old_prediction(&db, p, 1).await;
        db.execute(
            &format!(
                "INSERT INTO jobs (prediction_id, queue, attempts, run_at, visible_at, \
                 lease_token, lease_worker) VALUES ($2, 'augur/echo', $3, {TS}, \
                 ('epoch'::timestamptz + $4::bigint * interval '1 microsecond'), $5, $6)"
            ),
            &[
                &run_at.as_micros(),
                &p.id.as_str(),
                &attempts,
                &visible_at.as_micros(),
                &token,
                &token.map(|_| "worker-old"),
            ],
        )
        .await
        .unwrap();
    }

    // Idempotency keys: one live (for `due`), one expired.
    for (key, prediction_id, expires_at) in [
        ("key-1 ✓", &due.id, now.plus(hour)),
        ("key-old", &delayed.id, now.minus(hour)),
    ] {
        db.execute(
            &format!(
                "INSERT INTO idempotency_keys (owner, key, fingerprint, prediction_id, expires_at) \
                 VALUES ('admin', $2, 'fp', $3, {TS})"
            ),
            &[&expires_at.as_micros(), &key, &prediction_id.as_str()],
        )
        .await
        .unwrap();
    }
    db.batch_execute(
        "INSERT INTO counters (name, shard, value) VALUES \
         ('predictions_created_total', 3, 4), ('predictions_created_total', 900, 2), \
         ('predictions_settled_total', 0, 2)",
    )
    .await
    .unwrap();

    // The upgrade.
    let store = PostgresStore::connect(&common::url_with_schema(&url, &schema))
        .await
        .expect("the store connects and migrates");
    let store: DynStore = Arc::new(store);
    let tables: Vec<String> = db
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 \
             ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "counters",
            "events",
            "items",
            "ledger",
            "ledger_totals",
            "queue_clocks",
            "queue_last",
            "records",
            "schema_migrations"
        ]
    );

    // Records: every prediction reads back as it was, at its revision.
    for (p, revision) in [
        (&settled, 5),
        (&tombstone, 4),
        (&binary, 2),
        (&due, 1),
        (&leased, 1),
        (&delayed, 1),
    ] {
        let got = store
            .get_entity::<Prediction>(&p.id.key())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} is there", p.id));
        assert_eq!(*got.value, *p, "{}", p.id);
        assert_eq!(got.revision, Revision(revision));
        let stored = store.get(&p.id.key()).await.unwrap().unwrap();
        assert_eq!(
            stored.record.key,
            p.key(),
            "the key's partition is the id's"
        );
        assert_eq!(stored.record.status.as_deref(), Some(p.status.as_str()));
        assert_eq!(stored.record.data.is_none(), p.data_removed);
    }
    let alices = store
        .list(&ListQuery {
            owner: Some(alice.clone()),
            ..ListQuery::of(Kind::Prediction, 10)
        })
        .await
        .unwrap();
    assert_eq!(alices.items.len(), 3);

    // Jobs: the due one is claimable with its attempts counted, the others are not.
    let stats = store.queue_stats(Lane::Jobs).await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.delayed), (1, 1, 1));
    let w = WorkerId::generate();
    let claimed = store
        .claim(&augur_store_conformance::fixtures::claim_on(
            Lane::Jobs,
            &w,
            Duration::from_secs(60),
            10,
        ))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].item.id, due.id.as_str());
    assert_eq!(claimed[0].item.group, due.key());
    assert_eq!(claimed[0].item.topic, "augur/echo");
    assert_eq!(claimed[0].item.owner, admin);
    assert_eq!(claimed[0].item.claims, 1);
    let held = store.items(Lane::Jobs, &leased.key()).await.unwrap();
    assert_eq!(held[0].claims, 2);

    // Webhook messages: their history kept, the in-flight one the head, in order.
    let outbox = Outbox::new(store.clone());
    let listed = outbox.list(&settled.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.status).collect::<Vec<_>>(),
        [
            DeliveryStatus::Delivered,
            DeliveryStatus::Pending,
            DeliveryStatus::Pending
        ]
    );
    for (state, message) in listed.iter().zip(&messages) {
        assert_eq!(state.delivery, *message);
    }
    assert_eq!(listed[0].attempts, vec![delivered]);
    assert_eq!(listed.iter().map(|d| d.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let odd_listed = outbox.list(&binary.id).await.unwrap();
    assert_eq!(odd_listed[0].delivery, odd);
    assert_eq!(odd_listed[0].attempts, vec![failed]);
    assert_eq!(odd_listed[0].status, DeliveryStatus::Failed);
    let heads = outbox.claim(&w, Duration::from_secs(60), 10).await.unwrap();
    assert_eq!(
        heads
            .iter()
            .map(|l| l.state.delivery.id.clone())
            .collect::<Vec<_>>(),
        [messages[1].id.clone()]
    );

    // Idempotency keys: records named by the key's digest, the expired one gone.
    let live = store
        .get_entity::<IdempotencyKey>(&IdempotencyKey::record_key(&admin, "key-1 ✓"))
        .await
        .unwrap()
        .expect("the live key");
    assert_eq!(
        (
            live.value.prediction_id.clone(),
            live.value.fingerprint.as_str()
        ),
        (due.id.clone(), "fp")
    );
    assert_eq!(live.value.created_at, due.created_at);
    let expired = IdempotencyKey::record_key(&admin, "key-old");
    assert!(store.get(&expired).await.unwrap().is_none());
    let swept = store.expire(Timestamp::now(), 100).await.unwrap();
    assert_eq!(swept, vec![expired]);

    // Events, under each prediction's key.
    let logged = store
        .read_events(&settled.id.key(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        logged
            .iter()
            .map(|e| (e.revision.0, e.index, e.event.kind, e.event.data.as_str()))
            .collect::<Vec<_>>(),
        [
            (2, 0, StreamEventKind::Output, "tok"),
            (3, 0, StreamEventKind::Output, "tok ✓"),
            (3, 1, StreamEventKind::Done, "{}"),
        ]
    );
    let odd_events = store.read_events(&binary.id.key(), None, 10).await.unwrap();
    assert_eq!(odd_events[0].event.data, "a\0b\u{f8ff}");

    // Counters.
    let counters: HashMap<String, i64> = store.counters().await.unwrap().into_iter().collect();
    assert_eq!(counters["predictions_created_total"], 6);
    assert_eq!(counters["predictions_settled_total"], 2);

    // And the upgraded store goes on: a transition of a migrated prediction, with effects.
    let mut next = (*store
        .get_entity::<Prediction>(&leased.id.key())
        .await
        .unwrap()
        .unwrap()
        .value)
        .clone();
    next.status = Status::Succeeded;
    let written = augur_store_conformance::fixtures::update(
        &store,
        &next,
        Revision(1),
        vec![augur_core::jobs::complete(&leased.id)],
    )
    .await
    .unwrap();
    assert_eq!(written.revisions, vec![Some(Revision(2))]);
    assert!(
        store
            .items(Lane::Jobs, &leased.key())
            .await
            .unwrap()
            .is_empty()
    );
    drop(store);
    db.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
