//! What a change of a prediction tells the world: the stream events it appends to the
//! prediction's durable event log and the webhook message it puts in the outbox.
//!
//! Both are derived here from the record before and after a write, and committed by
//! [`crate::Predictions`] in the same atomic write as the change itself, so that a crash can
//! neither lose them nor send them for a change that did not happen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::id::PredictionId;
use crate::outbox::Delivery;
use crate::prediction::{Prediction, WebhookEvent};
use crate::state::Status;
use crate::store::{self, Effect, StreamEventData, StreamEventKind};
use crate::time::Timestamp;

/// At most one `output` or `logs` webhook per prediction per this long, as Replicate does.
/// Later changes ride on the next message (each carries the whole prediction).
pub const PROGRESS_WEBHOOK_INTERVAL: Duration = Duration::from_millis(500);

/// The stream events a write from `prev` (none for a create) to `next` makes, in Replicate's
/// vocabulary: new log text, new output items (or the new output), an `error` if it failed,
/// and `done` once it settled.
pub fn stream_events(prev: Option<&Prediction>, next: &Prediction) -> Vec<StreamEventData> {
    let mut events = Vec::new();
    let fresh_logs = fresh_logs(prev, next).trim_end_matches('\n');
    if !fresh_logs.is_empty() {
        events.push(event(StreamEventKind::Logs, fresh_logs.to_owned()));
    }
    let prev_output = prev.and_then(|p| p.output.as_ref());
    if next.output.as_ref() != prev_output {
        match (&next.output, prev_output) {
            (Some(Value::Array(items)), Some(Value::Array(before)))
                if items.starts_with(before) =>
            {
                for item in &items[before.len()..] {
                    events.push(event(StreamEventKind::Output, output_text(item)));
                }
            }
            (Some(Value::Array(items)), _) => {
                for item in items {
                    events.push(event(StreamEventKind::Output, output_text(item)));
                }
            }
            (Some(other), _) => events.push(event(StreamEventKind::Output, output_text(other))),
            (None, _) => {}
        }
    }
    let was_terminal = prev.is_some_and(|p| p.is_terminal());
    if next.is_terminal() && !was_terminal {
        let done = match next.status {
            Status::Failed => {
                let error = next.error.as_deref().unwrap_or("prediction failed");
                events.push(event(StreamEventKind::Error, error.to_owned()));
                r#"{"reason":"error"}"#
            }
            Status::Canceled => r#"{"reason":"canceled"}"#,
            _ => "{}",
        };
        events.push(event(StreamEventKind::Done, done.to_owned()));
    }
    events
}

/// The log text `next` has that `prev` had not: what follows the end of `prev`'s window in
/// `next`'s (the windows are placed by `logs_start`, so this holds once the head is being
/// dropped too), or all of `next`'s window if it does not continue `prev`'s (replaced).
fn fresh_logs<'a>(prev: Option<&Prediction>, next: &'a Prediction) -> &'a str {
    let Some(prev) = prev else {
        return &next.logs;
    };
    let continued = || {
        // Both in `next`'s window: where `prev`'s ends, and where their overlap starts.
        let end = usize::try_from(
            (prev.logs_start + prev.logs.len() as u64).checked_sub(next.logs_start)?,
        )
        .ok()?;
        let skip = usize::try_from(next.logs_start.checked_sub(prev.logs_start)?).ok()?;
        let overlap = prev.logs.get(skip..)?;
        (next.logs.get(..end)? == overlap).then(|| &next.logs[end..])
    };
    continued().unwrap_or(&next.logs)
}

fn event(kind: StreamEventKind, data: String) -> StreamEventData {
    StreamEventData { kind, data }
}

/// Strings are sent as they are (tokens, URLs); anything else as JSON.
pub fn output_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The webhook event a write from `prev` (none for a create) to `next` announces, if any:
/// `start` when created, `completed` when it settles, else `output` or `logs` when those
/// changed. One message per write; each carries the whole prediction.
pub fn webhook_event(prev: Option<&Prediction>, next: &Prediction) -> Option<WebhookEvent> {
    let Some(prev) = prev else {
        return Some(WebhookEvent::Start);
    };
    if next.is_terminal() && !prev.is_terminal() {
        Some(WebhookEvent::Completed)
    } else if next.is_terminal() {
        None
    } else if next.output != prev.output {
        Some(WebhookEvent::Output)
    } else if next.logs != prev.logs {
        Some(WebhookEvent::Logs)
    } else {
        None
    }
}

/// Derives the effects that announce a write: stream events always, a webhook message when
/// the prediction has a webhook, the event is in its filter, and (for `output` and `logs`)
/// the last such message of this prediction from this process is old enough.
///
/// The throttling state is bounded by time, not by who settles the prediction: an entry older
/// than [`PROGRESS_WEBHOOK_INTERVAL`] no longer throttles anything, and such entries are
/// dropped at most once per interval, so a prediction that another node settled (or that
/// this node stopped hearing about) is forgotten too.
#[derive(Debug, Default)]
pub struct Notices {
    /// When each running prediction last had an `output`/`logs` message, for throttling.
    last_progress: Mutex<Progress>,
}

