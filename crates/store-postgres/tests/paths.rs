//! The two ways this backend makes a write leave the same state: every shape of write (a
//! record inserted or compare-and-set, with every combination of queue, counter and event
//! effects, claimed and delayed items, replacements, heads that pass on, refusals, and the
//! shapes only the general path makes) is sent to a store that fuses the common writes into
//! one statement and to one that makes every write as a pipelined transaction, and the two
//! answer alike and end up holding the same records, items (down to which are heads and in
//! which fair order they are claimed), events, ledgers and counters.

mod common;

use std::time::Duration;

use augur_core::idempotency::IdempotencyKey;
use augur_core::jobs;
use augur_core::outbox::Delivery;
use augur_core::store::{
    AdminStore, DynStore, Effect, Entity, Exported, Lane, LedgerEntry, NewItem, Op, Position,
    Reason, RecordStore, Section, StreamEvent, StreamEventData, StreamEventKind, Write, Written,
};
use augur_core::{
    AccountId, ModelName, Prediction, PredictionId, Revision, Timestamp, WebhookEvent, WorkerId,
};
use std::sync::Arc;

/// Both stores, and how many writes the fused one decided with its single statement.
struct Pair {
    fused: common::TestStore,
    general: common::TestStore,
    /// Writes sent so far whose shape the fused store makes in one statement.
    fusable: u64,
}

impl Pair {
    /// Sends `write` to both stores; their answers must agree.
    async fn write(&mut self, write: &Write, fusable: bool) -> Result<Written, String> {
        let a = self.fused.write(write).await.map_err(|e| e.to_string());
        let b = self.general.write(write).await.map_err(|e| e.to_string());
        assert_eq!(a, b, "the two paths answered differently to {write:?}");
        self.fusable += u64::from(fusable);
        assert_eq!(
            self.fused.inner.fused_writes(),
            self.fusable,
            "a fusable write was not fused, or another was: {write:?}"
        );
        assert_eq!(self.general.inner.fused_writes(), 0);
        a
    }
}

fn prediction(owner: &AccountId, n: usize) -> Prediction {
    let mut p = Prediction::new(
        PredictionId::generate_for(owner),
        owner.clone(),
        ModelName::parse(if n.is_multiple_of(2) {
            "augur/echo"
        } else {
            "augur/other"
        })
        .unwrap(),
        "v1".into(),
        serde_json::json!({"n": n}),
    );
    p.created_at = Timestamp::from_micros(1_700_000_000_000_000 + n as i64);
    p
}

fn insert(p: &Prediction, effects: Vec<Effect>) -> Write {
    Write::new(p.owner.clone())
        .op(Op::Insert(p.to_record().unwrap()))
        .effects(effects)
}

fn update(p: &Prediction, expected: u64, effects: Vec<Effect>) -> Write {
    Write::new(p.owner.clone())
        .op(Op::Update {
            record: p.to_record().unwrap(),
            expected: Revision(expected),
        })
        .effects(effects)
}

/// The job of `p`: due now, due later, or claimed at once, by `n`.
fn job(p: &Prediction, n: usize, now: Timestamp) -> Effect {
    match n % 3 {
        0 => jobs::enqueue(&p.id, &p.owner, p.model.as_str(), now),
        1 => jobs::enqueue(
            &p.id,
            &p.owner,
            p.model.as_str(),
            now.plus(Duration::from_secs(3600)),
        ),
        _ => {
            jobs::Lease::claimed_at_create(
                &p.id,
                &p.owner,
                p.model.as_str(),
                &WorkerId::parse("worker-paths").unwrap(),
                Duration::from_secs(3600),
                now,
            )
            .1
        }
    }
}

fn message(p: &Prediction, n: u32, now: Timestamp) -> Effect {
    Delivery {
        id: format!("msg_{}_{n}", p.id),
        url: "https://hooks.example.com/paths".into(),
        event: WebhookEvent::Output,
        payload: augur_core::outbox::Payload::Prediction(Box::new(p.clone())),
        created_at: now,
    }
    .enqueue(&p.owner)
    .unwrap()
}

fn complete_message(p: &Prediction, n: u32) -> Effect {
    Effect::Complete {
        lane: Lane::Webhooks,
        id: format!("msg_{}_{n}", p.id),
    }
}

fn task(
    p: &Prediction,
    group: &Prediction,
    payload: &str,
    replace: bool,
    now: Timestamp,
) -> Effect {
    Effect::Enqueue(Box::new(NewItem {
        lane: Lane::Tasks,
        id: format!("task-{}", p.id),
        group: group.key(),
        topic: "settle".into(),
        owner: p.owner.clone(),
        payload: payload.into(),
        run_at: now,
        replace,
        claimed: None,
    }))
}

