// The Worker: checks each call's signature (PROTOCOL.md), sends single-shard methods to their
// StoreShard and does the fan-out methods over the namespace's 16 shards, and serves the
// seeds' status route from KV (falling back to the shard).

import {
  badRequest,
  cmpNum,
  cmpStr,
  cmpTuple,
  Env,
  Exported,
  fnv1a32,
  ItemLease,
  Key,
  partitionOf,
  positionOf,
  Refusal,
  refuse,
  Res,
  Stored,
  StoreError,
  SHARDS,
  shardOfAccount,
  shardOfPartition,
} from "./common";
import { Forward, predictionStatus } from "./shard";
import * as v from "./validate";

export { StoreShard } from "./shard";
export { StoreNotifier } from "./notifier";

const WINDOW_MS = 300_000;
const SIGNING_PREFIX = "augur-store-1";
const encoder = new TextEncoder();

/** Where fan-outs start, so that no shard is always first (claims, expiry). */
let rotation = 0;

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

function hex(bytes: ArrayBuffer): string {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256Hex(data: Uint8Array): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", data));
}

async function hmacHex(secret: string, message: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return hex(await crypto.subtle.sign("HMAC", key, encoder.encode(message)));
}

function constantTimeEqual(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  if (x.length !== y.length) return false;
  const subtle = crypto.subtle as SubtleCrypto & { timingSafeEqual?: (a: ArrayBuffer | ArrayBufferView, b: ArrayBuffer | ArrayBufferView) => boolean };
  if (typeof subtle.timingSafeEqual === "function") return subtle.timingSafeEqual(x, y);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}

function unauthorized(message: string): never {
  refuse(401, "unauthorized", { message });
}

/** Checks the signature headers; returns the nonce. */
async function authenticate(request: Request, path: string, body: Uint8Array, secret: string): Promise<string> {
  const timestamp = request.headers.get("x-augur-timestamp");
  const nonce = request.headers.get("x-augur-nonce");
  const signature = request.headers.get("x-augur-signature");
  if (timestamp === null || nonce === null || signature === null) unauthorized("missing signature headers");
  if (!/^[0-9]{1,16}$/.test(timestamp)) unauthorized("bad timestamp");
  if (!/^[0-9a-f]{32}$/.test(nonce)) unauthorized("bad nonce");
  const message = [SIGNING_PREFIX, "POST", path, timestamp, nonce, await sha256Hex(body)].join("\n");
  const expected = await hmacHex(secret, message);
  if (!constantTimeEqual(expected, signature.toLowerCase())) unauthorized("bad signature");
  if (Math.abs(Date.now() - Number(timestamp)) > WINDOW_MS) unauthorized("timestamp outside the 300 s window");
  return nonce;
}

/** The namespace's shards and notifier. */
class Namespace {
  constructor(
    private env: Env,
    readonly name: string,
  ) {}

  shard(k: number) {
    return this.env.SHARDS.get(this.env.SHARDS.idFromName(`${this.name}/shard/${k}`));
  }

  notifier() {
    return this.env.NOTIFIER.get(this.env.NOTIFIER.idFromName(`${this.name}/notifier`));
  }
}

function unwrap<T>(res: Res<T>): T {
  if (!res.ok) throw new StoreError(res.refusal);
  return res.value;
}

function isForward(v: unknown): v is Forward {
  return typeof v === "object" && v !== null && "forward" in v;
}

/** Calls `call` on the key's shard and, if it answers a forwarding row, on the owner's. */
async function follow<T>(
  ns: Namespace,
  key: Key,
  nonce: string,
  call: (shard: number, nonce: string | null) => Promise<Res<T | Forward>>,
  missing: T,
): Promise<T> {
  const home = shardOfPartition(key.partition);
  const first = unwrap(await call(home, nonce));
  if (!isForward(first)) return first;
  const owner = shardOfAccount(first.forward);
  if (owner === home) return missing;
  const second = unwrap(await call(owner, null));
  return isForward(second) ? missing : second;
}

