//! [`serve`]: wires store, service, models, worker, sweeper and router together and runs them
//! until a shutdown signal, then stops in order: stop accepting, hand leases back, flush the
//! store.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use augur_api::payments::PaymentsConfig;
use augur_api::{ApiConfig, AppParts, AppState};
use augur_core::outbox::Payload;
use augur_core::store::DynStore;
use augur_core::store::cached::{CacheBudget, CachedStore};
use augur_core::store::fallback::{Breaker, FallbackStore};
use augur_core::store::metered::MeteredStore;
use augur_core::{Accounts, AccountsConfig, Credits, Predictions, Secret, ServiceConfig};
use augur_engine::{
    ChangeListener, ModelCatalog, OutputFiles, Sweeper, TaskLoop, TaskLoopOptions, UrlImportLimits,
    Worker, WorkerOptions,
};
use augur_webhooks::{AccountSigners, Dispatcher, DispatcherOptions, Signers, WebhookSecret};

use crate::backend;
use crate::config::Config;

/// How long in-flight requests (a `Prefer: wait`, an event stream) get to finish after a
/// shutdown signal before they are cut.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// Runs the server on `listener` until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let opened = backend::open(&config.store).await.with_context(|| {
        format!(
            "cannot open the store {}",
            backend::redact_url(&config.store)
        )
    })?;
    let backend_name = opened.store.backend();
    let capabilities = opened.store.capabilities();
    let admin_token = admin_token(&config, opened.data_dir.as_deref(), capabilities.shared)?;
    let stack = StoreStack::build(&config, opened.store.clone()).await?;
    let service = Predictions::new(
        stack.store.clone(),
        ServiceConfig {
            retention: config.retention,
            canceled_after_start: config.accounts.canceled_after_start,
            tombstone_retention: config.tombstone_retention,
            ..ServiceConfig::default()
        },
    );
    let bound = listener.local_addr()?;
    let public_url = config.public_url_for(bound);
    // Webhooks and output URL copies go where users say: only to public addresses and the
    // operator's allowlist. (Model servers the operator configures are not subject to it.)
    let destinations = config.destinations()?;
    tracing::info!(
        allow = ?destinations.allowlist(),
        "webhooks and output copies go to public addresses and the outbound allowlist only"
    );
    let files = match (&config.files_dir, &opened.data_dir) {
        (Some(location), _) => backend::FilesUrl::parse(location)
            .context("files_dir (AUGUR_FILES_DIR)")?
            .open(&public_url)
            .context("cannot open the files location")?,
        (None, Some(data)) => OutputFiles::local(&data.join("files"), &public_url)?,
        (None, None) if capabilities.shared => {
            tracing::warn!(
                "output files go to ./augur-files; with several nodes set AUGUR_FILES_DIR to a directory they all share"
            );
            OutputFiles::local(std::path::Path::new("augur-files"), &public_url)?
        }
        (None, None) => OutputFiles::in_memory(&public_url),
    }
    .with_url_import_limits(UrlImportLimits {
        max_bytes: config.output_download_max_bytes,
        timeout: config.output_download_timeout,
    })
    .with_destinations(destinations.clone())
    .with_url_signer(augur_core::file::UrlSigner::derived_from(&admin_token));
    let models = Arc::new(
        crate::models::registry(&config, &service, &files, &public_url, &admin_token).await?,
    );

    let catalog: Arc<dyn augur_core::workflow::Catalog> =
        Arc::new(ModelCatalog::new(models.clone(), &public_url));
    if let Some(dir) = &config.workflows_dir {
        crate::workflows::apply_dir(&service, &*catalog, dir).await?;
    }

    let mut api_config = ApiConfig::new(public_url.clone(), admin_token);
    api_config.max_body_bytes = config.max_body_bytes;
    api_config.list_page_bytes = config.list_page_bytes;
    api_config.max_file_bytes = config.file_max_bytes;
    api_config.max_batch_items = config.batch_max_items;
    api_config.file_expiry = config.file_expiry;
    api_config.destinations = destinations.clone();
    api_config.request_timeout = config.http.request_timeout;
    api_config.ops = config.http.ops_access(bound);
    if let Some(secret) = &config.webhooks.secret {
        api_config.webhook_secret = secret.clone();
    }
    let webhook_secret = WebhookSecret::parse(api_config.webhook_secret.expose())
        .context("the webhook signing secret")?;
    let accounts = Accounts::new(
        stack.store.clone(),
        AccountsConfig {
            signup_grant: config.accounts.signup_grant,
            ..AccountsConfig::default()
        },
    );
    let payments = match &config.payments.webhook_secret {
        Some(secret) => Some(augur_webhooks::WebhookSecret::parse_provider(
            secret.expose(),
        )?),
        None => None,
    };
    let payments = payments.map(|secret| PaymentsConfig {
        secret,
        packs: config
            .credit_packs
            .iter()
            .map(|p| (p.product_id.clone(), p.credits))
            .collect(),
    });
    let state = AppState::new(AppParts {
        rendered: augur_api::wire::Rendered::new(rendered_cache_bytes(&config)),
        service: service.clone(),
        accounts: accounts.clone(),
        credits: Credits::new(stack.store.clone()),
        create_limiter: Default::default(),
        callback_budget: Default::default(),
        payments,
        models: models.clone(),
        catalog: catalog.clone(),
        files: files.clone(),
        config: api_config,
        metrics,
    });

    let stop = CancellationToken::new();
    // This node's record, renewed while it runs, so every node can tell which are alive.
    let node = augur_core::node::Node::starting(
        &public_url,
        models.iter().map(|m| m.name.to_string()).collect(),
    );
    let node_id = node.id.clone();
    let node_task = service.keep_announcing(node);
    let worker = Worker::new(
        service.clone(),
        models,
        files.clone(),
        WorkerOptions {
            concurrency: config.workers,
            lease_for: config.lease,
            ..WorkerOptions::default()
        },
    );
    service.set_dispatch(worker.dispatcher());
    let worker_task = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    let sweeper = Sweeper::new(service.clone(), files, Duration::from_secs(10), 1000);
    let sweeper_task = tokio::spawn(sweeper.run(stop.clone().cancelled_owned()));
    let tasks = TaskLoop::new(
        service.clone(),
        catalog.clone(),
        TaskLoopOptions {
            lease_for: config.lease,
            ..TaskLoopOptions::default()
        },
    );
    let batches_task = tokio::spawn(tasks.run(stop.clone().cancelled_owned()));
    let dispatcher = Dispatcher::new(
        service.outbox(),
        Arc::new(AccountSigners::new(accounts, webhook_secret)) as Arc<dyn Signers>,
        webhook_body(public_url.clone()),
        DispatcherOptions {
            concurrency: config.webhooks.concurrency,
            attempt_timeout: config.webhooks.timeout,
            max_age: config.webhooks.max_age,
            backoff: augur_webhooks::Backoff {
                base: config.webhooks.backoff_base,
                max: config.webhooks.backoff_max,
            },
            destinations,
            ..DispatcherOptions::default()
        },
    )?;
    let wake = dispatcher.handle();
    let signal = service.hub().outbox_signal();
    let wake_task = tokio::spawn(async move {
        loop {
            signal.notified().await;
            wake.wake();
        }
    });
    let dispatcher_task = tokio::spawn(dispatcher.run(stop.clone().cancelled_owned()));
    let listener_task = (capabilities.shared && capabilities.change_notifications).then(|| {
        let listener = ChangeListener::new(service.clone(), stack.cache.clone());
        tokio::spawn(listener.run(stop.clone().cancelled_owned()))
    });

    let ops_listener = match config.http.ops_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (AUGUR_OPS_LISTEN)"))?,
        ),
        None => None,
    };
    let ops_task = match ops_listener {
        Some(listener) => {
            let address = listener.local_addr()?;
            tracing::info!(%address, "operations endpoints listening");
            println!("augur operations on http://{address}");
            let app = augur_api::ops_router(state.clone());
            let http = config.http.clone();
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                crate::http::serve(listener, app, &http, stop).await
            }))
        }
        None => None,
    };
    // The dashboard's pages and assets beside the API; the API keeps the fallback (its JSON
    // 404), so no API path is ever answered with a page.
    let app =
        augur_api::router(state).merge(augur_dashboard::router(augur_dashboard::DashboardConfig {
            public_url: public_url.clone(),
            assets_dir: config.dashboard_dir.clone(),
        }));
    tracing::info!(store = backend_name, %public_url, "augur listening");
    // Tests and scripts read this line to learn the port.
    println!("augur listening on {public_url}");

    let http_stop = stop.clone();
    let http_config = config.http.clone();
    let http =
        tokio::spawn(
            async move { crate::http::serve(listener, app, &http_config, http_stop).await },
        );
    shutdown.await;
    tracing::info!("shutting down");
    stop.cancel();
    match tokio::time::timeout(HTTP_DRAIN, http).await {
        Ok(joined) => joined.context("http server task failed")??,
        Err(_) => tracing::warn!("open requests did not finish in time; closing them"),
    }
    if let Some(task) = ops_task {
        task.abort();
    }
    let _ = worker_task.await;
    let _ = sweeper_task.await;
    let _ = batches_task.await;
    let _ = dispatcher_task.await;
    wake_task.abort();
    if let Some(task) = listener_task {
        let _ = task.await;
    }
    node_task.abort();
    if let Err(e) = service.withdraw_node(&node_id).await {
        tracing::warn!(node = %node_id, error = %e, "cannot remove this node's record; it expires by itself");
    }
    drop(service);
    stack.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Renders a webhook's body: the prediction as `GET /v1/predictions/{id}` shows it, the
