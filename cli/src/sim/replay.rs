//! Replays a trace through a keep-warm policy with a simulated clock and
//! runtime, and scores the bins from `score_from` on.
//!
//! Per function and bin: the model says what to hold (`hold`), the bin's
//! invocations arrive, instances beyond those held start cold (one cold start
//! per missing instance, at most one per invocation), a held paused instance
//! that is needed is resumed (warm, counted apart), and then the model sees
//! the bin (`observe`). Memory held by loaded instances beyond the time they
//! spent serving is wasted, paused ones included.

use super::trace::{FunctionTrace, Trace};
use serde::Serialize;
use sluice_common::predict::{Hold, PolicyKind};

/// A contender: a built-in policy, or the oracle that knows each bin's need
/// in advance (a floor, not a contender one can run).
#[derive(Debug, Clone, PartialEq)]
pub enum Contender {
    Policy(PolicyKind),
    Oracle,
}

impl Contender {
    pub fn name(&self) -> String {
        match self {
            Contender::Policy(p) => p.name(),
            Contender::Oracle => "oracle".into(),
        }
    }
}

/// One policy's figures over the scored bins.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Score {
    pub invocations: u64,
    pub cold_starts: u64,
    /// Of invocations, percent.
    pub cold_pct: f64,
    /// 75th percentile over the functions invoked in the scored bins of each
    /// one's cold-start percentage ("Serverless in the Wild", Fig. 15).
    pub fn_p75_cold_pct: f64,
    /// GB-hours held by loaded instances beyond their serving time.
    pub wasted_gb_h: f64,
    /// Invocations served by resuming a paused instance (not cold).
    pub resumes: u64,
    pub instance_minutes: TierMinutes,
    pub functions_scored: usize,
    /// The largest model state of any function, bytes.
    pub model_bytes_max: usize,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TierMinutes {
    pub hot: f64,
    pub paused: f64,
}

/// Per-function tallies.
#[derive(Default)]
struct Tally {
    invocations: u64,
    cold: u64,
    resumes: u64,
    wasted_gb_bins: f64,
    hot_bins: f64,
    paused_bins: f64,
}

/// Replays `trace` through `contender`; `progress` hears how many functions
/// are done.
pub fn replay(trace: &Trace, contender: &Contender, score_from: usize, progress: &(dyn Fn(usize) + Sync)) -> Score {
    let mut per_function = Vec::with_capacity(trace.functions.len());
    let mut model_bytes_max = 0;
    for (done, f) in trace.functions.iter().enumerate() {
        let (tally, bytes) = replay_function(f, contender, score_from);
        model_bytes_max = model_bytes_max.max(bytes);
        per_function.push(tally);
        progress(done + 1);
    }
    score(trace, &per_function, model_bytes_max)
}

fn replay_function(f: &FunctionTrace, contender: &Contender, score_from: usize) -> (Tally, usize) {
    let mut model = match contender {
        Contender::Policy(p) => Some(p.model(f.memory_mb)),
        Contender::Oracle => None,
    };
    let memory_gb = f.memory_mb / 1024.0;
    let mut t = Tally::default();
    for bin in 0..f.arrivals.len() {
        let (arrivals, needed) = (f.arrivals[bin], f.needed[bin]);
        let hold = match &model {
            Some(m) => m.hold(bin as u64),
            None => Hold { hot: needed, ..Hold::NOTHING },
        };
        let missing = needed.saturating_sub(hold.total());
        let cold = missing.min(arrivals);
        // Needed beyond the hot ones: served by resuming paused ones.
        let resumed = needed.saturating_sub(hold.hot).min(hold.paused);
        let loaded = hold.total().max(needed);
        let still_paused = hold.paused - resumed;
        if bin >= score_from {
            t.invocations += u64::from(arrivals);
            t.cold += u64::from(cold);
            t.resumes += u64::from(resumed.min(arrivals));
            t.wasted_gb_bins += (f64::from(loaded) - f64::from(f.busy[bin])).max(0.0) * memory_gb;
            t.hot_bins += f64::from(loaded - still_paused);
            t.paused_bins += f64::from(still_paused);
        }
        if let Some(m) = model.as_mut() {
            m.observe(bin as u64, arrivals, needed);
        }
    }
    (t, model.map_or(0, |m| m.bytes()))
}

