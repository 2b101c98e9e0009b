//! The SQL of every operation, in one place so that it can be read (and `EXPLAIN`ed) as a
//! whole. Most statements are constants; a write's fused statement ([`fused`]) and a listing
//! ([`list`]) are built for their shape, and the announcement statement names the store's
//! channel ([`announce`]).
//!
//! Every statement is prepared once per connection (deadpool's statement cache) and runs with
//! `search_path` set to the store's schema, so names are unqualified. Parameters are cast where
//! they are used, so that each statement's parameter types never depend on the planner's guess.
//!
//! "Now" is always the database's clock (`now()`, the start of the statement's transaction),
//! so that nodes with skewed clocks agree on when a lease lapses, an item becomes due or a
//! record of a deleted-on-expiry kind is gone. Times that callers pass (`run_at`, a claimed
//! item's lease expiry, expiry's `now`) are absolute and used as given.
//!
//! # Queue groups and their locks
//!
//! A group's head (its oldest pending item, the only one claims see) is decided from the
//! group's other items, so the writes that change which item is a head must not decide on each
//! other's uncommitted rows. Every such write of the general path (an enqueue, a completion, a
//! finish, a requeue, a delete, an import) first takes the group's advisory lock
//! ([`LOCK_GROUPS`]) and then *bumps* the group's record ([`BUMP_GROUPS`]: an update that
//! changes nothing but the row version), and decides in later statements, whose snapshots see
//! whatever was committed before the lock was granted. A fused write ([`fused`]) takes no
//! advisory lock: it updates the group's record itself, and only if the row's latest version
//! is the one its snapshot holds (`xmin` unchanged: no bump, no other write since), so it
//! never decides on a stale view; writes that bump after it wait for its row lock. A fused insert makes a new record, whose group must be empty, and holds the advisory
//! lock (`pg_try_advisory_xact_lock`) so that queue writes on a group without a record and the
//! record's creation cannot overlap. Two writes that still number one group at once collide on
//! the unique `items_by_group` index, and the later one starts over.

use std::sync::{LazyLock, OnceLock};

use augur_core::store::ListQuery;

use crate::codec::{ITEM_COLUMNS, RECORD_COLUMNS};

/// The owner check of a write that names its record by key: `IS NOT DISTINCT FROM` means `=`
/// here (`owner` is never NULL) but no index can serve it, so that a plan cannot pick the
/// `(kind, owner, …)` index over the primary key. Every pooled connection plans its
/// statements once, generically, perhaps while the tables are empty (see
/// `PostgresOptions::pg_config`), when the two look alike to the planner; the owner index
/// would scan every record of the owner.
const OWNED_BY: &str = "owner IS NOT DISTINCT FROM";

/// Records are named by `key`, `kind || ':' || id` (the primary key, written with the record):
/// every statement that names a record by its kind and id does it as `key = $k || ':' || $i`.
/// No name of a kind is a prefix of another, so `key` sorts as `(kind, id)` does. One column
/// lets no other index look as good as the primary key to a plan made on empty tables (see
/// [`OWNED_BY`]).
///
/// Whether a record of a kind that retention deletes reads as present now.
const PRESENT: &str = "(gone_at IS NULL OR gone_at > now())";

/// The state a pending item `g` takes when it becomes its group's head: claimable now, or when
/// its due time or live lease (whichever is later) comes.
const HEAD_STATE: &str = "CASE WHEN GREATEST(g.due_at, g.lease_expires_at) <= now() \
     THEN 'ready' ELSE 'waiting' END";
/// The `visible_at` that goes with [`HEAD_STATE`].
const HEAD_VISIBLE: &str = "CASE WHEN GREATEST(g.due_at, g.lease_expires_at) > now() \
     THEN GREATEST(g.due_at, g.lease_expires_at) END";

/// The random, non-zero token of a new lease: 64 bits of a version 4 UUID (60 of them
/// random), made odd.
const NEW_TOKEN: &str =
    "(('x' || left(replace(gen_random_uuid()::text, '-', ''), 16))::bit(64)::bigint | 1)";

/// The fair-queuing shard of this connection (see migration 0003).
const FAIR_SHARD: &str = "(pg_backend_pid() % 64)::smallint";

/// Reads a record (absent once gone).
pub(crate) static GET: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {RECORD_COLUMNS} FROM records WHERE key = $1::text || ':' || $2::text AND {PRESENT}"
    )
});

/// The columns a record write sets, `$1` … `$13` ([`crate::codec::RecordRow::params`]), after
/// the key.
const RECORD_WRITE_COLUMNS: &str = "key, kind, id, partition, owner, created_at, status, parent, \
     expires_at, data_removed, sweep_at, gone_at";
/// The values of [`RECORD_WRITE_COLUMNS`] with `revision` 1, body and data.
const RECORD_INSERT_VALUES: &str = "$1::text || ':' || $2::text, $1::text, $2::text, $3::smallint, $4::text, \
     $5::timestamptz, $6::text, $7::text, $8::timestamptz, $9::boolean, $10::timestamptz, \
     $11::timestamptz, 1, $12::text, $13::text";
/// The assignments of a compare-and-set.
const RECORD_UPDATE_SET: &str = "partition = $3::smallint, owner = $4::text, \
     created_at = $5::timestamptz, status = $6::text, parent = $7::text, \
     expires_at = $8::timestamptz, data_removed = $9::boolean, sweep_at = $10::timestamptz, \
     gone_at = $11::timestamptz, body = $12::text, data = $13::text, revision = revision + 1";

/// Inserts a record (`$1` … `$13`) unless its key is taken; refuses with `{"op": $14,
/// "exists": true}` if it is.
pub(crate) static INSERT_RECORD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH w AS (INSERT INTO records ({RECORD_WRITE_COLUMNS}, revision, body, data) \
         VALUES ({RECORD_INSERT_VALUES}) ON CONFLICT (key) DO NOTHING RETURNING 1) \
         SELECT augur_refuse(jsonb_build_object('op', $14::int, 'exists', true)::text) \
         WHERE NOT EXISTS (SELECT 1 FROM w)"
    )
});

/// Inserts records (`$1` … `$13`, each column an array, as [`INSERT_RECORD`] takes them one
/// by one; `$14` their operation indexes) unless a key is taken; refuses with `{"op": <the
/// first such operation's index>, "exists": true}` if one is. For runs of inserts of kinds
/// that keep a tombstone (nothing to clear first), such as a batch's predictions.
pub(crate) static INSERT_RECORDS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], $4::text[], \
         $5::timestamptz[], $6::text[], $7::text[], $8::timestamptz[], $9::boolean[], \
         $10::timestamptz[], $11::timestamptz[], $12::text[], $13::text[], $14::int[]) \
         AS v(kind, id, partition, owner, created_at, status, parent, expires_at, data_removed, \
         sweep_at, gone_at, body, data, n)), \
         w AS (INSERT INTO records ({RECORD_WRITE_COLUMNS}, revision, body, data) \
         SELECT v.kind || ':' || v.id, v.kind, v.id, v.partition, v.owner, v.created_at, \
         v.status, v.parent, v.expires_at, v.data_removed, v.sweep_at, v.gone_at, 1, v.body, \
         v.data FROM v ORDER BY v.n ON CONFLICT (key) DO NOTHING RETURNING key) \
         SELECT augur_refuse(jsonb_build_object('op', min(v.n), 'exists', true)::text) FROM v \
         WHERE v.kind || ':' || v.id NOT IN (SELECT w.key FROM w) \
         HAVING count(*) > 0"
    )
});

/// Removes record `($1, $2)` if it is gone (expired, of a kind that retention deletes), with
/// its items and events, so that an insert can take its key. Runs under the key's advisory
/// lock; no fused write touches such records.
pub(crate) const CLEAR_GONE: &str = "WITH g AS (DELETE FROM records \
     WHERE key = $1::text || ':' || $2::text AND gone_at <= now() RETURNING kind, id), \
     gi AS (DELETE FROM items i USING g WHERE i.group_kind = g.kind AND i.group_id = g.id), \
     ge AS (DELETE FROM events e USING g WHERE e.stream_kind = g.kind AND e.stream_id = g.id) \
     SELECT count(*) FROM g";

/// Compare-and-set: replaces record `($1, $2)` (`$3` … `$13`) if it is present at revision
/// `$14` and belongs to the write's account (`$4`, the new record's owner); refuses with
/// `{"op": $15, "actual": <its revision, or null if absent or another account's>}` if not.
/// The revision is read with a lock, so it is the latest, not the statement snapshot's.
pub(crate) static UPDATE_RECORD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH w AS (UPDATE records SET {RECORD_UPDATE_SET} \
         WHERE key = $1::text || ':' || $2::text AND revision = $14::bigint \
         AND {OWNED_BY} $4::text AND {PRESENT} RETURNING 1) \
         SELECT augur_refuse(jsonb_build_object('op', $15::int, 'actual', \
         (SELECT CASE WHEN owner = $4::text THEN revision END FROM records \
         WHERE key = $1::text || ':' || $2::text AND {PRESENT} FOR KEY SHARE))::text) \
         WHERE NOT EXISTS (SELECT 1 FROM w)"
    )
});

/// Checks operations `$1` … `$5` (0 insert, 1 update, 2 delete; kinds, ids, expected
/// revisions, indexes) of account `$6` against the records as they are before any of them is
/// applied, and refuses with the first failure as [`INSERT_RECORD`] and [`UPDATE_RECORD`]
/// would. Only for writes with several operations on one key, whose statements would
/// otherwise see each other's work.
pub(crate) const PRECHECK: &str = "SELECT augur_refuse(x.reason::text) FROM (SELECT o.n, \
     CASE WHEN o.op = 0 AND r.revision IS NOT NULL \
     THEN jsonb_build_object('op', o.n, 'exists', true) \
     WHEN o.op = 1 AND (r.owner IS DISTINCT FROM $6::text \
     OR r.revision IS DISTINCT FROM o.expected) \
     THEN jsonb_build_object('op', o.n, 'actual', \
     CASE WHEN r.owner = $6::text THEN r.revision END) END AS reason \
     FROM unnest($1::int[], $2::text[], $3::text[], $4::bigint[], $5::int[]) \
     AS o(op, kind, id, expected, n) \
     LEFT JOIN records r ON r.key = o.kind || ':' || o.id \
     AND (r.gone_at IS NULL OR r.gone_at > now()) \
     WHERE o.op <> 2 ORDER BY o.n) x WHERE x.reason IS NOT NULL LIMIT 1";

/// The revision and owner of record `($1, $2)`, after a fused compare-and-set wrote nothing:
/// none means not found, another account's too; the expected revision means the record was
/// bumped by a queue write after the statement's snapshot was taken (try again); another, a
/// conflict.
pub(crate) const REVISION: &str =
    "SELECT revision, owner FROM records WHERE key = $1::text || ':' || $2::text";

/// Deletes record `($1, $2)` if it belongs to account `$3` (another account's is left
/// alone); returns the revision after its last (to announce) if it was there. [`DELETE_REST`]
/// follows.
pub(crate) const DELETE_RECORD: &str = "DELETE FROM records \
     WHERE key = $1::text || ':' || $2::text AND owner IS NOT DISTINCT FROM $3::text \
     RETURNING revision + 1";

