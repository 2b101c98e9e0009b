//! The official Replicate Python client (`pip install replicate`) against the real binary.
//!
//! The test command (`scripts/test.sh`) makes a virtualenv with the client and sets
//! `AUGUR_TEST_PYTHON` to its interpreter. Without it the test skips, unless
//! `AUGUR_E2E_REQUIRED=1`, which turns the skip into a failure.

mod common;

use std::process::Command;

use common::{TOKEN, TestServer};

#[test]
fn replicate_python_client_runs_predicts_cancels_and_downloads() {
    let Some(python) = std::env::var("AUGUR_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        assert!(
            std::env::var("AUGUR_E2E_REQUIRED").as_deref() != Ok("1"),
            "AUGUR_TEST_PYTHON is not set and AUGUR_E2E_REQUIRED=1"
        );
        eprintln!("skipping: set AUGUR_TEST_PYTHON to a Python with the replicate package");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
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
