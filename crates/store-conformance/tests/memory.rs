//! Runs the conformance suite against `MemoryStore`, so the suite itself is always exercised.

use std::sync::Arc;

use augur_core::store::DynStore;
use augur_core::store::memory::MemoryStore;

async fn setup() -> Option<DynStore> {
    Some(Arc::new(MemoryStore::new()))
}

augur_store_conformance::conformance_suite!(setup);
