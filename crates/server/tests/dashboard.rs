//! The dashboard in a real browser: each test starts a real `augur serve`, then runs one
//! scenario script (`tests/browser/<scenario>.mjs`) with Node, which drives Debian's Chromium
//! through Playwright (npm `playwright-core`) and checks accessibility with axe-core. A script
//! fails on any console error, failed request or unexpected HTTP error answer, and saves its
//! screenshots under `target/dashboard-screenshots/`.
//!
//! Skipped, saying why, when Node, Chromium or the npm packages are missing, unless
//! `AUGUR_E2E_REQUIRED=1` (scripts/test.sh sets it and installs them).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TOKEN, TestServer};

/// The folder of the Node-side tests' packages (`npm ci` by scripts/test.sh).
const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");
/// The scenario scripts.
const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

/// The Chromium binary: `$AUGUR_CHROMIUM`, else Debian's.
fn chromium() -> PathBuf {
    std::env::var_os("AUGUR_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Whether Node, Chromium and the npm packages are here; with `AUGUR_E2E_REQUIRED=1` a
/// missing one fails the test instead of skipping it.
fn browser_ready() -> bool {
    let node = std::process::Command::new("node").arg("--version").output();
    let modules = Path::new(JS_DIR).join("node_modules");
    let missing: Vec<String> = [
        (!node.is_ok_and(|o| o.status.success())).then(|| "node".to_owned()),
        (!chromium().exists())
            .then(|| format!("{} (apt-get install chromium)", chromium().display())),
        (!modules.join("playwright-core/package.json").exists())
            .then(|| format!("{JS_DIR}/node_modules/playwright-core (npm ci)")),
        (!modules.join("axe-core/axe.min.js").exists())
            .then(|| format!("{JS_DIR}/node_modules/axe-core (npm ci)")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("AUGUR_E2E_REQUIRED").as_deref() != Ok("1"),
        "missing {} and AUGUR_E2E_REQUIRED=1 (scripts/test.sh installs them)",
        missing.join(", ")
    );
    eprintln!(
        "skipping: missing {} (scripts/test.sh installs them)",
        missing.join(", ")
    );
    false
}

/// Where screenshots go: `target/dashboard-screenshots/` beside this test binary's profile.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<binary>
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    target.join("dashboard-screenshots")
}

/// Runs `tests/browser/<script>` against `server` with `env`, printing its output, and fails
/// with its output and the server's log unless it exits 0. Returns its standard output.
async fn run_scenario(server: &TestServer, script: &str, env: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new("node");
    command
        .arg(Path::new(BROWSER_DIR).join(script))
        .current_dir(BROWSER_DIR)
        .env("AUGUR_URL", &server.url)
        .env("AUGUR_ADMIN_TOKEN", TOKEN)
        .env("AUGUR_SCREENSHOT_DIR", screenshot_dir())
        .env("AUGUR_CHROMIUM", chromium())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish in 300 s"))
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprint!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}\nserver log (tail):\n{}",
        output.status,
        tail(
            &std::fs::read_to_string(&server.log).unwrap_or_default(),
            60
        )
    );
    stdout
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A server on a fresh embedded store.
fn server(dir: &tempfile::TempDir, env: &[(&str, &str)]) -> TestServer {
    TestServer::start(&dir.path().join("data"), env)
}

/// Without a browser: the real binary serves the shell and the assets beside the API, the
/// API's unknown paths stay JSON 404s, and `AUGUR_DASHBOARD_DIR` serves another directory.
#[tokio::test]
async fn the_server_serves_the_dashboard_beside_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{}/predictions/x", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("/ui/app.js"));
    let script = http
        .get(format!("{}/ui/lib/api.js", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    for path in ["/v1/nothing-here", "/nothing-here", "/ui/nothing.js"] {
        let missing = http
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404, "{path}");
        let body: serde_json::Value = missing.json().await.unwrap();
        assert_eq!(body["code"], "route_not_found", "{path}: {body}");
    }
    drop(server);

    let assets = dir.path().join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    std::fs::write(assets.join("index.html"), "<p>from disk</p>").unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir2.path().join("data"),
        &[("AUGUR_DASHBOARD_DIR", assets.to_str().unwrap())],
    );
    let page = http.get(format!("{}/", server.url)).send().await.unwrap();
    assert_eq!(page.text().await.unwrap(), "<p>from disk</p>");
}

#[tokio::test]
async fn signing_in_and_out_in_a_browser() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    run_scenario(&server, "signin.mjs", &[]).await;
}

#[tokio::test]
async fn the_predictions_list_is_live_and_a_running_prediction_is_canceled_from_its_page() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    run_scenario(&server, "predictions.mjs", &[]).await;
}

#[tokio::test]
async fn a_second_account_cannot_find_the_first_accounts_prediction_by_its_url() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    run_scenario(&server, "isolation.mjs", &[]).await;
}

/// The benchmark's short version (bench/dashboard.sh runs it with 100,000): with 2,000
/// stored predictions every page renders within its limit.
#[tokio::test]
async fn pages_render_quickly_with_two_thousand_stored_predictions() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    let out = run_scenario(
        &server,
        "bench_dashboard.mjs",
        &[("AUGUR_BENCH_SEED", "2000"), ("AUGUR_BENCH_RUNS", "3")],
    )
    .await;
    assert!(out.contains("bench dashboard {"), "{out}");
}

#[tokio::test]
async fn a_predictions_webhook_attempts_are_shown_and_redelivered_from_its_page() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[("AUGUR_WEBHOOK_BACKOFF_BASE", "100ms")]);
    run_scenario(&server, "webhooks.mjs", &[]).await;
}

#[tokio::test]
async fn a_twenty_item_batch_fills_in_live_on_its_page() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    run_scenario(&server, "batch_live.mjs", &[]).await;
}

#[tokio::test]
async fn a_workflow_runs_graph_completes_live_on_its_page() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    run_scenario(&server, "workflow_run.mjs", &[]).await;
}

#[tokio::test]
async fn the_admin_page_shows_health_and_grants_credits() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    run_scenario(&server, "admin.mjs", &[]).await;
}

/// Prices augur/demo-image per second (2 credits, at most 10 s: a create holds 20), so a run
/// is charged and the pages show prices and charges; augur/echo stays free.
const PRICED_DEMO_IMAGE: &str =
    "[[models]]\nname = \"augur/demo-image\"\nprice = { per_second = 2, max_seconds = 10 }\n";

/// A server on a fresh embedded store whose demo-image is priced ([`PRICED_DEMO_IMAGE`]).
fn priced_server(dir: &tempfile::TempDir) -> TestServer {
    let config = dir.path().join("augur.toml");
    std::fs::write(&config, PRICED_DEMO_IMAGE).unwrap();
    server(dir, &[("AUGUR_CONFIG", config.to_str().unwrap())])
}

#[tokio::test]
async fn a_model_runs_from_its_generated_form_and_its_picture_appears_without_a_reload() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = priced_server(&dir);
    run_scenario(&server, "run_model.mjs", &[]).await;
}

#[tokio::test]
async fn the_account_page_shows_credits_moving_and_the_ledger_entry_of_a_charge() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = priced_server(&dir);
    run_scenario(&server, "ledger.mjs", &[]).await;
}

#[tokio::test]
async fn a_token_is_created_shown_once_and_revoked_so_the_api_refuses_it() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, &[]);
    run_scenario(&server, "tokens.mjs", &[]).await;
}
