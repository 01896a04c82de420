//! Per-function rate limits: the spec's `rate_limit` and the token bucket a
//! gateway keeps for it. Pure: time comes in as milliseconds.

use crate::validation::ValidationError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// At most `requests_per_second` on average, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: u32,
    /// Requests admitted at once after a quiet spell (default: one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// Bounds of a rate limit.
pub const MAX_RATE: u32 = 1_000_000;

impl RateLimit {
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests_per_second)
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(1..=MAX_RATE).contains(&self.requests_per_second) {
            return Err(ValidationError::new("requests_per_second", format!("{}: use 1 to {MAX_RATE}", self.requests_per_second)));
        }
        if self.burst.is_some_and(|b| !(1..=MAX_RATE).contains(&b)) {
            return Err(ValidationError::new("burst", format!("{}: use 1 to {MAX_RATE}, or leave it out for one second's worth", self.burst())));
        }
        Ok(())
    }
}

/// A token bucket: `burst` tokens at most, refilled at the limit's rate; each
/// admitted request takes one.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    /// When `tokens` was last brought up to date, in milliseconds.
    at_ms: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn new(limit: RateLimit, now_ms: u64) -> Self {
        Self { limit, tokens: limit.burst() as f64, at_ms: now_ms }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token if there is one; otherwise says how long until there is.
    pub fn take(&mut self, now_ms: u64) -> Result<(), Duration> {
        let rate = self.limit.requests_per_second as f64 / 1000.0;
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64;
        self.tokens = (self.tokens + elapsed * rate).min(self.limit.burst() as f64);
        self.at_ms = self.at_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate / 1000.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rps: u32, burst: Option<u32>) -> RateLimit {
        RateLimit { requests_per_second: rps, burst }
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::new(limit(10, Some(3)), 0);
        for _ in 0..3 {
            assert!(b.take(0).is_ok());
        }
        let wait = b.take(0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100), "one token every 100 ms");
        assert!(b.take(50).is_err());
        assert!(b.take(100).is_ok());
        // Over a long run, admitted requests follow the rate, whatever is offered.
        let admitted = (101..=10_100).filter(|t| b.take(*t).is_ok()).count();
        assert!((99..=101).contains(&admitted), "{admitted} in 10 s at 10/s");
    }

    #[test]
    fn a_quiet_spell_refills_up_to_the_burst_only() {
        let mut b = TokenBucket::new(limit(5, None), 0);
        assert_eq!((0..100).filter(|_| b.take(0).is_ok()).count(), 5, "burst defaults to a second's worth");
        assert_eq!((0..100).filter(|_| b.take(60_000).is_ok()).count(), 5, "a minute of quiet gives the burst, not 300");
        // A clock that steps back takes nothing back.
        assert!(b.take(59_000).is_err());
    }

    #[test]
    fn bounds_name_their_field() {
        assert_eq!(limit(0, None).validate().unwrap_err().field, "requests_per_second");
        assert_eq!(limit(1, Some(0)).validate().unwrap_err().field, "burst");
        assert!(limit(100, Some(1000)).validate().is_ok());
    }
}
