//! Feeds each function's keep-warm model (`sluice_common::predict`) from the
//! metric windows, one bin at a time, and says what the models hold now.
//!
//! Every coordinator runs one: all of them ingest every gateway's figures, so
//! a follower's models match the leader's, and a new leader decides with the
//! history it already has. A coordinator that starts (or restarts) rebuilds
//! its models from whatever its windows hold, up to the models' four-hour
//! range (the coarse ring keeps a day); with nothing there yet, the models'
//! safe defaults apply. Pure: time and windows come in as arguments.

use crate::windows::{increase_between, increase_within, Metric, Reading, Windows};
use sluice_common::predict::{Hold, KeepWarm, PolicyKind, RANGE_BINS};
use sluice_common::{FunctionName, FunctionSpec, Timestamp};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct PredictConfig {
    pub policy: PolicyKind,
    /// A model's unit of time: a minute live; shorter in tests.
    pub bin: Duration,
}

impl Default for PredictConfig {
    fn default() -> Self {
        Self { policy: PolicyKind::Sluice(Default::default()), bin: Duration::from_secs(60) }
    }
}

struct Model {
    memory_mb: u32,
    keep: Box<dyn KeepWarm>,
}

pub struct Predictor {
    config: PredictConfig,
    models: HashMap<FunctionName, Model>,
    /// The first bin not yet observed.
    next_bin: Option<u64>,
}

impl Predictor {
    pub fn new(config: PredictConfig) -> Self {
        Self { config, models: HashMap::new(), next_bin: None }
    }

    fn bin_ms(&self) -> u64 {
        (self.config.bin.as_millis() as u64).max(1)
    }

    /// A bin has ended since the last `advance`.
    pub fn due(&self, now: Timestamp) -> bool {
        self.next_bin.is_none_or(|next| now.millis() / self.bin_ms() > next)
    }

    /// Observes the bins completed since the last call (on the first call, as
    /// many as the models' range reaches back) for every function in
    /// `functions` that allows prediction, forgetting the others.
    pub fn advance<'a>(&mut self, windows: &Windows, functions: impl IntoIterator<Item = &'a FunctionSpec>, now: Timestamp) {
        let bin_ms = self.bin_ms();
        let current = now.millis() / bin_ms;
        let first = self.next_bin.unwrap_or_else(|| current.saturating_sub(RANGE_BINS as u64));
        let mut seen = HashSet::new();
        for spec in functions.into_iter().filter(|s| s.scaling.predict) {
            seen.insert(spec.name.clone());
            let memory_mb = spec.limits.memory_mb;
            let model = self.models.entry(spec.name.clone()).or_insert_with(|| Model { memory_mb, keep: self.config.policy.model(f64::from(memory_mb)) });
            if model.memory_mb != memory_mb {
                // A new memory size changes what holding costs: start over.
                *model = Model { memory_mb, keep: self.config.policy.model(f64::from(memory_mb)) };
            }
            if first >= current {
                continue;
            }
            let bins = bins_of(windows, spec, first, current, bin_ms, now);
            for (k, (arrivals, needed)) in bins.into_iter().enumerate() {
                model.keep.observe(first + k as u64, arrivals, needed);
            }
        }
        self.models.retain(|name, _| seen.contains(name));
        self.next_bin = Some(current.max(first));
    }

    /// What every model holds through the current bin.
    pub fn holds(&self, now: Timestamp) -> HashMap<FunctionName, Hold> {
        let bin = now.millis() / self.bin_ms();
        self.models.iter().map(|(name, m)| (name.clone(), m.keep.hold(bin))).filter(|(_, h)| h.total() > 0).collect()
    }

    /// Bytes the models keep (the bound B6 reports).
    pub fn bytes(&self) -> usize {
        self.models.values().map(|m| m.keep.bytes()).sum()
    }

    pub fn functions(&self) -> usize {
        self.models.len()
    }
}

