//! Crash and shutdown on the real binary: `kill -9` under load loses nothing acknowledged and
//! settles nothing twice; SIGTERM hands running work back at once.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_nothing_acknowledged_and_settles_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::start(&data, &[]);
    let api = server.client();

    // Slow predictions that will be mid-run when the process dies.
    let mut slow = Vec::new();
    for i in 0..5 {
        let (status, body) = api
            .create(
                "augur/demo-image",
                json!({"prompt": format!("slow {i}"), "width": 16, "height": 16, "steps": 20, "step_ms": 100}),
            )
            .await
            .unwrap();
        assert_eq!(status, 201);
        slow.push(body["id"].as_str().unwrap().to_owned());
    }

    // 1,000 echo predictions as fast as 32 clients can create them; remember every id whose
    // create was answered 2xx.
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (api, acked, next) = (api.clone(), acked.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= 1000 {
                    return;
                }
                match api.create("augur/echo", json!({"n": n})).await {
                    Ok((status, body)) if (200..300).contains(&status) => {
                        acked
                            .lock()
                            .unwrap()
                            .push((body["id"].as_str().unwrap().to_owned(), n));
                    }
                    // The server died under this request: not acknowledged.
                    Ok(_) | Err(_) => {}
                }
            }
        }));
    }
    // Kill it mid-load.
    let until = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 400 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    for c in clients {
        c.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() >= 400,
        "only {} creates were acknowledged",
        acked.len()
    );
    assert!(
        acked.len() < 1000,
        "the load finished before the kill; nothing was in flight"
    );
    eprintln!("{} echo creates acknowledged before kill -9", acked.len());

    // Restart on the same directory: everything acknowledged is there and settles.
    let server = TestServer::start(&data, &[]);
    let api = server.client();
    for (id, n) in &acked {
        let p = api.settled(id, Duration::from_secs(60)).await;
        assert_eq!(p["status"], "succeeded", "{p}");
        assert_eq!(p["output"], json!({"n": n}));
    }
    for id in &slow {
        let p = api.settled(id, Duration::from_secs(60)).await;
        assert_eq!(p["status"], "succeeded", "{p}");
        assert!(p["output"].as_str().unwrap().ends_with("/out.png"));
    }

    // Nothing settled twice: every stored prediction is settled, and the durable settlement
    // counter (one per settlement, in the same commit) equals the number of predictions.
    let all = api.all_ids().await;
    let ids: HashSet<_> = all.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), all.len(), "the listing repeats a prediction");
    for (id, _) in &acked {
        assert!(ids.contains(id), "{id} missing from the listing");
    }
    let until = Instant::now() + Duration::from_secs(60);
    while all_settled(&api).await.is_err() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    all_settled(&api).await.unwrap();
    let created = api.counter("augur_predictions_created_total").await;
    let settled = api.counter("augur_predictions_settled_total").await;
    assert_eq!(
        created as usize,
        all.len(),
        "created counter vs stored predictions"
    );
    assert_eq!(settled, created, "a prediction settled twice or never");
}

async fn all_settled(api: &common::Api) -> Result<(), String> {
    let pending: Vec<_> = api
        .all_ids()
        .await
        .into_iter()
        .filter(|(_, s)| !matches!(s.as_str(), "succeeded" | "failed" | "canceled"))
        .collect();
    if pending.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} not settled, e.g. {:?}",
            pending.len(),
            pending[0]
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_running_work_back_and_a_restart_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::start(&data, &[]);
    let api = server.client();
    let (_, body) = api
        .create(
            "augur/demo-image",
            json!({"prompt": "interrupted", "width": 16, "height": 16, "steps": 30, "step_ms": 100}),
        )
        .await
        .unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, p) = api.get(&id).await.unwrap();
        if p["logs"].as_str().unwrap_or("").contains("2/30") {
            break;
        }
        assert!(Instant::now() < until, "never started: {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (clean, took) = server.terminate();
    assert!(clean, "augur did not exit cleanly on SIGTERM");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");

    let restarted_at = Instant::now();
    let server = TestServer::start(&data, &[]);
    let api = server.client();
    let p = api.settled(&id, Duration::from_secs(20)).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    // The job was handed back, not left to a 30 s lease: it ran again at once (3 s of steps).
    assert!(
        restarted_at.elapsed() < Duration::from_secs(15),
        "took {:?}",
        restarted_at.elapsed()
    );
    assert_eq!(
        p["attempts"], 1,
        "a handed-back run does not count as an attempt"
    );
}
