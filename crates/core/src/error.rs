//! `core::Error`: the domain failures of prediction operations.

use crate::id::PredictionId;
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
    /// An idempotency key was reused with a different request.
    #[error("idempotency key {key:?} was already used with different parameters")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
    },
    /// Too many concurrent writers kept winning the compare-and-set.
    #[error("prediction {0} is being updated too often; try again")]
    Contention(PredictionId),
    /// The store failed.
    #[error(transparent)]
    Store(crate::store::Error),
}

impl From<crate::store::Error> for Error {
    fn from(e: crate::store::Error) -> Self {
        Error::Store(e)
    }
}
