//! The database schema (an ordered list of migrations, versioned with `PRAGMA user_version`),
//! the connection pragmas, and opening the write and read connections.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::config::SyncMode;
use crate::error::Error;

/// The Rust part of a migration.
pub(crate) type Step = fn(&Connection) -> Result<(), Error>;

/// One step of the schema: SQL, then optionally Rust code in the same transaction (for data
/// that SQL alone cannot reshape, such as splitting a JSON document the way `augur_core` does).
pub(crate) struct Migration {
    /// Runs first.
    pub(crate) sql: &'static str,
    /// Runs after `sql`, before the version is recorded.
    pub(crate) then: Option<Step>,
}

/// The schema, one migration per entry, applied in order at open. Entry `i` takes the database
/// from `user_version = i` to `i + 1`. Never edit a released entry: append a new one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    // 1: predictions, jobs, idempotency keys, counters.
    Migration {
        sql: "
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
        then: None,
    },
    // 2: the webhook outbox and the per-prediction event log.
    Migration {
        sql: "
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
        then: None,
    },
    // 3: storage contract v2. Records of every kind in one table, one leased queue with lanes,
    // event logs keyed by their record, ledgers. Version 2's data moves in (`upgrade::from_v2`,
    // in Rust: a prediction's JSON is split into body and data as `augur_core` does it), then
    // the old tables go.
    Migration {
        sql: "
    ALTER TABLE events RENAME TO events_v2;

    -- One row per record of any kind (`Kind::as_str`). `body` and `data` are JSON the store
    -- never reads; the other columns are what listings, lookups and retention use. Times are
    -- microseconds since the Unix epoch.
    CREATE TABLE records (
        kind         TEXT NOT NULL,
        id           TEXT NOT NULL,
        partition    INTEGER NOT NULL,           -- the key's partition, handed back as stored
        owner        TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        status       TEXT,
        parent       TEXT,
        expires_at   INTEGER,
        data_removed INTEGER NOT NULL,
        revision     INTEGER NOT NULL,           -- compare-and-set version, 1 on insert
        body         TEXT NOT NULL,
        data         TEXT,                       -- NULL once retention removed it
        gone_at      INTEGER,                    -- kinds deleted on expiry: absent from then on
        sweep_at     INTEGER,                    -- when retention still has to act; NULL once done
        UNIQUE (kind, id)
    ) STRICT;
    -- Listings, newest first (scanned backwards). The list picks the index with INDEXED BY,
    -- so its plan never depends on statistics: by parent, by owner and status, by owner, else
    -- by creation time (a status filter without an owner, which no caller makes today, scans
    -- that: an index for it would cost every create and status change).
    CREATE INDEX records_by_created ON records (kind, created_at, id);
    CREATE INDEX records_by_owner ON records (kind, owner, created_at, id);
    CREATE INDEX records_by_owner_status ON records (kind, owner, status, created_at, id)
        WHERE status IS NOT NULL;
    CREATE INDEX records_by_parent ON records (kind, parent, created_at, id)
        WHERE parent IS NOT NULL;
    -- Retention: only records it still has to act on.
    CREATE INDEX records_by_sweep ON records (sweep_at) WHERE sweep_at IS NOT NULL;

    -- The leased queue: every lane's items. A group's items (those of one record) go out one
    -- at a time in `seq` order: only the group's head, its oldest pending item, is a claim
    -- candidate, and only the head has `ready_rank` (claimable now: due and unleased) or
    -- `wake_at` (claimable from then: due later, or leased until then). A claim moves due
    -- `wake_at` heads to `ready_rank` and takes the lowest ranks, each off a partial index that
    -- holds nothing else: leased items, items due later and items queued behind a head cost a
    -- claim nothing.
    CREATE TABLE items (
        lane             TEXT NOT NULL,          -- Lane::as_str
        id               TEXT NOT NULL,
        group_kind       TEXT NOT NULL,          -- the record the item belongs to
        group_id         TEXT NOT NULL,
        group_partition  INTEGER NOT NULL,
        topic            TEXT NOT NULL,
        owner            TEXT NOT NULL,
        payload          TEXT NOT NULL,
        seq              INTEGER NOT NULL,       -- place in the group, from 1
        status           TEXT NOT NULL,          -- pending | done | failed
        claims           INTEGER NOT NULL,
        attempts         TEXT NOT NULL,          -- JSON array, oldest first
        due_at           INTEGER,                -- while pending
        created_at       INTEGER NOT NULL,
        rank             INTEGER NOT NULL,       -- fair-queuing rank, given when queued
        lease_token      INTEGER,                -- NULL: not leased
        lease_worker     TEXT,
        lease_expires_at INTEGER,
        ready_rank       INTEGER,                -- the head, claimable now: its rank
        wake_at          INTEGER,                -- the head, claimable from this time
        UNIQUE (lane, id)
    ) STRICT;
    -- A group's items by status and place: its head (the first pending one), its last seq, its
    -- delivery log; and a lane's pending items (statistics).
    CREATE INDEX items_by_group ON items (lane, status, group_kind, group_id, seq);
    -- The claim: claimable heads, lowest rank first (ties in the order queued, by rowid); and
    -- the same by topic, for claims that exclude topics with many claimable items.
    CREATE INDEX items_ready ON items (lane, ready_rank) WHERE ready_rank IS NOT NULL;
    CREATE INDEX items_ready_by_topic ON items (lane, topic, ready_rank)
        WHERE ready_rank IS NOT NULL;
    -- Heads that become claimable by time alone, earliest first.
    CREATE INDEX items_waking ON items (lane, wake_at) WHERE wake_at IS NOT NULL;

    -- Fair queuing (start-time fair queuing, see augur_core::store::queue): per lane and topic,
    -- the last rank given to each account's items, and in the row with owner '' (no account
    -- id is empty) the clock, the highest rank claimed. An item's rank is one more than the
    -- larger of its account's row and the clock.
    CREATE TABLE queue_ranks (
        lane  TEXT NOT NULL,
        topic TEXT NOT NULL,
        owner TEXT NOT NULL,
        rank  INTEGER NOT NULL,
        PRIMARY KEY (lane, topic, owner)
    ) STRICT, WITHOUT ROWID;

    -- Each record's event log, at (revision of the write that appended it, index in it).
    CREATE TABLE events (
        stream_kind      TEXT NOT NULL,
        stream_id        TEXT NOT NULL,
        stream_partition INTEGER NOT NULL,
        revision         INTEGER NOT NULL,
        idx              INTEGER NOT NULL,
        kind             TEXT NOT NULL,          -- output | logs | error | done
        data             TEXT NOT NULL,
        PRIMARY KEY (stream_kind, stream_id, revision, idx)
    ) STRICT, WITHOUT ROWID;

    -- Each account's ledger, with the totals right after every entry, and its current totals.
    CREATE TABLE ledger (
        account   TEXT NOT NULL,
        seq       INTEGER NOT NULL,              -- from 1 per account
        id        TEXT NOT NULL,                 -- unique per account: a repeat is skipped
        delta     INTEGER NOT NULL,
        held      INTEGER NOT NULL,
        reason    TEXT NOT NULL,
        reference TEXT,
        memo      TEXT,
        at        INTEGER NOT NULL,
        balance   INTEGER NOT NULL,              -- totals after this entry
        reserved  INTEGER NOT NULL,
        PRIMARY KEY (account, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE UNIQUE INDEX ledger_ids ON ledger (account, id);
    CREATE TABLE ledger_totals (
        account  TEXT PRIMARY KEY NOT NULL,
        balance  INTEGER NOT NULL,
        reserved INTEGER NOT NULL,
        seq      INTEGER NOT NULL                -- the last entry's
    ) STRICT, WITHOUT ROWID;
    ",
        then: Some(crate::upgrade::from_v2),
    },
    // 4: ledger entries stored in the order they are posted. Keyed by `(account, seq)` and
    // `(account, id)`, one group commit's postings of many accounts touched a leaf page of each
    // per account, every one written whole to the log (a priced lifecycle over 64 accounts
    // wrote twice the bytes of a free one). Now the rows append, the entry-id index is led by
    // the id (a prediction's entries are named after its time-ordered id, so they append too),
    // and only the small `(account, seq)` index stays spread over the accounts.
    Migration {
        sql: "
    CREATE TABLE ledger_v4 (
        posting   INTEGER PRIMARY KEY,           -- the order entries were posted in, store-wide
        account   TEXT NOT NULL,
        seq       INTEGER NOT NULL,              -- from 1 per account
        id        TEXT NOT NULL,                 -- unique per account: a repeat is skipped
        delta     INTEGER NOT NULL,
        held      INTEGER NOT NULL,
        reason    TEXT NOT NULL,
        reference TEXT,
        memo      TEXT,
        at        INTEGER NOT NULL,
        balance   INTEGER NOT NULL,              -- totals after this entry
        reserved  INTEGER NOT NULL
    ) STRICT;
    INSERT INTO ledger_v4 (account, seq, id, delta, held, reason, reference, memo, at, balance,
        reserved)
        SELECT account, seq, id, delta, held, reason, reference, memo, at, balance, reserved
        FROM ledger ORDER BY at, account, seq;
    DROP TABLE ledger;
    ALTER TABLE ledger_v4 RENAME TO ledger;
    CREATE UNIQUE INDEX ledger_by_seq ON ledger (account, seq);
    CREATE UNIQUE INDEX ledger_by_id ON ledger (id, account);
    ",
        then: None,
    },
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
/// Cached prepared statements per connection (the list query alone has up to 96 shapes).
const STATEMENT_CACHE: usize = 160;

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
/// a partial index, like the queue's claims): a profile of the webhook benchmark found the
/// writer spending about a third of its time recompiling two statements (of schema 2's outbox).
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
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(start) {
        let version = index + 1;
        apply(conn, migration, version).inspect_err(|_| {
            // Leave no half-applied migration behind; the error says what failed.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        })?;
        tracing::info!(path = %path.display(), version, "applied schema migration");
    }
    Ok(())
}

/// Applies one migration and records `version`, all in one transaction.
fn apply(conn: &Connection, migration: &Migration, version: usize) -> Result<(), Error> {
    conn.execute_batch(&format!("BEGIN IMMEDIATE;\n{}", migration.sql))?;
    if let Some(then) = migration.then {
        then(conn)?;
    }
    conn.execute_batch(&format!("PRAGMA user_version = {version};\nCOMMIT;"))?;
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

    /// The plan of `sql` (its `EXPLAIN QUERY PLAN` details, joined).
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // Parameters stay unbound (NULL): a plan does not depend on them.
        let mut rows = stmt.raw_query();
        let mut details = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            details.push(row.get::<_, String>(3).unwrap());
        }
        details.join("; ")
    }

    #[test]
    fn queries_use_the_indexes() {
        use crate::queue;
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("t.db"), SyncMode::Normal).unwrap();
        let uses = |sql: &str, index: &str| {
            let plan = plan(&conn, sql);
            assert!(plan.contains(index), "{sql}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
            assert!(
                !plan.contains("SCAN items") && !plan.contains("SCAN records"),
                "{sql}: {plan}"
            );
        };
        // Records.
        uses(crate::ops::GET_RECORD, "sqlite_autoindex_records_1");
        uses(
            "SELECT revision, gone_at FROM records WHERE kind = 'k' AND id = 'i'",
            "sqlite_autoindex_records_1",
        );
        uses(
            "SELECT kind, id, partition FROM records WHERE sweep_at <= 5 ORDER BY sweep_at LIMIT 10",
            "records_by_sweep",
        );
        for (index, filter) in [
            ("records_by_created", ""),
            ("records_by_owner", "AND owner = 'o'"),
            ("records_by_created", "AND status = 's'"),
            (
                "records_by_owner_status",
                "AND owner = 'o' AND status = 's'",
            ),
            (
                "records_by_parent",
                "AND parent = 'p' AND owner = 'o' AND status = 's'",
            ),
        ] {
            uses(
                &format!(
                    "SELECT body FROM records INDEXED BY {index} WHERE kind = 'k' {filter} \
                     AND created_at >= 0 AND created_at < 9 AND (created_at, id) < (5, 'x') \
                     AND (gone_at IS NULL OR gone_at > 3) \
                     ORDER BY created_at DESC, id DESC LIMIT 5"
                ),
                index,
            );
        }
        // The queue: every statement touches only the rows it is about.
        for (sql, index) in [
            (queue::PROMOTE, "items_waking"),
            (queue::CANDIDATES, "items_ready"),
            (queue::NEXT_READY_TOPIC, "items_ready_by_topic"),
            (queue::TOPIC_CANDIDATES, "items_ready_by_topic"),
            (queue::PLACEMENT, "items_by_group"),
            (queue::PLACEMENT, "queue_ranks"),
            (queue::FIND_HEAD, "items_by_group"),
            (queue::CLEAR_HEADS, "items_by_group"),
            (queue::ITEM_TO_REMOVE, "sqlite_autoindex_items_1"),
            (queue::ITEM_TO_REMOVE, "items_by_group"),
            (queue::ANY_WAKING, "items_waking"),
            (queue::REMOVE_GROUP, "items_by_group"),
            (queue::REMOVE_FINISHED, "items_by_group"),
            (queue::RENEW, "sqlite_autoindex_items_1"),
            (queue::HELD, "sqlite_autoindex_items_1"),
            (queue::GROUP_ITEMS, "items_by_group"),
            (queue::STATS, "items_by_group"),
            (queue::RECOVER, "items_waking"),
            (queue::EXPORT, "sqlite_autoindex_items_1"),
        ] {
            let plan = plan(&conn, sql);
            assert!(plan.contains(index), "{sql}: {plan}");
            assert!(!plan.contains("SCAN items"), "{sql}: {plan}");
        }
        // Claims take the lowest ranks straight off the index, without sorting.
        for sql in [
            queue::CANDIDATES,
            queue::NEXT_READY_TOPIC,
            queue::TOPIC_CANDIDATES,
        ] {
            let plan = plan(&conn, sql);
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
        // Events and ledgers.
        uses(
            "SELECT * FROM events WHERE stream_kind = 'k' AND stream_id = 'p' \
             AND (revision, idx) > (1, 0) ORDER BY revision, idx LIMIT 10",
            "PRIMARY KEY",
        );
        uses(
            "SELECT * FROM ledger WHERE account = 'a' AND seq < 9 ORDER BY seq DESC LIMIT 10",
            "ledger_by_seq",
        );
        uses(
            "SELECT * FROM ledger WHERE (account, seq) > ('a', 1) ORDER BY account, seq LIMIT 10",
            "ledger_by_seq",
        );
        uses(
            "SELECT 1 FROM ledger WHERE account = 'a' AND id = 'i'",
            "ledger_by_id",
        );
    }

    /// The statements every lifecycle runs (the queue's part of a create, a claim and a
    /// settlement) open no temporary table: SQLite gives each one (an `IN` list, the rows of a
    /// `RETURNING`, the rows an `UPDATE` of its own index's column collects) a page cache of
    /// its own, set up and zeroed at every run, which cost these statements more than their
    /// seeks.
    #[test]
    fn the_queue_statements_of_a_lifecycle_open_no_temporary_table() {
        use crate::queue;
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("t.db"), SyncMode::Full).unwrap();
        for sql in [
            queue::PLACEMENT,
            queue::INSERT_ITEM,
            queue::RANKED,
            queue::RANKED_AND_CLAIMED,
            queue::ITEM_TO_REMOVE,
            queue::DELETE_ITEM,
            queue::SET_HEAD,
            queue::ANY_WAKING,
            queue::CANDIDATES,
            queue::TAKE,
            queue::TAKEN,
            queue::CLAIMED,
        ] {
            let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next().unwrap() {
                let opcode: String = row.get(1).unwrap();
                assert_ne!(opcode, "OpenEphemeral", "{sql}");
            }
        }
    }

    #[test]
    fn a_version_1_database_is_brought_to_the_latest_schema_keeping_its_counters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            // A database as the first release left it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!("{}\nPRAGMA user_version = 1;", MIGRATIONS[0].sql))
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
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            tables,
            [
                "counters",
                "events",
                "items",
                "ledger",
                "ledger_totals",
                "queue_ranks",
                "records"
            ]
        );
    }

    #[test]
    fn a_version_3_ledger_is_kept_in_posting_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            // An empty version-3 database (its Rust step only moves version-2 data), with
            // ledgers of two accounts posted in turn.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "{}\n{}\n{}\nPRAGMA user_version = 3;",
                MIGRATIONS[0].sql, MIGRATIONS[1].sql, MIGRATIONS[2].sql
            ))
            .unwrap();
            for (at, account, seq, id, delta, balance) in [
                (1, "b", 1, "grant:b", 5, 5),
                (2, "a", 1, "grant:a", 10, 10),
                (3, "a", 2, "charge:p1", -1, 9),
                (4, "b", 2, "charge:p1", -2, 3),
            ] {
                conn.execute(
                    "INSERT INTO ledger (account, seq, id, delta, held, reason, reference, \
                     memo, at, balance, reserved) \
                     VALUES (?1, ?2, ?3, ?4, 0, 'grant', NULL, NULL, ?5, ?6, 0)",
                    rusqlite::params![account, seq, id, delta, at, balance],
                )
                .unwrap();
            }
        }
        let conn = open_writer(&path, SyncMode::Full).unwrap();
        let a = augur_core::AccountId::parse("a").unwrap();
        let entries = crate::ops::ledger(&conn, &a, None, 10).unwrap();
        let seen: Vec<(u64, &str, i64)> = entries
            .iter()
            .map(|p| (p.seq, p.entry.id.as_str(), p.after.balance))
            .collect();
        assert_eq!(seen, [(2, "charge:p1", 9), (1, "grant:a", 10)]);
        let order: Vec<(String, i64)> = conn
            .prepare("SELECT account, seq FROM ledger ORDER BY posting")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let order: Vec<(&str, i64)> = order.iter().map(|(a, s)| (a.as_str(), *s)).collect();
        assert_eq!(order, [("b", 1), ("a", 1), ("a", 2), ("b", 2)]);
        // An account's ids and places stay unique; another account may use the same id.
        for (account, seq, id) in [("a", 3, "grant:a"), ("a", 2, "new")] {
            let taken = conn.execute(
                "INSERT INTO ledger (account, seq, id, delta, held, reason, at, balance, \
                 reserved) VALUES (?1, ?2, ?3, 0, 0, 'grant', 5, 0, 0)",
                rusqlite::params![account, seq, id],
            );
            assert!(taken.is_err(), "{account} {seq} {id}");
        }
    }

    #[test]
    fn a_failed_migration_leaves_the_database_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "{}\n{}\nPRAGMA user_version = 2;",
                MIGRATIONS[0].sql, MIGRATIONS[1].sql
            ))
            .unwrap();
            // A body that is not a prediction: the upgrade cannot split it.
            conn.execute(
                "INSERT INTO predictions (id, owner, model, status, created_at, revision, body) \
                 VALUES ('p1', 'admin', 'a/b', 'starting', 1, 1, '{\"not\": \"a prediction\"}')",
                [],
            )
            .unwrap();
        }
        let err = open_writer(&path, SyncMode::Full).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{err}");
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM predictions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1, "the old tables are untouched");
    }
}
