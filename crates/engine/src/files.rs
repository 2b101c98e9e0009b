//! [`OutputFiles`]: output files in object storage the operator owns, under stable URLs.
//!
//! Files are written through the `object_store` crate (a local directory by default; any
//! `ObjectStore` works) under keys `<prediction id>/<random>/<name>`, and served by the API at
//! `<public url>/files/<key>` without authentication: the random part makes the URL
//! unguessable, as Replicate's delivery URLs are. A stored output keeps the reference
//! `/files/<key>` ([`augur_core::output`]), never the absolute URL: the API renders it under
//! the public URL of the moment.
//!
//! Uploaded files (`POST /v1/files`) live in the same store under `uploads/<file id>`; their
//! metadata is a record ([`augur_core::file::FileObject`]).
//!
//! [`OutputFiles::import_urls`] brings outputs that point elsewhere (an upstream provider's
//! `https://` delivery URLs) into the store, so a prediction's files stay available under
//! Augur's own URLs for as long as Augur keeps them. Those URLs come from outputs a user may
//! steer, so every request and redirect hop goes only where the destination policy
//! ([`augur_outbound::Policy`]) permits, and failures are told coarsely.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde_json::Value;

use augur_core::file::{FileObject, Files, UrlSigner};
use augur_core::{AccountId, PredictionId, Timestamp};

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
    /// `<public url>/v1/files/`: what uploaded files' URLs start with.
    uploads_url: Arc<str>,
    /// Signs uploaded files' download URLs for providers that fetch them.
    signer: Option<UrlSigner>,
    /// Downloads output URLs into the store.
    importer: Arc<UrlImporter>,
    /// Uploads smaller than this are stored with one put when complete, not streamed in parts
    /// (0: always in parts). See [`OutputFiles::upload_writer`].
    single_put_below: usize,
}

impl fmt::Debug for OutputFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputFiles")
            .field("store", &self.store.to_string())
            .field("base_url", &self.base_url)
            .field("signs_urls", &self.signer.is_some())
            .field("url_imports", &self.importer.limits)
            .field("destinations", &self.importer.destinations)
            .finish()
    }
}

impl OutputFiles {
    /// Files in a local directory (created if missing), served under `public_url`.
    pub fn local(dir: &Path, public_url: &str) -> Result<Self, FilesError> {
        Ok(Self::new(Self::local_store(dir)?, public_url))
    }

    /// The object store of a local directory (created if missing).
    pub fn local_store(dir: &Path) -> Result<Arc<dyn ObjectStore>, FilesError> {
        std::fs::create_dir_all(dir).map_err(|source| FilesError::Directory {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?))
    }

    /// Files in an S3-compatible bucket, under `prefix` (may be empty), served under
    /// `public_url`. The endpoint, region and credentials come from the usual `AWS_*`
    /// variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP` for a plain-HTTP endpoint).
    #[cfg(feature = "s3")]
    pub fn s3(bucket: &str, prefix: &str, public_url: &str) -> Result<Self, FilesError> {
        let mut files = Self::new(Self::s3_store(bucket, prefix)?, public_url);
        // Each request is a round trip: a small upload is one `PutObject`, not a multipart
        // upload's create, part and complete.
        files.single_put_below = UPLOAD_PART_BYTES;
        Ok(files)
    }

