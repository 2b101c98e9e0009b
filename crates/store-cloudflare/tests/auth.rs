//! Authentication against the Worker `AUGUR_TEST_CLOUDFLARE_URL` names: a wrong secret fails
//! at connect with a clear error that is not retried; a captured request is good once (its
//! replay is refused); a stale timestamp is refused. Requests here are signed by hand (an
//! independent implementation of PROTOCOL.md's signature) and sent with reqwest directly.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use augur_store_cloudflare::{CloudflareOptions, CloudflareStore};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The secret of a test URL (`cloudflare+http://:SECRET@…` or `?secret=SECRET`).
fn secret_of(url: &str) -> String {
    if let Some((_, query)) = url.split_once('?')
        && let Some(secret) = query.split('&').find_map(|p| p.strip_prefix("secret="))
    {
        return secret.to_owned();
    }
    let rest = url.split_once("://").expect("a URL").1;
    let userinfo = rest.rsplit_once('@').expect("a secret in the URL").0;
    userinfo
        .split_once(':')
        .map_or(userinfo, |(_, p)| p)
        .to_owned()
}

/// A test URL with its secret replaced.
fn with_secret(url: &str, secret: &str) -> String {
    let real = secret_of(url);
    url.replacen(&format!(":{real}@"), &format!(":{secret}@"), 1)
        .replacen(&format!("secret={real}"), &format!("secret={secret}"), 1)
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// One request signed by hand: the method's URL, body and headers, to send as often as wanted.
struct Captured {
    url: String,
    body: String,
    headers: Vec<(&'static str, String)>,
}

fn capture(url: &str, method: &str, body: serde_json::Value, timestamp: u128) -> Captured {
    let options = CloudflareOptions::from_url(url).unwrap();
    let secret = secret_of(url);
    let path = format!("{}/ns/{}/{method}", options.base_path, options.namespace);
    let body = body.to_string();
    let nonce = hex(&rand::random::<[u8; 16]>());
    let text = format!(
        "augur-store-1\nPOST\n{path}\n{timestamp}\n{nonce}\n{}",
        hex(&Sha256::digest(body.as_bytes()))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    Captured {
        url: format!("{}/ns/{}/{method}", options.base, options.namespace),
        body,
        headers: vec![
            ("content-type", "application/json".into()),
            ("x-augur-timestamp", timestamp.to_string()),
            ("x-augur-nonce", nonce),
            ("x-augur-signature", hex(&mac.finalize().into_bytes())),
        ],
    }
}

async fn send(http: &reqwest::Client, c: &Captured) -> (u16, serde_json::Value) {
    let mut request = http.post(&c.url).body(c.body.clone());
    for (name, value) in &c.headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("the Worker answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[tokio::test]
async fn a_wrong_secret_fails_at_connect_and_is_not_retried() {
    let Some(url) = common::fresh_url() else {
        return;
    };
    let err = CloudflareStore::connect(&with_secret(&url, "not-the-secret"))
        .await
        .expect_err("a wrong secret must not connect");
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(err.kind(), "other", "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains("401") && shown.contains("unauthorized"),
        "{shown}"
    );
    assert!(!shown.contains("not-the-secret"), "{shown}");
    // The right one works.
    CloudflareStore::connect(&url).await.unwrap();
}

#[tokio::test]
async fn a_captured_request_is_refused_when_replayed() {
    let Some(url) = common::fresh_url() else {
        return;
    };
    let http = reqwest::Client::new();
    let key = json!({"kind": "prediction", "id": "replayed", "partition": 3});
    // A single-shard method and a fan-out method: both record their nonce.
    for (method, body) in [("get", json!({"key": key})), ("counters", json!({}))] {
        let captured = capture(&url, method, body, now_ms());
        let (first, answer) = send(&http, &captured).await;
        assert_eq!(first, 200, "{method}: {answer}");
        let (second, answer) = send(&http, &captured).await;
        assert_eq!(second, 401, "{method} replayed: {answer}");
        assert_eq!(answer["error"], "unauthorized", "{method}: {answer}");
    }
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused() {
    let Some(url) = common::fresh_url() else {
        return;
    };
    let http = reqwest::Client::new();
    for timestamp in [now_ms() - 301_000, now_ms() + 301_000] {
        let captured = capture(&url, "counters", json!({}), timestamp);
        let (status, answer) = send(&http, &captured).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"], "unauthorized", "{answer}");
    }
    // A wrong signature too.
    let mut captured = capture(&url, "counters", json!({}), now_ms());
    captured.body = "{ }".into();
    let (status, answer) = send(&http, &captured).await;
    assert_eq!(status, 401, "{answer}");
}
