//! Model routing: the `[[models]]` section of the configuration, its validation, and the
//! [`ModelRegistry`] a server runs (the built-in models plus the configured ones).
//!
//! ```toml
//! [[models]]
//! name = "acme/sketch"            # owner/name, as clients address it
//! provider = "cog"                # a Cog model server (coglet) the operator runs
//! url = "http://127.0.0.1:5055"
//! concurrency = 2                 # its COG_MAX_CONCURRENCY (default 1)
//! max_run_time = "10m"            # default 30m
//! # max_attempts = 3, description = "...", check_interval = "5s", down_grace = "30s"
//! ```
//!
//! ```toml
//! [[models]]
//! name = "acme/tool"
//! provider = "command"            # a local program, started once per prediction
//! command = ["/usr/bin/python3", "tool.py"]   # argv, no shell
//! working_dir = "/opt/tool"       # default: the prediction's fresh work directory
//! timeout = "5m"                  # default: only max_run_time
//! concurrency = 2                 # predictions at once on this node (default 1)
//! ```
//!
//! (The command's protocol is in [`augur_engine::command`].)
//!
//! ```toml
//! [[models]]
//! name = "acme/upstream-echo"
//! provider = "replicate"          # an upstream Replicate-compatible API (or another Augur)
//! url = "https://api.replicate.com"
//! model = "owner/name"            # the upstream model
//! # version = "5c7d5dc6..."        # an upstream version id (default: the latest)
//! token = "r8_..."                # the upstream API token (redacted in `config check`)
//! poll_interval = "5s"            # how often a prediction is read back (default 5s)
//! ```
//!
//! (How predictions are forwarded is in [`augur_engine::replicate`].)
//!
//! Model servers call Augur back at `callback_url` (default: the public URL); start each
//! model's coglet with the `--upload-url` that `augur cog upload-url <model>` prints
//! (`<callback_url>/internal/cog/uploads/<model>/<token>/`, the token derived from the admin
//! token, one per model) so file outputs come back as files instead of data URIs.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use augur_core::{ModelName, Predictions, Price, Secret};
use augur_engine::cog::{CogHooks, CogOptions, CogProvider};
use augur_engine::command::{CommandOptions, CommandProvider};
use augur_engine::replicate::{ReplicateHooks, ReplicateOptions, ReplicateProvider};
use augur_engine::{Model, ModelRegistry, ModelSettings, OutputFiles};

use crate::config::Config;
use crate::config::humantime_serde_compat;

/// The providers a configured model can use.
const PROVIDERS: &[&str] = &["cog", "command", "replicate"];

/// How long start-up waits for a model server's schema before going on without it (it is
/// fetched again in the background).
const SCHEMA_AT_START: Duration = Duration::from_secs(3);

/// One `[[models]]` entry. `Debug` masks its secrets ([`ModelConfig::redact`]).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `owner/name`.
    pub name: String,
    /// What runs it: `cog`, `command` or `replicate`. Empty in an entry that names a built-in
    /// model to give it a `price`, and sets nothing else.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// The model server's base URL (not for `command`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// `command` only: the program and its arguments (argv, no shell).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// `command` only: where it runs (default: the prediction's work directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// `command` only: kill it and fail after this long (default: only `max_run_time`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_duration"
    )]
    pub timeout: Option<Duration>,
    /// Predictions on the model server at once.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    /// A prediction that runs longer fails with "timed out".
    #[serde(default = "defaults::max_run_time", with = "humantime_serde_compat")]
    pub max_run_time: Duration,
    /// Attempts before a prediction whose runs keep failing retryably (server down or
    /// starting) fails for good.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// One line about the model, for `GET /v1/models`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How often a running prediction's server is checked on.
    #[serde(default = "defaults::check_interval", with = "humantime_serde_compat")]
    pub check_interval: Duration,
    /// How long the server may be down while running a prediction before it fails.
    #[serde(default = "defaults::down_grace", with = "humantime_serde_compat")]
    pub down_grace: Duration,
    /// `replicate` only: the upstream model, `owner/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `replicate` only: the upstream version id (default: the model's latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `replicate` only: the upstream API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// `replicate` only: how often a submitted prediction is read back from the upstream
    /// (default 5s), in case its webhooks do not arrive.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_duration"
    )]
    pub poll_interval: Option<Duration>,
    /// What a prediction costs the account that creates it: `{ per_prediction = N }` or
    /// `{ per_second = N, max_seconds = M }`, in credits. Unset: free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
}

