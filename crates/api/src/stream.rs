//! `GET /v1/predictions/{id}/stream`: a prediction's live Server-Sent Events, in Replicate's
//! event vocabulary (`output`, `logs`, `error`, `done`) with `id:` lines.
//!
//! The stream URL handed out in `urls.stream` carries the prediction's unguessable stream
//! token, so it works without an `Authorization` header (the JS client sends none); without the
//! token the admin bearer token is required. Events are derived from the changes this process
//! writes or hears of, starting from the prediction's state when the client connects.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use serde::Deserialize;
use serde_json::Value;

use augur_core::hub::Watch;
use augur_core::{Prediction, PredictionId, Secret, Status};

use crate::AppState;
use crate::auth;
use crate::error::{ApiError, ApiResult, AppPath, AppQuery, ErrorCode};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/predictions/{id}/stream", get(stream))
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
    let current = state.service.get(&pid).await?;
    match &params.token {
        Some(token) if Secret::new(current.value.stream_token.clone()).matches(token) => {}
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidToken,
                "the stream token is not valid",
            ));
        }
        None => auth::check(&state, &headers)?,
    }
    let mut tail = Tail {
        watch,
        pending: VecDeque::new(),
        sent_logs: 0,
        sent_items: 0,
        last_output: None,
        done: false,
    };
    tail.diff(&current.value, current.revision.0);
    let events = futures::stream::unfold(tail, |mut tail| async move {
        loop {
            if let Some(event) = tail.pending.pop_front() {
                return Some((Ok(event), tail));
            }
            if tail.done {
                return None;
            }
            let record = tail.watch.changed().await?;
            tail.diff(&record.value, record.revision.0);
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Turns successive states of a prediction into the events a client has not seen yet.
struct Tail {
    watch: Watch,
    pending: VecDeque<Event>,
    /// Bytes of `logs` already sent.
    sent_logs: usize,
    /// Items of an array output already sent.
    sent_items: usize,
    last_output: Option<Value>,
    done: bool,
}

impl Tail {
    fn push(&mut self, revision: u64, name: &str, data: &str) {
        let id = format!("{revision}:{}", self.pending.len());
        self.pending
            .push_back(Event::default().event(name).id(id).data(data));
    }

    fn diff(&mut self, p: &Prediction, revision: u64) {
        if self.done {
            return;
        }
        if p.logs.len() < self.sent_logs || !p.logs.is_char_boundary(self.sent_logs) {
            // The logs were replaced or trimmed at the head: resend from the start.
            self.sent_logs = 0;
        }
        let fresh = p.logs[self.sent_logs..].trim_end_matches('\n').to_owned();
        self.sent_logs = p.logs.len();
        if !fresh.is_empty() {
            self.push(revision, "logs", &fresh);
        }
        if p.output != self.last_output {
            match &p.output {
                Some(Value::Array(items)) => {
                    let start = self.sent_items.min(items.len());
                    for item in &items[start..] {
                        self.push(revision, "output", &output_text(item));
                    }
                    self.sent_items = items.len();
                }
                Some(other) if p.status.is_terminal() || p.status == Status::Processing => {
                    self.push(revision, "output", &output_text(other));
                }
                _ => {}
            }
            self.last_output = p.output.clone();
        }
        if p.status.is_terminal() {
            let done = match p.status {
                Status::Failed => {
                    let error = p.error.as_deref().unwrap_or("prediction failed");
                    self.push(revision, "error", error);
                    r#"{"reason":"error"}"#
                }
                Status::Canceled => r#"{"reason":"canceled"}"#,
                _ => "{}",
            };
            self.push(revision, "done", done);
            self.done = true;
        }
    }
}

/// Strings are sent as they are (tokens, URLs); anything else as JSON.
fn output_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
