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
}

impl StoreUrl {
    /// Parses a store URL, naming the problem when it is not one this binary can open.
    pub fn parse(url: &str) -> Result<Self> {
        let Some((scheme, _)) = url.split_once("://") else {
            bail!("store URL {url:?} has no scheme; use embedded://<dir> or memory://");
        };
        match scheme {
            "memory" => Ok(StoreUrl::Memory),
            "embedded" if cfg!(feature = "embedded") => Ok(StoreUrl::Embedded(url.to_owned())),
            "embedded" => {
                bail!("this augur binary was built without the embedded store (feature `embedded`)")
            }
            "redis" | "redis+cluster" | "postgres" | "postgresql" => bail!(
                "the {scheme} store is not available in this version of augur; use embedded://<dir> or memory://"
            ),
            other => bail!(
                "unknown store scheme {other:?} in {url:?}; use embedded://<dir> or memory://"
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
        #[cfg(not(feature = "embedded"))]
        StoreUrl::Embedded(_) => unreachable!("rejected by StoreUrl::parse"),
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
        for (bad, needle) in [
            ("./d", "no scheme"),
            ("mysql://x", "unknown store scheme"),
            ("redis://x", "not available"),
        ] {
            let err = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
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
