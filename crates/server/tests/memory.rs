//! The memory budget on the real binary, in the case issue 12 reported: one account creates
//! 300 predictions with ~900 KB inputs (echoed back as ~900 KB outputs), reads each once and
//! lists them with `GET /v1/predictions?limit=300`, following `next` to the end. The
//! server's peak resident memory (`VmHWM` in `/proc/<pid>/status`, kept by the kernel) must
//! stay under the budget [`Budget`] states, and so must its heap (`RssAnon`, sampled every
//! 10 ms; the embedded store also maps its database file for reads, which is resident but
//! file-backed, and reclaimable).
//!
//! `AUGUR_TEST_BIN` runs the same scenario on another `augur` binary (the "before" figure
//! in BENCHMARKS.md); the assertion is then skipped, only the figures are printed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use common::{Api, TOKEN, TestServer};

const PREDICTIONS: usize = 300;
const INPUT_BYTES: usize = 900_000;
/// Requests in flight at once.
const CONCURRENCY: usize = 8;

/// The stated budget of a node with the default settings, in MiB (README, *Memory*):
///
/// heap ≤ base + `AUGUR_CACHE_BYTES` + `AUGUR_LIST_PAGE_BYTES` × 2 × lists in flight
///        + Σ over requests in flight of (16 × body + 3 × structure),
/// resident ≤ heap + the embedded store's read maps (256 MiB for each of its 5 connections)
///        + the binary's pages (at most its file's size) + 16 MiB of libraries (all
///        file-backed),
///
/// where a body's structure is what its values take decoded besides its text, at most 8 MiB
/// (`augur_core::json_shape`, refused beyond by the API).
struct Budget;

impl Budget {
    /// An idle node: the runtime, the store's connections and SQLite's page caches.
    const BASE: u64 = 64;
    /// `AUGUR_CACHE_BYTES` (128 MiB by default): the read cache and the rendered-JSON cache.
    const CACHES: u64 = 128;
    /// `AUGUR_LIST_PAGE_BYTES` (4 MiB) per list in flight, counted twice: the page's text
    /// and the records of the round being rendered.
    const PAGE: u64 = 2 * 4;
    /// The embedded store's read maps, resident but file-backed: its writer and 4 readers
    /// each map up to 256 MiB of the database file (`mmap_size`), and a page mapped by
    /// several counts once per map.
    const STORE_MAP: u64 = 5 * 256;
    /// Shared libraries and SQLite's WAL index, besides the binary's own pages.
    const LIBRARIES: u64 = 16;

    /// The pages of the binary (at most its file's size: a test build is unoptimized and
    /// large) and its libraries.
    fn binary() -> u64 {
        let path = std::env::var_os("AUGUR_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_augur").into());
        std::fs::metadata(path).map_or(0, |m| m.len() >> 20) + Self::LIBRARIES
    }

    /// What one request in flight may hold, for a body of `body` MiB whose values take
    /// `structure` MiB decoded besides its text: the body, its decoded input, the echoed
    /// output, the records' texts as encoded, written and read back at each step of the
    /// lifecycle, the decoded record and the rendered answer (16 copies of the text at most;
    /// about 11 measured), and three decoded trees (input, output, and the input decoded
    /// again on a read).
    fn per_request(body: f64, structure: f64) -> u64 {
        (16.0 * body + 3.0 * structure).ceil() as u64
    }

    fn heap(requests: u64, per_request: u64, lists: u64) -> u64 {
        Self::BASE + Self::CACHES + Self::PAGE * lists + per_request * requests
    }
}

/// A field of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        / 1024
}

