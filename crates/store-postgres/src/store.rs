//! [`PostgresStore`]: connecting (pool, migrations, durability check), running an operation's
//! statements (one, or several pipelined in one transaction: one round trip either way),
//! announcing what committed, and the record, event and ledger reads.
//!
//! Why `READ COMMITTED` is enough, without `SERIALIZABLE`: every decision an operation makes
//! is a conditional write that PostgreSQL re-checks on the row's latest version after waiting
//! for its lock (`UPDATE … WHERE revision = $n`, `… WHERE lease_token = $t AND
//! lease_expires_at > now()`), a uniqueness decision taken by a unique index (`INSERT … ON
//! CONFLICT`), a row lock (`FOR UPDATE SKIP LOCKED` for claims and sweeps), or a decision read
//! from other rows in a statement that runs after the lock that guards them (a queue group's
//! advisory lock, an account's totals row); see `sql`'s module docs for the queue groups.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use augur_core::store::{
    self, Balance, Change, Cursor, EventStore, Key, LedgerEntry, LedgerStore, ListQuery, Page,
    Posted, Reason, RecordStore, Stored, StreamEvent, StreamEventData, StreamEventKind, Write,
    Written,
};
use augur_core::{AccountId, Revision, Timestamp};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures::future::{MaybeDone, join_all, maybe_done, try_join_all};
use tokio::sync::{mpsc, watch};
use tokio_postgres::{NoTls, Row};

use crate::codec::{
    Param, Ts, account_from_sql, column, key_from_row, revision_from_sql, revision_to_sql, sql_int,
    stored_from_row, u64_from_sql, unescape,
};
use crate::config::PostgresOptions;
use crate::error::Error;
use crate::{notify, schema, sql};

/// A statement of an operation: its SQL and its parameters.
pub(crate) type Step<'a> = (&'a str, Vec<Param<'a>>);

/// The PostgreSQL backend: a connection pool on one database schema, shared by any number of
/// Augur nodes.
///
/// Connect once per process and share it (`Arc<dyn Store>`). Every operation takes a pooled
/// connection for its duration; [`AdminStore::subscribe`](store::AdminStore::subscribe) opens
/// one dedicated connection per subscription for `LISTEN`.
pub struct PostgresStore {
    pub(crate) pool: Pool,
    pub(crate) options: PostgresOptions,
    pub(crate) durable: bool,
    pub(crate) closed: watch::Sender<bool>,
    /// Every write takes the general path (tests compare the two paths).
    pub(crate) general_only: bool,
    /// Writes decided by the fused statement (for tests: see [`PostgresStore::fused_writes`]).
    pub(crate) fused: AtomicU64,
    /// Announcements on their way to [`announcer`]'s task.
    announcements: mpsc::UnboundedSender<String>,
}

impl PostgresStore {
    /// Connects to the database a `postgres://user[:password]@host:port/db[?schema=…]` URL
    /// names: creates the schema if missing, applies the migrations it lacks (refusing a schema
    /// a newer build migrated), and checks whether commits are durable.
    pub async fn connect(url: &str) -> Result<Self, store::Error> {
        Self::connect_with(PostgresOptions::from_url(url)?).await
    }

    /// Like [`PostgresStore::connect`], with options already parsed.
    pub async fn connect_with(options: PostgresOptions) -> Result<Self, store::Error> {
        Ok(Self::open(options, false, false).await?)
    }

    /// Connects to a database it will only read, such as a hot standby: connecting writes
    /// nothing (the schema's migrations are checked, not applied, and a schema this build
    /// cannot read is refused); the caller must not write through it.
    pub async fn connect_read_only(url: &str) -> Result<Self, store::Error> {
        Ok(Self::open(PostgresOptions::from_url(url)?, false, true).await?)
    }

    /// Like [`PostgresStore::connect_with`], but every write takes the general path (a
    /// pipelined transaction), never the fused single statement of the common writes. For
    /// tests that check that both leave the same state; slower, never needed otherwise.
    #[doc(hidden)]
    pub async fn connect_general_only(options: PostgresOptions) -> Result<Self, store::Error> {
        Ok(Self::open(options, true, false).await?)
    }

