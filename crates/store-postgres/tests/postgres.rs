//! Tests of what is particular to the PostgreSQL backend: migrations (once, concurrently, and
//! refusing a newer schema), announcements across nodes and across a lost listener
//! connection, errors when the server is out of reach, and texts PostgreSQL cannot store.
//! Each test works in its own schema of `AUGUR_TEST_POSTGRES_URL` (skipped when it is unset).

mod common;

use std::time::Duration;

use augur_core::store::{
    AdminStore, Change, ChangeStream, Entity, Error, Key, Kind, ListQuery, Op, Record, RecordStore,
    Write,
};
use augur_core::{AccountId, ModelName, Prediction, PredictionId, Revision, Timestamp};
use augur_store_postgres::{MIGRATIONS, PostgresStore};
use futures::StreamExt;

fn prediction() -> Prediction {
    Prediction::new(
        PredictionId::generate_for(&AccountId::admin()),
        AccountId::admin(),
        ModelName::parse("augur/echo").unwrap(),
        "v1".into(),
        serde_json::json!({"text": "hi"}),
    )
}

async fn insert(store: &dyn RecordStore, p: &Prediction) {
    store
        .write(&Write::new(p.owner.clone()).op(Op::Insert(p.to_record().unwrap())))
        .await
        .expect("insert");
}

async fn get(store: &dyn RecordStore, id: &PredictionId) -> Option<(Prediction, Revision)> {
    store
        .get(&id.key())
        .await
        .expect("get")
        .map(|s| ((*s.decode::<Prediction>().unwrap()).clone(), s.revision))
}

/// Waits up to 10 s for an announcement that `want` accepts, skipping others.
async fn expect_change(changes: &mut ChangeStream, what: &str, want: impl Fn(&Change) -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(until, changes.next()).await {
            Ok(Some(change)) if want(&change) => return,
            Ok(Some(change)) => seen.push(change),
            Ok(None) => panic!("the announcement stream ended waiting for {what}; saw {seen:?}"),
            Err(_) => panic!("no {what} within 10 s; saw {seen:?}"),
        }
    }
}

async fn migrations_in(url: &str, schema: &str) -> Vec<(i64, String)> {
    let client = common::raw_client(url).await;
    client
        .query(
            &format!("SELECT version, name FROM {schema}.schema_migrations ORDER BY version"),
            &[],
        )
        .await
        .expect("read schema_migrations")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn drop_schema(url: &str, schema: &str) {
    let client = common::raw_client(url).await;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("drop schema");
}

/// Four nodes connecting at once to a fresh schema apply each migration exactly once (the
/// advisory lock serialises them); connecting again applies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_apply_once_even_from_concurrent_connects() {
    let Some(url) = common::url() else { return };
    let schema = common::fresh_schema();
    let with_schema = common::url_with_schema(&url, &schema);
    let connects = (0..4).map(|_| PostgresStore::connect(&with_schema));
    let stores: Vec<PostgresStore> = futures::future::try_join_all(connects)
        .await
        .expect("every node connects");
    let expected: Vec<(i64, String)> = MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name.to_owned()))
        .collect();
    assert_eq!(migrations_in(&url, &schema).await, expected);

    let again = PostgresStore::connect(&with_schema).await.unwrap();
    assert_eq!(migrations_in(&url, &schema).await, expected);
    // And the nodes work on the same tables.
    let p = prediction();
    insert(&stores[0], &p).await;
    assert_eq!(get(&again, &p.id).await.unwrap().0, p);
    drop(stores);
    drop(again);
    drop_schema(&url, &schema).await;
}

/// A schema that a newer build migrated further is refused with an error that says so.
#[tokio::test]
async fn a_schema_from_a_newer_build_is_refused() {
    let Some(url) = common::url() else { return };
    let schema = common::fresh_schema();
    let with_schema = common::url_with_schema(&url, &schema);
    drop(PostgresStore::connect(&with_schema).await.unwrap());
    let future = MIGRATIONS.len() as i64 + 1;
    common::raw_client(&url)
        .await
        .execute(
            &format!(
                "INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, 'future')"
            ),
            &[&future],
        )
        .await
        .unwrap();
    let err = PostgresStore::connect(&with_schema).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("newer than this build"), "{text}");
    assert!(text.contains(&schema), "{text}");
    assert!(!err.is_retryable(), "{text}");
    drop_schema(&url, &schema).await;
}

/// Writes made through one node are announced to a subscriber on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_writes_are_announced() {
    let Some(store) = common::store().await else {
        return;
    };
    let other = PostgresStore::connect_with(store.inner.options().clone())
        .await
        .unwrap();
    let mut changes = store.subscribe().await.unwrap().expect("announcements");
    let p = prediction();
    insert(&other, &p).await;
    let key = p.key();
    expect_change(&mut changes, "the other node's create", |c| {
        *c == Change::Record {
            key: key.clone(),
            revision: Revision::FIRST,
        }
    })
    .await;
    other
        .write(&Write::new(p.owner.clone()).op(Op::Delete(p.key())))
        .await
        .unwrap();
    expect_change(&mut changes, "the other node's delete", |c| {
        *c == Change::Record {
            key: key.clone(),
            revision: Revision(2),
        }
    })
    .await;
}

