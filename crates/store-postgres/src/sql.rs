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

// The parts of the job, counter and event writes that both their own statements and the
// fused statements ([`fused`]) use; macros so that the constants can `concat!` them.

/// The head of a job insert, up to its rows.
macro_rules! job_insert {
    () => {
        "INSERT INTO jobs AS j \
         (prediction_id, queue, attempts, run_at, visible_at, lease_token, lease_worker) "
    };
}

/// A job insert's tail: replace the prediction's job, lease and attempts included.
macro_rules! job_upsert {
    () => {
        " ON CONFLICT (prediction_id) DO UPDATE SET queue = EXCLUDED.queue, \
         attempts = EXCLUDED.attempts, run_at = EXCLUDED.run_at, \
         visible_at = EXCLUDED.visible_at, seq = EXCLUDED.seq, \
         lease_token = EXCLUDED.lease_token, lease_worker = EXCLUDED.lease_worker"
    };
}

/// The head of a counter insert, up to its rows (`name`, `shard`, `value`).
macro_rules! count_insert {
    () => {
        "INSERT INTO counters AS c (name, shard, value) "
    };
}

/// A counter insert's tail: add to the shard's value.
macro_rules! count_upsert {
    () => {
        " ON CONFLICT (name, shard) DO UPDATE SET value = c.value + EXCLUDED.value"
    };
}

/// The head of an event insert, up to its rows.
macro_rules! events_insert {
    () => {
        "INSERT INTO events AS e (prediction_id, revision, idx, kind, data, escaped) "
    };
}

/// An event insert's tail: the write at that revision decides its events.
macro_rules! events_upsert {
    () => {
        " ON CONFLICT (prediction_id, revision, idx) DO UPDATE SET kind = EXCLUDED.kind, \
         data = EXCLUDED.data, escaped = EXCLUDED.escaped"
    };
}

/// Puts a prediction's job on a queue, replacing any job it had (lease and attempts
/// included). The new `seq` (from the column default) puts it behind jobs already due.
pub(crate) const ENQUEUE: &str = concat!(
    job_insert!(),
    "VALUES ($1, $2, 0, $3, $3, NULL, NULL)",
    job_upsert!()
);

/// Puts a prediction's job on a queue already leased (its first attempt), replacing any job
/// it had. `$3` is the lease's expiry, `$4` its token, `$5` the worker.
pub(crate) const ENQUEUE_CLAIMED: &str = concat!(
    job_insert!(),
    "VALUES ($1, $2, 1, now(), $3, $4, $5)",
    job_upsert!()
);

/// Removes a prediction's job, whoever holds it.
pub(crate) const COMPLETE: &str = "DELETE FROM jobs WHERE prediction_id = $1";

/// Adds deltas to counters (`$1` names, sorted and distinct, `$2` deltas), each in the shard
/// of this connection (`pg_backend_pid() % 1024`; the migration's comment says 16, the first
/// choice, which left pools of 16 to 64 connections waiting on each other's rows through
/// their commits), so that concurrent writers rarely wait for one another's row.
pub(crate) const COUNT: &str = concat!(
    count_insert!(),
    "SELECT d.name, (pg_backend_pid() % 1024)::smallint, d.value \
     FROM unnest($1::text[], $2::bigint[]) AS d(name, value)",
    count_upsert!()
);

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

/// Removes everything of a deleted prediction but its row: its job, the keys that point at
/// it, its webhook messages and its events. Runs after [`Statements::delete`] in the same
/// transaction, so that its snapshot includes whatever a write that held the prediction's row
/// lock committed before the delete took it (one statement would miss the messages or job
/// such a write added, leaving them behind).
pub(crate) const DELETE_REST: &str = "WITH job AS (DELETE FROM jobs WHERE prediction_id = $1), \
     keys AS (DELETE FROM idempotency_keys WHERE prediction_id = $1), \
     events AS (DELETE FROM events WHERE prediction_id = $1) \
     DELETE FROM deliveries WHERE prediction_id = $1";