    async fn open(
        options: PostgresOptions,
        general_only: bool,
        read_only: bool,
    ) -> Result<Self, Error> {
        let manager = Manager::from_config(
            options.pg_config("pool"),
            NoTls,
            ManagerConfig {
                // A connection is handed out again if it is still open; one that broke is
                // dropped. Checking each with a query would cost a round trip per operation.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .wait_timeout(Some(options.pool_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()?;
        let mut client = pool.get().await?;
        let applied = if read_only {
            schema::check(&client, &options.schema).await?;
            0
        } else {
            schema::migrate(&mut client, &options.schema).await?
        };
        let durable = schema::commits_are_durable(&client).await?;
        drop(client);
        if !durable {
            tracing::warn!(
                schema = %options.schema,
                "fsync or synchronous_commit is off: acknowledged writes may be lost in a crash"
            );
        }
        tracing::debug!(options = %options, applied, durable, "connected to PostgreSQL");
        Ok(Self {
            announcements: announcer(pool.clone(), sql::announce(&options.channel())),
            pool,
            options,
            durable,
            closed: watch::channel(false).0,
            general_only,
            fused: AtomicU64::new(0),
        })
    }

    /// The options it was connected with.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// Drops the store's schema with everything in it (`DROP SCHEMA … CASCADE`). Meant for
    /// tests, which work in a fresh schema each.
    pub async fn drop_schema(&self) -> Result<(), store::Error> {
        let client = self.client().await?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                self.options.schema
            ))
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    /// How many writes the fused statement decided (committed, or refused with a contract
    /// error) since connecting. For tests that check which path a write took.
    #[doc(hidden)]
    pub fn fused_writes(&self) -> u64 {
        self.fused.load(Ordering::Relaxed)
    }

    /// Stops handing out connections and ends every subscription's stream. Operations after
    /// this fail with [`store::Error::Unavailable`].
    pub fn close_now(&self) {
        self.closed.send_replace(true);
        self.pool.close();
    }

    pub(crate) async fn client(&self) -> Result<Object, Error> {
        if *self.closed.borrow() {
            return Err(Error::Closed);
        }
        Ok(self.pool.get().await?)
    }

    /// Runs one statement on a pooled connection (its own transaction).
    pub(crate) async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, Error> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        client
            .query(&stmt, params)
            .await
            .map_err(Error::from_statement)
    }

    /// Runs statements in one transaction on a pooled connection, in one round trip.
    pub(crate) async fn transaction(&self, steps: &[Step<'_>]) -> Result<Vec<Vec<Row>>, Error> {
        let client = self.client().await?;
        transaction(&client, steps).await
    }

    /// Announces committed changes to every node's subscription (see [`announcer`]).
    /// Announcements are hints; one lost in a crash right after the commit only delays the
    /// nodes that poll as a backstop.
    pub(crate) fn announce(&self, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            // Fails only once the announcer has stopped, with the pool closed.
            let _ = self.announcements.send(notify::payload(&change));
        }
    }
}

