//! Windows checked against known answers and, for random samples, against a
//! brute-force computation over the raw samples.

use super::*;
use sluice_common::rng::SplitMix64;

fn node(n: &str) -> Scope {
    Scope::Node(NodeId::new(n).unwrap())
}

fn at(secs: f64) -> Timestamp {
    Timestamp((secs * 1000.0) as u64)
}

const T0: f64 = 1_700_000_000.0;

fn gauge(w: &mut Windows, scope: &Scope, metric: &'static str, secs: f64, value: f64) -> Recorded {
    w.record(scope, metric, SeriesKind::Gauge, None, at(T0 + secs), value, at(T0 + secs))
}

#[test]
fn avg_max_p95_and_last_over_the_fine_ring() {
    let mut w = Windows::new(WindowsConfig::default());
    let n = node("a");
    for i in 0..20 {
        gauge(&mut w, &n, "cpu_percent", f64::from(i), f64::from(i));
    }
    let now = at(T0 + 19.0);
    let q = |agg| w.query(&n, "cpu_percent", agg, Duration::from_secs(10), now);
    assert_eq!(q(Agg::Count), Some(10.0), "the last 10 one-second slots");
    assert_eq!(q(Agg::Avg), Some(14.5));
    assert_eq!((q(Agg::Min), q(Agg::Max), q(Agg::Last)), (Some(10.0), Some(19.0), Some(19.0)));
    assert_eq!(q(Agg::P95), Some(19.0), "nearest rank: ceil(0.95 * 10) = 10th of 10");
    assert_eq!(w.query(&n, "cpu_percent", Agg::P95, Duration::from_secs(20), now), Some(18.0), "19th of 20");
    assert_eq!(w.query(&n, "cpu_percent", Agg::Rate, Duration::from_secs(10), now), None, "gauges have no rate");
    assert_eq!(w.query(&n, "memory", Agg::Avg, Duration::from_secs(10), now), None);
}

#[test]
fn counters_give_rates_across_restarts() {
    let mut w = Windows::new(WindowsConfig::default());
    let g = Scope::Gateway(NodeId::new("c1").unwrap(), FunctionName::new("f").unwrap());
    let values = [100.0, 110.0, 120.0, 5.0, 15.0]; // restarted after 120
    for (i, v) in values.iter().enumerate() {
        w.record(&g, "requests_total", SeriesKind::Counter, None, at(T0 + i as f64), *v, at(T0 + i as f64));
    }
    // Increases 10 + 10 + 5 + 10 = 35 over 4 seconds.
    assert_eq!(w.query(&g, "requests_total", Agg::Rate, Duration::from_secs(60), at(T0 + 4.0)), Some(8.75));
}

#[test]
fn late_duplicate_future_and_too_old_samples() {
    let mut w = Windows::new(WindowsConfig { fine_slots: 60, coarse_slots: 10, ..WindowsConfig::default() });
    let n = node("a");
    assert_eq!(gauge(&mut w, &n, "x", 1000.0, 1.0), Recorded::Stored);
    assert_eq!(w.record(&n, "x", SeriesKind::Gauge, None, at(T0 + 990.0), 2.0, at(T0 + 1000.0)), Recorded::Stored, "late, inside the span");
    assert_eq!(w.record(&n, "x", SeriesKind::Gauge, None, at(T0 + 990.0), 2.0, at(T0 + 1000.0)), Recorded::Duplicate);
    assert_eq!(w.record(&n, "x", SeriesKind::Gauge, None, at(T0 + 700.0), 3.0, at(T0 + 1000.0)), Recorded::Stored, "too old for the fine ring, fits the coarse");
    assert_eq!(w.record(&n, "x", SeriesKind::Gauge, None, at(T0 + 100.0), 3.0, at(T0 + 1000.0)), Recorded::TooLate);
    assert_eq!(w.record(&n, "x", SeriesKind::Gauge, None, at(T0 + 1011.0), 3.0, at(T0 + 1000.0)), Recorded::Future);
    let c = w.counters();
    assert_eq!((c.stored, c.duplicate, c.too_late, c.future), (3, 1, 1, 1));
    assert_eq!(w.query(&n, "x", Agg::Count, Duration::from_secs(60), at(T0 + 1000.0)), Some(2.0));
    assert_eq!(w.query(&n, "x", Agg::Count, Duration::from_secs(600), at(T0 + 1000.0)), Some(3.0), "the coarse ring answers long ranges");
}