/// Removes the items (every lane) and events of deleted record `($1, $2)`, unless another
/// account's record has that key. A statement of its own, after [`DELETE_RECORD`] took the
/// record's row lock, so that its snapshot holds what a fused write of the record committed
/// meanwhile.
pub(crate) const DELETE_REST: &str = "WITH theirs AS (SELECT 1 FROM records \
     WHERE key = $1::text || ':' || $2::text AND owner <> $3::text), \
     i AS (DELETE FROM items WHERE group_kind = $1::text AND group_id = $2::text \
     AND NOT EXISTS (SELECT 1 FROM theirs)) \
     DELETE FROM events WHERE stream_kind = $1::text AND stream_id = $2::text \
     AND NOT EXISTS (SELECT 1 FROM theirs)";

/// Takes the advisory locks of queue groups, in one order (so that writes taking several never
/// deadlock): those named `$1` (`"<kind> <id>"`) and those of the items `($2, $3)` (lane, id)
/// as they stand. Held until the transaction ends.
pub(crate) const LOCK_GROUPS: &str = "SELECT count(pg_advisory_xact_lock(\
     hashtext(current_schema()), k)) FROM (SELECT DISTINCT hashtext(name) AS k FROM \
     (SELECT unnest($1::text[]) AS name UNION ALL \
     SELECT i.group_kind || ' ' || i.group_id FROM items i \
     JOIN unnest($2::text[], $3::text[]) AS c(lane, id) ON i.lane = c.lane AND i.id = c.id) n \
     ORDER BY 1) keys";

/// Bumps the records of queue groups (see the module docs): those `($1, $2)` (kinds, ids) and
/// those of the items `($3, $4)`. After [`LOCK_GROUPS`], so that it sees records created before
/// the locks were granted.
pub(crate) const BUMP_GROUPS: &str = "UPDATE records r SET revision = r.revision \
     FROM (SELECT kind, id FROM unnest($1::text[], $2::text[]) AS u(kind, id) UNION \
     SELECT i.group_kind, i.group_id FROM items i \
     JOIN unnest($3::text[], $4::text[]) AS c(lane, id) ON i.lane = c.lane AND i.id = c.id) g \
     WHERE r.key = g.kind || ':' || g.id";

/// Takes the lock on account `$1`'s totals (creating them at zero), so that its postings are
/// decided one write at a time. `DO UPDATE … WHERE false` locks the row without changing it.
pub(crate) const LOCK_TOTALS: &str = "INSERT INTO ledger_totals AS t \
     (account, balance, reserved, seq) VALUES ($1::text, 0, 0, 0) \
     ON CONFLICT (account) DO UPDATE SET seq = t.seq WHERE false";

/// Takes the locks of limited counters `$1` (sorted): their shard 0 rows, created at zero.
pub(crate) const LOCK_COUNTERS: &str = "INSERT INTO counters AS c (name, shard, value) \
     SELECT n, 0, 0 FROM unnest($1::text[]) AS n ORDER BY n \
     ON CONFLICT (name, shard) DO UPDATE SET value = c.value WHERE false";

/// The guards of a write's effects, after [`LOCK_TOTALS`] and [`LOCK_COUNTERS`]: refuses with
/// the first failure in effect order (`$5`, `$9` are effect indexes) among the ledger entries
/// `$2` … `$4` of account `$1` (ids, deltas, helds; already posted or repeated ids are
/// skipped) that would leave less than nothing to spend (`{"credits": {"available",
/// "needed"}}`), and the limited counters `$6` … `$8` (names, deltas, limits) that would pass
/// their limit (`{"limit": <effect index>}`).
pub(crate) const GUARDS: &str = "WITH e AS (SELECT * FROM \
     unnest($2::text[], $3::bigint[], $4::bigint[], $5::int[]) AS e(id, delta, held, n)), \
     f AS (SELECT e.* FROM e WHERE NOT EXISTS (SELECT 1 FROM ledger l \
     WHERE l.account || ' ' || l.id = $1::text || ' ' || e.id) \
     AND e.n = (SELECT min(x.n) FROM e x WHERE x.id = e.id)), \
     t AS (SELECT COALESCE((SELECT balance - reserved FROM ledger_totals \
     WHERE account = $1::text), 0) AS available), \
     lf AS (SELECT r.n, jsonb_build_object('credits', jsonb_build_object(\
     'available', r.available, 'needed', r.needed)) AS reason \
     FROM (SELECT f.n, f.delta - f.held AS change, t.available, \
     t.available + sum(f.delta - f.held) OVER w AS after, \
     sum(GREATEST(f.held - f.delta, 0)) OVER w AS needed \
     FROM f, t WINDOW w AS (ORDER BY f.n)) r WHERE r.change < 0 AND r.after < 0), \
     c AS (SELECT * FROM unnest($6::text[], $7::bigint[], $8::bigint[], $9::int[]) \
     AS c(name, delta, lim, n)), \
     cf AS (SELECT r.n, jsonb_build_object('limit', r.n) AS reason \
     FROM (SELECT c.n, c.delta, c.lim, (SELECT COALESCE(sum(k.value), 0) FROM counters k \
     WHERE k.name = c.name) + sum(c.delta) OVER (PARTITION BY c.name ORDER BY c.n) AS value \
     FROM c) r WHERE r.delta > 0 AND r.value > r.lim) \
     SELECT augur_refuse(reason::text) FROM \
     (SELECT * FROM lf UNION ALL SELECT * FROM cf ORDER BY n LIMIT 1) first";

/// Posts ledger entries `$2` … `$9` (ids, deltas, helds, reasons, references, memos, times,
/// effect indexes) of account `$1`, whose totals [`LOCK_TOTALS`] locked and [`GUARDS`]
/// checked: each entry not posted before (nor earlier in the write) is numbered on and stamped
/// with the totals after it, and the totals move to the last one's. Returns the ids skipped,
/// in effect order.
pub(crate) const POST: &str = "WITH e AS (SELECT * FROM unnest($2::text[], $3::bigint[], \
     $4::bigint[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::int[]) \
     AS e(id, delta, held, reason, reference, memo, at, n)), \
     f AS (SELECT e.* FROM e WHERE NOT EXISTS (SELECT 1 FROM ledger l \
     WHERE l.account || ' ' || l.id = $1::text || ' ' || e.id) \
     AND e.n = (SELECT min(x.n) FROM e x WHERE x.id = e.id)), \
     t AS (SELECT balance, reserved, seq FROM ledger_totals WHERE account = $1::text), \
     r AS (SELECT f.*, t.seq + row_number() OVER w AS place, \
     t.balance + sum(f.delta) OVER w AS balance, t.reserved + sum(f.held) OVER w AS reserved \
     FROM f, t WINDOW w AS (ORDER BY f.n)), \
     ins AS (INSERT INTO ledger (account, seq, id, delta, held, reason, reference, memo, at, \
     balance_after, reserved_after) SELECT $1::text, place, id, delta, held, reason, reference, \
     memo, at, balance, reserved FROM r), \
     tot AS (UPDATE ledger_totals SET balance = x.balance, reserved = x.reserved, seq = x.place \
     FROM (SELECT * FROM r ORDER BY n DESC LIMIT 1) x WHERE ledger_totals.account = $1::text) \
     SELECT e.id FROM e WHERE NOT EXISTS (SELECT 1 FROM f WHERE f.n = e.n) ORDER BY e.n";

/// Adds deltas `$2` to counters `$1` (sorted, distinct), each in the shard of this connection
/// (`pg_backend_pid() % 1024`), so that concurrent writers rarely wait for one another's row
/// through their commits, and never deadlock. A counter is the sum of its shards.
pub(crate) const COUNT: &str = "INSERT INTO counters AS c (name, shard, value) \
     SELECT d.name, (pg_backend_pid() % 1024)::smallint, d.value \
     FROM unnest($1::text[], $2::bigint[]) AS d(name, value) \
     ON CONFLICT (name, shard) DO UPDATE SET value = c.value + EXCLUDED.value";

/// The conflict clause of an event insert: the write at that revision decides its events (a
/// stale row at those numbers, imported ahead of its record, is replaced).
const EVENTS_UPSERT: &str = "ON CONFLICT (stream_kind, stream_id, revision, idx) DO UPDATE \
     SET stream_partition = EXCLUDED.stream_partition, kind = EXCLUDED.kind, \
     data = EXCLUDED.data, escaped = EXCLUDED.escaped";

/// Appends events, every column an array (`$1` … `$8`: stream kinds, ids, partitions,
/// revisions, indexes, kinds, data, escaped flags).
pub(crate) static APPEND_EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO events AS e (stream_kind, stream_id, stream_partition, revision, idx, kind, \
         data, escaped) SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], \
         $4::bigint[], $5::int[], $6::text[], $7::text[], $8::boolean[]) {EVENTS_UPSERT}"
    )
});

/// The columns of the new items relation `nq` that [`enqueue_ctes`] reads.
const NQ_COLUMNS: &str =
    "lane, id, gk, gid, gp, owner, topic, payload, run_at, replace, worker, token, expires";