/// batch as `GET /v1/batches/{id}` does, or the run as `GET /v1/runs/{id}` does, at send time, so output files' URLs are under the
/// public URL of the node that sends it (messages carry the stored `/files/<key>` references).
fn webhook_body(public_url: String) -> augur_webhooks::Render {
    Arc::new(move |payload: &Payload| match payload {
        Payload::Prediction(p) => bytes::Bytes::from(
            serde_json::to_vec(&augur_api::wire::PredictionJson::new(&public_url, p))
                .expect("a prediction always serializes"),
        ),
        Payload::Batch(b) => augur_api::batches::webhook_body(&public_url, b).into(),
        Payload::Run(r) => augur_api::workflows::webhook_body(&public_url, r).into(),
    })
}

/// The part of `cache_bytes` for rendered prediction JSON (a quarter); the rest is the read
/// cache's.
fn rendered_cache_bytes(config: &Config) -> u64 {
    config.cache_bytes / 4
}

/// The decorated store the service uses: metrics on every backend call, the read fallback if
/// configured, and the read cache (exact for a store only this process writes; bounded
/// staleness, plus invalidation by announcements, for a shared one).
struct StoreStack {
    store: DynStore,
    cache: Option<Arc<CachedStore>>,
}

impl StoreStack {
    async fn build(config: &Config, primary: DynStore) -> Result<Self> {
        let shared = primary.capabilities().shared;
        let mut store: DynStore = Arc::new(MeteredStore::new(primary));
        if let Some(url) = &config.store_fallback {
            let secondary = backend::open_read_only(url).await.with_context(|| {
                format!(
                    "cannot open the fallback store {}",
                    backend::redact_url(url)
                )
            })?;
            let secondary: DynStore = Arc::new(MeteredStore::new(secondary));
            let breaker = Breaker {
                failures: config.store_breaker_failures,
                cooldown: config.store_breaker_cooldown,
            };
            store = Arc::new(FallbackStore::with_breaker(store, secondary, breaker));
        }
        let budget = CacheBudget {
            bytes: config.cache_bytes - rendered_cache_bytes(config),
            entries: Some(config.cache_entries),
        };
        let off = config.cache_entries == 0 || budget.bytes == 0;
        let cache = match (shared, off) {
            (_, true) => None,
            (false, false) => Some(Arc::new(CachedStore::exclusive(store.clone(), budget))),
            (true, _) if config.cache_max_staleness.is_zero() => None,
            (true, false) => Some(Arc::new(CachedStore::new(
                store.clone(),
                budget,
                Some(config.cache_max_staleness),
            ))),
        };
        if let Some(cache) = &cache {
            store = cache.clone();
        }
        Ok(Self { store, cache })
    }
}

