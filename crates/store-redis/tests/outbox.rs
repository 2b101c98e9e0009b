//! The webhook lane and event logs on a real Redis (`AUGUR_TEST_REDIS_URL`), beyond the
//! shared suite: the event log expires natively with the record's data while pending
//! messages stay and still go out (finished ones are hidden from then on and removed by
//! `expire`), and only a group's head is a claim candidate: the lane's ready set holds one
//! message per prediction, the others wait behind it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use augur_core::outbox::{DeliveryOutcome, DeliveryStatus, Outbox};
use augur_core::store::{
    Attempt, DynStore, Effect, Entity, Partition, StreamEventData, StreamEventKind,
};
use augur_core::{AccountId, PredictionId, Revision, Timestamp, WorkerId};
use augur_store_conformance::delivery;
use augur_store_conformance::fixtures::{LONG, insert, prediction, update};
use augur_store_redis::RedisStore;
use redis::aio::MultiplexedConnection;

fn attempt() -> Attempt {
    Attempt {
        at: Timestamp::now(),
        status: Some(200),
        error: None,
        duration_ms: 1,
    }
}

fn events(p: &augur_core::Prediction) -> Effect {
    Effect::AppendEvents {
        stream: p.key(),
        events: vec![StreamEventData {
            kind: StreamEventKind::Logs,
            data: "hello\n".into(),
        }],
    }
}

/// The shard tag of the admin's records (every fixture prediction is the admin's).
fn tag(prefix: &str) -> String {
    format!(
        "{{{prefix}s{}}}",
        Partition::of_account(&AccountId::admin()).shard(16)
    )
}

async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await
        .expect("PTTL")
}

async fn exists(conn: &mut MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(conn)
        .await
        .expect("EXISTS")
        == 1
}

async fn members(conn: &mut MultiplexedConnection, key: &str) -> Vec<String> {
    let mut got: Vec<String> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .expect("ZRANGE");
    got.sort();
    got
}

async fn setup() -> Option<(DynStore, MultiplexedConnection, String)> {
    let url = augur_store_conformance::skip_unless_configured("AUGUR_TEST_REDIS_URL")?;
    let prefix = common::fresh_prefix();
    let store = RedisStore::connect(&common::with_prefix(&url, &prefix))
        .await
        .expect("connect");
    let conn = common::node_connections(&url).await.remove(0);
    Some((Arc::new(store), conn, prefix))
}

