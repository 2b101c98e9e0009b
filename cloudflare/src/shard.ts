// StoreShard: one of a namespace's 16 shard objects (SQLite-backed). It holds everything of
// the partitions p with p % 16 == its number: records (and forwarding rows for client-chosen
// ids that live in another shard), queue items, event logs, ledgers, counters, and the nonces
// of the requests it served. Every method runs in one `transactionSync` and decides a refusal
// before it writes anything; it ports the semantics of crates/store-embedded (ops.rs,
// queue.rs), which mirror crates/core/src/store/memory.rs.

import { DurableObject } from "cloudflare:workers";
import {
  attempt,
  Attempt,
  Balance,
  Change,
  Cursor,
  Env,
  EventData,
  Exported,
  Item,
  ItemLease,
  Key,
  keepsFinished,
  keepsTombstone,
  LANES,
  LedgerEntry,
  ListQuery,
  NewItem,
  nowMicros,
  ok,
  Outcome,
  Position,
  Posted,
  randomToken,
  Rec,
  refuse,
  Res,
  shardOfAccount,
  shardOfPartition,
  Stored,
  StoreError,
  StreamEvent,
  Write,
  Written,
} from "./common";

/** How long a nonce is remembered (twice the signature window). */
const NONCE_KEEP_MS = 600_000;

type Row = Record<string, SqlStorageValue>;

/**
 * When a pending item becomes claimable: its due time, or its lease's end if it is leased
 * (microseconds). The alarm looks these up through the partial index `items_by_wake`, which
 * is on exactly this expression.
 */