/// Per bin in `first..current`: invocations received (summed over gateways)
/// and the instances they needed at once (the busiest concurrency, in flight
/// and queued, over the function's `concurrency`; at least one when any came).
fn bins_of(windows: &Windows, spec: &FunctionSpec, first: u64, current: u64, bin_ms: u64, now: Timestamp) -> Vec<(u32, u32)> {
    let n = (current - first) as usize;
    let mut arrivals = vec![0f64; n];
    let mut busiest = vec![0f64; n];
    let from_ms = first * bin_ms;
    // One bin further back, so the step from the last sample before the first bin counts.
    let range = Duration::from_millis(now.millis().saturating_sub(from_ms) + bin_ms);
    let slot = |ms: u64| (ms >= from_ms).then(|| ((ms - from_ms) / bin_ms) as usize).filter(|k| *k < n);
    for scope in windows.gateway_scopes_of(&spec.name) {
        let mut readings: Vec<Reading> = Vec::new();
        windows.visit_slots(scope, Metric::GatewayRequestsTotal, range, now, |r| readings.push(r));
        for (k, r) in readings.iter().enumerate() {
            if let Some(b) = slot(r.last_ms) {
                arrivals[b] += increase_within(r);
            }
            if let (Some(prev), Some(b)) = (k.checked_sub(1).map(|p| &readings[p]), slot(r.first_ms)) {
                arrivals[b] += increase_between(prev, r);
            }
        }
        // Concurrency (in flight plus queued) as the gateway's time-in-gateway
        // counter gives it between samples, at its busiest per bin. (The two
        // gauges' peaks in a second are at different moments and do not add.)
        let mut seconds: Vec<Reading> = Vec::new();
        windows.visit_slots(scope, Metric::GatewayRequestSecondsTotal, range, now, |r| seconds.push(r));
        let mut per_gateway = vec![0f64; n];
        for pair in seconds.windows(2) {
            let (prev, r) = (&pair[0], &pair[1]);
            let elapsed_s = r.last_ms.saturating_sub(prev.last_ms) as f64 / 1000.0;
            if let (Some(b), true) = (slot(r.last_ms), elapsed_s > 0.0) {
                let busy_s = increase_between(prev, r) + increase_within(r);
                per_gateway[b] = per_gateway[b].max(busy_s / elapsed_s);
            }
        }
        for (total, g) in busiest.iter_mut().zip(per_gateway) {
            *total += g;
        }
    }
    let per_instance = f64::from(spec.concurrency.max(1));
    arrivals
        .into_iter()
        .zip(busiest)
        .map(|(a, c)| {
            let a = a.round().max(0.0) as u32;
            let needed = if a == 0 { 0 } else { ((c / per_instance).ceil() as u32).max(1) };
            (a, needed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::{Scope, WindowsConfig};
    use sluice_common::NodeId;

    fn spec() -> FunctionSpec {
        serde_json::from_value(serde_json::json!({"name": "f", "image": "r/f:1"})).unwrap()
    }

    /// A gateway's figures once a second for `secs` seconds, with calls at the
    /// seconds in `calls`.
    fn windows_with(secs: u64, calls: &[u64]) -> Windows {
        let mut w = Windows::new(WindowsConfig::default());
        let scope = Scope::Gateway(NodeId::new("c1").unwrap(), FunctionName::new("f").unwrap());
        let f = FunctionName::new("f").unwrap();
        let (mut total, mut busy) = (0.0, 0.0);
        for s in 0..secs {
            let ts = Timestamp(1_000_000 + s * 1000);
            if calls.contains(&s) {
                total += 1.0;
            }
            w.record(&scope, Metric::GatewayRequestsTotal, Some(&f), ts, total, ts);
            if calls.contains(&s) {
                busy += 0.5;
            }
            w.record(&scope, Metric::GatewayRequestSecondsTotal, Some(&f), ts, busy, ts);
        }
        w
    }

    #[test]
    fn bins_count_the_calls_the_counter_shows() {
        let calls = [3, 4, 12, 20];
        let w = windows_with(30, &calls);
        let now = Timestamp(1_000_000 + 30_000);
        let s = spec();
        let bins = bins_of(&w, &s, (1_000_000 / 5000) as u64, (1_030_000 / 5000) as u64, 5000, now);
        // 5-second bins from t=0: calls at 3 and 4 in bin 0, 12 in bin 2, 20 in bin 4.
        assert_eq!(bins.iter().map(|b| b.0).collect::<Vec<_>>(), vec![2, 0, 1, 0, 1, 0]);
        assert!(bins.iter().all(|(a, n)| (*a == 0) == (*n == 0)));
    }

    #[test]
    fn instances_needed_come_from_the_busiest_concurrency_not_summed_gauge_peaks() {
        // 33 requests in the gateway for 5 s (a step: all queued at first, all
        // in flight after), concurrency 4 per instance: 9 instances, not 17.
        let mut w = Windows::new(WindowsConfig::default());
        let scope = Scope::Gateway(NodeId::new("c1").unwrap(), FunctionName::new("f").unwrap());
        let f = FunctionName::new("f").unwrap();
        for s in 0..=5u64 {
            let ts = Timestamp(1_000_000 + s * 1000);
            for (m, v) in [
                (Metric::GatewayRequestsTotal, 33.0 * s as f64),
                (Metric::GatewayRequestSecondsTotal, 33.0 * s as f64),
                (Metric::GatewayQueued, 33.0),
                (Metric::GatewayInFlight, 33.0),
            ] {
                w.record(&scope, m, Some(&f), ts, v, ts);
            }
        }
        let mut s = spec();
        s.concurrency = 4;
        let bins = bins_of(&w, &s, 1_000_000 / 10_000, 1_010_000 / 10_000, 10_000, Timestamp(1_010_000));
        assert_eq!(bins, vec![(165, 9)]);
    }

    #[test]
    fn a_new_predictor_rebuilds_from_the_windows_and_keeps_going() {
        // Calls every 10 s for 5 minutes, 1-second bins.
        let calls: Vec<u64> = (0..300).filter(|s| s % 10 == 0).collect();
        let w = windows_with(300, &calls);
        let now = Timestamp(1_000_000 + 300_000);
        let s = spec();
        let mut p = Predictor::new(PredictConfig { bin: Duration::from_secs(1), ..PredictConfig::default() });
        p.advance(&w, [&s], now);
        // The next call is due at 300 s (bin of `now`... the last was at 290):
        // the model holds ahead of it.
        let hold = p.holds(now).get(&s.name).copied();
        assert!(hold.is_some_and(|h| h.total() == 1), "{hold:?}");
        // A function that opts out, or is gone, is forgotten.
        let mut off = s.clone();
        off.scaling.predict = false;
        p.advance(&w, [&off], Timestamp(now.0 + 5000));
        assert_eq!((p.functions(), p.holds(now).len()), (0, 0));
        p.advance(&w, [], now);
        assert_eq!(p.functions(), 0);
    }
}
