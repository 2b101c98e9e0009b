//! Each account's messages are signed with its own secrets (both during a rotation), the
//! admin's with the server's, and a message whose secrets cannot be read waits: it is never
//! sent unsigned.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use augur_core::outbox::{Delivery, Outbox};
use augur_core::store::{DynStore, Entity, Op, Write};
use augur_core::{
    AccountId, Accounts, AccountsConfig, ModelName, Prediction, PredictionId, Timestamp,
    WebhookEvent,
};
use augur_webhooks::{AccountSigners, Dispatcher, Signers, WebhookSecret};
use common::{Received, Receiver, Reply, eventually, fast_options, render, secret, store};

/// A prediction of `owner` with one message to `url`.
async fn create_for(store: &DynStore, owner: &AccountId, url: &str) -> PredictionId {
    let mut p = Prediction::new(
        PredictionId::generate_for(owner),
        owner.clone(),
        ModelName::parse("augur/echo").unwrap(),
        "v1".into(),
        serde_json::json!({}),
    );
    p.webhook = Some(url.to_owned());
    let delivery = Delivery {
        id: format!("msg_{}_0", p.id),
        url: url.to_owned(),
        event: WebhookEvent::Completed,
        payload: augur_core::outbox::Payload::Prediction(Box::new(p.clone())),
        created_at: Timestamp::now(),
    };
    store
        .write(&Write {
            account: owner.clone(),
            ops: vec![Op::Insert(p.to_record().unwrap())],
            effects: vec![delivery.enqueue(owner).unwrap()],
        })
        .await
        .unwrap();
    p.id
}

fn start(store: &DynStore, signers: Arc<dyn Signers>) -> tokio::sync::oneshot::Sender<()> {
    let dispatcher = Dispatcher::new(
        Outbox::new(store.clone()),
        signers,
        render(),
        fast_options(),
    )
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dispatcher.run(async {
        let _ = rx.await;
    }));
    tx
}

fn verifies(secret: &str, request: &Received) -> bool {
    let ts: i64 = request.header("webhook-timestamp").parse().unwrap();
    WebhookSecret::parse(secret).unwrap().verify(
        request.webhook_id(),
        ts,
        &request.body,
        request.header("webhook-signature"),
    )
}

async fn received_for(receiver: &Receiver, id: &PredictionId) -> Received {
    eventually(Duration::from_secs(10), "the message", || async {
        receiver
            .requests()
            .into_iter()
            .find(|r| r.webhook_id().contains(id.as_str()))
    })
    .await
}

#[tokio::test]
async fn each_accounts_messages_are_signed_with_its_own_secrets() {
    let store = store();
    let accounts = Accounts::new(store.clone(), AccountsConfig::default());
    let alice = AccountId::parse("alice").unwrap();
    let bob = AccountId::parse("bob").unwrap();
    let a = accounts.create(alice.clone(), "Alice").await.unwrap();
    let b = accounts.create(bob.clone(), "Bob").await.unwrap();
    let receiver = Receiver::start(|_, _| Reply::Status(200)).await;
    let _stop = start(
        &store,
        Arc::new(AccountSigners::new(accounts.clone(), secret())),
    );

    let pa = create_for(&store, &alice, &receiver.url("/a")).await;
    let pb = create_for(&store, &bob, &receiver.url("/b")).await;
    let padmin = create_for(&store, &AccountId::admin(), &receiver.url("/admin")).await;
    let (ra, rb, radmin) = (
        received_for(&receiver, &pa).await,
        received_for(&receiver, &pb).await,
        received_for(&receiver, &padmin).await,
    );
    let (sa, sb, server) = (
        a.webhook_secret.expose(),
        b.webhook_secret.expose(),
        secret().as_str().to_owned(),
    );
    assert!(verifies(sa, &ra) && !verifies(sb, &ra) && !verifies(&server, &ra));
    assert!(verifies(sb, &rb) && !verifies(sa, &rb) && !verifies(&server, &rb));
    assert!(verifies(&server, &radmin) && !verifies(sa, &radmin));

    // After a rotation, both the new and the retiring secret verify the next message.
    let rotated = accounts.rotate_webhook_secret(&alice).await.unwrap();
    let again = create_for(&store, &alice, &receiver.url("/a2")).await;
    let r = received_for(&receiver, &again).await;
    assert_eq!(r.header("webhook-signature").split(' ').count(), 2);
    assert!(verifies(rotated.webhook_secret.expose(), &r));
    assert!(verifies(sa, &r), "the retiring secret still verifies");
}

/// Signers whose first lookups fail.
#[derive(Debug)]
struct Flaky {
    failures_left: AtomicUsize,
}

#[async_trait]
impl Signers for Flaky {
    async fn secrets_for(&self, _owner: &AccountId) -> Result<Vec<WebhookSecret>, String> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            Err("the store is unavailable".into())
        } else {
            Ok(vec![secret()])
        }
    }
}

#[tokio::test]
async fn a_message_whose_secrets_cannot_be_read_waits_and_is_never_sent_unsigned() {
    let store = store();
    let receiver = Receiver::start(|_, _| Reply::Status(200)).await;
    let _stop = start(
        &store,
        Arc::new(Flaky {
            failures_left: AtomicUsize::new(2),
        }),
    );
    let id = create_for(&store, &AccountId::admin(), &receiver.url("/h")).await;
    let states = common::settled(&store, &id, Duration::from_secs(10)).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "sent once, when it could be signed");
    assert!(verifies(secret().as_str(), &requests[0]));
    let attempts = &states[0].attempts;
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("unavailable"),
        "{attempts:?}"
    );
}
