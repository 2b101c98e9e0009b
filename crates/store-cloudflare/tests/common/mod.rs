//! Shared by the Cloudflare store's test binaries: the Worker's URL with a fresh namespace per
//! test (a namespace is one installation's Durable Objects; tests never clean up, and the
//! local Worker's state goes with it).

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::sync::Arc;

use augur_core::PredictionId;
use augur_core::store::DynStore;
use augur_store_cloudflare::CloudflareStore;

/// The variable naming a running Worker: a complete store URL, secret included.
pub(crate) const VAR: &str = "AUGUR_TEST_CLOUDFLARE_URL";

/// `url` with its `namespace` option replaced by `namespace`.
pub(crate) fn with_namespace(url: &str, namespace: &str) -> String {
    let (main, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("namespace="))
        .collect();
    let ns = format!("namespace={namespace}");
    pairs.push(&ns);
    format!("{main}?{}", pairs.join("&"))
}

/// A fresh namespace for one test.
pub(crate) fn fresh_namespace() -> String {
    format!("t-{}", PredictionId::generate())
}

/// The Worker's URL with a fresh namespace, or `None` (a skip) when it is unset.
pub(crate) fn fresh_url() -> Option<String> {
    let url = augur_store_conformance::skip_unless_configured(VAR)?;
    Some(with_namespace(&url, &fresh_namespace()))
}

/// A store on a fresh namespace, or `None` (a skip).
pub(crate) async fn store() -> Option<DynStore> {
    let url = fresh_url()?;
    let store = CloudflareStore::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {VAR}: {e}"));
    Some(Arc::new(store))
}
