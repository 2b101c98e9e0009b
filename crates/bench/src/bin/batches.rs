//! `batches`: the batch benchmarks of `bench/batches.sh` (issue 10), one measurement per
//! process against a running Augur server on loopback.
//!
//! ```text
//! batches --url http://127.0.0.1:PORT --token TOKEN
//!         --measure batch-accept|single-accept|batch-webhook|single-webhook
//!         [--items 1000] [--clients 64] [--pids PID,PID] [--timeout 300]
//! ```
//!
//! Every measurement first warms up, untimed: `--clients` concurrent `GET /v1/models/augur/echo`
//! (so that the client's pool holds that many open connections), one single create with
//! `Prefer: wait` and one one-item batch, waited for until it completed. Then:
//!
//! - **batch-accept**: one `POST /v1/batches` of `--items` `augur/echo` inputs (the body
//!   serialized beforehand), timed from the request to the 201 with its body read. Afterwards
//!   (not part of the figure) the batch is polled every 20 ms until it completed
//!   (`settled_s`, from the request).
//! - **single-accept**: `--items` `POST /v1/models/augur/echo/predictions` (no `Prefer: wait`)
//!   from `--clients` tasks taking the next item in turn, timed from the start until the last
//!   one got its 201 (also each request's latency, p50 and p99).
//! - **batch-webhook**: as batch-accept with `"webhook"` naming a receiver (axum on
//!   `127.0.0.1:0`, answering 204), timed from the request to the arrival of the
//!   `batch.completed` message (and to the 201).
//! - **single-webhook**: as single-accept, each create with the receiver as `"webhook"` and
//!   `"webhook_events_filter": ["completed"]`, timed from the start until the last
//!   prediction's `completed` message arrived (and until the last 201).
//!
//! Around the timed part it reads the server's `/metrics` (the store operations' counts and
//! summed durations, `augur_store_operation_duration_seconds`) and the CPU time of `--pids`
//! and of their child processes (Augur; PostgreSQL's postmaster and its backends), and
//! reports the differences. Per item figures divide by `--items`. From the server's timestamps
//! (same machine, same clock) it also reports when the last item's `completed_at` fell and,
//! for batches, the batch's `completed_at` (seconds from the start), which split the time to
//! the webhook into processing, the tally and the delivery.
//!
//! Human-readable lines go to stderr; stdout is one JSON object.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use augur_core::Timestamp;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    BatchAccept,
    SingleAccept,
    BatchWebhook,
    SingleWebhook,
}

impl Measure {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "batch-accept" => Self::BatchAccept,
            "single-accept" => Self::SingleAccept,
            "batch-webhook" => Self::BatchWebhook,
            "single-webhook" => Self::SingleWebhook,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::BatchAccept => "batch-accept",
            Self::SingleAccept => "single-accept",
            Self::BatchWebhook => "batch-webhook",
            Self::SingleWebhook => "single-webhook",
        }
    }
}

struct Args {
    url: String,
    token: String,
    measure: Measure,
    items: usize,
    clients: usize,
    pids: Vec<u32>,
    timeout: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: batches --url URL --token TOKEN --measure batch-accept|single-accept|batch-webhook|single-webhook [--items 1000] [--clients 64] [--pids PID,PID] [--timeout 300]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        url: String::new(),
        token: String::new(),
        measure: Measure::BatchAccept,
        items: 1000,
        clients: 64,
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
            "--token" => args.token = value,
            "--measure" => measure = Some(Measure::parse(&value).unwrap_or_else(|| usage())),
            "--items" => args.items = number(&value) as usize,
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
    if args.url.is_empty() || args.token.is_empty() || args.items == 0 {
        usage();
    }
    args.measure = measure.unwrap_or_else(|| usage());
    args
}

/// CPU seconds of each of `pids` (see [`cpu_s`]).
fn cpu_each(pids: &[u32]) -> Vec<f64> {
    pids.iter().map(|&pid| cpu_s(&[pid])).collect()
}

/// `server_cpu_s` (every pid), `augur_cpu_s` (the first) and `others_cpu_s` (the rest: the
/// PostgreSQL postmaster and its backends).
fn cpu_fields(result: &mut Value, before: &[f64], after: &[f64]) {
    let delta: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let total: f64 = delta.iter().sum();
    result["server_cpu_s"] = json!(round3(total));
    result["augur_cpu_s"] = json!(round3(delta.first().copied().unwrap_or(0.0)));
    result["others_cpu_s"] = json!(round3(delta.iter().skip(1).sum()));
}

