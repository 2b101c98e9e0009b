//! The workflow CLI on the real binary: `augur workflow apply` of a TOML blueprint, `augur
//! workflow run --wait` (exit code, printed output) and `augur run get`, against `augur serve`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{TOKEN, TestServer};
use serde_json::Value;

/// The issue's four-node blueprint, in TOML.
const VARIANTS: &str = r#"
name = "acme/variants"
description = "one image, two variants, a sheet"
output = "{{ nodes.sheet.output }}"

[input_schema]
type = "object"
required = ["prompt"]
properties.prompt.type = "string"

[nodes.draw]
model = "augur/demo-image"
input = { prompt = "{{ input.prompt }}", width = 64, height = 64, steps = 2, step_ms = 10 }

[nodes.left]
model = "augur/echo"
input = { image = "{{ nodes.draw.output }}", side = "left" }

[nodes.right]
model = "augur/echo"
input = { image = "{{ nodes.draw.output }}", side = "right" }

[nodes.sheet]
model = "augur/echo"
input = { a = "{{ nodes.left.output }}", b = "{{ nodes.right.output }}" }
"#;

/// A fan-out over the prompts and a join of the items.
const FAN: &str = r#"
name = "acme/fan"
output = "{{ nodes.join.output }}"

[nodes.each]
model = "augur/echo"
for_each = "{{ input.prompts }}"
input = { text = "{{ item }}", index = "{{ index }}" }

[nodes.join]
model = "augur/echo"
input = { all = "{{ nodes.each.output }}" }
"#;

/// One node that fails: demo-image refuses a width of zero.
const BROKEN: &str = r#"
name = "acme/broken"
output = "{{ nodes.draw.output }}"

[nodes.draw]
model = "augur/demo-image"
input = { prompt = "x", width = "{{ input.width }}" }
"#;

/// Runs the `augur` CLI against `server` with `token`.
fn augur(server: &TestServer, token: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_augur"))
        .args(args)
        .current_dir(dir)
        .env_remove("AUGUR_ADMIN_TOKEN")
        .env_remove("REPLICATE_API_TOKEN")
        .env("AUGUR_URL", &server.url)
        .env("AUGUR_TOKEN", token)
        .output()
        .unwrap()
}

