//! The load decisions read, as the metrics bus brings it to every coordinator:
//! each function's concurrency over time (from the windows), and each
//! instance's activity at every gateway (from the gateways' figures). There is
//! one account of load, and a new leader already holds it.
//!
//! Concurrency is requests in a gateway, waiting or served. Each second a
//! gateway's figure is the larger of two readings: the rate of the time
//! requests spent in it (Little's law: exact for short requests, whose
//! in-flight count a once-a-second sample mostly misses) and its in-flight
//! plus queued count when it published (which sees long requests before they
//! end). A function's concurrency is the sum over its gateways.
//!
//! Pure: no clock, no tokio; time is an argument.

use crate::windows::{Metric, Reading, Scope, Windows};
use sluice_common::scaling::Scaling;
use sluice_common::wire::InstanceActivity;
use sluice_common::{InstanceId, NodeId, Timestamp};
use std::collections::HashMap;
use std::time::Duration;

/// A gateway figure older than this is stale: that gateway is gone or cut off.
pub const FRESH: Duration = Duration::from_secs(3);

/// Seconds the windows' fine ring holds by default; longer windows are read as this.
const FINE_SECS: u64 = 900;

/// One function's demand, in concurrent requests.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FunctionLoad {
    /// Mean over the stable window.
    pub stable: f64,
    /// Mean over the panic window.
    pub panic: f64,
    /// The highest panic-window mean ending anywhere in the last stable window:
    /// what keeps panic mode on for a stable window after the surge.
    pub panic_peak: f64,
    /// In flight plus queued at the gateways' latest fresh figures.
    pub now: f64,
    /// The most in flight plus queued any second of the panic window saw:
    /// what the function must keep room for, whatever the means say.
    pub recent_peak: f64,
}

/// `function`'s load from the windows of its `gateways` (`Scope::Gateway`).
pub fn function_load<'s>(windows: &Windows, gateways: impl IntoIterator<Item = &'s Scope>, scaling: &Scaling, now: Timestamp) -> FunctionLoad {
    // Both windows and the panic history must fit in the fine ring's seconds.
    let panic_secs = u64::from(scaling.panic_window_secs).clamp(1, FINE_SECS / 2) as usize;
    let stable_secs = u64::from(scaling.stable_window_secs).clamp(panic_secs as u64, FINE_SECS - panic_secs as u64) as usize;
    let span = stable_secs + panic_secs;
    let mut load = FunctionLoad::default();
    let mut peak_by_end = vec![0.0; stable_secs];
    let mut seconds = PerSecond::new(span);
    for scope in gateways {
        if !seconds.fill(windows, scope, now) {
            continue;
        }
        let (concurrency, counted) = (&seconds.concurrency, &seconds.counted);
        load.stable += mean(&concurrency[span - stable_secs..]).unwrap_or(0.0);
        load.panic += mean(&concurrency[span - panic_secs..]).unwrap_or(0.0);
        load.recent_peak += counted[span - panic_secs..].iter().flatten().fold(0.0, |a: f64, b| a.max(*b));
        // Panic-window means ending at each of the last `stable_secs` seconds.
        for (k, peak) in peak_by_end.iter_mut().enumerate() {
            let end = span - stable_secs + k + 1;
            *peak += mean(&concurrency[end - panic_secs..end]).unwrap_or(0.0);
        }
        let fresh = windows.newest(scope, Metric::GatewayInFlight).is_some_and(|t| now.since(t) <= FRESH && t <= now.plus(FRESH));
        if fresh {
            let last = |m| windows.query(scope, m, crate::windows::Agg::Last, FRESH, now).unwrap_or(0.0);
            load.now += last(Metric::GatewayInFlight) + last(Metric::GatewayQueued);
        }
    }
    load.panic_peak = peak_by_end.into_iter().fold(0.0, f64::max);
    load
}

/// One gateway's figures in each of the `span` seconds ending with now's
/// (oldest first); None in a second it sent nothing for. Reused from gateway
/// to gateway and function to function.
struct PerSecond {
    /// The larger of Little's law and the in-flight plus queued count.
    concurrency: Vec<Option<f64>>,
    /// In flight plus queued alone.
    counted: Vec<Option<f64>>,
}

