-- 0001: predictions, jobs, idempotency keys, counters.
--
-- Runs inside the store's schema (search_path), in one transaction, under an advisory lock.
-- Identifiers and names use the "C" collation so that their order is byte order, the order
-- the Rust types sort in (listing cursors and migration pages depend on it).

-- One row per prediction. The fields a person or a query looks at are real columns; input,
-- output and metrics are JSONB; `extra` holds the rest of the record (webhook filter, stream
-- token, and any field a later build adds), so that nothing is lost and psql users can query
-- everything.
CREATE TABLE predictions (
    id           text COLLATE "C" PRIMARY KEY,
    owner        text COLLATE "C" NOT NULL,
    model        text NOT NULL,
    version      text NOT NULL,
    status       text NOT NULL
        CHECK (status IN ('starting', 'processing', 'succeeded', 'failed', 'canceled')),
    created_at   timestamptz NOT NULL,
    started_at   timestamptz,
    completed_at timestamptz,
    deadline     timestamptz,             -- Cancel-After
    expires_at   timestamptz,             -- when retention removes the data; NULL: never
    data_removed boolean NOT NULL DEFAULT false,
    attempts     bigint NOT NULL DEFAULT 0,
    revision     bigint NOT NULL,         -- compare-and-set version, 1 on insert
    webhook      text,
    error        text,
    logs         text NOT NULL DEFAULT '',
    input        jsonb NOT NULL,
    output       jsonb,
    metrics      jsonb NOT NULL DEFAULT '{}',
    extra        jsonb NOT NULL DEFAULT '{}'
);
-- Listing, newest first, by `(created_at, id)` descending with a row-value cursor: everyone's,
-- and one account's. A status filter is applied on top of these (see the README).
CREATE INDEX predictions_by_created ON predictions (created_at, id);
CREATE INDEX predictions_by_owner ON predictions (owner, created_at, id);
-- The retention sweep: only records that still hold data and have an expiry.
CREATE INDEX predictions_by_expiry ON predictions (expires_at, id)
    WHERE NOT data_removed AND expires_at IS NOT NULL;

-- The work queue: at most one job per prediction. A job is claimable iff visible_at <= now;
-- visible_at is run_at while the job is not leased and the lease's expiry while it is, so a
-- lapsed lease needs no sweeping. seq breaks ties first in, first out.
CREATE SEQUENCE job_seq AS bigint;
CREATE TABLE jobs (
    prediction_id text COLLATE "C" PRIMARY KEY,
    queue         text NOT NULL,
    attempts      bigint NOT NULL,
    run_at        timestamptz NOT NULL,
    visible_at    timestamptz NOT NULL,
    seq           bigint NOT NULL DEFAULT nextval('job_seq'),
    lease_token   bigint,                 -- NULL: not leased
    lease_worker  text
) WITH (
    -- Every lifecycle inserts, updates and deletes a job row: vacuum it often, so that claims
    -- do not wade through dead rows.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.05
);
ALTER SEQUENCE job_seq OWNED BY jobs.seq;
CREATE INDEX jobs_by_visibility ON jobs (visible_at, seq);

-- Idempotency keys, per account.
CREATE TABLE idempotency_keys (
    owner         text COLLATE "C" NOT NULL,
    key           text COLLATE "C" NOT NULL,
    fingerprint   text NOT NULL,
    prediction_id text COLLATE "C" NOT NULL,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE INDEX idempotency_keys_by_prediction ON idempotency_keys (prediction_id);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);

-- Durable counters (Effect::Count). A counter is the sum of its shards: writers add to one of
-- 16 rows chosen by their connection, so that concurrent transitions counting the same name
-- do not queue behind one row lock held across each other's commits.
CREATE TABLE counters (
    name  text COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    value bigint NOT NULL,
    PRIMARY KEY (name, shard)
);
