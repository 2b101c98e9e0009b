//! [`WebhookSecret`]: the Standard Webhooks signing secret, and the signatures made with it.
//!
//! A secret is `whsec_` followed by the standard base64 of 24 to 64 random bytes; those bytes
//! (not the text) are the HMAC-SHA256 key. A signature is `v1,` followed by the base64 of
//! `HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")`, computed over the exact bytes
//! that are sent. This module owns the format; when to sign and what to send is
//! [`crate::Dispatcher`]'s business.

use std::fmt;

use augur_core::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of every secret.
const PREFIX: &str = "whsec_";

/// The fewest key bytes a secret may have (the Standard Webhooks minimum).
pub const MIN_KEY_BYTES: usize = 24;

/// The most key bytes a secret may have (the Standard Webhooks maximum).
pub const MAX_KEY_BYTES: usize = 64;

/// How many random bytes [`WebhookSecret::generate`] uses.
const GENERATED_KEY_BYTES: usize = 32;

/// Standard base64 that accepts the key with or without its `=` padding, as the
/// `standardwebhooks` libraries do.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a piece of text is not a webhook secret. The message never repeats the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("webhook secret must start with \"whsec_\"")]
    MissingPrefix,
    /// The part after `whsec_` is not standard base64.
    #[error("webhook secret must be \"whsec_\" followed by standard base64")]
    NotBase64,
    /// The key is too short or too long.
    #[error("webhook secret key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, found {0} bytes")]
    BadLength(usize),
    /// Neither a Standard Webhooks secret nor a payment provider's.
    #[error(
        "payment webhook secret must be a Standard Webhooks secret (\"whsec_\" followed by \
         standard base64) or Polar's secret as its dashboard shows it (\"polar_whs_…\")"
    )]
    UnknownProviderForm,
}

/// The prefix of the secrets Polar's dashboard shows.
const POLAR_PREFIX: &str = "polar_whs_";

/// A Standard Webhooks signing secret (`whsec_<base64 key>`).
///
/// `Debug` prints `WebhookSecret(<redacted>)`; the text leaves the type only through
/// [`WebhookSecret::as_str`], which is for showing the secret to its owner.
#[derive(Clone)]
pub struct WebhookSecret {
    /// The whole `whsec_…` text, as parsed or generated.
    text: Secret,
    /// The decoded key.
    key: Vec<u8>,
}

impl WebhookSecret {
    /// A new secret of 32 random bytes from the operating system's generator.
    pub fn generate() -> Self {
        let key: [u8; GENERATED_KEY_BYTES] = rand::random();
        let text = format!("{PREFIX}{}", general_purpose::STANDARD.encode(key));
        Self {
            text: Secret::new(text),
            key: key.to_vec(),
        }
    }

