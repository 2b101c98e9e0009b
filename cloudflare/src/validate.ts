// Shape checks of request bodies: anything that is not what PROTOCOL.md says is a 400
// `bad_request` naming the first bad field, before any object is called.

import {
  Attempt,
  badRequest,
  Claim,
  Cursor,
  Effect,
  EVENT_KINDS,
  EventData,
  Exported,
  Item,
  ItemLease,
  Key,
  KINDS,
  LANES,
  LedgerEntry,
  ListQuery,
  NewItem,
  Op,
  Outcome,
  Position,
  Posted,
  REASONS,
  Rec,
  SECTIONS,
  StreamEvent,
  Write,
} from "./common";

type Obj = Record<string, unknown>;

export function obj(v: unknown, what: string): Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v)) badRequest(`${what}: expected an object`);
  return v as Obj;
}

export function arr(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) badRequest(`${what}: expected an array`);
  return v;
}

export function str(v: unknown, what: string): string {
  if (typeof v !== "string") badRequest(`${what}: expected a string`);
  return v;
}

export function optStr(v: unknown, what: string): string | null {
  return v === null || v === undefined ? null : str(v, what);
}

export function int(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v)) badRequest(`${what}: expected an integer`);
  return v;
}

export function optInt(v: unknown, what: string): number | null {
  return v === null || v === undefined ? null : int(v, what);
}

export function nat(v: unknown, what: string): number {
  const n = int(v, what);
  if (n < 0) badRequest(`${what}: expected a non-negative integer`);
  return n;
}

/**
 * A count or limit (a Rust `usize`/`u64`, possibly beyond 2^53 as in `usize::MAX`): any
 * non-negative number, clamped to 2^53 - 1.
 */
export function count(v: unknown, what: string): number {
  if (typeof v !== "number" || !(v >= 0) || Math.floor(v) !== v) badRequest(`${what}: expected a non-negative integer`);
  return Math.min(v, Number.MAX_SAFE_INTEGER);
}

export function bool(v: unknown, what: string): boolean {
  if (typeof v !== "boolean") badRequest(`${what}: expected a boolean`);
  return v;
}

function oneOf(v: unknown, names: string[], what: string): string {
  const s = str(v, what);
  if (!names.includes(s)) badRequest(`${what}: unknown name ${JSON.stringify(s)}`);
  return s;
}

export const lane = (v: unknown, what: string) => oneOf(v, LANES, what);

/** A u64 in decimal text (a lease token). */
export function token(v: unknown, what: string): string {
  const s = str(v, what);
  if (!/^[0-9]{1,20}$/.test(s) || BigInt(s) > 0xffffffffffffffffn) badRequest(`${what}: expected a u64 in decimal`);
  return BigInt(s).toString();
}

export function key(v: unknown, what: string): Key {
  const o = obj(v, what);
  const partition = nat(o.partition, `${what}.partition`);
  if (partition > 255) badRequest(`${what}.partition: expected 0..=255`);
  return { kind: oneOf(o.kind, KINDS, `${what}.kind`), id: str(o.id, `${what}.id`), partition };
}

export function record(v: unknown, what: string): Rec {
  const o = obj(v, what);
  return {
    key: key(o.key, `${what}.key`),
    owner: str(o.owner, `${what}.owner`),
    created_at: int(o.created_at, `${what}.created_at`),
    status: optStr(o.status, `${what}.status`),
    parent: optStr(o.parent, `${what}.parent`),
    expires_at: optInt(o.expires_at, `${what}.expires_at`),
    data_removed: bool(o.data_removed, `${what}.data_removed`),
    body: str(o.body, `${what}.body`),
    data: optStr(o.data, `${what}.data`),
  };
}

function claim(v: unknown, what: string): Claim | null {
  if (v === null || v === undefined) return null;
  const o = obj(v, what);
  return {
    worker: str(o.worker, `${what}.worker`),
    token: token(o.token, `${what}.token`),
    expires_at: int(o.expires_at, `${what}.expires_at`),
  };
}

function newItem(v: unknown, what: string): NewItem {
  const o = obj(v, what);
  return {
    lane: lane(o.lane, `${what}.lane`),
    id: str(o.id, `${what}.id`),
    group: key(o.group, `${what}.group`),
    topic: str(o.topic, `${what}.topic`),
    owner: str(o.owner, `${what}.owner`),
    payload: str(o.payload, `${what}.payload`),
    run_at: int(o.run_at, `${what}.run_at`),
    replace: bool(o.replace, `${what}.replace`),
    claimed: claim(o.claimed, `${what}.claimed`),
  };
}