fn score(trace: &Trace, tallies: &[Tally], model_bytes_max: usize) -> Score {
    let bin_h = trace.bin_secs / 3600.0;
    let invocations: u64 = tallies.iter().map(|t| t.invocations).sum();
    let cold_starts: u64 = tallies.iter().map(|t| t.cold).sum();
    let mut per_fn: Vec<f64> = tallies.iter().filter(|t| t.invocations > 0).map(|t| 100.0 * t.cold as f64 / t.invocations as f64).collect();
    per_fn.sort_by(f64::total_cmp);
    Score {
        invocations,
        cold_starts,
        cold_pct: if invocations == 0 { 0.0 } else { 100.0 * cold_starts as f64 / invocations as f64 },
        fn_p75_cold_pct: percentile(&per_fn, 0.75),
        wasted_gb_h: tallies.iter().map(|t| t.wasted_gb_bins).sum::<f64>() * bin_h,
        resumes: tallies.iter().map(|t| t.resumes).sum(),
        instance_minutes: TierMinutes {
            hot: tallies.iter().map(|t| t.hot_bins).sum::<f64>() * trace.bin_secs / 60.0,
            paused: tallies.iter().map(|t| t.paused_bins).sum::<f64>() * trace.bin_secs / 60.0,
        },
        functions_scored: per_fn.len(),
        model_bytes_max,
    }
}

/// Nearest rank over sorted values; 0 when empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(arrivals: Vec<u32>) -> FunctionTrace {
        let needed = arrivals.iter().map(|a| u32::from(*a > 0)).collect();
        let busy = arrivals.iter().map(|a| if *a > 0 { 0.1 } else { 0.0 }).collect();
        FunctionTrace { name: "f".into(), memory_mb: 1024.0, arrivals, needed, busy }
    }

    fn trace(functions: Vec<FunctionTrace>) -> Trace {
        Trace { bins: functions[0].arrivals.len(), bin_secs: 60.0, functions, memory_filled: 0 }
    }

    #[test]
    fn fixed_keep_alive_counts_cold_starts_and_idle_memory() {
        // Calls at minutes 0, 3 and 20; keep-alive 10 minutes.
        let mut a = vec![0; 25];
        a[0] = 1;
        a[3] = 1;
        a[20] = 1;
        let t = trace(vec![function(a)]);
        let s = replay(&t, &Contender::Policy(PolicyKind::Fixed { bins: 10 }), 0, &|_| {});
        assert_eq!((s.invocations, s.cold_starts), (3, 2));
        // Loaded minutes: 0..=13 and 20..=24 less what the calls used (3 x 0.1).
        let loaded = 14.0 + 5.0;
        assert!((s.wasted_gb_h - (loaded - 0.3) / 60.0).abs() < 1e-9, "{s:?}");
        assert!((s.instance_minutes.hot - loaded).abs() < 1e-9);
    }

    #[test]
    fn the_oracle_never_starts_cold_and_holds_only_what_is_used() {
        let t = trace(vec![function(vec![1, 0, 0, 2, 0, 1])]);
        let s = replay(&t, &Contender::Oracle, 0, &|_| {});
        assert_eq!(s.cold_starts, 0);
        assert!((s.wasted_gb_h - 3.0 * 0.9 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn only_scored_bins_count_and_p75_is_per_function() {
        // Four functions each called once in the scored half: all cold.
        let fs = (0..4).map(|i| {
            let mut a = vec![0; 10];
            a[5 + i] = 1;
            function(a)
        });
        let s = replay(&trace(fs.collect()), &Contender::Policy(PolicyKind::Fixed { bins: 10 }), 5, &|_| {});
        assert_eq!((s.invocations, s.cold_starts, s.functions_scored), (4, 4, 4));
        assert_eq!(s.fn_p75_cold_pct, 100.0);
    }
}
