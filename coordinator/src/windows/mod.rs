//! Metric windows: recent figures per node, instance and (gateway, function),
//! kept at fixed resolutions for the scaler, the rules and the dashboard.
//!
//! A series is a scope and a metric. It has two rings (`ring`): fine (default
//! 1 s x 900, 15 minutes) and coarse (default 1 min x 1440, a day); a sample
//! goes to the slot its time falls in, in both, and a slot keeps count, sum,
//! min, max, first and last, so averages stay right when samples come faster
//! than slots. What becomes of a sample is decided in `series`; queries
//! (`query`) read the fine ring when the range fits in it and the coarse one
//! otherwise. Everything here is pure: time comes in as arguments, never from a
//! clock.
//!
//! Memory: a slot is 56 bytes, so with the defaults a full series holds
//! (900 + 1440) x 56 = 131,040 bytes of rings, plus about 130 bytes of
//! bookkeeping (and about 100 per scope). Rings grow as they fill: a series an
//! hour old holds 53,984 bytes. The number of series is capped (`max_series`,
//! default 20,000: at most 2.6 GB once every series is a day old); past it new
//! series are refused and counted, series silent for longer than the coarse
//! span are dropped by `expire`, and `forget` drops a scope that has gone.
//!
//! Duplicates are found cheaply: a sample whose timestamp equals the first or
//! last one already in its slot is a repeat. At the agents' one sample a second
//! per 1 s slot that catches every repeat; with three or more samples in a slot
//! a repeat of a middle one is counted twice. Ingest already drops repeated
//! messages by sequence number, so this is the second line, not the first.

mod query;
mod ring;
mod series;

pub use query::{increase_between, increase_within};
pub use ring::{Reading, Ring};

use serde::Serialize;
use series::Series;
pub use sluice_common::metric::{Agg, Metric, SeriesKind};
use sluice_common::metrics::{header, sample};
use sluice_common::{FunctionName, InstanceId, NodeId, Timestamp};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// What a series is about. Ordered by kind, then id (instances by number).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// A host's figures.
    Node(NodeId),
    /// One instance container's figures.
    Instance(InstanceId),
    /// One gateway's (coordinator's) figures for one function. Counters are per
    /// gateway (each counts from its own start), so they are kept apart and
    /// combined per function by `query_combined`.
    Gateway(NodeId, FunctionName),
}

/// Ring sizes, the series cap and the bound on clock skew.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowsConfig {
    pub fine_step: Duration,
    pub fine_slots: usize,
    /// Should span at least the fine ring: ranges longer than the fine ring read it.
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

/// What became of a sample; each is counted in `WindowCounters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Kept, and not older than the series' newest sample.
    Stored,
    /// Kept, though older than the series' newest sample.
    Late,
    /// Its slot already holds a sample with this timestamp.
    Duplicate,
    /// Older than the coarse ring's lap back from now (or from the newest sample).
    TooLate,
    /// Stamped further ahead of now than `max_future`.
    Future,
    /// Would have been a new series past `max_series`.
    SeriesCapReached,
    /// NaN or infinite.
    NotFinite,
}

/// Counts of what became of samples, for `/metrics`: each sample is in exactly
/// one (samples kept = `stored` + `late`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounters {
    pub stored: u64,
    pub late: u64,
    pub duplicate: u64,
    pub too_late: u64,
    pub future: u64,
    pub refused_series: u64,
    pub not_finite: u64,
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

/// The series of one scope, found by a short scan (a scope has about ten).
#[derive(Debug, Clone)]
struct Entity {
    series: Vec<Series>,
    /// For instances and gateways: their function, so a function's scopes can be found.
    function: Option<FunctionName>,
}

/// Every series: recording, queries, lifecycle and counters.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    config: WindowsConfig,
    entities: HashMap<Scope, Entity>,
    /// The instance and gateway scopes of each function, so finding a
    /// function's series costs what it has, not what the windows hold.
    by_function: HashMap<FunctionName, BTreeSet<Scope>>,
    series: usize,
    counters: WindowCounters,
}

impl Windows {
    pub fn new(config: WindowsConfig) -> Self {
        Self { config, ..Self::default() }
    }