/// Removes the event logs and the finished webhook messages (they hold the prediction's data)
/// of the predictions `$1` that expiry just tombstoned, in its transaction. Pending messages
/// stay and still go out.
pub(crate) const EXPIRE_OUTBOX: &str = "WITH events AS \
     (DELETE FROM events WHERE prediction_id = ANY($1::text[])) \
     DELETE FROM deliveries WHERE prediction_id = ANY($1::text[]) AND status <> 'pending'";

/// Puts webhook messages (`$2` … `$7`: ids, urls, events, payloads, creation times and
/// escaped flags, one array element per message) at the end of prediction `$1`'s outbox,
/// pending and due now, numbered on from its last `seq`. The first becomes the head (claimable,
/// `visible_at` set) if the outbox has no pending message; the others wait behind it.
///
/// Runs in the write's transaction after the compare-and-set, which holds the prediction's
/// row lock: no other write changes this outbox meanwhile, so `seq` and the head are decided
/// on what is there. A message id already in the outbox is not enqueued again (and takes no
/// number). `ON CONFLICT DO NOTHING` is for a write whose compare-and-set lost: it runs on
/// (to be rolled back) without the lock and may meet the winner's rows; waiting for them and
/// then failing on the unique index would turn a `Conflict` into an error.
pub(crate) const ENQUEUE_DELIVERIES: &str = "INSERT INTO deliveries (prediction_id, seq, id, \
     url, event, payload, created_at, status, next_attempt_at, visible_at, escaped) \
     SELECT $1, last.seq + n.rank, n.id, n.url, n.event, n.payload, n.created_at, 'pending', \
     now(), CASE WHEN n.rank = 1 AND NOT last.waiting THEN now() END, n.escaped \
     FROM (SELECT COALESCE((SELECT max(seq) FROM deliveries WHERE prediction_id = $1), 0) \
     AS seq, EXISTS (SELECT 1 FROM deliveries WHERE prediction_id = $1 \
     AND status = 'pending') AS waiting) AS last, \
     (SELECT u.*, row_number() OVER (ORDER BY u.n) AS rank \
     FROM unnest($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[], \
     $7::boolean[]) WITH ORDINALITY AS u(id, url, event, payload, created_at, escaped, n) \
     WHERE NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.prediction_id = $1 AND x.id = u.id)) \
     AS n \
     ON CONFLICT DO NOTHING";

/// Appends events (`$3` kinds, `$4` data, `$5` escaped flags) to prediction `$1`'s log,
/// numbered `($2, 0)`, `($2, 1)`, … where `$2` is the revision of the write. The write that
/// holds revision `$2` decides its events, so a stale row at those numbers (imported ahead of
/// its prediction) is replaced; a write whose compare-and-set lost may meet the winner's rows
/// and replaces them in its own transaction, which is rolled back.
pub(crate) const APPEND_EVENTS: &str = concat!(
    events_insert!(),
    "SELECT $1, $2, (u.n - 1)::integer, u.kind, u.data, u.escaped \
     FROM unnest($3::text[], $4::text[], $5::boolean[]) WITH ORDINALITY AS u(kind, data, escaped, n)",
    events_upsert!()
);

/// Claims up to `$1` webhook messages for worker `$2`, for the interval `$3`; returns each
/// message with its lease token and expiry, and the `visible_at` it was picked by.
///
/// Only heads (each prediction's oldest pending message) have a `visible_at`, and it is the
/// time they may be claimed: their next attempt, or while leased the lease's expiry. So the
/// claim is the job queue's: take the earliest visible rows through the partial index
/// `deliveries_by_visibility` (which holds one row per prediction with messages waiting, not
/// every pending message), lock them, lease them. `FOR UPDATE SKIP LOCKED` makes concurrent
/// claimers take different messages instead of queueing on the same rows, and re-checks
/// `visible_at <= now()` on the row's latest version, so a message leased, finished or
/// demoted meanwhile is not taken. A prediction's later messages have no `visible_at` until
/// the head is finished, hence one message per prediction at a time, in order. Tokens are
/// made like the job queue's (see `Statements::claim`).
pub(crate) const CLAIM_DELIVERIES: &str = "WITH picked AS (SELECT prediction_id, seq, \
     visible_at FROM deliveries WHERE visible_at <= now() \
     ORDER BY visible_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
     UPDATE deliveries d SET \
     lease_token = ('x' || left(replace(gen_random_uuid()::text, '-', ''), 16))::bit(64)::bigint | 1, \
     lease_worker = $2, lease_expires_at = now() + $3::interval, \
     visible_at = now() + $3::interval \
     FROM picked WHERE d.prediction_id = picked.prediction_id AND d.seq = picked.seq \
     RETURNING d.prediction_id, d.seq, d.id, d.url, d.event, d.payload, d.created_at, \
     d.status, d.attempts, d.next_attempt_at, d.escaped, \
     d.lease_token, d.lease_expires_at, picked.visible_at";

