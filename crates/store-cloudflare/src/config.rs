//! [`CloudflareOptions`]: which Worker to call, under which namespace and with which shared
//! secret, parsed from a `cloudflare://` or `cloudflare+http://` URL. The secret never reaches
//! `Debug` or `Display`.

use std::fmt;
use std::time::Duration;

use augur_core::store;

use crate::error::Error;

/// The URL scheme of a Worker reached over HTTPS.
pub const SCHEME: &str = "cloudflare://";

/// The URL scheme of a Worker reached over plain HTTP: loopback hosts only (a local workerd).
pub const HTTP_SCHEME: &str = "cloudflare+http://";

/// The namespace when the URL names none.
pub const DEFAULT_NAMESPACE: &str = "augur";

/// How long one request may take when the URL names no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections kept per host when the URL names no `pool`.
pub const DEFAULT_POOL: usize = 32;

/// The shared secret of the Worker (`AUGUR_STORE_SECRET`). `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret's bytes, for signing only.
    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How to reach the Worker and which installation's data to use.
#[derive(Clone, PartialEq, Eq)]
pub struct CloudflareOptions {
    /// `https://host[:port][/path]` (or `http://` for a loopback host), without a trailing
    /// slash: requests go to `{base}/ns/{namespace}/{method}`.
    pub base: String,
    /// The base's path (`""` or `/path`), the start of the signed path.
    pub base_path: String,
    /// One Augur installation's data in the Worker (tests use a fresh one each).
    pub namespace: String,
    /// The shared secret every request is signed with.
    pub secret: Secret,
    /// How long one request may take (a long poll for changes takes its wait on top).
    pub timeout: Duration,
    /// Idle keep-alive connections kept to the Worker.
    pub pool: usize,
}

impl CloudflareOptions {
    /// Parses `cloudflare://[:SECRET@]host[:port][/path][?options]` or the same with
    /// `cloudflare+http://` (loopback hosts only).
    ///
    /// Options: `namespace=<name>` (default `augur`; letters, digits, `-`, `_` and `.`, at
    /// most 64), `secret=<secret>` (instead of the password), `timeout=<milliseconds>`
    /// (default 10000) and `pool=<idle connections>` (default 32). A missing secret, an
    /// unknown or repeated option is an error that names it.
    pub fn from_url(url: &str) -> Result<Self, store::Error> {
        Ok(parse_url(url)?)
    }

    /// The path of a method's request, as signed: `{base path}/ns/{namespace}/{method}`.
    pub(crate) fn path_of(&self, method: &str) -> String {
        format!("{}/ns/{}/{method}", self.base_path, self.namespace)
    }

    /// Options for another namespace on the same Worker.
    pub fn with_namespace(&self, namespace: &str) -> Result<Self, store::Error> {
        check_namespace(namespace).map_err(|e| Error::Config(format!("invalid namespace: {e}")))?;
        Ok(Self {
            namespace: namespace.to_owned(),
            ..self.clone()
        })
    }
}

/// The URL without the secret: `cloudflare://host/path?namespace=…&timeout=…&pool=…`.
impl fmt::Display for CloudflareOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, rest) = match self.base.strip_prefix("https://") {
            Some(rest) => (SCHEME, rest),
            None => (
                HTTP_SCHEME,
                self.base.strip_prefix("http://").unwrap_or(&self.base),
            ),
        };
        write!(
            f,
            "{scheme}{rest}?namespace={}&timeout={}&pool={}",
            self.namespace,
            self.timeout.as_millis(),
            self.pool
        )
    }
}

impl fmt::Debug for CloudflareOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CloudflareOptions")
            .field(&self.to_string())
            .finish()
    }
}

/// A `cloudflare://` URL with its secrets masked (the password and the `secret` option), for
/// logs and `augur config check`.
pub fn redact_url(url: &str) -> String {
    augur_core::redact::url(url)
}

