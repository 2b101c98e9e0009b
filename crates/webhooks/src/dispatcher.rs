//! [`Dispatcher`]: drains the durable webhook outbox, signing and POSTing each message and
//! recording every attempt.
//!
//! The store decides what may go: [`Outbox::claim`] hands out, for each
//! prediction, its oldest pending message once it is due, under a lease, so a prediction's
//! messages go one at a time and in order, and several dispatchers (one per node) never send
//! the same message at once. The dispatcher decides what an attempt means
//! ([`crate::classify`]) and when to try again ([`crate::Backoff`]), and reports both through
//! [`Outbox::finish`]:
//!
//! - 2xx: delivered;
//! - 410 Gone: the message and the prediction's later ones are given up;
//! - anything else, a redirect (never followed), a connection error or no answer within
//!   `attempt_timeout`: retried after a backoff, until the message is `max_age` old, then
//!   given up (the prediction's next message goes);
//! - a destination the [`augur_outbound::Policy`] refuses (checked on the URL's address, or
//!   on what its host name resolves to, when connecting): given up at once, recorded only as
//!   "refused: destination not allowed".
//!
//! The delivery log, which the prediction's owner reads, holds only coarse errors ("connect
//! failed", "timed out", the receiver's status), never a connection error's text: it must not
//! tell an open port from a closed one. The detail goes to the operator's log.
//!
//! Delivery is at least once: a dispatcher that dies between the receiver's answer and the
//! record of it leaves a lease that lapses, and the message goes again with the same
//! `webhook-id`, which receivers use to drop duplicates.
//!
//! Enqueueing messages (the service, in the same commit as the transition) and showing the
//! delivery log (the API) are not this module's business.
//!
//! [`Store::claim_deliveries`]: augur_core::store::Store::claim_deliveries
//! [`Outbox::finish`]: augur_core::store::Store::finish_delivery

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_core::outbox::{Delivery, DeliveryLease, DeliveryOutcome, Outbox, Payload};
use augur_core::store::{self, Attempt};
use augur_core::{Timestamp, WorkerId};
use augur_outbound::Failure;
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::policy::{Backoff, Verdict, classify};
use crate::signers::{Signers, signature_header};

/// Renders the body of a message from what it carries (a prediction as
/// `GET /v1/predictions/{id}` shows it, a batch as `GET /v1/batches/{id}`). It must be
/// deterministic: every attempt sends what it returns.
pub type Render = Arc<dyn Fn(&Payload) -> Bytes + Send + Sync>;

/// The `user-agent` of every request.
const USER_AGENT: &str = concat!("augur/", env!("CARGO_PKG_VERSION"));

/// How much of a response body is read (and thrown away) so that the connection can be
/// reused; a longer body closes the connection instead.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Locations longer than this are cut in attempt errors.
const MAX_LOCATION_CHARS: usize = 200;

/// Settings of a [`Dispatcher`].
#[derive(Clone, Debug)]
pub struct DispatcherOptions {
    /// Its identity in delivery leases.
    pub worker_id: WorkerId,
    /// Messages in flight at once (at least 1).
    pub concurrency: usize,
    /// The lease on a claimed message. It must outlast an attempt and its record:
    /// [`Dispatcher::new`] raises it to twice `attempt_timeout` if it is shorter.
    pub lease_for: Duration,
    /// The longest wait between claims when idle; [`DispatcherHandle::wake`] cuts it short.
    pub poll_interval: Duration,
    /// How long one attempt may take, from connecting to the response headers.
    pub attempt_timeout: Duration,
    /// How long to wait before trying a message again.
    pub backoff: Backoff,
    /// A message that fails after it is this old (counted from when it was enqueued) is given
    /// up. A message claimed when already older, after a manual redelivery say, gets one
    /// attempt.
    pub max_age: Duration,
    /// How long shutdown waits for attempts in flight before abandoning them (their leases
    /// lapse and another dispatcher sends them again).
    pub shutdown_grace: Duration,
    /// Where messages may go (the default: public addresses only).
    pub destinations: augur_outbound::Policy,
}

