//! A function's timeline, for the dashboard: its instance counts over time
//! (ready; desired, every instance not taken out of service; predicted, what
//! the keep-warm model holds) and its demand (requests per second and mean
//! concurrency, summed over gateways).
//!
//! The windows hold figures the agents and gateways measure, but no count of a
//! function's instances over time, and the state holds only the counts of now.
//! So every coordinator's control loop samples the counts once a second into
//! rings of the windows' resolutions (`Timeline`), and any coordinator can draw
//! the last 15 minutes or the last day. Demand is not copied: it is read per
//! slot from the gateways' counters in the windows when asked. Pure: time
//! comes in as arguments.
//!
//! Memory: three counts x (900 + 1440) slots x 56 bytes, about 390 KB for a
//! function a day old (rings grow as they fill), beside about 2 MB for the
//! windows' series of one gateway's figures of the same function. A removed
//! function's timeline is dropped at the next sample.

use crate::windows::{increase_between, increase_within, Metric, Reading, Ring, Scope, Windows, WindowsConfig};
use serde::Serialize;
use sluice_common::{FunctionName, InstanceState, Timestamp};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// One function's instance counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counts {
    pub ready: u32,
    pub desired: u32,
    pub predicted: u32,
}

impl Counts {
    /// The ready and desired counts from the states of a function's instances.
    pub fn of<'a>(states: impl IntoIterator<Item = &'a InstanceState>, predicted: u32) -> Self {
        let mut c = Counts { predicted, ..Counts::default() };
        for s in states {
            c.ready += u32::from(*s == InstanceState::Ready);
            c.desired += u32::from(!matches!(s, InstanceState::Stopping | InstanceState::Gone));
        }
        c
    }
}

/// Instance counts over one slot: the mean of the samples taken in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CountsPoint {
    /// The slot's start (Unix ms).
    pub at: u64,
    pub ready: f64,
    pub desired: f64,
    pub predicted: f64,
}

/// Demand over one slot, summed over gateways.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemandPoint {
    /// The slot's start (Unix ms).
    pub at: u64,
    pub requests_per_sec: f64,
    /// Invocations in the gateways at once, on average (queued or served).
    pub concurrency: f64,
}

/// Fine and coarse rings of one count.
#[derive(Debug, Clone)]
struct Track {
    fine: Ring,
    coarse: Ring,
}

impl Track {
    fn new(config: &WindowsConfig) -> Self {
        Self { fine: Ring::new(config.fine_step.as_millis() as u64, config.fine_slots), coarse: Ring::new(config.coarse_step.as_millis() as u64, config.coarse_slots) }
    }

    fn record(&mut self, ts_ms: u64, value: f64) {
        // A sample a ring refuses (a repeat of the same millisecond) is simply not kept.
        for ring in [&mut self.fine, &mut self.coarse] {
            if let Ok(place) = ring.locate(ts_ms, ts_ms) {
                ring.add(place, value);
            }
        }
    }

    /// The ring a range reads, as the windows choose it.
    fn ring(&self, range_ms: u64) -> &Ring {
        if range_ms <= self.fine.span_ms() {
            &self.fine
        } else {
            &self.coarse
        }
    }
}

/// Ready, desired and predicted, in that order.
type Tracks = [Track; 3];

/// Every function's instance counts over time.
#[derive(Debug, Clone)]
pub struct Timeline {
    config: WindowsConfig,
    functions: HashMap<FunctionName, Tracks>,
}

impl Timeline {
    pub fn new(config: &WindowsConfig) -> Self {
        Self { config: config.clone(), functions: HashMap::new() }
    }

    /// Records `function`'s counts as of `now`.
    pub fn record(&mut self, function: &FunctionName, counts: Counts, now: Timestamp) {
        let config = &self.config;
        let tracks = self.functions.entry(function.clone()).or_insert_with(|| [Track::new(config), Track::new(config), Track::new(config)]);
        for (track, value) in tracks.iter_mut().zip([counts.ready, counts.desired, counts.predicted]) {
            track.record(now.millis(), f64::from(value));
        }
    }

    /// Forgets the functions `keep` does not want (removed ones).
    pub fn retain(&mut self, keep: impl Fn(&FunctionName) -> bool) {
        self.functions.retain(|f, _| keep(f));
    }

    /// `function`'s counts over `range` before `now`, oldest first, with the step (ms).
    pub fn counts(&self, function: &FunctionName, range: Duration, now: Timestamp) -> (u64, Vec<CountsPoint>) {
        let range_ms = range.as_millis() as u64;
        // The ring a track would read, known without one (a function not sampled yet).
        let step = Track::new(&self.config).ring(range_ms).step_ms();
        let Some(tracks) = self.functions.get(function) else { return (step, Vec::new()) };
        let mut points: BTreeMap<u64, CountsPoint> = BTreeMap::new();
        for (k, track) in tracks.iter().enumerate() {
            track.ring(range_ms).visit(range_ms, now.millis(), |r| {
                let at = r.first_ms / step * step;
                let p = points.entry(at).or_insert(CountsPoint { at, ready: 0.0, desired: 0.0, predicted: 0.0 });
                *[&mut p.ready, &mut p.desired, &mut p.predicted][k] = r.mean();
            });
        }
        (step, points.into_values().collect())
    }
}

