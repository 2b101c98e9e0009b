// Shared vocabulary of the Worker and its objects: the wire types of PROTOCOL.md, the
// partition hash, errors as answers, and the ordering of exported pieces.

export const SHARDS = 16;
export const PARTITIONS = 256;

export interface Env {
  SHARDS: DurableObjectNamespace<import("./shard").StoreShard>;
  NOTIFIER: DurableObjectNamespace<import("./notifier").StoreNotifier>;
  STATUS: KVNamespace;
  AUGUR_STORE_SECRET?: string;
}

export interface Key {
  kind: string;
  id: string;
  partition: number;
}

export interface Rec {
  key: Key;
  owner: string;
  created_at: number;
  status: string | null;
  parent: string | null;
  expires_at: number | null;
  data_removed: boolean;
  body: string;
  data: string | null;
}

export interface Stored {
  record: Rec;
  revision: number;
}

export type Op =
  | { insert: Rec }
  | { update: { record: Rec; expected: number } }
  | { delete: Key };

export interface Claim {
  worker: string;
  token: string;
  expires_at: number;
}

export interface NewItem {
  lane: string;
  id: string;
  group: Key;
  topic: string;
  owner: string;
  payload: string;
  run_at: number;
  replace: boolean;
  claimed: Claim | null;
}

export interface EventData {
  kind: string;
  data: string;
}

export interface StreamEvent {
  revision: number;
  index: number;
  kind: string;
  data: string;
}

export interface LedgerEntry {
  account: string;
  id: string;
  delta: number;
  held: number;
  reason: string;
  reference: string | null;
  memo: string | null;
  at: number;
}

export interface Balance {
  balance: number;
  reserved: number;
}

export interface Posted {
  seq: number;
  entry: LedgerEntry;
  after: Balance;
}

export type Effect =
  | { enqueue: NewItem }
  | { complete: { lane: string; id: string } }
  | { count: { name: string; delta: number; limit: number | null } }
  | { append_events: { stream: Key; events: EventData[] } }
  | { post: LedgerEntry };

export interface Write {
  account: string;
  ops: Op[];
  effects: Effect[];
}

export interface Written {
  revisions: (number | null)[];
  skipped_entries: string[];
}

export interface Cursor {
  created_at: number;
  id: string;
  backward: boolean;
}

export interface Attempt {
  at: number;
  status: number | null;
  error: string | null;
  duration_ms: number;
}

export interface Item {
  lane: string;
  id: string;
  group: Key;
  topic: string;
  owner: string;
  payload: string;
  seq: number;
  status: string;
  claims: number;
  attempts: Attempt[];
  due_at: number | null;
  created_at: number;
}

export interface ItemLease {
  item: Item;
  worker: string;
  token: string;
  expires_at: number;
}

export type Outcome =
  | "done"
  | "hand_back"
  | { retry: number }
  | { release: number }
  | { give_up: { rest: boolean } };

export type Position =
  | { record: [string, string] }
  | { item: [string, string] }
  | { event: [string, string, number, number] }
  | { ledger: [string, number] }
  | { counter: string };

export type Exported =
  | { record: { record: Rec; revision: number } }
  | { item: Item }
  | { event: { stream: Key; event: StreamEvent } }
  | { ledger: Posted }
  | { counter: { name: string; value: number } };

export type Change =
  | { record: { key: Key; revision: number | null } }
  | { work: string };

export interface ListQuery {
  kind: string;
  owner: string | null;
  status: string | null;
  parent: string | null;
  created_after: number | null;
  created_before: number | null;
  after: Cursor | null;
  limit: number;
}

/** A refusal, answered as PROTOCOL.md's error objects. */
export interface Refusal {
  status: number;
  body: { error: string; [field: string]: unknown };
}

/** What an object's method answers: a value or a refusal (never a thrown error across RPC). */
export type Res<T> = { ok: true; value: T } | { ok: false; refusal: Refusal };

export class StoreError extends Error {
  constructor(public refusal: Refusal) {
    super(refusal.body.error);
  }
}

export function refuse(status: number, error: string, fields: Record<string, unknown> = {}): never {
  throw new StoreError({ status, body: { error, ...fields } });
}

