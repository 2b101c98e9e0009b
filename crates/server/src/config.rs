//! [`Config`]: the server's settings, from defaults, an optional TOML file and `AUGUR_*`
//! environment variables (the environment wins), with secrets redacted when printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use augur_core::{CanceledAfterStart, Secret};

use crate::models::ModelConfig;

/// The resolved configuration. `Debug` masks its secrets, as `augur config check` does.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The named profile (`[profiles.NAME]` of the file) laid over the file's base settings:
    /// `--profile` or `AUGUR_PROFILE`. Shown by `augur config check`; not itself a setting.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
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
    /// Serve the dashboard's assets from this directory, read on every request, instead of
    /// the copies built into the binary (`AUGUR_DASHBOARD_DIR`; for working on the pages:
    /// edit, reload, no rebuild).
    pub dashboard_dir: Option<PathBuf>,
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
    /// Retryable errors in a row from the store that make a node with a fallback store stop
    /// asking it for a while (`AUGUR_STORE_BREAKER_FAILURES`).
    pub store_breaker_failures: u32,
    /// How long it stops asking (reads go to the fallback, writes fail at once with 503)
    /// before one probe request tests the store again (`AUGUR_STORE_BREAKER_COOLDOWN`).
    #[serde(with = "humantime_serde_compat")]
    pub store_breaker_cooldown: Duration,
    /// How long the tombstone of an expired prediction (which keeps its id, owner and
    /// status) is kept after its input, output and logs were removed, before it is deleted
    /// too (`AUGUR_TOMBSTONE_RETENTION`).
    #[serde(with = "humantime_serde_compat")]
    pub tombstone_retention: Duration,
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
    /// CIDRs that outgoing requests users steer (webhooks, output URL copies) may reach
    /// although they are not public addresses, e.g. `["127.0.0.0/8", "10.1.0.0/16"]`
    /// (`AUGUR_OUTBOUND_ALLOW`, comma-separated; see [`augur_outbound::Policy`]).
    #[serde(deserialize_with = "list_or_commas")]
    pub outbound_allow: Vec<String>,
    /// Outgoing webhooks (`[webhooks]`).
    pub webhooks: WebhookConfig,
    /// Connection timeouts and cap, the request timeout, the operations endpoints (`[http]`).
    pub http: crate::http::HttpConfig,
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
            profile: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: "embedded://./augur-data".into(),
            admin_token: None,
            public_url: None,
            files_dir: None,
            file_max_bytes: 100 << 20,
            batch_max_items: augur_core::batch::DEFAULT_MAX_ITEMS,
            workflows_dir: None,
            dashboard_dir: None,
            file_expiry: Duration::from_secs(24 * 3600),
            workers: 64,
            retention: Duration::from_secs(3600),
            max_body_bytes: 1 << 20,
            cache_entries: 10_000,
            cache_bytes: 128 << 20,
            list_page_bytes: 4 << 20,
            cache_max_staleness: Duration::from_secs(5),
            store_fallback: None,
            store_breaker_failures: 3,
            store_breaker_cooldown: Duration::from_secs(5),
            tombstone_retention: Duration::from_secs(30 * 24 * 3600),
            lease: Duration::from_secs(30),
            output_download_max_bytes: augur_engine::UrlImportLimits::default().max_bytes,
            output_download_timeout: augur_engine::UrlImportLimits::default().timeout,
            outbound_allow: Vec::new(),
            webhooks: WebhookConfig::default(),
            http: crate::http::HttpConfig::default(),
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

/// A list of strings, or one comma-separated string (as in the environment).
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match Form::deserialize(d)? {
        Form::List(list) => list,
        Form::Commas(text) => split_commas(&text),
    })
}

