//! Test harness: the real `augur` binary on a loopback port, plus an HTTP client for it.

#![allow(dead_code, unreachable_pub)]

pub mod backends;
pub mod hooks;
pub mod load;
pub mod money;
#[cfg(feature = "s3")]
pub mod moto;
pub mod throwaway;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "test-admin-token-0123456789";

/// A running `augur serve` process.
pub struct TestServer {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl TestServer {
    /// Starts `augur serve` on `data_dir` (embedded store) and waits until it listens.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> TestServer {
        let url = format!("embedded://{}", data_dir.display());
        Self::start_on(&url, data_dir, env)
    }

    /// Starts `augur serve` on the store `store_url`, keeping its log and output files under
    /// `work_dir`, and waits until it listens.
    pub fn start_on(store_url: &str, work_dir: &Path, env: &[(&str, &str)]) -> TestServer {
        let data_dir = work_dir;
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.with_extension(format!(
            "log-{}-{}",
            std::process::id(),
            augur_core::PredictionId::generate()
        ));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        // `AUGUR_TEST_BIN` runs a test on another build of the binary (an older one, for a
        // "before" figure).
        let binary = std::env::var_os("AUGUR_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_augur").into());
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AUGUR_LISTEN", "127.0.0.1:0")
            .env("AUGUR_STORE", store_url)
            .env("AUGUR_FILES_DIR", data_dir.join("files"))
            .env("AUGUR_ADMIN_TOKEN", TOKEN)
            .env("AUGUR_LOG", "info")
            // Test receivers and upstreams are on loopback, which only the operator's
            // allowlist opens; a test of the default passes its own value.
            .env("AUGUR_OUTBOUND_ALLOW", "127.0.0.0/8,::1/128")
            .stdout(Stdio::piped())
            .stderr(log_file);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn augur");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("augur listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let Ok(url) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!(
                "augur did not start; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        TestServer {
            child,
            url,
            data_dir: data_dir.to_owned(),
            log,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit; returns whether it exited cleanly and how long it
    /// took.
    pub fn terminate(&mut self) -> (bool, Duration) {
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        (exit.success(), started.elapsed())
    }

    pub fn client(&self) -> Api {
        Api {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            base: self.url.clone(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it holds; panics naming `what` after `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A small client for the API.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    /// This node's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// This node's `augur_jobs_total{outcome="..."}`, summed over its other labels.
    pub async fn jobs_with_outcome(&self, outcome: &str) -> i64 {
        let text = self.metrics().await;
        let label = format!("outcome=\"{outcome}\"");
        text.lines()
            .filter(|l| l.starts_with("augur_jobs_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as i64)
            .sum()
    }

    pub async fn create(&self, model: &str, input: Value) -> reqwest::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}/v1/models/{model}/predictions", self.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"input": input}))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    pub async fn get(&self, id: &str) -> reqwest::Result<(u16, Value)> {
        let response = self
            .http
            .get(format!("{}/v1/predictions/{id}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    /// Polls until the prediction is terminal; panics after `deadline`.
    pub async fn settled(&self, id: &str, deadline: Duration) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let (status, body) = self.get(id).await.expect("get");
            assert_eq!(status, 200, "prediction {id} missing: {body}");
            if matches!(
                body["status"].as_str(),
                Some("succeeded" | "failed" | "canceled")
            ) {
                return body;
            }
            assert!(
                Instant::now() < until,
                "prediction {id} did not settle: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads a counter or gauge without labels from `/metrics` (0 when absent).
    pub async fn counter(&self, name: &str) -> i64 {
        self.metrics()
            .await
            .lines()
            .find_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
                rest.trim().parse::<f64>().ok()
            })
            .map_or(0, |v| v as i64)
    }

    /// Every prediction id, through the paginated list.
    pub async fn all_ids(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut url = format!("{}/v1/predictions?limit=1000", self.base);
        loop {
            let page: Value = self
                .http
                .get(&url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for p in page["results"].as_array().unwrap() {
                out.push((
                    p["id"].as_str().unwrap().to_owned(),
                    p["status"].as_str().unwrap().to_owned(),
                ));
            }
            match page["next"].as_str() {
                Some(next) => url = next.to_owned(),
                None => return out,
            }
        }
    }
}

/// The Python interpreter of the test virtualenv (`AUGUR_TEST_PYTHON`, made by
/// `scripts/test.sh` with the Replicate client, standardwebhooks, cog and coglet), or `None`:
/// a skip, or a failure with `AUGUR_E2E_REQUIRED=1`.
pub fn python() -> Option<String> {
    let Some(python) = std::env::var("AUGUR_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        assert!(
            std::env::var("AUGUR_E2E_REQUIRED").as_deref() != Ok("1"),
            "AUGUR_TEST_PYTHON is not set and AUGUR_E2E_REQUIRED=1"
        );
        eprintln!(
            "skipping: set AUGUR_TEST_PYTHON to the test virtualenv's python (scripts/test.sh makes one)"
        );
        return None;
    };
    Some(python)
}

/// Uploads `bytes` as `name` through `POST /v1/files` (multipart written by hand).
pub async fn upload(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    bytes: &[u8],
) -> serde_json::Value {
    let boundary = "augur-test-boundary";
    let mut body = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"content\"; filename=\"{name}\"\r\ncontent-type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let response = http
        .post(format!("{base}/v1/files"))
        .bearer_auth(TOKEN)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}
