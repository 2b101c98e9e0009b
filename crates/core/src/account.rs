//! Accounts and API tokens as records: [`Account`] (who owns predictions and credits, with its
//! webhook signing secrets and limits) and [`Token`] (an API token's hash, never the token).
//!
//! A token reads `aug_<id><secret>`: the prefix lets secret scanners find leaked ones, the
//! 20-character id names the record (generated in its owner's partition, so a sharded store
//! finds it by id alone), and only a SHA-256 digest of the whole token is stored, compared in
//! constant time (digests are all the same length, so nothing leaks the token's).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::id::AccountId;
use crate::secret::Secret;
use crate::store::{self, Entity, Key, Kind, Partition, Record, body_record, decode_json};
use crate::time::Timestamp;

/// What every API token starts with.
pub const TOKEN_PREFIX: &str = "aug_";
/// Characters of a token's id.
pub const TOKEN_ID_LEN: usize = 20;
/// Characters of a token's secret part.
pub const TOKEN_SECRET_LEN: usize = 32;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn random_text(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Per-account limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Predictions that may be unsettled at once (created and not yet terminal).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::option"
    )]
    pub max_active: Option<u32>,
    /// Creates per minute, per node.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::option"
    )]
    pub creates_per_minute: Option<u32>,
}

/// A webhook secret that was rotated out and still signs beside the new one until `until`,
/// so that receivers of running predictions' webhooks can switch over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetiringSecret {
    /// The old secret.
    pub secret: Secret,
    /// When it stops signing.
    pub until: Timestamp,
}

/// An account: it owns predictions, tokens and a credit ledger. Its id is its username.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// The username (`[a-z0-9_-]`, at most 64 characters).
    pub id: AccountId,
    /// A display name.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// The Standard Webhooks secret (`whsec_…`) its predictions' webhooks are signed with.
    pub webhook_secret: Secret,
    /// The secret it replaced, still signing for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring_webhook_secret: Option<RetiringSecret>,
    /// Its limits.
    #[serde(default)]
    pub limits: Limits,
}

impl Account {
    /// A new account with a fresh webhook secret.
    pub fn new(id: AccountId, name: impl Into<String>, now: Timestamp) -> Self {
        Self {
            id,
            name: name.into(),
            created_at: now,
            webhook_secret: new_webhook_secret(),
            retiring_webhook_secret: None,
            limits: Limits::default(),
        }
    }

    /// The record key of account `id`.
    pub fn key_of(id: &AccountId) -> Key {
        Key::owned(Kind::Account, id.as_str(), id)
    }

    /// The secrets its webhooks are signed with at `now`: the current one, then the retiring
    /// one while it lasts.
    pub fn signing_secrets(&self, now: Timestamp) -> Vec<Secret> {
        let mut secrets = vec![self.webhook_secret.clone()];
        if let Some(old) = &self.retiring_webhook_secret
            && old.until > now
        {
            secrets.push(old.secret.clone());
        }
        secrets
    }
}

/// A fresh Standard Webhooks secret: `whsec_` and 32 random bytes in base64.
pub fn new_webhook_secret() -> Secret {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    Secret::new(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

impl Entity for Account {
    const KIND: Kind = Kind::Account;

    fn key(&self) -> Key {
        Self::key_of(&self.id)
    }

    fn owner(&self) -> &AccountId {
        &self.id
    }

    fn to_record(&self) -> store::Result<Record> {
        body_record(self.key(), &self.id, self.created_at, None, self)
    }

    fn from_record(record: &Record) -> store::Result<Self> {
        decode_json(&record.body)
    }
}

/// An API token as stored: its digest, never the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Its id (the 20 characters after the prefix), unique.
    pub id: String,
    /// The account it acts as.
    pub owner: AccountId,
    /// What its owner calls it.
    pub name: String,
    /// Hex SHA-256 of the whole token.
    pub digest: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last used (updated at most once a minute).
    #[serde(default)]
    pub last_used_at: Option<Timestamp>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .finish_non_exhaustive()
    }
}

/// The parts of a token's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenText<'a> {
    /// Its id.
    pub id: &'a str,
}

impl Token {
    /// A new token for `owner`: the record, and the token itself (shown once).
    pub fn generate(owner: &AccountId, name: impl Into<String>, now: Timestamp) -> (Token, Secret) {
        let mut id = random_text(TOKEN_ID_LEN);
        store::place_in(&mut id, Partition::of_account(owner));
        let text = format!("{TOKEN_PREFIX}{id}{}", random_text(TOKEN_SECRET_LEN));
        let token = Token {
            id,
            owner: owner.clone(),
            name: name.into(),
            digest: digest(&text),
            created_at: now,
            last_used_at: None,
        };
        (token, Secret::new(text))
    }

    /// The id in a token's text, if it has a token's shape.
    pub fn parse(text: &str) -> Option<TokenText<'_>> {
        let rest = text.strip_prefix(TOKEN_PREFIX)?;
        if rest.len() != TOKEN_ID_LEN + TOKEN_SECRET_LEN
            || !rest.bytes().all(|b| ALPHABET.contains(&b))
        {
            return None;
        }
        Some(TokenText {
            id: &rest[..TOKEN_ID_LEN],
        })
    }

    /// The record key of the token with this id.
    pub fn key_of(id: &str) -> Key {
        Key::new(Kind::Token, id)
    }

    /// True if `text` is this token, compared in constant time.
    pub fn verify(&self, text: &str) -> bool {
        digest(text).as_bytes().ct_eq(self.digest.as_bytes()).into()
    }
}

fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Entity for Token {
    const KIND: Kind = Kind::Token;

    fn key(&self) -> Key {
        Self::key_of(&self.id)
    }

    fn owner(&self) -> &AccountId {
        &self.owner
    }

    fn to_record(&self) -> store::Result<Record> {
        body_record(self.key(), &self.owner, self.created_at, None, self)
    }

    fn from_record(record: &Record) -> store::Result<Self> {
        decode_json(&record.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_a_prefix_live_with_their_owner_and_verify() {
        let owner = AccountId::parse("alice").unwrap();
        let (token, text) = Token::generate(&owner, "ci", Timestamp::now());
        let text = text.expose();
        assert!(text.starts_with("aug_") && text.len() == 4 + 20 + 32);
        assert_eq!(Token::parse(text).unwrap().id, token.id);
        assert_eq!(token.key().partition, Partition::of_account(&owner));
        assert!(token.verify(text));
        let mut wrong = text.to_owned();
        wrong.pop();
        wrong.push(if text.ends_with('a') { 'b' } else { 'a' });
        assert!(!token.verify(&wrong));
        assert!(Token::parse("aug_short").is_none());
        assert!(Token::parse(&text.to_uppercase()).is_none());
        assert!(!format!("{token:?}").contains(&token.digest));
    }

    #[test]
    fn a_retiring_secret_signs_until_it_expires() {
        let now = Timestamp::now();
        let mut account = Account::new(AccountId::parse("bob").unwrap(), "Bob", now);
        assert!(account.webhook_secret.expose().starts_with("whsec_"));
        assert_eq!(account.signing_secrets(now).len(), 1);
        account.retiring_webhook_secret = Some(RetiringSecret {
            secret: new_webhook_secret(),
            until: now.plus(std::time::Duration::from_secs(60)),
        });
        assert_eq!(account.signing_secrets(now).len(), 2);
        let later = now.plus(std::time::Duration::from_secs(61));
        assert_eq!(account.signing_secrets(later).len(), 1);
        assert!(!format!("{account:?}").contains("whsec_"));
    }
}
