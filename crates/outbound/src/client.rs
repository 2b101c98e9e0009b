//! The `reqwest` side of the [`Policy`]: a DNS resolver that drops refused addresses, a
//! redirect policy that checks each hop, and [`Failure`], the coarse account of a failed
//! request that its user may see.

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::{Policy, Refused};

impl Policy {
    /// A client builder whose connections go only where the policy permits: host names are
    /// resolved by a resolver that drops refused addresses (refusing the request when none is
    /// left), and proxy variables are ignored. Hosts written as addresses skip the resolver:
    /// check each request's URL with [`Policy::check_url`] and follow redirects (if at all)
    /// with [`Policy::redirects`].
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(Resolver {
                policy: self.clone(),
            }))
    }

    /// A redirect policy that follows up to `max` redirects to `http(s)` URLs the policy
    /// permits ([`Policy::check_url`] on every hop; host names are checked by the resolver
    /// when the hop connects).
    pub fn redirects(&self, max: usize) -> reqwest::redirect::Policy {
        let policy = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= max {
                return attempt.error(Stopped(format!("more than {max} redirects")));
            }
            let url = attempt.url();
            if !matches!(url.scheme(), "http" | "https") {
                let scheme = url.scheme().to_owned();
                return attempt.error(Stopped(format!(
                    "redirected to a {scheme}: URL; only http(s) is followed"
                )));
            }
            match policy.check_url(url) {
                Ok(()) => attempt.follow(),
                Err(refused) => {
                    tracing::info!(
                        range = refused.range(),
                        "outgoing request refused: a redirect leads to a forbidden address"
                    );
                    attempt.error(refused)
                }
            }
        })
    }
}

/// Resolves host names and keeps only the addresses the policy permits.
struct Resolver {
    policy: Policy,
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| Box::new(Unresolved(e.to_string())))?
                .collect();
            let mut refused = None;
            let permitted: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check(addr.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if permitted.is_empty() {
                let refused = refused.unwrap_or(Refused {
                    range: "no address",
                });
                tracing::info!(
                    range = refused.range(),
                    "outgoing request refused: the host name resolves to a forbidden address"
                );
                return Err(Box::new(refused) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

/// A host name that does not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve host: {0}")]
struct Unresolved(String);

/// A redirect the policy does not follow for a reason other than its destination.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Stopped(String);

/// What a failed outgoing request may tell the user who steered it: whether the destination
/// was refused, and otherwise only the coarse kind of failure, never the connection error's
/// text (which tells an open port from a closed one). The operator's logs may hold more.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The policy refused the destination (or a redirect hop's); nothing was sent.
    Refused,
    /// No answer in time.
    TimedOut,
    /// The host name does not resolve.
    Unresolved,
    /// The connection (TCP or TLS) could not be made.
    Connect,
    /// A redirect was not followed (too many, or to a scheme other than http(s)).
    Redirect(String),
    /// The request failed after it was sent, or could not be made.
    Other,
}

impl Failure {
    /// Classifies a `reqwest` error.
    pub fn of(error: &reqwest::Error) -> Self {
        let mut source: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(e) = source {
            if e.is::<Refused>() {
                return Failure::Refused;
            }
            if e.is::<Unresolved>() {
                return Failure::Unresolved;
            }
            if let Some(stopped) = e.downcast_ref::<Stopped>() {
                return Failure::Redirect(stopped.0.clone());
            }
            source = e.source();
        }
        if error.is_timeout() {
            Failure::TimedOut
        } else if error.is_connect() {
            Failure::Connect
        } else {
            Failure::Other
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => f.write_str("refused: destination not allowed"),
            Failure::TimedOut => f.write_str("timed out"),
            Failure::Unresolved => f.write_str("cannot resolve host"),
            Failure::Connect => f.write_str("connect failed"),
            Failure::Redirect(why) => f.write_str(why),
            Failure::Other => f.write_str("request failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A server on `addr` that answers every request with `response` (raw HTTP), and counts
    /// connections.
    async fn serve(
        addr: &str,
        response: String,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let bound = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        (bound, count)
    }

    fn ok() -> String {
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_owned()
    }

    fn redirect_to(location: &str) -> String {
        format!(
            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    }

    async fn get(policy: &Policy, url: &str) -> Result<reqwest::StatusCode, Failure> {
        let client = policy
            .client_builder()
            .redirect(policy.redirects(5))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let parsed = url::Url::parse(url).unwrap();
        policy.check_url(&parsed).map_err(|_| Failure::Refused)?;
        client
            .get(parsed)
            .send()
            .await
            .map(|r| r.status())
            .map_err(|e| Failure::of(&e))
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_after_resolution() {
        let (addr, count) = serve("127.0.0.1:0", ok()).await;
        let url = format!("http://localhost:{}/", addr.port());
        assert_eq!(get(&Policy::default(), &url).await, Err(Failure::Refused));
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 0);
        // The same name passes once the operator allows loopback.
        let allowed = Policy::parse_allowlist("127.0.0.0/8,::1/128").unwrap();
        assert_eq!(get(&allowed, &url).await, Ok(reqwest::StatusCode::OK));
    }

    #[tokio::test]
    async fn a_redirect_to_a_forbidden_address_is_not_followed() {
        let (target, hits) = serve("127.0.0.1:0", ok()).await;
        let policy = Policy::parse_allowlist("127.0.0.2/32").unwrap();
        let (start, _) = serve(
            "127.0.0.2:0",
            redirect_to(&format!("http://127.0.0.1:{}/", target.port())),
        )
        .await;
        let url = format!("http://127.0.0.2:{}/", start.port());
        assert_eq!(get(&policy, &url).await, Err(Failure::Refused));
        // Spelled as a name or in hex, the hop is refused all the same.
        for location in [
            format!("http://localhost:{}/", target.port()),
            format!("http://0x7f000001:{}/", target.port()),
        ] {
            let (start, _) = serve("127.0.0.2:0", redirect_to(&location)).await;
            let url = format!("http://127.0.0.2:{}/", start.port());
            assert_eq!(
                get(&policy, &url).await,
                Err(Failure::Refused),
                "{location}"
            );
        }
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        // A hop to an allowed address is followed.
        let (allowed, _) = serve("127.0.0.2:0", ok()).await;
        let (start, _) = serve(
            "127.0.0.2:0",
            redirect_to(&format!("http://127.0.0.2:{}/", allowed.port())),
        )
        .await;
        let url = format!("http://127.0.0.2:{}/", start.port());
        assert_eq!(get(&policy, &url).await, Ok(reqwest::StatusCode::OK));
    }

    #[tokio::test]
    async fn failures_are_coarse() {
        let policy = Policy::parse_allowlist("127.0.0.0/8").unwrap();
        // A closed port: "connect failed", not the operating system's words.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let failed = get(&policy, &format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap_err();
        assert_eq!(failed, Failure::Connect);
        assert_eq!(failed.to_string(), "connect failed");
        assert_eq!(
            Failure::Refused.to_string(),
            "refused: destination not allowed"
        );
        // A redirect to another scheme says so.
        let (start, _) = serve("127.0.0.1:0", redirect_to("ftp://127.0.0.1/x")).await;
        let failed = get(&policy, &format!("http://127.0.0.1:{}/", start.port()))
            .await
            .unwrap_err();
        assert!(failed.to_string().contains("only http(s)"), "{failed}");
    }
}