impl ModelConfig {
    /// Masks the secrets: the token, the URL's credentials, the command's secret arguments
    /// (`augur_core::redact`).
    pub fn redact(&mut self) {
        if self.token.is_some() {
            self.token = Some(Secret::new("<redacted>"));
        }
        self.url = augur_core::redact::url(&self.url);
        self.command = augur_core::redact::command(&self.command);
    }
}

impl std::fmt::Debug for ModelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.clone();
        shown.redact();
        match serde_json::to_string(&shown) {
            Ok(json) => write!(f, "ModelConfig {json}"),
            Err(_) => f.write_str("ModelConfig { .. }"),
        }
    }
}

/// How often a `replicate` model's predictions are read back by default.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Checks the `replicate`-only settings: required for `replicate`, refused elsewhere.
fn validate_replicate(at: &str, model: &ModelConfig) -> Result<()> {
    if model.provider != "replicate" {
        if model.model.is_some()
            || model.version.is_some()
            || model.token.is_some()
            || model.poll_interval.is_some()
        {
            bail!(
                "{at}: model, version, token and poll_interval apply only to provider \"replicate\""
            );
        }
        return Ok(());
    }
    let Some(upstream) = &model.model else {
        bail!("{at}: provider \"replicate\" needs model, the upstream model as owner/name");
    };
    ModelName::parse(upstream)
        .map_err(|e| anyhow::anyhow!("{at}: model must be the upstream owner/name: {e}"))?;
    if let Some(version) = &model.version
        && (version.is_empty()
            || version.len() > 128
            || !version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
    {
        bail!("{at}: version must be an upstream version id (letters, digits, '-', '_', '.')");
    }
    if model.token.as_ref().is_none_or(Secret::is_empty) {
        bail!("{at}: provider \"replicate\" needs token, the upstream API token");
    }
    if model
        .poll_interval
        .is_some_and(|d| d < Duration::from_millis(100))
    {
        bail!("{at}: poll_interval must be at least 100ms");
    }
    Ok(())
}

/// Registers a `replicate` model.
fn register_replicate_model(
    registry: &mut ModelRegistry,
    hooks: &Arc<ReplicateHooks>,
    name: ModelName,
    model: &ModelConfig,
) -> Result<()> {
    let url = server_url(&model.url).map_err(anyhow::Error::msg)?;
    let upstream = ModelName::parse(model.model.as_deref().unwrap_or_default())?;
    let provider = Arc::new(ReplicateProvider::new(
        hooks.clone(),
        name.clone(),
        ReplicateOptions {
            url,
            model: upstream.clone(),
            version: model.version.clone(),
            token: model.token.clone().unwrap_or_default(),
            poll_interval: model.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL),
        },
    ));
    let target = match &model.version {
        Some(version) => format!("{upstream}:{version}"),
        None => upstream.to_string(),
    };
    registry.register(Model::new(
        name.clone(),
        &format!("replicate {} {target}", model.url),
        model
            .description
            .clone()
            .unwrap_or_else(|| format!("{name}, run by {target} upstream")),
        ModelSettings {
            // The upstream queues; a submitted prediction holds no worker slot.
            concurrency: None,
            max_run_time: model.max_run_time,
            max_attempts: model.max_attempts,
        },
        provider,
    ));
    tracing::info!(model = %name, url = %augur_core::redact::url(&model.url), upstream = %target, "replicate model configured");
    Ok(())
}