/// The `WITH` queries that enqueue the items of relation `nq` ([`NQ_COLUMNS`]; at most one per
/// lane, or with `numbered`, any number of unclaimed items in distinct groups with distinct
/// ids, in the order of `nq`'s `ord` column), as [`augur_core::store::NewItem`] says: an item whose `(lane, id)` is taken replaces
/// the one there if `replace` (in place, so that it conflicts with nothing), and is dropped
/// otherwise. A new item is numbered one past its group's last, ranked one past the larger of
/// its topic's clock and its account's last rank, and is its group's head if no other item of
/// the group is pending. If the item it replaced was a head and others wait behind it, the
/// oldest of them becomes the head. Enqueued unclaimed, it raises its account's last rank;
/// claimed, the topic's clock.
///
/// `eq_prev` holds what it replaced (or what made it be dropped) and `eq_ins` what it wrote;
/// see [`enqueue_refusals`].
///
/// Several items of one account, lane and topic are ranked one after another (the `k`-th
/// written gets the rank the first would get, plus `k - 1`), as if enqueued one at a time.
fn enqueue_ctes(fair: Fair, numbered: bool) -> String {
    let rank = if numbered {
        format!(
            "{RANK} + row_number() OVER (PARTITION BY n.lane, n.topic, n.owner ORDER BY n.ord) - 1"
        )
    } else {
        RANK.to_owned()
    };
    let mut sql = format!(
        "eq_prev AS (SELECT i.lane, i.id, i.group_kind, i.group_id, i.head FROM items i \
         JOIN nq n ON i.lane = n.lane AND i.id = n.id), \
         eq_ins AS (INSERT INTO items AS i (lane, id, group_kind, group_id, group_partition, \
         topic, owner, payload, seq, status, claims, attempts, due_at, created_at, rank, head, \
         visible_at, lease_token, lease_worker, lease_expires_at) \
         SELECT n.lane, n.id, n.gk, n.gid, n.gp, n.topic, n.owner, n.payload, \
         COALESCE((SELECT max(g.seq) FROM items g WHERE g.group_kind = n.gk \
         AND g.group_id = n.gid AND g.lane = n.lane), 0) + 1, \
         'pending', CASE WHEN n.worker IS NULL THEN 0 ELSE 1 END, '[]'::jsonb, n.run_at, now(), \
         {rank}, \
         CASE WHEN b.behind THEN NULL WHEN GREATEST(n.run_at, n.expires) <= now() THEN 'ready' \
         ELSE 'waiting' END, \
         CASE WHEN NOT b.behind AND GREATEST(n.run_at, n.expires) > now() \
         THEN GREATEST(n.run_at, n.expires) END, \
         n.token, n.worker, n.expires \
         FROM nq n, LATERAL (SELECT EXISTS (SELECT 1 FROM items g WHERE g.group_kind = n.gk \
         AND g.group_id = n.gid AND g.lane = n.lane AND g.status = 'pending' \
         AND g.id <> n.id) AS behind OFFSET 0) b \
         WHERE NOT EXISTS (SELECT 1 FROM eq_prev p WHERE p.lane = n.lane AND p.id = n.id \
         AND NOT n.replace) \
         ON CONFLICT (lane, id) DO UPDATE SET group_kind = EXCLUDED.group_kind, \
         group_id = EXCLUDED.group_id, group_partition = EXCLUDED.group_partition, \
         topic = EXCLUDED.topic, owner = EXCLUDED.owner, payload = EXCLUDED.payload, \
         seq = EXCLUDED.seq, status = EXCLUDED.status, claims = EXCLUDED.claims, \
         attempts = EXCLUDED.attempts, due_at = EXCLUDED.due_at, \
         created_at = EXCLUDED.created_at, rank = EXCLUDED.rank, ord = EXCLUDED.ord, \
         head = EXCLUDED.head, visible_at = EXCLUDED.visible_at, \
         lease_token = EXCLUDED.lease_token, lease_worker = EXCLUDED.lease_worker, \
         lease_expires_at = EXCLUDED.lease_expires_at \
         WHERE EXISTS (SELECT 1 FROM nq n JOIN eq_prev p ON p.lane = n.lane AND p.id = n.id \
         WHERE n.lane = EXCLUDED.lane AND n.id = EXCLUDED.id AND n.replace \
         AND p.group_kind = i.group_kind AND p.group_id = i.group_id) \
         RETURNING i.lane, i.id, i.topic, i.owner, i.rank, i.lease_token IS NOT NULL AS claimed), \
         eq_promote AS (UPDATE items g SET head = {HEAD_STATE}, visible_at = {HEAD_VISIBLE} \
         FROM eq_prev p JOIN nq n ON n.lane = p.lane AND n.id = p.id \
         CROSS JOIN LATERAL ({next}) x \
         WHERE n.replace AND p.head IS NOT NULL AND g.lane = x.lane AND g.id = x.id \
         AND g.status = 'pending')",
        next = next_in_group("p"),
    );
    sql += &fair_ctes(fair);
    sql
}

/// The enqueue of a fused insert: its record is new and its group empty (the statement
/// checks it), so each item is its group's first (`seq` 1, the head). Its id is new too (a
/// message id names its record): an item already holding it fails the statement on the
/// primary key, and the general path takes the write over (to replace the item or drop the
/// new one).
fn enqueue_new_group_ctes(fair: Fair) -> String {
    let mut sql = format!(
        "eq_ins AS (INSERT INTO items AS i (lane, id, group_kind, group_id, group_partition, \
         topic, owner, payload, seq, status, claims, attempts, due_at, created_at, rank, head, \
         visible_at, lease_token, lease_worker, lease_expires_at) \
         SELECT n.lane, n.id, n.gk, n.gid, n.gp, n.topic, n.owner, n.payload, 1, \
         'pending', CASE WHEN n.worker IS NULL THEN 0 ELSE 1 END, '[]'::jsonb, n.run_at, now(), \
         {RANK}, \
         CASE WHEN GREATEST(n.run_at, n.expires) <= now() THEN 'ready' ELSE 'waiting' END, \
         CASE WHEN GREATEST(n.run_at, n.expires) > now() THEN GREATEST(n.run_at, n.expires) END, \
         n.token, n.worker, n.expires FROM nq n \
         RETURNING i.lane, i.id, i.topic, i.owner, i.rank, i.lease_token IS NOT NULL AS claimed)"
    );
    sql += &fair_ctes(fair);
    sql
}

/// An enqueued item's rank (start-time fair queuing): one past the larger of its lane and
/// topic's clock and its account's last rank there.
const RANK: &str = "GREATEST((SELECT COALESCE(max(c.clock), 0) FROM queue_clocks c \
     WHERE c.lane = n.lane AND c.topic = n.topic), \
     (SELECT COALESCE(max(l.last), 0) FROM queue_last l \
     WHERE l.lane = n.lane AND l.topic = n.topic AND l.owner = n.owner)) + 1";

/// Which items a write enqueues, for the fair-queuing state it raises: an unclaimed item its
/// account's last rank, a claimed one (its first claim) the topic's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Fair {
    pub(crate) unclaimed: bool,
    pub(crate) claimed: bool,
}

impl Fair {
    /// Both kinds (when the statement cannot know).
    pub(crate) const ANY: Fair = Fair {
        unclaimed: true,
        claimed: true,
    };
}

fn fair_ctes(fair: Fair) -> String {
    let mut sql = String::new();
    if fair.unclaimed {
        sql += &format!(
            ", eq_last AS (INSERT INTO queue_last AS q (lane, topic, owner, shard, last) \
             SELECT lane, topic, owner, {FAIR_SHARD}, max(rank) FROM eq_ins WHERE NOT claimed \
             GROUP BY lane, topic, owner ON CONFLICT (lane, topic, owner, shard) DO UPDATE \
             SET last = GREATEST(q.last, EXCLUDED.last))"
        );
    }
    if fair.claimed {
        sql += &format!(
            ", eq_clock AS (INSERT INTO queue_clocks AS q (lane, topic, shard, clock) \
             SELECT lane, topic, {FAIR_SHARD}, max(rank) FROM eq_ins WHERE claimed \
             GROUP BY lane, topic ON CONFLICT (lane, topic, shard) DO UPDATE \
             SET clock = GREATEST(q.clock, EXCLUDED.clock))"
        );
    }
    sql
}

/// The conditions under which [`enqueue_ctes`] must not stand: an item meant to replace one
/// was not written (a concurrent write took its id elsewhere: `lost`), and, for a fused write,
/// an item it replaced lies in a group the write does not hold (`foreign`).
fn enqueue_refusals() -> (&'static str, &'static str) {
    (
        "EXISTS (SELECT 1 FROM nq n WHERE n.replace \
         AND (n.lane, n.id) NOT IN (SELECT i.lane, i.id FROM eq_ins i))",
        "EXISTS (SELECT 1 FROM eq_prev p JOIN nq n ON n.lane = p.lane AND n.id = p.id \
         WHERE n.replace AND (p.group_kind <> n.gk OR p.group_id <> n.gid))",
    )
}

/// Enqueues items (`$1` … `$13`, arrays in [`NQ_COLUMNS`] order: one item, or unclaimed
/// items that replace nothing, in distinct groups and with distinct ids) in a write's
/// transaction, under their groups' locks; refuses with `{"retry": "race"}` if an item lost a
/// race for its id.
pub(crate) static ENQUEUE: LazyLock<String> = LazyLock::new(|| {
    let (lost, _) = enqueue_refusals();
    format!(
        "WITH nq AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
         $5::smallint[], $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::boolean[], \
         $11::text[], $12::bigint[], $13::timestamptz[]) WITH ORDINALITY AS u({NQ_COLUMNS}, ord)), \
         {} SELECT augur_refuse('{{\"retry\": \"race\"}}') WHERE {lost}",
        enqueue_ctes(Fair::ANY, true)
    )
});

/// The oldest pending item of the group, in the lane, of the item `{item}` (a relation with
/// `lane`, `id`, `group_kind`, `group_id`), other than that item: the head once it is gone or
/// replaced. Read in `items_by_group`'s order with a limit, so that every plan takes that
/// index: a join on the same conditions was planned, on young tables, as a scan of the
/// primary key by `lane` alone, which reads every pending item of the lane.
fn next_in_group(item: &str) -> String {
    format!(
        "SELECT x.lane, x.id FROM items x WHERE x.group_kind = {item}.group_kind \
         AND x.group_id = {item}.group_id AND x.lane = {item}.lane AND x.status = 'pending' \
         AND x.id <> {item}.id ORDER BY x.seq LIMIT 1"
    )
}

/// The `WITH` queries that remove the items of relation `cq` (`lane, id`; at most one per
/// lane), whoever holds them: if one was its group's head, the oldest of the group's other
/// pending items becomes the head. `cq_gone` holds what was removed.
fn complete_ctes() -> String {
    format!(
        "cq_gone AS (DELETE FROM items i USING cq WHERE i.lane = cq.lane AND i.id = cq.id \
         RETURNING i.lane, i.id, i.group_kind, i.group_id, i.head), \
         cq_promote AS (UPDATE items g SET head = {HEAD_STATE}, visible_at = {HEAD_VISIBLE} \
         FROM cq_gone d CROSS JOIN LATERAL ({NEXT_IN_GROUP}) x \
         WHERE d.head IS NOT NULL AND g.lane = x.lane AND g.id = x.id AND g.status = 'pending')",
        NEXT_IN_GROUP = next_in_group("d"),
    )
}

/// Removes item `($1, $2)` (lane, id), whoever holds it, in a write's transaction under its
/// group's lock.
pub(crate) static COMPLETE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH cq AS (SELECT $1::text AS lane, $2::text AS id), {} SELECT count(*) FROM cq_gone",
        complete_ctes()
    )
});

/// Which record write a fused statement makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FusedWrite {
    /// An insert of a record of a kind that keeps a tombstone (`$1` … `$13`).
    Insert,
    /// A compare-and-set of such a record (`$1` … `$13`, expected revision `$14`).
    Update,
}

/// The shape of a fused statement: the record write, then its effects, each taking the
/// parameters that follow the previous one's, in this order: the items to enqueue (9 arrays:
/// lanes, ids, topics, payloads, due times, replace flags, claim workers, tokens and expiries),
/// the items to complete (lanes, ids), the counters (names, deltas), the events (kinds, data,
/// escaped flags), the ledger entries (the account; 7 arrays: ids, deltas, helds, reasons,
/// references, memos, times; then the sums of the deltas and of the helds, how many entries,
/// and the least the account must have to spend before them, see [`Posting`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FusedShape {
    pub(crate) write: FusedWrite,
    /// Items to enqueue, and which of the fair-queuing state they raise.
    pub(crate) enqueue: Option<Fair>,
    pub(crate) complete: bool,
    pub(crate) counts: bool,
    pub(crate) events: bool,
    /// Ledger entries of the write's account, none posted before (see [`Posting`]).
    pub(crate) posts: bool,
}

/// What the fused statement needs to know of a write's ledger entries beyond the entries
/// themselves, computed once by the caller: the sums it moves the totals by, how many entries
/// there are (the ledger numbers on by that), and `need`, the least `balance - reserved` the
/// account must have before them so that no entry that lowers what it can spend leaves it
/// below zero ([`GUARDS`]' rule: entry `k` with `delta_k - held_k < 0` is refused when
/// `available + Σ_{j≤k} (delta_j - held_j) < 0`; so `need` is the largest
/// `-Σ_{j≤k} (delta_j - held_j)` over those `k`, or `i64::MIN` when no entry lowers it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Posting {
    pub(crate) delta: i64,
    pub(crate) held: i64,
    pub(crate) count: i64,
    pub(crate) need: i64,
}

