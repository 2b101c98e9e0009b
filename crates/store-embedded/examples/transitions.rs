//! Benchmark: durable compare-and-set transitions per second through the `Store` API, against
//! the raw group-commit append rate of the same disk, in the same run.
//!
//! ```text
//! cargo run --release -p augur-store-embedded --example transitions -- \
//!     --dir /tmp/x --seconds 10 --concurrency 64
//! ```
//!
//! (a) `--concurrency` tokio tasks each own `--per-task` predictions and loop: `get`, then a
//! `write` that updates the record to the next revision (compare-and-set) with a `Count`
//! effect, in an `EmbeddedStore` opened with the given `--sync` (default `full`). (b) Then, in the same directory, one thread appends records
//! of the stored JSON's average size to a plain file in batches of the average group-commit
//! size (a) achieved, calling `fdatasync` (`File::sync_data`) after each batch. Prints both
//! rates, their ratio and the batch size, then one JSON line.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use augur_core::store::{Effect, Entity, Op, RecordStore, Write};
use augur_core::{AccountId, ModelName, Prediction, PredictionId, Status};
use augur_store_embedded::{EmbeddedOptions, EmbeddedStore, SyncMode};
use serde_json::json;

struct Args {
    dir: PathBuf,
    seconds: u64,
    concurrency: usize,
    per_task: usize,
    sync: SyncMode,
}

fn usage() -> ! {
    eprintln!(
        "usage: transitions --dir DIR [--seconds 10] [--concurrency 64] [--per-task 4] \
         [--sync full|normal]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: PathBuf::new(),
        seconds: 10,
        concurrency: 64,
        per_task: 4,
        sync: SyncMode::Full,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else { usage() };
        let number = || value.parse::<u64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(&value),
            "--seconds" => args.seconds = number().max(1),
            "--concurrency" => args.concurrency = number().max(1) as usize,
            "--per-task" => args.per_task = number().max(1) as usize,
            "--sync" => {
                args.sync = match value.as_str() {
                    "full" => SyncMode::Full,
                    "normal" => SyncMode::Normal,
                    _ => usage(),
                }
            }
            _ => usage(),
        }
    }
    if args.dir.as_os_str().is_empty() {
        usage()
    }
    args
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

struct StoreRun {
    transitions: u64,
    elapsed: Duration,
    average_batch: f64,
    record_bytes: usize,
    latencies: Vec<Duration>,
}