/// `Option<Duration>` as human text (`5m`), absent when `None`.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// The command provider's settings of an entry.
fn command_options(model: &ModelConfig) -> CommandOptions {
    CommandOptions {
        command: model.command.clone(),
        working_dir: model.working_dir.clone(),
        timeout: model.timeout,
    }
}

/// Registers a `command` model.
fn register_command_model(registry: &mut ModelRegistry, name: ModelName, model: &ModelConfig) {
    let provider = Arc::new(CommandProvider::new(command_options(model)));
    registry.register(Model::new(
        name.clone(),
        &format!("command {:?}", model.command),
        model
            .description
            .clone()
            .unwrap_or_else(|| format!("{name}, run by a local command")),
        ModelSettings {
            concurrency: Some(model.concurrency),
            max_run_time: model.max_run_time,
            max_attempts: model.max_attempts,
        },
        provider,
    ));
    tracing::info!(model = %name, command = ?augur_core::redact::command(&model.command), concurrency = model.concurrency, "command model configured");
}

mod defaults {
    use std::time::Duration;

    pub(super) fn concurrency() -> usize {
        1
    }
    pub(super) fn max_run_time() -> Duration {
        Duration::from_secs(30 * 60)
    }
    pub(super) fn max_attempts() -> u32 {
        3
    }
    pub(super) fn check_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn down_grace() -> Duration {
        Duration::from_secs(30)
    }
}

/// Checks the `[[models]]` entries: names, providers, URLs, limits, no duplicates (nor
/// clashes with the built-in models).
pub fn validate(models: &[ModelConfig]) -> Result<()> {
    let mut builtin = ModelRegistry::new();
    augur_engine::builtin::register(&mut builtin);
    let mut seen = HashSet::new();
    for (i, model) in models.iter().enumerate() {
        let at = format!("models[{i}] ({:?})", model.name);
        let name = ModelName::parse(&model.name).map_err(|e| {
            anyhow::anyhow!("{at}: name must be owner/name, e.g. \"acme/sketch\": {e}")
        })?;
        if let Some(price) = &model.price {
            price
                .validate()
                .map_err(|why| anyhow::anyhow!("{at}: price: {why}"))?;
        }
        if !seen.insert(name.clone()) {
            bail!("{at}: the model {name} is configured twice");
        }
        if builtin.get(&name).is_some() {
            let only_price = model.provider.is_empty()
                && model.url.is_empty()
                && model.command.is_empty()
                && model.model.is_none()
                && model.token.is_none()
                && model.description.is_none();
            if !only_price {
                bail!(
                    "{at}: {name} is a built-in model; an entry for it may set only price (or choose another name)"
                );
            }
            continue;
        }
        if model.provider.is_empty() {
            bail!(
                "{at}: provider is required (one of {}); only a built-in model's entry may set just a price",
                PROVIDERS.join(", ")
            );
        }
        if !PROVIDERS.contains(&model.provider.as_str()) {
            bail!(
                "{at}: unknown provider {:?}; the providers are: {}",
                model.provider,
                PROVIDERS.join(", ")
            );
        }
        if model.provider == "command" {
            if !model.url.is_empty() {
                bail!("{at}: url does not apply to provider \"command\"");
            }
            command_options(model)
                .validate()
                .map_err(|why| anyhow::anyhow!("{at}: {why}"))?;
        } else {
            if !model.command.is_empty() || model.working_dir.is_some() || model.timeout.is_some() {
                bail!("{at}: command, working_dir and timeout apply only to provider \"command\"");
            }
            server_url(&model.url).map_err(|why| anyhow::anyhow!("{at}: url {why}"))?;
        }
        validate_replicate(&at, model)?;
        if model.concurrency == 0 {
            bail!("{at}: concurrency must be at least 1");
        }
        if model.max_attempts == 0 {
            bail!("{at}: max_attempts must be at least 1");
        }
        if model.max_run_time < Duration::from_secs(1) {
            bail!("{at}: max_run_time must be at least 1s");
        }
        if model.check_interval < Duration::from_millis(100) {
            bail!("{at}: check_interval must be at least 100ms");
        }
    }
    Ok(())
}

