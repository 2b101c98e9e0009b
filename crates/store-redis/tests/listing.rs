//! Listings whose filters no index covers, on a single server (`AUGUR_TEST_REDIS_URL`) and on
//! a cluster (`AUGUR_TEST_REDIS_CLUSTER_URL`): a shard looks at a bounded number of index
//! entries per call, so a rare match behind thousands of others comes in a later page (short
//! pages, a cursor after the last entry looked at) without gaps or repeats.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use augur_core::store::{Cursor, DynStore, Entity, Kind, ListQuery, Op, Write};
use augur_core::{Status, Timestamp};
use augur_store_conformance::fixtures::{account, prediction_for};
use augur_store_redis::RedisStore;
use futures::{StreamExt, TryStreamExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rare_matches_behind_many_entries_come_in_later_pages() {
    for var in ["AUGUR_TEST_REDIS_URL", "AUGUR_TEST_REDIS_CLUSTER_URL"] {
        let Some(url) = augur_store_conformance::skip_unless_configured(var) else {
            continue;
        };
        let store: DynStore = Arc::new(
            RedisStore::connect(&common::with_prefix(&url, &common::fresh_prefix()))
                .await
                .expect("connect"),
        );
        let owner = account("lister");
        let base = Timestamp::now().as_micros();
        // Two failed predictions, older than 4,500 starting ones of the same batch.
        let mut failed = Vec::new();
        let mut writes = Vec::new();
        for i in 0..4502i64 {
            let mut p = prediction_for(&owner);
            p.created_at = Timestamp::from_micros(base + i);
            if i < 2 {
                p.status = Status::Failed;
                failed.push(p.id.to_string());
            }
            let mut record = p.to_record().unwrap();
            record.parent = Some("batch".into());
            writes.push(Write::new(owner.clone()).op(Op::Insert(record)));
        }
        futures::stream::iter(writes)
            .map(|w| {
                let store = store.clone();
                async move { store.write(&w).await }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();

        let mut seen = Vec::new();
        let mut after: Option<Cursor> = None;
        let mut pages = 0;
        loop {
            let page = store
                .list(&ListQuery {
                    parent: Some("batch".into()),
                    status: Some(Status::Failed.as_str().into()),
                    after: after.clone(),
                    ..ListQuery::of(Kind::Prediction, 10)
                })
                .await
                .unwrap();
            pages += 1;
            seen.extend(page.items.iter().map(|s| s.record.key.id.clone()));
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
            assert!(pages < 10, "{var}: pagination does not end");
        }
        let mut want = failed.clone();
        want.reverse();
        assert_eq!(seen, want, "{var}");
        assert!(pages >= 2, "{var}: the scan was not bounded");
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 2);
    }
}
