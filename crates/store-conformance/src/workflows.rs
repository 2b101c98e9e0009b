//! Conformance tests for workflow runs ([`augur_core::workflow`]) through `Predictions`: a
//! join whose parents settle at once on many tasks while advances race starts once, the same
//! when the settlements advance the run in their own writes, and the reconciler, run twice
//! at once, brings back a lost job and a lost node prediction once.

use std::sync::Arc;

use augur_core::store::{DynStore, Kind, Lane, ListQuery, Op, Reason, Write};
use augur_core::workflow::{
    Blueprint, Catalog, InputProblem, ModelInfo, NodeStatus, Run, RunRequest,
};
use augur_core::{
    AccountId, Credits, Event, ModelName, Prediction, Predictions, Price, ServiceConfig, Status,
    WebhookEvents, jobs,
};
use serde_json::{Value, json};

use crate::fixtures::account;
use crate::ledger::assert_balanced;

/// `t/echo`, priced at one credit.
#[derive(Debug)]
struct Models;

impl Catalog for Models {
    fn model(&self, name: &ModelName) -> Option<ModelInfo> {
        (name.as_str() == "t/echo").then(|| ModelInfo {
            version: "v1".into(),
            price: Some(Price::PerPrediction { per_prediction: 1 }),
        })
    }

    fn validate(&self, _: &ModelName, input: &Value) -> Result<Value, InputProblem> {
        Ok(input.clone())
    }

    fn render_files(&self, value: Value) -> Value {
        value
    }
}

async fn start(service: &Predictions, owner: &AccountId, blueprint: Value) -> Run {
    let blueprint: Blueprint = serde_json::from_value(blueprint).unwrap();
    let workflow = service
        .put_workflow(owner, blueprint, &Models)
        .await
        .unwrap()
        .workflow()
        .clone();
    service
        .create_run(
            &RunRequest {
                owner: owner.clone(),
                workflow,
                input: json!({}),
                webhook: Some("http://127.0.0.1:9/hook".into()),
                webhook_events_filter: WebhookEvents::NONE,
                idempotency_key: None,
                free: false,
            },
            &Models,
        )
        .await
        .unwrap()
        .run()
        .value
        .clone()
}

/// The run's predictions of `node`.
async fn node_predictions(store: &DynStore, run: &Run, node: &str) -> Vec<Prediction> {
    let mut query = ListQuery::of(Kind::Prediction, 1000);
    query.owner = Some(run.owner.clone());
    query.parent = Some(run.id.clone());
    let page = store.list(&query).await.unwrap();
    page.items
        .iter()
        .map(|s| (*s.decode::<Prediction>().unwrap()).clone())
        .filter(|p| p.node.as_deref() == Some(node))
        .collect()
}

/// Blueprint nodes: `count` parents `p<i>` and a `join` whose input takes each one's output.
fn parents_of_a_join(count: usize) -> serde_json::Map<String, Value> {
    let mut nodes = serde_json::Map::new();
    let mut refs = serde_json::Map::new();
    for i in 0..count {
        nodes.insert(
            format!("p{i}"),
            json!({"model": "t/echo", "input": {"i": i}}),
        );
        refs.insert(
            format!("p{i}"),
            json!(format!("{{{{ nodes.p{i}.output }}}}")),
        );
    }
    nodes.insert("join".into(), json!({"model": "t/echo", "input": refs}));
    nodes
}