/// Like [`augur`], asserting success; returns stdout.
fn ok(server: &TestServer, token: &str, dir: &Path, args: &[&str]) -> String {
    let output = augur(server, token, dir, args);
    assert!(
        output.status.success(),
        "augur {args:?} exited {:?}: {}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The run id in `augur workflow run --wait`'s first stderr line ("run ID of NAME created").
fn run_id(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .find_map(|l| l.strip_prefix("run ")?.split(' ').next().map(str::to_owned))
        .unwrap_or_else(|| panic!("no run id in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_applied_run_and_read_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let server = TestServer::start(&work.join("data"), &[]);
    ok(&server, TOKEN, work, &["accounts", "create", "acme"]);
    let token = ok(&server, TOKEN, work, &["accounts", "token", "acme"]);
    let token = token.trim();

    // apply: a TOML file; the same again keeps the version, a change makes the next one.
    std::fs::write(work.join("variants.toml"), VARIANTS).unwrap();
    let applied = ok(
        &server,
        token,
        work,
        &["workflow", "apply", "variants.toml"],
    );
    assert_eq!(applied.trim(), "acme/variants version 1");
    let again = ok(
        &server,
        token,
        work,
        &["workflow", "apply", "variants.toml"],
    );
    assert_eq!(again.trim(), "acme/variants version 1");
    std::fs::write(
        work.join("variants.toml"),
        VARIANTS.replace("one image, two", "one image and two"),
    )
    .unwrap();
    let changed = ok(
        &server,
        token,
        work,
        &["workflow", "apply", "variants.toml"],
    );
    assert_eq!(changed.trim(), "acme/variants version 2");
    // What the CLI sent is the blueprint the API stores.
    let stored: Value = server
        .client()
        .http
        .get(format!("{}/v1/workflows/acme/variants", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["nodes"]["draw"]["input"]["width"], 64, "{stored}");
    assert_eq!(stored["output"], "{{ nodes.sheet.output }}", "{stored}");
    assert_eq!(stored["input_schema"]["required"][0], "prompt", "{stored}");

    // run --wait: exit 0, the output JSON on stdout, a line per node on stderr.
    let output = augur(
        &server,
        token,
        work,
        &[
            "workflow",
            "run",
            "acme/variants",
            "-i",
            "prompt=a cat",
            "--wait",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let printed: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(printed["a"]["side"], "left", "{printed}");
    assert_eq!(printed["b"]["side"], "right", "{printed}");
    let image = printed["a"]["image"].as_str().unwrap_or_default();
    assert!(
        image.starts_with(&server.url) && image.contains("/files/"),
        "not an Augur file URL: {printed}"
    );
    assert_eq!(printed["b"]["image"], image, "{printed}");
    for node in ["draw", "left", "right", "sheet"] {
        assert!(
            stderr.contains(&format!("{node}: succeeded (1/1)")),
            "{node}: {stderr}"
        );
    }

    // run get: the run's JSON.
    let id = run_id(&output.stderr);
    let run: Value = serde_json::from_str(&ok(&server, token, work, &["run", "get", &id])).unwrap();
    assert_eq!(run["id"], id.as_str());
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["workflow"], "acme/variants", "{run}");
    assert_eq!(run["version"], 2, "{run}");
    assert_eq!(run["input"]["prompt"], "a cat", "{run}");
    assert_eq!(run["output"], printed, "{run}");
    for node in ["draw", "left", "right", "sheet"] {
        assert_eq!(run["nodes"][node]["status"], "succeeded", "{node}: {run}");
        assert_eq!(
            run["nodes"][node]["prediction_ids"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "{node}: {run}"
        );
    }

    // Without --wait: the created run, at once.
    let created: Value = serde_json::from_str(&ok(
        &server,
        token,
        work,
        &[
            "workflow",
            "run",
            "acme/variants",
            "--input",
            "prompt=\"7\"",
        ],
    ))
    .unwrap();
    assert_eq!(created["input"]["prompt"], "7", "{created}");
    assert!(created["id"].is_string(), "{created}");

    // A fan-out and its join: items counted per node, outputs in item order.
    std::fs::write(work.join("fan.toml"), FAN).unwrap();
    assert_eq!(
        ok(&server, token, work, &["workflow", "apply", "fan.toml"]).trim(),
        "acme/fan version 1"
    );
    let output = augur(
        &server,
        token,
        work,
        &[
            "workflow",
            "run",
            "acme/fan",
            "-i",
            r#"prompts=["a","b","c","d","e"]"#,
            "--wait",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("each: succeeded (5/5)"), "{stderr}");
    assert!(stderr.contains("join: succeeded (1/1)"), "{stderr}");
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let texts: Vec<&str> = printed["all"]
        .as_array()
        .unwrap_or_else(|| panic!("{printed}"))
        .iter()
        .map(|o| o["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(texts, ["a", "b", "c", "d", "e"], "{printed}");

    // A run that fails: a non-zero exit, the error on stderr, and `run get` agrees.
    std::fs::write(work.join("broken.toml"), BROKEN).unwrap();
    ok(&server, token, work, &["workflow", "apply", "broken.toml"]);
    let output = augur(
        &server,
        token,
        work,
        &["workflow", "run", "acme/broken", "-i", "width=0", "--wait"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty(), "{stderr}");
    assert!(stderr.contains("failed"), "{stderr}");
    let id = run_id(&output.stderr);
    let run: Value = serde_json::from_str(&ok(&server, token, work, &["run", "get", &id])).unwrap();
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["nodes"]["draw"]["status"], "failed", "{run}");

    // Errors are the server's, named: an unknown workflow, a blueprint the server refuses.
    let output = augur(
        &server,
        token,
        work,
        &["workflow", "run", "acme/nope", "--wait"],
    );
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("404"));
    std::fs::write(
        work.join("cycle.json"),
        r#"{"name": "acme/cycle", "output": "{{ nodes.a.output }}",
            "nodes": {"a": {"model": "augur/echo", "input": {"x": "{{ nodes.b.output }}"}},
                      "b": {"model": "augur/echo", "input": {"x": "{{ nodes.a.output }}"}}}}"#,
    )
    .unwrap();
    let output = augur(&server, token, work, &["workflow", "apply", "cycle.json"]);
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("422"), "{stderr}");
    assert!(
        stderr.contains("nodes.a: the nodes form a cycle"),
        "{stderr}"
    );
    let output = augur(&server, token, work, &["run", "get", "doesnotexist"]);
    assert_ne!(output.status.code(), Some(0));
}
