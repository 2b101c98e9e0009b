//! [`CallbackKey`]: the per-prediction tokens in the callback URLs Augur gives model servers
//! (Cog, Replicate-compatible upstreams), so that only that prediction's server can report on
//! it.
//!
//! A token is an HMAC of the prediction id under a key derived from the admin token with a
//! label per kind of server: nothing is stored, every node sharing the admin token accepts
//! it, it survives restarts, and a Cog token is no Replicate token.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use augur_core::{ModelName, PredictionId, Secret};

type HmacSha256 = Hmac<Sha256>;

/// A key for one kind of callback, derived from the admin token.
pub(crate) struct CallbackKey([u8; 32]);

impl fmt::Debug for CallbackKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallbackKey(<redacted>)")
    }
}

impl CallbackKey {
    /// The key of `label` (e.g. `b"augur cog callbacks v1"`) under `root`, the admin token.
    pub(crate) fn derive(root: &Secret, label: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(root.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(label);
        Self(mac.finalize().into_bytes().into())
    }

    /// The MAC of `parts`, each followed by a NUL so that no two lists of parts collide.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.keyed(parts).finalize().into_bytes().into()
    }

    fn keyed(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes 32-byte keys");
        for part in parts {
            mac.update(part);
            mac.update(b"\0");
        }
        mac
    }

    /// The webhook token of `id`, as hex (secret: never log it).
    pub(crate) fn token(&self, id: &PredictionId) -> String {
        hex(&self.mac(&[b"webhook", id.as_str().as_bytes()]))
    }

    /// Whether `token` is the webhook token of `id` (compared in constant time).
    pub(crate) fn matches(&self, id: &PredictionId, token: &str) -> bool {
        self.verifies(&[b"webhook", id.as_str().as_bytes()], token)
    }

    /// The upload token of `model`: what its model server was given in its `--upload-url`,
    /// and nobody else (secret: never log it).
    pub(crate) fn upload_token(&self, model: &ModelName) -> String {
        hex(&self.mac(&[b"upload", model.as_str().as_bytes()]))
    }

    /// Whether `token` is the upload token of `model` (compared in constant time).
    pub(crate) fn upload_matches(&self, model: &ModelName, token: &str) -> bool {
        self.verifies(&[b"upload", model.as_str().as_bytes()], token)
    }

    fn verifies(&self, parts: &[&[u8]], token: &str) -> bool {
        let Some(bytes) = unhex(token) else {
            return false;
        };
        self.keyed(parts).verify_slice(&bytes).is_ok()
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_belong_to_one_prediction_and_one_label() {
        let root = Secret::new("admin-token-0123456789");
        let (a, b) = (PredictionId::generate(), PredictionId::generate());
        let cog = CallbackKey::derive(&root, b"cog");
        let other = CallbackKey::derive(&root, b"replicate");
        let token = cog.token(&a);
        assert!(cog.matches(&a, &token));
        assert!(!cog.matches(&b, &token));
        assert!(!other.matches(&a, &token));
        assert!(!cog.matches(&a, "zz"));
        assert!(!cog.matches(&a, &token[..10]));
        assert_eq!(unhex("0aff"), Some(vec![10, 255]));
        assert_eq!(unhex("0g"), None);
        assert!(!format!("{cog:?}").contains(&hex(&cog.0)));
    }
}
