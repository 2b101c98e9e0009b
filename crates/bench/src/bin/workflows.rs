//! `workflows`: the workflow benchmarks of `bench/workflows.sh` (issue 11), one measurement
//! per process against a running Augur server on loopback.
//!
//! ```text
//! workflows --url http://127.0.0.1:PORT --token ADMIN_TOKEN
//!           --measure chain|fan|plain|serial|runs|manual|singles
//!           [--nodes 100] [--runs 200] [--clients 16] [--pids PID,PID] [--timeout 300]
//! ```
//!
//! Everything runs as the account `bench` (created, with a token, through the admin token), so
//! that workflows are registered under `bench/...` and node predictions and plain ones belong
//! to the same account. Every measurement first warms up, untimed: one `augur/echo` create with
//! `Prefer: wait` and one run of a two-node chain, waited for. Then:
//!
//! Overhead per node (`--nodes` N, default 100):
//! - **chain**: one run of `bench/chain`, N `augur/echo` nodes where node i's input references
//!   node i-1's output (`{"text": "{{ nodes.n<i-1>.output.text }}"}`), created with a
//!   `"webhook"` naming a local receiver (axum on `127.0.0.1:0`), timed from the request to
//!   the arrival of `run.completed`.
//! - **fan**: one run of `bench/fan`: a node `each` with `"for_each": "{{ input.items }}"` over
//!   N strings and a join `{"all": "{{ nodes.each.output }}"}`, N + 1 predictions, timed alike.
//! - **plain**: the reference: N `POST /v1/models/augur/echo/predictions` with `Prefer: wait`
//!   sent at once (N tasks), timed from the start until the last answered with its prediction
//!   settled.
//! - **serial**: a second reference: the same N creates one after another, each sent when the
//!   previous answered settled, as a chain's nodes follow each other (no two in one write or
//!   one claim, each commit on its own).
//!
//!   Each reports the server's CPU time (`--pids`, their threads and child processes, from
//!   `/proc/<pid>/task/*/schedstat` in nanoseconds) from just before the first request until
//!   200 ms after the end (so that work finishing just after the answer is counted; the same
//!   window for all four), and that CPU divided by the predictions made
//!   (`cpu_us_per_prediction`: N for chain, plain and serial, N + 1 for fan). Before the timed part it
//!   measures the idle server's CPU for a second (`idle_cpu_ms_per_s`: its loops and timers);
//!   `cpu_us_per_prediction_net` subtracts that rate over the measured window, which matters
//!   when the window is long (a chain waits between its nodes).
//!
//! Throughput (`--runs` R, default 200, from `--clients` C tasks, default 16):
//! - **runs**: R runs of `bench/variants`, the issue's four-node blueprint (demo-image 64×64,
//!   then two echoes of its file URL, then an echo of both) with `steps = 1, step_ms = 0`, so
//!   that the figure is the machinery and not demo-image's sleeping; each task creates a run with
//!   the receiver as `"webhook"` and waits for its `run.completed`. runs/s and the latency
//!   (create → `run.completed`) p50 and p99.
//! - **manual**: the reference with the same work: R times the same four predictions driven by
//!   the client (draw with `Prefer: wait`, then left and right at once, then sheet, each with
//!   `Prefer: wait`), from C tasks. "runs"/s and latency as above.
//! - **singles**: the plain reference: 4R `augur/echo` creates with `Prefer: wait` from C tasks;
//!   predictions/s and the latency of one.
//!
//! Every measurement also reports the store operations it caused (counts of
//! `augur_store_operation_duration_seconds` from `/metrics`, read before the timed part and
//! after the CPU, by operation) per prediction (`store_ops_per_prediction`) or per run, "run"
//! or prediction (`store_ops_per_item`).
//!
//! A run that does not end `succeeded`, or a create that is not answered 201, is counted in
//! `errors`. Waiting for `run.completed` falls back to `GET /v1/runs/{id}` once a second
//! (`polled` counts the runs found that way). Human-readable lines go to stderr; stdout is one
//! JSON object.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    Chain,
    Fan,
    Plain,
    Serial,
    Runs,
    Manual,
    Singles,
}

impl Measure {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "chain" => Self::Chain,
            "fan" => Self::Fan,
            "plain" => Self::Plain,
            "serial" => Self::Serial,
            "runs" => Self::Runs,
            "manual" => Self::Manual,
            "singles" => Self::Singles,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Chain => "chain",
            Self::Fan => "fan",
            Self::Plain => "plain",
            Self::Serial => "serial",
            Self::Runs => "runs",
            Self::Manual => "manual",
            Self::Singles => "singles",
        }
    }
}

