//! The connection's life: a Redis restart on a throwaway server this test owns
//! (`AUGUR_TEST_REDIS_SERVER_BIN`): while it is down operations fail as retryable; afterwards
//! the store works again by itself, the acknowledged write survived `kill -9` (`appendfsync
//! always`), and the subscription announces `Resync` and then new changes. Also, on
//! `AUGUR_TEST_REDIS_URL`: a prefix holding another layout is refused, and `close` ends
//! subscriptions and refuses later calls.

mod common;

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use augur_core::Revision;
use augur_core::store::{Change, ChangeStream};
use augur_store_conformance::fixtures::{eventually, insert, prediction};
use augur_store_redis::RedisStore;
use futures::StreamExt;
use tokio::process::{Child, Command};

struct Server {
    child: Child,
}

impl Server {
    async fn start(bin: &str, port: u16, dir: &std::path::Path) -> Self {
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        let url = format!("redis://127.0.0.1:{port}/0");
        eventually("redis-server to answer", Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                // Not ready while it replays its log.
                let pong: String = redis::cmd("PING").query_async(&mut conn).await.ok()?;
                (pong == "PONG").then_some(())
            }
        })
        .await;
        Self { child }
    }

    /// `kill -9`.
    async fn kill(mut self) {
        self.child.start_kill().expect("kill redis-server");
        self.child.wait().await.expect("reap redis-server");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

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
    insert(&store, &first, &[]).await;
    let want = Change::Prediction {
        id: first.id.clone(),
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
            let id = first.id.clone();
            async move { store.get(&id).await.err() }
        },
    )
    .await;
    assert!(down.is_retryable(), "{down}");

    let _server = Server::start(&bin, port, dir.path()).await;
    // Up again: the store reconnects by itself and the acknowledged create is still there.
    let again = eventually("the store to reconnect", Duration::from_secs(20), || {
        let store = store.clone();
        let id = first.id.clone();
        async move { store.get(&id).await.ok() }
    })
    .await;
    assert_eq!(again.value, first);

    // The subscription resynchronises, then hears new writes.
    next_change(&mut changes, |c| *c == Change::Resync).await;
    let second = prediction();
    insert(&store, &second, &[]).await;
    let want = Change::Prediction {
        id: second.id.clone(),
        revision: Revision::FIRST,
    };
    next_change(&mut changes, |c| *c == want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_with_another_layout_is_refused() {
    let Some(url) = augur_store_conformance::skip_unless_configured("AUGUR_TEST_REDIS_URL") else {
        return;
    };
    let prefix = common::fresh_prefix();
    let mut conn = common::node_connections(&url).await.remove(0);
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}layout"))
        .arg("augur-redis-layout 99")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = RedisStore::connect(&common::with_prefix(&url, &prefix))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "other", "{err}");
    assert!(err.to_string().contains("augur-redis-layout 99"), "{err}");
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}layout"))
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_subscriptions_and_refuses_calls() {
    let Some(store) = common::store("AUGUR_TEST_REDIS_URL").await else {
        return;
    };
    let mut changes = store.subscribe().await.unwrap().expect("announcements");
    let p = prediction();
    insert(&store, &p, &[]).await;
    store.close().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while changes.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end after close");
    let err = store.get(&p.id).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}
