//! The prediction state machine: the only place that decides which transitions are legal.
//!
//! Statuses are exactly Replicate's five. The legal moves are
//!
//! ```text
//! starting   → processing | failed | canceled
//! processing → processing (progress: logs, output) | succeeded | failed | canceled
//! succeeded, failed, canceled: final
//! ```
//!
//! A report that repeats the terminal state a prediction already has (same status, same output
//! or error) is a no-op success, so that a provider or client may safely retry it; any other
//! report on a settled prediction is refused. Everything here is pure: no I/O, no clock (the
//! caller passes `now`), so the whole table is tested exhaustively.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::prediction::{MAX_LOGS_BYTES, Metrics, Prediction};
use crate::time::Timestamp;

/// Where a prediction is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created and queued; no provider runs it yet.
    Starting,
    /// A provider is running it.
    Processing,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Stopped on request or by its deadline.
    Canceled,
}

impl Status {
    /// All statuses, for exhaustive tests and metrics.
    pub const ALL: [Status; 5] = [
        Status::Starting,
        Status::Processing,
        Status::Succeeded,
        Status::Failed,
        Status::Canceled,
    ];

    /// True for `succeeded`, `failed` and `canceled`.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Canceled)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Processing => "processing",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Decides whether a report of status `to` may follow `self`.
    ///
    /// This is the whole state machine; [`Prediction::apply`] adds the payload rules.
    pub fn step(self, to: Status) -> Result<Step, InvalidTransition> {
        use Status::*;
        match (self, to) {
            (Starting, Processing) => Ok(Step::Advance),
            (Starting, Failed | Canceled) => Ok(Step::Advance),
            (Processing, Processing) => Ok(Step::Progress),
            (Processing, Succeeded | Failed | Canceled) => Ok(Step::Advance),
            (Succeeded, Succeeded) | (Failed, Failed) | (Canceled, Canceled) => Ok(Step::Repeat),
            (Starting, Starting | Succeeded)
            | (Processing, Starting)
            | (Succeeded | Failed | Canceled, _) => Err(InvalidTransition { from: self, to }),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a legal move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// To a new status.
    Advance,
    /// `processing → processing` with new logs or output.
    Progress,
    /// A terminal status reported again; legal only if the report is identical.
    Repeat,
}

/// A report of status `to` cannot follow status `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid transition from {from} to {to}")]
pub struct InvalidTransition {
    /// The current status.
    pub from: Status,
    /// The reported status.
    pub to: Status,
}

/// Why a report was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The state machine does not allow the move.
    #[error(transparent)]
    Invalid(#[from] InvalidTransition),
    /// The prediction already settled with a different result.
    #[error("prediction already {status}; a different {status} report was refused")]
    ConflictingTerminal {
        /// The status it settled with (and that was reported again).
        status: Status,
    },
}

/// How a report carries logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Logs {
    /// New lines to add (built-in providers).
    Append(String),
    /// Everything logged so far (Cog's webhooks). A report shorter than what is stored and a
    /// prefix of it is stale and ignored.
    Cumulative(String),
}

/// What a provider, a worker or a user reports about a prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The status being reported.
    pub status: Status,
    /// New logs, if any.
    pub logs: Option<Logs>,
    /// The output so far (progress) or the final output.
    pub output: Option<Value>,
    /// The error, for `failed`.
    pub error: Option<String>,
    /// Model-reported metrics to merge in.
    pub metrics: Map<String, Value>,
    /// The worker's attempt number, recorded as the prediction's `attempts`.
    pub attempt: Option<u32>,
    /// The id an external service gave the prediction, recorded as its `external_id`.
    pub external_id: Option<String>,
    /// When the run began, for a start reported after the fact (the worker writes a run that
    /// ends within its grace period in one step): the prediction's `started_at`, so its
    /// `predict_time` (and a per-second price) counts the whole run. Ignored unless the
    /// prediction has not started yet; never later than the report nor earlier than the
    /// prediction's creation.
    pub started_at: Option<Timestamp>,
}

