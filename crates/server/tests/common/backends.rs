//! The shared backends the tests run against, each in a fresh namespace, or a skip (a failure
//! with `AUGUR_STORE_TESTS_REQUIRED=1`) when its server is not configured.

use augur_core::PredictionId;

/// A backend under test: a name for messages and a store URL in a fresh namespace.
#[derive(Clone, Debug)]
pub struct Backend {
    pub name: &'static str,
    pub url: String,
}

fn namespace() -> String {
    format!("t{}", PredictionId::generate())
}

fn with_option(base: &str, key: &str, value: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{key}={value}")
}

/// The Redis backend (`AUGUR_TEST_REDIS_URL`), under a fresh key prefix.
pub fn redis() -> Option<Backend> {
    let base = augur_store_conformance::skip_unless_configured("AUGUR_TEST_REDIS_URL")?;
    Some(Backend {
        name: "redis",
        url: with_option(&base, "prefix", &format!("{}:", namespace())),
    })
}

/// The Redis Cluster backend (`AUGUR_TEST_REDIS_CLUSTER_URL`), under a fresh key prefix.
pub fn redis_cluster() -> Option<Backend> {
    let base = augur_store_conformance::skip_unless_configured("AUGUR_TEST_REDIS_CLUSTER_URL")?;
    Some(Backend {
        name: "redis-cluster",
        url: with_option(&base, "prefix", &format!("{}:", namespace())),
    })
}

/// The PostgreSQL backend (`AUGUR_TEST_POSTGRES_URL`), in a fresh schema.
pub fn postgres() -> Option<Backend> {
    let base = augur_store_conformance::skip_unless_configured("AUGUR_TEST_POSTGRES_URL")?;
    Some(Backend {
        name: "postgres",
        url: with_option(&base, "schema", &namespace()),
    })
}

/// The Cloudflare backend (`AUGUR_TEST_CLOUDFLARE_URL`, a running Worker), in a fresh
/// namespace (the URL's `namespace` option replaced).
pub fn cloudflare() -> Option<Backend> {
    let base = augur_store_conformance::skip_unless_configured("AUGUR_TEST_CLOUDFLARE_URL")?;
    let (main, query) = base.split_once('?').unwrap_or((&base, ""));
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("namespace="))
        .collect();
    let main = if rest.is_empty() {
        main.to_owned()
    } else {
        format!("{main}?{}", rest.join("&"))
    };
    Some(Backend {
        name: "cloudflare",
        url: with_option(&main, "namespace", &namespace()),
    })
}

/// A store URL with its secrets masked, for messages.
pub fn redact(url: &str) -> String {
    augur_core::redact::url(url)
}
