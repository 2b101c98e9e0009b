//! Reading the bodies of model servers' callbacks, only once they are authenticated, within a
//! size limit and a shared memory budget.
//!
//! Callback routes (`/internal/cog/...`, `/internal/replicate/...`) are reachable by anyone
//! who can reach the server, and their bodies can be large (outputs as data URIs, uploaded
//! files). So a handler checks the path's token (and that such a provider exists) before it
//! reads a byte, then reads at most its route's limit, and only while the [`Budget`] has room:
//! the bytes of all callback bodies being read at once are bounded, whatever their number.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult, ErrorCode};

/// The unit the budget is counted in.
const UNIT: usize = 1 << 20;

/// How many bytes of callback bodies may be held at once by default.
pub const DEFAULT_BUDGET_BYTES: usize = 256 << 20;

/// The memory all callback bodies being read share.
#[derive(Clone, Debug)]
pub struct Budget {
    units: Arc<Semaphore>,
    total: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET_BYTES)
    }
}

impl Budget {
    /// A budget of `bytes` (rounded up to whole MiB, at least one).
    pub fn new(bytes: usize) -> Self {
        let total = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        Self {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Reads `body`, authenticated by the caller already, of at most `limit` bytes: waits
    /// for room in the budget for what `Content-Length` announces (or `limit` if it announces
    /// nothing), then reads at most that much.
    pub async fn read(&self, headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if announced.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        let expected = announced.unwrap_or(limit);
        let units = u32::try_from(expected.div_ceil(UNIT).max(1))
            .unwrap_or(u32::MAX)
            .min(self.total);
        let _permit = self
            .units
            .acquire_many(units)
            .await
            .map_err(ApiError::internal)?;
        axum::body::to_bytes(body, expected.min(limit))
            .await
            .map_err(|_| too_large(limit))
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "the callback body is larger than {} MiB, or not as long as its Content-Length",
            limit / UNIT
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_wait_for_room_and_stop_at_their_limit() {
        let budget = Budget::new(2 * UNIT);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "10".parse().unwrap());
        let got = budget
            .read(&headers, Body::from("0123456789"), 100)
            .await
            .unwrap();
        assert_eq!(&got[..], b"0123456789");
        // Announced too large: refused before reading.
        headers.insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
        let err = budget
            .read(&headers, Body::from("x"), 100)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::PayloadTooLarge);
        // Unannounced and longer than the limit.
        let err = budget
            .read(&HeaderMap::new(), Body::from(vec![0u8; 200]), 100)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::PayloadTooLarge);
        // A held budget makes the next reader wait.
        let held = budget.units.clone().acquire_many_owned(2).await.unwrap();
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.read(&HeaderMap::new(), Body::from("x"), 10).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(held);
        assert_eq!(&waiting.await.unwrap().unwrap()[..], b"x");
    }
}
