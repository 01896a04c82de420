//! Windows checked against known answers and, for random samples, against a
//! brute-force computation over the raw samples.

use super::*;
use sluice_common::rng::SplitMix64;

fn node(n: &str) -> Scope {
    Scope::Node(NodeId::new(n).unwrap())
}

fn gateway(n: &str, f: &str) -> Scope {
    Scope::Gateway(NodeId::new(n).unwrap(), FunctionName::new(f).unwrap())
}

/// A minute boundary, so that coarse slots start at whole seconds from here.
const T0_MS: u64 = 1_700_000_040_000;

fn at(secs: f64) -> Timestamp {
    Timestamp(T0_MS + (secs * 1000.0) as u64)
}

/// A gauge sample received when it was taken.
fn gauge(w: &mut Windows, scope: &Scope, metric: Metric, secs: f64, value: f64) -> Recorded {
    w.record(scope, metric, None, at(secs), value, at(secs))
}

/// A gauge sample taken at `secs`, received at `now_secs`.
fn gauge_at(w: &mut Windows, scope: &Scope, secs: f64, value: f64, now_secs: f64) -> Recorded {
    w.record(scope, Metric::HostLoad1, None, at(secs), value, at(now_secs))
}

#[test]
fn avg_min_max_p95_last_and_count_over_the_fine_ring() {
    let mut w = Windows::new(WindowsConfig::default());
    let n = node("a");
    for i in 0..20 {
        gauge(&mut w, &n, Metric::HostCpuPercent, f64::from(i), f64::from(i));
    }
    // Sampled faster than the slots: the mean stays a mean of samples.
    gauge(&mut w, &n, Metric::HostCpuPercent, 19.5, 29.0);
    let now = at(19.9);
    let q = |agg| w.query(&n, Metric::HostCpuPercent, agg, Duration::from_secs(10), now);
    assert_eq!(q(Agg::Count), Some(11.0), "the 10 one-second slots ending with now's");
    assert_eq!(q(Agg::Avg), Some((145.0 + 29.0) / 11.0));
    assert_eq!((q(Agg::Min), q(Agg::Max), q(Agg::Last)), (Some(10.0), Some(29.0), Some(29.0)));
    assert_eq!(q(Agg::P95), Some(24.0), "ceil(0.95 * 10) = 10th of the slot means 10..18 and (19 + 29) / 2");
    assert_eq!(w.query(&n, Metric::HostCpuPercent, Agg::P95, Duration::from_secs(20), now), Some(18.0), "19th of 20 slot means");
    assert_eq!(w.query(&n, Metric::HostCpuPercent, Agg::Rate, Duration::from_secs(10), now), None, "gauges have no rate");
    assert_eq!(w.query(&n, Metric::HostMemoryUsedBytes, Agg::Avg, Duration::from_secs(10), now), None, "unknown series");
    assert_eq!(w.query(&n, Metric::HostCpuPercent, Agg::Avg, Duration::from_secs(10), at(100.0)), None, "nothing in the range");
    assert_eq!(w.query(&n, Metric::HostCpuPercent, Agg::Avg, Duration::ZERO, now), None, "an empty range");
}

#[test]
fn a_range_that_fits_reads_the_fine_ring_and_a_longer_one_the_coarse_ring() {
    let mut w = Windows::new(WindowsConfig::default());
    let n = node("a");
    // Half an hour, one sample a second, valued by its minute.
    for s in 0..1800 {
        gauge(&mut w, &n, Metric::HostLoad1, f64::from(s), f64::from(s / 60));
    }
    let now = at(1799.0);
    let q = |agg, secs| w.query(&n, Metric::HostLoad1, agg, Duration::from_secs(secs), now);
    assert_eq!(q(Agg::Count, 900), Some(900.0), "the fine ring: 900 one-second slots");
    // 901 s no longer fits: 16 minute slots (minutes 14 to 29).
    assert_eq!(q(Agg::Count, 901), Some(960.0));
    assert_eq!(q(Agg::Min, 901), Some(14.0));
    // Over the coarse ring P95 is a p95 of per-minute means: the 16th of 16.
    assert_eq!(q(Agg::P95, 901), Some(29.0));
    assert_eq!(q(Agg::Count, 24 * 3600), Some(1800.0));
    assert_eq!(q(Agg::Count, 7 * 24 * 3600), Some(1800.0), "a range past the coarse ring reads all of it");
}

