//! `bare-axum`: the reference for `bench/status-reads.sh`, a bare axum 0.8 server answering
//! `GET /v1/predictions/{id}` with a fixed JSON body held in memory.
//!
//! ```text
//! bare-axum <listen address> <response.json>    # e.g. bare-axum 127.0.0.1:18081 get.json
//! ```
//!
//! The listen address may also come from `BARE_LISTEN`. The body is the file's bytes, served
//! as-is (checked once to be JSON), so the reference returns exactly what Augur returned.

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::get;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (listen, path) = match (args.next(), args.next()) {
        (Some(path), None) => (std::env::var("BARE_LISTEN").unwrap_or_default(), path),
        (Some(listen), Some(path)) => (listen, path),
        _ => {
            eprintln!("usage: bare-axum <listen address> <response.json>");
            std::process::exit(2)
        }
    };
    let body = Bytes::from(std::fs::read(&path).expect("read the response file"));
    serde_json::from_slice::<serde_json::Value>(&body).expect("the response file is JSON");

    let app = Router::new().route(
        "/v1/predictions/{id}",
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("bind the listen address");
    println!(
        "bare-axum listening on http://{}",
        listener.local_addr().expect("local address")
    );
    axum::serve(listener, app).await.expect("serve");
}
