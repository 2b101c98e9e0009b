//! The SQL of every operation, in one place so that it can be read (and `EXPLAIN`ed) as a
//! whole. Statements that announce a change embed the store's channel name, so they are
//! built once per store ([`Statements::new`]); the rest are constants.
//!
//! Every statement is prepared once per connection (deadpool's statement cache) and runs
//! with `search_path` set to the store's schema, so table names are unqualified.
//!
//! "Now" is always the database's clock (`now()`, the start of the statement's transaction),
//! so that nodes with skewed clocks agree on when a lease lapses or a job becomes due.
//! Times that callers pass (`run_at`, a claimed job's `expires_at`, expiry's `now`) are
//! absolute and used as given.

use augur_core::store::ListQuery;

use crate::codec::SELECT_COLUMNS;

/// The columns a prediction write sets, in `PredictionRow::params` order.
const WRITE_COLUMNS: &str = "id, owner, model, version, status, created_at, started_at, \
     completed_at, deadline, expires_at, data_removed, attempts, webhook, error, logs, input, \
     output, metrics, extra";

/// `$1, …, $19`: the values of [`WRITE_COLUMNS`].
const WRITE_VALUES: &str =
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19";

/// Reads a prediction. (`SELECT_COLUMNS` is spelled out again because `concat!` takes only
/// literals; a unit test checks that the two agree.)
pub(crate) const GET: &str = "SELECT revision, id, owner, model, version, status, created_at, started_at, \
     completed_at, deadline, expires_at, data_removed, attempts, webhook, error, logs, input, \
     output, metrics, extra FROM predictions WHERE id = $1";

/// The revision of a prediction (to tell a conflict from a missing record).
pub(crate) const REVISION: &str = "SELECT revision FROM predictions WHERE id = $1";

/// Records an idempotency key unless a live one holds its place; returns a row if it did.
/// An expired key the sweeper has not removed yet is replaced.
pub(crate) const PUT_KEY: &str = "INSERT INTO idempotency_keys AS k \
     (owner, key, fingerprint, prediction_id, expires_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (owner, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, \
     prediction_id = EXCLUDED.prediction_id, expires_at = EXCLUDED.expires_at \
     WHERE k.expires_at <= now() \
     RETURNING 1";

/// The live idempotency key `(owner, key)`.
pub(crate) const LIVE_KEY: &str = "SELECT fingerprint, prediction_id, expires_at \
     FROM idempotency_keys WHERE owner = $1 AND key = $2 AND expires_at > now()";

/// Puts a prediction's job on a queue, replacing any job it had (lease and attempts
/// included). The new `seq` (from the column default) puts it behind jobs already due.
pub(crate) const ENQUEUE: &str = "INSERT INTO jobs AS j \
     (prediction_id, queue, attempts, run_at, visible_at, lease_token, lease_worker) \
     VALUES ($1, $2, 0, $3, $3, NULL, NULL) \
     ON CONFLICT (prediction_id) DO UPDATE SET queue = EXCLUDED.queue, \
     attempts = EXCLUDED.attempts, run_at = EXCLUDED.run_at, visible_at = EXCLUDED.visible_at, \
     seq = EXCLUDED.seq, lease_token = EXCLUDED.lease_token, \
     lease_worker = EXCLUDED.lease_worker";

/// Puts a prediction's job on a queue already leased (its first attempt), replacing any job
/// it had. `$3` is the lease's expiry, `$4` its token, `$5` the worker.
pub(crate) const ENQUEUE_CLAIMED: &str = "INSERT INTO jobs AS j \
     (prediction_id, queue, attempts, run_at, visible_at, lease_token, lease_worker) \
     VALUES ($1, $2, 1, now(), $3, $4, $5) \
     ON CONFLICT (prediction_id) DO UPDATE SET queue = EXCLUDED.queue, \
     attempts = EXCLUDED.attempts, run_at = EXCLUDED.run_at, visible_at = EXCLUDED.visible_at, \
     seq = EXCLUDED.seq, lease_token = EXCLUDED.lease_token, \
     lease_worker = EXCLUDED.lease_worker";