#[derive(Debug, Default)]
struct Progress {
    last: HashMap<PredictionId, Instant>,
    /// When entries past the interval were last dropped.
    pruned_at: Option<Instant>,
}

impl Progress {
    /// Drops entries that no longer throttle, at most once per interval (so the scan costs
    /// O(1) per message, amortised).
    fn forget_stale(&mut self, now: Instant) {
        if self
            .pruned_at
            .is_some_and(|at| now.duration_since(at) < PROGRESS_WEBHOOK_INTERVAL)
        {
            return;
        }
        self.pruned_at = Some(now);
        self.last
            .retain(|_, at| now.duration_since(*at) < PROGRESS_WEBHOOK_INTERVAL);
    }
}

impl Notices {
    /// The effects announcing the write from `prev` to `next`. `replaced` is the revision
    /// the write replaces (0 for a create): with the prediction id it names the message, so
    /// a message id is unique and the same for every attempt.
    pub fn effects(
        &self,
        prev: Option<&Prediction>,
        next: &Prediction,
        replaced: u64,
    ) -> store::Result<Vec<Effect>> {
        if next.is_terminal() && next.webhook.is_some() {
            // No progress message can follow: its throttling state ends here, whatever the
            // filter says.
            self.forget(&next.id);
        }
        let mut effects = Vec::with_capacity(2);
        let events = stream_events(prev, next);
        if !events.is_empty() {
            effects.push(Effect::AppendEvents {
                stream: next.id.key(),
                events,
            });
        }
        let (Some(url), Some(kind)) = (&next.webhook, webhook_event(prev, next)) else {
            return Ok(effects);
        };
        if !next.webhook_events_filter.contains(kind) || !self.may_send(&next.id, kind) {
            return Ok(effects);
        }
        let message = Delivery::for_prediction(
            format!("msg_{}_{replaced}", next.id),
            url.clone(),
            kind,
            next.clone(),
            Timestamp::now(),
        );
        effects.push(message.enqueue(&next.owner)?);
        Ok(effects)
    }

    /// Whether a message of `kind` may go now; progress messages are throttled.
    fn may_send(&self, id: &PredictionId, kind: WebhookEvent) -> bool {
        if !matches!(kind, WebhookEvent::Output | WebhookEvent::Logs) {
            return true;
        }
        let mut progress = self.last_progress.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        progress.forget_stale(now);
        match progress.last.get(id) {
            Some(at) if now.duration_since(*at) < PROGRESS_WEBHOOK_INTERVAL => false,
            _ => {
                progress.last.insert(id.clone(), now);
                true
            }
        }
    }