export function badRequest(message: string): never {
  refuse(400, "bad_request", { message });
}

export function ok<T>(value: T): Res<T> {
  return { ok: true, value };
}

/** Runs `f`, turning a StoreError into a refusal; other errors propagate. */
export function attempt<T>(f: () => T): Res<T> {
  try {
    return ok(f());
  } catch (e) {
    if (e instanceof StoreError) return { ok: false, refusal: e.refusal };
    throw e;
  }
}

const encoder = new TextEncoder();

const FNV64_OFFSET = 0xcbf29ce484222325n;
const FNV64_PRIME = 0x100000001b3n;
const MASK64 = 0xffffffffffffffffn;

/** FNV-1a (64 bits) of the UTF-8 bytes of `text`: `Partition::of` without the modulo. */
export function fnv1a64(text: string): bigint {
  let hash = FNV64_OFFSET;
  for (const b of encoder.encode(text)) {
    hash ^= BigInt(b);
    hash = (hash * FNV64_PRIME) & MASK64;
  }
  return hash;
}

/** The partition of a piece of text (an account id): `Partition::of`. */
export function partitionOf(text: string): number {
  return Number(fnv1a64(text) % BigInt(PARTITIONS));
}

/** FNV-1a (32 bits) of the UTF-8 bytes of `text` (which shard records a fan-out's nonce). */
export function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (const b of encoder.encode(text)) {
    hash ^= b;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

export function shardOfPartition(partition: number): number {
  return partition % SHARDS;
}

export function shardOfAccount(account: string): number {
  return shardOfPartition(partitionOf(account));
}

/** Compares strings in code point order, which is UTF-8 byte order (SQLite's and Rust's). */
export function cmpStr(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xs = x >= 0xd800 && x <= 0xdfff;
    const ys = y >= 0xd800 && y <= 0xdfff;
    // Surrogates (code points above U+FFFF) sort after every other code unit.
    if (xs !== ys) return xs ? 1 : -1;
    return x < y ? -1 : 1;
  }
  return a.length - b.length;
}

export function cmpNum(a: number, b: number): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The position of an exported piece, as a tuple compared element by element. */
export function positionOf(piece: Exported): (string | number)[] {
  if ("record" in piece) return [piece.record.record.key.kind, piece.record.record.key.id];
  if ("item" in piece) return [piece.item.lane, piece.item.id];
  if ("event" in piece) {
    const { stream, event } = piece.event;
    return [stream.kind, stream.id, event.revision, event.index];
  }
  if ("ledger" in piece) return [piece.ledger.entry.account, piece.ledger.seq];
  return [piece.counter.name];
}

export function positionTuple(p: Position): (string | number)[] {
  if ("record" in p) return p.record;
  if ("item" in p) return p.item;
  if ("event" in p) return p.event;
  if ("ledger" in p) return p.ledger;
  return [p.counter];
}

export function cmpTuple(a: (string | number)[], b: (string | number)[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    const c = typeof x === "number" && typeof y === "number" ? cmpNum(x, y) : cmpStr(String(x), String(y));
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

export const KINDS = [
  "account",
  "batch",
  "deployment",
  "file",
  "idempotency_key",
  "node",
  "prediction",
  "run",
  "token",
  "workflow",
];
export const LANES = ["jobs", "tasks", "webhooks"];
export const EVENT_KINDS = ["output", "logs", "error", "done"];
export const REASONS = ["reserve", "charge", "release", "refund", "grant", "topup", "adjust"];
export const SECTIONS = ["records", "items", "events", "ledger", "counters"];

/** Kinds whose expired records keep a tombstone; the others are deleted. */
export function keepsTombstone(kind: string): boolean {
  return kind === "prediction" || kind === "file";
}

/** Lanes that keep finished items (with their attempts). */
export function keepsFinished(lane: string): boolean {
  return lane === "webhooks";
}

export function nowMicros(): number {
  return Date.now() * 1000;
}

/** A random u64 as decimal text (a lease token). */
export function randomToken(): string {
  const words = new BigUint64Array(1);
  crypto.getRandomValues(words);
  return words[0].toString();
}
