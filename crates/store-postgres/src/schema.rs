//! The schema's migrations (`migrations/NNNN_name.sql`, applied in order at connect) and the
//! connect-time checks: the schema version and whether commits are durable.
//!
//! Migrations run in one transaction under a transaction-scoped advisory lock keyed by the
//! schema name, so several nodes starting at once apply each migration exactly once: the
//! first takes the lock and migrates, the others wait for it, then find nothing to do. The
//! applied versions are recorded in `<schema>.schema_migrations`; a schema that a newer build
//! migrated further is refused.

use tokio_postgres::Client;

use crate::error::Error;

/// One migration: its version (the file's number), name and SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number, starting at 1, with no gaps.
    pub version: i64,
    /// Its file name without the number and extension.
    pub name: &'static str,
    /// The SQL, run with `search_path` set to the store's schema.
    pub sql: &'static str,
}

/// Every migration this build knows, in order. Never edit a released file: add a new one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "outbox",
        sql: include_str!("../migrations/0002_outbox.sql"),
    },
    Migration {
        version: 3,
        name: "contract_v2",
        sql: include_str!("../migrations/0003_contract_v2.sql"),
    },
    Migration {
        version: 4,
        name: "ledger_entry_key",
        sql: include_str!("../migrations/0004_ledger_entry_key.sql"),
    },
];

/// Creates the schema if missing and applies the migrations it has not seen, in one
/// transaction, under an advisory lock. Returns the number of migrations applied.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<usize, Error> {
    let txn = client.transaction().await?;
    // Keyed by the schema, so that schemas in one database migrate independently (tests run
    // many at once) while nodes sharing a schema take turns.
    txn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('augur-migrate:' || $1::text, 0))",
        &[&schema],
    )
    .await?;
    // The schema name is validated to be a plain lowercase identifier.
    // Migrations read and write whole tables: the planner's defaults, not the pool's settings
    // for keyed statements (`config::PLANNER_SETTINGS`).
    txn.batch_execute(&format!(
        "SET LOCAL enable_seqscan = on; SET LOCAL enable_hashjoin = on;
         SET LOCAL enable_mergejoin = on; SET LOCAL plan_cache_mode = auto;
         CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path = {schema};
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version    bigint PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let found: i64 = txn
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    let known = MIGRATIONS.len();
    if found > known as i64 {
        return Err(Error::SchemaTooNew {
            schema: schema.to_owned(),
            found,
            known,
        });
    }
    let mut applied = 0;
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        txn.batch_execute(migration.sql).await?;
        txn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await?;
        tracing::info!(
            schema,
            version = migration.version,
            name = migration.name,
            "applied schema migration"
        );
        applied += 1;
    }
    txn.commit().await?;
    Ok(applied)
}

/// Checks, without writing, that the schema is migrated exactly as far as this build knows:
/// what a read-only connection (to a standby) needs, as it cannot migrate.
pub(crate) async fn check(client: &Client, schema: &str) -> Result<(), Error> {
    // The schema name is validated to be a plain lowercase identifier.
    let found: i64 = client
        .query_one(
            &format!("SELECT COALESCE(max(version), 0) FROM {schema}.schema_migrations"),
            &[],
        )
        .await?
        .try_get(0)?;
    let known = MIGRATIONS.len();
    if found > known as i64 {
        return Err(Error::SchemaTooNew {
            schema: schema.to_owned(),
            found,
            known,
        });
    }
    if found < known as i64 {
        return Err(Error::SchemaTooOld {
            schema: schema.to_owned(),
            found,
            known,
        });
    }
    Ok(())
}

/// Whether a committed transaction is on stable storage before the commit returns: `fsync`
/// is on and `synchronous_commit` is not `off` for this session.
pub(crate) async fn commits_are_durable(client: &Client) -> Result<bool, Error> {
    let row = client
        .query_one(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit')",
            &[],
        )
        .await?;
    let fsync: String = row.try_get(0)?;
    let synchronous_commit: String = row.try_get(1)?;
    Ok(fsync == "on" && synchronous_commit != "off")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            let header = format!("-- {:04}: ", m.version);
            assert!(
                m.sql.starts_with(&header),
                "{} must start with {header:?}",
                m.name
            );
        }
    }
}
