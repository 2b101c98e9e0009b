//! [`Signers`]: the secrets a message is signed with, by the account that owns it.
//!
//! Each account has its own Standard Webhooks secret (and, for a day after a rotation, the one
//! it replaced). A message is signed with every secret its owner has at the time of the
//! attempt, current first, as space-separated signatures in one `webhook-signature` header,
//! which Standard Webhooks receivers accept when any one verifies: a receiver that still has
//! the old secret keeps verifying during the grace period. Predictions of an owner that is no
//! account (the admin token's) are signed with the server's secret.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use augur_core::{AccountId, Accounts};

use crate::secret::WebhookSecret;

/// Where the secrets a message is signed with come from.
#[async_trait]
pub trait Signers: Send + Sync + fmt::Debug {
    /// The secrets `owner`'s messages are signed with now, current first (never empty), or
    /// why they cannot be had now (the attempt is then retried later, never sent unsigned).
    async fn secrets_for(&self, owner: &AccountId) -> Result<Vec<WebhookSecret>, String>;
}

/// One secret for every message.
#[async_trait]
impl Signers for WebhookSecret {
    async fn secrets_for(&self, _owner: &AccountId) -> Result<Vec<WebhookSecret>, String> {
        Ok(vec![self.clone()])
    }
}

impl From<WebhookSecret> for Arc<dyn Signers> {
    fn from(secret: WebhookSecret) -> Self {
        Arc::new(secret)
    }
}

/// Each account's own secrets; the server's for owners that are no account.
#[derive(Debug)]
pub struct AccountSigners {
    accounts: Accounts,
    server: WebhookSecret,
}

impl AccountSigners {
    /// Signers that read accounts' secrets from `accounts` (cached there for a few seconds)
    /// and use `server` for owners that are no account.
    pub fn new(accounts: Accounts, server: WebhookSecret) -> Self {
        Self { accounts, server }
    }
}

#[async_trait]
impl Signers for AccountSigners {
    async fn secrets_for(&self, owner: &AccountId) -> Result<Vec<WebhookSecret>, String> {
        let secrets = self
            .accounts
            .signing_secrets(owner)
            .await
            .map_err(|e| format!("cannot read the account's signing secrets: {e}"))?;
        let Some(secrets) = secrets else {
            return Ok(vec![self.server.clone()]);
        };
        let parsed: Vec<_> = secrets
            .iter()
            .filter_map(|s| match WebhookSecret::parse(s.expose()) {
                Ok(secret) => Some(secret),
                Err(e) => {
                    // The error never repeats the secret.
                    tracing::error!(%owner, error = %e, "an account's webhook secret is unusable");
                    None
                }
            })
            .collect();
        if parsed.is_empty() {
            Err(format!("account {owner} has no usable webhook secret"))
        } else {
            Ok(parsed)
        }
    }
}

/// The `webhook-signature` header: one `v1,<base64>` signature per secret, space separated.
pub fn signature_header(
    secrets: &[WebhookSecret],
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(msg_id, timestamp_secs, body))
        .collect::<Vec<_>>()
        .join(" ")
}