/// `function`'s demand per slot over `range` before `now`, oldest first: each
/// gateway's request and busy-time counters turned into rates between one
/// slot's last sample and the next's (the first slot: within itself), added
/// up over gateways.
pub fn demand(windows: &Windows, function: &FunctionName, range: Duration, now: Timestamp) -> Vec<DemandPoint> {
    let mut points: BTreeMap<u64, DemandPoint> = BTreeMap::new();
    let scopes: Vec<Scope> = windows.gateway_scopes_of(function).cloned().collect();
    for (metric, requests) in [(Metric::GatewayRequestsTotal, true), (Metric::GatewayRequestSecondsTotal, false)] {
        for scope in &scopes {
            let mut prev: Option<Reading> = None;
            let mut rates = Vec::new();
            let step = windows.visit_slots(scope, metric, range, now, |r| {
                match prev {
                    Some(p) if r.last_ms > p.last_ms => {
                        let increase = increase_between(&p, &r) + increase_within(&r);
                        rates.push((r.last_ms, increase * 1000.0 / (r.last_ms - p.last_ms) as f64));
                    }
                    // The range's first slot: its own samples, if they span any time
                    // (a per-minute slot's do; a per-second slot's one sample does not).
                    None if r.last_ms > r.first_ms => rates.push((r.last_ms, increase_within(&r) * 1000.0 / (r.last_ms - r.first_ms) as f64)),
                    _ => {}
                }
                prev = Some(r);
            });
            let Some(step) = step else { continue };
            for (last_ms, rate) in rates {
                let at = last_ms / step * step;
                let p = points.entry(at).or_insert(DemandPoint { at, requests_per_sec: 0.0, concurrency: 0.0 });
                *if requests { &mut p.requests_per_sec } else { &mut p.concurrency } += rate;
            }
        }
    }
    points.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::NodeId;

    fn f() -> FunctionName {
        FunctionName::new("f").unwrap()
    }

    #[test]
    fn counts_come_from_instance_states_and_read_back_per_slot() {
        use InstanceState::*;
        let c = Counts::of(&[Pending, Starting, Ready, Ready, Paused, Stopping, Gone], 3);
        assert_eq!(c, Counts { ready: 2, desired: 5, predicted: 3 });
        let mut t = Timeline::new(&WindowsConfig::default());
        let t0 = 1_000_000_000u64;
        // Two samples in the first second (averaged), one in the third; none in the second.
        t.record(&f(), Counts { ready: 1, desired: 2, predicted: 0 }, Timestamp(t0));
        t.record(&f(), Counts { ready: 2, desired: 2, predicted: 0 }, Timestamp(t0 + 500));
        t.record(&f(), Counts { ready: 3, desired: 4, predicted: 1 }, Timestamp(t0 + 2000));
        let (step, points) = t.counts(&f(), Duration::from_secs(60), Timestamp(t0 + 2500));
        assert_eq!(step, 1000);
        assert_eq!(points, vec![CountsPoint { at: t0, ready: 1.5, desired: 2.0, predicted: 0.0 }, CountsPoint { at: t0 + 2000, ready: 3.0, desired: 4.0, predicted: 1.0 },]);
        // A day reads the per-minute ring: one slot holding all three samples.
        let (step, points) = t.counts(&f(), Duration::from_secs(86_400), Timestamp(t0 + 2500));
        assert_eq!(step, 60_000);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].ready, 2.0);
        // A range that ends before the samples sees none; a removed function has none.
        assert!(t.counts(&f(), Duration::from_secs(60), Timestamp(t0 + 120_000)).1.is_empty());
        t.retain(|_| false);
        assert!(t.counts(&f(), Duration::from_secs(60), Timestamp(t0 + 2500)).1.is_empty());
    }

    #[test]
    fn demand_is_each_slots_rate_added_up_over_gateways() {
        let mut w = Windows::new(WindowsConfig::default());
        let t0 = 1_000_000_000u64;
        for (gateway, per_sec) in [("c1", 2.0), ("c2", 3.0)] {
            let scope = Scope::Gateway(NodeId::new(gateway).unwrap(), f());
            for s in 0..5u64 {
                let ts = Timestamp(t0 + s * 1000);
                w.record(&scope, Metric::GatewayRequestsTotal, Some(&f()), ts, per_sec * s as f64, ts);
                // Half a second of busy time per second: concurrency 0.5 at each gateway.
                w.record(&scope, Metric::GatewayRequestSecondsTotal, Some(&f()), ts, 0.5 * s as f64, ts);
            }
        }
        let points = demand(&w, &f(), Duration::from_secs(60), Timestamp(t0 + 4500));
        // The first slot has no earlier sample to take a rate from.
        assert_eq!(points.len(), 4);
        for (i, p) in points.iter().enumerate() {
            assert_eq!(p.at, t0 + (i as u64 + 1) * 1000);
            assert!((p.requests_per_sec - 5.0).abs() < 1e-9, "{p:?}");
            assert!((p.concurrency - 1.0).abs() < 1e-9, "{p:?}");
        }
        // A day reads per-minute slots: the five samples share one, whose own span gives its rate.
        let day = demand(&w, &f(), Duration::from_secs(86_400), Timestamp(t0 + 4500));
        assert_eq!(day.len(), 1, "{day:?}");
        assert!((day[0].requests_per_sec - 5.0).abs() < 1e-9 && (day[0].concurrency - 1.0).abs() < 1e-9, "{day:?}");
        assert!(demand(&w, &FunctionName::new("other").unwrap(), Duration::from_secs(60), Timestamp(t0 + 4500)).is_empty());
    }
}
