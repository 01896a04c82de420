//! Metric windows: recent figures per node, instance, function and gateway, kept
//! at fixed resolutions for the scaler, the rules and the dashboard.
//!
//! Each series has two rings (`ring`): fine (default 1 s x 900, 15 minutes) and
//! coarse (default 1 min x 1440, a day). A sample goes to both. Queries take the
//! fine ring when the range fits in it and the coarse one otherwise. Everything
//! here is pure: time comes in as arguments, never from a clock.
//!
//! Memory: a slot is 32 bytes, so a full series is about 75 KiB (rings grow as
//! they fill). The number of series is capped (`max_series`); past it new series
//! are refused and counted, and series silent for longer than the coarse span
//! are dropped by `expire`.

mod ring;

use ring::{Placed, Ring, Slot};
use serde::Serialize;
use sluice_common::metrics::{header, sample};
use sluice_common::{FunctionName, InstanceId, NodeId, Timestamp};
use std::collections::HashMap;
use std::time::Duration;

/// What a series is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A host's figures.
    Node(NodeId),
    /// One instance container's figures.
    Instance(InstanceId),
    /// One gateway's (coordinator's) figures for one function: counters are per
    /// gateway, so they are kept apart and added up when asked per function.
    Gateway(NodeId, FunctionName),
}

/// How a series' values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// A level: CPU share, bytes in use, queue length.
    Gauge,
    /// A running total: its `rate` is the increase per second (a drop is a restart).
    Counter,
}

/// An aggregation over a time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Avg,
    Min,
    Max,
    /// 95th percentile (nearest rank) of the per-slot means: over per-second
    /// means in the fine ring, per-minute means in the coarse one.
    P95,
    /// Increase per second, for counters.
    Rate,
    Last,
    /// Samples in the range.
    Count,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowsConfig {
    pub fine_step: Duration,
    pub fine_slots: usize,
    pub coarse_step: Duration,
    pub coarse_slots: usize,
    pub max_series: usize,
    /// Samples stamped further ahead of `now` than this are refused (clock skew).
    pub max_future: Duration,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        Self {
            fine_step: Duration::from_secs(1),
            fine_slots: 900,
            coarse_step: Duration::from_secs(60),
            coarse_slots: 1440,
            max_series: 20_000,
            max_future: Duration::from_secs(10),
        }
    }
}

/// What happened to a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Stored,
    Duplicate,
    TooLate,
    Future,
    /// The series cap was reached and this would have been a new series.
    Refused,
}

#[derive(Debug, Clone)]
struct Series {
    metric: &'static str,
    kind: SeriesKind,
    fine: Ring,
    coarse: Ring,
    newest_ms: u64,
}

/// The series of one scope, found by a short scan (a scope has about ten).
#[derive(Debug, Clone, Default)]
struct Entity {
    series: Vec<Series>,
    /// For instances: their function, so a function's instances can be found.
    function: Option<FunctionName>,
}

/// Counts of what became of samples, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounters {
    pub stored: u64,
    pub duplicate: u64,
    pub too_late: u64,
    pub future: u64,
    pub refused: u64,
}

/// One series summed up over a range, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesSummary {
    pub metric: &'static str,
    pub count: u64,
    pub avg: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub p95: Option<f64>,
    pub last: Option<f64>,
    /// Increase per second; counters only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct Windows {
    config: WindowsConfig,
    entities: HashMap<Scope, Entity>,
    series: usize,
    counters: WindowCounters,
}

impl Windows {
    pub fn new(config: WindowsConfig) -> Self {
        Self { config, ..Self::default() }
    }

