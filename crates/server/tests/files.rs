//! The files API end to end: the official Replicate Python client uploads, lists, gets,
//! downloads (signed URLs without a token) and deletes files, runs a model with a file input
//! (its default upload strategy), and meets the size limit, another account and expiry; output
//! files stay served when the public URL changes, and live in S3 when told to.
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
    run_checks_at(python, &server.url, &server.log, mode, expiry_secs);
}

/// [`run_checks`] against the server at `url` whose log is `log`.
fn run_checks_at(python: &str, url: &str, log: &std::path::Path, mode: &str, expiry_secs: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/files_client.py");
    let output = Command::new(python)
        .arg(script)
        .env("AUGUR_URL", url)
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
        std::fs::read_to_string(log).unwrap_or_default()
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

/// The folder of the JS client checks, whose `node_modules` scripts/test.sh installs from the
/// lock file.
const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");

/// Whether Node and the pinned npm `replicate` are here (required with AUGUR_E2E_REQUIRED=1).
fn js_client_ready() -> bool {
    let node = Command::new("node").arg("--version").output();
    let installed = std::path::Path::new(JS_DIR)
        .join("node_modules/replicate/package.json")
        .exists();
    if node.is_ok_and(|o| o.status.success()) && installed {
        return true;
    }
    assert!(
        std::env::var("AUGUR_E2E_REQUIRED").as_deref() != Ok("1"),
        "node or {JS_DIR}/node_modules is missing and AUGUR_E2E_REQUIRED=1 (scripts/test.sh installs it)"
    );
    eprintln!("skipping: node or {JS_DIR}/node_modules is missing (scripts/test.sh installs it)");
    false
}

#[test]
fn js_client_uploads_runs_with_and_deletes_files() {
    if !js_client_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[("AUGUR_FILE_MAX_BYTES", MAX_BYTES)],
    );
    let output = Command::new("node")
        .arg("files_client.mjs")
        .current_dir(JS_DIR)
        .env("AUGUR_URL", &server.url)
        .env("AUGUR_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("all js client checks passed"),
        "the JS client checks failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    eprint!("{stdout}");
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

/// A raw HTTP/1.1 connection to `server` for uploads whose framing the test controls.
fn raw_connection(server: &TestServer) -> std::net::TcpStream {
    let address = server.url.strip_prefix("http://").unwrap();
    let stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream
}

/// The head of an upload request with `framing` (a `Content-Length` or `Transfer-Encoding`
/// line) and any `extra` header lines.
fn upload_head(framing: &str, extra: &str) -> String {
    format!(
        "POST /v1/files HTTP/1.1\r\nhost: augur.test\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: multipart/form-data; boundary=b0undary\r\n{framing}\r\n{extra}\r\n"
    )
}

/// Reads one answer: its status line and headers (lower-cased), and its body (by its
/// `Content-Length`). Fails if it does not arrive within the read timeout.
fn read_answer(stream: &mut std::net::TcpStream) -> (String, String, serde_json::Value) {
    use std::io::Read;
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("an answer within 5 s");
        assert_eq!(n, 1, "the connection closed before an answer: {bytes:?}");
        bytes.push(byte[0]);
    }
    let head = String::from_utf8(bytes).unwrap().to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    let status = head.lines().next().unwrap().to_owned();
    (status, head, serde_json::from_slice(&body).unwrap())
}

/// Whether the server closes the connection within the read timeout (what it sends before
/// closing is read and thrown away).
fn closes(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A `Content-Length` far beyond the limit gets a 413 naming the limit at once, before any of
/// the body is sent (the old behaviour waited for the body), with `Connection: close`; the
/// server then keeps reading what the client goes on sending instead of resetting it.
#[test]
fn a_declared_length_over_the_limit_is_refused_before_the_body_is_read() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[("AUGUR_FILE_MAX_BYTES", MAX_BYTES)],
    );
    let mut stream = raw_connection(&server);
    let started = std::time::Instant::now();
    stream
        .write_all(upload_head("content-length: 10000000000", "").as_bytes())
        .unwrap();
    let (status, head, body) = read_answer(&mut stream);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(status, "http/1.1 413 payload too large", "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert_eq!(body["code"], "payload_too_large", "{body}");
    assert_eq!(body["limit"], MAX_BYTES.parse::<u64>().unwrap(), "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("10000000000 bytes"),
        "{body}"
    );
    // A client that writes before it reads is not reset while it writes: the server reads
    // (and throws away) a bounded amount after its answer.
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..4 {
        stream.write_all(&chunk).expect("the server still reads");
    }
}

/// A client that waits for `100 Continue` is never asked for an oversized body: it gets the
/// 413 straight away and the connection closes cleanly.
#[test]
fn an_oversized_upload_that_expects_100_continue_is_answered_without_the_body() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[("AUGUR_FILE_MAX_BYTES", MAX_BYTES)],
    );
    let mut stream = raw_connection(&server);
    stream
        .write_all(
            upload_head("content-length: 10000000000", "expect: 100-continue\r\n").as_bytes(),
        )
        .unwrap();
    let (status, head, body) = read_answer(&mut stream);
    assert_eq!(status, "http/1.1 413 payload too large", "{head}");
    assert_eq!(body["limit"], MAX_BYTES.parse::<u64>().unwrap(), "{body}");
    assert!(closes(&mut stream), "the server closes the connection");
}

