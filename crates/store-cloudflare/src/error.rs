//! The backend's private error type and its one conversion into [`augur_core::store::Error`]
//! (PROTOCOL.md, "Errors"): refusals the contract names pass through exactly; 5xx answers,
//! timeouts and broken connections are `Unavailable` (retryable); a refused signature or a
//! request the Worker cannot read is `Other` (never retried: retrying cannot cure it).

use augur_core::store::{self, ErrorClass};

/// The name this backend reports in errors and metrics.
pub(crate) const BACKEND: &str = "cloudflare";

/// Everything that can go wrong inside this crate. Converted to [`store::Error`] at one spot,
/// the `From` impl below.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A refusal the contract names (not found, exists, conflict, lease lost, credits,
    /// limits, invalid writes): passed through as it is.
    #[error(transparent)]
    Contract(#[from] store::Error),
    /// The request never reached the Worker (connecting or the TLS handshake failed): always
    /// safe to retry.
    #[error("cannot connect to the Worker ({method}): {source}")]
    Connect {
        method: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The request may have reached the Worker, but no answer came back whole (a timeout, a
    /// connection broken mid-way).
    #[error("no answer from the Worker ({method}): {source}")]
    Transport {
        method: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The Worker refused the call with a code that is not a domain error of the contract.
    #[error("the Worker refused {method} with HTTP {status} ({code}): {message}")]
    Refused {
        method: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    /// A successful answer this client cannot read: the client and the Worker disagree.
    #[error("unreadable answer from the Worker to {method}: {detail}")]
    Answer {
        method: &'static str,
        detail: String,
    },
    /// The Worker speaks another protocol or shards otherwise.
    #[error("{0}")]
    Protocol(String),
    #[error("the store is closed")]
    Closed,
    #[error("{0}")]
    Config(String),
}

/// The class of a refusal code that is not a domain error (PROTOCOL.md's error table): any
/// code it does not name, like any unexpected answer, is `Unavailable`.
fn refusal_class(code: &str) -> ErrorClass {
    match code {
        "unauthorized" | "bad_request" => ErrorClass::Other,
        c if c.starts_with("malformed ") => ErrorClass::Other,
        "corrupt" => ErrorClass::Corrupt,
        _ => ErrorClass::Unavailable,
    }
}

impl Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Connect { .. } | Error::Transport { .. } | Error::Closed => {
                ErrorClass::Unavailable
            }
            Error::Refused { code, .. } => refusal_class(code),
            Error::Contract(_) | Error::Answer { .. } | Error::Protocol(_) | Error::Config(_) => {
                ErrorClass::Other
            }
        }
    }

    /// True if the request certainly did not reach the Worker, so that sending it again
    /// cannot apply it twice.
    pub(crate) fn never_sent(&self) -> bool {
        matches!(self, Error::Connect { .. })
    }

    /// True if retrying the same call later may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Unavailable
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

    fn refused(status: u16, code: &str) -> store::Error {
        Error::Refused {
            method: "write",
            status,
            code: code.into(),
            message: "m".into(),
        }
        .into()
    }

    #[test]
    fn classes_follow_the_protocol() {
        assert_eq!(refused(401, "unauthorized").kind(), "other");
        assert!(!refused(401, "unauthorized").is_retryable());
        assert_eq!(refused(400, "bad_request").kind(), "other");
        assert_eq!(refused(500, "corrupt").kind(), "corrupt");
        assert!(refused(500, "internal").is_retryable());
        assert!(refused(503, "unavailable").is_retryable());
        assert!(refused(502, "").is_retryable());
        assert!(store::Error::from(Error::Closed).is_retryable());
        let lost = store::Error::from(Error::Contract(store::Error::LeaseLost));
        assert_eq!(lost.kind(), "lease_lost");
        let answer = store::Error::from(Error::Answer {
            method: "get",
            detail: "x".into(),
        });
        assert_eq!(answer.kind(), "other");
        assert!(answer.to_string().starts_with("cloudflare store error"));
    }
}
