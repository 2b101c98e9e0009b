//! Conformance tests for ledgers: entries posted with their write, running totals, repeated
//! entries skipped, and the guard that keeps what an account can spend from going negative,
//! under contention.

use augur_core::store::{Balance, DynStore, Effect, Error, LedgerEntry, Reason, Write};
use augur_core::{AccountId, Revision, Timestamp};

use crate::fixtures::{account, get, insert_write, prediction_for, update};

/// An entry for `account`.
pub fn entry(account: &AccountId, id: &str, delta: i64, held: i64, reason: Reason) -> LedgerEntry {
    LedgerEntry {
        account: account.clone(),
        id: id.into(),
        delta,
        held,
        reason,
        reference: Some(format!("ref-{id}")),
        memo: None,
        at: Timestamp::now(),
    }
}

fn post(entry: LedgerEntry) -> Effect {
    Effect::Post(Box::new(entry))
}

/// A write of ledger entries alone.
pub fn posting(account: &AccountId, entries: Vec<LedgerEntry>) -> Write {
    Write::new(account.clone()).effects(entries.into_iter().map(post))
}

/// Checks that the totals are the sums of the entries and that every entry's `after` is the
/// running sum.
pub async fn assert_balanced(store: &DynStore, account: &AccountId) -> Balance {
    let totals = store.balance(account).await.unwrap();
    let mut entries = store.ledger(account, None, 100_000).await.unwrap();
    entries.reverse();
    let mut running = Balance::default();
    for (i, posted) in entries.iter().enumerate() {
        assert_eq!(posted.seq, i as u64 + 1, "seqs run from 1 without gaps");
        running = running.after(&posted.entry);
        assert_eq!(
            posted.after, running,
            "entry {} carries the running totals",
            posted.seq
        );
    }
    assert_eq!(totals, running, "the totals are the sums of the ledger");
    assert!(
        totals.available() >= 0,
        "available went below zero: {totals:?}"
    );
    totals
}

/// Posted entries add up: the totals are the sums of `delta` and `held`, and each entry is
/// stamped with the totals right after it.
pub async fn posted_entries_add_up(store: DynStore) {
    let a = account("adder");
    store
        .write(&posting(
            &a,
            vec![
                entry(&a, "grant", 10, 0, Reason::Grant),
                entry(&a, "reserve-p", 0, 3, Reason::Reserve),
            ],
        ))
        .await
        .unwrap();
    store
        .write(&posting(
            &a,
            vec![
                entry(&a, "charge-p", -2, -2, Reason::Charge),
                entry(&a, "release-p", 0, -1, Reason::Release),
            ],
        ))
        .await
        .unwrap();
    let totals = assert_balanced(&store, &a).await;
    assert_eq!(
        totals,
        Balance {
            balance: 8,
            reserved: 0
        }
    );
    let newest = store.ledger(&a, None, 1).await.unwrap();
    assert_eq!(
        newest[0].entry,
        entry_like(&newest[0].entry, &a, "release-p", 0, -1, Reason::Release)
    );
    assert_eq!(
        store.balance(&account("nobody")).await.unwrap(),
        Balance::default()
    );
}

fn entry_like(
    got: &LedgerEntry,
    a: &AccountId,
    id: &str,
    delta: i64,
    held: i64,
    reason: Reason,
) -> LedgerEntry {
    LedgerEntry {
        at: got.at,
        ..entry(a, id, delta, held, reason)
    }
}

/// Ledgers page newest first, without gaps or repeats.
pub async fn ledger_pages_newest_first(store: DynStore) {
    let a = account("pager");
    for i in 0..25 {
        store
            .write(&posting(
                &a,
                vec![entry(&a, &format!("g{i}"), 1, 0, Reason::Grant)],
            ))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.ledger(&a, before, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|p| p.seq);
        seen.extend(page.into_iter().map(|p| p.seq));
    }
    assert_eq!(seen, (1..=25).rev().collect::<Vec<u64>>());
    assert_balanced(&store, &a).await;
}

/// An entry whose id was posted before is skipped (and reported), also within one write: a
/// repeated top-up credits once.
pub async fn repeated_entry_ids_are_skipped(store: DynStore) {
    let a = account("repeat");
    let topup = entry(&a, "order-1", 100, 0, Reason::Topup);
    let first = store
        .write(&posting(&a, vec![topup.clone()]))
        .await
        .unwrap();
    assert!(first.skipped_entries.is_empty());
    let again = store
        .write(&posting(
            &a,
            vec![
                topup.clone(),
                entry(&a, "order-2", 5, 0, Reason::Topup),
                topup,
            ],
        ))
        .await
        .unwrap();
    assert_eq!(
        again.skipped_entries,
        vec!["order-1".to_owned(), "order-1".to_owned()]
    );
    assert_eq!(assert_balanced(&store, &a).await.balance, 105);
}