/** The shard that records a fan-out's nonce. */
function nonceShard(nonce: string): number {
  return fnv1a32(nonce) % SHARDS;
}

async function fanNonce(ns: Namespace, nonce: string): Promise<void> {
  unwrap(await ns.shard(fnv1a32(nonce) % SHARDS).useNonce(nonce));
}

function all<T>(f: (k: number) => Promise<T>): Promise<T[]> {
  return Promise.all(Array.from({ length: SHARDS }, (_, k) => f(k)));
}

function cmpNewest(a: Stored, b: Stored): number {
  return cmpNum(b.record.created_at, a.record.created_at) || cmpStr(b.record.key.id, a.record.key.id);
}

async function dispatch(ns: Namespace, method: string, body: unknown, nonce: string): Promise<unknown> {
  const o = v.obj(body, "body");
  switch (method) {
    case "hello":
      // A node says hello when it connects: waking every object of the namespace then (a
      // fresh object's start costs most of a first call) keeps that cost out of its calls.
      await Promise.all([fanNonce(ns, nonce), all((k) => ns.shard(k).ping()), ns.notifier().ping()]);
      return { protocol: 1, shards: SHARDS };

    case "write": {
      const w = v.write(body);
      const home = shardOfAccount(w.account);
      // A record whose id lies in another shard claims the id there first (a forwarding row).
      let refusedAt: number | null = null;
      for (let i = 0; i < w.ops.length; i++) {
        const op = w.ops[i];
        if (!("insert" in op) || op.insert.owner !== w.account) continue;
        const k = shardOfPartition(op.insert.key.partition);
        if (k === home) continue;
        if (!unwrap(await ns.shard(k).forward(op.insert.key.kind, op.insert.key.id, w.account, false))) {
          refusedAt = i;
          break;
        }
      }
      return unwrap(await ns.shard(home).write(ns.name, nonce, w, refusedAt));
    }

    case "get": {
      const key = v.key(o.key, "key");
      return follow(ns, key, nonce, (k, n) => ns.shard(k).get(n, key), { stored: null });
    }

    case "list": {
      const q = v.listQuery(body);
      const backward = q.after !== null && q.after.backward;
      let rows: Stored[];
      if (q.owner !== null) {
        rows = unwrap(await ns.shard(shardOfAccount(q.owner)).list(nonce, q));
      } else {
        // Read-only fan-outs record the nonce in the nonce shard's part of the call (a replay
        // is refused before anything is answered).
        const nk = nonceShard(nonce);
        rows = (await all((k) => ns.shard(k).list(k === nk ? nonce : null, q))).flatMap(unwrap);
      }
      rows.sort(backward ? (a, b) => cmpNewest(b, a) : cmpNewest);
      let next = null;
      if (rows.length > q.limit) {
        rows = rows.slice(0, q.limit);
        const last = rows[rows.length - 1].record;
        next = { created_at: last.created_at, id: last.key.id, backward };
      }
      if (backward) rows.reverse();
      return { items: rows, next };
    }

    case "expire": {
      const now = v.int(o.now, "now");
      let left = v.count(o.limit, "limit");
      await fanNonce(ns, nonce);
      const keys: Key[] = [];
      const start = rotation++;
      for (let i = 0; i < SHARDS && left > 0; i++) {
        const got = unwrap(await ns.shard((start + i) % SHARDS).expire(ns.name, null, now, left));
        keys.push(...got);
        left -= got.length;
      }
      return { keys };
    }

    case "claim": {
      const lane = v.lane(o.lane, "lane");
      const worker = v.str(o.worker, "worker");
      const leaseFor = v.count(o.lease_for, "lease_for");
      const max = Math.min(v.count(o.max, "max"), 10_000);
      const exclude = v.arr(o.exclude_topics, "exclude_topics").map((t, i) => v.str(t, `exclude_topics[${i}]`));
      if (max === 0) {
        await fanNonce(ns, nonce);
        return { leases: [] };
      }
      const start = rotation++ % SHARDS;
      const place = (k: number) => (k - start + SHARDS) % SHARDS;
      // Which shards hold the lowest ranks (read only; the nonce shard records the nonce),
      // then claim that many in each.
      const nk = nonceShard(nonce);
      const peeked = await all((k) => ns.shard(k).peek(k === nk ? nonce : null, lane, max, exclude));
      const candidates = peeked.map(unwrap).flatMap((list, k) => list.map((c) => ({ ...c, k })));
      candidates.sort((a, b) => cmpNum(a.rank, b.rank) || cmpNum(place(a.k), place(b.k)) || cmpNum(a.order, b.order));
      const wanted = new Map<number, number>();
      for (const c of candidates.slice(0, max)) wanted.set(c.k, (wanted.get(c.k) ?? 0) + 1);
      const taken = await Promise.all(
        [...wanted].map(async ([k, count]) =>
          unwrap(await ns.shard(k).claim(null, lane, worker, leaseFor, count, exclude)).map((t) => ({ ...t, k })),
        ),
      );
      const leases = taken.flat();
      leases.sort((a, b) => cmpNum(a.rank, b.rank) || cmpNum(place(a.k), place(b.k)));
      return { leases: leases.map((t) => t.lease) };
    }

    case "renew": {
      const lease = v.itemLease(o.lease, "lease");
      const extendBy = v.count(o.extend_by, "extend_by");
      return unwrap(await ns.shard(shardOfAccount(lease.item.owner)).renew(nonce, lease, extendBy));
    }

    case "finish": {
      const lease: ItemLease = v.itemLease(o.lease, "lease");
      const outcome = v.outcome(o.outcome);
      const att = v.optAttempt(o.attempt, "attempt");
      return unwrap(await ns.shard(shardOfAccount(lease.item.owner)).finish(ns.name, nonce, lease, outcome, att));
    }

    case "items": {
      const lane = v.lane(o.lane, "lane");
      const group = v.key(o.group, "group");
      return follow(ns, group, nonce, (k, n) => ns.shard(k).items(n, lane, group), { items: [] });
    }

    case "requeue": {
      const lane = v.lane(o.lane, "lane");
      const group = v.key(o.group, "group");
      const id = v.str(o.id, "id");
      const done = await follow(ns, group, nonce, (k, n) => ns.shard(k).requeue(ns.name, n, lane, group, id), null);
      if (done === null) refuse(404, "not_found", { key: group });
      return {};
    }

    case "queue_stats": {
      const lane = v.lane(o.lane, "lane");
      const nk = nonceShard(nonce);
      const stats = (await all((k) => ns.shard(k).queueStats(k === nk ? nonce : null, lane))).map(unwrap);
      return stats.reduce(
        (a, b) => ({ ready: a.ready + b.ready, leased: a.leased + b.leased, delayed: a.delayed + b.delayed }),
        { ready: 0, leased: 0, delayed: 0 },
      );
    }

    case "read_events": {
      const stream = v.key(o.stream, "stream");
      let after: [number, number] | null = null;
      if (o.after !== null && o.after !== undefined) {
        const a = v.arr(o.after, "after");
        if (a.length !== 2) badRequest("after: expected [revision, index]");
        after = [v.nat(a[0], "after[0]"), v.nat(a[1], "after[1]")];
      }
      const limit = Math.min(v.count(o.limit, "limit"), 1_000_000);
      return follow(ns, stream, nonce, (k, n) => ns.shard(k).readEvents(n, stream, after, limit), { events: [] });
    }

    case "balance": {
      const account = v.str(o.account, "account");
      return unwrap(await ns.shard(shardOfAccount(account)).balance(nonce, account));
    }

    case "ledger": {
      const account = v.str(o.account, "account");
      const before = o.before === null || o.before === undefined ? null : v.count(o.before, "before");
      const limit = Math.min(v.count(o.limit, "limit"), 1_000_000);
      return unwrap(await ns.shard(shardOfAccount(account)).ledger(nonce, account, before, limit));
    }

    case "counters": {
      const nk = nonceShard(nonce);
      const sums = new Map<string, number>();
      for (const res of await all((k) => ns.shard(k).counters(k === nk ? nonce : null))) {
        for (const [name, value] of unwrap(res) as [string, number][]) sums.set(name, (sums.get(name) ?? 0) + value);
      }
      return { counters: [...sums].sort((a, b) => cmpStr(a[0], b[0])) };
    }

    case "export": {
      const section = v.section(o.section);
      const after = v.position(o.after);
      const limit = Math.max(1, Math.min(v.count(o.limit, "limit"), 1_000_000));
      const nk = nonceShard(nonce);
      let pieces = (await all((k) => ns.shard(k).export(k === nk ? nonce : null, section, after, limit))).flatMap(
        unwrap,
      );
      if (section === "counters") {
        const sums = new Map<string, number>();
        for (const p of pieces) {
          if ("counter" in p) sums.set(p.counter.name, (sums.get(p.counter.name) ?? 0) + p.counter.value);
        }
        pieces = [...sums].map(([name, value]) => ({ counter: { name, value } }));
      }
      pieces.sort((a, b) => cmpTuple(positionOf(a), positionOf(b)));
      return { pieces: pieces.slice(0, limit) };
    }

    case "import": {
      const pieces = v.arr(o.pieces, "pieces").map((p, i) => v.exported(p, `pieces[${i}]`));
      await fanNonce(ns, nonce);
      await importPieces(ns, pieces);
      return {};
    }

    case "changes": {
      const after = o.after === null || o.after === undefined ? null : v.count(o.after, "after");
      const epoch = v.optStr(o.epoch, "epoch");
      const waitMs = Math.min(30_000, v.count(o.wait_ms, "wait_ms"));
      await fanNonce(ns, nonce);
      return ns.notifier().changes(after, epoch, waitMs);
    }

    default:
      refuse(400, "bad_request", { message: `unknown method ${JSON.stringify(method)}` });
  }
}

