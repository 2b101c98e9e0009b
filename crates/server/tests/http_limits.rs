//! The HTTP front door against the real binary: slow and idle clients are cut and cannot starve
//! others, the request timeout spares event streams and `Prefer: wait`, a body a route ignores
//! does not break the connection, and the operations endpoints answer only whom they should.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use common::{TOKEN, TestServer};

/// One HTTP/1.1 connection, written and read by hand, so that a test decides exactly what is
/// sent when.
struct Raw {
    stream: BufReader<TcpStream>,
}

/// An answer read off a [`Raw`] connection.
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Raw {
    async fn connect(url: &str) -> Raw {
        let address = url.trim_start_matches("http://");
        Raw {
            stream: BufReader::new(TcpStream::connect(address).await.unwrap()),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.get_mut().write_all(bytes).await?;
        self.stream.get_mut().flush().await
    }

    /// Sends a request's head, then, after `pause`, its body (as clients that write the two
    /// separately do).
    async fn send(&mut self, method: &str, path: &str, extra: &str, body: &[u8], pause: Duration) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: augur\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        );
        self.write(head.as_bytes()).await.unwrap();
        if !body.is_empty() {
            tokio::time::sleep(pause).await;
            self.write(body).await.unwrap();
        }
    }

    /// The next answer, or `None` if the server closed the connection first.
    async fn answer(&mut self) -> Option<Answer> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = HashMap::new();
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let text = line.trim_end();
            if text.is_empty() {
                break;
            }
            let (name, value) = text.split_once(':')?;
            headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
        }
        let mut body = Vec::new();
        if let Some(length) = headers.get("content-length") {
            body.resize(length.parse().ok()?, 0);
            self.stream.read_exact(&mut body).await.ok()?;
        } else if headers
            .get("transfer-encoding")
            .is_some_and(|v| v == "chunked")
        {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await.ok()?;
                let size = usize::from_str_radix(line.trim(), 16).ok()?;
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).await.ok()?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        }
        Some(Answer {
            status,
            headers,
            body,
        })
    }

    /// Waits up to `within` for the server to close the connection; true if it did.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut byte = [0u8; 1024];
        let until = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(until, self.stream.read(&mut byte)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// A slow prediction: `steps` steps of `step_ms`.
async fn create_slow(api: &common::Api, steps: u32, step_ms: u32) -> Value {
    let (status, p) = api
        .create(
            "augur/demo-image",
            json!({"prompt": "slow", "steps": steps, "step_ms": step_ms, "width": 8, "height": 8}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{p}");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_a_route_ignores_leaves_the_connection_usable() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let api = server.client();
    let p = create_slow(&api, 100, 100).await;
    let id = p["id"].as_str().unwrap();

    // One keep-alive connection: cancels sent with `{}` (the body a moment after the head, so
    // the handler answers before it arrives), each followed by a read of the prediction.
    let mut raw = Raw::connect(&server.url).await;
    for round in 0..10 {
        raw.send(
            "POST",
            &format!("/v1/predictions/{id}/cancel"),
            "",
            b"{}",
            Duration::from_millis(50),
        )
        .await;
        let canceled = raw.answer().await.unwrap_or_else(|| {
            panic!("round {round}: the connection closed before the cancel's answer")
        });
        assert_eq!(canceled.status, 200, "round {round}: {:?}", canceled.json());
        raw.send(
            "GET",
            &format!("/v1/predictions/{id}"),
            "",
            b"",
            Duration::ZERO,
        )
        .await;
        let read = raw.answer().await.unwrap_or_else(|| {
            panic!("round {round}: the connection closed after a cancel with a body")
        });
        assert_eq!(read.status, 200);
        assert_eq!(read.json()["id"], id);
    }
    // A refused request (a bad token) with a body it never reads: the same.
    raw.write(
        b"POST /v1/predictions HTTP/1.1\r\nHost: augur\r\nAuthorization: Bearer nope\r\n\
          Content-Type: application/json\r\nContent-Length: 13\r\n\r\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.write(br#"{"input": {}}"#).await.unwrap();
    assert_eq!(raw.answer().await.unwrap().status, 401);
    raw.send(
        "GET",
        &format!("/v1/predictions/{id}"),
        "",
        b"",
        Duration::ZERO,
    )
    .await;
    assert_eq!(raw.answer().await.unwrap().status, 200);

    // A body declared beyond the limit is refused before it is read, with a clear 413, and
    // the connection closes cleanly after it.
    raw.write(
        format!(
            "POST /v1/predictions/{id}/cancel HTTP/1.1\r\nHost: augur\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Length: 5000000\r\n\
             Expect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let refused = raw.answer().await.unwrap();
    assert_eq!(refused.status, 413);
    assert_eq!(refused.json()["code"], "payload_too_large");
    assert_eq!(refused.headers["connection"], "close");
    assert!(raw.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_and_do_not_starve_a_normal_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("AUGUR_HEADER_READ_TIMEOUT", "1s"),
            ("AUGUR_IDLE_TIMEOUT", "4s"),
        ],
    );
    let api = server.client();

    // 300 connections that send half a request head and then nothing.
    let mut slow = stalled(
        &server,
        300,
        b"POST /v1/predictions HTTP/1.1\r\nHost: augur\r\nContent-",
    )
    .await;
    create_within(&api, Duration::from_secs(2), "beside 300 slow clients").await;
    // Each stalled head is cut after the header timeout.
    let waited = Instant::now();
    for raw in &mut slow {
        assert!(
            raw.closed_within(Duration::from_secs(10)).await,
            "a connection with a stalled head stayed open"
        );
    }
    assert!(
        waited.elapsed() < Duration::from_secs(5),
        "{:?}",
        waited.elapsed()
    );

    // A connection that says nothing is idle, not slow: it has the idle timeout, not the
    // header timeout; and so has a kept-alive connection between requests.
    let mut quiet = Raw::connect(&server.url).await;
    let mut kept = Raw::connect(&server.url).await;
    kept.send("GET", "/healthz", "", b"", Duration::ZERO).await;
    assert_eq!(kept.answer().await.unwrap().status, 200);
    assert!(!quiet.closed_within(Duration::from_secs(2)).await);
    assert!(!kept.closed_within(Duration::from_millis(10)).await);
    assert!(quiet.closed_within(Duration::from_secs(6)).await);
    assert!(kept.closed_within(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_takes_new_clients_as_slow_ones_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("AUGUR_HEADER_READ_TIMEOUT", "1s"),
            ("AUGUR_MAX_CONNECTIONS", "50"),
        ],
    );
    let api = server.client();
    // 200 connections that send part of a request head, four times as many as the server
    // holds at once: the create below waits in the kernel's backlog behind them.
    let _slow = stalled(
        &server,
        200,
        b"GET /v1/predictions HTTP/1.1\r\nHost: augur\r\n",
    )
    .await;
    // Four waves of 50 slow clients, each cut after a second, are ahead of it.
    create_within(&api, Duration::from_secs(10), "behind 200 slow clients").await;
}

/// `count` connections to `server` that each send `head` (part of a request head) and then
/// nothing.
async fn stalled(server: &TestServer, count: usize, head: &[u8]) -> Vec<Raw> {
    let mut slow = Vec::with_capacity(count);
    for _ in 0..count {
        let mut raw = Raw::connect(&server.url).await;
        raw.write(head).await.unwrap();
        slow.push(raw);
    }
    slow
}

/// Creates a prediction, which must be acknowledged within `limit` (`beside` says what else the
/// server had to handle).
async fn create_within(api: &common::Api, limit: Duration, beside: &str) {
    let started = Instant::now();
    let (status, p) = api
        .create("augur/echo", json!({"text": beside}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{p}");
    assert!(
        started.elapsed() < limit,
        "a create took {:?} {beside}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_timeout_spares_streams_and_waits() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[("AUGUR_REQUEST_TIMEOUT", "1s")]);
    let api = server.client();

    // A body that never finishes: the answer comes at the timeout.
    let mut raw = Raw::connect(&server.url).await;
    raw.write(
        format!(
            "POST /v1/predictions HTTP/1.1\r\nHost: augur\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"version\":"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let timed_out = raw.answer().await.expect("an answer");
    assert_eq!(timed_out.status, 503);
    assert_eq!(timed_out.json()["code"], "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));

    // `Prefer: wait` waits for a prediction that takes longer than the request timeout.
    let started = Instant::now();
    let response = api
        .http
        .post(format!("{}/v1/models/augur/demo-image/predictions", server.url))
        .bearer_auth(TOKEN)
        .header("Prefer", "wait=10")
        .json(&json!({"input": {"prompt": "wait", "steps": 5, "step_ms": 400, "width": 8, "height": 8}}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let waited: Value = response.json().await.unwrap();
    assert!(status == 200 || status == 201, "{status} {waited}");
    assert_eq!(waited["status"], "succeeded", "{waited}");
    assert!(started.elapsed() > Duration::from_secs(1));

    // An event stream outlives the request timeout and ends with the prediction.
    let p = create_slow(&api, 5, 400).await;
    let started = Instant::now();
    let response = api
        .http
        .get(format!(
            "{}/v1/predictions/{}/stream",
            server.url,
            p["id"].as_str().unwrap()
        ))
        .header("Accept", "text/event-stream")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if text.contains("event: done") {
            break;
        }
    }
    assert!(
        text.contains("event: done"),
        "the stream ended early: {text}"
    );
    assert!(started.elapsed() > Duration::from_secs(1));
}

async fn status_and_text(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_token_guards_metrics_and_readiness_detail() {
    const OPS: &str = "ops-token-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[("AUGUR_OPS_TOKEN", OPS)]);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);

    let (status, text) = status_and_text(http.get(url("/metrics"))).await;
    assert_eq!(status, 401, "{text}");
    let (status, _) = status_and_text(http.get(url("/metrics")).bearer_auth("not-the-token")).await;
    assert_eq!(status, 401);
    for token in [OPS, TOKEN] {
        let (status, text) = status_and_text(http.get(url("/metrics")).bearer_auth(token)).await;
        assert_eq!(status, 200);
        assert!(text.contains("augur_"), "{text}");
    }
    let (status, text) = status_and_text(http.get(url("/readyz"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"status": "ready"})
    );
    let (status, text) = status_and_text(http.get(url("/readyz")).bearer_auth(OPS)).await;
    assert_eq!(status, 200);
    let detail: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(detail["store"], "embedded", "{detail}");
    let (status, _) = status_and_text(http.get(url("/healthz"))).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_listener_serves_them_to_anyone_and_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let ops = format!("127.0.0.1:{}", common::throwaway::free_port());
    let server = TestServer::start(&dir.path().join("data"), &[("AUGUR_OPS_LISTEN", &ops)]);
    let http = reqwest::Client::new();

    let (status, text) = status_and_text(http.get(format!("http://{ops}/metrics"))).await;
    assert_eq!(status, 200);
    assert!(text.contains("augur_"), "{text}");
    let (status, text) = status_and_text(http.get(format!("http://{ops}/readyz"))).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"store\""), "{text}");
    let (status, _) = status_and_text(
        http.get(format!("http://{ops}/v1/predictions"))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(status, 404);
    // On the API's listener they now need a token.
    let (status, _) = status_and_text(http.get(format!("{}/metrics", server.url))).await;
    assert_eq!(status, 401);
    let (status, text) = status_and_text(http.get(format!("{}/readyz", server.url))).await;
    assert_eq!(status, 200);
    assert!(!text.contains("store"), "{text}");
    let (status, _) = status_and_text(
        http.get(format!("{}/metrics", server.url))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
}

/// A store that stops answering: `/readyz` says only "not ready" to a caller without the
/// token, and the reason to one with it.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_shows_a_store_error_only_to_the_operator() {
    const OPS: &str = "ops-token-0123456789abcdef";
    let Some(bin) = common::throwaway::Redis::binary() else {
        assert!(
            std::env::var("AUGUR_STORE_TESTS_REQUIRED").as_deref() != Ok("1"),
            "redis-server is not installed and AUGUR_STORE_TESTS_REQUIRED=1"
        );
        eprintln!("skipping: redis-server is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut redis = common::throwaway::Redis::start(bin, &dir.path().join("redis"));
    let server = TestServer::start_on(
        &redis.url(),
        &dir.path().join("node"),
        &[("AUGUR_OPS_TOKEN", OPS)],
    );
    let http = reqwest::Client::new();
    let readyz = format!("{}/readyz", server.url);
    redis.kill();
    let until = Instant::now() + Duration::from_secs(20);
    let (status, text) = loop {
        let (status, text) = status_and_text(http.get(&readyz)).await;
        if status == 503 || Instant::now() > until {
            break (status, text);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 503, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["detail"], "not ready", "{body}");
    assert!(!text.to_lowercase().contains("redis"), "{text}");
    let (status, text) = status_and_text(http.get(&readyz).bearer_auth(OPS)).await;
    assert_eq!(status, 503);
    assert!(text.contains("redis"), "{text}");
}