/// When the listening connection is killed, the subscription reconnects by itself, yields
/// `Resync` (announcements in between are lost), and goes on announcing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_connection_reconnects_and_yields_resync() {
    let Some(store) = common::store().await else {
        return;
    };
    let url = common::url().expect("configured");
    let mut changes = store.subscribe().await.unwrap().expect("announcements");
    let channel = store.inner.options().channel();
    let admin = common::raw_client(&url).await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query = $1 AND pid <> pg_backend_pid()",
            &[&format!("LISTEN {channel}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "exactly one connection listens on {channel}");
    expect_change(&mut changes, "Resync", |c| *c == Change::Resync).await;

    let p = prediction();
    insert(&store, &p).await;
    let key = p.key();
    expect_change(&mut changes, "the create after reconnecting", |c| {
        *c == Change::Record {
            key: key.clone(),
            revision: Revision::FIRST,
        }
    })
    .await;
}

/// After `close`, operations fail as unavailable and subscriptions end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_operations_and_subscriptions() {
    let Some(store) = common::store().await else {
        return;
    };
    let mut changes = store.subscribe().await.unwrap().expect("announcements");
    store.close().await;
    let err = store
        .get(&PredictionId::generate().key())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let ended = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("the stream ends after close");
    assert_eq!(ended, None);
}

/// The store reports durability as the server is configured, and never prints the password.
#[tokio::test]
async fn capabilities_and_debug_output() {
    let Some(store) = common::store().await else {
        return;
    };
    let caps = store.capabilities();
    assert!(caps.shared && caps.change_notifications && !caps.native_ttl);
    let url = common::url().expect("configured");
    let row = common::raw_client(&url)
        .await
        .query_one(
            "SELECT current_setting('fsync') = 'on' \
             AND current_setting('synchronous_commit') <> 'off'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(caps.durable, row.get::<_, bool>(0));

    let with_password = PostgresStore::connect(&format!(
        "{}&connect_timeout=2",
        common::url_with_schema("postgres://augur:s3cret-pw@127.0.0.1:1/none", "x")
    ))
    .await
    .unwrap_err();
    assert!(
        !with_password.to_string().contains("s3cret-pw"),
        "{with_password}"
    );
    let shown = format!("{:?}", store.inner);
    assert!(shown.contains("PostgresStore"), "{shown}");
}

/// A server that cannot be reached is `Unavailable` (retryable), at connect and after.
#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // A loopback port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = PostgresStore::connect(&format!(
        "postgres://augur@127.0.0.1:{port}/augur?connect_timeout=2"
    ))
    .await
    .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.kind(), "unavailable");
}

/// PostgreSQL cannot store U+0000 in `text` or JSONB. A record holding it in its body or data
/// (a model's binary log output, say) is JSON text, where it is written `\u0000`, so it is
/// stored as it is and round-trips unchanged, the escape character of older versions too;
/// identifiers holding it are refused as invalid rather than failing in the server.
#[tokio::test]
async fn records_holding_nul_characters_round_trip() {
    let Some(store) = common::store().await else {
        return;
    };
    let mut p = prediction();
    p.logs = "progress\0 50%\u{f8ff}0 \u{f8ff}".into();
    p.error = Some("bad byte \0".into());
    p.input = serde_json::json!({"a\0key": ["x\0y", {"n": 1.5}], "plain": "\u{f8ff}"});
    p.output = Some(serde_json::json!("\0"));
    p.version = "v\0".into();
    insert(&store, &p).await;
    assert_eq!(get(&store, &p.id).await.unwrap().0, p);
    let listed = store
        .list(&ListQuery::of(Kind::Prediction, 10))
        .await
        .unwrap();
    assert_eq!(*listed.items[0].decode::<Prediction>().unwrap(), p);

    // A tombstone of such a record reads back as one.
    let mut next = p.clone();
    next.expires_at = Some(Timestamp::from_micros(1));
    store
        .write(&Write::new(p.owner.clone()).op(Op::Update {
            record: next.to_record().unwrap(),
            expected: Revision::FIRST,
        }))
        .await
        .unwrap();
    store.expire(Timestamp::now(), 10).await.unwrap();
    let mut tombstone = next.clone();
    tombstone.remove_data();
    assert_eq!(get(&store, &p.id).await.unwrap(), (tombstone, Revision(3)));

    // An id holding U+0000 is refused, and nothing is written.
    let odd = Record {
        key: Key::new(Kind::Account, "odd\0id"),
        owner: AccountId::admin(),
        created_at: Timestamp::now(),
        status: None,
        parent: None,
        expires_at: None,
        data_removed: false,
        body: "{}".into(),
        data: None,
    };
    let refused = store
        .write(&Write::new(AccountId::admin()).op(Op::Insert(odd.clone())))
        .await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    assert!(store.get(&odd.key).await.unwrap().is_none());
}
