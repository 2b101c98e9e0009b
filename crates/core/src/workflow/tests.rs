//! Workflow tests on `MemoryStore`: blueprint validation, fan-out and fan-in, failure
//! policies, retries, cancel, and credits reserved stage by stage.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::credits::Price;
use crate::error::Error;
use crate::id::PredictionId;
use crate::prediction::{Prediction, WebhookEvents};
use crate::service::{Predictions, ServiceConfig};
use crate::state::{Event, Status};
use crate::store::memory::MemoryStore;
use crate::store::{DynStore, Kind, Lane, ListQuery};

/// Models for tests: `t/echo` takes anything, `t/strict` refuses an input without `x`,
/// `t/paid` costs 1 credit.
#[derive(Debug)]
pub(crate) struct TestCatalog;

impl Catalog for TestCatalog {
    fn model(&self, name: &ModelName) -> Option<ModelInfo> {
        let price = match name.as_str() {
            "t/echo" | "t/strict" => None,
            "t/paid" => Some(Price::PerPrediction { per_prediction: 1 }),
            _ => return None,
        };
        Some(ModelInfo {
            version: "v1".into(),
            price,
        })
    }

    fn validate(&self, name: &ModelName, input: &Value) -> Result<Value, InputProblem> {
        if name.as_str() == "t/strict" && input.get("x").is_none_or(Value::is_null) {
            return Err(InputProblem {
                field: Some("x".into()),
                message: "is required".into(),
            });
        }
        Ok(input.clone())
    }

    fn render_files(&self, value: Value) -> Value {
        match value {
            Value::String(s) if s.starts_with("/files/") => {
                Value::String(format!("http://127.0.0.1:1{s}"))
            }
            other => other,
        }
    }
}

fn blueprint(v: Value) -> Blueprint {
    serde_json::from_value(v).unwrap()
}

fn variants() -> Blueprint {
    blueprint(json!({
        "name": "acme/variants",
        "input_schema": {"type": "object", "required": ["prompt"],
                         "properties": {"prompt": {"type": "string"}}},
        "nodes": {
            "draw": {"model": "t/echo", "input": {"prompt": "{{ input.prompt }}", "w": 64}},
            "left": {"model": "t/echo", "input": {"image": "{{ nodes.draw.output }}", "side": "left"}},
            "right": {"model": "t/echo", "input": {"image": "{{ nodes.draw.output }}", "side": "right"}},
            "sheet": {"model": "t/echo", "input": {"a": "{{ nodes.left.output }}", "b": "{{ nodes.right.output }}"}}
        },
        "output": "{{ nodes.sheet.output }}"
    }))
}

fn service() -> (Predictions, DynStore) {
    let store: DynStore = Arc::new(MemoryStore::new());
    (
        Predictions::new(store.clone(), ServiceConfig::default()),
        store,
    )
}

async fn start(service: &Predictions, owner: &AccountId, bp: Blueprint, input: Value) -> Run {
    let w = service
        .put_workflow(owner, bp, &TestCatalog)
        .await
        .unwrap()
        .workflow()
        .clone();
    service
        .create_run(
            &RunRequest {
                owner: owner.clone(),
                workflow: w,
                input,
                webhook: Some("http://127.0.0.1:9/hook".into()),
                webhook_events_filter: WebhookEvents::NONE,
                idempotency_key: None,
                free: false,
            },
            &TestCatalog,
        )
        .await
        .unwrap()
        .run()
        .value
        .clone()
}

/// The run's predictions in `status`.
async fn predictions(service: &Predictions, run: &Run, status: Option<Status>) -> Vec<Prediction> {
    let mut query = ListQuery::of(Kind::Prediction, 1000);
    query.owner = Some(run.owner.clone());
    query.parent = Some(run.id.clone());
    query.status = status.map(|s| s.as_str().to_owned());
    let page = service.store().list(&query).await.unwrap();
    page.items
        .iter()
        .map(|s| (*s.decode::<Prediction>().unwrap()).clone())
        .collect()
}

