//! Request headers the API parses: `Authorization`, `Prefer` (`wait`, `wait=N`),
//! `Idempotency-Key` and `Content-Type`, each any bytes, on a valid create.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, arbitrary::Arbitrary)]
struct Headers {
    authorization: Option<Vec<u8>>,
    prefer: Option<Vec<u8>>,
    idempotency_key: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    /// Sends the same create twice (so an idempotency key is replayed).
    twice: bool,
}

fn create(h: &Headers) -> Option<Request<Body>> {
    let mut builder = Request::builder()
        .method("POST")
        .uri("/v1/models/augur/echo/predictions");
    let auth = h
        .authorization
        .clone()
        .unwrap_or_else(|| format!("Bearer {}", augur_fuzz::ADMIN_TOKEN).into_bytes());
    builder = builder.header("authorization", auth);
    builder = builder.header(
        "content-type",
        h.content_type.as_deref().unwrap_or(b"application/json"),
    );
    if let Some(v) = &h.prefer {
        builder = builder.header("prefer", v.as_slice());
    }
    if let Some(v) = &h.idempotency_key {
        builder = builder.header("idempotency-key", v.as_slice());
    }
    builder
        .body(Body::from(r#"{"input": {"text": "hi"}}"#))
        .ok()
}

fuzz_target!(|h: Headers| {
    let Some(request) = create(&h) else {
        return; // bytes the http crate refuses as a header value never reach the server
    };
    let setup = if h.twice {
        create(&h).into_iter().collect()
    } else {
        Vec::new()
    };
    augur_fuzz::Api::shared().send(setup, request);
});
