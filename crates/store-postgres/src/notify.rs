//! Change announcements over `LISTEN`/`NOTIFY`: the payloads the store sends with `pg_notify`
//! once a write committed, and the listener behind
//! [`AdminStore::subscribe`](augur_core::store::AdminStore::subscribe).
//!
//! Each subscription holds one dedicated connection (a pooled one would be handed to others
//! between queries and miss notifications). When it breaks, the listener reconnects with
//! backoff and yields [`Change::Resync`], since notifications sent meanwhile are lost; it also
//! checks the connection with a query every [`HEALTH_CHECK`], so a silently dead peer is
//! noticed too. The stream ends when the store is closed.

use std::time::Duration;

use augur_core::Revision;
use augur_core::store::{Change, Key, Kind, Lane, Partition};
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::config::PostgresOptions;
use crate::error::Error;

/// The payload telling every node to refresh everything (after an import).
pub(crate) const RESYNC: &str = "r";

/// The payload announcing a change: `k:<revision>:<partition>:<kind>:<id>` for a record,
/// `w:<lane>` for claimable work, [`RESYNC`].
pub(crate) fn payload(change: &Change) -> String {
    match change {
        Change::Record { key, revision } => {
            format!(
                "k:{}:{}:{}:{}",
                revision.0, key.partition.0, key.kind, key.id
            )
        }
        Change::Work(lane) => format!("w:{lane}"),
        Change::Resync => RESYNC.to_owned(),
    }
}

/// How often an idle listener checks that its connection still works.
const HEALTH_CHECK: Duration = Duration::from_secs(15);
/// Announcements buffered for a slow consumer before the listener reports a gap instead.
const BUFFER: usize = 4096;

/// Parses a payload; `None` for one this build does not know (a newer node's), which the
/// caller turns into a resync to be safe.
pub(crate) fn parse_payload(payload: &str) -> Option<Change> {
    if payload == RESYNC {
        return Some(Change::Resync);
    }
    if let Some(lane) = payload.strip_prefix("w:") {
        return Lane::parse(lane).map(Change::Work);
    }
    let mut parts = payload.strip_prefix("k:")?.splitn(4, ':');
    let revision = Revision(parts.next()?.parse().ok()?);
    let partition = Partition(parts.next()?.parse().ok()?);
    let kind = Kind::parse(parts.next()?)?;
    let id = parts.next().filter(|id| !id.is_empty())?;
    Some(Change::Record {
        key: Key {
            kind,
            id: id.to_owned(),
            partition,
        },
        revision,
    })
}

/// Opens a listening connection and returns the stream of its announcements. Fails if the
/// first connection cannot be made; later failures reconnect in the background.
pub(crate) async fn subscribe(
    options: PostgresOptions,
    closed: watch::Receiver<bool>,
) -> Result<mpsc::Receiver<Change>, Error> {
    let channel = options.channel();
    let first = listen(&options, &channel).await?;
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(run(options, channel, first, tx, closed));
    Ok(rx)
}

/// A listening connection: the client (kept to run health checks, and because dropping it
/// closes the connection) and the messages the connection task forwards.
struct Listening {
    client: Client,
    messages: mpsc::UnboundedReceiver<Result<AsyncMessage, tokio_postgres::Error>>,
}

async fn listen(options: &PostgresOptions, channel: &str) -> Result<Listening, Error> {
    let (client, mut connection) = options.pg_config("listener").connect(NoTls).await?;
    let (tx, messages) = mpsc::unbounded_channel();
    // The connection is driven by its own task, which forwards notifications and ends (closing
    // `messages`) when the connection does.
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            let failed = message.is_err();
            if tx.send(message).is_err() || failed {
                break;
            }
        }
    });
    // The channel name is `<schema>_changes`, a plain identifier.
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    Ok(Listening { client, messages })
}

