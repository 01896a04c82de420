//! B9 (windows): samples per second recorded into the coordinator's metric windows
//! alone, on one core, beside a reference in the same run: finding the same series
//! in a bare `HashMap` and adding the value to an `f64`. Their ratio is what the
//! rings cost on top of the unavoidable lookup.
//!
//! 500 scopes (20 nodes, 400 instances, 80 gateway x function) x 10 metrics =
//! 5,000 series. Each scope reports all its metrics once a second at its own
//! phase within the second, as agents do; 1% of reports arrive 5 s late and 0.1%
//! are delivered twice (the duplicates are refused). The default 10 million
//! samples are 2,000 seconds of data, so the fine ring (15 min) laps twice.
//! Rounds alternate reference and windows, each with fresh state; medians are
//! printed.
//!
//! Usage: b9_windows [--samples 10000000] [--rounds 3]

use anyhow::{Context, Result};
use sluice_common::rng::SplitMix64;
use sluice_common::{FunctionName, InstanceId, NodeId, Timestamp};
use sluice_coordinator::windows::{Metric, Scope, Windows, WindowsConfig};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

const T0_MS: u64 = 1_760_000_000_000;
/// What gateways report: six counters, then gauges.
const GATEWAY_METRICS: [Metric; 10] = [
    Metric::GatewayRequestsTotal,
    Metric::GatewayResponses2xxTotal,
    Metric::GatewayResponses4xxTotal,
    Metric::GatewayResponses5xxTotal,
    Metric::GatewayColdStartsTotal,
    Metric::GatewayShedTotal,
    Metric::GatewayInFlight,
    Metric::GatewayQueued,
    Metric::GatewayLatencyP95Seconds,
    Metric::GatewayLatencyP50Seconds,
];
/// What hosts and instances report: gauges.
const GAUGE_METRICS: [Metric; 10] = [
    Metric::HostCpuPercent,
    Metric::HostMemoryUsedBytes,
    Metric::HostMemoryUsedPercent,
    Metric::HostSwapUsedBytes,
    Metric::HostLoad1,
    Metric::HostDiskReadBytesPerSec,
    Metric::HostDiskWriteBytesPerSec,
    Metric::HostNetRxBytesPerSec,
    Metric::HostNetTxBytesPerSec,
    Metric::ContainerCpuPercent,
];
/// Gateways report the first six metrics as counters; everything else is a gauge.
const GATEWAY_COUNTERS: usize = 6;

fn metrics_of(info: &ScopeInfo) -> &'static [Metric; 10] {
    if info.gateway {
        &GATEWAY_METRICS
    } else {
        &GAUGE_METRICS
    }
}

struct Args {
    samples: u64,
    rounds: usize,
}

fn args() -> Result<Args> {
    let mut a = Args { samples: 10_000_000, rounds: 3 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--samples" => a.samples = value.parse()?,
            "--rounds" => a.rounds = value.parse()?,
            other => anyhow::bail!("unknown flag {other}: use --samples or --rounds"),
        }
    }
    Ok(a)
}

struct ScopeInfo {
    scope: Scope,
    function: Option<FunctionName>,
    /// Where in each second this scope samples (ms).
    phase_ms: u64,
    gateway: bool,
}

fn scopes() -> Vec<ScopeInfo> {
    let function = |i: u64| FunctionName::new(format!("fn-{}", i % 40)).unwrap();
    let node = |i: u64| NodeId::new(format!("node-{}", i % 20)).unwrap();
    (0..500u64)
        .map(|i| {
            let (scope, function, gateway) = match i {
                0..20 => (Scope::Node(node(i)), None, false),
                20..420 => (Scope::Instance(InstanceId(i)), Some(function(i)), false),
                // 20 gateways x 4 functions.
                _ => (Scope::Gateway(node(i), function(i / 20)), Some(function(i / 20)), true),
            };
            ScopeInfo { scope, function, phase_ms: (i * 7919) % 1000, gateway }
        })
        .collect()
}

/// One scope's report: which second's data, when it is delivered, and for whom.
#[derive(Clone, Copy)]
struct Report {
    data_second: u32,
    delivered_second: u32,
    scope: u32,
}