const WAKE = "MAX(COALESCE(due_at, 0), COALESCE(lease_expires_at, 0))";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS records (
  kind TEXT NOT NULL, id TEXT NOT NULL, partition INTEGER NOT NULL, owner TEXT NOT NULL,
  created_at INTEGER NOT NULL, status TEXT, parent TEXT, expires_at INTEGER,
  data_removed INTEGER NOT NULL, revision INTEGER NOT NULL, body TEXT NOT NULL, data TEXT,
  gone_at INTEGER, sweep_at INTEGER,
  PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS records_by_created ON records (kind, created_at, id);
CREATE INDEX IF NOT EXISTS records_by_owner ON records (kind, owner, created_at, id);
CREATE INDEX IF NOT EXISTS records_by_parent ON records (kind, parent, created_at, id) WHERE parent IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_by_sweep ON records (sweep_at) WHERE sweep_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS forwards (
  kind TEXT NOT NULL, id TEXT NOT NULL, owner TEXT NOT NULL,
  PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS items (
  lane TEXT NOT NULL, id TEXT NOT NULL, group_kind TEXT NOT NULL, group_id TEXT NOT NULL,
  group_partition INTEGER NOT NULL, topic TEXT NOT NULL, owner TEXT NOT NULL,
  payload TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL, claims INTEGER NOT NULL,
  attempts TEXT NOT NULL, due_at INTEGER, created_at INTEGER NOT NULL, rank INTEGER NOT NULL,
  lease_token TEXT, lease_worker TEXT, lease_expires_at INTEGER,
  UNIQUE (lane, id)
);
CREATE INDEX IF NOT EXISTS items_by_group ON items (lane, group_kind, group_id, status, seq);
CREATE INDEX IF NOT EXISTS items_pending ON items (lane, status, rank);
CREATE TABLE IF NOT EXISTS queue_ranks (
  lane TEXT NOT NULL, topic TEXT NOT NULL, owner TEXT NOT NULL, rank INTEGER NOT NULL,
  PRIMARY KEY (lane, topic, owner)
);
CREATE TABLE IF NOT EXISTS events (
  stream_kind TEXT NOT NULL, stream_id TEXT NOT NULL, stream_partition INTEGER NOT NULL,
  revision INTEGER NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (stream_kind, stream_id, revision, idx)
);
CREATE TABLE IF NOT EXISTS ledger (
  account TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, delta INTEGER NOT NULL,
  held INTEGER NOT NULL, reason TEXT NOT NULL, reference TEXT, memo TEXT, at INTEGER NOT NULL,
  balance INTEGER NOT NULL, reserved INTEGER NOT NULL,
  PRIMARY KEY (account, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS ledger_ids ON ledger (account, id);
CREATE TABLE IF NOT EXISTS ledger_totals (
  account TEXT PRIMARY KEY NOT NULL, balance INTEGER NOT NULL, reserved INTEGER NOT NULL,
  seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS nonces_by_age ON nonces (at);
CREATE INDEX IF NOT EXISTS items_by_wake ON items (${WAKE}) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
`;

const RECORD_COLUMNS =
  "kind, id, partition, owner, created_at, status, parent, expires_at, data_removed, revision, body, data";
const ITEM_COLUMNS =
  "lane, id, group_kind, group_id, group_partition, topic, owner, payload, seq, status, claims, attempts, due_at, created_at";

/** What a key holds before a write. */
type Found =
  | { t: "absent" }
  | { t: "gone" }
  | { t: "theirs" }
  | { t: "present"; revision: number };

/** A forwarding answer: the record lives in this owner's shard. */
export interface Forward {
  forward: string;
}

/** A claim candidate of one shard. */
export interface Candidate {
  rank: number;
  order: number;
}

function n(v: SqlStorageValue): number {
  return Number(v);
}

function s(v: SqlStorageValue): string {
  return String(v);
}

function ns_(v: SqlStorageValue): string | null {
  return v === null ? null : String(v);
}

function nn(v: SqlStorageValue): number | null {
  return v === null ? null : Number(v);
}

function readRecord(r: Row): Stored {
  return {
    record: {
      key: { kind: s(r.kind), id: s(r.id), partition: n(r.partition) },
      owner: s(r.owner),
      created_at: n(r.created_at),
      status: ns_(r.status),
      parent: ns_(r.parent),
      expires_at: nn(r.expires_at),
      data_removed: n(r.data_removed) !== 0,
      body: s(r.body),
      data: ns_(r.data),
    },
    revision: n(r.revision),
  };
}

function readItem(r: Row): Item {
  let attempts: Attempt[] = [];
  try {
    attempts = JSON.parse(s(r.attempts));
  } catch {
    attempts = [];
  }
  return {
    lane: s(r.lane),
    id: s(r.id),
    group: { kind: s(r.group_kind), id: s(r.group_id), partition: n(r.group_partition) },
    topic: s(r.topic),
    owner: s(r.owner),
    payload: s(r.payload),
    seq: n(r.seq),
    status: s(r.status),
    claims: n(r.claims),
    attempts,
    due_at: nn(r.due_at),
    created_at: n(r.created_at),
  };
}

function readPosted(r: Row): Posted {
  return {
    seq: n(r.seq),
    entry: {
      account: s(r.account),
      id: s(r.id),
      delta: n(r.delta),
      held: n(r.held),
      reason: s(r.reason),
      reference: ns_(r.reference),
      memo: ns_(r.memo),
      at: n(r.at),
    },
    after: { balance: n(r.balance), reserved: n(r.reserved) },
  };
}

function readEvent(r: Row): StreamEvent {
  return { revision: n(r.revision), index: n(r.idx), kind: s(r.kind), data: s(r.data) };
}

/** The time from which a record reads as absent: its expiry, for kinds deleted on expiry. */
function goneAt(record: Rec): number | null {
  return keepsTombstone(record.key.kind) ? null : record.expires_at;
}

/** When retention still has to act on a record. */
function sweepAt(record: Rec): number | null {
  const pending = keepsTombstone(record.key.kind) ? !record.data_removed : true;
  return pending ? record.expires_at : null;
}

function keyOf(op: Write["ops"][number]): Key {
  if ("insert" in op) return op.insert.key;
  if ("update" in op) return op.update.record.key;
  return op.delete;
}

function sameKey(a: Key, b: Key): boolean {
  return a.kind === b.kind && a.id === b.id;
}

/** The revision the write leaves the record of `key` at, if an op inserts or updates it. */
function revisionOf(write: Write, key: Key): number | null {
  for (let i = write.ops.length - 1; i >= 0; i--) {
    const op = write.ops[i];
    if ("insert" in op && sameKey(op.insert.key, key)) return 1;
    if ("update" in op && sameKey(op.update.record.key, key)) return op.update.expected + 1;
  }
  return null;
}

/** `Write::check`: everything of the write is its account's. */
function checkWrite(write: Write): void {
  const invalid = (message: string) => refuse(422, "invalid", { message });
  for (const op of write.ops) {
    const r = "insert" in op ? op.insert : "update" in op ? op.update.record : null;
    if (r && r.owner !== write.account) {
      invalid(`${r.key.kind} ${r.key.id} belongs to ${r.owner}, not ${write.account}`);
    }
  }
  for (const e of write.effects) {
    if ("enqueue" in e && e.enqueue.owner !== write.account) {
      invalid(`queue item ${e.enqueue.id} belongs to ${e.enqueue.owner}`);
    }
    if ("post" in e && e.post.account !== write.account) {
      invalid(`ledger entry ${e.post.id} is for ${e.post.account}`);
    }
    if ("append_events" in e && revisionOf(write, e.append_events.stream) === null) {
      const k = e.append_events.stream;
      invalid(`events for ${k.kind} ${k.id}, which the write does not write`);
    }
  }
}

/** The seeds' `PredictionStatus` of a prediction record (its body and data JSON). */
export function predictionStatus(record: Rec): Record<string, unknown> | null {
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(record.body);
  } catch {
    return null;
  }
  let data: Record<string, unknown> = {};
  if (record.data !== null) {
    try {
      data = JSON.parse(record.data);
    } catch {
      data = {};
    }
  }
  const ms = (v: unknown): number | undefined => {
    if (typeof v === "number") return Math.floor(v / 1000);
    if (typeof v === "string") {
      const t = Date.parse(v);
      return Number.isNaN(t) ? undefined : t;
    }
    return undefined;
  };
  const known = ["starting", "processing", "succeeded", "failed", "canceled"];
  const status = typeof body.status === "string" && known.includes(body.status) ? body.status : "starting";
  const createdAt = ms(body.created_at) ?? Math.floor(record.created_at / 1000);
  const updatedAt = ms(body.completed_at) ?? ms(body.started_at) ?? createdAt;
  const shape: Record<string, unknown> = {
    status,
    predictionId: typeof body.id === "string" ? body.id : record.key.id,
    createdAt,
    updatedAt,
  };
  if (typeof body.model === "string") shape.model = body.model;
  if (typeof body.error === "string") shape.error = body.error;
  const output = data.output;
  if (typeof output === "string" && /^https?:\/\//.test(output)) shape.imageUrl = output;
  return shape;
}

export class StoreShard extends DurableObject<Env> {
  private sql: SqlStorage;
  /** The alarm this object set (epoch ms), or null if unknown (as after a restart). */
  private alarmAt: number | null = null;
  /** The namespace this shard belongs to, learnt from the first call that names it (the
   * alarm needs it to reach the namespace's notifier); kept in `meta`. */
  private namespace: string | null = null;
  /** KV mirror writes that failed (never fails a write; visible in `stats`). */
  private mirrorErrors = 0;

  /** Whether the tables exist: they are made by the first write, so that a fan-out over a
   * fresh namespace's shards (16 new objects) costs no schema creation. */
  private schemaReady = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
  }

  /** True if the tables exist (checked once per object start while they do not). */
  private hasSchema(): boolean {
    if (!this.schemaReady) {
      // `meta` is the newest table: an object made by an older Worker gets the rest here too.
      this.schemaReady = this.first("SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = 'meta'") !== null;
    }
    return this.schemaReady;
  }

  /** Creates the tables unless they exist (idempotent). */
  private ensureSchema(): void {
    if (!this.hasSchema()) {
      this.sql.exec(SCHEMA);
      this.schemaReady = true;
    }
  }

  // ---- plumbing -------------------------------------------------------------------------

  private rows(query: string, ...bindings: unknown[]): Row[] {
    return this.sql.exec(query, ...bindings).toArray() as Row[];
  }

  private first(query: string, ...bindings: unknown[]): Row | null {
    const rows = this.rows(query, ...bindings);
    return rows.length > 0 ? rows[0] : null;
  }

  private run(query: string, ...bindings: unknown[]): void {
    this.sql.exec(query, ...bindings).toArray();
  }

  /** Records `nonce`, refusing a replay (inside the caller's transaction). */
  private recordNonce(nonce: string): void {
    if (this.first("SELECT 1 AS x FROM nonces WHERE nonce = ?", nonce)) {
      refuse(401, "unauthorized", { message: "replayed request (nonce seen before)" });
    }
    this.run("INSERT INTO nonces (nonce, at) VALUES (?, ?)", nonce, Date.now());
  }

  /**
   * Sets the alarm for the earliest thing that will need it: a pending item becoming claimable
   * (its delay or its lease running out), so that Augur's nodes hear of it at once rather than
   * at their next poll; or the oldest nonce to forget. Every deadline is read from the tables,
   * so replacing a stored alarm by this one never loses one. Two index seeks; the alarm itself
   * is only written when the deadline moves earlier than the one already set.
   */
  private planAlarm(): void {
    const nowMs = Date.now();
    const deadlines: number[] = [];
    const nonce = this.first("SELECT MIN(at) AS at FROM nonces");
    if (nonce && nonce.at !== null) deadlines.push(n(nonce.at) + NONCE_KEEP_MS + 1000);
    const wake = this.first(`SELECT MIN(${WAKE}) AS at FROM items WHERE status = 'pending' AND ${WAKE} > ?`, nowMicros());
    // A millisecond late, so that the item is claimable when the alarm runs.
    if (wake && wake.at !== null) deadlines.push(Math.ceil(n(wake.at) / 1000) + 1);
    if (deadlines.length === 0) return;
    const next = Math.max(Math.min(...deadlines), nowMs);
    if (this.alarmAt !== null && this.alarmAt <= next) return;
    this.alarmAt = next;
    this.ctx.waitUntil(
      this.ctx.storage.setAlarm(next).catch(() => {
        this.alarmAt = null;
      }),
    );
  }

  /**
   * Announces the lanes whose items became claimable since the last alarm (a lease ran out, a
   * delay ended), forgets old nonces, and sets the next alarm. Retention is not done here: an
   * expired prediction's output files and an expired file's bytes live in Augur's object
   * storage, which Augur's sweeper deletes in the pass that calls `expire`.
   */
  async alarm(): Promise<void> {
    this.alarmAt = null;
    if (!this.hasSchema()) return;
    this.run("DELETE FROM nonces WHERE at < ?", Date.now() - NONCE_KEEP_MS);
    const now = nowMicros();
    const since = Number(this.meta("woken_until") ?? "0");
    const lanes = this.rows(
      `SELECT DISTINCT lane FROM items WHERE status = 'pending' AND ${WAKE} > ? AND ${WAKE} <= ?`,
      since,
      now,
    ).map((r) => s(r.lane));
    this.setMeta("woken_until", String(now));
    const ns = this.namespace ?? this.meta("namespace");
    if (ns !== null && lanes.length > 0) {
      this.after(
        ns,
        lanes.map((work) => ({ work })),
        [],
      );
    }
    this.planAlarm();
  }

  private meta(name: string): string | null {
    const row = this.first("SELECT value FROM meta WHERE name = ?", name);
    return row ? s(row.value) : null;
  }

  private setMeta(name: string, value: string): void {
    this.run("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value", name, value);
  }

  /**
   * Runs `f` in one transaction, with the request's nonce recorded in it. A refusal rolls
   * back what `f` did; the nonce is then recorded on its own, so a refused request cannot be
   * replayed either.
   */
  private tx<T>(nonce: string | null, f: () => T): Res<T> {
    let res: Res<T>;
    this.ensureSchema();
    try {
      res = this.ctx.storage.transactionSync(() => {
        if (nonce !== null) this.recordNonce(nonce);
        return ok(f());
      });
    } catch (e) {
      if (!(e instanceof StoreError)) throw e;
      res = { ok: false, refusal: e.refusal };
      if (nonce !== null && e.refusal.body.error !== "unauthorized") {
        try {
          this.ctx.storage.transactionSync(() => this.recordNonce(nonce));
        } catch {
          // Already recorded: nothing to do.
        }
      }
    }
    this.planAlarm();
    return res;
  }

  /**
   * Runs a read: in a transaction when it must record a nonce, else as it is (synchronous
   * code in an object is never interleaved with another request's, so its reads agree).
   */
  private read<T>(nonce: string | null, f: () => T, empty: T): Res<T> {
    if (nonce !== null) return this.tx(nonce, f);
    // A shard nothing was ever written to holds nothing.
    return this.hasSchema() ? attempt(f) : ok(empty);
  }

  /** Announces changes to the namespace's notifier and mirrors predictions, after commit. */
  private after(ns: string, changes: Change[], mirrored: Rec[]): void {
    if (this.namespace !== ns) {
      this.namespace = ns;
      try {
        if (this.meta("namespace") !== ns) this.setMeta("namespace", ns);
      } catch {
        this.namespace = null;
      }
    }
    if (changes.length > 0) {
      const notifier = this.env.NOTIFIER.get(this.env.NOTIFIER.idFromName(`${ns}/notifier`));
      this.ctx.waitUntil(
        notifier.publish(changes).then(
          () => undefined,
          () => undefined,
        ),
      );
    }
    for (const record of mirrored) {
      try {
        const shape = predictionStatus(record);
        if (shape === null) continue;
        this.ctx.waitUntil(
          this.env.STATUS.put(`${ns}/prediction/${record.key.id}`, JSON.stringify(shape)).catch(() => {
            this.mirrorErrors++;
          }),
        );
      } catch {
        this.mirrorErrors++;
      }
    }
  }

  // ---- nonces and forwards ----------------------------------------------------------------

  /** Answers at once: `hello` wakes every shard of a namespace with it. */
  async ping(): Promise<boolean> {
    return true;
  }

  /** Records a fan-out request's nonce (401 on a replay). */
  async useNonce(nonce: string): Promise<Res<null>> {
    return this.tx(nonce, () => null);
  }

  /**
   * Claims `(kind, id)` for `owner`, whose record lives in the owner's shard: true, or false
   * when another owner's record or forwarding row holds the id here.
   */
  async forward(kind: string, id: string, owner: string, force: boolean): Promise<Res<boolean>> {
    return this.tx(null, () => {
      const now = nowMicros();
      const f = this.first("SELECT owner FROM forwards WHERE kind = ? AND id = ?", kind, id);
      if (f && !force) return s(f.owner) === owner;
      const r = this.first("SELECT owner, gone_at FROM records WHERE kind = ? AND id = ?", kind, id);
      if (r && !force) {
        const gone = r.gone_at !== null && n(r.gone_at) <= now;
        if (!gone) return false;
        this.removeRecord(kind, id);
      }
      this.run(
        "INSERT INTO forwards (kind, id, owner) VALUES (?, ?, ?) ON CONFLICT (kind, id) DO UPDATE SET owner = excluded.owner",
        kind,
        id,
        owner,
      );
      return true;
    });
  }

  private forwardOwner(key: Key): string | null {
    const f = this.first("SELECT owner FROM forwards WHERE kind = ? AND id = ?", key.kind, key.id);
    if (!f) return null;
    // The Worker does not follow a forward to the shard that answered it.
    return s(f.owner);
  }

  // ---- records ------------------------------------------------------------------------------

  private find(key: Key, account: string, now: number): Found {
    const r = this.first("SELECT revision, gone_at, owner FROM records WHERE kind = ? AND id = ?", key.kind, key.id);
    if (!r) return { t: "absent" };
    if (r.gone_at !== null && n(r.gone_at) <= now) return { t: "gone" };
    if (s(r.owner) !== account) return { t: "theirs" };
    return { t: "present", revision: n(r.revision) };
  }

  private removeRecord(kind: string, id: string): void {
    this.run("DELETE FROM records WHERE kind = ? AND id = ?", kind, id);
    this.run("DELETE FROM items WHERE group_kind = ? AND group_id = ?", kind, id);
    this.run("DELETE FROM events WHERE stream_kind = ? AND stream_id = ?", kind, id);
  }

  private putRecord(record: Rec, revision: number): void {
    this.run(
      `INSERT OR REPLACE INTO records (${RECORD_COLUMNS}, gone_at, sweep_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      record.key.kind,
      record.key.id,
      record.key.partition,
      record.owner,
      record.created_at,
      record.status,
      record.parent,
      record.expires_at,
      record.data_removed ? 1 : 0,
      revision,
      record.body,
      record.data,
      goneAt(record),
      sweepAt(record),
    );
  }

  async write(ns: string, nonce: string | null, write: Write, refusedAt: number | null): Promise<Res<Written>> {
    let changes: Change[] = [];
    const mirrored: Rec[] = [];
    const res = this.tx(nonce, () => {
      checkWrite(write);
      const now = nowMicros();
      const account = write.account;
      // Checks, in order, before anything is written.
      write.ops.forEach((op, i) => {
        if ("insert" in op) {
          const key = op.insert.key;
          if (i === refusedAt) refuse(409, "exists", { key });
          const f = this.find(key, account, now);
          if (f.t === "present" || f.t === "theirs") refuse(409, "exists", { key });
          const fwd = this.forwardOwner(key);
          if (fwd !== null && fwd !== account) refuse(409, "exists", { key });
        } else if ("update" in op) {
          const { record, expected } = op.update;
          const key = record.key;
          const f = this.find(key, account, now);
          if (f.t !== "present") refuse(404, "not_found", { key });
          if (f.revision !== expected) {
            refuse(409, "conflict", { key, expected, actual: f.revision });
          }
        }
      });
      const apply = this.checkGuards(write);

      const written: Written = { revisions: [], skipped_entries: [] };
      for (const op of write.ops) {
        if ("insert" in op) {
          const r = op.insert;
          if (this.first("SELECT 1 AS x FROM records WHERE kind = ? AND id = ?", r.key.kind, r.key.id)) {
            this.removeRecord(r.key.kind, r.key.id);
          }
          this.putRecord(r, 1);
          written.revisions.push(1);
          changes.push({ record: { key: r.key, revision: 1 } });
          if (r.key.kind === "prediction") mirrored.push(r);
        } else if ("update" in op) {
          const { record, expected } = op.update;
          // An update that leaves the status shape as it was (logs, most streamed output)
          // would put the same value: it is skipped, which keeps KV's one write per second
          // per key for the changes the route shows.
          const before =
            record.key.kind === "prediction"
              ? this.first(`SELECT ${RECORD_COLUMNS} FROM records WHERE kind = ? AND id = ?`, record.key.kind, record.key.id)
              : null;
          this.putRecord(record, expected + 1);
          written.revisions.push(expected + 1);
          changes.push({ record: { key: record.key, revision: expected + 1 } });
          if (before !== null) {
            const old = JSON.stringify(predictionStatus(readRecord(before).record));
            if (old !== JSON.stringify(predictionStatus(record))) mirrored.push(record);
          }
        } else {
          const key = op.delete;
          const r = this.first("SELECT revision, owner FROM records WHERE kind = ? AND id = ?", key.kind, key.id);
          if (r && s(r.owner) === account) {
            this.removeRecord(key.kind, key.id);
            changes.push({ record: { key, revision: n(r.revision) + 1 } });
          } else if (!r) {
            // Items and events of a record that is not there go too.
            this.removeRecord(key.kind, key.id);
          }
          written.revisions.push(null);
        }
      }

      let totals: { balance: number; reserved: number; seq: number } | null = null;
      const nextIndex = new Map<string, number>();
      const lanes = new Set<string>();
      write.effects.forEach((effect, i) => {
        if (!apply[i]) {
          if ("post" in effect) written.skipped_entries.push(effect.post.id);
          return;
        }
        if ("enqueue" in effect) {
          this.enqueue(effect.enqueue, effect.enqueue.replace, now);
          if (effect.enqueue.claimed === null) lanes.add(effect.enqueue.lane);
        } else if ("complete" in effect) {
          this.run("DELETE FROM items WHERE lane = ? AND id = ?", effect.complete.lane, effect.complete.id);
        } else if ("count" in effect) {
          this.run(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            effect.count.name,
            effect.count.delta,
          );
        } else if ("append_events" in effect) {
          const { stream, events } = effect.append_events;
          const revision = revisionOf(write, stream) as number;
          const id = `${stream.kind}\u0000${stream.id}`;
          let index = nextIndex.get(id) ?? 0;
          for (const event of events) {
            this.putEvent(stream, revision, index, event);
            index++;
          }
          nextIndex.set(id, index);
        } else if ("post" in effect) {
          if (totals === null) totals = this.ledgerTotals(account);
          totals.seq += 1;
          totals.balance += effect.post.delta;
          totals.reserved += effect.post.held;
          this.insertEntry(effect.post, totals.seq, totals, false);
        }
      });
      if (totals !== null) this.setTotals(account, totals);
      for (const lane of [...lanes].sort()) changes.push({ work: lane });
      return written;
    });
    if (res.ok) this.after(ns, changes, mirrored);
    return res;
  }

  /** The guards of a write's effects; which effects to apply (repeated entries are skipped). */
  private checkGuards(write: Write): boolean[] {
    const apply: boolean[] = [];
    let before: Balance | null = null;
    let running: Balance | null = null;
    let needed = 0;
    const seen = new Set<string>();
    const counts = new Map<string, number>();
    for (const effect of write.effects) {
      apply.push(true);
      if ("post" in effect) {
        const entry = effect.post;
        const posted = this.first("SELECT 1 AS x FROM ledger WHERE account = ? AND id = ?", entry.account, entry.id);
        if (posted || seen.has(entry.id)) {
          apply[apply.length - 1] = false;
          continue;
        }
        seen.add(entry.id);
        if (before === null) {
          const t = this.ledgerTotals(entry.account);
          before = { balance: t.balance, reserved: t.reserved };
        }
        const now: Balance = running ?? { ...before };
        now.balance += entry.delta;
        now.reserved += entry.held;
        running = now;
        const availableDelta = entry.delta - entry.held;
        if (availableDelta < 0) {
          needed -= availableDelta;
          if (now.balance - now.reserved < 0) {
            refuse(409, "insufficient_credits", {
              account: entry.account,
              available: before.balance - before.reserved,
              needed,
            });
          }
        }
      } else if ("count" in effect && effect.count.limit !== null) {
        const { name, delta, limit } = effect.count;
        let value = counts.get(name);
        if (value === undefined) {
          const r = this.first("SELECT value FROM counters WHERE name = ?", name);
          value = r ? n(r.value) : 0;
        }
        value += delta;
        counts.set(name, value);
        if (delta > 0 && value > limit) refuse(409, "limit_reached", { counter: name, limit });
      }
    }
    return apply;
  }

  private putEvent(stream: Key, revision: number, index: number, event: EventData): void {
    this.run(
      "INSERT OR REPLACE INTO events (stream_kind, stream_id, stream_partition, revision, idx, kind, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
      stream.kind,
      stream.id,
      stream.partition,
      revision,
      index,
      event.kind,
      event.data,
    );
  }

  private ledgerTotals(account: string): { balance: number; reserved: number; seq: number } {
    const r = this.first("SELECT balance, reserved, seq FROM ledger_totals WHERE account = ?", account);
    return r ? { balance: n(r.balance), reserved: n(r.reserved), seq: n(r.seq) } : { balance: 0, reserved: 0, seq: 0 };
  }

  private setTotals(account: string, t: { balance: number; reserved: number; seq: number }): void {
    this.run(
      "INSERT INTO ledger_totals (account, balance, reserved, seq) VALUES (?, ?, ?, ?) ON CONFLICT (account) DO UPDATE SET balance = excluded.balance, reserved = excluded.reserved, seq = excluded.seq",
      account,
      t.balance,
      t.reserved,
      t.seq,
    );
  }

  private insertEntry(entry: LedgerEntry, seq: number, after: Balance, replace: boolean): void {
    this.run(
      `${replace ? "INSERT OR REPLACE" : "INSERT"} INTO ledger (account, seq, id, delta, held, reason, reference, memo, at, balance, reserved) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      entry.account,
      seq,
      entry.id,
      entry.delta,
      entry.held,
      entry.reason,
      entry.reference,
      entry.memo,
      entry.at,
      after.balance,
      after.reserved,
    );
  }

  async get(nonce: string | null, key: Key): Promise<Res<{ stored: Stored | null } | Forward>> {
    return this.read(nonce, () => {
      const r = this.first(
        `SELECT ${RECORD_COLUMNS} FROM records WHERE kind = ? AND id = ? AND (gone_at IS NULL OR gone_at > ?)`,
        key.kind,
        key.id,
        nowMicros(),
      );
      if (r) return { stored: readRecord(r) };
      const owner = this.forwardOwner(key);
      if (owner !== null) return { forward: owner };
      return { stored: null };
    }, { stored: null });
  }

  /**
   * One shard's part of a listing: up to `limit + 1` records past the cursor, in walking
   * order (newest first forward, oldest first backward).
   */
  async list(nonce: string | null, query: ListQuery): Promise<Res<Stored[]>> {
    return this.read(nonce, () => {
      let sql = `SELECT ${RECORD_COLUMNS} FROM records WHERE kind = ?`;
      const values: unknown[] = [query.kind];
      if (query.parent !== null) {
        sql += " AND parent = ?";
        values.push(query.parent);
      }
      if (query.owner !== null) {
        sql += " AND owner = ?";
        values.push(query.owner);
      }
      if (query.status !== null) {
        sql += " AND status = ?";
        values.push(query.status);
      }
      if (query.created_after !== null) {
        sql += " AND created_at >= ?";
        values.push(query.created_after);
      }
      if (query.created_before !== null) {
        sql += " AND created_at < ?";
        values.push(query.created_before);
      }
      const backward = query.after !== null && query.after.backward;
      if (query.after !== null) {
        sql += backward ? " AND (created_at, id) > (?, ?)" : " AND (created_at, id) < (?, ?)";
        values.push(query.after.created_at, query.after.id);
      }
      sql += backward
        ? " AND (gone_at IS NULL OR gone_at > ?) ORDER BY created_at ASC, id ASC LIMIT ?"
        : " AND (gone_at IS NULL OR gone_at > ?) ORDER BY created_at DESC, id DESC LIMIT ?";
      values.push(nowMicros(), Math.max(1, query.limit) + 1);
      return this.rows(sql, ...values).map(readRecord);
    }, []);
  }

  async expire(ns: string, nonce: string | null, now: number, limit: number): Promise<Res<Key[]>> {
    const changes: Change[] = [];
    const res = this.tx(nonce, () => {
      const due = this.rows(
        "SELECT kind, id, partition, revision FROM records WHERE sweep_at <= ? ORDER BY sweep_at LIMIT ?",
        now,
        limit,
      );
      const keys: Key[] = [];
      for (const r of due) {
        const key: Key = { kind: s(r.kind), id: s(r.id), partition: n(r.partition) };
        if (keepsTombstone(key.kind)) {
          this.run(
            "UPDATE records SET data = NULL, data_removed = 1, sweep_at = NULL, revision = revision + 1 WHERE kind = ? AND id = ?",
            key.kind,
            key.id,
          );
          this.run("DELETE FROM events WHERE stream_kind = ? AND stream_id = ?", key.kind, key.id);
          for (const lane of LANES.filter(keepsFinished)) {
            this.run(
              "DELETE FROM items WHERE lane = ? AND status IN ('done', 'failed') AND group_kind = ? AND group_id = ?",
              lane,
              key.kind,
              key.id,
            );
          }
        } else {
          this.removeRecord(key.kind, key.id);
        }
        changes.push({ record: { key, revision: n(r.revision) + 1 } });
        keys.push(key);
      }
      return keys;
    });
    if (res.ok) this.after(ns, changes, []);
    return res;
  }

  // ---- queue ----------------------------------------------------------------------------------

  private enqueue(item: NewItem, replace: boolean, now: number): void {
    const existing = this.first("SELECT 1 AS x FROM items WHERE lane = ? AND id = ?", item.lane, item.id);
    if (existing) {
      if (!replace) return;
      this.run("DELETE FROM items WHERE lane = ? AND id = ?", item.lane, item.id);
    }
    const seq =
      n(
        (
          this.first(
            "SELECT COALESCE(MAX(seq), 0) AS seq FROM items WHERE lane = ? AND group_kind = ? AND group_id = ?",
            item.lane,
            item.group.kind,
            item.group.id,
          ) as Row
        ).seq,
      ) + 1;
    const rank = this.nextRank(item.lane, item.topic, item.owner);
    const c = item.claimed;
    this.run(
      `INSERT INTO items (${ITEM_COLUMNS}, rank, lease_token, lease_worker, lease_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, '[]', ?, ?, ?, ?, ?, ?)`,
      item.lane,
      item.id,
      item.group.kind,
      item.group.id,
      item.group.partition,
      item.topic,
      item.owner,
      item.payload,
      seq,
      c ? 1 : 0,
      item.run_at,
      now,
      rank,
      c ? c.token : null,
      c ? c.worker : null,
      c ? c.expires_at : null,
    );
    this.recordRank(item.lane, item.topic, item.owner, rank, c !== null);
  }

  /** One past the larger of the account's last rank and the clock (the rank last claimed). */
  private nextRank(lane: string, topic: string, owner: string): number {
    const r = this.first(
      "SELECT MAX(COALESCE((SELECT rank FROM queue_ranks WHERE lane = ?1 AND topic = ?2 AND owner = ''), 0), COALESCE((SELECT rank FROM queue_ranks WHERE lane = ?1 AND topic = ?2 AND owner = ?3), 0)) + 1 AS rank",
      lane,
      topic,
      owner,
    ) as Row;
    return n(r.rank);
  }

  private recordRank(lane: string, topic: string, owner: string, rank: number, claimed: boolean): void {
    const upsert =
      "INSERT INTO queue_ranks (lane, topic, owner, rank) VALUES (?, ?, ?, ?) ON CONFLICT (lane, topic, owner) DO UPDATE SET rank = MAX(rank, excluded.rank)";
    this.run(upsert, lane, topic, owner, rank);
    if (claimed) this.run(upsert, lane, topic, "", rank);
  }

  /** The claimable items of a lane, lowest rank first (ties in the order queued). */
  private candidates(lane: string, max: number, exclude: string[], now: number): Row[] {
    return this.rows(
      `SELECT rowid AS rid, ${ITEM_COLUMNS}, rank FROM items AS i WHERE lane = ? AND status = 'pending'
         AND due_at <= ? AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
         AND topic NOT IN (SELECT value FROM json_each(?))
         AND NOT EXISTS (SELECT 1 FROM items AS j WHERE j.lane = i.lane AND j.group_kind = i.group_kind
           AND j.group_id = i.group_id AND j.status = 'pending' AND j.seq < i.seq)
         ORDER BY rank, rowid LIMIT ?`,
      lane,
      now,
      now,
      JSON.stringify(exclude),
      max,
    );
  }

  /** The ranks of up to `max` claimable items (what a claim here would take first). */
  async peek(nonce: string | null, lane: string, max: number, exclude: string[]): Promise<Res<Candidate[]>> {
    return this.read(
      nonce,
      () => this.candidates(lane, max, exclude, nowMicros()).map((r) => ({ rank: n(r.rank), order: n(r.rid) })),
      [],
    );
  }

  async claim(
    nonce: string | null,
    lane: string,
    worker: string,
    leaseFor: number,
    max: number,
    exclude: string[],
  ): Promise<Res<{ rank: number; lease: ItemLease }[]>> {
    return this.tx(nonce, () => {
      const now = nowMicros();
      const expiresAt = now + leaseFor;
      const picked = this.candidates(lane, max, exclude, now);
      const clocks = new Map<string, number>();
      const out: { rank: number; lease: ItemLease }[] = [];
      for (const r of picked) {
        const token = randomToken();
        this.run(
          "UPDATE items SET claims = claims + 1, lease_token = ?, lease_worker = ?, lease_expires_at = ? WHERE rowid = ?",
          token,
          worker,
          expiresAt,
          r.rid,
        );
        const item = readItem(r);
        item.claims += 1;
        const rank = n(r.rank);
        clocks.set(item.topic, Math.max(clocks.get(item.topic) ?? 0, rank));
        out.push({ rank, lease: { item, worker, token, expires_at: expiresAt } });
      }
      for (const [topic, rank] of clocks) {
        this.run(
          "INSERT INTO queue_ranks (lane, topic, owner, rank) VALUES (?, ?, '', ?) ON CONFLICT (lane, topic, owner) DO UPDATE SET rank = MAX(rank, excluded.rank)",
          lane,
          topic,
          rank,
        );
      }
      return out;
    });
  }

  async renew(nonce: string | null, lease: ItemLease, extendBy: number): Promise<Res<{ lease: ItemLease }>> {
    return this.tx(nonce, () => {
      const now = nowMicros();
      const held = this.first(
        "SELECT rowid AS rid FROM items WHERE lane = ? AND id = ? AND lease_token = ? AND lease_expires_at > ?",
        lease.item.lane,
        lease.item.id,
        lease.token,
        now,
      );
      if (!held) refuse(409, "lease_lost");
      const expiresAt = now + extendBy;
      this.run("UPDATE items SET lease_expires_at = ? WHERE rowid = ?", expiresAt, held.rid);
      return { lease: { ...lease, expires_at: expiresAt } };
    });
  }

  async finish(
    ns: string,
    nonce: string | null,
    lease: ItemLease,
    outcome: Outcome,
    attemptRec: Attempt | null,
  ): Promise<Res<Record<string, never>>> {
    let work: string | null = null;
    const res = this.tx(nonce, () => {
      const now = nowMicros();
      const lane = lease.item.lane;
      const r = this.first(
        "SELECT rowid AS rid, group_kind, group_id, seq, attempts, topic, rank FROM items WHERE lane = ? AND id = ? AND lease_token = ? AND lease_expires_at > ?",
        lane,
        lease.item.id,
        lease.token,
        now,
      );
      if (!r) refuse(409, "lease_lost");
      let attempts: Attempt[] = [];
      try {
        attempts = JSON.parse(s(r.attempts));
      } catch {
        attempts = [];
      }
      if (attemptRec !== null) attempts.push(attemptRec);
      const attemptsText = JSON.stringify(attempts);
      if (outcome === "done" || (outcome !== "hand_back" && "give_up" in outcome)) {
        const status = outcome === "done" ? "done" : "failed";
        const rec = this.first("SELECT data_removed FROM records WHERE kind = ? AND id = ?", r.group_kind, r.group_id);
        const keep = keepsFinished(lane) && rec !== null && n(rec.data_removed) === 0;
        if (keep) {
          this.run(
            "UPDATE items SET status = ?, due_at = NULL, lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL, attempts = ? WHERE rowid = ?",
            status,
            attemptsText,
            r.rid,
          );
        } else {
          this.run("DELETE FROM items WHERE rowid = ?", r.rid);
        }
        if (outcome !== "done" && outcome.give_up.rest) {
          const later = "WHERE lane = ? AND status = 'pending' AND group_kind = ? AND group_id = ? AND seq > ?";
          if (keep) {
            this.run(
              `UPDATE items SET status = 'failed', due_at = NULL, lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL ${later}`,
              lane,
              r.group_kind,
              r.group_id,
              r.seq,
            );
          } else {
            this.run(`DELETE FROM items ${later}`, lane, r.group_kind, r.group_id, r.seq);
          }
        }
        // The group's next item may go now.
        work = lane;
      } else {
        const handBack = outcome === "hand_back";
        let at = now;
        let refund = 1;
        if (outcome !== "hand_back") {
          at = "retry" in outcome ? outcome.retry : outcome.release;
          refund = "release" in outcome ? 1 : 0;
        }
        this.run(
          "UPDATE items SET due_at = ?, claims = MAX(claims - ?, 0), lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL, attempts = ? WHERE rowid = ?",
          at,
          refund,
          attemptsText,
          r.rid,
        );
        if (handBack) {
          // Back in the queue at its rank: the clock its claim raised goes back below it.
          this.run(
            "UPDATE queue_ranks SET rank = ? WHERE lane = ? AND topic = ? AND owner = '' AND rank >= ?",
            n(r.rank) - 1,
            lane,
            r.topic,
            n(r.rank),
          );
        }
        work = lane;
      }
      return {} as Record<string, never>;
    });
    if (res.ok && work !== null) this.after(ns, [{ work }], []);
    return res;
  }

  async items(nonce: string | null, lane: string, group: Key): Promise<Res<{ items: Item[] } | Forward>> {
    return this.read(nonce, () => {
      const rows = this.rows(
        `SELECT ${ITEM_COLUMNS} FROM items WHERE lane = ? AND group_kind = ? AND group_id = ? ORDER BY seq`,
        lane,
        group.kind,
        group.id,
      );
      if (rows.length === 0) {
        const owner = this.forwardOwner(group);
        if (owner !== null) return { forward: owner };
      }
      return { items: rows.map(readItem) };
    }, { items: [] });
  }

  async requeue(ns: string, nonce: string | null, lane: string, group: Key, id: string): Promise<Res<Record<string, never> | Forward>> {
    let changed = false;
    const res = this.tx(nonce, (): Record<string, never> | Forward => {
      const r = this.first(
        "SELECT rowid AS rid FROM items WHERE lane = ? AND id = ? AND group_kind = ? AND group_id = ?",
        lane,
        id,
        group.kind,
        group.id,
      );
      if (!r) {
        const owner = this.forwardOwner(group);
        if (owner !== null && shardOfAccount(owner) !== shardOfPartition(group.partition)) {
          return { forward: owner };
        }
        refuse(404, "not_found", { key: group });
      }
      this.run(
        "UPDATE items SET status = 'pending', due_at = ?, lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL WHERE rowid = ?",
        nowMicros(),
        r.rid,
      );
      changed = true;
      return {};
    });
    if (res.ok && changed) this.after(ns, [{ work: lane }], []);
    return res;
  }

  async queueStats(nonce: string | null, lane: string): Promise<Res<{ ready: number; leased: number; delayed: number }>> {
    return this.read(nonce, () => {
      const now = nowMicros();
      const r = this.first(
        `SELECT
           COALESCE(SUM(lease_expires_at IS NOT NULL AND lease_expires_at > ?1), 0) AS leased,
           COALESCE(SUM((lease_expires_at IS NULL OR lease_expires_at <= ?1) AND due_at <= ?1
             AND NOT EXISTS (SELECT 1 FROM items AS j WHERE j.lane = i.lane AND j.group_kind = i.group_kind
               AND j.group_id = i.group_id AND j.status = 'pending' AND j.seq < i.seq)), 0) AS ready,
           COUNT(*) AS pending
         FROM items AS i WHERE lane = ?2 AND status = 'pending'`,
        now,
        lane,
      ) as Row;
      const leased = n(r.leased);
      const ready = n(r.ready);
      return { ready, leased, delayed: n(r.pending) - ready - leased };
    }, { ready: 0, leased: 0, delayed: 0 });
  }

  // ---- events, ledgers, counters --------------------------------------------------------------

  async readEvents(
    nonce: string | null,
    stream: Key,
    after: [number, number] | null,
    limit: number,
  ): Promise<Res<{ events: StreamEvent[] } | Forward>> {
    return this.read(nonce, () => {
      const [revision, index] = after ?? [0, -1];
      const rows = this.rows(
        "SELECT revision, idx, kind, data FROM events WHERE stream_kind = ? AND stream_id = ? AND (revision, idx) > (?, ?) ORDER BY revision, idx LIMIT ?",
        stream.kind,
        stream.id,
        revision,
        index,
        Math.max(1, limit),
      );
      if (rows.length === 0) {
        const here = this.first("SELECT 1 AS x FROM records WHERE kind = ? AND id = ?", stream.kind, stream.id);
        const owner = here ? null : this.forwardOwner(stream);
        if (owner !== null) return { forward: owner };
      }
      return { events: rows.map(readEvent) };
    }, { events: [] });
  }

  async balance(nonce: string | null, account: string): Promise<Res<Balance>> {
    return this.read(nonce, () => {
      const t = this.ledgerTotals(account);
      return { balance: t.balance, reserved: t.reserved };
    }, { balance: 0, reserved: 0 });
  }

  async ledger(nonce: string | null, account: string, before: number | null, limit: number): Promise<Res<{ entries: Posted[] }>> {
    return this.read(nonce, () => ({
      entries: this.rows(
        "SELECT account, seq, id, delta, held, reason, reference, memo, at, balance, reserved FROM ledger WHERE account = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
        account,
        before ?? Number.MAX_SAFE_INTEGER,
        Math.max(1, limit),
      ).map(readPosted),
    }), { entries: [] });
  }

  async counters(nonce: string | null): Promise<Res<[string, number][]>> {
    return this.read(
      nonce,
      () =>
        this.rows("SELECT name, value FROM counters ORDER BY name").map((r) => [s(r.name), n(r.value)] as [string, number]),
      [],
    );
  }

  // ---- export and import ------------------------------------------------------------------------

  async export(nonce: string | null, section: string, after: Position | null, limit: number): Promise<Res<Exported[]>> {
    return this.read(nonce, () => {
      const lim = Math.max(1, limit);
      switch (section) {
        case "records": {
          const [kind, id] = after && "record" in after ? after.record : ["", ""];
          return this.rows(
            `SELECT ${RECORD_COLUMNS} FROM records WHERE (kind, id) > (?, ?) ORDER BY kind, id LIMIT ?`,
            kind,
            id,
            lim,
          ).map((r) => ({ record: readRecord(r) }));
        }
        case "items": {
          const [lane, id] = after && "item" in after ? after.item : ["", ""];
          return this.rows(
            `SELECT ${ITEM_COLUMNS} FROM items WHERE (lane, id) > (?, ?) ORDER BY lane, id LIMIT ?`,
            lane,
            id,
            lim,
          ).map((r) => ({ item: readItem(r) }));
        }
        case "events": {
          const [kind, id, revision, index] = after && "event" in after ? after.event : ["", "", 0, -1];
          return this.rows(
            "SELECT stream_kind, stream_id, stream_partition, revision, idx, kind, data FROM events WHERE (stream_kind, stream_id, revision, idx) > (?, ?, ?, ?) ORDER BY stream_kind, stream_id, revision, idx LIMIT ?",
            kind,
            id,
            revision,
            index,
            lim,
          ).map((r) => ({
            event: {
              stream: { kind: s(r.stream_kind), id: s(r.stream_id), partition: n(r.stream_partition) },
              event: readEvent(r),
            },
          }));
        }
        case "ledger": {
          const [account, seq] = after && "ledger" in after ? after.ledger : ["", 0];
          return this.rows(
            "SELECT account, seq, id, delta, held, reason, reference, memo, at, balance, reserved FROM ledger WHERE (account, seq) > (?, ?) ORDER BY account, seq LIMIT ?",
            account,
            seq,
            lim,
          ).map((r) => ({ ledger: readPosted(r) }));
        }
        default: {
          const name = after && "counter" in after ? after.counter : "";
          // Counters are summed across shards by the Worker, so none is cut off here by
          // another shard's names: the first `limit` names after `name` are enough.
          return this.rows("SELECT name, value FROM counters WHERE name > ? ORDER BY name LIMIT ?", name, lim).map(
            (r) => ({ counter: { name: s(r.name), value: n(r.value) } }),
          );
        }
      }
    }, []);
  }

  /**
   * Writes exported pieces as they are. Events whose stream lives in another shard (a
   * forwarding row here and no record) are not written: they are handed back with the
   * owner to send them to.
   */
  async import(pieces: Exported[], clearCounters: string[]): Promise<Res<{ forwarded: [string, Exported][] }>> {
    return this.tx(null, () => {
      const forwarded: [string, Exported][] = [];
      const ledgers = new Set<string>();
      for (const piece of pieces) {
        if ("record" in piece) {
          this.putRecord(piece.record.record, piece.record.revision);
        } else if ("item" in piece) {
          const item = piece.item;
          this.run("DELETE FROM items WHERE lane = ? AND id = ?", item.lane, item.id);
          const rank = this.nextRank(item.lane, item.topic, item.owner);
          this.run(
            `INSERT INTO items (${ITEM_COLUMNS}, rank) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
            item.lane,
            item.id,
            item.group.kind,
            item.group.id,
            item.group.partition,
            item.topic,
            item.owner,
            item.payload,
            item.seq,
            item.status,
            item.claims,
            JSON.stringify(item.attempts),
            item.due_at,
            item.created_at,
            rank,
          );
          this.recordRank(item.lane, item.topic, item.owner, rank, false);
        } else if ("event" in piece) {
          const { stream, event } = piece.event;
          const here = this.first("SELECT 1 AS x FROM records WHERE kind = ? AND id = ?", stream.kind, stream.id);
          const owner = here ? null : this.forwardOwner(stream);
          if (owner !== null && shardOfAccount(owner) !== shardOfPartition(stream.partition)) {
            forwarded.push([owner, piece]);
            continue;
          }
          this.putEvent(stream, event.revision, event.index, { kind: event.kind, data: event.data });
        } else if ("ledger" in piece) {
          const p = piece.ledger;
          this.run("DELETE FROM ledger WHERE account = ? AND (seq = ? OR id = ?)", p.entry.account, p.seq, p.entry.id);
          this.insertEntry(p.entry, p.seq, p.after, false);
          ledgers.add(p.entry.account);
        } else {
          this.run(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            piece.counter.name,
            piece.counter.value,
          );
        }
      }
      for (const account of ledgers) {
        const last = this.first(
          "SELECT seq, balance, reserved FROM ledger WHERE account = ? ORDER BY seq DESC LIMIT 1",
          account,
        );
        if (last) {
          this.setTotals(account, { balance: n(last.balance), reserved: n(last.reserved), seq: n(last.seq) });
        }
      }
      for (const name of clearCounters) this.run("DELETE FROM counters WHERE name = ?", name);
      return { forwarded };
    });
  }

  /** Health of this object (for debugging): row counts and mirror errors. */
  async stats(): Promise<Record<string, number>> {
    this.ensureSchema();
    const count = (table: string) => n((this.first(`SELECT COUNT(*) AS c FROM ${table}`) as Row).c);
    return {
      records: count("records"),
      items: count("items"),
      events: count("events"),
      ledger: count("ledger"),
      nonces: count("nonces"),
      mirror_errors: this.mirrorErrors,
    };
  }
}
