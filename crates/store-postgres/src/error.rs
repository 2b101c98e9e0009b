//! The backend's private error type and its one conversion into [`augur_core::store::Error`].
//!
//! Vendor codes are classified here and nowhere else: what a retry may cure (a lost or
//! refused connection, a pool timeout, a server shutting down, a serialization failure or a
//! deadlock) becomes `Unavailable`; data that does not decode becomes `Corrupt`; the rest is
//! `Other`. Errors of the contract itself (a revision conflict, a lost lease) pass through
//! unchanged.

use augur_core::store::{self, ErrorClass};
use serde_json::Value;
use tokio_postgres::error::SqlState;

/// The name this backend reports in errors and metrics.
pub(crate) const BACKEND: &str = "postgres";

/// Everything that can go wrong inside this crate. Converted to [`store::Error`] at one spot,
/// the `From` impl below.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// An error of the contract (not found, exists, conflict, lease lost, refused credits or
    /// limits, an invalid write), passed on as it is.
    #[error(transparent)]
    Contract(store::Error),
    /// A check inside a statement refused the operation (`augur_refuse`); the JSON says which
    /// and why, and the operation turns it into a contract error.
    #[error("refused: {0}")]
    Refused(Value),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("cannot build the connection pool: {0}")]
    BuildPool(#[from] deadpool_postgres::BuildError),
    #[error("stored {what} does not decode: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("cannot encode a record as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    #[error(
        "schema {schema:?} is at migration {found}, newer than this build knows ({known}); \
         upgrade Augur (or use another schema)"
    )]
    SchemaTooNew {
        schema: String,
        found: i64,
        known: usize,
    },
    #[error(
        "schema {schema:?} is at migration {found}, older than this build reads ({known}); \
         start a node of this build on its primary first (it migrates), or use a standby of \
         a migrated primary"
    )]
    SchemaTooOld {
        schema: String,
        found: i64,
        known: usize,
    },
    #[error("{0}")]
    Config(String),
    #[error("the store is closed")]
    Closed,
    /// An operation kept colliding with concurrent writes it could not report (a record it
    /// collided with vanished before it could be read); another try will likely pass.
    #[error("{0}")]
    Contended(String),
}

/// The SQLSTATE of `augur_refuse` (migration 0003).
const REFUSED: &str = "AUG01";

impl Error {
    /// A decoding failure of a stored value.
    pub(crate) fn decode(what: &'static str, reason: impl ToString) -> Self {
        Error::Decode {
            what,
            reason: reason.to_string(),
        }
    }

    /// The error a statement's failure means: [`Error::Refused`] for a check that refused the
    /// operation, the driver's error otherwise.
    pub(crate) fn from_statement(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) if db.code().code() == REFUSED => match serde_json::from_str(db.message()) {
                Ok(reason) => Error::Refused(reason),
                Err(_) => Error::Postgres(e),
            },
            _ => Error::Postgres(e),
        }
    }

    /// True for a collision with a concurrent write that trying again resolves: two writes
    /// numbering one queue group at once (a unique violation), or a deadlock between writes
    /// that locked rows in different orders.
    pub(crate) fn is_race(&self) -> bool {
        let Error::Postgres(e) = self else {
            return false;
        };
        e.code().is_some_and(|c| {
            *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::T_R_DEADLOCK_DETECTED
        })
    }
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        Error::Contract(e)
    }
}

impl Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Postgres(e) => postgres_class(e),
            Error::Pool(e) => match e {
                deadpool_postgres::PoolError::Backend(e) => postgres_class(e),
                // Timeouts (no free connection, or a connect that hangs), a closed pool, or a
                // failed connection check: all may pass.
                _ => ErrorClass::Unavailable,
            },
            Error::Closed | Error::Contended(_) => ErrorClass::Unavailable,
            Error::Decode { .. } => ErrorClass::Corrupt,
            Error::Contract(_)
            | Error::Refused(_)
            | Error::BuildPool(_)
            | Error::Encode(_)
            | Error::SchemaTooNew { .. }
            | Error::SchemaTooOld { .. }
            | Error::Config(_) => ErrorClass::Other,
        }
    }
}

