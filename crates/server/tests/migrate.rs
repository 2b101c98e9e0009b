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

/// 2,000 predictions travel embedded → Cloudflare (the Worker on a local workerd) →
/// embedded, verified at both hops, and arrive identical. (The 10,000 of the PostgreSQL and
/// Redis round trip took 19 s here; 2,000 still span two pages of every section at
/// `--batch 1000`.)
#[cfg(feature = "cloudflare")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_through_cloudflare_changes_nothing() {
    let Some(cloudflare) = common::backends::cloudflare() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first = format!("embedded://{}", dir.path().join("first").display());
    let last = format!("embedded://{}", dir.path().join("last").display());
    let store: DynStore = Arc::new(EmbeddedStore::open_url(&first).unwrap());
    fill(store, 2_000).await;
    for (from, to) in [(&first, &cloudflare.url), (&cloudflare.url, &last)] {
        let out = migrate(&["--from", from, "--to", to, "--batch", "1000"], dir.path());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} -> {}: {stdout}\n{}",
            common::backends::redact(from),
            common::backends::redact(to),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("verified: 2000 predictions"), "{stdout}");
    }
    let before = all_predictions(&first).await;
    let after = all_predictions(&last).await;
    assert_eq!(before.len(), 2_000);
    assert!(before == after, "the round trip changed the records");
}