/// Takes prediction `$1`'s row lock for the rest of the transaction: every write that changes
/// which message of its outbox is the head holds it (a prediction write holds it through its
/// compare-and-set), so that an enqueue and a finish cannot both decide on what the other has
/// not committed yet (the enqueue would see the old head pending and wait behind it, the
/// finish would see no successor to promote, and the new message would never go).
pub(crate) const LOCK_PREDICTION: &str =
    "SELECT 1 FROM predictions WHERE id = $1 FOR NO KEY UPDATE";

/// Records attempt `$4` at message `($1, $2)` if `$3` is its live lease, and ends the lease:
/// status `$5`, next attempt `$6` (a retry's time; NULL when finished). Returns a row if it
/// did; none means the lease was lost.
pub(crate) const FINISH_DELIVERY: &str = "UPDATE deliveries SET \
     attempts = attempts || jsonb_build_array($4::jsonb), status = $5::text, \
     next_attempt_at = $6::timestamptz, \
     visible_at = CASE WHEN $5::text = 'pending' THEN $6::timestamptz END, \
     lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL \
     WHERE prediction_id = $1 AND seq = $2 AND lease_token = $3 AND lease_expires_at > now() \
     RETURNING 1";

/// Gives up on prediction `$1`'s pending messages after `seq` `$2` (the receiver is gone).
pub(crate) const DROP_REST: &str = "UPDATE deliveries SET status = 'failed', \
     next_attempt_at = NULL, visible_at = NULL, \
     lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL \
     WHERE prediction_id = $1 AND seq > $2 AND status = 'pending'";

/// Makes prediction `$1`'s oldest pending message its head again after a change: it gets
/// `visible_at` (its next attempt, or its lease's expiry if later), every other pending
/// message loses it. Touches only rows whose `visible_at` changes: usually none or the one
/// successor being promoted. Runs under [`LOCK_PREDICTION`], so the head it picks is stable;
/// claims may still lease the head meanwhile, which is why the new value is computed from the
/// row itself (re-read on its latest version) and not from the subquery.
pub(crate) const REHEAD: &str = "UPDATE deliveries d SET visible_at = CASE WHEN d.seq = h.seq \
     THEN COALESCE(GREATEST(d.next_attempt_at, d.lease_expires_at), '-infinity') END \
     FROM (SELECT min(seq) AS seq FROM deliveries WHERE prediction_id = $1 \
     AND status = 'pending') AS h \
     WHERE d.prediction_id = $1 AND d.status = 'pending' \
     AND d.visible_at IS DISTINCT FROM (CASE WHEN d.seq = h.seq \
     THEN COALESCE(GREATEST(d.next_attempt_at, d.lease_expires_at), '-infinity') END)";

/// Drops prediction `$1`'s finished messages if expiry removed its data (or it is gone) while
/// they were pending: nothing of its data is kept once they are done.
pub(crate) const DROP_FINISHED_IF_REMOVED: &str = "DELETE FROM deliveries \
     WHERE prediction_id = $1 AND status <> 'pending' \
     AND NOT EXISTS (SELECT 1 FROM predictions WHERE id = $1 AND NOT data_removed)";

/// Makes message `$2` of prediction `$1` (stored as `$3` if its row is escaped) pending and
/// due now, without a lease; returns a row if it exists. [`REHEAD`] follows.
pub(crate) const REDELIVER: &str = "UPDATE deliveries SET status = 'pending', \
     next_attempt_at = now(), visible_at = NULL, \
     lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL \
     WHERE prediction_id = $1 AND id IN ($2, $3) AND id = CASE WHEN escaped THEN $3 ELSE $2 END \
     RETURNING 1";

