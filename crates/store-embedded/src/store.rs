//! [`EmbeddedStore`]: opening a data directory (lock, schema, lease recovery) and the
//! [`Store`] implementation that sends writes to the writer thread and reads to the read pool.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use augur_core::store::{
    self, Attempt, Capabilities, ClaimRequest, Created, DeliveryLease, DeliveryOutcome,
    DeliveryState, Effect, IdempotencyRecord, Job, Lease, ListQuery, NewPrediction, Page,
    QueueStats, Record as StoreRecord, Store, StreamEvent,
};
use augur_core::{AccountId, Prediction, PredictionId, Revision, Timestamp, Versioned, WorkerId};

use crate::config::{EmbeddedOptions, SyncMode};
use crate::error::{BACKEND, Error};
use crate::ops::{self, Record};
use crate::outbox;
use crate::readers::Readers;
use crate::schema;
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
    /// process can hold a lease, every leased job and webhook message becomes claimable at
    /// once: its holder died with the previous process. Blocks for the few milliseconds an
    /// open takes.
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
        let lock = lock_directory(&options)?;
        let path = options.database_path();
        let conn = schema::open_writer(&path, options.sync)?;
        let recovered = ops::drop_all_leases(&conn)?;
        let deliveries = outbox::drop_all_leases(&conn)?;
        if recovered > 0 || deliveries > 0 {
            tracing::info!(
                path = %path.display(),
                jobs = recovered,
                deliveries,
                "made jobs and webhook messages leased by the previous process claimable"
            );
        }
        let seq = ops::max_job_seq(&conn)?;
        let readers = Arc::new(Readers::new(path.clone(), options.readers)?);
        let writer =
            Writer::start(conn, lock, seq, options.max_batch).map_err(|source| Error::Io {
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

    async fn write<T, F>(&self, f: F) -> store::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut crate::writer::Ctx<'_>) -> Result<T, Error> + Send + 'static,
    {
        Ok(self.writer.call(f).await?)
    }

    async fn read<T, F>(&self, f: F) -> store::Result<T>
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
impl Store for EmbeddedStore {
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

    async fn create(&self, new: NewPrediction<'_>) -> store::Result<Created> {
        let record = Record::encode(new.prediction)?;
        let key = new.idempotency.cloned();
        let effects = ops::encode_effects(new.effects)?;
        self.write(move |ctx| ops::create(ctx, &record, key.as_ref(), &effects))
            .await
    }

    async fn get(&self, id: &PredictionId) -> store::Result<Versioned<Prediction>> {
        let wanted = id.clone();
        self.read(move |conn| ops::get(conn, &wanted))
            .await?
            .ok_or_else(|| store::Error::NotFound(id.clone()))
    }

    async fn update(
        &self,
        id: &PredictionId,
        expected: Revision,
        next: &Prediction,
        effects: &[Effect],
    ) -> store::Result<Revision> {
        let record = Record::encode(next)?;
        let id = id.clone();
        let effects = ops::encode_effects(effects)?;
        self.write(move |ctx| ops::update(ctx, &id, expected, &record, &effects))
            .await
    }

    async fn delete(&self, id: &PredictionId) -> store::Result<()> {
        let id = id.clone();
        self.write(move |ctx| ops::delete(ctx.conn, &id)).await
    }

    async fn list(&self, query: &ListQuery) -> store::Result<Page> {
        let query = query.clone();
        self.read(move |conn| ops::list(conn, &query)).await
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> store::Result<Vec<PredictionId>> {
        self.write(move |ctx| ops::expire(ctx.conn, now, limit))
            .await
    }

    async fn claim_jobs(&self, request: &ClaimRequest) -> store::Result<Vec<Lease>> {
        let request = request.clone();
        self.write(move |ctx| ops::claim(ctx, &request)).await
    }

    async fn renew_lease(&self, lease: &Lease, extend_by: Duration) -> store::Result<Lease> {
        let lease = lease.clone();
        self.write(move |ctx| ops::renew(ctx.conn, &lease, extend_by))
            .await
    }

    async fn retry_job(&self, lease: &Lease, run_at: Timestamp) -> store::Result<()> {
        let lease = lease.clone();
        self.write(move |ctx| ops::retry(ctx.conn, &lease, run_at))
            .await
    }

    async fn release_job(&self, lease: &Lease, run_at: Timestamp) -> store::Result<()> {
        let lease = lease.clone();
        self.write(move |ctx| ops::release(ctx.conn, &lease, run_at))
            .await
    }

    async fn complete_job(&self, id: &PredictionId) -> store::Result<()> {
        let id = id.clone();
        self.write(move |ctx| ops::complete(ctx.conn, &id)).await
    }

    async fn queue_stats(&self) -> store::Result<QueueStats> {
        self.read(ops::queue_stats).await
    }

    async fn counters(&self) -> store::Result<Vec<(String, i64)>> {
        self.read(ops::counters).await
    }

    async fn list_jobs(
        &self,
        after: Option<&PredictionId>,
        limit: usize,
    ) -> store::Result<Vec<Job>> {
        let after = after.map(|a| a.as_str().to_owned());
        self.read(move |conn| ops::list_jobs(conn, after.as_deref(), limit))
            .await
    }

    async fn list_idempotency_keys(
        &self,
        after: Option<(&AccountId, &str)>,
        limit: usize,
    ) -> store::Result<Vec<IdempotencyRecord>> {
        let after = after.map(|(o, k)| (o.as_str().to_owned(), k.to_owned()));
        self.read(move |conn| {
            ops::list_keys(
                conn,
                after.as_ref().map(|(o, k)| (o.as_str(), k.as_str())),
                limit,
            )
        })
        .await
    }

    async fn import(&self, records: &[StoreRecord]) -> store::Result<()> {
        let mut batch = Vec::with_capacity(records.len());
        for record in records {
            batch.push(match record {
                StoreRecord::Prediction(p) => {
                    ops::Import::Prediction(ops::Record::encode(&p.value)?, p.revision)
                }
                StoreRecord::Job(job) => ops::Import::Job(job.clone()),
                StoreRecord::IdempotencyKey(key) => ops::Import::Key(key.clone()),
                StoreRecord::Counter { name, value } => ops::Import::Counter(name.clone(), *value),
                StoreRecord::Delivery(state) => {
                    ops::Import::Delivery(outbox::ImportedDelivery::encode(state)?)
                }
                StoreRecord::Event(id, event) => ops::Import::Event(id.clone(), event.clone()),
                other => {
                    return Err(Error::UnsupportedEffect(format!(
                        "cannot import {other:?} into this build of the embedded store"
                    ))
                    .into());
                }
            });
        }
        self.write(move |ctx| ops::import(ctx, &batch)).await
    }

    async fn claim_deliveries(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
    ) -> store::Result<Vec<DeliveryLease>> {
        let holder = worker.clone();
        let claimed = self
            .write(move |ctx| outbox::claim(ctx.conn, &holder, lease_for, max))
            .await?;
        // Decoded here, not in the writer thread.
        let mut leases = Vec::with_capacity(claimed.len());
        for c in claimed {
            leases.push(DeliveryLease {
                state: c.row.decode()?,
                worker: worker.clone(),
                token: c.token,
                expires_at: c.expires_at,
            });
        }
        Ok(leases)
    }

    async fn finish_delivery(
        &self,
        lease: &DeliveryLease,
        attempt: &Attempt,
        outcome: DeliveryOutcome,
    ) -> store::Result<()> {
        let finish = outbox::Finish::encode(lease, attempt, outcome)?;
        self.write(move |ctx| outbox::finish(ctx.conn, &finish))
            .await
    }

    async fn list_deliveries(&self, id: &PredictionId) -> store::Result<Vec<DeliveryState>> {
        let id = id.clone();
        self.read(move |conn| outbox::list(conn, &id)).await
    }

    async fn redeliver(&self, id: &PredictionId, delivery_id: &str) -> store::Result<()> {
        let (id, delivery_id) = (id.clone(), delivery_id.to_owned());
        self.write(move |ctx| outbox::redeliver(ctx.conn, &id, &delivery_id))
            .await
    }

    async fn read_events(
        &self,
        id: &PredictionId,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> store::Result<Vec<StreamEvent>> {
        let id = id.clone();
        self.read(move |conn| outbox::read_events(conn, &id, after, limit))
            .await
    }

    async fn close(&self) {
        EmbeddedStore::close(self).await;
    }
}