#[test]
fn a_fine_slot_is_reset_a_lap_later_while_the_coarse_ring_keeps_the_sample() {
    let mut w = Windows::new(WindowsConfig::default());
    let n = node("a");
    gauge(&mut w, &n, Metric::HostLoad1, 0.0, 1.0);
    gauge(&mut w, &n, Metric::HostLoad1, 900.0, 5.0); // 15 minutes later: the same fine slot
    let now = at(900.0);
    assert_eq!(w.query(&n, Metric::HostLoad1, Agg::Count, Duration::from_secs(900), now), Some(1.0));
    assert_eq!(w.query(&n, Metric::HostLoad1, Agg::Avg, Duration::from_secs(1), now), Some(5.0));
    assert_eq!(w.query(&n, Metric::HostLoad1, Agg::Count, Duration::from_secs(3600), now), Some(2.0));
}

#[test]
fn counters_give_rates_across_restarts() {
    let mut w = Windows::new(WindowsConfig::default());
    let g = gateway("c1", "f");
    let values = [100.0, 110.0, 120.0, 5.0, 15.0]; // restarted after 120
    for (i, v) in values.iter().enumerate() {
        w.record(&g, Metric::GatewayRequestsTotal, None, at(i as f64), *v, at(i as f64));
    }
    // Increases 10 + 10 + 5 + 10 = 35 over 4 seconds.
    assert_eq!(w.query(&g, Metric::GatewayRequestsTotal, Agg::Rate, Duration::from_secs(60), at(4.0)), Some(8.75));
    assert_eq!(w.query(&g, Metric::GatewayRequestsTotal, Agg::Rate, Duration::from_secs(2), at(4.0)), Some(10.0), "5 to 15 in the last two slots");
    assert_eq!(w.query(&g, Metric::GatewayRequestsTotal, Agg::Rate, Duration::from_secs(3600), at(4.0)), Some(8.75), "the same over the coarse ring");
    assert_eq!(w.query(&g, Metric::GatewayRequestsTotal, Agg::Rate, Duration::from_secs(1), at(4.0)), None, "one sample spans no time");
    let summary = w.summary(&g, Duration::from_secs(60), at(4.0));
    assert_eq!(summary[0].rate, Some(8.75));
}

#[test]
fn late_duplicate_too_late_future_and_not_finite_samples() {
    let mut w = Windows::new(WindowsConfig { fine_slots: 60, coarse_slots: 10, ..WindowsConfig::default() });
    let n = node("a");
    assert_eq!(gauge_at(&mut w, &n, 1000.0, 1.0, 1000.0), Recorded::Stored);
    assert_eq!(gauge_at(&mut w, &n, 990.0, 2.0, 1000.0), Recorded::Late, "late, inside the fine span");
    assert_eq!(gauge_at(&mut w, &n, 990.0, 2.0, 1000.0), Recorded::Duplicate);
    assert_eq!(gauge_at(&mut w, &n, 1000.0, 9.0, 1001.0), Recorded::Duplicate, "same time, other value: still a repeat");
    assert_eq!(gauge_at(&mut w, &n, 700.0, 3.0, 1000.0), Recorded::Late, "too old for the fine ring, fits the coarse");
    assert_eq!(gauge_at(&mut w, &n, 700.0, 3.0, 1000.0), Recorded::Duplicate, "the coarse ring finds repeats too");
    assert_eq!(gauge_at(&mut w, &n, 419.9, 3.0, 1000.0), Recorded::TooLate, "older than the coarse lap (minutes 7 to 16)");
    assert_eq!(gauge_at(&mut w, &n, 1010.0, 3.0, 1000.0), Recorded::Stored, "10 s ahead is tolerated");
    assert_eq!(gauge_at(&mut w, &n, 1011.0, 3.0, 1000.0), Recorded::Future);
    assert_eq!(gauge_at(&mut w, &n, 1001.0, f64::NAN, 1001.0), Recorded::NotFinite);
    assert_eq!(gauge_at(&mut w, &n, 1001.0, f64::INFINITY, 1001.0), Recorded::NotFinite);
    let c = w.counters();
    assert_eq!((c.stored, c.late, c.duplicate, c.too_late, c.future, c.not_finite), (2, 2, 3, 1, 1, 2));
    let now = at(1010.0);
    assert_eq!(w.query(&n, Metric::HostLoad1, Agg::Count, Duration::from_secs(60), now), Some(3.0));
    assert_eq!(w.query(&n, Metric::HostLoad1, Agg::Count, Duration::from_secs(600), now), Some(4.0), "the coarse ring answers long ranges");
    assert_eq!(w.query(&n, Metric::HostLoad1, Agg::Last, Duration::from_secs(60), now), Some(3.0));
}

