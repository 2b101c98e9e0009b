//! Change announcements: [`Inner::subscribe`] long-polls the namespace's notifier object
//! (`changes`, PROTOCOL.md) in a background task and turns its answers into a
//! [`ChangeStream`].
//!
//! The task remembers the notifier's epoch and the last sequence number it saw. It yields
//! [`Change::Resync`](augur_core::store::Change::Resync) when the notifier says so (the subscriber fell behind its buffer), when
//! the epoch changes (the notifier object restarted and forgot), and after a failed poll (then
//! it backs off, up to [`MAX_BACKOFF`]), since announcements may have been missed. A
//! subscriber that falls more than [`BUFFER`] announcements behind gets `Resync` instead of
//! the ones it missed. The task ends when the stream is dropped or the store closed.

use std::sync::Arc;
use std::time::Duration;

use augur_core::store::{ChangeSender, ChangeStream};
use tokio_util::sync::CancellationToken;

use crate::client::Method;
use crate::error::Error;
use crate::store::Inner;
use crate::wire::{ChangesAnswer, ChangesRequest};

/// Announcements buffered per subscriber.
const BUFFER: usize = 4096;

/// How long one poll waits for a change at the notifier.
const WAIT: Duration = Duration::from_millis(25_000);

/// The longest wait between polls after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Inner {
    pub(crate) async fn subscribe(self: &Arc<Self>) -> Result<ChangeStream, Error> {
        // The first poll does not wait: it fixes the position from which changes count, so
        // that every write after `subscribe` returns is announced.
        let first = self.poll(None, None, Duration::ZERO).await?;
        let (tx, stream) = ChangeSender::channel(BUFFER);
        let task = Subscription {
            inner: Arc::clone(self),
            tx,
            shutdown: self.shutdown.clone(),
            epoch: first.epoch,
            seq: first.seq,
        };
        tokio::spawn(task.run());
        Ok(stream)
    }

    async fn poll(
        &self,
        after: Option<u64>,
        epoch: Option<String>,
        wait: Duration,
    ) -> Result<ChangesAnswer, Error> {
        let request = ChangesRequest {
            after,
            epoch,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let timeout = self.client.options.timeout + wait;
        self.client
            .call_with_timeout(Method::Changes, &request, Some(timeout))
            .await
    }
}

struct Subscription {
    inner: Arc<Inner>,
    tx: ChangeSender,
    shutdown: CancellationToken,
    epoch: String,
    seq: u64,
}

impl Subscription {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        loop {
            let poll = self
                .inner
                .poll(Some(self.seq), Some(self.epoch.clone()), WAIT);
            let result = tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = self.tx.closed() => return,
                result = poll => result,
            };
            match result {
                Ok(answer) => {
                    if failing {
                        tracing::debug!("polling Cloudflare store changes works again");
                    }
                    failing = false;
                    backoff = Duration::from_millis(100);
                    if !self.take(answer) {
                        return;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "polling Cloudflare store changes failed");
                    }
                    failing = true;
                    if !self.tx.resync() {
                        return;
                    }
                    let jitter = Duration::from_millis(rand::random_range(
                        0..=u64::try_from(backoff.as_millis() / 2).unwrap_or(0),
                    ));
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = self.tx.closed() => return,
                        () = tokio::time::sleep(backoff + jitter) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Forwards one answer's changes; false once the subscriber is gone.
    fn take(&mut self, answer: ChangesAnswer) -> bool {
        if (answer.resync || answer.epoch != self.epoch) && !self.tx.resync() {
            return false;
        }
        self.epoch = answer.epoch;
        self.seq = answer.seq;
        for change in answer.changes {
            match change.decode() {
                Ok(change) => {
                    if !self.tx.send(change) {
                        return false;
                    }
                }
                Err(detail) => {
                    tracing::debug!(detail, "unknown change announcement");
                }
            }
        }
        true
    }
}