/// A write whose entries would leave less than nothing to spend is refused whole, naming what
/// was available and needed; one that spends exactly what there is passes.
pub async fn entries_that_overdraw_refuse_the_write(store: DynStore) {
    let a = account("overdraw");
    store
        .write(&posting(&a, vec![entry(&a, "grant", 5, 0, Reason::Grant)]))
        .await
        .unwrap();
    let p = prediction_for(&a);
    let write = insert_write(
        &p,
        vec![
            post(entry(&a, "reserve-1", 0, 2, Reason::Reserve)),
            post(entry(&a, "reserve-2", 0, 4, Reason::Reserve)),
        ],
    );
    match store.write(&write).await {
        Err(Error::InsufficientCredits {
            account,
            available,
            needed,
        }) => assert_eq!((account, available, needed), (a.clone(), 5, 6)),
        other => panic!("expected InsufficientCredits, got {other:?}"),
    }
    assert!(
        get(&store, &p.id).await.is_none(),
        "the prediction was not created either"
    );
    assert_eq!(store.ledger(&a, None, 10).await.unwrap().len(), 1);
    let exact = insert_write(
        &p,
        vec![post(entry(&a, "reserve-5", 0, 5, Reason::Reserve))],
    );
    store.write(&exact).await.unwrap();
    let totals = assert_balanced(&store, &a).await;
    assert_eq!((totals.available(), totals.reserved), (0, 5));
    // Entries that give back pass whatever is available.
    store
        .write(&posting(
            &a,
            vec![entry(&a, "refund-5", 0, -5, Reason::Refund)],
        ))
        .await
        .unwrap();
    assert_eq!(assert_balanced(&store, &a).await.available(), 5);
}

/// A write refused by its compare-and-set posts nothing.
pub async fn ledger_entries_commit_with_their_write(store: DynStore) {
    let a = account("cas");
    let p = prediction_for(&a);
    store
        .write(&insert_write(
            &p,
            vec![post(entry(&a, "grant", 3, 0, Reason::Grant))],
        ))
        .await
        .unwrap();
    let stale = update(
        &store,
        &p,
        Revision(9),
        vec![post(entry(&a, "charge", -1, 0, Reason::Charge))],
    )
    .await;
    assert!(matches!(stale, Err(Error::Conflict { .. })));
    assert_eq!(assert_balanced(&store, &a).await.balance, 3);
    update(
        &store,
        &p,
        Revision::FIRST,
        vec![post(entry(&a, "charge", -1, 0, Reason::Charge))],
    )
    .await
    .unwrap();
    assert_eq!(assert_balanced(&store, &a).await.balance, 2);
}

/// 64 concurrent creates, each reserving 1 credit against a balance that affords exactly 10:
/// exactly 10 are created, 54 refused, and the ledger balances.
pub async fn concurrent_reservations_never_overdraw(store: DynStore) {
    let a = account("hot");
    store
        .write(&posting(&a, vec![entry(&a, "grant", 10, 0, Reason::Grant)]))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (store, a) = (store.clone(), a.clone());
            tokio::spawn(async move {
                let p = prediction_for(&a);
                let reserve = entry(&a, &format!("reserve:{}", p.id), 0, 1, Reason::Reserve);
                let result = store.write(&insert_write(&p, vec![post(reserve)])).await;
                (p.id, result)
            })
        })
        .collect();
    let (mut created, mut refused) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            (id, Ok(_)) => created.push(id),
            (_, Err(Error::InsufficientCredits { .. })) => refused += 1,
            (_, Err(e)) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((created.len(), refused), (10, 54));
    for id in &created {
        assert!(get(&store, id).await.is_some());
    }
    let totals = assert_balanced(&store, &a).await;
    assert_eq!(
        totals,
        Balance {
            balance: 10,
            reserved: 10
        }
    );
    assert_eq!(store.ledger(&a, None, 100).await.unwrap().len(), 11);
}

/// Entries of other accounts in the same store are their own.
pub async fn ledgers_are_per_account(store: DynStore) {
    let (a, b) = (account("left"), account("right"));
    for (acct, n) in [(&a, 3), (&b, 7)] {
        store
            .write(&posting(
                acct,
                vec![entry(acct, "grant", n, 0, Reason::Grant)],
            ))
            .await
            .unwrap();
    }
    assert_eq!(assert_balanced(&store, &a).await.balance, 3);
    assert_eq!(assert_balanced(&store, &b).await.balance, 7);
    // A write may not post to another account.
    let foreign = Write::new(a.clone()).effects([post(entry(&b, "sneaky", 100, 0, Reason::Grant))]);
    assert!(matches!(
        store.write(&foreign).await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(store.balance(&b).await.unwrap().balance, 7);
}