#[test]
fn a_refused_sample_creates_no_series() {
    let mut w = Windows::new(WindowsConfig::default());
    let n = node("a");
    assert_eq!(gauge_at(&mut w, &n, 0.0, 1.0, 2.0 * 86_400.0), Recorded::TooLate);
    assert_eq!(gauge_at(&mut w, &n, 100.0, 1.0, 0.0), Recorded::Future);
    assert_eq!(w.series_count(), 0);
    assert!(w.summary(&n, Duration::from_secs(60), at(0.0)).is_empty());
}

#[test]
fn the_series_cap_refuses_new_series_and_expiry_and_forget_free_room() {
    let mut w = Windows::new(WindowsConfig { max_series: 2, coarse_slots: 10, ..WindowsConfig::default() });
    assert_eq!(gauge(&mut w, &node("a"), Metric::HostLoad1, 0.0, 1.0), Recorded::Stored);
    assert_eq!(gauge(&mut w, &node("b"), Metric::HostSwapUsedBytes, 500.0, 1.0), Recorded::Stored);
    assert_eq!(gauge(&mut w, &node("b"), Metric::HostLoad1, 500.0, 1.0), Recorded::SeriesCapReached);
    assert_eq!(gauge(&mut w, &node("a"), Metric::HostLoad1, 1.0, 2.0), Recorded::Stored, "existing series still record");
    assert_eq!(w.counters().refused_series, 1);
    w.expire(at(601.0));
    assert_eq!(w.series_count(), 2, "a's last sample is exactly the coarse span (10 minutes) old");
    w.expire(at(602.0));
    assert_eq!(w.series_count(), 1);
    assert_eq!(w.query(&node("a"), Metric::HostLoad1, Agg::Count, Duration::from_secs(86_400), at(602.0)), None);
    assert_eq!(gauge(&mut w, &node("c"), Metric::HostLoad1, 602.0, 1.0), Recorded::Stored);
    w.forget(&node("b"));
    assert_eq!(w.series_count(), 1);
    assert_eq!(w.query(&node("b"), Metric::HostSwapUsedBytes, Agg::Count, Duration::from_secs(60), at(602.0)), None);
    assert_eq!(gauge(&mut w, &node("d"), Metric::HostLoad1, 602.0, 1.0), Recorded::Stored);
}

#[test]
fn a_functions_instances_and_gateways_are_found_and_combined() {
    let mut w = Windows::new(WindowsConfig::default());
    let f = FunctionName::new("f").unwrap();
    for (id, cpu) in [(1, 40.0), (2, 80.0)] {
        w.record(&Scope::Instance(InstanceId(id)), Metric::ContainerCpuPercent, Some(&f), at(0.0), cpu, at(0.0));
    }
    w.record(&Scope::Instance(InstanceId(3)), Metric::ContainerCpuPercent, Some(&FunctionName::new("g").unwrap()), at(0.0), 1.0, at(0.0));
    for (node, total) in [("c1", 10.0), ("c2", 30.0)] {
        for s in 0..3 {
            w.record(&gateway(node, "f"), Metric::GatewayRequestsTotal, Some(&f), at(f64::from(s)), total * f64::from(s), at(f64::from(s)));
        }
    }
    assert_eq!(w.instances_of(&f), vec![InstanceId(1), InstanceId(2)]);
    assert_eq!(w.gateways_of(&f), vec![NodeId::new("c1").unwrap(), NodeId::new("c2").unwrap()]);
    let instances: Vec<Scope> = w.instances_of(&f).into_iter().map(Scope::Instance).collect();
    let range = Duration::from_secs(5);
    assert_eq!(w.query_combined(&instances, Metric::ContainerCpuPercent, Agg::Avg, range, at(2.0)), Some(60.0));
    assert_eq!(w.query_combined(&instances, Metric::ContainerCpuPercent, Agg::Last, range, at(2.0)), Some(120.0), "levels add up");
    let gateways = [gateway("c1", "f"), gateway("c2", "f"), gateway("c3", "f")];
    assert_eq!(w.query_combined(&gateways, Metric::GatewayRequestsTotal, Agg::Rate, range, at(2.0)), Some(40.0), "rates add up");
    assert_eq!(w.query_combined(&gateways[2..], Metric::GatewayRequestsTotal, Agg::Rate, range, at(2.0)), None);
}

