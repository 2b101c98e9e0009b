//! Replicate's deployments, hardware, collections, model search and page links through the
//! official clients (Python `replicate` and npm `replicate`) against the real binary, on the
//! embedded store and, with their features, on Redis and PostgreSQL.
//!
//! The Python checks need `AUGUR_TEST_PYTHON` (the test virtualenv's interpreter), the JS
//! checks `node` and `tests/js/node_modules`; `scripts/test.sh` provides both, and
//! `AUGUR_E2E_REQUIRED=1` turns a skip into a failure.

mod common;

use std::process::Command;

use common::{TOKEN, TestServer};

/// Runs `program script` against `server` and checks it printed `done`.
fn run_checks(mut command: Command, server: &TestServer, done: &str) {
    let output = command
        .env("AUGUR_URL", &server.url)
        .env("AUGUR_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run the client checks");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(done),
        "the client checks failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    eprint!("{stdout}");
}

fn python_checks(python: &str, server: &TestServer) {
    let mut command = Command::new(python);
    command.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/deployments_client.py"
    ));
    run_checks(command, server, "all deployments client checks passed");
}

#[test]
fn python_client_deployments_hardware_collections_search_and_pages() {
    let Some(python) = common::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    python_checks(&python, &server);
}

#[cfg(feature = "postgres")]
#[test]
fn python_client_deployments_on_postgres() {
    let (Some(python), Some(backend)) = (common::python(), common::backends::postgres()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(&backend.url, dir.path(), &[]);
    python_checks(&python, &server);
}

#[cfg(feature = "redis")]
#[test]
fn python_client_deployments_on_redis_cluster() {
    let (Some(python), Some(backend)) = (common::python(), common::backends::redis_cluster())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(&backend.url, dir.path(), &[]);
    python_checks(&python, &server);
}

/// The folder of the JS client checks (scripts/test.sh installs its `node_modules`).
const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");

#[test]
fn js_client_deployments_hardware_collections_and_search() {
    let node = Command::new("node").arg("--version").output();
    let installed = std::path::Path::new(JS_DIR)
        .join("node_modules/replicate/package.json")
        .exists();
    if !(node.is_ok_and(|o| o.status.success()) && installed) {
        assert!(
            std::env::var("AUGUR_E2E_REQUIRED").as_deref() != Ok("1"),
            "node or {JS_DIR}/node_modules is missing and AUGUR_E2E_REQUIRED=1 (scripts/test.sh installs it)"
        );
        eprintln!(
            "skipping: node or {JS_DIR}/node_modules is missing (scripts/test.sh installs it)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let mut command = Command::new("node");
    command.arg("deployments_client.mjs").current_dir(JS_DIR);
    run_checks(command, &server, "all js deployments checks passed");
}