    /// Forgets the throttling state of a prediction: once it settles, or when a write did not
    /// commit the message it was allowed (lost compare-and-set), so the retry may send it.
    pub fn forget(&self, id: &PredictionId) {
        self.last_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::id::{AccountId, ModelName};
    use crate::prediction::WebhookEvents;
    use crate::store::decode_json;

    fn prediction() -> Prediction {
        Prediction::new(
            PredictionId::generate(),
            AccountId::admin(),
            ModelName::parse("augur/echo").unwrap(),
            "v".into(),
            json!({}),
        )
    }

    fn kinds(events: &[StreamEventData]) -> Vec<(StreamEventKind, &str)> {
        events.iter().map(|e| (e.kind, e.data.as_str())).collect()
    }

    #[test]
    fn logs_past_the_window_are_sent_as_what_is_new() {
        use crate::state::{Event, Logs};
        let a = prediction();
        let big = "x".repeat(crate::prediction::MAX_LOGS_BYTES) + "\n";
        let step = |p: &Prediction, logs: Logs| match p
            .apply(&Event::processing().with_logs(logs), Timestamp::now())
        {
            Ok(crate::state::Applied::Changed(next)) => *next,
            other => panic!("{other:?}"),
        };
        let b = step(&a, Logs::Append(big.clone()));
        assert_eq!(b.logs_start, 1);
        let c = step(&b, Logs::Append("one\n".into()));
        assert_eq!(
            kinds(&stream_events(Some(&b), &c)),
            vec![(StreamEventKind::Logs, "one")]
        );
        // Cog's cumulative reports slide the window the same way.
        let d = step(&c, Logs::Cumulative(format!("{big}one\ntwo\n")));
        assert_eq!(
            kinds(&stream_events(Some(&c), &d)),
            vec![(StreamEventKind::Logs, "two")]
        );
        // Logs replaced rather than continued are sent whole.
        let other = "z".repeat(crate::prediction::MAX_LOGS_BYTES + 100);
        let e = step(&d, Logs::Cumulative(other.clone()));
        assert_eq!(
            kinds(&stream_events(Some(&d), &e)),
            vec![(StreamEventKind::Logs, &other[100..])]
        );
    }

    #[test]
    fn logs_and_array_output_are_sent_as_what_is_new() {
        let a = prediction();
        let mut b = a.clone();
        b.status = Status::Processing;
        b.logs = "one\ntwo\n".into();
        b.output = Some(json!(["x"]));
        let mut c = b.clone();
        c.logs.push_str("three\n");
        c.output = Some(json!(["x", "y", {"k": 1}]));
        assert_eq!(
            kinds(&stream_events(Some(&a), &b)),
            vec![
                (StreamEventKind::Logs, "one\ntwo"),
                (StreamEventKind::Output, "x")
            ]
        );
        assert_eq!(
            kinds(&stream_events(Some(&b), &c)),
            vec![
                (StreamEventKind::Logs, "three"),
                (StreamEventKind::Output, "y"),
                (StreamEventKind::Output, r#"{"k":1}"#)
            ]
        );
    }

    #[test]
    fn settling_ends_with_done_and_failures_with_error_first() {
        let a = prediction();
        let mut ok = a.clone();
        ok.status = Status::Succeeded;
        ok.output = Some(json!("hi"));
        assert_eq!(
            kinds(&stream_events(Some(&a), &ok)),
            vec![
                (StreamEventKind::Output, "hi"),
                (StreamEventKind::Done, "{}")
            ]
        );
        let mut failed = a.clone();
        failed.status = Status::Failed;
        failed.error = Some("boom".into());
        assert_eq!(
            kinds(&stream_events(Some(&a), &failed)),
            vec![
                (StreamEventKind::Error, "boom"),
                (StreamEventKind::Done, r#"{"reason":"error"}"#)
            ]
        );
        // Nothing more once settled.
        assert!(stream_events(Some(&ok), &ok).is_empty());
    }

    #[test]
    fn webhooks_follow_the_filter_and_progress_is_throttled() {
        let notices = Notices::default();
        let mut a = prediction();
        a.webhook = Some("https://example.com/hook".into());
        a.webhook_events_filter = [WebhookEvent::Logs, WebhookEvent::Completed]
            .into_iter()
            .collect::<WebhookEvents>();
        let messages = |effects: Vec<Effect>| -> Vec<Delivery> {
            effects
                .into_iter()
                .filter_map(|e| match e {
                    Effect::Enqueue(item) => Some(decode_json(&item.payload).unwrap()),
                    _ => None,
                })
                .collect()
        };
        let deliveries = |effects: store::Result<Vec<Effect>>| -> Vec<WebhookEvent> {
            messages(effects.unwrap())
                .into_iter()
                .map(|d| d.event)
                .collect()
        };
        // `start` is filtered out.
        assert!(deliveries(notices.effects(None, &a, 0)).is_empty());
        let mut b = a.clone();
        b.logs = "1\n".into();
        let mut c = b.clone();
        c.logs = "1\n2\n".into();
        assert_eq!(
            deliveries(notices.effects(Some(&a), &b, 1)),
            vec![WebhookEvent::Logs]
        );
        // Within 500 ms of the last progress message: none.
        assert!(deliveries(notices.effects(Some(&b), &c, 2)).is_empty());
        let mut d = c.clone();
        d.status = Status::Succeeded;
        let sent = messages(notices.effects(Some(&c), &d, 3).unwrap());
        let message = sent.first().expect("completed is always sent");
        assert_eq!(message.event, WebhookEvent::Completed);
        assert_eq!(message.id, format!("msg_{}_3", d.id));
        assert_eq!(
            message.payload.prediction().map(|p| p.status),
            Some(Status::Succeeded)
        );
        // Without a webhook there is no message.
        let mut quiet = d.clone();
        quiet.webhook = None;
        assert!(deliveries(notices.effects(Some(&c), &quiet, 3)).is_empty());
    }

    #[test]
    fn throttling_state_of_predictions_settled_elsewhere_is_forgotten() {
        let notices = Notices::default();
        // Progress messages of predictions this process never sees settle (another node
        // settles them): their entries must not stay.
        for _ in 0..100 {
            assert!(notices.may_send(&PredictionId::generate(), WebhookEvent::Logs));
        }
        assert_eq!(notices.last_progress.lock().unwrap().last.len(), 100);
        std::thread::sleep(PROGRESS_WEBHOOK_INTERVAL);
        let id = PredictionId::generate();
        assert!(notices.may_send(&id, WebhookEvent::Output));
        assert!(
            !notices.may_send(&id, WebhookEvent::Output),
            "still throttled"
        );
        assert_eq!(notices.last_progress.lock().unwrap().last.len(), 1);
    }
}
