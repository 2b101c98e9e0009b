//! [`Config`]: the server's settings, from defaults, an optional TOML file and `AUGUR_*`
//! environment variables (the environment wins), with secrets redacted when printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use augur_core::{CanceledAfterStart, Secret};

use crate::models::ModelConfig;

/// The resolved configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on (`AUGUR_LISTEN`).
    pub listen: SocketAddr,
    /// Where state lives, as a URL (`AUGUR_STORE`): `embedded://<dir>` or `memory://`.
    pub store: String,
    /// The admin token (`AUGUR_ADMIN_TOKEN`). Unset: generated on first start and kept in the
    /// data directory.
    pub admin_token: Option<Secret>,
    /// Base of absolute URLs (`AUGUR_PUBLIC_URL`); defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Where output files and uploads go (`AUGUR_FILES_DIR`): a directory, `file:///dir` or
    /// `s3://bucket/prefix` (see [`crate::backend::FilesUrl`]); defaults to `<data dir>/files`
    /// for the embedded store and to memory for `memory://`.
    pub files_dir: Option<String>,
    /// The largest file `POST /v1/files` accepts, in bytes (`AUGUR_FILE_MAX_BYTES`).
    pub file_max_bytes: u64,
    /// How long an uploaded file is kept (`AUGUR_FILE_EXPIRY`); its download URLs last as
    /// long.
    #[serde(with = "humantime_serde_compat")]
    pub file_expiry: Duration,
    /// The most items one `POST /v1/batches` may create (`AUGUR_BATCH_MAX_ITEMS`).
    pub batch_max_items: usize,
    /// A directory of the operator's workflow blueprints, one `*.toml` file each, stored at
    /// start-up as the admin's and runnable by every account (`AUGUR_WORKFLOWS_DIR`; default:
    /// `workflows/` beside the config file, if there is one).
    pub workflows_dir: Option<PathBuf>,
    /// Jobs run at once by this node's worker (`AUGUR_WORKERS`).
    pub workers: usize,
    /// How long settled predictions keep their input, output and logs (`AUGUR_RETENTION`).
    #[serde(with = "humantime_serde_compat")]
    pub retention: Duration,
    /// Largest request body in bytes (`AUGUR_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Records kept in the read cache at most (`AUGUR_CACHE_ENTRIES`; 0 turns it off); the
    /// cache is bounded by `cache_bytes` too.
    pub cache_entries: usize,
    /// Memory the caches may hold, in bytes (`AUGUR_CACHE_BYTES`; 0 turns them off): three
    /// quarters for the read cache of records (weighed with what they decode into), one
    /// quarter for the rendered JSON of predictions.
    pub cache_bytes: u64,
    /// A list page stops taking items once its JSON reaches this many bytes
    /// (`AUGUR_LIST_PAGE_BYTES`); its `next` URL continues from there.
    pub list_page_bytes: usize,
    /// For a store shared by several nodes, how stale a cached read may be at most
    /// (`AUGUR_CACHE_MAX_STALENESS`; other nodes' writes invalidate entries sooner through
    /// the store's announcements; 0 turns the cache off for shared stores). A store only this
    /// process writes is cached exactly, whatever this says.
    #[serde(with = "humantime_serde_compat")]
    pub cache_max_staleness: Duration,
    /// A second store to read from while the first is unavailable (`AUGUR_STORE_FALLBACK`,
    /// e.g. a read replica). Writes never go there.
    pub store_fallback: Option<String>,
    /// How long a worker's lease on a job lasts before it must be renewed (`AUGUR_LEASE`);
    /// also how long a job waits after its node died before another node takes it.
    #[serde(with = "humantime_serde_compat")]
    pub lease: Duration,
    /// Outputs that are `http(s)` URLs elsewhere (an upstream provider's files) are copied
    /// into the file store; this is the largest such file, in bytes
    /// (`AUGUR_OUTPUT_DOWNLOAD_MAX_BYTES`).
    pub output_download_max_bytes: u64,
    /// How long downloading one such file may take (`AUGUR_OUTPUT_DOWNLOAD_TIMEOUT`).
    #[serde(with = "humantime_serde_compat")]
    pub output_download_timeout: Duration,
    /// Outgoing webhooks (`[webhooks]`).
    pub webhooks: WebhookConfig,
    /// Accounts and credits (`[accounts]`).
    pub accounts: AccountSettings,
    /// Top-ups through a payment provider's webhook (`[payments]`).
    pub payments: PaymentSettings,
    /// Log format: `text` or `json` (`AUGUR_LOG_FORMAT`); the filter is `AUGUR_LOG` or
    /// `RUST_LOG` (default `info`).
    pub log_format: LogFormat,
    /// Where model servers reach this node to call back (webhooks, file uploads)
    /// (`AUGUR_CALLBACK_URL`); defaults to the public URL.
    pub callback_url: Option<String>,
    /// Models served by external model servers (`[[models]]`, see [`crate::models`]), beside
    /// the built-in ones. Last, as TOML wants tables after plain values.
    pub models: Vec<ModelConfig>,
    /// What each product a payment provider sells is worth in credits (`[[credit_packs]]`).
    pub credit_packs: Vec<CreditPack>,
}

