//! The database schema (an ordered list of migrations, versioned with `PRAGMA user_version`),
//! the connection pragmas, and opening the write and read connections.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::config::SyncMode;
use crate::error::Error;

/// The schema, one migration per entry, applied in order at open. Entry `i` takes the database
/// from `user_version = i` to `i + 1`. Never edit a released entry: append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: predictions, jobs, idempotency keys, counters.
    "
    -- One row per prediction. `body` is the whole record (augur_core::Prediction as JSON); the
    -- other columns repeat the fields that queries filter or sort on.
    CREATE TABLE predictions (
        id           TEXT PRIMARY KEY NOT NULL,
        owner        TEXT NOT NULL,
        model        TEXT NOT NULL,
        status       TEXT NOT NULL,
        created_at   INTEGER NOT NULL,           -- microseconds since the Unix epoch
        expires_at   INTEGER,                    -- when retention removes the data; NULL: never
        data_removed INTEGER NOT NULL DEFAULT 0, -- 1 once retention left a tombstone
        revision     INTEGER NOT NULL,           -- compare-and-set version, 1 on insert
        body         TEXT NOT NULL
    ) STRICT;
    -- Listing, newest first: one account's predictions, and everyone's.
    CREATE INDEX predictions_by_owner ON predictions (owner, created_at DESC, id DESC);
    CREATE INDEX predictions_by_created ON predictions (created_at DESC, id DESC);
    -- The retention sweep: only records that still hold data and have an expiry.
    CREATE INDEX predictions_by_expiry ON predictions (expires_at)
        WHERE data_removed = 0 AND expires_at IS NOT NULL;

    -- The work queue: at most one job per prediction. A job is claimable once
    -- visible_at <= now; visible_at is run_at while unleased and the lease expiry while leased,
    -- so a lapsed lease needs no sweeping. seq breaks ties first in, first out.
    CREATE TABLE jobs (
        prediction_id TEXT PRIMARY KEY NOT NULL,
        queue         TEXT NOT NULL,
        attempts      INTEGER NOT NULL,
        run_at        INTEGER NOT NULL,
        visible_at    INTEGER NOT NULL,
        seq           INTEGER NOT NULL,
        lease_token   INTEGER,                   -- NULL: not leased
        lease_worker  TEXT
    ) STRICT;
    CREATE INDEX jobs_by_visibility ON jobs (visible_at, seq);

    -- Idempotency keys, per account.
    CREATE TABLE idempotency_keys (
        owner         TEXT NOT NULL,
        key           TEXT NOT NULL,
        fingerprint   TEXT NOT NULL,
        prediction_id TEXT NOT NULL,
        expires_at    INTEGER NOT NULL,
        PRIMARY KEY (owner, key)
    ) STRICT;
    CREATE INDEX idempotency_keys_by_prediction ON idempotency_keys (prediction_id);
    CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);

    -- Durable counters, changed by Effect::Count.
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL
    ) STRICT;
    ",
    // 2: the webhook outbox and the per-prediction event log.
    "
    -- One row per webhook message, in each prediction's order (seq). A prediction's messages
    -- go out one at a time: only its oldest pending message, the head, may be claimed, and
    -- only the head has claimable_at = max(next_attempt_at, lease_expires_at), so a claim
    -- reads due heads off one partial index and never walks the messages queued behind them.
    CREATE TABLE deliveries (
        prediction_id    TEXT NOT NULL,
        seq              INTEGER NOT NULL,       -- place in the prediction's outbox, from 1
        id               TEXT NOT NULL,          -- the message id (webhook-id)
        url              TEXT NOT NULL,
        event            TEXT NOT NULL,          -- start | output | logs | completed
        payload          TEXT NOT NULL,          -- the prediction as JSON, as in predictions.body
        created_at       INTEGER NOT NULL,       -- microseconds since the Unix epoch
        status           TEXT NOT NULL,          -- pending | delivered | failed
        attempts         TEXT NOT NULL,          -- JSON array of attempts, oldest first
        next_attempt_at  INTEGER,                -- while pending
        lease_token      INTEGER,                -- NULL: not leased
        lease_worker     TEXT,
        lease_expires_at INTEGER,
        claimable_at     INTEGER,                -- the head only; NULL for every other row
        PRIMARY KEY (prediction_id, seq),
        UNIQUE (prediction_id, id)
    ) STRICT;
    -- The claim: due heads, earliest first.
    CREATE INDEX deliveries_by_claimable ON deliveries (claimable_at)
        WHERE claimable_at IS NOT NULL;
    -- A prediction's head (to move it), and its oldest pending message (the next head).
    CREATE INDEX deliveries_head ON deliveries (prediction_id)
        WHERE claimable_at IS NOT NULL;
    CREATE INDEX deliveries_pending ON deliveries (prediction_id, seq)
        WHERE status = 'pending';

    -- Each prediction's event log, at (revision of the write that appended it, index in it).
    CREATE TABLE events (
        prediction_id TEXT NOT NULL,
        revision      INTEGER NOT NULL,
        idx           INTEGER NOT NULL,
        kind          TEXT NOT NULL,             -- output | logs | error | done
        data          TEXT NOT NULL,
        PRIMARY KEY (prediction_id, revision, idx)
    ) STRICT, WITHOUT ROWID;
    ",
];

