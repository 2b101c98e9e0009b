//! [`EmbeddedStore`]: opening a data directory (lock, schema, lease recovery) and the storage
//! contract's parts (`RecordStore`, `QueueStore`, `EventStore`, `LedgerStore`, `AdminStore`),
//! a thin layer that sends writes to the writer thread and reads to the read pool, encoding
//! and decoding on the caller's task.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use augur_core::store::{
    self, AdminStore, Balance, Capabilities, ClaimRequest, EventStore, Exported, Finish, Item,
    ItemLease, Key, Lane, LedgerStore, ListQuery, Page, Position, Posted, QueueStats, QueueStore,
    RecordStore, Section, Stored, StreamEvent, Write, Written,
};
use augur_core::{AccountId, Revision, Timestamp};

use crate::config::{EmbeddedOptions, SyncMode};
use crate::error::{BACKEND, Error};
use crate::ops;
use crate::queue::{self, FinishRequest};
use crate::readers::Readers;
use crate::schema;
use crate::transfer::{self, Piece};
use crate::writer::Writer;

/// The embedded backend: one SQLite database in a local directory, owned by one process.
///
/// Open it once per process and share it (`Arc<dyn Store>`). Dropping the last handle
/// finishes the queued writes, checkpoints, closes the database and releases the directory
/// lock (it blocks until then); [`EmbeddedStore::close`] does the same without dropping.
pub struct EmbeddedStore {
    // Field order is drop order: read connections close before the writer releases the lock.
    readers: Arc<Readers>,
    writer: Writer,
    options: EmbeddedOptions,
    path: PathBuf,
}

/// How well group commit is batching, since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Write requests acknowledged in them (successful or refused, e.g. conflicts).
    pub requests: u64,
}

