// The files API through the official Replicate JS client (npm `replicate`), against a real
// Augur server. Run by crates/server/tests/files.rs with AUGUR_URL and AUGUR_ADMIN_TOKEN set;
// acts as a new account of its own; prints one line per check and exits non-zero on the first
// failure.
import { createHash } from "node:crypto";
import Replicate from "replicate";

const url = process.env.AUGUR_URL;

async function admin(method, path, body) {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${process.env.AUGUR_ADMIN_TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (response.status !== 201) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

await admin("POST", "/v1/accounts", { username: "jsclient" });
const { token } = await admin("POST", "/v1/accounts/jsclient/tokens", {});
const replicate = new Replicate({ auth: token, baseUrl: `${url}/v1` });

function check(name, cond, detail = "") {
  if (!cond) {
    console.error(`FAILED ${name}: ${detail}`);
    process.exit(1);
  }
  console.log(`ok - ${name}`);
}

const bytes = new Uint8Array(4096).map((_, i) => (i * 7) % 251);
const sha = createHash("sha256").update(bytes).digest("hex");

// files.create with a Blob, then list, get and delete.
const file = await replicate.files.create(new Blob([bytes], { type: "application/octet-stream" }), {
  purpose: "test",
});
check("files.create answers Replicate's shape", file.id && file.size === bytes.length, JSON.stringify(file));
check("files.create gives the sha256", file.checksums?.sha256 === sha, JSON.stringify(file.checksums));
check("the metadata is kept", file.metadata?.purpose === "test", JSON.stringify(file.metadata));
const got = await replicate.files.get(file.id);
check("files.get finds it", got.id === file.id, JSON.stringify(got));
const listed = await replicate.files.list();
check("files.list holds it", listed.results.some((f) => f.id === file.id), JSON.stringify(listed));

// run() with a Blob input: the client uploads it (its default strategy), the model sees it.
const output = await replicate.run("augur/echo", { input: { image: new Blob([bytes]), prompt: "hi" } });
check("other inputs pass unchanged", output.prompt === "hi", JSON.stringify(output));
const seen = new Uint8Array(await output.image.blob().then((b) => b.arrayBuffer()));
check(
  "run() with a Blob input returns the bytes the model saw",
  createHash("sha256").update(seen).digest("hex") === sha,
  `${seen.length} bytes`,
);
const after = await replicate.files.list();
check("run() uploaded through POST /v1/files", after.results.length === 2, JSON.stringify(after));

await replicate.files.delete(file.id);
let gone = false;
try {
  await replicate.files.get(file.id);
} catch (e) {
  gone = e.response?.status === 404;
}
check("a deleted file is a 404", gone);
console.log("all js client checks passed");
