//! The key layout on a real Redis Cluster (`AUGUR_TEST_REDIS_CLUSTER_URL`): every key carries
//! a shard tag and hashes to its slot; everything of one account (records, data, event logs,
//! queue items and groups, ledger) is in its account's shard, and a record whose id lies in
//! another shard leaves only a forwarding entry there; the shards spread over the cluster's
//! nodes. Also: durability is read from every primary.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use augur_core::idempotency::IdempotencyKey;
use augur_core::jobs;
use augur_core::outbox::{DeliveryOutcome, Outbox};
use augur_core::store::{
    Attempt, DynStore, Effect, Entity, LedgerEntry, NewItem, Op, Partition, Reason,
    StreamEventData, StreamEventKind, Write,
};
use augur_core::{AccountId, PredictionId, Revision, Timestamp, WorkerId};
use augur_store_conformance::delivery;
use augur_store_conformance::fixtures::{LONG, account, claim_jobs, enqueue_now, prediction_for};
use augur_store_redis::RedisStore;

fn tag_of(prefix: &str, partition: Partition) -> String {
    format!("{{{prefix}s{}}}", partition.shard(16))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_account_lives_in_one_slot() {
    let Some(url) = augur_store_conformance::skip_unless_configured("AUGUR_TEST_REDIS_CLUSTER_URL")
    else {
        return;
    };
    let prefix = common::fresh_prefix();
    let store: DynStore = Arc::new(
        RedisStore::connect(&common::with_prefix(&url, &prefix))
            .await
            .expect("connect"),
    );

    // Exercise every kind of key: records with data and expiry, idempotency keys (which
    // Redis expires whole), a misplaced id, jobs (queued and leased), tasks, webhook messages
    // (pending and finished), event logs, ledgers, limited and plain counters.
    let owners: Vec<AccountId> = (0..12).map(|_| account("layout")).collect();
    let mut keys_of: HashMap<AccountId, Vec<String>> = HashMap::new();
    for (i, owner) in owners.iter().enumerate() {
        let mut p = prediction_for(owner);
        if i == 0 {
            // A client-chosen id outside its owner's shard (another partition is not
            // enough: one in 16 of them share the owner's shard, and need no forwarding).
            while p.id.key().partition.shard(16) == Partition::of_account(owner).shard(16) {
                p.id =
                    PredictionId::parse(&format!("chosen-{}", PredictionId::generate())).unwrap();
            }
        }
        p.logs = format!("log {i}");
        p.expires_at = Some(Timestamp::now().plus(Duration::from_secs(3600)));
        let key = IdempotencyKey {
            owner: owner.clone(),
            key: format!("key-{i}"),
            fingerprint: "fp".into(),
            prediction_id: p.id.clone(),
            batch_id: None,
            run_id: None,
            created_at: Timestamp::now(),
            expires_at: Timestamp::now().plus(Duration::from_secs(3600)),
        };
        let job = if i % 2 == 0 {
            enqueue_now(&p)
        } else {
            jobs::Lease::claimed_at_create(
                &p.id,
                owner,
                p.model.as_str(),
                &WorkerId::generate(),
                LONG,
                Timestamp::now(),
            )
            .1
        };
        let task = Effect::Enqueue(Box::new(NewItem {
            lane: augur_core::store::Lane::Tasks,
            id: format!("task-{}", p.id),
            group: p.key(),
            topic: "settle".into(),
            owner: owner.clone(),
            payload: "{}".into(),
            run_at: Timestamp::now().plus(LONG),
            replace: true,
            claimed: None,
        }));
        let write = Write::new(owner.clone())
            .op(Op::Insert(p.to_record().unwrap()))
            .op(Op::Insert(key.to_record().unwrap()))
            .effects([
                job,
                task,
                Effect::count("made", 1),
                Effect::Count {
                    name: augur_core::service::counters::per_account("running", owner),
                    delta: 1,
                    limit: Some(10),
                },
                delivery(&p, 0),
                delivery(&p, 1),
                Effect::AppendEvents {
                    stream: p.key(),
                    events: vec![StreamEventData {
                        kind: StreamEventKind::Logs,
                        data: format!("log {i}"),
                    }],
                },
                Effect::Post(Box::new(LedgerEntry {
                    account: owner.clone(),
                    id: "grant".into(),
                    delta: 5,
                    held: 0,
                    reason: Reason::Grant,
                    reference: None,
                    memo: None,
                    at: Timestamp::now(),
                })),
            ]);
        store.write(&write).await.expect("write");
        keys_of
            .entry(owner.clone())
            .or_default()
            .push(p.id.to_string());
        if i == 0 {
            // The misplaced record is found by id and updated like any other.
            let got = store.get(&p.key()).await.unwrap().expect("found by id");
            assert_eq!(got.revision, Revision::FIRST);
            assert!(!got.record.is_placed());
        }
    }
    let leases = claim_jobs(&store, &WorkerId::generate(), LONG, 3).await;
    assert_eq!(leases.len(), 3);
    let outbox = Outbox::new(store.clone());
    let attempt = Attempt {
        at: Timestamp::now(),
        status: Some(200),
        error: None,
        duration_ms: 1,
    };
    for lease in outbox.claim(&WorkerId::generate(), LONG, 4).await.unwrap() {
        outbox
            .finish(&lease, &attempt, DeliveryOutcome::Delivered)
            .await
            .unwrap();
    }

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

    // Each key starts with a shard tag and hashes to the tag's slot.
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

    // Everything of an account is in its account's shard: its records and their data, event
    // logs, queue items and groups, its idempotency keys and its ledger.
    for (owner, ids) in &keys_of {
        let tag = tag_of(&prefix, Partition::of_account(owner));
        for id in ids {
            for part in [
                format!(":r:prediction:{id}"),
                format!(":d:prediction:{id}"),
                format!(":e:prediction:{id}"),
                format!(":g:webhooks:prediction:{id}"),
                format!(":g:tasks:prediction:{id}"),
                format!(":q:tasks:task-{id}"),
            ] {
                let key = format!("{tag}{part}");
                assert!(slot_of.contains_key(&key), "{key} missing");
            }
        }
        for part in [format!(":lg:{owner}"), format!(":le:{owner}")] {
            assert!(
                slot_of.contains_key(&format!("{tag}{part}")),
                "{part} missing"
            );
        }
        let own_keys = slot_of
            .keys()
            .filter(|k| k.contains(&format!(":r:idempotency_key:{owner}/")))
            .collect::<Vec<_>>();
        assert_eq!(own_keys.len(), 1, "{own_keys:?}");
        assert!(own_keys[0].starts_with(&tag), "{own_keys:?}");
    }
    // The misplaced record left a forwarding entry (and nothing else) in its id's shard.
    let (owner, ids) = keys_of.iter().find(|(o, _)| *o == &owners[0]).unwrap();
    let id = &ids[0];
    let home = tag_of(&prefix, Partition::of(id));
    let entry = format!("{home}:r:prediction:{id}");
    let mut cluster = cluster_conn(&url).await;
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&entry)
        .query_async(&mut cluster)
        .await
        .expect("HGETALL");
    assert_eq!(
        fields,
        HashMap::from([("f".to_owned(), owner.to_string())]),
        "{entry}"
    );
    let elsewhere: Vec<&String> = slot_of
        .keys()
        .filter(|k| k.starts_with(&home) && k.contains(id.as_str()) && **k != entry)
        .collect();
    assert!(elsewhere.is_empty(), "{elsewhere:?}");

    // Finished messages are kept in their group's finished set.
    let finished = slot_of
        .keys()
        .filter(|k| k.contains(":gf:webhooks:"))
        .count();
    assert_eq!(finished, 4);

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
