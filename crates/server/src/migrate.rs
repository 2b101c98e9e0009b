//! `augur migrate --from URL --to URL`: copies everything a store holds into another, then
//! verifies the copy.
//!
//! The copy goes section by section ([`Section`]: records of every kind, queue items, event
//! logs, ledgers, counters) in pages, through [`AdminStore::export`] and
//! [`AdminStore::import`], which writes pieces as they are and is idempotent; a new kind of
//! record needs nothing here. After every page a checkpoint file records where the copy is, so
//! an interrupted run started again with the same arguments carries on from there. The
//! verification pass exports both stores in the same order and compares counts and a SHA-256
//! of every piece; any difference fails the command. Run it with the Augur nodes stopped:
//! leases are not copied (a copied job is claimable at once), and writes during the copy would
//! make the verification fail.
//!
//! Files (outputs and uploads) are copied too, object by object, from `--from-files` to
//! `--to-files` ([`files`]); an embedded store's side defaults to the `files` directory in its
//! data directory, as `augur serve` does without `AUGUR_FILES_DIR`. Records hold output files
//! as `/files/<key>` references, so they need no rewriting to be served from the target.
//!
//! [`AdminStore::export`]: augur_core::store::AdminStore::export
//! [`AdminStore::import`]: augur_core::store::AdminStore::import

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use augur_core::store::{DynStore, Exported, Kind, Lane, Position, Section};
use augur_core::{AccountId, Revision};

use crate::backend::{self, FilesUrl};

pub mod files;

/// Options of one migration.
#[derive(Clone, Debug)]
pub struct Options {
    /// The source store's URL.
    pub from: String,
    /// The target store's URL.
    pub to: String,
    /// The source's files location (`AUGUR_FILES_DIR` forms); default: an embedded source's
    /// `files` directory, if it has one.
    pub from_files: Option<String>,
    /// The target's files location; default: an embedded target's `files` directory.
    pub to_files: Option<String>,
    /// Pieces per page.
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

/// Where a section's copy stands, in a form that survives a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Mark {
    /// Copied up to and including this position.
    After(Vec<String>),
    /// Copied entirely.
    Done,
}

/// Where an interrupted copy stands: a mark per section name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Checkpoint {
    sections: BTreeMap<String, Mark>,
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

/// A position as plain text parts, for the checkpoint file.
fn position_parts(position: &Position) -> Vec<String> {
    match position {
        Position::Record(kind, id) => vec![kind.as_str().into(), id.clone()],
        Position::Item(lane, id) => vec![lane.as_str().into(), id.clone()],
        Position::Event(kind, id, revision, index) => vec![
            kind.as_str().into(),
            id.clone(),
            revision.0.to_string(),
            index.to_string(),
        ],
        Position::Ledger(account, seq) => vec![account.to_string(), seq.to_string()],
        Position::Counter(name) => vec![name.clone()],
    }
}

fn position_from(section: Section, parts: &[String]) -> Option<Position> {
    Some(match (section, parts) {
        (Section::Records, [kind, id]) => Position::Record(Kind::parse(kind)?, id.clone()),
        (Section::Items, [lane, id]) => Position::Item(Lane::parse(lane)?, id.clone()),
        (Section::Events, [kind, id, revision, index]) => Position::Event(
            Kind::parse(kind)?,
            id.clone(),
            Revision(revision.parse().ok()?),
            index.parse().ok()?,
        ),
        (Section::Ledger, [account, seq]) => {
            Position::Ledger(AccountId::parse(account).ok()?, seq.parse().ok()?)
        }
        (Section::Counters, [name]) => Position::Counter(name.clone()),
        _ => return None,
    })
}

/// What was copied and verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Pieces per section, in [`Section::ALL`] order.
    pub counts: Vec<(Section, u64)>,
    /// Records per kind.
    pub records: BTreeMap<&'static str, u64>,
    /// SHA-256 over every piece, in order, identical on both sides.
    pub checksum: String,
    /// The files step, if either side has files.
    pub files: Option<files::FilesSummary>,
}

impl Summary {
    /// How many pieces of `section` there are.
    pub fn count(&self, section: Section) -> u64 {
        self.counts
            .iter()
            .find(|(s, _)| *s == section)
            .map_or(0, |(_, n)| *n)
    }
}

