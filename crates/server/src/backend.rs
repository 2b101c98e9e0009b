//! Picks the store backend from the `AUGUR_STORE` URL, and the object store for files from
//! `AUGUR_FILES_DIR` ([`FilesUrl`]): the only place that names backends.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};

use augur_core::store::DynStore;
use augur_core::store::memory::MemoryStore;

/// A parsed store URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory://`: nothing survives a restart.
    Memory,
    /// `embedded://<dir>[?sync=full|normal]`: the SQLite store in a data directory.
    Embedded(String),
    /// `redis://…` or `redis+cluster://…`: shared by many nodes.
    Redis(String),
    /// `postgres://…` or `postgresql://…`: shared by many nodes.
    Postgres(String),
    /// `cloudflare://…` or `cloudflare+http://…` (loopback only): Durable Objects through
    /// Augur's Worker, shared by many nodes.
    Cloudflare(String),
}

impl StoreUrl {
    /// Parses a store URL, naming the problem when it is not one this binary can open.
    pub fn parse(url: &str) -> Result<Self> {
        let Some((scheme, _)) = url.split_once("://") else {
            bail!(
                "store URL {:?} has no scheme; use embedded://<dir>, memory://, redis://…, postgres://… or cloudflare://…",
                redact_url(url)
            );
        };
        let missing = |feature: &str| {
            anyhow::anyhow!(
                "this augur binary was built without the {scheme} store; rebuild with `--features {feature}`"
            )
        };
        match scheme {
            "memory" => Ok(StoreUrl::Memory),
            "embedded" if cfg!(feature = "embedded") => Ok(StoreUrl::Embedded(url.to_owned())),
            "embedded" => Err(missing("embedded")),
            "redis" | "redis+cluster" if cfg!(feature = "redis") => {
                Ok(StoreUrl::Redis(url.to_owned()))
            }
            "redis" | "redis+cluster" => Err(missing("redis")),
            "postgres" | "postgresql" if cfg!(feature = "postgres") => {
                Ok(StoreUrl::Postgres(url.to_owned()))
            }
            "postgres" | "postgresql" => Err(missing("postgres")),
            #[cfg(feature = "cloudflare")]
            "cloudflare" | "cloudflare+http" => {
                // Checked here, so that `config check` names a missing secret or plain HTTP
                // to a remote host before anything connects.
                augur_store_cloudflare::CloudflareOptions::from_url(url)?;
                Ok(StoreUrl::Cloudflare(url.to_owned()))
            }
            #[cfg(not(feature = "cloudflare"))]
            "cloudflare" | "cloudflare+http" => Err(missing("cloudflare")),
            other => bail!(
                "unknown store scheme {other:?} in {}; use embedded://<dir>, memory://, redis://…, postgres://… or cloudflare://…",
                redact_url(url)
            ),
        }
    }
}

/// Where files (outputs and uploads) live, from `AUGUR_FILES_DIR`: a directory (a path or a
/// `file://` URL) or an S3-compatible bucket (`s3://bucket/prefix`, with the `s3` feature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilesUrl {
    /// A local directory.
    Local(PathBuf),
    /// An S3-compatible bucket and a key prefix (maybe empty).
    S3 {
        /// The bucket.
        bucket: String,
        /// Keys start with this (no leading or trailing `/`).
        prefix: String,
    },
}

