//! The writer thread: it owns the one write connection and commits write requests in groups.
//!
//! Callers send a closure over a channel and await its result. The thread takes everything
//! queued (up to `max_batch` requests), runs them all inside one `BEGIN IMMEDIATE … COMMIT`
//! transaction, and answers every request only after `COMMIT` returned: nothing is acknowledged
//! before it is durable, and one fsync covers the group.
//!
//! Requests check before they write (the operations in `ops` and `queue` are written that
//! way), so a request refused for a domain reason (a conflict, a lost lease, a missing record,
//! insufficient credits) has written nothing and the group goes on without it. Any other error (an SQL or I/O error) may have
//! left a request half done: the whole group is rolled back and every request in it fails.
//! This is what lets the group run without a savepoint per request, whose page copies were a
//! large part of the writer's time. Counter increments are summed over the group and written
//! once, just before `COMMIT`.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;

/// What a write request sees: the write connection, inside the group's transaction.
pub(crate) struct Ctx<'c> {
    /// The write connection.
    pub(crate) conn: &'c Connection,
    /// Counter deltas of the group so far, written just before `COMMIT`.
    pub(crate) counters: &'c mut HashMap<String, i64>,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ran {
    /// It did its writes.
    Done,
    /// It was refused before writing anything.
    Refused,
    /// It failed in a way that may have left some of its writes behind.
    Broken,
}

/// Whether an error leaves the transaction as the request found it: the domain refusals,
/// which every operation decides before its first write.
fn wrote_nothing(error: &Error) -> bool {
    matches!(
        error,
        Error::NotFound(_)
            | Error::Exists(_)
            | Error::Conflict { .. }
            | Error::LeaseLost
            | Error::InsufficientCredits { .. }
            | Error::LimitReached { .. }
    )
}

