//! The backend's private error type and its one conversion into [`augur_core::store::Error`].

use augur_core::store::{self, ErrorClass};
use redis::{ErrorKind, ServerErrorKind};

/// The name this backend reports in errors and metrics.
pub(crate) const BACKEND: &str = "redis";

/// Everything that can go wrong inside this crate. Converted to [`store::Error`] at one spot,
/// the `From` impl below.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A refusal the contract names (not found, exists, conflict, lease lost, credits,
    /// limits, invalid writes): passed through as it is.
    #[error(transparent)]
    Contract(#[from] store::Error),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("stored data cannot be decoded: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("cannot encode as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("stored {what} is invalid: {detail}")]
    InvalidStored { what: &'static str, detail: String },
    #[error("unexpected reply from Redis ({0}); is another version of Augur using this prefix?")]
    Reply(String),
    #[error(
        "the keys under prefix {prefix:?} were written with layout {found:?}, this build reads and \
         writes {expected:?}{advice}"
    )]
    Layout {
        prefix: String,
        found: String,
        expected: String,
        advice: &'static str,
    },
    #[error("the store is closed")]
    Closed,
    #[error("{0}")]
    Config(String),
}

impl Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Redis(e) => redis_class(e),
            Error::Closed => ErrorClass::Unavailable,
            Error::Decode(_) | Error::InvalidStored { .. } => ErrorClass::Corrupt,
            Error::Contract(_)
            | Error::Encode(_)
            | Error::Reply(_)
            | Error::Layout { .. }
            | Error::Config(_) => ErrorClass::Other,
        }
    }
}

/// Connection failures, timeouts, a server still loading its data, a cluster resharding or
/// failing over, a script running too long or a full memory: all may pass by themselves.
fn redis_class(e: &redis::RedisError) -> ErrorClass {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return ErrorClass::Unavailable;
    }
    if e.code() == Some("OOM") {
        // maxmemory reached: writes are refused until memory is freed, reads go on.
        return ErrorClass::NoSpace;
    }
    match e.kind() {
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => ErrorClass::Unavailable,
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => ErrorClass::Unavailable,
        ErrorKind::Parse => ErrorClass::Corrupt,
        _ => match e.code() {
            // BUSY: another script runs too long; NOREPLICAS /
            // NOTREADY: the primary cannot take writes just now.
            Some(
                "BUSY" | "NOREPLICAS" | "NOTREADY" | "LOADING" | "TRYAGAIN" | "CLUSTERDOWN"
                | "MASTERDOWN" | "READONLY",
            ) => ErrorClass::Unavailable,
            _ => ErrorClass::Other,
        },
    }
}

impl From<Error> for store::Error {
    fn from(e: Error) -> Self {
        if let Error::Contract(e) = e {
            return e;
        }
        store::Error::classified(e.class(), BACKEND, e)
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
        assert_eq!(store::Error::from(server("OOM")).kind(), "no_space");
        assert_eq!(store::Error::from(server("NOPERM")).kind(), "other");
        let decode = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(store::Error::from(Error::Decode(decode)).kind(), "corrupt");
        let lost = store::Error::from(Error::Contract(store::Error::LeaseLost));
        assert_eq!(lost.kind(), "lease_lost");
        assert!(store::Error::from(Error::Closed).is_retryable());
        let other: store::Error = Error::Reply("x".into()).into();
        assert_eq!(other.kind(), "other");
        assert!(other.to_string().starts_with("redis store error"));
    }
}