/// Plays the worker: every starting prediction of the run settles as `outcome` says (an
/// echo of its input by default), then the run advances, until it is terminal.
async fn drive(service: &Predictions, run: &Run, outcome: impl Fn(&Prediction) -> Event) -> Run {
    for _ in 0..200 {
        for p in predictions(service, run, Some(Status::Starting)).await {
            let last = outcome(&p);
            service
                .transition_all(&p.id, &[Event::processing(), last], &[])
                .await
                .unwrap();
        }
        let now = service
            .advance_run(&run.owner, &run.id, &TestCatalog, false)
            .await
            .unwrap();
        if now.value.status.is_terminal() {
            return now.value;
        }
    }
    panic!("run {} did not settle", run.id);
}

fn echo(p: &Prediction) -> Event {
    Event::succeeded(p.input.clone())
}

#[tokio::test]
async fn the_four_node_blueprint_passes_outputs_along() {
    let (service, store) = service();
    let owner = AccountId::admin();
    let run = start(&service, &owner, variants(), json!({"prompt": "a cat"})).await;
    assert_eq!(run.nodes["draw"].status, NodeStatus::Starting);
    assert_eq!(run.nodes["left"].status, NodeStatus::Waiting);
    let done = drive(&service, &run, |p| {
        if p.node.as_deref() == Some("draw") {
            Event::succeeded(json!("/files/x/0123456789abcdef0123456789abcdef/a.png"))
        } else {
            echo(p)
        }
    })
    .await;
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    let url = "http://127.0.0.1:1/files/x/0123456789abcdef0123456789abcdef/a.png";
    assert_eq!(
        done.output,
        Some(json!({"a": {"image": url, "side": "left"}, "b": {"image": url, "side": "right"}}))
    );
    // The stored node output keeps the reference; the next node got the URL.
    assert_eq!(
        done.nodes["draw"].output,
        Some(json!("/files/x/0123456789abcdef0123456789abcdef/a.png"))
    );
    let all = predictions(&service, &run, None).await;
    assert_eq!(all.len(), 4);
    for p in &all {
        assert_eq!(p.run.as_deref(), Some(run.id.as_str()));
    }
    assert_settled_once(&service, &store, &done).await;
}

/// `done` has its one `run.completed` message, and advancing it again (as the task loop or
/// a reconcile would) changes nothing.
async fn assert_settled_once(service: &Predictions, store: &DynStore, done: &Run) {
    let messages = store
        .items(Lane::Webhooks, &Run::key_of(&done.id))
        .await
        .unwrap();
    assert_eq!(messages.len(), 1, "one run.completed");
    assert_eq!(messages[0].id, done.completion_message_id());
    let again = service
        .advance_run(&done.owner, &done.id, &TestCatalog, true)
        .await
        .unwrap();
    assert_eq!(&again.value, done);
}

#[tokio::test]
async fn a_fan_out_feeds_a_join_in_item_order() {
    let (service, _) = service();
    let owner = AccountId::admin();
    let bp = blueprint(json!({
        "name": "acme/fan",
        "nodes": {
            "each": {"model": "t/echo", "for_each": "{{ input.prompts }}",
                     "input": {"p": "{{ item }}", "i": "{{ index }}"}},
            "join": {"model": "t/echo", "input": {"all": "{{ nodes.each.output }}"}}
        },
        "output": "{{ nodes.join.output.all }}"
    }));
    let prompts: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    let run = start(&service, &owner, bp, json!({"prompts": prompts})).await;
    assert_eq!(run.nodes["each"].items.len(), 20);
    let done = drive(&service, &run, echo).await;
    assert_eq!(done.status, Status::Succeeded);
    let expected: Vec<Value> = (0..20)
        .map(|i| json!({"p": format!("p{i}"), "i": i}))
        .collect();
    assert_eq!(done.output, Some(Value::Array(expected)));
    assert_eq!(predictions(&service, &run, None).await.len(), 21);
}

#[tokio::test]
async fn an_empty_fan_out_succeeds_with_an_empty_list() {
    let (service, _) = service();
    let bp = blueprint(json!({
        "name": "acme/empty",
        "nodes": {
            "each": {"model": "t/echo", "for_each": "{{ input.xs }}", "input": {"p": "{{ item }}"}},
            "join": {"model": "t/echo", "input": {"all": "{{ nodes.each.output }}"}}
        },
        "output": "{{ nodes.join.output }}"
    }));
    let run = start(&service, &AccountId::admin(), bp, json!({"xs": []})).await;
    let done = drive(&service, &run, echo).await;
    assert_eq!(done.output, Some(json!({"all": []})));
}

