//! Capped exponential backoff with jitter, for retrying an unreachable coordinator or broker.
//!
//! Jitter keeps a fleet of agents from retrying in lockstep after a coordinator
//! restart. It comes from a seed (the clock and the node id) mixed with the attempt
//! number, so no random-number crate is needed and tests are deterministic.

use std::time::Duration;

/// Delays that double from `base` up to `cap`, each drawn from its upper half.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    seed: u64,
}

impl Backoff {
    /// Delays from `base` doubling to `cap`, jittered by `seed` (see `seed`).
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Self {
        Self { base, cap: cap.max(base), failures: 0, seed }
    }

    /// The delay before the next retry; each call (without a `reset`) doubles it, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << self.failures.min(20)).min(self.cap);
        self.failures = self.failures.saturating_add(1);
        // "Equal jitter": at least half the ceiling, so retries still slow down,
        // plus a pseudo-random part of the other half.
        let half = ceiling / 2;
        let span = (ceiling - half).as_millis() as u64;
        let extra = if span == 0 { 0 } else { mix(self.seed ^ u64::from(self.failures)) % (span + 1) };
        half + Duration::from_millis(extra)
    }

    /// Back to `base` after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A seed from a few distinguishing values, such as the time and a node id.
pub fn seed(parts: &[&[u8]]) -> u64 {
    // FNV-1a: tiny and good enough to spread seeds; this is not cryptography.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Turns nearby inputs into unrelated outputs (one splitmix64 step).
fn mix(z: u64) -> u64 {
    crate::rng::SplitMix64::new(z).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(10);

    #[test]
    fn doubles_within_jitter_bounds_up_to_the_cap() {
        let mut b = Backoff::new(BASE, CAP, 42);
        for n in 0..12u32 {
            let ceiling = BASE.saturating_mul(1 << n).min(CAP);
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {n}: {d:?} not in [{:?}, {ceiling:?}]", ceiling / 2);
        }
        // Many failures later it stays capped and does not overflow.
        for _ in 0..100 {
            assert!(b.next_delay() <= CAP);
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(BASE, CAP, 7);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= BASE);
    }

    #[test]
    fn different_seeds_spread_out() {
        let delays: std::collections::HashSet<_> = (0..20u64)
            .map(|node| {
                let mut b = Backoff::new(BASE, CAP, seed(&[&node.to_le_bytes()]));
                b.next_delay();
                b.next_delay();
                b.next_delay()
            })
            .collect();
        assert!(delays.len() > 10, "jitter should spread retries: {delays:?}");
    }

    #[test]
    fn seeds_depend_on_every_part() {
        assert_ne!(seed(&[b"n1", b"1000"]), seed(&[b"n2", b"1000"]));
        assert_ne!(seed(&[b"n1", b"1000"]), seed(&[b"n1", b"1001"]));
    }
}
