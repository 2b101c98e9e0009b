//! Placement and fairness state beyond the shared suite, on a single server
//! (`AUGUR_TEST_REDIS_URL`) and on a cluster (`AUGUR_TEST_REDIS_CLUSTER_URL`):
//!
//! - The fairness clock of a lane and topic: one for every shard on a single server (in
//!   shard 0); each shard's own in a cluster, where a claim raises the clock of every shard
//!   it takes from to the highest rank it claimed, so that a quiet shard's accounts do not
//!   jump ahead of a busy one's for long.
//! - A forwarding entry outlives its record: after a delete the id reads as absent, stays
//!   reserved for its owner (who may insert it again), and is refused to other owners.

mod common;

use std::sync::Arc;

use augur_core::store::{DynStore, Entity, Op, Partition, Write};
use augur_core::{AccountId, PredictionId, WorkerId};
use augur_store_conformance::fixtures::{
    LONG, QUEUE, account, claim_jobs, enqueue_now, get, insert, insert_write, prediction_for,
};
use augur_store_redis::RedisStore;
use redis::AsyncCommands;

const VARS: [&str; 2] = ["AUGUR_TEST_REDIS_URL", "AUGUR_TEST_REDIS_CLUSTER_URL"];

async fn connect(var: &str) -> Option<(DynStore, String, String)> {
    let url = augur_store_conformance::skip_unless_configured(var)?;
    let prefix = common::fresh_prefix();
    let store = RedisStore::connect(&common::with_prefix(&url, &prefix))
        .await
        .expect("connect");
    Some((Arc::new(store), url, prefix))
}

/// The clock of the jobs lane and the fixtures' topic in a shard (0 if never set).
async fn clock(url: &str, prefix: &str, shard: usize) -> u64 {
    let key = format!("{{{prefix}s{shard}}}:fq:jobs");
    let field = format!("c:{QUEUE}");
    let options = augur_store_redis::RedisOptions::from_url(url).unwrap();
    let value: Option<u64> = match options.topology {
        augur_store_redis::Topology::Single { .. } => {
            let mut conn = common::node_connections(url).await.remove(0);
            conn.hget(&key, &field).await.unwrap()
        }
        augur_store_redis::Topology::Cluster { seeds } => {
            let mut conn = redis::cluster::ClusterClient::new(seeds)
                .unwrap()
                .get_async_connection()
                .await
                .unwrap();
            conn.hget(&key, &field).await.unwrap()
        }
    };
    value.unwrap_or(0)
}

/// Two accounts in different shards.
fn two_accounts() -> (AccountId, AccountId, usize, usize) {
    // Neither in shard 0, which holds a single server's clock.
    let busy = std::iter::repeat_with(|| account("busy"))
        .find(|a| Partition::of_account(a).shard(16) != 0)
        .expect("accounts outside shard 0 exist");
    loop {
        let quiet = account("quiet");
        let (a, b) = (
            Partition::of_account(&busy).shard(16),
            Partition::of_account(&quiet).shard(16),
        );
        if a != b && a != 0 && b != 0 {
            return (busy, quiet, a, b);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_move_the_fairness_clock() {
    for var in VARS {
        let Some((store, url, prefix)) = connect(var).await else {
            continue;
        };
        let cluster = var.contains("CLUSTER");
        let (busy, quiet, busy_shard, quiet_shard) = two_accounts();
        let mut backlog = Vec::new();
        for _ in 0..5 {
            let p = prediction_for(&busy);
            insert(&store, &p, vec![enqueue_now(&p)]).await;
            backlog.push(p.id.to_string());
        }
        let newcomer = prediction_for(&quiet);
        insert(&store, &newcomer, vec![enqueue_now(&newcomer)]).await;

        // Ranks: the backlog 1..5, the newcomer 1. The best three are ranks 1, 1 and 2.
        let got = claim_jobs(&store, &WorkerId::generate(), LONG, 3).await;
        let mut ids: Vec<String> = got.iter().map(|l| l.item.id.clone()).collect();
        ids.sort();
        let mut want = vec![
            backlog[0].clone(),
            backlog[1].clone(),
            newcomer.id.to_string(),
        ];
        want.sort();
        assert_eq!(ids, want, "{var}");
        if cluster {
            // Each shard taken from keeps its own clock, raised to the highest rank claimed.
            assert_eq!(clock(&url, &prefix, busy_shard).await, 2, "{var}");
            assert_eq!(clock(&url, &prefix, quiet_shard).await, 2, "{var}");
            assert_eq!(clock(&url, &prefix, 0).await, 0, "{var}");
        } else {
            // One clock for all shards, in shard 0.
            assert_eq!(clock(&url, &prefix, 0).await, 2, "{var}");
            assert_eq!(clock(&url, &prefix, busy_shard).await, 0, "{var}");
        }

        // The quiet account's next item ranks after the clock (3), with the backlog's third,
        // not ahead of everything.
        let again = prediction_for(&quiet);
        insert(&store, &again, vec![enqueue_now(&again)]).await;
        let got = claim_jobs(&store, &WorkerId::generate(), LONG, 2).await;
        let mut ids: Vec<String> = got.iter().map(|l| l.item.id.clone()).collect();
        ids.sort();
        let mut want = vec![backlog[2].clone(), again.id.to_string()];
        want.sort();
        assert_eq!(ids, want, "{var}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_entries_outlive_their_records() {
    for var in VARS {
        let Some((store, _, _)) = connect(var).await else {
            continue;
        };
        let owner = account("chooser");
        let mut p = prediction_for(&owner);
        // An id outside the owner's shard (not only its partition), so that an entry is
        // written.
        while Partition::of(p.id.as_str()).shard(16) == Partition::of_account(&owner).shard(16) {
            p.id = PredictionId::parse(&format!("chosen-{}", PredictionId::generate())).unwrap();
        }
        insert(&store, &p, vec![]).await;
        store
            .write(&Write::new(owner.clone()).op(Op::Delete(p.key())))
            .await
            .unwrap();
        assert!(get(&store, &p.id).await.is_none(), "{var}");
        assert!(store.get(&p.key()).await.unwrap().is_none(), "{var}");

        // Another owner may not take the id; its owner may use it again.
        let mut stranger = prediction_for(&account("stranger"));
        stranger.id = p.id.clone();
        let taken = store.write(&insert_write(&stranger, vec![])).await;
        assert!(
            matches!(taken, Err(augur_core::store::Error::Exists(_))),
            "{var}: {taken:?}"
        );
        insert(&store, &p, vec![enqueue_now(&p)]).await;
        assert_eq!(get(&store, &p.id).await.unwrap().value, p, "{var}");
        let jobs = store
            .items(augur_core::store::Lane::Jobs, &p.key())
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1, "{var}");
    }
}