/// CPU seconds (user + system) of `pids`, their ended children and their live children.
fn cpu_s(pids: &[u32]) -> f64 {
    fn fields(pid: u32) -> Vec<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // After "pid (comm) ": utime is field 14, stime 15, cutime 16, cstime 17.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        rest.split_whitespace()
            .skip(11)
            .take(4)
            .map(|v| v.parse().unwrap_or(0))
            .collect()
    }
    let mut ticks = 0u64;
    for &pid in pids {
        ticks += fields(pid).iter().sum::<u64>();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            ticks += fields(child).iter().take(2).sum::<u64>();
        }
    }
    // /proc reports in USER_HZ, 100 per second on Linux.
    ticks as f64 / 100.0
}

/// `operation` → (count, seconds) of `augur_store_operation_duration_seconds`, outcomes summed.
type StoreOps = BTreeMap<String, (f64, f64)>;

async fn store_ops(client: &reqwest::Client, args: &Args) -> StoreOps {
    let text = match client
        .get(format!("{}/metrics", args.url))
        .bearer_auth(&args.token)
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut ops = StoreOps::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("augur_store_operation_duration_seconds_") else {
            continue;
        };
        let (kind, rest) = rest.split_once('{').unwrap_or(("", ""));
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
        let entry = ops.entry(op).or_default();
        match kind {
            "count" => entry.0 += value,
            "sum" => entry.1 += value,
            _ => {}
        }
    }
    ops
}

/// The store operations between two snapshots, as JSON (only those that ran).
fn ops_delta(before: &StoreOps, after: &StoreOps) -> Value {
    let mut out = serde_json::Map::new();
    for (op, (count, sum)) in after {
        let (c0, s0) = before.get(op).copied().unwrap_or_default();
        if count - c0 > 0.0 {
            out.insert(
                op.clone(),
                json!({ "count": count - c0, "seconds": round3(sum - s0) }),
            );
        }
    }
    Value::Object(out)
}

/// What the receiver saw: the first arrival of each object id (the body's `"id"`) whose body
/// says it is settled (a batch's `batch.completed`, a prediction's `completed`).
struct ReceiverLog {
    base: Instant,
    arrivals: Mutex<HashMap<String, (Duration, Value)>>,
    requests: AtomicUsize,
    duplicates: AtomicUsize,
    arrived: Notify,
}