    /// The object store of an S3-compatible bucket under `prefix`, configured as
    /// [`OutputFiles::s3`] says.
    #[cfg(feature = "s3")]
    pub fn s3_store(bucket: &str, prefix: &str) -> Result<Arc<dyn ObjectStore>, FilesError> {
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()?;
        Ok(if prefix.is_empty() {
            Arc::new(store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
        })
    }

    /// Files in memory (tests, `memory://` stores).
    pub fn in_memory(public_url: &str) -> Self {
        Self::new(Arc::new(InMemory::new()), public_url)
    }

    /// Files in any object store.
    pub fn new(store: Arc<dyn ObjectStore>, public_url: &str) -> Self {
        let public_url = public_url.trim_end_matches('/');
        Self {
            store,
            base_url: Arc::from(format!("{public_url}/files")),
            uploads_url: Arc::from(format!("{public_url}/v1/files/")),
            signer: None,
            importer: Arc::new(UrlImporter::new(
                UrlImportLimits::default(),
                augur_outbound::Policy::default(),
            )),
            single_put_below: 0,
        }
    }

    /// The same store with other limits on [`OutputFiles::import_urls`].
    #[must_use]
    pub fn with_url_import_limits(mut self, limits: UrlImportLimits) -> Self {
        self.importer = Arc::new(UrlImporter::new(limits, self.importer.destinations.clone()));
        self
    }

    /// The same store, copying output URLs only from addresses `destinations` permits (by
    /// default public addresses only).
    #[must_use]
    pub fn with_destinations(mut self, destinations: augur_outbound::Policy) -> Self {
        self.importer = Arc::new(UrlImporter::new(self.importer.limits.clone(), destinations));
        self
    }

    /// The same store, signing uploaded files' download URLs with `signer` for providers that
    /// fetch their inputs ([`FileInputs::SignedUrl`]).
    #[must_use]
    pub fn with_url_signer(mut self, signer: UrlSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Replaces every string in `input` that is an uploaded file's URL (`urls.get`, what the
    /// official clients put in inputs) by the form the provider takes: a data URI with the
    /// bytes, a signed download URL it can fetch without a token, or the path of a local copy
    /// in a fresh temporary directory that [`ResolvedInput`] removes when dropped. Only
    /// `owner`'s live files are resolved: another account's file reads as missing.
    ///
    /// # Errors
    ///
    /// A file that is missing, expired, another account's, or whose bytes cannot be read or
    /// copied.
    pub async fn resolve_inputs(
        &self,
        records: &Files,
        owner: &AccountId,
        input: Value,
        form: FileInputs,
    ) -> Result<ResolvedInput, String> {
        let mut urls = Vec::new();
        visit_strings(&input, &mut |s| {
            if self.upload_id(s).is_some() && !urls.iter().any(|u| u == s) {
                urls.push(s.to_owned());
            }
        });
        if urls.is_empty() {
            return Ok(ResolvedInput {
                input,
                local_copies: None,
            });
        }
        let local_copies = match form {
            FileInputs::LocalPath => Some(
                tempfile::Builder::new()
                    .prefix("augur-inputs-")
                    .tempdir()
                    .map_err(|e| format!("cannot create a directory for input files: {e}"))?,
            ),
            _ => None,
        };
        let mut resolved = HashMap::new();
        for url in urls {
            let id = self.upload_id(&url).unwrap_or_default();
            let missing = || {
                format!(
                    "input file {url} was not found: it expired, was deleted, or belongs to another account"
                )
            };
            let file = records
                .get(id)
                .await
                .map_err(|e| format!("cannot read input file {url}: {e}"))?
                .filter(|f| f.owner == *owner)
                .ok_or_else(missing)?;
            let value = match (&self.signer, form, &local_copies) {
                (Some(signer), FileInputs::SignedUrl, _) => {
                    let until = Timestamp::now().plus(SIGNED_INPUT_VALIDITY);
                    let base = self.uploads_url.trim_end_matches("/v1/files/");
                    signer.download_url(base, &file, until.min(file.expires_at))
                }
                (_, FileInputs::LocalPath, Some(dir)) => {
                    // One directory per file, so that two files of the same name keep theirs
                    // (and with it their extension, which tools go by).
                    let path = dir.path().join(&file.id).join(sanitize_name(&file.name));
                    let copied = self
                        .copy_upload_to(&FileObject::object_key(&file.id), &path)
                        .await
                        .map_err(|e| format!("cannot copy input file {url}: {e}"))?;
                    if !copied {
                        return Err(missing());
                    }
                    path.to_str()
                        .ok_or_else(|| format!("the temporary path {path:?} is not UTF-8"))?
                        .to_owned()
                }
                _ => {
                    use base64::Engine;
                    let bytes = self
                        .get_upload(&FileObject::object_key(&file.id))
                        .await
                        .map_err(|e| format!("cannot read input file {url}: {e}"))?
                        .ok_or_else(missing)?;
                    let essence = file.content_type.split(';').next().unwrap_or_default();
                    format!(
                        "data:{};base64,{}",
                        essence.trim(),
                        base64::engine::general_purpose::STANDARD.encode(&bytes)
                    )
                }
            };
            resolved.insert(url, value);
        }
        Ok(ResolvedInput {
            input: replace_strings(input, &|s| resolved.get(s).cloned()),
            local_copies,
        })
    }

    /// The file id in an uploaded file's `urls.get`, if `s` is one.
    fn upload_id<'a>(&self, s: &'a str) -> Option<&'a str> {
        s.strip_prefix(&*self.uploads_url)
            .filter(|id| FileObject::is_valid_id(id))
    }