impl Default for DispatcherOptions {
    fn default() -> Self {
        Self {
            worker_id: WorkerId::generate(),
            concurrency: 32,
            lease_for: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            max_age: Duration::from_secs(3 * 24 * 3600),
            shutdown_grace: Duration::from_secs(15),
            destinations: augur_outbound::Policy::default(),
        }
    }
}

/// Why a [`Dispatcher`] cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The HTTP client (its TLS configuration) cannot be set up.
    #[error("cannot build the webhook http client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A cheap handle to a [`Dispatcher`], kept by whoever enqueues messages.
#[derive(Clone, Debug)]
pub struct DispatcherHandle {
    notify: Arc<Notify>,
}

impl DispatcherHandle {
    /// Makes the dispatcher claim now instead of at its next poll: call it after a commit
    /// that enqueued a message. A wake-up while the dispatcher is busy is kept for when it
    /// next waits, so none is lost.
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// Sends the outbox's messages until shut down. Build it with [`Dispatcher::new`], keep a
/// [`Dispatcher::handle`], and spawn [`Dispatcher::run`].
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    outbox: Outbox,
    signers: Arc<dyn Signers>,
    render: Render,
    options: DispatcherOptions,
    client: reqwest::Client,
    notify: Arc<Notify>,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("outbox", &self.inner.outbox)
            .field("signers", &self.inner.signers)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// What an attempt led to, for the `outcome` label of `augur_webhook_attempts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Label {
    Delivered,
    Retried,
    Dropped,
    GaveUp,
}

impl Label {
    fn as_str(self) -> &'static str {
        match self {
            Label::Delivered => "delivered",
            Label::Retried => "retried",
            Label::Dropped => "dropped",
            Label::GaveUp => "gave_up",
        }
    }
}

/// How a request went.
#[derive(Debug)]
enum Sent {
    /// The receiver answered with a status.
    Answered {
        status: StatusCode,
        location: Option<String>,
    },
    /// No answer within the attempt timeout.
    TimedOut,
    /// The request failed (connection refused, TLS, reset): a coarse account of why.
    Failed(String),
    /// The destination policy refused the URL's address or what its host resolves to.
    Refused,
    /// The request cannot be made at all (a bad URL); trying again cannot help.
    Unsendable(String),
}

impl Dispatcher {
    /// A dispatcher over `outbox` that signs with `signers` (a [`crate::WebhookSecret`] for
    /// one secret, [`crate::AccountSigners`] for each account's own) and renders bodies with
    /// `render`.
    pub fn new(
        outbox: Outbox,
        signers: impl Into<Arc<dyn Signers>>,
        render: Render,
        mut options: DispatcherOptions,
    ) -> Result<Self, Error> {
        options.concurrency = options.concurrency.max(1);
        options.lease_for = options.lease_for.max(options.attempt_timeout * 2);
        let client = options
            .destinations
            .client_builder()
            // A redirect would carry a signed body somewhere the owner did not name.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()
            .map_err(Error::Client)?;
        Ok(Self {
            inner: Arc::new(Inner {
                outbox,
                signers: signers.into(),
                render,
                options,
                client,
                notify: Arc::new(Notify::new()),
            }),
        })
    }

    /// A handle to wake the dispatcher.
    pub fn handle(&self) -> DispatcherHandle {
        DispatcherHandle {
            notify: self.inner.notify.clone(),
        }
    }

