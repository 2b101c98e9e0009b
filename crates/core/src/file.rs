//! Uploaded files as records: [`FileObject`] (what `POST /v1/files` stored: name, type, size,
//! digest, the client's metadata, expiry) and [`Files`], the handle the API and the worker read
//! and write them through. The bytes live in an object store (the engine's `OutputFiles`),
//! under [`FileObject::object_key`]; this crate never touches them.
//!
//! A file's id is generated in its owner's partition, so a sharded store finds it by id alone.
//! Files expire: at `expires_at` they read as absent, and retention turns the record into a
//! tombstone ([`crate::store::OnExpiry::RemoveData`]: the client's metadata goes) whose key the
//! sweeper receives, so that it deletes the bytes and then the tombstone, on every backend.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::error::Result;
use crate::id::AccountId;
use crate::secret::Secret;
use crate::store::{
    self, Cursor, DynStore, Entity, Key, Kind, ListQuery, Op, Partition, Record, StoreExt, Write,
    decode_json, encode_json,
};
use crate::time::Timestamp;

/// Characters of a file id.
pub const FILE_ID_LEN: usize = 26;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// An uploaded file's metadata (never its bytes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileObject {
    /// Its id: [`FILE_ID_LEN`] lowercase letters and digits, in its owner's partition.
    pub id: String,
    /// The account that uploaded it.
    pub owner: AccountId,
    /// The file name the client gave.
    pub name: String,
    /// Its media type as the client gave it.
    pub content_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// When it was uploaded.
    pub created_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// The client's metadata (any JSON); removed by retention.
    #[serde(skip)]
    pub metadata: Value,
}

impl FileObject {
    /// A fresh id for a file of `owner`.
    pub fn generate_id(owner: &AccountId) -> String {
        use rand::Rng;
        let mut rng = rand::rng();
        let mut id: String = (0..FILE_ID_LEN)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        store::place_in(&mut id, Partition::of_account(owner));
        id
    }

    /// Whether `id` has the shape of a file id (so that nothing else reaches the store or an
    /// object path).
    pub fn is_valid_id(id: &str) -> bool {
        id.len() == FILE_ID_LEN && id.bytes().all(|b| ALPHABET.contains(&b))
    }

    /// The record key of file `id`.
    pub fn key_of(id: &str) -> Key {
        Key::new(Kind::File, id)
    }

    /// Where its bytes are in the object store: `uploads/<id>`.
    pub fn object_key(id: &str) -> String {
        format!("uploads/{id}")
    }

    /// Whether it has expired at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

impl Entity for FileObject {
    const KIND: Kind = Kind::File;

    fn key(&self) -> Key {
        Self::key_of(&self.id)
    }

    fn owner(&self) -> &AccountId {
        &self.owner
    }

    fn to_record(&self) -> store::Result<Record> {
        Ok(Record {
            key: self.key(),
            owner: self.owner.clone(),
            created_at: self.created_at,
            status: None,
            parent: None,
            expires_at: Some(self.expires_at),
            data_removed: false,
            body: encode_json(self)?,
            data: Some(encode_json(&self.metadata)?),
        })
    }

    fn from_record(record: &Record) -> store::Result<Self> {
        let mut file: FileObject = decode_json(&record.body)?;
        file.metadata = match &record.data {
            Some(data) => decode_json(data)?,
            None => Value::Null,
        };
        Ok(file)
    }
}

/// Signs and checks download URLs of files
/// (`/v1/files/{id}/download?expiry=<unix seconds>&owner=<account>&signature=<hex>`), which work
/// without a token until they expire: HMAC-SHA256 with a server secret over the id, the owner
/// and the expiry, compared in constant time.
#[derive(Clone, Debug)]
pub struct UrlSigner {
    key: Secret,
}

impl UrlSigner {
    /// A signer with the server's secret.
    pub fn new(key: Secret) -> Self {
        Self { key }
    }

    /// A signer whose secret is derived from the admin token (which every node sharing a store
    /// shares), so that each node checks URLs the others signed with nothing stored.
    pub fn derived_from(admin_token: &Secret) -> Self {
        let mut mac = Self::mac(admin_token.expose().as_bytes());
        mac.update(b"augur file url v1");
        Self::new(Secret::new(hex(&mac.finalize().into_bytes())))
    }

    fn mac(key: &[u8]) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length")
    }

    fn mac_for(&self, id: &str, owner: &AccountId, expiry: i64) -> Hmac<Sha256> {
        let mut mac = Self::mac(self.key.expose().as_bytes());
        mac.update(format!("{id}\n{owner}\n{expiry}").as_bytes());
        mac
    }

    /// The signature of file `id` of `owner`, valid until `expiry` (unix seconds).
    pub fn sign(&self, id: &str, owner: &AccountId, expiry: i64) -> String {
        hex(&self.mac_for(id, owner, expiry).finalize().into_bytes())
    }

    /// Whether `signature` is this server's for these values (whatever the time).
    pub fn verify(&self, id: &str, owner: &AccountId, expiry: i64, signature: &str) -> bool {
        let Some(bytes) = unhex(signature) else {
            return false;
        };
        self.mac_for(id, owner, expiry).verify_slice(&bytes).is_ok()
    }