/// A queued write request, type-erased.
trait Task: Send {
    /// Runs the request and keeps its outcome.
    fn run(&mut self, ctx: &mut Ctx<'_>) -> Ran;
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
    fn run(&mut self, ctx: &mut Ctx<'_>) -> Ran {
        let outcome = match self.f.take() {
            Some(f) => f(ctx),
            None => Err(Error::WriterGone),
        };
        let ran = match &outcome {
            Ok(_) => Ran::Done,
            Err(e) if wrote_nothing(e) => Ran::Refused,
            Err(_) => Ran::Broken,
        };
        self.outcome = Some(outcome);
        ran
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
    pub(crate) fn start(conn: Connection, lock: File, max_batch: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let state = Thread {
            conn,
            counters: HashMap::new(),
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
    counters: HashMap<String, i64>,
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

    /// Runs `tasks` in one transaction, then answers them all.
    fn commit_group(&mut self, tasks: Vec<Box<dyn Task>>) {
        let mut open: Vec<Box<dyn Task>> = Vec::with_capacity(tasks.len());
        self.counters.clear();
        for mut task in tasks {
            if self.conn.is_autocommit() {
                // No transaction: the first request of the group, or SQLite rolled the last
                // one back after an error (I/O, disk full) and nothing in it was written.
                fail_all(&mut open, Error::RolledBack);
                self.counters.clear();
                if let Err(e) = self.exec("BEGIN IMMEDIATE") {
                    task.fail(Arc::new(e));
                    task.finish();
                    continue;
                }
            }
            let ran = task.run(&mut Ctx {
                conn: &self.conn,
                counters: &mut self.counters,
            });
            if ran == Ran::Broken {
                // Some of its writes may be in the transaction: give the whole group up.
                self.abandon();
                fail_all(&mut open, Error::RolledBack);
                task.finish();
                continue;
            }
            open.push(task);
        }
        if self.conn.is_autocommit() {
            fail_all(&mut open, Error::RolledBack);
            return;
        }
        if let Err(e) = self.flush_counters() {
            tracing::error!(error = %e, "embedded store counter update failed");
            self.abandon();
            fail_all(&mut open, e);
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
                self.abandon();
                fail_all(&mut open, e);
            }
        }
    }

    /// Rolls the open transaction back, if any, and forgets the group's counter deltas.
    fn abandon(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.exec("ROLLBACK");
        }
        self.counters.clear();
    }

    /// Adds the group's counter deltas, one statement per counter.
    fn flush_counters(&mut self) -> Result<(), Error> {
        if self.counters.is_empty() {
            return Ok(());
        }
        let mut upsert = self.conn.prepare_cached(
            "INSERT INTO counters (name, value) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        )?;
        for (name, delta) in self.counters.drain() {
            if delta != 0 {
                upsert.execute(rusqlite::params![name, delta])?;
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncMode;

    fn thread(dir: &std::path::Path) -> Thread {
        let conn = crate::schema::open_writer(&dir.join("t.db"), SyncMode::Full).unwrap();
        let (_tx, rx) = mpsc::unbounded_channel();
        Thread {
            conn,
            counters: HashMap::new(),
            rx,
            max_batch: 256,
            stats: Arc::default(),
            lock: File::create(dir.join("t.lock")).unwrap(),
        }
    }

    fn task<T: Send + 'static>(
        f: impl FnOnce(&mut Ctx<'_>) -> Result<T, Error> + Send + 'static,
    ) -> (Box<dyn Task>, oneshot::Receiver<Result<T, Error>>) {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            f: Some(f),
            outcome: None,
            reply,
        };
        (Box::new(call), answer)
    }

    fn count(conn: &Connection, name: &str) -> Option<i64> {
        conn.query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .unwrap()
    }

    use rusqlite::OptionalExtension;

    #[test]
    fn a_refused_request_leaves_the_rest_of_its_group_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = thread(dir.path());
        let (good, good_answer) = task(|ctx| {
            *ctx.counters.entry("c".into()).or_default() += 2;
            Ok(())
        });
        let (refused, refused_answer) = task(|_ctx| Err::<(), _>(Error::LeaseLost));
        let (also_good, also_answer) = task(|ctx| {
            *ctx.counters.entry("c".into()).or_default() += 3;
            Ok(())
        });
        t.commit_group(vec![good, refused, also_good]);
        assert!(good_answer.blocking_recv().unwrap().is_ok());
        assert!(matches!(
            refused_answer.blocking_recv().unwrap(),
            Err(Error::LeaseLost)
        ));
        assert!(also_answer.blocking_recv().unwrap().is_ok());
        assert_eq!(
            count(&t.conn, "c"),
            Some(5),
            "counters are summed per group"
        );
    }

    #[test]
    fn a_broken_request_rolls_its_whole_group_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = thread(dir.path());
        let (before, before_answer) = task(|ctx| {
            *ctx.counters.entry("c".into()).or_default() += 1;
            ctx.conn.execute(
                "INSERT INTO counters (name, value) VALUES ('direct', 1)",
                [],
            )?;
            Ok(())
        });
        // Writes, then fails with an SQL error: its write may not survive.
        let (broken, broken_answer) = task(|ctx| {
            ctx.conn
                .execute("INSERT INTO counters (name, value) VALUES ('half', 1)", [])?;
            ctx.conn
                .execute("INSERT INTO no_such_table VALUES (1)", [])?;
            Ok(())
        });
        let (after, after_answer) = task(|ctx| {
            *ctx.counters.entry("c".into()).or_default() += 10;
            Ok(())
        });
        t.commit_group(vec![before, broken, after]);
        assert!(matches!(
            before_answer.blocking_recv().unwrap(),
            Err(Error::Batch(_))
        ));
        assert!(matches!(
            broken_answer.blocking_recv().unwrap(),
            Err(Error::Sqlite(_))
        ));
        assert!(
            after_answer.blocking_recv().unwrap().is_ok(),
            "a later request starts afresh"
        );
        assert_eq!(count(&t.conn, "direct"), None);
        assert_eq!(count(&t.conn, "half"), None);
        assert_eq!(count(&t.conn, "c"), Some(10));
    }
}
