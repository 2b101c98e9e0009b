//! The webhook outbox and event log on a real Redis (`AUGUR_TEST_REDIS_URL`), beyond the
//! shared suite: the event log and finished messages expire natively with the prediction's
//! data while pending messages stay, and the shard's heads set holds exactly the predictions
//! with a pending message.

mod common;

use std::time::Duration;

use augur_core::store::{
    Attempt, DeliveryOutcome, DeliveryStatus, Effect, NewPrediction, Store, StreamEventData,
    StreamEventKind,
};
use augur_core::{PredictionId, Revision, Timestamp, WorkerId};
use augur_store_conformance::delivery;
use augur_store_conformance::fixtures::prediction;
use augur_store_redis::RedisStore;
use redis::aio::MultiplexedConnection;

const LONG: Duration = Duration::from_secs(60);

fn attempt() -> Attempt {
    Attempt {
        at: Timestamp::now(),
        status: Some(200),
        error: None,
        duration_ms: 1,
    }
}

fn events() -> Effect {
    Effect::AppendEvents(vec![StreamEventData {
        kind: StreamEventKind::Logs,
        data: "hello\n".into(),
    }])
}

/// The one key of this prefix that ends with `suffix` (the shard tag is not known here).
async fn key(conn: &mut MultiplexedConnection, prefix: &str, suffix: &str) -> Option<String> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}s*}}{suffix}"))
        .query_async(conn)
        .await
        .expect("KEYS");
    assert!(keys.len() <= 1, "{keys:?}");
    keys.into_iter().next()
}

async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await
        .expect("PTTL")
}

async fn heads(conn: &mut MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut all = Vec::new();
    for k in 0..16 {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("{{{prefix}s{k}}}:oh"))
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await
            .expect("ZRANGE");
        all.extend(members);
    }
    all.sort();
    all
}

async fn setup() -> Option<(RedisStore, MultiplexedConnection, String)> {
    let url = augur_store_conformance::skip_unless_configured("AUGUR_TEST_REDIS_URL")?;
    let prefix = common::fresh_prefix();
    let store = RedisStore::connect(&common::with_prefix(&url, &prefix))
        .await
        .expect("connect");
    let conn = common::node_connections(&url).await.remove(0);
    Some((store, conn, prefix))
}

#[tokio::test]
async fn events_and_finished_messages_expire_natively_with_the_data() {
    let Some((store, mut conn, prefix)) = setup().await else {
        return;
    };
    let mut p = prediction();
    p.expires_at = Some(Timestamp::now().plus(Duration::from_millis(600)));
    store
        .create(NewPrediction {
            prediction: &p,
            idempotency: None,
            effects: &[delivery(&p, 0), delivery(&p, 1), events()],
        })
        .await
        .expect("create");
    let w = WorkerId::generate();
    let lease = store
        .claim_deliveries(&w, LONG, 10)
        .await
        .unwrap()
        .remove(0);
    store
        .finish_delivery(&lease, &attempt(), DeliveryOutcome::Delivered)
        .await
        .unwrap();

    // The event log and the finished message carry the data's expiry; the pending one none.
    let id = p.id.as_str();
    let log = key(&mut conn, &prefix, &format!(":e:{id}")).await.unwrap();
    let finished = key(&mut conn, &prefix, &format!(":of:{id}")).await.unwrap();
    let pending = key(&mut conn, &prefix, &format!(":o:{id}")).await.unwrap();
    for k in [&log, &finished] {
        let ttl = pttl(&mut conn, k).await;
        assert!(ttl > 0 && ttl <= 600, "{k}: {ttl}");
    }
    assert_eq!(pttl(&mut conn, &pending).await, -1);

    // Past `expires_at`, with no `expire` run: Redis dropped them, the pending one stays.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(key(&mut conn, &prefix, &format!(":e:{id}")).await.is_none());
    assert!(
        key(&mut conn, &prefix, &format!(":of:{id}"))
            .await
            .is_none()
    );
    assert!(store.read_events(&p.id, None, 10).await.unwrap().is_empty());
    let left = store.list_deliveries(&p.id).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].status, DeliveryStatus::Pending);

    // It still goes out, and once it has, nothing of the outbox is kept.
    let lease = store
        .claim_deliveries(&w, LONG, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(lease.state.seq, 2);
    store
        .finish_delivery(&lease, &attempt(), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert!(store.list_deliveries(&p.id).await.unwrap().is_empty());
    let rest: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}s*}}:o*:{id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(heads(&mut conn, &prefix).await.is_empty());
}