/// Sends `steps` in one transaction, pipelined: `BEGIN`, the statements and `COMMIT` go out
/// together and are answered in order, one round trip. PostgreSQL runs the statements one
/// after another; when one fails (a refused check: `augur_refuse`), the rest fail with it and
/// `COMMIT` rolls the transaction back. Returns each statement's rows, or the first failure.
///
/// A statement that fails in the client (its parameters do not encode) is never sent, so the
/// statements are sent first and the end of the transaction after: `ROLLBACK` if one of them
/// failed so, `COMMIT` otherwise. Each request goes out when its future is first polled.
pub(crate) async fn transaction(
    client: &Object,
    steps: &[Step<'_>],
) -> Result<Vec<Vec<Row>>, Error> {
    let statements = try_join_all(steps.iter().map(|(sql, _)| client.prepare_cached(sql))).await?;
    let mut begin = std::pin::pin!(client.batch_execute("BEGIN"));
    let begun = futures::poll!(begin.as_mut());
    let mut queries: Vec<_> = statements
        .iter()
        .zip(steps)
        .map(|(stmt, (_, params))| maybe_done(Box::pin(client.query(stmt, params))))
        .collect();
    let mut unsent = false;
    for query in &mut queries {
        let _ = futures::poll!(&mut *query);
        // An error the server did not send: the request may not have gone out.
        unsent |= matches!(&*query, MaybeDone::Done(Err(e)) if e.as_db_error().is_none());
    }
    let end = client.batch_execute(if unsent { "ROLLBACK" } else { "COMMIT" });
    // Everything is awaited together: the connection hands each response to its request's
    // future, and waits while one it is given is not taken.
    let begin = async move {
        match begun {
            std::task::Poll::Ready(begun) => begun,
            std::task::Poll::Pending => begin.await,
        }
    };
    let (begun, _, ended) = futures::join!(begin, join_all(queries.iter_mut()), end);
    begun?;
    let mut rows = Vec::with_capacity(queries.len());
    for query in &mut queries {
        let result = std::pin::Pin::new(query)
            .take_output()
            .expect("every statement was awaited");
        rows.push(result.map_err(Error::from_statement)?);
    }
    ended?;
    Ok(rows)
}

/// The most announcements sent in one `pg_notify` statement.
const ANNOUNCE_BATCH: usize = 512;

/// Starts the task that sends announcements after their writes committed, batching whatever
/// has queued up meanwhile into one statement. Sent from the writes' own connections, each
/// announcement would be its own transaction: a `pg_notify` takes a database-wide lock until
/// its commit is flushed, so one per write serialised every writer behind the notify queue,
/// and cost every write a round trip. Inside the write's transaction it would be worse still:
/// the lock would be held through the write's own flush. Batched here, the lock is taken once
/// per batch; order is kept, and PostgreSQL drops duplicates within one batch (the work
/// hints). The task ends when the store is dropped.
fn announcer(pool: Pool, statement: String) -> mpsc::UnboundedSender<String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(ANNOUNCE_BATCH);
        while rx.recv_many(&mut batch, ANNOUNCE_BATCH).await > 0 {
            let sent = async {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                let stmt = client
                    .prepare_cached(&statement)
                    .await
                    .map_err(|e| e.to_string())?;
                client
                    .execute(&stmt, &[&batch])
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, dropped = batch.len(), "announcements not sent");
            }
            batch.clear();
        }
    });
    tx
}

/// The password stays hidden.
impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("url", &self.options.redacted_url())
            .field("pool_size", &status.size)
            .field("pool_available", &status.available)
            .field("durable", &self.durable)
            .field("closed", &*self.closed.borrow())
            .finish()
    }
}

#[async_trait]
impl RecordStore for PostgresStore {
    async fn write(&self, write: &Write) -> store::Result<Written> {
        Ok(self.write_inner(write).await?)
    }

    async fn get(&self, key: &Key) -> store::Result<Option<Arc<Stored>>> {
        if key.id.contains('\0') {
            // No stored record has such an id (see `codec::storable`).
            return Ok(None);
        }
        let kind = key.kind.as_str();
        let rows = self.query(&sql::GET, &[&kind, &key.id.as_str()]).await?;
        Ok(rows.first().map(stored_from_row).transpose()?.map(Arc::new))
    }

