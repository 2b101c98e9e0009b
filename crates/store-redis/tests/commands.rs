//! What one prediction lifecycle costs Redis, on a throwaway server this test owns
//! (`AUGUR_TEST_REDIS_SERVER_BIN`), counted with `INFO commandstats` (commands run by scripts
//! included): the create and the settle the service writes (an insert with its job already
//! leased and a counter; an update that completes the job, counts the settlement twice and
//! appends the output and done events), each one script. Also: a claim's work does not grow
//! with the queue, not even with a backlog of an excluded topic ahead of what it takes.
//! Run with `--nocapture` to see the counts, and the server's time per lifecycle (one at a
//! time, and 32 at a time).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use augur_core::jobs;
use augur_core::store::{
    ClaimRequest, DynStore, Effect, Entity, Lane, StreamEventData, StreamEventKind,
};
use augur_core::{ModelName, Prediction, Revision, Status, Timestamp, WorkerId};
use augur_store_conformance::fixtures::{
    LONG, account, enqueue_now, insert, prediction, prediction_for, update,
};
use augur_store_redis::RedisStore;
use common::{Server, free_port};
use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use serde_json::json;

/// The server's CPU time so far (user + system), in microseconds.
async fn cpu_us(conn: &mut MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let value = line
                .strip_prefix("used_cpu_sys:")
                .or_else(|| line.strip_prefix("used_cpu_user:"))?;
            value.trim().parse::<f64>().ok()
        })
        .sum::<f64>()
        * 1e6
}

/// Microseconds spent in `EVALSHA` (whole scripts) so far.
async fn script_us(conn: &mut MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|line| line.strip_prefix("cmdstat_evalsha:"))
        .filter_map(|rest| rest.split(',').find_map(|kv| kv.strip_prefix("usec=")))
        .filter_map(|us| us.parse::<f64>().ok())
        .sum()
}

async fn commandstats(conn: &mut MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| name != "info")
        .collect()
}

/// Commands per operation between two snapshots: `(name, calls / n)`, and the total.
fn per(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, n: u64) -> (String, f64) {
    let mut parts = Vec::new();
    let mut total = 0.0;
    for (name, calls) in after {
        let delta = calls - before.get(name).copied().unwrap_or(0);
        if delta > 0 {
            let each = delta as f64 / n as f64;
            total += each;
            parts.push(format!("{name}={each:.2}"));
        }
    }
    (parts.join(" "), total)
}

fn settled(p: &Prediction) -> Prediction {
    let mut next = p.clone();
    next.status = Status::Succeeded;
    next.output = Some(json!("hello"));
    next.completed_at = Some(Timestamp::now());
    next.expires_at = Some(Timestamp::now().plus(Duration::from_secs(3600)));
    next
}

fn settle_effects(p: &Prediction) -> Vec<Effect> {
    vec![
        jobs::complete(&p.id),
        Effect::count("predictions_settled_total", 1),
        Effect::count("predictions_succeeded_total", 1),
        Effect::AppendEvents {
            stream: p.key(),
            events: vec![
                StreamEventData {
                    kind: StreamEventKind::Output,
                    data: "hello".into(),
                },
                StreamEventData {
                    kind: StreamEventKind::Done,
                    data: "{}".into(),
                },
            ],
        },
    ]
}