    /// Claims and sends messages until `shutdown` completes, then stops claiming, lets the
    /// attempts in flight finish (for up to `shutdown_grace`) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let inner = &self.inner;
        let options = &inner.options;
        let mut tasks: JoinSet<Option<Timestamp>> = JoinSet::new();
        // The earliest retry this dispatcher scheduled and has not claimed since: it wakes up
        // for it instead of waiting for the next poll.
        let mut next_retry: Option<Timestamp> = None;
        let mut store_errors: u32 = 0;
        tokio::pin!(shutdown);
        tracing::info!(
            worker = %options.worker_id,
            concurrency = options.concurrency,
            "webhook dispatcher started"
        );
        loop {
            while let Some(done) = tasks.try_join_next() {
                note_retry(&mut next_retry, done);
            }
            let free = options.concurrency.saturating_sub(tasks.len());
            let mut idle = options.poll_interval;
            if free > 0 {
                if next_retry.is_some_and(|at| at <= Timestamp::now()) {
                    next_retry = None;
                }
                match inner
                    .outbox
                    .claim(&options.worker_id, options.lease_for, free)
                    .await
                {
                    Ok(leases) if !leases.is_empty() => {
                        store_errors = 0;
                        for lease in leases {
                            tasks.spawn(inner.clone().deliver(lease));
                        }
                        // A store that answers without suspending (memory) would otherwise
                        // keep this loop on its thread while messages keep coming.
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Ok(_) => store_errors = 0,
                    Err(e) => {
                        store_errors = store_errors.saturating_add(1);
                        idle = store_backoff(options.poll_interval, store_errors);
                        tracing::warn!(error = %e, retry_in = ?idle, "cannot claim webhook deliveries");
                    }
                }
            }
            if store_errors == 0
                && let Some(at) = next_retry
            {
                // One millisecond late rather than early: the store compares with its clock.
                idle = idle.min(at.since(Timestamp::now()) + Duration::from_millis(1));
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = inner.notify.notified() => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    note_retry(&mut next_retry, done);
                }
                _ = tokio::time::sleep(idle) => {}
            }
        }
        tracing::info!(
            in_flight = tasks.len(),
            "webhook dispatcher stopping; finishing attempts in flight"
        );
        let drained = tokio::time::timeout(options.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "webhook attempts did not finish in time; their leases will lapse"
            );
            tasks.abort_all();
        }
        tracing::info!("webhook dispatcher stopped");
    }
}

/// Keeps the earliest retry time reported by a finished task.
fn note_retry(
    next_retry: &mut Option<Timestamp>,
    done: Result<Option<Timestamp>, tokio::task::JoinError>,
) {
    match done {
        Ok(Some(at)) => *next_retry = Some(next_retry.map_or(at, |t| t.min(at))),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "webhook delivery task panicked"),
    }
}

/// The wait after `errors` store errors in a row: the poll interval, doubling, up to 30 s
/// (or the poll interval if that is longer).
fn store_backoff(poll_interval: Duration, errors: u32) -> Duration {
    let cap = poll_interval.max(Duration::from_secs(30));
    poll_interval
        .saturating_mul(1u32 << errors.saturating_sub(1).min(16))
        .min(cap)
}

impl Inner {
    /// Makes one attempt at a claimed message and records it; returns the time of the next
    /// attempt if there is one.
    async fn deliver(self: Arc<Self>, lease: DeliveryLease) -> Option<Timestamp> {
        let delivery = &lease.state.delivery;
        let span = tracing::info_span!(
            "webhook",
            subject = %delivery.subject_id(),
            webhook_id = %delivery.id,
            attempt = lease.state.attempts.len() + 1,
        );
        async {
            let body = (self.render)(&delivery.payload);
            let at = Timestamp::now();
            let started = Instant::now();
            let sent = self.send(delivery, at, body).await;
            let duration = started.elapsed();
            let failed_attempts = u32::try_from(lease.state.attempts.len())
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            let (status, error, outcome, label) = self.decide(delivery, &sent, failed_attempts);
            let attempt = Attempt {
                at,
                status,
                error,
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            };
            metrics::counter!("augur_webhook_attempts_total", "outcome" => label.as_str())
                .increment(1);
            match label {
                Label::Delivered => {
                    let latency = Timestamp::now().since(delivery.created_at);
                    metrics::histogram!("augur_webhook_delivery_latency_seconds")
                        .record(latency.as_secs_f64());
                    tracing::debug!(?status, ?duration, "webhook delivered");
                }
                Label::Retried => tracing::info!(
                    error = attempt.error.as_deref().unwrap_or_default(),
                    ?outcome,
                    "webhook attempt failed; will retry"
                ),
                Label::Dropped | Label::GaveUp => tracing::warn!(
                    error = attempt.error.as_deref().unwrap_or_default(),
                    ?outcome,
                    "webhook message given up"
                ),
            }
            self.finish(&lease, &attempt, outcome).await;
            match outcome {
                DeliveryOutcome::RetryAt(at) => Some(at),
                _ => None,
            }
        }
        .instrument(span)
        .await
    }