async fn run(
    options: PostgresOptions,
    channel: String,
    first: Listening,
    tx: mpsc::Sender<Change>,
    mut closed: watch::Receiver<bool>,
) {
    let mut current = Some(first);
    let mut backoff = Duration::from_millis(50);
    loop {
        let listening = match current.take() {
            Some(l) => l,
            None => {
                // Reconnect, with backoff, until it works or nobody listens any more.
                let attempt = tokio::select! {
                    _ = tx.closed() => return,
                    _ = until_closed(&mut closed) => return,
                    attempt = listen(&options, &channel) => attempt,
                };
                match attempt {
                    Ok(l) => {
                        tracing::info!(channel, "change listener reconnected");
                        backoff = Duration::from_millis(50);
                        // Whatever was announced while disconnected is lost.
                        if tx.send(Change::Resync).await.is_err() {
                            return;
                        }
                        l
                    }
                    Err(e) => {
                        tracing::warn!(channel, error = %e, ?backoff, "change listener cannot reconnect");
                        let jitter = Duration::from_millis(rand::random::<u64>() % 50);
                        tokio::select! {
                            _ = tx.closed() => return,
                            _ = until_closed(&mut closed) => return,
                            _ = tokio::time::sleep(backoff + jitter) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
        };
        match forward(listening, &tx, &mut closed).await {
            Ended::Consumer => return,
            Ended::Connection(reason) => {
                tracing::warn!(
                    channel,
                    reason,
                    "change listener lost its connection; reconnecting"
                );
            }
        }
    }
}

/// Completes when the store is closed or dropped.
async fn until_closed(closed: &mut watch::Receiver<bool>) {
    // An error means the store is gone, which ends subscriptions too.
    let _ = closed.wait_for(|c| *c).await;
}

enum Ended {
    /// The stream was dropped or the store closed: stop.
    Consumer,
    /// The connection failed: reconnect.
    Connection(String),
}

/// Forwards notifications until the connection fails or nobody listens any more.
async fn forward(
    mut listening: Listening,
    tx: &mpsc::Sender<Change>,
    closed: &mut watch::Receiver<bool>,
) -> Ended {
    let mut check = tokio::time::interval(HEALTH_CHECK);
    check.reset();
    loop {
        let message = tokio::select! {
            _ = tx.closed() => return Ended::Consumer,
            _ = until_closed(closed) => return Ended::Consumer,
            _ = check.tick() => {
                let probe = listening.client.simple_query("SELECT 1");
                match tokio::time::timeout(HEALTH_CHECK, probe).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => return Ended::Connection(e.to_string()),
                    Err(_) => return Ended::Connection("health check timed out".into()),
                }
            }
            message = listening.messages.recv() => message,
        };
        let notification = match message {
            Some(Ok(AsyncMessage::Notification(n))) => n,
            Some(Ok(AsyncMessage::Notice(notice))) => {
                tracing::debug!(message = notice.message(), "notice on the change listener");
                continue;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Ended::Connection(e.to_string()),
            None => return Ended::Connection("connection closed".into()),
        };
        let change = parse_payload(notification.payload()).unwrap_or_else(|| {
            tracing::debug!(payload = notification.payload(), "unknown announcement");
            Change::Resync
        });
        match tx.try_send(change) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Ended::Consumer,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The consumer is far behind: drop announcements and tell it to resync once it
                // catches up, rather than buffer without bound.
                while let Some(Some(Ok(_))) = listening.messages.recv().now_or_never() {}
                if tx.send(Change::Resync).await.is_err() {
                    return Ended::Consumer;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let changes = [
            Change::Work(Lane::Jobs),
            Change::Work(Lane::Webhooks),
            Change::Resync,
            Change::Record {
                key: Key::new(Kind::Prediction, "abc-1"),
                revision: Revision(7),
            },
            Change::Record {
                key: Key::new(Kind::IdempotencyKey, "admin/0f:1e"),
                revision: Revision(1),
            },
        ];
        for change in changes {
            assert_eq!(parse_payload(&payload(&change)), Some(change.clone()));
        }
        for bad in [
            "",
            "w",
            "w:nope",
            "k:",
            "k:x:1:prediction:a",
            "k:1:1:prediction:",
            "z",
        ] {
            assert_eq!(parse_payload(bad), None, "{bad}");
        }
    }
}
