//! [`Sweeper`]: applies retention, replacing expired predictions by their tombstones and
//! deleting their output files, and deleting expired uploads (bytes, then record); then deletes
//! tombstones past the second horizon ([`Predictions::prune_tombstones`]), a page per sweep.
//!
//! Readers never see expired data even when the sweeper lags (the service masks it), so the
//! sweeper only has to catch up eventually; it runs every `every` and works in batches.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::Predictions;

use crate::files::OutputFiles;

/// The retention sweeper.
#[derive(Clone, Debug)]
pub struct Sweeper {
    service: Predictions,
    files: OutputFiles,
    every: Duration,
    batch: usize,
    /// Where the next look for old tombstones continues (`None`: from the newest).
    tombstones_after: Arc<Mutex<Option<augur_core::store::Cursor>>>,
}

impl Sweeper {
    /// A sweeper that runs every `every`, tombstoning up to `batch` predictions per store call.
    pub fn new(service: Predictions, files: OutputFiles, every: Duration, batch: usize) -> Self {
        Self {
            service,
            files,
            every,
            batch: batch.max(1),
            tombstones_after: Arc::default(),
        }
    }

    /// Sweeps once, until nothing is due; returns how many records it expired.
    ///
    /// Files are deleted after their prediction is tombstoned, so a crash in between leaves
    /// orphaned files, never a prediction pointing at deleted ones. An expired upload's bytes go
    /// first, then its tombstone.
    pub async fn sweep(&self) -> Result<usize, augur_core::Error> {
        let mut total = 0;
        loop {
            let expired = self.service.expire_due(self.batch).await?;
            for id in &expired.predictions {
                if let Err(e) = self.files.delete_for(id).await {
                    tracing::warn!(prediction_id = %id, error = %e, "cannot delete expired output files");
                }
            }
            let uploads = self.service.files();
            for id in &expired.files {
                let key = augur_core::file::FileObject::object_key(id);
                if let Err(e) = self.files.delete_upload(&key).await {
                    tracing::warn!(file_id = %id, error = %e, "cannot delete an expired file's bytes");
                    continue;
                }
                let key = augur_core::file::FileObject::key_of(id);
                if let Some(owner) = uploads.owner_of(&key).await? {
                    uploads.forget_key(&owner, id).await?;
                }
            }
            total += expired.count;
            if expired.count < self.batch {
                break;
            }
        }
        self.prune_tombstones().await?;
        Ok(total)
    }

    /// Deletes old tombstones from one page of old predictions, continuing where the last
    /// sweep stopped, so that a sweep costs one listing however many there are.
    async fn prune_tombstones(&self) -> Result<usize, augur_core::Error> {
        let after = self.tombstones_after.lock().expect("cursor lock").take();
        let (deleted, next) = self.service.prune_tombstones(after, self.batch).await?;
        *self.tombstones_after.lock().expect("cursor lock") = next;
        if deleted > 0 {
            metrics::counter!("augur_tombstones_deleted_total").increment(deleted as u64);
            tracing::info!(deleted, "retention deleted old prediction tombstones");
        }
        Ok(deleted)
    }

    /// Sweeps every `every` until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::counter!("augur_predictions_expired_total").increment(n as u64);
                    tracing::info!(expired = n, "retention removed prediction data");
                }
                Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use augur_core::file::FileObject;
    use augur_core::store::memory::MemoryStore;
    use augur_core::{AccountId, ServiceConfig, Timestamp};
    use bytes::Bytes;

    use super::*;

    #[tokio::test]
    async fn expired_uploads_lose_their_bytes_then_their_record() {
        let service = Predictions::new(Arc::new(MemoryStore::new()), ServiceConfig::default());
        let files = OutputFiles::in_memory("http://augur.test");
        let owner = AccountId::parse("alice").unwrap();
        let now = Timestamp::now();
        let upload = |ttl_ms: u64| FileObject {
            id: FileObject::generate_id(&owner),
            owner: owner.clone(),
            name: "x.bin".into(),
            content_type: "application/octet-stream".into(),
            size: 1,
            sha256: String::new(),
            created_at: now,
            expires_at: now.plus(Duration::from_millis(ttl_ms)),
            metadata: serde_json::Value::Null,
        };
        let (short, long) = (upload(50), upload(3_600_000));
        for file in [&short, &long] {
            service.files().create(file).await.unwrap();
            files
                .put_upload(
                    &FileObject::object_key(&file.id),
                    Bytes::from_static(b"x").into(),
                )
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sweeper = Sweeper::new(service.clone(), files.clone(), Duration::from_secs(60), 10);
        assert_eq!(sweeper.sweep().await.unwrap(), 1);
        let key = |f: &FileObject| FileObject::object_key(&f.id);
        assert!(files.get_upload(&key(&short)).await.unwrap().is_none());
        let record = FileObject::key_of(&short.id);
        assert!(
            service.files().owner_of(&record).await.unwrap().is_none(),
            "no tombstone left"
        );
        assert!(files.get_upload(&key(&long)).await.unwrap().is_some());
        assert!(service.files().get(&long.id).await.unwrap().is_some());
    }
}