/// WAL pages after which a commit runs a passive checkpoint (SQLite's default is 1000). The
/// reference measurements found 10,000 (about 40 MB of log) doubles durable batched writes.
const WAL_AUTOCHECKPOINT: i64 = 10_000;
/// Bytes of the database mapped into memory for reads.
const MMAP_SIZE: i64 = 256 << 20;
/// Page cache of the write connection, in KiB (negative `cache_size` means KiB).
const WRITER_CACHE_KIB: i64 = 16 << 10;
/// Page cache of each read connection, in KiB; reads mostly go through the shared mmap.
const READER_CACHE_KIB: i64 = 16 << 10;
/// How long a statement waits for a lock held elsewhere before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Cached prepared statements per connection (the list query alone has 32 shapes).
const STATEMENT_CACHE: usize = 64;

/// Opens (creating if needed) the write connection, sets its pragmas and migrates the schema.
pub(crate) fn open_writer(path: &Path, sync: SyncMode) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    stable_plans(&conn)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // `journal_mode` returns the resulting mode; WAL is persistent once set.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Config(format!(
            "{} cannot use write-ahead logging (journal mode is {mode})",
            path.display()
        )));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};
         PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT};
         PRAGMA cache_size = -{WRITER_CACHE_KIB};
         PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = OFF;",
        sync.pragma()
    ))?;
    set_mmap(&conn)?;
    migrate(&conn, path)?;
    Ok(conn)
}

/// Opens a read-only connection to an existing database.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    stable_plans(&conn)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{READER_CACHE_KIB};"))?;
    set_mmap(&conn)?;
    Ok(conn)
}

/// Keeps each cached statement's query plan across executions. Without it SQLite compiles a
/// statement again on every run whose bound values could change the plan (those that may use
/// a partial index, like the outbox's head queries): a profile of the webhook benchmark found
/// the writer spending about a third of its time recompiling two statements.
fn stable_plans(conn: &Connection) -> Result<(), Error> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