fn failing(policy: &str) -> Blueprint {
    blueprint(json!({
        "name": "acme/fails",
        "nodes": {
            "a": {"model": "t/echo", "input": {"v": 1}},
            "slow": {"model": "t/echo", "input": {"v": 2}},
            "bad": {"model": "t/echo", "input": {"v": "{{ nodes.a.output.v }}", "fail": true},
                    "on_failure": policy},
            "after": {"model": "t/echo", "input": {"got": "{{ nodes.bad.output }}"}}
        },
        "output": "{{ nodes.after.output }}"
    }))
}

#[tokio::test]
async fn a_failing_node_fails_the_run_and_cancels_the_rest() {
    let (service, _) = service();
    let run = start(&service, &AccountId::admin(), failing("fail"), json!({})).await;
    // `a` succeeds and `slow` stays running; then `bad` fails.
    let a = run.nodes["a"].items[0].ids[0].clone();
    service
        .transition_all(
            &a,
            &[Event::processing(), Event::succeeded(json!({"v": 1}))],
            &[],
        )
        .await
        .unwrap();
    let slow = run.nodes["slow"].items[0].ids[0].clone();
    service
        .transition(&slow, &Event::processing())
        .await
        .unwrap();
    let run = service
        .advance_run(&run.owner, &run.id, &TestCatalog, false)
        .await
        .unwrap()
        .value;
    let bad = run.nodes["bad"].items[0].ids[0].clone();
    service
        .transition_all(&bad, &[Event::processing(), Event::failed("boom")], &[])
        .await
        .unwrap();
    let run = service
        .advance_run(&run.owner, &run.id, &TestCatalog, false)
        .await
        .unwrap()
        .value;
    // The cancel of `slow` replaced the advance task; the next advance settles the run.
    let done = service
        .advance_run(&run.owner, &run.id, &TestCatalog, false)
        .await
        .unwrap()
        .value;
    assert_eq!(done.status, Status::Failed, "{done:?}");
    assert_eq!(done.error.as_deref(), Some("node bad failed: boom"));
    assert_eq!(done.nodes["slow"].status, NodeStatus::Canceled);
    assert_eq!(
        service.get(&slow).await.unwrap().value.status,
        Status::Canceled
    );
    assert_eq!(done.nodes["after"].status, NodeStatus::Skipped);
    assert_eq!(predictions(&service, &done, None).await.len(), 3);
}

#[tokio::test]
async fn a_failing_node_with_continue_gives_null() {
    let (service, _) = service();
    let run = start(
        &service,
        &AccountId::admin(),
        failing("continue"),
        json!({}),
    )
    .await;
    let done = drive(&service, &run, |p| {
        if p.input.get("fail").is_some() {
            Event::failed("boom")
        } else {
            echo(p)
        }
    })
    .await;
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    assert_eq!(done.nodes["bad"].status, NodeStatus::Failed);
    assert_eq!(done.output, Some(json!({"got": null})));
}

#[tokio::test]
async fn retries_make_new_predictions_until_one_succeeds() {
    let (service, _) = service();
    let bp = blueprint(json!({
        "name": "acme/retry",
        "nodes": {"flaky": {"model": "t/echo", "input": {"v": 1}, "retries": 2}},
        "output": "{{ nodes.flaky.output }}"
    }));
    let run = start(&service, &AccountId::admin(), bp, json!({})).await;
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let done = drive(&service, &run, |p| {
        if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            Event::failed("flaky")
        } else {
            echo(p)
        }
    })
    .await;
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(done.nodes["flaky"].items[0].ids.len(), 3);
    assert_eq!(done.output, Some(json!({"v": 1})));
}

#[tokio::test]
async fn a_canceled_run_cancels_its_nodes_and_skips_the_rest() {
    let (service, _) = service();
    let owner = AccountId::admin();
    let run = start(&service, &owner, variants(), json!({"prompt": "x"})).await;
    let canceled = service
        .cancel_run(&owner, &run.id, &TestCatalog)
        .await
        .unwrap();
    let done = service
        .advance_run(&owner, &run.id, &TestCatalog, false)
        .await
        .unwrap()
        .value;
    assert_eq!(done.status, Status::Canceled, "{canceled:?}");
    assert_eq!(done.nodes["draw"].status, NodeStatus::Canceled);
    assert_eq!(done.nodes["sheet"].status, NodeStatus::Skipped);
}