    /// Records `value` of `scope`'s `metric`, taken at `ts`; `now` bounds how far ahead it may be.
    #[allow(clippy::too_many_arguments)] // each argument is one plain fact about the sample
    pub fn record(&mut self, scope: &Scope, metric: &'static str, kind: SeriesKind, function: Option<&FunctionName>, ts: Timestamp, value: f64, now: Timestamp) -> Recorded {
        let outcome = self.place(scope, metric, kind, function, ts, value, now);
        let c = &mut self.counters;
        *match outcome {
            Recorded::Stored => &mut c.stored,
            Recorded::Duplicate => &mut c.duplicate,
            Recorded::TooLate => &mut c.too_late,
            Recorded::Future => &mut c.future,
            Recorded::Refused => &mut c.refused,
        } += 1;
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    fn place(&mut self, scope: &Scope, metric: &'static str, kind: SeriesKind, function: Option<&FunctionName>, ts: Timestamp, value: f64, now: Timestamp) -> Recorded {
        if ts.millis() > now.millis() + self.config.max_future.as_millis() as u64 {
            return Recorded::Future;
        }
        if !value.is_finite() {
            return Recorded::Refused;
        }
        let entity = match self.entities.get_mut(scope) {
            Some(e) => e,
            None if self.series >= self.config.max_series => return Recorded::Refused,
            None => self.entities.entry(scope.clone()).or_default(),
        };
        if entity.function.is_none() {
            entity.function = function.cloned();
        }
        let index = match entity.series.iter().position(|s| s.metric == metric) {
            Some(i) => i,
            None => {
                if self.series >= self.config.max_series {
                    return Recorded::Refused;
                }
                let c = &self.config;
                entity.series.push(Series {
                    metric,
                    kind,
                    fine: Ring::new(c.fine_step.as_millis() as u64, c.fine_slots),
                    coarse: Ring::new(c.coarse_step.as_millis() as u64, c.coarse_slots),
                    newest_ms: 0,
                });
                self.series += 1;
                entity.series.len() - 1
            }
        };
        let series = &mut entity.series[index];
        let ts_ms = ts.millis();
        let placed = series.fine.record(ts_ms, value, series.newest_ms);
        if placed == Placed::Duplicate {
            return Recorded::Duplicate;
        }
        // The coarse ring spans longer: a sample too old for the fine one may still fit.
        let coarse = series.coarse.record(ts_ms, value, series.newest_ms);
        series.newest_ms = series.newest_ms.max(ts_ms);
        match (placed, coarse) {
            (Placed::Stored, _) | (_, Placed::Stored) => Recorded::Stored,
            _ => Recorded::TooLate,
        }
    }

    /// `agg` of `scope`'s `metric` over the `range` before `now`.
    pub fn query(&self, scope: &Scope, metric: &str, agg: Agg, range: Duration, now: Timestamp) -> Option<f64> {
        let series = self.entities.get(scope)?.series.iter().find(|s| s.metric == metric)?;
        aggregate(&self.slots(series, range, now), agg, series.kind)
    }

    /// Every series of `scope`, summed up over `range`.
    pub fn summary(&self, scope: &Scope, range: Duration, now: Timestamp) -> Vec<SeriesSummary> {
        let Some(entity) = self.entities.get(scope) else { return Vec::new() };
        entity.series.iter().map(|s| summarize(s.metric, s.kind, &self.slots(s, range, now))).collect()
    }

    /// The instances recorded for `function`.
    pub fn instances_of(&self, function: &FunctionName) -> Vec<InstanceId> {
        let mut ids: Vec<InstanceId> = self
            .entities
            .iter()
            .filter_map(|(scope, e)| match scope {
                Scope::Instance(id) if e.function.as_ref() == Some(function) => Some(*id),
                _ => None,
            })
            .collect();
        ids.sort();
        ids
    }

    /// The gateways that reported `function`.
    pub fn gateways_of(&self, function: &FunctionName) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .entities
            .keys()
            .filter_map(|scope| match scope {
                Scope::Gateway(node, f) if f == function => Some(node.clone()),
                _ => None,
            })
            .collect();
        nodes.sort();
        nodes
    }

    /// `agg` of `metric` combined over `scopes`: counters' rates and gauges'
    /// `Last` are summed (request rates, queue lengths add up across gateways);
    /// other aggregations are taken over the union of the scopes' slots.
    pub fn query_combined(&self, scopes: &[Scope], metric: &str, agg: Agg, range: Duration, now: Timestamp) -> Option<f64> {
        let found: Vec<&Series> = scopes.iter().filter_map(|sc| self.entities.get(sc)?.series.iter().find(|s| s.metric == metric)).collect();
        let kind = found.first()?.kind;
        if matches!(agg, Agg::Rate | Agg::Last) {
            let parts: Vec<f64> = found.iter().filter_map(|s| aggregate(&self.slots(s, range, now), agg, s.kind)).collect();
            return (!parts.is_empty()).then(|| parts.iter().sum());
        }
        let slots: Vec<Slot> = found.iter().flat_map(|s| self.slots(s, range, now)).collect();
        aggregate(&slots, agg, kind)
    }