impl Event {
    fn of(status: Status) -> Self {
        Self {
            status,
            logs: None,
            output: None,
            error: None,
            metrics: Map::new(),
            attempt: None,
            external_id: None,
            started_at: None,
        }
    }

    /// The prediction is running (or still running).
    pub fn processing() -> Self {
        Self::of(Status::Processing)
    }

    /// The prediction finished with `output`.
    pub fn succeeded(output: Value) -> Self {
        Self {
            output: Some(output),
            ..Self::of(Status::Succeeded)
        }
    }

    /// The prediction failed because of `error`.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::of(Status::Failed)
        }
    }

    /// The prediction was canceled.
    pub fn canceled() -> Self {
        Self::of(Status::Canceled)
    }

    /// Adds log lines to the report.
    pub fn with_logs(mut self, logs: Logs) -> Self {
        self.logs = Some(logs);
        self
    }

    /// Records the worker's attempt number.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Records the id an external service gave the prediction (see
    /// [`Prediction::external_id`]).
    pub fn with_external_id(mut self, external_id: impl Into<String>) -> Self {
        self.external_id = Some(external_id.into());
        self
    }

    /// Records when the run began (see [`Event::started_at`]).
    pub fn with_started_at(mut self, at: Timestamp) -> Self {
        self.started_at = Some(at);
        self
    }

    /// Adds output to the report.
    pub fn with_output(mut self, output: Value) -> Self {
        self.output = Some(output);
        self
    }
}

/// The result of applying a legal report.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// The record changes to this.
    Changed(Box<Prediction>),
    /// Nothing to write: an identical terminal report, or progress that carries nothing new.
    Unchanged,
}

impl Prediction {
    /// Applies a report at time `now`, returning the next record or why the report is refused.
    ///
    /// Timestamps are set here and only here: `started_at` at the first `processing`,
    /// `completed_at` and the timing metrics when the prediction settles.
    pub fn apply(&self, event: &Event, now: Timestamp) -> Result<Applied, TransitionError> {
        let step = self.status.step(event.status)?;
        if step == Step::Repeat {
            return if self.repeats_terminal(event) {
                Ok(Applied::Unchanged)
            } else {
                Err(TransitionError::ConflictingTerminal {
                    status: self.status,
                })
            };
        }

        let mut next = self.clone();
        next.status = event.status;
        if let Some(logs) = &event.logs {
            merge_logs(&mut next.logs, &mut next.logs_start, logs);
        }
        if let Some(output) = &event.output {
            next.output = Some(output.clone());
        }
        if let Some(attempt) = event.attempt {
            next.attempts = attempt;
        }
        if let Some(external_id) = &event.external_id {
            next.external_id = Some(external_id.clone());
        }
        for (k, v) in &event.metrics {
            // The timings are Augur's own fields: a model's metric of the same name would be
            // written twice into the record and make it unreadable.
            if !Metrics::is_timing(k) {
                next.metrics.extra.insert(k.clone(), v.clone());
            }
        }
        if event.status == Status::Processing && next.started_at.is_none() {
            let began = event
                .started_at
                .map_or(now, |at| at.clamp(self.created_at, now));
            next.started_at = Some(began);
        }
        if event.status.is_terminal() {
            next.completed_at = Some(now);
            next.error = match event.status {
                Status::Failed => Some(
                    event
                        .error
                        .clone()
                        .unwrap_or_else(|| "prediction failed".to_owned()),
                ),
                _ => None,
            };
            next.metrics.total_time = Some(now.since(self.created_at).as_secs_f64());
            if let Some(started) = next.started_at {
                next.metrics.predict_time = Some(now.since(started).as_secs_f64());
            }
        }

        if step == Step::Progress && next == *self {
            return Ok(Applied::Unchanged);
        }
        Ok(Applied::Changed(Box::new(next)))
    }

