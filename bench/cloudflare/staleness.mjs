#!/usr/bin/env node
// bench/cloudflare/staleness.mjs: how stale the Worker's KV-mirrored status route is after a
// write was acknowledged (issue 14: "the staleness bound is documented and measured").
//
//   node staleness.mjs STORE_URL [TRIALS=50]
//   node staleness.mjs STORE_URL put ID   (stores prediction ID as succeeded, with an image
//                                          URL, and waits until the route serves it from KV:
//                                          bench/cloudflare.sh's read target)
//
// STORE_URL is a store URL (cloudflare+http://:SECRET@127.0.0.1:PORT/?namespace=NS), as
// scripts/services/cloudflare.sh exports it. Per trial:
//   1. a signed `write` inserts a prediction in "processing" (owner = its id, so the record
//      and the route's lookup agree on the shard), and the route
//      GET /ns/{ns}/api/predictions/{id} is read until it answers from KV
//      (x-augur-source: kv) with "processing": KV now holds the old status;
//   2. a signed `write` updates it to "succeeded" (expected revision 1); when the Worker has
//      acknowledged it (200), one reader reads the route back to back until it says
//      "succeeded".
// Counted: stale reads (answers after the acknowledgement that still say "processing"),
// trials with at least one, and the time from the acknowledgement to the first fresh answer
// (one read's round trip included). Prints one JSON line.
//
// This is a single local workerd: a KV write is visible here as soon as its put finishes.
// On Cloudflare, other locations may see the old value for up to 60 s (KV's documented
// propagation); this measures what the Worker itself adds (the mirror write after the commit).

import { createHash, createHmac, randomBytes } from "node:crypto";

const [storeUrl, trialsArg = "50", putId] = process.argv.slice(2);
if (!storeUrl || (trialsArg === "put" && !putId)) {
  console.error("usage: node staleness.mjs STORE_URL [TRIALS] | STORE_URL put ID");
  process.exit(2);
}
const TRIALS = trialsArg === "put" ? 0 : Number(trialsArg);

const parsed = new URL(storeUrl.replace(/^cloudflare\+http:/, "http:").replace(/^cloudflare:/, "https:"));
const secret = decodeURIComponent(parsed.password || parsed.searchParams.get("secret") || "");
const namespace = parsed.searchParams.get("namespace") || "augur";
const basePath = parsed.pathname.replace(/\/+$/, "");
const origin = `${parsed.protocol}//${parsed.host}`;

// FNV-1a 64 of the UTF-8 text, modulo 256: the contract's Partition::of.
function partitionOf(text) {
  let hash = 0xcbf29ce484222325n;
  for (const b of Buffer.from(text, "utf8")) {
    hash ^= BigInt(b);
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return Number(hash % 256n);
}

async function call(method, body) {
  const text = JSON.stringify(body);
  const path = `${basePath}/ns/${namespace}/${method}`;
  const timestamp = String(Date.now());
  const nonce = randomBytes(16).toString("hex");
  const digest = createHash("sha256").update(text, "utf8").digest("hex");
  const message = ["augur-store-1", "POST", path, timestamp, nonce, digest].join("\n");
  const signature = createHmac("sha256", Buffer.from(secret, "utf8")).update(message, "utf8").digest("hex");
  const response = await fetch(`${origin}${path}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-augur-timestamp": timestamp,
      "x-augur-nonce": nonce,
      "x-augur-signature": signature,
    },
    body: text,
  });
  const answer = await response.text();
  if (!response.ok) throw new Error(`${method}: ${response.status} ${answer}`);
  return JSON.parse(answer);
}

function record(id, status, createdAt, output = null) {
  return {
    key: { kind: "prediction", id, partition: partitionOf(id) },
    owner: id,
    created_at: createdAt,
    status,
    parent: null,
    expires_at: null,
    data_removed: false,
    body: JSON.stringify({ id, model: "augur/echo", status, created_at: new Date(createdAt / 1000).toISOString() }),
    data: JSON.stringify({ output }),
  };
}

async function route(id) {
  const response = await fetch(`${origin}${basePath}/ns/${namespace}/api/predictions/${id}`);
  const body = await response.json();
  return { status: body.status, source: response.headers.get("x-augur-source") };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? null : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? null : s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
};

if (trialsArg === "put") {
  const createdAt = Date.now() * 1000;
  const image = "https://example.invalid/predictions/1700000000000-read.png";
  await call("write", { account: putId, ops: [{ insert: record(putId, "succeeded", createdAt, image) }], effects: [] });
  for (let i = 0; i < 500; i++) {
    const r = await route(putId);
    if (r.source === "kv" && r.status === "succeeded") process.exit(0);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  console.error(`the route never answered ${putId} from KV`);
  process.exit(1);
}

const freshAfterMs = [];
let staleReads = 0;
let staleTrials = 0;
let reads = 0;
for (let trial = 0; trial < TRIALS; trial++) {
  const id = `stale${randomBytes(10).toString("hex")}`;
  const createdAt = Date.now() * 1000;
  await call("write", { account: id, ops: [{ insert: record(id, "processing", createdAt) }], effects: [] });
  let warm = false;
  for (let i = 0; i < 500 && !warm; i++) {
    const r = await route(id);
    warm = r.source === "kv" && r.status === "processing";
    if (!warm) await new Promise((resolve) => setTimeout(resolve, 5));
  }
  if (!warm) throw new Error(`trial ${trial}: the route never answered "processing" from KV`);

  await call("write", {
    account: id,
    ops: [{ update: { record: record(id, "succeeded", createdAt), expected: 1 } }],
    effects: [],
  });
  const acked = performance.now();
  let stale = 0;
  for (;;) {
    const r = await route(id);
    reads++;
    if (r.status === "succeeded") break;
    if (r.status !== "processing") throw new Error(`trial ${trial}: unexpected status ${r.status}`);
    stale++;
    if (performance.now() - acked > 120_000) throw new Error(`trial ${trial}: still stale after 120 s`);
  }
  freshAfterMs.push(performance.now() - acked);
  staleReads += stale;
  if (stale > 0) staleTrials++;
}

const round = (x) => (x === null ? null : Math.round(x * 100) / 100);
console.log(
  JSON.stringify({
    trials: TRIALS,
    reads_after_ack: reads,
    stale_reads: staleReads,
    trials_with_stale_reads: staleTrials,
    fresh_after_ms_median: round(median(freshAfterMs)),
    fresh_after_ms_p90: round(quantile(freshAfterMs, 0.9)),
    fresh_after_ms_max: round(Math.max(...freshAfterMs)),
  }),
);
