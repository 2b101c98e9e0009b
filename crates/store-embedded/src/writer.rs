//! The writer thread: it owns the one write connection and commits write requests in groups.
//!
//! Callers send a closure over a channel and await its result. The thread takes everything
//! queued (up to `max_batch` requests), runs each request inside its own `SAVEPOINT` within one
//! `BEGIN IMMEDIATE … COMMIT` transaction, and answers every request only after `COMMIT`
//! returned: nothing is acknowledged before it is durable, and one fsync covers the group. A
//! request that fails (a conflict, a lost lease, an SQL error) rolls back to its savepoint and
//! leaves the rest of the group alone.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;

/// What a write request sees: the write connection, inside its savepoint.
pub(crate) struct Ctx<'c> {
    /// The write connection.
    pub(crate) conn: &'c Connection,
    /// The last job sequence number handed out (first in, first out among equal run times).
    pub(crate) seq: &'c mut i64,
}

/// A queued write request, type-erased.
trait Task: Send {
    /// Runs the request and keeps its outcome; true if it succeeded (its savepoint is kept).
    fn run(&mut self, ctx: &mut Ctx<'_>) -> bool;
    /// Replaces the outcome by a failure of the whole transaction (the first one sticks).
    fn fail(&mut self, error: Arc<Error>);
    /// Sends the outcome to the caller.
    fn finish(self: Box<Self>);
}

struct Call<T, F> {
    f: Option<F>,
    outcome: Option<Result<T, Error>>,
    reply: oneshot::Sender<Result<T, Error>>,
}

impl<T, F> Task for Call<T, F>
where
    T: Send,
    F: FnOnce(&mut Ctx<'_>) -> Result<T, Error> + Send,
{
    fn run(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let outcome = match self.f.take() {
            Some(f) => f(ctx),
            None => Err(Error::WriterGone),
        };
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn fail(&mut self, error: Arc<Error>) {
        if !matches!(self.outcome, Some(Err(Error::Batch(_)))) {
            self.outcome = Some(Err(Error::Batch(error)));
        }
    }

    fn finish(self: Box<Self>) {
        let outcome = self.outcome.unwrap_or(Err(Error::WriterGone));
        // The caller may have gone away; the write stands regardless.
        let _ = self.reply.send(outcome);
    }
}

enum Msg {
    Task(Box<dyn Task>),
    /// Finish what came before, checkpoint, close the database and release the lock; then ack.
    Close(oneshot::Sender<()>),
}

/// Group-commit counters, for metrics and benchmarks.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) transactions: AtomicU64,
    pub(crate) requests: AtomicU64,
}

/// The handle to the writer thread. Dropping it finishes queued work and joins the thread.
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Stats>,
}

impl Writer {
    /// Starts the thread. It owns `conn` and keeps `lock` (the directory lock) until the
    /// database is closed.
    pub(crate) fn start(
        conn: Connection,
        lock: File,
        seq: i64,
        max_batch: usize,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let state = Thread {
            conn,
            seq,
            rx,
            max_batch: max_batch.max(1),
            stats: stats.clone(),
            lock,
        };
        let thread = std::thread::Builder::new()
            .name("augur-store-writer".into())
            .spawn(move || state.run())?;
        Ok(Self {
            tx,
            thread: Mutex::new(Some(thread)),
            stats,
        })
    }

    /// Runs `f` in the next group commit and returns its result once the group is durable.
    ///
    /// If the caller stops waiting, the write still commits.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Result<T, Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let task = Box::new(Call {
            f: Some(f),
            outcome: None,
            reply,
        });
        self.tx.send(Msg::Task(task)).map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::WriterGone)?
    }

    /// Finishes the writes queued so far, checkpoints and closes the database, and releases the
    /// directory lock. Later writes fail with [`Error::Closed`].
    pub(crate) async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Close(ack)).is_ok() {
            // An error means the thread is already gone, which is what we wait for.
            let _ = done.await;
        }
    }

    pub(crate) fn stats(&self) -> (u64, u64) {
        (
            self.stats.transactions.load(Ordering::Relaxed),
            self.stats.requests.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let (ack, _done) = oneshot::channel();
        let _ = self.tx.send(Msg::Close(ack));
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the embedded store's writer thread panicked");
        }
    }
}