    /// Whether `url` is one of this store's own files: a reference (`/files/<key>`, what
    /// outputs hold), or an absolute URL under the current public URL (what outputs held
    /// before references).
    pub fn is_own_url(&self, url: &str) -> bool {
        augur_core::output::key_of(url).is_some()
            || url
                .strip_prefix(&*self.base_url)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Replaces every string in `output` that is an `http(s)` URL other than this store's own
    /// by the reference to a copy in this store, and returns the new output.
    ///
    /// A string counts when it is a URL as a whole (`"https://x/y.png"`), not when it merely
    /// contains one. Each distinct URL is downloaded once (a few at a time) under the
    /// [`UrlImportLimits`], only from addresses the destination policy permits (each
    /// redirect hop too); redirects are followed only to `http(s)` URLs. The stored name is
    /// the URL's last path segment, with an extension added from the response's
    /// `Content-Type` when the name has no known one, so the file is served with that type.
    ///
    /// # Errors
    ///
    /// The first download that fails, naming the URL without its query string, user name,
    /// password or fragment (which may hold credentials).
    pub async fn import_urls(
        &self,
        prediction: &PredictionId,
        output: Value,
    ) -> Result<Value, ImportError> {
        use futures::{StreamExt, TryStreamExt};

        let mut urls = Vec::new();
        visit_strings(&output, &mut |s| {
            if is_web_url(s) && !self.is_own_url(s) && !urls.iter().any(|u| u == s) {
                urls.push(s.to_owned());
            }
        });
        if urls.is_empty() {
            return Ok(output);
        }
        let imported: HashMap<String, String> = futures::stream::iter(urls)
            .map(|url| async move {
                let stored = self.importer.download(self, prediction, &url).await?;
                Ok::<_, ImportError>((url, stored))
            })
            .buffer_unordered(IMPORT_PARALLELISM)
            .try_collect()
            .await?;
        Ok(replace_strings(output, &|s| imported.get(s).cloned()))
    }

    /// Stores an output file of a prediction and returns the reference to keep in its output
    /// (`/files/<key>`, see [`augur_core::output`]); clients see it as an absolute URL.
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
        Ok(augur_core::output::reference(&key))
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

    /// Stores an uploaded file's bytes under `key` ([`augur_core::file::FileObject::object_key`]).
    pub async fn put_upload(&self, key: &str, payload: PutPayload) -> Result<(), FilesError> {
        let path = parse_upload_key(key)?;
        self.store.put(&path, payload).await?;
        Ok(())
    }

    /// Starts writing an uploaded file's bytes under `key` as they arrive; nothing is visible
    /// under the key before [`UploadWriter::finish`]. Bytes stream into the store in parts (a
    /// multipart upload), so that an upload never sits whole in memory; on S3, where every
    /// request is a round trip, a file smaller than one part ([`UPLOAD_PART_BYTES`]) is instead
    /// stored with one put when it is complete (`bench/uploads.sh`: 100 KB uploads went from
    /// 0.29× to 0.79× of plain `PutObject`s). On a local directory the staged multipart write
    /// measured faster than a single put for small files, so it stays.
    pub async fn upload_writer(&self, key: &str) -> Result<UploadWriter, FilesError> {
        let path = parse_upload_key(key)?;
        let inner = if self.single_put_below > 0 {
            Writer::Buffered(
                BufWriter::with_capacity(self.store.clone(), path, self.single_put_below)
                    .with_max_concurrency(UPLOAD_PARTS_IN_FLIGHT),
            )
        } else {
            Writer::Parts(WriteMultipart::new(self.store.put_multipart(&path).await?))
        };
        Ok(UploadWriter { inner })
    }

    /// An uploaded file's bytes; `None` if there are none.
    pub async fn get_upload(&self, key: &str) -> Result<Option<Bytes>, FilesError> {
        let path = parse_upload_key(key)?;
        match self.store.get(&path).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes an uploaded file's bytes to a new local file at `path` (creating its parent
    /// directory) as they stream in; false if there are none.
    pub async fn copy_upload_to(&self, key: &str, path: &Path) -> Result<bool, FilesError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let object = parse_upload_key(key)?;
        let result = match self.store.get(&object).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let local = |source: std::io::Error| FilesError::Directory {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(local)?;
        }
        let mut file = tokio::fs::File::create_new(path).await.map_err(local)?;
        let mut chunks = result.into_stream();
        while let Some(chunk) = chunks.next().await {
            file.write_all(&chunk?).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        Ok(true)
    }

    /// Deletes an uploaded file's bytes (absent bytes are not an error).
    pub async fn delete_upload(&self, key: &str) -> Result<(), FilesError> {
        let path = parse_upload_key(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
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

/// An upload being written ([`OutputFiles::upload_writer`]). Dropping it unfinished abandons
/// the upload.
pub struct UploadWriter {
    inner: Writer,
}

enum Writer {
    /// Small files in one put, larger ones in parts.
    Buffered(BufWriter),
    /// Always in parts.
    Parts(WriteMultipart),
}

impl fmt::Debug for UploadWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadWriter").finish_non_exhaustive()
    }
}

/// Parts of an upload in flight at once.
const UPLOAD_PARTS_IN_FLIGHT: usize = 4;

/// The size of an upload's parts on S3 (its smallest part), below which a file is stored with
/// one put there: a multipart upload costs two requests more (create and complete).
pub const UPLOAD_PART_BYTES: usize = 5 << 20;

impl UploadWriter {
    /// Adds bytes, waiting while too many parts are in flight.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), FilesError> {
        match &mut self.inner {
            Writer::Buffered(writer) => writer.put(chunk).await?,
            Writer::Parts(writer) => {
                writer.wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT).await?;
                writer.put(chunk);
            }
        }
        Ok(())
    }

    /// Completes the upload: the bytes appear under the key.
    pub async fn finish(self) -> Result<(), FilesError> {
        match self.inner {
            Writer::Buffered(mut writer) => {
                use tokio::io::AsyncWriteExt;
                writer.shutdown().await.map_err(|e| {
                    FilesError::Store(object_store::Error::Generic {
                        store: "uploads",
                        source: Box::new(e),
                    })
                })?;
            }
            Writer::Parts(writer) => {
                writer.finish().await?;
            }
        }
        Ok(())
    }

    /// Abandons the upload.
    pub async fn abort(self) {
        let result = match self.inner {
            Writer::Buffered(mut writer) => writer.abort().await,
            Writer::Parts(writer) => writer.abort().await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot abort an upload");
        }
    }
}

/// How a provider takes inputs that are uploaded files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileInputs {
    /// The bytes, as a `data:` URI (models in this process).
    DataUri,
    /// A signed download URL that works without a token (model servers and upstream APIs,
    /// which fetch it themselves).
    SignedUrl,
    /// The absolute path of a local copy of the bytes, named like the upload, in a temporary
    /// directory removed after the run (local commands).
    LocalPath,
}

