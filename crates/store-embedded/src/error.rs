//! The backend's private error type and its one conversion into [`augur_core::store::Error`].

use std::path::PathBuf;
use std::sync::Arc;

use augur_core::store::{self, ErrorClass, Key};
use augur_core::{AccountId, Revision};
use rusqlite::ErrorCode;

/// The name this backend reports in errors and metrics.
pub(crate) const BACKEND: &str = "embedded";

/// Everything that can go wrong inside this crate. Converted to [`store::Error`] at one spot,
/// the `From` impl below.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{0} not found")]
    NotFound(Key),
    #[error("{0} already exists")]
    Exists(Key),
    #[error("revision conflict on {key}: expected {expected}, found {actual}")]
    Conflict {
        key: Key,
        expected: Revision,
        actual: Revision,
    },
    #[error("lease lost")]
    LeaseLost,
    #[error("account {account} has {available} credits available, {needed} needed")]
    InsufficientCredits {
        account: AccountId,
        available: i64,
        needed: i64,
    },
    #[error("counter {counter} is at its limit of {limit}")]
    LimitReached { counter: String, limit: i64 },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A failure that ended a whole group-commit transaction, shared by every request in it.
    #[error("transaction failed: {0}")]
    Batch(Arc<Error>),
    #[error("the transaction was rolled back by SQLite after an error in the same batch")]
    RolledBack,
    #[error("stored JSON is invalid: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("cannot encode JSON: {0}")]
    Encode(#[source] serde_json::Error),
    /// A check that passed before the write found something else when it wrote: a bug, which
    /// rolls the group back rather than commit half a write.
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("stored {what} is out of range: {value}")]
    OutOfRange { what: &'static str, value: i64 },
    #[error("stored {what} {text:?} is invalid: {reason}")]
    InvalidStored {
        what: &'static str,
        text: String,
        reason: String,
    },
    #[error("cannot upgrade the database: {0}")]
    Upgrade(String),
    #[error("the store is closed")]
    Closed,
    #[error("the writer thread stopped")]
    WriterGone,
    #[error("a read task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the data directory {} is locked by another process{} (lock file {}); \
         only one process may open an embedded store",
        dir.display(),
        holder.map(|pid| format!(", pid {pid}")).unwrap_or_default(),
        lock.display()
    )]
    Locked {
        dir: PathBuf,
        lock: PathBuf,
        holder: Option<u32>,
    },
    #[error(
        "the database {} has schema version {found}, newer than this build knows ({known}); upgrade Augur",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("{0}")]
    Config(String),
}

impl Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Sqlite(e) => sqlite_class(e),
            Error::Batch(inner) => inner.class(),
            Error::RolledBack | Error::Closed | Error::WriterGone | Error::Locked { .. } => {
                ErrorClass::Unavailable
            }
            Error::Decode(_) | Error::OutOfRange { .. } | Error::InvalidStored { .. } => {
                ErrorClass::Corrupt
            }
            Error::SchemaTooNew { .. } | Error::Upgrade(_) => ErrorClass::Corrupt,
            Error::NotFound(_)
            | Error::Exists(_)
            | Error::Conflict { .. }
            | Error::LeaseLost
            | Error::InsufficientCredits { .. }
            | Error::LimitReached { .. }
            | Error::Encode(_)
            | Error::Internal(_)
            | Error::Join(_)
            | Error::Config(_) => ErrorClass::Other,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                ErrorClass::NoSpace
            }
            Error::Io { .. } => ErrorClass::Other,
        }
    }
}

fn sqlite_class(e: &rusqlite::Error) -> ErrorClass {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::OutOfMemory
            | ErrorCode::CannotOpen,
        ) => ErrorClass::Unavailable,
        Some(ErrorCode::DiskFull) => ErrorClass::NoSpace,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => ErrorClass::Corrupt,
        Some(_) => ErrorClass::Other,
        None => match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..) => ErrorClass::Corrupt,
            _ => ErrorClass::Other,
        },
    }
}

impl From<Error> for store::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(key) => store::Error::NotFound(key),
            Error::Exists(key) => store::Error::Exists(key),
            Error::Conflict {
                key,
                expected,
                actual,
            } => store::Error::Conflict {
                key,
                expected,
                actual,
            },
            Error::LeaseLost => store::Error::LeaseLost,
            Error::InsufficientCredits {
                account,
                available,
                needed,
            } => store::Error::InsufficientCredits {
                account,
                available,
                needed,
            },
            Error::LimitReached { counter, limit } => store::Error::LimitReached { counter, limit },
            other => store::Error::classified(other.class(), BACKEND, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: std::ffi::c_int) -> Error {
        Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    #[test]
    fn classes_follow_the_contract() {
        let busy: store::Error = sqlite(rusqlite::ffi::SQLITE_BUSY).into();
        assert!(busy.is_retryable(), "{busy}");
        let shared: store::Error =
            Error::Batch(Arc::new(sqlite(rusqlite::ffi::SQLITE_LOCKED))).into();
        assert!(shared.is_retryable());
        let corrupt: store::Error = sqlite(rusqlite::ffi::SQLITE_CORRUPT).into();
        assert_eq!(corrupt.kind(), "corrupt");
        let decode = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(store::Error::from(Error::Decode(decode)).kind(), "corrupt");
        assert!(store::Error::from(Error::WriterGone).is_retryable());
        assert_eq!(store::Error::from(Error::LeaseLost).kind(), "lease_lost");
        let other: store::Error = Error::Internal("x").into();
        assert_eq!(other.kind(), "other");
        let limit: store::Error = Error::LimitReached {
            counter: "c".into(),
            limit: 3,
        }
        .into();
        assert_eq!(limit.kind(), "limit_reached");
        assert!(other.to_string().starts_with("embedded store error"));
    }
}