function eventData(v: unknown, what: string): EventData {
  const o = obj(v, what);
  return { kind: oneOf(o.kind, EVENT_KINDS, `${what}.kind`), data: str(o.data, `${what}.data`) };
}

export function ledgerEntry(v: unknown, what: string): LedgerEntry {
  const o = obj(v, what);
  return {
    account: str(o.account, `${what}.account`),
    id: str(o.id, `${what}.id`),
    delta: int(o.delta, `${what}.delta`),
    held: int(o.held, `${what}.held`),
    reason: oneOf(o.reason, REASONS, `${what}.reason`),
    reference: optStr(o.reference, `${what}.reference`),
    memo: optStr(o.memo, `${what}.memo`),
    at: int(o.at, `${what}.at`),
  };
}

function op(v: unknown, what: string): Op {
  const o = obj(v, what);
  if ("insert" in o) return { insert: record(o.insert, `${what}.insert`) };
  if ("update" in o) {
    const u = obj(o.update, `${what}.update`);
    return {
      update: { record: record(u.record, `${what}.update.record`), expected: nat(u.expected, `${what}.update.expected`) },
    };
  }
  if ("delete" in o) return { delete: key(o.delete, `${what}.delete`) };
  badRequest(`${what}: expected insert, update or delete`);
}

function effect(v: unknown, what: string): Effect {
  const o = obj(v, what);
  if ("enqueue" in o) return { enqueue: newItem(o.enqueue, `${what}.enqueue`) };
  if ("complete" in o) {
    const c = obj(o.complete, `${what}.complete`);
    return { complete: { lane: lane(c.lane, `${what}.complete.lane`), id: str(c.id, `${what}.complete.id`) } };
  }
  if ("count" in o) {
    const c = obj(o.count, `${what}.count`);
    return {
      count: {
        name: str(c.name, `${what}.count.name`),
        delta: int(c.delta, `${what}.count.delta`),
        limit: optInt(c.limit, `${what}.count.limit`),
      },
    };
  }
  if ("append_events" in o) {
    const a = obj(o.append_events, `${what}.append_events`);
    return {
      append_events: {
        stream: key(a.stream, `${what}.append_events.stream`),
        events: arr(a.events, `${what}.append_events.events`).map((e, i) =>
          eventData(e, `${what}.append_events.events[${i}]`),
        ),
      },
    };
  }
  if ("post" in o) return { post: ledgerEntry(o.post, `${what}.post`) };
  badRequest(`${what}: expected enqueue, complete, count, append_events or post`);
}

export function write(v: unknown): Write {
  const o = obj(v, "body");
  return {
    account: str(o.account, "account"),
    ops: arr(o.ops, "ops").map((x, i) => op(x, `ops[${i}]`)),
    effects: arr(o.effects, "effects").map((x, i) => effect(x, `effects[${i}]`)),
  };
}

function cursor(v: unknown, what: string): Cursor | null {
  if (v === null || v === undefined) return null;
  const o = obj(v, what);
  return {
    created_at: int(o.created_at, `${what}.created_at`),
    id: str(o.id, `${what}.id`),
    backward: bool(o.backward, `${what}.backward`),
  };
}

export function listQuery(v: unknown): ListQuery {
  const o = obj(v, "body");
  return {
    kind: oneOf(o.kind, KINDS, "kind"),
    owner: optStr(o.owner, "owner"),
    status: optStr(o.status, "status"),
    parent: optStr(o.parent, "parent"),
    created_after: optInt(o.created_after, "created_after"),
    created_before: optInt(o.created_before, "created_before"),
    after: cursor(o.after, "after"),
    limit: Math.max(1, Math.min(count(o.limit, "limit"), 1_000_000)),
  };
}

function attempt(v: unknown, what: string): Attempt {
  const o = obj(v, what);
  return {
    at: int(o.at, `${what}.at`),
    status: optInt(o.status, `${what}.status`),
    error: optStr(o.error, `${what}.error`),
    duration_ms: nat(o.duration_ms, `${what}.duration_ms`),
  };
}

export function optAttempt(v: unknown, what: string): Attempt | null {
  return v === null || v === undefined ? null : attempt(v, what);
}

