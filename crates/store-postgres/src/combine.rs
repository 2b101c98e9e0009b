//! Group commit for the writes of one account that post to its ledger: while one such write
//! commits, the account's next ones queue, and then go together in one transaction, each in
//! its own savepoint, with one commit (one WAL flush) for all of them.
//!
//! Why: a write that posts to a ledger locks the account's totals row (`ledger_totals`) and
//! keeps the lock until its commit is flushed, so one account's priced writes otherwise run
//! one flush after another (about 1 / 2 ms = 500 writes/s however many clients). Combined,
//! the lock is held for the batch's statements plus one flush, and each write still sees the
//! ones before it, exactly as if they had been made one after another.
//!
//! - Each write runs in a savepoint: a refusal (no credits, a conflict) or a race rolls back
//!   that write alone, and is answered at once; the others go on.
//! - A write is answered `Ok` only after the shared `COMMIT` succeeded. If the commit fails
//!   (the connection broke), each write of the batch gets that error, as a single write would.
//! - One task per account with queued writes runs the batches (so a client that goes away
//!   mid-write cannot leave a transaction half-done); it ends when the account's queue is
//!   empty. A write that finds no queue runs alone, as a plain transaction.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use augur_core::store::Write;
use deadpool_postgres::{Object, Pool};
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::store::{pipelined, transaction};
use crate::write::{Outcome, Plan, Statements};

/// The most writes one transaction combines (it holds the account's locks meanwhile).
const MAX_BATCH: usize = 64;

/// A write waiting for its account's task, and where its answer goes.
struct Queued {
    write: Write,
    answer: oneshot::Sender<Result<Outcome, Error>>,
}

/// The accounts whose task is running, each with the sender of its queue.
type Accounts = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Queued>>>>;

/// Combines the ledger-posting writes of each account (see the module docs).
#[derive(Clone, Default)]
pub(crate) struct Combiner {
    accounts: Accounts,
    /// Writes committed in a transaction shared with others (for tests and diagnosis).
    combined: Arc<AtomicU64>,
}

impl Combiner {
    /// How many writes committed in a transaction shared with others.
    pub(crate) fn combined_writes(&self) -> u64 {
        self.combined.load(Ordering::Relaxed)
    }

    /// Makes `write` (one that posts to its account's ledger) on `pool`, combined with the
    /// account's other writes queued meanwhile. Answers as the general path does.
    pub(crate) async fn write(&self, pool: &Pool, write: &Write) -> Result<Outcome, Error> {
        let (answer, answered) = oneshot::channel();
        let account = write.account.as_str().to_owned();
        {
            let mut accounts = self
                .accounts
                .lock()
                .expect("the accounts map is never poisoned");
            let queue = accounts.entry(account.clone()).or_insert_with(|| {
                let (sender, receiver) = mpsc::unbounded_channel();
                tokio::spawn(run(
                    pool.clone(),
                    self.accounts.clone(),
                    self.combined.clone(),
                    account,
                    receiver,
                ));
                sender
            });
            // The task removes its sender (under this lock) before it ends: sending cannot fail.
            let _ = queue.send(Queued {
                write: write.clone(),
                answer,
            });
        }
        answered.await.unwrap_or_else(|_| {
            Err(Error::Contended(
                "the write's account task ended before answering; try again".into(),
            ))
        })
    }
}

/// An account's task: takes what is queued (up to [`MAX_BATCH`]), makes it, answers, and ends
/// once nothing more is queued.
async fn run(
    pool: Pool,
    accounts: Accounts,
    combined: Arc<AtomicU64>,
    account: String,
    mut queue: mpsc::UnboundedReceiver<Queued>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        match pool.get().await {
            Ok(client) => make(&client, &mut batch, &combined).await,
            Err(e) => {
                let message = e.to_string();
                for queued in batch.drain(..) {
                    let _ = queued
                        .answer
                        .send(Err(Error::Shared(format!("connection pool: {message}"))));
                }
            }
        }
        batch.clear();
        let mut running = accounts.lock().expect("the accounts map is never poisoned");
        if queue.is_empty() {
            running.remove(&account);
            return;
        }
    }
}

/// Makes a batch of writes and answers each.
async fn make(client: &Object, batch: &mut Vec<Queued>, combined: &AtomicU64) {
    if batch.len() == 1 {
        let queued = batch.pop().expect("one write");
        let answer = alone(client, &queued.write).await;
        let _ = queued.answer.send(answer);
        return;
    }
    if let Err(e) = client.batch_execute("BEGIN").await {
        let message = e.to_string();
        for queued in batch.drain(..) {
            let _ = queued.answer.send(Err(Error::Shared(message.clone())));
        }
        return;
    }
    let mut made = Vec::with_capacity(batch.len());
    let mut broken = None;
    for queued in batch.drain(..) {
        if let Some(message) = &broken {
            let _ = queued.answer.send(Err(Error::Shared(format!(
                "an earlier write of the same transaction broke it: {message}"
            ))));
            continue;
        }
        match in_savepoint(client, &queued.write).await {
            Ok(outcome) => made.push((queued.answer, outcome)),
            Err((e, rolled_back)) => {
                if !rolled_back {
                    broken = Some(e.to_string());
                }
                let _ = queued.answer.send(Err(e));
            }
        }
    }
    let end = if broken.is_some() {
        "ROLLBACK"
    } else {
        "COMMIT"
    };
    let ended = client.batch_execute(end).await;
    match (ended, broken) {
        (Ok(()), None) => {
            combined.fetch_add(made.len() as u64, Ordering::Relaxed);
            for (answer, outcome) in made {
                let _ = answer.send(Ok(outcome));
            }
        }
        (ended, broken) => {
            let message = match (ended, broken) {
                (Err(e), _) => format!("the commit failed: {e}"),
                (Ok(()), Some(why)) => format!("the transaction was rolled back: {why}"),
                (Ok(()), None) => unreachable!("handled above"),
            };
            for (answer, _) in made {
                let _ = answer.send(Err(Error::Shared(message.clone())));
            }
        }
    }
}

/// One write in its own transaction (the general path's way).
async fn alone(client: &Object, write: &Write) -> Result<Outcome, Error> {
    let plan = Plan::new(write)?;
    let statements = Statements::new(&plan);
    let results = transaction(client, &statements.steps).await?;
    statements.outcome(&plan, &results)
}

/// One write inside the open transaction, in a savepoint. On failure, the savepoint is rolled
/// back; the flag says whether that worked (if not, the transaction is unusable).
async fn in_savepoint(client: &Object, write: &Write) -> Result<Outcome, (Error, bool)> {
    let plan = Plan::new(write).map_err(|e| (e, true))?;
    let statements = Statements::new(&plan);
    let made = pipelined(
        client,
        &statements.steps,
        "SAVEPOINT augur_write",
        "RELEASE SAVEPOINT augur_write",
        "ROLLBACK TO SAVEPOINT augur_write",
    )
    .await
    .and_then(|results| statements.outcome(&plan, &results));
    match made {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            let rolled_back = client
                .batch_execute("ROLLBACK TO SAVEPOINT augur_write; RELEASE SAVEPOINT augur_write")
                .await
                .is_ok();
            Err((e, rolled_back))
        }
    }
}