/// The writer thread's state.
struct Thread {
    conn: Connection,
    seq: i64,
    rx: mpsc::UnboundedReceiver<Msg>,
    max_batch: usize,
    stats: Arc<Stats>,
    /// Held (not read) so that the directory stays locked until the database is closed.
    lock: File,
}

impl Thread {
    fn run(mut self) {
        let mut closing = Vec::new();
        while closing.is_empty() {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut tasks = Vec::new();
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Task(task) => tasks.push(task),
                    Msg::Close(ack) => {
                        closing.push(ack);
                        break;
                    }
                }
                if tasks.len() < self.max_batch {
                    next = self.rx.try_recv().ok();
                }
            }
            if !tasks.is_empty() {
                self.commit_group(tasks);
            }
        }
        // Refuse whatever was queued after the close request.
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Task(mut task) => {
                    task.fail(Arc::new(Error::Closed));
                    task.finish();
                }
                Msg::Close(ack) => closing.push(ack),
            }
        }
        self.shut_down();
        for ack in closing {
            let _ = ack.send(());
        }
    }

    fn exec(&self, sql: &str) -> Result<(), Error> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Runs `tasks` in one transaction, each in its own savepoint, then answers them all.
    fn commit_group(&mut self, tasks: Vec<Box<dyn Task>>) {
        let mut open: Vec<Box<dyn Task>> = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            if self.conn.is_autocommit() {
                // SQLite rolled the transaction back after an error (I/O, disk full): nothing
                // the requests so far did was written.
                fail_all(&mut open, Error::RolledBack);
                if let Err(e) = self.exec("BEGIN IMMEDIATE") {
                    task.fail(Arc::new(e));
                    task.finish();
                    continue;
                }
            }
            self.run_in_savepoint(task.as_mut());
            open.push(task);
        }
        if self.conn.is_autocommit() {
            fail_all(&mut open, Error::RolledBack);
            return;
        }
        match self.exec("COMMIT") {
            Ok(()) => {
                self.stats.transactions.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .requests
                    .fetch_add(open.len() as u64, Ordering::Relaxed);
                for task in open {
                    task.finish();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded store commit failed");
                if !self.conn.is_autocommit() {
                    let _ = self.exec("ROLLBACK");
                }
                fail_all(&mut open, e);
            }
        }
    }

    fn run_in_savepoint(&mut self, task: &mut dyn Task) {
        if let Err(e) = self.exec("SAVEPOINT request") {
            task.fail(Arc::new(e));
            return;
        }
        let ok = task.run(&mut Ctx {
            conn: &self.conn,
            seq: &mut self.seq,
        });
        let end = if ok {
            self.exec("RELEASE request")
        } else {
            self.exec("ROLLBACK TO request")
                .and_then(|()| self.exec("RELEASE request"))
        };
        if let Err(e) = end {
            // The savepoint could not be closed, so the transaction's state is unknown: give
            // it up. The requests in it fail as rolled back, this one with its own error.
            task.fail(Arc::new(e));
            if !self.conn.is_autocommit() {
                let _ = self.exec("ROLLBACK");
            }
        }
    }

    fn shut_down(self) {
        let Thread { conn, lock, .. } = self;
        // Fold the log into the database so the next open starts with an empty one. Busy
        // readers can make this partial, which is harmless.
        let checkpoint = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        });
        if let Err(e) = checkpoint {
            tracing::warn!(error = %e, "checkpoint on close failed");
        }
        if let Err((_, e)) = conn.close() {
            tracing::warn!(error = %e, "closing the embedded store's database failed");
        }
        // Only now may another process open the directory.
        drop(lock);
    }
}

fn fail_all(tasks: &mut Vec<Box<dyn Task>>, error: Error) {
    if tasks.is_empty() {
        return;
    }
    let error = Arc::new(error);
    for mut task in tasks.drain(..) {
        task.fail(error.clone());
        task.finish();
    }
}