async function importPieces(ns: Namespace, pieces: Exported[]): Promise<void> {
  // Records first (with the forwarding rows of ids outside their owner's shard), then items,
  // ledgers and counters, then events (which follow the records' forwarding rows).
  const byShard = (list: [number, Exported][]) => {
    const m = new Map<number, Exported[]>();
    for (const [k, p] of list) m.set(k, [...(m.get(k) ?? []), p]);
    return m;
  };
  const records: [number, Exported][] = [];
  const rest: [number, Exported][] = [];
  const events: [number, Exported][] = [];
  const counters: string[] = [];
  for (const p of pieces) {
    if ("record" in p) {
      const r = p.record.record;
      const home = shardOfAccount(r.owner);
      const k = shardOfPartition(r.key.partition);
      if (k !== home) unwrap(await ns.shard(k).forward(r.key.kind, r.key.id, r.owner, true));
      records.push([home, p]);
    } else if ("item" in p) rest.push([shardOfAccount(p.item.owner), p]);
    else if ("ledger" in p) rest.push([shardOfAccount(p.ledger.entry.account), p]);
    else if ("counter" in p) {
      rest.push([0, p]);
      counters.push(p.counter.name);
    } else events.push([shardOfPartition(p.event.stream.partition), p]);
  }
  const run = async (m: Map<number, Exported[]>, clear: boolean) => {
    const forwarded: [string, Exported][] = [];
    await Promise.all(
      Array.from({ length: SHARDS }, async (_, k) => {
        const list = m.get(k) ?? [];
        const clearHere = clear && k !== 0 ? counters : [];
        if (list.length === 0 && clearHere.length === 0) return;
        forwarded.push(...(unwrap(await ns.shard(k).import(list, clearHere)).forwarded as [string, Exported][]));
      }),
    );
    return forwarded;
  };
  await run(byShard(records), false);
  await run(byShard(rest), true);
  const forwarded = await run(byShard(events), false);
  if (forwarded.length > 0) {
    await run(byShard(forwarded.map(([owner, p]) => [shardOfAccount(owner), p])), false);
  }
}