    /// Parses `whsec_<base64>` (surrounding whitespace is ignored, `=` padding is optional).
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let encoded = text
            .strip_prefix(PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = LENIENT
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretError::BadLength(key.len()));
        }
        Ok(Self {
            text: Secret::new(text),
            key,
        })
    }

    /// Parses a payment provider's webhook secret: a Standard Webhooks secret (`whsec_…`, see
    /// [`WebhookSecret::parse`]), or Polar's secret as its dashboard shows it
    /// (`polar_whs_…`). Polar signs with the text's own bytes as the key (its SDKs base64-encode
    /// the text before handing it to a Standard Webhooks library), so that text is the key
    /// here too, and the operator pastes the secret unchanged.
    pub fn parse_provider(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        if text.starts_with(PREFIX) {
            return Self::parse(text);
        }
        if !text.starts_with(POLAR_PREFIX) {
            return Err(SecretError::UnknownProviderForm);
        }
        if text.len() < MIN_KEY_BYTES {
            return Err(SecretError::BadLength(text.len()));
        }
        Ok(Self {
            text: Secret::new(text),
            key: text.as_bytes().to_vec(),
        })
    }

    /// The secret as text (`whsec_…`), to show to its owner. Never log it.
    pub fn as_str(&self) -> &str {
        self.text.expose()
    }

    /// The `webhook-signature` header value for message `msg_id` sent at `timestamp_secs`
    /// (Unix seconds, the `webhook-timestamp` header) with `body`: `v1,<base64 HMAC-SHA256>`.
    pub fn sign(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        let tag = self
            .mac(msg_id, timestamp_secs, body)
            .finalize()
            .into_bytes();
        format!("v1,{}", general_purpose::STANDARD.encode(tag))
    }

    /// Whether `signature_header` (one or more space-separated `v1,<base64>` signatures, as
    /// in the `webhook-signature` header) holds a valid signature of the message. The
    /// comparison takes the same time wherever the signatures differ. Checking that the
    /// timestamp is recent is the caller's business.
    pub fn verify(
        &self,
        msg_id: &str,
        timestamp_secs: i64,
        body: &[u8],
        signature_header: &str,
    ) -> bool {
        signature_header
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| general_purpose::STANDARD.decode(s).ok())
            .any(|tag| {
                self.mac(msg_id, timestamp_secs, body)
                    .verify_slice(&tag)
                    .is_ok()
            })
    }

    fn mac(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("hmac takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl std::str::FromStr for WebhookSecret {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks reference libraries
    /// (`standard-webhooks/libraries/rust/src/lib.rs`, `test_sign`).
    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            secret.sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    /// The vector that `standardwebhooks` 1.1.0 and Replicate's Python and JS clients all
    /// accept (`shared/reference/cog-replicate.md`, section 4).
    #[test]
    fn signs_the_replicate_client_test_vector() {
        let secret =
            WebhookSecret::parse("whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
        let body = br#"{"id":"p1","status":"succeeded","output":"x"}"#;
        let signature = secret.sign("msg_test_1", 1700000000, body);
        assert_eq!(signature, "v1,xaXPp7gfDYg4eQx4LDIL0umGr91ymNRHC5yDkTjZm7E=");
        assert!(secret.verify("msg_test_1", 1700000000, body, &signature));
    }

    #[test]
    fn polar_dashboard_secrets_sign_with_their_text_as_the_key() {
        // Polar's SDK base64-encodes the dashboard text and hands it to Standard Webhooks: the
        // same key as a `whsec_` secret of that base64.
        let text = "polar_whs_Hq3b7uLqY0hX2WdJ9vKc5mTnR8sAeZpF1oGiBy4wDxE";
        let polar = WebhookSecret::parse_provider(text).unwrap();
        let standard =
            WebhookSecret::parse(&format!("whsec_{}", general_purpose::STANDARD.encode(text)))
                .unwrap();
        let signature = standard.sign("msg_1", 1700000000, b"{}");
        assert!(polar.verify("msg_1", 1700000000, b"{}", &signature));
        assert_eq!(polar.sign("msg_1", 1700000000, b"{}"), signature);
        // A `whsec_` secret keeps its meaning; other forms are refused without echoing them.
        let whsec = WebhookSecret::generate();
        let parsed = WebhookSecret::parse_provider(whsec.as_str()).unwrap();
        assert_eq!(parsed.sign("m", 1, b"x"), whsec.sign("m", 1, b"x"));
        let err =
            WebhookSecret::parse_provider("sk_live_hunter2hunter2hunter2hunter2").unwrap_err();
        assert_eq!(err, SecretError::UnknownProviderForm);
        assert!(!err.to_string().contains("hunter2"));
        assert_eq!(
            WebhookSecret::parse_provider("polar_whs_short").unwrap_err(),
            SecretError::BadLength(15)
        );
    }

    #[test]
    fn verify_accepts_any_of_several_signatures_and_nothing_else() {
        let secret = WebhookSecret::generate();
        let good = secret.sign("msg_1", 1700000000, b"{}");
        let other = WebhookSecret::generate().sign("msg_1", 1700000000, b"{}");
        assert!(secret.verify("msg_1", 1700000000, b"{}", &format!("{other} {good}")));
        assert!(!secret.verify("msg_1", 1700000000, b"{}", &other));
        assert!(!secret.verify("msg_2", 1700000000, b"{}", &good));
        assert!(!secret.verify("msg_1", 1700000001, b"{}", &good));
        assert!(!secret.verify("msg_1", 1700000000, b"{ }", &good));
        assert!(!secret.verify("msg_1", 1700000000, b"{}", &good.replacen("v1", "v2", 1)));
        assert!(!secret.verify("msg_1", 1700000000, b"{}", "v1,not base64!"));
    }

    #[test]
    fn generated_secrets_parse_back_and_differ() {
        let a = WebhookSecret::generate();
        let b = WebhookSecret::generate();
        assert!(a.as_str().starts_with("whsec_"));
        assert_ne!(a.as_str(), b.as_str());
        let parsed = WebhookSecret::parse(a.as_str()).unwrap();
        assert_eq!(parsed.key, a.key);
        assert_eq!(parsed.key.len(), GENERATED_KEY_BYTES);
        // Replicate's Python client splits the secret on '_' and wants exactly two parts.
        assert_eq!(a.as_str().split('_').count(), 2);
    }

    #[test]
    fn parse_tolerates_missing_padding_and_whitespace() {
        let padded = WebhookSecret::parse("whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
        let bare = WebhookSecret::parse(" whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY\n");
        assert_eq!(padded.unwrap().key, bare.unwrap().key);
    }

    #[test]
    fn parse_explains_what_is_wrong() {
        let error = |text: &str| WebhookSecret::parse(text).unwrap_err();
        assert_eq!(
            error("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
            SecretError::MissingPrefix
        );
        assert_eq!(error("whsec_not*base64"), SecretError::NotBase64);
        assert_eq!(error("whsec_c2hvcnQ="), SecretError::BadLength(5));
        let long = general_purpose::STANDARD.encode([7u8; 65]);
        assert_eq!(error(&format!("whsec_{long}")), SecretError::BadLength(65));
        let message = WebhookSecret::parse("whsec_c2hvcnQ=")
            .unwrap_err()
            .to_string();
        assert!(!message.contains("c2hvcnQ"), "{message}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = WebhookSecret::generate();
        let shown = format!("{secret:?} {:?}", Some(&secret));
        assert!(!shown.contains(&secret.as_str()[6..]), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
