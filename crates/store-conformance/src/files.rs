//! Conformance tests for uploaded files' records (`augur_core::file`), through the
//! [`Files`] handle: scoped reads, listings and deletes, and retention that leaves the sweeper
//! a tombstone to act on.

use std::time::Duration;

use augur_core::file::{FileObject, Files};
use augur_core::store::{DynStore, Kind};
use augur_core::{AccountId, Timestamp};
use serde_json::json;

use crate::fixtures::account;

fn file(owner: &AccountId, name: &str, ttl: Duration) -> FileObject {
    let now = Timestamp::now();
    FileObject {
        id: FileObject::generate_id(owner),
        owner: owner.clone(),
        name: name.into(),
        content_type: "image/png".into(),
        size: 3,
        sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        created_at: now,
        expires_at: now.plus(ttl),
        metadata: json!({"caption": "a cat", "n": [1, 2]}),
    }
}

/// Files round-trip with their metadata, list per owner newest first in pages, and a delete
/// reaches only its owner's file.
pub async fn files_round_trip_list_and_delete_per_owner(store: DynStore) {
    let files = Files::new(store.clone());
    let (a, b) = (account("files-a"), account("files-b"));
    let mut mine = Vec::new();
    for i in 0..5 {
        let f = file(&a, &format!("a{i}.png"), Duration::from_secs(3600));
        files.create(&f).await.unwrap();
        mine.push(f);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let theirs = file(&b, "b.png", Duration::from_secs(3600));
    files.create(&theirs).await.unwrap();

    let got = files.get(&mine[0].id).await.unwrap().expect("present");
    assert_eq!(*got, mine[0], "metadata and all round-trip");
    assert!(files.get("not-an-id").await.unwrap().is_none());
    assert!(
        files
            .get(&FileObject::generate_id(&a))
            .await
            .unwrap()
            .is_none()
    );

    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = files.list(Some(&a), after, 2).await.unwrap();
        listed.extend(page.items.iter().map(|f| f.id.clone()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<_> = mine.iter().rev().map(|f| f.id.clone()).collect();
    assert_eq!(listed, expected, "a's files only, newest first, no gaps");

    assert!(files.delete(&b, &mine[0].id).await.unwrap().is_none());
    assert!(
        files.get(&mine[0].id).await.unwrap().is_some(),
        "b cannot delete a's file"
    );
    let deleted = files
        .delete(&a, &mine[0].id)
        .await
        .unwrap()
        .expect("a's own");
    assert_eq!(deleted.id, mine[0].id);
    assert!(files.get(&mine[0].id).await.unwrap().is_none());
    assert!(files.delete(&a, &mine[0].id).await.unwrap().is_none());
    assert_eq!(files.get(&theirs.id).await.unwrap().unwrap().owner, b);
}

/// An expired file reads as absent at once, and retention leaves a tombstone whose key it
/// reports (so the sweeper can delete the bytes), then the tombstone can be deleted.
pub async fn expired_files_are_absent_and_reported_to_retention(store: DynStore) {
    let files = Files::new(store.clone());
    let a = account("files-exp");
    let short = file(&a, "short.png", Duration::from_millis(200));
    let long = file(&a, "long.png", Duration::from_secs(3600));
    files.create(&short).await.unwrap();
    files.create(&long).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        files.get(&short.id).await.unwrap().is_none(),
        "absent once expired"
    );
    let page = files.list(Some(&a), None, 10).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, long.id);

    let expired = store.expire(Timestamp::now(), 1000).await.unwrap();
    assert_eq!(expired, vec![FileObject::key_of(&short.id)]);
    assert_eq!(expired[0].kind, Kind::File);
    let tombstone = store.get(&expired[0]).await.unwrap().expect("a tombstone");
    assert!(tombstone.record.data_removed && tombstone.record.data.is_none());
    assert_eq!(files.owner_of(&expired[0]).await.unwrap(), Some(a.clone()));
    files.forget_key(&a, &short.id).await.unwrap();
    assert!(store.get(&expired[0]).await.unwrap().is_none());
    assert!(
        store
            .expire(Timestamp::now(), 1000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(files.get(&long.id).await.unwrap().is_some());
}
