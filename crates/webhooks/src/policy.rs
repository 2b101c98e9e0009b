//! What a receiver's answer means ([`classify`]) and how long to wait before trying again
//! ([`Backoff`]).
//!
//! This is the one place where HTTP statuses of receivers are interpreted; the
//! [`crate::Dispatcher`] turns a [`Verdict`] and the message's age into a
//! [`augur_core::store::DeliveryOutcome`].

use std::time::Duration;

/// What an HTTP status from a receiver means for the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the receiver has it; the prediction's next message may go.
    Delivered,
    /// 410 Gone: the receiver wants nothing more about this prediction; this message and its
    /// later ones are dropped.
    Drop,
    /// Anything else (3xx, 4xx, 5xx, 1xx): try again later, until the message is too old.
    Retry,
}

/// Classifies a receiver's HTTP status.
///
/// Redirects are retried, not followed: following one would send a signed body to a place
/// the owner did not name.
pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Drop,
        _ => Verdict::Retry,
    }
}

/// Exponential backoff with "full jitter": after the `n`th failed attempt, a uniformly random
/// delay between zero and `min(max, base · 2^(n-1))`. Full jitter spreads out the retries of
/// many messages that failed together (a receiver that was down for all of them), at the cost
/// of sometimes retrying soon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the delay after the first failed attempt.
    pub base: Duration,
    /// The largest ceiling, whatever the number of attempts.
    pub max: Duration,
}

impl Default for Backoff {
    /// 5 s, doubling up to an hour.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            max: Duration::from_secs(3600),
        }
    }
}

impl Backoff {
    /// The ceiling of the delay after failed attempt `attempt` (from 1).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// A random delay after failed attempt `attempt` (from 1), in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.ceiling(attempt).mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(classify(status), Verdict::Delivered, "{status}");
        }
        assert_eq!(classify(410), Verdict::Drop);
        for status in [
            100, 301, 302, 307, 400, 401, 404, 409, 429, 500, 502, 503, 504,
        ] {
            assert_eq!(classify(status), Verdict::Retry, "{status}");
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_below_the_ceiling() {
        let backoff = Backoff {
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
        };
        assert_eq!(backoff.ceiling(0), Duration::from_secs(5));
        assert_eq!(backoff.ceiling(1), Duration::from_secs(5));
        assert_eq!(backoff.ceiling(2), Duration::from_secs(10));
        assert_eq!(backoff.ceiling(4), Duration::from_secs(40));
        assert_eq!(backoff.ceiling(5), Duration::from_secs(60));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(60));
        let delays: Vec<Duration> = (0..200).map(|_| backoff.delay(3)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(20)));
        // Full jitter: the delays spread over the whole range, not only its upper half.
        assert!(delays.iter().any(|d| *d < Duration::from_secs(10)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(10)));
    }

    #[test]
    fn default_backoff_stays_within_an_hour() {
        let backoff = Backoff::default();
        assert_eq!(backoff.ceiling(1), Duration::from_secs(5));
        assert_eq!(backoff.ceiling(100), Duration::from_secs(3600));
    }
}
