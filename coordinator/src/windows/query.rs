//! Aggregations over the slots a range covers: what `Agg` means, computed from
//! per-slot count, sum, min, max, first and last.

use super::ring::Reading;
use super::{Agg, Metric, SeriesKind, SeriesSummary};

/// `agg` over `readings` (oldest first); None when they hold no sample, and for
/// `Rate` also when the samples span no time or the series is a gauge.
pub fn aggregate(readings: &[Reading], agg: Agg, kind: SeriesKind) -> Option<f64> {
    let count: u64 = readings.iter().map(|r| r.count).sum();
    if count == 0 {
        return None;
    }
    match agg {
        Agg::Count => Some(count as f64),
        Agg::Avg => Some(readings.iter().map(|r| r.sum).sum::<f64>() / count as f64),
        Agg::Min => readings.iter().map(|r| r.min).reduce(f64::min),
        Agg::Max => readings.iter().map(|r| r.max).reduce(f64::max),
        Agg::Last => readings.last().map(|r| r.last),
        Agg::P95 => p95_of_means(readings),
        Agg::Rate if kind == SeriesKind::Counter => rate(readings),
        Agg::Rate => None,
    }
}

/// Nearest rank: the `ceil(0.95 n)`-th smallest of the `n` slot means.
fn p95_of_means(readings: &[Reading]) -> Option<f64> {
    let mut means: Vec<f64> = readings.iter().map(Reading::mean).collect();
    means.sort_by(f64::total_cmp);
    let rank = (95 * means.len()).div_ceil(100);
    means.get(rank.checked_sub(1)?).copied()
}

/// A counter's increase per second between its first and last sample in the
/// range (no extrapolation to the range's edges, unlike Prometheus' rate()).
///
/// As in Prometheus' increase(), a drop is a restart from zero, so the value
/// after it counts whole. Between slots the increase runs from one slot's last
/// sample to the next one's first; within a slot see `increase_within`.
fn rate(readings: &[Reading]) -> Option<f64> {
    let (first, last) = (readings.first()?, readings.last()?);
    let elapsed_ms = last.last_ms.checked_sub(first.first_ms).filter(|ms| *ms > 0)?;
    let within: f64 = readings.iter().map(increase_within).sum();
    let between: f64 = readings.windows(2).map(|w| increase_between(&w[0], &w[1])).sum();
    Some((within + between) * 1000.0 / elapsed_ms as f64)
}

/// A counter's increase from one slot's last sample to the next slot's first;
/// a drop is a restart from zero, so the value after it counts whole.
pub fn increase_between(prev: &Reading, next: &Reading) -> f64 {
    if next.first >= prev.last {
        next.first - prev.last
    } else {
        next.first
    }
}

/// The increase of a counter over one slot's samples, as the sum over
/// consecutive samples would give it. A counter only goes below its first value
/// by restarting. With no restart it is last - first. With one restart whose
/// counter has not climbed back past its old peak, that peak is the slot's max
/// and the answer is still exact: (max - first) + last. Past that (several
/// restarts, or a climb past the old peak) only the part since the restart is
/// known, so it counts `last`: an undercount.
pub fn increase_within(r: &Reading) -> f64 {
    if r.min >= r.first {
        r.last - r.first
    } else if r.max > r.last {
        (r.max - r.first) + r.last
    } else {
        r.last
    }
}

pub fn summarize(metric: Metric, readings: &[Reading]) -> SeriesSummary {
    let get = |agg| aggregate(readings, agg, metric.kind());
    SeriesSummary {
        metric: metric.name(),
        count: readings.iter().map(|r| r.count).sum(),
        avg: get(Agg::Avg),
        min: get(Agg::Min),
        max: get(Agg::Max),
        p95: get(Agg::P95),
        last: get(Agg::Last),
        rate: get(Agg::Rate),
    }
}

