//! The memory budget on the real binary: one account creates 100 predictions with ~900 KB
//! inputs (echoed back as ~900 KB outputs), reads each once and lists them with `limit=100`
//! a few times; the server's heap (`RssAnon` in `/proc/<pid>/status`, sampled every 10 ms)
//! must stay under [`BUDGET_MIB`] with the default cache and list-page budgets. File-backed
//! pages (the embedded store maps its database for reads) are reported, not bounded: the
//! kernel reclaims them.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use common::{TOKEN, TestServer};

/// What the README promises: a server with default settings stays under this many MiB of
/// resident memory under the load above.
const BUDGET_MIB: u64 = 512;

const PREDICTIONS: usize = 100;
const INPUT_BYTES: usize = 900_000;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_account_stays_within_the_memory_budget() {
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
    let baseline = status_mib(pid, "RssAnon");
    let heap = PeakHeap::watch(pid);

    // Distinct inputs, so no layer can share them.
    let ids: Vec<String> = futures::stream::iter(0..PREDICTIONS)
        .map(|i| {
            let api = api.clone();
            async move {
                let prompt = format!("{i:06}{}", "x".repeat(INPUT_BYTES - 6));
                let (status, body) = api
                    .create("augur/echo", json!({ "prompt": prompt }))
                    .await
                    .unwrap();
                assert_eq!(status, 201, "create {i}: {body}");
                body["id"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let after_create = heap.peak();

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
        .buffer_unordered(8)
        .for_each(|()| async {})
        .await;
    let after_reads = heap.peak();

    // List with limit=300 a few times, following `next` to the end: every prediction is
    // listed once, however many items a page holds.
    for _ in 0..3 {
        let mut url = format!("{}/v1/predictions?limit={PREDICTIONS}", api.base);
        let mut seen = Vec::new();
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
            seen.extend(
                page["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["id"].as_str().unwrap().to_owned()),
            );
            match page["next"].as_str() {
                Some(next) => url = next.to_owned(),
                None => break,
            }
        }
        let mut expected = ids.clone();
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected, "the pages list every prediction once");
    }
    std::thread::sleep(Duration::from_millis(20));
    let peak = heap.peak();
    eprintln!(
        "heap (RssAnon, MiB): at start {baseline}, peak during creates {after_create}, \
         during reads {after_reads}, during lists {peak}, now {}; VmHWM (with file-backed \
         pages) {} MiB; {:.1}s",
        status_mib(pid, "RssAnon"),
        status_mib(pid, "VmHWM"),
        started.elapsed().as_secs_f64()
    );
    assert!(
        peak < BUDGET_MIB,
        "peak heap {peak} MiB passed the {BUDGET_MIB} MiB budget (during creates \
         {after_create}, during reads {after_reads})"
    );
}
