//! The client commands: `augur predict` (create, follow with a progress bar, save file
//! outputs), `augur get`, `augur workflow apply|run` and `augur run get` (workflows, followed
//! with a progress line per node), and the admin's `augur accounts ...` and `augur credits ...`.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};

use crate::workflows::read_blueprint_value;

/// Where the server is and how to authenticate.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client for the server at `base` using `token`.
    pub fn new(base: &str, token: String) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("augur-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let response = match request.bearer_auth(&self.token).send().await {
            Ok(response) => response,
            Err(e) if e.is_connect() || e.is_timeout() => bail!(
                "cannot reach the augur server at {} ({}); is `augur serve` running? use --url \
                 (or AUGUR_URL) to name another server",
                self.base,
                root_cause(&e)
            ),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the request to the augur server at {} failed",
                    self.base
                )));
            }
        };
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("the server answered {status} without JSON"))?;
        if !status.is_success() {
            let detail = body["detail"].as_str().unwrap_or("no detail");
            match body["field"].as_str() {
                Some(field) if !detail.contains(field) => {
                    bail!("{detail} (field {field}; the server answered {status})")
                }
                _ => bail!("{detail} (the server answered {status})"),
            }
        }
        Ok(body)
    }

    /// `GET /v1/predictions/{id}`.
    pub async fn get(&self, id: &str) -> Result<Value> {
        self.send(self.http.get(format!("{}/v1/predictions/{id}", self.base)))
            .await
    }

    async fn create(&self, model: &str, input: Map<String, Value>) -> Result<Value> {
        let (owner, name) = model
            .split_once('/')
            .ok_or_else(|| anyhow!("the model must look like owner/name, got {model:?}"))?;
        let url = format!("{}/v1/models/{owner}/{name}/predictions", self.base);
        self.send(
            self.http
                .post(url)
                .json(&serde_json::json!({"input": input})),
        )
        .await
    }

    /// A request with an optional JSON body, answered with JSON.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    async fn cancel(&self, id: &str) -> Result<Value> {
        self.send(
            self.http
                .post(format!("{}/v1/predictions/{id}/cancel", self.base)),
        )
        .await
    }
}

/// The innermost cause of an error (`Connection refused (os error 111)`).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = error;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// An error as one line for a person: its causes joined by `: `, each said once (a cause
/// whose text the line already holds, as drivers often repeat their source's text, is
/// dropped), with the secrets of any URL in it masked.
pub fn error_message(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        // The cause may repeat what the line ends with, and add to it.
        let overlap = (1..=text.len().min(line.len()))
            .rev()
            .filter(|&n| text.is_char_boundary(n))
            .find(|&n| line.ends_with(&text[..n]) && n > 8);
        match overlap {
            Some(n) => line.push_str(&text[n..]),
            None => {
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(text);
            }
        }
    }
    augur_core::redact::text(&line)
}

/// Parses `key=value` inputs. A value that is valid JSON (`3`, `true`, `[1,2]`, `"x"`) is
/// used as such, `@path` reads a file as a data URI, anything else is a string.
pub fn parse_inputs(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut input = Map::new();
    for pair in pairs {
        let (key, raw) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("input {pair:?} must look like key=value"))?;
        if key.is_empty() {
            bail!("input {pair:?} has an empty key");
        }
        let value = if let Some(path) = raw.strip_prefix('@') {
            Value::String(data_uri(Path::new(path))?)
        } else {
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
        };
        input.insert(key.to_owned(), value);
    }
    Ok(input)
}

fn data_uri(path: &Path) -> Result<String> {
    use base64::Engine as _;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mime = augur_engine::files::content_type_for(&path.to_string_lossy());
    let mime = mime.split(';').next().unwrap_or(mime);
    Ok(format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// Ctrl-C (SIGINT), listened for from [`Interrupt::arm`] on: one that comes while nothing
/// awaits [`Interrupt::recv`] (between two polls, during a request) is kept until it is.
struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn arm() -> Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("cannot listen for Ctrl-C")?,
        })
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What `augur predict --wait` does with file outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveOutputs {
    /// Download them into this directory.
    Into(PathBuf),
    /// Only print their URLs.
    No,
}

