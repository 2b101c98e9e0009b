//! The seeds' race on the Cloudflare backend (issue 14): 50 conflicting terminal transitions
//! of one prediction, sent at once as compare-and-set updates from the same revision, in 20
//! trials. The seeds' own KV and Durable Object designs let several win and lose acknowledged
//! writes; here exactly one wins every trial, and its write is what reads back.

mod common;

use augur_core::state::{Applied, Event};
use augur_core::store::Error;
use augur_core::{Revision, Status, Timestamp};
use augur_store_conformance::fixtures::{get, insert, prediction, update};
use serde_json::json;

const TRIALS: usize = 20;
const RACERS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_terminal_transitions_have_one_winner_and_lose_nothing() {
    let Some(store) = common::store().await else {
        return;
    };
    for trial in 0..TRIALS {
        let p = prediction();
        insert(&store, &p, vec![]).await;
        let Applied::Changed(processing) = p.apply(&Event::processing(), Timestamp::now()).unwrap()
        else {
            panic!("processing changes a starting prediction");
        };
        update(&store, &processing, Revision::FIRST, vec![])
            .await
            .unwrap();
        let tasks: Vec<_> = (0..RACERS)
            .map(|i| {
                let event = match i % 3 {
                    0 => Event::succeeded(json!(format!("output {trial}/{i}"))),
                    1 => Event::failed(format!("error {trial}/{i}")),
                    _ => Event::canceled(),
                };
                let Applied::Changed(next) = processing.apply(&event, Timestamp::now()).unwrap()
                else {
                    panic!("a terminal report changes a processing prediction");
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let result = update(&store, &next, Revision(2), vec![]).await;
                    (next, result)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (next, result) = task.await.unwrap();
            match result {
                Ok(written) => {
                    assert_eq!(written.revisions, vec![Some(Revision(3))]);
                    winners.push(next);
                }
                Err(Error::Conflict { .. }) => {}
                Err(e) => panic!("trial {trial}: unexpected error {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "trial {trial}: {} winners", winners.len());
        let stored = get(&store, &p.id).await.unwrap();
        assert_eq!(stored.revision, Revision(3), "trial {trial}");
        assert!(
            matches!(
                stored.value.status,
                Status::Succeeded | Status::Failed | Status::Canceled
            ),
            "trial {trial}"
        );
        // No acknowledged write lost: the one acknowledged write is the one stored.
        assert_eq!(stored.value, *winners[0], "trial {trial}");
    }
}
