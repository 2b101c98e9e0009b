//! Shared by the Redis store's test binaries: a fresh store under a unique key prefix per
//! test, and the clean-up of prefixes earlier runs left behind.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::net::TcpListener;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use augur_core::store::DynStore;
use augur_core::{PredictionId, Timestamp};
use augur_store_conformance::fixtures::eventually;
use augur_store_redis::{RedisOptions, RedisStore, Topology};
use tokio::process::{Child, Command};

/// Every test prefix starts with this, then a ULID (whose time says how old it is).
pub(crate) const TEST_PREFIX: &str = "augur-test-";

/// `url` with `prefix=<prefix>` added.
pub(crate) fn with_prefix(url: &str, prefix: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}prefix={prefix}")
}

/// A fresh prefix for one test.
pub(crate) fn fresh_prefix() -> String {
    format!("{TEST_PREFIX}{}:", PredictionId::generate())
}

/// A store under a fresh prefix on the server `var` names, or `None` (a skip) when it is
/// unset. Once per test binary, first removes the keys of test prefixes older than an hour.
pub(crate) async fn store(var: &str) -> Option<DynStore> {
    let url = augur_store_conformance::skip_unless_configured(var)?;
    static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CLEANED
        .get_or_init(|| async { remove_stale_prefixes(&url).await })
        .await;
    let store = RedisStore::connect(&with_prefix(&url, &fresh_prefix()))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {var}: {e}"));
    Some(Arc::new(store))
}

/// Plain connections to every node the URL names (each seed of a cluster).
pub(crate) async fn node_connections(url: &str) -> Vec<redis::aio::MultiplexedConnection> {
    let options = RedisOptions::from_url(url).expect("valid URL");
    let urls = match options.topology {
        Topology::Single { url } => vec![url],
        Topology::Cluster { seeds } => seeds,
    };
    let mut conns = Vec::new();
    for url in urls {
        let client = redis::Client::open(url.as_str()).expect("valid node URL");
        conns.push(
            client
                .get_multiplexed_async_connection()
                .await
                .expect("connect to a node"),
        );
    }
    conns
}

/// Deletes the keys of test prefixes created more than an hour ago (tests never clean up
/// after themselves: a test's store is dropped without a hook to run).
async fn remove_stale_prefixes(url: &str) {
    let cutoff = Timestamp::now().minus(Duration::from_secs(3600));
    for mut conn in node_connections(url).await {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("*{TEST_PREFIX}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("SCAN");
            for key in keys {
                if prefix_time(&key).is_some_and(|t| t < cutoff) {
                    // In a cluster each key is deleted on the node that holds it: SCAN only
                    // returns a node's own keys.
                    let _: () = redis::cmd("DEL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .expect("DEL");
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
}

/// The creation time of the test prefix in a key.
fn prefix_time(key: &str) -> Option<Timestamp> {
    let start = key.find(TEST_PREFIX)? + TEST_PREFIX.len();
    let ulid = key.get(start..start + 26)?;
    // A ULID's first 10 characters are its milliseconds, in Crockford base 32.
    let mut millis: i64 = 0;
    for c in ulid[..10].chars() {
        let digit = "0123456789abcdefghjkmnpqrstvwxyz".find(c)? as i64;
        millis = millis * 32 + digit;
    }
    Some(Timestamp::from_micros(millis * 1000))
}

/// A throwaway `redis-server` a test owns (appending with `appendfsync always`, no
/// snapshots), killed when dropped.
pub(crate) struct Server {
    child: Child,
}

impl Server {
    /// Starts it on `port`, keeping its files in `dir`, and waits until it answers.
    pub(crate) async fn start(bin: &str, port: u16, dir: &std::path::Path) -> Self {
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
    pub(crate) async fn kill(mut self) {
        self.child.start_kill().expect("kill redis-server");
        self.child.wait().await.expect("reap redis-server");
    }
}

/// A free loopback port.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