/// `augur predict`: creates a prediction and, with `wait`, follows it to the end with a
/// progress bar, prints its output and saves its files. Ctrl-C at any point of the wait, the
/// create included, cancels the prediction. Returns the process exit code (0 succeeded, 1
/// failed, 2 canceled, 130 canceled by Ctrl-C).
pub async fn predict(
    client: &Client,
    model: &str,
    inputs: &[String],
    wait: bool,
    save: &SaveOutputs,
) -> Result<i32> {
    let input = parse_inputs(inputs)?;
    let mut interrupt = if wait { Some(Interrupt::arm()?) } else { None };
    let created = client.create(model, input).await?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the server answered without an id"))?
        .to_owned();
    let Some(interrupt) = interrupt.as_mut() else {
        println!("{}", serde_json::to_string_pretty(&created)?);
        return Ok(0);
    };
    eprintln!("prediction {id} created; following it (Ctrl-C cancels it)");
    let bar = ProgressBar::new_spinner();
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut first = true;
    let settled = loop {
        let poll = async {
            if !std::mem::take(&mut first) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            client.get(&id).await
        };
        let current = tokio::select! {
            current = poll => current?,
            () = interrupt.recv() => {
                bar.set_message("canceling");
                let canceled = client
                    .cancel(&id)
                    .await
                    .with_context(|| format!("Ctrl-C: cannot cancel prediction {id}"))?;
                bar.finish_and_clear();
                let status = canceled["status"].as_str().unwrap_or("?");
                if status == "canceled" {
                    eprintln!("Ctrl-C: prediction {id} canceled");
                } else {
                    eprintln!("Ctrl-C: prediction {id} was not canceled: it is {status}");
                }
                return Ok(130);
            }
        };
        let status = current["status"].as_str().unwrap_or("").to_owned();
        let logs = current["logs"].as_str().unwrap_or("");
        if let Some((done, total)) = last_progress(logs) {
            bar.set_length(total);
            bar.set_position(done);
        }
        let last_line = logs
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(60)
            .collect::<String>();
        bar.set_message(format!("{status} {last_line}"));
        if matches!(status.as_str(), "succeeded" | "failed" | "canceled") {
            break current;
        }
    };
    bar.finish_and_clear();
    match settled["status"].as_str() {
        Some("succeeded") => {
            println!("{}", show_output(&settled["output"])?);
            if let SaveOutputs::Into(dir) = save {
                for saved in save_outputs(client, &id, &settled["output"], dir).await? {
                    eprintln!("saved {}", saved.display());
                }
            }
            Ok(0)
        }
        Some("failed") => {
            eprintln!(
                "prediction {id} failed: {}",
                settled["error"].as_str().unwrap_or("unknown error")
            );
            Ok(1)
        }
        _ => {
            eprintln!("prediction {id} was canceled");
            Ok(2)
        }
    }
}

/// An output as a person reads it: a string as it is (a URL, a caption), anything else as
/// indented JSON.
pub fn show_output(output: &Value) -> Result<String> {
    Ok(match output {
        Value::String(text) => text.clone(),
        other => serde_json::to_string_pretty(other)?,
    })
}

/// The last `N/M` step counter in tqdm-style log lines.
fn last_progress(logs: &str) -> Option<(u64, u64)> {
    logs.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once("| ")?;
        let (done, total) = rest.split_whitespace().next()?.split_once('/')?;
        Some((done.parse().ok()?, total.parse().ok()?))
    })
}

/// Downloads every URL in the output into `dir`, named `<id>-<file name>`.
async fn save_outputs(
    client: &Client,
    id: &str,
    output: &Value,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let urls: Vec<&str> = match output {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut saved = Vec::new();
    for (i, url) in urls.into_iter().enumerate() {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            continue;
        }
        let bytes = client
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot download {url}"))?
            .bytes()
            .await?;
        let name = url
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("output");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{id}-{i}-{name}"));
        std::fs::write(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        saved.push(path);
    }
    Ok(saved)
}

/// Splits `owner/name`.
fn owner_name<'a>(what: &str, name: &'a str) -> Result<(&'a str, &'a str)> {
    match name.split_once('/') {
        Some((owner, rest)) if !owner.is_empty() && !rest.is_empty() && !rest.contains('/') => {
            Ok((owner, rest))
        }
        _ => bail!("the {what} must look like owner/name, got {name:?}"),
    }
}