#[tokio::test]
async fn the_event_log_expires_natively_with_the_data() {
    let Some((store, mut conn, prefix)) = setup().await else {
        return;
    };
    let outbox = Outbox::new(store.clone());
    let mut p = prediction();
    p.expires_at = Some(Timestamp::now().plus(Duration::from_millis(600)));
    insert(
        &store,
        &p,
        vec![delivery(&p, 0), delivery(&p, 1), events(&p)],
    )
    .await;
    let w = WorkerId::generate();
    let lease = outbox.claim(&w, LONG, 10).await.unwrap().remove(0);
    outbox
        .finish(&lease, &attempt(), DeliveryOutcome::Delivered)
        .await
        .unwrap();

    // The data and the event log carry the record's expiry; queue items none.
    let t = tag(&prefix);
    let id = p.id.as_str();
    let (data, log) = (
        format!("{t}:d:prediction:{id}"),
        format!("{t}:e:prediction:{id}"),
    );
    for k in [&data, &log] {
        let ttl = pttl(&mut conn, k).await;
        // Rounded up to the next millisecond.
        assert!(ttl > 0 && ttl <= 601, "{k}: {ttl}");
    }
    let pending = format!("{t}:q:webhooks:msg_{id}_1");
    assert_eq!(pttl(&mut conn, &pending).await, -1);

    // Past `expires_at`, with no `expire` run: Redis dropped the data and the log; the
    // finished message is no longer shown, the pending one is.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!exists(&mut conn, &data).await && !exists(&mut conn, &log).await);
    assert!(
        store
            .read_events(&p.key(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let left = outbox.list(&p.id).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].status, DeliveryStatus::Pending);
    // The record reads as its tombstone until `expire` moves it on.
    let stored = store.get(&p.key()).await.unwrap().unwrap();
    assert!(stored.record.data_removed && stored.record.data.is_none());
    assert_eq!(stored.revision, Revision::FIRST);

    // It still goes out; delivered after the data went, it is not kept; and `expire` removes
    // the finished one, so nothing of the outbox stays.
    let lease = outbox.claim(&w, LONG, 10).await.unwrap().remove(0);
    assert_eq!(lease.state.seq, 2);
    outbox
        .finish(&lease, &attempt(), DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert_eq!(
        store.expire(Timestamp::now(), 10).await.unwrap(),
        vec![p.key()]
    );
    assert!(outbox.list(&p.id).await.unwrap().is_empty());
    let rest: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{t}:*:webhooks:*{id}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        members(&mut conn, &format!("{t}:qi:webhooks"))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn an_update_without_expiry_keeps_the_log_for_good() {
    let Some((store, mut conn, prefix)) = setup().await else {
        return;
    };
    let mut p = prediction();
    p.expires_at = Some(Timestamp::now().plus(Duration::from_secs(3600)));
    insert(&store, &p, vec![events(&p)]).await;
    let log = format!("{}:e:prediction:{}", tag(&prefix), p.id);
    assert!(pttl(&mut conn, &log).await > 0);
    p.expires_at = None;
    let rev = update(&store, &p, Revision::FIRST, vec![events(&p)])
        .await
        .unwrap()
        .revisions[0]
        .unwrap();
    assert_eq!(pttl(&mut conn, &log).await, -1);
    let all = store.read_events(&p.key(), None, 10).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|e| (e.revision, e.index))
            .collect::<Vec<_>>(),
        vec![(Revision::FIRST, 0), (rev, 0)]
    );
}

/// The event log takes the data's expiry when a later write starts it: a write that sets the
/// expiry, and a write that keeps an expiry the record already had (a case where the script
/// skips re-following, because the expiry did not change).
#[tokio::test]
async fn a_log_started_by_a_later_write_takes_the_expiry() {
    let Some((store, mut conn, prefix)) = setup().await else {
        return;
    };
    let hour = Duration::from_secs(3600);
    // Created without an expiry or events, settled with both (a lifecycle's writes).
    let mut p = prediction();
    insert(&store, &p, vec![]).await;
    p.expires_at = Some(Timestamp::now().plus(hour));
    update(&store, &p, Revision::FIRST, vec![events(&p)])
        .await
        .unwrap();
    let log = format!("{}:e:prediction:{}", tag(&prefix), p.id);
    let ttl = pttl(&mut conn, &log).await;
    assert!(ttl > 0 && ttl <= 3_600_001, "{ttl}");

    // Created with an expiry and no events, then events with the same expiry.
    let mut q = prediction();
    q.expires_at = Some(Timestamp::now().plus(hour));
    insert(&store, &q, vec![]).await;
    q.logs = "more".into();
    let rev = update(&store, &q, Revision::FIRST, vec![events(&q)])
        .await
        .unwrap()
        .revisions[0]
        .unwrap();
    let log = format!("{}:e:prediction:{}", tag(&prefix), q.id);
    let ttl = pttl(&mut conn, &log).await;
    assert!(ttl > 0 && ttl <= 3_600_001, "{ttl}");
    // A further write with events keeps it.
    update(&store, &q, rev, vec![events(&q)]).await.unwrap();
    let ttl = pttl(&mut conn, &log).await;
    assert!(ttl > 0 && ttl <= 3_600_001, "{ttl}");
}

#[tokio::test]
async fn only_group_heads_are_claim_candidates() {
    let Some((store, mut conn, prefix)) = setup().await else {
        return;
    };
    let outbox = Outbox::new(store.clone());
    let mut ids: Vec<PredictionId> = Vec::new();
    for _ in 0..5 {
        let p = prediction();
        insert(
            &store,
            &p,
            vec![delivery(&p, 0), delivery(&p, 1), delivery(&p, 2)],
        )
        .await;
        ids.push(p.id);
    }
    let t = tag(&prefix);
    // Messages have no topic: the lane's ready set for the topic "".
    let (ready, waiting) = (format!("{t}:h:webhooks:"), format!("{t}:w:webhooks"));
    let head_ids = |n: u32| -> Vec<String> {
        let mut all: Vec<String> = ids.iter().map(|id| format!("msg_{id}_{n}")).collect();
        all.sort();
        all
    };
    let ready_ids = |members: Vec<String>| -> Vec<String> {
        let mut ids: Vec<String> = members.into_iter().map(|m| m[21..].to_owned()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ready_ids(members(&mut conn, &ready).await), head_ids(0));
    let waiters: i64 = redis::cmd("SCARD")
        .arg(&waiting)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(waiters, 10);

    // Drain: each round gives one message per prediction, in seq order, and the next one
    // becomes the only candidate of its group.
    let w = WorkerId::generate();
    for seq in 1..=3 {
        let leases = outbox.claim(&w, LONG, 100).await.unwrap();
        assert_eq!(leases.len(), 5);
        assert!(leases.iter().all(|l| l.state.seq == seq), "{leases:?}");
        assert!(members(&mut conn, &ready).await.is_empty());
        for lease in &leases {
            outbox
                .finish(lease, &attempt(), DeliveryOutcome::Delivered)
                .await
                .unwrap();
        }
        if seq < 3 {
            assert_eq!(
                ready_ids(members(&mut conn, &ready).await),
                head_ids(u32::try_from(seq).unwrap())
            );
        }
    }
    assert!(members(&mut conn, &ready).await.is_empty());
    assert!(outbox.claim(&w, LONG, 100).await.unwrap().is_empty());

    // A redelivery puts its message back as its group's head.
    let first = outbox.list(&ids[0]).await.unwrap();
    assert_eq!(first.len(), 3);
    outbox
        .redeliver(&ids[0], &first[1].delivery.id)
        .await
        .unwrap();
    assert_eq!(
        ready_ids(members(&mut conn, &ready).await),
        vec![first[1].delivery.id.clone()]
    );
    let again = outbox.claim(&w, LONG, 100).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].state.seq, 2);
    assert_eq!(again[0].state.attempts.len(), 1);
}
