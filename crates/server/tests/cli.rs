//! The CLI as a person meets it, on the real binary: `augur predict --wait` (Ctrl-C between
//! polls cancels the prediction, outputs printed plainly and saved into a named directory),
//! user errors as one-line messages even with `RUST_BACKTRACE=1`, secrets masked in `augur
//! config check` and in start-up errors, named profiles, and retries in the server's log.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TOKEN, TestServer};
use serde_json::json;

/// `augur` with a clean environment (no token or URL from the caller's), `RUST_BACKTRACE=1`
/// set as on many developer machines, in `dir`.
fn augur(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_augur"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_BACKTRACE", "1");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a failed run said one `error: ...` line and nothing like a stack trace; returns it.
fn one_error_line(output: &Output) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert!(!stderr.contains("Caused by"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_between_polls_cancels_the_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    // 200 steps of 100 ms: still running when Ctrl-C comes.
    let mut child = augur(dir.path())
        .args([
            "predict",
            "augur/demo-image",
            "-i",
            "prompt=slow",
            "-i",
            "steps=200",
            "-i",
            "step_ms=100",
            "--wait",
        ])
        .env("AUGUR_URL", &server.url)
        .env("AUGUR_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let id = first
        .strip_prefix("prediction ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_owned();
    // A few polls in: the CLI spends nearly all its time sleeping between them, where the
    // signal used to be lost.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "augur predict did not stop after Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(
        rest.contains(&format!("Ctrl-C: prediction {id} canceled")),
        "{rest}"
    );
    let (_, prediction) = server.client().get(&id).await.unwrap();
    assert_eq!(prediction["status"], "canceled", "{prediction}");
}

#[tokio::test(flavor = "multi_thread")]
async fn predict_prints_plain_output_and_saves_into_a_named_directory() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let run = |extra: &[&str]| {
        let output = augur(&work)
            .args([
                "predict",
                "augur/demo-image",
                "-i",
                "prompt=a cat",
                "-i",
                "width=8",
                "-i",
                "height=8",
                "-i",
                "steps=1",
                "-i",
                "step_ms=0",
                "--wait",
            ])
            .args(extra)
            .env("AUGUR_URL", &server.url)
            .env("AUGUR_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        output
    };
    let output = run(&[]);
    let stdout = text(&output.stdout);
    // The URL as it is, not a quoted JSON string.
    assert!(stdout.starts_with("http://"), "{stdout}");
    assert!(!stdout.contains('"'), "{stdout}");
    let saved: Vec<_> = std::fs::read_dir(work.join("augur-outputs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert!(text(&output.stderr).contains("saved augur-outputs/"));
    // Nothing else lands in the current directory.
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 1);

    run(&["--no-save"]);
    run(&["-o", "pictures"]);
    assert_eq!(
        std::fs::read_dir(work.join("augur-outputs"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(std::fs::read_dir(work.join("pictures")).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_errors_are_one_line_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let predict = |model: &str, inputs: &[&str], url: &str| {
        let mut command = augur(dir.path());
        command.args(["predict", model]);
        for input in inputs {
            command.args(["-i", input]);
        }
        command
            .args(["--wait", "--url", url])
            .env("AUGUR_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    for (model, inputs, says) in [
        ("augur/demo-imge", &["prompt=x"][..], "augur/demo-imge"),
        (
            "augur/demo-image",
            &["prompt=x", "steps=many"],
            "input.steps: must be a whole number from 0 to 4294967295, got the text \"many\"",
        ),
        (
            "augur/demo-image",
            &["steps=3"],
            "input.prompt: is required",
        ),
        (
            "augur/demo-image",
            &["prompt=x", "stpes=3"],
            "input.stpes: is not a known field (expected one of prompt, width,",
        ),
    ] {
        let line = one_error_line(&predict(model, inputs, &server.url));
        assert!(line.contains(says), "{model} {inputs:?}: {line}");
        assert!(!line.contains("u32") && !line.contains('`'), "{line}");
    }
    // Nothing listens on port 1.
    let line = one_error_line(&predict(
        "augur/demo-image",
        &["prompt=x"],
        "http://127.0.0.1:1",
    ));
    assert!(
        line.contains("cannot reach the augur server at http://127.0.0.1:1")
            && line.contains("is `augur serve` running? use --url"),
        "{line}"
    );
    // A body cut short: the message names the problem, not `input.?`.
    let reply = reqwest::Client::new()
        .post(format!(
            "{}/v1/models/augur/demo-image/predictions",
            server.url
        ))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"input": {"prompt": "x""#)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 400);
    let body: serde_json::Value = reply.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("the request body is not valid JSON: the JSON ends in the middle of")
            && detail.contains("(line 1, column")
            && !detail.contains('?'),
        "{body}"
    );
    // A config mistake, with the backtrace variable set.
    let line = one_error_line(
        &augur(dir.path())
            .args(["config", "check"])
            .env("AUGUR_WORKERS", "many")
            .output()
            .unwrap(),
    );
    assert!(line.contains("AUGUR_WORKERS must be a number"), "{line}");
}

/// A config file with a secret in every form that `config check` prints.
fn secret_config(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("augur.toml");
    std::fs::write(
        &file,
        r#"
callback_url = "http://cb:cbpass@127.0.0.1:8080"

[[models]]
name = "acme/tool"
provider = "command"
command = ["/usr/bin/env", "API_KEY=envpass", "sh", "-c", "true", "--token", "argpass"]

[[models]]
name = "acme/up"
provider = "replicate"
url = "http://user:modelpass@127.0.0.1:1"
model = "a/b"
token = "r8_tokenpass"
max_attempts = 2

[profiles.prod]
workers = 3
"#,
    )
    .unwrap();
    file
}

const SECRETS: [&str; 8] = [
    "cbpass",
    "envpass",
    "argpass",
    "modelpass",
    "tokenpass",
    "clusterpass",
    "querypass",
    "fallbackpass",
];

#[test]
fn config_check_masks_every_secret_and_shows_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_config(dir.path());
    let output = augur(dir.path())
        .args(["config", "check", "--config"])
        .arg(&file)
        .env("AUGUR_PROFILE", "prod")
        .env(
            "AUGUR_STORE",
            "redis+cluster://:clusterpass@127.0.0.1:7000,127.0.0.1:7001",
        )
        .env(
            "AUGUR_STORE_FALLBACK",
            "postgres://augur@127.0.0.1:5432/augur?password=querypass",
        )
        .env("AUGUR_ADMIN_TOKEN", "fallbackpass-admin-token")
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    for secret in SECRETS {
        assert!(!stdout.contains(secret), "{secret} in\n{stdout}");
    }
    for shown in [
        "profile = \"prod\"",
        "workers = 3",
        "redis+cluster://:***@127.0.0.1:7000,127.0.0.1:7001",
        "postgres://augur@127.0.0.1:5432/augur?password=***",
        "http://user:***@127.0.0.1:1",
        "\"API_KEY=***\"",
        "\"--token\",\n    \"***\"",
    ] {
        assert!(stdout.contains(shown), "{shown} not in\n{stdout}");
    }
    let line = one_error_line(
        &augur(dir.path())
            .args(["config", "check", "--profile", "staging", "--config"])
            .arg(&file)
            .output()
            .unwrap(),
    );
    assert!(
        line.contains("unknown profile \"staging\"") && line.contains("defines prod"),
        "{line}"
    );
}

#[test]
fn start_up_errors_mask_secrets_and_say_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = vec![
        // Not a store this binary knows, a password in the query.
        "mysql://augur:clusterpass@127.0.0.1:1/augur?password=querypass".to_owned(),
    ];
    if cfg!(feature = "redis") {
        stores.push("redis+cluster://:clusterpass@127.0.0.1:1,127.0.0.1:2".into());
    }
    if cfg!(feature = "postgres") {
        stores.push("postgres://augur:querypass@127.0.0.1:1/augur".into());
        stores.push("postgres://augur@127.0.0.1:1/augur?password=querypass".into());
    }
    for store in &stores {
        let output = augur(dir.path())
            .arg("serve")
            .env("AUGUR_LISTEN", "127.0.0.1:0")
            .env("AUGUR_STORE", store)
            .env("AUGUR_ADMIN_TOKEN", "fallbackpass-admin-token")
            .output()
            .unwrap();
        let line = one_error_line(&output);
        for secret in SECRETS {
            assert!(!line.contains(secret), "{store}: {line}");
        }
    }
    // A role that does not exist: its error said once, not in three near-identical causes.
    if let Some(backend) = common::backends::postgres() {
        let (_, host) = backend.url.split_once('@').expect("a user in the test URL");
        let store = format!("postgres://no_such_role_x@{host}");
        let output = augur(dir.path())
            .arg("serve")
            .env("AUGUR_LISTEN", "127.0.0.1:0")
            .env("AUGUR_STORE", &store)
            .env("AUGUR_ADMIN_TOKEN", "fallbackpass-admin-token")
            .output()
            .unwrap();
        let line = one_error_line(&output);
        assert_eq!(line.matches("does not exist").count(), 1, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_are_logged_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_config(dir.path());
    // The server's own process, its log (stdout) kept in a file.
    let log_path = dir.path().join("serve.log");
    let mut server = augur(dir.path())
        .arg("serve")
        .env("AUGUR_CONFIG", &file)
        .env("AUGUR_LISTEN", "127.0.0.1:0")
        .env(
            "AUGUR_STORE",
            format!("embedded://{}", dir.path().join("data").display()),
        )
        .env("AUGUR_ADMIN_TOKEN", TOKEN)
        .env("AUGUR_LOG", "info")
        .stdout(std::fs::File::create(&log_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let url = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(url) = log
            .lines()
            .find_map(|l| l.strip_prefix("augur listening on "))
        {
            break url.trim().to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client = common::Api {
        http: reqwest::Client::new(),
        base: url,
    };
    let (status, created) = client.create("acme/up", json!({"x": 1})).await.unwrap();
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let settled = client.settled(id, Duration::from_secs(30)).await;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(settled["status"], "failed", "{settled}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    for line in [
        "prediction attempt failed; retrying",
        "prediction retried",
        "prediction attempt failed; no attempts left",
    ] {
        assert!(
            log.lines().any(|l| l.contains(line) && l.contains(id)),
            "{line} not in\n{log}"
        );
    }
    for secret in SECRETS {
        assert!(!log.contains(secret), "{secret} in\n{log}");
    }
}