struct Receiver {
    url: String,
    log: Arc<ReceiverLog>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start(base: Instant) -> Self {
        let log = Arc::new(ReceiverLog {
            base,
            arrivals: Mutex::new(HashMap::new()),
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
            url: format!("http://{addr}/hooks/augur"),
            log,
            task,
        }
    }

    /// Waits until `n` distinct settled objects arrived or `limit` passed; returns the arrivals.
    async fn wait_for(&self, n: usize, limit: Duration) -> HashMap<String, (Duration, Value)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.log.arrived.notified();
            {
                let arrivals = self.log.arrivals.lock().await;
                if arrivals.len() >= n {
                    return arrivals.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.log.arrivals.lock().await.clone();
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(log): State<Arc<ReceiverLog>>,
    _headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = log.base.elapsed();
    log.requests.fetch_add(1, Ordering::Relaxed);
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::NO_CONTENT;
    };
    let settled = matches!(
        value["status"].as_str(),
        Some("succeeded" | "failed" | "canceled" | "completed_with_errors")
    );
    if let (true, Some(id)) = (settled, value["id"].as_str()) {
        let mut arrivals = log.arrivals.lock().await;
        if arrivals.contains_key(id) {
            log.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            arrivals.insert(id.to_owned(), (at, value));
            log.arrived.notify_waiters();
        }
    }
    StatusCode::NO_CONTENT
}

fn input(i: usize) -> Value {
    json!({ "text": format!("hello from the batch benchmark, item {i}") })
}

/// POSTs `body` to `path` with the token; returns the status and the parsed body.
async fn post(
    client: &reqwest::Client,
    args: &Args,
    path: &str,
    body: Vec<u8>,
    wait: bool,
) -> (u16, Value) {
    let mut request = client
        .post(format!("{}{path}", args.url))
        .bearer_auth(&args.token)
        .header("content-type", "application/json")
        .body(body);
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

/// Polls a batch until its status is terminal; returns it, or the last answer at the deadline.
async fn poll_batch(client: &reqwest::Client, args: &Args, id: &str, deadline: Instant) -> Value {
    loop {
        let value: Value = match client
            .get(format!("{}/v1/batches/{id}", args.url))
            .bearer_auth(&args.token)
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let done = !matches!(
            value["status"].as_str(),
            None | Some("starting" | "processing")
        );
        if done || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn warm_up(client: &reqwest::Client, args: &Args) {
    let tasks: Vec<_> = (0..args.clients)
        .map(|_| {
            let client = client.clone();
            let url = format!("{}/v1/models/augur/echo", args.url);
            let token = args.token.clone();
            tokio::spawn(async move {
                let _ = client.get(url).bearer_auth(token).send().await;
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let body = serde_json::to_vec(&json!({ "input": input(0) })).expect("json");
    let (status, _) = post(
        client,
        args,
        "/v1/models/augur/echo/predictions",
        body,
        true,
    )
    .await;
    assert_eq!(status, 201, "warm-up create");
    let body =
        serde_json::to_vec(&json!({ "model": "augur/echo", "inputs": [input(0)] })).expect("json");
    let (status, batch) = post(client, args, "/v1/batches", body, false).await;
    assert_eq!(status, 201, "warm-up batch: {batch}");
    let id = batch["id"].as_str().expect("batch id").to_owned();
    let done = poll_batch(client, args, &id, Instant::now() + Duration::from_secs(60)).await;
    eprintln!("warm-up batch: {}", done["status"]);
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    (sorted[i].as_secs_f64() * 1e6).round() / 1e3
}

/// `--items` single creates from `--clients` tasks; returns (time of the last 201, latencies,
/// non-201 answers).
async fn singles(
    client: &reqwest::Client,
    args: &Arc<Args>,
    webhook: Option<&str>,
    start: Instant,
) -> (Duration, Vec<Duration>, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..args.clients)
        .map(|_| {
            let client = client.clone();
            let args = args.clone();
            let next = next.clone();
            let webhook = webhook.map(str::to_owned);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.items {
                        break;
                    }
                    let body = match &webhook {
                        None => json!({ "input": input(i) }),
                        Some(url) => json!({
                            "input": input(i),
                            "webhook": url,
                            "webhook_events_filter": ["completed"],
                        }),
                    };
                    let body = serde_json::to_vec(&body).expect("json");
                    let sent = Instant::now();
                    let (status, answer) = post(
                        &client,
                        &args,
                        "/v1/models/augur/echo/predictions",
                        body,
                        false,
                    )
                    .await;
                    latencies.push(sent.elapsed());
                    if status != 201 {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("create {i}: {status} {answer}");
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(args.items);
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.expect("client task");
        latencies.extend(l);
        errors += e;
    }
    let last = start.elapsed();
    latencies.sort();
    (last, latencies, errors)
}

fn batch_body(args: &Args, webhook: Option<&str>) -> Vec<u8> {
    let inputs: Vec<Value> = (0..args.items).map(input).collect();
    let mut body = json!({ "model": "augur/echo", "inputs": inputs });
    if let Some(url) = webhook {
        body["webhook"] = json!(url);
    }
    serde_json::to_vec(&body).expect("json")
}

/// Seconds from `start` (wall clock) to a server timestamp in RFC 3339 (same machine, same
/// clock), or null.
fn wall_s(start: SystemTime, value: &Value) -> Value {
    let start_us = start
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    value
        .as_str()
        .and_then(|t| Timestamp::parse_rfc3339(t).ok())
        .map_or(Value::Null, |t| {
            json!(round3((t.as_micros() - start_us) as f64 / 1e6))
        })
}

/// The latest `completed_at` of a batch's items (every page of `/v1/batches/{id}/predictions`).
async fn last_item_completed(client: &reqwest::Client, args: &Args, id: &str) -> Value {
    let mut url = format!("{}/v1/batches/{id}/predictions?limit=1000", args.url);
    let mut last: Option<String> = None;
    loop {
        let Ok(response) = client.get(&url).bearer_auth(&args.token).send().await else {
            return Value::Null;
        };
        let page: Value = response.json().await.unwrap_or(Value::Null);
        for item in page["results"].as_array().into_iter().flatten() {
            if let Some(at) = item["completed_at"].as_str()
                && last.as_deref().is_none_or(|l| at > l)
            {
                last = Some(at.to_owned());
            }
        }
        match page["next"].as_str() {
            Some(next) => url = next.to_owned(),
            None => return last.map_or(Value::Null, Value::String),
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

#[tokio::main]
async fn main() {
    let args = Arc::new(parse_args());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(args.timeout)
        .build()
        .expect("http client");
    warm_up(&client, &args).await;
    let base = Instant::now();
    let receiver = match args.measure {
        Measure::BatchWebhook | Measure::SingleWebhook => Some(Receiver::start(base).await),
        _ => None,
    };
    let webhook = receiver.as_ref().map(|r| r.url.clone());
    let is_batch = matches!(args.measure, Measure::BatchAccept | Measure::BatchWebhook);
    let body = is_batch.then(|| batch_body(&args, webhook.as_deref()));
    let body_bytes = body.as_ref().map_or(0, Vec::len);

    let ops_before = store_ops(&client, &args).await;
    let cpu_before = cpu_each(&args.pids);
    let start_wall = SystemTime::now();
    let start = Instant::now();
    let mut result = json!({
        "measure": args.measure.as_str(),
        "items": args.items,
        "clients": if is_batch { 1 } else { args.clients },
    });
    let accept;
    if let Some(body) = body {
        let (status, batch) = post(&client, &args, "/v1/batches", body, false).await;
        accept = start.elapsed();
        let cpu_after = cpu_each(&args.pids);
        let ops_after = store_ops(&client, &args).await;
        assert_eq!(status, 201, "batch create: {batch}");
        result["body_bytes"] = json!(body_bytes);
        cpu_fields(&mut result, &cpu_before, &cpu_after);
        result["store_ops"] = ops_delta(&ops_before, &ops_after);
        let id = batch["id"].as_str().expect("batch id").to_owned();
        let done = if let Some(receiver) = &receiver {
            let arrivals = receiver.wait_for(1, args.timeout).await;
            let (at, value) = arrivals.get(&id).cloned().expect("batch.completed arrived");
            let at = at.saturating_sub(start.duration_since(base));
            result["webhook_s"] = json!(round3(at.as_secs_f64()));
            result["webhook_counts"] = value["counts"].clone();
            result["webhook_status"] = value["status"].clone();
            result["receiver_requests"] = json!(receiver.log.requests.load(Ordering::Relaxed));
            value
        } else {
            let done = poll_batch(&client, &args, &id, start + args.timeout).await;
            result["settled_s"] = json!(round3(start.elapsed().as_secs_f64()));
            result["final_status"] = done["status"].clone();
            result["final_counts"] = done["counts"].clone();
            done
        };
        // Server timestamps, seconds from the request: the last item settled, the batch's
        // tally marked it completed.
        let last = last_item_completed(&client, &args, &id).await;
        result["last_item_completed_s"] = wall_s(start_wall, &last);
        result["batch_completed_s"] = wall_s(start_wall, &done["completed_at"]);
    } else {
        let (last, latencies, errors) = singles(&client, &args, webhook.as_deref(), start).await;
        accept = last;
        let cpu_after = cpu_each(&args.pids);
        let ops_after = store_ops(&client, &args).await;
        result["errors"] = json!(errors);
        result["latency_p50_ms"] = json!(percentile_ms(&latencies, 0.5));
        result["latency_p99_ms"] = json!(percentile_ms(&latencies, 0.99));
        cpu_fields(&mut result, &cpu_before, &cpu_after);
        result["store_ops"] = ops_delta(&ops_before, &ops_after);
        if let Some(receiver) = &receiver {
            let arrivals = receiver.wait_for(args.items, args.timeout).await;
            let offset = start.duration_since(base);
            let last = arrivals
                .values()
                .map(|(at, _)| *at)
                .max()
                .unwrap_or_default();
            result["webhook_s"] = json!(round3(last.saturating_sub(offset).as_secs_f64()));
            result["webhooks_received"] = json!(arrivals.len());
            let last_completed = arrivals
                .values()
                .filter_map(|(_, v)| v["completed_at"].as_str())
                .max()
                .map_or(Value::Null, |t| Value::String(t.to_owned()));
            result["last_item_completed_s"] = wall_s(start_wall, &last_completed);
            result["webhooks_succeeded"] = json!(
                arrivals
                    .values()
                    .filter(|(_, v)| v["status"] == "succeeded")
                    .count()
            );
            result["receiver_requests"] = json!(receiver.log.requests.load(Ordering::Relaxed));
            result["receiver_duplicates"] = json!(receiver.log.duplicates.load(Ordering::Relaxed));
        }
    }
    let accept_s = accept.as_secs_f64();
    result["accept_s"] = json!(round3(accept_s));
    result["accept_us_per_item"] = json!((accept_s * 1e6 / args.items as f64).round());
    if let Some(w) = result["webhook_s"].as_f64() {
        result["webhook_us_per_item"] = json!((w * 1e6 / args.items as f64).round());
    }
    eprintln!("{result}");
    println!("{result}");
}
