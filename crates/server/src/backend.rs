//! Picks the store backend from the `AUGUR_STORE` URL: the only place that names backends.

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
}

impl StoreUrl {
    /// Parses a store URL, naming the problem when it is not one this binary can open.
    pub fn parse(url: &str) -> Result<Self> {
        let Some((scheme, _)) = url.split_once("://") else {
            bail!(
                "store URL {url:?} has no scheme; use embedded://<dir>, memory://, redis://… or postgres://…"
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
            other => bail!(
                "unknown store scheme {other:?} in {}; use embedded://<dir>, memory://, redis://… or postgres://…",
                redact_url(url)
            ),
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
        #[allow(unreachable_patterns)]
        _ => unreachable!("StoreUrl::parse refuses the backends this build lacks"),
    }
}

/// The URL with any password replaced by `redacted`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            let parsed = StoreUrl::parse(url);
            let built = match url.split_once(':').map(|(scheme, _)| scheme) {
                Some("redis" | "redis+cluster") => cfg!(feature = "redis"),
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
            "redis://:redacted@host:6379/0"
        );
        assert_eq!(redact_url("embedded://./d"), "embedded://./d");
    }
}
