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

/// The outage tests' load: small inputs, a create every few milliseconds.
const PACE: common::load::Pace = common::load::Pace {
    blob_bytes: 0,
    timeout: Duration::from_secs(10),
    pause: Duration::from_millis(5),
};

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

    let load = Arc::new(Mutex::new(common::load::Load::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let task = common::load::spawn(api.clone(), PACE, load.clone(), stop.clone());
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
        load.refused,
        load.other.len()
    );
    assert!(
        load.refused > 0,
        "writes during the outage were not answered 503 with Retry-After: {load:?}"
    );
    assert!(load.acked.len() > 20, "too little load: {load:?}");
    for id in &load.acked {
        let p = api.settled(id, Duration::from_secs(60)).await;
        assert_eq!(p["status"], "succeeded", "{p}");
    }
    // Every prediction the store holds (acknowledged, or committed when its answer was lost)
    // settles exactly once: the durable counters meet and stay met.
    let created = api.counter("augur_predictions_created_total").await;
    assert!(created >= load.acked.len() as i64);
    common::eventually(
        "every prediction to settle",
        Duration::from_secs(60),
        async || api.counter("augur_predictions_settled_total").await == created,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        api.counter("augur_predictions_settled_total").await,
        created,
        "a prediction settled twice"
    );
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

/// Waits until everything written to the primary so far is on its replica (`WAIT`).
#[cfg(feature = "redis")]
fn replicated(primary: &Redis) {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"SET augur-test-sync 1\nWAIT 1 10000\n")?;
            child.wait_with_output()
        })
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim_end().ends_with('1'), "not replicated: {text}");
}

/// A read-only replica as the fallback store: it opens (nothing is written to it), reads keep
/// working while the primary is down, and fast once the breaker is open; writes are refused
/// at once with a retryable 503; service comes back by itself with the primary.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_replica_answers_reads_fast_while_the_primary_is_down() {
    let Some(bin) = Redis::binary() else {
        assert!(
            std::env::var("AUGUR_STORE_TESTS_REQUIRED").as_deref() != Ok("1"),
            "redis-server is not installed and AUGUR_STORE_TESTS_REQUIRED=1"
        );
        eprintln!("skipping: redis-server is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut primary = Redis::start(bin.clone(), &dir.path().join("primary"));
    let port = primary.port.to_string();
    let replica = Redis::start_with(
        bin,
        &dir.path().join("replica"),
        &[
            "--replicaof",
            "127.0.0.1",
            &port,
            "--replica-read-only",
            "yes",
        ],
    );
    let server = TestServer::start_on(
        &primary.url(),
        &dir.path().join("node"),
        &[
            ("AUGUR_STORE_FALLBACK", &replica.url()),
            // Every read goes to the store, not to the node's cache.
            ("AUGUR_CACHE_ENTRIES", "0"),
            ("AUGUR_STORE_BREAKER_COOLDOWN", "2s"),
        ],
    );
    let api = server.client();
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, body) = api.create("augur/echo", json!({"i": i})).await.unwrap();
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        api.settled(&id, Duration::from_secs(30)).await;
        ids.push(id);
    }
    replicated(&primary);

    primary.kill();
    // The first reads find the primary down (each waits its timeout) and open the breaker.
    let mut slowest_after_open = Duration::ZERO;
    for round in 0..20 {
        let id = &ids[round % ids.len()];
        let started = Instant::now();
        let (status, body) = api.get(id).await.unwrap();
        let took = started.elapsed();
        assert_eq!(status, 200, "read {round} during the outage: {body}");
        assert_eq!(body["status"], "succeeded", "{body}");
        if round >= 10 {
            slowest_after_open = slowest_after_open.max(took);
        }
    }
    eprintln!("slowest read once the breaker was open: {slowest_after_open:?}");
    assert!(
        slowest_after_open < Duration::from_millis(500),
        "reads still wait for the primary: {slowest_after_open:?}"
    );
    let started = Instant::now();
    let refused = api
        .http
        .post(format!("{}/v1/models/augur/echo/predictions", api.base))
        .bearer_auth(common::TOKEN)
        .json(&json!({"input": {"i": "during"}}))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(refused.status().as_u16(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["detail"].is_string() || body["error"].is_object(),
        "{body}"
    );
    assert!(
        took < Duration::from_millis(500),
        "a write waited {took:?} for a primary known to be down"
    );

    primary.restart();
    let started = Instant::now();
    let id = loop {
        let (status, body) = api
            .create("augur/echo", json!({"i": "after"}))
            .await
            .unwrap();
        if status == 201 {
            break body["id"].as_str().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "writes never came back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("writes back {:?} after the primary", started.elapsed());
    assert_eq!(
        api.settled(&id, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    for id in &ids {
        assert_eq!(api.get(id).await.unwrap().0, 200);
    }
}