impl PerSecond {
    fn new(span: usize) -> Self {
        Self { concurrency: vec![None; span], counted: vec![None; span] }
    }

    /// Reads `scope`'s seconds; false when it has no figures there.
    fn fill(&mut self, windows: &Windows, scope: &Scope, now: Timestamp) -> bool {
        let span = self.counted.len() as u64;
        let range = Duration::from_secs(span);
        let oldest = (now.millis() / 1000 + 1).saturating_sub(span);
        self.counted.iter_mut().for_each(|v| *v = None);
        let counted = &mut self.counted;
        let slot = |r: &Reading| (r.first_ms / 1000).checked_sub(oldest).map(|i| i as usize).filter(|i| *i < span as usize);
        let step = windows.visit_slots(scope, Metric::GatewayInFlight, range, now, |r| {
            if let Some(i) = slot(&r) {
                counted[i] = Some(r.mean());
            }
        });
        // Decisions need the fine ring's seconds.
        if step != Some(1000) {
            return false;
        }
        windows.visit_slots(scope, Metric::GatewayQueued, range, now, |r| {
            if let Some(v) = slot(&r).and_then(|i| counted[i].as_mut()) {
                *v += r.mean();
            }
        });
        self.concurrency.copy_from_slice(&self.counted);
        // Little's law: the increase of time-in-gateway over a second is the mean concurrency.
        let concurrency = &mut self.concurrency;
        let mut previous: Option<Reading> = None;
        windows.visit_slots(scope, Metric::GatewayRequestSecondsTotal, range, now, |b| {
            if let Some(a) = previous {
                let elapsed_ms = b.last_ms.saturating_sub(a.last_ms);
                // One sample, or the gateway restarted: no reading.
                if elapsed_ms > 0 && b.last >= a.last {
                    if let Some(i) = slot(&b) {
                        let c = (b.last - a.last) * 1000.0 / elapsed_ms as f64;
                        concurrency[i] = Some(concurrency[i].unwrap_or(0.0).max(c));
                    }
                }
            }
            previous = Some(b);
        });
        true
    }
}