#[tokio::test]
async fn an_update_without_expiry_keeps_the_log_for_good() {
    let Some((store, mut conn, prefix)) = setup().await else {
        return;
    };
    let mut p = prediction();
    p.expires_at = Some(Timestamp::now().plus(Duration::from_secs(3600)));
    store
        .create(NewPrediction {
            prediction: &p,
            idempotency: None,
            effects: &[events()],
        })
        .await
        .expect("create");
    let log = key(&mut conn, &prefix, &format!(":e:{}", p.id))
        .await
        .unwrap();
    assert!(pttl(&mut conn, &log).await > 0);
    p.expires_at = None;
    let rev = store
        .update(&p.id, Revision::FIRST, &p, &[events()])
        .await
        .unwrap();
    assert_eq!(pttl(&mut conn, &log).await, -1);
    let all = store.read_events(&p.id, None, 10).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|e| (e.revision, e.index))
            .collect::<Vec<_>>(),
        vec![(Revision::FIRST, 0), (rev, 0)]
    );
}

/// The event log takes the data's expiry when a later write starts it: a write that sets the
/// expiry, and a write that keeps an expiry the record already had (a case where the script
/// skips re-following, because the target did not change).
#[tokio::test]
async fn a_log_started_by_a_later_write_takes_the_expiry() {
    let Some((store, mut conn, prefix)) = setup().await else {
        return;
    };
    let hour = Duration::from_secs(3600);
    // Created without an expiry or events, settled with both (a lifecycle's writes).
    let mut p = prediction();
    store
        .create(NewPrediction {
            prediction: &p,
            idempotency: None,
            effects: &[],
        })
        .await
        .expect("create");
    p.expires_at = Some(Timestamp::now().plus(hour));
    store
        .update(&p.id, Revision::FIRST, &p, &[events()])
        .await
        .unwrap();
    let log = key(&mut conn, &prefix, &format!(":e:{}", p.id))
        .await
        .unwrap();
    let ttl = pttl(&mut conn, &log).await;
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");

    // Created with an expiry and no events, then events with the same expiry.
    let mut q = prediction();
    q.expires_at = Some(Timestamp::now().plus(hour));
    store
        .create(NewPrediction {
            prediction: &q,
            idempotency: None,
            effects: &[],
        })
        .await
        .expect("create");
    q.logs = "more".into();
    let rev = store
        .update(&q.id, Revision::FIRST, &q, &[events()])
        .await
        .unwrap();
    let log = key(&mut conn, &prefix, &format!(":e:{}", q.id))
        .await
        .unwrap();
    let ttl = pttl(&mut conn, &log).await;
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
    // A further write with events keeps it.
    store.update(&q.id, rev, &q, &[events()]).await.unwrap();
    let ttl = pttl(&mut conn, &log).await;
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
}

#[tokio::test]
async fn the_heads_set_holds_predictions_with_pending_messages() {
    let Some((store, mut conn, prefix)) = setup().await else {
        return;
    };
    let mut ids: Vec<PredictionId> = Vec::new();
    for _ in 0..5 {
        let p = prediction();
        store
            .create(NewPrediction {
                prediction: &p,
                idempotency: None,
                effects: &[delivery(&p, 0), delivery(&p, 1), delivery(&p, 2)],
            })
            .await
            .expect("create");
        ids.push(p.id);
    }
    let mut expected: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    expected.sort();
    assert_eq!(heads(&mut conn, &prefix).await, expected);

    // Drain: each round gives one message per prediction, in seq order.
    let w = WorkerId::generate();
    for seq in 1..=3 {
        let leases = store.claim_deliveries(&w, LONG, 100).await.unwrap();
        assert_eq!(leases.len(), 5);
        assert!(leases.iter().all(|l| l.state.seq == seq), "{leases:?}");
        for lease in &leases {
            store
                .finish_delivery(lease, &attempt(), DeliveryOutcome::Delivered)
                .await
                .unwrap();
        }
    }
    assert!(heads(&mut conn, &prefix).await.is_empty());
    assert!(
        store
            .claim_deliveries(&w, LONG, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // A redelivery puts its prediction back.
    let first = store.list_deliveries(&ids[0]).await.unwrap();
    assert_eq!(first.len(), 3);
    store
        .redeliver(&ids[0], &first[1].delivery.id)
        .await
        .unwrap();
    assert_eq!(heads(&mut conn, &prefix).await, vec![ids[0].to_string()]);
    let again = store.claim_deliveries(&w, LONG, 100).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].state.seq, 2);
    assert_eq!(again[0].state.attempts.len(), 1);
}