impl FilesUrl {
    /// Parses a files location, naming the problem when this binary cannot use it (an unknown
    /// scheme, `s3://` without a bucket or without the `s3` feature) instead of taking it for
    /// a directory name.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        // Messages quote the location with its secrets masked.
        let shown = redact_url(text);
        let hint = "use a directory path, file:///abs/dir or s3://bucket/prefix";
        if text.is_empty() {
            bail!("the files location is empty; {hint}");
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            // `s3:bucket` and the like are malformed URLs, not directory names.
            if let Some((head, _)) = text.split_once(':')
                && !head.is_empty()
                && !head.contains('/')
                && head
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
            {
                bail!("files location {shown:?} looks like a URL without //; {hint}");
            }
            return Ok(FilesUrl::Local(PathBuf::from(text)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if !rest.starts_with('/') {
                    bail!("files location {shown:?} must be an absolute file:///path; {hint}");
                }
                Ok(FilesUrl::Local(PathBuf::from(rest)))
            }
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let valid_bucket = (3..=63).contains(&bucket.len())
                    && bucket.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b)
                    });
                if !valid_bucket {
                    bail!(
                        "files location {shown:?} needs a bucket name (3 to 63 lowercase letters, digits, '-' or '.'): s3://bucket/prefix"
                    );
                }
                if rest.contains(['?', '#']) {
                    bail!(
                        "files location {shown:?} takes no query or fragment; the endpoint, region and credentials come from the AWS_* variables"
                    );
                }
                if !cfg!(feature = "s3") {
                    bail!(
                        "this augur binary was built without S3 support; rebuild with `--features s3` to use {shown:?}"
                    );
                }
                Ok(FilesUrl::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.trim_matches('/').to_owned(),
                })
            }
            other => bail!("unsupported files location scheme {other:?} in {shown:?}; {hint}"),
        }
    }

    /// Opens the object store, its files served under `public_url`.
    pub fn open(&self, public_url: &str) -> Result<augur_engine::OutputFiles> {
        Ok(augur_engine::OutputFiles::new(
            self.object_store()?,
            public_url,
        ))
    }

    /// The raw object store (a local directory is created if missing): what `augur migrate`
    /// copies objects through.
    pub fn object_store(&self) -> Result<Arc<dyn object_store::ObjectStore>> {
        match self {
            FilesUrl::Local(dir) => Ok(augur_engine::OutputFiles::local_store(dir)?),
            #[cfg(feature = "s3")]
            FilesUrl::S3 { bucket, prefix } => {
                Ok(augur_engine::OutputFiles::s3_store(bucket, prefix)?)
            }
            #[cfg(not(feature = "s3"))]
            FilesUrl::S3 { .. } => bail!("this augur binary was built without S3 support"),
        }
    }

    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        match self {
            FilesUrl::Local(dir) => dir.display().to_string(),
            FilesUrl::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}"),
            FilesUrl::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

/// An opened store and, for stores with one, their data directory.
#[derive(Debug)]
pub struct OpenedStore {
    /// The store.
    pub store: DynStore,
    /// Where the store keeps its files (the admin token and output files go beside them).
    pub data_dir: Option<PathBuf>,
}

/// Opens (connects to) the store named by `url`.
pub async fn open(url: &str) -> Result<OpenedStore> {
    match StoreUrl::parse(url)? {
        StoreUrl::Memory => Ok(OpenedStore {
            store: Arc::new(MemoryStore::new()),
            data_dir: None,
        }),
        #[cfg(feature = "embedded")]
        StoreUrl::Embedded(url) => {
            let store = augur_store_embedded::EmbeddedStore::open_url(&url)?;
            let data_dir = store.options().dir().to_path_buf();
            Ok(OpenedStore {
                store: Arc::new(store),
                data_dir: Some(data_dir),
            })
        }
        #[cfg(feature = "postgres")]
        StoreUrl::Postgres(url) => Ok(OpenedStore {
            store: Arc::new(augur_store_postgres::PostgresStore::connect(&url).await?),
            data_dir: None,
        }),
        #[cfg(feature = "redis")]
        StoreUrl::Redis(url) => Ok(OpenedStore {
            store: Arc::new(augur_store_redis::RedisStore::connect(&url).await?),
            data_dir: None,
        }),
        #[cfg(feature = "cloudflare")]
        StoreUrl::Cloudflare(url) => Ok(OpenedStore {
            store: Arc::new(augur_store_cloudflare::CloudflareStore::connect(&url).await?),
            data_dir: None,
        }),
        #[allow(unreachable_patterns)]
        _ => unreachable!("StoreUrl::parse refuses the backends this build lacks"),
    }
}