/// `augur workflow apply`: registers (creates or updates) the blueprint in `file`; returns
/// the workflow the server answered.
pub async fn apply_workflow(client: &Client, file: &Path) -> Result<Value> {
    let blueprint = read_blueprint_value(file)?;
    client
        .call(reqwest::Method::POST, "/v1/workflows", Some(blueprint))
        .await
}

/// `augur run get`: `GET /v1/runs/{id}`.
pub async fn get_run(client: &Client, id: &str) -> Result<Value> {
    client
        .call(reqwest::Method::GET, &format!("/v1/runs/{id}"), None)
        .await
}

/// Run and node statuses after which nothing changes.
fn is_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "canceled" | "skipped")
}

/// The nodes of a workflow in the order to show them: by depth (a node below everything it
/// references or follows with `after`), then by name. Nodes of `run` that the workflow does
/// not list (or every node, without it) come last, by name.
pub fn node_order(workflow: Option<&Value>, run: &Value) -> Vec<String> {
    let mut names: Vec<String> = run["nodes"]
        .as_object()
        .map(|nodes| nodes.keys().cloned().collect())
        .unwrap_or_default();
    let Some(nodes) = workflow.and_then(|w| w["nodes"].as_object()) else {
        return names;
    };
    // Who each node depends on: `nodes.X` in any string of its definition, and `after`.
    let mut parents: BTreeMap<&str, HashSet<String>> = BTreeMap::new();
    for (name, node) in nodes {
        let mut found = HashSet::new();
        collect_node_refs(node, &mut found);
        for after in node["after"].as_array().into_iter().flatten() {
            if let Some(a) = after.as_str() {
                found.insert(a.to_owned());
            }
        }
        found.remove(name);
        found.retain(|p| nodes.contains_key(p));
        parents.insert(name, found);
    }
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    // Longest path from a root; at most one pass per node (a cycle is cut at that bound).
    for _ in 0..=nodes.len() {
        let mut changed = false;
        for (name, ps) in &parents {
            let d = ps
                .iter()
                .map(|p| depth.get(p.as_str()).map_or(1, |d| d + 1))
                .max()
                .unwrap_or(0)
                .min(nodes.len());
            if depth.get(name) != Some(&d) {
                depth.insert(name, d);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    names.sort_by(|a, b| {
        let key = |n: &String| depth.get(n.as_str()).copied().unwrap_or(usize::MAX);
        key(a).cmp(&key(b)).then_with(|| a.cmp(b))
    });
    names
}

/// Every `nodes.X` referenced inside `{{ ... }}` in the strings of `value`.
fn collect_node_refs(value: &Value, found: &mut HashSet<String>) {
    match value {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                let after = &rest[start + 2..];
                let Some(end) = after.find("}}") else { break };
                let reference = after[..end].trim();
                if let Some(tail) = reference.strip_prefix("nodes.") {
                    let name = tail.split('.').next().unwrap_or("");
                    if !name.is_empty() {
                        found.insert(name.to_owned());
                    }
                }
                rest = &after[end + 2..];
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_node_refs(i, found)),
        Value::Object(map) => map.values().for_each(|v| collect_node_refs(v, found)),
        _ => {}
    }
}

/// One node's line: its status and how many of its predictions settled.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeLine {
    status: String,
    done: u64,
    total: u64,
}

/// `augur workflow run`: starts a run of `workflow` and, with `wait`, follows it to the end
/// with one progress line per node, then prints its output. Returns the process exit code
/// (0 succeeded, 1 failed, 2 canceled, 130 interrupted: the run is canceled).
pub async fn run_workflow(
    client: &Client,
    workflow: &str,
    inputs: &[String],
    wait: bool,
) -> Result<i32> {
    let (owner, name) = owner_name("workflow", workflow)?;
    let input = parse_inputs(inputs)?;
    let mut interrupt = if wait { Some(Interrupt::arm()?) } else { None };
    let created = client
        .call(
            reqwest::Method::POST,
            &format!("/v1/workflows/{owner}/{name}/runs"),
            Some(serde_json::json!({ "input": input })),
        )
        .await?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the server answered without a run id"))?
        .to_owned();
    let Some(interrupt) = interrupt.as_mut() else {
        println!("{}", serde_json::to_string_pretty(&created)?);
        return Ok(0);
    };
    eprintln!("run {id} of {workflow} created; following it (Ctrl-C cancels it)");
    // The blueprint only orders the lines; without it they come by name.
    let blueprint = client
        .call(
            reqwest::Method::GET,
            &format!("/v1/workflows/{owner}/{name}"),
            None,
        )
        .await
        .ok();
    let order = node_order(blueprint.as_ref(), &created);
    let multi = MultiProgress::new();
    let tty = std::io::stderr().is_terminal();
    if !tty {
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
    let width = order.iter().map(String::len).max().unwrap_or(4);
    let style = ProgressStyle::with_template(&format!(
        "{{prefix:>{width}}} {{bar:24}} {{pos:>3}}/{{len:<3}} {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut bars: BTreeMap<String, (ProgressBar, Option<NodeLine>)> = BTreeMap::new();
    for node in &order {
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(style.clone());
        bar.set_prefix(node.clone());
        bars.insert(node.clone(), (bar, None));
    }
    let mut settled_ids: HashSet<String> = HashSet::new();
    let mut current = created;
    loop {
        let run_status = current["status"].as_str().unwrap_or("").to_owned();
        let lines = node_lines(client, &current, &mut settled_ids).await;
        for (node, line) in lines {
            let entry = bars.entry(node.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(style.clone());
                bar.set_prefix(node.clone());
                (bar, None)
            });
            if entry.1.as_ref() == Some(&line) {
                continue;
            }
            let (bar, last) = entry;
            bar.set_length(line.total);
            bar.set_position(line.done);
            bar.set_message(line.status.clone());
            if !tty && last.as_ref().is_none_or(|l| l.status != line.status) {
                eprintln!("{node}: {} ({}/{})", line.status, line.done, line.total);
            }
            if is_terminal(&line.status) {
                bar.finish();
            }
            *last = Some(line);
        }
        if is_terminal(&run_status) {
            break;
        }
        let next = tokio::select! {
            next = async {
                tokio::time::sleep(Duration::from_millis(250)).await;
                get_run(client, &id).await
            } => next?,
            () = interrupt.recv() => {
                let canceled = client
                    .call(reqwest::Method::POST, &format!("/v1/runs/{id}/cancel"), None)
                    .await?;
                multi.clear().ok();
                eprintln!("Ctrl-C: run {id} {}", canceled["status"].as_str().unwrap_or("?"));
                return Ok(130);
            }
        };
        current = next;
    }
    for (bar, _) in bars.values() {
        if !bar.is_finished() {
            bar.abandon();
        }
    }
    match current["status"].as_str() {
        Some("succeeded") => {
            println!("{}", serde_json::to_string_pretty(&current["output"])?);
            Ok(0)
        }
        Some("failed") => {
            eprintln!(
                "run {id} failed: {}",
                current["error"].as_str().unwrap_or("unknown error")
            );
            Ok(1)
        }
        _ => {
            eprintln!("run {id} was canceled");
            Ok(2)
        }
    }
}

/// Each node's line from a run: a settled node counts all its predictions as done; one still
/// running with several (a fan-out, or retries) has the ones not yet known settled looked up
/// (`settled` remembers those found settled).
async fn node_lines(
    client: &Client,
    run: &Value,
    settled: &mut HashSet<String>,
) -> Vec<(String, NodeLine)> {
    let Some(nodes) = run["nodes"].as_object() else {
        return Vec::new();
    };
    let mut unknown = Vec::new();
    for node in nodes.values() {
        let ids = node["prediction_ids"].as_array().into_iter().flatten();
        let ids = ids.filter_map(Value::as_str);
        if is_terminal(node["status"].as_str().unwrap_or("")) {
            settled.extend(ids.map(str::to_owned));
        } else if node["prediction_ids"]
            .as_array()
            .is_some_and(|a| a.len() > 1)
        {
            unknown.extend(ids.filter(|id| !settled.contains(*id)).map(str::to_owned));
        }
    }
    let found: Vec<String> = futures::stream::iter(unknown)
        .map(|id| async move {
            let prediction = client.get(&id).await.ok()?;
            let status = prediction["status"].as_str()?;
            matches!(status, "succeeded" | "failed" | "canceled").then_some(id)
        })
        .buffer_unordered(16)
        .filter_map(|id| async move { id })
        .collect()
        .await;
    settled.extend(found);
    nodes
        .iter()
        .map(|(name, node)| {
            let ids: Vec<&str> = node["prediction_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let line = NodeLine {
                status: node["status"].as_str().unwrap_or("?").to_owned(),
                done: ids.iter().filter(|id| settled.contains(**id)).count() as u64,
                total: ids.len() as u64,
            };
            (name.clone(), line)
        })
        .collect()
}

/// `augur accounts create`: creates an account; prints it.
pub async fn create_account(client: &Client, username: &str, name: Option<&str>) -> Result<Value> {
    let mut body = serde_json::json!({ "username": username });
    if let Some(name) = name {
        body["name"] = Value::from(name);
    }
    client
        .call(reqwest::Method::POST, "/v1/accounts", Some(body))
        .await
}

/// `augur accounts list`: every account, following the pages.
pub async fn list_accounts(client: &Client) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut path = "/v1/accounts?limit=1000".to_owned();
    loop {
        let page = client.call(reqwest::Method::GET, &path, None).await?;
        all.extend(page["results"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => {
                path = next
                    .strip_prefix(&client.base)
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("the server's next page is elsewhere: {next}"))?;
            }
            None => return Ok(all),
        }
    }
}

/// `augur accounts token`: issues a token for an account (shown once).
pub async fn create_token(client: &Client, username: &str, name: Option<&str>) -> Result<Value> {
    let body = serde_json::json!({ "name": name.unwrap_or("cli") });
    client
        .call(
            reqwest::Method::POST,
            &format!("/v1/accounts/{username}/tokens"),
            Some(body),
        )
        .await
}

/// `augur credits grant`: grants (or, negative, takes away) credits; returns the new totals.
pub async fn grant(
    client: &Client,
    username: &str,
    amount: i64,
    memo: Option<&str>,
) -> Result<Value> {
    let reason = if amount > 0 { "grant" } else { "adjust" };
    let mut body = serde_json::json!({ "amount": amount, "reason": reason });
    if let Some(memo) = memo {
        body["memo"] = Value::from(memo);
    }
    client
        .call(
            reqwest::Method::POST,
            &format!("/v1/accounts/{username}/credits"),
            Some(body),
        )
        .await
}

/// `augur credits show`: an account's totals.
pub async fn credits(client: &Client, username: &str) -> Result<Value> {
    client
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/{username}/credits"),
            None,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflows::toml_to_json;
    use serde_json::json;

    #[test]
    fn inputs_parse_as_json_or_text() {
        let input = parse_inputs(&[
            "prompt=a cat".into(),
            "steps=5".into(),
            "fast=true".into(),
            "tags=[\"a\"]".into(),
            "quoted=\"7\"".into(),
            "eq=a=b".into(),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(input),
            json!({"prompt": "a cat", "steps": 5, "fast": true, "tags": ["a"], "quoted": "7", "eq": "a=b"})
        );
        assert!(parse_inputs(&["novalue".into()]).is_err());
        assert!(parse_inputs(&["=x".into()]).is_err());
        assert!(parse_inputs(&["f=@/does/not/exist".into()]).is_err());
    }

    #[test]
    fn progress_is_read_from_tqdm_lines() {
        assert_eq!(
            last_progress("start\n 30%|███       | 3/10\n"),
            Some((3, 10))
        );
        assert_eq!(last_progress("nothing here"), None);
    }

    /// The issue's four-node blueprint, as JSON.
    fn variants_json() -> Value {
        json!({
            "name": "acme/variants",
            "input_schema": {"type": "object", "required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
            "nodes": {
                "draw": {"model": "augur/demo-image", "input": {"prompt": "{{ input.prompt }}", "width": 64, "height": 64}},
                "left": {"model": "augur/echo", "input": {"image": "{{ nodes.draw.output }}", "side": "left"}},
                "right": {"model": "augur/echo", "input": {"image": "{{ nodes.draw.output }}", "side": "right"}},
                "sheet": {"model": "augur/echo", "input": {"a": "{{ nodes.left.output }}", "b": "{{ nodes.right.output }}"}}
            },
            "output": "{{ nodes.sheet.output }}"
        })
    }

    const VARIANTS_TOML: &str = r#"
name = "acme/variants"
output = "{{ nodes.sheet.output }}"

[input_schema]
type = "object"
required = ["prompt"]
properties.prompt.type = "string"

[nodes.draw]
model = "augur/demo-image"
input = { prompt = "{{ input.prompt }}", width = 64, height = 64 }

[nodes.left]
model = "augur/echo"
input = { image = "{{ nodes.draw.output }}", side = "left" }

[nodes.right]
model = "augur/echo"
input.image = "{{ nodes.draw.output }}"
input.side = "right"

[nodes.sheet]
model = "augur/echo"
input = { a = "{{ nodes.left.output }}", b = "{{ nodes.right.output }}" }
"#;

    #[test]
    fn a_toml_blueprint_is_the_same_json() {
        assert_eq!(toml_to_json(VARIANTS_TOML).unwrap(), variants_json());
    }

    #[test]
    fn toml_values_convert_by_type() {
        let converted = toml_to_json(
            r#"
n = 3
f = 0.5
b = false
when = 2026-12-07T01:02:03Z
list = [1, "two", { three = 3 }]
nested = [[1, 2], []]
[nodes.fan]
for_each = "{{ input.prompts }}"
retries = 2
max_run_time = 30
on_failure = "continue"
after = ["a", "b"]
"#,
        )
        .unwrap();
        assert_eq!(
            converted,
            json!({
                "n": 3, "f": 0.5, "b": false, "when": "2026-12-07T01:02:03Z",
                "list": [1, "two", {"three": 3}], "nested": [[1, 2], []],
                "nodes": {"fan": {"for_each": "{{ input.prompts }}", "retries": 2, "max_run_time": 30,
                                  "on_failure": "continue", "after": ["a", "b"]}}
            })
        );
        let nan = toml_to_json("x = { y = [nan] }").unwrap_err().to_string();
        assert!(nan.contains("x.y[0]"), "{nan}");
        assert!(toml_to_json("name = ").is_err());
    }

    #[test]
    fn blueprints_are_read_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("variants.TOML");
        std::fs::write(&toml_path, VARIANTS_TOML).unwrap();
        assert_eq!(read_blueprint_value(&toml_path).unwrap(), variants_json());
        let json_path = dir.path().join("variants.json");
        std::fs::write(&json_path, variants_json().to_string()).unwrap();
        assert_eq!(read_blueprint_value(&json_path).unwrap(), variants_json());
        // TOML in a .json file is not read as TOML, and a blueprint must be an object.
        let wrong = dir.path().join("wrong.json");
        std::fs::write(&wrong, VARIANTS_TOML).unwrap();
        assert!(read_blueprint_value(&wrong).is_err());
        std::fs::write(&wrong, "[1]").unwrap();
        assert!(read_blueprint_value(&wrong).is_err());
        assert!(read_blueprint_value(&dir.path().join("missing.toml")).is_err());
    }

    #[test]
    fn workflow_names_are_owner_slash_name() {
        assert_eq!(
            owner_name("workflow", "acme/variants").unwrap(),
            ("acme", "variants")
        );
        for bad in ["variants", "/x", "x/", "a/b/c"] {
            assert!(owner_name("workflow", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nodes_are_shown_by_depth_then_name() {
        let run = json!({"nodes": {"draw": {}, "left": {}, "right": {}, "sheet": {}, "extra": {}}});
        let mut workflow = variants_json();
        assert_eq!(
            node_order(Some(&workflow), &run),
            ["draw", "left", "right", "sheet", "extra"]
        );
        // `after` orders too, and text around a template still references.
        workflow["nodes"]["left"]["after"] = json!(["right"]);
        workflow["nodes"]["right"]["input"]["side"] = json!("of {{nodes.draw.output.0}}");
        assert_eq!(
            node_order(Some(&workflow), &run),
            ["draw", "right", "left", "sheet", "extra"]
        );
        // Without the blueprint: by name.
        assert_eq!(
            node_order(None, &run),
            ["draw", "extra", "left", "right", "sheet"]
        );
        // A cycle does not hang.
        let cyclic = json!({"nodes": {"a": {"input": {"x": "{{ nodes.b.output }}"}}, "b": {"after": ["a"]}}});
        let run = json!({"nodes": {"a": {}, "b": {}}});
        assert_eq!(node_order(Some(&cyclic), &run).len(), 2);
    }
}