#[tokio::test]
async fn a_node_whose_rendered_input_is_refused_fails_with_the_field() {
    let (service, _) = service();
    let bp = blueprint(json!({
        "name": "acme/strict",
        "nodes": {
            "a": {"model": "t/echo", "input": {}},
            "b": {"model": "t/strict", "input": {"x": "{{ nodes.a.output.missing }}"}}
        }
    }));
    let run = start(&service, &AccountId::admin(), bp, json!({})).await;
    let done = drive(&service, &run, echo).await;
    assert_eq!(done.status, Status::Failed);
    assert_eq!(
        done.error.as_deref(),
        Some("node b failed: input.x: is required")
    );
}

#[tokio::test]
async fn credits_are_reserved_stage_by_stage() {
    let (service, _) = service();
    let owner = AccountId::parse("alice").unwrap();
    let bp = blueprint(json!({
        "name": "acme/paid",
        "nodes": {
            "a": {"model": "t/paid", "input": {}},
            "b": {"model": "t/paid", "input": {"x": "{{ nodes.a.output }}"}}
        }
    }));
    let w = service
        .put_workflow(&owner, bp, &TestCatalog)
        .await
        .unwrap()
        .workflow()
        .clone();
    let request = RunRequest {
        owner: owner.clone(),
        workflow: w,
        input: json!({}),
        webhook: None,
        webhook_events_filter: WebhookEvents::NONE,
        idempotency_key: None,
        free: false,
    };
    // No credits: the first stage cannot be reserved, nothing exists.
    match service.create_run(&request, &TestCatalog).await {
        Err(Error::InsufficientCredits { price: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    let page = service
        .list_runs(Some(&owner), None, None, 10)
        .await
        .unwrap();
    assert!(page.items.is_empty());
    // One credit: the first stage starts; the second cannot be afforded and fails the run.
    crate::Credits::new(service.store().clone())
        .post(&owner, crate::store::Reason::Grant, 1, None, None)
        .await
        .unwrap();
    let run = service
        .create_run(&request, &TestCatalog)
        .await
        .unwrap()
        .run()
        .value
        .clone();
    let done = drive(&service, &run, echo).await;
    assert_eq!(done.status, Status::Failed);
    assert_eq!(
        done.error.as_deref(),
        Some("node b failed: insufficient credits to start this node")
    );
    let balance = service.store().balance(&owner).await.unwrap();
    assert_eq!((balance.balance, balance.reserved), (0, 0));
}

/// A service whose node settlements advance their runs in the same write (the server's).
fn fused_service() -> (Predictions, DynStore) {
    let (service, store) = service();
    service.set_catalog(Arc::new(TestCatalog));
    (service, store)
}

/// Settles every starting prediction of the run as an echo of its input; how many.
async fn settle_starting(service: &Predictions, run: &Run) -> usize {
    let starting = predictions(service, run, Some(Status::Starting)).await;
    for p in &starting {
        service
            .transition_all(&p.id, &[Event::processing(), echo(p)], &[])
            .await
            .unwrap();
    }
    starting.len()
}

/// The run's queued advance tasks.
async fn advance_tasks(store: &DynStore, run: &Run) -> usize {
    store
        .items(Lane::Tasks, &Run::key_of(&run.id))
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_chain_advances_in_its_nodes_settlement_writes() {
    let (service, store) = fused_service();
    let owner = AccountId::admin();
    let bp = blueprint(json!({
        "name": "acme/chain",
        "nodes": {
            "a": {"model": "t/echo", "input": {"v": "{{ input.v }}"}},
            "b": {"model": "t/echo", "input": {"v": "{{ nodes.a.output.v }}", "at": "b"}},
            "c": {"model": "t/echo", "input": {"v": "{{ nodes.b.output.v }}", "at": "c"}}
        },
        "output": "{{ nodes.c.output }}"
    }));
    let run = start(&service, &owner, bp, json!({"v": 7})).await;
    // No advance is ever called: each settlement starts the next node itself, and queues
    // no advance task.
    for node in ["a", "b", "c"] {
        let before = service.get_run(None, &run.id).await.unwrap().value;
        assert_eq!(before.nodes[node].status, NodeStatus::Starting, "{node}");
        assert_eq!(settle_starting(&service, &run).await, 1, "{node}");
        assert_eq!(advance_tasks(&store, &run).await, 0, "{node}");
    }
    let done = service.get_run(None, &run.id).await.unwrap().value;
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    assert_eq!(done.output, Some(json!({"v": 7, "at": "c"})));
    assert!(
        done.nodes
            .values()
            .all(|n| n.status == NodeStatus::Succeeded)
    );
    assert_eq!(predictions(&service, &run, None).await.len(), 3);
    assert_settled_once(&service, &store, &done).await;
}

#[tokio::test]
async fn parents_settling_at_once_start_their_join_once() {
    let (service, store) = fused_service();
    let owner = AccountId::admin();
    let run = start(&service, &owner, variants(), json!({"prompt": "a cat"})).await;
    assert_eq!(settle_starting(&service, &run).await, 1);
    let parents = predictions(&service, &run, Some(Status::Starting)).await;
    assert_eq!(parents.len(), 2);
    let events: Vec<[Event; 2]> = parents
        .iter()
        .map(|p| [Event::processing(), echo(p)])
        .collect();
    let (left, right) = tokio::join!(
        service.transition_all(&parents[0].id, &events[0], &[]),
        service.transition_all(&parents[1].id, &events[1], &[]),
    );
    left.unwrap();
    right.unwrap();
    let sheet: Vec<_> = predictions(&service, &run, Some(Status::Starting)).await;
    assert_eq!(sheet.len(), 1, "the join started once");
    assert_eq!(sheet[0].node.as_deref(), Some("sheet"));
    assert_eq!(settle_starting(&service, &run).await, 1);
    let done = service.get_run(None, &run.id).await.unwrap().value;
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    assert_eq!(predictions(&service, &run, None).await.len(), 4);
    assert_eq!(advance_tasks(&store, &run).await, 0);
}

#[tokio::test]
async fn a_wide_fan_out_settles_through_the_advance_task() {
    let (service, store) = fused_service();
    let owner = AccountId::admin();
    let bp = blueprint(json!({
        "name": "acme/wide",
        "nodes": {
            "each": {"model": "t/echo", "for_each": "{{ input.xs }}", "input": {"p": "{{ item }}"}},
            "join": {"model": "t/echo", "input": {"all": "{{ nodes.each.output }}"}}
        },
        "output": "{{ nodes.join.output.all }}"
    }));
    let xs: Vec<usize> = (0..FUSE_AT_MOST + 1).collect();
    let run = start(&service, &owner, bp, json!({"xs": xs})).await;
    let first = predictions(&service, &run, Some(Status::Starting)).await[0].clone();
    service
        .transition_all(&first.id, &[Event::processing(), echo(&first)], &[])
        .await
        .unwrap();
    // More predictions running than a settlement advances by itself: the run record is
    // left to the advance task.
    assert_eq!(advance_tasks(&store, &run).await, 1);
    let stored = service.get_run(None, &run.id).await.unwrap().value;
    assert!(
        stored.nodes["each"]
            .items
            .iter()
            .all(|i| i.status == Status::Starting)
    );
    let done = drive(&service, &run, echo).await;
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(
        done.output,
        Some(json!(
            xs.iter().map(|x| json!({"p": x})).collect::<Vec<_>>()
        ))
    );
}

#[tokio::test]
async fn a_refused_reservation_leaves_the_advance_to_the_task() {
    let (service, store) = fused_service();
    let owner = AccountId::parse("alice").unwrap();
    crate::Credits::new(service.store().clone())
        .post(&owner, crate::store::Reason::Grant, 1, None, None)
        .await
        .unwrap();
    let bp = blueprint(json!({
        "name": "acme/paid",
        "nodes": {
            "a": {"model": "t/paid", "input": {}},
            "b": {"model": "t/paid", "input": {"x": "{{ nodes.a.output }}"}}
        }
    }));
    let run = start(&service, &owner, bp, json!({})).await;
    // The settlement commits although the next node's reservation is refused; the run
    // record is not moved by it, and the advance task is queued instead.
    assert_eq!(settle_starting(&service, &run).await, 1);
    assert_eq!(advance_tasks(&store, &run).await, 1);
    let stored = service.get_run(None, &run.id).await.unwrap().value;
    assert_eq!(stored.nodes["b"].status, NodeStatus::Waiting);
    let done = service
        .advance_run(&owner, &run.id, &TestCatalog, false)
        .await
        .unwrap()
        .value;
    assert_eq!(done.status, Status::Failed);
    assert_eq!(
        done.error.as_deref(),
        Some("node b failed: insufficient credits to start this node")
    );
    let balance = service.store().balance(&owner).await.unwrap();
    assert_eq!((balance.balance, balance.reserved), (0, 0));
}

#[test]
fn validation_names_the_node_and_field() {
    let cases = [
        (
            json!({"name": "a/b", "nodes": {"x": {"model": "t/echo", "input": {"v": "{{ nodes.y.output }}"}},
                                          "y": {"model": "t/echo", "input": {"v": "{{ nodes.x.output }}"}}}}),
            "nodes.x",
            "cycle",
        ),
        (
            json!({"name": "a/b", "nodes": {"x": {"model": "t/echo", "input": {"v": "{{ nodes.nope.output }}"}}}}),
            "nodes.x.input.v",
            "no node",
        ),
        (
            json!({"name": "a/b", "nodes": {"x": {"model": "t/nope", "input": {}}}}),
            "nodes.x.model",
            "does not exist",
        ),
        (
            json!({"name": "a/b", "nodes": {"x": {"model": "t/echo", "input": {"v": "{{ env.HOME }}"}}}}),
            "nodes.x.input.v",
            "unknown name",
        ),
        (
            json!({"name": "a/b", "nodes": {"x": {"model": "t/echo", "input": {"v": "{{ item }}"}}}}),
            "nodes.x.input.v",
            "for_each",
        ),
        (
            json!({"name": "a/b", "nodes": {"x": {"model": "t/strict", "input": {"y": 1}}}}),
            "nodes.x.input.x",
            "required",
        ),
        (
            json!({"name": "a/b", "nodes": {"x": {"model": "t/echo", "after": ["z"]}}}),
            "nodes.x.after.0",
            "not another node",
        ),
        (
            json!({"name": "a/b", "nodes": {"x": {"model": "t/echo", "for_each": "prompts"}}}),
            "nodes.x.for_each",
            "one template",
        ),
        (
            json!({"name": "nope", "nodes": {"x": {"model": "t/echo"}}}),
            "name",
            "owner/name",
        ),
    ];
    for (bp, field, why) in cases {
        let err = blueprint(bp.clone()).validate(&TestCatalog).unwrap_err();
        assert_eq!(err.field, field, "{bp}: {err}");
        assert!(err.message.contains(why), "{bp}: {err}");
    }
    // A templated field the model requires is checked when the node starts.
    let ok = blueprint(json!({"name": "a/b", "nodes": {
        "x": {"model": "t/echo"},
        "y": {"model": "t/strict", "input": {"x": "{{ nodes.x.output }}"}}}}));
    let shape = ok.validate(&TestCatalog).unwrap();
    assert_eq!(shape.order, ["x", "y"]);
}

#[test]
fn run_inputs_are_checked_against_the_input_schema() {
    let bp = variants();
    assert!(bp.check_input(&json!({"prompt": "x"})).is_ok());
    let err = bp.check_input(&json!({})).unwrap_err();
    assert_eq!(err.field, "input.prompt");
    let err = bp.check_input(&json!({"prompt": 3})).unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.message.as_str()),
        ("input.prompt", "must be of type string")
    );
}

#[test]
fn node_prediction_ids_are_stable_per_node_item_and_attempt() {
    let mut run_ids = std::collections::HashSet::new();
    let run = Run {
        id: PredictionId::generate().to_string(),
        owner: AccountId::parse("bob").unwrap(),
        workflow: "a/b".into(),
        version: 1,
        blueprint: variants(),
        order: vec![],
        input: json!({}),
        status: Status::Starting,
        nodes: Default::default(),
        output: None,
        error: None,
        webhook: None,
        webhook_events_filter: WebhookEvents::NONE,
        free: false,
        created_at: Timestamp::now(),
        started_at: None,
        completed_at: None,
        cancel_requested: false,
        seed: "s".into(),
    };
    for node in ["a", "b"] {
        for index in 0..3 {
            for attempt in 0..2 {
                let id = run.prediction_id(node, index, attempt);
                assert_eq!(id, run.prediction_id(node, index, attempt));
                assert_eq!(id.as_str().len(), 26);
                assert_eq!(
                    crate::store::Partition::of(id.as_str()),
                    crate::store::Partition::of_account(&run.owner)
                );
                assert!(run_ids.insert(id));
            }
        }
    }
}
