//! Any request to any route: a method, a path built from the routes' shapes with fuzzed
//! segments, a query, a few headers and a body, with or without the admin token. Covers the
//! routes the focused targets do not (batches, workflows, accounts, files, callbacks).
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "QUERY",
];

/// Route shapes; `*` is replaced by a fuzzed segment.
const PATHS: &[&str] = &[
    "/v1/predictions",
    "/v1/predictions/*",
    "/v1/predictions/*/cancel",
    "/v1/predictions/*/stream",
    "/v1/predictions/*/webhooks",
    "/v1/predictions/*/webhooks/*/redeliver",
    "/v1/models",
    "/v1/models/*/*",
    "/v1/models/*/*/predictions",
    "/v1/models/*/*/versions",
    "/v1/models/*/*/versions/*",
    "/api/predictions/*",
    "/v1/files",
    "/v1/files/*",
    "/v1/files/*/download",
    "/files/*",
    "/v1/events",
    "/v1/webhooks/default/secret",
    "/v1/webhooks/default/secret/rotate",
    "/v1/account",
    "/v1/account/tokens",
    "/v1/account/tokens/*",
    "/v1/account/credits",
    "/v1/account/ledger",
    "/v1/accounts",
    "/v1/accounts/*",
    "/v1/accounts/*/tokens",
    "/v1/accounts/*/credits",
    "/v1/accounts/*/ledger",
    "/v1/payments/webhook",
    "/v1/batches",
    "/v1/batches/*",
    "/v1/batches/*/predictions",
    "/v1/batches/*/cancel",
    "/v1/batches/*/stream",
    "/v1/workflows",
    "/v1/workflows/*/*",
    "/v1/workflows/*/*/runs",
    "/v1/runs",
    "/v1/runs/*",
    "/v1/runs/*/cancel",
    "/v1/runs/*/reconcile",
    "/v1/runs/*/stream",
    "/internal/cog/predictions/*/webhook/*",
    "/internal/cog/uploads/*/*/*/*",
    "/internal/replicate/predictions/*/webhook/*",
    "/healthz",
    "/readyz",
    "/openapi.json",
];

const HEADERS: &[&str] = &[
    "content-type",
    "prefer",
    "idempotency-key",
    "last-event-id",
    "accept",
    "x-prediction-id",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "range",
];

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    method: u8,
    path: u8,
    segments: Vec<String>,
    query: String,
    admin: bool,
    headers: Vec<(u8, Vec<u8>)>,
    body: Vec<u8>,
}

fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let method = METHODS[usize::from(input.method) % METHODS.len()];
    let shape = PATHS[usize::from(input.path) % PATHS.len()];
    let mut segments = input.segments.iter();
    let mut path = String::new();
    for (i, part) in shape.split('*').enumerate() {
        if i > 0 {
            path.push_str(&encode(segments.next().map_or("x", String::as_str)));
        }
        path.push_str(part);
    }
    if !input.query.is_empty() {
        path.push('?');
        path.push_str(&input.query);
    }
    let mut builder = Request::builder().method(method).uri(path.as_str());
    if input.admin {
        builder = builder.header(
            "authorization",
            format!("Bearer {}", augur_fuzz::ADMIN_TOKEN),
        );
    }
    for (name, value) in input.headers.iter().take(8) {
        builder = builder.header(
            HEADERS[usize::from(*name) % HEADERS.len()],
            value.as_slice(),
        );
    }
    let Ok(request) = builder.body(Body::from(input.body)) else {
        return; // the http crate refuses it: it never reaches the server
    };
    augur_fuzz::Api::shared().send(Vec::new(), request);
});
