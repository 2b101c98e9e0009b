//! Outgoing webhooks and live streams, end to end against the real binary: a webhook receiver
//! that is dead for a while and then comes back gets every message exactly once, in order per
//! prediction, signed so that the official verifiers accept it (PyPI `standardwebhooks` and
//! the Replicate Python client); an SSE client that disconnects, waits out a restart of Augur
//! and reconnects with `Last-Event-ID` gets every event exactly once, in order; the
//! Replicate Python client's `stream()` works; and webhooks and output URL copies reach only
//! public addresses and the operator's allowlist (`AUGUR_OUTBOUND_ALLOW`).

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use common::hooks::{Inbox, free_port, listen_on};
use common::{Api, TOKEN, TestServer, eventually};

async fn create(api: &Api, body: Value) -> Value {
    let response = api
        .http
        .post(format!("{}/v1/predictions", api.base))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn delivery_log(api: &Api, id: &str) -> Value {
    let response = api
        .http
        .get(format!("{}/v1/predictions/{id}/webhooks", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_comes_back_gets_every_message_once_in_order_and_signed() {
    let Some(python) = common::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("AUGUR_WEBHOOK_BACKOFF_BASE", "100ms"),
            ("AUGUR_WEBHOOK_BACKOFF_MAX", "400ms"),
            ("AUGUR_WEBHOOK_TIMEOUT", "2s"),
        ],
    );
    let api = server.client();
    let addr = free_port();
    let hook = format!("http://{addr}/hook");

    // Three predictions with every event, one with `completed` only; the receiver is down.
    let mut ids = Vec::new();
    for i in 0..3 {
        let p = create(
            &api,
            json!({"version": "augur/demo-image", "webhook": hook,
                   "input": {"prompt": format!("hook {i}"), "steps": 4, "step_ms": 300, "width": 8, "height": 8}}),
        )
        .await;
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    let quiet = create(
        &api,
        json!({"version": "augur/echo", "webhook": hook, "webhook_events_filter": ["completed"],
               "input": {"text": "only the end"}}),
    )
    .await;
    let quiet_id = quiet["id"].as_str().unwrap().to_owned();
    for id in ids.iter().chain([&quiet_id]) {
        api.settled(id, Duration::from_secs(30)).await;
    }
    // Several failed attempts while it is down, recorded in the delivery log.
    eventually("several failed attempts", Duration::from_secs(30), || {
        let (api, id) = (api.clone(), ids[0].clone());
        async move {
            let log = delivery_log(&api, &id).await;
            log["results"][0]["attempts"]
                .as_array()
                .is_some_and(|a| a.len() >= 3)
        }
    })
    .await;
    let log = delivery_log(&api, &ids[0]).await;
    let first = &log["results"][0];
    assert_eq!(first["status"], "pending", "{log}");
    assert!(first["attempts"][0]["status_code"].is_null());
    assert!(first["attempts"][0]["error"].as_str().is_some(), "{log}");
    assert!(first["next_attempt_at"].as_str().is_some(), "{log}");

    // The receiver comes back.
    let inbox: Inbox = Arc::default();
    let receiver = listen_on(addr, inbox.clone()).await;
    for id in ids.iter().chain([&quiet_id]) {
        eventually("every message delivered", Duration::from_secs(30), || {
            let (api, id) = (api.clone(), id.clone());
            async move {
                let log = delivery_log(&api, &id).await;
                log["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|m| m["status"] == "delivered")
            }
        })
        .await;
    }
    let received = inbox.lock().unwrap().clone();

    // Exactly once per webhook-id, in the outbox's order per prediction.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut per_prediction: HashMap<String, Vec<(String, Value)>> = HashMap::new();
    for r in &received {
        *seen.entry(r.headers["webhook-id"].clone()).or_default() += 1;
        let body: Value = serde_json::from_str(&r.body).unwrap();
        per_prediction
            .entry(body["id"].as_str().unwrap().to_owned())
            .or_default()
            .push((r.headers["webhook-id"].clone(), body));
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a message arrived twice: {seen:?}"
    );
    for id in ids.iter().chain([&quiet_id]) {
        let log = delivery_log(&api, id).await;
        let expected: Vec<&str> = log["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        let got = &per_prediction[id];
        assert_eq!(
            got.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
            expected,
            "order of {id}"
        );
        assert_eq!(got.last().unwrap().1["status"], "succeeded", "{id}");
    }
    // Every event but `completed` was filtered out for the quiet one.
    assert_eq!(per_prediction[&quiet_id].len(), 1);
    // The others announced their start first, and progress (logs) in between.
    for id in &ids {
        let got = &per_prediction[id];
        assert_eq!(got[0].1["status"], "starting", "{id}: {got:?}");
        assert!(got.len() >= 3, "start, some progress, completed: {got:?}");
    }

    // The official verifiers accept every delivery with the secret the API shows.
    let secret: Value = api
        .http
        .get(format!("{}/v1/webhooks/default/secret", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = secret["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    common::hooks::verify(&python, dir.path(), &received, &secret);

    // A manual redelivery sends the same message again, with the same webhook-id.
    let message_id = per_prediction[&quiet_id][0].0.clone();
    let response = api
        .http
        .post(format!(
            "{}/v1/predictions/{quiet_id}/webhooks/{message_id}/redeliver",
            api.base
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    eventually("the redelivery", Duration::from_secs(10), || {
        let inbox = inbox.clone();
        let message_id = message_id.clone();
        async move {
            inbox
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.headers["webhook-id"] == message_id)
                .count()
                == 2
        }
    })
    .await;
    let missing = api
        .http
        .post(format!(
            "{}/v1/predictions/{quiet_id}/webhooks/msg_nope/redeliver",
            api.base
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("msg_nope"),
        "{body}"
    );
    receiver.abort();
}

/// Reads SSE events (`id`, `event`, `data`) from a response until `stop` says so or the
/// stream ends.
async fn read_events(
    response: reqwest::Response,
    mut stop: impl FnMut(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    let (mut id, mut name, mut data) = (String::new(), String::new(), Vec::<String>::new());
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find('\n') {
            let line = buffer[..end].trim_end_matches('\r').to_owned();
            buffer.drain(..=end);
            if line.is_empty() {
                if !name.is_empty() {
                    events.push((
                        std::mem::take(&mut id),
                        std::mem::take(&mut name),
                        data.join("\n"),
                    ));
                    data.clear();
                    if stop(&events) {
                        return events;
                    }
                }
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim_start().to_owned();
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim_start().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
            }
        }
    }
    events
}

fn position(id: &str) -> (u64, u32) {
    let (r, i) = id.split_once(':').unwrap();
    (r.parse().unwrap(), i.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_after_a_restart_misses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::start(&data, &[]);
    let api = server.client();
    let p = create(
        &api,
        json!({"version": "augur/demo-image", "stream": true,
               "input": {"prompt": "resume", "steps": 30, "step_ms": 150, "width": 8, "height": 8}}),
    )
    .await;
    assert!(p["id"].as_str().is_some());
    let stream_url = p["urls"]["stream"].as_str().unwrap().to_owned();
    assert!(stream_url.contains("token="), "{stream_url}");

    // Without Authorization (as the JS client), read a few events, then hang up.
    let response = reqwest::get(&stream_url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let first = read_events(response, |events| events.len() >= 3).await;
    assert_eq!(first.len(), 3);

    // Augur restarts (a clean stop hands the job back; the new process runs it again).
    let (clean, _) = server.terminate();
    assert!(clean);
    let server = TestServer::start(&data, &[]);
    let stream_url = stream_url.replace(&api.base, &server.url);
    let last_id = first.last().unwrap().0.clone();
    let response = reqwest::Client::new()
        .get(&stream_url)
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let rest = read_events(response, |_| false).await;
    assert_eq!(rest.last().map(|e| e.1.as_str()), Some("done"), "{rest:?}");

    // Everything, read afresh from the start, is exactly the two halves joined.
    let response = reqwest::get(&stream_url).await.unwrap();
    let all = read_events(response, |_| false).await;
    let joined: Vec<_> = first.iter().chain(rest.iter()).cloned().collect();
    assert_eq!(joined, all, "events lost or repeated across the reconnect");
    let positions: Vec<_> = all.iter().map(|e| position(&e.0)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "ids in order: {positions:?}"
    );
    assert!(all.iter().any(|e| e.1 == "logs"));
    assert!(
        all.iter()
            .any(|e| e.1 == "output" && e.2.contains("/files/"))
    );

    // A reconnect after `done` ends at once; a bad Last-Event-ID is a 400 naming it.
    let response = reqwest::Client::new()
        .get(&stream_url)
        .header("last-event-id", &all.last().unwrap().0)
        .send()
        .await
        .unwrap();
    assert!(read_events(response, |_| false).await.is_empty());
    let bad = reqwest::Client::new()
        .get(&stream_url)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("Last-Event-ID"));
}

#[test]
fn the_replicate_python_clients_stream_works() {
    let Some(python) = common::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let output = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/stream_client.py"
        ))
        .env("AUGUR_URL", &server.url)
        .env("AUGUR_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_event_stream_tells_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let api = server.client();
    let response = api
        .http
        .get(format!("{}/v1/events", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reader = tokio::spawn(read_events(response, |events| {
        events
            .iter()
            .any(|e| e.2.contains("\"status\":\"succeeded\""))
    }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p = create(
        &api,
        json!({"version": "augur/echo", "input": {"text": "hi"}}),
    )
    .await;
    let events = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the settled change arrives")
        .unwrap();
    let id = p["id"].as_str().unwrap();
    assert!(events.iter().all(|e| e.1 == "prediction"));
    assert!(events.iter().all(|e| e.0.starts_with(id)), "{events:?}");
    let unauthenticated = reqwest::get(format!("{}/v1/events", api.base))
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

/// A free port on the loopback address `ip`: nothing listens there until [`listen_on`].
fn free_port_on(ip: &str) -> std::net::SocketAddr {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The first attempt recorded for prediction `id`'s one message, once it has one.
async fn first_attempt(api: &Api, id: &str) -> Value {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = delivery_log(api, id).await;
        let message = &log["results"][0];
        if message["attempts"][0].is_object() {
            return message.clone();
        }
        assert!(
            std::time::Instant::now() < until,
            "no attempt recorded: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_requests_go_only_to_public_addresses_and_the_allowlist() {
    // Only 127.0.0.2 is allowed; 127.0.0.1 (and every other internal address) is not. All
    // the test's traffic stays on loopback.
    let inside = free_port_on("127.0.0.1");
    let inside_inbox: Inbox = Arc::default();
    let _inside = listen_on(inside, inside_inbox.clone()).await;
    let closed = free_port_on("127.0.0.1");
    let allowed = free_port_on("127.0.0.2");
    let allowed_inbox: Inbox = Arc::default();
    let _allowed = listen_on(allowed, allowed_inbox.clone()).await;
    let allowed_closed = free_port_on("127.0.0.2");

    // A web server on each address: /image.png, and on the allowed one /jump, a redirect
    // to the forbidden one.
    async fn web(addr: &str, jump_to: Option<String>) -> String {
        use axum::response::{IntoResponse, Redirect};
        let mut app = axum::Router::new().route(
            "/image.png",
            axum::routing::get(|| async {
                ([(axum::http::header::CONTENT_TYPE, "image/png")], "png").into_response()
            }),
        );
        if let Some(to) = jump_to {
            app = app.route(
                "/jump",
                axum::routing::get(move || {
                    let to = to.clone();
                    async move { Redirect::temporary(&to) }
                }),
            );
        }
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }
    let forbidden_web = web("127.0.0.1:0", None).await;
    let forbidden_port = forbidden_web.rsplit(':').next().unwrap().to_owned();
    let allowed_web = web("127.0.0.2:0", Some(format!("{forbidden_web}/image.png"))).await;

    // A command model whose output is the URL in its input: an output URL a user steers.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("say.sh");
    std::fs::write(
        &script,
        r#"url=$(sed -n 's/.*"url": *"\([^"]*\)".*/\1/p')
printf '{"image": "%s"}\n' "$url"
"#,
    )
    .unwrap();
    let config = dir.path().join("augur.toml");
    std::fs::write(
        &config,
        format!(
            "[[models]]\nname = \"acme/say\"\nprovider = \"command\"\ncommand = [\"/bin/sh\", \"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("AUGUR_CONFIG", config.to_str().unwrap()),
            ("AUGUR_OUTBOUND_ALLOW", "127.0.0.2/32"),
            ("AUGUR_WEBHOOK_BACKOFF_BASE", "100ms"),
            ("AUGUR_WEBHOOK_BACKOFF_MAX", "200ms"),
        ],
    );
    let api = server.client();
    let with_hook = |hook: String| {
        json!({"version": "augur/echo", "webhook": hook,
               "webhook_events_filter": ["completed"], "input": {"text": "hi"}})
    };

    // An allowed receiver gets its message.
    let ok = create(&api, with_hook(format!("http://{allowed}/hook"))).await;
    let ok = first_attempt(&api, ok["id"].as_str().unwrap()).await;
    assert_eq!(ok["status"], "delivered", "{ok}");
    assert_eq!(allowed_inbox.lock().unwrap().len(), 1);

    // A name that resolves to a forbidden address is refused after resolution, with the
    // same words whether a port is open or closed, and the message is given up at once.
    let mut errors = Vec::new();
    for port in [inside.port(), closed.port()] {
        let p = create(&api, with_hook(format!("http://localhost:{port}/hook"))).await;
        let message = first_attempt(&api, p["id"].as_str().unwrap()).await;
        assert_eq!(message["status"], "failed", "{message}");
        assert_eq!(
            message["attempts"].as_array().unwrap().len(),
            1,
            "{message}"
        );
        assert!(message["attempts"][0]["status_code"].is_null());
        errors.push(message["attempts"][0]["error"].clone());
    }
    assert_eq!(errors[0], "refused: destination not allowed");
    assert_eq!(errors[0], errors[1]);
    assert!(
        inside_inbox.lock().unwrap().is_empty(),
        "nothing reached 127.0.0.1"
    );

    // An allowed address where nothing listens: a coarse "connect failed", retried.
    let p = create(&api, with_hook(format!("http://{allowed_closed}/hook"))).await;
    let message = first_attempt(&api, p["id"].as_str().unwrap()).await;
    assert_eq!(
        message["attempts"][0]["error"], "connect failed",
        "{message}"
    );

    // An address in the URL, however spelled, is refused at create with a 422.
    for hook in [
        format!("http://127.0.0.1:{}/hook", inside.port()),
        format!("http://0x7f000001:{}/hook", inside.port()),
        format!("http://2130706433:{}/hook", inside.port()),
        format!("http://[::1]:{}/hook", inside.port()),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let response = api
            .http
            .post(format!("{}/v1/predictions", api.base))
            .bearer_auth(TOKEN)
            .json(&with_hook(hook.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{hook}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["field"], "webhook", "{hook}: {body}");
    }

    // Output URLs: copied from an allowed address; refused from a forbidden one, spelled
    // as a name or reached by a redirect hop.
    let say = |url: String| json!({"version": "acme/say", "input": {"url": url}});
    let copied = create(&api, say(format!("{allowed_web}/image.png"))).await;
    let copied = api
        .settled(copied["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(copied["status"], "succeeded", "{copied}");
    let image = copied["output"]["image"].as_str().unwrap();
    assert!(
        image.starts_with(&format!("{}/files/", api.base)),
        "{image}"
    );
    for url in [
        format!("http://localhost:{forbidden_port}/image.png"),
        format!("{allowed_web}/jump"),
    ] {
        let p = create(&api, say(url.clone())).await;
        let p = api
            .settled(p["id"].as_str().unwrap(), Duration::from_secs(30))
            .await;
        assert_eq!(p["status"], "failed", "{url}: {p}");
        let error = p["error"].as_str().unwrap();
        assert!(
            error.ends_with("refused: destination not allowed"),
            "{url}: {error}"
        );
    }
}
