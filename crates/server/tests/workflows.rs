//! Workflows (issue 11) on the real binary, on every backend: the four-node blueprint of the
//! contract (`demo-image` → two `echo` → `echo`) passes Augur file URLs along and keeps the
//! version a run started with; a `for_each` fan-out over 20 prompts joins in item order; a
//! failing node fails the run (cancel the rest, refund what never ran) or, with
//! `on_failure = "continue"`, leaves `null`; validation names the node and field; a cancel
//! refunds what never ran and ends the run's SSE stream; and `kill -9` mid-run (embedded, and
//! one of two nodes on Redis and on PostgreSQL) with 50 runs in flight still runs every node
//! exactly once per item and sends one signed `run.completed` message per run.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::hooks::{Inbox, Received, listen_on};
use common::money::{As, assert_balanced};
use common::{TOKEN, TestServer, eventually};

/// Every model costs 1 credit a prediction; a prediction canceled after it started is
/// refunded (and a failed one always is), so whatever did not succeed costs nothing.
/// `test/fails` always fails; `test/maybe` echoes its input unless the input mentions
/// `fail`.
fn config_file(dir: &Path) -> String {
    let maybe = dir.join("maybe.sh");
    std::fs::write(
        &maybe,
        r#"input=$(cat)
case "$input" in *fail*) echo "error: asked to fail" >&2; exit 3;; esac
printf '%s\n' "$input"
"#,
    )
    .unwrap();
    let config = format!(
        r#"
[accounts]
canceled_after_start = "refund"

[[models]]
name = "augur/echo"
price = {{ per_prediction = 1 }}

[[models]]
name = "augur/demo-image"
price = {{ per_prediction = 1 }}

[[models]]
name = "test/fails"
provider = "command"
command = ["/bin/sh", "-c", "echo 'error: the model broke' >&2; exit 3"]
price = {{ per_prediction = 1 }}

[[models]]
name = "test/maybe"
provider = "command"
command = ["/bin/sh", "{maybe}"]
price = {{ per_prediction = 1 }}
"#,
        maybe = maybe.display()
    );
    let file = dir.join("augur.toml");
    std::fs::write(&file, config).unwrap();
    file.display().to_string()
}

/// One node on `store_url` with the priced configuration, its files and log under `dir`.
fn start(store_url: &str, dir: &Path) -> TestServer {
    let config = config_file(dir);
    let env = [("AUGUR_CONFIG", config.as_str()), ("AUGUR_WORKERS", "4")];
    TestServer::start_on(store_url, &dir.join("node"), &env)
}

/// The contract's four-node blueprint.
fn variants() -> Value {
    json!({
        "name": "acme/variants",
        "description": "one image, two variants, a contact sheet",
        "input_schema": {"type": "object", "required": ["prompt"],
                         "properties": {"prompt": {"type": "string"}}},
        "nodes": {
            "draw":  {"model": "augur/demo-image",
                      "input": {"prompt": "{{ input.prompt }}", "width": 64, "height": 64}},
            "left":  {"model": "augur/echo",
                      "input": {"image": "{{ nodes.draw.output }}", "side": "left"}},
            "right": {"model": "augur/echo",
                      "input": {"image": "{{ nodes.draw.output }}", "side": "right"}},
            "sheet": {"model": "augur/echo",
                      "input": {"a": "{{ nodes.left.output }}", "b": "{{ nodes.right.output }}"}}
        },
        "output": "{{ nodes.sheet.output }}"
    })
}

/// A fan-out of `augur/echo` over `input.prompts`, and a join of its outputs.
fn fan(name: &str) -> Value {
    json!({
        "name": name,
        "input_schema": {"type": "object", "required": ["prompts"],
                         "properties": {"prompts": {"type": "array", "items": {"type": "string"}}}},
        "nodes": {
            "each": {"model": "augur/echo", "for_each": "{{ input.prompts }}",
                     "input": {"prompt": "{{ item }}", "index": "{{ index }}",
                               "label": "#{{ index }}: {{ item }}"}},
            "join": {"model": "augur/echo", "input": {"all": "{{ nodes.each.output }}"}}
        },
        "output": "{{ nodes.join.output.all }}"
    })
}

/// A webhook receiver on a free loopback port; returns its URL.
async fn receiver(inbox: &Inbox) -> (String, tokio::task::JoinHandle<()>) {
    let addr = common::hooks::free_port();
    let task = listen_on(addr, inbox.clone()).await;
    (format!("http://{addr}/hook"), task)
}

/// `POST /v1/workflows`.
async fn register(api: &As, blueprint: &Value) -> (u16, Value) {
    api.call("POST", "/v1/workflows", Some(blueprint.clone()))
        .await
}

/// Registers `blueprint`, which must be new; returns the workflow.
async fn register_new(api: &As, blueprint: &Value) -> Value {
    let (status, workflow) = register(api, blueprint).await;
    assert_eq!(status, 201, "{workflow}");
    assert_eq!(workflow["name"], blueprint["name"], "{workflow}");
    assert_eq!(workflow["version"], 1, "{workflow}");
    workflow
}

/// `POST /v1/workflows/{name}/runs` with `body`.
async fn start_run(api: &As, name: &str, body: Value) -> (u16, Value) {
    api.call("POST", &format!("/v1/workflows/{name}/runs"), Some(body))
        .await
}

/// Starts a run that must be accepted; returns its id.
async fn run_id(api: &As, name: &str, body: Value) -> String {
    let (status, run) = start_run(api, name, body).await;
    assert_eq!(status, 201, "{run}");
    run["id"].as_str().unwrap().to_owned()
}

fn is_terminal(status: &Value) -> bool {
    matches!(status.as_str(), Some("succeeded" | "failed" | "canceled"))
}

