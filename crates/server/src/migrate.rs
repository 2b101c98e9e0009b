//! `augur migrate --from URL --to URL`: copies everything a store holds into another, then
//! verifies the copy.
//!
//! The copy goes kind by kind (predictions with their webhook outboxes and event logs, jobs,
//! idempotency keys, counters) in pages, through
//! [`Store::import`], which writes records as they are and is idempotent. After every page a
//! checkpoint file records where the copy is, so an interrupted run started again with the same
//! arguments carries on from there. The verification pass reads both stores in the same order
//! and compares counts and a SHA-256 of every record's content; any difference fails the
//! command. Run it with the Augur nodes stopped: leases are not copied (a copied job is
//! claimable at once), and writes during the copy would make the verification fail.
//!
//! [`Store::import`]: augur_core::store::Store::import

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use augur_core::store::{Cursor, DeliveryState, DynStore, ListQuery, Record, StreamEvent};
use augur_core::{AccountId, Prediction, PredictionId, Timestamp, Versioned};
use futures::{StreamExt, TryStreamExt};

use crate::backend;

/// Options of one migration.
#[derive(Clone, Debug)]
pub struct Options {
    /// The source store's URL.
    pub from: String,
    /// The target store's URL.
    pub to: String,
    /// Records per page.
    pub batch: usize,
    /// Where to keep the progress of an interrupted copy.
    pub checkpoint: PathBuf,
    /// Only compare the two stores.
    pub verify_only: bool,
    /// Show progress bars.
    pub progress: bool,
}

impl Options {
    /// The default checkpoint file for a pair of URLs: in the current directory, named after a
    /// digest of both, so that runs with other stores do not resume from it.
    pub fn default_checkpoint(from: &str, to: &str) -> PathBuf {
        let digest = Sha256::digest(format!("{from}\n{to}").as_bytes());
        let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        PathBuf::from(format!(".augur-migrate-{short}.json"))
    }
}

/// Where an interrupted copy stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Checkpoint {
    predictions_done: bool,
    /// `(created_at micros, id)` of the last prediction copied.
    prediction_cursor: Option<(i64, String)>,
    jobs_done: bool,
    job_cursor: Option<String>,
    keys_done: bool,
    key_cursor: Option<(String, String)>,
    counters_done: bool,
}

impl Checkpoint {
    fn load(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the checkpoint {} is not readable; delete it to start over",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// What was copied and verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Predictions in both stores.
    pub predictions: u64,
    /// Jobs in both stores.
    pub jobs: u64,
    /// Idempotency keys in both stores.
    pub keys: u64,
    /// Counters in both stores.
    pub counters: u64,
    /// Webhook messages (any status) in both stores.
    pub deliveries: u64,
    /// Stream events in both stores.
    pub events: u64,
    /// SHA-256 over every record, in order, identical on both sides.
    pub checksum: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} predictions, {} jobs, {} idempotency keys, {} counters, {} webhook messages, {} stream events; sha256 {}",
            self.predictions,
            self.jobs,
            self.keys,
            self.counters,
            self.deliveries,
            self.events,
            self.checksum
        )
    }
}

/// Copies (unless `verify_only`) and verifies.
pub async fn run(options: &Options) -> Result<Summary> {
    for url in [&options.from, &options.to] {
        if url.starts_with("memory://") {
            bail!(
                "a memory:// store lives inside one process; migrate between stores that persist"
            );
        }
    }
    if options.from == options.to {
        bail!("--from and --to name the same store");
    }
    let from = backend::open(&options.from)
        .await
        .with_context(|| format!("cannot open --from {}", backend::redact_url(&options.from)))?
        .store;
    let to = backend::open(&options.to)
        .await
        .with_context(|| format!("cannot open --to {}", backend::redact_url(&options.to)))?
        .store;
    if !options.verify_only {
        copy(&from, &to, options).await?;
    }
    let source = fingerprint(&from, options, "verifying the source").await?;
    let target = fingerprint(&to, options, "verifying the target").await?;
    from.close().await;
    to.close().await;
    if source != target {
        bail!(
            "verification failed: the stores differ\n  source: {source}\n  target: {target}\n\
             (the checkpoint {} is kept; run again to resume, or delete it to copy everything again)",
            options.checkpoint.display()
        );
    }
    if options.checkpoint.exists() {
        std::fs::remove_file(&options.checkpoint)
            .with_context(|| format!("cannot remove {}", options.checkpoint.display()))?;
    }
    Ok(source)
}

