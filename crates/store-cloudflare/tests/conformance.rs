//! Runs the shared conformance suite against the Worker `AUGUR_TEST_CLOUDFLARE_URL` names,
//! each test in its own namespace.

mod common;

use augur_core::store::DynStore;

async fn setup() -> Option<DynStore> {
    common::store().await
}

augur_store_conformance::conformance_suite!(setup);
