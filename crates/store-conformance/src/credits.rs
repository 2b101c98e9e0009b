//! Conformance tests for accounts, tokens and credits through the services that use them
//! (`Accounts`, `Credits`, `Predictions`): sign-up grants, tokens, priced creates under
//! contention, settlements racing each other, top-ups delivered many times at once, limits
//! on running predictions, and the ledger invariant over random sequences.

use std::collections::HashMap;

use augur_core::credits::Posting;
use augur_core::store::{DynStore, Lane, Reason};
use augur_core::{
    AccountId, Accounts, AccountsConfig, CreateRequest, Creation, Credits, Error, Event, ModelName,
    PredictionId, Predictions, Price, Secret, ServiceConfig, Status, WebhookEvents,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fixtures::account;
use crate::ledger::assert_balanced;

fn services(store: &DynStore) -> (Accounts, Credits, Predictions) {
    (
        Accounts::new(store.clone(), AccountsConfig::default()),
        Credits::new(store.clone()),
        Predictions::new(store.clone(), ServiceConfig::default()),
    )
}

fn priced(owner: &AccountId, price: Option<Price>) -> CreateRequest {
    CreateRequest {
        id: None,
        owner: owner.clone(),
        model: ModelName::parse("augur/echo").unwrap(),
        version: "v1".into(),
        input: serde_json::json!({}),
        webhook: None,
        webhook_events_filter: WebhookEvents::ALL,
        deadline: None,
        idempotency_key: None,
        price,
        max_active: None,
    }
}

fn per_prediction(n: i64) -> Option<Price> {
    Some(Price::PerPrediction { per_prediction: n })
}

/// The reasons of the ledger entries about prediction `id`.
async fn reasons_for(store: &DynStore, owner: &AccountId, id: &PredictionId) -> Vec<Reason> {
    store
        .ledger(owner, None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.entry.reference.as_deref() == Some(id.as_str()))
        .map(|p| p.entry.reason)
        .collect()
}

/// Accounts are created once with their sign-up grant, listed, and their tokens authenticate
/// until revoked, by their owner only.
pub async fn accounts_and_tokens_round_trip(store: DynStore) {
    let (accounts, credits, _) = services(&store);
    let (a, b) = (account("alice"), account("bob"));
    accounts.create(a.clone(), "Alice").await.unwrap();
    accounts.create(b.clone(), "Bob").await.unwrap();
    assert!(matches!(
        accounts.create(a.clone(), "again").await,
        Err(Error::AccountExists(_))
    ));
    let summary = credits.balance(&a).await.unwrap();
    assert_eq!((summary.balance, summary.available), (10, 10));
    let ledger = credits.ledger(&a, None, 10).await.unwrap();
    assert_eq!(ledger.len(), 1, "one grant, not two: {ledger:?}");
    assert_eq!(ledger[0].entry.reason, Reason::Grant);
    assert_balanced(&store, &a).await;

    let listed = accounts.list(None, 1000).await.unwrap();
    let ids: Vec<_> = listed.items.iter().map(|x| x.id.clone()).collect();
    assert!(ids.contains(&a) && ids.contains(&b), "{ids:?}");

    let admin = Secret::new("an-admin-token-for-the-tests");
    let (token, text) = accounts.create_token(&a, "ci").await.unwrap();
    let caller = accounts
        .authenticate(text.expose(), &admin)
        .await
        .unwrap()
        .expect("the token authenticates");
    assert_eq!(caller.account, a);
    assert!(matches!(
        accounts.revoke_token(&b, &token.id).await,
        Err(Error::TokenNotFound(_))
    ));
    assert_eq!(accounts.tokens(&a).await.unwrap().len(), 1);
    accounts.revoke_token(&a, &token.id).await.unwrap();
    assert!(
        accounts
            .authenticate(text.expose(), &admin)
            .await
            .unwrap()
            .is_none()
    );
    assert!(accounts.tokens(&a).await.unwrap().is_empty());
}

/// 64 concurrent priced creates against a balance that affords exactly 10: exactly 10 are
/// created and queued, 54 refused, and balance and ledger agree.
pub async fn concurrent_priced_creates_never_overdraw(store: DynStore) {
    let (accounts, credits, predictions) = services(&store);
    let a = account("hot");
    accounts.create(a.clone(), "Hot").await.unwrap();
    // 10 from sign-up, 20 granted, price 3: 30 / 3 = 10.
    credits
        .post(&a, Reason::Grant, 20, None, None)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (predictions, a) = (predictions.clone(), a.clone());
            tokio::spawn(async move { predictions.create(priced(&a, per_prediction(3))).await })
        })
        .collect();
    let (mut created, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(Creation::Created(_)) => created += 1,
            Err(Error::InsufficientCredits { price: 3, .. }) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((created, refused), (10, 54));
    let totals = assert_balanced(&store, &a).await;
    assert_eq!((totals.balance, totals.reserved), (30, 30));
    let jobs = predictions.ops().queue_stats(Lane::Jobs).await.unwrap();
    assert!(jobs.ready >= 10, "{jobs:?}");
    let mine = predictions
        .list(&augur_core::PredictionQuery {
            owner: Some(a.clone()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        mine.items.len(),
        10,
        "nothing stored for the refused creates"
    );
}

/// A settlement racing a cancel (and other terminal reports) settles the hold exactly once.
pub async fn settle_racing_cancel_settles_once(store: DynStore) {
    let (accounts, _, predictions) = services(&store);
    let a = account("racer");
    accounts.create(a.clone(), "Racer").await.unwrap();
    for round in 0..5 {
        let p = predictions
            .create(priced(&a, per_prediction(2)))
            .await
            .unwrap();
        let id = p.prediction().value.id.clone();
        predictions
            .transition(&id, &Event::processing())
            .await
            .unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (predictions, id) = (predictions.clone(), id.clone());
                tokio::spawn(async move {
                    let event = match (i + round) % 3 {
                        0 => Event::succeeded(serde_json::json!(i)),
                        1 => Event::canceled(),
                        _ => Event::failed(format!("error {i}")),
                    };
                    predictions.transition(&id, &event).await
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(t) if t.changed => winners += 1,
                Ok(_) | Err(Error::Transition(_)) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(winners, 1);
        let reasons = reasons_for(&store, &a, &id).await;
        let count = |r: Reason| reasons.iter().filter(|x| **x == r).count();
        assert_eq!(count(Reason::Reserve), 1, "{reasons:?}");
        assert_eq!(
            count(Reason::Charge) + count(Reason::Refund),
            1,
            "{reasons:?}"
        );
        let totals = assert_balanced(&store, &a).await;
        assert_eq!(totals.reserved, 0);
    }
}

/// 20 concurrent deliveries of the same paid order credit it once.
pub async fn concurrent_topups_credit_an_order_once(store: DynStore) {
    let (accounts, credits, _) = services(&store);
    let a = account("buyer");
    accounts.create(a.clone(), "Buyer").await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (credits, a) = (credits.clone(), a.clone());
            tokio::spawn(async move { credits.topup(&a, "order-1", 50).await })
        })
        .collect();
    let mut posted = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == Posting::Posted {
            posted += 1;
        }
    }
    assert_eq!(posted, 1);
    let totals = assert_balanced(&store, &a).await;
    assert_eq!(totals.balance, 60);
}

/// With `max_active`, a create past the limit is refused until a prediction settles; the
/// counter never goes negative.
pub async fn max_active_limits_unsettled_predictions(store: DynStore) {
    let (accounts, _, predictions) = services(&store);
    let a = account("limited");
    accounts.create(a.clone(), "Limited").await.unwrap();
    let limited = || {
        let mut r = priced(&a, None);
        r.max_active = Some(2);
        r
    };
    let first = predictions.create(limited()).await.unwrap();
    predictions.create(limited()).await.unwrap();
    assert!(matches!(
        predictions.create(limited()).await,
        Err(Error::TooManyActive { limit: 2, .. })
    ));
    predictions
        .transition(&first.prediction().value.id, &Event::canceled())
        .await
        .unwrap();
    predictions.create(limited()).await.unwrap();
    let name =
        augur_core::service::counters::per_account(augur_core::service::counters::ACTIVE, &a);
    let counters = predictions.ops().counters().await.unwrap();
    let active = counters
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| *v);
    assert_eq!(active, 2);
}

