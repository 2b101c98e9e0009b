//! [`ChangeSender`]: the sending half of a [`ChangeStream`] for backends that forward
//! announcements from a background task, and what it does when the subscriber falls behind.
//!
//! It does not receive announcements or reconnect; each backend does that its own way.

use futures::StreamExt;
use tokio::sync::mpsc;

use super::{Change, ChangeStream};

/// Queues announcements for one subscriber without ever waiting for it.
///
/// The buffer is bounded: when it is full, announcements are dropped and the subscriber gets
/// one [`Change::Resync`] in their place, queued before the next announcement that fits.
#[derive(Debug)]
pub struct ChangeSender {
    tx: mpsc::Sender<Change>,
    /// Announcements were dropped because the subscriber fell behind.
    lagged: bool,
}

impl ChangeSender {
    /// A sender and the stream it feeds, which buffers up to `buffer` announcements.
    ///
    /// # Panics
    /// If `buffer` is zero.
    pub fn channel(buffer: usize) -> (Self, ChangeStream) {
        let (tx, rx) = mpsc::channel(buffer);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|change| (change, rx))
        });
        (Self { tx, lagged: false }, stream.boxed())
    }

    /// Queues a change (a `Resync` first if some were dropped), or drops it if the buffer is
    /// full; false once the subscriber is gone.
    pub fn send(&mut self, change: Change) -> bool {
        if self.lagged {
            match self.tx.try_send(Change::Resync) {
                Ok(()) => self.lagged = false,
                Err(mpsc::error::TrySendError::Full(_)) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        match self.tx.try_send(change) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged = true;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues one `Resync`, or, if the buffer is full, sends it with the next change; false
    /// once the subscriber is gone.
    pub fn resync(&mut self) -> bool {
        match self.tx.try_send(Change::Resync) {
            Ok(()) => self.lagged = false,
            Err(mpsc::error::TrySendError::Full(_)) => self.lagged = true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
        true
    }

    /// Completes once the subscriber has dropped the stream.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;
    use crate::store::Lane::{Jobs, Tasks, Webhooks};

    /// The changes queued now, without waiting.
    fn drain(stream: &mut ChangeStream) -> Vec<Change> {
        std::iter::from_fn(|| stream.next().now_or_never().flatten()).collect()
    }

    #[test]
    fn a_lagging_subscriber_gets_one_resync_before_the_next_change() {
        let (mut tx, mut stream) = ChangeSender::channel(2);
        assert!(tx.send(Change::Work(Jobs)));
        assert!(tx.send(Change::Work(Jobs)));
        // Full: dropped.
        assert!(tx.send(Change::Work(Webhooks)));
        assert_eq!(drain(&mut stream), [Change::Work(Jobs), Change::Work(Jobs)]);
        assert!(tx.send(Change::Work(Tasks)));
        // Full again: dropped, and owed a Resync of its own.
        assert!(tx.send(Change::Work(Webhooks)));
        assert_eq!(drain(&mut stream), [Change::Resync, Change::Work(Tasks)]);
        assert!(tx.send(Change::Work(Jobs)));
        assert_eq!(drain(&mut stream), [Change::Resync, Change::Work(Jobs)]);
        assert!(tx.send(Change::Work(Jobs)));
        assert_eq!(drain(&mut stream), [Change::Work(Jobs)]);
    }

    #[test]
    fn a_resync_that_does_not_fit_goes_before_the_next_change() {
        let (mut tx, mut stream) = ChangeSender::channel(2);
        assert!(tx.resync());
        assert!(tx.send(Change::Work(Jobs)));
        // Full: owed.
        assert!(tx.resync());
        assert_eq!(drain(&mut stream), [Change::Resync, Change::Work(Jobs)]);
        assert!(tx.send(Change::Work(Webhooks)));
        assert_eq!(drain(&mut stream), [Change::Resync, Change::Work(Webhooks)]);
        assert!(tx.send(Change::Work(Webhooks)));
        assert_eq!(drain(&mut stream), [Change::Work(Webhooks)]);
    }

    #[test]
    fn a_dropped_stream_closes_the_sender() {
        let (mut tx, stream) = ChangeSender::channel(4);
        assert!(tx.closed().now_or_never().is_none());
        drop(stream);
        assert!(tx.closed().now_or_never().is_some());
        assert!(!tx.send(Change::Work(Jobs)));
        assert!(!tx.resync());
    }

    #[test]
    fn a_lagging_sender_notices_the_dropped_stream() {
        let (mut tx, stream) = ChangeSender::channel(1);
        assert!(tx.send(Change::Work(Jobs)));
        assert!(tx.send(Change::Work(Jobs)));
        drop(stream);
        assert!(!tx.send(Change::Work(Jobs)));
    }
}
