//! [`Client`]: one pooled HTTPS client to the Worker, and [`Client::call`], one signed
//! request per call of the contract, with the answer decoded or mapped onto the contract's
//! errors (PROTOCOL.md, "Errors").
//!
//! Retries: a call that only reads is sent again (with a new nonce and signature) while the
//! Worker is unavailable, backing off, a few times. A call that changes the store is sent again
//! only when the request never left this process (the connection could not be made): once it
//! may have reached the Worker, a retry could apply it twice (a second claim, an enqueue, a
//! ledger entry), so the caller gets `Unavailable` and decides, as with the other backends.

use std::time::Duration;

use augur_core::store;
use augur_core::{AccountId, Revision};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::CloudflareOptions;
use crate::error::Error;
use crate::sign;
use crate::wire::WKey;

/// How many times a call is sent at most.
const ATTEMPTS: u32 = 4;

/// The first wait before a retry; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The protocol's methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Hello,
    Write,
    Get,
    List,
    Expire,
    Claim,
    Renew,
    Finish,
    Items,
    Requeue,
    QueueStats,
    ReadEvents,
    Balance,
    Ledger,
    Counters,
    Export,
    Import,
    Changes,
}

impl Method {
    /// The method's name, the last segment of its path.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::Hello => "hello",
            Method::Write => "write",
            Method::Get => "get",
            Method::List => "list",
            Method::Expire => "expire",
            Method::Claim => "claim",
            Method::Renew => "renew",
            Method::Finish => "finish",
            Method::Items => "items",
            Method::Requeue => "requeue",
            Method::QueueStats => "queue_stats",
            Method::ReadEvents => "read_events",
            Method::Balance => "balance",
            Method::Ledger => "ledger",
            Method::Counters => "counters",
            Method::Export => "export",
            Method::Import => "import",
            Method::Changes => "changes",
        }
    }

    /// True if the call changes nothing, so sending it twice is harmless.
    fn only_reads(self) -> bool {
        matches!(
            self,
            Method::Hello
                | Method::Get
                | Method::List
                | Method::Items
                | Method::QueueStats
                | Method::ReadEvents
                | Method::Balance
                | Method::Ledger
                | Method::Counters
                | Method::Export
                | Method::Changes
        )
    }
}

/// The pooled connection to the Worker and what every request needs.
pub(crate) struct Client {
    http: reqwest::Client,
    pub(crate) options: CloudflareOptions,
}

