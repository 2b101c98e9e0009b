//! The backend's private error type and its one conversion into [`augur_core::store::Error`].

use augur_core::store;
use augur_core::{PredictionId, Revision};
use redis::{ErrorKind, ServerErrorKind};

/// The name this backend reports in errors and metrics.
pub(crate) const BACKEND: &str = "redis";

/// Everything that can go wrong inside this crate. Converted to [`store::Error`] at one spot,
/// the `From` impl below.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("prediction {0} not found")]
    NotFound(PredictionId),
    #[error("revision conflict: expected {expected}, found {actual}")]
    Conflict {
        expected: Revision,
        actual: Revision,
    },
    #[error("lease lost")]
    LeaseLost,
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("stored record cannot be decoded: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("cannot encode a record as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("stored {what} is invalid: {detail}")]
    InvalidStored { what: &'static str, detail: String },
    #[error("unexpected reply from Redis ({0}); is another version of Augur using this prefix?")]
    Reply(String),
    #[error("unsupported effect {0} (this build of the Redis store does not know it)")]
    UnsupportedEffect(String),
    #[error(
        "the idempotency key {key:?} is being used by another request that has not finished; \
         retry shortly"
    )]
    KeyBusy { key: String },
    #[error(
        "the keys under prefix {prefix:?} were written with layout {found:?}, this build writes {expected:?}"
    )]
    Layout {
        prefix: String,
        found: String,
        expected: String,
    },
    #[error("the store is closed")]
    Closed,
    #[error("{0}")]
    Config(String),
}

/// How a private error maps onto the contract's error classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Unavailable,
    Corrupt,
    Other,
}

impl Error {
    fn class(&self) -> Class {
        match self {
            Error::Redis(e) => redis_class(e),
            Error::KeyBusy { .. } | Error::Closed => Class::Unavailable,
            Error::Decode(_) | Error::InvalidStored { .. } => Class::Corrupt,
            Error::NotFound(_)
            | Error::Conflict { .. }
            | Error::LeaseLost
            | Error::Encode(_)
            | Error::Reply(_)
            | Error::UnsupportedEffect(_)
            | Error::Layout { .. }
            | Error::Config(_) => Class::Other,
        }
    }
}

/// Connection failures, timeouts, a server still loading its data, a cluster resharding or
/// failing over, a script running too long or a full memory: all may pass by themselves.
fn redis_class(e: &redis::RedisError) -> Class {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return Class::Unavailable;
    }
    match e.kind() {
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => Class::Unavailable,
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => Class::Unavailable,
        ErrorKind::Parse => Class::Corrupt,
        _ => match e.code() {
            // BUSY: another script runs too long; OOM: maxmemory reached; NOREPLICAS /
            // NOTREADY: the primary cannot take writes just now.
            Some(
                "BUSY" | "OOM" | "NOREPLICAS" | "NOTREADY" | "LOADING" | "TRYAGAIN" | "CLUSTERDOWN"
                | "MASTERDOWN" | "READONLY",
            ) => Class::Unavailable,
            _ => Class::Other,
        },
    }
}

impl From<Error> for store::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(id) => store::Error::NotFound(id),
            Error::Conflict { expected, actual } => store::Error::Conflict { expected, actual },
            Error::LeaseLost => store::Error::LeaseLost,
            other => {
                let class = other.class();
                let source = Box::new(other);
                match class {
                    Class::Unavailable => store::Error::Unavailable {
                        backend: BACKEND,
                        source,
                    },
                    Class::Corrupt => store::Error::Corrupt {
                        backend: BACKEND,
                        source,
                    },
                    Class::Other => store::Error::Other {
                        backend: BACKEND,
                        source,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> Error {
        Error::Redis(redis::make_extension_error(
            code.to_owned(),
            Some("x".into()),
        ))
    }

    #[test]
    fn classes_follow_the_contract() {
        let io: store::Error = Error::Redis(
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into(),
        )
        .into();
        assert!(io.is_retryable(), "{io}");
        for code in [
            "LOADING",
            "TRYAGAIN",
            "CLUSTERDOWN",
            "BUSY",
            "OOM",
            "MASTERDOWN",
        ] {
            let e = store::Error::from(server(code));
            assert!(e.is_retryable(), "{code}: {e}");
        }
        let timeout: store::Error =
            Error::Redis(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out").into())
                .into();
        assert!(timeout.is_retryable());
        assert_eq!(store::Error::from(server("NOPERM")).kind(), "other");
        let decode = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(store::Error::from(Error::Decode(decode)).kind(), "corrupt");
        assert_eq!(store::Error::from(Error::LeaseLost).kind(), "lease_lost");
        assert!(store::Error::from(Error::KeyBusy { key: "k".into() }).is_retryable());
        let other: store::Error = Error::UnsupportedEffect("X".into()).into();
        assert_eq!(other.kind(), "other");
        assert!(other.to_string().starts_with("redis store error"));
    }
}