/// Removes a prediction's job, whoever holds it.
pub(crate) const COMPLETE: &str = "DELETE FROM jobs WHERE prediction_id = $1";

/// Adds deltas to counters (`$1` names, sorted and distinct, `$2` deltas), each in the shard
/// of this connection (`pg_backend_pid() % 1024`; the migration's comment says 16, the first
/// choice, which left pools of 16 to 64 connections waiting on each other's rows through
/// their commits), so that concurrent writers rarely wait for one another's row.
pub(crate) const COUNT: &str = "INSERT INTO counters AS c (name, shard, value) \
     SELECT d.name, (pg_backend_pid() % 1024)::smallint, d.value \
     FROM unnest($1::text[], $2::bigint[]) AS d(name, value) \
     ON CONFLICT (name, shard) DO UPDATE SET value = c.value + EXCLUDED.value";

/// Extends a live lease (the token matches and it has not lapsed).
pub(crate) const RENEW: &str = "UPDATE jobs SET visible_at = now() + $3::interval \
     WHERE prediction_id = $1 AND lease_token = $2 AND visible_at > now() \
     RETURNING visible_at";

/// Job counts: ready (due now, lapsed leases included), leased (live lease), delayed.
pub(crate) const QUEUE_STATS: &str = "SELECT \
     count(*) FILTER (WHERE visible_at <= now()), \
     count(*) FILTER (WHERE visible_at > now() AND lease_token IS NOT NULL), \
     count(*) FILTER (WHERE visible_at > now() AND lease_token IS NULL) \
     FROM jobs";

/// Every counter: the sum of its shards.
pub(crate) const COUNTERS: &str =
    "SELECT name, sum(value)::bigint FROM counters GROUP BY name ORDER BY name";

/// Jobs in prediction-id order (migration), from the start.
pub(crate) const LIST_JOBS_FIRST: &str = "SELECT prediction_id, queue, attempts, run_at \
     FROM jobs ORDER BY prediction_id LIMIT $1";
/// Jobs in prediction-id order (migration), after `$1`.
pub(crate) const LIST_JOBS_AFTER: &str = "SELECT prediction_id, queue, attempts, run_at \
     FROM jobs WHERE prediction_id > $1 ORDER BY prediction_id LIMIT $2";

/// Idempotency keys in `(owner, key)` order (migration), from the start.
pub(crate) const LIST_KEYS_FIRST: &str = "SELECT owner, key, fingerprint, prediction_id, \
     expires_at FROM idempotency_keys ORDER BY owner, key LIMIT $1";
/// Idempotency keys in `(owner, key)` order (migration), after `($1, $2)`.
pub(crate) const LIST_KEYS_AFTER: &str = "SELECT owner, key, fingerprint, prediction_id, \
     expires_at FROM idempotency_keys WHERE (owner, key) > ($1, $2) \
     ORDER BY owner, key LIMIT $3";

/// Writes an imported prediction as it is, at its revision (`$20`).
pub(crate) const IMPORT_PREDICTION: &str = "INSERT INTO predictions (id, owner, model, version, status, created_at, started_at, \
     completed_at, deadline, expires_at, data_removed, attempts, webhook, error, logs, input, \
     output, metrics, extra, revision) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
     $19, $20) \
     ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, model = EXCLUDED.model, \
     version = EXCLUDED.version, status = EXCLUDED.status, created_at = EXCLUDED.created_at, \
     started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at, \
     deadline = EXCLUDED.deadline, expires_at = EXCLUDED.expires_at, \
     data_removed = EXCLUDED.data_removed, attempts = EXCLUDED.attempts, \
     webhook = EXCLUDED.webhook, error = EXCLUDED.error, logs = EXCLUDED.logs, \
     input = EXCLUDED.input, output = EXCLUDED.output, metrics = EXCLUDED.metrics, \
     extra = EXCLUDED.extra, revision = EXCLUDED.revision";

