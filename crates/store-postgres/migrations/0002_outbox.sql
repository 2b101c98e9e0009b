-- 0002: the webhook outbox (deliveries) and each prediction's event log (events).
--
-- Runs inside the store's schema (search_path), in one transaction, under an advisory lock.

-- One row per webhook message. A prediction's messages go out one at a time, in `seq` order:
-- only its head (the pending message with the lowest seq) may be claimed. The head is marked
-- by `visible_at`, the one column the claim looks at: NULL on every other row, and on the head
-- the time it becomes claimable (`next_attempt_at` while not leased, the lease's expiry while
-- it is, so a lapsed lease needs no sweeping). Every write that changes which message is the
-- head (enqueue, finish, redeliver, import) holds the prediction's row lock, so heads are
-- decided one write at a time.
CREATE TABLE deliveries (
    prediction_id    text COLLATE "C" NOT NULL,
    seq              bigint NOT NULL,          -- place in the prediction's outbox, from 1
    id               text COLLATE "C" NOT NULL, -- the message id (`webhook-id`)
    url              text NOT NULL,
    event            text NOT NULL CHECK (event IN ('start', 'output', 'logs', 'completed')),
    payload          jsonb NOT NULL,           -- the prediction when the event happened
    created_at       timestamptz NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         jsonb NOT NULL DEFAULT '[]', -- [{at, status, error, duration_ms}], oldest first
    next_attempt_at  timestamptz,              -- while pending
    lease_token      bigint,                   -- NULL: not leased
    lease_worker     text,
    lease_expires_at timestamptz,
    visible_at       timestamptz,              -- the head only: when it may be claimed
    -- true: id, url and every text of payload hold U+0000 escaped (see the README).
    escaped          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (prediction_id, seq),
    UNIQUE (prediction_id, id)
);
-- The claim: heads only, in the order they become claimable. As small as the number of
-- predictions with messages waiting.
CREATE INDEX deliveries_by_visibility ON deliveries (visible_at) WHERE visible_at IS NOT NULL;
-- Finding a prediction's head among its pending messages.
CREATE INDEX deliveries_pending ON deliveries (prediction_id, seq) WHERE status = 'pending';

-- A prediction's durable event log (the stream's replay): each event is numbered by the
-- revision of the write that appended it and its place among that write's events.
CREATE TABLE events (
    prediction_id text COLLATE "C" NOT NULL,
    revision      bigint NOT NULL,
    idx           integer NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('output', 'logs', 'error', 'done')),
    data          text NOT NULL,
    -- true: data holds U+0000 escaped (see the README).
    escaped       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (prediction_id, revision, idx)
);
