//! A load test of whole prediction lifecycles against the store alone (no HTTP, no worker):
//! concurrent tasks each create a prediction with its job claimed at once, start it, and
//! settle it, with the effects the service gives those writes (a counter on create; the job
//! completed, two counters and the output and done events on settlement), first on the fused
//! path and then with every write on the general path. It prints lifecycles per second.
//!
//! Runs only when `AUGUR_PG_LIFECYCLES_SECS` says for how many seconds (per path), besides
//! `AUGUR_TEST_POSTGRES_URL`; `AUGUR_PG_LIFECYCLES_TASKS` sets the concurrency (default 32,
//! against the default pool of 16 connections), `AUGUR_PG_LIFECYCLES_PATHS` the paths
//! (default `fused,general`). Build it in release mode for numbers that
//! mean anything about the client side.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use augur_core::jobs;
use augur_core::service::counters;
use augur_core::store::{DynStore, Effect, Entity, Op, StreamEventData, StreamEventKind, Write};
use augur_core::{
    AccountId, ModelName, Prediction, PredictionId, Revision, Status, Timestamp, WorkerId,
};

async fn lifecycle(store: &DynStore, worker: &WorkerId) {
    let owner = AccountId::admin();
    let mut p = Prediction::new(
        PredictionId::generate_for(&owner),
        owner.clone(),
        ModelName::parse("augur/echo").unwrap(),
        "v1".into(),
        serde_json::json!({"text": "hello"}),
    );
    let now = Timestamp::now();
    let (_, job) = jobs::Lease::claimed_at_create(
        &p.id,
        &owner,
        p.model.as_str(),
        worker,
        Duration::from_secs(60),
        now,
    );
    store
        .write(
            &Write::new(owner.clone())
                .op(Op::Insert(p.to_record().unwrap()))
                .effects([job, Effect::count(counters::CREATED, 1)]),
        )
        .await
        .expect("create");
    p.status = Status::Processing;
    p.started_at = Some(Timestamp::now());
    store
        .write(&Write::new(owner.clone()).op(Op::Update {
            record: p.to_record().unwrap(),
            expected: Revision::FIRST,
        }))
        .await
        .expect("start");
    p.status = Status::Succeeded;
    p.output = Some(serde_json::json!("hello"));
    p.completed_at = Some(Timestamp::now());
    p.expires_at = Some(Timestamp::now().plus(Duration::from_secs(3600)));
    let effects = vec![
        jobs::complete(&p.id),
        Effect::count(counters::SETTLED, 1),
        Effect::count(counters::settled_as(p.status), 1),
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
    ];
    store
        .write(
            &Write::new(owner)
                .op(Op::Update {
                    record: p.to_record().unwrap(),
                    expected: Revision(2),
                })
                .effects(effects),
        )
        .await
        .expect("settle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycles_per_second() {
    let Some(secs) = std::env::var("AUGUR_PG_LIFECYCLES_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return;
    };
    let tasks: usize = std::env::var("AUGUR_PG_LIFECYCLES_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let paths =
        std::env::var("AUGUR_PG_LIFECYCLES_PATHS").unwrap_or_else(|_| "fused,general".into());
    for general in [false, true] {
        if !paths.contains(if general { "general" } else { "fused" }) {
            continue;
        }
        let store = if general {
            common::general_store().await
        } else {
            common::store().await
        };
        let Some(store) = store else { return };
        let store: DynStore = Arc::new(store);
        let done = Arc::new(AtomicU64::new(0));
        let until = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let runners: Vec<_> = (0..tasks)
            .map(|_| {
                let (store, done) = (store.clone(), done.clone());
                tokio::spawn(async move {
                    let worker = WorkerId::generate();
                    while Instant::now() < until {
                        lifecycle(&store, &worker).await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for r in runners {
            r.await.unwrap();
        }
        let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        let path = if general { "general" } else { "fused" };
        eprintln!("{path}: {rate:.0} lifecycles/s ({tasks} tasks)");
    }
}