/// Parses a model server's URL: absolute http(s) with a host, no query or fragment.
fn server_url(text: &str) -> Result<url::Url, String> {
    let shown = augur_core::redact::url(text);
    let url =
        url::Url::parse(text).map_err(|e| format!("{shown:?} is not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{shown:?} must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{shown:?} must not have a query or fragment"));
    }
    Ok(url)
}

/// The models this server runs: the built-ins, then the configured ones (validated by
/// [`Config::load`]). Each Cog model's schema is fetched now (briefly) and, if its server is
/// not up yet, again in the background until it is.
pub async fn registry(
    config: &Config,
    service: &Predictions,
    files: &OutputFiles,
    public_url: &str,
    admin_token: &Secret,
) -> Result<ModelRegistry> {
    let mut registry = ModelRegistry::new();
    augur_engine::builtin::register(&mut registry);
    // Entries that only price a built-in model.
    for model in config.models.iter().filter(|m| m.provider.is_empty()) {
        let name = ModelName::parse(&model.name)?;
        if !registry.set_price(&name, model.price) {
            bail!("models: {name} is not a built-in model");
        }
    }
    if config.models.iter().all(|m| m.provider.is_empty()) {
        return Ok(registry);
    }
    let callback_url = config
        .callback_url
        .as_deref()
        .unwrap_or(public_url)
        .trim_end_matches('/')
        .to_owned();
    let hooks = CogHooks::new(service.clone(), files.clone(), admin_token, &callback_url);
    let replicate_hooks =
        ReplicateHooks::new(service.clone(), files.clone(), admin_token, &callback_url);
    let mut providers = Vec::new();
    for model in config.models.iter().filter(|m| !m.provider.is_empty()) {
        let name = ModelName::parse(&model.name)?;
        if model.provider == "command" {
            register_command_model(&mut registry, name, model);
            continue;
        }
        if model.provider == "replicate" {
            register_replicate_model(&mut registry, &replicate_hooks, name, model)?;
            continue;
        }
        let url = server_url(&model.url).map_err(anyhow::Error::msg)?;
        let provider = Arc::new(CogProvider::new(
            hooks.clone(),
            name.clone(),
            CogOptions {
                url,
                concurrency: model.concurrency,
                check_interval: model.check_interval,
                down_grace: model.down_grace,
            },
        ));
        registry.register(Model::new(
            name.clone(),
            &format!("cog {}", model.url),
            model
                .description
                .clone()
                .unwrap_or_else(|| format!("{name}, served by a Cog model server")),
            ModelSettings {
                concurrency: Some(model.concurrency),
                max_run_time: model.max_run_time,
                max_attempts: model.max_attempts,
            },
            provider.clone(),
        ));
        tracing::info!(model = %name, url = %augur_core::redact::url(&model.url), concurrency = model.concurrency, "cog model configured");
        providers.push((name, provider));
    }
    for model in config.models.iter().filter(|m| m.price.is_some()) {
        let name = ModelName::parse(&model.name)?;
        if !registry.set_price(&name, model.price) {
            bail!("models: cannot price {name}");
        }
    }
    let fetches = providers.iter().map(|(name, provider)| async move {
        match tokio::time::timeout(SCHEMA_AT_START, provider.refresh_schema()).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => tracing::warn!(model = %name, reason = %why, "cog model schema unavailable; inputs are checked by the model server until it is"),
            Err(_) => tracing::warn!(model = %name, "cog model schema did not arrive in time; retrying in the background"),
        }
    });
    futures::future::join_all(fetches).await;
    for (_, provider) in providers {
        if !provider.has_schema() {
            tokio::spawn(provider.refresh_schema_until_available());
        }
    }
    tracing::info!(
        "start each Cog model server with --upload-url set to what `augur cog upload-url <model>` prints"
    );
    registry.set_cog_hooks(hooks);
    if config.models.iter().any(|m| m.provider == "replicate") {
        registry.set_replicate_hooks(replicate_hooks);
    }
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, provider: &str, url: &str) -> ModelConfig {
        toml::from_str(&format!(
            "name = {name:?}\nprovider = {provider:?}\nurl = {url:?}\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_config_file_routes_models_and_config_check_shows_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("augur.toml");
        std::fs::write(
            &file,
            r#"
store = "memory://"
callback_url = "http://10.0.0.5:8080"

[[models]]
name = "acme/sketch"
provider = "cog"
url = "http://127.0.0.1:5055"
concurrency = 2
max_run_time = "10m"
"#,
        )
        .unwrap();
        let config = Config::load_from(Some(&file), |_| None).unwrap();
        assert_eq!(config.models.len(), 1);
        assert_eq!(config.models[0].concurrency, 2);
        assert_eq!(config.models[0].max_run_time, Duration::from_secs(600));
        let printed = config.to_redacted_toml().unwrap();
        assert!(printed.contains("[[models]]"), "{printed}");
        assert!(printed.contains("name = \"acme/sketch\""), "{printed}");
        let again: Config = toml::from_str(&printed).unwrap();
        assert_eq!(again.models[0].url, "http://127.0.0.1:5055");

        std::fs::write(
            &file,
            "[[models]]\nname = \"acme/x\"\nprovider = \"cog\"\nurl = \"http://x\"\ncolour = 1\n",
        )
        .unwrap();
        let err = format!(
            "{:#}",
            Config::load_from(Some(&file), |_| None).unwrap_err()
        );
        assert!(err.contains("colour"), "{err}");
        let err = format!(
            "{:#}",
            Config::load_from(None, |k| (k == "AUGUR_CALLBACK_URL")
                .then(|| "nope".to_owned()))
            .unwrap_err()
        );
        assert!(err.contains("callback_url"), "{err}");
    }

    #[test]
    fn defaults_fill_in() {
        let m = entry("acme/sketch", "cog", "http://127.0.0.1:5055");
        assert_eq!(m.concurrency, 1);
        assert_eq!(m.max_run_time, Duration::from_secs(1800));
        assert_eq!(m.max_attempts, 3);
        validate(&[m]).unwrap();
    }

    #[test]
    fn mistakes_are_named() {
        let ok = entry("acme/sketch", "cog", "http://127.0.0.1:5055");
        for (models, needle) in [
            (vec![entry("sketch", "cog", "http://x")], "owner/name"),
            (
                vec![entry("acme/a", "docker", "http://x")],
                "unknown provider \"docker\"; the providers are: cog, command, replicate",
            ),
            (vec![entry("acme/a", "cog", "127.0.0.1:5055")], "url"),
            (vec![entry("acme/a", "cog", "ftp://x")], "http or https"),
            (vec![entry("acme/a", "cog", "http://x/?a=1")], "query"),
            (
                vec![ok.clone(), ok.clone()],
                "models[1] (\"acme/sketch\"): the model acme/sketch is configured twice",
            ),
            (vec![entry("augur/echo", "cog", "http://x")], "built-in"),
            (
                vec![ModelConfig {
                    concurrency: 0,
                    ..ok.clone()
                }],
                "concurrency",
            ),
        ] {
            let err = format!("{:#}", validate(&models).unwrap_err());
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn replicate_models_need_an_upstream_and_a_token_which_config_check_hides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("augur.toml");
        std::fs::write(
            &file,
            r#"
store = "memory://"

[[models]]
name = "acme/upstream-echo"
provider = "replicate"
url = "https://api.replicate.com"
model = "owner/echo"
version = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
token = "r8_very-secret-token"
poll_interval = "2s"
"#,
        )
        .unwrap();
        let config = Config::load_from(Some(&file), |_| None).unwrap();
        let m = &config.models[0];
        assert_eq!(m.model.as_deref(), Some("owner/echo"));
        assert_eq!(m.poll_interval, Some(Duration::from_secs(2)));
        assert_eq!(m.token.as_ref().unwrap().expose(), "r8_very-secret-token");
        let printed = config.to_redacted_toml().unwrap();
        assert!(!printed.contains("r8_very-secret-token"), "{printed}");
        assert!(printed.contains("token = \"<redacted>\""), "{printed}");
        assert!(!format!("{config:?}").contains("r8_very-secret-token"));
        let again: Config = toml::from_str(&printed).unwrap();
        assert_eq!(again.models[0].poll_interval, Some(Duration::from_secs(2)));

        let replicate = |extra: &str| -> ModelConfig {
            toml::from_str(&format!(
                "name = \"acme/up\"\nprovider = \"replicate\"\nurl = \"https://api.replicate.com\"\n{extra}"
            ))
            .unwrap()
        };
        validate(&[replicate("model = \"o/n\"\ntoken = \"t\"\n")]).unwrap();
        for (model, needle) in [
            (replicate("token = \"t\"\n"), "needs model"),
            (replicate("model = \"o/n\"\n"), "needs token"),
            (replicate("model = \"o/n\"\ntoken = \"\"\n"), "needs token"),
            (
                replicate("model = \"nope\"\ntoken = \"t\"\n"),
                "upstream owner/name",
            ),
            (
                replicate("model = \"o/n\"\ntoken = \"t\"\nversion = \"a/b\"\n"),
                "version",
            ),
            (
                replicate("model = \"o/n\"\ntoken = \"t\"\npoll_interval = \"1ms\"\n"),
                "poll_interval",
            ),
            (
                ModelConfig {
                    token: Some(Secret::new("t")),
                    ..entry("acme/a", "cog", "http://x")
                },
                "apply only to provider \"replicate\"",
            ),
        ] {
            let err = format!("{:#}", validate(&[model]).unwrap_err());
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn command_models_are_read_checked_and_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("augur.toml");
        std::fs::write(
            &file,
            format!(
                "[[models]]\nname = \"acme/tool\"\nprovider = \"command\"\n\
                 command = [\"/bin/sh\", \"tool.sh\"]\nworking_dir = {:?}\n\
                 timeout = \"90s\"\nconcurrency = 2\n",
                dir.path().display().to_string()
            ),
        )
        .unwrap();
        let config = Config::load_from(Some(&file), |_| None).unwrap();
        let m = &config.models[0];
        assert_eq!(m.command, ["/bin/sh", "tool.sh"]);
        assert_eq!(m.timeout, Some(Duration::from_secs(90)));
        assert_eq!(m.working_dir.as_deref(), Some(dir.path()));
        let printed = config.to_redacted_toml().unwrap();
        assert!(printed.contains("timeout = \"1m 30s\""), "{printed}");
        assert!(!printed.contains("url ="), "{printed}");
        let again: Config = toml::from_str(&printed).unwrap();
        assert_eq!(again.models[0].command, m.command);

        let command = |command: &[&str]| ModelConfig {
            url: String::new(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            ..entry("acme/tool", "command", "")
        };
        validate(&[command(&["sh", "-c", "true"])]).unwrap();
        for (model, needle) in [
            (
                command(&[]),
                "models[0] (\"acme/tool\"): command must name a program",
            ),
            (
                command(&["/nonexistent/tool"]),
                "command /nonexistent/tool does not exist",
            ),
            (
                ModelConfig {
                    working_dir: Some("/nonexistent".into()),
                    ..command(&["sh"])
                },
                "working_dir /nonexistent is not a directory",
            ),
            (
                ModelConfig {
                    url: "http://x".into(),
                    ..command(&["sh"])
                },
                "url does not apply to provider \"command\"",
            ),
            (
                ModelConfig {
                    timeout: Some(Duration::from_secs(1)),
                    ..entry("acme/a", "cog", "http://x")
                },
                "command, working_dir and timeout apply only to provider \"command\"",
            ),
        ] {
            let err = format!("{:#}", validate(&[model]).unwrap_err());
            assert!(err.contains(needle), "{err}");
        }
    }
}