impl Posting {
    /// The sums and the need of entries `(delta, held)` in effect order; `None` if a sum
    /// overflows (such a write is left to the general path).
    pub(crate) fn of(entries: impl IntoIterator<Item = (i64, i64)>) -> Option<Posting> {
        let mut posting = Posting {
            delta: 0,
            held: 0,
            count: 0,
            need: i64::MIN,
        };
        let mut change = 0i64;
        for (delta, held) in entries {
            posting.delta = posting.delta.checked_add(delta)?;
            posting.held = posting.held.checked_add(held)?;
            posting.count += 1;
            let own = delta.checked_sub(held)?;
            change = change.checked_add(own)?;
            if own < 0 {
                posting.need = posting.need.max(change.checked_neg()?);
            }
        }
        Some(posting)
    }
}

/// One statement that makes a record write and applies its effects: a single round trip, and
/// no `BEGIN`/`COMMIT`. Every effect is a data-modifying `WITH` query that reads the write's
/// `RETURNING` row `w`, so it writes only if the write did; queue effects concern the written
/// record's group alone (the caller sees to it; see the module docs for why a single snapshot
/// is safe for them).
///
/// Returns one row: the new revision (NULL if nothing was written: for an update, the caller
/// reads the record's revision with [`REVISION`] to tell why; for an insert, it was not
/// allowed, and the general path must make it). Refuses with `{"retry":
/// "fallback"}` when an effect reaches beyond the record's group: the general path takes over.
///
/// The record and event inserts are plain `INSERT`s, without `ON CONFLICT`: a key already
/// taken (a record, possibly gone; stale events imported ahead of their record) fails the
/// statement with a unique violation, and the general path, which tells the cases apart, makes
/// the write instead. Rare, and it spares every fused write the arbiter checks and speculative
/// insertion of an `ON CONFLICT` clause.
pub(crate) fn fused(shape: FusedShape) -> &'static str {
    // 256 shapes; each statement built once.
    static BUILT: [OnceLock<String>; 256] = [const { OnceLock::new() }; 256];
    let fair = shape.enqueue.unwrap_or_default();
    let index = usize::from(shape.write == FusedWrite::Update)
        | usize::from(shape.enqueue.is_some()) << 1
        | usize::from(fair.claimed) << 2
        | usize::from(fair.unclaimed) << 3
        | usize::from(shape.complete) << 4
        | usize::from(shape.counts) << 5
        | usize::from(shape.events) << 6
        | usize::from(shape.posts) << 7;
    BUILT[index].get_or_init(|| build_fused(shape))
}

fn build_fused(shape: FusedShape) -> String {
    let mut n = match shape.write {
        FusedWrite::Insert => 13,
        FusedWrite::Update => 14,
    };
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let mut sql = match shape.write {
        FusedWrite::Insert => format!(
            "WITH lk AS (SELECT pg_try_advisory_xact_lock(hashtext(current_schema()), \
             hashtext($1::text || ' ' || $2::text)) AS ok), \
             clean AS (SELECT NOT EXISTS (SELECT 1 FROM items \
             WHERE group_kind = $1::text AND group_id = $2::text) AS ok), \
             w AS (INSERT INTO records ({RECORD_WRITE_COLUMNS}, revision, body, data) \
             SELECT {RECORD_INSERT_VALUES} FROM lk, clean WHERE lk.ok AND clean.ok \
             RETURNING kind, id, partition, owner, revision)"
        ),
        FusedWrite::Update => {
            // With queue effects, the statement must decide on a snapshot no queue write on
            // the record's group has moved past: the row it updates must be the version its
            // snapshot holds (a bump or another write made a new one). PostgreSQL re-checks
            // the condition on the row's latest version after waiting for its lock, with the
            // snapshot's `xmin` computed once, before.
            let guard = if shape.enqueue.is_some() || shape.complete {
                " AND xmin = (SELECT xmin FROM records WHERE key = $1::text || ':' || $2::text)"
            } else {
                ""
            };
            format!(
                "WITH w AS (UPDATE records SET {RECORD_UPDATE_SET} \
                 WHERE key = $1::text || ':' || $2::text AND revision = $14::bigint \
                 AND {OWNED_BY} $4::text{guard} \
                 RETURNING kind, id, partition, owner, revision)"
            )
        }
    };
    let mut refusals: Vec<String> = Vec::new();
    if let Some(fair) = shape.enqueue {
        let p: Vec<String> = (0..9).map(|_| next()).collect();
        let ctes = match shape.write {
            FusedWrite::Insert => enqueue_new_group_ctes(fair),
            FusedWrite::Update => enqueue_ctes(fair, false),
        };
        sql += &format!(
            ", nq AS (SELECT u.lane, u.id, w.kind AS gk, w.id AS gid, w.partition AS gp, \
             w.owner, u.topic, u.payload, u.run_at, u.replace, u.worker, u.token, u.expires \
             FROM w, unnest({}::text[], {}::text[], {}::text[], {}::text[], {}::timestamptz[], \
             {}::boolean[], {}::text[], {}::bigint[], {}::timestamptz[]) \
             AS u(lane, id, topic, payload, run_at, replace, worker, token, expires)), {ctes}",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8],
        );
        if shape.write == FusedWrite::Update {
            let (lost, foreign) = enqueue_refusals();
            refusals.push(lost.to_owned());
            refusals.push(foreign.to_owned());
        }
    }
    if shape.complete {
        let (lanes, ids) = (next(), next());
        sql += &format!(
            ", cq AS (SELECT u.lane, u.id FROM w, unnest({lanes}::text[], {ids}::text[]) \
             AS u(lane, id)), {}",
            complete_ctes()
        );
        refusals.push(
            "EXISTS (SELECT 1 FROM cq_gone d WHERE d.group_kind <> $1::text \
             OR d.group_id <> $2::text)"
                .to_owned(),
        );
    }
    if shape.counts {
        let (names, deltas) = (next(), next());
        sql += &format!(
            ", fx_count AS (INSERT INTO counters AS c (name, shard, value) \
             SELECT d.name, (pg_backend_pid() % 1024)::smallint, d.value \
             FROM w, unnest({names}::text[], {deltas}::bigint[]) AS d(name, value) \
             ON CONFLICT (name, shard) DO UPDATE SET value = c.value + EXCLUDED.value)"
        );
    }
    if shape.events {
        let (kinds, data, escaped) = (next(), next(), next());
        sql += &format!(
            ", fx_events AS (INSERT INTO events AS e (stream_kind, stream_id, stream_partition, \
             revision, idx, kind, data, escaped) \
             SELECT w.kind, w.id, w.partition, w.revision, (u.n - 1)::integer, u.kind, u.data, \
             u.escaped FROM w, unnest({kinds}::text[], {data}::text[], {escaped}::boolean[]) \
             WITH ORDINALITY AS u(kind, data, escaped, n))"
        );
    }
    if shape.posts {
        let account = next();
        let p: Vec<String> = (0..7).map(|_| next()).collect();
        let (delta, held, count, need) = (next(), next(), next(), next());
        // The totals row is locked by the update, and its condition is checked again on the
        // row's latest version once the lock is granted: one account's postings are decided
        // one at a time, as on the general path. An entry posted before (rare: a repeated
        // settlement loses its compare-and-set first) fails the insert on the ledger's unique
        // key, and the general path skips it: so no write pays for looking its entries up.
        sql += &format!(
            ", lp AS (SELECT u.* FROM unnest({}::text[], {}::bigint[], {}::bigint[], \
             {}::text[], {}::text[], {}::text[], {}::timestamptz[]) WITH ORDINALITY \
             AS u(id, delta, held, reason, reference, memo, at, n)), \
             lt AS (UPDATE ledger_totals t SET balance = t.balance + {delta}::bigint, \
             reserved = t.reserved + {held}::bigint, seq = t.seq + {count}::bigint FROM w \
             WHERE t.account = {account}::text AND t.balance - t.reserved >= {need}::bigint \
             RETURNING t.balance, t.reserved, t.seq), \
             fx_post AS (INSERT INTO ledger (account, seq, id, delta, held, reason, \
             reference, memo, at, balance_after, reserved_after) \
             SELECT {account}::text, lt.seq - {count}::bigint + lp.n, lp.id, lp.delta, lp.held, \
             lp.reason, lp.reference, lp.memo, lp.at, \
             lt.balance - {delta}::bigint + sum(lp.delta) OVER o, \
             lt.reserved - {held}::bigint + sum(lp.held) OVER o \
             FROM lt, lp WINDOW o AS (ORDER BY lp.n))",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6],
        );
        refusals.push("(EXISTS (SELECT 1 FROM w) AND NOT EXISTS (SELECT 1 FROM lt))".to_owned());
    }
    let refused = if refusals.is_empty() {
        "NULL::boolean".to_owned()
    } else {
        format!(
            "CASE WHEN {} THEN augur_refuse('{{\"retry\": \"fallback\"}}') END",
            refusals.join(" OR ")
        )
    };
    sql + &format!(" SELECT (SELECT revision FROM w), {refused}")
}

/// Makes the oldest pending item of group `($2, $3)` in lane `$1` its head, and no other:
/// touches only the rows whose marks change. After every change that may change the head,
/// under the group's lock. The group's items are read first, in `items_by_group`'s order (so
/// that every plan takes that index: planned on young tables, a join on the same conditions
/// read the primary key by `lane` alone, every pending item of the lane), and updated by key.
pub(crate) static REHEAD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH g AS MATERIALIZED (SELECT lane, id, seq, due_at, lease_expires_at FROM items \
         WHERE group_kind = $2::text AND group_id = $3::text AND lane = $1::text \
         AND status = 'pending' ORDER BY seq), \
         x AS (SELECT g.lane, g.id, CASE WHEN g.seq = m.seq THEN {HEAD_STATE} END AS head, \
         CASE WHEN g.seq = m.seq THEN {HEAD_VISIBLE} END AS visible_at \
         FROM g, (SELECT min(seq) AS seq FROM g) m) \
         UPDATE items i SET head = x.head, visible_at = x.visible_at FROM x \
         WHERE i.lane = x.lane AND i.id = x.id \
         AND (i.head IS DISTINCT FROM x.head OR i.visible_at IS DISTINCT FROM x.visible_at)"
    )
});

