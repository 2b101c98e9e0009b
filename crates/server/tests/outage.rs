//! The store crashes and comes back while a node is under load: the node reports the outage
//! (`/readyz` 503, writes answered 503 with `Retry-After`), recovers by itself, and loses
//! nothing it acknowledged. Redis runs with `appendfsync always`; both servers are crashed
//! (`kill -9`, `pg_ctl stop -m immediate`), not stopped politely.

#![cfg(any(feature = "redis", feature = "postgres"))]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
#[cfg(feature = "postgres")]
use common::throwaway::Postgres;
#[cfg(feature = "redis")]
use common::throwaway::Redis;
use serde_json::json;

#[derive(Default, Debug)]
struct Load {
    acked: Vec<String>,
    unavailable_with_retry_after: usize,
    other_failures: usize,
}

/// Creates predictions, one every few milliseconds, until `stop` is set.
fn spawn_load(
    api: common::Api,
    load: Arc<Mutex<Load>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let response = api
                .http
                .post(format!("{}/v1/models/augur/echo/predictions", api.base))
                .bearer_auth(common::TOKEN)
                .json(&json!({"input": {"i": i}}))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match response {
                Ok(r) if r.status().as_u16() == 201 => {
                    let body: serde_json::Value = r.json().await.unwrap();
                    let id = body["id"].as_str().unwrap().to_owned();
                    load.lock().unwrap().acked.push(id);
                }
                Ok(r) if r.status().as_u16() == 503 && r.headers().contains_key("retry-after") => {
                    load.lock().unwrap().unavailable_with_retry_after += 1;
                }
                _ => load.lock().unwrap().other_failures += 1,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

async fn readyz(api: &common::Api) -> u16 {
    match api
        .http
        .get(format!("{}/readyz", api.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn wait_readyz(api: &common::Api, want: u16, deadline: Duration) -> Duration {
    let started = Instant::now();
    while readyz(api).await != want {
        assert!(
            started.elapsed() < deadline,
            "/readyz never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// Crash the store under load, bring it back, check the promises.
async fn outage(store_url: &str, crash: impl FnOnce(), restart: impl FnOnce()) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(
        store_url,
        &dir.path().join("node"),
        &[("AUGUR_LEASE", "3s")],
    );
    let api = server.client();
    assert_eq!(readyz(&api).await, 200);

    let load = Arc::new(Mutex::new(Load::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let task = spawn_load(api.clone(), load.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    crash();
    let noticed = wait_readyz(&api, 503, Duration::from_secs(15)).await;
    // Longer than the clients' own reconnect attempts (the Redis connection manager retries
    // for about 3 s, and a write waiting on it then succeeds): past them, writes must be
    // answered 503 with a retry hint rather than wait.
    tokio::time::sleep(Duration::from_secs(5)).await;
    restart();
    let recovered = wait_readyz(&api, 200, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();

    let load = std::mem::take(&mut *load.lock().unwrap());
    eprintln!(
        "outage noticed after {noticed:?}, recovered {recovered:?} after the restart; {} acknowledged, {} answered 503 + Retry-After, {} other failures",
        load.acked.len(),
        load.unavailable_with_retry_after,
        load.other_failures
    );
    assert!(
        load.unavailable_with_retry_after > 0,
        "writes during the outage were not answered 503 with Retry-After: {load:?}"
    );
    assert!(load.acked.len() > 20, "too little load: {load:?}");
    for id in &load.acked {
        let p = api.settled(id, Duration::from_secs(60)).await;
        assert_eq!(p["status"], "succeeded", "{p}");
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_crash_under_load_loses_nothing_acknowledged() {
    let Some(bin) = Redis::binary() else {
        assert!(
            std::env::var("AUGUR_STORE_TESTS_REQUIRED").as_deref() != Ok("1"),
            "redis-server is not installed and AUGUR_STORE_TESTS_REQUIRED=1"
        );
        eprintln!("skipping: redis-server is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let redis = Arc::new(Mutex::new(Redis::start(bin, &dir.path().join("redis"))));
    let url = redis.lock().unwrap().url();
    let (r1, r2) = (redis.clone(), redis.clone());
    outage(
        &url,
        move || r1.lock().unwrap().kill(),
        move || r2.lock().unwrap().restart(),
    )
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_crash_under_load_loses_nothing_acknowledged() {
    let Some(bin) = Postgres::binaries() else {
        assert!(
            std::env::var("AUGUR_STORE_TESTS_REQUIRED").as_deref() != Ok("1"),
            "PostgreSQL is not installed and AUGUR_STORE_TESTS_REQUIRED=1"
        );
        eprintln!("skipping: PostgreSQL's initdb is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pg = Arc::new(Postgres::start(bin, &dir.path().join("pg")));
    let url = pg.url();
    let (p1, p2) = (pg.clone(), pg.clone());
    outage(&url, move || p1.crash(), move || p2.restart()).await;
}
