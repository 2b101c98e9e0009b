//! The embedded store's disk fills up under load: writes are refused with a retryable 503
//! whose JSON error names the cause (no panic, no corruption), nothing acknowledged is lost,
//! and service comes back by itself once space is freed. The disk is a small tmpfs the test
//! mounts (root or `CAP_SYS_ADMIN` needed: CI runs as root; elsewhere the test says why it
//! skips).

#![cfg(feature = "embedded")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;

/// A size-limited tmpfs, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The full-disk test's load: inputs of 48 KiB, so that the disk fills quickly.
const PACE: common::load::Pace = common::load::Pace {
    blob_bytes: 48 * 1024,
    timeout: Duration::from_secs(20),
    pause: Duration::ZERO,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_writes_and_service_returns_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("disk");
    let disk = match Tmpfs::mount(&mnt, "24m") {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!(
                "skipping: cannot mount a size-limited tmpfs here (run as root or with CAP_SYS_ADMIN): {why}"
            );
            return;
        }
    };
    // Ballast takes most of the disk; deleting it is the operator freeing space.
    let ballast = disk.dir.join("ballast");
    std::fs::write(&ballast, vec![0u8; 17 << 20]).unwrap();
    // The store and its files on the small disk; the node's log beside it, elsewhere.
    let server = TestServer::start(&disk.dir, &[("AUGUR_WORKERS", "4")]);
    let api = server.client();

    let load = Arc::new(Mutex::new(common::load::Load::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..4)
        .map(|_| common::load::spawn(api.clone(), PACE, load.clone(), stop.clone()))
        .collect();

    let started = Instant::now();
    while load.lock().unwrap().refused < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the disk never filled: {:?}",
            load.lock().unwrap().acked.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let full_after = started.elapsed();
    // Reads still work on a full disk.
    let first = load.lock().unwrap().acked[0].clone();
    assert_eq!(api.get(&first).await.unwrap().0, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;

    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    let refused_before = load.lock().unwrap().refused;
    let acked_before = load.lock().unwrap().acked.len();
    while load.lock().unwrap().acked.len() < acked_before + 5 {
        assert!(
            freed.elapsed() < Duration::from_secs(30),
            "writes did not come back after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back_after = freed.elapsed();
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }

    let load = std::mem::take(&mut *load.lock().unwrap());
    eprintln!(
        "disk full after {full_after:?}; {} acknowledged, {} refused (503 + Retry-After), {} before space was freed; writes back {back_after:?} after",
        load.acked.len(),
        load.refused,
        refused_before
    );
    assert!(
        load.other.is_empty(),
        "unexpected answers: {:?}",
        load.other
    );
    let refusal = load.refusal.unwrap();
    assert_eq!(refusal["code"], "store_unavailable", "{refusal}");
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap()
            .contains("no space left"),
        "the error does not name the cause: {refusal}"
    );
    for id in &load.acked {
        let p = api.settled(id, Duration::from_secs(60)).await;
        assert_eq!(p["status"], "succeeded", "{p}");
    }
    drop(server);
}