struct Args {
    url: String,
    admin_token: String,
    measure: Measure,
    nodes: usize,
    runs: usize,
    clients: usize,
    pids: Vec<u32>,
    timeout: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: workflows --url URL --token ADMIN_TOKEN --measure chain|fan|plain|runs|manual|singles [--nodes 100] [--runs 200] [--clients 16] [--pids PID,PID] [--timeout 300]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        url: String::new(),
        admin_token: String::new(),
        measure: Measure::Chain,
        nodes: 100,
        runs: 200,
        clients: 16,
        pids: Vec::new(),
        timeout: Duration::from_secs(300),
    };
    let mut measure = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        let number = |v: &str| v.parse::<u64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--url" => args.url = value.trim_end_matches('/').to_owned(),
            "--token" => args.admin_token = value,
            "--measure" => measure = Some(Measure::parse(&value).unwrap_or_else(|| usage())),
            "--nodes" => args.nodes = number(&value).max(2) as usize,
            "--runs" => args.runs = number(&value).max(1) as usize,
            "--clients" => args.clients = number(&value).max(1) as usize,
            "--pids" => {
                args.pids = value
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| number(p) as u32)
                    .collect();
            }
            "--timeout" => args.timeout = Duration::from_secs(number(&value)),
            _ => usage(),
        }
    }
    if args.url.is_empty() || args.admin_token.is_empty() {
        usage();
    }
    args.measure = measure.unwrap_or_else(|| usage());
    args
}

/// CPU seconds of `pid`: the time on CPU of each of its threads and of its child processes'
/// threads (`/proc/<pid>/task/<tid>/schedstat`, nanoseconds; `/proc/<pid>/stat` counts in
/// 10 ms ticks, too coarse for a hundred predictions), plus its ended children's (`cutime` +
/// `cstime` of `/proc/<pid>/stat`, in ticks: PostgreSQL's backends that exited).
fn cpu_s(pid: u32) -> f64 {
    fn threads_ns(pid: u32) -> u64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return 0;
        };
        tasks
            .filter_map(Result::ok)
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After "pid (comm) ": cutime is field 16, cstime 17.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ended_ticks: u64 = rest
        .split_whitespace()
        .skip(13)
        .take(2)
        .map(|v| v.parse::<u64>().unwrap_or(0))
        .sum();
    let mut ns = threads_ns(pid);
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
        ns += threads_ns(child);
    }
    // /proc reports ticks in USER_HZ, 100 per second on Linux.
    ns as f64 / 1e9 + ended_ticks as f64 / 100.0
}

fn cpu_each(pids: &[u32]) -> Vec<f64> {
    pids.iter().map(|&pid| cpu_s(pid)).collect()
}

/// `server_cpu_s` (every pid), `augur_cpu_s` (the first) and `others_cpu_s` (the rest: the
/// store's processes); returns the total.
fn cpu_fields(result: &mut Value, before: &[f64], after: &[f64]) -> f64 {
    let delta: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let total: f64 = delta.iter().sum();
    result["server_cpu_s"] = json!(round4(total));
    result["augur_cpu_s"] = json!(round4(delta.first().copied().unwrap_or(0.0)));
    result["others_cpu_s"] = json!(round4(delta.iter().skip(1).sum()));
    total
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    (sorted[i].as_secs_f64() * 1e6).round() / 1e3
}

/// `operation` → count of `augur_store_operation_duration_seconds`, outcomes summed.
type StoreOps = std::collections::BTreeMap<String, f64>;

async fn store_ops(http: &reqwest::Client, url: &str, admin_token: &str) -> StoreOps {
    let text = match http
        .get(format!("{url}/metrics"))
        .bearer_auth(admin_token)
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut ops = StoreOps::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("augur_store_operation_duration_seconds_count{") else {
            continue;
        };
        let Some(op) = rest
            .split_once("operation=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(op, _)| op.to_owned())
        else {
            continue;
        };
        let value: f64 = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0);
        *ops.entry(op).or_default() += value;
    }
    ops
}