fn mean(values: &[Option<f64>]) -> Option<f64> {
    let (sum, n) = values.iter().flatten().fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

/// What each gateway last said about each instance it routes to.
#[derive(Debug, Default, Clone)]
pub struct Activity {
    by_instance: HashMap<InstanceId, Vec<Seen>>,
}

#[derive(Debug, Clone)]
struct Seen {
    gateway: NodeId,
    outstanding: u32,
    last_active: Timestamp,
    reported: Timestamp,
}

impl Activity {
    /// Takes in one gateway's figures for a function's instances, stamped `reported`.
    pub fn record(&mut self, gateway: &NodeId, reported: Timestamp, instances: &[InstanceActivity]) {
        for i in instances {
            let seen = Seen { gateway: gateway.clone(), outstanding: i.outstanding, last_active: Timestamp(i.last_active_ms), reported };
            let views = self.by_instance.entry(i.instance).or_default();
            match views.iter_mut().find(|s| &s.gateway == gateway) {
                Some(s) if s.reported <= reported => {
                    let last_active = s.last_active.max(seen.last_active);
                    *s = Seen { last_active, ..seen };
                }
                Some(_) => {} // an older figure arriving late
                None => views.push(seen),
            }
        }
    }

    /// Requests on `id` now, over the gateways whose figures are fresh.
    pub fn outstanding(&self, id: InstanceId, now: Timestamp) -> u32 {
        self.by_instance.get(&id).map_or(0, |views| views.iter().filter(|s| now.since(s.reported) <= FRESH).map(|s| s.outstanding).sum())
    }

    /// When any gateway last started or finished a request on `id`.
    pub fn last_active(&self, id: InstanceId) -> Option<Timestamp> {
        self.by_instance.get(&id)?.iter().map(|s| s.last_active).max()
    }

    /// Forgets instances no gateway has mentioned within `horizon`.
    pub fn expire(&mut self, now: Timestamp, horizon: Duration) {
        self.by_instance.retain(|_, views| {
            views.retain(|s| now.since(s.reported) <= horizon);
            !views.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::WindowsConfig;
    use sluice_common::FunctionName;

    const T0: u64 = 1_700_000_000_000;

    fn gw(n: &str) -> Scope {
        Scope::Gateway(NodeId::new(n).unwrap(), FunctionName::new("f").unwrap())
    }

    /// A gateway's figures each second from `from` to `to` (exclusive).
    fn feed(w: &mut Windows, scope: &Scope, from: u64, to: u64, in_flight: f64, busy_per_sec: f64) {
        for s in from..to {
            let ts = Timestamp(T0 + s * 1000 + 20);
            w.record(scope, Metric::GatewayInFlight, None, ts, in_flight, ts);
            w.record(scope, Metric::GatewayQueued, None, ts, 0.0, ts);
            w.record(scope, Metric::GatewayRequestSecondsTotal, None, ts, busy_per_sec * s as f64, ts);
        }
    }

    #[test]
    fn short_requests_count_by_the_time_they_spend_and_gateways_add_up() {
        let mut w = Windows::new(WindowsConfig::default());
        // Gateway a: sub-millisecond requests, never caught in flight, 3 s of work a second.
        feed(&mut w, &gw("a"), 0, 120, 0.0, 3.0);
        // Gateway b: long requests, 2 in flight, that have not ended yet.
        feed(&mut w, &gw("b"), 0, 120, 2.0, 0.0);
        let now = Timestamp(T0 + 119_500);
        let l = function_load(&w, &[gw("a"), gw("b")], &Scaling::default(), now);
        assert!((l.stable - 5.0).abs() < 1e-9, "{l:?}");
        assert!((l.panic - 5.0).abs() < 1e-9, "{l:?}");
        assert!((l.now - 2.0).abs() < 1e-9, "the latest in-flight figures: {l:?}");
        // A gateway that went quiet is not counted in `now`.
        let later = Timestamp(T0 + 125_000);
        assert_eq!(function_load(&w, &[gw("a"), gw("b")], &Scaling::default(), later).now, 0.0);
    }

    #[test]
    fn the_panic_peak_remembers_a_surge_for_a_stable_window() {
        let mut w = Windows::new(WindowsConfig::default());
        feed(&mut w, &gw("a"), 0, 100, 1.0, 0.0);
        feed(&mut w, &gw("a"), 100, 106, 20.0, 0.0);
        feed(&mut w, &gw("a"), 106, 150, 1.0, 0.0);
        let at = |s: u64| function_load(&w, &[gw("a")], &Scaling::default(), Timestamp(T0 + s * 1000 + 500));
        assert!((at(105).panic - 20.0).abs() < 1e-9);
        assert!((at(149).panic_peak - 20.0).abs() < 1e-9, "43 s after the surge it is still in the window");
        assert!((at(149).panic - 1.0).abs() < 1e-9);
    }

    #[test]
    fn activity_sums_fresh_gateways_and_keeps_the_latest_activity() {
        let mut a = Activity::default();
        let id = InstanceId(7);
        let g = |n: &str| NodeId::new(n).unwrap();
        a.record(&g("c1"), Timestamp(10_000), &[InstanceActivity { instance: id, outstanding: 2, last_active_ms: 9_000 }]);
        a.record(&g("c2"), Timestamp(11_000), &[InstanceActivity { instance: id, outstanding: 1, last_active_ms: 10_500 }]);
        assert_eq!(a.outstanding(id, Timestamp(12_000)), 3);
        assert_eq!(a.outstanding(id, Timestamp(13_500)), 1, "c1's figure is stale");
        assert_eq!(a.last_active(id), Some(Timestamp(10_500)));
        a.expire(Timestamp(100_000), Duration::from_secs(60));
        assert_eq!(a.last_active(id), None);
    }
}
