//! Synthetic traces with known patterns, to check that a policy holds on
//! traces it was not built on: periodic timers, bursts, a daily cycle,
//! memoryless (Poisson) arrivals, one-off calls, and all of them mixed.

use super::trace::{FunctionTrace, Trace};
use sluice_common::rng::SplitMix64;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Periodic,
    Bursty,
    Diurnal,
    Random,
    OneOff,
    Mix,
}

impl Pattern {
    pub const ALL: [Pattern; 6] = [Pattern::Periodic, Pattern::Bursty, Pattern::Diurnal, Pattern::Random, Pattern::OneOff, Pattern::Mix];

    pub fn parse(s: &str) -> Option<Pattern> {
        Pattern::ALL.into_iter().find(|p| p.to_string() == s)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pattern::Periodic => "periodic",
            Pattern::Bursty => "bursty",
            Pattern::Diurnal => "diurnal",
            Pattern::Random => "random",
            Pattern::OneOff => "one-off",
            Pattern::Mix => "mix",
        })
    }
}

/// `functions` functions of `pattern` over `bins` one-minute bins.
pub fn generate(pattern: Pattern, functions: usize, bins: usize, seed: u64) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let functions = (0..functions)
        .map(|i| {
            let p = if pattern == Pattern::Mix { Pattern::ALL[i % 5] } else { pattern };
            let arrivals = series(p, bins, &mut rng);
            let duration_s = 0.1 + rng.below(3000) as f64 / 1000.0;
            let needed = arrivals.iter().map(|&a| if a == 0 { 0 } else { ((f64::from(a) * duration_s / 60.0).ceil() as u32).max(1) }).collect();
            let busy = arrivals.iter().map(|&a| (f64::from(a) * duration_s / 60.0) as f32).collect();
            FunctionTrace { name: format!("{p}-{i}"), memory_mb: 64.0 + rng.below(960) as f64, arrivals, needed, busy }
        })
        .collect();
    Trace { bins, bin_secs: 60.0, functions, memory_filled: 0 }
}

/// A Poisson draw (Knuth's method; the means here are small).
fn poisson(mean: f64, rng: &mut SplitMix64) -> u32 {
    if mean > 30.0 {
        // Normal approximation for large means.
        let u = (rng.below(1 << 30) as f64 + 0.5) / f64::from(1u32 << 30);
        let v = (rng.below(1 << 30) as f64 + 0.5) / f64::from(1u32 << 30);
        let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        return (mean + z * mean.sqrt()).round().max(0.0) as u32;
    }
    let limit = (-mean).exp();
    let (mut k, mut p) = (0, 1.0);
    loop {
        p *= (rng.below(1 << 30) as f64 + 0.5) / f64::from(1u32 << 30);
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

fn series(p: Pattern, bins: usize, rng: &mut SplitMix64) -> Vec<u32> {
    let mut a = vec![0u32; bins];
    match p {
        Pattern::Periodic => {
            // A timer every 2 to 180 minutes, with a minute of jitter now and then.
            let period = 2 + rng.below(179) as usize;
            let mut t = rng.below(period as u64) as usize;
            while t < bins {
                let jitter = if rng.chance(0.1) { 1 } else { 0 };
                if t + jitter < bins {
                    a[t + jitter] += 1 + u32::from(rng.chance(0.2));
                }
                t += period;
            }
        }
        Pattern::Bursty => {
            // Bursts of 1 to 10 minutes at up to 200 calls a minute, gaps averaging 1 to 3 hours.
            let mean_gap = 60.0 + rng.below(120) as f64;
            let mut t = 0usize;
            loop {
                let u = (rng.below(1 << 30) as f64 + 0.5) / f64::from(1u32 << 30);
                t += (-u.ln() * mean_gap) as usize + 1;
                if t >= bins {
                    break;
                }
                let rate = 1.0 + rng.below(200) as f64;
                for slot in a.iter_mut().skip(t).take(1 + rng.below(10) as usize) {
                    *slot += poisson(rate, rng);
                }
            }
        }
        Pattern::Diurnal => {
            // Rate following a day's sine, 0.01 to 5 calls a minute at its peak.
            let peak = 0.01 + rng.below(500) as f64 / 100.0;
            let phase = rng.below(1440) as f64;
            for (t, slot) in a.iter_mut().enumerate() {
                let day = (std::f64::consts::TAU * (t as f64 + phase) / 1440.0).sin();
                *slot = poisson(peak * (0.5 + 0.5 * day).powi(2), rng);
            }
        }
        Pattern::Random => {
            // Memoryless calls, one every 5 minutes to one every 5 hours on average.
            let mean = 1.0 / (5.0 + rng.below(295) as f64);
            for slot in a.iter_mut() {
                *slot = poisson(mean, rng);
            }
        }
        Pattern::OneOff => {
            for _ in 0..1 + rng.below(3) {
                a[rng.below(bins as u64) as usize] += 1;
            }
        }
        Pattern::Mix => unreachable!("mix picks one of the others per function"),
    }
    a
}
