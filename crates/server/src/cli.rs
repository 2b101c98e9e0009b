//! The client commands: `augur predict` (create, follow with a progress bar, save file
//! outputs), `augur get`, and the admin's `augur accounts ...` and `augur credits ...`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

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
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the augur server at {}", self.base))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("the server answered {status} without JSON"))?;
        if !status.is_success() {
            let detail = body["detail"].as_str().unwrap_or("no detail");
            bail!("{status}: {detail}");
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

/// `augur predict`: creates a prediction and, with `wait`, follows it to the end with a
/// progress bar, prints its output and saves its files. Returns the process exit code.
pub async fn predict(
    client: &Client,
    model: &str,
    inputs: &[String],
    wait: bool,
    output_dir: &Path,
) -> Result<i32> {
    let input = parse_inputs(inputs)?;
    let created = client.create(model, input).await?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the server answered without an id"))?
        .to_owned();
    if !wait {
        println!("{}", serde_json::to_string_pretty(&created)?);
        return Ok(0);
    }
    eprintln!("prediction {id} created; following it (Ctrl-C cancels it)");
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let settled = loop {
        let current = tokio::select! {
            current = client.get(&id) => current?,
            _ = tokio::signal::ctrl_c() => {
                bar.set_message("canceling");
                let canceled = client.cancel(&id).await?;
                bar.finish_and_clear();
                eprintln!("prediction {id} {}", canceled["status"].as_str().unwrap_or("?"));
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
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish_and_clear();
    match settled["status"].as_str() {
        Some("succeeded") => {
            println!("{}", serde_json::to_string_pretty(&settled["output"])?);
            for saved in save_outputs(client, &id, &settled["output"], output_dir).await? {
                eprintln!("saved {}", saved.display());
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
}