fn parse_url(url: &str) -> Result<CloudflareOptions, Error> {
    let shown = redact_url(url);
    let bad = |reason: String| Error::Config(format!("invalid store URL {shown:?}: {reason}"));
    let (http, rest) = if let Some(rest) = url.strip_prefix(HTTP_SCHEME) {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix(SCHEME) {
        (false, rest)
    } else {
        return Err(bad(format!("it must start with {SCHEME} or {HTTP_SCHEME}")));
    };
    if rest.contains('#') {
        return Err(bad("a store URL has no fragment".into()));
    }
    let (main, query) = match rest.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (rest, None),
    };
    // The password may hold a `/`: the authority ends at the first `/` after the last `@`.
    let (userinfo, after_userinfo) = match main.rsplit_once('@') {
        Some((userinfo, tail)) => (Some(userinfo), tail),
        None => (None, main),
    };
    let (host, path) = match after_userinfo.find('/') {
        Some(at) => after_userinfo.split_at(at),
        None => (after_userinfo, ""),
    };
    if host.is_empty() {
        return Err(bad("it names no host".into()));
    }
    check_host(host).map_err(bad)?;
    if http && !is_loopback(host) {
        return Err(bad(format!(
            "plain HTTP ({HTTP_SCHEME}) is only for loopback hosts (127.0.0.1, ::1, localhost), \
             not {host:?}: use {SCHEME} (HTTPS)"
        )));
    }
    let path = path.trim_end_matches('/');
    if path.contains(['?', '#', ' ']) || path.contains("//") {
        return Err(bad(format!("invalid path {path:?}")));
    }
    let mut secret = match userinfo {
        Some(userinfo) => {
            let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
            let password = augur_core::percent::decode(password).map_err(|r| bad(r.into()))?;
            (!password.is_empty()).then_some(password)
        }
        None => None,
    };
    let from_password = secret.is_some();

    let mut namespace = None;
    let mut timeout = None;
    let mut pool = None;
    let mut secret_option = false;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let twice = |name: &str| bad(format!("the option `{name}` is given twice"));
        match key {
            "namespace" => {
                if namespace.is_some() {
                    return Err(twice(key));
                }
                let value = augur_core::percent::decode(value).map_err(|r| bad(r.into()))?;
                check_namespace(&value)
                    .map_err(|r| bad(format!("invalid value {value:?} for `namespace` ({r})")))?;
                namespace = Some(value);
            }
            "secret" => {
                if secret_option {
                    return Err(twice(key));
                }
                if from_password {
                    return Err(bad(
                        "the secret is given twice (as the password and as `secret`)".into(),
                    ));
                }
                let value = augur_core::percent::decode(value).map_err(|r| bad(r.into()))?;
                secret_option = true;
                secret = (!value.is_empty()).then_some(value);
            }
            "timeout" => {
                if timeout.is_some() {
                    return Err(twice(key));
                }
                let ms: u64 = value.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                    bad(format!(
                        "invalid value {value:?} for `timeout` (a positive number of milliseconds)"
                    ))
                })?;
                timeout = Some(Duration::from_millis(ms));
            }
            "pool" => {
                if pool.is_some() {
                    return Err(twice(key));
                }
                let n: usize = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    bad(format!(
                        "invalid value {value:?} for `pool` (a positive number of connections)"
                    ))
                })?;
                pool = Some(n);
            }
            other => {
                return Err(bad(format!(
                    "unknown option `{other}` (known options: `namespace`, `secret`, `timeout`, \
                     `pool`)"
                )));
            }
        }
    }
    let Some(secret) = secret else {
        return Err(bad(
            "it names no secret: give the Worker's AUGUR_STORE_SECRET as the URL's password \
             (an empty user name, then `:`, the secret and `@` before the host) or as the \
             `secret` option"
                .into(),
        ));
    };
    let scheme = if http { "http://" } else { "https://" };
    Ok(CloudflareOptions {
        base: format!("{scheme}{host}{path}"),
        base_path: path.to_owned(),
        namespace: namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        secret: Secret(secret),
        timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
        pool: pool.unwrap_or(DEFAULT_POOL),
    })
}

fn check_namespace(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > 64 {
        return Err("1 to 64 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("letters, digits, `-`, `_` and `.` only");
    }
    Ok(())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, with nothing a URL would read otherwise.
fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, tail)) = rest.split_once(']') else {
            return Err(format!("invalid host {host:?}"));
        };
        let port = match tail {
            "" => None,
            _ => Some(
                tail.strip_prefix(':')
                    .ok_or_else(|| format!("invalid host {host:?}"))?,
            ),
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address in {host:?}"));
        }
        (None, port)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("invalid port {port:?}"));
    }
    if let Some(name) = name
        && (name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')))
    {
        return Err(format!("invalid host name {name:?}"));
    }
    Ok(())
}

