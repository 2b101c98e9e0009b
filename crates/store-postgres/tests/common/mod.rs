//! Shared setup for this crate's tests: a store in a fresh schema of the test database
//! (`AUGUR_TEST_POSTGRES_URL`), whose schema is dropped again when the store is dropped.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use augur_core::forward_store;
use augur_store_postgres::{PostgresOptions, PostgresStore};
use tokio_postgres::NoTls;

/// The prefix of every schema the tests create.
const PREFIX: &str = "augur_test_";
/// Test schemas older than this are left over from killed runs, and dropped.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// The test database's URL, or `None` (a skip) when it is not configured.
pub(crate) fn url() -> Option<String> {
    augur_store_conformance::skip_unless_configured("AUGUR_TEST_POSTGRES_URL")
}

/// A schema name no other test uses: the creation time (for the stale sweep), the process
/// and a counter.
pub(crate) fn fresh_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "{PREFIX}{secs}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with `schema` as its schema (replacing any query the variable had).
pub(crate) fn url_with_schema(url: &str, schema: &str) -> String {
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    format!("{base}?schema={schema}")
}

/// A plain connection to the test database, for looking behind the store's back.
pub(crate) async fn raw_client(url: &str) -> tokio_postgres::Client {
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    let (client, connection) = tokio_postgres::connect(base, NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Drops the test schemas that runs killed before they could clean up left behind.
async fn drop_stale_schemas(url: &str) {
    let client = raw_client(url).await;
    let rows = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
            &[&PREFIX],
        )
        .await
        .expect("list test schemas");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for row in rows {
        let name: String = row.get(0);
        let created: Option<u64> = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse().ok());
        if created.is_some_and(|c| now.saturating_sub(c) > STALE_AFTER.as_secs()) {
            // Another process may be dropping it too.
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .await;
        }
    }
}

/// A store in a fresh schema, or `None` (a skip) when no database is configured.
pub(crate) async fn store() -> Option<TestStore> {
    open(false).await
}

/// Like [`store`], but every write takes the general path (a pipelined transaction), never
/// the fused statement.
pub(crate) async fn general_store() -> Option<TestStore> {
    open(true).await
}

async fn open(general_only: bool) -> Option<TestStore> {
    let url = url()?;
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT.get_or_init(|| drop_stale_schemas(&url)).await;
    let schema = fresh_schema();
    let options = PostgresOptions::from_url(&url_with_schema(&url, &schema)).expect("a valid URL");
    let inner = if general_only {
        PostgresStore::connect_general_only(options).await
    } else {
        PostgresStore::connect_with(options).await
    }
    .expect("connect to the test database");
    Some(TestStore {
        inner: Arc::new(inner),
        url,
    })
}

/// A [`PostgresStore`] that drops its schema when dropped.
#[derive(Debug)]
pub(crate) struct TestStore {
    pub(crate) inner: Arc<PostgresStore>,
    url: String,
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.inner.options().schema.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its
        // own runtime does the work, and is waited for so the process does not exit first.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let client = raw_client(&url).await;
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("cannot drop a test schema: {e}");
        }
    }
}

forward_store!(RecordStore for TestStore => inner);
forward_store!(QueueStore for TestStore => inner);
forward_store!(EventStore for TestStore => inner);
forward_store!(LedgerStore for TestStore => inner);
forward_store!(AdminStore for TestStore => inner);