/// The store operations between two snapshots, per `per` predictions (only those that ran).
fn ops_per(before: &StoreOps, after: &StoreOps, per: usize) -> Value {
    let mut out = serde_json::Map::new();
    for (op, count) in after {
        let delta = count - before.get(op).copied().unwrap_or_default();
        if delta > 0.0 {
            out.insert(op.clone(), json!(round3(delta / per as f64)));
        }
    }
    Value::Object(out)
}

/// The run receiver's record: the first arrival of each settled run (body `"id"`).
struct Arrivals {
    seen: Mutex<HashMap<String, (Instant, Value)>>,
    requests: AtomicUsize,
    duplicates: AtomicUsize,
    arrived: Notify,
}

struct Receiver {
    url: String,
    log: Arc<Arrivals>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        let log = Arc::new(Arrivals {
            seen: Mutex::new(HashMap::new()),
            requests: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            arrived: Notify::new(),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("serve the receiver");
        });
        Self {
            url: format!("http://{addr}/hooks/runs"),
            log,
            task,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(log): State<Arc<Arrivals>>, body: Bytes) -> StatusCode {
    let at = Instant::now();
    log.requests.fetch_add(1, Ordering::Relaxed);
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::NO_CONTENT;
    };
    if let (true, Some(id)) = (terminal(&value), value["id"].as_str()) {
        let mut seen = log.seen.lock().await;
        if seen.contains_key(id) {
            log.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            seen.insert(id.to_owned(), (at, value));
            log.arrived.notify_waiters();
        }
    }
    StatusCode::NO_CONTENT
}

fn terminal(value: &Value) -> bool {
    matches!(
        value["status"].as_str(),
        Some("succeeded" | "failed" | "canceled")
    )
}

/// The client side: the HTTP client, the bench account's token, the receiver.
struct Bench {
    http: reqwest::Client,
    url: String,
    token: String,
    receiver: Receiver,
    polled: AtomicUsize,
    timeout: Duration,
}

impl Bench {
    /// Sends `method path` with `body` (and `Prefer: wait` if asked); the status and JSON.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        wait: bool,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).expect("json"));
        }
        if wait {
            request = request.header("prefer", "wait");
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let bytes = response.bytes().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                )
            }
            Err(e) => (0, json!({ "error": e.to_string() })),
        }
    }

    /// One `augur/echo` prediction with `Prefer: wait`; whether it was created and settled
    /// `succeeded`, and its output.
    async fn echo(&self, input: Value) -> (bool, Value) {
        let (status, prediction) = self
            .call(
                reqwest::Method::POST,
                "/v1/models/augur/echo/predictions",
                Some(&json!({ "input": input })),
                true,
            )
            .await;
        let ok = status == 201 && prediction["status"] == "succeeded";
        if !ok {
            eprintln!("echo: {status} {prediction}");
        }
        (ok, prediction["output"].clone())
    }

    /// Registers a workflow (panics unless 200/201).
    async fn register(&self, blueprint: &Value) {
        let (status, answer) = self
            .call(
                reqwest::Method::POST,
                "/v1/workflows",
                Some(blueprint),
                false,
            )
            .await;
        assert!(
            status == 200 || status == 201,
            "register {}: {status} {answer}",
            blueprint["name"]
        );
    }

    /// Starts a run with the receiver as its webhook; the run id, or the error.
    async fn start_run(&self, workflow: &str, input: Value) -> Result<String, String> {
        let body = json!({ "input": input, "webhook": self.receiver.url });
        let (status, run) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/workflows/{workflow}/runs"),
                Some(&body),
                false,
            )
            .await;
        match run["id"].as_str() {
            Some(id) if status == 201 => Ok(id.to_owned()),
            _ => Err(format!("run of {workflow}: {status} {run}")),
        }
    }

    /// Waits for `run.completed` of `id` (or, once a second, finds it settled with a GET);
    /// when it arrived and the run.
    async fn wait_run(&self, id: &str) -> (Instant, Value) {
        let deadline = Instant::now() + self.timeout;
        loop {
            let notified = self.receiver.log.arrived.notified();
            if let Some(found) = self.receiver.log.seen.lock().await.get(id) {
                return found.clone();
            }
            if tokio::time::timeout(Duration::from_secs(1), notified)
                .await
                .is_err()
            {
                let (_, run) = self
                    .call(reqwest::Method::GET, &format!("/v1/runs/{id}"), None, false)
                    .await;
                if terminal(&run) {
                    self.polled.fetch_add(1, Ordering::Relaxed);
                    return (Instant::now(), run);
                }
                assert!(Instant::now() < deadline, "run {id} did not settle: {run}");
            }
        }
    }

    /// Starts a run and waits for it; the time from the request, and the run.
    async fn run(&self, workflow: &str, input: Value) -> Result<(Duration, Value), String> {
        let start = Instant::now();
        let id = self.start_run(workflow, input).await?;
        let (at, run) = self.wait_run(&id).await;
        Ok((at.saturating_duration_since(start), run))
    }
}

