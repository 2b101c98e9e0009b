//! Identifier newtypes: predictions, accounts, workers, models and lease tokens.
//!
//! Every identifier that crosses a boundary is a newtype, never a bare `String`, so that a
//! prediction id cannot be passed where an account id is expected. Constructors validate the
//! text once; everything downstream may assume it is well formed (safe to put in a URL path, a
//! Redis key or a file name).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a piece of text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {text:?}: {reason}")]
pub struct InvalidId {
    /// What was being parsed (`prediction id`, `model name`, ...).
    pub kind: &'static str,
    /// The offending text, truncated to 80 characters.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl InvalidId {
    fn new(kind: &'static str, text: &str, reason: &'static str) -> Self {
        Self {
            kind,
            text: text.chars().take(80).collect(),
            reason,
        }
    }
}

/// Characters allowed in ids: lowercase letters, digits, `-` and `_`.
fn is_id_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

fn validate_token(kind: &'static str, text: &str, max: usize) -> Result<(), InvalidId> {
    if text.is_empty() {
        return Err(InvalidId::new(kind, text, "must not be empty"));
    }
    if text.len() > max {
        return Err(InvalidId::new(kind, text, "is too long"));
    }
    if !text.chars().all(is_id_char) {
        return Err(InvalidId::new(
            kind,
            text,
            "may only contain lowercase letters, digits, '-' and '_'",
        ));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses and validates an identifier.
            pub fn parse(text: &str) -> Result<Self, InvalidId> {
                validate_token($kind, text, $max)?;
                Ok(Self(Arc::from(text)))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A prediction's id: 1 to 64 characters of `[a-z0-9_-]`. Generated ids look like Replicate's
    /// (26 lowercase base32 characters) and sort by creation time; clients may supply their own.
    PredictionId,
    "prediction id",
    64
);

string_id!(
    /// The account that owns a prediction. Until accounts exist every prediction belongs to
    /// [`AccountId::admin`].
    AccountId,
    "account id",
    64
);

string_id!(
    /// A worker process (or task pool) that holds job leases.
    WorkerId,
    "worker id",
    128
);

impl PredictionId {
    /// A new, unguessable, time-ordered id (a lowercase ULID: 48 bits of milliseconds and 80
    /// random bits, 26 characters).
    pub fn generate() -> Self {
        Self(Arc::from(
            ulid::Ulid::new().to_string().to_ascii_lowercase(),
        ))
    }

    /// Like [`PredictionId::generate`], in `owner`'s partition: the last three characters are
    /// chosen so that the id places the prediction with the rest of its owner's records (see
    /// [`crate::store::Partition`]), so a sharded store finds it by id alone. 65 random bits
    /// remain.
    pub fn generate_for(owner: &AccountId) -> Self {
        let mut id = ulid::Ulid::new().to_string().to_ascii_lowercase();
        crate::store::place_in(&mut id, crate::store::Partition::of_account(owner));
        Self(Arc::from(id))
    }
}

impl PredictionId {
    /// The time in a ULID-shaped id (generated, derived, or a client's ULID): its first ten
    /// characters, read as Crockford base32 milliseconds. `None` for any other id. Ids made
    /// here carry their creation time, so an id whose time is long past is never made again:
    /// what lets retention delete a tombstone without its id being reused (see
    /// [`crate::service::Predictions::prune_tombstones`]).
    pub fn ulid_time(&self) -> Option<crate::Timestamp> {
        const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
        let id = self.0.as_bytes();
        if id.len() != 26 || id[0] > b'7' {
            return None;
        }
        let mut ms: i64 = 0;
        for c in &id[..10] {
            let digit = ALPHABET.iter().position(|a| a == c)?;
            ms = ms * 32 + digit as i64;
        }
        Some(crate::Timestamp::from_micros(ms.checked_mul(1000)?))
    }

    /// An id derived from `base` (26 lowercase base32 characters, such as a ULID made from a
    /// digest), moved into `owner`'s partition the way [`PredictionId::generate_for`] does:
    /// the same `base` and owner always give the same id.
    pub fn derived_for(base: &str, owner: &AccountId) -> Self {
        let mut id = base.to_owned();
        crate::store::place_in(&mut id, crate::store::Partition::of_account(owner));
        Self(Arc::from(id))
    }
}

impl AccountId {
    /// The account of the admin token.
    pub fn admin() -> Self {
        Self(Arc::from("admin"))
    }
}

impl WorkerId {
    /// A new worker id, unique per process start.
    pub fn generate() -> Self {
        Self(Arc::from(format!(
            "worker-{}",
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        )))
    }
}

/// A model's name, `owner/name`, as in Replicate (`augur/demo-image`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName(Arc<str>);

impl ModelName {
    /// Parses `owner/name`; each part is 1 to 64 characters of `[a-z0-9_.-]`.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        const KIND: &str = "model name";
        let Some((owner, name)) = text.split_once('/') else {
            return Err(InvalidId::new(KIND, text, "must look like owner/name"));
        };
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 64
                && p.chars().all(|c| is_id_char(c) || c == '.')
                && !p.starts_with('.')
        };
        if !part_ok(owner) || !part_ok(name) {
            return Err(InvalidId::new(
                KIND,
                text,
                "owner and name may only contain lowercase letters, digits, '.', '-' and '_'",
            ));
        }
        Ok(Self(Arc::from(text)))
    }

    /// Builds a name from its two parts.
    pub fn from_parts(owner: &str, name: &str) -> Result<Self, InvalidId> {
        Self::parse(&format!("{owner}/{name}"))
    }

    /// The full `owner/name`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The owner part.
    pub fn owner(&self) -> &str {
        self.0.split_once('/').map_or("", |(o, _)| o)
    }

    /// The name part.
    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or("", |(_, n)| n)
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelName({:?})", &*self.0)
    }
}

impl FromStr for ModelName {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ModelName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ModelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Proof that a worker holds a job's lease. Stores generate it on claim; renewing, retrying or
/// releasing a job requires the token of the current lease, so a worker whose lease expired
/// and was taken over cannot touch the job any more.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct LeaseToken(pub u64);

impl LeaseToken {
    /// A fresh random, non-zero token.
    pub fn generate() -> Self {
        Self(rand::random::<u64>() | 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_prediction_ids_look_like_replicates_and_sort_by_time() {
        let a = PredictionId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = PredictionId::generate();
        assert_eq!(a.as_str().len(), 26);
        assert!(a.as_str().chars().all(is_id_char));
        assert!(a < b);
        assert_eq!(PredictionId::parse(a.as_str()).unwrap(), a);
    }

    #[test]
    fn ids_reject_unsafe_text() {
        for bad in ["", "A", "a/b", "a b", "ü", &"x".repeat(65)] {
            let err = PredictionId::parse(bad).unwrap_err();
            assert_eq!(err.kind, "prediction id");
        }
    }

    #[test]
    fn model_names_need_owner_and_name() {
        let m = ModelName::parse("augur/demo-image").unwrap();
        assert_eq!((m.owner(), m.name()), ("augur", "demo-image"));
        for bad in ["augur", "/x", "x/", "a/b/c", "A/b", "a/.b"] {
            assert!(ModelName::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(ModelName::parse("stability-ai/sdxl-1.0").is_ok());
    }

    #[test]
    fn ids_deserialize_with_validation() {
        let ok: PredictionId = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(ok.as_str(), "abc");
        assert!(serde_json::from_str::<PredictionId>("\"A B\"").is_err());
    }
}