    async fn list(&self, query: &ListQuery) -> store::Result<Page> {
        let filters = [&query.status, &query.parent];
        if filters.into_iter().flatten().any(|f| f.contains('\0')) {
            // No stored record has such a status or parent.
            return Ok(Page::default());
        }
        let limit = query.limit.max(1);
        let kind = query.kind.as_str();
        let owner = query.owner.as_ref().map(AccountId::as_str);
        let created_after = query.created_after.map(Ts);
        let created_before = query.created_before.map(Ts);
        let cursor = query
            .after
            .as_ref()
            .map(|c| (Ts(c.created_at), c.id.as_str()));
        // One more than asked, to learn whether a next page exists.
        let fetch = sql_int(limit).saturating_add(1);
        let mut params: Vec<Param<'_>> = vec![&kind];
        if let Some(owner) = &owner {
            params.push(owner);
        }
        if let Some(status) = &query.status {
            params.push(status);
        }
        if let Some(parent) = &query.parent {
            params.push(parent);
        }
        if let Some(at) = &created_after {
            params.push(at);
        }
        if let Some(at) = &created_before {
            params.push(at);
        }
        if let Some((at, id)) = &cursor {
            params.push(at);
            params.push(id);
        }
        params.push(&fetch);
        let rows = self.query(&sql::list(query), &params).await?;
        let mut items: Vec<Arc<Stored>> = Vec::with_capacity(rows.len().min(limit));
        let mut next = None;
        let backward = query.after.as_ref().is_some_and(|c| c.backward);
        for row in &rows {
            if items.len() == limit {
                next = items.last().map(|last| {
                    if backward {
                        Cursor::before(&last.record)
                    } else {
                        Cursor::after(&last.record)
                    }
                });
                break;
            }
            items.push(Arc::new(stored_from_row(row)?));
        }
        if backward {
            items.reverse();
        }
        Ok(Page { items, next })
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> store::Result<Vec<Key>> {
        Ok(self.expire_inner(now, limit).await?)
    }
}

impl PostgresStore {
    /// Retention in one transaction of two statements: the due records are picked and locked
    /// (with their groups' locks), then tombstoned or deleted, and their events and items
    /// removed, in a statement whose snapshot is taken after the locks were granted (so it
    /// sees every item a write of theirs committed before).
    async fn expire_inner(&self, now: Timestamp, limit: usize) -> Result<Vec<Key>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let pick = client.prepare_cached(sql::EXPIRE_PICK).await?;
        let apply = client.prepare_cached(sql::EXPIRE_APPLY).await?;
        // A transaction object: if this future is dropped between the two round trips, the
        // transaction is rolled back, not left open on a pooled connection.
        let txn = client.transaction().await?;
        let picked = txn.query(&pick, &[&Ts(now), &sql_int(limit)]).await?;
        let mut kinds = Vec::with_capacity(picked.len());
        let mut ids = Vec::with_capacity(picked.len());
        for row in &picked {
            kinds.push(column::<String>(row, 0, "kind")?);
            ids.push(column::<String>(row, 1, "id")?);
        }
        let applied = txn.query(&apply, &[&kinds, &ids]).await?;
        txn.commit().await?;
        let mut done = Vec::with_capacity(applied.len());
        for row in &applied {
            let key = key_from_row(row, 0)?;
            let revision = revision_from_sql(column(row, 3, "revision")?)?;
            let at: Option<Ts> = column(row, 4, "expires_at")?;
            done.push((at.map(|t| t.0), key, revision));
        }
        // In expiry order, as they were picked.
        done.sort_by(|a, b| (a.0, a.1.kind, &a.1.id).cmp(&(b.0, b.1.kind, &b.1.id)));
        self.announce(done.iter().map(|(_, key, revision)| Change::Record {
            key: key.clone(),
            revision: *revision,
        }));
        Ok(done.into_iter().map(|(_, key, _)| key).collect())
    }
}

