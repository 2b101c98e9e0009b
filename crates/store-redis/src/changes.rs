//! Change announcements: every write script `PUBLISH`es what it did on `<prefix>changes`,
//! and [`Inner::subscribe`] turns that channel into a [`ChangeStream`].
//!
//! A message is one line per change: `k <kind> <partition> <revision> <id>` (a record was
//! created, changed, deleted or tombstoned; the id is last, since it may hold spaces),
//! `w <lane>` (items became claimable on the lane) or `r` (anything may have changed: an
//! import). Classic pub/sub reaches every node of a cluster, so one connection to any
//! node hears every shard. Each subscription owns one connection; when it drops, a background
//! task reconnects (backing off up to 2 s, trying the cluster's seeds in turn) and yields
//! [`Change::Resync`], since announcements were missed meanwhile. A subscriber that falls
//! more than [`BUFFER`] announcements behind gets `Resync` instead of the ones it missed.

use std::time::Duration;

use augur_core::Revision;
use augur_core::store::{Change, ChangeSender, ChangeStream, Key, Kind, Lane, Partition};
use futures::StreamExt;
use redis::aio::PubSub;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::store::Inner;

/// Announcements buffered per subscriber.
const BUFFER: usize = 4096;

/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Inner {
    pub(crate) async fn subscribe(&self) -> Result<ChangeStream, Error> {
        let urls = self.options.connection_urls();
        let timeout = self.options.timeout.max(Duration::from_secs(1));
        let first = subscribe_any(&urls, &self.channel, timeout, 0).await?;
        let (tx, stream) = ChangeSender::channel(BUFFER);
        let task = Subscription {
            urls,
            channel: self.channel.clone(),
            timeout,
            tx,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(task.run(first));
        Ok(stream)
    }
}

/// Connects to the first answering server from `start` on and subscribes.
async fn subscribe_any(
    urls: &[String],
    channel: &str,
    timeout: Duration,
    start: usize,
) -> Result<(PubSub, usize), Error> {
    let mut last = None;
    for i in 0..urls.len() {
        let at = (start + i) % urls.len();
        let attempt = async {
            let client = redis::Client::open(urls[at].as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, Error>(pubsub)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(pubsub)) => return Ok((pubsub, at)),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(Error::Redis(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "subscribing timed out",
                ))));
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Config("no server to subscribe to".into())))
}

struct Subscription {
    urls: Vec<String>,
    channel: String,
    timeout: Duration,
    tx: ChangeSender,
    shutdown: CancellationToken,
}

impl Subscription {
    async fn run(mut self, first: (PubSub, usize)) {
        let (mut pubsub, mut node) = first;
        loop {
            if !self.forward(pubsub).await {
                return;
            }
            // The connection dropped: reconnect, then tell the subscriber it missed things.
            let mut backoff = Duration::from_millis(50);
            loop {
                let next = (node + 1) % self.urls.len();
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    () = self.tx.closed() => return,
                    result = subscribe_any(&self.urls, &self.channel, self.timeout, next) => {
                        match result {
                            Ok((p, at)) => {
                                pubsub = p;
                                node = at;
                                break;
                            }
                            Err(e) => tracing::debug!(error = %e, "resubscribing to Redis announcements failed"),
                        }
                    }
                }
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    () = self.tx.closed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            tracing::debug!("resubscribed to Redis announcements");
            if !self.tx.resync() {
                return;
            }
        }
    }

    /// Forwards announcements until the connection drops (true) or the subscriber or the
    /// store goes away (false).
    async fn forward(&mut self, pubsub: PubSub) -> bool {
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(Duration::from_secs(5));
        ping.tick().await;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return false,
                () = self.tx.closed() => return false,
                _ = ping.tick() => {
                    // A half-open connection (a server that vanished without a FIN) shows
                    // itself only when written to.
                    let alive = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        return true;
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else { return true };
                    let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
                        continue;
                    };
                    for change in payload.lines().filter_map(parse) {
                        if !self.tx.send(change) {
                            return false;
                        }
                    }
                }
            }
        }
    }
}

/// One line of an announcement.
fn parse(line: &str) -> Option<Change> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "k" => {
            let mut parts = rest.splitn(4, ' ');
            let kind = Kind::parse(parts.next()?)?;
            let partition = Partition(parts.next()?.parse().ok()?);
            let revision = Revision(parts.next()?.parse().ok()?);
            let id = parts.next()?.to_owned();
            Some(Change::Record {
                key: Key {
                    kind,
                    id,
                    partition,
                },
                revision,
            })
        }
        "w" => Lane::parse(rest).map(Change::Work),
        "r" => Some(Change::Resync),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_announcements() {
        assert_eq!(
            parse("k prediction 7 3 abc def"),
            Some(Change::Record {
                key: Key {
                    kind: Kind::Prediction,
                    id: "abc def".into(),
                    partition: Partition(7),
                },
                revision: Revision(3)
            })
        );
        assert_eq!(parse("w webhooks"), Some(Change::Work(Lane::Webhooks)));
        assert_eq!(parse("r"), Some(Change::Resync));
        assert_eq!(parse("k nope 1 1 x"), None);
        assert_eq!(parse("w nope"), None);
        assert_eq!(parse("x"), None);
    }
}
