//! The HTTP listener: accepts connections up to a cap and serves each with hyper, closing
//! connections whose client is slow to send a request's head or that sit idle, and stopping
//! gracefully. Also [`HttpConfig`], the settings of all that and of the operations endpoints.
//!
//! The timeouts follow Go's `net/http` split: a connection waiting for its next request may sit
//! idle for [`HttpConfig::idle_timeout`]; once the first byte of a request arrives, its line and
//! headers must be complete within [`HttpConfig::header_read_timeout`]. A request being served
//! is not timed here (the API bounds it, see `augur_api`'s request timeout), so event streams
//! and `Prefer: wait` run on. hyper's own header timeout is not used: it starts as soon as a
//! connection is idle, so it cannot tell a slow head from a pooled keep-alive connection.
//!
//! The cap: when [`HttpConfig::max_connections`] connections are open, the listener stops
//! accepting and new connections wait in the kernel's backlog until one closes. As every
//! connection that is not being served is closed within the two timeouts, clients that hold
//! connections without sending complete requests free their places within
//! `idle_timeout + header_read_timeout` at most, and a default cap far above what a node
//! serves keeps ordinary clients from waiting at all.

use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::body::Body;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use augur_core::Secret;

use crate::config::humantime_serde_compat;

/// Settings of the HTTP listener and the operations endpoints (`[http]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// How long a client has to send a request's line and headers once it has sent the first
    /// byte of them (`AUGUR_HEADER_READ_TIMEOUT`).
    #[serde(with = "humantime_serde_compat")]
    pub header_read_timeout: Duration,
    /// How long a connection may wait for its next request (`AUGUR_IDLE_TIMEOUT`).
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    /// Connections open at once; more wait to be accepted (`AUGUR_MAX_CONNECTIONS`). Keep it
    /// below the process's file limit (`ulimit -n`).
    pub max_connections: usize,
    /// How long a request may take to be answered (`AUGUR_REQUEST_TIMEOUT`); a `Prefer: wait`
    /// gets its wait on top, event streams and downloads run on once answered, and uploads
    /// are not bounded by it.
    #[serde(with = "humantime_serde_compat")]
    pub request_timeout: Duration,
    /// A bearer token for `/metrics` and `/readyz`'s detail (`AUGUR_OPS_TOKEN`); the admin
    /// token works too.
    pub ops_token: Option<Secret>,
    /// A second address serving `/healthz`, `/readyz` and `/metrics` to anyone who reaches it
    /// (`AUGUR_OPS_LISTEN`), e.g. a private interface for the metrics scraper.
    pub ops_listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            request_timeout: Duration::from_secs(30),
            ops_token: None,
            ops_listen: None,
        }
    }
}

impl HttpConfig {
    /// Applies the `AUGUR_*` variables this owns.
    pub(crate) fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        for (key, field) in [
            ("AUGUR_HEADER_READ_TIMEOUT", &mut self.header_read_timeout),
            ("AUGUR_IDLE_TIMEOUT", &mut self.idle_timeout),
            ("AUGUR_REQUEST_TIMEOUT", &mut self.request_timeout),
        ] {
            if let Some(v) = var(key) {
                *field = humantime::parse_duration(&v)
                    .with_context(|| format!("{key} must be a duration such as 10s, got {v:?}"))?;
            }
        }
        if let Some(v) = var("AUGUR_MAX_CONNECTIONS") {
            self.max_connections = v
                .parse()
                .with_context(|| format!("AUGUR_MAX_CONNECTIONS must be a number, got {v:?}"))?;
        }
        if let Some(v) = var("AUGUR_OPS_TOKEN") {
            self.ops_token = Some(Secret::new(v));
        }
        if let Some(v) = var("AUGUR_OPS_LISTEN") {
            self.ops_listen = Some(
                v.parse()
                    .with_context(|| format!("AUGUR_OPS_LISTEN must be host:port, got {v:?}"))?,
            );
        }
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("http.header_read_timeout", self.header_read_timeout),
            ("http.idle_timeout", self.idle_timeout),
            ("http.request_timeout", self.request_timeout),
        ] {
            if value < Duration::from_millis(100) {
                bail!("{name} must be at least 100ms");
            }
        }
        if self.max_connections == 0 {
            bail!("http.max_connections must be at least 1");
        }
        if let Some(token) = &self.ops_token
            && token.expose().len() < 16
        {
            bail!("the operations token (AUGUR_OPS_TOKEN) must be at least 16 characters");
        }
        Ok(())
    }

    /// Who may read the operations endpoints' detail on the API's listener bound to `bound`:
    /// everyone when it is on loopback and neither an operations token nor an operations
    /// listener is configured; otherwise callers with the operations or the admin token.
    pub fn ops_access(&self, bound: SocketAddr) -> augur_api::ops::OpsAccess {
        augur_api::ops::OpsAccess {
            open: bound.ip().is_loopback() && self.ops_token.is_none() && self.ops_listen.is_none(),
            token: self.ops_token.clone(),
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled; then stops accepting and waits for
/// the open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    stop: CancellationToken,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let timeouts = Timeouts {
        header: config.header_read_timeout,
        idle: config.idle_timeout,
    };
    let connections = TaskTracker::new();
    let mut warned: Option<Instant> = None;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(
                        limit = config.max_connections,
                        "the connection limit is reached; new connections wait"
                    );
                    warned = Some(Instant::now());
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    permit = slots.clone().acquire_owned() => {
                        permit.expect("the semaphore is never closed")
                    }
                }
            }
        };
        let (stream, _peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // A connection reset before it was accepted is the client's business; out
                    // of file descriptors, wait for some to close.
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            app.clone(),
            timeouts,
            stop.clone(),
            permit,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

#[derive(Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

/// Serves one connection until it ends, is timed out, or the server stops.
async fn connection(
    stream: TcpStream,
    app: Router,
    timeouts: Timeouts,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let clock = Arc::new(Clock::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        clock: clock.clone(),
    });
    let service = hyper::service::service_fn({
        let clock = clock.clone();
        move |request: hyper::Request<Incoming>| {
            let serving = clock.begin();
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await;
                response.map(|r| {
                    r.map(|body| {
                        Body::new(Serving {
                            body,
                            _serving: serving,
                        })
                    })
                })
            }
        }
    });
    let mut conn = pin!(
        hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, service)
    );
    let mut closing = false;
    let expired = clock.clone().expired(timeouts);
    let mut expired = pin!(expired);
    let mut stopped = pin!(stop.cancelled_owned());
    let mut closing_deadline = pin!(tokio::time::sleep(timeouts.header));
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut stopped, if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
                closing_deadline.as_mut().reset(Instant::now() + timeouts.header);
            }
            expiry = &mut expired, if !closing => match expiry {
                Expiry::Head => {
                    tracing::debug!("closing a connection whose request head did not arrive in time");
                    return;
                }
                Expiry::Idle => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    closing_deadline.as_mut().reset(Instant::now() + timeouts.header);
                }
            },
            // A connection told to close that is still not serving anything after that long is
            // a client dribbling a request head: cut it.
            () = &mut closing_deadline, if closing && clock.idle() => return,
        }
    }
}