fn set_mmap(conn: &Connection) -> Result<(), Error> {
    // Returns the new limit as a row (none when mmap is compiled out), so query, not execute.
    let mut stmt = conn.prepare(&format!("PRAGMA mmap_size = {MMAP_SIZE}"))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// Applies the migrations the database has not seen, each in its own transaction.
fn migrate(conn: &Connection, path: &Path) -> Result<(), Error> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len();
    let Ok(start) = usize::try_from(found) else {
        return Err(Error::OutOfRange {
            what: "schema version",
            value: found,
        });
    };
    if start > known {
        return Err(Error::SchemaTooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        let version = index + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
        ))
        .inspect_err(|_| {
            // Leave no half-applied migration behind; the error says what failed.
            let _ = conn.execute_batch("ROLLBACK");
        })?;
        tracing::info!(path = %path.display(), version, "applied schema migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_refuse_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = open_writer(&path, SyncMode::Normal).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        drop(conn);
        // Reopening applies nothing again.
        let conn = open_writer(&path, SyncMode::Full).unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        let err = open_writer(&path, SyncMode::Full).unwrap_err();
        assert!(
            matches!(err, Error::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn queries_use_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("t.db"), SyncMode::Normal).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            rows.join("; ")
        };
        let owner = plan(
            "SELECT body FROM predictions WHERE owner = 'a' AND (created_at, id) < (1, 'x') \
             ORDER BY created_at DESC, id DESC LIMIT 5",
        );
        assert!(owner.contains("predictions_by_owner"), "{owner}");
        assert!(!owner.contains("TEMP B-TREE"), "{owner}");
        let all = plan(
            "SELECT body FROM predictions WHERE (created_at, id) < (1, 'x') \
             ORDER BY created_at DESC, id DESC LIMIT 5",
        );
        assert!(all.contains("predictions_by_created"), "{all}");
        assert!(!all.contains("TEMP B-TREE"), "{all}");
        let sweep = plan(
            "SELECT id FROM predictions WHERE data_removed = 0 AND expires_at IS NOT NULL \
             AND expires_at <= 5 ORDER BY expires_at LIMIT 10",
        );
        assert!(sweep.contains("predictions_by_expiry"), "{sweep}");
        let claim = plan("SELECT * FROM jobs WHERE visible_at <= 5 ORDER BY visible_at, seq");
        assert!(claim.contains("jobs_by_visibility"), "{claim}");
        assert!(!claim.contains("TEMP B-TREE"), "{claim}");

        // The outbox (the statements of `outbox`).
        let heads =
            plan("SELECT * FROM deliveries WHERE claimable_at <= 5 ORDER BY claimable_at LIMIT 10");
        assert!(heads.contains("deliveries_by_claimable"), "{heads}");
        assert!(!heads.contains("TEMP B-TREE"), "{heads}");
        let head = plan(
            "UPDATE deliveries SET claimable_at = NULL \
             WHERE prediction_id = 'p' AND claimable_at IS NOT NULL",
        );
        assert!(head.contains("deliveries_head"), "{head}");
        let next = plan(
            "SELECT MIN(seq) FROM deliveries WHERE prediction_id = 'p' AND status = 'pending'",
        );
        assert!(next.contains("deliveries_pending"), "{next}");
        let recovery = plan(
            "UPDATE deliveries SET lease_token = NULL \
             WHERE claimable_at > 5 AND lease_token IS NOT NULL",
        );
        assert!(recovery.contains("deliveries_by_claimable"), "{recovery}");
        let events = plan(
            "SELECT * FROM events WHERE prediction_id = 'p' AND (revision, idx) > (1, 0) \
             ORDER BY revision, idx LIMIT 10",
        );
        assert!(events.contains("PRIMARY KEY"), "{events}");
        assert!(!events.contains("TEMP B-TREE"), "{events}");
    }

    #[test]
    fn a_version_1_database_gains_the_outbox_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            // A database as the first release left it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!("{}\nPRAGMA user_version = 1;", MIGRATIONS[0]))
                .unwrap();
            conn.execute("INSERT INTO counters (name, value) VALUES ('made', 3)", [])
                .unwrap();
        }
        let conn = open_writer(&path, SyncMode::Full).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let made: i64 = conn
            .query_row("SELECT value FROM counters WHERE name = 'made'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(made, 3);
        for table in ["deliveries", "events"] {
            let rows: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(rows, 0, "{table}");
        }
    }
}
