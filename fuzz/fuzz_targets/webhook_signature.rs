//! Webhook signatures (Standard Webhooks): parsing secrets, verifying any signature header
//! against any message, that a signature verifies only its own message, and the payment
//! webhook route with any headers and with validly signed bodies of any content.
#![no_main]

use augur_webhooks::WebhookSecret;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    secret: String,
    msg_id: String,
    timestamp: i64,
    body: Vec<u8>,
    header: String,
    signed: bool,
    raw_headers: Vec<(u8, Vec<u8>)>,
}

const HEADERS: &[&str] = &["webhook-id", "webhook-timestamp", "webhook-signature"];

fuzz_target!(|input: Input| {
    for parsed in [
        WebhookSecret::parse(&input.secret),
        WebhookSecret::parse_provider(&input.secret),
    ] {
        if let Ok(secret) = parsed {
            let _ = secret.verify(&input.msg_id, input.timestamp, &input.body, &input.header);
            let signature = secret.sign(&input.msg_id, input.timestamp, &input.body);
            assert!(secret.verify(&input.msg_id, input.timestamp, &input.body, &signature));
            let mut other = input.body.clone();
            other.push(b'!');
            assert!(!secret.verify(&input.msg_id, input.timestamp, &other, &signature));
        }
    }

    let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
    if input.signed {
        let (timestamp, signature) = augur_fuzz::payment_signature(&input.msg_id, &input.body);
        headers.push(("webhook-id", input.msg_id.clone().into_bytes()));
        headers.push(("webhook-timestamp", timestamp.into_bytes()));
        headers.push(("webhook-signature", signature.into_bytes()));
    } else {
        for (i, v) in input.raw_headers.iter().take(4) {
            headers.push((HEADERS[usize::from(*i) % HEADERS.len()], v.clone()));
        }
    }
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    let Some(request) = augur_fuzz::request("POST", "/v1/payments/webhook", &headers, input.body)
    else {
        return; // a header value the http crate refuses never reaches the server
    };
    augur_fuzz::Api::shared().send(Vec::new(), request);
});