    /// POSTs the message, signed for this attempt.
    async fn send(&self, delivery: &Delivery, at: Timestamp, body: Bytes) -> Sent {
        let url = match reqwest::Url::parse(&delivery.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url,
            Ok(url) => {
                return Sent::Unsendable(format!(
                    "webhook url scheme {:?} is not http or https",
                    url.scheme()
                ));
            }
            Err(e) => return Sent::Unsendable(format!("invalid webhook url: {e}")),
        };
        // An address in the URL skips the client's resolver: checked here.
        if let Err(refused) = self.options.destinations.check_url(&url) {
            tracing::info!(
                range = refused.range(),
                "webhook refused: its url names a forbidden address"
            );
            return Sent::Refused;
        }
        let timestamp = at.as_micros().div_euclid(1_000_000);
        let secrets = match self.signers.secrets_for(delivery.payload.owner()).await {
            Ok(secrets) => secrets,
            // Never unsigned: retried like a network failure.
            Err(why) => return Sent::Failed(why),
        };
        let signature = signature_header(&secrets, &delivery.id, timestamp, &body);
        let request = self
            .client
            .post(url)
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let deadline = tokio::time::Instant::now() + self.options.attempt_timeout;
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => return Sent::TimedOut,
            Ok(Err(e)) if e.is_timeout() => return Sent::TimedOut,
            Ok(Err(e)) if e.is_builder() => {
                return Sent::Unsendable(format!("cannot build the request: {}", chain(&e)));
            }
            Ok(Err(e)) => {
                return match Failure::of(&e) {
                    Failure::Refused => Sent::Refused,
                    Failure::TimedOut => Sent::TimedOut,
                    failure => {
                        // The detail (which may say whether a port is open) is for the
                        // operator only.
                        tracing::info!(error = %chain(&e), "webhook request failed");
                        Sent::Failed(failure.to_string())
                    }
                };
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let location = response.headers().get(LOCATION).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(MAX_LOCATION_CHARS)
                .collect()
        });
        drain(response, deadline).await;
        Sent::Answered { status, location }
    }

    /// What an attempt means: its status and error text for the record, and what follows.
    fn decide(
        &self,
        delivery: &Delivery,
        sent: &Sent,
        failed_attempts: u32,
    ) -> (Option<u16>, Option<String>, DeliveryOutcome, Label) {
        let (status, error) = match sent {
            Sent::Answered { status, location } => {
                let code = status.as_u16();
                match classify(code) {
                    Verdict::Delivered => {
                        return (
                            Some(code),
                            None,
                            DeliveryOutcome::Delivered,
                            Label::Delivered,
                        );
                    }
                    Verdict::Drop => {
                        let error = format!(
                            "receiver answered {status}: this and the prediction's later messages are dropped"
                        );
                        let outcome = DeliveryOutcome::GiveUp { drop_rest: true };
                        return (Some(code), Some(error), outcome, Label::Dropped);
                    }
                    Verdict::Retry if status.is_redirection() => {
                        let to = location
                            .as_deref()
                            .unwrap_or("nowhere (no location header)");
                        let error = format!(
                            "receiver answered {status} redirecting to {to}; redirects are not followed"
                        );
                        (Some(code), error)
                    }
                    Verdict::Retry => (Some(code), format!("receiver answered {status}")),
                }
            }
            Sent::TimedOut => (
                None,
                format!(
                    "timed out: no answer within {:?}",
                    self.options.attempt_timeout
                ),
            ),
            Sent::Failed(error) => (None, error.clone()),
            Sent::Unsendable(error) => {
                let outcome = DeliveryOutcome::GiveUp { drop_rest: false };
                return (None, Some(error.clone()), outcome, Label::GaveUp);
            }
            // Trying again cannot help before the operator changes the allowlist (and DNS
            // that answers differently later must not make it a probe).
            Sent::Refused => {
                let outcome = DeliveryOutcome::GiveUp { drop_rest: false };
                let error = Failure::Refused.to_string();
                return (None, Some(error), outcome, Label::GaveUp);
            }
        };
        let now = Timestamp::now();
        let give_up_at = delivery.created_at.plus(self.options.max_age);
        if now >= give_up_at {
            let attempts = if failed_attempts == 1 {
                "1 attempt".to_owned()
            } else {
                format!("{failed_attempts} attempts")
            };
            let error = format!(
                "{error}; gave up after {attempts} (the message is older than {:?})",
                self.options.max_age
            );
            let outcome = DeliveryOutcome::GiveUp { drop_rest: false };
            return (status, Some(error), outcome, Label::GaveUp);
        }
        // The last retry is at the age limit at the latest, so a receiver that comes back
        // just before it still gets the message.
        let retry_at = now
            .plus(self.options.backoff.delay(failed_attempts))
            .min(give_up_at);
        (
            status,
            Some(error),
            DeliveryOutcome::RetryAt(retry_at),
            Label::Retried,
        )
    }

    /// Records the attempt, retrying transient store errors while the lease lasts.
    async fn finish(&self, lease: &DeliveryLease, attempt: &Attempt, outcome: DeliveryOutcome) {
        let mut wait = Duration::from_millis(50);
        loop {
            match self.outbox.finish(lease, attempt, outcome).await {
                Ok(()) => return,
                Err(store::Error::LeaseLost) => {
                    tracing::info!(
                        "webhook lease lost before the attempt was recorded; another dispatcher has the message"
                    );
                    return;
                }
                Err(e) if e.is_retryable() && Timestamp::now().plus(wait) < lease.expires_at() => {
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot record webhook attempt");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "cannot record webhook attempt; the message goes again when its lease lapses"
                    );
                    return;
                }
            }
        }
    }
}