async fn run_store(args: &Args, dir: &Path) -> StoreRun {
    let store = Arc::new(
        EmbeddedStore::open(EmbeddedOptions::new(dir).with_sync(args.sync)).expect("open store"),
    );
    let model = ModelName::parse("bench/model").expect("model");
    let input = json!({"prompt": "a lighthouse at dusk, oil painting", "steps": 30, "seed": 42});

    // Each task creates its own predictions (concurrently, so group commit speeds this up too).
    let mut setup = Vec::new();
    for _ in 0..args.concurrency {
        let store = store.clone();
        let (model, input, per_task) = (model.clone(), input.clone(), args.per_task);
        setup.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let owner = AccountId::admin();
                let p = Prediction::new(
                    PredictionId::generate_for(&owner),
                    owner.clone(),
                    model.clone(),
                    "v1".into(),
                    input.clone(),
                );
                let record = p.to_record().expect("encode");
                store
                    .write(&Write::new(owner).op(Op::Insert(record)))
                    .await
                    .expect("create");
                ids.push(p.id);
            }
            ids
        }));
    }
    let mut owned = Vec::new();
    for task in setup {
        owned.push(task.await.expect("setup task"));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let before = store.commit_stats();
    let started = Instant::now();
    let mut workers = Vec::new();
    for ids in owned {
        let (store, stop, done) = (store.clone(), stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut bytes = 0usize;
            let mut step = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for id in &ids {
                    let t = Instant::now();
                    let current = store
                        .get(&id.key())
                        .await
                        .expect("get")
                        .expect("the task's prediction");
                    let mut next =
                        Prediction::clone(&current.decode::<Prediction>().expect("decode"));
                    step += 1;
                    next.status = Status::Processing;
                    next.logs = format!("step {step:08}\n");
                    let record = next.to_record().expect("encode");
                    if bytes == 0 {
                        bytes = record.size();
                    }
                    let write = Write::new(next.owner.clone())
                        .op(Op::Update {
                            record,
                            expected: current.revision,
                        })
                        .effects([Effect::count("bench_transitions", 1)]);
                    store
                        .write(&write)
                        .await
                        .expect("update (each task owns its predictions: no conflict)");
                    latencies.push(t.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            (latencies, bytes)
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let transitions_at_stop = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    let after = store.commit_stats();
    let mut latencies = Vec::new();
    let mut record_bytes = 0;
    for w in workers {
        let (l, bytes) = w.await.expect("worker");
        latencies.extend(l);
        record_bytes = record_bytes.max(bytes);
    }
    latencies.sort();
    let transactions = after.transactions - before.transactions;
    let requests = after.requests - before.requests;
    StoreRun {
        transitions: transitions_at_stop,
        elapsed,
        average_batch: if transactions == 0 {
            0.0
        } else {
            requests as f64 / transactions as f64
        },
        record_bytes,
        latencies,
    }
}

/// Appends `batch` records of `record_bytes` per `fdatasync` for `seconds`; records per second.
fn run_raw(path: &Path, record_bytes: usize, batch: usize, seconds: u64) -> (u64, Duration) {
    let mut file: File = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open raw file");
    let mut record = vec![b'x'; record_bytes.max(1)];
    if let Some(last) = record.last_mut() {
        *last = b'\n';
    }
    let buffer: Vec<u8> = record.repeat(batch.max(1));
    let until = Duration::from_secs(seconds);
    let started = Instant::now();
    let mut records = 0u64;
    while started.elapsed() < until {
        file.write_all(&buffer).expect("append");
        file.sync_data().expect("fdatasync");
        records += batch.max(1) as u64;
    }
    (records, started.elapsed())
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let store_dir = args.dir.join("bench-store");
    let raw_path = args.dir.join("bench-raw-append.log");
    let _ = std::fs::remove_dir_all(&store_dir);
    let _ = std::fs::remove_file(&raw_path);
    std::fs::create_dir_all(&args.dir).expect("create --dir");

    let run = run_store(&args, &store_dir).await;
    let transitions_per_s = run.transitions as f64 / run.elapsed.as_secs_f64();
    let batch = run.average_batch.round().max(1.0) as usize;

    let raw_dir = args.dir.clone();
    let (record_bytes, seconds) = (run.record_bytes, args.seconds);
    let raw_file = raw_path.clone();
    let (raw_records, raw_elapsed) =
        tokio::task::spawn_blocking(move || run_raw(&raw_file, record_bytes, batch, seconds))
            .await
            .expect("raw append");
    let _ = std::fs::remove_file(&raw_path);
    let raw_per_s = raw_records as f64 / raw_elapsed.as_secs_f64();
    let ratio = transitions_per_s / raw_per_s;
    let (p50, p99) = (
        percentile(&run.latencies, 0.50),
        percentile(&run.latencies, 0.99),
    );

    println!("directory:            {}", raw_dir.display());
    println!(
        "store transitions:    {transitions_per_s:.0}/s (sync={}, {} tasks x {} predictions, {:.1} s; get+update p50 {p50:.2} ms, p99 {p99:.2} ms)",
        args.sync,
        args.concurrency,
        args.per_task,
        run.elapsed.as_secs_f64()
    );
    println!(
        "average group commit: {:.1} requests/transaction",
        run.average_batch
    );
    println!(
        "record size:          {} bytes (prediction JSON)",
        run.record_bytes
    );
    println!(
        "raw append:           {raw_per_s:.0} records/s ({batch} records of {} bytes per fdatasync)",
        run.record_bytes
    );
    println!(
        "ratio:                {:.1}% (target >= 20%)",
        ratio * 100.0
    );
    println!(
        "{}",
        json!({
            "bench": "embedded_transitions",
            "sync": args.sync.as_str(),
            "seconds": args.seconds,
            "concurrency": args.concurrency,
            "per_task": args.per_task,
            "transitions_per_s": transitions_per_s.round(),
            "raw_records_per_s": raw_per_s.round(),
            "ratio": (ratio * 1000.0).round() / 1000.0,
            "average_batch": (run.average_batch * 10.0).round() / 10.0,
            "record_bytes": run.record_bytes,
            "p50_ms": (p50 * 100.0).round() / 100.0,
            "p99_ms": (p99 * 100.0).round() / 100.0,
        })
    );
}