impl CommitStats {
    /// Requests per transaction, on average.
    pub fn average_batch(&self) -> f64 {
        if self.transactions == 0 {
            0.0
        } else {
            self.requests as f64 / self.transactions as f64
        }
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `options.dir`.
    ///
    /// This takes an exclusive lock on the directory, so a second process (or a second open in
    /// this one) fails with [`store::Error::Unavailable`] naming the directory. Since no other
    /// process can hold a lease, every leased queue item becomes claimable at once: its holder
    /// died with the previous process. A database of an older schema is upgraded in place
    /// first. Blocks for the few milliseconds an open takes (longer for an upgrade).
    pub fn open(options: EmbeddedOptions) -> Result<Self, store::Error> {
        Ok(Self::open_inner(options)?)
    }

    /// Opens the store an `embedded://<dir>?sync=full|normal` URL names.
    pub fn open_url(url: &str) -> Result<Self, store::Error> {
        Self::open(EmbeddedOptions::from_url(url)?)
    }

    fn open_inner(options: EmbeddedOptions) -> Result<Self, Error> {
        std::fs::create_dir_all(&options.dir).map_err(|source| Error::Io {
            what: "cannot create the data directory",
            path: options.dir.clone(),
            source,
        })?;
        owner_only(&options.dir).map_err(|source| Error::Io {
            what: "cannot make the data directory private",
            path: options.dir.clone(),
            source,
        })?;
        let lock = lock_directory(&options)?;
        let path = options.database_path();
        let conn = schema::open_writer(&path, options.sync)?;
        let recovered = queue::drop_all_leases(&conn)?;
        if recovered > 0 {
            tracing::info!(
                path = %path.display(),
                items = recovered,
                "made queue items leased by the previous process claimable"
            );
        }
        let readers = Arc::new(Readers::new(path.clone(), options.readers)?);
        let writer = Writer::start(conn, lock, options.max_batch).map_err(|source| Error::Io {
            what: "cannot start the writer thread for",
            path: path.clone(),
            source,
        })?;
        tracing::debug!(path = %path.display(), sync = %options.sync, "opened embedded store");
        Ok(Self {
            readers,
            writer,
            options,
            path,
        })
    }

    /// The options it was opened with.
    pub fn options(&self) -> &EmbeddedOptions {
        &self.options
    }

    /// The database file.
    pub fn database_path(&self) -> &Path {
        &self.path
    }

    /// Group-commit statistics since open.
    pub fn commit_stats(&self) -> CommitStats {
        let (transactions, requests) = self.writer.stats();
        CommitStats {
            transactions,
            requests,
        }
    }

    /// Finishes the writes queued so far, checkpoints and closes the database and releases the
    /// directory lock, so that another process may open it. Every later call fails with
    /// [`store::Error::Unavailable`]. Closing twice is fine.
    pub async fn close(&self) {
        self.readers.close();
        self.writer.close().await;
    }

    async fn on_writer<T, F>(&self, f: F) -> store::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut crate::writer::Ctx<'_>) -> Result<T, Error> + Send + 'static,
    {
        Ok(self.writer.call(f).await?)
    }

    async fn on_reader<T, F>(&self, f: F) -> store::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, Error> + Send + 'static,
    {
        Ok(self.readers.read(f).await?)
    }
}

/// Takes the directory's exclusive lock and writes our pid into the lock file (for the error
/// message of whoever tries next).
fn lock_directory(options: &EmbeddedOptions) -> Result<File, Error> {
    let path = options.lock_path();
    let io = |what: &'static str| {
        let path = path.clone();
        move |source| Error::Io { what, path, source }
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io("cannot open the lock file"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::Locked {
                dir: options.dir.clone(),
                lock: path,
                holder: holder.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(source)) => return Err(io("cannot lock")(source)),
    }
    file.set_len(0).map_err(io("cannot write the lock file"))?;
    file.rewind().map_err(io("cannot write the lock file"))?;
    writeln!(file, "{}", std::process::id()).map_err(io("cannot write the lock file"))?;
    Ok(file)
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl RecordStore for EmbeddedStore {
    async fn write(&self, write: &Write) -> store::Result<Written> {
        write.check()?;
        let write = write.clone();
        self.on_writer(move |ctx| ops::write(ctx, &write)).await
    }

    async fn get(&self, key: &Key) -> store::Result<Option<Arc<Stored>>> {
        let key = key.clone();
        let found = self
            .on_reader(move |conn| ops::get(conn, &key, Timestamp::now()))
            .await?;
        Ok(found.map(|(record, revision)| Arc::new(Stored::new(record, revision))))
    }

    async fn list(&self, query: &ListQuery) -> store::Result<Page> {
        let query = query.clone();
        let (items, next) = self
            .on_reader(move |conn| ops::list(conn, &query, Timestamp::now()))
            .await?;
        Ok(Page {
            items: items
                .into_iter()
                .map(|(record, revision)| Arc::new(Stored::new(record, revision)))
                .collect(),
            next,
        })
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> store::Result<Vec<Key>> {
        self.on_writer(move |ctx| ops::expire(ctx.conn, now, limit))
            .await
    }
}

#[async_trait]
impl QueueStore for EmbeddedStore {
    async fn claim(&self, request: &ClaimRequest) -> store::Result<Vec<ItemLease>> {
        let request = request.clone();
        let worker = request.worker.clone();
        let claimed = self
            .on_writer(move |ctx| queue::claim(ctx.conn, &request))
            .await?;
        // Decoded here, not in the writer thread.
        Ok(claimed
            .into_iter()
            .map(|c| queue::lease_of(c, &worker))
            .collect::<Result<_, _>>()?)
    }

    async fn renew(&self, lease: &ItemLease, extend_by: Duration) -> store::Result<ItemLease> {
        let lease = lease.clone();
        self.on_writer(move |ctx| queue::renew(ctx.conn, &lease, extend_by))
            .await
    }

    async fn finish(&self, lease: &ItemLease, finish: &Finish) -> store::Result<()> {
        let request = FinishRequest::encode(lease, finish)?;
        self.on_writer(move |ctx| queue::finish(ctx.conn, &request))
            .await
    }

    async fn items(&self, lane: Lane, group: &Key) -> store::Result<Vec<Item>> {
        let group = group.clone();
        let rows = self
            .on_reader(move |conn| queue::items(conn, lane, &group))
            .await?;
        Ok(rows
            .into_iter()
            .map(queue::ItemRow::decode)
            .collect::<Result<_, _>>()?)
    }

    async fn requeue(&self, lane: Lane, group: &Key, id: &str) -> store::Result<()> {
        let (group, id) = (group.clone(), id.to_owned());
        self.on_writer(move |ctx| queue::requeue(ctx.conn, lane, &group, &id))
            .await
    }

    async fn queue_stats(&self, lane: Lane) -> store::Result<QueueStats> {
        self.on_reader(move |conn| queue::stats(conn, lane)).await
    }
}

#[async_trait]
impl EventStore for EmbeddedStore {
    async fn read_events(
        &self,
        stream: &Key,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> store::Result<Vec<StreamEvent>> {
        let stream = stream.clone();
        self.on_reader(move |conn| ops::read_events(conn, &stream, after, limit))
            .await
    }
}

#[async_trait]
impl LedgerStore for EmbeddedStore {
    async fn balance(&self, account: &AccountId) -> store::Result<Balance> {
        let account = account.clone();
        self.on_reader(move |conn| ops::balance(conn, &account))
            .await
    }

    async fn ledger(
        &self,
        account: &AccountId,
        before: Option<u64>,
        limit: usize,
    ) -> store::Result<Vec<Posted>> {
        let account = account.clone();
        self.on_reader(move |conn| ops::ledger(conn, &account, before, limit))
            .await
    }
}

#[async_trait]
impl AdminStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: self.options.sync == SyncMode::Full,
            shared: false,
            native_ttl: false,
            change_notifications: false,
        }
    }

    async fn counters(&self) -> store::Result<Vec<(String, i64)>> {
        self.on_reader(ops::counters).await
    }

    async fn export(
        &self,
        section: Section,
        after: Option<&Position>,
        limit: usize,
    ) -> store::Result<Vec<Exported>> {
        let after = after.cloned();
        let rows = self
            .on_reader(move |conn| transfer::export(conn, section, after.as_ref(), limit))
            .await?;
        Ok(rows.decode()?)
    }

    async fn import(&self, pieces: &[Exported]) -> store::Result<()> {
        let pieces = pieces
            .iter()
            .map(Piece::encode)
            .collect::<Result<Vec<_>, _>>()?;
        self.on_writer(move |ctx| transfer::import(ctx, &pieces))
            .await
    }

    async fn close(&self) {
        EmbeddedStore::close(self).await;
    }
}

/// Makes the data directory readable by its owner only (0700): the database holds every
/// account's predictions, token digests and ledgers, and whatever is created inside inherits
/// the protection.
#[cfg(unix)]
fn owner_only(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn owner_only(_dir: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}