/// Makes the account `bench` (if missing) and a token for it.
async fn bench_token(http: &reqwest::Client, args: &Args) -> String {
    let response = http
        .post(format!("{}/v1/accounts", args.url))
        .bearer_auth(&args.admin_token)
        .json(&json!({ "username": "bench", "name": "benchmark" }))
        .send()
        .await
        .expect("create the bench account");
    let status = response.status().as_u16();
    assert!(
        status == 201 || status == 200 || status == 409,
        "create the bench account: {status} {}",
        response.text().await.unwrap_or_default()
    );
    let token: Value = http
        .post(format!("{}/v1/accounts/bench/tokens", args.url))
        .bearer_auth(&args.admin_token)
        .json(&json!({ "name": "bench" }))
        .send()
        .await
        .expect("issue a token")
        .json()
        .await
        .expect("token JSON");
    token["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {token}"))
        .to_owned()
}

/// `bench/chain` (or `name`) of `n` echo nodes, each referencing the previous one's output.
fn chain(name: &str, n: usize) -> Value {
    let mut nodes = serde_json::Map::new();
    nodes.insert(
        "n000".into(),
        json!({ "model": "augur/echo", "input": { "text": "{{ input.text }}" } }),
    );
    for i in 1..n {
        nodes.insert(
            format!("n{i:03}"),
            json!({
                "model": "augur/echo",
                "input": { "text": format!("{{{{ nodes.n{:03}.output.text }}}}", i - 1) },
            }),
        );
    }
    json!({
        "name": name,
        "nodes": nodes,
        "output": format!("{{{{ nodes.n{:03}.output }}}}", n - 1),
    })
}

/// `bench/fan`: a fan-out over `input.items` and a join.
fn fan() -> Value {
    json!({
        "name": "bench/fan",
        "nodes": {
            "each": {"model": "augur/echo", "for_each": "{{ input.items }}",
                     "input": {"text": "{{ item }}", "index": "{{ index }}"}},
            "join": {"model": "augur/echo", "input": {"all": "{{ nodes.each.output }}"}}
        },
        "output": "{{ nodes.join.output }}"
    })
}

/// `bench/variants`: the issue's blueprint, demo-image with one step and no sleep.
fn variants() -> Value {
    json!({
        "name": "bench/variants",
        "input_schema": {"type": "object", "required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
        "nodes": {
            "draw":  {"model": "augur/demo-image", "input": {"prompt": "{{ input.prompt }}", "width": 64, "height": 64, "steps": 1, "step_ms": 0}},
            "left":  {"model": "augur/echo", "input": {"image": "{{ nodes.draw.output }}", "side": "left"}},
            "right": {"model": "augur/echo", "input": {"image": "{{ nodes.draw.output }}", "side": "right"}},
            "sheet": {"model": "augur/echo", "input": {"a": "{{ nodes.left.output }}", "b": "{{ nodes.right.output }}"}}
        },
        "output": "{{ nodes.sheet.output }}"
    })
}

/// The four predictions of `bench/variants`, driven by the client.
async fn manual_variants(bench: &Bench, prompt: &str) -> bool {
    let (status, draw) = bench
        .call(
            reqwest::Method::POST,
            "/v1/models/augur/demo-image/predictions",
            Some(&json!({"input": {"prompt": prompt, "width": 64, "height": 64, "steps": 1, "step_ms": 0}})),
            true,
        )
        .await;
    if status != 201 || draw["status"] != "succeeded" {
        eprintln!("draw: {status} {draw}");
        return false;
    }
    let image = &draw["output"];
    let ((l_ok, left), (r_ok, right)) = tokio::join!(
        bench.echo(json!({"image": image, "side": "left"})),
        bench.echo(json!({"image": image, "side": "right"})),
    );
    if !(l_ok && r_ok) {
        return false;
    }
    bench.echo(json!({"a": left, "b": right})).await.0
}

/// `count` jobs from `clients` tasks taking the next index in turn; each job's latency and
/// whether it succeeded.
async fn from_clients<F, Fut>(count: usize, clients: usize, job: F) -> (Vec<Duration>, usize)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let job = job.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let sent = Instant::now();
                    let ok = job(i).await;
                    latencies.push(sent.elapsed());
                    errors += usize::from(!ok);
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.expect("client task");
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    (latencies, errors)
}