/** `GET /ns/{ns}/api/predictions/{id}`: the seeds' status shape, from KV or the shard. */
async function status(env: Env, ns: Namespace, id: string): Promise<Response> {
  // KV keys are at most 512 bytes; no prediction id comes near that.
  if (id.length === 0 || new TextEncoder().encode(id).length > 256) {
    return json(404, { error: "not_found", message: "no such prediction" }, { "x-augur-source": "object" });
  }
  const kvKey = `${ns.name}/prediction/${id}`;
  const cached = await env.STATUS.get(kvKey);
  if (cached !== null) {
    return new Response(cached, { headers: { "content-type": "application/json", "x-augur-source": "kv" } });
  }
  const key: Key = { kind: "prediction", id, partition: partitionOf(id) };
  const found = await follow(ns, key, "", (k) => ns.shard(k).get(null, key), { stored: null });
  const shape = found.stored ? predictionStatus(found.stored.record) : null;
  if (shape === null) {
    return json(404, { error: "not_found", message: `prediction ${id} not found` }, { "x-augur-source": "object" });
  }
  const text = JSON.stringify(shape);
  try {
    await env.STATUS.put(kvKey, text);
  } catch {
    // The mirror is a cache: a failed put only costs the next read a trip to the object.
  }
  return new Response(text, { headers: { "content-type": "application/json", "x-augur-source": "object" } });
}