    fn repeats_terminal(&self, event: &Event) -> bool {
        match event.status {
            Status::Succeeded => event.output.is_none() || event.output == self.output,
            Status::Failed => event.error.is_none() || event.error == self.error,
            Status::Canceled => true,
            Status::Starting | Status::Processing => false,
        }
    }
}

/// Adds `logs` to the window `current`, which starts at byte `start` of everything logged,
/// keeping at most [`MAX_LOGS_BYTES`] (the head is dropped and `start` moves past it).
fn merge_logs(current: &mut String, start: &mut u64, logs: &Logs) {
    match logs {
        Logs::Append(more) => current.push_str(more),
        Logs::Cumulative(all) => {
            // Everything logged so far, from byte 0: stale if it ends within what is kept and
            // agrees with it.
            let end = *start + current.len() as u64;
            let stale = all.len() as u64 <= end
                && usize::try_from(*start)
                    .ok()
                    .and_then(|from| all.get(from.min(all.len())..))
                    .is_some_and(|tail| current.starts_with(tail));
            if !stale {
                current.clone_from(all);
                *start = 0;
            }
        }
    }
    if current.len() > MAX_LOGS_BYTES {
        let mut cut = current.len() - MAX_LOGS_BYTES;
        while !current.is_char_boundary(cut) {
            cut += 1;
        }
        current.drain(..cut);
        *start += cut as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{AccountId, ModelName, PredictionId};
    use proptest::prelude::*;
    use serde_json::json;

    fn prediction_in(status: Status) -> Prediction {
        let mut p = Prediction::new(
            PredictionId::parse("p1").unwrap(),
            AccountId::admin(),
            ModelName::parse("augur/echo").unwrap(),
            "v1".into(),
            json!({}),
        );
        p.created_at = Timestamp::from_micros(1_000_000);
        p.status = status;
        if status != Status::Starting {
            p.started_at = Some(Timestamp::from_micros(2_000_000));
        }
        match status {
            Status::Succeeded => p.output = Some(json!("done")),
            Status::Failed => p.error = Some("boom".into()),
            _ => {}
        }
        if status.is_terminal() {
            p.completed_at = Some(Timestamp::from_micros(3_000_000));
        }
        p
    }

    /// One representative report per reported status, plus the variants that matter for
    /// repeats (same payload, different payload).
    fn reports() -> Vec<(&'static str, Event)> {
        vec![
            ("processing", Event::processing()),
            (
                "processing+logs",
                Event::processing().with_logs(Logs::Append("x\n".into())),
            ),
            ("succeeded(done)", Event::succeeded(json!("done"))),
            ("succeeded(other)", Event::succeeded(json!("other"))),
            ("failed(boom)", Event::failed("boom")),
            ("failed(other)", Event::failed("other")),
            ("canceled", Event::canceled()),
            ("starting", Event::of(Status::Starting)),
        ]
    }

    /// The expected outcome for every (current status, report) pair, written out by hand.
    fn expected(from: Status, report: &str) -> &'static str {
        use Status::*;
        match (from, report) {
            (Starting, "processing" | "processing+logs") => "changed",
            (Starting, "failed(boom)" | "failed(other)" | "canceled") => "changed",
            (Starting, _) => "invalid",
            (Processing, "processing") => "unchanged",
            (Processing, "processing+logs") => "changed",
            (Processing, "starting") => "invalid",
            (Processing, _) => "changed",
            (Succeeded, "succeeded(done)") => "unchanged",
            (Succeeded, "succeeded(other)") => "conflict",
            (Failed, "failed(boom)") => "unchanged",
            (Failed, "failed(other)") => "conflict",
            (Canceled, "canceled") => "unchanged",
            (Succeeded | Failed | Canceled, _) => "invalid",
        }
    }

    #[test]
    fn every_status_and_report_pair_behaves_as_tabulated() {
        let now = Timestamp::from_micros(5_000_000);
        for from in Status::ALL {
            for (name, event) in reports() {
                let got = match prediction_in(from).apply(&event, now) {
                    Ok(Applied::Changed(_)) => "changed",
                    Ok(Applied::Unchanged) => "unchanged",
                    Err(TransitionError::Invalid(_)) => "invalid",
                    Err(TransitionError::ConflictingTerminal { .. }) => "conflict",
                };
                assert_eq!(got, expected(from, name), "{from} + {name}");
            }
        }
    }

    #[test]
    fn status_step_table_is_exhaustive() {
        use Status::*;
        let legal = [
            (Starting, Processing),
            (Starting, Failed),
            (Starting, Canceled),
            (Processing, Processing),
            (Processing, Succeeded),
            (Processing, Failed),
            (Processing, Canceled),
            (Succeeded, Succeeded),
            (Failed, Failed),
            (Canceled, Canceled),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(
                    from.step(to).is_ok(),
                    legal.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn timestamps_and_metrics_are_set_by_the_transition() {
        let p = prediction_in(Status::Starting);
        let Applied::Changed(running) = p
            .apply(&Event::processing(), Timestamp::from_micros(2_500_000))
            .unwrap()
        else {
            panic!("start did not change the record")
        };
        assert_eq!(running.started_at, Some(Timestamp::from_micros(2_500_000)));
        let Applied::Changed(done) = running
            .apply(
                &Event::succeeded(json!(["a"])),
                Timestamp::from_micros(4_000_000),
            )
            .unwrap()
        else {
            panic!("success did not change the record")
        };
        assert_eq!(done.completed_at, Some(Timestamp::from_micros(4_000_000)));
        assert_eq!(done.metrics.predict_time, Some(1.5));
        assert_eq!(done.metrics.total_time, Some(3.0));
        assert_eq!(done.output, Some(json!(["a"])));
        assert_eq!(done.error, None);
    }

    #[test]
    fn a_start_reported_after_the_fact_keeps_when_the_run_began() {
        // Started and finished in one step: the run counts from when it began.
        let p = prediction_in(Status::Starting);
        let began = Timestamp::from_micros(1_200_000);
        let now = Timestamp::from_micros(1_700_000);
        let Applied::Changed(running) = p
            .apply(&Event::processing().with_started_at(began), now)
            .unwrap()
        else {
            panic!("start did not change the record")
        };
        let Applied::Changed(done) = running.apply(&Event::succeeded(json!(1)), now).unwrap()
        else {
            panic!("success did not change the record")
        };
        assert_eq!(done.started_at, Some(began));
        assert_eq!(done.metrics.predict_time, Some(0.5));

        // Never before the creation, never after the report, never moved once set.
        for (claimed, recorded) in [(0, 1_000_000), (9_000_000, 1_700_000)] {
            let Applied::Changed(running) = p
                .apply(
                    &Event::processing().with_started_at(Timestamp::from_micros(claimed)),
                    now,
                )
                .unwrap()
            else {
                panic!("start did not change the record")
            };
            assert_eq!(running.started_at, Some(Timestamp::from_micros(recorded)));
        }
        let moved = running.apply(&Event::processing().with_started_at(began), now);
        assert!(matches!(moved, Ok(Applied::Unchanged)), "{moved:?}");
    }

    #[test]
    fn model_metrics_cannot_set_the_timings() {
        let p = prediction_in(Status::Processing);
        let mut event = Event::succeeded(json!(1));
        for (k, v) in [("predict_time", 99.0), ("total_time", 99.0), ("steps", 3.0)] {
            event.metrics.insert(k.into(), json!(v));
        }
        let Applied::Changed(done) = p.apply(&event, Timestamp::from_micros(4_000_000)).unwrap()
        else {
            panic!("success did not change the record")
        };
        assert_eq!(done.metrics.predict_time, Some(2.0));
        assert_eq!(done.metrics.total_time, Some(3.0));
        // The stored form reads back (a timing in both places would be a duplicate field).
        let stored = serde_json::to_string(&done.metrics).unwrap();
        let back: Metrics = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, done.metrics, "{stored}");
        assert_eq!(back.extra.get("steps"), Some(&json!(3.0)));
    }

    #[test]
    fn cumulative_logs_ignore_stale_reports() {
        let mut p = prediction_in(Status::Processing);
        p.logs = "a\nb\n".into();
        let stale = Event::processing().with_logs(Logs::Cumulative("a\n".into()));
        assert_eq!(
            p.apply(&stale, Timestamp::now()).unwrap(),
            Applied::Unchanged
        );
        let fresh = Event::processing().with_logs(Logs::Cumulative("a\nb\nc\n".into()));
        let Applied::Changed(next) = p.apply(&fresh, Timestamp::now()).unwrap() else {
            panic!()
        };
        assert_eq!(next.logs, "a\nb\nc\n");
    }

    #[test]
    fn logs_are_capped_keeping_the_tail() {
        let mut logs = "é".repeat(MAX_LOGS_BYTES / 2);
        let mut start = 0;
        merge_logs(&mut logs, &mut start, &Logs::Append("tail".into()));
        assert!(logs.len() <= MAX_LOGS_BYTES);
        assert!(logs.ends_with("tail"));
        assert_eq!(start as usize + logs.len(), MAX_LOGS_BYTES + 4);
    }

    #[test]
    fn a_cumulative_report_within_the_window_is_stale_once_it_slid() {
        let all = format!("{}b\n", "a".repeat(MAX_LOGS_BYTES));
        let (mut logs, mut start) = (String::new(), 0);
        merge_logs(&mut logs, &mut start, &Logs::Cumulative(all.clone()));
        assert_eq!(start, 2);
        assert_eq!(logs, all[2..]);
        // The same report again, or an older one, changes nothing.
        merge_logs(&mut logs, &mut start, &Logs::Cumulative(all.clone()));
        merge_logs(
            &mut logs,
            &mut start,
            &Logs::Cumulative(all[..10].to_owned()),
        );
        assert_eq!((start, logs.as_str()), (2, &all[2..]));
        // A longer one slides the window on.
        merge_logs(
            &mut logs,
            &mut start,
            &Logs::Cumulative(format!("{all}c\n")),
        );
        assert_eq!(start, 4);
        assert!(logs.ends_with("b\nc\n"));
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::processing()),
            "[a-z]{0,3}".prop_map(|s| Event::processing().with_logs(Logs::Append(s))),
            "[a-z]{0,2}".prop_map(|s| Event::processing().with_output(json!(s))),
            "[a-z]{0,2}".prop_map(|s| Event::succeeded(json!(s))),
            "[a-z]{0,2}".prop_map(Event::failed),
            Just(Event::canceled()),
            Just(Event::of(Status::Starting)),
        ]
    }

    proptest! {
        /// Whatever a provider, user or worker reports, in any order, a prediction follows
        /// only legal steps, settles at most once and never leaves its terminal state.
        #[test]
        fn random_event_sequences_never_leave_a_terminal_state(events in prop::collection::vec(arb_event(), 0..40)) {
            let mut p = prediction_in(Status::Starting);
            let mut settled: Option<Prediction> = None;
            for (i, event) in events.iter().enumerate() {
                let now = Timestamp::from_micros(2_000_000 + i as i64);
                match p.apply(event, now) {
                    Ok(Applied::Changed(next)) => {
                        prop_assert!(p.status.step(next.status).is_ok());
                        prop_assert!(settled.is_none(), "a settled prediction changed");
                        if next.is_terminal() {
                            prop_assert!(next.completed_at.is_some());
                            settled = Some((*next).clone());
                        }
                        if next.status != Status::Starting {
                            prop_assert!(next.started_at.is_some() || next.status != Status::Processing);
                        }
                        p = *next;
                    }
                    Ok(Applied::Unchanged) => {}
                    Err(_) => {}
                }
                if let Some(s) = &settled {
                    prop_assert_eq!(&p, s);
                }
            }
        }
    }
}
