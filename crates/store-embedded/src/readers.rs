//! The read pool: a few read-only connections, used on tokio's blocking threads.
//!
//! Reads never wait for the writer: in WAL mode each read sees the last committed state, and
//! since writes are acknowledged only after they commit, a read that starts after a write was
//! acknowledged sees it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::error::Error;
use crate::schema;

/// At most `size` reads run at once, each on its own connection; idle connections are kept.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// Opens one connection at once (so that a broken database fails at open), the rest on
    /// demand.
    pub(crate) fn new(path: PathBuf, size: usize) -> Result<Self, Error> {
        let size = size.max(1);
        let first = schema::open_reader(&path)?;
        let mut idle = Vec::with_capacity(size);
        idle.push(first);
        Ok(Self {
            path,
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(size)),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The guarded Vec is never left half-changed, so a poisoned lock is still usable.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on a read connection on a blocking thread.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed)?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = pool.idle().pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => schema::open_reader(&pool.path)?,
            };
            let result = f(&conn);
            pool.idle().push(conn);
            result
        })
        .await?
    }

    /// Refuses further reads and closes the idle connections.
    pub(crate) fn close(&self) {
        self.permits.close();
        self.idle().clear();
    }
}
