//! The dispatcher against real receivers on `127.0.0.1`: headers and signatures, retries,
//! order, 410 Gone, redirects, timeouts, the age limit, wake-ups and shutdown.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use augur_core::Timestamp;
use augur_core::outbox::DeliveryStatus;
use common::{
    Receiver, Reply, Running, create_with_messages, eventually, fast_options, message_id,
    message_number, render, secret, settled, store,
};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn messages_are_signed_and_carry_the_standard_headers() {
    let receiver = Receiver::start(|_, _| Reply::Status(204)).await;
    let store = store();
    let id = create_with_messages(&store, &receiver.url("/hook?token=x"), 1).await;
    let running = Running::start(&store, fast_options());

    let states = settled(&store, &id, WAIT).await;
    assert_eq!(states[0].status, DeliveryStatus::Delivered);
    assert_eq!(states[0].attempts.len(), 1);
    assert_eq!(states[0].attempts[0].status, Some(204));
    assert_eq!(states[0].attempts[0].error, None);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/hook");
    assert_eq!(request.webhook_id(), message_id(&id, 0));
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(
        request.header("user-agent"),
        concat!("augur/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        request.body,
        render()(&states[0].delivery.payload),
        "the body is the rendered payload"
    );
    let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
    let now = Timestamp::now().as_micros() / 1_000_000;
    assert!((now - timestamp).abs() <= 5, "timestamp {timestamp} is now");
    let signature = request.header("webhook-signature");
    assert!(signature.starts_with("v1,"), "{signature}");
    assert!(secret().verify(request.webhook_id(), timestamp, &request.body, signature));
    assert_eq!(
        signature,
        secret().sign(request.webhook_id(), timestamp, &request.body)
    );
    running.stop(WAIT).await;
}

#[tokio::test]
async fn failures_are_retried_until_each_message_is_acknowledged_once_in_order() {
    const FAILURES: usize = 7;
    let receiver = Receiver::start(|_, n| {
        if n < FAILURES {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let store = store();
    let url = receiver.url("/hook");
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(create_with_messages(&store, &url, 3).await);
    }
    let running = Running::start(&store, fast_options());

    let mut recorded_failures = 0;
    for id in &ids {
        let states = settled(&store, id, WAIT).await;
        for (n, state) in states.iter().enumerate() {
            assert_eq!(state.delivery.id, message_id(id, n));
            assert_eq!(state.status, DeliveryStatus::Delivered, "{n}");
            let (last, failed) = state.attempts.split_last().expect("attempted");
            assert_eq!(last.status, Some(200));
            for attempt in failed {
                assert_eq!(attempt.status, Some(503));
                assert_eq!(
                    attempt.error.as_deref(),
                    Some("receiver answered 503 Service Unavailable")
                );
            }
            recorded_failures += failed.len();
        }
    }
    assert_eq!(recorded_failures, FAILURES, "every 503 is recorded");

    let requests = receiver.requests();
    assert_eq!(requests.len(), FAILURES + 12);
    let mut acknowledged: HashMap<String, usize> = HashMap::new();
    let mut bodies: HashMap<String, bytes::Bytes> = HashMap::new();
    let mut sent_order: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for request in &requests {
        let webhook_id = request.webhook_id().to_owned();
        let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
        assert!(secret().verify(
            &webhook_id,
            timestamp,
            &request.body,
            request.header("webhook-signature")
        ));
        let body = bodies
            .entry(webhook_id.clone())
            .or_insert_with(|| request.body.clone());
        assert_eq!(*body, request.body, "every attempt sends the same bytes");
        if request.answered == 200 {
            *acknowledged.entry(webhook_id.clone()).or_default() += 1;
        }
        let prediction = webhook_id.rsplit_once('_').unwrap().0.to_owned();
        sent_order
            .entry(prediction)
            .or_default()
            .push(message_number(&webhook_id));
    }
    assert_eq!(acknowledged.len(), 12);
    assert!(
        acknowledged.values().all(|n| *n == 1),
        "each message is acknowledged exactly once: {acknowledged:?}"
    );
    for (prediction, order) in &sent_order {
        assert!(
            order.windows(2).all(|w| w[0] <= w[1]),
            "{prediction}: a message went out before an earlier one was delivered: {order:?}"
        );
    }
    running.stop(WAIT).await;
}

#[tokio::test]
async fn gone_drops_the_predictions_remaining_messages() {
    let receiver = Receiver::start(|path, _| {
        if path == "/gone" {
            Reply::Status(410)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let store = store();
    let gone = create_with_messages(&store, &receiver.url("/gone"), 3).await;
    let other = create_with_messages(&store, &receiver.url("/ok"), 2).await;
    let running = Running::start(&store, fast_options());

    let states = settled(&store, &gone, WAIT).await;
    assert!(states.iter().all(|s| s.status == DeliveryStatus::Failed));
    assert_eq!(states[0].attempts.len(), 1);
    assert_eq!(states[0].attempts[0].status, Some(410));
    let error = states[0].attempts[0].error.as_deref().unwrap();
    assert!(error.contains("410 Gone"), "{error}");
    assert!(
        states[1..].iter().all(|s| s.attempts.is_empty()),
        "later messages are dropped unsent"
    );
    assert_eq!(receiver.requests_to("/gone").len(), 1);

    let states = settled(&store, &other, WAIT).await;
    assert!(states.iter().all(|s| s.status == DeliveryStatus::Delivered));
    running.stop(WAIT).await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start(|path, _| match path {
        "/moved" => Reply::Redirect("/target".into()),
        _ => Reply::Status(200),
    })
    .await;
    let store = store();
    let id = create_with_messages(&store, &receiver.url("/moved"), 1).await;
    let mut options = fast_options();
    options.max_age = Duration::from_millis(300);
    let running = Running::start(&store, options);

    let states = settled(&store, &id, WAIT).await;
    assert_eq!(states[0].status, DeliveryStatus::Failed);
    assert!(!states[0].attempts.is_empty());
    for attempt in &states[0].attempts {
        assert_eq!(attempt.status, Some(302));
        let error = attempt.error.as_deref().unwrap();
        assert!(
            error.contains("302 Found redirecting to /target; redirects are not followed"),
            "{error}"
        );
    }
    assert_eq!(
        receiver.requests_to("/moved").len(),
        states[0].attempts.len()
    );
    assert!(
        receiver.requests_to("/target").is_empty(),
        "the redirect target never sees a request"
    );
    running.stop(WAIT).await;
}

#[tokio::test]
async fn a_hanging_receiver_is_cut_off_and_retried() {
    let receiver = Receiver::start(|_, n| {
        if n == 0 {
            Reply::Hang(Duration::from_secs(30), 200)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let store = store();
    let id = create_with_messages(&store, &receiver.url("/slow"), 2).await;
    let mut options = fast_options();
    options.attempt_timeout = Duration::from_millis(300);
    let running = Running::start(&store, options);

    let states = settled(&store, &id, WAIT).await;
    assert!(states.iter().all(|s| s.status == DeliveryStatus::Delivered));
    let attempts = &states[0].attempts;
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].status, None);
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("timed out: no answer within 300ms")
    );
    assert!(attempts[0].duration_ms >= 300, "{:?}", attempts[0]);
    assert_eq!(attempts[1].status, Some(200));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].webhook_id(), requests[1].webhook_id());
    assert_eq!(requests[0].body, requests[1].body);
    running.stop(WAIT).await;
}

#[tokio::test]
async fn messages_are_given_up_once_too_old() {
    // A port nobody listens on: every attempt is refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let store = store();
    let id = create_with_messages(&store, &url, 2).await;
    let mut options = fast_options();
    options.max_age = Duration::from_millis(400);
    let running = Running::start(&store, options);

    let states = settled(&store, &id, WAIT).await;
    for state in &states {
        assert_eq!(state.status, DeliveryStatus::Failed);
        assert!(
            !state.attempts.is_empty(),
            "giving up on one message does not drop the next"
        );
        assert!(state.attempts.iter().all(|a| a.status.is_none()));
        let first = state.attempts[0].error.as_deref().unwrap();
        assert!(first.starts_with("connect failed"), "{first}");
        let last = state.attempts.last().unwrap();
        let error = last.error.as_deref().unwrap();
        assert!(error.contains("gave up after"), "{error}");
        assert!(
            last.at >= state.delivery.created_at.plus(Duration::from_millis(400)),
            "retried until the age limit"
        );
    }
    assert!(
        states[0].attempts.len() > 1,
        "retried before giving up: {:?}",
        states[0].attempts
    );
    running.stop(WAIT).await;
}

#[tokio::test]
async fn the_last_retry_is_at_the_age_limit_even_when_the_backoff_is_longer() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let store = store();
    // Several messages: each retry waits a random part of the backoff (full jitter), so
    // without the cap one of them would wait well past the age limit.
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(create_with_messages(&store, &url, 1).await);
    }
    let mut options = fast_options();
    // Without the cap a retry could come up to 10 s after the attempt before it.
    options.backoff = augur_webhooks::Backoff {
        base: Duration::from_secs(10),
        max: Duration::from_secs(10),
    };
    options.max_age = Duration::from_millis(500);
    let running = Running::start(&store, options);

    for id in &ids {
        let states = settled(&store, id, Duration::from_secs(4)).await;
        let state = &states[0];
        assert_eq!(state.status, DeliveryStatus::Failed);
        assert!(state.attempts.len() >= 2, "{:?}", state.attempts);
        let last = state.attempts.last().unwrap();
        let limit = state.delivery.created_at.plus(Duration::from_millis(500));
        assert!(last.at >= limit, "the last retry came before the age limit");
        assert!(
            last.at < limit.plus(Duration::from_millis(1500)),
            "the last retry waited for the backoff instead of the age limit"
        );
        assert!(last.error.as_deref().unwrap().contains("gave up after"));
    }
    running.stop(WAIT).await;
}

#[tokio::test]
async fn wake_claims_at_once_without_waiting_for_the_poll() {
    let receiver = Receiver::start(|_, _| Reply::Status(200)).await;
    let store = store();
    let url = receiver.url("/hook");
    let mut options = fast_options();
    options.poll_interval = Duration::from_secs(60);
    let running = Running::start(&store, options);

    for _ in 0..3 {
        let id = create_with_messages(&store, &url, 1).await;
        running.handle.wake();
        let states = settled(&store, &id, Duration::from_secs(5)).await;
        assert_eq!(states[0].status, DeliveryStatus::Delivered);
    }
    running.stop(WAIT).await;
}

#[tokio::test]
async fn shutdown_lets_attempts_in_flight_finish() {
    let receiver = Receiver::start(|_, _| Reply::Hang(Duration::from_millis(400), 200)).await;
    let store = store();
    let id = create_with_messages(&store, &receiver.url("/hook"), 1).await;
    let running = Running::start(&store, fast_options());

    eventually(WAIT, "the attempt to be in flight", || async {
        (!receiver.requests().is_empty()).then_some(())
    })
    .await;
    running.stop(WAIT).await;

    let states = common::list(&store, &id).await;
    assert_eq!(states[0].status, DeliveryStatus::Delivered);
    assert_eq!(states[0].attempts.len(), 1);
    assert!(states[0].attempts[0].duration_ms >= 400);
}

#[tokio::test]
async fn internal_destinations_are_refused_alike_whether_a_port_is_open_or_not() {
    let receiver = Receiver::start(|_, _| Reply::Status(204)).await;
    let open_port = receiver.url("/hook");
    let open_port = open_port
        .strip_prefix("http://127.0.0.1:")
        .unwrap()
        .trim_end_matches("/hook")
        .to_owned();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    let store = store();
    // The default policy: loopback is not allowed. `localhost` is refused after it is
    // resolved, `127.0.0.1` and its hex spelling before connecting.
    let mut ids = Vec::new();
    for port in [&open_port, &closed_port] {
        for host in ["localhost", "127.0.0.1", "0x7f000001"] {
            let url = format!("http://{host}:{port}/hook");
            ids.push((url.clone(), create_with_messages(&store, &url, 2).await));
        }
    }
    let mut options = fast_options();
    options.destinations = augur_outbound::Policy::default();
    let running = Running::start(&store, options);
    for (url, id) in &ids {
        let states = settled(&store, id, WAIT).await;
        for state in &states {
            assert_eq!(state.status, DeliveryStatus::Failed, "{url}");
            assert_eq!(state.attempts.len(), 1, "given up at once: {url}");
            assert_eq!(state.attempts[0].status, None);
            assert_eq!(
                state.attempts[0].error.as_deref(),
                Some("refused: destination not allowed"),
                "{url}"
            );
        }
    }
    assert!(receiver.requests().is_empty(), "nothing was sent");
    running.stop(WAIT).await;
}