/// Over random sequences of create, start, succeed, fail, cancel, top-up, grant and adjust,
/// after every step: balance = Σ deltas, reserved = Σ held = the holds of unsettled
/// predictions, available ≥ 0.
pub async fn ledger_invariant_holds_over_random_sequences(store: DynStore) {
    let (accounts, credits, predictions) = services(&store);
    for seed in 0..6u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let a = account("random");
        accounts.create(a.clone(), "Random").await.unwrap();
        let mut holds: HashMap<PredictionId, (Status, i64)> = HashMap::new();
        for step in 0..30 {
            let open: Vec<_> = holds
                .iter()
                .filter(|(_, (s, _))| !s.is_terminal())
                .map(|(id, (s, _))| (id.clone(), *s))
                .collect();
            match rng.random_range(0..8) {
                0 | 1 => {
                    let price = if rng.random_bool(0.5) {
                        per_prediction(rng.random_range(0..6))
                    } else {
                        Some(Price::PerSecond {
                            per_second: rng.random_range(1..3),
                            max_seconds: rng.random_range(1..5),
                        })
                    };
                    let reserve = price.map_or(0, |p| p.reserve());
                    match predictions.create(priced(&a, price)).await {
                        Ok(c) => {
                            holds.insert(
                                c.prediction().value.id.clone(),
                                (Status::Starting, reserve),
                            );
                        }
                        Err(Error::InsufficientCredits { .. }) => {}
                        Err(e) => panic!("seed {seed} step {step}: {e}"),
                    }
                }
                2..=4 if !open.is_empty() => {
                    let (id, status) = &open[rng.random_range(0..open.len())];
                    let event = match (rng.random_range(0..4), status) {
                        (0, Status::Starting) => Event::processing(),
                        (0 | 1, _) => Event::succeeded(serde_json::json!("ok")),
                        (2, _) => Event::failed("boom"),
                        _ => Event::canceled(),
                    };
                    let events = if *status == Status::Starting && event.status == Status::Succeeded
                    {
                        vec![Event::processing(), event]
                    } else {
                        vec![event]
                    };
                    let done = predictions
                        .transition_all(id, &events, &[])
                        .await
                        .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
                    holds.get_mut(id).unwrap().0 = done.prediction.value.status;
                }
                5 => {
                    let order = format!("order-{}", rng.random_range(0..4));
                    credits.topup(&a, &order, 5).await.unwrap();
                }
                6 => {
                    credits
                        .post(&a, Reason::Grant, rng.random_range(1..4), None, None)
                        .await
                        .unwrap();
                }
                _ => {
                    let amount = -rng.random_range(1..8);
                    match credits.post(&a, Reason::Adjust, amount, None, None).await {
                        Ok(_) | Err(Error::InsufficientCredits { .. }) => {}
                        Err(e) => panic!("seed {seed} step {step}: {e}"),
                    }
                }
            }
            let totals = assert_balanced(&store, &a).await;
            let held: i64 = holds
                .values()
                .filter(|(s, _)| !s.is_terminal())
                .map(|(_, r)| r)
                .sum();
            assert_eq!(totals.reserved, held, "seed {seed} step {step}");
        }
    }
}