/// Writes an imported job, unleased, due at its `run_at`, with its attempts.
pub(crate) const IMPORT_JOB: &str = "INSERT INTO jobs AS j \
     (prediction_id, queue, attempts, run_at, visible_at, lease_token, lease_worker) \
     VALUES ($1, $2, $3, $4, $4, NULL, NULL) \
     ON CONFLICT (prediction_id) DO UPDATE SET queue = EXCLUDED.queue, \
     attempts = EXCLUDED.attempts, run_at = EXCLUDED.run_at, visible_at = EXCLUDED.visible_at, \
     seq = EXCLUDED.seq, lease_token = NULL, lease_worker = NULL";

/// Writes an imported idempotency key.
pub(crate) const IMPORT_KEY: &str = "INSERT INTO idempotency_keys \
     (owner, key, fingerprint, prediction_id, expires_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (owner, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, \
     prediction_id = EXCLUDED.prediction_id, expires_at = EXCLUDED.expires_at";

/// Sets an imported counter: its shards go, then shard 0 holds the value.
pub(crate) const IMPORT_COUNTER_CLEAR: &str = "DELETE FROM counters WHERE name = $1";
/// See [`IMPORT_COUNTER_CLEAR`].
pub(crate) const IMPORT_COUNTER_SET: &str =
    "INSERT INTO counters (name, shard, value) VALUES ($1, 0, $2)";

/// The statements that announce changes on the store's channel.
#[derive(Debug)]
pub(crate) struct Statements {
    /// Inserts a prediction at revision 1 unless its id exists; returns its revision if it
    /// inserted, and announces it.
    pub(crate) create: String,
    /// Compare-and-set: replaces the prediction `$1` if its revision is `$20`; returns the new
    /// revision and announces it.
    pub(crate) update: String,
    /// Deletes a prediction, its job and the keys that point at it; announces it at the
    /// revision after its last.
    pub(crate) delete: String,
    /// Tombstones up to `$2` predictions due at `$1` and forgets expired keys; returns the
    /// tombstoned ids with their expiry (to be put in order) and announces each.
    pub(crate) expire: String,
    /// Claims up to `$1` due jobs not on the queues `$2` for worker `$3`, for the interval
    /// `$4`; returns each job and its lease, with the `(visible_at, seq)` it was picked by.
    pub(crate) claim: String,
    /// Ends a live lease and makes the job due at `$3`, keeping its attempts; announces work.
    pub(crate) retry: String,
    /// Like `retry`, refunding the attempt.
    pub(crate) release: String,
    /// Announces that everyone must refresh (after an import).
    pub(crate) resync: String,
    /// Announces each payload of `$1` (a text array) on the store's channel.
    pub(crate) announce: String,
}