function refusalResponse(r: Refusal): Response {
  return json(r.status, r.body);
}

async function handle(request: Request, env: Env): Promise<Response> {
  const url = new URL(request.url);
  const parts = url.pathname.split("/");
  // ["", "ns", namespace, method] or ["", "ns", namespace, "api", "predictions", id]
  if (parts.length < 4 || parts[1] !== "ns") return json(400, { error: "bad_request", message: "no such route" });
  let name: string;
  try {
    name = decodeURIComponent(parts[2]);
  } catch {
    return json(400, { error: "bad_request", message: "bad namespace" });
  }
  if (!/^[A-Za-z0-9_.-]{1,100}$/.test(name)) return json(400, { error: "bad_request", message: "bad namespace" });
  const ns = new Namespace(env, name);

  if (parts.length === 6 && parts[3] === "api" && parts[4] === "predictions") {
    if (request.method !== "GET") return json(400, { error: "bad_request", message: "use GET" });
    let id: string;
    try {
      id = decodeURIComponent(parts[5]);
    } catch {
      return json(400, { error: "bad_request", message: "bad id" });
    }
    return status(env, ns, id);
  }
  if (parts.length !== 4) return json(400, { error: "bad_request", message: "no such route" });
  if (request.method !== "POST") return json(400, { error: "bad_request", message: "use POST" });

  const secret = env.AUGUR_STORE_SECRET;
  if (!secret) return json(500, { error: "internal", message: "AUGUR_STORE_SECRET is not set" });
  const body = new Uint8Array(await request.arrayBuffer());
  const nonce = await authenticate(request, url.pathname, body, secret);
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(body));
  } catch {
    badRequest("the body is not JSON");
  }
  return json(200, await dispatch(ns, parts[3], parsed, nonce));
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    try {
      return await handle(request, env);
    } catch (e) {
      if (e instanceof StoreError) return refusalResponse(e.refusal);
      const err = e as { message?: unknown; retryable?: unknown; overloaded?: unknown };
      const message = typeof err?.message === "string" ? err.message : "unexpected error";
      if (err?.retryable === true || err?.overloaded === true) {
        return json(503, { error: "unavailable", message });
      }
      return json(500, { error: "internal", message });
    }
  },
} satisfies ExportedHandler<Env>;