/// An input with its uploaded files in a provider's form ([`OutputFiles::resolve_inputs`]).
#[derive(Debug)]
pub struct ResolvedInput {
    /// The input to hand the provider.
    pub input: Value,
    /// The directory of the local copies [`FileInputs::LocalPath`] points to; removed when
    /// dropped, so keep it until the run is over.
    pub local_copies: Option<tempfile::TempDir>,
}

/// How long a signed URL handed to a provider for an input works (at most until the file
/// expires).
const SIGNED_INPUT_VALIDITY: Duration = Duration::from_secs(6 * 3600);

/// Downloads at once per [`OutputFiles::import_urls`] call.
const IMPORT_PARALLELISM: usize = 4;

/// Redirects followed at most when importing a URL.
const MAX_REDIRECTS: usize = 5;

/// Limits on [`OutputFiles::import_urls`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlImportLimits {
    /// The largest file, in bytes (default 100 MiB).
    pub max_bytes: u64,
    /// How long one download may take, from the request to the last byte (default 60 s).
    pub timeout: Duration,
}

impl Default for UrlImportLimits {
    fn default() -> Self {
        Self {
            max_bytes: 100 << 20,
            timeout: Duration::from_secs(60),
        }
    }
}

/// An output URL that could not be brought into the store.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot import output {url}: {reason}")]
pub struct ImportError {
    /// The URL, without query string, credentials or fragment.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// The HTTP client and limits behind [`OutputFiles::import_urls`].
#[derive(Debug)]
struct UrlImporter {
    limits: UrlImportLimits,
    destinations: augur_outbound::Policy,
    http: reqwest::Client,
}

impl UrlImporter {
    fn new(limits: UrlImportLimits, destinations: augur_outbound::Policy) -> Self {
        let http = destinations
            .client_builder()
            .timeout(limits.timeout)
            .redirect(destinations.redirects(MAX_REDIRECTS))
            .build()
            // Only TLS set-up can fail, and then the same policy's plain client is built.
            .unwrap_or_else(|_| destinations.client_builder().build().unwrap_or_default());
        Self {
            limits,
            destinations,
            http,
        }
    }