/// True for `localhost`, `127.x.y.z` and `[::1]`, with or without a port.
fn is_loopback(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split_once(']')
            .and_then(|(v6, _)| v6.parse::<std::net::Ipv6Addr>().ok())
            .is_some_and(|ip| ip.is_loopback());
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_https_urls() {
        let o = CloudflareOptions::from_url(
            "cloudflare://:s3cret@augur.example.workers.dev/store/?namespace=prod-1&timeout=2500&pool=4",
        )
        .unwrap();
        assert_eq!(o.base, "https://augur.example.workers.dev/store");
        assert_eq!(o.base_path, "/store");
        assert_eq!(o.namespace, "prod-1");
        assert_eq!(o.secret, Secret::new("s3cret"));
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert_eq!(o.pool, 4);
        assert_eq!(o.path_of("hello"), "/store/ns/prod-1/hello");

        let o = CloudflareOptions::from_url("cloudflare://w.example:8443?secret=a%2Fb").unwrap();
        assert_eq!(o.base, "https://w.example:8443");
        assert_eq!(o.base_path, "");
        assert_eq!(o.namespace, DEFAULT_NAMESPACE);
        assert_eq!(o.secret, Secret::new("a/b"));
        assert_eq!(o.timeout, DEFAULT_TIMEOUT);
        assert_eq!(o.pool, DEFAULT_POOL);
        assert_eq!(o.path_of("write"), "/ns/augur/write");
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        for url in [
            "cloudflare+http://:s@127.0.0.1:8787",
            "cloudflare+http://:s@localhost:8787/",
            "cloudflare+http://:s@[::1]:8787",
        ] {
            let o = CloudflareOptions::from_url(url).unwrap();
            assert!(o.base.starts_with("http://"), "{url}: {}", o.base);
        }
        for url in [
            "cloudflare+http://:s@10.0.0.1:8787",
            "cloudflare+http://:s@example.com",
            "cloudflare+http://:s@[::2]:1",
        ] {
            let err = CloudflareOptions::from_url(url).unwrap_err().to_string();
            assert!(err.contains("only for loopback hosts"), "{url}: {err}");
        }
    }

    #[test]
    fn never_shows_the_secret() {
        for url in [
            "cloudflare://:hunter2@h.example/x?namespace=n",
            "cloudflare+http://127.0.0.1:1?secret=hunter2&namespace=n",
        ] {
            let o = CloudflareOptions::from_url(url).unwrap();
            let shown = format!("{o} {o:?} {:?} {}", o.secret, redact_url(url));
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
            assert!(
                redact_url(url).contains("namespace=n"),
                "{}",
                redact_url(url)
            );
        }
        let err = CloudflareOptions::from_url("cloudflare://:hunter2@h?nope=1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn rejects_bad_urls_naming_the_problem() {
        for (url, needle) in [
            ("redis://x", "must start with cloudflare://"),
            ("cloudflare://h.example", "names no secret"),
            ("cloudflare://:@h.example", "names no secret"),
            ("cloudflare://h.example?secret=", "names no secret"),
            ("cloudflare://:s@", "names no host"),
            ("cloudflare://:s@h:x", "invalid port"),
            ("cloudflare://:s@h_h", "invalid host name"),
            ("cloudflare://:s@h?cache=1", "unknown option `cache`"),
            ("cloudflare://:s@h?namespace=a&namespace=b", "given twice"),
            ("cloudflare://:s@h?secret=t", "the secret is given twice"),
            ("cloudflare://:s@h?namespace=a/b", "for `namespace`"),
            ("cloudflare://:s@h?namespace=", "for `namespace`"),
            ("cloudflare://:s@h?timeout=0", "for `timeout`"),
            ("cloudflare://:s@h?pool=x", "for `pool`"),
            ("cloudflare://:s@h#f", "no fragment"),
        ] {
            let err = CloudflareOptions::from_url(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
