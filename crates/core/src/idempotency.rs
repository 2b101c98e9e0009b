//! Idempotency keys: an account's `Idempotency-Key` and the prediction its first request
//! created, stored as a record next to the prediction (same write, same partition) and
//! forgotten after its time to live.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::id::{AccountId, PredictionId};
use crate::store::{self, Entity, Key, Kind, Record, body_record, decode_json};
use crate::time::Timestamp;

/// A key as recorded by the create that first used it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// The account the key belongs to (keys are per account).
    pub owner: AccountId,
    /// The client's key.
    pub key: String,
    /// A digest of the request that first used the key.
    pub fingerprint: String,
    /// The prediction that request created (a batch's first item).
    pub prediction_id: PredictionId,
    /// The batch that request created, for a batch's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// The workflow run that request created, for a run's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// When it was first used.
    pub created_at: Timestamp,
    /// When it may be forgotten.
    pub expires_at: Timestamp,
}

impl IdempotencyKey {
    /// The record key of `owner`'s `key`: in the owner's partition, named by a digest of the
    /// client's text (which may hold any character).
    pub fn record_key(owner: &AccountId, key: &str) -> Key {
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Key::owned(Kind::IdempotencyKey, format!("{owner}/{hex}"), owner)
    }
}

impl Entity for IdempotencyKey {
    const KIND: Kind = Kind::IdempotencyKey;

    fn key(&self) -> Key {
        Self::record_key(&self.owner, &self.key)
    }

    fn owner(&self) -> &AccountId {
        &self.owner
    }

    fn to_record(&self) -> store::Result<Record> {
        body_record(
            self.key(),
            &self.owner,
            self.created_at,
            Some(self.expires_at),
            self,
        )
    }

    fn from_record(record: &Record) -> store::Result<Self> {
        decode_json(&record.body)
    }
}