/// Claims up to `$3` items of lane `$1` not of the topics `$2` for worker `$4`, for the
/// interval `$5`; returns each with its lease (token, expiry), lowest rank first.
///
/// Candidates are the 'ready' heads in fair order, and the 'waiting' heads whose time has come
/// (a due time passed, a lease lapsed), which it also moves to 'ready' (up to 256 at a time);
/// both through their partial indexes, so nothing else is read. `FOR UPDATE SKIP LOCKED`
/// lets concurrent claimers take different items instead of queueing on the same rows, and
/// re-checks each row's latest version, so an item leased, finished or moved meanwhile is not
/// taken. Each claim raises its topic's clock to the rank it took.
pub(crate) static CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH due AS (SELECT lane, id, topic, rank, ord FROM items \
         WHERE lane = $1::text AND head = 'waiting' AND visible_at <= now() \
         ORDER BY visible_at LIMIT 256 FOR UPDATE SKIP LOCKED), \
         ready AS (SELECT lane, id, topic, rank, ord FROM items \
         WHERE lane = $1::text AND head = 'ready' AND topic <> ALL ($2::text[]) \
         ORDER BY rank, ord LIMIT $3::bigint FOR UPDATE SKIP LOCKED), \
         pick AS (SELECT lane, id FROM (SELECT * FROM due WHERE topic <> ALL ($2::text[]) \
         UNION ALL SELECT * FROM ready) c ORDER BY rank, ord LIMIT $3::bigint), \
         touched AS (SELECT lane, id, true AS chosen FROM pick UNION ALL \
         SELECT d.lane, d.id, false FROM due d \
         WHERE NOT EXISTS (SELECT 1 FROM pick p WHERE p.lane = d.lane AND p.id = d.id)), \
         upd AS (UPDATE items i SET \
         head = CASE WHEN t.chosen THEN 'waiting' ELSE 'ready' END, \
         visible_at = CASE WHEN t.chosen THEN now() + $5::interval END, \
         claims = i.claims + CASE WHEN t.chosen THEN 1 ELSE 0 END, \
         lease_token = CASE WHEN t.chosen THEN {NEW_TOKEN} ELSE i.lease_token END, \
         lease_worker = CASE WHEN t.chosen THEN $4::text ELSE i.lease_worker END, \
         lease_expires_at = CASE WHEN t.chosen THEN now() + $5::interval \
         ELSE i.lease_expires_at END \
         FROM touched t WHERE i.lane = t.lane AND i.id = t.id \
         RETURNING i.*, t.chosen), \
         clk AS (INSERT INTO queue_clocks AS q (lane, topic, shard, clock) \
         SELECT lane, topic, {FAIR_SHARD}, max(rank) FROM upd WHERE chosen GROUP BY lane, topic \
         ON CONFLICT (lane, topic, shard) DO UPDATE SET clock = GREATEST(q.clock, EXCLUDED.clock)) \
         SELECT {ITEM_COLUMNS}, lease_token, lease_expires_at FROM upd WHERE chosen \
         ORDER BY rank, ord"
    )
});

/// Extends the live lease `$3` of item `($1, $2)` to `now() + $4`; returns the new expiry.
pub(crate) const RENEW: &str = "UPDATE items SET lease_expires_at = now() + $4::interval, \
     visible_at = CASE WHEN head IS NOT NULL THEN now() + $4::interval END \
     WHERE lane = $1::text AND id = $2::text AND lease_token = $3::bigint \
     AND lease_expires_at > now() RETURNING lease_expires_at";

/// Ends the live lease `$3` of item `($1, $2)` with a retry or a hand-back: due again at `$4`
/// (NULL: now), the claim refunded if `$5`, attempt `$6` (JSON, or NULL) recorded. The item
/// stays where it is in its group, so no lock is needed. With `$7` (`Outcome::HandBack`) the
/// item goes back to the queue at its rank, and its topic's clocks (every shard's) go back
/// below that rank: the claim that raised them did not keep it. Returns a row if the lease was
/// live.
pub(crate) const RESCHEDULE: &str = "WITH u AS (UPDATE items \
     SET due_at = COALESCE($4::timestamptz, now()), \
     claims = CASE WHEN $5::boolean THEN GREATEST(claims - 1, 0) ELSE claims END, \
     attempts = CASE WHEN $6::jsonb IS NULL THEN attempts \
     ELSE attempts || jsonb_build_array($6::jsonb) END, \
     lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL, \
     head = CASE WHEN head IS NULL THEN NULL \
     WHEN COALESCE($4::timestamptz, now()) <= now() THEN 'ready' ELSE 'waiting' END, \
     visible_at = CASE WHEN head IS NOT NULL AND $4::timestamptz > now() \
     THEN $4::timestamptz END \
     WHERE lane = $1::text AND id = $2::text AND lease_token = $3::bigint \
     AND lease_expires_at > now() RETURNING topic, rank), \
     back AS (UPDATE queue_clocks c SET clock = u.rank - 1 FROM u \
     WHERE $7::boolean AND c.lane = $1::text AND c.topic = u.topic AND c.clock >= u.rank) \
     SELECT 1 FROM u";

/// Ends the live lease `$3` of item `($1, $2)` with a final status `$4`, recording attempt `$5`
/// (JSON, or NULL); refuses with `{"lease": "lost"}` if the lease is not live. Under the
/// group's lock; [`SETTLE`] and [`REHEAD`] follow.
pub(crate) const FINISH: &str = "WITH f AS (UPDATE items SET status = $4::text, due_at = NULL, \
     head = NULL, visible_at = NULL, \
     attempts = CASE WHEN $5::jsonb IS NULL THEN attempts \
     ELSE attempts || jsonb_build_array($5::jsonb) END, \
     lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL \
     WHERE lane = $1::text AND id = $2::text AND lease_token = $3::bigint \
     AND lease_expires_at > now() RETURNING 1) \
     SELECT augur_refuse('{\"lease\": \"lost\"}') WHERE NOT EXISTS (SELECT 1 FROM f)";

/// After [`FINISH`] of item `($1, $2)` of group `($3, $4)`: with `$6` (give up the rest), the
/// group's later pending items fail too; the finished items stay if the lane keeps finished
/// items (`$5`) and the group's record still holds its data, and are removed otherwise.
pub(crate) const SETTLE: &str = "WITH k AS (SELECT $5::boolean AND EXISTS (SELECT 1 FROM records \
     WHERE key = $3::text || ':' || $4::text AND NOT data_removed) AS keep), \
     s AS (SELECT seq FROM items WHERE lane = $1::text AND id = $2::text), \
     failed AS (UPDATE items SET status = 'failed', due_at = NULL, head = NULL, \
     visible_at = NULL, lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL \
     WHERE $6::boolean AND (SELECT keep FROM k) AND group_kind = $3::text \
     AND group_id = $4::text AND lane = $1::text AND status = 'pending' \
     AND seq > (SELECT seq FROM s)), \
     dropped AS (DELETE FROM items WHERE NOT (SELECT keep FROM k) AND group_kind = $3::text \
     AND group_id = $4::text AND lane = $1::text AND (id = $2::text OR ($6::boolean \
     AND status = 'pending' AND seq > (SELECT seq FROM s)))) \
     SELECT 1";

/// Makes item `$4` of group `($2, $3)` in lane `$1` pending and due now, without a lease,
/// keeping its place, claims and attempts; refuses with `{"missing": true}` if there is no
/// such item. Under the group's lock; [`REHEAD`] follows.
pub(crate) const REQUEUE: &str = "WITH r AS (UPDATE items SET status = 'pending', \
     due_at = now(), head = NULL, visible_at = NULL, lease_token = NULL, lease_worker = NULL, \
     lease_expires_at = NULL WHERE lane = $1::text AND id = $4::text \
     AND group_kind = $2::text AND group_id = $3::text RETURNING 1) \
     SELECT augur_refuse('{\"missing\": true}') WHERE NOT EXISTS (SELECT 1 FROM r)";

/// A group's items in a lane (`$1`, group `($2, $3)`), in order.
pub(crate) static ITEMS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {ITEM_COLUMNS} FROM items WHERE group_kind = $2::text AND group_id = $3::text \
         AND lane = $1::text ORDER BY seq"
    )
});

/// Lane `$1`'s pending items: leased (a live lease), ready (a head, due), delayed (the rest).
pub(crate) const QUEUE_STATS: &str = "SELECT \
     count(*) FILTER (WHERE lease_expires_at > now()), \
     count(*) FILTER (WHERE NOT COALESCE(lease_expires_at > now(), false) \
     AND head IS NOT NULL AND due_at <= now()), \
     count(*) FILTER (WHERE NOT COALESCE(lease_expires_at > now(), false) \
     AND NOT (head IS NOT NULL AND COALESCE(due_at <= now(), false))) \
     FROM items WHERE lane = $1::text AND status = 'pending'";

/// Up to `$5` events of stream `($1, $2)` after position `($3, $4)`, in order (a seek in the
/// primary key).
pub(crate) const READ_EVENTS: &str = "SELECT revision, idx, kind, data, escaped FROM events \
     WHERE stream_kind = $1::text AND stream_id = $2::text \
     AND (revision, idx) > ($3::bigint, $4::int) ORDER BY revision, idx LIMIT $5::bigint";

/// Account `$1`'s totals.
pub(crate) const BALANCE: &str =
    "SELECT balance, reserved FROM ledger_totals WHERE account = $1::text";

/// The columns of a ledger entry, in the order `ledger::posted_from_row` reads them.
pub(crate) const LEDGER_COLUMNS: &str = "account, seq, id, delta, held, reason, reference, memo, \
     at, balance_after, reserved_after";

/// Up to `$3` of account `$1`'s entries before seq `$2`, newest first.
pub(crate) static LEDGER_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {LEDGER_COLUMNS} FROM ledger WHERE account = $1::text AND seq < $2::bigint \
         ORDER BY seq DESC LIMIT $3::bigint"
    )
});

/// Every counter: the sum of its shards.
pub(crate) const COUNTERS: &str =
    "SELECT name, sum(value)::bigint FROM counters GROUP BY name ORDER BY name";

/// Picks up to `$2` records due for retention at `$1` and locks them (skipping records being
/// written right now, and those whose group lock a queue write holds: the next sweep takes
/// them), in expiry order. In a transaction that [`EXPIRE_APPLY`] ends.
pub(crate) const EXPIRE_PICK: &str = "WITH due AS (SELECT kind, id, sweep_at FROM records \
     WHERE sweep_at <= $1::timestamptz ORDER BY sweep_at, kind, id LIMIT $2::bigint \
     FOR UPDATE SKIP LOCKED) \
     SELECT kind, id FROM due WHERE pg_try_advisory_xact_lock(hashtext(current_schema()), \
     hashtext(kind || ' ' || id))";

/// Applies retention to the records `($1, $2)` (kinds, ids) that [`EXPIRE_PICK`] locked:
/// records of kinds that keep a tombstone lose their data and move to their next revision,
/// their events and finished items go; records of other kinds are deleted with all their
/// events and items. Returns each record's key, revision after, and expiry.
pub(crate) const EXPIRE_APPLY: &str = "WITH k AS (SELECT * FROM \
     unnest($1::text[], $2::text[]) AS k(kind, id)), \
     t AS (UPDATE records r SET data = NULL, data_removed = true, sweep_at = NULL, \
     revision = r.revision + 1 FROM k WHERE r.key = k.kind || ':' || k.id \
     AND r.gone_at IS NULL RETURNING r.kind, r.id, r.partition, r.revision, r.expires_at), \
     d AS (DELETE FROM records r USING k WHERE r.key = k.kind || ':' || k.id \
     AND r.gone_at IS NOT NULL \
     RETURNING r.kind, r.id, r.partition, r.revision + 1 AS revision, r.expires_at), \
     ev AS (DELETE FROM events e USING k WHERE e.stream_kind = k.kind AND e.stream_id = k.id), \
     it AS (DELETE FROM items i USING (SELECT kind, id, false AS every FROM t UNION ALL \
     SELECT kind, id, true FROM d) x WHERE i.group_kind = x.kind AND i.group_id = x.id \
     AND (x.every OR i.status <> 'pending')) \
     SELECT kind, id, partition, revision, expires_at FROM t UNION ALL \
     SELECT kind, id, partition, revision, expires_at FROM d";

/// Sends each payload of `$1` (a text array) on channel `channel` (a plain identifier).
pub(crate) fn announce(channel: &str) -> String {
    format!("SELECT pg_notify('{channel}', payload) FROM unnest($1::text[]) AS payload")
}

