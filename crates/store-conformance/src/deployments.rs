//! Conformance tests for deployments ([`augur_core::deployment`]) through `Predictions`: a
//! deployment round-trips, racing updates each get their own release number, another account
//! neither sees nor changes it, and its predictions are queued on its own topic.

use augur_core::deployment::{Configuration, Deployment, DeploymentChange, Release};
use augur_core::store::{ClaimRequest, DynStore, Lane};
use augur_core::{
    CreateRequest, Error, ModelName, Predictions, ServiceConfig, Timestamp, WebhookEvents, WorkerId,
};
use serde_json::json;

use crate::fixtures::account;

fn deployment(owner: &augur_core::AccountId, name: &str) -> Deployment {
    let now = Timestamp::now();
    Deployment {
        owner: owner.clone(),
        name: name.into(),
        current_release: Release {
            number: 1,
            model: ModelName::parse("t/echo").unwrap(),
            version: "v1".into(),
            created_at: now,
            created_by: owner.clone(),
            configuration: Configuration {
                hardware: "default".into(),
                min_instances: 0,
                max_instances: 2,
            },
        },
        created_at: now,
    }
}

/// A deployment reads back as created, a second create of its name is refused, 16 racing
/// updates get releases 2 to 17 (none lost), and a delete removes it.
pub async fn deployments_round_trip_and_racing_updates_get_their_own_releases(store: DynStore) {
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    let owner = account("deployer");
    let d = deployment(&owner, "web");
    service.create_deployment(&d).await.unwrap();
    assert_eq!(service.get_deployment(&owner, "web").await.unwrap(), d);
    assert!(matches!(
        service.create_deployment(&d).await,
        Err(Error::DeploymentExists(_))
    ));
    let tasks: Vec<_> = (0..16u32)
        .map(|i| {
            let (service, owner) = (service.clone(), owner.clone());
            tokio::spawn(async move {
                let change = DeploymentChange {
                    max_instances: Some(10 + i),
                    ..Default::default()
                };
                service
                    .update_deployment(&owner, "web", &owner, &change, |_| Ok(()))
                    .await
                    .unwrap()
                    .current_release
                    .number
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (2..=17).collect::<Vec<_>>());
    let last = service.get_deployment(&owner, "web").await.unwrap();
    assert_eq!(last.current_release.number, 17);
    // A refused release stores nothing.
    let refused = service
        .update_deployment(&owner, "web", &owner, &DeploymentChange::default(), |_| {
            Err(Error::Invalid("no".into()))
        })
        .await;
    assert!(matches!(refused, Err(Error::Invalid(_))));
    assert_eq!(
        service
            .get_deployment(&owner, "web")
            .await
            .unwrap()
            .current_release
            .number,
        17
    );
    service
        .create_deployment(&deployment(&owner, "api"))
        .await
        .unwrap();
    let page = service
        .list_deployments(Some(&owner), None, 10)
        .await
        .unwrap();
    let names: Vec<_> = page.items.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["api", "web"]);
    service.delete_deployment(&owner, "web").await.unwrap();
    assert!(
        service
            .find_deployment(&owner, "web")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        service.delete_deployment(&owner, "web").await,
        Err(Error::DeploymentNotFound(_))
    ));
}

/// Another account's deployment of the same name is a different one: it neither reads,
/// updates, lists nor deletes the first.
pub async fn deployments_stay_within_their_account(store: DynStore) {
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    let (alice, bob) = (account("alice-d"), account("bob-d"));
    service
        .create_deployment(&deployment(&alice, "web"))
        .await
        .unwrap();
    assert!(
        service
            .find_deployment(&bob, "web")
            .await
            .unwrap()
            .is_none()
    );
    let change = DeploymentChange {
        max_instances: Some(9),
        ..Default::default()
    };
    assert!(matches!(
        service
            .update_deployment(&bob, "web", &bob, &change, |_| Ok(()))
            .await,
        Err(Error::DeploymentNotFound(_))
    ));
    assert!(matches!(
        service.delete_deployment(&bob, "web").await,
        Err(Error::DeploymentNotFound(_))
    ));
    let bobs = service
        .list_deployments(Some(&bob), None, 10)
        .await
        .unwrap();
    assert!(bobs.items.is_empty());
    // Bob's own "web" is his alone.
    service
        .create_deployment(&deployment(&bob, "web"))
        .await
        .unwrap();
    service.delete_deployment(&bob, "web").await.unwrap();
    let alices = service.get_deployment(&alice, "web").await.unwrap();
    assert_eq!(alices.current_release.configuration.max_instances, 2);
    let everyone = service.list_deployments(None, None, 100).await.unwrap();
    assert!(everyone.items.iter().any(|d| d.owner == alice));
}

/// A prediction created through a deployment names it, and its job is on the deployment's
/// topic, which a claim excluding that topic skips.
pub async fn deployment_predictions_queue_on_their_own_topic(store: DynStore) {
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    let owner = account("topic");
    let d = deployment(&owner, "web");
    service.create_deployment(&d).await.unwrap();
    let request = CreateRequest {
        id: None,
        owner: owner.clone(),
        model: d.current_release.model.clone(),
        version: "v1".into(),
        input: json!({}),
        webhook: None,
        webhook_events_filter: WebhookEvents::ALL,
        deadline: None,
        idempotency_key: None,
        price: None,
        max_active: None,
    };
    let created = service
        .create_through(request, Some(d.full_name()))
        .await
        .unwrap();
    let p = created.prediction().value.clone();
    assert_eq!(p.deployment, Some(format!("{owner}/web")));
    assert_eq!(p.queue(), d.queue());
    let claim = |exclude: Vec<String>| ClaimRequest {
        lane: Lane::Jobs,
        worker: WorkerId::generate(),
        lease_for: std::time::Duration::from_secs(30),
        max: 10,
        exclude_topics: exclude,
    };
    assert!(
        store
            .claim(&claim(vec![d.queue()]))
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = store.claim(&claim(vec!["t/echo".into()])).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].item.topic, format!("deployment:{owner}/web"));
    assert_eq!(claimed[0].item.id, p.id.as_str());
}
