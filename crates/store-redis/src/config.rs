//! [`RedisOptions`]: which Redis (or Redis Cluster) to use and under which key prefix, parsed
//! from a `redis://` or `redis+cluster://` URL. Passwords never reach `Debug` or `Display`.

use std::fmt;
use std::time::Duration;

use augur_core::store;

use crate::error::Error;

/// The URL scheme of a single Redis (or Valkey) server.
pub const SCHEME: &str = "redis://";

/// The URL scheme of a Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// The key prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "augur:";

/// The response timeout when the URL names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the data lives: one server, or a cluster reached through seed nodes.
#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server (a primary; Valkey works the same). `url` is what the `redis` crate
    /// connects to: the given URL without Augur's query options.
    Single {
        /// `redis://[user:password@]host[:port][/db]`.
        url: String,
    },
    /// A Redis Cluster; each seed is `redis://[user:password@]host:port`.
    Cluster {
        /// The seed nodes, as given.
        seeds: Vec<String>,
    },
}

/// How to reach the store and where its keys live.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// One server or a cluster.
    pub topology: Topology,
    /// Every key (and the announcement channel) starts with this; several Augur
    /// installations (or tests) can share one Redis under different prefixes.
    pub prefix: String,
    /// How long one command may take, waiting for a reconnect included, before it fails as
    /// unavailable.
    pub timeout: Duration,
}

impl RedisOptions {
    /// Parses `redis://[user:password@]host[:port][/db][?options]` or
    /// `redis+cluster://[user:password@]host:port[,host:port...][?options]`.
    ///
    /// Options: `prefix=<key prefix>` (default `augur:`; no `{`, `}` or whitespace) and
    /// `timeout_ms=<milliseconds>` (default 5000). An unknown or repeated option is an error
    /// that names it.
    pub fn from_url(url: &str) -> Result<Self, store::Error> {
        Ok(parse_url(url)?)
    }

    /// The URLs the `redis` crate connects to (one for a single server, the seeds for a
    /// cluster), passwords included: never log these.
    pub(crate) fn connection_urls(&self) -> Vec<String> {
        match &self.topology {
            Topology::Single { url } => vec![url.clone()],
            Topology::Cluster { seeds } => seeds.clone(),
        }
    }

    /// True for a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
    }
}

/// The URL with any password replaced by `***`.
impl fmt::Display for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.topology {
            Topology::Single { url } => f.write_str(&redact(url))?,
            Topology::Cluster { seeds } => {
                f.write_str(CLUSTER_SCHEME)?;
                for (i, seed) in seeds.iter().enumerate() {
                    let seed = redact(seed);
                    let seed = seed.strip_prefix(SCHEME).unwrap_or(&seed);
                    // The credentials are the same on every seed: show them once.
                    let seed = if i > 0 {
                        seed.rsplit_once('@').map_or(seed, |(_, host)| host)
                    } else {
                        seed
                    };
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(seed)?;
                }
            }
        }
        write!(
            f,
            "?prefix={}&timeout_ms={}",
            self.prefix,
            self.timeout.as_millis()
        )
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Single { url } => {
                f.debug_struct("Single").field("url", &redact(url)).finish()
            }
            Topology::Cluster { seeds } => f
                .debug_struct("Cluster")
                .field(
                    "seeds",
                    &seeds.iter().map(|s| redact(s)).collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisOptions")
            .field(&self.to_string())
            .finish()
    }
}

/// `redis://user:secret@host` → `redis://user:***@host` (Augur's one URL redaction).
fn redact(url: &str) -> String {
    augur_core::redact::url(url)
}