/// Reads and discards a little of the response body, so that the connection can serve the
/// next request; gives up at the attempt's deadline.
async fn drain(mut response: reqwest::Response, deadline: tokio::time::Instant) {
    let _ = tokio::time::timeout_at(deadline, async {
        let mut read = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            if read > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

/// An error and its sources, `: `-separated, without the URL (which may hold a token of the
/// owner's, and is in the delivery record anyway).
fn chain(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut current: Option<&dyn std::error::Error> = Some(error);
    let mut first = true;
    while let Some(e) = current {
        let message = if first {
            // reqwest's own message names the URL; say what it does instead.
            first = false;
            if error.is_connect() {
                "cannot connect".to_owned()
            } else if error.is_request() {
                "request failed".to_owned()
            } else if error.is_body() {
                "cannot send the body".to_owned()
            } else {
                e.to_string()
            }
        } else {
            e.to_string()
        };
        if !text.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
        current = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_backoff_doubles_up_to_a_cap() {
        let poll = Duration::from_secs(1);
        assert_eq!(store_backoff(poll, 1), Duration::from_secs(1));
        assert_eq!(store_backoff(poll, 2), Duration::from_secs(2));
        assert_eq!(store_backoff(poll, 6), Duration::from_secs(30));
        assert_eq!(store_backoff(poll, u32::MAX), Duration::from_secs(30));
        let long = Duration::from_secs(60);
        assert_eq!(store_backoff(long, 3), long);
    }

    #[test]
    fn user_agent_names_the_version() {
        assert!(USER_AGENT.starts_with("augur/"));
        assert!(USER_AGENT.len() > "augur/".len());
    }
}
