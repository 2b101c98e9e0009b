//! The files half of `augur migrate`: copies every object of one files location (outputs and
//! uploads, the `AUGUR_FILES_DIR` forms: a directory, `file://`, `s3://bucket/prefix`) into
//! another and verifies the copy; it never reads what the objects mean, except to check that
//! every file the records name is present.
//!
//! An object already in the target with the same size is skipped, so an interrupted copy run
//! again carries on where it stopped without a checkpoint of its own. The verification lists
//! both locations and requires every source object in the target with the same size (count
//! and bytes are reported), then reads the target's records: each prediction's output files
//! (`/files/<key>` references, and absolute `…/files/<key>` URLs of older records) and each
//! live upload (`uploads/<id>`, with its recorded size) must be in the target. When both
//! sides are the same location nothing is copied; only that last check runs. Both `s3://`
//! sides use the same `AWS_*` settings (endpoint, region, credentials).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;

use augur_core::Prediction;
use augur_core::file::FileObject;
use augur_core::store::{DynStore, Entity, Exported, Kind, Position, Section};

use super::{Options, bar};
use crate::backend::FilesUrl;

/// Objects copied at once.
const PARALLEL_COPIES: usize = 8;

/// Missing files named at most in an error.
const SHOWN_MISSING: usize = 10;

/// What the files step copied and verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilesSummary {
    /// Objects in the source (all of them in the target).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects copied by this run (the others were there already).
    pub copied: u64,
    /// Files the target's records name (all present).
    pub referenced: u64,
    /// Both sides are one location: nothing was copied.
    pub shared: bool,
}

impl fmt::Display for FilesSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.shared {
            write!(
                f,
                "files shared by both stores: {} files the records name, all present",
                self.referenced
            )
        } else {
            write!(
                f,
                "{} files ({} bytes, {} copied now); {} files the records name, all present",
                self.objects, self.bytes, self.copied, self.referenced
            )
        }
    }
}

/// Whether two locations are the same objects.
fn same_location(from: &FilesUrl, to: &FilesUrl) -> bool {
    match (from, to) {
        (FilesUrl::Local(a), FilesUrl::Local(b)) => {
            let canonical = |p: &std::path::Path| std::fs::canonicalize(p).ok();
            a == b || canonical(a).is_some_and(|a| Some(a) == canonical(b))
        }
        _ => from == to,
    }
}

/// Copies (unless `options.verify_only`) the objects of `from` into `to`, then verifies them
/// and the files `records` (the target store) names.
pub(super) async fn migrate(
    from: &FilesUrl,
    to: &FilesUrl,
    records: &DynStore,
    options: &Options,
) -> Result<FilesSummary> {
    let shared = same_location(from, to);
    let source = from
        .object_store()
        .with_context(|| format!("cannot open the files at {}", from.describe()))?;
    let target = if shared {
        source.clone()
    } else {
        to.object_store()
            .with_context(|| format!("cannot open the files at {}", to.describe()))?
    };
    let mut summary = FilesSummary {
        shared,
        ..FilesSummary::default()
    };
    if !shared {
        if !options.verify_only {
            summary.copied = copy(&source, &target, options).await?;
        }
        let (objects, bytes) = verify_copy(&source, &target, options).await?;
        summary.objects = objects;
        summary.bytes = bytes;
    }
    summary.referenced = verify_referenced(records, &target, options).await?;
    Ok(summary)
}

/// Copies every object of `from` that `to` lacks (or holds with another size); returns how
/// many it copied.
async fn copy(
    from: &Arc<dyn ObjectStore>,
    to: &Arc<dyn ObjectStore>,
    options: &Options,
) -> Result<u64> {
    let bar = bar(options, "copying files");
    let copied = from
        .list(None)
        .map_err(anyhow::Error::from)
        .map_ok(|meta| {
            let bar = bar.clone();
            async move {
                let present = match to.head(&meta.location).await {
                    Ok(there) => there.size == meta.size,
                    Err(object_store::Error::NotFound { .. }) => false,
                    Err(e) => {
                        let what = format!("cannot read {} in the target", meta.location);
                        return Err(anyhow::Error::new(e).context(what));
                    }
                };
                let copied = if present {
                    0
                } else {
                    let read = async { from.get(&meta.location).await?.bytes().await };
                    let bytes = read
                        .await
                        .with_context(|| format!("cannot read {} in the source", meta.location))?;
                    to.put(&meta.location, PutPayload::from_bytes(bytes))
                        .await
                        .with_context(|| format!("cannot write {} in the target", meta.location))?;
                    1
                };
                bar.inc(1);
                Ok::<u64, anyhow::Error>(copied)
            }
        })
        .try_buffer_unordered(PARALLEL_COPIES)
        .try_fold(0u64, |total, n| async move { Ok(total + n) })
        .await?;
    bar.finish_and_clear();
    Ok(copied)
}

