//! The key layout on a real Redis Cluster (`AUGUR_TEST_REDIS_CLUSTER_URL`): every key of a
//! prediction (record, data, job, the keys that point at it, webhook outbox, event log) and
//! every shard structure its scripts write (queue, outbox heads, indexes, expiry, counters)
//! hash to one slot, and the shards spread
//! over the cluster's nodes. Also: durability is read from every primary.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use augur_core::store::{
    Attempt, DeliveryOutcome, Effect, IdempotencyRecord, NewPrediction, Store, StreamEventData,
    StreamEventKind,
};
use augur_core::{AccountId, LeaseToken, Revision, Timestamp, WorkerId};
use augur_store_conformance::fixtures::{QUEUE, claim, enqueue_now, prediction};
use augur_store_redis::RedisStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_prediction_lives_in_one_slot() {
    let Some(url) = augur_store_conformance::skip_unless_configured("AUGUR_TEST_REDIS_CLUSTER_URL")
    else {
        return;
    };
    let prefix = common::fresh_prefix();
    let store = RedisStore::connect(&common::with_prefix(&url, &prefix))
        .await
        .expect("connect");

    // Exercise every kind of key: records with data and expiry, jobs (queued and leased),
    // idempotency keys, counters, webhook messages (pending and finished), event logs.
    let mut ids = Vec::new();
    for i in 0..48 {
        let mut p = prediction();
        p.logs = format!("log {i}");
        p.expires_at = Some(Timestamp::now().plus(Duration::from_secs(3600)));
        let key = IdempotencyRecord {
            owner: AccountId::admin(),
            key: format!("key-{i}"),
            fingerprint: "fp".into(),
            prediction_id: p.id.clone(),
            expires_at: Timestamp::now().plus(Duration::from_secs(3600)),
        };
        let effect = if i % 2 == 0 {
            enqueue_now()
        } else {
            Effect::EnqueueClaimed {
                queue: QUEUE.into(),
                worker: WorkerId::generate(),
                token: LeaseToken::generate(),
                expires_at: Timestamp::now().plus(Duration::from_secs(60)),
            }
        };
        store
            .create(NewPrediction {
                prediction: &p,
                idempotency: (i % 3 == 0).then_some(&key),
                effects: &[
                    effect,
                    Effect::count("made", 1),
                    augur_store_conformance::delivery(&p, 0),
                    augur_store_conformance::delivery(&p, 1),
                    Effect::AppendEvents(vec![StreamEventData {
                        kind: StreamEventKind::Logs,
                        data: format!("log {i}"),
                    }]),
                ],
            })
            .await
            .expect("create");
        ids.push(p.id);
    }
    let leases = store
        .claim_jobs(&claim(&WorkerId::generate(), Duration::from_secs(60), 5))
        .await
        .expect("claim");
    assert_eq!(leases.len(), 5);
    let messages = store
        .claim_deliveries(&WorkerId::generate(), Duration::from_secs(60), 5)
        .await
        .expect("claim deliveries");
    assert_eq!(messages.len(), 5);
    for lease in &messages {
        let attempt = Attempt {
            at: Timestamp::now(),
            status: Some(200),
            error: None,
            duration_ms: 1,
        };
        store
            .finish_delivery(lease, &attempt, DeliveryOutcome::Delivered)
            .await
            .expect("finish delivery");
    }
    let current = store.get(&ids[0]).await.expect("get");
    store
        .update(
            &ids[0],
            Revision::FIRST,
            &current.value,
            &[Effect::count("updated", 1)],
        )
        .await
        .expect("update");

    // Durable iff every primary appends with `appendfsync always`.
    let mut nodes = common::node_connections(&url).await;
    let mut all_always = true;
    for conn in &mut nodes {
        let (_, append): (String, String) = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query_async(conn)
            .await
            .expect("CONFIG GET");
        let (_, fsync): (String, String) = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendfsync")
            .query_async(conn)
            .await
            .expect("CONFIG GET");
        all_always &= append == "yes" && fsync == "always";
    }
    assert_eq!(store.capabilities().durable, all_always);

    // Every key of this test's prefix, from every node.
    let mut keys_by_node: Vec<Vec<String>> = Vec::new();
    for conn in &mut nodes {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("*{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .expect("SCAN");
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys_by_node.push(keys);
    }
    let conn = &mut nodes[0];
    let mut slot_of = HashMap::new();
    for key in keys_by_node.iter().flatten() {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(conn)
            .await
            .expect("CLUSTER KEYSLOT");
        slot_of.insert(key.clone(), slot);
    }

    // Each shard key starts with its tag and hashes to the tag's slot.
    let mut tag_slots = BTreeMap::new();
    for k in 0..16 {
        let tag = format!("{{{prefix}s{k}}}");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&tag)
            .query_async(conn)
            .await
            .expect("CLUSTER KEYSLOT");
        tag_slots.insert(tag, slot);
    }
    for (key, slot) in &slot_of {
        if *key == format!("{prefix}layout") {
            continue;
        }
        let (tag, tag_slot) = tag_slots
            .iter()
            .find(|(tag, _)| key.starts_with(tag.as_str()))
            .unwrap_or_else(|| panic!("{key} carries no shard tag"));
        assert_eq!(slot, tag_slot, "{key} is not in the slot of {tag}");
    }

    // All of a prediction's keys, and its queue entry, share one slot.
    let mut cluster = cluster_conn(&url).await;
    for id in &ids {
        let own: Vec<&String> = slot_of
            .keys()
            .filter(|k| k.ends_with(&format!(":{id}")))
            .collect();
        assert!(
            [":p:", ":j:", ":o:", ":op:", ":e:"]
                .iter()
                .all(|kind| own.iter().any(|k| k.contains(kind))),
            "record, job, outbox or event log of {id} missing: {own:?}"
        );
        let slots: BTreeSet<u16> = own.iter().map(|k| slot_of[*k]).collect();
        assert_eq!(slots.len(), 1, "{id} spans slots: {own:?}");
        let record = own.iter().find(|k| k.contains(":p:")).unwrap();
        let tag = &record[..record.find("}:").unwrap() + 1];
        let queued: Option<f64> = redis::cmd("ZSCORE")
            .arg(format!("{tag}:q"))
            .arg(id.as_str())
            .query_async(&mut cluster)
            .await
            .expect("ZSCORE");
        assert!(
            queued.is_some(),
            "the job of {id} is not in its shard's queue"
        );
    }

    // Five predictions have a finished message, and every prediction a head in its shard's
    // `T:oh`.
    let finished = slot_of.keys().filter(|k| k.contains(":of:")).count();
    assert_eq!(finished, 5);
    let heads = slot_of.keys().filter(|k| k.ends_with(":oh")).count();
    assert!(heads >= 2, "heads sets: {heads}");

    // The idempotency keys live in their own shards and point back at their predictions.
    let key_records = slot_of.keys().filter(|k| k.contains(":k:admin ")).count();
    assert_eq!(key_records, ids.len().div_ceil(3));

    // The 16 shards spread over the nodes (16 random slots all on one of 3 nodes would be
    // a broken hash tag).
    let busy_nodes = keys_by_node.iter().filter(|keys| !keys.is_empty()).count();
    assert!(busy_nodes >= 2, "all keys on one node: {keys_by_node:?}");
}

async fn cluster_conn(url: &str) -> redis::cluster_async::ClusterConnection {
    let options = augur_store_redis::RedisOptions::from_url(url).unwrap();
    let augur_store_redis::Topology::Cluster { seeds } = options.topology else {
        panic!("not a cluster URL");
    };
    redis::cluster::ClusterClient::new(seeds)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}
