//! Runs the shared conformance suite against `PostgresStore`, each test in a fresh schema of
//! the database `AUGUR_TEST_POSTGRES_URL` names (skipped when it is unset, failed when
//! `AUGUR_STORE_TESTS_REQUIRED=1`): once as it runs in production, and once with every write
//! on the general path (a pipelined transaction), never the fused statement that makes the
//! common writes, so that each path passes the whole suite on its own.

mod common;

use std::sync::Arc;

use augur_core::store::DynStore;

async fn setup() -> Option<DynStore> {
    Some(Arc::new(common::store().await?))
}

augur_store_conformance::conformance_suite!(setup);

/// The suite with every write on the general path.
mod general_path {
    use super::*;

    async fn setup() -> Option<DynStore> {
        Some(Arc::new(common::general_store().await?))
    }

    augur_store_conformance::conformance_suite!(setup);
}