    /// Downloads `url` into `files` and returns the stored copy's URL.
    async fn download(
        &self,
        files: &OutputFiles,
        prediction: &PredictionId,
        url: &str,
    ) -> Result<String, ImportError> {
        let fail = |reason: String| ImportError {
            url: redact_url(url),
            reason,
        };
        let max = self.limits.max_bytes;
        let too_big = || {
            fail(format!(
                "it is larger than the limit of {}",
                show_bytes(max)
            ))
        };
        let parsed = url::Url::parse(url).map_err(|e| fail(format!("it is not a URL: {e}")))?;
        // An address in the URL skips the client's resolver: checked here.
        if let Err(refused) = self.destinations.check_url(&parsed) {
            tracing::info!(
                url = %redact_url(url),
                range = refused.range(),
                "output import refused: the url names a forbidden address"
            );
            return Err(fail(augur_outbound::Failure::Refused.to_string()));
        }
        let mut response = self
            .http
            .get(parsed)
            .send()
            .await
            .map_err(|e| fail(self.describe(e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("the server answered {status}")));
        }
        if response.content_length().is_some_and(|len| len > max) {
            return Err(too_big());
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let name = file_name_for(response.url(), content_type.as_deref());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(self.describe(e)))? {
            if body.len() as u64 + chunk.len() as u64 > max {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        files
            .put(prediction, &name, Bytes::from(body))
            .await
            .map_err(|e| fail(format!("cannot store it: {e}")))
    }

    /// What the prediction's error may say about a failed request: coarsely (it is shown to
    /// the user, and must not tell an open port from a closed one); the detail, without the
    /// URL (its query may hold credentials), goes to the operator's log.
    fn describe(&self, error: reqwest::Error) -> String {
        use augur_outbound::Failure;
        let failure = Failure::of(&error);
        if failure == Failure::TimedOut {
            return format!(
                "it did not arrive within {}s",
                self.limits.timeout.as_secs_f64()
            );
        }
        let error = error.without_url();
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::info!(error = %detail, "output import failed");
        failure.to_string()
    }
}

/// Whether `s` is, as a whole, an absolute `http(s)` URL with a host.
fn is_web_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://"))
        || s.chars().any(char::is_whitespace)
    {
        return false;
    }
    url::Url::parse(s).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()))
}

/// A URL as it may appear in messages and logs: its credentials, query values and fragment
/// masked ([`augur_core::redact::url`]).
pub fn redact_url(url: &str) -> String {
    augur_core::redact::url(url)
}

/// The stored name of a downloaded file: the URL's last path segment, plus an extension for
/// its content type when the segment has no known one.
fn file_name_for(url: &url::Url, content_type: Option<&str>) -> String {
    let segment = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .unwrap_or("output");
    let name = sanitize_name(segment);
    if content_type_for(&name) != "application/octet-stream" {
        return name;
    }
    match content_type.and_then(extension_for) {
        Some(ext) => format!("{name}.{ext}"),
        None => name,
    }
}

/// A media type without its parameters, lower-cased: `Image/PNG; q=1` → `image/png`.
pub fn media_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The extension [`content_type_for`] maps to a media type.
fn extension_for(content_type: &str) -> Option<&'static str> {
    Some(match media_essence(content_type).as_str() {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/svg+xml" => "svg",
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
        "audio/mpeg" => "mp3",
        "text/plain" => "txt",
        "application/json" => "json",
        _ => return None,
    })
}

