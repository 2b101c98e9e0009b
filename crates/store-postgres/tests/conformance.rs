//! Runs the shared conformance suite against `PostgresStore`, each test in a fresh schema of
//! the database `AUGUR_TEST_POSTGRES_URL` names (skipped when it is unset, failed when
//! `AUGUR_STORE_TESTS_REQUIRED=1`).

mod common;

use std::sync::Arc;

use augur_core::store::DynStore;

async fn setup() -> Option<DynStore> {
    Some(Arc::new(common::store().await?))
}

augur_store_conformance::conformance_suite!(setup);