/// Sixteen parents of one join settle at once from eight tasks, each followed by an advance,
/// while four more tasks advance the run in a loop: the join is started once, the run settles
/// once with one `run.completed` message, and the ledger balances.
pub async fn a_join_starts_once_when_its_parents_settle_at_once(store: DynStore) {
    let owner = account("wf");
    Credits::new(store.clone())
        .post(&owner, Reason::Grant, 100, None, None)
        .await
        .unwrap();
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    let nodes = parents_of_a_join(16);
    let run = start(
        &service,
        &owner,
        json!({"name": "c/join", "nodes": nodes, "output": "{{ nodes.join.output }}"}),
    )
    .await;
    let parents: Vec<_> = (0..16)
        .map(|i| run.nodes[&format!("p{i}")].items[0].ids[0].clone())
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for chunk in parents.chunks(2) {
        let (service, chunk, owner, id) = (
            service.clone(),
            chunk.to_vec(),
            owner.clone(),
            run.id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for p in chunk {
                service
                    .transition_all(
                        &p,
                        &[Event::processing(), Event::succeeded(json!(p.as_str()))],
                        &[],
                    )
                    .await
                    .unwrap();
                service
                    .advance_run(&owner, &id, &Models, false)
                    .await
                    .unwrap();
            }
        }));
    }
    for _ in 0..4 {
        let (service, owner, id, done) =
            (service.clone(), owner.clone(), run.id.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                service
                    .advance_run(&owner, &id, &Models, false)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks.drain(..8) {
        t.await.unwrap();
    }
    let advanced = service
        .advance_run(&owner, &run.id, &Models, false)
        .await
        .unwrap()
        .value;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(advanced.nodes["join"].items.len(), 1, "{advanced:?}");
    let joins = node_predictions(&store, &run, "join").await;
    assert_eq!(joins.len(), 1, "the join started once");
    let join = &joins[0];
    for (i, parent) in parents.iter().enumerate() {
        assert_eq!(join.input[format!("p{i}")], json!(parent.as_str()));
    }
    service
        .transition_all(
            &join.id,
            &[Event::processing(), Event::succeeded(json!("sheet"))],
            &[],
        )
        .await
        .unwrap();
    let settled = service
        .advance_run(&owner, &run.id, &Models, false)
        .await
        .unwrap()
        .value;
    assert_eq!(settled.status, Status::Succeeded);
    assert_eq!(settled.output, Some(json!("sheet")));
    let messages = store
        .items(Lane::Webhooks, &Run::key_of(&run.id))
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
    let balance = assert_balanced(&store, &owner).await;
    assert_eq!(
        balance.balance,
        100 - 17,
        "17 predictions charged once each"
    );
    assert_eq!(balance.reserved, 0);
}

/// With a catalog set (as the server sets it), node settlements advance their runs in their
/// own writes: six parents of a join settle at once from six tasks on two services (two
/// nodes, each with its own cache of the run record) and no advance is run; the join starts
/// once, and its settlement starts the node after it, whose settlement settles the run with
/// one `run.completed` message. The ledger balances.
pub async fn settlements_advance_their_runs_in_the_same_write(store: DynStore) {
    let owner = account("wf");
    Credits::new(store.clone())
        .post(&owner, Reason::Grant, 100, None, None)
        .await
        .unwrap();
    let services: Vec<Predictions> = (0..2)
        .map(|_| {
            let service = Predictions::new(store.clone(), ServiceConfig::default());
            service.set_catalog(Arc::new(Models));
            service
        })
        .collect();
    let mut nodes = parents_of_a_join(6);
    nodes.insert(
        "after".into(),
        json!({"model": "t/echo", "input": {"joined": "{{ nodes.join.output }}"}}),
    );
    let run = start(
        &services[0],
        &owner,
        json!({"name": "c/fused", "nodes": nodes, "output": "{{ nodes.after.output }}"}),
    )
    .await;
    let settle = |service: &Predictions, p: augur_core::PredictionId, output: Value| {
        let service = service.clone();
        async move {
            service
                .transition_all(&p, &[Event::processing(), Event::succeeded(output)], &[])
                .await
                .unwrap();
        }
    };
    let parents: Vec<_> = (0..6)
        .map(|i| run.nodes[&format!("p{i}")].items[0].ids[0].clone())
        .collect();
    let tasks: Vec<_> = parents
        .iter()
        .enumerate()
        .map(|(i, p)| tokio::spawn(settle(&services[i % 2], p.clone(), json!(p.as_str()))))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let joins = node_predictions(&store, &run, "join").await;
    assert_eq!(joins.len(), 1, "the join started once, with no advance run");
    for (i, parent) in parents.iter().enumerate() {
        assert_eq!(joins[0].input[format!("p{i}")], json!(parent.as_str()));
    }
    settle(&services[1], joins[0].id.clone(), json!("sheet")).await;
    let after = node_predictions(&store, &run, "after").await;
    assert_eq!(
        after.len(),
        1,
        "the join's settlement started the next node"
    );
    assert_eq!(after[0].input, json!({"joined": "sheet"}));
    settle(&services[0], after[0].id.clone(), json!("done")).await;
    let settled = services[1].get_run(None, &run.id).await.unwrap().value;
    assert_eq!(settled.status, Status::Succeeded, "{settled:?}");
    assert_eq!(settled.output, Some(json!("done")));
    let messages = store
        .items(Lane::Webhooks, &Run::key_of(&run.id))
        .await
        .unwrap();
    assert_eq!(messages.len(), 1, "one run.completed");
    // An advance (the task loop's, or a reconcile) finds nothing left to do.
    let again = services[1]
        .advance_run(&owner, &run.id, &Models, true)
        .await
        .unwrap()
        .value;
    assert_eq!(again, settled);
    let balance = assert_balanced(&store, &owner).await;
    assert_eq!(balance.balance, 100 - 8, "8 predictions charged once each");
    assert_eq!(balance.reserved, 0);
}

/// A node's job removed behind the run's back, and another node's prediction deleted: two
/// reconcilers at once queue the job once and create the prediction once.
pub async fn reconcile_restores_lost_work_once(store: DynStore) {
    let owner = account("wf");
    Credits::new(store.clone())
        .post(&owner, Reason::Grant, 100, None, None)
        .await
        .unwrap();
    let service = Predictions::new(store.clone(), ServiceConfig::default());
    let run = start(
        &service,
        &owner,
        json!({"name": "c/lost", "nodes": {
            "a": {"model": "t/echo", "input": {"v": 1}},
            "b": {"model": "t/echo", "input": {"v": 2}}
        }}),
    )
    .await;
    let a = run.nodes["a"].items[0].ids[0].clone();
    let b = run.nodes["b"].items[0].ids[0].clone();
    // `a`'s job goes; `b` (with its job) is deleted.
    store
        .write(&Write {
            account: owner.clone(),
            ops: vec![Op::Delete(b.key())],
            effects: vec![jobs::complete(&a)],
        })
        .await
        .unwrap();
    assert!(store.items(Lane::Jobs, &a.key()).await.unwrap().is_empty());
    let second = Predictions::new(store.clone(), ServiceConfig::default());
    let (x, y) = tokio::join!(
        service.advance_run(&owner, &run.id, &Models, true),
        second.advance_run(&owner, &run.id, &Models, true),
    );
    x.unwrap();
    y.unwrap();
    // A third pass finds nothing to do.
    service
        .advance_run(&owner, &run.id, &Models, true)
        .await
        .unwrap();
    assert_eq!(store.items(Lane::Jobs, &a.key()).await.unwrap().len(), 1);
    assert_eq!(store.items(Lane::Jobs, &b.key()).await.unwrap().len(), 1);
    assert_eq!(node_predictions(&store, &run, "a").await.len(), 1);
    assert_eq!(node_predictions(&store, &run, "b").await.len(), 1);
    // Both run to the end.
    for p in [&a, &b] {
        service
            .transition_all(p, &[Event::processing(), Event::succeeded(json!(1))], &[])
            .await
            .unwrap();
    }
    let settled = service
        .advance_run(&owner, &run.id, &Models, false)
        .await
        .unwrap()
        .value;
    assert_eq!(settled.status, Status::Succeeded);
    assert_eq!(settled.nodes["b"].status, NodeStatus::Succeeded);
    assert_balanced(&store, &owner).await;
}