impl Statements {
    /// The statements for a store whose channel is `channel` (a plain identifier).
    pub(crate) fn new(channel: &str) -> Self {
        // Announcements are sent after the commit (see `PostgresStore::announce`), not with
        // `pg_notify` inside the write: a transaction that notifies takes a database-wide lock
        // until its commit is flushed, which serialises every notifying commit and halved the
        // write rate. The statements return what the announcement needs instead.
        Self {
            create: format!(
                "INSERT INTO predictions ({WRITE_COLUMNS}, revision) \
                 VALUES ({WRITE_VALUES}, 1) ON CONFLICT (id) DO NOTHING RETURNING revision"
            ),
            update: "UPDATE predictions SET owner = $2, model = $3, version = $4, \
                 status = $5, created_at = $6, started_at = $7, completed_at = $8, \
                 deadline = $9, expires_at = $10, data_removed = $11, attempts = $12, \
                 webhook = $13, error = $14, logs = $15, input = $16, output = $17, \
                 metrics = $18, extra = $19, revision = revision + 1 \
                 WHERE id = $1 AND revision = $20 RETURNING revision"
                .to_owned(),
            delete: "WITH deleted AS (DELETE FROM predictions WHERE id = $1 RETURNING revision), \
                 job AS (DELETE FROM jobs WHERE prediction_id = $1), \
                 keys AS (DELETE FROM idempotency_keys WHERE prediction_id = $1) \
                 SELECT revision + 1 FROM deleted"
                .to_owned(),
            // `SKIP LOCKED`: a prediction being written right now is left for the next
            // sweep instead of making the sweep wait. Tombstoning clears exactly what
            // `Prediction::remove_data` clears.
            expire: "WITH due AS (SELECT id FROM predictions \
                 WHERE NOT data_removed AND expires_at IS NOT NULL AND expires_at <= $1 \
                 ORDER BY expires_at, id LIMIT $2 FOR UPDATE SKIP LOCKED), \
                 tombstoned AS (UPDATE predictions p SET input = 'null'::jsonb, output = NULL, \
                 logs = '', data_removed = true, revision = p.revision + 1 \
                 FROM due WHERE p.id = due.id RETURNING p.id, p.revision, p.expires_at), \
                 forgotten AS (DELETE FROM idempotency_keys WHERE expires_at <= $1) \
                 SELECT t.id, t.expires_at, t.revision FROM tombstoned t"
                .to_owned(),
            // `SKIP LOCKED`: concurrent claimers take different jobs instead of queueing on
            // the same rows. The lock is re-checked against the row's latest version, so a
            // job renewed or completed meanwhile is not taken. Each lease gets a fresh token:
            // 64 bits of a version 4 UUID (60 of them random), made odd so it is never zero.
            claim: "WITH picked AS (SELECT prediction_id, visible_at, seq FROM jobs \
                 WHERE visible_at <= now() AND queue <> ALL($2::text[]) \
                 ORDER BY visible_at, seq LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 UPDATE jobs j SET attempts = j.attempts + 1, \
                 lease_token = ('x' || left(replace(gen_random_uuid()::text, '-', ''), 16))\
                 ::bit(64)::bigint | 1, \
                 lease_worker = $3, visible_at = now() + $4::interval \
                 FROM picked WHERE j.prediction_id = picked.prediction_id \
                 RETURNING j.prediction_id, j.queue, j.attempts, j.run_at, j.visible_at, \
                 j.lease_token, picked.visible_at, picked.seq"
                .to_owned(),
            retry: "UPDATE jobs SET lease_token = NULL, lease_worker = NULL, \
                 run_at = $3, visible_at = $3 \
                 WHERE prediction_id = $1 AND lease_token = $2 AND visible_at > now() \
                 RETURNING 1"
                .to_owned(),
            release: "UPDATE jobs SET lease_token = NULL, lease_worker = NULL, \
                 attempts = GREATEST(attempts - 1, 0), run_at = $3, visible_at = $3 \
                 WHERE prediction_id = $1 AND lease_token = $2 AND visible_at > now() \
                 RETURNING 1"
                .to_owned(),
            resync: format!("SELECT pg_notify('{channel}', 'r')"),
            announce: format!(
                "SELECT pg_notify('{channel}', payload) FROM unnest($1::text[]) AS payload"
            ),
        }
    }
}

