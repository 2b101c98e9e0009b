//! [`PostgresOptions`]: which server, database and schema, and how many connections, parsed
//! from a `postgres://user[:password]@host[:port]/db[?schema=…&pool_size=…]` URL.
//!
//! This module only parses and validates; it opens nothing. The password never appears in
//! `Debug` or `Display` output.

use std::fmt;
use std::time::Duration;

use augur_core::store;

use crate::error::Error;

/// How the pooled connections plan their statements. Every statement is prepared once per
/// connection and planned once, generically: left to itself (`auto`), PostgreSQL plans some
/// write statements afresh at every execution (their array parameters make a generic plan
/// look dearer than it is), which cost more than executing them. A connection may make its
/// plans while the tables are still empty, with no statistics to tell a keyed lookup from a
/// scan; every statement of this store is a keyed access that an index serves (the plan test
/// in `sql` checks each, on empty and on filled tables), so sequential scans, hash joins and
/// merge joins are ruled out where an index and a nested loop can do: a plan made on empty
/// tables then stays right as they grow. Migrations, which read whole tables, restore the
/// defaults for their transaction.
pub(crate) const PLANNER_SETTINGS: &str = "-c plan_cache_mode=force_generic_plan \
     -c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off";

/// The URL schemes this backend accepts.
pub const SCHEMES: [&str; 2] = ["postgres", "postgresql"];

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "augur";

/// The connection pool's size when the URL names none.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// The longest schema name accepted: the change channel is `<schema>_changes`, and PostgreSQL
/// names are at most 63 bytes.
const MAX_SCHEMA_LEN: usize = 55;

/// How to reach the database, parsed from a URL. `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Host name, IP address, or the directory of a Unix socket (starts with `/`).
    pub host: String,
    /// TCP port (default 5432).
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password, if any.
    pub password: Option<String>,
    /// Database name (default: the user name, as libpq does).
    pub dbname: String,
    /// The schema that holds Augur's tables; created at connect if missing (default `augur`).
    pub schema: String,
    /// The most connections the pool opens (default 16); the change listener uses one more
    /// per subscription.
    pub pool_size: usize,
    /// How long opening a connection may take (default 10 s).
    pub connect_timeout: Duration,
    /// How long an operation waits for a free pooled connection before it fails as
    /// unavailable (default 10 s).
    pub pool_timeout: Duration,
    /// Reported to the server (`pg_stat_activity.application_name`; default `augur`).
    pub application_name: String,
}

impl PostgresOptions {
    /// Parses `postgres://user[:password]@host[:port]/db[?options]` (or `postgresql://`).
    ///
    /// Options: `schema` (default `augur`: lowercase letters, digits and `_`, not starting with
    /// a digit), `pool_size` (1 to 1024, default 16), `connect_timeout` and `pool_timeout`
    /// (seconds, default 10), `application_name`, and `sslmode=disable` (TLS is not
    /// supported; terminate it in a proxy). `%XX` escapes are decoded in every part; a host
    /// that decodes to an absolute path is a Unix socket directory. An unknown option, a
    /// repeated one or a bad value is an error that names it.
    pub fn from_url(url: &str) -> Result<Self, store::Error> {
        Ok(parse_url(url)?)
    }

    /// The URL these options came from, with the password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        self.to_string()
    }

    /// The name of the `LISTEN`/`NOTIFY` channel of this schema.
    pub fn channel(&self) -> String {
        format!("{}_changes", self.schema)
    }

    /// The connection settings for `tokio-postgres` (search path set to the schema).
    pub(crate) fn pg_config(&self, role: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(format!("{}:{role}", self.application_name))
            .connect_timeout(self.connect_timeout)
            // The schema name is validated to be a plain identifier, so it needs no quoting.
            .options(format!("-c search_path={} {PLANNER_SETTINGS}", self.schema))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("dbname", &self.dbname)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_timeout", &self.pool_timeout)
            .field("application_name", &self.application_name)
            .finish()
    }
}

/// The URL with the password replaced by `***` (and the default options spelled out).
impl fmt::Display for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = if self.password.is_some() { ":***" } else { "" };
        let host = if self.host.starts_with('/') {
            self.host.replace('/', "%2F")
        } else if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "postgres://{}{password}@{host}:{}/{}?schema={}&pool_size={}",
            self.user, self.port, self.dbname, self.schema, self.pool_size
        )
    }
}

