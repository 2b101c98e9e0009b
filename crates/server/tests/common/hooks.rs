//! A webhook receiver for tests: [`listen_on`] serves `POST /hook` on a loopback address and
//! keeps every delivery (its `webhook-*` headers and raw body) in an [`Inbox`].

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