export function item(v: unknown, what: string): Item {
  const o = obj(v, what);
  return {
    lane: lane(o.lane, `${what}.lane`),
    id: str(o.id, `${what}.id`),
    group: key(o.group, `${what}.group`),
    topic: str(o.topic, `${what}.topic`),
    owner: str(o.owner, `${what}.owner`),
    payload: str(o.payload, `${what}.payload`),
    seq: nat(o.seq, `${what}.seq`),
    status: oneOf(o.status, ["pending", "done", "failed"], `${what}.status`),
    claims: nat(o.claims, `${what}.claims`),
    attempts: arr(o.attempts, `${what}.attempts`).map((a, i) => attempt(a, `${what}.attempts[${i}]`)),
    due_at: optInt(o.due_at, `${what}.due_at`),
    created_at: int(o.created_at, `${what}.created_at`),
  };
}

export function itemLease(v: unknown, what: string): ItemLease {
  const o = obj(v, what);
  return {
    item: item(o.item, `${what}.item`),
    worker: str(o.worker, `${what}.worker`),
    token: token(o.token, `${what}.token`),
    expires_at: int(o.expires_at, `${what}.expires_at`),
  };
}

export function outcome(v: unknown): Outcome {
  if (v === "done") return "done";
  if (v === "hand_back") return "hand_back";
  const o = obj(v, "outcome");
  if ("retry" in o) return { retry: int(o.retry, "outcome.retry") };
  if ("release" in o) return { release: int(o.release, "outcome.release") };
  if ("give_up" in o) return { give_up: { rest: bool(obj(o.give_up, "outcome.give_up").rest, "outcome.give_up.rest") } };
  badRequest("outcome: expected done, hand_back, retry, release or give_up");
}

export function section(v: unknown): string {
  return oneOf(v, SECTIONS, "section");
}

export function position(v: unknown): Position | null {
  if (v === null || v === undefined) return null;
  const o = obj(v, "after");
  const tuple = (x: unknown, len: number, what: string) => {
    const a = arr(x, what);
    if (a.length !== len) badRequest(`${what}: expected ${len} elements`);
    return a;
  };
  if ("record" in o) {
    const [k, id] = tuple(o.record, 2, "after.record");
    return { record: [str(k, "after.record[0]"), str(id, "after.record[1]")] };
  }
  if ("item" in o) {
    const [l, id] = tuple(o.item, 2, "after.item");
    return { item: [str(l, "after.item[0]"), str(id, "after.item[1]")] };
  }
  if ("event" in o) {
    const [k, id, r, i] = tuple(o.event, 4, "after.event");
    return {
      event: [str(k, "after.event[0]"), str(id, "after.event[1]"), nat(r, "after.event[2]"), nat(i, "after.event[3]")],
    };
  }
  if ("ledger" in o) {
    const [a, s] = tuple(o.ledger, 2, "after.ledger");
    return { ledger: [str(a, "after.ledger[0]"), nat(s, "after.ledger[1]")] };
  }
  if ("counter" in o) return { counter: str(o.counter, "after.counter") };
  badRequest("after: expected a position");
}

function streamEvent(v: unknown, what: string): StreamEvent {
  const o = obj(v, what);
  return {
    revision: nat(o.revision, `${what}.revision`),
    index: nat(o.index, `${what}.index`),
    kind: oneOf(o.kind, EVENT_KINDS, `${what}.kind`),
    data: str(o.data, `${what}.data`),
  };
}

function posted(v: unknown, what: string): Posted {
  const o = obj(v, what);
  const after = obj(o.after, `${what}.after`);
  return {
    seq: nat(o.seq, `${what}.seq`),
    entry: ledgerEntry(o.entry, `${what}.entry`),
    after: { balance: int(after.balance, `${what}.after.balance`), reserved: int(after.reserved, `${what}.after.reserved`) },
  };
}

export function exported(v: unknown, what: string): Exported {
  const o = obj(v, what);
  if ("record" in o) {
    const r = obj(o.record, `${what}.record`);
    return { record: { record: record(r.record, `${what}.record.record`), revision: nat(r.revision, `${what}.record.revision`) } };
  }
  if ("item" in o) return { item: item(o.item, `${what}.item`) };
  if ("event" in o) {
    const e = obj(o.event, `${what}.event`);
    return { event: { stream: key(e.stream, `${what}.event.stream`), event: streamEvent(e.event, `${what}.event.event`) } };
  }
  if ("ledger" in o) return { ledger: posted(o.ledger, `${what}.ledger`) };
  if ("counter" in o) {
    const c = obj(o.counter, `${what}.counter`);
    return { counter: { name: str(c.name, `${what}.counter.name`), value: int(c.value, `${what}.counter.value`) } };
  }
  badRequest(`${what}: expected record, item, event, ledger or counter`);
}
