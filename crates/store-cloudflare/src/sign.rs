//! Request signatures (PROTOCOL.md, "Transport and authentication"): an HMAC-SHA256 with the
//! shared secret over the method, path, timestamp, a fresh random nonce and the body's hash.
//! The Worker refuses stale timestamps and replayed nonces, so a captured request is good once.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::Secret;

/// The first line of every signed text: the protocol's version of signing.
const CONTEXT: &str = "augur-store-1";

/// The headers that authenticate one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Signed {
    /// `x-augur-timestamp`: Unix milliseconds.
    pub(crate) timestamp: String,
    /// `x-augur-nonce`: 32 lowercase hex characters.
    pub(crate) nonce: String,
    /// `x-augur-signature`: lowercase hex.
    pub(crate) signature: String,
}

/// Signs a `POST` of `body` to `path` now, with a fresh nonce.
pub(crate) fn sign_now(secret: &Secret, path: &str, body: &[u8]) -> Signed {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    sign(secret, path, &millis.to_string(), &fresh_nonce(), body)
}

/// Signs a `POST` of `body` to `path` at `timestamp` (Unix milliseconds) with `nonce`.
pub(crate) fn sign(
    secret: &Secret,
    path: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Signed {
    let text = format!(
        "{CONTEXT}\nPOST\n{path}\n{timestamp}\n{nonce}\n{}",
        hex(&Sha256::digest(body))
    );
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC accepts any key");
    mac.update(text.as_bytes());
    Signed {
        timestamp: timestamp.to_owned(),
        nonce: nonce.to_owned(),
        signature: hex(&mac.finalize().into_bytes()),
    }
}

/// 128 random bits as 32 lowercase hex characters.
fn fresh_nonce() -> String {
    hex(&rand::random::<[u8; 16]>())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_protocol_test_vector() {
        let signed = sign(
            &Secret::new("s3cret"),
            "/ns/augur/hello",
            "1700000000000",
            "00112233445566778899aabbccddeeff",
            b"{}",
        );
        assert_eq!(
            signed.signature,
            "ad7a030968a02607d174aab90425ce43bd6d0918cc68d72802fae34a5e7c19c6"
        );
    }

    #[test]
    fn every_request_gets_a_new_nonce() {
        let secret = Secret::new("s");
        let a = sign_now(&secret, "/ns/augur/hello", b"{}");
        let b = sign_now(&secret, "/ns/augur/hello", b"{}");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.signature, b.signature);
        assert_eq!(a.nonce.len(), 32);
        assert!(
            a.nonce
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(a.timestamp.parse::<u64>().unwrap() > 1_700_000_000_000);
    }
}