/// Builds the listing statement for the filters present in `query`. Parameters: `$1` the
/// kind, then each present filter's in this order: owner, status, parent, created_after,
/// created_before, cursor created_at, cursor id; then the limit.
///
/// Newest first by `(created_at, id)`: the kind's index with the owner or the parent (or
/// neither) serves the order and the cursor (a row-value comparison the index seeks to),
/// scanned backwards, so nothing is sorted; other filters (the status) are checked on the
/// rows it yields.
pub(crate) fn list(query: &ListQuery) -> String {
    let mut conditions: Vec<String> = vec!["kind = $1::text".into()];
    let mut n = 1;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if query.owner.is_some() {
        conditions.push(format!("owner = {}::text", next()));
    }
    if query.status.is_some() {
        conditions.push(format!("status = {}::text", next()));
    }
    if query.parent.is_some() {
        conditions.push(format!("parent = {}::text", next()));
    }
    if query.created_after.is_some() {
        conditions.push(format!("created_at >= {}::timestamptz", next()));
    }
    if query.created_before.is_some() {
        conditions.push(format!("created_at < {}::timestamptz", next()));
    }
    // Outward from the position: newest first forward, oldest first backward.
    let (compare, order) = match &query.after {
        Some(c) if c.backward => (">", "ASC"),
        _ => ("<", "DESC"),
    };
    if query.after.is_some() {
        let (a, b) = (next(), next());
        conditions.push(format!(
            "(created_at, id) {compare} ({a}::timestamptz, {b}::text)"
        ));
    }
    let limit = next();
    format!(
        "SELECT {RECORD_COLUMNS} FROM records WHERE {} AND {PRESENT} \
         ORDER BY created_at {order}, id {order} LIMIT {limit}::bigint",
        conditions.join(" AND ")
    )
}

/// Export pages: each section in its order, from the start or after a position.
pub(crate) mod export {
    use super::*;

    /// Records by `(kind, id)`, after `($1, $2)` if `after`; limit last.
    pub(crate) fn records(after: bool) -> String {
        let (cond, limit) = if after {
            ("WHERE key > $1::text || ':' || $2::text", "$3")
        } else {
            ("", "$1")
        };
        format!("SELECT {RECORD_COLUMNS} FROM records {cond} ORDER BY key LIMIT {limit}::bigint")
    }

    /// Items by `(lane, id)`.
    pub(crate) fn items(after: bool) -> String {
        let (cond, limit) = if after {
            ("WHERE (lane, id) > ($1::text, $2::text)", "$3")
        } else {
            ("", "$1")
        };
        format!("SELECT {ITEM_COLUMNS} FROM items {cond} ORDER BY lane, id LIMIT {limit}::bigint")
    }

    /// Events by `(stream kind, stream id, revision, index)`.
    pub(crate) fn events(after: bool) -> String {
        let (cond, limit) = if after {
            (
                "WHERE (stream_kind, stream_id, revision, idx) > \
                 ($1::text, $2::text, $3::bigint, $4::int)",
                "$5",
            )
        } else {
            ("", "$1")
        };
        format!(
            "SELECT stream_kind, stream_id, stream_partition, revision, idx, kind, data, escaped \
             FROM events {cond} ORDER BY stream_kind, stream_id, revision, idx \
             LIMIT {limit}::bigint"
        )
    }

    /// Ledger entries by `(account, seq)`.
    pub(crate) fn ledger(after: bool) -> String {
        let (cond, limit) = if after {
            ("WHERE (account, seq) > ($1::text, $2::bigint)", "$3")
        } else {
            ("", "$1")
        };
        format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger {cond} ORDER BY account, seq \
             LIMIT {limit}::bigint"
        )
    }

    /// Counters by name.
    pub(crate) fn counters(after: bool) -> String {
        let (cond, limit) = if after {
            ("WHERE name > $1::text", "$2")
        } else {
            ("", "$1")
        };
        format!(
            "SELECT name, sum(value)::bigint FROM counters {cond} GROUP BY name ORDER BY name \
             LIMIT {limit}::bigint"
        )
    }
}

/// Imports: each piece written as it is, replacing what is there.
pub(crate) mod import {
    use super::*;

    /// A record (`$1` … `$13`) at revision `$14`.
    pub(crate) fn record() -> String {
        format!(
            "INSERT INTO records ({RECORD_WRITE_COLUMNS}, revision, body, data) \
             VALUES ($1::text || ':' || $2::text, $1::text, $2::text, $3::smallint, $4::text, \
             $5::timestamptz, $6::text, $7::text, $8::timestamptz, $9::boolean, \
             $10::timestamptz, $11::timestamptz, $14::bigint, $12::text, $13::text) \
             ON CONFLICT (key) DO UPDATE SET {}",
            "partition = EXCLUDED.partition, owner = EXCLUDED.owner, \
             created_at = EXCLUDED.created_at, status = EXCLUDED.status, \
             parent = EXCLUDED.parent, expires_at = EXCLUDED.expires_at, \
             data_removed = EXCLUDED.data_removed, sweep_at = EXCLUDED.sweep_at, \
             gone_at = EXCLUDED.gone_at, revision = EXCLUDED.revision, body = EXCLUDED.body, \
             data = EXCLUDED.data"
        )
    }

    /// An item (`$1` … `$14` in [`ITEM_COLUMNS`] order) with its history, unleased, ranked as
    /// if queued now; [`REHEAD`] follows for its group.
    pub(crate) fn item() -> String {
        format!(
            "WITH r AS (SELECT GREATEST((SELECT COALESCE(max(clock), 0) FROM queue_clocks \
             WHERE lane = $1::text AND topic = $6::text), \
             (SELECT COALESCE(max(last), 0) FROM queue_last WHERE lane = $1::text \
             AND topic = $6::text AND owner = $7::text)) + 1 AS rank), \
             i AS (INSERT INTO items AS i ({ITEM_COLUMNS}, rank) \
             SELECT $1::text, $2::text, $3::text, $4::text, $5::smallint, $6::text, $7::text, \
             $8::text, $9::bigint, $10::text, $11::bigint, $12::jsonb, $13::timestamptz, \
             $14::timestamptz, r.rank FROM r \
             ON CONFLICT (lane, id) DO UPDATE SET group_kind = EXCLUDED.group_kind, \
             group_id = EXCLUDED.group_id, group_partition = EXCLUDED.group_partition, \
             topic = EXCLUDED.topic, owner = EXCLUDED.owner, payload = EXCLUDED.payload, \
             seq = EXCLUDED.seq, status = EXCLUDED.status, claims = EXCLUDED.claims, \
             attempts = EXCLUDED.attempts, due_at = EXCLUDED.due_at, \
             created_at = EXCLUDED.created_at, rank = EXCLUDED.rank, ord = EXCLUDED.ord, \
             head = NULL, visible_at = NULL, lease_token = NULL, lease_worker = NULL, \
             lease_expires_at = NULL RETURNING rank) \
             INSERT INTO queue_last AS q (lane, topic, owner, shard, last) \
             SELECT $1::text, $6::text, $7::text, {FAIR_SHARD}, rank FROM i \
             ON CONFLICT (lane, topic, owner, shard) DO UPDATE SET last = GREATEST(q.last, EXCLUDED.last)"
        )
    }

    /// An event (`$1` … `$8` as [`APPEND_EVENTS`] takes them, one each).
    pub(crate) fn event() -> String {
        format!(
            "INSERT INTO events AS e (stream_kind, stream_id, stream_partition, revision, idx, \
             kind, data, escaped) VALUES ($1::text, $2::text, $3::smallint, $4::bigint, $5::int, \
             $6::text, $7::text, $8::boolean) {EVENTS_UPSERT}"
        )
    }

    /// A ledger entry (`$1` … `$11` in [`LEDGER_COLUMNS`] order) at its place.
    pub(crate) fn ledger() -> String {
        format!(
            "INSERT INTO ledger ({LEDGER_COLUMNS}) VALUES ($1::text, $2::bigint, $3::text, \
             $4::bigint, $5::bigint, $6::text, $7::text, $8::text, $9::timestamptz, $10::bigint, \
             $11::bigint) ON CONFLICT (account, seq) DO UPDATE SET id = EXCLUDED.id, \
             delta = EXCLUDED.delta, held = EXCLUDED.held, reason = EXCLUDED.reason, \
             reference = EXCLUDED.reference, memo = EXCLUDED.memo, at = EXCLUDED.at, \
             balance_after = EXCLUDED.balance_after, reserved_after = EXCLUDED.reserved_after"
        )
    }

    /// The totals of accounts `$1` become those after each one's last entry.
    pub(crate) const TOTALS: &str = "INSERT INTO ledger_totals AS t \
         (account, balance, reserved, seq) \
         SELECT l.account, l.balance_after, l.reserved_after, l.seq FROM ledger l \
         WHERE l.account = ANY ($1::text[]) \
         AND l.seq = (SELECT max(x.seq) FROM ledger x WHERE x.account = l.account) \
         ON CONFLICT (account) DO UPDATE SET balance = EXCLUDED.balance, \
         reserved = EXCLUDED.reserved, seq = EXCLUDED.seq";

    /// Counter `$1` set to `$2`: its other shards go, shard 0 holds the value.
    pub(crate) const COUNTER: &str = "WITH d AS (DELETE FROM counters \
         WHERE name = $1::text AND shard <> 0) \
         INSERT INTO counters (name, shard, value) VALUES ($1::text, 0, $2::bigint) \
         ON CONFLICT (name, shard) DO UPDATE SET value = EXCLUDED.value";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_numbers_only_the_parameters_it_uses() {
        use augur_core::store::{Cursor, Kind};
        let q = ListQuery {
            owner: Some(augur_core::AccountId::admin()),
            after: Some(Cursor {
                created_at: augur_core::Timestamp::EPOCH,
                id: "x".into(),
                backward: false,
            }),
            ..ListQuery::of(Kind::Prediction, 5)
        };
        let sql = list(&q);
        assert!(
            sql.contains(
                "WHERE kind = $1::text AND owner = $2::text AND \
                 (created_at, id) < ($3::timestamptz, $4::text) AND"
            ),
            "{sql}"
        );
        assert!(sql.ends_with("LIMIT $5::bigint"), "{sql}");
        let sql = list(&ListQuery::of(Kind::Prediction, 1));
        assert!(sql.ends_with("ORDER BY created_at DESC, id DESC LIMIT $2::bigint"));
    }

    #[test]
    fn fused_statements_number_their_parameters_in_order() {
        let all = fused(FusedShape {
            write: FusedWrite::Update,
            enqueue: Some(Fair::ANY),
            complete: true,
            counts: true,
            events: true,
            posts: false,
        });
        // 14 for the write, 9 + 2 + 2 + 3 for the effects.
        assert!(all.contains("$30::boolean[]"), "{all}");
        assert!(!all.contains("$31"), "{all}");
        let bare = fused(FusedShape {
            write: FusedWrite::Insert,
            enqueue: None,
            complete: false,
            counts: false,
            events: false,
            posts: false,
        });
        assert!(!bare.contains("$14"), "{bare}");
        assert!(bare.ends_with("NULL::boolean"), "{bare}");
        let priced = fused(FusedShape {
            write: FusedWrite::Update,
            enqueue: None,
            complete: true,
            counts: true,
            events: true,
            posts: true,
        });
        // 14 for the write, 2 + 2 + 3 for the effects, 1 + 7 + 4 for the entries.
        assert!(priced.contains(">= $33::bigint RETURNING"), "{priced}");
        assert!(!priced.contains("$34"), "{priced}");
        // The ledger is only inserted into: its unique key refuses a repeated entry.
        assert!(!priced.contains("FROM ledger "), "{priced}");
    }