/// Builds the listing statement for the filters present in `query`. Parameters follow in
/// this order, each only if its filter is present: owner, status, created_after,
/// created_before, cursor created_at, cursor id; then the limit.
///
/// Newest first by `(created_at, id)`: with an owner the `(owner, created_at, id)` index
/// serves the order and the cursor (a row-value comparison the index can seek to), otherwise
/// the `(created_at, id)` index does; both are scanned backwards, so nothing is sorted. A
/// status filter is checked on the rows the index yields.
pub(crate) fn list(query: &ListQuery) -> String {
    let mut conditions: Vec<String> = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if query.owner.is_some() {
        conditions.push(format!("owner = {}", next()));
    }
    if query.status.is_some() {
        conditions.push(format!("status = {}", next()));
    }
    if query.created_after.is_some() {
        conditions.push(format!("created_at >= {}", next()));
    }
    if query.created_before.is_some() {
        conditions.push(format!("created_at < {}", next()));
    }
    if query.after.is_some() {
        let (a, b) = (next(), next());
        conditions.push(format!("(created_at, id) < ({a}, {b})"));
    }
    let limit = next();
    let mut sql = format!("SELECT {SELECT_COLUMNS} FROM predictions");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT {limit}"));
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_statements_agree_with_the_column_lists() {
        assert_eq!(
            GET,
            format!("SELECT {SELECT_COLUMNS} FROM predictions WHERE id = $1")
        );
        assert!(IMPORT_PREDICTION.starts_with(&format!(
            "INSERT INTO predictions ({WRITE_COLUMNS}, revision)"
        )));
    }

    #[test]
    fn list_numbers_only_the_parameters_it_uses() {
        let q = ListQuery {
            owner: Some(augur_core::AccountId::admin()),
            after: Some(augur_core::store::Cursor {
                created_at: augur_core::Timestamp::EPOCH,
                id: augur_core::PredictionId::parse("x").unwrap(),
            }),
            limit: 5,
            ..Default::default()
        };
        let sql = list(&q);
        assert!(
            sql.ends_with(
                "WHERE owner = $1 AND (created_at, id) < ($2, $3) \
                 ORDER BY created_at DESC, id DESC LIMIT $4"
            ),
            "{sql}"
        );
        let sql = list(&ListQuery::default());
        assert!(sql.ends_with("predictions ORDER BY created_at DESC, id DESC LIMIT $1"));
    }

    /// `EXPLAIN`s every listing shape, the claim and the sweep on a filled schema: each is
    /// served by its index, scanned in order, with no sort, in custom and generic plans alike.
    #[tokio::test]
    async fn queries_are_served_by_indexes_without_sorting() {
        use augur_core::store::Cursor;
        use augur_core::{AccountId, PredictionId, Status, Timestamp};
        use tokio_postgres::NoTls;

        use crate::PostgresStore;

        let Some(url) = augur_store_conformance::skip_unless_configured("AUGUR_TEST_POSTGRES_URL")
        else {
            return;
        };
        let base = url.split_once('?').map_or(url.as_str(), |(b, _)| b);
        // Named like the integration tests' schemas, so that their sweep of stale schemas
        // removes it if this test dies before dropping it.
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let schema = format!("augur_test_{secs}_{}_explain", std::process::id());
        let store = PostgresStore::connect(&format!("{base}?schema={schema}"))
            .await
            .unwrap();
        let (client, connection) = store
            .options()
            .pg_config("explain")
            .connect(NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(
                "INSERT INTO predictions (id, owner, model, version, status, created_at, \
                 expires_at, revision, input) \
                 SELECT 'p' || i, 'owner' || (i % 50), 'a/b', 'v', \
                 (ARRAY['starting','processing','succeeded','failed','canceled'])[1 + i % 5], \
                 now() - i * interval '1 second', \
                 CASE WHEN i % 3 = 0 THEN now() + i * interval '1 second' END, 1, '{}' \
                 FROM generate_series(1, 20000) AS i; \
                 INSERT INTO jobs (prediction_id, queue, attempts, run_at, visible_at) \
                 SELECT 'p' || i, 'q' || (i % 7), 0, now(), now() + (i - 10000) * interval '1 second' \
                 FROM generate_series(1, 20000) AS i; \
                 INSERT INTO idempotency_keys (owner, key, fingerprint, prediction_id, \
                 expires_at) SELECT 'owner' || (i % 50), 'k' || i, 'f', 'p' || i, \
                 now() + i * interval '1 second' FROM generate_series(1, 20000) AS i; \
                 ANALYZE;",
            )
            .await
            .unwrap();

        let owner = AccountId::parse("owner7").unwrap();
        let cursor = Cursor {
            created_at: Timestamp::now(),
            id: PredictionId::parse("p500").unwrap(),
        };
        let now = "now()";
        let shapes: Vec<(ListQuery, Vec<&str>, &str)> = vec![
            (
                ListQuery {
                    limit: 20,
                    ..Default::default()
                },
                vec!["21"],
                "predictions_by_created",
            ),
            (
                ListQuery {
                    after: Some(cursor.clone()),
                    limit: 20,
                    ..Default::default()
                },
                vec![now, "'p500'", "21"],
                "predictions_by_created",
            ),
            (
                ListQuery {
                    owner: Some(owner.clone()),
                    limit: 20,
                    ..Default::default()
                },
                vec!["'owner7'", "21"],
                "predictions_by_owner",
            ),
            (
                ListQuery {
                    owner: Some(owner.clone()),
                    after: Some(cursor.clone()),
                    limit: 20,
                    ..Default::default()
                },
                vec!["'owner7'", now, "'p500'", "21"],
                "predictions_by_owner",
            ),
            (
                ListQuery {
                    owner: Some(owner.clone()),
                    status: Some(Status::Failed),
                    created_after: Some(Timestamp::EPOCH),
                    created_before: Some(Timestamp::now()),
                    after: Some(cursor.clone()),
                    limit: 20,
                },
                vec![
                    "'owner7'",
                    "'failed'",
                    "now() - interval '1 day'",
                    now,
                    now,
                    "'p500'",
                    "21",
                ],
                "predictions_by_owner",
            ),
            (
                ListQuery {
                    status: Some(Status::Processing),
                    limit: 20,
                    ..Default::default()
                },
                vec!["'processing'", "21"],
                "predictions_by_created",
            ),
        ];
        let statements = Statements::new("explain_changes");
        let mut checks: Vec<(String, Vec<&str>, &str)> = shapes
            .into_iter()
            .map(|(q, args, index)| (list(&q), args, index))
            .collect();
        checks.push((
            statements.claim.clone(),
            vec!["10", "ARRAY['q1']", "'w'", "interval '1 minute'"],
            "jobs_by_visibility",
        ));
        checks.push((
            statements.expire.clone(),
            vec![now, "100"],
            "predictions_by_expiry",
        ));

        // The plan a fresh statement gets (custom, for its values), and the plan PostgreSQL
        // settles on for a statement executed many times (`auto` may switch to a generic
        // plan). The claim and the sweep write, so everything runs in a rolled-back
        // transaction.
        for mode in ["force_custom_plan", "auto"] {
            client
                .batch_execute(&format!("BEGIN; SET LOCAL plan_cache_mode = {mode}"))
                .await
                .unwrap();
            for (i, (sql, args, index)) in checks.iter().enumerate() {
                let name = format!("s{i}_{mode}");
                client
                    .batch_execute(&format!("PREPARE {name} AS {sql}"))
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                let args = args.join(", ");
                for _ in 0..6 {
                    client
                        .batch_execute(&format!("EXECUTE {name}({args})"))
                        .await
                        .unwrap();
                }
                let plan: Vec<String> = client
                    .query(&format!("EXPLAIN EXECUTE {name}({args})"), &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let plan = plan.join("\n");
                assert!(
                    plan.contains(index),
                    "{mode}: {sql}\nuses no {index}:\n{plan}"
                );
                assert!(!plan.contains("Sort"), "{mode}: {sql}\nsorts:\n{plan}");
                assert!(!plan.contains("Seq Scan"), "{mode}: {sql}\nscans:\n{plan}");
            }
            client.batch_execute("ROLLBACK").await.unwrap();
        }
        store.drop_schema().await.unwrap();
    }
}