/// A prediction's webhook messages in order. Its columns, in this order, are those
/// `outbox::delivery_from_row` reads (and [`CLAIM_DELIVERIES`] returns first).
pub(crate) const LIST_DELIVERIES: &str = "SELECT prediction_id, seq, id, url, event, payload, \
     created_at, status, attempts, next_attempt_at, escaped \
     FROM deliveries WHERE prediction_id = $1 ORDER BY seq";

/// Up to `$4` of prediction `$1`'s events after position `($2, $3)`, in order (a seek in the
/// primary key).
pub(crate) const READ_EVENTS: &str = "SELECT revision, idx, kind, data, escaped FROM events \
     WHERE prediction_id = $1 AND (revision, idx) > ($2, $3) ORDER BY revision, idx LIMIT $4";

/// Writes an imported webhook message with its history, unleased; replaces the message with
/// its id. [`REHEAD`] follows for its prediction.
pub(crate) const IMPORT_DELIVERY: &str = "INSERT INTO deliveries (prediction_id, seq, id, url, \
     event, payload, created_at, status, attempts, next_attempt_at, escaped) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (prediction_id, id) DO UPDATE SET seq = EXCLUDED.seq, url = EXCLUDED.url, \
     event = EXCLUDED.event, payload = EXCLUDED.payload, created_at = EXCLUDED.created_at, \
     status = EXCLUDED.status, attempts = EXCLUDED.attempts, \
     next_attempt_at = EXCLUDED.next_attempt_at, escaped = EXCLUDED.escaped, \
     lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL, visible_at = NULL";

/// Writes an imported event.
pub(crate) const IMPORT_EVENT: &str = "INSERT INTO events \
     (prediction_id, revision, idx, kind, data, escaped) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (prediction_id, revision, idx) DO UPDATE SET kind = EXCLUDED.kind, \
     data = EXCLUDED.data, escaped = EXCLUDED.escaped";

/// Inserts a prediction at revision 1 unless its id exists (`$1` … `$19`: [`WRITE_COLUMNS`]),
/// without its `RETURNING` clause.
fn create_row() -> String {
    format!(
        "INSERT INTO predictions ({WRITE_COLUMNS}, revision) \
         VALUES ({WRITE_VALUES}, 1) ON CONFLICT (id) DO NOTHING"
    )
}

/// Compare-and-set: replaces prediction `$1` (`$2` … `$19`: the rest of [`WRITE_COLUMNS`]) if
/// its revision is `$20`, without its `RETURNING` clause.
const UPDATE_ROW: &str = "UPDATE predictions SET owner = $2, model = $3, version = $4, \
     status = $5, created_at = $6, started_at = $7, completed_at = $8, \
     deadline = $9, expires_at = $10, data_removed = $11, attempts = $12, \
     webhook = $13, error = $14, logs = $15, input = $16, output = $17, \
     metrics = $18, extra = $19, revision = revision + 1 \
     WHERE id = $1 AND revision = $20";

/// Which prediction write a fused statement makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FusedWrite {
    /// The insert (`$1` … `$19`).
    Create,
    /// The compare-and-set (`$1` … `$20`).
    Update,
}

/// The job step of a fused statement, if any, with the parameters it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FusedJob {
    /// Queue, run_at ([`ENQUEUE`]).
    Enqueue,
    /// Queue, lease expiry, token, worker ([`ENQUEUE_CLAIMED`]).
    EnqueueClaimed,
    /// None ([`COMPLETE`]).
    Complete,
}

/// The shape of a fused statement: the write, then its effects, each taking the parameters
/// that follow the previous one's in this order: the job step, the counters (names, deltas),
/// the events (kinds, data, escaped flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FusedShape {
    pub(crate) write: FusedWrite,
    pub(crate) job: Option<FusedJob>,
    pub(crate) counts: bool,
    pub(crate) events: bool,
}