/// The delivery order of every report: second by second, with some delayed and some repeated.
fn reports(seconds: u32, scopes: u32) -> Vec<Report> {
    let mut rng = SplitMix64::new(9);
    let mut delayed: Vec<Report> = Vec::new();
    let mut out = Vec::with_capacity((seconds * scopes) as usize + 16);
    for second in 0..seconds {
        let (due, later): (Vec<Report>, Vec<Report>) = delayed.drain(..).partition(|r| r.delivered_second == second);
        delayed = later;
        out.extend(due);
        for scope in 0..scopes {
            let report = Report { data_second: second, delivered_second: second, scope };
            if rng.chance(0.01) {
                delayed.push(Report { delivered_second: second + 5, ..report });
                continue;
            }
            out.push(report);
            if rng.chance(0.001) {
                out.push(report);
            }
        }
    }
    out
}

/// A sample's time and value, cheap to compute, the same for both loops.
fn sample(info: &ScopeInfo, r: Report, metric: usize) -> (u64, f64) {
    let ts = T0_MS + u64::from(r.data_second) * 1000 + info.phase_ms;
    let second = f64::from(r.data_second);
    let value = if info.gateway && metric < GATEWAY_COUNTERS { second * (metric + 1) as f64 } else { (second * 7.0 + (metric * 13) as f64) % 100.0 };
    (ts, value)
}

fn run_windows(scopes: &[ScopeInfo], reports: &[Report]) -> (f64, Windows) {
    let mut w = Windows::new(WindowsConfig { max_series: 1_000_000, ..WindowsConfig::default() });
    let started = Instant::now();
    for r in reports {
        let info = &scopes[r.scope as usize];
        let now = Timestamp(T0_MS + u64::from(r.delivered_second) * 1000 + 999);
        for (m, metric) in metrics_of(info).iter().enumerate() {
            let (ts, value) = sample(info, *r, m);
            black_box(w.record(&info.scope, *metric, info.function.as_ref(), Timestamp(ts), value, now));
        }
    }
    (started.elapsed().as_secs_f64(), w)
}

/// The same keys found in a `HashMap` (then a short scan by metric, as a scope has
/// about ten) and the value added to an `f64`.
fn run_reference(scopes: &[ScopeInfo], reports: &[Report]) -> f64 {
    let mut map: HashMap<Scope, Vec<(Metric, f64)>> = HashMap::new();
    let started = Instant::now();
    for r in reports {
        let info = &scopes[r.scope as usize];
        for (m, metric) in metrics_of(info).iter().enumerate() {
            let (ts, value) = sample(info, *r, m);
            let series = match map.get_mut(&info.scope) {
                Some(s) => s,
                None => map.entry(info.scope.clone()).or_default(),
            };
            match series.iter_mut().find(|(name, _)| name == metric) {
                Some((_, total)) => *total += value + black_box(ts) as f64 * 0.0,
                None => series.push((*metric, value)),
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    black_box(map.values().flatten().map(|(_, v)| v).sum::<f64>());
    secs
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<()> {
    let a = args()?;
    let scopes = scopes();
    let seconds = (a.samples / (scopes.len() * GAUGE_METRICS.len()) as u64).max(1) as u32;
    let reports = reports(seconds, scopes.len() as u32);
    let samples = (reports.len() * GAUGE_METRICS.len()) as f64;
    println!("b9_windows: {} series, {seconds} s of data, {samples} samples, {} rounds", scopes.len() * GAUGE_METRICS.len(), a.rounds);

    let (mut reference, mut windows) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..a.rounds.max(1) {
        reference.push(run_reference(&scopes, &reports));
        let (secs, w) = run_windows(&scopes, &reports);
        windows.push(secs);
        last = Some(w);
    }
    let w = last.context("no round ran")?;
    let (ref_secs, win_secs) = (median(reference), median(windows));
    let c = w.counters();
    println!("reference (HashMap + f64 add) {:>12.0} samples/s  {:>6.1} ns/sample", samples / ref_secs, ref_secs * 1e9 / samples);
    println!("windows (record)              {:>12.0} samples/s  {:>6.1} ns/sample", samples / win_secs, win_secs * 1e9 / samples);
    println!("ratio windows/reference time  {:>12.2}   goal 100,000 samples/s: x{:.0}", win_secs / ref_secs, samples / win_secs / 100_000.0);
    println!("outcomes: {c:?}");
    println!("series {}  bytes {}  ({:.0} bytes/series)", w.series_count(), w.bytes(), w.bytes() as f64 / w.series_count() as f64);
    Ok(())
}
