//! `GET /v1/predictions/{id}/stream`: a prediction's live Server-Sent Events, in Replicate's
//! event vocabulary (`output`, `logs`, `error`, `done`) with `id:` lines, read from the
//! prediction's durable event log and resumable with `Last-Event-ID`.
//!
//! The stream URL handed out in `urls.stream` carries the prediction's unguessable stream
//! token, so it works without an `Authorization` header (the JS client sends none); without the
//! token a bearer token that may see the prediction is required. Whatever is missing or wrong
//! (no such prediction, a wrong stream token, no credentials, another account's token), the
//! answer is the same 404, so the route tells nobody which ids exist. Events are appended to the store's event log in
//! the same write as the change that made them (see [`augur_core::notices`]), so a client that
//! reconnects with the last `id:` it saw, to this node after a restart or to another node,
//! gets every later event exactly once, in order. Waiting for new events is woken by this
//! node's change notifications (which carry other nodes' writes where the store announces
//! them) and re-checks the log every second regardless. The log keeps output files as
//! `/files/<key>` references; they are sent as absolute URLs under the current public URL.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Extension, Router};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;

use augur_core::hub::Watch;
use augur_core::notices;
use augur_core::store::{StreamEvent, StreamEventKind};
use augur_core::{Caller, Prediction, PredictionId, Revision, Secret};

use crate::AppState;
use crate::auth;
use crate::error::{ApiError, ApiResult, AppPath, AppQuery, ErrorCode};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/predictions/{id}/stream", get(stream))
}

/// `GET /v1/events`, behind the bearer token.
pub(crate) fn account_routes() -> Router<AppState> {
    Router::new().route("/v1/events", get(account_events))
}

/// Every change of the account's predictions as it happens, one `prediction` event each
/// (`id: <prediction id>:<revision>`, the prediction's JSON as data), from the moment of
/// connecting; not resumable. On a shared store, changes other nodes make arrive through the
/// store's announcements. A client too slow to keep up gets a `lagged` event saying how
/// many changes it missed (re-list with `GET /v1/predictions` to catch up).
async fn account_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.service.hub().subscribe_all();
    let events = futures::stream::unfold((state, rx), move |(state, mut rx)| {
        let caller = caller.clone();
        async move {
            let event = loop {
                match rx.recv().await {
                    Ok(record) if !caller.may_see(&record.value.owner) => continue,
                    Ok(record) => {
                        let body = state.rendered.json(
                            &state.config.public_url,
                            &record.value,
                            record.revision,
                        );
                        break Event::default()
                            .event("prediction")
                            .id(format!("{}:{}", record.value.id, record.revision.0))
                            .data(String::from_utf8_lossy(&body));
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        break Event::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{missed}}}"));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            };
            Some((Ok(event), (state, rx)))
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[derive(Debug, Deserialize)]
struct StreamParams {
    token: Option<String>,
}

async fn stream(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    AppQuery(params): AppQuery<StreamParams>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let not_found = || {
        ApiError::new(
            ErrorCode::PredictionNotFound,
            format!("prediction {id:?} not found"),
        )
    };
    let pid = PredictionId::parse(&id).map_err(|_| not_found())?;
    // Subscribe before reading, so no change between the read and the subscription is missed.
    let watch = state.service.watch(&pid);
    let current = match state.service.get(&pid).await {
        Ok(current) => current,
        Err(augur_core::Error::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let allowed = match &params.token {
        Some(token) => Secret::new(current.value.stream_token.clone()).matches(token),
        None => auth::check(&state, &headers)
            .await
            .is_ok_and(|caller| caller.may_see(&current.value.owner)),
    };
    if !allowed {
        return Err(not_found());
    }
    let after = last_event_id(&headers)?;
    let follow = Follow {
        state: state.clone(),
        id: pid,
        after,
        watch,
        latest: current.value,
        pending: VecDeque::new(),
        first_read: true,
        done: false,
    };
    let events = futures::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok(event), follow))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// How many events one read of the log takes.
const PAGE: usize = 256;

/// How often a waiting stream re-reads the log without a notification.
const RECHECK: Duration = Duration::from_secs(1);

/// The position after which to resume: the `Last-Event-ID` header, `revision:index` as sent
/// in `id:` lines.
fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<(Revision, u32)>> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidHeader,
            "Last-Event-ID must be an id this stream sent (revision:index)",
        )
    };
    let text = value.to_str().map_err(|_| invalid())?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let (revision, index) = text.split_once(':').ok_or_else(invalid)?;
    let revision = revision.parse::<u64>().map_err(|_| invalid())?;
    let index = index.parse::<u32>().map_err(|_| invalid())?;
    Ok(Some((Revision(revision), index)))
}

/// One client's position in a prediction's event log.
struct Follow {
    state: AppState,
    id: PredictionId,
    /// The last event sent (or the client's `Last-Event-ID`).
    after: Option<(Revision, u32)>,
    watch: Watch,
    /// The latest state seen, to know when nothing more can come.
    latest: Prediction,
    pending: VecDeque<StreamEvent>,
    first_read: bool,
    done: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.after = Some((event.revision, event.index));
                if event.event.kind == StreamEventKind::Done {
                    self.done = true;
                }
                return Some(sse(&self.state.config.public_url, &event));
            }
            if self.done {
                return None;
            }
            let settled = self.latest.is_terminal();
            match self
                .state
                .service
                .read_events(&self.id, self.after, PAGE)
                .await
            {
                Ok(events) if !events.is_empty() => {
                    self.first_read = false;
                    self.pending.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(prediction_id = %self.id, error = %e, "cannot read the event log; ending the stream");
                    return None;
                }
            }
            if settled {
                if self.first_read && self.after.is_none() {
                    // Settled with no log: its data expired, or it predates the log. Tell
                    // what the record still says.
                    self.first_read = false;
                    self.pending.extend(
                        notices::stream_events(None, &self.latest)
                            .into_iter()
                            .enumerate()
                            .map(|(i, event)| StreamEvent {
                                revision: Revision(0),
                                index: i as u32,
                                event,
                            }),
                    );
                    continue;
                }
                // The terminal write appended the last events with it: all sent.
                return None;
            }
            self.first_read = false;
            match tokio::time::timeout(RECHECK, self.watch.changed()).await {
                Ok(Some(record)) => self.latest = record.value.clone(),
                Ok(None) => return None,
                Err(_) => match self.state.service.get(&self.id).await {
                    Ok(record) => self.latest = record.value,
                    Err(e) => {
                        tracing::debug!(prediction_id = %self.id, error = %e, "stream ends");
                        return None;
                    }
                },
            }
        }
    }
}

/// An event of the log as SSE; `output` events show output files as absolute URLs under
/// `public_url` (the log keeps `/files/<key>` references, [`augur_core::output`]).
fn sse(public_url: &str, event: &StreamEvent) -> Event {
    let data = match event.event.kind {
        StreamEventKind::Output => {
            augur_core::output::render_event_text(public_url, &event.event.data)
        }
        _ => std::borrow::Cow::Borrowed(event.event.data.as_str()),
    };
    Event::default()
        .event(event.event.kind.as_str())
        .id(format!("{}:{}", event.revision.0, event.index))
        .data(data)
}