/// Settings of accounts and credits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountSettings {
    /// Credits a new account is granted (`AUGUR_SIGNUP_GRANT`; the seeds give 10).
    pub signup_grant: i64,
    /// What a priced prediction canceled after it started costs: `charge` (the time it ran,
    /// as Replicate does; the default) or `refund` (`AUGUR_CANCELED_AFTER_START`).
    pub canceled_after_start: CanceledAfterStart,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            signup_grant: 10,
            canceled_after_start: CanceledAfterStart::Charge,
        }
    }
}

/// Settings of the payment provider's webhook (`POST /v1/payments/webhook`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentSettings {
    /// The provider's Standard Webhooks secret, `whsec_<base64>`
    /// (`AUGUR_PAYMENTS_WEBHOOK_SECRET`). Unset: the route answers 404.
    pub webhook_secret: Option<Secret>,
}

/// A product a payment provider sells, and the credits a paid order of it buys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditPack {
    /// The provider's product id (Polar's `data.product_id`).
    pub product_id: String,
    /// Credits per order.
    pub credits: i64,
}

/// Settings of outgoing webhooks.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// The Standard Webhooks signing secret, `whsec_<base64>` (`AUGUR_WEBHOOK_SECRET`). Unset:
    /// derived from the admin token, so every node sharing a store signs alike.
    pub secret: Option<Secret>,
    /// How long one delivery attempt may take (`AUGUR_WEBHOOK_TIMEOUT`).
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// How long a message is retried before it is given up (`AUGUR_WEBHOOK_MAX_AGE`).
    #[serde(with = "humantime_serde_compat")]
    pub max_age: Duration,
    /// Deliveries in flight at once per node (`AUGUR_WEBHOOK_CONCURRENCY`).
    pub concurrency: usize,
    /// The first retry waits up to this long; each later one up to twice the one before
    /// (full jitter) (`AUGUR_WEBHOOK_BACKOFF_BASE`).
    #[serde(with = "humantime_serde_compat")]
    pub backoff_base: Duration,
    /// The longest wait between two attempts (`AUGUR_WEBHOOK_BACKOFF_MAX`).
    #[serde(with = "humantime_serde_compat")]
    pub backoff_max: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            secret: None,
            timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(3 * 24 * 3600),
            concurrency: 32,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
        }
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: "embedded://./augur-data".into(),
            admin_token: None,
            public_url: None,
            files_dir: None,
            file_max_bytes: 100 << 20,
            batch_max_items: augur_core::batch::DEFAULT_MAX_ITEMS,
            workflows_dir: None,
            file_expiry: Duration::from_secs(24 * 3600),
            workers: 64,
            retention: Duration::from_secs(3600),
            max_body_bytes: 1 << 20,
            cache_entries: 10_000,
            cache_bytes: 128 << 20,
            list_page_bytes: 4 << 20,
            cache_max_staleness: Duration::from_secs(5),
            store_fallback: None,
            lease: Duration::from_secs(30),
            output_download_max_bytes: augur_engine::UrlImportLimits::default().max_bytes,
            output_download_timeout: augur_engine::UrlImportLimits::default().timeout,
            webhooks: WebhookConfig::default(),
            accounts: AccountSettings::default(),
            payments: PaymentSettings::default(),
            log_format: LogFormat::Text,
            callback_url: None,
            models: Vec::new(),
            credit_packs: Vec::new(),
        }
    }
}

