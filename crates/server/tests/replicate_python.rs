//! The official Replicate Python client (`pip install replicate`) against the real binary.
//!
//! The test command (`scripts/test.sh`) makes a virtualenv with the client and sets
//! `AUGUR_TEST_PYTHON` to its interpreter. Without it the test skips, unless
//! `AUGUR_E2E_REQUIRED=1`, which turns the skip into a failure.

mod common;

use std::process::Command;

use common::{TOKEN, TestServer};

/// Runs the client's checks against a server on `store_url`.
fn run_checks(python: &str, server: &TestServer) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/replicate_client.py"
    );
    let output = Command::new(python)
        .arg(script)
        .env("AUGUR_URL", &server.url)
        .env("AUGUR_TOKEN", TOKEN)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Replicate client checks failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    assert!(
        stdout.contains("all Replicate Python client checks passed"),
        "{stdout}"
    );
}

#[test]
fn replicate_python_client_on_the_embedded_store() {
    let Some(python) = common::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    run_checks(&python, &server);
}

#[cfg(feature = "postgres")]
#[test]
fn replicate_python_client_on_postgres() {
    let (Some(python), Some(backend)) = (common::python(), common::backends::postgres()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(&backend.url, dir.path(), &[]);
    run_checks(&python, &server);
}

#[cfg(feature = "redis")]
#[test]
fn replicate_python_client_on_redis() {
    let (Some(python), Some(backend)) = (common::python(), common::backends::redis()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(&backend.url, dir.path(), &[]);
    run_checks(&python, &server);
}

#[cfg(feature = "redis")]
#[test]
fn replicate_python_client_on_redis_cluster() {
    let (Some(python), Some(backend)) = (common::python(), common::backends::redis_cluster())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(&backend.url, dir.path(), &[]);
    run_checks(&python, &server);
}

#[cfg(feature = "cloudflare")]
#[test]
fn replicate_python_client_on_cloudflare() {
    let (Some(python), Some(backend)) = (common::python(), common::backends::cloudflare()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(&backend.url, dir.path(), &[]);
    run_checks(&python, &server);
}