/// Classifies a driver error: by SQLSTATE when the server sent one, else by what failed.
fn postgres_class(e: &tokio_postgres::Error) -> ErrorClass {
    if let Some(state) = e.code() {
        return sqlstate_class(state);
    }
    if e.is_closed() || source_is_io(e) {
        return ErrorClass::Unavailable;
    }
    // The driver has no public error kind; these are its messages for a failed connect and a
    // connect timeout (`tokio_postgres::error::Kind::{Connect, Timeout}`).
    let text = e.to_string();
    if text.starts_with("error connecting to server") || text.starts_with("timeout") {
        return ErrorClass::Unavailable;
    }
    if text.starts_with("error deserializing column") {
        return ErrorClass::Corrupt;
    }
    ErrorClass::Other
}

fn source_is_io(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn sqlstate_class(state: &SqlState) -> ErrorClass {
    let code = state.code();
    if *state == SqlState::DISK_FULL {
        return ErrorClass::NoSpace;
    }
    // Class 08: connection exceptions; 53: insufficient resources (too many connections,
    // out of memory, disk full); 57P0x: the server is shutting down or starting up.
    if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P0") {
        return ErrorClass::Unavailable;
    }
    if *state == SqlState::T_R_SERIALIZATION_FAILURE
        || *state == SqlState::T_R_DEADLOCK_DETECTED
        || *state == SqlState::LOCK_NOT_AVAILABLE
        || *state == SqlState::QUERY_CANCELED
        || *state == SqlState::READ_ONLY_SQL_TRANSACTION
        || *state == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
    {
        // A read-only transaction means we reached a standby (a failover in progress).
        return ErrorClass::Unavailable;
    }
    if *state == SqlState::DATA_CORRUPTED || *state == SqlState::INDEX_CORRUPTED {
        return ErrorClass::Corrupt;
    }
    ErrorClass::Other
}

impl From<Error> for store::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Contract(e) => e,
            other => store::Error::classified(other.class(), BACKEND, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_follow_the_contract() {
        for state in [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONNECTION_FAILURE,
            SqlState::READ_ONLY_SQL_TRANSACTION,
        ] {
            assert_eq!(sqlstate_class(&state), ErrorClass::Unavailable, "{state:?}");
        }
        assert_eq!(sqlstate_class(&SqlState::DISK_FULL), ErrorClass::NoSpace);
        assert_eq!(
            sqlstate_class(&SqlState::DATA_CORRUPTED),
            ErrorClass::Corrupt
        );
        for state in [
            SqlState::UNIQUE_VIOLATION,
            SqlState::SYNTAX_ERROR,
            SqlState::INVALID_PASSWORD,
            SqlState::UNDEFINED_TABLE,
        ] {
            assert_eq!(sqlstate_class(&state), ErrorClass::Other, "{state:?}");
        }
    }

    #[test]
    fn private_errors_map_onto_the_contract() {
        let timeout = Error::Pool(deadpool_postgres::PoolError::Timeout(
            deadpool_postgres::TimeoutType::Wait,
        ));
        assert!(store::Error::from(timeout).is_retryable());
        assert!(store::Error::from(Error::Closed).is_retryable());
        assert_eq!(
            store::Error::from(Error::decode("revision", "negative")).kind(),
            "corrupt"
        );
        assert_eq!(
            store::Error::from(Error::Contract(store::Error::LeaseLost)).kind(),
            "lease_lost"
        );
        let other: store::Error = Error::Config("x".into()).into();
        assert_eq!(other.kind(), "other");
        assert!(other.to_string().starts_with("postgres store error"));
        let too_new: store::Error = Error::SchemaTooNew {
            schema: "augur".into(),
            found: 9,
            known: 1,
        }
        .into();
        assert!(
            too_new.to_string().contains("newer than this build"),
            "{too_new}"
        );
    }
}