/// `Duration` as human text (`1h`, `90s`) in TOML and in printed configuration.
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Loads the configuration: defaults, then the TOML file (`path`, or `AUGUR_CONFIG`), then
    /// the environment.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        Self::load_from(path, |key| std::env::var(key).ok())
    }

    /// [`Config::load`] with an explicit environment (for tests).
    pub fn load_from(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let file = path
            .map(Path::to_path_buf)
            .or_else(|| env("AUGUR_CONFIG").map(PathBuf::from));
        let mut config = match &file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read config file {}", file.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid config file {}", file.display()))?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        if config.workflows_dir.is_none()
            && let Some(dir) = file.as_deref().and_then(Path::parent)
        {
            let beside = dir.join("workflows");
            if beside.is_dir() {
                config.workflows_dir = Some(beside);
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<()> {
        let var = |key: &str| env(key).filter(|v| !v.trim().is_empty());
        if let Some(v) = var("AUGUR_LISTEN") {
            self.listen = v
                .parse()
                .with_context(|| format!("AUGUR_LISTEN must be host:port, got {v:?}"))?;
        }
        if let Some(v) = var("AUGUR_STORE") {
            self.store = v;
        }
        if let Some(v) = var("AUGUR_ADMIN_TOKEN") {
            self.admin_token = Some(Secret::new(v));
        }
        if let Some(v) = var("AUGUR_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        if let Some(v) = var("AUGUR_FILES_DIR") {
            self.files_dir = Some(v);
        }
        if let Some(v) = var("AUGUR_FILE_MAX_BYTES") {
            self.file_max_bytes = v
                .parse()
                .with_context(|| format!("AUGUR_FILE_MAX_BYTES must be a number, got {v:?}"))?;
        }
        if let Some(v) = var("AUGUR_WORKFLOWS_DIR") {
            self.workflows_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = var("AUGUR_BATCH_MAX_ITEMS") {
            self.batch_max_items = v
                .parse()
                .with_context(|| format!("AUGUR_BATCH_MAX_ITEMS must be a number, got {v:?}"))?;
        }
        if let Some(v) = var("AUGUR_FILE_EXPIRY") {
            self.file_expiry = humantime::parse_duration(&v).with_context(|| {
                format!("AUGUR_FILE_EXPIRY must be a duration such as 24h, got {v:?}")
            })?;
        }
        if let Some(v) = var("AUGUR_WORKERS") {
            self.workers = v
                .parse()
                .with_context(|| format!("AUGUR_WORKERS must be a number, got {v:?}"))?;
        }
        if let Some(v) = var("AUGUR_RETENTION") {
            self.retention = humantime::parse_duration(&v).with_context(|| {
                format!("AUGUR_RETENTION must be a duration such as 1h, got {v:?}")
            })?;
        }
        if let Some(v) = var("AUGUR_MAX_BODY_BYTES") {
            self.max_body_bytes = v
                .parse()
                .with_context(|| format!("AUGUR_MAX_BODY_BYTES must be a number, got {v:?}"))?;
        }
        if let Some(v) = var("AUGUR_CACHE_ENTRIES") {
            self.cache_entries = v
                .parse()
                .with_context(|| format!("AUGUR_CACHE_ENTRIES must be a number, got {v:?}"))?;
        }
        if let Some(v) = var("AUGUR_CACHE_BYTES") {
            self.cache_bytes = v
                .parse()
                .with_context(|| format!("AUGUR_CACHE_BYTES must be a number, got {v:?}"))?;
        }
        if let Some(v) = var("AUGUR_LIST_PAGE_BYTES") {
            self.list_page_bytes = v
                .parse()
                .with_context(|| format!("AUGUR_LIST_PAGE_BYTES must be a number, got {v:?}"))?;
        }
        if let Some(v) = var("AUGUR_CACHE_MAX_STALENESS") {
            self.cache_max_staleness = humantime::parse_duration(&v).with_context(|| {
                format!("AUGUR_CACHE_MAX_STALENESS must be a duration such as 5s, got {v:?}")
            })?;
        }
        if let Some(v) = var("AUGUR_STORE_FALLBACK") {
            self.store_fallback = Some(v);
        }
        if let Some(v) = var("AUGUR_LEASE") {
            self.lease = humantime::parse_duration(&v).with_context(|| {
                format!("AUGUR_LEASE must be a duration such as 30s, got {v:?}")
            })?;
        }
        if let Some(v) = var("AUGUR_OUTPUT_DOWNLOAD_MAX_BYTES") {
            self.output_download_max_bytes = v.parse().with_context(|| {
                format!("AUGUR_OUTPUT_DOWNLOAD_MAX_BYTES must be a number, got {v:?}")
            })?;
        }
        if let Some(v) = var("AUGUR_OUTPUT_DOWNLOAD_TIMEOUT") {
            self.output_download_timeout = humantime::parse_duration(&v).with_context(|| {
                format!("AUGUR_OUTPUT_DOWNLOAD_TIMEOUT must be a duration such as 60s, got {v:?}")
            })?;
        }
        if let Some(v) = var("AUGUR_WEBHOOK_SECRET") {
            self.webhooks.secret = Some(Secret::new(v));
        }
        if let Some(v) = var("AUGUR_WEBHOOK_TIMEOUT") {
            self.webhooks.timeout = humantime::parse_duration(&v).with_context(|| {
                format!("AUGUR_WEBHOOK_TIMEOUT must be a duration such as 10s, got {v:?}")
            })?;
        }
        if let Some(v) = var("AUGUR_WEBHOOK_MAX_AGE") {
            self.webhooks.max_age = humantime::parse_duration(&v).with_context(|| {
                format!("AUGUR_WEBHOOK_MAX_AGE must be a duration such as 3days, got {v:?}")
            })?;
        }
        for (key, field) in [
            (
                "AUGUR_WEBHOOK_BACKOFF_BASE",
                &mut self.webhooks.backoff_base,
            ),
            ("AUGUR_WEBHOOK_BACKOFF_MAX", &mut self.webhooks.backoff_max),
        ] {
            if let Some(v) = var(key) {
                *field = humantime::parse_duration(&v)
                    .with_context(|| format!("{key} must be a duration such as 5s, got {v:?}"))?;
            }
        }
        if let Some(v) = var("AUGUR_WEBHOOK_CONCURRENCY") {
            self.webhooks.concurrency = v.parse().with_context(|| {
                format!("AUGUR_WEBHOOK_CONCURRENCY must be a number, got {v:?}")
            })?;
        }
        if let Some(v) = var("AUGUR_SIGNUP_GRANT") {
            self.accounts.signup_grant = v
                .parse()
                .with_context(|| format!("AUGUR_SIGNUP_GRANT must be a number, got {v:?}"))?;
        }
        if let Some(v) = var("AUGUR_CANCELED_AFTER_START") {
            self.accounts.canceled_after_start = match v.as_str() {
                "charge" => CanceledAfterStart::Charge,
                "refund" => CanceledAfterStart::Refund,
                _ => bail!("AUGUR_CANCELED_AFTER_START must be charge or refund, got {v:?}"),
            };
        }
        if let Some(v) = var("AUGUR_PAYMENTS_WEBHOOK_SECRET") {
            self.payments.webhook_secret = Some(Secret::new(v));
        }
        if let Some(v) = var("AUGUR_CALLBACK_URL") {
            self.callback_url = Some(v);
        }
        if let Some(v) = var("AUGUR_LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => bail!("AUGUR_LOG_FORMAT must be text or json, got {v:?}"),
            };
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        if self.workers == 0 {
            bail!("workers must be at least 1");
        }
        if self.max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024");
        }
        if self.list_page_bytes < 1024 {
            bail!("list_page_bytes must be at least 1024");
        }
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url)
                .with_context(|| format!("public_url must be an absolute URL, got {url:?}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("public_url must be http or https, got {url:?}");
            }
        }
        if let Some(token) = &self.admin_token
            && token.expose().len() < 16
        {
            bail!("the admin token must be at least 16 characters");
        }
        crate::backend::StoreUrl::parse(&self.store)?;
        if let Some(files) = &self.files_dir {
            crate::backend::FilesUrl::parse(files).context("files_dir (AUGUR_FILES_DIR)")?;
        }
        if let Some(fallback) = &self.store_fallback {
            crate::backend::StoreUrl::parse(fallback)
                .context("store_fallback (AUGUR_STORE_FALLBACK)")?;
        }
        if !(1..=100_000).contains(&self.batch_max_items) {
            bail!("batch_max_items must be between 1 and 100000");
        }
        if self.file_max_bytes == 0 {
            bail!("file_max_bytes must be at least 1");
        }
        if self.file_expiry < Duration::from_secs(1) {
            bail!("file_expiry must be at least 1s");
        }
        if self.lease < Duration::from_secs(1) {
            bail!("lease must be at least 1s");
        }
        if self.output_download_max_bytes == 0 {
            bail!("output_download_max_bytes must be at least 1");
        }
        if self.output_download_timeout < Duration::from_millis(100) {
            bail!("output_download_timeout must be at least 100ms");
        }
        if let Some(url) = &self.callback_url {
            let parsed = url::Url::parse(url)
                .with_context(|| format!("callback_url must be an absolute URL, got {url:?}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("callback_url must be http or https, got {url:?}");
            }
        }
        crate::models::validate(&self.models)?;
        if let Some(secret) = &self.webhooks.secret {
            augur_webhooks::WebhookSecret::parse(secret.expose())
                .map_err(|e| anyhow::anyhow!("webhooks.secret (AUGUR_WEBHOOK_SECRET): {e}"))?;
        }
        if self.webhooks.timeout < Duration::from_millis(100) {
            bail!("webhooks.timeout must be at least 100ms");
        }
        if self.webhooks.backoff_base.is_zero()
            || self.webhooks.backoff_max < self.webhooks.backoff_base
        {
            bail!("webhooks.backoff_base must be above zero and at most webhooks.backoff_max");
        }
        if self.webhooks.concurrency == 0 {
            bail!("webhooks.concurrency must be at least 1");
        }
        if self.accounts.signup_grant < 0 {
            bail!("accounts.signup_grant must not be negative");
        }
        if let Some(secret) = &self.payments.webhook_secret {
            augur_webhooks::WebhookSecret::parse_provider(secret.expose()).map_err(|e| {
                anyhow::anyhow!("payments.webhook_secret (AUGUR_PAYMENTS_WEBHOOK_SECRET): {e}")
            })?;
        }
        let mut products = std::collections::HashSet::new();
        for (i, pack) in self.credit_packs.iter().enumerate() {
            if pack.product_id.trim().is_empty() {
                bail!("credit_packs[{i}]: product_id must not be empty");
            }
            if pack.credits <= 0 {
                bail!(
                    "credit_packs[{i}] ({:?}): credits must be positive",
                    pack.product_id
                );
            }
            if !products.insert(pack.product_id.as_str()) {
                bail!(
                    "credit_packs[{i}]: the product {:?} is listed twice",
                    pack.product_id
                );
            }
        }
        Ok(())
    }

    /// The public URL for a server bound to `bound`.
    pub fn public_url_for(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = if bound.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else if bound.is_ipv6() {
                    format!("[{}]", bound.ip())
                } else {
                    bound.ip().to_string()
                };
                format!("http://{host}:{}", bound.port())
            }
        }
    }

    /// The configuration as TOML, secrets redacted (`augur config check`).
    pub fn to_redacted_toml(&self) -> Result<String> {
        let mut printable = self.clone();
        if printable.webhooks.secret.is_some() {
            printable.webhooks.secret = Some(Secret::new("<redacted>"));
        }
        if printable.admin_token.is_some() {
            printable.admin_token = Some(Secret::new("<redacted>"));
        }
        if printable.payments.webhook_secret.is_some() {
            printable.payments.webhook_secret = Some(Secret::new("<redacted>"));
        }
        for model in &mut printable.models {
            if model.token.is_some() {
                model.token = Some(Secret::new("<redacted>"));
            }
        }
        printable.store = crate::backend::redact_url(&printable.store);
        printable.store_fallback = printable
            .store_fallback
            .as_deref()
            .map(crate::backend::redact_url);
        Ok(toml::to_string_pretty(&printable)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_are_the_embedded_store_on_localhost() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.store, "embedded://./augur-data");
        assert_eq!(c.public_url_for(c.listen), "http://127.0.0.1:8080");
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("augur.toml");
        std::fs::write(
            &file,
            "store = \"memory://\"\nworkers = 4\nretention = \"2h\"\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&file), env(&[("AUGUR_WORKERS", "8")])).unwrap();
        assert_eq!(c.store, "memory://");
        assert_eq!(c.workers, 8);
        assert_eq!(c.retention, Duration::from_secs(7200));
    }

    #[test]
    fn mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("augur.toml");
        std::fs::write(&file, "stroe = \"memory://\"\n").unwrap();
        let err = format!(
            "{:#}",
            Config::load_from(Some(&file), env(&[])).unwrap_err()
        );
        assert!(err.contains("stroe"), "{err}");
        for (key, value, needle) in [
            ("AUGUR_LISTEN", "localhost", "AUGUR_LISTEN"),
            ("AUGUR_WORKERS", "many", "AUGUR_WORKERS"),
            ("AUGUR_STORE", "mysql://x", "mysql"),
            ("AUGUR_PUBLIC_URL", "not a url", "public_url"),
            ("AUGUR_ADMIN_TOKEN", "short", "16 characters"),
            ("AUGUR_RETENTION", "forever", "AUGUR_RETENTION"),
        ] {
            let err = format!(
                "{:#}",
                Config::load_from(None, env(&[(key, value)])).unwrap_err()
            );
            assert!(err.contains(needle), "{key}: {err}");
        }
    }

    #[test]
    fn prices_packs_and_credit_settings_parse_and_mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("augur.toml");
        std::fs::write(
            &file,
            r#"
[accounts]
signup_grant = 25
canceled_after_start = "refund"

[[models]]
name = "augur/demo-image"
price = { per_second = 2, max_seconds = 60 }

[[models]]
name = "augur/echo"
price = { per_prediction = 1 }

[[credit_packs]]
product_id = "prod_small"
credits = 100
"#,
        )
        .unwrap();
        let c = Config::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!(c.accounts.signup_grant, 25);
        assert_eq!(c.accounts.canceled_after_start, CanceledAfterStart::Refund);
        assert_eq!(c.credit_packs[0].credits, 100);
        assert_eq!(
            c.models[0].price,
            Some(augur_core::Price::PerSecond {
                per_second: 2,
                max_seconds: 60
            })
        );
        for (text, needle) in [
            (
                "[[models]]\nname = \"augur/echo\"\nprice = { per_prediction = -1 }\n",
                "must not be negative",
            ),
            (
                "[[models]]\nname = \"augur/echo\"\nprice = { per_second = 1, max_seconds = 0 }\n",
                "max_seconds",
            ),
            (
                "[[models]]\nname = \"augur/echo\"\nurl = \"http://127.0.0.1:1\"\nprice = { per_prediction = 1 }\n",
                "only price",
            ),
            (
                "[[models]]\nname = \"acme/x\"\nprice = { per_prediction = 1 }\n",
                "provider is required",
            ),
            (
                "[[credit_packs]]\nproduct_id = \"p\"\ncredits = 0\n",
                "credits must be positive",
            ),
            (
                "[[credit_packs]]\nproduct_id = \"p\"\ncredits = 1\n[[credit_packs]]\nproduct_id = \"p\"\ncredits = 2\n",
                "listed twice",
            ),
            ("[accounts]\nsignup_grant = -1\n", "signup_grant"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = format!(
                "{:#}",
                Config::load_from(Some(&file), env(&[])).unwrap_err()
            );
            assert!(err.contains(needle), "{text}: {err}");
        }
        let err = format!(
            "{:#}",
            Config::load_from(None, env(&[("AUGUR_PAYMENTS_WEBHOOK_SECRET", "nope")])).unwrap_err()
        );
        assert!(err.contains("AUGUR_PAYMENTS_WEBHOOK_SECRET"), "{err}");
    }

    #[test]
    fn printed_configuration_hides_secrets() {
        let c = Config::load_from(
            None,
            env(&[
                ("AUGUR_ADMIN_TOKEN", "super-secret-token-123"),
                (
                    "AUGUR_PAYMENTS_WEBHOOK_SECRET",
                    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                ),
            ]),
        )
        .unwrap();
        let text = c.to_redacted_toml().unwrap();
        assert!(!text.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{text}");
        assert!(!format!("{c:?}").contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        assert!(!text.contains("super-secret-token-123"), "{text}");
        assert!(text.contains("<redacted>"));
        assert!(!format!("{c:?}").contains("super-secret-token-123"));
    }
}
