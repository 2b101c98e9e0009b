//! The files API end to end: the official Replicate Python client uploads, lists, gets,
//! downloads (signed URLs without a token) and deletes files, runs a model with a file input
//! (its default upload strategy), and meets the size limit, another account and expiry.
//!
//! Needs the test virtualenv (`AUGUR_TEST_PYTHON`, made by `scripts/test.sh`); skips without
//! it unless `AUGUR_E2E_REQUIRED=1`.

mod common;

use std::process::Command;

use common::{TOKEN, TestServer};

/// The largest upload of the servers these tests start.
const MAX_BYTES: &str = "200000";

/// Runs `files_client.py` against `server`, with `mode` (`all` or `expiry`).
fn run_checks(python: &str, server: &TestServer, mode: &str, expiry_secs: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/files_client.py");
    let output = Command::new(python)
        .arg(script)
        .env("AUGUR_URL", &server.url)
        .env("AUGUR_ADMIN_TOKEN", TOKEN)
        .env("AUGUR_FILE_MAX_BYTES", MAX_BYTES)
        .env("AUGUR_FILE_EXPIRY_SECS", expiry_secs)
        .env("AUGUR_FILES_CHECKS", mode)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("all files checks passed"),
        "the files checks failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
}

#[test]
fn python_client_uploads_runs_with_and_deletes_files() {
    let Some(python) = common::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[("AUGUR_FILE_MAX_BYTES", MAX_BYTES)],
    );
    run_checks(&python, &server, "all", "86400");
    // Deleted files leave no bytes behind; the two live uploads and the SVG and the file at
    // the limit do.
    let uploads = dir.path().join("data/files/uploads");
    let left = std::fs::read_dir(&uploads).map_or(0, |d| d.count());
    assert_eq!(left, 3, "bytes left in {}", uploads.display());
}

#[test]
fn signed_urls_and_files_expire() {
    let Some(python) = common::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("AUGUR_FILE_EXPIRY", "2s"),
            ("AUGUR_FILE_MAX_BYTES", MAX_BYTES),
        ],
    );
    run_checks(&python, &server, "expiry", "2");
}

/// A files location the binary cannot use stops it at start, naming the problem, instead of
/// becoming a local directory named after the URL.
#[test]
fn an_unusable_files_location_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = vec![
        ("s3:bucket/x", "looks like a URL without //"),
        ("gs://bucket/x", "unsupported files location scheme"),
        ("s3://", "needs a bucket"),
    ];
    if !cfg!(feature = "s3") {
        cases.push(("s3://bucket/x", "--features s3"));
    }
    for (location, says) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_augur"))
            .arg("serve")
            .env_clear()
            .env("AUGUR_LISTEN", "127.0.0.1:0")
            .env(
                "AUGUR_STORE",
                format!("embedded://{}", dir.path().join("data").display()),
            )
            .env("AUGUR_ADMIN_TOKEN", TOKEN)
            .env("AUGUR_FILES_DIR", location)
            .current_dir(dir.path())
            .output()
            .expect("run augur");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{location}: started");
        assert!(
            stderr.contains("AUGUR_FILES_DIR") && stderr.contains(says),
            "{location}: {stderr}"
        );
    }
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        entries.iter().all(|e| e == "data"),
        "no directory named after a URL: {entries:?}"
    );
}