/// The admin token: configured, or kept in `<data dir>/admin-token` (generated and printed
/// once on first start), or generated per start for a memory store. Nodes sharing a store must
/// share a configured token.
fn admin_token(config: &Config, data_dir: Option<&Path>, shared: bool) -> Result<Secret> {
    if let Some(token) = &config.admin_token {
        return Ok(token.clone());
    }
    if shared {
        anyhow::bail!(
            "set AUGUR_ADMIN_TOKEN: the nodes that share this store must all accept the same token"
        );
    }
    let Some(dir) = data_dir else {
        let token = new_token();
        println!(
            "generated admin token (memory store; it changes every start): {}",
            token.expose()
        );
        return Ok(token);
    };
    let path = dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(Secret::new(text.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let token = new_token();
    write_private(&path, token.expose())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "generated admin token (saved in {}; shown only this once): {}",
        path.display(),
        token.expose()
    );
    Ok(token)
}

fn new_token() -> Secret {
    Secret::new(format!(
        "augur_{}",
        augur_core::prediction::new_secret_token()
    ))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_bodies_show_output_files_under_the_senders_public_url() {
        let id = augur_core::PredictionId::generate();
        let key = format!("{id}/{}/out.png", "0f".repeat(16));
        let mut p = augur_core::Prediction::new(
            id,
            augur_core::AccountId::admin(),
            augur_core::ModelName::parse("augur/demo-image").unwrap(),
            "v".into(),
            serde_json::json!({}),
        );
        p.output = Some(serde_json::json!([format!("/files/{key}"), "text"]));
        let body = webhook_body("https://new.example".into())(&Payload::Prediction(Box::new(p)));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json["output"],
            serde_json::json!([format!("https://new.example/files/{key}"), "text"])
        );
    }
}
