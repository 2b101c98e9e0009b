//! The command provider and output URL imports with the real `augur` binary: `[[models]]`
//! entries with `provider = "command"` running small `sh` scripts, and a local HTTP server
//! whose URLs a model returns as its output.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::routing::get;
use serde_json::{Value, json};

use common::{Api, TOKEN, TestServer};

/// Bytes the local web server serves as `/image.png`.
const IMAGE: &[u8] = b"\x89PNG\r\n\x1a\nnot really a png";

/// The download limit the server runs with (`/big.bin` is twice this).
const DOWNLOAD_LIMIT: usize = 1 << 20;

/// `augur serve` with command models, and the files they use.
struct Stack {
    server: TestServer,
    api: Api,
    /// Where the scripts write the pids of what they started, one file per prediction.
    pids: PathBuf,
    /// The local web server's base URL.
    web: String,
    _dir: tempfile::TempDir,
}

/// Serves `/image.png` and an oversized `/big.bin` on a loopback port.
async fn web_server() -> String {
    let app = Router::new()
        .route(
            "/image.png",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], IMAGE) }),
        )
        .route("/big.bin", get(|| async { vec![7u8; 2 * DOWNLOAD_LIMIT] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn write_script(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn stack() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let web = web_server().await;
    let pids = dir.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    // Echoes its input, logs, writes an output file, and reports whether Augur's own
    // settings (the admin token) reached it.
    let tool = write_script(
        dir.path(),
        "tool.sh",
        r#"input=$(cat)
echo "got the input" >&2
echo "running $AUGUR_PREDICTION_ID" >&2
printf 'hello from the tool' > "$AUGUR_OUTPUTS_DIR/result.txt"
if [ -z "$AUGUR_ADMIN_TOKEN" ]; then hidden=true; else hidden=false; fi
printf '{"input": %s, "file": "file:outputs/result.txt", "secrets_hidden": %s}\n' "$input" "$hidden"
"#,
    );
    // Starts a grandchild, records both pids, logs, and waits (forever, as far as the test
    // cares).
    let slow = write_script(
        dir.path(),
        "slow.sh",
        &format!(
            r#"sleep 300 &
echo "$$ $!" > "{pids}/$AUGUR_PREDICTION_ID.tmp"
mv "{pids}/$AUGUR_PREDICTION_ID.tmp" "{pids}/$AUGUR_PREDICTION_ID"
echo "started" >&2
wait
"#,
            pids = pids.display()
        ),
    );
    // Reports the path it got for its `file` input, and that file's size and SHA-256.
    let digest = write_script(
        dir.path(),
        "digest.sh",
        r#"path=$(sed -n 's/.*"file": *"\([^"]*\)".*/\1/p')
[ -f "$path" ] || { echo "no file at $path" >&2; exit 4; }
sum=$(sha256sum "$path" | cut -d' ' -f1)
printf '{"path": "%s", "size": %s, "sha256": "%s"}\n' "$path" "$(wc -c < "$path")" "$sum"
"#,
    );
    let config = dir.path().join("augur.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[models]]
name = "acme/tool"
provider = "command"
command = ["/bin/sh", "{tool}"]
concurrency = 2

[[models]]
name = "acme/digest"
provider = "command"
command = ["/bin/sh", "{digest}"]

[[models]]
name = "acme/fails"
provider = "command"
command = ["/bin/sh", "-c", "echo working >&2; echo 'error: the model broke' >&2; exit 3"]

[[models]]
name = "acme/slow"
provider = "command"
command = ["/bin/sh", "{slow}"]
timeout = "1s"

[[models]]
name = "acme/hang"
provider = "command"
command = ["/bin/sh", "{slow}"]

[[models]]
name = "acme/url"
provider = "command"
command = ["/bin/sh", "-c", "echo '{{\"image\": \"{web}/image.png?signature=s3cret\"}}'"]

[[models]]
name = "acme/big"
provider = "command"
command = ["/bin/sh", "-c", "echo '[\"{web}/big.bin?signature=s3cret\"]'"]
"#
        ),
    )
    .unwrap();
    let limit = DOWNLOAD_LIMIT.to_string();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("AUGUR_CONFIG", config.to_str().unwrap()),
            ("AUGUR_OUTPUT_DOWNLOAD_MAX_BYTES", &limit),
        ],
    );
    let api = server.client();
    Stack {
        server,
        api,
        pids,
        web,
        _dir: dir,
    }
}

