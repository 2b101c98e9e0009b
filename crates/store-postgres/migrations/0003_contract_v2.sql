-- 0003: the storage contract v2: records of every kind, one leased queue with lanes and fair
-- claims, event logs by stream, credit ledgers; the data of 0001 and 0002 moved into them.
--
-- Runs inside the store's schema (search_path), in one transaction, under an advisory lock.
-- It drops the tables of 0001 and 0002 once their rows are moved: stop every node of an older
-- build before it runs. Identifiers use the "C" collation (byte order, the order the Rust types
-- sort in: listing cursors and export pages depend on it).

-- A write's statements are sent together (pipelined in one transaction) and none can look at
-- the result of the one before it, so a statement whose check fails stops the transaction
-- itself, with this error. The message is a JSON object that says what failed.
CREATE FUNCTION augur_refuse(reason text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'AUG01', MESSAGE = reason;
END
$$;

-- The hot tables have no CHECK constraints: PostgreSQL reads them back from their stored form
-- for every statement that writes the table, and the store is their only writer.

-- Every kind of record (prediction, idempotency_key, account, token, ...), stored alike: the
-- indexed columns, and the body and data as JSON text the store never reads. `revision` is
-- the compare-and-set version. `sweep_at` is when retention still has to act on the record
-- (its expiry, until a tombstone of a kind that keeps one is made); `gone_at` is when a record
-- of a kind that retention deletes reads as absent (its expiry; NULL for other kinds). Both
-- are derived from the kind's `on_expiry` by the writer, so no statement names a kind.
CREATE TABLE records (
    kind         text COLLATE "C" NOT NULL,
    id           text COLLATE "C" NOT NULL,
    partition    smallint NOT NULL,                -- 0 to 255
    owner        text COLLATE "C" NOT NULL,
    created_at   timestamptz NOT NULL,
    status       text COLLATE "C",
    parent       text COLLATE "C",
    expires_at   timestamptz,
    data_removed boolean NOT NULL,
    sweep_at     timestamptz,
    gone_at      timestamptz,
    revision     bigint NOT NULL,
    body         text NOT NULL,
    data         text,
    -- The record's name in one column, kind || ':' || id (written by the store with the
    -- record): no name of a kind is a prefix of another, so it sorts as (kind, id) does.
    -- Statements name records by it, so that no other index can look as good as this one to
    -- the planner, even on empty tables.
    key          text COLLATE "C" PRIMARY KEY
) WITH (
    -- Room on each page for a record's next versions: a write that changes no indexed
    -- column (a prediction starting, progress) is then a heap-only update that touches no
    -- index.
    fillfactor = 85
);
-- Listings, newest first by (created_at, id) with a row-value cursor: a kind's records, an
-- owner's, those of a parent (all scanned backwards, never sorted). A status filter is
-- checked on the rows these yield: an index on the status would have to be written at every
-- change of status, every transition of every prediction.
CREATE INDEX records_by_created ON records (kind, created_at, id);
CREATE INDEX records_by_owner ON records (owner, kind, created_at, id);
CREATE INDEX records_by_parent ON records (parent, kind, created_at, id) WHERE parent IS NOT NULL;
-- Retention: only records it has yet to act on.
CREATE INDEX records_by_sweep ON records (sweep_at, kind, id) WHERE sweep_at IS NOT NULL;

