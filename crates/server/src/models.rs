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
//! Model servers call Augur back at `callback_url` (default: the public URL); start coglet
//! with `--upload-url <callback_url>/internal/cog/uploads/` so file outputs come back as
//! files instead of data URIs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use augur_core::{ModelName, Predictions, Secret};
use augur_engine::cog::{CogHooks, CogOptions, CogProvider};
use augur_engine::{Model, ModelRegistry, ModelSettings, OutputFiles};

use crate::config::Config;
use crate::config::humantime_serde_compat;

/// The providers a configured model can use.
const PROVIDERS: &[&str] = &["cog"];

/// How long start-up waits for a model server's schema before going on without it (it is
/// fetched again in the background).
const SCHEMA_AT_START: Duration = Duration::from_secs(3);

/// One `[[models]]` entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `owner/name`.
    pub name: String,
    /// What runs it: `cog`.
    pub provider: String,
    /// The model server's base URL.
    pub url: String,
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
        if builtin.get(&name).is_some() {
            bail!("{at}: {name} is a built-in model; choose another name");
        }
        if !seen.insert(name.clone()) {
            bail!("{at}: the model {name} is configured twice");
        }
        if !PROVIDERS.contains(&model.provider.as_str()) {
            bail!(
                "{at}: unknown provider {:?}; the providers are: {}",
                model.provider,
                PROVIDERS.join(", ")
            );
        }
        server_url(&model.url).map_err(|why| anyhow::anyhow!("{at}: url {why}"))?;
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
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not have a query or fragment"));
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
    if config.models.is_empty() {
        return Ok(registry);
    }
    let callback_url = config
        .callback_url
        .as_deref()
        .unwrap_or(public_url)
        .trim_end_matches('/')
        .to_owned();
    let hooks = CogHooks::new(service.clone(), files.clone(), admin_token, &callback_url);
    let mut providers = Vec::new();
    for model in &config.models {
        let name = ModelName::parse(&model.name)?;
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
        tracing::info!(model = %name, url = %model.url, concurrency = model.concurrency, "cog model configured");
        providers.push((name, provider));
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
    tracing::info!(upload_url = %hooks.upload_url(), "start Cog model servers with --upload-url set to this");
    registry.set_cog_hooks(hooks);
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
                vec![entry("acme/a", "replicate", "http://x")],
                "unknown provider \"replicate\"; the providers are: cog",
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
}
