//! The [`Provider`] trait: how a model is run, whatever runs it.
//!
//! A provider is an adapter to something that executes predictions: code in this process (the
//! built-in models), a Cog model server, an upstream Replicate-compatible API, a local command.
//! Synchronous providers return the output from [`Provider::run`]. Asynchronous ones submit the
//! work and return [`Outcome::Submitted`]; the result then arrives by webhook (through
//! [`augur_core::Predictions::transition`]) or by the worker calling `run` again later, which
//! for such a provider means "look up the submitted work", never "submit again".

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use augur_core::{Event, Logs, Prediction, PredictionId, Predictions, Timestamp};

use crate::files::{FileInputs, OutputFiles};

/// Runs predictions of one or more models.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug + 'static {
    /// Checks an input before a prediction is accepted and returns it normalised (defaults
    /// filled in). The default accepts any object unchanged.
    fn validate_input(&self, input: &Map<String, Value>) -> Result<Map<String, Value>, InputError> {
        Ok(input.clone())
    }

    /// The model's OpenAPI schema in Cog's layout (`components.schemas.Input` and `Output`),
    /// if the provider knows it.
    fn openapi_schema(&self) -> Option<Value> {
        None
    }

    /// Whether the worker should copy the `http(s)` URLs in this provider's outputs into
    /// Augur's file store ([`OutputFiles::import_urls`]) before settling, so they outlive
    /// wherever they point. Off by default: a provider that echoes its input would otherwise
    /// let any client make Augur fetch URLs of its choosing.
    fn imports_output_urls(&self) -> bool {
        false
    }

    /// How this provider takes inputs that are uploaded files' URLs: the worker rewrites them
    /// before [`Provider::run`] (the stored input keeps the URLs). By default, the bytes as a
    /// `data:` URI.
    fn file_inputs(&self) -> FileInputs {
        FileInputs::DataUri
    }

    /// Runs one attempt of a prediction.
    ///
    /// The worker drops the returned future when the prediction is canceled, times out, or
    /// the process shuts down, so providers must be cancel-safe at their await points (and
    /// kill what they started when dropped).
    async fn run(&self, ctx: RunContext) -> Result<Outcome, ProviderError>;

    /// Asks the provider to stop a prediction it runs elsewhere. In-process providers need
    /// nothing here: dropping their future stops them.
    async fn cancel(&self, _prediction: &Prediction) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// How an attempt ended, when it did not fail.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The model finished with this output.
    Succeeded(Value),
    /// The work was handed to an external server; look again after this long (the result may
    /// also arrive earlier through a webhook).
    Submitted {
        /// When to call [`Provider::run`] again to check on it.
        check_after: Duration,
    },
    /// The prediction could not start yet because whatever runs it is at capacity (all of a
    /// model server's slots are taken): the job goes back to the queue unchanged, without
    /// spending an attempt or marking the prediction started, and runs again after this long.
    Deferred {
        /// When to try again.
        retry_after: Duration,
    },
}

/// Why an attempt did not produce an output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// A transient problem (server busy, connection refused): the attempt is retried with
    /// backoff until the model's attempt limit.
    #[error("{0}")]
    Retryable(String),
    /// The model failed; the prediction fails with this message.
    #[error("{0}")]
    Failed(String),
    /// The prediction is no longer running (canceled or settled elsewhere); stop quietly.
    #[error("prediction is no longer running")]
    Stopped,
}

/// A rejected input, naming the field where possible.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", field.as_ref().map(|f| format!("input.{f}: ")).unwrap_or_default())]
pub struct InputError {
    /// The offending field (a dotted path), if one is to blame.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl InputError {
    /// An error about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

/// Everything a provider gets for one attempt.
#[derive(Debug)]
pub struct RunContext {
    /// The prediction as it was when the attempt started (input validated).
    pub prediction: Prediction,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Where to report logs and partial output.
    pub progress: Progress,
    /// Where to put output files.
    pub files: OutputFiles,
}

/// Reports a running prediction's logs and partial output, each as a durable transition.
///
/// The first report also records that the prediction started (`processing`), so a model that
/// logs at once is marked started at once, and a model that finishes within the worker's
/// grace period is written in a single step.
#[derive(Clone, Debug)]
pub struct Progress {
    service: Predictions,
    id: PredictionId,
    attempt: u32,
    started: Arc<AtomicBool>,
    /// When this run was handed to the model: a start written with the result says so.
    began: Timestamp,
}

impl Progress {
    pub(crate) fn new(service: Predictions, id: PredictionId, attempt: u32, started: bool) -> Self {
        Self {
            service,
            id,
            attempt,
            started: Arc::new(AtomicBool::new(started)),
            began: Timestamp::now(),
        }
    }

    /// Appends one line to the logs.
    pub async fn log(&self, line: impl Into<String>) -> Result<(), ProviderError> {
        let mut line = line.into();
        if !line.ends_with('\n') {
            line.push('\n');
        }
        self.report(Event::processing().with_logs(Logs::Append(line)))
            .await
    }

    /// Replaces the output so far.
    pub async fn output(&self, output: Value) -> Result<(), ProviderError> {
        self.report(Event::processing().with_output(output)).await
    }

    /// Applies a `processing` report (logs, output, metrics).
    pub async fn report(&self, event: Event) -> Result<(), ProviderError> {
        let events = self.with_start(event);
        match self.service.transition_all(&self.id, &events, &[]).await {
            Ok(_) => {
                self.started.store(true, Ordering::Release);
                Ok(())
            }
            Err(augur_core::Error::Transition(_) | augur_core::Error::NotFound(_)) => {
                Err(ProviderError::Stopped)
            }
            Err(e) => {
                // Progress is best effort: the final result is what must be durable, and the
                // worker retries writing that.
                tracing::warn!(prediction_id = %self.id, error = %e, "progress report not stored");
                Ok(())
            }
        }
    }

    /// Records the start if no report has yet.
    pub(crate) async fn start(&self) -> Result<(), ProviderError> {
        if self.is_started() {
            return Ok(());
        }
        self.report(Event::processing()).await
    }

    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// The events that report `event`, preceded by the start if it is not recorded yet. A
    /// start written with the result says the run began when it was handed to the model (so
    /// a run that ended within the grace period is not timed, and charged, as 0 s); a start
    /// written with a progress report is timed by that first report, as the model server
    /// saw it.
    pub(crate) fn with_start(&self, event: Event) -> Vec<Event> {
        if self.is_started() {
            return vec![event];
        }
        let mut start = Event::processing().with_attempt(self.attempt);
        if event.status.is_terminal() {
            start = start.with_started_at(self.began);
        }
        vec![start, event]
    }
}