/// Opens a store only to read from it (the fallback store): Redis and PostgreSQL connect
/// without writing anything, so that a read-only replica or a hot standby can be opened.
/// The embedded, memory and Cloudflare stores are opened as usual (a file is never read-only
/// replicated; connecting to the Worker writes nothing).
pub async fn open_read_only(url: &str) -> Result<DynStore> {
    match StoreUrl::parse(url)? {
        #[cfg(feature = "postgres")]
        StoreUrl::Postgres(url) => Ok(Arc::new(
            augur_store_postgres::PostgresStore::connect_read_only(&url).await?,
        )),
        #[cfg(feature = "redis")]
        StoreUrl::Redis(url) => Ok(Arc::new(
            augur_store_redis::RedisStore::connect_read_only(&url).await?,
        )),
        _ => Ok(open(url).await?.store),
    }
}

/// The URL with its secrets masked ([`augur_core::redact::url`]).
pub fn redact_url(url: &str) -> String {
    augur_core::redact::url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_locations_parse_or_name_the_problem() {
        assert_eq!(
            FilesUrl::parse("./data/files").unwrap(),
            FilesUrl::Local("./data/files".into())
        );
        assert_eq!(
            FilesUrl::parse("file:///srv/files").unwrap(),
            FilesUrl::Local("/srv/files".into())
        );
        for (bad, says) in [
            ("s3:bucket", "without //"),
            ("gs://bucket/x", "unsupported files location scheme"),
            ("s3://", "needs a bucket"),
            ("s3://UPPER/x", "needs a bucket"),
            ("s3://bucket/x?region=y", "no query"),
            ("file://relative", "absolute"),
            ("", "empty"),
        ] {
            let err = FilesUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let s3 = FilesUrl::parse("s3://my-bucket/a/b/");
        if cfg!(feature = "s3") {
            assert_eq!(
                s3.unwrap(),
                FilesUrl::S3 {
                    bucket: "my-bucket".into(),
                    prefix: "a/b".into()
                }
            );
        } else {
            assert!(s3.unwrap_err().to_string().contains("--features s3"));
        }
    }

    #[test]
    fn urls_pick_backends_or_explain() {
        assert_eq!(StoreUrl::parse("memory://").unwrap(), StoreUrl::Memory);
        assert!(matches!(
            StoreUrl::parse("embedded://./d").unwrap(),
            StoreUrl::Embedded(_)
        ));
        for (bad, needle) in [("./d", "no scheme"), ("mysql://x", "unknown store scheme")] {
            let err = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        for url in [
            "redis://h:6379/0",
            "redis+cluster://a:1,b:2",
            "postgres://u@h/db",
            "cloudflare://:s@w.example/",
            "cloudflare+http://:s@127.0.0.1:8787/",
        ] {
            let parsed = StoreUrl::parse(url);
            let built = match url.split_once(':').map(|(scheme, _)| scheme) {
                Some("redis" | "redis+cluster") => cfg!(feature = "redis"),
                Some("cloudflare" | "cloudflare+http") => cfg!(feature = "cloudflare"),
                _ => cfg!(feature = "postgres"),
            };
            match parsed {
                Ok(_) => assert!(built, "{url} accepted without its feature"),
                Err(e) => {
                    assert!(!built, "{url}: {e}");
                    assert!(e.to_string().contains("--features"), "{url}: {e}");
                }
            }
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:pw@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redact_url("embedded://./d"), "embedded://./d");
        assert_eq!(
            redact_url("cloudflare://:pw@w.example/?namespace=n&secret=pw2&timeout=5"),
            "cloudflare://:***@w.example/?namespace=n&secret=***&timeout=5"
        );
    }
}