-- The leased queue, every lane in one table. An item belongs to a group (a record's key); a
-- group's pending items go out one at a time in `seq` order, so only its oldest pending item,
-- the head, has `head` set: 'ready' when it was claimable when last written (due, no live
-- lease), 'waiting' when it becomes claimable at `visible_at` (a later due time, or its
-- lease's expiry). Claims read 'ready' heads in fair order (`rank`, then `ord`, the order of
-- enqueueing) and move 'waiting' heads whose time has come to 'ready'; nothing else is read,
-- so a claim costs the same with ten or ten thousand items queued, delayed or leased.
CREATE SEQUENCE item_order AS bigint;
CREATE TABLE items (
    lane             text COLLATE "C" NOT NULL,
    id               text COLLATE "C" NOT NULL,
    group_kind       text COLLATE "C" NOT NULL,
    group_id         text COLLATE "C" NOT NULL,
    group_partition  smallint NOT NULL,
    topic            text COLLATE "C" NOT NULL,
    owner            text COLLATE "C" NOT NULL,
    payload          text NOT NULL,
    seq              bigint NOT NULL,          -- place in the group, from 1
    status           text NOT NULL,            -- pending, done, failed
    claims           bigint NOT NULL,
    attempts         jsonb NOT NULL DEFAULT '[]', -- [{at, status, error, duration_ms}], oldest first
    due_at           timestamptz,              -- while pending
    created_at       timestamptz NOT NULL,
    rank             bigint NOT NULL,          -- start-time fair queuing tag
    ord              bigint NOT NULL DEFAULT nextval('item_order'),
    head             text,                     -- ready, waiting, or NULL: not a head
    visible_at       timestamptz,              -- 'waiting' heads: when they become claimable
    lease_token      bigint,
    lease_worker     text,
    lease_expires_at timestamptz,
    PRIMARY KEY (lane, id)
) WITH (
    -- Every lifecycle inserts, updates and deletes a job: vacuum often, so that claims do not
    -- wade through dead index entries.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.05
);
ALTER SEQUENCE item_order OWNED BY items.ord;
-- A group's items in order (and, unique, the arbiter of two writes numbering one group at
-- once); removing a record's items in every lane.
CREATE UNIQUE INDEX items_by_group ON items (group_kind, group_id, lane, seq);
-- The claim: claimable heads in fair order, and the heads waiting for a time.
CREATE INDEX items_ready ON items (lane, rank, ord) WHERE head = 'ready';
CREATE INDEX items_waiting ON items (lane, visible_at) WHERE head = 'waiting';

-- Start-time fair queuing state (see `rank`): an item's rank is one past the larger of its
-- lane and topic's clock and its account's last rank there. Each is the largest of a few rows
-- (one per `pg_backend_pid() % 64`): a claim or an account's enqueue raises the row of its
-- own connection, so concurrent writers do not queue behind one row lock through each
-- other's commits (a single row per topic would serialise every create of a model).
CREATE TABLE queue_clocks (
    lane  text COLLATE "C" NOT NULL,
    topic text COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    clock bigint NOT NULL,
    PRIMARY KEY (lane, topic, shard)
);
CREATE TABLE queue_last (
    lane  text COLLATE "C" NOT NULL,
    topic text COLLATE "C" NOT NULL,
    owner text COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    last  bigint NOT NULL,
    PRIMARY KEY (lane, topic, owner, shard)
);

-- Each record's event log (a stream's replay), numbered by the revision of the write that
-- appended the event and its place among that write's events. `escaped`: data holds U+0000
-- escaped (see the README).
ALTER TABLE events RENAME TO events_0002;
ALTER TABLE events_0002 RENAME CONSTRAINT events_pkey TO events_0002_pkey;
CREATE TABLE events (
    stream_kind      text COLLATE "C" NOT NULL,
    stream_id        text COLLATE "C" NOT NULL,
    stream_partition smallint NOT NULL,
    revision         bigint NOT NULL,
    idx              integer NOT NULL,
    kind             text NOT NULL,
    data             text NOT NULL,
    escaped          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (stream_kind, stream_id, revision, idx)
);

-- Each account's credit ledger, append-only, each entry stamped with the totals after it, and
-- the totals. A write that posts locks its account's totals row first, so an account's
-- postings are decided one at a time (the atomic unit of credits).
CREATE TABLE ledger (
    account        text COLLATE "C" NOT NULL,
    seq            bigint NOT NULL,
    id             text COLLATE "C" NOT NULL,
    delta          bigint NOT NULL,
    held           bigint NOT NULL,
    reason         text NOT NULL,
    reference      text,
    memo           text,
    at             timestamptz NOT NULL,
    balance_after  bigint NOT NULL,
    reserved_after bigint NOT NULL,
    PRIMARY KEY (account, seq),
    UNIQUE (account, id)
);
CREATE TABLE ledger_totals (
    account  text COLLATE "C" PRIMARY KEY,
    balance  bigint NOT NULL,
    reserved bigint NOT NULL,
    seq      bigint NOT NULL               -- the last entry's
);

-- Moving the data of 0001 and 0002. Helpers, dropped at the end.

-- `Partition::of`: FNV-1a (64 bits) of the UTF-8 bytes, modulo 256. The low byte of FNV-1a
-- depends only on the low bytes of its operands, so 8-bit arithmetic computes it exactly.
CREATE FUNCTION augur_partition_of(text) RETURNS smallint LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    bytes bytea := convert_to($1, 'UTF8');
    h integer := 37;                         -- 0xcbf29ce484222325 & 0xff
