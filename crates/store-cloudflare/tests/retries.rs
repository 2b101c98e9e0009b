//! What the client retries, against a fake Worker on loopback that answers `hello` and then
//! `503 unavailable` to everything: reads are sent again (a few times, backing off), calls that
//! change the store are sent once (they may have reached the Worker), and a Worker that speaks
//! another protocol is refused at connect. Needs no real Worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::store::{
    AdminStore, ClaimRequest, Key, Kind, Lane, QueueStore, RecordStore, Section, Write,
};
use augur_core::{AccountId, WorkerId};
use augur_store_cloudflare::CloudflareStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Seen = Arc<Mutex<HashMap<String, usize>>>;

/// Starts the fake Worker; `hello` answers `hello`. Returns its URL and the requests it saw, by
/// method.
async fn fake_worker(hello: &'static str) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let counts = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and as much body as it announces.
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buffer).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buffer.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(&buffer).into_owned();
                let path = text.split(' ').nth(1).unwrap_or_default().to_owned();
                let method = path.rsplit('/').next().unwrap_or_default().to_owned();
                *counts.lock().unwrap().entry(method.clone()).or_default() += 1;
                let (status, body) = if method == "hello" {
                    ("200 OK", hello.to_owned())
                } else {
                    (
                        "503 Service Unavailable",
                        r#"{"error":"unavailable","message":"down for the test"}"#.to_owned(),
                    )
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (
        format!("cloudflare+http://:s3cret@127.0.0.1:{port}/?namespace=retries&timeout=2000"),
        seen,
    )
}

fn count(seen: &Seen, method: &str) -> usize {
    seen.lock().unwrap().get(method).copied().unwrap_or(0)
}

#[tokio::test]
async fn reads_are_retried_and_changes_are_sent_once() {
    let (url, seen) = fake_worker(r#"{"protocol":1,"shards":16}"#).await;
    let store = CloudflareStore::connect(&url).await.unwrap();
    assert_eq!(count(&seen, "hello"), 1);

    let key = Key::new(Kind::Prediction, "p1");
    let err = store.get(&key).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(count(&seen, "get"), 4, "a read is sent 4 times in all");
    let err = store.export(Section::Records, None, 10).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(count(&seen, "export"), 4);

    let write = Write::new(AccountId::admin()).effects([augur_core::store::Effect::count("n", 1)]);
    let err = store.write(&write).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        count(&seen, "write"),
        1,
        "a write that reached the Worker is not resent"
    );
    let claim = ClaimRequest {
        lane: Lane::Jobs,
        worker: WorkerId::generate(),
        lease_for: Duration::from_secs(30),
        max: 1,
        exclude_topics: vec![],
    };
    assert!(store.claim(&claim).await.unwrap_err().is_retryable());
    assert_eq!(count(&seen, "claim"), 1, "a claim is not resent");
    assert!(
        store
            .expire(augur_core::Timestamp::now(), 10)
            .await
            .unwrap_err()
            .is_retryable()
    );
    assert_eq!(count(&seen, "expire"), 1, "an expiry is not resent");
    assert!(
        store.import(&[]).await.is_ok(),
        "an empty import sends nothing"
    );

    // Closed: nothing is sent any more.
    store.close().await;
    assert!(store.get(&key).await.unwrap_err().is_retryable());
    assert_eq!(count(&seen, "get"), 4);
}

#[tokio::test]
async fn another_protocol_is_refused_at_connect() {
    let (url, _) = fake_worker(r#"{"protocol":2,"shards":16}"#).await;
    let err = CloudflareStore::connect(&url).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("protocol 2"), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    let (url, _) = fake_worker(r#"{"protocol":1,"shards":8}"#).await;
    let err = CloudflareStore::connect(&url).await.unwrap_err();
    assert!(err.to_string().contains("8 shards"), "{err}");
}

#[tokio::test]
async fn an_unreachable_worker_is_unavailable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = CloudflareStore::connect(&format!("cloudflare+http://:s@127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.kind(), "unavailable");
}