/// `agg` over several series (e.g. a function's instances) over the same range:
/// `Rate` and `Last` are each series' own figure, summed (request rates and
/// queue lengths add up across gateways; CPU `Last` is the function's total);
/// the others are taken over all the series' slots together: `Avg` is the mean
/// of every sample, `P95` the p95 of every (series, slot) mean.
pub fn combine(per_series: &[(SeriesKind, Vec<Reading>)], agg: Agg) -> Option<f64> {
    if matches!(agg, Agg::Rate | Agg::Last) {
        return per_series.iter().filter_map(|(kind, readings)| aggregate(readings, agg, *kind)).reduce(|a, b| a + b);
    }
    let kind = per_series.first()?.0;
    let all: Vec<Reading> = per_series.iter().flat_map(|(_, readings)| readings.iter().copied()).collect();
    aggregate(&all, agg, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot holding one sample `value` at `second`.
    fn one(second: u64, value: f64) -> Reading {
        let ms = second * 1000;
        Reading { count: 1, sum: value, min: value, max: value, first: value, first_ms: ms, last: value, last_ms: ms }
    }

    #[test]
    fn p95_is_the_nearest_rank_of_slot_means() {
        let twenty: Vec<Reading> = (1..=20).map(|i| one(i, i as f64)).collect();
        assert_eq!(p95_of_means(&twenty), Some(19.0), "ceil(0.95 * 20) = 19th");
        assert_eq!(p95_of_means(&twenty[..10]), Some(10.0), "ceil(9.5) = 10th of 10");
        assert_eq!(p95_of_means(&twenty[..1]), Some(1.0));
        assert_eq!(p95_of_means(&[]), None);
        let hundred: Vec<Reading> = (0..100).rev().map(|i| one(i, i as f64)).collect();
        assert_eq!(p95_of_means(&hundred), Some(94.0), "95th of 0..99, whatever the order");
        // A slot counts once, by its mean, however many samples it holds.
        let heavy = Reading { count: 50, sum: 50.0 * 3.0, ..one(0, 3.0) };
        assert_eq!(p95_of_means(&[heavy, one(1, 100.0)]), Some(100.0));
    }

    #[test]
    fn rate_adds_increases_within_and_between_slots_and_reads_a_drop_as_a_restart() {
        // Slot 0: 100 at 0 s and 104 at 0.5 s; slot 1: 110 at 1 s; restart: 5 at 2 s, 15 at 3 s.
        let first = Reading { count: 2, sum: 204.0, min: 100.0, max: 104.0, first: 100.0, first_ms: 0, last: 104.0, last_ms: 500 };
        let slots = [first, one(1, 110.0), one(2, 5.0), one(3, 15.0)];
        // 4 + 6 + 5 + 10 = 25 over 3 s.
        assert_eq!(aggregate(&slots, Agg::Rate, SeriesKind::Counter), Some(25.0 / 3.0));
        assert_eq!(aggregate(&slots[..1], Agg::Rate, SeriesKind::Counter), Some(8.0), "within one slot");
        assert_eq!(aggregate(&slots[1..2], Agg::Rate, SeriesKind::Counter), None, "one sample spans no time");
        assert_eq!(aggregate(&slots, Agg::Rate, SeriesKind::Gauge), None, "gauges have no rate");
    }

    #[test]
    fn a_restart_inside_a_slot_is_read_from_its_min_and_max() {
        let slot = |values: &[f64]| Reading {
            count: values.len() as u64,
            sum: values.iter().sum(),
            min: values.iter().copied().reduce(f64::min).unwrap(),
            max: values.iter().copied().reduce(f64::max).unwrap(),
            first: values[0],
            first_ms: 0,
            last: values[values.len() - 1],
            last_ms: 1000,
        };
        assert_eq!(increase_within(&slot(&[100.0, 110.0, 120.0])), 20.0, "no restart");
        assert_eq!(increase_within(&slot(&[100.0, 110.0, 120.0, 5.0, 15.0])), 35.0, "20 before the restart, 15 after");
        assert_eq!(increase_within(&slot(&[120.0, 5.0, 15.0])), 15.0, "restarted right after the first sample");
        assert_eq!(increase_within(&slot(&[100.0, 120.0, 5.0, 150.0])), 150.0, "climbed past the old peak: only what followed the restart (true: 170)");
    }

    #[test]
    fn the_simple_aggregations_weigh_samples_not_slots() {
        let heavy = Reading { count: 3, sum: 3.0, min: 0.0, max: 2.0, first: 0.0, first_ms: 0, last: 2.0, last_ms: 900 };
        let slots = [heavy, one(1, 5.0)];
        let get = |agg| aggregate(&slots, agg, SeriesKind::Gauge);
        assert_eq!((get(Agg::Count), get(Agg::Avg)), (Some(4.0), Some(2.0)));
        assert_eq!((get(Agg::Min), get(Agg::Max), get(Agg::Last)), (Some(0.0), Some(5.0), Some(5.0)));
        assert_eq!(aggregate(&[], Agg::Avg, SeriesKind::Gauge), None, "an empty range");
    }

    #[test]
    fn combining_sums_rates_and_lasts_and_pools_the_rest() {
        let a = (SeriesKind::Gauge, vec![one(0, 40.0), one(1, 40.0)]);
        let b = (SeriesKind::Gauge, vec![one(1, 80.0)]);
        let both = [a, b];
        assert_eq!(combine(&both, Agg::Last), Some(120.0));
        assert_eq!(combine(&both, Agg::Avg), Some(160.0 / 3.0), "the mean of every sample");
        assert_eq!(combine(&both, Agg::Max), Some(80.0));
        let counters = [(SeriesKind::Counter, vec![one(0, 0.0), one(2, 10.0)]), (SeriesKind::Counter, vec![one(0, 0.0), one(1, 3.0)])];
        assert_eq!(combine(&counters, Agg::Rate), Some(5.0 + 3.0));
        assert_eq!(combine(&[], Agg::Rate), None);
        assert_eq!(combine(&[], Agg::Avg), None);
    }
}