#[test]
fn summaries_serialize_and_counters_render_as_prometheus_text() {
    let mut w = Windows::new(WindowsConfig::default());
    let n = node("a");
    gauge(&mut w, &n, Metric::HostCpuPercent, 0.0, 50.0);
    gauge(&mut w, &n, Metric::HostCpuPercent, 0.0, 50.0);
    let summary = w.summary(&n, Duration::from_secs(60), at(0.0));
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json, serde_json::json!([{"metric": "cpu_percent", "count": 1, "avg": 50.0, "min": 50.0, "max": 50.0, "p95": 50.0, "last": 50.0}]));
    let mut out = String::new();
    w.render(&mut out);
    assert!(out.contains("# TYPE sluice_windows_samples_total counter\n"), "{out}");
    assert!(out.contains("sluice_windows_samples_total{outcome=\"stored\"} 1\n"), "{out}");
    assert!(out.contains("sluice_windows_samples_total{outcome=\"duplicate\"} 1\n"), "{out}");
    assert!(out.contains("sluice_windows_samples_total{outcome=\"refused_series\"} 0\n"), "{out}");
    assert!(out.contains("sluice_windows_series 1\n"), "{out}");
    assert!(out.contains(&format!("sluice_windows_bytes {}\n", 2 * 16 * 56)), "{out}");
}

/// A counter that restarts every 125 s: on a fine slot's boundary, and every
/// other time 5 s into a coarse slot (one restart there, below the old peak).
fn counter_value(ts_ms: u64) -> f64 {
    (ts_ms % 125_000) as f64 / 100.0 + 1.0
}

/// One sample offered in the random test, and what the windows said.
#[derive(Debug, Clone, Copy)]
struct Offered {
    ts: u64,
    value: f64,
    now: u64,
}

/// Random samples, in and out of order, repeated, late, too late and from the
/// future, against a brute force over the raw list of kept samples. Small rings
/// (1 s x 60, 10 s x 30) so they lap many times.
#[test]
fn random_samples_agree_with_brute_force() {
    let config = WindowsConfig { fine_slots: 60, coarse_step: Duration::from_secs(10), coarse_slots: 30, ..WindowsConfig::default() };
    let mut rng = SplitMix64::new(7);
    for round in 0..300 {
        let kind = if round % 2 == 0 { SeriesKind::Gauge } else { SeriesKind::Counter };
        let metric = if kind == SeriesKind::Gauge { Metric::HostLoad1 } else { Metric::GatewayRequestsTotal };
        let mut w = Windows::new(config.clone());
        let n = node("a");
        let mut kept: Vec<Offered> = Vec::new();
        let mut offered_ts: Vec<u64> = Vec::new();
        let mut clock = T0_MS + 500_000;
        for _ in 0..400 {
            clock += rng.below(1500);
            let ts = match rng.below(100) {
                0..55 => clock,
                55..70 => clock - rng.below(400_000),
                70..80 if !offered_ts.is_empty() => rng.pick(&offered_ts),
                80..85 => clock + 5_000 + rng.below(10_000),
                _ => clock + rng.below(1000),
            };
            offered_ts.push(ts);
            let value = if kind == SeriesKind::Counter { counter_value(ts) } else { rng.below(1000) as f64 };
            let sample = Offered { ts, value, now: clock };
            let outcome = w.record(&n, metric, None, Timestamp(ts), value, Timestamp(clock));
            check_outcome(&kept, sample, outcome);
            if matches!(outcome, Recorded::Stored | Recorded::Late) {
                kept.push(sample);
            }
        }
        let newest = kept.iter().map(|s| s.ts).max().unwrap_or(0).max(clock);
        for _ in 0..10 {
            let now = newest + rng.below(30_000);
            let range = 1 + rng.below(400_000);
            let q = |agg| w.query(&n, metric, agg, Duration::from_millis(range), Timestamp(now));
            let expected = brute_force(&kept, kind, range, now);
            let context = format!("round {round}, range {range} ms, now {now}");
            assert_eq!(q(Agg::Count), expected.count, "{context}");
            assert_eq!(q(Agg::Min), expected.min, "{context}");
            assert_eq!(q(Agg::Max), expected.max, "{context}");
            assert_eq!(q(Agg::Last), expected.last, "{context}");
            for (agg, want) in [(Agg::Avg, expected.avg), (Agg::P95, expected.p95), (Agg::Rate, expected.rate)] {
                let got = q(agg);
                let close = match (got, want) {
                    (Some(g), Some(e)) => (g - e).abs() <= 1e-9 * e.abs().max(1.0),
                    (g, e) => g == e,
                };
                assert!(close, "{agg:?}: windows {got:?}, brute force {want:?}; {context}");
            }
        }
    }
}