/// `3000 predictions, 300 idempotency keys; 1430 queue items, 9000 events, 0 ledger entries,
/// 3 counters; sha256 ...`: records by kind, predictions first, then the other sections.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<(&str, u64)> = self.records.iter().map(|(k, n)| (*k, *n)).collect();
        kinds.sort_by_key(|(kind, _)| (*kind != Kind::Prediction.as_str(), *kind));
        let kinds: Vec<String> = kinds
            .iter()
            .map(|(kind, n)| format!("{n} {}s", kind.replace('_', " ")))
            .collect();
        if kinds.is_empty() {
            f.write_str("no records")?;
        } else {
            f.write_str(&kinds.join(", "))?;
        }
        let names = [
            (Section::Items, "queue items"),
            (Section::Events, "events"),
            (Section::Ledger, "ledger entries"),
            (Section::Counters, "counters"),
        ];
        let rest: Vec<String> = names
            .iter()
            .map(|(section, name)| format!("{} {name}", self.count(*section)))
            .collect();
        write!(f, "; {}; sha256 {}", rest.join(", "), self.checksum)?;
        if let Some(files) = &self.files {
            write!(f, "; {files}")?;
        }
        Ok(())
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
        .with_context(|| format!("cannot open --from {}", backend::redact_url(&options.from)))?;
    let to = backend::open(&options.to)
        .await
        .with_context(|| format!("cannot open --to {}", backend::redact_url(&options.to)))?;
    let locations = files_locations(options, from.data_dir.as_deref(), to.data_dir.as_deref())?;
    let (from, to) = (from.store, to.store);
    if !options.verify_only {
        copy(&from, &to, options).await?;
    }
    let source = fingerprint(&from, options, "verifying the source").await?;
    let target = fingerprint(&to, options, "verifying the target").await?;
    let files = match &locations {
        Some((source_files, target_files)) if source == target => {
            Some(files::migrate(source_files, target_files, &to, options).await)
        }
        _ => None,
    };
    from.close().await;
    to.close().await;
    if source != target {
        bail!(
            "verification failed: the stores differ\n  source: {source}\n  target: {target}\n\
             (the checkpoint {} is kept; run again to resume, or delete it to copy everything again)",
            options.checkpoint.display()
        );
    }
    let mut summary = source;
    summary.files = files.transpose()?;
    if options.checkpoint.exists() {
        std::fs::remove_file(&options.checkpoint)
            .with_context(|| format!("cannot remove {}", options.checkpoint.display()))?;
    }
    Ok(summary)
}

/// The source's and the target's files locations, or `None` when the source has none (then
/// there are no files to copy).
fn files_locations(
    options: &Options,
    from_data: Option<&Path>,
    to_data: Option<&Path>,
) -> Result<Option<(FilesUrl, FilesUrl)>> {
    let parse =
        |text: &str, flag: &str| FilesUrl::parse(text).with_context(|| format!("{flag} {text:?}"));
    let from = match &options.from_files {
        Some(text) => {
            let url = parse(text, "--from-files")?;
            if let FilesUrl::Local(dir) = &url
                && !dir.is_dir()
            {
                bail!("--from-files {text:?} is not a directory");
            }
            Some(url)
        }
        // An embedded store's own files, if it ever wrote any.
        None => from_data
            .map(|dir| dir.join("files"))
            .filter(|dir| dir.is_dir())
            .map(FilesUrl::Local),
    };
    let to = match &options.to_files {
        Some(text) => Some(parse(text, "--to-files")?),
        None => to_data.map(|dir| FilesUrl::Local(dir.join("files"))),
    };
    match (from, to) {
        (Some(from), Some(to)) => Ok(Some((from, to))),
        (Some(from), None) => bail!(
            "the source has files at {}; say where they go with --to-files (a directory or s3://bucket/prefix)",
            from.describe()
        ),
        (None, _) if options.to_files.is_some() => {
            bail!("--to-files needs --from-files: the source store keeps no files of its own")
        }
        (None, _) => Ok(None),
    }
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
    for section in Section::ALL {
        let mut after = match checkpoint.sections.get(section.as_str()) {
            Some(Mark::Done) => continue,
            Some(Mark::After(parts)) => Some(position_from(section, parts).with_context(|| {
                format!(
                    "the checkpoint {} names an invalid {} position; delete it to start over",
                    path.display(),
                    section.as_str()
                )
            })?),
            None => None,
        };
        let bar = bar(options, &format!("copying {}", section.as_str()));
        loop {
            let page = from.export(section, after.as_ref(), batch).await?;
            let last = page
                .last()
                .map(Exported::position)
                .filter(|_| page.len() == batch);
            let page: Vec<Exported> = page.into_iter().filter(migrated).collect();
            to.import(&page).await?;
            bar.inc(page.len() as u64);
            let mark = match last {
                Some(position) => {
                    let mark = Mark::After(position_parts(&position));
                    after = Some(position);
                    mark
                }
                _ => Mark::Done,
            };
            let done = mark == Mark::Done;
            checkpoint.sections.insert(section.as_str().into(), mark);
            checkpoint.save(path)?;
            if done {
                break;
            }
        }
        bar.finish_and_clear();
    }
    Ok(())
}