/// `augur migrate` with `envs` set.
fn migrate_with(args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_augur"))
        .arg("migrate")
        .args(args)
        .current_dir(cwd)
        .env("AUGUR_LOG", "warn")
        .envs(envs.iter().copied())
        .output()
        .expect("run augur migrate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "migrate {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What a server must serve after a hop: each prediction's output file bytes, and each
/// upload's bytes.
struct Served {
    outputs: Vec<(String, Vec<u8>)>,
    uploads: Vec<(String, Vec<u8>)>,
}

impl Served {
    /// Checks `server` serves every file: output URLs under its own public URL.
    async fn check(&self, server: &TestServer) {
        let api = server.client();
        for (id, bytes) in &self.outputs {
            let (status, p) = api.get(id).await.unwrap();
            assert_eq!(status, 200, "{p}");
            let url = p["output"].as_str().expect("an output URL");
            assert!(
                url.starts_with(&format!("{}/files/", server.url)),
                "{url} is under {}",
                server.url
            );
            let got = api.http.get(url).send().await.unwrap();
            assert_eq!(got.status(), 200, "{url}");
            assert_eq!(&got.bytes().await.unwrap()[..], &bytes[..], "{url}");
        }
        for (id, bytes) in &self.uploads {
            let got = api
                .http
                .get(format!("{}/v1/files/{id}/download", server.url))
                .bearer_auth(common::TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(got.status(), 200, "upload {id}");
            assert_eq!(&got.bytes().await.unwrap()[..], &bytes[..], "upload {id}");
        }
    }
}

/// Files travel with the records: an embedded store with a local files directory →
/// PostgreSQL with S3 (moto) → a fresh embedded store with a local directory. After each hop a
/// server on the target serves every output (under its own public URL, since outputs keep
/// keys) and every upload with the same bytes.
#[cfg(all(feature = "postgres", feature = "s3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_travel_through_postgres_and_s3_and_back() {
    let Some(python) = common::python() else {
        return;
    };
    let Some(postgres) = common::backends::postgres() else {
        return;
    };
    let Some(moto) = common::moto::Moto::start(&python) else {
        return;
    };
    moto.create_bucket("migrated").await;
    let dir = tempfile::tempdir().unwrap();
    let (first, last) = (dir.path().join("first"), dir.path().join("last"));

    let mut server = TestServer::start(&first, &[]);
    let api = server.client();
    let mut served = Served {
        outputs: Vec::new(),
        uploads: Vec::new(),
    };
    for i in 0..4u32 {
        let input = json!({"prompt": format!("p{i}"), "width": 16 + i, "height": 16, "steps": 1, "step_ms": 1});
        let (status, created) = api.create("augur/demo-image", input).await.unwrap();
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let done = api.settled(&id, Duration::from_secs(30)).await;
        let url = done["output"].as_str().expect("an output URL");
        let bytes = api
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        served.outputs.push((id, bytes.to_vec()));
    }
    for i in 0..3u8 {
        let bytes = vec![i; 1000 + usize::from(i)];
        let file = common::upload(&api.http, &server.url, &format!("f{i}.bin"), &bytes).await;
        served
            .uploads
            .push((file["id"].as_str().unwrap().to_owned(), bytes));
    }
    served.check(&server).await;
    assert!(server.terminate().0);

    // Hop 1: embedded + local files → PostgreSQL + S3.
    let from = format!("embedded://{}", first.display());
    let s3 = "s3://migrated/hop";
    let stdout = migrate_with(
        &["--from", &from, "--to", &postgres.url, "--to-files", s3],
        dir.path(),
        &moto.env(),
    );
    assert!(stdout.contains("4 predictions"), "{stdout}");
    assert!(
        stdout.contains("7 files (") && stdout.contains("7 copied now"),
        "{stdout}"
    );
    assert!(stdout.contains("7 files the records name"), "{stdout}");
    // Run again: everything is there already, nothing is copied.
    let again = migrate_with(
        &["--from", &from, "--to", &postgres.url, "--to-files", s3],
        dir.path(),
        &moto.env(),
    );
    assert!(again.contains("0 copied now"), "{again}");
    let mut env = moto.env().to_vec();
    env.push(("AUGUR_FILES_DIR", s3));
    let mut server = TestServer::start_on(&postgres.url, &dir.path().join("pg"), &env);
    served.check(&server).await;
    assert!(server.terminate().0);
    assert!(
        !dir.path().join("pg/files").exists(),
        "the PostgreSQL node's files are in S3 only"
    );

    // Hop 2: PostgreSQL + S3 → a fresh embedded store + local files.
    let to = format!("embedded://{}", last.display());
    let stdout = migrate_with(
        &["--from", &postgres.url, "--to", &to, "--from-files", s3],
        dir.path(),
        &moto.env(),
    );
    assert!(stdout.contains("7 copied now"), "{stdout}");
    let server = TestServer::start(&last, &[]);
    served.check(&server).await;
    let pngs = std::fs::read_dir(last.join("files"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "uploads")
        .count();
    assert_eq!(pngs, 4, "one directory per prediction's outputs");
}

/// When both sides name one files location, nothing is copied and the files the records name
/// are checked; a missing one fails the migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_files_location_is_checked_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, shared) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("shared"),
    );
    let shared_text = shared.display().to_string();
    let mut server = TestServer::start(&a, &[("AUGUR_FILES_DIR", &shared_text)]);
    let api = server.client();
    let input = json!({"prompt": "x", "width": 16, "height": 16, "steps": 1, "step_ms": 1});
    let (_, created) = api.create("augur/demo-image", input).await.unwrap();
    let done = api
        .settled(created["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(server.terminate().0);

    let (from, to) = (
        format!("embedded://{}", a.display()),
        format!("embedded://{}", b.display()),
    );
    let files = [
        "--from-files",
        shared_text.as_str(),
        "--to-files",
        shared_text.as_str(),
    ];
    let stores = ["--from", from.as_str(), "--to", to.as_str()];
    let stdout = migrate_with(&[&stores[..], &files[..]].concat(), dir.path(), &[]);
    assert!(
        stdout.contains("files shared by both stores: 1 files the records name, all present"),
        "{stdout}"
    );

    // Without the file, verification fails.
    let key = done["output"]
        .as_str()
        .unwrap()
        .split("/files/")
        .nth(1)
        .unwrap()
        .to_owned();
    std::fs::remove_file(shared.join(&key)).unwrap();
    let out = migrate(
        &[&stores[..], &["--verify-only"], &files[..]].concat(),
        dir.path(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("files the records name are missing") && stderr.contains(&key),
        "{stderr}"
    );
}