async fn lifecycle_create(store: &DynStore, p: &Prediction) {
    let (_, job) = jobs::Lease::claimed_at_create(
        &p.id,
        &p.owner,
        p.model.as_str(),
        &WorkerId::generate(),
        LONG,
        Timestamp::now(),
    );
    insert(
        store,
        p,
        vec![job, Effect::count("predictions_created_total", 1)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_per_lifecycle_and_claim() {
    let Some(bin) = augur_store_conformance::skip_unless_configured("AUGUR_TEST_REDIS_SERVER_BIN")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = Server::start(&bin, port, dir.path()).await;
    let url = format!("redis://127.0.0.1:{port}/0");
    let store: DynStore = Arc::new(
        RedisStore::connect(&common::with_prefix(&url, &common::fresh_prefix()))
            .await
            .expect("connect"),
    );
    let mut conn = common::node_connections(&url).await.remove(0);

    // One lifecycle first, so that the scripts are loaded.
    let warm = prediction();
    lifecycle_create(&store, &warm).await;
    update(
        &store,
        &settled(&warm),
        Revision::FIRST,
        settle_effects(&warm),
    )
    .await
    .unwrap();

    const N: u64 = 200;
    let predictions: Vec<Prediction> = (0..N).map(|_| prediction()).collect();
    let (cpu_before, script_before) = (cpu_us(&mut conn).await, script_us(&mut conn).await);
    let before = commandstats(&mut conn).await;
    for p in &predictions {
        lifecycle_create(&store, p).await;
    }
    let created = commandstats(&mut conn).await;
    for p in &predictions {
        update(&store, &settled(p), Revision::FIRST, settle_effects(p))
            .await
            .unwrap();
    }
    let after = commandstats(&mut conn).await;
    let (cpu_after, script_after) = (cpu_us(&mut conn).await, script_us(&mut conn).await);
    let (create, create_total) = per(&before, &created, N);
    let (settle, settle_total) = per(&created, &after, N);
    let (all, total) = per(&before, &after, N);
    println!("create: {create_total:.2} commands: {create}");
    println!("settle: {settle_total:.2} commands: {settle}");
    println!("lifecycle: {total:.2} commands: {all}");
    // One at a time from a debug build: the server's CPU includes reading and answering
    // each request, and an `fdatasync` per write (`appendfsync always`).
    println!(
        "lifecycle: {:.0} µs in scripts, {:.0} µs of server CPU",
        (script_after - script_before) / N as f64,
        (cpu_after - cpu_before) / N as f64
    );
    // The same lifecycles 32 at a time, as a loaded server sees them (warmer caches).
    let batch: Vec<Prediction> = (0..N * 4).map(|_| prediction()).collect();
    let (cpu_before, script_before) = (cpu_us(&mut conn).await, script_us(&mut conn).await);
    futures::stream::iter(batch)
        .map(|p| {
            let store = store.clone();
            async move {
                lifecycle_create(&store, &p).await;
                update(&store, &settled(&p), Revision::FIRST, settle_effects(&p))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let (cpu_loaded, script_loaded) = (cpu_us(&mut conn).await, script_us(&mut conn).await);
    // AUGUR_TEST_PRINT_USEC=1 shows the time of each command, to tell Lua's share of the
    // scripts' time from the commands'.
    if std::env::var("AUGUR_TEST_PRINT_USEC").is_ok() {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .expect("INFO");
        println!("{info}");
    }
    println!(
        "lifecycle, 32 at a time: {:.0} µs in scripts, {:.0} µs of server CPU",
        (script_loaded - script_before) / (N * 4) as f64,
        (cpu_loaded - cpu_before) / (N * 4) as f64
    );
    assert!(create_total <= 20.0, "create: {create}");
    assert!(settle_total <= 22.0, "settle: {settle}");
    assert_eq!(
        store.queue_stats(Lane::Jobs).await.unwrap(),
        Default::default()
    );

    // A claim looks at the heads it may take, not at the queue behind them, nor at a
    // backlog of a topic it excludes (which ranks ahead of what it takes).
    let busy = ModelName::parse("acme/busy").unwrap();
    for _ in 0..1500 {
        let mut p = prediction_for(&account("backlog"));
        p.model = busy.clone();
        insert(&store, &p, vec![enqueue_now(&p)]).await;
    }
    let free = prediction_for(&account("free"));
    insert(&store, &free, vec![enqueue_now(&free)]).await;
    let request = ClaimRequest {
        lane: Lane::Jobs,
        worker: WorkerId::generate(),
        lease_for: LONG,
        max: 1,
        exclude_topics: vec![busy.to_string()],
    };
    // Load the claim script first (an empty lane).
    let warm = ClaimRequest {
        lane: Lane::Tasks,
        ..request.clone()
    };
    assert!(store.claim(&warm).await.unwrap().is_empty());
    let before = commandstats(&mut conn).await;
    let got = store.claim(&request).await.unwrap();
    let after = commandstats(&mut conn).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].item.id, free.id.as_str());
    let (claim, claim_total) = per(&before, &after, 1);
    println!("claim past an excluded backlog of 1500: {claim_total:.0} commands: {claim}");
    assert!(claim_total < 120.0, "{claim}");
    let request = ClaimRequest {
        max: 10,
        exclude_topics: Vec::new(),
        ..request
    };
    let before = commandstats(&mut conn).await;
    let got = store.claim(&request).await.unwrap();
    let after = commandstats(&mut conn).await;
    assert_eq!(got.len(), 10);
    let (claim, claim_total) = per(&before, &after, 1);
    println!("claim of 10 from 1500 ready: {claim_total:.0} commands: {claim}");
    assert!(claim_total < 200.0, "{claim}");
}