/// `100 MiB`, `1.5 KiB`, `12 bytes`.
fn show_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size {
            let whole = n / size;
            let tenths = n % size * 10 / size;
            return if tenths == 0 {
                format!("{whole} {unit}")
            } else {
                format!("{whole}.{tenths} {unit}")
            };
        }
    }
    format!("{n} bytes")
}

/// Calls `f` on every string in `value`, depth first.
pub(crate) fn visit_strings(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| visit_strings(v, f)),
        Value::Object(map) => map.values().for_each(|v| visit_strings(v, f)),
        _ => {}
    }
}

/// `value` with each string `s` for which `replace(s)` is `Some` replaced by it.
pub(crate) fn replace_strings(value: Value, replace: &impl Fn(&str) -> Option<String>) -> Value {
    match value {
        Value::String(s) => Value::String(replace(&s).unwrap_or(s)),
        Value::Array(items) => items
            .into_iter()
            .map(|v| replace_strings(v, replace))
            .collect(),
        Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| (k, replace_strings(v, replace)))
            .collect(),
        other => other,
    }
}

/// Validates a key from a URL: exactly `<id>/<token>/<name>`, nothing that escapes.
fn parse_key(key: &str) -> Result<ObjectPath, FilesError> {
    let invalid = || FilesError::InvalidKey(key.chars().take(200).collect());
    if !augur_core::output::is_valid_key(key) {
        return Err(invalid());
    }
    ObjectPath::parse(key).map_err(|_| invalid())
}

/// Validates an upload's key: `uploads/<file id>`.
fn parse_upload_key(key: &str) -> Result<ObjectPath, FilesError> {
    let invalid = || FilesError::InvalidKey(key.chars().take(200).collect());
    match key.strip_prefix("uploads/") {
        Some(id) if augur_core::file::FileObject::is_valid_id(id) => {
            ObjectPath::parse(key).map_err(|_| invalid())
        }
        _ => Err(invalid()),
    }
}