/// What the rules say of `sample`, given the samples kept before it.
fn check_outcome(kept: &[Offered], sample: Offered, outcome: Recorded) {
    let newest = kept.iter().map(|s| s.ts).max().unwrap_or(0);
    let reference = newest.max(sample.now);
    let future = sample.ts > sample.now + 10_000;
    let too_late = sample.ts / 10_000 + 30 <= reference / 10_000;
    let repeat = kept.iter().any(|s| s.ts == sample.ts);
    let context = format!("{sample:?} -> {outcome:?}");
    match outcome {
        Recorded::Future => assert!(future, "{context}"),
        Recorded::TooLate => assert!(!future && too_late, "{context}"),
        Recorded::Duplicate => assert!(!future && !too_late && repeat, "{context}"),
        Recorded::Stored | Recorded::Late => {
            assert!(!future && !too_late, "{context}");
            assert_eq!(outcome == Recorded::Late, sample.ts < newest, "{context}");
            // The documented blind spot: a repeat strictly inside its slot's samples.
            if repeat {
                let coarse = |s: &Offered| s.ts / 10_000 == sample.ts / 10_000;
                assert!(
                    kept.iter().any(|s| coarse(s) && s.ts < sample.ts) && kept.iter().any(|s| coarse(s) && s.ts > sample.ts),
                    "a repeat at a slot's edge went unseen: {context}"
                );
            }
        }
        Recorded::SeriesCapReached | Recorded::NotFinite => panic!("{context}"),
    }
}

#[derive(Debug, Default)]
struct Expected {
    count: Option<f64>,
    avg: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    p95: Option<f64>,
    last: Option<f64>,
    rate: Option<f64>,
}

/// The answers computed from the raw kept samples in the slots the range covers.
fn brute_force(kept: &[Offered], kind: SeriesKind, range: u64, now: u64) -> Expected {
    let (step, len) = if range <= 60_000 { (1_000, 60) } else { (10_000, 30) };
    let newest = now / step;
    let oldest = (newest + 1).saturating_sub(range.div_ceil(step).min(len));
    let inside: Vec<Offered> = kept.iter().filter(|s| (oldest..=newest).contains(&(s.ts / step))).copied().collect();
    if inside.is_empty() {
        return Expected::default();
    }
    let values = || inside.iter().map(|s| s.value);
    let mut slots: Vec<(u64, f64, f64)> = Vec::new(); // period, sum, count
    for s in &inside {
        match slots.iter_mut().find(|(p, _, _)| *p == s.ts / step) {
            Some((_, sum, count)) => {
                *sum += s.value;
                *count += 1.0;
            }
            None => slots.push((s.ts / step, s.value, 1.0)),
        }
    }
    let mut means: Vec<f64> = slots.iter().map(|(_, sum, count)| sum / count).collect();
    means.sort_by(f64::total_cmp);
    let mut by_time = inside.clone();
    by_time.sort_by_key(|s| s.ts);
    let (first, last) = (by_time[0], by_time[by_time.len() - 1]);
    let increase: f64 = by_time.windows(2).map(|p| if p[1].value >= p[0].value { p[1].value - p[0].value } else { p[1].value }).sum();
    Expected {
        count: Some(inside.len() as f64),
        avg: Some(values().sum::<f64>() / inside.len() as f64),
        min: values().reduce(f64::min),
        max: values().reduce(f64::max),
        p95: Some(means[(95 * means.len()).div_ceil(100) - 1]),
        last: Some(last.value),
        rate: (kind == SeriesKind::Counter && last.ts > first.ts).then(|| increase * 1000.0 / (last.ts - first.ts) as f64),
    }
}