fn bar(options: &Options, what: &str) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {pos} [{elapsed}, {per_sec}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

async fn copy(from: &DynStore, to: &DynStore, options: &Options) -> Result<()> {
    let path = &options.checkpoint;
    let mut checkpoint = Checkpoint::load(path)?;
    if checkpoint != Checkpoint::default() {
        eprintln!("resuming from {}", path.display());
    }
    let batch = options.batch.max(1);

    if !checkpoint.predictions_done {
        let bar = bar(options, "copying predictions");
        loop {
            let after = match &checkpoint.prediction_cursor {
                Some((micros, id)) => Some(Cursor {
                    created_at: Timestamp::from_micros(*micros),
                    id: PredictionId::parse(id).context("the checkpoint names an invalid id")?,
                }),
                None => None,
            };
            let page = from
                .list(&ListQuery {
                    after,
                    limit: batch,
                    ..Default::default()
                })
                .await?;
            let mut records: Vec<Record> = page
                .items
                .iter()
                .map(|p| Record::Prediction(Box::new(p.clone())))
                .collect();
            for (id, (deliveries, events)) in attachments(from, &page.items).await? {
                records.extend(
                    deliveries
                        .into_iter()
                        .map(|d| Record::Delivery(Box::new(d))),
                );
                records.extend(events.into_iter().map(|e| Record::Event(id.clone(), e)));
            }
            to.import(&records).await?;
            bar.inc(records.len() as u64);
            match (page.next, page.items.last()) {
                (Some(_), Some(last)) => {
                    checkpoint.prediction_cursor =
                        Some((last.value.created_at.as_micros(), last.value.id.to_string()));
                }
                _ => {
                    checkpoint.predictions_done = true;
                }
            }
            checkpoint.save(path)?;
            if checkpoint.predictions_done {
                break;
            }
        }
        bar.finish_and_clear();
    }

    if !checkpoint.jobs_done {
        let bar = bar(options, "copying jobs");
        loop {
            let after = checkpoint
                .job_cursor
                .as_deref()
                .map(PredictionId::parse)
                .transpose()
                .context("the checkpoint names an invalid id")?;
            let jobs = from.list_jobs(after.as_ref(), batch).await?;
            let records: Vec<Record> = jobs.iter().cloned().map(Record::Job).collect();
            to.import(&records).await?;
            bar.inc(records.len() as u64);
            match jobs.last() {
                Some(last) if jobs.len() == batch => {
                    checkpoint.job_cursor = Some(last.prediction_id.to_string());
                }
                _ => checkpoint.jobs_done = true,
            }
            checkpoint.save(path)?;
            if checkpoint.jobs_done {
                break;
            }
        }
        bar.finish_and_clear();
    }

    if !checkpoint.keys_done {
        let bar = bar(options, "copying idempotency keys");
        loop {
            let after = match &checkpoint.key_cursor {
                Some((owner, key)) => Some((
                    AccountId::parse(owner).context("the checkpoint names an invalid owner")?,
                    key.clone(),
                )),
                None => None,
            };
            let keys = from
                .list_idempotency_keys(after.as_ref().map(|(o, k)| (o, k.as_str())), batch)
                .await?;
            let records: Vec<Record> = keys.iter().cloned().map(Record::IdempotencyKey).collect();
            to.import(&records).await?;
            bar.inc(records.len() as u64);
            match keys.last() {
                Some(last) if keys.len() == batch => {
                    checkpoint.key_cursor = Some((last.owner.to_string(), last.key.clone()));
                }
                _ => checkpoint.keys_done = true,
            }
            checkpoint.save(path)?;
            if checkpoint.keys_done {
                break;
            }
        }
        bar.finish_and_clear();
    }

    if !checkpoint.counters_done {
        let records: Vec<Record> = from
            .counters()
            .await?
            .into_iter()
            .map(|(name, value)| Record::Counter { name, value })
            .collect();
        to.import(&records).await?;
        checkpoint.counters_done = true;
        checkpoint.save(path)?;
    }
    Ok(())
}

/// Counts and hashes everything a store holds, in the order the contract defines.
async fn fingerprint(store: &DynStore, options: &Options, what: &str) -> Result<Summary> {
    let bar = bar(options, what);
    let batch = options.batch.max(1);
    let mut hash = Sha256::new();
    let mut summary = Summary::default();

    let mut after = None;
    loop {
        let page = store
            .list(&ListQuery {
                after,
                limit: batch,
                ..Default::default()
            })
            .await?;
        for p in &page.items {
            hash.update(b"p");
            hash.update(p.revision.0.to_be_bytes());
            hash.update(serde_json::to_vec(&p.value)?);
        }
        for (_, (deliveries, events)) in attachments(store, &page.items).await? {
            for d in &deliveries {
                hash.update(b"d");
                hash.update(serde_json::to_vec(d)?);
            }
            for e in &events {
                hash.update(b"e");
                hash.update(serde_json::to_vec(e)?);
            }
            summary.deliveries += deliveries.len() as u64;
            summary.events += events.len() as u64;
        }
        summary.predictions += page.items.len() as u64;
        bar.inc(page.items.len() as u64);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }

    let mut after: Option<PredictionId> = None;
    loop {
        let jobs = store.list_jobs(after.as_ref(), batch).await?;
        for job in &jobs {
            hash.update(b"j");
            hash.update(job.prediction_id.as_str().as_bytes());
            hash.update(job.queue.as_bytes());
            hash.update(job.attempts.to_be_bytes());
            hash.update(job.run_at.as_micros().to_be_bytes());
        }
        summary.jobs += jobs.len() as u64;
        bar.inc(jobs.len() as u64);
        match jobs.last() {
            Some(last) if jobs.len() == batch => after = Some(last.prediction_id.clone()),
            _ => break,
        }
    }

    let mut after: Option<(AccountId, String)> = None;
    loop {
        let keys = store
            .list_idempotency_keys(after.as_ref().map(|(o, k)| (o, k.as_str())), batch)
            .await?;
        for key in &keys {
            hash.update(b"k");
            for part in [
                key.owner.as_str(),
                &key.key,
                &key.fingerprint,
                key.prediction_id.as_str(),
            ] {
                hash.update(part.as_bytes());
                hash.update([0]);
            }
            hash.update(key.expires_at.as_micros().to_be_bytes());
        }
        summary.keys += keys.len() as u64;
        match keys.last() {
            Some(last) if keys.len() == batch => {
                after = Some((last.owner.clone(), last.key.clone()))
            }
            _ => break,
        }
    }

    let mut counters = store.counters().await?;
    counters.sort();
    for (name, value) in &counters {
        hash.update(b"c");
        hash.update(name.as_bytes());
        hash.update(value.to_be_bytes());
    }
    summary.counters = counters.len() as u64;
    summary.checksum = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    bar.finish_and_clear();
    Ok(summary)
}

/// How many predictions' outboxes and event logs are read at once.
const ATTACHMENT_READS: usize = 16;

/// The webhook outbox and the whole event log of each prediction of a page, in page order.
async fn attachments(
    store: &DynStore,
    page: &[Versioned<Prediction>],
) -> Result<Vec<(PredictionId, (Vec<DeliveryState>, Vec<StreamEvent>))>> {
    futures::stream::iter(page.iter().map(|p| {
        let id = p.value.id.clone();
        async move {
            let deliveries = store.list_deliveries(&id).await?;
            let mut events = Vec::new();
            loop {
                let after = events.last().map(|e: &StreamEvent| (e.revision, e.index));
                let more = store.read_events(&id, after, 1000).await?;
                if more.is_empty() {
                    break;
                }
                events.extend(more);
            }
            anyhow::Ok((id, (deliveries, events)))
        }
    }))
    .buffered(ATTACHMENT_READS)
    .try_collect()
    .await
}