/// Polls the run until it is terminal; returns it.
async fn settled_run(api: &As, id: &str, deadline: Duration) -> Value {
    let until = Instant::now() + deadline;
    loop {
        let (status, run) = api.call("GET", &format!("/v1/runs/{id}"), None).await;
        assert_eq!(status, 200, "{run}");
        if is_terminal(&run["status"]) {
            return run;
        }
        assert!(Instant::now() < until, "run {id} did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every prediction of `api`'s account, through the paged list.
async fn predictions(api: &As) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = "/v1/predictions?limit=1000".to_owned();
    loop {
        let (status, page) = api.call("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["results"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => path = next.strip_prefix(&api.base).unwrap().to_owned(),
            None => return out,
        }
    }
}

/// Every run of `api`'s account, through the paged list.
async fn runs(api: &As) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = "/v1/runs".to_owned();
    loop {
        let (status, page) = api.call("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["results"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => path = next.strip_prefix(&api.base).unwrap().to_owned(),
            None => return out,
        }
    }
}

/// A node's prediction ids.
fn prediction_ids(run: &Value, node: &str) -> Vec<String> {
    run["nodes"][node]["prediction_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no prediction_ids for {node}: {run}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

/// `GET /v1/predictions/{id}` of a node prediction, which must say its run and node.
async fn node_prediction(api: &As, run: &str, node: &str, id: &str) -> Value {
    let (status, prediction) = api
        .call("GET", &format!("/v1/predictions/{id}"), None)
        .await;
    assert_eq!(status, 200, "{prediction}");
    assert_eq!(prediction["run"], run, "{prediction}");
    assert_eq!(prediction["node"], node, "{prediction}");
    prediction
}

/// The deliveries of `run`'s completion message, and how many distinct message ids they
/// carry.
fn completions(inbox: &Inbox, run: &str) -> (Vec<Received>, usize) {
    let got: Vec<_> = inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|r| {
            serde_json::from_str::<Value>(&r.body).is_ok_and(|b| b["id"] == run)
                && r.headers["webhook-id"].ends_with("_completed")
        })
        .cloned()
        .collect();
    let ids: HashSet<_> = got
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    (got, ids.len())
}

/// Waits for `run`'s completion message, then a little longer for a second one; checks that
/// every delivery carries `msg_<run>_completed` and the run's terminal JSON; returns them.
async fn one_completion(inbox: &Inbox, run: &str) -> Vec<Received> {
    eventually("the run.completed webhook", Duration::from_secs(30), || {
        let (inbox, run) = (inbox.clone(), run.to_owned());
        async move { !completions(&inbox, &run).0.is_empty() }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (received, distinct) = completions(inbox, run);
    assert_eq!(distinct, 1, "one completion message: {received:?}");
    for r in &received {
        assert_eq!(r.headers["webhook-id"], format!("msg_{run}_completed"));
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert!(is_terminal(&body["status"]), "{body}");
    }
    received
}

/// Verifies deliveries with the official verifiers and the secret `api`'s account signs
/// with.
async fn verify(api: &As, dir: &Path, received: &[Received]) {
    let Some(python) = common::python() else {
        return;
    };
    let (status, secret) = api.call("GET", "/v1/webhooks/default/secret", None).await;
    assert_eq!(status, 200, "{secret}");
    common::hooks::verify(&python, dir, received, secret["key"].as_str().unwrap());
}

/// Reads an SSE stream (`event`, JSON `data`, `Null` when the data is not JSON) until it
/// ends.
async fn read_stream(api: As, path: String) -> Vec<(String, Value)> {
    use futures::StreamExt;
    let response = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let (mut buffer, mut events, mut kind) = (String::new(), Vec::new(), String::new());
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let line = line.trim_end();
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_owned();
            } else if let Some(data) = line.strip_prefix("data:") {
                let data = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                events.push((kind.clone(), data));
            }
        }
    }
    events
}

/// The ledger's prediction entries (reserve, charge, release, refund) per reference, newest
/// first.
async fn reasons_by_reference(admin: &As, user: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for entry in admin.ledger(user).await {
        let reason = entry["reason"].as_str().unwrap_or_default();
        if let Some(reference) = entry["reference"].as_str()
            && matches!(reason, "reserve" | "charge" | "release" | "refund")
        {
            out.entry(reference.to_owned())
                .or_default()
                .push(entry["reason"].as_str().unwrap().to_owned());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// 1. The four-node blueprint.

/// Registers the blueprint (201, version 1; the same body again keeps the version, a changed
/// one bumps it), runs it: it succeeds with the `draw` node's file URL in `sheet`'s output,
/// the URL serves the PNG, node predictions name their run and node, one signed
/// `run.completed` message; a run keeps the version it started with.
async fn four_nodes(store_url: &str, dir: &Path) {
    let server = start(store_url, dir);
    let admin = As::new(&server.url, TOKEN);
    let acme = As::new(&server.url, &admin.account("acme", 100).await);
    let inbox: Inbox = Default::default();
    let (hook, receiver) = receiver(&inbox).await;

    let blueprint = variants();
    let created = register_new(&acme, &blueprint).await;
    assert_eq!(created["owner"], "acme", "{created}");
    assert_eq!(created["input_schema"], blueprint["input_schema"]);
    assert_eq!(created["output"], blueprint["output"]);
    assert_eq!(created["description"], blueprint["description"]);
    for node in ["draw", "left", "right", "sheet"] {
        assert_eq!(
            created["nodes"][node]["model"], blueprint["nodes"][node]["model"],
            "{created}"
        );
    }
    assert!(created["created_at"].is_string(), "{created}");
    assert!(created["updated_at"].is_string(), "{created}");
    let (status, again) = register(&acme, &blueprint).await;
    assert_eq!(status, 200, "the same body again: {again}");
    assert_eq!(
        again["version"], 1,
        "the same body keeps the version: {again}"
    );
    let (status, got) = acme.call("GET", "/v1/workflows/acme/variants", None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["version"], 1, "{got}");
    let (status, listed) = acme.call("GET", "/v1/workflows", None).await;
    assert_eq!(status, 200, "{listed}");
    assert!(
        listed["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "acme/variants"),
        "{listed}"
    );

    // Run 1 on version 1.
    let (status, created) = start_run(
        &acme,
        "acme/variants",
        json!({"input": {"prompt": "a red fox"}, "webhook": hook}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let first = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["workflow"], "acme/variants", "{created}");
    assert_eq!(created["version"], 1, "{created}");
    assert_eq!(
        created["input"],
        json!({"prompt": "a red fox"}),
        "{created}"
    );
    assert!(
        matches!(created["status"].as_str(), Some("starting" | "processing")),
        "{created}"
    );
    assert_eq!(created["output"], Value::Null, "{created}");
    assert!(
        created["urls"]["get"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/runs/{first}")),
        "{created}"
    );
    assert!(
        created["urls"]["cancel"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/runs/{first}/cancel")),
        "{created}"
    );
    assert!(
        created["urls"]["stream"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/runs/{first}/stream")),
        "{created}"
    );
    assert!(
        matches!(
            created["nodes"]["draw"]["status"].as_str(),
            Some("starting" | "processing")
        ),
        "the first stage starts with the run: {created}"
    );
    assert_eq!(prediction_ids(&created, "draw").len(), 1, "{created}");
    for node in ["left", "right", "sheet"] {
        assert_eq!(created["nodes"][node]["status"], "waiting", "{created}");
        assert_eq!(created["nodes"][node]["prediction_ids"], json!([]));
    }

    // While run 1 draws (a second), the blueprint changes: version 2.
    let mut changed = blueprint.clone();
    changed["nodes"]["sheet"]["input"]["note"] = json!("v2");
    let (status, updated) = register(&acme, &changed).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        updated["version"], 2,
        "a changed body bumps the version: {updated}"
    );
    let (status, again) = register(&acme, &changed).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["version"], 2, "{again}");
    // Run 2 asks for its node predictions' `completed` messages too.
    let second = run_id(
        &acme,
        "acme/variants",
        json!({"input": {"prompt": "a blue fox"}, "webhook": hook,
               "webhook_events_filter": ["completed"]}),
    )
    .await;

    let run = settled_run(&acme, &first, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["version"], 1, "a run keeps its version: {run}");
    assert!(run["started_at"].is_string(), "{run}");
    assert!(run["completed_at"].is_string(), "{run}");
    assert_eq!(run["error"], Value::Null, "{run}");
    let output = &run["output"];
    assert_eq!(
        output.get("note"),
        None,
        "run 1 ran version 1's sheet: {run}"
    );
    assert_eq!(output, &run["nodes"]["sheet"]["output"], "{run}");
    let image = output["a"]["image"]
        .as_str()
        .unwrap_or_else(|| panic!("{run}"));
    assert!(
        image.starts_with(&format!("{}/files/", server.url)),
        "an Augur file URL: {run}"
    );
    assert_eq!(output["a"]["side"], "left", "{run}");
    assert_eq!(
        output["b"],
        json!({"image": image, "side": "right"}),
        "{run}"
    );
    assert_eq!(run["nodes"]["draw"]["output"], image, "{run}");
    let png = reqwest::get(image).await.unwrap();
    assert_eq!(png.status(), 200, "the file URL serves the image");
    assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG"), "a PNG");
    for node in ["draw", "left", "right", "sheet"] {
        assert_eq!(run["nodes"][node]["status"], "succeeded", "{run}");
        let ids = prediction_ids(&run, node);
        assert_eq!(ids.len(), 1, "{run}");
        let prediction = node_prediction(&acme, &first, node, &ids[0]).await;
        assert_eq!(prediction["status"], "succeeded", "{prediction}");
        assert_eq!(
            prediction["output"], run["nodes"][node]["output"],
            "{prediction}"
        );
        if node == "left" {
            assert_eq!(prediction["input"]["image"], image, "{prediction}");
            assert_eq!(prediction["model"], "augur/echo", "{prediction}");
        }
    }

    let run2 = settled_run(&acme, &second, Duration::from_secs(60)).await;
    assert_eq!(run2["status"], "succeeded", "{run2}");
    assert_eq!(run2["version"], 2, "{run2}");
    assert_eq!(run2["output"]["note"], "v2", "{run2}");
    assert_ne!(run2["output"]["a"]["image"], output["a"]["image"], "{run2}");

    // Newest first.
    let listed = runs(&acme).await;
    let ids: Vec<_> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "{listed:?}");

    // The operator may reconcile a finished run: nothing changes, nothing new runs.
    let (status, _) = acme
        .call("POST", &format!("/v1/runs/{first}/reconcile"), None)
        .await;
    assert!(
        matches!(status, 401 | 403 | 404),
        "reconcile is for the admin token only: {status}"
    );
    let before = predictions(&acme).await.len();
    assert_eq!(before, 8, "four predictions per run");
    let (status, reconciled) = admin
        .call("POST", &format!("/v1/runs/{first}/reconcile"), None)
        .await;
    assert_eq!(status, 200, "{reconciled}");
    assert_eq!(reconciled["id"], first.as_str(), "{reconciled}");
    assert_eq!(reconciled["status"], "succeeded", "{reconciled}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(predictions(&acme).await.len(), before);

    // One signed completion message per run; node messages only for run 2, whose filter
    // asked for them.
    let received = one_completion(&inbox, &first).await;
    let sent: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(sent["status"], "succeeded", "{sent}");
    assert_eq!(sent["output"], run["output"], "{sent}");
    let mut signed = received[..1].to_vec();
    let received = one_completion(&inbox, &second).await;
    signed.push(received[0].clone());
    let node_messages = |run: &str| -> Vec<Received> {
        inbox
            .lock()
            .unwrap()
            .iter()
            .filter(|r| serde_json::from_str::<Value>(&r.body).is_ok_and(|b| b["run"] == run))
            .cloned()
            .collect()
    };
    let expected: HashSet<String> = ["draw", "left", "right", "sheet"]
        .iter()
        .flat_map(|node| prediction_ids(&run2, node))
        .collect();
    eventually("run 2's node messages", Duration::from_secs(30), || {
        let got: HashSet<String> = node_messages(&second)
            .iter()
            .map(|r| {
                serde_json::from_str::<Value>(&r.body).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let done = got == expected;
        async move { done }
    })
    .await;
    for r in node_messages(&second) {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["status"], "succeeded", "only completed: {body}");
        signed.push(r);
    }
    assert!(
        node_messages(&first).is_empty(),
        "no node messages without a filter"
    );
    verify(&acme, dir, &signed).await;

    // Each node charged as its prediction.
    assert_eq!(assert_balanced(&admin, "acme").await, 110 - 8);
    receiver.abort();
}

// ---------------------------------------------------------------------------------------
// The operator's workflows.

/// A TOML blueprint in `<config dir>/workflows/` is stored at start as the operator's: every
/// account lists, reads and runs it, and pays for its own runs.
async fn operator_workflows(store_url: &str, dir: &Path) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(
        dir.join("workflows/shout.toml"),
        r#"name = "ops/shout"
description = "says it louder"
output = "{{ nodes.say.output.text }}"

[input_schema]
type = "object"
required = ["text"]

[nodes.say]
model = "augur/echo"
input = { text = "{{ input.text }}!" }
"#,
    )
    .unwrap();
    let server = start(store_url, dir);
    let admin = As::new(&server.url, TOKEN);
    for user in ["acme", "bob"] {
        let api = As::new(&server.url, &admin.account(user, 0).await);
        let (status, listed) = api.call("GET", "/v1/workflows", None).await;
        assert_eq!(status, 200, "{listed}");
        assert!(
            listed["results"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["name"] == "ops/shout"),
            "{user} lists the operator's workflow: {listed}"
        );
        let (status, got) = api.call("GET", "/v1/workflows/ops/shout", None).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["version"], 1, "{got}");
        assert_eq!(got["description"], "says it louder", "{got}");
        let id = run_id(&api, "ops/shout", json!({"input": {"text": user}})).await;
        let run = settled_run(&api, &id, Duration::from_secs(30)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["output"], format!("{user}!"), "{run}");
        assert_eq!(assert_balanced(&admin, user).await, 10 - 1, "{user} paid");
    }
}

// ---------------------------------------------------------------------------------------
// 2. Fan-out and fan-in.

/// `for_each` over 20 prompts, then a join: the join gets the 20 outputs in item order, with
/// `{{ item }}` and `{{ index }}` (a whole template keeps the number, inside text it is
/// text); an empty list gives `[]`.
async fn fan_out_fan_in(store_url: &str, dir: &Path) {
    let server = start(store_url, dir);
    let admin = As::new(&server.url, TOKEN);
    let acme = As::new(&server.url, &admin.account("acme", 100).await);
    register_new(&acme, &fan("acme/fan")).await;
    let prompts: Vec<String> = (0..20).map(|i| format!("prompt {i:02} of 20")).collect();
    let id = run_id(&acme, "acme/fan", json!({"input": {"prompts": prompts}})).await;
    let run = settled_run(&acme, &id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let expected: Vec<Value> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"prompt": p, "index": i, "label": format!("#{i}: {p}")}))
        .collect();
    assert_eq!(run["output"], json!(expected), "in item order: {run}");
    assert_eq!(run["nodes"]["each"]["output"], json!(expected), "{run}");
    assert_eq!(run["nodes"]["join"]["output"], json!({"all": expected}));
    let each = prediction_ids(&run, "each");
    assert_eq!(each.len(), 20, "{run}");
    assert_eq!(each.iter().collect::<HashSet<_>>().len(), 20, "{run}");
    let mut by_prompt = BTreeMap::new();
    for p in &each {
        let prediction = node_prediction(&acme, &id, "each", p).await;
        assert_eq!(prediction["status"], "succeeded", "{prediction}");
        by_prompt.insert(
            prediction["input"]["prompt"].as_str().unwrap().to_owned(),
            prediction["output"].clone(),
        );
    }
    assert_eq!(by_prompt.len(), 20, "one prediction per item");
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(by_prompt[p], expected[i], "item {i}");
    }
    let join = prediction_ids(&run, "join");
    assert_eq!(join.len(), 1, "the join ran once: {run}");
    let prediction = node_prediction(&acme, &id, "join", &join[0]).await;
    assert_eq!(prediction["input"]["all"], json!(expected), "{prediction}");

    // An empty list: the fan-out's output is [], and the join still runs.
    let empty = run_id(&acme, "acme/fan", json!({"input": {"prompts": []}})).await;
    let run = settled_run(&acme, &empty, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["nodes"]["each"]["output"], json!([]), "{run}");
    assert_eq!(run["nodes"]["each"]["prediction_ids"], json!([]), "{run}");
    assert_eq!(run["output"], json!([]), "{run}");

    assert_eq!(predictions(&acme).await.len(), 20 + 1 + 1);
    assert_eq!(assert_balanced(&admin, "acme").await, 110 - 22);
}

// ---------------------------------------------------------------------------------------
// 4. Failure policy.

/// A failing node with the default `on_failure = "fail"`: the run fails, the node running
/// beside it is canceled, the nodes after them are skipped, and nothing is charged (failed and
/// canceled predictions are refunded, skipped ones never reserved).
async fn fail_the_run(store_url: &str, dir: &Path) {
    let server = start(store_url, dir);
    let admin = As::new(&server.url, TOKEN);
    let acme = As::new(&server.url, &admin.account("acme", 100).await);
    let inbox: Inbox = Default::default();
    let (hook, receiver) = receiver(&inbox).await;

    let breaks = json!({
        "name": "acme/breaks",
        "nodes": {
            "slow": {"model": "augur/demo-image",
                     "input": {"prompt": "slow", "width": 8, "height": 8, "steps": 50, "step_ms": 100}},
            "boom": {"model": "test/fails", "input": {"x": 1}},
            "after_slow": {"model": "augur/echo", "input": {"image": "{{ nodes.slow.output }}"}},
            "after_boom": {"model": "augur/echo", "input": {"v": "{{ nodes.boom.output }}"}}
        },
        "output": "{{ nodes.after_slow.output }}"
    });
    register_new(&acme, &breaks).await;
    let id = run_id(&acme, "acme/breaks", json!({"input": {}, "webhook": hook})).await;
    let run = settled_run(&acme, &id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].is_string(), "the run says why: {run}");
    assert_eq!(run["output"], Value::Null, "{run}");
    assert_eq!(run["nodes"]["boom"]["status"], "failed", "{run}");
    for node in ["after_slow", "after_boom"] {
        assert_eq!(run["nodes"][node]["status"], "skipped", "{run}");
        assert_eq!(run["nodes"][node]["prediction_ids"], json!([]), "{run}");
    }
    let boom = prediction_ids(&run, "boom");
    assert_eq!(boom.len(), 1, "no retries by default: {run}");
    let prediction = node_prediction(&acme, &id, "boom", &boom[0]).await;
    assert_eq!(prediction["status"], "failed", "{prediction}");
    let slow = prediction_ids(&run, "slow");
    assert_eq!(slow.len(), 1, "{run}");
    let prediction = node_prediction(&acme, &id, "slow", &slow[0]).await;
    assert_eq!(prediction["status"], "canceled", "{prediction}");
    let received = one_completion(&inbox, &id).await;
    let sent: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(sent["status"], "failed", "{sent}");
    verify(&acme, dir, &received[..1]).await;
    // Nothing succeeded, so nothing is charged: both predictions refunded, the skipped nodes
    // never reserved.
    assert_eq!(assert_balanced(&admin, "acme").await, 110, "all refunded");
    let ledger = reasons_by_reference(&admin, "acme").await;
    for p in [&boom[0], &slow[0]] {
        assert_eq!(ledger[p.as_str()], ["refund", "reserve"], "{p}: {ledger:?}");
    }
    assert_eq!(ledger.len(), 2, "only the two that started: {ledger:?}");
    // Checked last, so that a wrong status here does not hide the checks above.
    assert_eq!(
        run["nodes"]["slow"]["status"], "canceled",
        "the node running beside the failed one is canceled: {run}"
    );
    receiver.abort();
}

/// With `on_failure = "continue"`, a node that fails after its retries and one failing item
/// of a fan-out leave `null` in their place, the join gets the `null`s, and the run succeeds;
/// only what succeeded is charged.
async fn continue_with_null(store_url: &str, dir: &Path) {
    let server = start(store_url, dir);
    let admin = As::new(&server.url, TOKEN);
    let acme = As::new(&server.url, &admin.account("acme", 100).await);
    let goes_on = json!({
        "name": "acme/goes-on",
        "input_schema": {"type": "object", "properties": {"items": {"type": "array"}}},
        "nodes": {
            "each": {"model": "test/maybe", "for_each": "{{ input.items }}",
                     "input": {"item": "{{ item }}"}, "on_failure": "continue"},
            "boom": {"model": "test/fails", "input": {"x": 1}, "retries": 2,
                     "on_failure": "continue"},
            "join": {"model": "augur/echo",
                     "input": {"each": "{{ nodes.each.output }}", "boom": "{{ nodes.boom.output }}"}}
        },
        "output": "{{ nodes.join.output }}"
    });
    register_new(&acme, &goes_on).await;
    let id = run_id(
        &acme,
        "acme/goes-on",
        json!({"input": {"items": ["a", "please fail", "c"]}}),
    )
    .await;
    let run = settled_run(&acme, &id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let each = json!([{"item": "a"}, null, {"item": "c"}]);
    assert_eq!(
        run["output"],
        json!({"each": each, "boom": null}),
        "null for what failed: {run}"
    );
    assert_eq!(run["nodes"]["boom"]["status"], "failed", "{run}");
    assert_eq!(run["nodes"]["boom"]["output"], Value::Null, "{run}");
    assert_eq!(run["nodes"]["each"]["output"], each, "{run}");
    assert_eq!(run["nodes"]["join"]["status"], "succeeded", "{run}");
    let boom = prediction_ids(&run, "boom");
    assert_eq!(boom.len(), 3, "one attempt and two retries: {run}");
    for p in &boom {
        let prediction = node_prediction(&acme, &id, "boom", p).await;
        assert_eq!(prediction["status"], "failed", "{prediction}");
    }
    let join = prediction_ids(&run, "join");
    assert_eq!(join.len(), 1, "{run}");
    let prediction = node_prediction(&acme, &id, "join", &join[0]).await;
    assert_eq!(
        prediction["input"],
        json!({"each": each, "boom": null}),
        "the join got null: {prediction}"
    );
    // Charged: two items and the join; refunded: one item and three attempts.
    assert_eq!(assert_balanced(&admin, "acme").await, 110 - 3);
}

// ---------------------------------------------------------------------------------------
// Templates, `after` and `max_run_time`.

/// References into outputs (`nodes.X.output.key`, `.N`), the whole input, interpolation into
/// text, `after` ordering without data, and a node stopped by its `max_run_time` (with
/// `continue`, so the run goes on with `null`).
async fn templates_after_and_max_run_time(store_url: &str, dir: &Path) {
    let server = start(store_url, dir);
    let admin = As::new(&server.url, TOKEN);
    let acme = As::new(&server.url, &admin.account("acme", 100).await);
    let blueprint = json!({
        "name": "acme/templates",
        "input_schema": {"type": "object", "required": ["who"],
                         "properties": {"who": {"type": "string"}}},
        "nodes": {
            "first": {"model": "augur/echo",
                      "input": {"n": 7, "tags": ["x", "y"], "who": "{{ input.who }}"}},
            "second": {"model": "augur/echo",
                       "input": {"n": "{{ nodes.first.output.n }}",
                                 "tag": "{{ nodes.first.output.tags.1 }}",
                                 "text": "hello {{ input.who }}, n={{ nodes.first.output.n }}",
                                 "all": "{{ input }}"}},
            "ordered": {"model": "augur/echo", "input": {"x": 1}, "after": ["second"]},
            "timed": {"model": "augur/demo-image", "max_run_time": 1, "on_failure": "continue",
                      "input": {"prompt": "too slow", "width": 8, "height": 8,
                                "steps": 100, "step_ms": 100}},
            "last": {"model": "augur/echo", "input": {"timed": "{{ nodes.timed.output }}"}}
        },
        "output": {"second": "{{ nodes.second.output }}", "last": "{{ nodes.last.output }}"}
    });
    register_new(&acme, &blueprint).await;
    let started = Instant::now();
    let id = run_id(&acme, "acme/templates", json!({"input": {"who": "ann"}})).await;
    let run = settled_run(&acme, &id, Duration::from_secs(30)).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "max_run_time stopped the 10 s node: {:?}",
        started.elapsed()
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    let second = json!({"n": 7, "tag": "y", "text": "hello ann, n=7", "all": {"who": "ann"}});
    assert_eq!(
        run["output"],
        json!({"second": second, "last": {"timed": null}}),
        "{run}"
    );
    assert_eq!(run["nodes"]["ordered"]["status"], "succeeded", "{run}");
    assert_eq!(run["nodes"]["timed"]["output"], Value::Null, "{run}");
    // `ordered` was created only once `second` had finished.
    let second_id = &prediction_ids(&run, "second")[0];
    let second_p = node_prediction(&acme, &id, "second", second_id).await;
    let ordered_id = &prediction_ids(&run, "ordered")[0];
    let ordered = node_prediction(&acme, &id, "ordered", ordered_id).await;
    let time = |v: &Value| {
        humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap()
    };
    assert!(
        time(&ordered["created_at"]) >= time(&second_p["completed_at"]),
        "after orders: {second_p} then {ordered}"
    );
    let timed = prediction_ids(&run, "timed");
    assert_eq!(timed.len(), 1, "{run}");
    let timed = node_prediction(&acme, &id, "timed", &timed[0]).await;
    assert_eq!(
        timed["status"], "canceled",
        "max_run_time cancels the node's prediction: {timed}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Validation and access.

/// `blueprint` must be refused with 422 naming `field` (exactly, or as a prefix when it ends
/// with `*`).
async fn refused(api: &As, what: &str, blueprint: Value, field: &str) {
    let (status, error) = register(api, &blueprint).await;
    assert_eq!(status, 422, "{what}: {error}");
    assert!(error["detail"].is_string(), "{what}: {error}");
    let got = error["field"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {error}"));
    match field.strip_suffix('*') {
        Some(prefix) => assert!(got.starts_with(prefix), "{what}: {error}"),
        None => assert_eq!(got, field, "{what}: {error}"),
    }
}

/// Bad blueprints get 422 naming the node and field and register nothing; bad run input gets
/// 422 naming `input.<field>`; another account sees neither workflow nor run (404); a run the
/// account cannot afford gets 402 and creates nothing; an `Idempotency-Key` replays a run.
async fn validation(store_url: &str, dir: &Path) {
    let server = start(store_url, dir);
    let admin = As::new(&server.url, TOKEN);
    let acme = As::new(&server.url, &admin.account("acme", 100).await);

    let with = |path: &[&str], value: Value| {
        let mut b = variants();
        let mut at = &mut b;
        for key in &path[..path.len() - 1] {
            at = &mut at[*key];
        }
        at[path[path.len() - 1]] = value;
        b
    };
    let cycle = json!({
        "name": "acme/variants",
        "nodes": {
            "a": {"model": "augur/echo", "input": {"x": "{{ nodes.b.output }}"}},
            "b": {"model": "augur/echo", "input": {"x": "{{ nodes.a.output }}"}}
        },
        "output": "{{ nodes.b.output }}"
    });
    let (status, error) = register(&acme, &cycle).await;
    assert_eq!(status, 422, "a cycle: {error}");
    let field = error["field"].as_str().unwrap_or_else(|| panic!("{error}"));
    assert!(
        field.starts_with("nodes.a") || field.starts_with("nodes.b"),
        "a cycle names a node on it: {error}"
    );
    let after_cycle = with(&["nodes", "draw", "after"], json!(["sheet"]));
    refused(&acme, "a cycle through after", after_cycle, "nodes.*").await;
    refused(
        &acme,
        "an unknown node",
        with(
            &["nodes", "left", "input", "image"],
            json!("{{ nodes.nope.output }}"),
        ),
        "nodes.left.input.image",
    )
    .await;
    refused(
        &acme,
        "an unknown node in after",
        with(&["nodes", "left", "after"], json!(["ghost"])),
        "nodes.left*",
    )
    .await;
    refused(
        &acme,
        "an unknown model",
        with(&["nodes", "draw", "model"], json!("acme/nope")),
        "nodes.draw*",
    )
    .await;
    refused(
        &acme,
        "an unclosed template",
        with(
            &["nodes", "draw", "input", "prompt"],
            json!("{{ input.prompt "),
        ),
        "nodes.draw.input.prompt",
    )
    .await;
    refused(
        &acme,
        "a template of nothing known",
        with(
            &["nodes", "draw", "input", "prompt"],
            json!("{{ bogus.prompt }}"),
        ),
        "nodes.draw.input.prompt",
    )
    .await;
    refused(
        &acme,
        "item outside a fan-out",
        with(&["nodes", "left", "input", "side"], json!("{{ item }}")),
        "nodes.left.input.side",
    )
    .await;
    refused(
        &acme,
        "an input against the model's schema",
        with(&["nodes", "draw", "input", "width"], json!("wide")),
        "nodes.draw*",
    )
    .await;
    refused(
        &acme,
        "too many retries",
        with(&["nodes", "left", "retries"], json!(9)),
        "nodes.left*",
    )
    .await;
    let (status, listed) = acme.call("GET", "/v1/workflows", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["results"], json!([]), "nothing registered: {listed}");
    let (status, missing) = acme.call("GET", "/v1/workflows/acme/variants", None).await;
    assert_eq!(status, 404, "{missing}");

    // Run input against input_schema.
    register_new(&acme, &variants()).await;
    for (input, what) in [(json!({}), "missing"), (json!({"prompt": 5}), "a number")] {
        let (status, error) = start_run(&acme, "acme/variants", json!({"input": input})).await;
        assert_eq!(status, 422, "{what} prompt: {error}");
        assert_eq!(error["field"], "input.prompt", "{what} prompt: {error}");
    }
    assert!(runs(&acme).await.is_empty(), "no run was created");
    assert!(
        predictions(&acme).await.is_empty(),
        "no prediction was created"
    );

    // Idempotency-Key: the same run again.
    let post = |key: &'static str| {
        acme.http
            .post(format!("{}/v1/workflows/acme/variants/runs", acme.base))
            .bearer_auth(&acme.token)
            .header("Idempotency-Key", key)
            .json(&json!({"input": {"prompt": "once"}}))
            .send()
    };
    let response = post("run-once").await.unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let response = post("run-once").await.unwrap();
    assert_eq!(response.status(), 200, "a replay");
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let replayed: Value = response.json().await.unwrap();
    assert_eq!(replayed["id"], id.as_str(), "{replayed}");
    assert_eq!(runs(&acme).await.len(), 1, "one run");

    // Another account sees neither.
    let other = As::new(&server.url, &admin.account("other", 100).await);
    let (status, error) = other.call("GET", "/v1/workflows/acme/variants", None).await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(error["code"], "workflow_not_found", "{error}");
    let (status, error) =
        start_run(&other, "acme/variants", json!({"input": {"prompt": "x"}})).await;
    assert_eq!(status, 404, "{error}");
    let (status, error) = other.call("GET", &format!("/v1/runs/{id}"), None).await;
    assert_eq!(status, 404, "{error}");
    let (status, error) = other
        .call("POST", &format!("/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 404, "{error}");
    let (status, listed) = other.call("GET", "/v1/workflows", None).await;
    assert_eq!(status, 200, "{listed}");
    assert!(
        !listed["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "acme/variants"),
        "{listed}"
    );
    assert!(runs(&other).await.is_empty());
    let run = settled_run(&acme, &id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    // 20 items at 1 credit each, with the signup grant's 10: 402, nothing created.
    let poor = As::new(&server.url, &admin.account("poor", 0).await);
    register_new(&poor, &fan("poor/fan")).await;
    let prompts: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    let (status, error) =
        start_run(&poor, "poor/fan", json!({"input": {"prompts": prompts}})).await;
    assert_eq!(status, 402, "{error}");
    assert!(runs(&poor).await.is_empty(), "no run");
    assert!(predictions(&poor).await.is_empty(), "no prediction");
    assert_eq!(assert_balanced(&admin, "poor").await, 10);
    // Five items are affordable.
    let id = run_id(
        &poor,
        "poor/fan",
        json!({"input": {"prompts": &prompts[..5]}}),
    )
    .await;
    let run = settled_run(&poor, &id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(assert_balanced(&admin, "poor").await, 10 - 6);
    assert_eq!(assert_balanced(&admin, "acme").await, 110 - 4);
}

// ---------------------------------------------------------------------------------------
// 6. Cancel and the stream.

/// A cancel mid-run: the running node's predictions are canceled (and refunded), the node
/// after them never starts, the finished one stays charged; the run's stream showed node
/// events and ends with `done`.
async fn cancel(store_url: &str, dir: &Path) {
    let server = start(store_url, dir);
    let admin = As::new(&server.url, TOKEN);
    let acme = As::new(&server.url, &admin.account("acme", 100).await);
    let blueprint = json!({
        "name": "acme/slow",
        "input_schema": {"type": "object", "required": ["prompt", "prompts"]},
        "nodes": {
            "quick": {"model": "augur/echo", "input": {"p": "{{ input.prompt }}"}},
            "slow": {"model": "augur/demo-image", "for_each": "{{ input.prompts }}",
                     "input": {"prompt": "{{ item }}", "width": 8, "height": 8,
                               "steps": 100, "step_ms": 100}},
            "join": {"model": "augur/echo", "input": {"images": "{{ nodes.slow.output }}",
                                                     "quick": "{{ nodes.quick.output }}"}}
        },
        "output": "{{ nodes.join.output }}"
    });
    register_new(&acme, &blueprint).await;
    let id = run_id(
        &acme,
        "acme/slow",
        json!({"input": {"prompt": "q", "prompts": ["x", "y", "z"]}}),
    )
    .await;
    let stream = tokio::spawn(read_stream(acme.clone(), format!("/v1/runs/{id}/stream")));
    eventually(
        "quick to succeed and slow to run",
        Duration::from_secs(30),
        || {
            let (acme, id) = (acme.clone(), id.clone());
            async move {
                let (_, run) = acme.call("GET", &format!("/v1/runs/{id}"), None).await;
                run["nodes"]["quick"]["status"] == "succeeded"
                    && run["nodes"]["slow"]["status"] == "processing"
            }
        },
    )
    .await;
    let (status, canceled) = acme
        .call("POST", &format!("/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(
        canceled["id"],
        id.as_str(),
        "the cancel answers the run: {canceled}"
    );
    let run = settled_run(&acme, &id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "canceled", "{run}");
    assert_eq!(run["nodes"]["quick"]["status"], "succeeded", "{run}");
    assert_eq!(run["nodes"]["slow"]["status"], "canceled", "{run}");
    assert_eq!(run["nodes"]["join"]["status"], "skipped", "{run}");
    assert_eq!(run["nodes"]["join"]["prediction_ids"], json!([]), "{run}");
    let slow = prediction_ids(&run, "slow");
    assert_eq!(slow.len(), 3, "{run}");
    for p in &slow {
        let prediction = node_prediction(&acme, &id, "slow", p).await;
        assert_eq!(prediction["status"], "canceled", "{prediction}");
    }
    // A second cancel changes nothing.
    let (status, again) = acme
        .call("POST", &format!("/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status"], "canceled", "{again}");

    let events = tokio::time::timeout(Duration::from_secs(30), stream)
        .await
        .expect("the stream ends")
        .unwrap();
    let (last, _) = events.last().expect("events");
    assert_eq!(last, "done", "{events:?}");
    let nodes: HashSet<_> = events
        .iter()
        .filter(|(kind, _)| kind == "node")
        .map(|(_, data)| data["node"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        nodes.contains("quick") && nodes.contains("slow"),
        "node events: {events:?}"
    );
    assert!(
        events.iter().any(|(kind, data)| kind == "node"
            && data["node"] == "quick"
            && data["status"] == "succeeded"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(kind, data)| kind == "run" && data["id"] == id.as_str()),
        "run events: {events:?}"
    );
    // The run as it ended: `done`'s data when it carries the run, else the last `run` event.
    let (_, ended) = events
        .iter()
        .rev()
        .find(|(kind, data)| (kind == "run" || kind == "done") && data["status"].is_string())
        .expect("the run in the stream");
    assert_eq!(ended["status"], "canceled", "{events:?}");

    // Charged: quick. Refunded: the three slow items. Join: never reserved.
    assert_eq!(assert_balanced(&admin, "acme").await, 110 - 1);
    let ledger = reasons_by_reference(&admin, "acme").await;
    for p in &slow {
        assert_eq!(ledger[p.as_str()], ["refund", "reserve"], "{p}: {ledger:?}");
    }
    assert_eq!(ledger.len(), 4, "{ledger:?}");
}

/// One test per backend for each scenario: `<scenario>::embedded`, `::redis`,
/// `::redis_cluster`, `::postgres`.
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("embedded://{}", dir.path().join("data").display());
                super::$scenario(&url, dir.path()).await;
            }

            #[cfg(feature = "redis")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                let Some(backend) = crate::common::backends::redis() else {
                    return;
                };
                let dir = tempfile::tempdir().unwrap();
                super::$scenario(&backend.url, dir.path()).await;
            }

            #[cfg(feature = "redis")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis_cluster() {
                let Some(backend) = crate::common::backends::redis_cluster() else {
                    return;
                };
                let dir = tempfile::tempdir().unwrap();
                super::$scenario(&backend.url, dir.path()).await;
            }

            #[cfg(feature = "postgres")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(backend) = crate::common::backends::postgres() else {
                    return;
                };
                let dir = tempfile::tempdir().unwrap();
                super::$scenario(&backend.url, dir.path()).await;
            }
        }
    )*};
}

on_every_backend!(
    four_nodes,
    fan_out_fan_in,
    fail_the_run,
    continue_with_null,
    templates_after_and_max_run_time,
    operator_workflows,
    validation,
    cancel
);

// ---------------------------------------------------------------------------------------
// 3. kill -9 mid-run.

/// Runs in flight during the crash.
const RUNS: usize = 50;
/// Items of each run's fan-out.
const ITEMS: usize = 3;

/// A fan-out of slowish images and a join of them.
fn gallery() -> Value {
    json!({
        "name": "crashy/gallery",
        "input_schema": {"type": "object", "required": ["prompts"]},
        "nodes": {
            "draw": {"model": "augur/demo-image", "for_each": "{{ input.prompts }}",
                     "input": {"prompt": "{{ item }}", "width": 8, "height": 8,
                               "steps": 4, "step_ms": 50}},
            "join": {"model": "augur/echo", "input": {"images": "{{ nodes.draw.output }}",
                                                     "prompts": "{{ input.prompts }}"}}
        },
        "output": "{{ nodes.join.output.images }}"
    })
}

/// The key of an Augur file URL (what follows `/files/`). A URL that passed through a model
/// (the join's echo) keeps the public URL of the node that ran it, and these tests' nodes
/// each have their own port, so outputs are compared by key.
fn file_key(url: &Value) -> String {
    let url = url.as_str().unwrap_or_else(|| panic!("not a URL: {url}"));
    let (_, key) = url
        .split_once("/files/")
        .unwrap_or_else(|| panic!("not an Augur file URL: {url}"));
    key.to_owned()
}

fn keys(urls: &Value) -> Vec<String> {
    urls.as_array()
        .unwrap_or_else(|| panic!("not a list: {urls}"))
        .iter()
        .map(file_key)
        .collect()
}

/// Starts 50 runs of the gallery for a fresh priced account, kills `victim` (-9) once some
/// images are drawn, restarts it with `restart`, and checks the end state through `survivor`:
/// every run succeeded, every item drawn exactly once and every join run once, each join's
/// images in item order, one `run.completed` message id per run, signed, and the ledger
/// balanced.
async fn kill_9_mid_run(
    mut victim: TestServer,
    restart: impl FnOnce() -> TestServer,
    survivor_url: Option<String>,
    dir: &Path,
) {
    let inbox: Inbox = Default::default();
    let (hook, receiver) = receiver(&inbox).await;
    let admin = As::new(&victim.url, TOKEN);
    let token = admin.account("crashy", 300).await;
    let api = As::new(&victim.url, &token);
    register_new(&api, &gallery()).await;
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut prompts_of = HashMap::new();
    for r in 0..RUNS {
        let prompts: Vec<String> = (0..ITEMS).map(|i| format!("run {r} item {i}")).collect();
        let id = run_id(
            &api,
            "crashy/gallery",
            json!({"input": {"prompts": prompts}, "webhook": hook}),
        )
        .await;
        prompts_of.insert(id.clone(), prompts);
        ids.push(id);
    }
    eventually("some images to be drawn", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let all = predictions(&api).await;
            all.iter().filter(|p| p["status"] == "succeeded").count() >= 40
        }
    })
    .await;
    let unfinished = runs(&api)
        .await
        .iter()
        .filter(|r| !is_terminal(&r["status"]))
        .count();
    victim.kill9();
    eprintln!("killed after {:?}", started.elapsed());
    assert!(
        unfinished > 0,
        "the kill came too late to test anything: every run had finished"
    );
    eprintln!("killed with {unfinished} of {RUNS} runs unfinished");
    let restarted = restart();
    let base = survivor_url.unwrap_or_else(|| restarted.url.clone());
    let api = As::new(&base, &token);
    let admin = As::new(&base, TOKEN);
    // A run still unfinished 12 s after the restart (four leases) is shown, with its
    // predictions, so that a slow recovery can be told apart (the test still waits for it).
    let watch = {
        let (api, ids) = (api.clone(), ids.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(12)).await;
            for id in &ids {
                let (_, run) = api.call("GET", &format!("/v1/runs/{id}"), None).await;
                if is_terminal(&run["status"]) {
                    continue;
                }
                eprintln!("still unfinished 12 s after the restart: {run}");
                for node in ["draw", "join"] {
                    for p in prediction_ids(&run, node) {
                        let (_, p) = api.call("GET", &format!("/v1/predictions/{p}"), None).await;
                        eprintln!(
                            "  {node}: {} {} started {} completed {}",
                            p["id"], p["status"], p["started_at"], p["completed_at"]
                        );
                    }
                }
            }
        })
    };
    let mut settled = Vec::new();
    for id in &ids {
        settled.push(settled_run(&api, id, Duration::from_secs(120)).await);
    }
    eprintln!("{RUNS} runs settled in {:?}", started.elapsed());
    watch.abort();

    // Every node prediction exactly once per item, all succeeded.
    let all = predictions(&api).await;
    assert_eq!(
        all.len(),
        RUNS * (ITEMS + 1),
        "one prediction per item and join"
    );
    let mut seen: HashMap<(String, String, String), Value> = HashMap::new();
    for p in &all {
        assert_eq!(p["status"], "succeeded", "{p}");
        let run = p["run"]
            .as_str()
            .unwrap_or_else(|| panic!("{p}"))
            .to_owned();
        let node = p["node"]
            .as_str()
            .unwrap_or_else(|| panic!("{p}"))
            .to_owned();
        let item = match node.as_str() {
            "draw" => p["input"]["prompt"].as_str().unwrap().to_owned(),
            _ => String::new(),
        };
        let key = (run, node, item);
        assert!(
            seen.insert(key.clone(), p.clone()).is_none(),
            "a second prediction for {key:?}: {p}"
        );
    }
    for run in &settled {
        let id = run["id"].as_str().unwrap();
        assert_eq!(run["status"], "succeeded", "{run}");
        let draw = prediction_ids(run, "draw");
        assert_eq!(draw.len(), ITEMS, "{run}");
        assert_eq!(
            prediction_ids(run, "join").len(),
            1,
            "the join ran once: {run}"
        );
        let images: Vec<String> = prompts_of[id]
            .iter()
            .map(|prompt| {
                let key = (id.to_owned(), "draw".to_owned(), prompt.clone());
                let p = seen
                    .get(&key)
                    .unwrap_or_else(|| panic!("{key:?} never drawn"));
                assert!(
                    draw.contains(&p["id"].as_str().unwrap().to_owned()),
                    "{run}"
                );
                file_key(&p["output"])
            })
            .collect();
        assert_eq!(keys(&run["output"]), images, "in item order: {run}");
        let join = &seen[&(id.to_owned(), "join".to_owned(), String::new())];
        assert_eq!(keys(&join["input"]["images"]), images, "{join}");
    }
    // The images outlived the crash.
    let key = file_key(&settled[0]["output"][0]);
    let png = reqwest::get(format!("{base}/files/{key}")).await.unwrap();
    assert_eq!(png.status(), 200, "{key}");

    // One completion message id per run, with its own id; signed.
    eventually(
        "every run.completed webhook",
        Duration::from_secs(60),
        || {
            let (inbox, ids) = (inbox.clone(), ids.clone());
            async move { ids.iter().all(|id| !completions(&inbox, id).0.is_empty()) }
        },
    )
    .await;
    eprintln!("every run.completed message by {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut firsts = Vec::new();
    for id in &ids {
        let (received, distinct) = completions(&inbox, id);
        assert_eq!(
            distinct, 1,
            "one completion message id for {id}: {received:?}"
        );
        assert_eq!(
            received[0].headers["webhook-id"],
            format!("msg_{id}_completed")
        );
        let body: Value = serde_json::from_str(&received[0].body).unwrap();
        assert_eq!(body["status"], "succeeded", "{body}");
        firsts.push(received[0].clone());
    }
    verify(&api, dir, &firsts).await;
    assert_eq!(
        assert_balanced(&admin, "crashy").await,
        310 - (RUNS * (ITEMS + 1)) as i64
    );
    receiver.abort();
    drop(restarted);
}