fn parse_url(url: &str) -> Result<RedisOptions, Error> {
    let shown = redact(url);
    let bad = |reason: String| Error::Config(format!("invalid store URL {shown:?}: {reason}"));
    let (cluster, rest) = if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix(SCHEME) {
        (false, rest)
    } else if url.starts_with("rediss://") || url.starts_with("redis+cluster+tls://") {
        return Err(bad(
            "TLS is not supported by this build (use a TLS-terminating proxy on loopback)".into(),
        ));
    } else {
        return Err(bad(format!(
            "it must start with {SCHEME} or {CLUSTER_SCHEME}"
        )));
    };
    let (main, query) = match rest.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match main.split_once('/') {
        Some((authority, path)) => (authority, path),
        None => (main, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let credentials = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    if hosts.is_empty() {
        return Err(bad("it names no host".into()));
    }

    let topology = if cluster {
        if !path.is_empty() && path != "0" {
            return Err(bad(format!(
                "a Redis Cluster has only database 0, not {path:?}"
            )));
        }
        let mut seeds = Vec::new();
        for host in hosts.split(',') {
            if host.is_empty() {
                return Err(bad("an empty host in the list of cluster nodes".into()));
            }
            if !has_port(host) {
                return Err(bad(format!("the cluster node {host:?} names no port")));
            }
            seeds.push(format!("{SCHEME}{credentials}{host}"));
        }
        Topology::Cluster { seeds }
    } else {
        if hosts.contains(',') {
            return Err(bad(format!(
                "several hosts need {CLUSTER_SCHEME} (a Redis Cluster)"
            )));
        }
        if !path.is_empty() && path.parse::<u16>().is_err() {
            return Err(bad(format!(
                "the database {path:?} is not a number (e.g. redis://127.0.0.1:6379/0)"
            )));
        }
        let db = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        Topology::Single {
            url: format!("{SCHEME}{credentials}{hosts}{db}"),
        }
    };

    let mut prefix = None;
    let mut timeout = None;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "prefix" => {
                if prefix.is_some() {
                    return Err(bad("the option `prefix` is given twice".into()));
                }
                let value =
                    augur_core::percent::decode(value).map_err(|reason| bad(reason.into()))?;
                if value.is_empty()
                    || value
                        .chars()
                        .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
                {
                    return Err(bad(format!(
                        "invalid value {value:?} for `prefix` (it must be non-empty, without \
                         `{{`, `}}` or whitespace)"
                    )));
                }
                prefix = Some(value);
            }
            "timeout_ms" => {
                if timeout.is_some() {
                    return Err(bad("the option `timeout_ms` is given twice".into()));
                }
                let ms: u64 = value.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                    bad(format!(
                        "invalid value {value:?} for `timeout_ms` (a positive number of milliseconds)"
                    ))
                })?;
                timeout = Some(Duration::from_millis(ms));
            }
            other => {
                return Err(bad(format!(
                    "unknown option `{other}` (known options: `prefix`, `timeout_ms`)"
                )));
            }
        }
    }
    Ok(RedisOptions {
        topology,
        prefix: prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
        timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
    })
}

/// `host:port` or `[v6]:port`.
fn has_port(host: &str) -> bool {
    let port = match host.rsplit_once("]:") {
        Some((_, port)) => port,
        None if host.starts_with('[') => return false,
        None => match host.rsplit_once(':') {
            Some((_, port)) => port,
            None => return false,
        },
    };
    port.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_servers() {
        let o = RedisOptions::from_url("redis://127.0.0.1:6379/2").unwrap();
        assert_eq!(
            o.topology,
            Topology::Single {
                url: "redis://127.0.0.1:6379/2".into()
            }
        );
        assert_eq!(o.prefix, DEFAULT_PREFIX);
        assert_eq!(o.timeout, DEFAULT_TIMEOUT);
        assert!(!o.is_cluster());

        let o = RedisOptions::from_url("redis://localhost?prefix=t%3A1:&timeout_ms=250").unwrap();
        assert_eq!(
            o.topology,
            Topology::Single {
                url: "redis://localhost".into()
            }
        );
        assert_eq!(o.prefix, "t:1:");
        assert_eq!(o.timeout, Duration::from_millis(250));
    }

    #[test]
    fn parses_clusters() {
        let o = RedisOptions::from_url(
            "redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001,[::1]:7002/?prefix=x:",
        )
        .unwrap();
        assert_eq!(
            o.topology,
            Topology::Cluster {
                seeds: vec![
                    "redis://:pw@127.0.0.1:7000".into(),
                    "redis://:pw@127.0.0.1:7001".into(),
                    "redis://:pw@[::1]:7002".into(),
                ]
            }
        );
        assert!(o.is_cluster());
        assert_eq!(o.prefix, "x:");
    }

    #[test]
    fn never_shows_passwords() {
        for url in [
            "redis://user:hunter2@127.0.0.1:6379/0",
            "redis://:hunter2@127.0.0.1:6379",
            "redis://hunter2@127.0.0.1",
            "redis+cluster://u:hunter2@127.0.0.1:7000,127.0.0.1:7001",
        ] {
            let o = RedisOptions::from_url(url).unwrap();
            let shown = format!("{o} {o:?} {:?}", o.topology);
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        let err = RedisOptions::from_url("redis://u:hunter2@h?nope=1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn rejects_bad_urls_naming_the_problem() {
        for (url, needle) in [
            ("embedded://x", "must start with redis://"),
            ("rediss://h:1", "TLS is not supported"),
            ("redis://", "names no host"),
            ("redis://h:1/x", "\"x\" is not a number"),
            ("redis://a:1,b:2", "need redis+cluster://"),
            ("redis+cluster://a:1,b", "\"b\" names no port"),
            ("redis+cluster://a:1/3", "only database 0"),
            ("redis://h?cache=1", "unknown option `cache`"),
            ("redis://h?prefix=a&prefix=b", "`prefix` is given twice"),
            ("redis://h?prefix={x}", "for `prefix`"),
            ("redis://h?prefix=", "for `prefix`"),
            ("redis://h?timeout_ms=0", "for `timeout_ms`"),
        ] {
            let err = RedisOptions::from_url(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