/// Decodes a row of [`sql::READ_EVENTS`] (or of an export, from `at`).
pub(crate) fn event_from_row(row: &Row, at: usize) -> Result<StreamEvent, Error> {
    let index: i32 = column(row, at + 1, "event index")?;
    let kind: String = column(row, at + 2, "event kind")?;
    let data: String = column(row, at + 3, "event data")?;
    let escaped: bool = column(row, at + 4, "event escaped")?;
    Ok(StreamEvent {
        revision: revision_from_sql(column(row, at, "event revision")?)?,
        index: u32::try_from(index).map_err(|_| Error::decode("event index", index))?,
        event: StreamEventData {
            kind: StreamEventKind::parse(&kind)
                .ok_or_else(|| Error::decode("event kind", format!("unknown kind {kind:?}")))?,
            data: if escaped { unescape(&data) } else { data },
        },
    })
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn read_events(
        &self,
        stream: &Key,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> store::Result<Vec<StreamEvent>> {
        let (revision, index) = match after {
            None => (-1, -1),
            // Beyond any stored revision: nothing comes after it.
            Some((revision, _)) if revision_to_sql(revision) < 0 => return Ok(Vec::new()),
            Some((revision, index)) => (
                revision_to_sql(revision),
                i32::try_from(index).unwrap_or(i32::MAX),
            ),
        };
        if stream.id.contains('\0') {
            return Ok(Vec::new());
        }
        let kind = stream.kind.as_str();
        let rows = self
            .query(
                sql::READ_EVENTS,
                &[
                    &kind,
                    &stream.id.as_str(),
                    &revision,
                    &index,
                    &sql_int(limit.max(1)),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| event_from_row(row, 0))
            .collect::<Result<_, _>>()?)
    }
}

/// Decodes a ledger row selected with [`sql::LEDGER_COLUMNS`].
pub(crate) fn posted_from_row(row: &Row) -> Result<Posted, Error> {
    let reason: String = column(row, 5, "ledger reason")?;
    Ok(Posted {
        seq: u64_from_sql("ledger seq", column(row, 1, "ledger seq")?)?,
        entry: LedgerEntry {
            account: account_from_sql(&column::<String>(row, 0, "ledger account")?)?,
            id: column(row, 2, "ledger id")?,
            delta: column(row, 3, "ledger delta")?,
            held: column(row, 4, "ledger held")?,
            reason: Reason::parse(&reason).ok_or_else(|| {
                Error::decode("ledger reason", format!("unknown reason {reason:?}"))
            })?,
            reference: column(row, 6, "ledger reference")?,
            memo: column(row, 7, "ledger memo")?,
            at: column::<Ts>(row, 8, "ledger at")?.0,
        },
        after: Balance {
            balance: column(row, 9, "ledger balance")?,
            reserved: column(row, 10, "ledger reserved")?,
        },
    })
}

#[async_trait]
impl LedgerStore for PostgresStore {
    async fn balance(&self, account: &AccountId) -> store::Result<Balance> {
        let rows = self.query(sql::BALANCE, &[&account.as_str()]).await?;
        Ok(match rows.first() {
            Some(row) => Balance {
                balance: column(row, 0, "balance").map_err(store::Error::from)?,
                reserved: column(row, 1, "reserved").map_err(store::Error::from)?,
            },
            None => Balance::default(),
        })
    }

    async fn ledger(
        &self,
        account: &AccountId,
        before: Option<u64>,
        limit: usize,
    ) -> store::Result<Vec<Posted>> {
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let rows = self
            .query(
                &sql::LEDGER_PAGE,
                &[&account.as_str(), &before, &sql_int(limit.max(1))],
            )
            .await?;
        Ok(rows.iter().map(posted_from_row).collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement of a pipelined transaction whose parameters do not encode never reaches
    /// the server, and the statements before it must not commit without it.
    #[tokio::test]
    async fn a_statement_that_never_left_rolls_its_transaction_back() {
        let Some(url) = augur_store_conformance::skip_unless_configured("AUGUR_TEST_POSTGRES_URL")
        else {
            return;
        };
        let base = url.split_once('?').map_or(url.as_str(), |(b, _)| b);
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let schema = format!("augur_test_{secs}_{}_pipeline", std::process::id());
        let store = PostgresStore::connect(&format!("{base}?schema={schema}"))
            .await
            .unwrap();
        let count = "SELECT count(*) FROM counters";
        let add = "INSERT INTO counters (name, shard, value) VALUES ($1::text, 0, 1)";
        // A bigint parameter given as text: refused by the client, before sending.
        let wrong = "SELECT $1::bigint";
        let ok: Vec<Step<'_>> = vec![(add, vec![&"a"]), (count, vec![])];
        store.transaction(&ok).await.unwrap();
        let broken: Vec<Step<'_>> = vec![(add, vec![&"b"]), (wrong, vec![&"x"]), (count, vec![])];
        assert!(store.transaction(&broken).await.is_err());
        let rows = store.query(count, &[]).await.unwrap();
        assert_eq!(
            rows[0].get::<_, i64>(0),
            1,
            "only the first transaction committed"
        );
        // The connections are fine afterwards.
        let again: Vec<Step<'_>> = vec![(add, vec![&"c"])];
        store.transaction(&again).await.unwrap();
        let rows = store.query(count, &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), 2);
        store.drop_schema().await.unwrap();
    }
}
