//! `core::Error`: the domain failures of prediction operations.

use crate::id::{AccountId, ModelName, PredictionId};
use crate::state::TransitionError;

/// The result type of [`crate::service::Predictions`] operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a prediction operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such prediction.
    #[error("prediction {0} not found")]
    NotFound(PredictionId),
    /// The state machine refused the report.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A client-supplied id is taken by a prediction with different parameters.
    #[error("prediction id {0} is already used by a prediction with different parameters")]
    IdConflict(PredictionId),
    /// A client-supplied id whose time is past the tombstone horizon: its prediction's
    /// tombstone may be gone, and an id is never used twice.
    #[error(
        "prediction id {0} is too old to be used: its time is past the tombstone retention; choose a new id"
    )]
    IdRetired(PredictionId),
    /// An idempotency key was reused with a different request.
    #[error("idempotency key {key:?} was already used with different parameters")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
    },
    /// Too many concurrent writers kept winning the compare-and-set.
    #[error("prediction {0} is being updated too often; try again")]
    Contention(PredictionId),
    /// No such batch (or it is another account's).
    #[error("batch {0} not found")]
    BatchNotFound(String),
    /// No such workflow run (or it is another account's).
    #[error("run {0} not found")]
    RunNotFound(String),
    /// No such workflow (or it is another account's).
    #[error("workflow {0} not found")]
    WorkflowNotFound(String),
    /// A blueprint, or a run's input, is refused: the field and why.
    #[error(transparent)]
    InvalidBlueprint(crate::workflow::BlueprintError),
    /// No such deployment (or it is another account's).
    #[error("deployment {0} not found")]
    DeploymentNotFound(String),
    /// The account already has a deployment with that name.
    #[error("deployment {0} already exists")]
    DeploymentExists(String),
    /// No such account.
    #[error("account {0} not found")]
    AccountNotFound(AccountId),
    /// The username is taken.
    #[error("account {0} already exists")]
    AccountExists(AccountId),
    /// No such API token (or it is another account's).
    #[error("token {0} not found")]
    TokenNotFound(String),
    /// The account cannot afford the prediction (or the adjustment).
    #[error("account {account} has {available} credits available, {price} needed")]
    InsufficientCredits {
        /// The account.
        account: AccountId,
        /// What it could spend.
        available: i64,
        /// What was asked.
        price: i64,
        /// The model, for a prediction.
        model: Option<ModelName>,
    },
    /// The account has as many unsettled predictions as its limit allows.
    #[error("account {account} already has {limit} predictions running, its limit")]
    TooManyActive {
        /// The account.
        account: AccountId,
        /// Its limit.
        limit: u32,
    },
    /// A request the domain refuses (a name too long, an amount of zero).
    #[error("{0}")]
    Invalid(String),
    /// Too many concurrent writers kept winning on a record other than a prediction.
    #[error("{0} is being updated too often; try again")]
    Busy(String),
    /// The store failed.
    #[error(transparent)]
    Store(crate::store::Error),
}

impl From<crate::store::Error> for Error {
    fn from(e: crate::store::Error) -> Self {
        Error::Store(e)
    }
}