/// One statement that makes a prediction write and applies its effects, for the writes that
/// need nothing else (see `EffectPlan::fusable`): a single round trip and an implicit
/// transaction, instead of `BEGIN`, the statements, `COMMIT`. Returns the new revision, or no
/// row if nothing was written (the id exists, or the compare-and-set lost).
///
/// Each effect is a data-modifying `WITH` query that reads the write's `RETURNING` row, so it
/// writes only if the write did. They all run on the statement's one snapshot, which is why
/// only these effects are fused: for each, nothing a concurrent transaction commits in
/// between can change what it should do. A compare-and-set expects a revision that was
/// committed before the statement began (the caller read it), and every write that inserts a
/// job or an event for the prediction changes its revision, so the snapshot holds all of them;
/// what claims and leases change meanwhile, `DELETE` and `ON CONFLICT` re-check on the latest
/// row version; counters are upserts. Webhook messages are not fused: where a prediction's
/// outbox head is depends on what a concurrent `finish_delivery` commits under the row lock
/// (see [`LOCK_PREDICTION`]), which a snapshot taken before the lock would not see.
pub(crate) fn fused(shape: FusedShape) -> String {
    let (write, mut n) = match shape.write {
        FusedWrite::Create => (create_row(), 19),
        FusedWrite::Update => (UPDATE_ROW.to_owned(), 20),
    };
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let mut sql = format!("WITH w AS ({write} RETURNING id, revision)");
    let (job_insert, job_upsert) = (job_insert!(), job_upsert!());
    match shape.job {
        None => {}
        Some(FusedJob::Enqueue) => {
            let (queue, run_at) = (next(), next());
            sql += &format!(
                ", fx_job AS ({job_insert}SELECT w.id, {queue}::text, 0, \
                 {run_at}::timestamptz, {run_at}::timestamptz, NULL::bigint, NULL::text \
                 FROM w{job_upsert})"
            );
        }
        Some(FusedJob::EnqueueClaimed) => {
            let (queue, expires, token, worker) = (next(), next(), next(), next());
            sql += &format!(
                ", fx_job AS ({job_insert}SELECT w.id, {queue}::text, 1, now(), \
                 {expires}::timestamptz, {token}::bigint, {worker}::text FROM w{job_upsert})"
            );
        }
        Some(FusedJob::Complete) => {
            sql += ", fx_job AS (DELETE FROM jobs WHERE prediction_id = (SELECT id FROM w))";
        }
    }
    if shape.counts {
        let (names, deltas) = (next(), next());
        sql += &format!(
            ", fx_count AS ({}SELECT d.name, (pg_backend_pid() % 1024)::smallint, d.value \
             FROM w, unnest({names}::text[], {deltas}::bigint[]) AS d(name, value){})",
            count_insert!(),
            count_upsert!()
        );
    }
    if shape.events {
        let (kinds, data, escaped) = (next(), next(), next());
        sql += &format!(
            ", fx_events AS ({}SELECT w.id, w.revision, (u.n - 1)::integer, u.kind, u.data, \
             u.escaped FROM w, unnest({kinds}::text[], {data}::text[], {escaped}::boolean[]) \
             WITH ORDINALITY AS u(kind, data, escaped, n){})",
            events_insert!(),
            events_upsert!()
        );
    }
    sql + " SELECT revision FROM w"
}

