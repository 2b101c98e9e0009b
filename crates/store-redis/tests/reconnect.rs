//! The connection's life: a Redis restart on a throwaway server this test owns
//! (`AUGUR_TEST_REDIS_SERVER_BIN`): while it is down operations fail as retryable; afterwards
//! the store works again by itself, the acknowledged write survived `kill -9` (`appendfsync
//! always`), and the subscription announces `Resync` and then new changes. Also, on
//! `AUGUR_TEST_REDIS_URL`: a prefix holding another layout (layout 1 included, with what to
//! do about it) is refused, and `close` ends subscriptions and refuses later calls.

mod common;

use std::time::Duration;

use augur_core::Revision;
use augur_core::store::{Change, ChangeStream, Entity};
use augur_store_conformance::fixtures::{eventually, get, insert, prediction};
use augur_store_redis::RedisStore;
use common::{Server, free_port};
use futures::StreamExt;

async fn next_change(changes: &mut ChangeStream, want: impl Fn(&Change) -> bool) -> Vec<Change> {
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(until, changes.next()).await {
            Ok(Some(change)) => {
                let done = want(&change);
                seen.push(change);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("the announcement stream ended; saw {seen:?}"),
            Err(_) => panic!("timed out; saw {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_survived_and_announced_with_resync() {
    let Some(bin) = augur_store_conformance::skip_unless_configured("AUGUR_TEST_REDIS_SERVER_BIN")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let server = Server::start(&bin, port, dir.path()).await;
    let url = format!(
        "redis://127.0.0.1:{port}/0?prefix={}&timeout_ms=1000",
        common::fresh_prefix()
    );
    let store: augur_core::store::DynStore =
        std::sync::Arc::new(RedisStore::connect(&url).await.expect("connect"));
    assert!(
        store.capabilities().durable,
        "appendfsync always is durable"
    );
    let mut changes = store.subscribe().await.unwrap().expect("announcements");

    let first = prediction();
    insert(&store, &first, vec![]).await;
    let want = Change::Record {
        key: first.key(),
        revision: Revision::FIRST,
    };
    next_change(&mut changes, |c| *c == want).await;

    server.kill().await;
    // Down: a read fails, and says that retrying may help.
    let down = eventually(
        "an error while Redis is down",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            let key = first.key();
            async move { store.get(&key).await.err() }
        },
    )
    .await;
    assert!(down.is_retryable(), "{down}");

    let _server = Server::start(&bin, port, dir.path()).await;
    // Up again: the store reconnects by itself and the acknowledged create is still there.
    let again = eventually("the store to reconnect", Duration::from_secs(20), || {
        let store = store.clone();
        let key = first.key();
        async move { store.get(&key).await.ok() }
    })
    .await;
    assert!(again.is_some());
    assert_eq!(get(&store, &first.id).await.unwrap().value, first);

    // The subscription resynchronises, then hears new writes.
    next_change(&mut changes, |c| *c == Change::Resync).await;
    let second = prediction();
    insert(&store, &second, vec![]).await;
    let want = Change::Record {
        key: second.key(),
        revision: Revision::FIRST,
    };
    next_change(&mut changes, |c| *c == want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_with_another_layout_is_refused() {
    let Some(url) = augur_store_conformance::skip_unless_configured("AUGUR_TEST_REDIS_URL") else {
        return;
    };
    let mut conn = common::node_connections(&url).await.remove(0);
    for (layout, advice) in [
        ("augur-redis-layout 99", "use another prefix"),
        // Layout 1 (storage contract 1) is not read as layout 2: the error says how to move
        // its data over.
        ("augur-redis-layout 1 shards=16", "augur migrate"),
    ] {
        let prefix = common::fresh_prefix();
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}layout"))
            .arg(layout)
            .query_async(&mut conn)
            .await
            .unwrap();
        let err = RedisStore::connect(&common::with_prefix(&url, &prefix))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "other", "{err}");
        let message = err.to_string();
        assert!(message.contains(layout), "{message}");
        assert!(message.contains(advice), "{message}");
        let _: () = redis::cmd("DEL")
            .arg(format!("{prefix}layout"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_subscriptions_and_refuses_calls() {
    let Some(store) = common::store("AUGUR_TEST_REDIS_URL").await else {
        return;
    };
    let mut changes = store.subscribe().await.unwrap().expect("announcements");
    let p = prediction();
    insert(&store, &p, vec![]).await;
    store.close().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while changes.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end after close");
    let err = store.get(&p.key()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}
