//! Runs the conformance suite against `CachedStore` over `MemoryStore`: the read cache must
//! keep every promise of the contract.

use std::sync::Arc;

use augur_core::store::DynStore;
use augur_core::store::cached::{CacheBudget, CachedStore};
use augur_core::store::memory::MemoryStore;

async fn setup() -> Option<DynStore> {
    Some(Arc::new(CachedStore::exclusive(
        Arc::new(MemoryStore::new()),
        CacheBudget::bytes(16 << 20),
    )))
}

augur_store_conformance::conformance_suite!(setup);