fn events(p: &Prediction, data: &str) -> Effect {
    Effect::AppendEvents {
        stream: p.key(),
        events: vec![
            StreamEventData {
                kind: StreamEventKind::Output,
                data: data.into(),
            },
            StreamEventData {
                kind: StreamEventKind::Logs,
                data: format!("{data}\n"),
            },
        ],
    }
}

fn entry(account: &AccountId, id: &str, delta: i64, held: i64, reason: Reason) -> Effect {
    Effect::Post(Box::new(LedgerEntry {
        account: account.clone(),
        id: id.into(),
        delta,
        held,
        reason,
        reference: Some(format!("ref-{id}")),
        memo: None,
        at: Timestamp::from_micros(1_700_000_000_000_000),
    }))
}

async fn export_all(store: &dyn AdminStore, section: Section) -> Vec<Exported> {
    let mut all = Vec::new();
    let mut after: Option<Position> = None;
    loop {
        let page = store.export(section, after.as_ref(), 50).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.position());
        all.extend(page);
    }
    // When an item was queued is the database's clock: it differs between the stores.
    for piece in &mut all {
        if let Exported::Item(item) = piece {
            item.created_at = Timestamp::EPOCH;
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fused_and_general_writes_leave_the_same_state() {
    let (Some(fused), Some(general)) = (common::store().await, common::general_store().await)
    else {
        return;
    };
    let mut pair = Pair {
        fused,
        general,
        fusable: 0,
    };
    let owners = [AccountId::admin(), AccountId::parse("paths-b").unwrap()];
    let now = Timestamp::now();
    let mut ps = Vec::new();

    // Inserts, with every combination of a job (due, later or claimed), a webhook message, a
    // completion of an item that is not there, counters and events.
    for mask in 0..32usize {
        let p = prediction(&owners[mask % 2], mask);
        let mut effects = Vec::new();
        if mask & 1 != 0 {
            effects.push(job(&p, mask / 2, now));
        }
        if mask & 2 != 0 {
            effects.push(message(&p, 0, now));
        }
        if mask & 4 != 0 {
            effects.push(Effect::Complete {
                lane: Lane::Tasks,
                id: format!("task-{}", p.id),
            });
        }
        if mask & 8 != 0 {
            effects.push(Effect::count("paths_total", 1));
            effects.push(Effect::count("paths_other_total", 2));
        }
        if mask & 16 != 0 {
            effects.push(events(&p, "created"));
        }
        let written = pair.write(&insert(&p, effects), true).await.unwrap();
        assert_eq!(written.revisions, vec![Some(Revision::FIRST)]);
        ps.push(p);
    }

    // Compare-and-sets, with every combination of a job enqueued again (replacing the one
    // there, claimed or not), the job completed, a message enqueued behind the first, the
    // first completed (its successor becomes the head), counters and events. A job both
    // enqueued and completed, or two messages in one write, are for the general path.
    for (mask, p) in ps.iter().enumerate() {
        let mut next = p.clone();
        next.logs = format!("update {mask}");
        let mut effects = Vec::new();
        let (mut jobs_lane, mut webhooks) = (0, 0);
        if mask & 1 != 0 {
            effects.push(job(p, mask / 3, now));
            jobs_lane += 1;
        }
        if mask & 2 != 0 {
            effects.push(jobs::complete(&p.id));
            jobs_lane += 1;
        }
        if mask & 4 != 0 {
            effects.push(message(p, 1, now));
            webhooks += 1;
        }
        if mask & 8 != 0 {
            effects.push(complete_message(p, 0));
            webhooks += 1;
        }
        if mask & 16 != 0 {
            effects.push(Effect::count("paths_total", -1));
            effects.push(events(p, "updated"));
            effects.push(events(p, "again"));
        }
        let fusable = jobs_lane <= 1 && webhooks <= 1;
        let written = pair
            .write(&update(&next, 1, effects), fusable)
            .await
            .unwrap();
        assert_eq!(written.revisions, vec![Some(Revision(2))]);
    }

    // Heads passing on alone: the first message completed while the second waits.
    for p in ps.iter().step_by(2) {
        pair.write(&update(p, 2, vec![message(p, 2, now)]), true)
            .await
            .unwrap();
        pair.write(&update(p, 3, vec![complete_message(p, 0)]), true)
            .await
            .unwrap();
    }

    // Tasks: an item of another record's group (general), replaced from its own record's
    // write (the item's group moves: general), kept (a message id is enqueued once: fused).
    let (a, b) = (&ps[1], &ps[3]);
    pair.write(&update(a, 2, vec![task(a, b, "first", false, now)]), false)
        .await
        .unwrap();
    pair.write(&update(a, 3, vec![task(a, a, "second", false, now)]), true)
        .await
        .unwrap();
    pair.write(&update(a, 4, vec![task(a, a, "third", true, now)]), false)
        .await
        .unwrap();
    pair.write(&update(a, 5, vec![task(a, a, "fourth", true, now)]), true)
        .await
        .unwrap();

    // Refusals decided by the fused statement: a stale compare-and-set, an unknown record.
    // An insert of a present key (a unique violation fails the fused statement), an insert
    // of a key whose group holds items, and a write completing an item of another group, are
    // handed over to the general path.
    let lone = prediction(&owners[0], 98);
    pair.write(&insert(&lone, vec![]), true).await.unwrap();
    let exists = pair.write(&insert(&lone, vec![]), false).await;
    assert!(exists.unwrap_err().contains("already exists"));
    let exists = pair.write(&insert(&ps[0], vec![]), false).await;
    assert!(exists.unwrap_err().contains("already exists"));
    let stale = pair
        .write(&update(&ps[0], 1, vec![jobs::complete(&ps[0].id)]), true)
        .await;
    assert!(stale.unwrap_err().contains("revision conflict"));
    let stranger = prediction(&owners[0], 99);
    let unknown = pair.write(&update(&stranger, 1, vec![]), true).await;
    assert!(unknown.unwrap_err().contains("not found"));
    pair.write(&update(&ps[5], 2, vec![jobs::complete(&ps[1].id)]), false)
        .await
        .unwrap();

    // Events imported ahead of their record sit where a write's events go: the fused
    // statement's plain insert meets them, and the general path replaces them.
    let early = prediction(&owners[1], 97);
    let stale = |revision: u64| Exported::Event {
        stream: early.key(),
        event: StreamEvent {
            revision: Revision(revision),
            index: 0,
            event: StreamEventData {
                kind: StreamEventKind::Output,
                data: "stale".into(),
            },
        },
    };
    for store in [&pair.fused, &pair.general] {
        store.import(&[stale(1), stale(2)]).await.unwrap();
    }
    pair.write(&insert(&early, vec![events(&early, "first")]), false)
        .await
        .unwrap();
    pair.write(&update(&early, 1, vec![events(&early, "second")]), false)
        .await
        .unwrap();
    pair.write(&update(&early, 2, vec![events(&early, "third")]), true)
        .await
        .unwrap();

    // A priced prediction's writes: the create reserves, the settlement charges part of the
    // hold and releases the rest, with the queue effects, counters and events a lifecycle
    // has. The account's totals exist (a grant, which has no record: general).
    let payer = AccountId::parse("paths-payer").unwrap();
    pair.write(
        &Write::new(payer.clone()).effects([entry(&payer, "payer-grant", 10, 0, Reason::Grant)]),
        false,
    )
    .await
    .unwrap();
    let priced = prediction(&payer, 110);
    let reserve = entry(&payer, "reserve-110", 0, 4, Reason::Reserve);
    let created = pair
        .write(
            &insert(
                &priced,
                vec![
                    job(&priced, 0, now),
                    Effect::count("paths_total", 1),
                    reserve.clone(),
                    events(&priced, "created"),
                ],
            ),
            true,
        )
        .await
        .unwrap();
    assert!(created.skipped_entries.is_empty());
    let settled = pair
        .write(
            &update(
                &priced,
                1,
                vec![
                    jobs::complete(&priced.id),
                    message(&priced, 0, now),
                    entry(&payer, "charge-110", -1, -1, Reason::Charge),
                    entry(&payer, "release-110", 0, -3, Reason::Release),
                    events(&priced, "settled"),
                ],
            ),
            true,
        )
        .await
        .unwrap();
    assert!(settled.skipped_entries.is_empty());
    // Two reservations in one create, the second beyond what is left (10 - 1 = 9): refused
    // by the fused statement, decided by the general path, which names what is missing.
    let greedy = prediction(&payer, 111);
    let refused = pair
        .write(
            &insert(
                &greedy,
                vec![
                    entry(&payer, "reserve-111a", 0, 5, Reason::Reserve),
                    entry(&payer, "reserve-111b", 0, 5, Reason::Reserve),
                ],
            ),
            false,
        )
        .await;
    assert!(refused.unwrap_err().contains("credits available"));
    // Exactly what is left: fused.
    pair.write(
        &insert(
            &greedy,
            vec![
                entry(&payer, "reserve-111a", 0, 5, Reason::Reserve),
                entry(&payer, "reserve-111b", 0, 4, Reason::Reserve),
            ],
        ),
        true,
    )
    .await
    .unwrap();
    // An entry posted before (a repeated reservation) is skipped: the general path's.
    let again = prediction(&payer, 112);
    let repeated = pair
        .write(&insert(&again, vec![reserve.clone()]), false)
        .await
        .unwrap();
    assert_eq!(repeated.skipped_entries, vec!["reserve-110".to_owned()]);
    // An entry repeated within the write, and an account without totals: general.
    let twice = prediction(&payer, 113);
    let grant = entry(&payer, "grant-113", 1, 0, Reason::Grant);
    let skipped = pair
        .write(&insert(&twice, vec![grant.clone(), grant]), false)
        .await
        .unwrap();
    assert_eq!(skipped.skipped_entries, vec!["grant-113".to_owned()]);
    let newcomer = AccountId::parse("paths-newcomer").unwrap();
    let first = prediction(&newcomer, 114);
    pair.write(
        &insert(
            &first,
            vec![entry(&newcomer, "grant-114", 2, 0, Reason::Grant)],
        ),
        false,
    )
    .await
    .unwrap();
    // A compare-and-set that loses posts nothing.
    let stale = pair
        .write(
            &update(
                &priced,
                1,
                vec![entry(&payer, "late-110", 0, -1, Reason::Refund)],
            ),
            true,
        )
        .await;
    assert!(stale.unwrap_err().contains("revision conflict"));

    // Shapes only the general path makes: an idempotency key with its prediction, a delete,
    // ledger entries without a record (one refused), a limited counter (one refused), and a
    // write with a key in two operations.
    let c = prediction(&owners[0], 100);
    let key = IdempotencyKey {
        owner: owners[0].clone(),
        key: "paths".into(),
        fingerprint: "fp".into(),
        prediction_id: c.id.clone(),
        batch_id: None,
        run_id: None,
        created_at: now,
        expires_at: now.plus(Duration::from_secs(3600)),
    };
    let mut with_key = insert(&c, vec![job(&c, 0, now), Effect::count("paths_total", 1)]);
    with_key.ops.push(Op::Insert(key.to_record().unwrap()));
    pair.write(&with_key, false).await.unwrap();
    pair.write(
        &Write::new(ps[2].owner.clone()).op(Op::Delete(ps[2].key())),
        false,
    )
    .await
    .unwrap();
    let acct = &owners[1];
    let posted = pair
        .write(
            &Write::new(acct.clone()).effects([
                entry(acct, "grant", 5, 0, Reason::Grant),
                entry(acct, "reserve", 0, 3, Reason::Reserve),
                entry(acct, "grant", 5, 0, Reason::Grant),
            ]),
            false,
        )
        .await
        .unwrap();
    assert_eq!(posted.skipped_entries, vec!["grant".to_owned()]);
    let d = prediction(acct, 101);
    let refused = pair
        .write(
            &insert(&d, vec![entry(acct, "reserve-d", 0, 3, Reason::Reserve)]),
            false,
        )
        .await;
    assert!(refused.unwrap_err().contains("credits available"));
    let limited = |delta| Effect::Count {
        name: "running@paths-b".into(),
        delta,
        limit: Some(1),
    };
    pair.write(&insert(&d, vec![limited(1)]), false)
        .await
        .unwrap();
    let e = prediction(acct, 102);
    let over = pair.write(&insert(&e, vec![limited(1)]), false).await;
    assert!(over.unwrap_err().contains("at its limit"));
    let mut twice = update(&d, 1, vec![]);
    twice.ops.push(Op::Delete(d.key()));
    pair.write(&twice, false).await.unwrap();

    // The same state, section by section.
    let (fused, general): (DynStore, DynStore) = (Arc::new(pair.fused), Arc::new(pair.general));
    for section in Section::ALL {
        let (a, b) = (
            export_all(&*fused, section).await,
            export_all(&*general, section).await,
        );
        assert!(!a.is_empty(), "{section:?} has content");
        if let Some((x, y)) = a.iter().zip(&b).find(|(x, y)| x != y) {
            panic!("{section:?} differs: fused {x:?}, general {y:?}");
        }
        assert_eq!(a.len(), b.len(), "{section:?} differs in length");
    }
    // The same heads, claimed in the same fair order.
    for lane in Lane::ALL {
        assert_eq!(
            fused.queue_stats(lane).await.unwrap(),
            general.queue_stats(lane).await.unwrap(),
            "{lane} counts differ"
        );
        let claim = |store: DynStore| async move {
            let w = WorkerId::generate();
            store
                .claim(&augur_store_conformance::fixtures::claim_on(
                    lane,
                    &w,
                    Duration::from_secs(60),
                    1000,
                ))
                .await
                .unwrap()
                .into_iter()
                .map(|l| (l.item.id, l.item.claims, l.item.seq))
                .collect::<Vec<_>>()
        };
        let (a, b) = (claim(fused.clone()).await, claim(general.clone()).await);
        assert!(!a.is_empty(), "{lane} has claimable items");
        assert_eq!(a, b, "{lane} claims differ");
    }
}