#[test]
fn the_series_cap_refuses_new_series_and_expiry_frees_room() {
    let mut w = Windows::new(WindowsConfig { max_series: 2, coarse_slots: 10, ..WindowsConfig::default() });
    assert_eq!(gauge(&mut w, &node("a"), "x", 0.0, 1.0), Recorded::Stored);
    assert_eq!(gauge(&mut w, &node("a"), "y", 0.0, 1.0), Recorded::Stored);
    assert_eq!(gauge(&mut w, &node("b"), "x", 0.0, 1.0), Recorded::Refused);
    assert_eq!(gauge(&mut w, &node("a"), "x", 1.0, 2.0), Recorded::Stored, "existing series still record");
    w.expire(at(T0 + 10_000.0));
    assert_eq!(w.series_count(), 0);
    assert_eq!(gauge(&mut w, &node("b"), "x", 10_000.0, 1.0), Recorded::Stored);
    w.forget(&node("b"));
    assert_eq!(w.series_count(), 0);
}

#[test]
fn a_functions_instances_and_gateways_combine() {
    let mut w = Windows::new(WindowsConfig::default());
    let f = FunctionName::new("f").unwrap();
    for (id, cpu) in [(1, 40.0), (2, 80.0)] {
        w.record(&Scope::Instance(InstanceId(id)), "cpu_percent", SeriesKind::Gauge, Some(&f), at(T0), cpu, at(T0));
    }
    assert_eq!(w.instances_of(&f), vec![InstanceId(1), InstanceId(2)]);
    let scopes: Vec<Scope> = w.instances_of(&f).into_iter().map(Scope::Instance).collect();
    assert_eq!(w.query_combined(&scopes, "cpu_percent", Agg::Avg, Duration::from_secs(5), at(T0)), Some(60.0));
    assert_eq!(w.query_combined(&scopes, "cpu_percent", Agg::Last, Duration::from_secs(5), at(T0)), Some(120.0), "levels add up");
}

/// Random samples, in and out of order, against a brute force over the raw list.
#[test]
fn random_samples_agree_with_brute_force() {
    let mut rng = SplitMix64::new(7);
    for _round in 0..50 {
        let mut w = Windows::new(WindowsConfig { fine_slots: 120, ..WindowsConfig::default() });
        let n = node("a");
        let mut raw: Vec<(u64, f64)> = Vec::new();
        let mut newest = 0u64;
        for _ in 0..300 {
            // Mostly moving forward, sometimes late by up to 30 s.
            let ts = if rng.chance(0.2) && newest > 30_000 { newest - rng.below(30_000) } else { newest + rng.below(1500) };
            let ts = ts.max(1) + (T0 as u64) * 1000;
            let v = rng.below(1000) as f64;
            let r = w.record(&n, "x", SeriesKind::Gauge, None, Timestamp(ts), v, Timestamp(ts.max(newest + (T0 as u64) * 1000)));
            if r == Recorded::Stored {
                raw.push((ts, v));
            }
            newest = newest.max(ts - (T0 as u64) * 1000);
        }
        let now_ms = newest + (T0 as u64) * 1000;
        let range_s = 1 + rng.below(100);
        // Slots are whole seconds: the range covers the `range_s` seconds ending with now's.
        let first_sec = (now_ms / 1000 + 1).saturating_sub(range_s);
        let inside: Vec<f64> = raw.iter().filter(|(ts, _)| ts / 1000 >= first_sec && *ts <= now_ms).map(|(_, v)| *v).collect();
        let q = |agg| w.query(&n, "x", agg, Duration::from_secs(range_s), Timestamp(now_ms));
        assert_eq!(q(Agg::Count), (!inside.is_empty()).then_some(inside.len() as f64));
        if inside.is_empty() {
            continue;
        }
        let avg = inside.iter().sum::<f64>() / inside.len() as f64;
        assert!((q(Agg::Avg).unwrap() - avg).abs() < 1e-9);
        assert_eq!(q(Agg::Max), inside.iter().copied().reduce(f64::max));
        assert_eq!(q(Agg::Min), inside.iter().copied().reduce(f64::min));
    }
}
