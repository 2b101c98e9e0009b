//! [`OutputFiles`]: output files in object storage the operator owns, under stable URLs.
//!
//! Files are written through the `object_store` crate (a local directory by default; any
//! `ObjectStore` works) under keys `<prediction id>/<random>/<name>`, and served by the API at
//! `<public url>/files/<key>` without authentication: the random part makes the URL
//! unguessable, as Replicate's delivery URLs are.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use augur_core::PredictionId;

/// Errors of the output file store.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The key is not one this store hands out.
    #[error("invalid file key {0:?}")]
    InvalidKey(String),
    /// The object store failed.
    #[error("object store error: {0}")]
    Store(#[from] object_store::Error),
    /// The directory could not be prepared.
    #[error("cannot use output directory {path}: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A file read back for serving.
#[derive(Debug)]
pub struct StoredFile {
    /// The bytes.
    pub bytes: Bytes,
    /// Its media type, guessed from the name.
    pub content_type: &'static str,
}

/// Where output files go and how they are addressed. Cheap to clone.
#[derive(Clone)]
pub struct OutputFiles {
    store: Arc<dyn ObjectStore>,
    /// `<public url>/files`, without a trailing slash.
    base_url: Arc<str>,
}

impl fmt::Debug for OutputFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputFiles")
            .field("store", &self.store.to_string())
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl OutputFiles {
    /// Files in a local directory (created if missing), served under `public_url`.
    pub fn local(dir: &Path, public_url: &str) -> Result<Self, FilesError> {
        std::fs::create_dir_all(dir).map_err(|source| FilesError::Directory {
            path: dir.display().to_string(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(dir)?;
        Ok(Self::new(Arc::new(store), public_url))
    }

    /// Files in memory (tests, `memory://` stores).
    pub fn in_memory(public_url: &str) -> Self {
        Self::new(Arc::new(InMemory::new()), public_url)
    }

    /// Files in any object store.
    pub fn new(store: Arc<dyn ObjectStore>, public_url: &str) -> Self {
        Self {
            store,
            base_url: Arc::from(format!("{}/files", public_url.trim_end_matches('/'))),
        }
    }

    /// Stores an output file of a prediction and returns its public URL.
    pub async fn put(
        &self,
        prediction: &PredictionId,
        name: &str,
        bytes: Bytes,
    ) -> Result<String, FilesError> {
        let token = augur_core::prediction::new_secret_token();
        self.put_keyed(prediction, &token, name, bytes).await
    }

    /// Stores an output file under a token the caller chose (32 hex digits, as unguessable as
    /// [`OutputFiles::put`]'s), so that storing the same file again overwrites it instead of
    /// adding a copy.
    pub async fn put_keyed(
        &self,
        prediction: &PredictionId,
        token: &str,
        name: &str,
        bytes: Bytes,
    ) -> Result<String, FilesError> {
        let key = format!("{prediction}/{token}/{}", sanitize_name(name));
        let path = parse_key(&key)?;
        self.store.put(&path, PutPayload::from_bytes(bytes)).await?;
        Ok(format!("{}/{key}", self.base_url))
    }

    /// Reads a file by key (the part of its URL after `/files/`); `None` if there is none.
    pub async fn get(&self, key: &str) -> Result<Option<StoredFile>, FilesError> {
        let path = parse_key(key)?;
        match self.store.get(&path).await {
            Ok(result) => Ok(Some(StoredFile {
                bytes: result.bytes().await?,
                content_type: content_type_for(key),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every output file of a prediction (retention).
    pub async fn delete_for(&self, prediction: &PredictionId) -> Result<usize, FilesError> {
        use futures::TryStreamExt;
        let prefix = ObjectPath::from(prediction.as_str());
        let paths: Vec<_> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for path in &paths {
            self.store.delete(path).await?;
        }
        Ok(paths.len())
    }
}

/// Validates a key from a URL: exactly `<id>/<token>/<name>`, nothing that escapes.
fn parse_key(key: &str) -> Result<ObjectPath, FilesError> {
    let invalid = || FilesError::InvalidKey(key.chars().take(200).collect());
    let parts: Vec<&str> = key.split('/').collect();
    let [id, token, name] = parts.as_slice() else {
        return Err(invalid());
    };
    if PredictionId::parse(id).is_err()
        || token.len() != 32
        || !token.bytes().all(|b| b.is_ascii_hexdigit())
        || sanitize_name(name) != *name
    {
        return Err(invalid());
    }
    ObjectPath::parse(key).map_err(|_| invalid())
}

/// A file name safe in a URL and on any filesystem: `[A-Za-z0-9._-]`, no leading dot, at most
/// 100 characters; anything else becomes `_`.
fn sanitize_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "output".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The media type for a file name's extension.
pub fn content_type_for(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mpeg",
        Some("txt") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_round_trip_under_unguessable_urls() {
        let files = OutputFiles::in_memory("http://127.0.0.1:8080/");
        let id = PredictionId::parse("p1").unwrap();
        let url = files
            .put(&id, "out.png", Bytes::from_static(b"png"))
            .await
            .unwrap();
        let key = url
            .strip_prefix("http://127.0.0.1:8080/files/")
            .expect("url under /files");
        let got = files.get(key).await.unwrap().unwrap();
        assert_eq!(&got.bytes[..], b"png");
        assert_eq!(got.content_type, "image/png");
        let other = files.put(&id, "out.png", Bytes::new()).await.unwrap();
        assert_ne!(url, other, "same name, different key");
        assert_eq!(files.delete_for(&id).await.unwrap(), 2);
        assert!(files.get(key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn keys_that_escape_or_guess_are_rejected() {
        let files = OutputFiles::in_memory("http://x");
        for bad in [
            "../etc/passwd",
            "p1/../../x",
            "p1/short/out.png",
            "p1/0123456789abcdef0123456789abcdef/../x",
            "p1/0123456789abcdef0123456789abcdef/a b",
            "",
        ] {
            assert!(
                matches!(files.get(bad).await, Err(FilesError::InvalidKey(_))),
                "{bad}"
            );
        }
        let missing = "p1/0123456789abcdef0123456789abcdef/out.png";
        assert!(files.get(missing).await.unwrap().is_none());
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("../../x.png"), "_.._x.png");
        assert_eq!(sanitize_name(".hidden"), "hidden");
        assert_eq!(sanitize_name("héllo wörld.txt"), "h_llo_w_rld.txt");
        assert_eq!(sanitize_name(""), "output");
    }
}