impl Client {
    pub(crate) fn new(options: CloudflareOptions) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(options.pool)
            .pool_idle_timeout(Duration::from_secs(50))
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, options })
    }

    /// Calls `method` with `body` and decodes its answer, retrying where that is safe.
    pub(crate) async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        method: Method,
        body: &Q,
    ) -> Result<A, Error> {
        self.call_with_timeout(method, body, None).await
    }

    /// [`Client::call`] with a longer timeout than the URL's for this call (a long poll).
    pub(crate) async fn call_with_timeout<Q: Serialize, A: DeserializeOwned>(
        &self,
        method: Method,
        body: &Q,
        timeout: Option<Duration>,
    ) -> Result<A, Error> {
        let body = serde_json::to_vec(body).map_err(|e| {
            Error::Config(format!("cannot encode the {} request: {e}", method.name()))
        })?;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.send(method, &body, timeout).await {
                Ok(answer) => return Ok(answer),
                Err(e)
                    if attempt < ATTEMPTS
                        && (e.never_sent() || (method.only_reads() && e.is_retryable())) =>
                {
                    tracing::debug!(method = method.name(), attempt, error = %e, "retrying a call to the Cloudflare store");
                    let jitter = Duration::from_millis(rand::random_range(
                        0..=backoff.as_millis() as u64 / 2,
                    ));
                    tokio::time::sleep(backoff + jitter).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends one signed request (a new nonce) and reads its answer.
    async fn send<A: DeserializeOwned>(
        &self,
        method: Method,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<A, Error> {
        let name = method.name();
        let path = self.options.path_of(name);
        let signed = sign::sign_now(&self.options.secret, &path, body);
        let url = format!("{}/ns/{}/{name}", self.options.base, self.options.namespace);
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-augur-timestamp", signed.timestamp)
            .header("x-augur-nonce", signed.nonce)
            .header("x-augur-signature", signed.signature)
            .body(body.to_vec());
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let transport = |source: reqwest::Error| {
            if source.is_connect() {
                Error::Connect {
                    method: name,
                    source,
                }
            } else {
                Error::Transport {
                    method: name,
                    source,
                }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|source| Error::Transport {
            method: name,
            source,
        })?;
        if status == reqwest::StatusCode::OK {
            return serde_json::from_slice(&bytes).map_err(|e| Error::Answer {
                method: name,
                detail: e.to_string(),
            });
        }
        Err(refusal(name, status.as_u16(), &bytes))
    }
}

/// The error of a refused call (PROTOCOL.md's error table).
pub(crate) fn refusal(method: &'static str, status: u16, body: &[u8]) -> Error {
    let answer: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = answer
        .get("error")
        .and_then(|c| c.as_str())
        .unwrap_or_default()
        .to_owned();
    let text = |field: &str| {
        answer
            .get(field)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let int = |field: &str| answer.get(field).and_then(serde_json::Value::as_i64);
    let key = || {
        answer
            .get("key")
            .cloned()
            .and_then(|k| serde_json::from_value::<WKey>(k).ok())
            .and_then(|k| k.decode().ok())
    };
    let domain = match (status, code.as_str()) {
        (404, "not_found") => key().map(store::Error::NotFound),
        (409, "exists") => key().map(store::Error::Exists),
        (409, "conflict") => match (key(), int("expected"), int("actual")) {
            (Some(key), Some(expected), Some(actual)) => Some(store::Error::Conflict {
                key,
                expected: Revision(expected.max(0) as u64),
                actual: Revision(actual.max(0) as u64),
            }),
            _ => None,
        },
        (409, "lease_lost") => Some(store::Error::LeaseLost),
        (409, "insufficient_credits") => {
            match (
                text("account").and_then(|a| AccountId::parse(&a).ok()),
                int("available"),
                int("needed"),
            ) {
                (Some(account), Some(available), Some(needed)) => {
                    Some(store::Error::InsufficientCredits {
                        account,
                        available,
                        needed,
                    })
                }
                _ => None,
            }
        }
        (409, "limit_reached") => match (text("counter"), int("limit")) {
            (Some(counter), Some(limit)) => Some(store::Error::LimitReached { counter, limit }),
            _ => None,
        },
        (422, "invalid") => Some(store::Error::Invalid(text("message").unwrap_or_default())),
        _ => None,
    };
    if let Some(e) = domain {
        return Error::Contract(e);
    }
    let message = text("message").unwrap_or_else(|| {
        let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        if code.is_empty() {
            shown
        } else {
            String::new()
        }
    });
    let message = if code == "unauthorized" {
        format!(
            "{message} (check that the store URL's secret is the Worker's AUGUR_STORE_SECRET \
             and that this machine's clock is right)"
        )
    } else {
        message
    };
    let code = if code.is_empty() {
        // Not the Worker's answer (a proxy's, a missing route): unexpected, so unavailable.
        format!("http {status}")
    } else if is_domain_code(&code) {
        // A domain code without its fields is a disagreement between client and Worker.
        format!("malformed {code}")
    } else {
        code
    };
    Error::Refused {
        method,
        status,
        code,
        message,
    }
}

fn is_domain_code(code: &str) -> bool {
    matches!(
        code,
        "not_found"
            | "exists"
            | "conflict"
            | "lease_lost"
            | "insufficient_credits"
            | "limit_reached"
            | "invalid"
    )
}

/// The key a refusal names, for tests.
#[cfg(test)]
fn key_json(key: &store::Key) -> serde_json::Value {
    serde_json::to_value(WKey::from(key)).unwrap()
}

#[cfg(test)]
mod tests {
    use augur_core::store::{Key, Kind};
    use serde_json::json;

    use super::*;

    fn refuse(status: u16, body: serde_json::Value) -> store::Error {
        refusal("write", status, body.to_string().as_bytes()).into()
    }

    #[test]
    fn refusals_map_to_the_contract() {
        let key = Key::new(Kind::Prediction, "p1");
        let k = key_json(&key);
        assert!(
            matches!(refuse(404, json!({"error": "not_found", "key": k})), store::Error::NotFound(x) if x == key)
        );
        assert!(
            matches!(refuse(409, json!({"error": "exists", "key": k})), store::Error::Exists(x) if x == key)
        );
        assert!(matches!(
            refuse(
                409,
                json!({"error": "conflict", "key": k, "expected": 1, "actual": 2})
            ),
            store::Error::Conflict {
                expected: Revision(1),
                actual: Revision(2),
                ..
            }
        ));
        assert!(matches!(
            refuse(409, json!({"error": "lease_lost"})),
            store::Error::LeaseLost
        ));
        assert!(matches!(
            refuse(
                409,
                json!({"error": "insufficient_credits", "account": "a", "available": 1, "needed": 5})
            ),
            store::Error::InsufficientCredits {
                available: 1,
                needed: 5,
                ..
            }
        ));
        assert!(matches!(
            refuse(
                409,
                json!({"error": "limit_reached", "counter": "c", "limit": 3})
            ),
            store::Error::LimitReached { limit: 3, .. }
        ));
        assert!(
            matches!(refuse(422, json!({"error": "invalid", "message": "m"})), store::Error::Invalid(m) if m == "m")
        );
        assert_eq!(
            refuse(401, json!({"error": "unauthorized", "message": "m"})).kind(),
            "other"
        );
        assert_eq!(
            refuse(400, json!({"error": "bad_request", "message": "m"})).kind(),
            "other"
        );
        assert_eq!(
            refuse(500, json!({"error": "corrupt", "message": "m"})).kind(),
            "corrupt"
        );
        for (status, body) in [
            (500, json!({"error": "internal", "message": "m"})),
            (503, json!({"error": "unavailable", "message": "m"})),
            (502, json!("bad gateway")),
        ] {
            assert!(
                refuse(status, body.clone()).is_retryable(),
                "{status} {body}"
            );
        }
        // A domain code without its fields is a disagreement, never retried.
        assert_eq!(refuse(409, json!({"error": "conflict"})).kind(), "other");
    }
}
