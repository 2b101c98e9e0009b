//! Limits every API route shares (model servers' callbacks keep their own): a request body is
//! read to its end even when the handler ignores it, a body declared longer than the route's
//! limit is refused before the handler runs, and a request that takes too long is answered with
//! a timeout. Uploads ([`apply_streaming`]) check their own size as they stream and have no
//! timeout, but what they leave of a refused body is read here like every other route's.
//!
//! Why the body: hyper reuses a connection only once the request's body has been read. A
//! handler that never reads it (`POST .../cancel` sent with `{}`, as many clients do) left
//! hyper to close the connection when the body had not yet arrived with the head, and the
//! client's next request on it failed. [`enforce`] hands the handler a body that, if dropped
//! unread, comes back to the middleware, which reads and throws away the rest (up to the
//! route's limit and [`DRAIN_TIME`]) before the answer goes out; nothing is buffered. A rest
//! too long to read, or a client still waiting for `100 Continue`, gets the answer with
//! `Connection: close` instead, the rest read in the background while it is sent (a lingering
//! close, so the client reads the answer instead of a reset).
//!
//! The timeout covers producing the answer's head, so event streams (`.../stream`,
//! `/v1/events`) and downloads, which answer at once and then stream, run as long as they
//! like; a `Prefer: wait` request gets the longest wait on top.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

/// How long reading an unread rest of a body may take before the answer is sent with
/// `Connection: close` instead.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Puts the shared limits on every route of `routes` so far, with bodies of at most
/// `max_body` bytes.
pub(crate) fn apply(
    routes: Router<AppState>,
    state: &AppState,
    max_body: usize,
) -> Router<AppState> {
    layer(
        routes,
        Limits {
            state: state.clone(),
            max_body: Some(max_body as u64),
            drain_max: max_body as u64,
            timeout: true,
        },
    )
}

/// Puts on `routes` (uploads, which read and check their bodies as they stream them and may
/// take as long as the client needs) only the reading of what a handler leaves of a body: up to
/// `drain_max` bytes are read before the answer, a longer rest is read in the background behind
/// a `Connection: close` answer.
pub(crate) fn apply_streaming(
    routes: Router<AppState>,
    state: &AppState,
    drain_max: u64,
) -> Router<AppState> {
    layer(
        routes,
        Limits {
            state: state.clone(),
            max_body: None,
            drain_max,
            timeout: false,
        },
    )
}

fn layer(routes: Router<AppState>, limits: Limits) -> Router<AppState> {
    routes.route_layer(middleware::from_fn_with_state(limits, enforce))
}

#[derive(Clone)]
struct Limits {
    state: AppState,
    /// A body declared longer is refused before the handler runs.
    max_body: Option<u64>,
    /// The most bytes of an unread rest read before the answer goes out.
    drain_max: u64,
    /// Whether the handler's answer is bounded by the request timeout.
    timeout: bool,
}

/// Refuses a body declared too long, runs the handler within the request timeout, then reads
/// what it left of the body.
async fn enforce(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let declared = declared_length(request.headers());
    let awaits_continue = awaits_continue(request.headers());
    if let Some((length, max)) = declared.zip(limits.max_body).filter(|(n, max)| n > max) {
        let refusal = ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the request body is {length} bytes, longer than this route's limit of {max} bytes"
            ),
        )
        .with("limit", max)
        .into_response();
        let (_, body) = request.into_parts();
        return close_after(
            refusal,
            (!awaits_continue).then_some(body),
            limits.drain_max,
        );
    }
    let timeout = limits
        .timeout
        .then(|| request_timeout(&limits.state, request.headers()));
    if request.body().is_end_stream() {
        return within(timeout, next.run(request)).await;
    }
    let returned = Arc::new(Mutex::new(None));
    let request = request.map(|body| {
        Body::new(Tracked {
            inner: Some(body),
            polled: false,
            returned: returned.clone(),
        })
    });
    let response = within(timeout, next.run(request)).await;
    let unread = returned.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(Unread { body, polled }) = unread else {
        return response;
    };
    if awaits_continue && !polled {
        // hyper sends `100 Continue` only when the body is read: the client has sent nothing
        // and the connection closes cleanly after the answer.
        return close_after(response, None, limits.drain_max);
    }
    let closing = response
        .headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    if closing || body.size_hint().lower() > limits.drain_max {
        // Not worth waiting for (a timed-out request's body, a long one): answer at once.
        return close_after(response, Some(body), limits.drain_max);
    }
    if drain(body, limits.drain_max).await {
        response
    } else {
        close_after(response, None, limits.drain_max)
    }
}

/// The timeout for a request: the configured one, plus the longest wait if it asks to wait.
fn request_timeout(state: &AppState, headers: &HeaderMap) -> Duration {
    let waits = headers.get_all("prefer").iter().any(|v| {
        v.as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"wait"))
    });
    let base = state.config.request_timeout;
    if waits {
        base + state.config.max_wait
    } else {
        base
    }
}

/// `answer`, or a timeout error if it takes longer than `timeout` (if there is one).
async fn within(timeout: Option<Duration>, answer: impl Future<Output = Response>) -> Response {
    let Some(timeout) = timeout else {
        return answer.await;
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request did not finish within {}; retry it",
                    humantime::format_duration(timeout)
                ),
            )
            .with_retry_after(Duration::from_secs(1))
            .into_response();
            // What is left of its body, if anything, is not worth waiting for.
            close(&mut response);
            response
        }
    }
}

/// `response` with `Connection: close`; `rest`, if given, is read and thrown away in the
/// background while the answer is sent.
fn close_after(mut response: Response, rest: Option<Body>, max: u64) -> Response {
    close(&mut response);
    if let Some(rest) = rest {
        tokio::spawn(drain(rest, max));
    }
    response
}

fn close(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// Reads `body` to its end and throws it away, up to `max` bytes and [`DRAIN_TIME`]; true if
/// it ended within both.
async fn drain(body: Body, max: u64) -> bool {
    let read_all = async {
        let mut stream = body.into_data_stream();
        let mut seen = 0u64;
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            match chunk {
                Ok(chunk) => seen += chunk.len() as u64,
                Err(_) => return false,
            }
            if seen > max {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read_all)
        .await
        .unwrap_or(false)
}

/// The body's declared length, if it has one (not chunked).
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn awaits_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// What a handler left of a request body.
struct Unread {
    body: Body,
    /// Whether the handler read any of it (if not, an `Expect: 100-continue` client was never
    /// asked for it).
    polled: bool,
}

/// A request body that, dropped before its end, hands the rest back to [`enforce`].
struct Tracked {
    inner: Option<Body>,
    polled: bool,
    returned: Arc<Mutex<Option<Unread>>>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        this.polled = true;
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        if frame.is_none() {
            this.inner = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(body) = self.inner.take()
            && !body.is_end_stream()
        {
            *self.returned.lock().unwrap_or_else(|e| e.into_inner()) = Some(Unread {
                body,
                polled: self.polled,
            });
        }
    }
}