/// The statements that announce changes on the store's channel.
#[derive(Debug)]
pub(crate) struct Statements {
    /// Inserts a prediction at revision 1 unless its id exists; returns its revision if it
    /// inserted, and announces it.
    pub(crate) create: String,
    /// Compare-and-set: replaces the prediction `$1` if its revision is `$20`; returns the new
    /// revision and announces it.
    pub(crate) update: String,
    /// Deletes a prediction; returns the revision after its last (to announce). [`DELETE_REST`]
    /// follows in its transaction.
    pub(crate) delete: String,
    /// Tombstones up to `$2` predictions due at `$1` and forgets expired keys; returns the
    /// tombstoned ids with their expiry and revision (to be put in order and announced).
    /// [`EXPIRE_OUTBOX`] follows in its transaction for the ids it returns.
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
            create: format!("{} RETURNING revision", create_row()),
            update: format!("{UPDATE_ROW} RETURNING revision"),
            delete: "DELETE FROM predictions WHERE id = $1 RETURNING revision + 1".to_owned(),
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
    fn delivery_statements_agree_on_the_columns() {
        let columns = "prediction_id, seq, id, url, event, payload, created_at, status, \
             attempts, next_attempt_at, escaped";
        assert_eq!(
            LIST_DELIVERIES,
            format!("SELECT {columns} FROM deliveries WHERE prediction_id = $1 ORDER BY seq")
        );
        let qualified: Vec<String> = columns.split(", ").map(|c| format!("d.{c}")).collect();
        assert!(
            CLAIM_DELIVERIES.contains(&format!(
                "RETURNING {}, d.lease_token",
                qualified.join(", ")
            )),
            "{CLAIM_DELIVERIES}"
        );
        assert!(IMPORT_DELIVERY.starts_with(&format!("INSERT INTO deliveries ({columns})")));
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

    /// `EXPLAIN`s every listing shape, the claims, the sweep and the outbox's statements on a
    /// filled schema: each is served by its index, scanned in order, with no sort, in custom
    /// and generic plans alike. (The enqueue of messages sorts the write's few new messages
    /// to number them, so it is left out.)
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
        // A quarter of the predictions have four webhook messages: one delivered, a head (due
        // or not) and two waiting behind it; every prediction has a few events, and p7 a long stream of them (whose
        // replay must be read in order from the index, not fetched whole and sorted).
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
                 INSERT INTO deliveries (prediction_id, seq, id, url, event, payload, \
                 created_at, status, next_attempt_at, visible_at) \
                 SELECT 'p' || i, s, 'msg' || s, 'https://h/', 'output', '{}', now(), \
                 CASE WHEN s = 1 THEN 'delivered' ELSE 'pending' END, \
                 CASE WHEN s > 1 THEN now() END, \
                 CASE WHEN s = 2 THEN now() + (i - 2500) * interval '1 second' END \
                 FROM generate_series(1, 5000) AS i, generate_series(1, 4) AS s; \
                 INSERT INTO events (prediction_id, revision, idx, kind, data) \
                 SELECT 'p' || i, r, 0, 'output', 'x' FROM generate_series(1, 20000) AS i, \
                 generate_series(1, 3) AS r; \
                 INSERT INTO events (prediction_id, revision, idx, kind, data) \
                 SELECT 'p7', r, i, 'output', 'x' FROM generate_series(4, 1000) AS r, \
                 generate_series(0, 4) AS i; \
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
        checks.push((
            CLAIM_DELIVERIES.to_owned(),
            vec!["10", "'w'", "interval '1 minute'"],
            "deliveries_by_visibility",
        ));
        checks.push((REHEAD.to_owned(), vec!["'p7'"], "deliveries_pending"));
        checks.push((
            FINISH_DELIVERY.to_owned(),
            vec!["'p7'", "2", "5", "'{}'", "'delivered'", "NULL"],
            "deliveries_pkey",
        ));
        // Any index on the prediction's messages serves these.
        checks.push((
            DROP_FINISHED_IF_REMOVED.to_owned(),
            vec!["'p7'"],
            "on deliveries_",
        ));
        checks.push((LIST_DELIVERIES.to_owned(), vec!["'p7'"], "on deliveries_"));
        // A prediction's few messages may be sorted after an index scan rather than read in
        // order from the primary key: the planner's choice, cheap either way.
        let sorts_few = [LIST_DELIVERIES];
        checks.push((
            READ_EVENTS.to_owned(),
            vec!["'p7'", "1", "0", "100"],
            "events_pkey",
        ));
        checks.push((
            EXPIRE_OUTBOX.to_owned(),
            vec!["ARRAY['p7', 'p8']"],
            "events_pkey",
        ));
        checks.push((DELETE_REST.to_owned(), vec!["'p7'"], "on deliveries_"));

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
                assert!(
                    !plan.contains("Sort") || sorts_few.contains(&sql.as_str()),
                    "{mode}: {sql}\nsorts:\n{plan}"
                );
                assert!(!plan.contains("Seq Scan"), "{mode}: {sql}\nscans:\n{plan}");
            }
            client.batch_execute("ROLLBACK").await.unwrap();
        }
        store.drop_schema().await.unwrap();
    }
}
