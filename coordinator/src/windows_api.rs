//! `/v1/metrics/...`: the metric windows as JSON, for the CLI, dashboards and tests.
//!
//! - `GET /v1/metrics/nodes/{node}?range=60s`: a host's series.
//! - `GET /v1/metrics/instances/{id}?range=60s`: one instance container's series.
//! - `GET /v1/metrics/functions/{name}?range=60s`: each instance's series, and the
//!   function as a whole (CPU averaged over instances, request rates added up
//!   over gateways).
//! - `GET /v1/metrics/functions/{name}/timeline?range=15m`: the function's
//!   instance counts and demand per slot (`timeline`), for the dashboard.
//! - `GET /v1/metrics/events?limit=100`: the latest instance events.
//!
//! `range` is a number of seconds, or a number with `s`, `m` or `h`; from 1 s to 24 h
//! (default 60 s). Ranges past the fine ring (15 minutes) read the per-minute ring.

use crate::http::ApiError;
use crate::ingest::{function_scopes, Telemetry};
use crate::timeline::{self, CountsPoint, DemandPoint};
use crate::windows::{Agg, Metric, Scope, SeriesSummary, Windows};
use serde::Serialize;
use sluice_common::{FunctionName, InstanceId, NodeId, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

pub const DEFAULT_RANGE: Duration = Duration::from_secs(60);
pub const MAX_RANGE: Duration = Duration::from_secs(24 * 3600);
pub const MAX_EVENTS: usize = 1000;

/// The series of one scope over a range.
#[derive(Debug, Serialize)]
pub struct ScopeView {
    pub range_secs: u64,
    pub series: Vec<SeriesSummary>,
}

/// A function's figures over a range.
#[derive(Debug, Serialize)]
pub struct FunctionMetricsView {
    pub function: FunctionName,
    pub range_secs: u64,
    /// Figures of the whole function; absent when nothing was recorded.
    pub combined: BTreeMap<&'static str, f64>,
    pub instances: BTreeMap<String, Vec<SeriesSummary>>,
}

/// A function's timeline over a range: instance counts and demand per slot.
#[derive(Debug, Serialize)]
pub struct TimelineView {
    pub function: FunctionName,
    pub range_secs: u64,
    /// The slots' length: 1 s up to 15 minutes, 1 min beyond (by default).
    pub step_ms: u64,
    pub instances: Vec<CountsPoint>,
    pub demand: Vec<DemandPoint>,
}

pub fn timeline(t: &Telemetry, function: &FunctionName, range: Duration, now: Timestamp) -> TimelineView {
    // The windows first, then the timeline: the lock order.
    let demand = timeline::demand(&t.windows(), function, range, now);
    let (step_ms, instances) = t.timeline().counts(function, range, now);
    TimelineView { function: function.clone(), range_secs: range.as_secs(), step_ms, instances, demand }
}

/// Parses `range`: `90`, `90s`, `15m`, `2h`.
pub fn parse_range(raw: Option<&str>) -> Result<Duration, ApiError> {
    let Some(raw) = raw else { return Ok(DEFAULT_RANGE) };
    let (digits, unit) = match raw.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => raw.split_at(i),
        None => (raw, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    let secs = digits.parse::<u64>().ok().filter(|_| scale > 0).map(|n| n.saturating_mul(scale));
    match secs.map(Duration::from_secs) {
        Some(d) if !d.is_zero() && d <= MAX_RANGE => Ok(d),
        _ => Err(ApiError::invalid("range", format!("{raw:?} is not a range: use seconds or a number with s, m or h, from 1s to 24h (e.g. range=90s)"))),
    }
}

pub fn node(t: &Telemetry, node: &NodeId, range: Duration, now: Timestamp) -> ScopeView {
    ScopeView { range_secs: range.as_secs(), series: t.windows().summary(&Scope::Node(node.clone()), range, now) }
}

pub fn instance(t: &Telemetry, id: InstanceId, range: Duration, now: Timestamp) -> ScopeView {
    ScopeView { range_secs: range.as_secs(), series: t.windows().summary(&Scope::Instance(id), range, now) }
}

pub fn function(t: &Telemetry, function: &FunctionName, range: Duration, now: Timestamp) -> FunctionMetricsView {
    let w = t.windows();
    let (instances, gateways) = function_scopes(&w, function);
    FunctionMetricsView {
        function: function.clone(),
        range_secs: range.as_secs(),
        combined: combined(&w, &instances, &gateways, range, now),
        instances: instances
            .iter()
            .filter_map(|scope| match scope {
                Scope::Instance(id) => Some((id.to_string(), w.summary(scope, range, now))),
                _ => None,
            })
            .collect(),
    }
}

/// The whole function's figures: what a rule over "the function" reads.
fn combined(w: &Windows, instances: &[Scope], gateways: &[Scope], range: Duration, now: Timestamp) -> BTreeMap<&'static str, f64> {
    let rows: [(&'static str, &[Scope], Metric, Agg); 15] = [
        ("cpu_percent_avg", instances, Metric::ContainerCpuPercent, Agg::Avg),
        ("cpu_percent_p95", instances, Metric::ContainerCpuPercent, Agg::P95),
        ("cpu_percent_max", instances, Metric::ContainerCpuPercent, Agg::Max),
        ("memory_used_percent_avg", instances, Metric::ContainerMemoryUsedPercent, Agg::Avg),
        ("requests_per_sec", gateways, Metric::GatewayRequestsTotal, Agg::Rate),
        ("errors_5xx_per_sec", gateways, Metric::GatewayResponses5xxTotal, Agg::Rate),
        ("shed_per_sec", gateways, Metric::GatewayShedTotal, Agg::Rate),
        ("cold_starts_per_sec", gateways, Metric::GatewayColdStartsTotal, Agg::Rate),
        ("concurrency_avg", gateways, Metric::GatewayRequestSecondsTotal, Agg::Rate),
        ("latency_p95_seconds_max", gateways, Metric::GatewayLatencyP95Seconds, Agg::Max),
        ("in_flight", gateways, Metric::GatewayInFlight, Agg::Last),
        ("cache_hits_per_sec", gateways, Metric::GatewayCacheHitsTotal, Agg::Rate),
        ("cache_misses_per_sec", gateways, Metric::GatewayCacheMissesTotal, Agg::Rate),
        ("cache_evictions_per_sec", gateways, Metric::GatewayCacheEvictionsTotal, Agg::Rate),
        ("cache_bytes", gateways, Metric::GatewayCacheBytes, Agg::Last),
    ];
    rows.into_iter().filter_map(|(name, scopes, metric, agg)| Some((name, w.query_combined(scopes, metric, agg, range, now)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_with_units_and_bad_ones_name_the_field() {
        assert_eq!(parse_range(None).unwrap(), DEFAULT_RANGE);
        assert_eq!(parse_range(Some("90")).unwrap(), Duration::from_secs(90));
        assert_eq!(parse_range(Some("15m")).unwrap(), Duration::from_secs(900));
        assert_eq!(parse_range(Some("24h")).unwrap(), MAX_RANGE);
        for bad in ["0", "25h", "5d", "", "m", "-1", "1.5m", "99999999999999999999"] {
            let e = parse_range(Some(bad)).unwrap_err();
            assert!(format!("{e:?}").contains("range"), "{bad}: {e:?}");
        }
    }
}