/// A file name safe in a URL and on any filesystem: `[A-Za-z0-9._-]`, no leading dot, at most
/// 100 characters; anything else becomes `_`.
pub fn sanitize_name(name: &str) -> String {
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
        let key = augur_core::output::key_of(&url).expect("a /files/<key> reference");
        assert!(files.is_own_url(&url));
        assert!(
            files.is_own_url(&format!("http://127.0.0.1:8080/files/{key}")),
            "an absolute URL under the current public URL (older records) is still own"
        );
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

    /// A tiny HTTP server: `GET <path>` answers `(status, headers, body)` from `routes`,
    /// anything else 404.
    async fn web(routes: Vec<(&'static str, u16, &'static str, Vec<u8>)>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes = Arc::new(routes);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or_default();
                    let path = path.split('?').next().unwrap_or_default();
                    let (status, headers, body) = routes
                        .iter()
                        .find(|r| r.0 == path)
                        .map_or((404, "", Vec::new()), |r| (r.1, r.2, r.3.clone()));
                    let mut response = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n");
                    for header in headers.split('|').filter(|h| !h.is_empty()) {
                        response.push_str(header);
                        response.push_str("\r\n");
                    }
                    response.push_str("\r\n");
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                });
            }
        });
        base
    }

    #[tokio::test]
    async fn foreign_urls_are_imported_once_and_own_urls_kept() {
        let base = web(vec![
            (
                "/gen",
                200,
                "content-type: image/png|content-length: 3",
                b"png".to_vec(),
            ),
            ("/a/b/notes.txt", 200, "", b"text".to_vec()),
            ("/moved", 302, "location: /a/b/notes.txt", Vec::new()),
        ])
        .await;
        let files = OutputFiles::in_memory("http://augur.test").with_destinations(loopback());
        let id = PredictionId::parse("p1").unwrap();
        let own = files.put(&id, "x.png", Bytes::new()).await.unwrap();
        let output = serde_json::json!({
            "image": format!("{base}/gen?signature=secret"),
            "images": [format!("{base}/gen?signature=secret"), own.clone()],
            "notes": format!("{base}/moved"),
            "text": format!("see {base}/gen"),
            "n": 1,
        });
        let imported = files.import_urls(&id, output).await.unwrap();
        let image = imported["image"].as_str().unwrap();
        assert!(files.is_own_url(image), "{image}");
        assert!(image.ends_with("/gen.png"), "{image}");
        assert_eq!(
            imported["images"][0], image,
            "the same URL is imported once"
        );
        assert_eq!(imported["images"][1], own.as_str());
        assert_eq!(
            imported["text"],
            format!("see {base}/gen"),
            "text is not a URL"
        );
        assert_eq!(imported["n"], 1);
        let key = |url: &str| augur_core::output::key_of(url).unwrap().to_owned();
        let got = files.get(&key(image)).await.unwrap().unwrap();
        assert_eq!(
            (&got.bytes[..], got.content_type),
            (&b"png"[..], "image/png")
        );
        let notes = imported["notes"].as_str().unwrap();
        assert!(
            notes.ends_with("/notes.txt"),
            "named after where the redirect led: {notes}"
        );
        assert_eq!(
            &files.get(&key(notes)).await.unwrap().unwrap().bytes[..],
            b"text"
        );
        // Two imported files and the own one.
        assert_eq!(files.delete_for(&id).await.unwrap(), 3);

        let plain = serde_json::json!(["no urls", {"k": null}]);
        assert_eq!(files.import_urls(&id, plain.clone()).await.unwrap(), plain);
    }

    #[tokio::test]
    async fn failed_imports_name_the_url_without_secrets() {
        let big = vec![0u8; 2048];
        let base = web(vec![
            ("/declared", 200, "content-length: 2048", big.clone()),
            ("/streamed", 200, "", big),
            ("/ftp", 302, "location: ftp://example.com/x", Vec::new()),
            ("/loop", 302, "location: /loop", Vec::new()),
        ])
        .await;
        let files = OutputFiles::in_memory("http://augur.test")
            .with_destinations(loopback())
            .with_url_import_limits(UrlImportLimits {
                max_bytes: 1024,
                timeout: Duration::from_secs(10),
            });
        let id = PredictionId::parse("p1").unwrap();
        let host = base.strip_prefix("http://").unwrap();
        for (path, reason) in [
            ("/declared", "it is larger than the limit of 1 KiB"),
            ("/streamed", "it is larger than the limit of 1 KiB"),
            ("/missing", "the server answered 404 Not Found"),
        ] {
            let url = format!("http://user:pw@{host}{path}?token=secret#frag");
            let err = files
                .import_urls(&id, Value::String(url))
                .await
                .unwrap_err();
            // Credentials, query values and the fragment masked, as everywhere.
            assert_eq!(
                err.to_string(),
                format!(
                    "cannot import output http://user:***@{host}{path}?token=***#***: {reason}"
                )
            );
        }
        for (path, needle) in [
            ("/ftp", "only http(s) is followed"),
            ("/loop", "more than 5 redirects"),
        ] {
            let err = files
                .import_urls(&id, Value::String(format!("{base}{path}?token=secret")))
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains(needle), "{text}");
            assert!(!text.contains("secret"), "{text}");
        }
        assert_eq!(files.delete_for(&id).await.unwrap(), 0);
    }

    /// The test servers are on loopback, which only the operator's allowlist opens.
    fn loopback() -> augur_outbound::Policy {
        augur_outbound::Policy::parse_allowlist("127.0.0.0/8,::1/128").unwrap()
    }

    #[tokio::test]
    async fn imports_go_only_where_the_destination_policy_permits() {
        let inside = web(vec![("/secret", 200, "", b"internal".to_vec())]).await;
        let port = inside.rsplit(':').next().unwrap().to_owned();
        let id = PredictionId::parse("p1").unwrap();
        // By default loopback is refused, however the host is spelled, and the error is
        // the same whether anything listens there or not.
        let files = OutputFiles::in_memory("http://augur.test");
        for url in [
            format!("{inside}/secret"),
            format!("http://localhost:{port}/secret"),
            format!("http://0x7f000001:{port}/secret"),
            format!("http://2130706433:{port}/secret"),
            format!("http://[::1]:{port}/secret"),
            "http://127.0.0.1:9/closed".to_owned(),
        ] {
            let err = files
                .import_urls(&id, Value::String(url.clone()))
                .await
                .unwrap_err();
            assert_eq!(err.reason, "refused: destination not allowed", "{url}");
        }
        // (Redirect hops are checked by the policy's redirect rule: see augur-outbound.)
        assert_eq!(files.delete_for(&id).await.unwrap(), 0);
    }

    #[test]
    fn urls_are_recognised_and_redacted() {
        assert!(is_web_url("https://x.test/a.png"));
        assert!(is_web_url("HTTP://x.test"));
        for not in [
            "see https://x.test",
            "https://",
            "ftp://x.test/a",
            "data:,x",
            "x",
        ] {
            assert!(!is_web_url(not), "{not}");
        }
        assert_eq!(
            redact_url("https://u:p@x.test/a/b.png?X-Amz-Signature=s#f"),
            "https://u:***@x.test/a/b.png?X-Amz-Signature=***#***"
        );
        assert_eq!(show_bytes(100 << 20), "100 MiB");
        assert_eq!(show_bytes(1536), "1.5 KiB");
        assert_eq!(show_bytes(12), "12 bytes");
        let url = url::Url::parse("https://x.test/files/out").unwrap();
        assert_eq!(file_name_for(&url, Some("image/webp")), "out.webp");
        assert_eq!(file_name_for(&url, Some("application/x-thing")), "out");
        let url = url::Url::parse("https://x.test/").unwrap();
        assert_eq!(file_name_for(&url, Some("audio/mpeg")), "output.mp3");
    }

    #[tokio::test]
    async fn uploaded_file_inputs_resolve_for_their_owner_only() {
        use augur_core::store::memory::MemoryStore;
        let records = Files::new(Arc::new(MemoryStore::new()));
        let files = OutputFiles::in_memory("http://augur.test/")
            .with_url_signer(UrlSigner::derived_from(&augur_core::Secret::new("admin")));
        let alice = AccountId::parse("alice").unwrap();
        let now = Timestamp::now();
        let file = FileObject {
            id: FileObject::generate_id(&alice),
            owner: alice.clone(),
            name: "cat.png".into(),
            content_type: "image/png".into(),
            size: 3,
            sha256: String::new(),
            created_at: now,
            expires_at: now.plus(Duration::from_secs(60)),
            metadata: Value::Null,
        };
        records.create(&file).await.unwrap();
        files
            .put_upload(
                &FileObject::object_key(&file.id),
                Bytes::from_static(b"png").into(),
            )
            .await
            .unwrap();
        let url = format!("http://augur.test/v1/files/{}", file.id);
        let input = serde_json::json!({"image": url, "list": [url], "text": "keep"});

        let inline = files
            .resolve_inputs(&records, &alice, input.clone(), FileInputs::DataUri)
            .await
            .unwrap();
        assert!(inline.local_copies.is_none());
        let inline = inline.input;
        assert_eq!(inline["image"], "data:image/png;base64,cG5n");
        assert_eq!(inline["list"][0], inline["image"]);
        assert_eq!(inline["text"], "keep");

        let local = files
            .resolve_inputs(&records, &alice, input.clone(), FileInputs::LocalPath)
            .await
            .unwrap();
        let path = std::path::PathBuf::from(local.input["image"].as_str().unwrap());
        assert_eq!(local.input["list"][0], local.input["image"]);
        assert_eq!(local.input["text"], "keep");
        assert!(path.is_absolute() && path.ends_with("cat.png"), "{path:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"png");
        drop(local);
        assert!(!path.exists(), "the local copy goes with the run");

        let fetched = files
            .resolve_inputs(&records, &alice, input.clone(), FileInputs::SignedUrl)
            .await
            .unwrap()
            .input;
        let signed = fetched["image"].as_str().unwrap();
        assert!(
            signed.starts_with(&format!("{url}/download?expiry="))
                && signed.contains("&owner=alice&signature="),
            "{signed}"
        );

        let bob = AccountId::parse("bob").unwrap();
        let err = files
            .resolve_inputs(&records, &bob, input, FileInputs::DataUri)
            .await
            .unwrap_err();
        assert!(err.contains("not found") && err.contains(&file.id), "{err}");
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("../../x.png"), "_.._x.png");
        assert_eq!(sanitize_name(".hidden"), "hidden");
        assert_eq!(sanitize_name("héllo wörld.txt"), "h_llo_w_rld.txt");
        assert_eq!(sanitize_name(""), "output");
    }
}