/// Whether `piece` moves to the target store: everything but the records of the nodes serving
/// from the source ([`augur_core::node`]), which describe those nodes, not the data, and may
/// expire while the command runs.
fn migrated(piece: &Exported) -> bool {
    !matches!(piece, Exported::Record { record, .. } if record.key.kind == Kind::Node)
}

/// Counts and hashes everything a store holds, in the order the contract defines (nodes'
/// records left out: see [`migrated`]).
async fn fingerprint(store: &DynStore, options: &Options, what: &str) -> Result<Summary> {
    let bar = bar(options, what);
    let batch = options.batch.max(1);
    let mut hash = Sha256::new();
    let mut summary = Summary::default();
    for section in Section::ALL {
        let mut count = 0u64;
        let mut after: Option<Position> = None;
        loop {
            let page = store.export(section, after.as_ref(), batch).await?;
            for piece in page.iter().filter(|piece| migrated(piece)) {
                hash_piece(&mut hash, piece)?;
                if let Exported::Record { record, .. } = piece {
                    *summary.records.entry(record.key.kind.as_str()).or_default() += 1;
                }
                count += 1;
            }
            bar.inc(page.len() as u64);
            match page.last() {
                Some(last) if page.len() == batch => after = Some(last.position()),
                _ => break,
            }
        }
        summary.counts.push((section, count));
    }
    summary.checksum = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    bar.finish_and_clear();
    Ok(summary)
}

/// Feeds a piece's whole content to the hash, each field delimited.
fn hash_piece(hash: &mut Sha256, piece: &Exported) -> Result<()> {
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    match piece {
        Exported::Record { record, revision } => {
            field(b"record");
            field(record.key.kind.as_str().as_bytes());
            field(record.key.id.as_bytes());
            field(&[record.key.partition.0]);
            field(record.owner.as_str().as_bytes());
            field(&record.created_at.as_micros().to_be_bytes());
            field(record.status.as_deref().unwrap_or("\u{0}").as_bytes());
            field(record.parent.as_deref().unwrap_or("\u{0}").as_bytes());
            field(
                &record
                    .expires_at
                    .map_or(i64::MIN, |t| t.as_micros())
                    .to_be_bytes(),
            );
            field(&[u8::from(record.data_removed)]);
            field(record.body.as_bytes());
            field(record.data.as_deref().unwrap_or("\u{0}").as_bytes());
            field(&revision.0.to_be_bytes());
        }
        Exported::Item(item) => {
            field(b"item");
            field(item.lane.as_str().as_bytes());
            field(item.id.as_bytes());
            field(item.group.kind.as_str().as_bytes());
            field(item.group.id.as_bytes());
            field(item.topic.as_bytes());
            field(item.owner.as_str().as_bytes());
            field(item.payload.as_bytes());
            field(&item.seq.to_be_bytes());
            field(item.status.as_str().as_bytes());
            field(&item.claims.to_be_bytes());
            field(&serde_json::to_vec(&item.attempts)?);
            field(
                &item
                    .due_at
                    .map_or(i64::MIN, |t| t.as_micros())
                    .to_be_bytes(),
            );
            field(&item.created_at.as_micros().to_be_bytes());
        }
        Exported::Event { stream, event } => {
            field(b"event");
            field(stream.kind.as_str().as_bytes());
            field(stream.id.as_bytes());
            field(&serde_json::to_vec(event)?);
        }
        Exported::Ledger(posted) => {
            field(b"ledger");
            field(&serde_json::to_vec(posted)?);
        }
        Exported::Counter { name, value } => {
            field(b"counter");
            field(name.as_bytes());
            field(&value.to_be_bytes());
        }
    }
    Ok(())
}