    fn slots(&self, series: &Series, range: Duration, now: Timestamp) -> Vec<Slot> {
        let range_ms = range.as_millis() as u64;
        let ring = if range_ms <= series.fine.span_ms() { &series.fine } else { &series.coarse };
        ring.slots_in(range_ms, now.millis())
    }

    /// Drops every series of `scope`.
    pub fn forget(&mut self, scope: &Scope) {
        if let Some(e) = self.entities.remove(scope) {
            self.series -= e.series.len();
        }
    }

    /// Drops series with no sample within the coarse span before `now`.
    pub fn expire(&mut self, now: Timestamp) {
        let horizon = now.millis().saturating_sub(self.config.coarse_step.as_millis() as u64 * self.config.coarse_slots as u64);
        let mut dropped = 0;
        self.entities.retain(|_, e| {
            let before = e.series.len();
            e.series.retain(|s| s.newest_ms >= horizon);
            dropped += before - e.series.len();
            !e.series.is_empty()
        });
        self.series -= dropped;
    }

    pub fn counters(&self) -> WindowCounters {
        self.counters
    }

    pub fn series_count(&self) -> usize {
        self.series
    }

    /// Bytes held by all rings.
    pub fn bytes(&self) -> usize {
        self.entities.values().flat_map(|e| &e.series).map(|s| s.fine.bytes() + s.coarse.bytes()).sum()
    }

    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        let c = self.counters;
        header(out, "sluice_windows_samples_total", "counter", "Samples offered to the metric windows, by what became of them.");
        for (outcome, n) in [("stored", c.stored), ("duplicate", c.duplicate), ("too_late", c.too_late), ("future", c.future), ("refused", c.refused)] {
            sample(out, "sluice_windows_samples_total", &format!("outcome=\"{outcome}\""), n);
        }
        header(out, "sluice_windows_series", "gauge", "Series held in the metric windows.");
        sample(out, "sluice_windows_series", "", self.series);
        header(out, "sluice_windows_bytes", "gauge", "Bytes held by the metric windows' rings.");
        sample(out, "sluice_windows_bytes", "", self.bytes());
    }
}

fn summarize(metric: &'static str, kind: SeriesKind, slots: &[Slot]) -> SeriesSummary {
    let get = |agg| aggregate(slots, agg, kind);
    SeriesSummary {
        metric,
        count: get(Agg::Count).unwrap_or(0.0) as u64,
        avg: get(Agg::Avg),
        min: get(Agg::Min),
        max: get(Agg::Max),
        p95: get(Agg::P95),
        last: get(Agg::Last),
        rate: if kind == SeriesKind::Counter { get(Agg::Rate) } else { None },
    }
}

/// `agg` over `slots` (oldest first); None when there is nothing to aggregate.
fn aggregate(slots: &[Slot], agg: Agg, kind: SeriesKind) -> Option<f64> {
    let count: u64 = slots.iter().map(|s| u64::from(s.count)).sum();
    if count == 0 {
        return None;
    }
    Some(match agg {
        Agg::Count => count as f64,
        Agg::Avg => slots.iter().map(|s| s.sum).sum::<f64>() / count as f64,
        Agg::Min => slots.iter().map(|s| f64::from(s.min)).fold(f64::INFINITY, f64::min),
        Agg::Max => slots.iter().map(|s| f64::from(s.max)).fold(f64::NEG_INFINITY, f64::max),
        Agg::Last => slots.last()?.last,
        Agg::P95 => {
            let mut means: Vec<f64> = slots.iter().map(Slot::mean).collect();
            means.sort_by(f64::total_cmp);
            let rank = ((0.95 * means.len() as f64).ceil() as usize).max(1);
            means[rank - 1]
        }
        Agg::Rate if kind == SeriesKind::Counter => {
            // Increase between consecutive slots' last values; a drop is a restart
            // from zero, as Prometheus' increase() reads it.
            let (first, last) = (slots.first()?, slots.last()?);
            let elapsed_s = last.last_ms().saturating_sub(first.last_ms()) as f64 / 1000.0;
            if slots.len() < 2 || elapsed_s <= 0.0 {
                return None;
            }
            let increase: f64 = slots.windows(2).map(|w| if w[1].last >= w[0].last { w[1].last - w[0].last } else { w[1].last }).sum();
            increase / elapsed_s
        }
        Agg::Rate => return None,
    })
}

#[cfg(test)]
mod tests;
