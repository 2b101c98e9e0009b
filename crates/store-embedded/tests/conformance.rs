//! Runs the shared conformance suite against `EmbeddedStore`, each test in its own directory.

use std::sync::Arc;

use augur_core::store::DynStore;
use augur_store_embedded::{EmbeddedOptions, EmbeddedStore};

async fn setup() -> Option<DynStore> {
    // Leaked so the directory outlives the store (the test process cleans up nothing else).
    let dir = Box::leak(Box::new(tempfile::tempdir().expect("temp dir")));
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path())).expect("open store");
    Some(Arc::new(store))
}

augur_store_conformance::conformance_suite!(setup);