    /// The download URL of `file` under `public_url`, valid until `expires` (rounded down to a
    /// second).
    pub fn download_url(&self, public_url: &str, file: &FileObject, expires: Timestamp) -> String {
        let expiry = expires.as_micros().div_euclid(1_000_000);
        format!(
            "{}/v1/files/{}/download?expiry={expiry}&owner={}&signature={}",
            public_url.trim_end_matches('/'),
            file.id,
            file.owner,
            self.sign(&file.id, &file.owner, expiry)
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// One page of an account's files.
#[derive(Clone, Debug, Default)]
pub struct FilePage {
    /// The files, newest first.
    pub items: Vec<Arc<FileObject>>,
    /// Where the next page starts.
    pub next: Option<Cursor>,
}

/// Reads and writes file records. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Files {
    store: DynStore,
}

impl Files {
    /// Files in `store`.
    pub fn new(store: DynStore) -> Self {
        Self { store }
    }

    /// Records a new file.
    pub async fn create(&self, file: &FileObject) -> Result<()> {
        let write = Write::new(file.owner.clone()).op(Op::Insert(file.to_record()?));
        self.store.write(&write).await?;
        Ok(())
    }

    /// File `id`, if it exists and has not expired (whoever owns it: callers check).
    pub async fn get(&self, id: &str) -> Result<Option<Arc<FileObject>>> {
        if !FileObject::is_valid_id(id) {
            return Ok(None);
        }
        let now = Timestamp::now();
        Ok(self
            .store
            .get_entity::<FileObject>(&FileObject::key_of(id))
            .await?
            .map(|v| v.value)
            .filter(|f| !f.is_expired_at(now)))
    }

    /// A page of files, newest first: `owner`'s, or everyone's.
    pub async fn list(
        &self,
        owner: Option<&AccountId>,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<FilePage> {
        let now = Timestamp::now();
        let mut query = ListQuery::of(Kind::File, limit.max(1));
        query.owner = owner.cloned();
        query.after = after;
        let page = self.store.list(&query).await?;
        let mut items = Vec::with_capacity(page.items.len());
        for stored in &page.items {
            if stored.record.data_removed {
                continue;
            }
            let file = stored.decode::<FileObject>()?;
            if !file.is_expired_at(now) {
                items.push(file);
            }
        }
        Ok(FilePage {
            items,
            next: page.next,
        })
    }

    /// Deletes `owner`'s file `id`; returns it, or `None` if `owner` has no such file (another
    /// account's is left alone). The caller deletes the bytes after.
    pub async fn delete(&self, owner: &AccountId, id: &str) -> Result<Option<Arc<FileObject>>> {
        let Some(file) = self.get(id).await? else {
            return Ok(None);
        };
        if file.owner != *owner {
            return Ok(None);
        }
        self.forget(&file).await?;
        Ok(Some(file))
    }

    /// Deletes a file's record (or its tombstone), whatever its state: for retention, after
    /// its bytes are gone.
    pub async fn forget(&self, file: &FileObject) -> Result<()> {
        self.forget_key(&file.owner, &file.id).await
    }

    /// Deletes the record of file `id` of `owner`.
    pub async fn forget_key(&self, owner: &AccountId, id: &str) -> Result<()> {
        let write = Write::new(owner.clone()).op(Op::Delete(FileObject::key_of(id)));
        self.store.write(&write).await?;
        Ok(())
    }

    /// The owner of the record `key` (a tombstone included), for retention.
    pub async fn owner_of(&self, key: &Key) -> Result<Option<AccountId>> {
        Ok(self.store.get(key).await?.map(|s| s.record.owner.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_live_with_their_owner_and_records_round_trip() {
        let owner = AccountId::parse("alice").unwrap();
        let id = FileObject::generate_id(&owner);
        assert!(FileObject::is_valid_id(&id));
        assert!(!FileObject::is_valid_id("../etc/passwd"));
        assert!(!FileObject::is_valid_id(&id.to_uppercase()));
        assert_eq!(
            FileObject::key_of(&id).partition,
            Partition::of_account(&owner)
        );
        let now = Timestamp::now();
        let file = FileObject {
            id,
            owner,
            name: "cat.png".into(),
            content_type: "image/png".into(),
            size: 3,
            sha256: "ab".into(),
            created_at: now,
            expires_at: now.plus(std::time::Duration::from_secs(60)),
            metadata: serde_json::json!({"k": [1, "v"]}),
        };
        let record = file.to_record().unwrap();
        assert_eq!(FileObject::from_record(&record).unwrap(), file);
        let tombstone = FileObject::from_record(&record.tombstone()).unwrap();
        assert_eq!(tombstone.metadata, Value::Null);
        assert!(file.is_expired_at(file.expires_at));
    }

    #[test]
    fn signatures_bind_id_owner_and_expiry() {
        let signer = UrlSigner::derived_from(&Secret::new("admin"));
        let owner = AccountId::parse("alice").unwrap();
        let other = AccountId::parse("bob").unwrap();
        let sig = signer.sign("f1", &owner, 100);
        assert_eq!(sig.len(), 64);
        assert!(signer.verify("f1", &owner, 100, &sig));
        assert!(!signer.verify("f1", &owner, 101, &sig));
        assert!(!signer.verify("f2", &owner, 100, &sig));
        assert!(!signer.verify("f1", &other, 100, &sig));
        assert!(!signer.verify("f1", &owner, 100, "zz"));
        assert!(!signer.verify("f1", &owner, 100, &sig[..62]));
        let elsewhere = UrlSigner::derived_from(&Secret::new("other admin"));
        assert!(!elsewhere.verify("f1", &owner, 100, &sig));
        assert!(!format!("{signer:?}").contains(&signer.key.expose()[..8]));
    }
}
