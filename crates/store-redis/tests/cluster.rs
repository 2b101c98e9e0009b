//! Runs the shared conformance suite against a Redis Cluster
//! (`AUGUR_TEST_REDIS_CLUSTER_URL`), each test under its own key prefix.

mod common;

use augur_core::store::DynStore;

async fn setup() -> Option<DynStore> {
    common::store("AUGUR_TEST_REDIS_CLUSTER_URL").await
}

augur_store_conformance::conformance_suite!(setup);
