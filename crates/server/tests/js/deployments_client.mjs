// Deployments, hardware, collections and model search through the official Replicate JS client
// (npm `replicate`), against a real Augur server. Run by crates/server/tests/deployments.rs with
// AUGUR_URL and AUGUR_ADMIN_TOKEN set; acts as two new accounts of its own; prints one line per
// check and exits non-zero on the first failure.
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

async function client(name) {
  await admin("POST", "/v1/accounts", { username: name });
  const { token } = await admin("POST", `/v1/accounts/${name}/tokens`, {});
  return new Replicate({ auth: token, baseUrl: `${url}/v1` });
}

function check(name, cond, detail = "") {
  if (!cond) {
    console.error(`FAILED ${name}: ${detail}`);
    process.exit(1);
  }
  console.log(`ok - ${name}`);
}

const replicate = await client("jsdeployer");
const stranger = await client("jsstranger");
const echo = await replicate.models.get("augur", "echo");

const made = await replicate.deployments.create({
  name: "web",
  model: "augur/echo",
  version: echo.latest_version.id,
  hardware: "default",
  min_instances: 0,
  max_instances: 2,
});
check("deployments.create", made.owner === "jsdeployer" && made.current_release.number === 1, JSON.stringify(made));
const got = await replicate.deployments.get("jsdeployer", "web");
check("deployments.get", got.current_release.configuration.max_instances === 2, JSON.stringify(got));
const listed = await replicate.deployments.list();
check("deployments.list", listed.results.length === 1 && listed.previous === null, JSON.stringify(listed));
const updated = await replicate.deployments.update("jsdeployer", "web", { max_instances: 4 });
check(
  "deployments.update makes release 2",
  updated.current_release.number === 2 && updated.current_release.configuration.max_instances === 4,
  JSON.stringify(updated),
);

const prediction = await replicate.deployments.predictions.create("jsdeployer", "web", {
  input: { text: "hi" },
  wait: true,
});
check(
  "deployments.predictions.create with wait",
  prediction.status === "succeeded" && prediction.output.text === "hi" && prediction.deployment === "jsdeployer/web",
  JSON.stringify(prediction),
);

let refused = null;
try {
  await stranger.deployments.get("jsdeployer", "web");
} catch (e) {
  refused = e;
}
check("another account's deployment is a 404", refused?.response?.status === 404, String(refused));

const hardware = await replicate.hardware.list();
check("hardware.list", hardware.length === 1 && hardware[0].sku === "default", JSON.stringify(hardware));
const collections = await replicate.collections.list();
check("collections.list", collections.results[0]?.slug === "all", JSON.stringify(collections));
const all = await replicate.collections.get("all");
check("collections.get", all.models.some((m) => m.name === "echo"), JSON.stringify(all));
const found = await replicate.models.search("echo");
check("models.search (QUERY)", found.results.length === 1 && found.results[0].name === "echo", JSON.stringify(found));

check("deployments.delete", (await replicate.deployments.delete("jsdeployer", "web")) === true);
console.log("all js deployments checks passed");