/// Every object with its size, by path.
async fn listing(
    store: &Arc<dyn ObjectStore>,
    options: &Options,
    what: &str,
) -> Result<BTreeMap<ObjectPath, u64>> {
    let bar = bar(options, what);
    let mut all = BTreeMap::new();
    let mut objects = store.list(None);
    while let Some(meta) = objects.next().await {
        let meta = meta?;
        all.insert(meta.location, meta.size);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(all)
}

/// Checks that every object of `from` is in `to` with the same size; returns the source's
/// count and bytes.
async fn verify_copy(
    from: &Arc<dyn ObjectStore>,
    to: &Arc<dyn ObjectStore>,
    options: &Options,
) -> Result<(u64, u64)> {
    let source = listing(from, options, "verifying the source files").await?;
    let target = listing(to, options, "verifying the target files").await?;
    let differ: Vec<String> = source
        .iter()
        .filter(|(path, size)| target.get(*path) != Some(size))
        .map(|(path, size)| match target.get(path) {
            Some(other) => format!("{path} ({size} bytes, {other} in the target)"),
            None => format!("{path} (missing in the target)"),
        })
        .collect();
    if !differ.is_empty() {
        bail!(
            "verification failed: {} of {} files differ in the target: {}{}",
            differ.len(),
            source.len(),
            differ[..differ.len().min(SHOWN_MISSING)].join(", "),
            if differ.len() > SHOWN_MISSING {
                ", …"
            } else {
                ""
            }
        );
    }
    Ok((source.len() as u64, source.values().sum()))
}

/// Checks that every file the records of `records` name is in `files` (uploads with their
/// recorded size); returns how many there are.
async fn verify_referenced(
    records: &DynStore,
    files: &Arc<dyn ObjectStore>,
    options: &Options,
) -> Result<u64> {
    let bar = bar(options, "checking the files the records name");
    let batch = options.batch.max(1);
    let mut wanted: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let mut after: Option<Position> = None;
    loop {
        let page = records
            .export(Section::Records, after.as_ref(), batch)
            .await?;
        for piece in &page {
            let Exported::Record { record, .. } = piece else {
                continue;
            };
            if record.data_removed {
                continue;
            }
            match record.key.kind {
                Kind::Prediction => {
                    let p = Prediction::from_record(record)?;
                    if let Some(output) = &p.output {
                        output_keys(output, &mut |key| {
                            wanted.entry(key.to_owned()).or_insert(None);
                        });
                    }
                }
                Kind::File => {
                    let file = FileObject::from_record(record)?;
                    wanted.insert(FileObject::object_key(&file.id), Some(file.size));
                }
                _ => {}
            }
        }
        match page.last() {
            Some(last) if page.len() == batch => after = Some(last.position()),
            _ => break,
        }
    }
    let missing: Vec<String> = futures::stream::iter(wanted.iter())
        .map(|(key, size)| {
            let bar = bar.clone();
            async move {
                let path = ObjectPath::parse(key).ok()?;
                let found = match files.head(&path).await {
                    Ok(meta) => size.is_none_or(|size| meta.size == size),
                    Err(_) => false,
                };
                bar.inc(1);
                (!found).then(|| key.clone())
            }
        })
        .buffer_unordered(PARALLEL_COPIES)
        .filter_map(|missing| async move { missing })
        .collect()
        .await;
    bar.finish_and_clear();
    if !missing.is_empty() {
        bail!(
            "verification failed: {} of {} files the records name are missing from the target files: {}{}",
            missing.len(),
            wanted.len(),
            missing[..missing.len().min(SHOWN_MISSING)].join(", "),
            if missing.len() > SHOWN_MISSING {
                ", …"
            } else {
                ""
            }
        );
    }
    Ok(wanted.len() as u64)
}

/// Calls `found` with the key of every output file in `output`: `/files/<key>` references,
/// and absolute URLs ending in `/files/<key>` (what records held before references).
fn output_keys(output: &Value, found: &mut impl FnMut(&str)) {
    match output {
        Value::String(s) => {
            let key = augur_core::output::key_of(s).or_else(|| {
                let rest = s
                    .strip_prefix("http://")
                    .or_else(|| s.strip_prefix("https://"))?;
                let (_, key) = rest.split_once(augur_core::output::ROUTE)?;
                augur_core::output::is_valid_key(key).then_some(key)
            });
            if let Some(key) = key {
                found(key);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| output_keys(v, found)),
        Value::Object(map) => map.values().for_each(|v| output_keys(v, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_keys_are_found_in_references_and_older_absolute_urls() {
        let key = format!(
            "{}/{}/out.png",
            augur_core::PredictionId::generate(),
            "ab".repeat(16)
        );
        let output = json!({
            "a": format!("/files/{key}"),
            "b": [format!("https://old.example/augur/files/{key}"), "text", "/files/x"],
            "c": "https://elsewhere.example/files/x",
        });
        let mut keys = Vec::new();
        output_keys(&output, &mut |k| keys.push(k.to_owned()));
        assert_eq!(keys, vec![key.clone(), key]);
    }
}