    /// Records `value` of `scope`'s `metric`, taken at `ts` and received at
    /// `now`. `function` is used when this creates the series (only if the
    /// scope has none yet).
    pub fn record(&mut self, scope: &Scope, metric: Metric, function: Option<&FunctionName>, ts: Timestamp, value: f64, now: Timestamp) -> Recorded {
        let outcome = self.place(scope, metric, function, ts, value, now);
        let c = &mut self.counters;
        *match outcome {
            Recorded::Stored => &mut c.stored,
            Recorded::Late => &mut c.late,
            Recorded::Duplicate => &mut c.duplicate,
            Recorded::TooLate => &mut c.too_late,
            Recorded::Future => &mut c.future,
            Recorded::SeriesCapReached => &mut c.refused_series,
            Recorded::NotFinite => &mut c.not_finite,
        } += 1;
        outcome
    }

    fn place(&mut self, scope: &Scope, metric: Metric, function: Option<&FunctionName>, ts: Timestamp, value: f64, now: Timestamp) -> Recorded {
        if ts.millis() > now.plus(self.config.max_future).millis() {
            return Recorded::Future;
        }
        if !value.is_finite() {
            return Recorded::NotFinite;
        }
        let entity = self.entities.get_mut(scope);
        if let Some(series) = entity.and_then(|e| e.series.iter_mut().find(|s| s.metric == metric)) {
            return series.record(ts.millis(), value, now.millis());
        }
        if self.series >= self.config.max_series {
            return Recorded::SeriesCapReached;
        }
        // A series is only created by a sample it keeps.
        let mut series = Series::new(metric, &self.config);
        let outcome = series.record(ts.millis(), value, now.millis());
        if matches!(outcome, Recorded::Stored | Recorded::Late) {
            let entity = self.entities.entry(scope.clone()).or_insert_with(|| Entity { series: Vec::new(), function: None });
            if entity.function.is_none() {
                entity.function = function.cloned();
                if let Some(f) = function {
                    self.by_function.entry(f.clone()).or_default().insert(scope.clone());
                }
            }
            entity.series.push(series);
            self.series += 1;
        }
        outcome
    }

    fn find(&self, scope: &Scope, metric: Metric) -> Option<&Series> {
        self.entities.get(scope)?.series.iter().find(|s| s.metric == metric)
    }

    /// `agg` of `scope`'s `metric` over the `range` before `now`: the slots of
    /// the `ceil(range / step)` steps ending with the one holding `now`. None
    /// when the series is unknown or has no sample in the range.
    pub fn query(&self, scope: &Scope, metric: Metric, agg: Agg, range: Duration, now: Timestamp) -> Option<f64> {
        let series = self.find(scope, metric)?;
        query::aggregate(&series.readings(range.as_millis() as u64, now.millis()), agg, metric.kind())
    }

    /// Calls `f` with each slot reading of `scope`'s `metric` over `range`,
    /// oldest first, without collecting them; returns the ring's step, or None
    /// for an unknown series.
    pub fn visit_slots(&self, scope: &Scope, metric: Metric, range: Duration, now: Timestamp, f: impl FnMut(Reading)) -> Option<u64> {
        let series = self.find(scope, metric)?;
        Some(series.visit(range.as_millis() as u64, now.millis(), f))
    }