/// A chunked upload (no length known in advance) over the limit gets the 413 as soon as the
/// file passes the limit, while the client is still sending, and the server reads the rest so
/// that the client's writes all succeed; the connection closes when the body ends.
#[test]
fn a_chunked_upload_over_the_limit_is_answered_while_it_is_sent() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[("AUGUR_FILE_MAX_BYTES", MAX_BYTES)],
    );
    let mut stream = raw_connection(&server);
    stream
        .write_all(upload_head("transfer-encoding: chunked", "").as_bytes())
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let chunked = |data: &[u8]| {
        let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
        framed.extend_from_slice(data);
        framed.extend_from_slice(b"\r\n");
        framed
    };
    let sending = std::thread::spawn(move || {
        writer.write_all(&chunked(
            b"--b0undary\r\ncontent-disposition: form-data; name=\"content\"; filename=\"big.bin\"\r\n\r\n",
        ))?;
        let data = vec![b'x'; 64 << 10];
        // 4 MiB: 20 times the limit.
        for _ in 0..64 {
            writer.write_all(&chunked(&data))?;
        }
        writer.write_all(&chunked(b"\r\n--b0undary--\r\n"))?;
        writer.write_all(b"0\r\n\r\n")
    });
    let (status, head, body) = read_answer(&mut stream);
    assert_eq!(status, "http/1.1 413 payload too large", "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert_eq!(body["limit"], MAX_BYTES.parse::<u64>().unwrap(), "{body}");
    sending
        .join()
        .unwrap()
        .expect("every write of the body succeeds");
    assert!(closes(&mut stream), "the server closes after the body");
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

/// The whole files path on S3-compatible storage (moto's server mode): uploads, file inputs,
/// downloads and deletes through the official client, and a model's output file written to
/// and served from the bucket, all under the configured prefix.
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread")]
async fn files_live_in_an_s3_bucket() {
    let Some(python) = common::python() else {
        return;
    };
    let Some(moto) = common::moto::Moto::start(&python) else {
        return;
    };
    let http = reqwest::Client::new();
    let bucket = format!("{}/augur-test", moto.endpoint);
    let made = http.put(&bucket).send().await.unwrap();
    assert!(made.status().is_success(), "{}", made.status());

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("AUGUR_FILES_DIR", "s3://augur-test/some/prefix"),
            ("AUGUR_FILE_MAX_BYTES", MAX_BYTES),
            ("AWS_ENDPOINT_URL", &moto.endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    let checks = {
        let python = python.clone();
        let url = server.url.clone();
        let log = server.log.clone();
        tokio::task::spawn_blocking(move || run_checks_at(&python, &url, &log, "all", "86400"))
    };
    checks.await.unwrap();
    assert!(
        !dir.path().join("data/files").exists(),
        "nothing goes to a local directory"
    );

    let (id, output) = demo_image_output(&server, "s3", 32).await;
    let served = http.get(&output).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["x-content-type-options"], "nosniff");
    let bytes = served.bytes().await.unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG served from S3");

    let listing = http
        .get(format!("{bucket}?list-type=2&prefix=some/prefix/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let keys: Vec<&str> = listing
        .split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next())
        .collect();
    let uploads = keys
        .iter()
        .filter(|k| k.starts_with("some/prefix/uploads/"))
        .count();
    assert_eq!(uploads, 3, "the live uploads are in the bucket: {keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("some/prefix/{id}/"))),
        "the output is in the bucket: {keys:?}"
    );
}

/// Uploads on both sides of S3's part size arrive whole: a small file is one `PutObject`, a
/// file over 5 MiB a multipart upload of several parts.
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread")]
async fn uploads_below_and_above_one_part_reach_s3_whole() {
    let Some(python) = common::python() else {
        return;
    };
    let Some(moto) = common::moto::Moto::start(&python) else {
        return;
    };
    let http = reqwest::Client::new();
    let made = http
        .put(format!("{}/parts", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{}", made.status());
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("AUGUR_FILES_DIR", "s3://parts/p"),
            ("AUGUR_FILE_MAX_BYTES", "20000000"),
            ("AWS_ENDPOINT_URL", &moto.endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    for size in [1000usize, (5 << 20) - 1, 11 << 20] {
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let file = common::upload(&http, &server.url, "part.bin", &bytes).await;
        assert_eq!(file["size"], size);
        let got = http
            .get(file["urls"]["download"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        assert!(got.bytes().await.unwrap()[..] == bytes[..], "{size} bytes");
    }
}

/// Two nodes that share only a store server and an S3 bucket (no filesystem): a file uploaded
/// to one is read, downloaded and deleted through the other, and an output one writes is
/// served by the other.
#[cfg(feature = "s3")]
async fn two_nodes_share_files_through_s3_only(backend: common::backends::Backend) {
    let Some(python) = common::python() else {
        return;
    };
    let Some(moto) = common::moto::Moto::start(&python) else {
        return;
    };
    let http = reqwest::Client::new();
    let made = http
        .put(format!("{}/shared", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{}", made.status());
    let env = [
        ("AUGUR_FILES_DIR", "s3://shared/nodes"),
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start_on(&backend.url, &dir.path().join("a"), &env);
    let b = TestServer::start_on(&backend.url, &dir.path().join("b"), &env);

    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let file = common::upload(&http, &a.url, "shared.bin", &bytes).await;
    let id = file["id"].as_str().unwrap();
    let read = http
        .get(format!("{}/v1/files/{id}", b.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        read.status(),
        200,
        "{}: node b reads a's file",
        backend.name
    );
    let signed = file["urls"]["download"].as_str().unwrap();
    let on_b = signed.replacen(&a.url, &b.url, 1);
    let got = http.get(&on_b).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(&got.bytes().await.unwrap()[..], &bytes[..]);

    let (_, output) = demo_image_output(&a, "shared", 24).await;
    let output = output.as_str();
    // Whichever node ran it, the other serves its output from the bucket.
    for node in [&a, &b] {
        let path = &output[output.find("/files/").unwrap()..];
        let served = http
            .get(format!("{}{path}", node.url))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), 200, "{}{path}", node.url);
        assert!(served.bytes().await.unwrap().starts_with(b"\x89PNG"));
    }

    let deleted = http
        .delete(format!("{}/v1/files/{id}", b.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = http.get(signed).send().await.unwrap();
    assert_eq!(gone.status(), 404, "a deleted file is gone on node a too");
    assert!(!dir.path().join("a/files").exists() && !dir.path().join("b/files").exists());
}

#[cfg(all(feature = "s3", feature = "postgres"))]
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_on_postgres_share_files_through_s3() {
    if let Some(backend) = common::backends::postgres() {
        two_nodes_share_files_through_s3_only(backend).await;
    }
}

#[cfg(all(feature = "s3", feature = "redis"))]
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_on_redis_share_files_through_s3() {
    if let Some(backend) = common::backends::redis() {
        two_nodes_share_files_through_s3_only(backend).await;
    }
}

/// Runs a one-step `augur/demo-image` of `width`×16 on `server`; returns its id and output URL.
#[cfg(feature = "s3")]
async fn demo_image_output(server: &TestServer, prompt: &str, width: u32) -> (String, String) {
    let api = server.client();
    let input = serde_json::json!(
        {"prompt": prompt, "width": width, "height": 16, "steps": 1, "step_ms": 1}
    );
    let (status, created) = api.create("augur/demo-image", input).await.unwrap();
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let done = api.settled(&id, std::time::Duration::from_secs(30)).await;
    let output = done["output"].as_str().expect("an output URL").to_owned();
    (id, output)
}

/// Outputs keep keys, not URLs: an output written by a node at one public URL is served after
/// a restart at another (a new port here), under the new one, with the same bytes.
#[tokio::test(flavor = "multi_thread")]
async fn outputs_follow_a_change_of_public_url() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::start(&data, &[]);
    let api = server.client();
    let input =
        serde_json::json!({"prompt": "moved", "width": 24, "height": 16, "steps": 1, "step_ms": 1});
    let (status, created) = api.create("augur/demo-image", input).await.unwrap();
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let done = api.settled(&id, std::time::Duration::from_secs(30)).await;
    let old = done["output"].as_str().expect("an output URL").to_owned();
    let key = old
        .strip_prefix(&format!("{}/files/", server.url))
        .expect("under the public URL")
        .to_owned();
    let bytes = api
        .http
        .get(&old)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
    let old_base = server.url.clone();
    assert!(server.terminate().0);

    // Another port, so another public URL.
    let port = std::iter::repeat_with(common::throwaway::free_port)
        .find(|port| !old_base.ends_with(&format!(":{port}")))
        .unwrap();
    let listen = format!("127.0.0.1:{port}");
    let server = TestServer::start(&data, &[("AUGUR_LISTEN", &listen)]);
    assert_ne!(server.url, old_base, "a new public URL");
    let api = server.client();
    let (_, again) = api.get(&id).await.unwrap();
    let new = format!("{}/files/{key}", server.url);
    assert_eq!(again["output"], new.as_str());
    let served = api.http.get(&new).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap(), bytes);
}