    #[test]
    fn a_posting_needs_what_its_lowest_point_takes() {
        let none = Posting::of([]).unwrap();
        assert_eq!((none.delta, none.held, none.count), (0, 0, 0));
        assert_eq!(none.need, i64::MIN);
        // A reservation of 3: the account needs 3 to spend.
        assert_eq!(Posting::of([(0, 3)]).unwrap().need, 3);
        // A charge of 2 out of a hold of 5, then the rest released: neither lowers what the
        // account can spend, so it needs nothing.
        let settle = Posting::of([(-2, -2), (0, -3)]).unwrap();
        assert_eq!((settle.delta, settle.held, settle.count), (-2, -5, 2));
        assert_eq!(settle.need, i64::MIN);
        // A grant of 5, then reservations of 3 and 4: the lowest point is 5 - 7 = -2.
        let p = Posting::of([(5, 0), (0, 3), (0, 4)]).unwrap();
        assert_eq!(p.need, 2);
        // A reservation before the grant: the first entry's point decides.
        assert_eq!(Posting::of([(0, 4), (5, 0)]).unwrap().need, 4);
        assert!(Posting::of([(i64::MAX, 0), (1, 0)]).is_none());
    }

    /// `EXPLAIN`s every statement whose cost could grow with the data, on a schema filled
    /// with 20,000 predictions, 20,000 jobs (a quarter claimable, the rest leased or delayed),
    /// 5,000 outboxes of four messages, 60,000 events and a long ledger: each is served by its
    /// index, never a sequential scan, and reads in index order without sorting (the claim
    /// sorts only its few candidates), in the plan a fresh statement gets and in the one
    /// PostgreSQL settles on after repeated executions. A claim with thousands of items
    /// leased, delayed or waiting behind their group's head touches a few dozen pages.
    #[tokio::test]
    async fn statements_are_served_by_indexes() {
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
        let arr = |items: &[&str]| format!("ARRAY[{}]::text[]", items.join(", "));
        let record = "'prediction', 'p8', 8::smallint, 'owner8', now(), 'processing', NULL, \
                      NULL, false, NULL, NULL, '{}', '{}'";
        let list_kind = ListQuery::of(augur_core::store::Kind::Prediction, 20);
        let cursor = augur_core::store::Cursor {
            created_at: augur_core::Timestamp::now(),
            id: "p500".into(),
            backward: false,
        };
        let mut list_owner = list_kind.clone();
        list_owner.owner = Some(augur_core::AccountId::parse("owner7").unwrap());
        list_owner.after = Some(cursor.clone());
        let mut list_status = list_kind.clone();
        list_status.status = Some("failed".into());
        let mut list_parent = list_kind.clone();
        list_parent.parent = Some("batch7".into());
        list_parent.after = Some(cursor.clone());
        let mut list_range = list_owner.clone();
        list_range.created_after = Some(augur_core::Timestamp::EPOCH);
        list_range.created_before = Some(augur_core::Timestamp::now());
        let fused_update = fused(FusedShape {
            write: FusedWrite::Update,
            enqueue: Some(Fair::ANY),
            complete: true,
            counts: true,
            events: true,
            posts: false,
        });
        let fused_insert = fused(FusedShape {
            write: FusedWrite::Insert,
            enqueue: Some(Fair::ANY),
            complete: false,
            counts: true,
            events: true,
            posts: false,
        });
        let enqueue_args = format!(
            "{}, {}, {}, {}, ARRAY[now()], ARRAY[false], ARRAY[NULL]::text[], \
             ARRAY[NULL]::bigint[], ARRAY[NULL]::timestamptz[]",
            arr(&["'webhooks'"]),
            arr(&["'msg_new'"]),
            arr(&["''"]),
            arr(&["'{}'"])
        );
        let effects_args = format!(
            "{enqueue_args}, {}, {}, {}, ARRAY[1]::bigint[], {}, {}, ARRAY[false]",
            arr(&["'jobs'"]),
            arr(&["'p8'"]),
            arr(&["'c'"]),
            arr(&["'output'"]),
            arr(&["'x'"])
        );
        let insert_args = format!(
            "{enqueue_args}, {}, ARRAY[1]::bigint[], {}, {}, ARRAY[false]",
            arr(&["'c'"]),
            arr(&["'output'"]),
            arr(&["'x'"])
        );
        // (statement, arguments, the indexes it must use, whether it may sort)
        let checks: Vec<(String, String, Vec<&str>, bool)> = vec![
            (
                GET.clone(),
                "'prediction', 'p9'".into(),
                vec!["records_pkey"],
                false,
            ),
            (
                list(&list_kind),
                "'prediction', 21".into(),
                vec!["records_by_created"],
                false,
            ),
            (
                list(&list_owner),
                "'prediction', 'owner7', now(), 'p500', 21".into(),
                vec!["records_by_owner"],
                false,
            ),
            (
                list(&list_status),
                "'prediction', 'failed', 21".into(),
                vec!["records_by_created"],
                false,
            ),
            (
                list(&list_parent),
                "'prediction', 'batch7', now(), 'p500', 21".into(),
                vec!["records_by_parent"],
                false,
            ),
            (
                list(&list_range),
                "'prediction', 'owner7', now() - interval '1 day', now(), now(), 'p500', 21".into(),
                vec!["records_by_owner"],
                false,
            ),
            (
                CLAIM.clone(),
                "'jobs', ARRAY['q1'], 10, 'w', interval '1 minute'".into(),
                vec!["items_ready", "items_waiting"],
                true,
            ),
            (
                CLAIM.clone(),
                "'webhooks', ARRAY[]::text[], 10, 'w', interval '1 minute'".into(),
                vec!["items_ready", "items_waiting"],
                true,
            ),
            (
                RENEW.into(),
                "'jobs', 'p9', 7, interval '1 minute'".into(),
                vec!["items_pkey"],
                false,
            ),
            (
                RESCHEDULE.into(),
                "'jobs', 'p9', 7, NULL, true, NULL, true".into(),
                vec!["items_pkey"],
                false,
            ),
            (
                REHEAD.clone(),
                "'webhooks', 'prediction', 'p9'".into(),
                vec!["items_by_group"],
                false,
            ),
            (
                ITEMS.clone(),
                "'webhooks', 'prediction', 'p9'".into(),
                vec!["items_by_group"],
                false,
            ),
            (
                COMPLETE.clone(),
                "'webhooks', 'msg_p9_2'".into(),
                vec!["items_pkey", "items_by_group"],
                false,
            ),
            (
                ENQUEUE.clone(),
                format!(
                    "{}, {}, {}, {}, ARRAY[9]::smallint[], {}, {}, {}, ARRAY[now()], \
                     ARRAY[true], ARRAY[NULL]::text[], ARRAY[NULL]::bigint[], \
                     ARRAY[NULL]::timestamptz[]",
                    arr(&["'webhooks'"]),
                    arr(&["'msg_p9_9'"]),
                    arr(&["'prediction'"]),
                    arr(&["'p9'"]),
                    arr(&["'owner9'"]),
                    arr(&["''"]),
                    arr(&["'{}'"])
                ),
                vec![
                    "items_pkey",
                    "items_by_group",
                    "queue_clocks_pkey",
                    "queue_last_pkey",
                ],
                // Sorts the statement's own new items (to number their ranks), no table's.
                true,
            ),
            (
                INSERT_RECORDS.clone(),
                "ARRAY['prediction', 'prediction'], ARRAY['p-a', 'p-b'], \
                     ARRAY[8, 8]::smallint[], ARRAY['owner8', 'owner8'], ARRAY[now(), now()], \
                     ARRAY['starting', 'starting'], ARRAY[NULL, NULL]::text[], \
                     ARRAY[NULL, NULL]::timestamptz[], ARRAY[false, false], \
                     ARRAY[NULL, NULL]::timestamptz[], ARRAY[NULL, NULL]::timestamptz[], \
                     ARRAY['{}', '{}'], ARRAY['{}', '{}'], ARRAY[1, 2]"
                    .into(),
                vec!["records_pkey"],
                // Sorts the statement's own rows (by operation), no table's.
                true,
            ),
            (
                fused_update.to_owned(),
                format!("{record}, 1, {effects_args}"),
                vec!["records_pkey", "items_pkey", "items_by_group"],
                false,
            ),
            (
                fused_insert.to_owned(),
                format!(
                    "'prediction', 'p-new', 8::smallint, 'owner8', now(), 'starting', NULL, \
                     NULL, false, NULL, NULL, '{{}}', '{{}}', {insert_args}"
                ),
                vec!["items_by_group"],
                false,
            ),
            (
                READ_EVENTS.into(),
                "'prediction', 'p7', 1, 0, 100".into(),
                vec!["events_pkey"],
                false,
            ),
            (
                LEDGER_PAGE.clone(),
                "'owner7', 5000, 10".into(),
                vec!["ledger_pkey"],
                false,
            ),
            (
                EXPIRE_PICK.into(),
                "now() + interval '1 hour', 100".into(),
                vec!["records_by_sweep"],
                false,
            ),
            (
                INSERT_RECORD.clone(),
                format!("{record}, 0"),
                vec!["records_pkey"],
                false,
            ),
            (
                UPDATE_RECORD.clone(),
                format!("{record}, 1, 0"),
                vec!["records_pkey"],
                false,
            ),
            (
                CLEAR_GONE.into(),
                "'idempotency_key', 'owner7/k9'".into(),
                vec!["records_pkey"],
                false,
            ),
            (
                PRECHECK.into(),
                "ARRAY[1, 2], ARRAY['prediction', 'prediction'], ARRAY['p8', 'p8'], \
                 ARRAY[1, NULL]::bigint[], ARRAY[0, 1], 'owner8'"
                    .into(),
                vec!["records_pkey"],
                true,
            ),
            (
                DELETE_RECORD.into(),
                "'prediction', 'p9', 'owner9'".into(),
                vec!["records_pkey"],
                false,
            ),
            (
                LOCK_GROUPS.into(),
                "ARRAY['prediction p8'], ARRAY['jobs'], ARRAY['p9']".into(),
                vec!["items_pkey"],
                true,
            ),
            (
                BUMP_GROUPS.into(),
                "ARRAY['prediction'], ARRAY['p8'], ARRAY['jobs'], ARRAY['p9']".into(),
                vec!["records_pkey", "items_pkey"],
                true,
            ),
            (
                GUARDS.into(),
                "'owner7', ARRAY['e5', 'new'], ARRAY[-1, 0]::bigint[], ARRAY[0, 1]::bigint[], \
                 ARRAY[0, 1], ARRAY['c@owner7'], ARRAY[1]::bigint[], ARRAY[5]::bigint[], ARRAY[2]"
                    .into(),
                vec!["ledger_entry_key", "ledger_totals_pkey", "counters_pkey"],
                true,
            ),
            (
                POST.into(),
                "'owner7', ARRAY['e5', 'new'], ARRAY[1, 0]::bigint[], ARRAY[0, 1]::bigint[], \
                 ARRAY['grant', 'reserve'], ARRAY[NULL, NULL]::text[], \
                 ARRAY[NULL, NULL]::text[], ARRAY[now(), now()], ARRAY[0, 1]"
                    .into(),
                vec!["ledger_entry_key", "ledger_totals_pkey"],
                true,
            ),
            (
                FINISH.into(),
                "'jobs', 'p9', 7, 'done', NULL".into(),
                vec!["items_pkey"],
                false,
            ),
            (
                SETTLE.into(),
                "'webhooks', 'msg_p9_2', 'prediction', 'p9', true, true".into(),
                vec!["records_pkey", "items_pkey", "items_by_group"],
                false,
            ),
            (
                REQUEUE.into(),
                "'webhooks', 'prediction', 'p9', 'msg_p9_1'".into(),
                // Either key: the group's index reads only that group's items.
                vec!["Index Scan using items_"],
                false,
            ),
            (
                EXPIRE_APPLY.into(),
                "ARRAY['prediction', 'idempotency_key'], ARRAY['p9', 'owner7/k9']".into(),
                vec!["records_pkey", "items_by_group", "events_pkey"],
                false,
            ),
            (
                DELETE_REST.into(),
                "'prediction', 'p9', 'owner9'".into(),
                vec!["items_by_group", "events_pkey"],
                false,
            ),
        ];

        // Runs each check in the plan modes given: prepares it, executes it a few times (in
        // a rolled-back transaction: many statements write), and checks its plan. `tiny`
        // tables may be scanned (on empty tables, the planner rightly prefers that).
        let run = |modes: &'static [&'static str], tiny: &'static [&'static str]| {
            let (client, checks) = (&client, &checks);
            async move {
                for mode in modes {
                    client
                        .batch_execute(&format!("BEGIN; SET LOCAL plan_cache_mode = {mode}"))
                        .await
                        .unwrap();
                    for (i, (sql, args, indexes, may_sort)) in checks.iter().enumerate() {
                        let name = format!("s{i}_{mode}_{}", tiny.len());
                        client
                            .batch_execute(&format!("PREPARE {name} AS {sql}"))
                            .await
                            .unwrap_or_else(|e| panic!("{sql}: {e}"));
                        for _ in 0..6 {
                            let ran = client
                                .batch_execute(&format!(
                                    "SAVEPOINT x; EXECUTE {name}({args}); ROLLBACK TO x"
                                ))
                                .await;
                            match ran {
                                Ok(()) => {}
                                // A check refused (on empty tables, say), or a fused
                                // insert met a row the fixtures hold (the general path's
                                // case): fine for a plan.
                                Err(e)
                                    if e.code()
                                        .is_some_and(|c| matches!(c.code(), "AUG01" | "23505")) =>
                                {
                                    client.batch_execute("ROLLBACK TO x").await.unwrap();
                                }
                                Err(e) => panic!("{sql}\n({args}): {e}"),
                            }
                        }
                        let plan: Vec<String> = client
                            .query(&format!("EXPLAIN EXECUTE {name}({args})"), &[])
                            .await
                            .unwrap()
                            .iter()
                            .map(|r| r.get(0))
                            .collect();
                        let plan = plan.join("\n");
                        for index in indexes {
                            assert!(
                                plan.contains(index),
                                "{mode}: {sql}\nuses no {index}:\n{plan}"
                            );
                        }
                        assert!(
                            *may_sort || !plan.contains("Sort"),
                            "{mode}: {sql}\nsorts:\n{plan}"
                        );
                        // A key used in part reads every row that shares its first
                        // column: the primary key of `items` by `lane` alone, every item of
                        // the lane.
                        let lines: Vec<&str> = plan.lines().collect();
                        for (at, line) in lines.iter().enumerate() {
                            if !line.contains("using items_pkey on items") {
                                continue;
                            }
                            let cond = lines[at + 1..]
                                .iter()
                                .find(|l| l.contains("Index Cond:"))
                                .unwrap_or_else(|| panic!("{mode}: {sql}\n{plan}"));
                            assert!(
                                cond.contains("id = "),
                                "{mode}: {sql}\nuses items_pkey by lane alone:\n{plan}"
                            );
                        }
                        for line in plan.lines().filter(|l| l.contains("Seq Scan")) {
                            assert!(
                                tiny.iter()
                                    .any(|t| line.contains(&format!("Seq Scan on {t} "))),
                                "{mode}: {sql}\nscans:\n{plan}"
                            );
                        }
                    }
                    client.batch_execute("ROLLBACK").await.unwrap();
                }
            }
        };
        // The generic plans a pooled connection makes when it first runs each statement
        // (see `PostgresOptions::pg_config`), which may be while the tables are empty, with
        // no statistics: they must already use the right indexes, or they would scan the
        // tables once they have grown (until an `ANALYZE` replans them).
        run(
            &["force_generic_plan"],
            &["queue_clocks", "queue_last", "counters", "ledger_totals"],
        )
        .await;
        client
            .batch_execute(
                "INSERT INTO records (key, kind, id, partition, owner, created_at, status, \
                 parent, expires_at, data_removed, sweep_at, gone_at, revision, body, data) \
                 SELECT 'prediction:p' || i, 'prediction', 'p' || i, i % 256, 'owner' || (i % 50), \
                 now() - i * interval '1 second', \
                 (ARRAY['starting','processing','succeeded','failed','canceled'])[1 + i % 5], \
                 CASE WHEN i % 10 = 0 THEN 'batch' || (i % 100) END, \
                 CASE WHEN i % 3 = 0 THEN now() + i * interval '1 second' END, false, \
                 CASE WHEN i % 3 = 0 THEN now() + i * interval '1 second' END, NULL, 1, \
                 '{\"x\": 1}', '{\"input\": {}}' FROM generate_series(1, 20000) AS i; \
                 INSERT INTO records (key, kind, id, partition, owner, created_at, status, \
                 parent, expires_at, data_removed, sweep_at, gone_at, revision, body) \
                 SELECT 'idempotency_key:owner7/k' || i, 'idempotency_key', 'owner7/k' || i, 7, 'owner7', now(), NULL, NULL, \
                 now() + i * interval '1 second', false, now() + i * interval '1 second', \
                 now() + i * interval '1 second', 1, '{}' FROM generate_series(1, 5000) AS i; \
                 INSERT INTO items (lane, id, group_kind, group_id, group_partition, topic, owner, \
                 payload, seq, status, claims, due_at, created_at, rank, head, visible_at, \
                 lease_token, lease_worker, lease_expires_at) \
                 SELECT 'jobs', 'p' || i, 'prediction', 'p' || i, i % 256, 'q' || (i % 7), \
                 'owner' || (i % 50), '', 1, 'pending', 1, \
                 now() + CASE WHEN i % 4 = 2 THEN interval '1 hour' ELSE interval '-1 minute' END, \
                 now(), i, CASE WHEN i % 4 = 0 THEN 'ready' ELSE 'waiting' END, \
                 CASE WHEN i % 4 <> 0 THEN now() + interval '1 hour' END, \
                 CASE WHEN i % 4 IN (1, 3) THEN 7 END, CASE WHEN i % 4 IN (1, 3) THEN 'w' END, \
                 CASE WHEN i % 4 IN (1, 3) THEN now() + interval '1 hour' END \
                 FROM generate_series(1, 20000) AS i; \
                 INSERT INTO items (lane, id, group_kind, group_id, group_partition, topic, owner, \
                 payload, seq, status, claims, due_at, created_at, rank, head, visible_at) \
                 SELECT 'webhooks', 'msg_p' || i || '_' || s, 'prediction', 'p' || i, i % 256, '', \
                 'owner' || (i % 50), '{}', s, CASE WHEN s = 1 THEN 'done' ELSE 'pending' END, \
                 CASE WHEN s = 2 THEN 1 ELSE 0 END, CASE WHEN s > 1 THEN now() END, now(), \
                 4 * i + s, CASE WHEN s = 2 AND i % 2 = 0 THEN 'ready' \
                 WHEN s = 2 THEN 'waiting' END, \
                 CASE WHEN s = 2 AND i % 2 = 1 THEN now() + interval '1 hour' END \
                 FROM generate_series(1, 5000) AS i, generate_series(1, 4) AS s; \
                 INSERT INTO events (stream_kind, stream_id, stream_partition, revision, idx, \
                 kind, data) SELECT 'prediction', 'p' || i, i % 256, r, 0, 'output', 'x' \
                 FROM generate_series(1, 20000) AS i, generate_series(1, 3) AS r; \
                 INSERT INTO events (stream_kind, stream_id, stream_partition, revision, idx, \
                 kind, data) SELECT 'prediction', 'p7', 7, r, i, 'output', 'x' \
                 FROM generate_series(4, 1000) AS r, generate_series(0, 4) AS i; \
                 INSERT INTO ledger (account, seq, id, delta, held, reason, at, balance_after, \
                 reserved_after) SELECT 'owner' || (i % 20), i, 'e' || i, 1, 0, 'grant', now(), \
                 i, 0 FROM generate_series(1, 20000) AS i; \
                 INSERT INTO queue_clocks SELECT l, 'q' || t, s, t * s FROM \
                 unnest(ARRAY['jobs', 'webhooks']) AS l, generate_series(0, 99) AS t, \
                 generate_series(0, 63) AS s; \
                 INSERT INTO queue_last SELECT 'jobs', 'q' || t, 'owner' || o, s, t * s FROM \
                 generate_series(0, 6) AS t, generate_series(0, 49) AS o, \
                 generate_series(0, 63) AS s; \
                 ANALYZE;",
            )
            .await
            .unwrap();

        // On the filled tables: the generic plans, and the custom plans a statement gets
        // for its values (on a connection without the setting: `psql`).
        run(&["force_generic_plan", "force_custom_plan"], &[]).await;

        // What a claim of two items reads and writes: pages of the claim's indexes and of the
        // rows it takes (each leased row is written with its index entries), not the 15,000
        // jobs leased or delayed, nor the 10,000 messages waiting behind their heads.
        let pages: i64 = client
            .query_one(
                "SELECT (pg_relation_size('items') / current_setting('block_size')::int)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        client.batch_execute("BEGIN").await.unwrap();
        for lane in ["jobs", "webhooks"] {
            let stmt = client
                .prepare(&format!(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
                    *CLAIM
                ))
                .await
                .unwrap();
            let excluded: Vec<&str> = Vec::new();
            let interval = crate::codec::Interval(std::time::Duration::from_secs(60));
            let plan: serde_json::Value = client
                .query_one(&stmt, &[&lane, &excluded, &2i64, &"w", &interval])
                .await
                .unwrap()
                .get(0);
            let top = &plan[0]["Plan"];
            let touched = ["Shared Hit Blocks", "Shared Read Blocks"]
                .iter()
                .map(|k| top[k].as_i64().unwrap_or(0))
                .sum::<i64>();
            eprintln!("a claim of 2 items on {lane} touched {touched} of {pages} pages");
            assert!(
                touched < 80 && touched * 10 < pages,
                "a claim on {lane} touched {touched} pages of {pages}:\n{plan:#}"
            );
        }
        client.batch_execute("ROLLBACK").await.unwrap();
        store.drop_schema().await.unwrap();
    }
}