BEGIN
    FOR i IN 0 .. length(bytes) - 1 LOOP
        h := ((h # get_byte(bytes, i)) * 179) & 255;   -- 0x100000001b3 & 0xff
    END LOOP;
    RETURN h;
END
$$;

-- A time as the integer microseconds `Timestamp` reads (exactly: no floating point).
CREATE FUNCTION augur_micros(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN t IS NULL THEN NULL
                WHEN t = '-infinity' THEN '-9223372036854775808'::bigint
                WHEN t = 'infinity' THEN '9223372036854775807'::bigint
                ELSE extract(epoch FROM date_trunc('second', t))::bigint * 1000000
                     + extract(microseconds FROM t)::bigint % 1000000 END
$$;

-- 0001 and 0002 stored texts holding U+0000 escaped (U+0000 as U+F8FF '0', U+F8FF as U+F8FF
-- U+F8FF). JSON text cannot hold U+0000 itself, so in JSON it becomes the escape \u0000.
CREATE FUNCTION augur_unescape_json(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    esc constant text := chr(63743);
    result text := '';
    rest text := t;
    p integer;
    nxt text;
BEGIN
    LOOP
        p := strpos(rest, esc);
        IF p = 0 THEN
            RETURN result || rest;
        END IF;
        result := result || left(rest, p - 1);
        nxt := substr(rest, p + 1, 1);
        IF nxt = '0' THEN
            result := result || '\u0000';
        ELSIF nxt = '' THEN
            result := result || esc;
        ELSE
            result := result || nxt;
        END IF;
        rest := substr(rest, p + 2);
    END LOOP;
END
$$;

-- Predictions: the body is everything but input, output and logs (`Prediction::to_record`),
-- times as integer microseconds; the data is those three, none once removed.
INSERT INTO records (key, kind, id, partition, owner, created_at, status, parent, expires_at,
                     data_removed, sweep_at, gone_at, revision, body, data)
SELECT 'prediction:' || p.id, 'prediction', p.id, augur_partition_of(p.id), p.owner, p.created_at, p.status, NULL,
       p.expires_at, p.data_removed, CASE WHEN NOT p.data_removed THEN p.expires_at END, NULL,
       p.revision,
       CASE WHEN p.extra ? '_augur_nul_escaped' THEN augur_unescape_json(j.body) ELSE j.body END,
       CASE WHEN p.data_removed THEN NULL
            WHEN p.extra ? '_augur_nul_escaped' THEN augur_unescape_json(j.data)
            ELSE j.data END
  FROM predictions p,
       LATERAL (SELECT ((p.extra - '_augur_nul_escaped') || jsonb_build_object(
                    'id', p.id, 'owner', p.owner, 'model', p.model, 'version', p.version,
                    'error', p.error, 'status', p.status,
                    'created_at', augur_micros(p.created_at),
                    'started_at', augur_micros(p.started_at),
                    'completed_at', augur_micros(p.completed_at),
                    'metrics', p.metrics, 'data_removed', p.data_removed,
                    'webhook', p.webhook, 'deadline', augur_micros(p.deadline),
                    'expires_at', augur_micros(p.expires_at), 'attempts', p.attempts))::text
                    AS body,
                jsonb_build_object('input', p.input, 'output', p.output, 'logs', p.logs)::text
                    AS data) j;

-- Idempotency keys: records in their owner's partition, named `<owner>/<the first 16 bytes
-- of the key's SHA-256, in hex>` (`IdempotencyKey::record_key`). 0001 kept no creation time:
-- the prediction's is taken (it was created in the same write), or now if it is gone.
INSERT INTO records (key, kind, id, partition, owner, created_at, status, parent, expires_at,
                     data_removed, sweep_at, gone_at, revision, body, data)
SELECT 'idempotency_key:' || n.id, 'idempotency_key', n.id,
       augur_partition_of(k.owner), k.owner, c.created_at, NULL, NULL, k.expires_at, false,
       k.expires_at, k.expires_at, 1,
       jsonb_build_object('owner', k.owner, 'key', k.key, 'fingerprint', k.fingerprint,
                          'prediction_id', k.prediction_id,
                          'created_at', augur_micros(c.created_at),
                          'expires_at', augur_micros(k.expires_at))::text,
       NULL
  FROM idempotency_keys k
       LEFT JOIN predictions p ON p.id = k.prediction_id,
       LATERAL (SELECT COALESCE(p.created_at, now()) AS created_at) c,
       LATERAL (SELECT k.owner || '/'
                       || encode(substr(sha256(convert_to(k.key, 'UTF8')), 1, 16), 'hex') AS id) n;

-- Jobs: items of the jobs lane, one per prediction (its group), topic the model, payload
-- empty, claims the attempts, queued in the order they were (their old `seq`, which also ranks
-- each account's jobs 1, 2, ... per model). A lease held at the upgrade is kept.
INSERT INTO items (lane, id, group_kind, group_id, group_partition, topic, owner, payload, seq,
                   status, claims, attempts, due_at, created_at, rank, ord, head, visible_at,
                   lease_token, lease_worker, lease_expires_at)
SELECT 'jobs', j.prediction_id, 'prediction', j.prediction_id,
       augur_partition_of(j.prediction_id), j.queue, o.owner, '', 1, 'pending', j.attempts,
       '[]', j.run_at, j.run_at,
       row_number() OVER (PARTITION BY j.queue, o.owner ORDER BY j.seq), j.seq,
       CASE WHEN j.visible_at <= now() THEN 'ready' ELSE 'waiting' END,
       CASE WHEN j.visible_at > now() THEN j.visible_at END,
       j.lease_token, j.lease_worker,
       CASE WHEN j.lease_token IS NOT NULL THEN j.visible_at END
  FROM jobs j
       LEFT JOIN predictions p ON p.id = j.prediction_id,
       LATERAL (SELECT COALESCE(p.owner, 'admin') AS owner) o;

-- Webhook messages: items of the webhooks lane, grouped by prediction, payload the
-- `outbox::Delivery` as JSON, attempts kept (same encoding), one claim per attempt made.
INSERT INTO items (lane, id, group_kind, group_id, group_partition, topic, owner, payload, seq,
                   status, claims, attempts, due_at, created_at, rank, ord, head, visible_at,
                   lease_token, lease_worker, lease_expires_at)
SELECT 'webhooks', d.id, 'prediction', d.prediction_id, augur_partition_of(d.prediction_id),
       '', o.owner,
       CASE WHEN d.escaped THEN augur_unescape_json(x.payload) ELSE x.payload END,
       d.seq, CASE d.status WHEN 'delivered' THEN 'done' ELSE d.status END,
       jsonb_array_length(d.attempts)
           + CASE WHEN d.lease_expires_at > now() THEN 1 ELSE 0 END,
       d.attempts, CASE WHEN d.status = 'pending' THEN d.next_attempt_at END, d.created_at,
       row_number() OVER (PARTITION BY o.owner ORDER BY d.created_at, d.prediction_id, d.seq),
       (SELECT COALESCE(max(seq), 0) FROM jobs)
           + row_number() OVER (ORDER BY d.created_at, d.prediction_id, d.seq),
       NULL, NULL,
       CASE WHEN d.status = 'pending' THEN d.lease_token END,
       CASE WHEN d.status = 'pending' THEN d.lease_worker END,
       CASE WHEN d.status = 'pending' THEN d.lease_expires_at END
  FROM deliveries d
       LEFT JOIN predictions p ON p.id = d.prediction_id,
       LATERAL (SELECT COALESCE(p.owner, 'admin') AS owner) o,
       LATERAL (SELECT jsonb_build_object('id', d.id, 'prediction_id', d.prediction_id,
                    'url', d.url, 'event', d.event, 'payload', d.payload,
                    'created_at', augur_micros(d.created_at))::text AS payload) x
ON CONFLICT (lane, id) DO NOTHING;

-- Each prediction's oldest pending message is its head.
UPDATE items i
   SET head = CASE WHEN GREATEST(i.due_at, i.lease_expires_at) <= now() THEN 'ready'
                   ELSE 'waiting' END,
       visible_at = CASE WHEN GREATEST(i.due_at, i.lease_expires_at) > now()
                         THEN GREATEST(i.due_at, i.lease_expires_at) END
  FROM (SELECT group_kind, group_id, min(seq) AS seq FROM items
         WHERE lane = 'webhooks' AND status = 'pending' GROUP BY group_kind, group_id) h
 WHERE i.lane = 'webhooks' AND i.group_kind = h.group_kind AND i.group_id = h.group_id
   AND i.seq = h.seq;

INSERT INTO queue_last (lane, topic, owner, shard, last)
SELECT lane, topic, owner, 0, max(rank) FROM items GROUP BY lane, topic, owner;
SELECT setval('item_order', max(ord)) FROM items HAVING count(*) > 0;

-- Events: each prediction's log under the prediction's key.
INSERT INTO events (stream_kind, stream_id, stream_partition, revision, idx, kind, data, escaped)
SELECT 'prediction', prediction_id, augur_partition_of(prediction_id), revision, idx, kind,
       data, escaped
  FROM events_0002;

DROP TABLE deliveries, events_0002, jobs, idempotency_keys, predictions;
DROP FUNCTION augur_partition_of(text), augur_micros(timestamptz), augur_unescape_json(text);
