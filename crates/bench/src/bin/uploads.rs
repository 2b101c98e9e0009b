//! `uploads`: the upload throughput benchmark of `bench/uploads.sh` (issue 10): files per
//! second and MB per second through `POST /v1/files`, beside a plain HTTP `PUT` of the same
//! bytes to the same object store, on loopback.
//!
//! ```text
//! uploads client --target files|put --url URL [--token T] --size BYTES --count N
//!                [--concurrency C] [--prefix P]
//! uploads put-server --dir DIR
//! ```
//!
//! - `client --target files`: `--count` uploads of `--size` random bytes (the same bytes every
//!   time) to `URL/v1/files` as `multipart/form-data` with one `content` field (the body is
//!   built once, with a `Content-Length`, as the official clients send a file), from
//!   `--concurrency` tasks; each answer must be a 201 whose `size` is `--size`.
//! - `client --target put`: the same bytes as the whole body of `PUT URL/<prefix>-<n>`: with
//!   moto's S3 server, a plain (single-request) S3 `PutObject`; with `put-server`, a file.
//!   Each answer must be a 2xx.
//! - `put-server`: the local-directory reference, an axum server on `127.0.0.1:0` (it prints
//!   `listening on http://...`) whose `PUT /{key}` streams the body into `DIR/<key>` the way
//!   object_store's `LocalFileSystem` writes (a staging file in the same directory, renamed
//!   into place when complete, no fsync), through a 1 MiB buffer.
//!
//! The client prints one JSON line: elapsed seconds (first request sent to last answer read),
//! files/s, MB/s (10^6 bytes of file content, not counting multipart framing) and the latency
//! percentiles of single requests.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// The client's allocator, as in the other benchmark binaries.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BOUNDARY: &str = "augur-bench-boundary-7d1c4f";

fn usage() -> ! {
    eprintln!(
        "usage: uploads client --target files|put --url URL [--token T] --size BYTES --count N \
         [--concurrency C] [--prefix P]\n       uploads put-server --dir DIR"
    );
    std::process::exit(2)
}

#[derive(Debug)]
struct ClientArgs {
    target: String,
    url: String,
    token: String,
    size: usize,
    count: usize,
    concurrency: usize,
    prefix: String,
}

fn parse_client(mut it: impl Iterator<Item = String>) -> ClientArgs {
    let mut args = ClientArgs {
        target: String::new(),
        url: String::new(),
        token: String::new(),
        size: 0,
        count: 0,
        concurrency: 4,
        prefix: "ref".into(),
    };
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else { usage() };
        let number = || value.parse::<usize>().unwrap_or_else(|_| usage()).max(1);
        match flag.as_str() {
            "--target" => args.target = value.clone(),
            "--url" => args.url = value.trim_end_matches('/').to_owned(),
            "--token" => args.token = value.clone(),
            "--size" => args.size = number(),
            "--count" => args.count = number(),
            "--concurrency" => args.concurrency = number(),
            "--prefix" => args.prefix = value.clone(),
            _ => usage(),
        }
    }
    if !matches!(args.target.as_str(), "files" | "put")
        || args.url.is_empty()
        || args.size == 0
        || args.count == 0
    {
        usage()
    }
    args
}

/// `n` bytes that do not compress (xorshift), the same on every run.
fn content(n: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The whole `multipart/form-data` body of an upload of `bytes`.
fn multipart(bytes: &[u8]) -> Bytes {
    let mut body = format!(
        "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"content\"; filename=\"bench.bin\"\r\n\
         content-type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Bytes::from(body)
}

/// One request; its latency, or why it failed.
async fn send(
    http: &reqwest::Client,
    args: &ClientArgs,
    body: Bytes,
    n: usize,
) -> Result<Duration, String> {
    let started = Instant::now();
    let request = if args.target == "files" {
        http.post(format!("{}/v1/files", args.url))
            .bearer_auth(&args.token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
    } else {
        http.put(format!("{}/{}-{n}", args.url, args.prefix))
            .header("content-type", "application/octet-stream")
    };
    let response = request.body(body).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    if args.target == "files" {
        let size = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["size"].as_u64());
        if size != Some(args.size as u64) {
            return Err(format!("the file's size is {size:?}, not {}", args.size));
        }
    }
    Ok(started.elapsed())
}

async fn client(args: ClientArgs) {
    let bytes = content(args.size);
    let body = if args.target == "files" {
        multipart(&bytes)
    } else {
        Bytes::from(bytes)
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("an HTTP client");
    let args = Arc::new(args);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency.min(args.count))
        .map(|_| {
            let (http, args, next, body) = (http.clone(), args.clone(), next.clone(), body.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= args.count {
                        return Ok::<_, String>(latencies);
                    }
                    latencies.push(send(&http, &args, body.clone(), n).await?);
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(args.count);
    for task in tasks {
        match task.await.expect("a client task") {
            Ok(l) => latencies.extend(l),
            Err(e) => {
                eprintln!("uploads: a request failed: {e}");
                std::process::exit(1);
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let ms = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        (latencies[i].as_secs_f64() * 1e5).round() / 100.0
    };
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    println!(
        "{}",
        json!({
            "target": args.target,
            "size": args.size,
            "count": args.count,
            "concurrency": args.concurrency,
            "seconds": round2(seconds),
            "files_per_s": round2(args.count as f64 / seconds),
            "mb_per_s": round2((args.count * args.size) as f64 / 1e6 / seconds),
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
        })
    );
}

/// `PUT /{key}`: the body into `dir/key` through a staging file renamed into place.
async fn put_file(
    State(dir): State<Arc<PathBuf>>,
    Path(key): Path<String>,
    body: Body,
) -> StatusCode {
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return StatusCode::BAD_REQUEST;
    }
    let staging = dir.join(format!("{key}#staging"));
    let write = async {
        let file = tokio::fs::File::create(&staging).await?;
        let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.map_err(std::io::Error::other)?)
                .await?;
        }
        file.flush().await?;
        tokio::fs::rename(&staging, dir.join(&key)).await
    };
    match write.await {
        Ok(()) => StatusCode::CREATED,
        Err(e) => {
            eprintln!("put-server: {key}: {e}");
            let _ = tokio::fs::remove_file(&staging).await;
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

async fn put_server(dir: PathBuf) {
    std::fs::create_dir_all(&dir).expect("the directory");
    let app = Router::new()
        .route("/{key}", put(put_file))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(Arc::new(dir));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    println!(
        "listening on http://{}",
        listener.local_addr().expect("an address")
    );
    axum::serve(listener, app).await.expect("serve");
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("client") => client(parse_client(args)).await,
        Some("put-server") => match (args.next().as_deref(), args.next()) {
            (Some("--dir"), Some(dir)) => put_server(PathBuf::from(dir)).await,
            _ => usage(),
        },
        _ => usage(),
    }
}