impl Stack {
    async fn create(&self, model: &str, input: Value) -> String {
        let (status, body) = self.api.create(model, input).await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn settled(&self, id: &str) -> Value {
        self.api.settled(id, Duration::from_secs(30)).await
    }

    /// Polls until `done` holds for the prediction.
    async fn until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = self.api.get(id).await.unwrap();
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < until,
                "prediction {id} never got there: {body}\naugur log:\n{}",
                std::fs::read_to_string(&self.server.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pids `slow.sh` recorded for a prediction: the script's and its grandchild's.
    async fn pids_of(&self, id: &str) -> Vec<u32> {
        let file = self.pids.join(id);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                return text
                    .split_whitespace()
                    .map(|p| p.parse().unwrap())
                    .collect();
            }
            assert!(Instant::now() < until, "the command never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn fetch(&self, url: &str) -> (String, Vec<u8>) {
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let content_type = response.headers()[header::CONTENT_TYPE.as_str()]
            .to_str()
            .unwrap()
            .to_owned();
        (content_type, response.bytes().await.unwrap().to_vec())
    }
}

/// Whether a process is gone (or a zombie nobody reaped yet: it runs nothing any more).
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn assert_gone(pids: &[u32]) {
    assert_eq!(pids.len(), 2, "{pids:?}");
    let until = Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|&p| is_gone(p)) {
        assert!(Instant::now() < until, "processes {pids:?} still run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_succeeds_with_its_output_logs_and_a_file_served_by_augur() {
    let stack = stack().await;
    let id = stack
        .create("acme/tool", json!({"prompt": "a cat", "n": 2}))
        .await;
    let done = stack.settled(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let output = &done["output"];
    assert_eq!(output["input"], json!({"prompt": "a cat", "n": 2}));
    assert_eq!(
        output["secrets_hidden"], true,
        "AUGUR_* reached the command"
    );
    assert_eq!(
        done["logs"],
        format!("got the input\nrunning {id}\n"),
        "{done}"
    );
    let url = output["file"].as_str().unwrap();
    let prefix = format!("{}/files/{id}/", stack.server.url);
    assert!(
        url.starts_with(&prefix) && url.ends_with("/result.txt"),
        "{url}"
    );
    let (content_type, bytes) = stack.fetch(url).await;
    assert_eq!(content_type, "text/plain; charset=utf-8");
    assert_eq!(bytes, b"hello from the tool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_fails_with_its_exit_status_and_stderr_tail() {
    let stack = stack().await;
    let id = stack.create("acme/fails", json!({})).await;
    let done = stack.settled(&id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(
        done["error"],
        "the command exited with status 3; the last lines of its stderr:\nworking\nerror: the model broke"
    );
    assert_eq!(done["logs"], "working\nerror: the model broke\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_fails_the_prediction_and_kills_the_command_and_its_children() {
    let stack = stack().await;
    let id = stack.create("acme/slow", json!({})).await;
    let pids = stack.pids_of(&id).await;
    assert!(pids.iter().all(|&p| !is_gone(p)));
    let done = stack.settled(&id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"], "command timed out after 1s");
    assert_eq!(done["logs"], "started\n");
    assert_gone(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_mid_run_kills_the_command_and_its_children() {
    let stack = stack().await;
    let id = stack.create("acme/hang", json!({})).await;
    // Logs arrive while the command runs.
    stack
        .until(&id, |p| {
            p["status"] == "processing" && p["logs"].as_str() == Some("started\n")
        })
        .await;
    let pids = stack.pids_of(&id).await;
    let response = stack
        .api
        .http
        .post(format!("{}/v1/predictions/{id}/cancel", stack.server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let done = stack.settled(&id).await;
    assert_eq!(done["status"], "canceled", "{done}");
    assert_gone(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_url_is_copied_into_augurs_file_store() {
    let stack = stack().await;
    let id = stack.create("acme/url", json!({})).await;
    let done = stack.settled(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let url = done["output"]["image"].as_str().unwrap();
    let prefix = format!("{}/files/{id}/", stack.server.url);
    assert!(
        url.starts_with(&prefix) && url.ends_with("/image.png"),
        "{url}"
    );
    let (content_type, bytes) = stack.fetch(url).await;
    assert_eq!(content_type, "image/png");
    assert_eq!(bytes, IMAGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_output_url_fails_naming_the_limit_but_not_the_query_values() {
    let stack = stack().await;
    let id = stack.create("acme/big", json!({})).await;
    let done = stack.settled(&id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(
        done["error"],
        format!(
            "cannot import output {}/big.bin?signature=***: it is larger than the limit of 1 MiB",
            stack.web
        )
    );
}

/// An uploaded file in the input reaches the command as the path of a local copy of its bytes
/// (named like the upload), removed when the run is over; the stored input keeps the file's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_file_input_reaches_the_command_as_a_local_path() {
    let stack = stack().await;
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = common::upload(&stack.api.http, &stack.server.url, "photo.jpg", &bytes).await;
    let url = file["urls"]["get"].as_str().unwrap();
    let id = stack.create("acme/digest", json!({"file": url})).await;
    let done = stack.settled(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let output = &done["output"];
    assert_eq!(output["size"], bytes.len(), "{output}");
    assert_eq!(output["sha256"], file["checksums"]["sha256"], "{output}");
    let path = Path::new(output["path"].as_str().unwrap());
    assert!(
        path.is_absolute() && path.ends_with("photo.jpg"),
        "{output}"
    );
    assert!(
        !path.exists(),
        "the local copy outlived the run: {}",
        path.display()
    );
    assert_eq!(done["input"]["file"], url, "the stored input keeps the URL");
}