/// Samples the heap of `pid` every 10 ms; the peak seen so far, in MiB.
struct PeakHeap {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl PeakHeap {
    fn watch(pid: u32) -> Self {
        let (peak, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                p.fetch_max(status_mib(pid, "RssAnon"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }
}

impl Drop for PeakHeap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The peaks after each phase, in MiB, and how long the phases took.
#[derive(Debug, Default)]
struct Phases {
    heap: Vec<(&'static str, u64, u64, f64)>,
}

impl Phases {
    fn mark(&mut self, name: &'static str, pid: u32, heap: &PeakHeap, since: &mut Instant) {
        eprintln!(
            "after {name}: heap {} MiB, VmHWM {} MiB, {:.1}s",
            heap.peak(),
            status_mib(pid, "VmHWM"),
            since.elapsed().as_secs_f64()
        );
        self.heap.push((
            name,
            heap.peak(),
            status_mib(pid, "VmHWM"),
            since.elapsed().as_secs_f64(),
        ));
        *since = Instant::now();
    }

    fn report(&self) -> String {
        self.heap
            .iter()
            .map(|(name, heap, hwm, secs)| {
                format!("{name}: heap {heap} MiB, VmHWM {hwm} MiB, {secs:.1}s")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Creates `n` predictions of `augur/echo` with the inputs `input(i)`, `CONCURRENCY` at a
/// time; their ids.
async fn create_all(api: &Api, n: usize, input: impl Fn(usize) -> Value) -> Vec<String> {
    futures::stream::iter((0..n).map(|i| (i, input(i))))
        .map(|(i, input)| {
            let api = api.clone();
            async move {
                let (status, body) = api.create("augur/echo", input).await.unwrap();
                assert_eq!(status, 201, "create {i}: {body}");
                body["id"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// Lists every prediction with `limit`, following `next` to the end; the ids, and the
/// number of pages.
async fn list_all(api: &Api, limit: usize) -> (Vec<String>, usize) {
    let mut url = format!("{}/v1/predictions?limit={limit}", api.base);
    let (mut seen, mut pages) = (Vec::new(), 0);
    loop {
        let page: Value = api
            .http
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        seen.extend(
            page["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => url = next.to_owned(),
            None => return (seen, pages),
        }
    }
}

/// Whether this run measures another binary (no assertion then).
fn other_binary() -> bool {
    std::env::var_os("AUGUR_TEST_BIN").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_issues_hostile_account_stays_within_the_memory_budget() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipping: no /proc on this system");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Bodies a little over 900 KB must be accepted; everything else is the default.
    let server = TestServer::start(
        &dir.path().join("data"),
        &[("AUGUR_MAX_BODY_BYTES", "2000000")],
    );
    let pid = server.pid();
    let api = server.client();
    let started = Instant::now();
    let mut since = Instant::now();
    let baseline = status_mib(pid, "RssAnon");
    let heap = PeakHeap::watch(pid);
    let mut phases = Phases::default();

    // Distinct inputs, so no layer can share them.
    let ids = create_all(
        &api,
        PREDICTIONS,
        |i| json!({ "prompt": format!("{i:06}{}", "x".repeat(INPUT_BYTES - 6)) }),
    )
    .await;
    phases.mark("creates", pid, &heap, &mut since);

    // Read each once (settled: its output is as big as its input).
    futures::stream::iter(ids.iter())
        .map(|id| {
            let api = api.clone();
            async move {
                let body = api.settled(id, Duration::from_secs(60)).await;
                assert_eq!(body["status"], "succeeded", "{body}");
                assert_eq!(body["input"]["prompt"].as_str().unwrap().len(), INPUT_BYTES);
            }
        })
        .buffer_unordered(CONCURRENCY)
        .for_each(|()| async {})
        .await;
    phases.mark("reads", pid, &heap, &mut since);

    // One list with limit=300, as the issue did, followed to the end: every prediction is
    // listed once, however many items a page holds.
    let (mut seen, pages) = list_all(&api, PREDICTIONS).await;
    phases.mark("list", pid, &heap, &mut since);
    let mut expected = ids.clone();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected, "the pages list every prediction once");

    std::thread::sleep(Duration::from_millis(20));
    let (peak, hwm) = (heap.peak(), status_mib(pid, "VmHWM"));
    let per_request = Budget::per_request(INPUT_BYTES as f64 / f64::from(1 << 20), 0.0);
    let heap_budget = Budget::heap(CONCURRENCY as u64, per_request, 1);
    let resident_budget = heap_budget + Budget::STORE_MAP + Budget::binary();
    eprintln!(
        "{PREDICTIONS} predictions of {INPUT_BYTES} bytes: heap (RssAnon) at start {baseline} \
         MiB, peak {peak} MiB (budget {heap_budget}); VmHWM {hwm} MiB (budget \
         {resident_budget}); {pages} list pages; {}; {:.1}s in all",
        phases.report(),
        started.elapsed().as_secs_f64()
    );
    if other_binary() {
        return;
    }
    assert!(
        peak < heap_budget,
        "peak heap {peak} MiB passed the {heap_budget} MiB budget ({})",
        phases.report()
    );
    assert!(
        hwm < resident_budget,
        "peak resident memory {hwm} MiB passed the {resident_budget} MiB budget ({})",
        phases.report()
    );
}

/// A body `{"input":{"items":[{"":0},{"":0},…]}}` with `objects` objects: decoded, each takes
/// about a hundred times its 7 bytes of text.
fn tree_body(objects: usize, tag: usize) -> String {
    format!(
        "{{\"input\":{{\"tag\":{tag},\"items\":[{}{{\"\":0}}]}}}}",
        "{\"\":0},".repeat(objects - 1)
    )
}

/// Creates an `augur/echo` prediction from the JSON text `body`; the answer's status and
/// body.
async fn create_raw(api: &Api, body: String) -> (u16, Value) {
    let response = api
        .http
        .post(format!("{}/v1/models/augur/echo/predictions", api.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Creates `n` predictions from `tree_body(objects, i)`, `CONCURRENCY` at a time, and reads
/// each that was created once; the statuses of the creates and the error of the first refused
/// one.
async fn create_trees_and_read(api: &Api, n: usize, objects: usize) -> (Vec<u16>, Option<Value>) {
    let answers: Vec<(u16, Value)> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move { create_raw(&api, tree_body(objects, i)).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    futures::stream::iter(answers.iter().filter(|(status, _)| *status == 201))
        .map(|(_, body)| {
            let api = api.clone();
            async move {
                let id = body["id"].as_str().unwrap();
                let read = api.settled(id, Duration::from_secs(120)).await;
                assert_eq!(read["status"], "succeeded", "{read}");
                assert_eq!(read["input"]["items"].as_array().unwrap().len(), objects);
            }
        })
        .buffer_unordered(CONCURRENCY)
        .for_each(|()| async {})
        .await;
    let refused = answers
        .iter()
        .find(|(s, _)| *s != 201)
        .map(|(_, b)| b.clone());
    (answers.iter().map(|(s, _)| *s).collect(), refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inputs_that_decode_into_far_more_than_their_text_are_refused_within_the_budget() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipping: no /proc on this system");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[("AUGUR_MAX_BODY_BYTES", "2000000")],
    );
    let pid = server.pid();
    let api = server.client();
    let mut since = Instant::now();
    let baseline = status_mib(pid, "RssAnon");
    let heap = PeakHeap::watch(pid);
    let mut phases = Phases::default();

    // ~900 KB of `{"":0},`: 128,000 objects, which would decode into ~90 MB each.
    let hostile = 128_000;
    let (statuses, refused) = create_trees_and_read(&api, 2 * CONCURRENCY, hostile).await;
    phases.mark(
        "hostile creates (and reads, if created)",
        pid,
        &heap,
        &mut since,
    );
    // The largest such tree the limit takes (8 MiB of structure at 800 bytes an object),
    // read back once: the worst an accepted input can cost.
    let largest = 10_000;
    let (accepted, _) = create_trees_and_read(&api, 2 * CONCURRENCY, largest).await;
    phases.mark(
        "largest accepted trees, created and read",
        pid,
        &heap,
        &mut since,
    );

    let (peak, hwm) = (heap.peak(), status_mib(pid, "VmHWM"));
    let body_mib = tree_body(largest, 0).len() as f64 / f64::from(1 << 20);
    let per_request = Budget::per_request(body_mib, 8.0);
    let heap_budget = Budget::heap(CONCURRENCY as u64, per_request, 0);
    eprintln!(
        "trees of small objects: heap (RssAnon) at start {baseline} MiB, peak {peak} MiB \
         (budget {heap_budget}); VmHWM {hwm} MiB; {}",
        phases.report()
    );
    if other_binary() {
        return;
    }
    assert!(
        statuses.iter().all(|&s| s == 422),
        "a body of {hostile} small objects is refused: {statuses:?}"
    );
    let refused = refused.unwrap();
    assert_eq!(refused["code"], "invalid_request", "{refused}");
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("at most 8 MiB is accepted"), "{detail}");
    assert!(accepted.iter().all(|&s| s == 201), "{accepted:?}");
    assert!(
        peak < heap_budget,
        "peak heap {peak} MiB passed the {heap_budget} MiB budget ({})",
        phases.report()
    );
}