/// Checks a settled run: succeeded, every node succeeded; an error line otherwise.
fn check_run(run: &Value) -> Option<String> {
    if run["status"] != "succeeded" {
        return Some(format!(
            "run {} {}: {}",
            run["id"], run["status"], run["error"]
        ));
    }
    let nodes = run["nodes"].as_object()?;
    nodes
        .iter()
        .find(|(_, n)| n["status"] != "succeeded")
        .map(|(name, n)| format!("run {} node {name}: {}", run["id"], n["status"]))
}

#[tokio::main]
async fn main() {
    let args = Arc::new(parse_args());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(args.timeout)
        .pool_max_idle_per_host(256)
        .build()
        .expect("http client");
    let token = bench_token(&http, &args).await;
    let bench = Arc::new(Bench {
        http,
        url: args.url.clone(),
        token,
        receiver: Receiver::start().await,
        polled: AtomicUsize::new(0),
        timeout: args.timeout,
    });

    // Warm-up, untimed.
    assert!(
        bench.echo(json!({"text": "warm-up"})).await.0,
        "warm-up echo"
    );
    bench.register(&chain("bench/warm", 2)).await;
    let (_, warm) = bench
        .run("bench/warm", json!({"text": "warm-up"}))
        .await
        .expect("warm-up run");
    assert!(check_run(&warm).is_none(), "warm-up run: {warm}");
    let n = args.nodes;
    match args.measure {
        Measure::Chain => bench.register(&chain("bench/chain", n)).await,
        Measure::Fan => bench.register(&fan()).await,
        Measure::Runs => {
            bench.register(&variants()).await;
            let (_, run) = bench
                .run("bench/variants", json!({"prompt": "warm-up"}))
                .await
                .expect("warm-up variants run");
            assert!(check_run(&run).is_none(), "warm-up variants run: {run}");
        }
        Measure::Manual => assert!(manual_variants(&bench, "warm-up").await),
        Measure::Plain | Measure::Serial | Measure::Singles => {}
    }
    eprintln!("warm-up done; measuring {}", args.measure.as_str());

    let mut result = json!({ "measure": args.measure.as_str() });
    // The idle server's own CPU (its loops and timers), to tell it from the measured work.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_before = cpu_each(&args.pids);
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_cpu: f64 = cpu_each(&args.pids).iter().sum::<f64>() - idle_before.iter().sum::<f64>();
    let idle_per_s = idle_cpu / idle_start.elapsed().as_secs_f64();
    result["idle_cpu_ms_per_s"] = json!(round3(idle_per_s * 1e3));
    let ops_before = store_ops(&bench.http, &args.url, &args.admin_token).await;
    let cpu_before = cpu_each(&args.pids);
    let start = Instant::now();
    match args.measure {
        Measure::Chain | Measure::Fan => {
            let (workflow, input, predictions) = if args.measure == Measure::Chain {
                ("bench/chain", json!({"text": "hello"}), n)
            } else {
                let items: Vec<String> = (0..n).map(|i| format!("item {i}")).collect();
                ("bench/fan", json!({"items": items}), n + 1)
            };
            let outcome = bench.run(workflow, input).await;
            let wall = start.elapsed();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let cpu = cpu_fields(&mut result, &cpu_before, &cpu_each(&args.pids));
            let net = cpu - idle_per_s * start.elapsed().as_secs_f64();
            result["cpu_us_per_prediction_net"] = json!((net * 1e6 / predictions as f64).round());
            let (took, run) = outcome.unwrap_or_else(|e| panic!("{e}"));
            let error = check_run(&run);
            let made: usize = run["nodes"]
                .as_object()
                .map(|nodes| {
                    nodes
                        .values()
                        .map(|n| n["prediction_ids"].as_array().map_or(0, Vec::len))
                        .sum()
                })
                .unwrap_or(0);
            result["predictions"] = json!(predictions);
            result["node_predictions_seen"] = json!(made);
            result["errors"] = json!(usize::from(error.is_some() || made != predictions));
            if let Some(error) = error {
                eprintln!("{error}");
            }
            result["wall_s"] = json!(round3(took.min(wall).as_secs_f64()));
            result["wall_ms_per_prediction"] =
                json!(round3(took.as_secs_f64() * 1e3 / predictions as f64));
            result["cpu_us_per_prediction"] = json!((cpu * 1e6 / predictions as f64).round());
            result["status"] = run["status"].clone();
            let ops_after = store_ops(&bench.http, &args.url, &args.admin_token).await;
            result["store_ops_per_prediction"] = ops_per(&ops_before, &ops_after, predictions);
        }
        Measure::Plain | Measure::Serial => {
            let mut errors = 0;
            if args.measure == Measure::Serial {
                for i in 0..n {
                    let ok = bench.echo(json!({"text": format!("item {i}")})).await.0;
                    errors += usize::from(!ok);
                }
            } else {
                let tasks: Vec<_> = (0..n)
                    .map(|i| {
                        let bench = bench.clone();
                        tokio::spawn(async move {
                            bench.echo(json!({"text": format!("item {i}")})).await.0
                        })
                    })
                    .collect();
                for task in tasks {
                    errors += usize::from(!task.await.expect("task"));
                }
            }
            let wall = start.elapsed();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let cpu = cpu_fields(&mut result, &cpu_before, &cpu_each(&args.pids));
            let net = cpu - idle_per_s * start.elapsed().as_secs_f64();
            result["cpu_us_per_prediction_net"] = json!((net * 1e6 / n as f64).round());
            result["predictions"] = json!(n);
            result["errors"] = json!(errors);
            result["wall_s"] = json!(round3(wall.as_secs_f64()));
            result["wall_ms_per_prediction"] = json!(round3(wall.as_secs_f64() * 1e3 / n as f64));
            result["cpu_us_per_prediction"] = json!((cpu * 1e6 / n as f64).round());
            let ops_after = store_ops(&bench.http, &args.url, &args.admin_token).await;
            result["store_ops_per_prediction"] = ops_per(&ops_before, &ops_after, n);
        }
        Measure::Runs | Measure::Manual | Measure::Singles => {
            let count = if args.measure == Measure::Singles {
                4 * args.runs
            } else {
                args.runs
            };
            let measure = args.measure;
            let job_bench = bench.clone();
            let (latencies, errors) = from_clients(count, args.clients, move |i| {
                let bench = job_bench.clone();
                async move {
                    let prompt = format!("a lighthouse, variant {i}");
                    match measure {
                        Measure::Runs => {
                            match bench.run("bench/variants", json!({"prompt": prompt})).await {
                                Ok((_, run)) => match check_run(&run) {
                                    None => true,
                                    Some(e) => {
                                        eprintln!("{e}");
                                        false
                                    }
                                },
                                Err(e) => {
                                    eprintln!("{e}");
                                    false
                                }
                            }
                        }
                        Measure::Manual => manual_variants(&bench, &prompt).await,
                        _ => bench.echo(json!({"text": prompt})).await.0,
                    }
                }
            })
            .await;
            let wall = start.elapsed();
            let cpu = cpu_fields(&mut result, &cpu_before, &cpu_each(&args.pids));
            let per_s = count as f64 / wall.as_secs_f64();
            result["count"] = json!(count);
            result["clients"] = json!(args.clients);
            result["errors"] = json!(errors);
            result["wall_s"] = json!(round3(wall.as_secs_f64()));
            result["per_s"] = json!((per_s * 10.0).round() / 10.0);
            result["latency_p50_ms"] = json!(percentile_ms(&latencies, 0.5));
            result["latency_p99_ms"] = json!(percentile_ms(&latencies, 0.99));
            result["cpu_ms_per_item"] = json!(round3(cpu * 1e3 / count as f64));
            let ops_after = store_ops(&bench.http, &args.url, &args.admin_token).await;
            result["store_ops_per_item"] = ops_per(&ops_before, &ops_after, count);
        }
    }
    result["polled"] = json!(bench.polled.load(Ordering::Relaxed));
    result["webhook_requests"] = json!(bench.receiver.log.requests.load(Ordering::Relaxed));
    result["webhook_duplicates"] = json!(bench.receiver.log.duplicates.load(Ordering::Relaxed));
    eprintln!("{result}");
    println!("{result}");
}