fn parse_url(text: &str) -> Result<PostgresOptions, Error> {
    // Never echo the URL itself: it may hold a password.
    let bad = |reason: String| Error::Config(format!("invalid PostgreSQL URL: {reason}"));
    let url = url::Url::parse(text).map_err(|e| bad(e.to_string()))?;
    if !SCHEMES.contains(&url.scheme()) {
        return Err(bad(format!(
            "the scheme is {:?}; expected postgres:// or postgresql://",
            url.scheme()
        )));
    }
    let decode = |what: &str, part: &str| -> Result<String, Error> {
        augur_core::percent::decode(part).map_err(|reason| bad(format!("the {what}: {reason}")))
    };
    let user = decode("user", url.username())?;
    if user.is_empty() {
        return Err(bad(
            "it names no user (postgres://user[:password]@host:port/db)".into(),
        ));
    }
    let password = url.password().map(|p| decode("password", p)).transpose()?;
    let host = match url.host() {
        Some(url::Host::Domain(d)) => decode("host", d)?,
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(bad("it names no host".into())),
    };
    let port = url.port().unwrap_or(5432);
    let path = url.path().trim_start_matches('/');
    if path.contains('/') {
        return Err(bad("the path must be a single database name".into()));
    }
    let dbname = match decode("database name", path)? {
        name if name.is_empty() => user.clone(),
        name => name,
    };
    let mut options = PostgresOptions {
        host,
        port,
        user,
        password,
        dbname,
        schema: DEFAULT_SCHEMA.to_owned(),
        pool_size: DEFAULT_POOL_SIZE,
        connect_timeout: Duration::from_secs(10),
        pool_timeout: Duration::from_secs(10),
        application_name: "augur".to_owned(),
    };
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in url.query_pairs() {
        if seen.iter().any(|k| *k == key) {
            return Err(bad(format!("the option `{key}` is given twice")));
        }
        seen.push(key.to_string());
        let invalid = |expected: &str| {
            bad(format!(
                "invalid value {value:?} for `{key}` (expected {expected})"
            ))
        };
        match &*key {
            "schema" => {
                if !valid_schema(&value) {
                    return Err(invalid(&format!(
                        "lowercase letters, digits and `_`, not starting with a digit, \
                         at most {MAX_SCHEMA_LEN} characters, not starting with `pg_`"
                    )));
                }
                options.schema = value.into_owned();
            }
            "pool_size" => {
                options.pool_size = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| invalid("a number from 1 to 1024"))?;
            }
            "connect_timeout" | "pool_timeout" => {
                let secs: u64 = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=3600).contains(n))
                    .ok_or_else(|| invalid("seconds, from 1 to 3600"))?;
                let slot = if key == "connect_timeout" {
                    &mut options.connect_timeout
                } else {
                    &mut options.pool_timeout
                };
                *slot = Duration::from_secs(secs);
            }
            "application_name" => {
                if value.is_empty() || value.len() > 40 || !value.is_ascii() {
                    return Err(invalid("1 to 40 ASCII characters"));
                }
                options.application_name = value.into_owned();
            }
            "sslmode" => {
                if value != "disable" {
                    return Err(invalid(
                        "`disable`: this backend speaks plain TCP; terminate TLS in a proxy",
                    ));
                }
            }
            other => {
                return Err(bad(format!(
                    "unknown option `{other}` (known: schema, pool_size, connect_timeout, \
                     pool_timeout, application_name, sslmode)"
                )));
            }
        }
    }
    Ok(options)
}

/// A plain PostgreSQL identifier that needs no quoting and leaves room for `_changes`.
fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= MAX_SCHEMA_LEN
        && !name.starts_with("pg_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_part_with_defaults() {
        let o = PostgresOptions::from_url("postgres://postgres@127.0.0.1:5432/test").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.user.as_str(), o.dbname.as_str()),
            ("127.0.0.1", 5432, "postgres", "test")
        );
        assert_eq!(o.password, None);
        assert_eq!(o.schema, "augur");
        assert_eq!(o.pool_size, 16);
        assert_eq!(o.channel(), "augur_changes");

        let o = PostgresOptions::from_url(
            "postgresql://app:p%40ss@db.internal/augur_prod?schema=tenant_1&pool_size=40\
             &connect_timeout=3&pool_timeout=2&application_name=node-a&sslmode=disable",
        )
        .unwrap();
        assert_eq!(o.password.as_deref(), Some("p@ss"));
        assert_eq!((o.host.as_str(), o.port), ("db.internal", 5432));
        assert_eq!((o.schema.as_str(), o.pool_size), ("tenant_1", 40));
        assert_eq!(o.connect_timeout, Duration::from_secs(3));
        assert_eq!(o.pool_timeout, Duration::from_secs(2));
        assert_eq!(o.application_name, "node-a");

        // The database defaults to the user name; a socket directory is a host.
        let o = PostgresOptions::from_url("postgres://me@%2Fvar%2Frun%2Fpostgresql").unwrap();
        assert_eq!(
            (o.host.as_str(), o.dbname.as_str()),
            ("/var/run/postgresql", "me")
        );
        let o = PostgresOptions::from_url("postgres://me@[::1]:6543/d").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("::1", 6543));
    }

    #[test]
    fn rejects_bad_urls_naming_the_problem() {
        for (url, needle) in [
            ("redis://x@h/d", "expected postgres://"),
            ("postgres://h/d", "names no user"),
            ("postgres://u@h/d?cache=1", "unknown option `cache`"),
            ("postgres://u@h/d?schema=Bad", "for `schema`"),
            ("postgres://u@h/d?schema=1a", "for `schema`"),
            ("postgres://u@h/d?schema=pg_x", "for `schema`"),
            ("postgres://u@h/d?pool_size=0", "for `pool_size`"),
            ("postgres://u@h/d?pool_size=x", "for `pool_size`"),
            (
                "postgres://u@h/d?sslmode=require",
                "terminate TLS in a proxy",
            ),
            ("postgres://u@h/d?schema=a&schema=b", "given twice"),
            ("postgres://u@h/d/e", "single database name"),
            ("postgres://u@h/d%zz", "two hex digits"),
        ] {
            let err = PostgresOptions::from_url(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn the_password_never_shows() {
        let url = "postgres://app:hunter2@db:5433/prod?schema=s";
        let o = PostgresOptions::from_url(url).unwrap();
        for shown in [format!("{o:?}"), o.to_string(), o.redacted_url()] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert_eq!(
            o.to_string(),
            "postgres://app:***@db:5433/prod?schema=s&pool_size=16"
        );
        // Nor in the error for a URL that does not parse.
        let err = PostgresOptions::from_url("postgres://app:hunter2@db/prod?bogus=1")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
