//! `augur migrate` on the real binary: a full copy with verification, a copy interrupted with
//! `kill -9` and resumed, and a verification that catches a difference.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use augur_core::store::{DynStore, Kind, ListQuery};
use augur_core::{
    AccountId, CreateRequest, Event, ModelName, Prediction, PredictionQuery, Predictions,
    ServiceConfig, Status, Versioned, WebhookEvents,
};
use augur_store_embedded::EmbeddedStore;
use common::TestServer;
use serde_json::json;

/// Fills a store with `n` predictions: some settled, some with idempotency keys, some queued.
pub async fn fill(store: DynStore, n: usize) {
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    for i in 0..n {
        let created = service
            .create(CreateRequest {
                id: None,
                owner: AccountId::admin(),
                model: ModelName::parse("augur/echo").unwrap(),
                version: "v".into(),
                input: json!({"i": i, "text": "ünïcode ✓"}),
                webhook: (i % 7 == 0).then(|| "https://example.com/hook".into()),
                webhook_events_filter: WebhookEvents::ALL,
                deadline: None,
                idempotency_key: (i % 10 == 0).then(|| format!("key-{i}")),
                price: None,
                max_active: None,
            })
            .await
            .unwrap();
        let id = created.prediction().value.id.clone();
        if i % 3 != 0 {
            service
                .transition_all(
                    &id,
                    &[Event::processing(), Event::succeeded(json!({"i": i}))],
                    &[],
                )
                .await
                .unwrap();
        }
    }
    store.close().await;
}

fn migrate(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_augur"))
        .arg("migrate")
        .args(args)
        .current_dir(cwd)
        .env("AUGUR_LOG", "warn")
        .output()
        .expect("run augur migrate")
}

/// Every prediction a store holds, in listing order.
async fn all_predictions(url: &str) -> Vec<Versioned<Prediction>> {
    let store: DynStore = Arc::new(EmbeddedStore::open_url(url).unwrap());
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListQuery {
                after,
                ..ListQuery::of(Kind::Prediction, 1000)
            })
            .await
            .unwrap();
        out.extend(page.items.iter().map(|s| Versioned {
            value: (*s.decode::<Prediction>().unwrap()).clone(),
            revision: s.revision,
        }));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    store.close().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_everything_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let store: DynStore =
        Arc::new(EmbeddedStore::open_url(&format!("embedded://{}", a.display())).unwrap());
    fill(store, 3000).await;

    let out = migrate(
        &[
            "--from",
            &format!("embedded://{}", a.display()),
            "--to",
            &format!("embedded://{}", b.display()),
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("verified: 3000 predictions, 300 idempotency keys;"),
        "{stdout}"
    );

    // Both hold the same records, revisions included.
    let before = all_predictions(&format!("embedded://{}", a.display())).await;
    let after = all_predictions(&format!("embedded://{}", b.display())).await;
    assert_eq!(before.len(), 3000);
    assert!(before == after, "the copy differs from the source");
    // The copied queue runs on the new store, and the API serves the copy.
    let server = TestServer::start(&b, &[]);
    let api = server.client();
    let queued = after
        .iter()
        .find(|p| p.value.status == Status::Starting)
        .unwrap();
    let p = api
        .settled(queued.value.id.as_str(), Duration::from_secs(30))
        .await;
    assert_eq!(p["status"], "succeeded");
    let (status, copied) = api.get(before[0].value.id.as_str()).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(copied["input"], before[0].value.input);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_migration_resumes_and_a_difference_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let store: DynStore =
        Arc::new(EmbeddedStore::open_url(&format!("embedded://{}", a.display())).unwrap());
    fill(store, 4000).await;
    let (from, to) = (
        format!("embedded://{}", a.display()),
        format!("embedded://{}", b.display()),
    );

    // Kill the first run once it has made progress (a checkpoint exists).
    let mut child = Command::new(env!("CARGO_BIN_EXE_augur"))
        .args(["migrate", "--from", &from, "--to", &to, "--batch", "50"])
        .current_dir(dir.path())
        .env("AUGUR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint_exists = || {
        std::fs::read_dir(dir.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".augur-migrate-")
        })
    };
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !checkpoint_exists() {
        assert!(std::time::Instant::now() < until, "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();

    let out = migrate(&["--from", &from, "--to", &to, "--batch", "50"], dir.path());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("resuming from"), "{stderr}");
    assert!(stdout.contains("verified: 4000 predictions"), "{stdout}");
    assert!(
        !checkpoint_exists(),
        "the checkpoint was not removed after success"
    );

    // Change the target behind migrate's back: verification must say so.
    let target: DynStore = Arc::new(EmbeddedStore::open_url(&to).unwrap());
    let service = Predictions::new(target.clone(), ServiceConfig::default());
    let some = service
        .list(&PredictionQuery {
            limit: 1,
            status: Some(Status::Starting),
            ..Default::default()
        })
        .await
        .unwrap()
        .items
        .remove(0);
    service
        .transition(&some.value.id, &Event::canceled())
        .await
        .unwrap();
    target.close().await;
    drop(service);
    let out = migrate(&["--from", &from, "--to", &to, "--verify-only"], dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("verification failed"), "{stderr}");
}

/// 10,000 predictions travel embedded → PostgreSQL → Redis → embedded, verified at every hop,
/// and arrive identical.
#[cfg(all(feature = "postgres", feature = "redis"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_through_postgres_and_redis_changes_nothing() {
    let (Some(postgres), Some(redis)) = (common::backends::postgres(), common::backends::redis())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first = format!("embedded://{}", dir.path().join("first").display());
    let last = format!("embedded://{}", dir.path().join("last").display());
    let store: DynStore = Arc::new(EmbeddedStore::open_url(&first).unwrap());
    fill(store, 10_000).await;
    for (from, to) in [
        (&first, &postgres.url),
        (&postgres.url, &redis.url),
        (&redis.url, &last),
    ] {
        let out = migrate(&["--from", from, "--to", to, "--batch", "1000"], dir.path());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{from} -> {to}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("verified: 10000 predictions"), "{stdout}");
    }
    let before = all_predictions(&first).await;
    let after = all_predictions(&last).await;
    assert_eq!(before.len(), 10_000);
    assert!(before == after, "the round trip changed the records");
}
