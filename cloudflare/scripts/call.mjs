#!/usr/bin/env node
// Signs and sends one call of the store protocol (PROTOCOL.md) and prints the answer.
//
//   node call.mjs URL METHOD '{json body}'
//
// URL is a store URL: cloudflare+http://:SECRET@127.0.0.1:PORT/?namespace=NS (or
// cloudflare://... for HTTPS; the secret may also be the `secret` query parameter).
// Prints "STATUS BODY"; exits 0 on a 2xx answer, 1 otherwise.
// For tests of the signature checks: AUGUR_CALL_NONCE and AUGUR_CALL_TIMESTAMP fix the nonce
// and timestamp, AUGUR_CALL_BAD_SIGNATURE=1 sends a wrong signature.

import { createHash, createHmac, randomBytes } from "node:crypto";

const [url, method, body = "{}"] = process.argv.slice(2);
if (!url || !method) {
  console.error("usage: node call.mjs URL METHOD '{json}'");
  process.exit(2);
}

const parsed = new URL(url.replace(/^cloudflare\+http:/, "http:").replace(/^cloudflare:/, "https:"));
const secret = decodeURIComponent(parsed.password || parsed.searchParams.get("secret") || "");
const namespace = parsed.searchParams.get("namespace") || "augur";
const basePath = parsed.pathname.replace(/\/+$/, "");
const path = `${basePath}/ns/${namespace}/${method}`;
const timestamp = process.env.AUGUR_CALL_TIMESTAMP || String(Date.now());
const nonce = process.env.AUGUR_CALL_NONCE || randomBytes(16).toString("hex");
const bodyHash = createHash("sha256").update(body, "utf8").digest("hex");
const message = ["augur-store-1", "POST", path, timestamp, nonce, bodyHash].join("\n");
let signature = createHmac("sha256", Buffer.from(secret, "utf8")).update(message, "utf8").digest("hex");
if (process.env.AUGUR_CALL_BAD_SIGNATURE === "1") signature = "0".repeat(64);

const target = `${parsed.protocol}//${parsed.host}${path}`;
const response = await fetch(target, {
  method: "POST",
  headers: {
    "content-type": "application/json",
    "x-augur-timestamp": timestamp,
    "x-augur-nonce": nonce,
    "x-augur-signature": signature,
  },
  body,
});
const text = await response.text();
console.log(`${response.status} ${text}`);
process.exit(response.ok ? 0 : 1);