/// Why a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// A request's head started but did not finish in time.
    Head,
    /// No request came in time.
    Idle,
}

/// What one connection is doing, as its I/O and its requests report it.
struct Clock {
    start: Instant,
    /// Requests whose answers are not yet sent.
    serving: AtomicUsize,
    /// When the first byte of the next request's head came (milliseconds after `start`, plus
    /// one); 0: none yet.
    head_since: AtomicU64,
    /// When the connection last became idle (milliseconds after `start`, plus one).
    idle_since: AtomicU64,
    changed: Notify,
}

impl Clock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            serving: AtomicUsize::new(0),
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(1),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn idle(&self) -> bool {
        self.serving.load(Ordering::Acquire) == 0
    }

    /// Bytes came in.
    fn read(&self) {
        if self.idle()
            && self.head_since.load(Ordering::Acquire) == 0
            && self
                .head_since
                .compare_exchange(0, self.now(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.changed.notify_waiters();
        }
    }

    /// A request's head was read; the guard ends its service when its answer is sent.
    fn begin(self: &Arc<Self>) -> ServingGuard {
        self.serving.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        self.changed.notify_waiters();
        ServingGuard(self.clone())
    }

    /// Completes when the connection has been idle, or its next request's head incomplete,
    /// for too long.
    async fn expired(self: Arc<Self>, timeouts: Timeouts) -> Expiry {
        loop {
            let changed = self.changed.notified();
            let mut changed = pin!(changed);
            changed.as_mut().enable();
            if !self.idle() {
                changed.await;
                continue;
            }
            let head = self.head_since.load(Ordering::Acquire);
            let (since, limit, expiry) = if head != 0 {
                (head, timeouts.header, Expiry::Head)
            } else {
                (
                    self.idle_since.load(Ordering::Acquire),
                    timeouts.idle,
                    Expiry::Idle,
                )
            };
            let deadline = self.start + Duration::from_millis(since - 1) + limit;
            if Instant::now() >= deadline {
                return expiry;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = changed => {}
            }
        }
    }
}

/// Held while a request is served; marks the connection idle when the last one ends.
struct ServingGuard(Arc<Clock>);

impl Drop for ServingGuard {
    fn drop(&mut self) {
        if self.0.serving.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(self.0.now(), Ordering::Release);
            self.0.changed.notify_waiters();
        }
    }
}

/// An answer's body; the request is served until it has been sent (or dropped).
struct Serving {
    body: Body,
    _serving: ServingGuard,
}

impl HttpBody for Serving {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket that tells its [`Clock`] when bytes come in.
struct Watched {
    inner: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.clock.read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_open_on_loopback_only_until_a_token_or_listener_is_configured() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let mut config = HttpConfig::default();
        assert!(config.ops_access(loopback).open);
        assert!(config.ops_access(v6).open);
        assert!(!config.ops_access(everywhere).open);
        config.ops_listen = Some("127.0.0.1:9090".parse().unwrap());
        assert!(!config.ops_access(loopback).open);
        config.ops_listen = None;
        config.ops_token = Some(Secret::new("ops-token-0123456789"));
        let access = config.ops_access(loopback);
        assert!(!access.open);
        assert!(access.token.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout_and_a_started_head_sooner() {
        let timeouts = Timeouts {
            header: Duration::from_secs(2),
            idle: Duration::from_secs(60),
        };
        let clock = Arc::new(Clock::new());
        let idle = tokio::spawn(clock.clone().expired(timeouts));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!idle.is_finished());
        idle.abort();

        // A request is served for longer than both timeouts: nothing expires.
        let serving = clock.begin();
        let busy = tokio::spawn(clock.clone().expired(timeouts));
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!busy.is_finished());
        drop(serving);
        // Then idle again, and a head starts: it has the header timeout.
        clock.read();
        let started = Instant::now();
        assert_eq!(busy.await.unwrap(), Expiry::Head);
        assert!(started.elapsed() <= Duration::from_secs(3));
    }
}