fn crash_env(config: &str) -> [(&str, &str); 3] {
    [
        ("AUGUR_CONFIG", config),
        ("AUGUR_WORKERS", "4"),
        ("AUGUR_LEASE", "3s"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_run_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let data = dir.path().join("data");
    let env = crash_env(&config);
    let victim = TestServer::start(&data, &env);
    kill_9_mid_run(victim, || TestServer::start(&data, &env), None, dir.path()).await;
}

/// Two nodes share `store_url` and one files directory (as nodes behind one address share a
/// file store); the one the runs were created on dies.
#[cfg(any(feature = "redis", feature = "postgres"))]
async fn kill_9_one_of_two_nodes(store_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let files = dir.path().join("files").display().to_string();
    let mut env = crash_env(&config).to_vec();
    env.push(("AUGUR_FILES_DIR", &files));
    let a_dir = dir.path().join("a");
    let a = TestServer::start_on(store_url, &a_dir, &env);
    let b = TestServer::start_on(store_url, &dir.path().join("b"), &env);
    kill_9_mid_run(
        a,
        || TestServer::start_on(store_url, &a_dir, &env),
        Some(b.url.clone()),
        dir.path(),
    )
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_one_of_two_nodes_mid_run_on_redis() {
    let Some(backend) = common::backends::redis() else {
        return;
    };
    kill_9_one_of_two_nodes(&backend.url).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_one_of_two_nodes_mid_run_on_postgres() {
    let Some(backend) = common::backends::postgres() else {
        return;
    };
    kill_9_one_of_two_nodes(&backend.url).await;
}
