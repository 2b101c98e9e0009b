//! A webhook receiver for tests: [`listen_on`] serves `POST /hook` on a loopback address and
//! keeps every delivery (its `webhook-*` headers and raw body) in an [`Inbox`]; [`verify`]
//! checks deliveries with the official verifiers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

pub type Inbox = Arc<Mutex<Vec<Received>>>;

pub async fn receive(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let headers = headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("webhook-") || k.as_str() == "content-type")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    inbox.lock().unwrap().push(Received {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    StatusCode::NO_CONTENT
}

/// A free loopback port: nothing listens there until [`listen_on`].
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub async fn listen_on(addr: SocketAddr, inbox: Inbox) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(inbox);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

/// Verifies deliveries with the PyPI `standardwebhooks` library and the Replicate Python
/// client (`tests/python/verify_webhooks.py`, which also checks that a tampered body fails),
/// with the signing secret `secret`; panics with their output if any fails.
pub fn verify(python: &str, dir: &std::path::Path, received: &[Received], secret: &str) {
    let records = dir.join(format!(
        "records-{}.json",
        augur_core::PredictionId::generate()
    ));
    let as_json: Vec<serde_json::Value> = received
        .iter()
        .map(|r| serde_json::json!({"headers": r.headers, "body": r.body}))
        .collect();
    std::fs::write(&records, serde_json::to_vec(&as_json).unwrap()).unwrap();
    let output = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/verify_webhooks.py"
        ))
        .arg(&records)
        .arg(secret)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "verification failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