fn split_commas(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Named profiles: `[profiles.NAME]` tables in the config file, each laid over the file's base
/// settings when selected (`--profile NAME` or `AUGUR_PROFILE=NAME`); the environment still
/// wins over both. Tables merge key by key (`[profiles.prod.webhooks] timeout = "30s"` keeps
/// the base's other webhook settings); any other value, arrays such as `[[models]]`
/// included, replaces the base's.
mod profiles {
    use anyhow::{Result, bail};
    use toml::{Table, Value};

    use super::Config;

    /// The configuration in `text` with `profile` applied.
    pub(super) fn parse(text: &str, profile: Option<&str>) -> Result<Config> {
        let mut table: Table = toml::from_str(text).map_err(|e| located(text, &e))?;
        let profiles = match table.remove("profiles") {
            None => Table::new(),
            Some(Value::Table(profiles)) => profiles,
            Some(_) => bail!("profiles must hold [profiles.NAME] tables"),
        };
        let Some(name) = profile else {
            if profiles.is_empty() {
                // Parsed from the text, so that errors carry their line.
                return toml::from_str(text).map_err(|e| located(text, &e));
            }
            return Ok(Value::Table(table).try_into()?);
        };
        let overlay = match profiles.get(name) {
            Some(Value::Table(overlay)) => overlay.clone(),
            Some(_) => bail!("profiles.{name} must be a table ([profiles.{name}])"),
            None if profiles.is_empty() => bail!(
                "unknown profile {name:?} (--profile or AUGUR_PROFILE): the file defines no [profiles.NAME] tables"
            ),
            None => bail!(
                "unknown profile {name:?} (--profile or AUGUR_PROFILE): the file defines {}",
                profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        merge(&mut table, overlay);
        Value::Table(table)
            .try_into()
            .map_err(|e| anyhow::anyhow!("with the profile {name:?}: {e}"))
    }

    fn merge(base: &mut Table, overlay: Table) {
        for (key, value) in overlay {
            match (base.get_mut(&key), value) {
                (Some(Value::Table(base)), Value::Table(overlay)) => merge(base, overlay),
                (_, value) => {
                    base.insert(key, value);
                }
            }
        }
    }

    /// A TOML error as `line L, column C: what`, without the quoted source line (it may
    /// hold a secret).
    fn located(text: &str, error: &toml::de::Error) -> anyhow::Error {
        let message = error.message().trim();
        match error.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                anyhow::anyhow!("line {line}, column {column}: {message}")
            }
            None => anyhow::anyhow!("{message}"),
        }
    }
}

impl Config {
    /// Where outgoing requests users steer may go: public addresses and `outbound_allow`.
    pub fn destinations(&self) -> Result<augur_outbound::Policy> {
        augur_outbound::Policy::from_entries(&self.outbound_allow)
            .map_err(|e| anyhow::anyhow!("outbound_allow (AUGUR_OUTBOUND_ALLOW): {e}"))
    }

    /// Loads the configuration: defaults, then the TOML file (`path`, or `AUGUR_CONFIG`) with
    /// the named profile (`profile`, or `AUGUR_PROFILE`) laid over it, then the environment.
    pub fn load(path: Option<&Path>, profile: Option<&str>) -> Result<Self> {
        Self::load_profile_from(path, profile, |key| std::env::var(key).ok())
    }

    /// [`Config::load`] with an explicit environment (for tests).
    pub fn load_from(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Self::load_profile_from(path, None, env)
    }

    /// [`Config::load`] with an explicit environment; `profile` wins over `AUGUR_PROFILE`.
    pub fn load_profile_from(
        path: Option<&Path>,
        profile: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let file = path
            .map(Path::to_path_buf)
            .or_else(|| env("AUGUR_CONFIG").map(PathBuf::from));
        let profile = profile
            .map(str::to_owned)
            .or_else(|| env("AUGUR_PROFILE"))
            .filter(|p| !p.trim().is_empty());
        let mut config = match &file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read config file {}", file.display()))?;
                profiles::parse(&text, profile.as_deref())
                    .with_context(|| format!("invalid config file {}", file.display()))?
            }
            None => {
                if let Some(profile) = &profile {
                    bail!(
                        "the profile {profile:?} is selected (--profile or AUGUR_PROFILE) but there is no config file to define it; name one with --config or AUGUR_CONFIG"
                    );
                }
                Config::default()
            }
        };
        config.profile = profile;
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
        if let Some(v) = var("AUGUR_DASHBOARD_DIR") {
            self.dashboard_dir = Some(PathBuf::from(v));
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
        if let Some(v) = var("AUGUR_STORE_BREAKER_FAILURES") {
            self.store_breaker_failures = v.parse().with_context(|| {
                format!("AUGUR_STORE_BREAKER_FAILURES must be a number, got {v:?}")
            })?;
        }
        if let Some(v) = var("AUGUR_STORE_BREAKER_COOLDOWN") {
            self.store_breaker_cooldown = humantime::parse_duration(&v).with_context(|| {
                format!("AUGUR_STORE_BREAKER_COOLDOWN must be a duration such as 5s, got {v:?}")
            })?;
        }
        if let Some(v) = var("AUGUR_TOMBSTONE_RETENTION") {
            self.tombstone_retention = humantime::parse_duration(&v).with_context(|| {
                format!("AUGUR_TOMBSTONE_RETENTION must be a duration such as 30days, got {v:?}")
            })?;
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
        if let Some(v) = var("AUGUR_OUTBOUND_ALLOW") {
            self.outbound_allow = split_commas(&v);
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
        self.http.apply_env(var)?;
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
            let shown = augur_core::redact::url(url);
            let parsed = url::Url::parse(url)
                .with_context(|| format!("public_url must be an absolute URL, got {shown:?}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("public_url must be http or https, got {shown:?}");
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
        self.destinations()?;
        if let Some(url) = &self.callback_url {
            let shown = augur_core::redact::url(url);
            let parsed = url::Url::parse(url)
                .with_context(|| format!("callback_url must be an absolute URL, got {shown:?}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("callback_url must be http or https, got {shown:?}");
            }
        }
        crate::models::validate(&self.models)?;
        self.http.validate()?;
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
        Ok(toml::to_string_pretty(&self.redacted())?)
    }

    /// A copy with every secret masked: secrets replaced, every URL and command through the
    /// one redaction (`augur_core::redact`). What `config check` prints and `Debug` shows.
    fn redacted(&self) -> Config {
        let mut printable = self.clone();
        for secret in [
            &mut printable.webhooks.secret,
            &mut printable.admin_token,
            &mut printable.payments.webhook_secret,
            &mut printable.http.ops_token,
        ]
        .into_iter()
        .flatten()
        {
            *secret = Secret::new("<redacted>");
        }
        let url = augur_core::redact::url;
        printable.store = url(&printable.store);
        for text in [
            &mut printable.store_fallback,
            &mut printable.files_dir,
            &mut printable.public_url,
            &mut printable.callback_url,
        ]
        .into_iter()
        .flatten()
        {
            *text = url(text);
        }
        for model in &mut printable.models {
            model.redact();
        }
        printable
    }
}

/// The redacted configuration ([`Config::to_redacted_toml`]'s), as JSON.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string(&self.redacted()) {
            Ok(json) => write!(f, "Config {json}"),
            Err(_) => f.write_str("Config { .. }"),
        }
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
    fn the_outbound_allowlist_comes_from_the_environment_or_the_file() {
        let c = Config::load_from(
            None,
            env(&[("AUGUR_OUTBOUND_ALLOW", " 127.0.0.0/8, 10.1.0.0/16 ,::1")]),
        )
        .unwrap();
        assert_eq!(c.outbound_allow, ["127.0.0.0/8", "10.1.0.0/16", "::1"]);
        assert_eq!(
            c.destinations().unwrap().allowlist(),
            ["10.1.0.0/16", "127.0.0.0/8", "::1/128"]
        );
        assert!(
            c.to_redacted_toml()
                .unwrap()
                .contains("outbound_allow = [\n    \"127.0.0.0/8\",")
        );
        assert!(
            Config::load_from(None, env(&[]))
                .unwrap()
                .outbound_allow
                .is_empty()
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("augur.toml");
        for text in [
            "outbound_allow = [\"10.1.0.0/16\", \"fd00::/8\"]\n",
            "outbound_allow = \"10.1.0.0/16,fd00::/8\"\n",
        ] {
            std::fs::write(&file, text).unwrap();
            let c = Config::load_from(Some(&file), env(&[])).unwrap();
            assert_eq!(c.outbound_allow, ["10.1.0.0/16", "fd00::/8"], "{text}");
        }
        for bad in ["10.0.0.0/33", "127.0.0.0/8,intranet"] {
            let err = format!(
                "{:#}",
                Config::load_from(None, env(&[("AUGUR_OUTBOUND_ALLOW", bad)])).unwrap_err()
            );
            assert!(
                err.contains("AUGUR_OUTBOUND_ALLOW") && err.contains("is not a CIDR"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn profiles_overlay_the_file_and_the_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("augur.toml");
        std::fs::write(
            &file,
            r#"
store = "memory://"
workers = 4
[webhooks]
timeout = "5s"
concurrency = 8

[profiles.prod]
workers = 32
webhooks = { timeout = "30s" }

[profiles.dev.accounts]
signup_grant = 1000
"#,
        )
        .unwrap();
        let base = Config::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!((base.workers, base.profile.as_deref()), (4, None));
        assert_eq!(base.webhooks.timeout, Duration::from_secs(5));

        let prod = Config::load_from(Some(&file), env(&[("AUGUR_PROFILE", "prod")])).unwrap();
        assert_eq!(prod.profile.as_deref(), Some("prod"));
        assert_eq!(prod.workers, 32);
        // Tables merge key by key.
        assert_eq!(prod.webhooks.timeout, Duration::from_secs(30));
        assert_eq!(prod.webhooks.concurrency, 8);
        assert_eq!(prod.store, "memory://");
        assert!(
            prod.to_redacted_toml()
                .unwrap()
                .contains("profile = \"prod\"")
        );

        // --profile wins over AUGUR_PROFILE; the environment wins over the profile.
        let dev = Config::load_profile_from(
            Some(&file),
            Some("dev"),
            env(&[("AUGUR_PROFILE", "prod"), ("AUGUR_SIGNUP_GRANT", "7")]),
        )
        .unwrap();
        assert_eq!((dev.workers, dev.accounts.signup_grant), (4, 7));

        for (profile, needle) in [
            ("staging", "unknown profile \"staging\""),
            ("staging", "the file defines dev, prod"),
        ] {
            let err = format!(
                "{:#}",
                Config::load_profile_from(Some(&file), Some(profile), env(&[])).unwrap_err()
            );
            assert!(err.contains(needle), "{err}");
        }
        let err = format!(
            "{:#}",
            Config::load_from(None, env(&[("AUGUR_PROFILE", "prod")])).unwrap_err()
        );
        assert!(err.contains("no config file"), "{err}");
        std::fs::write(&file, "workers = 2\n").unwrap();
        let err = format!(
            "{:#}",
            Config::load_from(Some(&file), env(&[("AUGUR_PROFILE", "prod")])).unwrap_err()
        );
        assert!(err.contains("defines no [profiles.NAME]"), "{err}");
        // A mistake inside a profile is named.
        std::fs::write(&file, "[profiles.prod]\nwrokers = 2\n").unwrap();
        let err = format!(
            "{:#}",
            Config::load_from(Some(&file), env(&[("AUGUR_PROFILE", "prod")])).unwrap_err()
        );
        assert!(err.contains("wrokers") && err.contains("prod"), "{err}");
    }

    #[test]
    fn toml_errors_name_the_line_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("augur.toml");
        std::fs::write(
            &file,
            "workers = 2\nstroe = \"postgres://augur:hunter2@db/augur\"\n",
        )
        .unwrap();
        let err = format!(
            "{:#}",
            Config::load_from(Some(&file), env(&[])).unwrap_err()
        );
        assert!(
            err.contains("line 2, column 1") && err.contains("stroe"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn printed_configuration_masks_every_url_and_command() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("augur.toml");
        std::fs::write(
            &file,
            r#"
callback_url = "http://cb:cbpass@127.0.0.1:8080"
public_url = "https://pub:pubpass@augur.test"

[[models]]
name = "acme/tool"
provider = "command"
command = ["/usr/bin/env", "API_KEY=envpass", "sh", "-c", "true", "--token", "argpass"]

[[models]]
name = "acme/up"
provider = "replicate"
url = "http://user:modelpass@127.0.0.1:5055"
model = "a/b"
token = "r8_tokenpass"
"#,
        )
        .unwrap();
        let c = Config::load_from(
            Some(&file),
            env(&[
                ("AUGUR_STORE", "memory://"),
                (
                    "AUGUR_STORE_FALLBACK",
                    "embedded://./d?sync=full&password=fallbackpass",
                ),
                ("AUGUR_FILES_DIR", "/srv/files"),
            ]),
        )
        .unwrap();
        let text = c.to_redacted_toml().unwrap();
        for secret in [
            "cbpass",
            "pubpass",
            "envpass",
            "argpass",
            "modelpass",
            "tokenpass",
            "fallbackpass",
        ] {
            assert!(!text.contains(secret), "{secret} in\n{text}");
            assert!(!format!("{c:?}").contains(secret), "{secret} in {c:?}");
        }
        assert!(text.contains("http://cb:***@127.0.0.1:8080"), "{text}");
        assert!(text.contains("\"API_KEY=***\""), "{text}");
        assert!(text.contains("sync=full&password=***"), "{text}");
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
