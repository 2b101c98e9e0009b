//! [`Entity`]: how a domain type becomes a [`Record`] and back, and [`StoreExt`], typed reads
//! over any store.
//!
//! This is where serde meets the store: backends hold JSON text they never parse, and each
//! kind of record says here (in its own module) which of its fields are indexed columns, which
//! go in the body, and which are the data that retention removes.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, Key, Kind, Record, RecordStore, Result};
use crate::id::AccountId;
use crate::prediction::Versioned;

/// A domain type stored as records of one [`Kind`].
pub trait Entity: Send + Sync + Sized + 'static {
    /// Its kind.
    const KIND: Kind;

    /// Its key.
    fn key(&self) -> Key;

    /// The account it belongs to.
    fn owner(&self) -> &AccountId;

    /// Encodes it.
    fn to_record(&self) -> Result<Record>;

    /// Decodes it.
    fn from_record(record: &Record) -> Result<Self>;
}

/// A record that is all body (no data for retention to remove, no status or parent): how
/// accounts, tokens and idempotency keys are stored.
pub fn body_record<T: Serialize>(
    key: Key,
    owner: &AccountId,
    created_at: crate::time::Timestamp,
    expires_at: Option<crate::time::Timestamp>,
    body: &T,
) -> Result<Record> {
    Ok(Record {
        key,
        owner: owner.clone(),
        created_at,
        status: None,
        parent: None,
        expires_at,
        data_removed: false,
        body: encode_json(body)?,
        data: None,
    })
}

/// JSON text of `value`, for a record's body or data.
pub fn encode_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Other {
        backend: "codec",
        source: Box::new(e),
    })
}

/// `T` from a record's JSON text.
pub fn decode_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt {
        backend: "codec",
        source: Box::new(e),
    })
}

/// Typed reads over any [`RecordStore`].
#[async_trait]
pub trait StoreExt: RecordStore {
    /// Reads a record and decodes it as `T`; `None` if absent.
    async fn get_entity<T: Entity>(&self, key: &Key) -> Result<Option<Versioned<Arc<T>>>> {
        match self.get(key).await? {
            Some(stored) => Ok(Some(Versioned {
                value: stored.decode::<T>()?,
                revision: stored.revision,
            })),
            None => Ok(None),
        }
    }
}

impl<S: RecordStore + ?Sized> StoreExt for S {}