    /// The gateway scopes of `function`, borrowed (no allocation).
    pub fn gateway_scopes_of<'a>(&'a self, function: &FunctionName) -> impl Iterator<Item = &'a Scope> + 'a {
        self.by_function.get(function).into_iter().flatten().filter(|s| matches!(s, Scope::Gateway(..)))
    }

    /// The time of `scope`'s newest sample of `metric`.
    pub fn newest(&self, scope: &Scope, metric: Metric) -> Option<Timestamp> {
        self.find(scope, metric).map(|s| Timestamp(s.newest_ms))
    }

    /// Every series of `scope`, summed up over `range` (as `query` reads it).
    pub fn summary(&self, scope: &Scope, range: Duration, now: Timestamp) -> Vec<SeriesSummary> {
        let Some(entity) = self.entities.get(scope) else { return Vec::new() };
        entity.series.iter().map(|s| query::summarize(s.metric, &s.readings(range.as_millis() as u64, now.millis()))).collect()
    }

    /// `agg` of `metric` over several scopes, e.g. a function's instances or
    /// gateways: `Rate` and `Last` add up each scope's own figure; the other
    /// aggregations pool all the scopes' samples (see `query::combine`).
    pub fn query_combined(&self, scopes: &[Scope], metric: Metric, agg: Agg, range: Duration, now: Timestamp) -> Option<f64> {
        let per_series: Vec<_> = scopes.iter().filter_map(|scope| self.find(scope, metric)).map(|s| (metric.kind(), s.readings(range.as_millis() as u64, now.millis()))).collect();
        query::combine(&per_series, agg)
    }

    /// The instances recorded for `function`, in order.
    pub fn instances_of(&self, function: &FunctionName) -> Vec<InstanceId> {
        self.by_function
            .get(function)
            .into_iter()
            .flatten()
            .filter_map(|scope| match scope {
                Scope::Instance(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// The gateways that reported `function`, in order.
    pub fn gateways_of(&self, function: &FunctionName) -> Vec<NodeId> {
        self.by_function
            .get(function)
            .into_iter()
            .flatten()
            .filter_map(|scope| match scope {
                Scope::Gateway(node, _) => Some(node.clone()),
                _ => None,
            })
            .collect()
    }

    /// Drops every series of `scope` (an instance stopped, a node removed).
    pub fn forget(&mut self, scope: &Scope) {
        if let Some(e) = self.entities.remove(scope) {
            self.series -= e.series.len();
            unindex(&mut self.by_function, scope, e.function.as_ref());
        }
    }

    /// Drops series with no sample within the coarse span before `now`: nothing
    /// they hold could be read any more.
    pub fn expire(&mut self, now: Timestamp) {
        let coarse_span_ms = (self.config.coarse_step.as_millis() as u64).saturating_mul(self.config.coarse_slots as u64);
        let horizon = now.millis().saturating_sub(coarse_span_ms);
        let mut dropped = 0;
        let by_function = &mut self.by_function;
        self.entities.retain(|scope, e| {
            let before = e.series.len();
            e.series.retain(|s| s.newest_ms >= horizon);
            dropped += before - e.series.len();
            let keep = !e.series.is_empty();
            if !keep {
                unindex(by_function, scope, e.function.as_ref());
            }
            keep
        });
        self.series -= dropped;
    }

    pub fn config(&self) -> &WindowsConfig {
        &self.config
    }

    pub fn counters(&self) -> WindowCounters {
        self.counters
    }

    pub fn series_count(&self) -> usize {
        self.series
    }

    /// Bytes held by all rings.
    pub fn bytes(&self) -> usize {
        self.entities.values().flat_map(|e| &e.series).map(Series::bytes).sum()
    }

    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        let c = self.counters;
        header(out, "sluice_windows_samples_total", "counter", "Samples offered to the metric windows, by what became of them.");
        let outcomes = [
            ("stored", c.stored),
            ("late", c.late),
            ("duplicate", c.duplicate),
            ("too_late", c.too_late),
            ("future", c.future),
            ("refused_series", c.refused_series),
            ("not_finite", c.not_finite),
        ];
        for (outcome, n) in outcomes {
            sample(out, "sluice_windows_samples_total", &format!("outcome=\"{outcome}\""), n);
        }
        header(out, "sluice_windows_series", "gauge", "Series held in the metric windows.");
        sample(out, "sluice_windows_series", "", self.series);
        header(out, "sluice_windows_bytes", "gauge", "Bytes held by the metric windows' rings.");
        sample(out, "sluice_windows_bytes", "", self.bytes());
    }
}

fn unindex(by_function: &mut HashMap<FunctionName, BTreeSet<Scope>>, scope: &Scope, function: Option<&FunctionName>) {
    if let Some(f) = function {
        if let Some(scopes) = by_function.get_mut(f) {
            scopes.remove(scope);
            if scopes.is_empty() {
                by_function.remove(f);
            }
        }
    }
}

#[cfg(test)]
mod tests;
