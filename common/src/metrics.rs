//! Prometheus text exposition, written by hand: a few counters and histograms do
//! not need a metrics framework.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A lock-free latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// The sum of every observation, in microseconds.
    pub fn sum_micros(&self) -> u64 {
        self.sum_micros.load(Ordering::Relaxed)
    }

    /// The sum of `parts`: copies kept apart so that threads counting at once
    /// do not contend for one, added up when read.
    pub fn merged<'a>(parts: impl IntoIterator<Item = &'a Histogram>) -> Histogram {
        let total = Histogram::default();
        for part in parts {
            for (sum, n) in total.buckets.iter().zip(&part.buckets) {
                sum.fetch_add(n.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            total.count.fetch_add(part.count.load(Ordering::Relaxed), Ordering::Relaxed);
            total.sum_micros.fetch_add(part.sum_micros.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        total
    }

    /// The counts so far, to compare with a later snapshot.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot { buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)), count: self.count.load(Ordering::Relaxed) }
    }

    /// Writes the `_bucket`, `_sum` and `_count` series with `labels` (`k="v",...`).
    pub fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// A histogram's counts at one moment (per bucket, not cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    buckets: [u64; LATENCY_BUCKETS.len()],
    /// Every observation, including those above the last bucket.
    count: u64,
}

impl HistogramSnapshot {
    /// The `q` quantile (0-1) of what was observed between `earlier` and `self`,
    /// as the upper bound of the bucket it falls in (+Inf past the last bucket, as
    /// Prometheus does); None when nothing was observed in between.
    pub fn quantile_since(&self, earlier: &HistogramSnapshot, q: f64) -> Option<f64> {
        let total = self.count.checked_sub(earlier.count).filter(|n| *n > 0)?;
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            seen += self.buckets[i].saturating_sub(earlier.buckets[i]);
            if seen >= rank {
                return Some(*bound);
            }
        }
        Some(f64::INFINITY)
    }
}

/// Writes a `# HELP` and `# TYPE` header.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample line.
pub fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_covers_only_the_interval() {
        let h = Histogram::default();
        for _ in 0..100 {
            h.observe(0.2); // before the interval: must not count
        }
        let before = h.snapshot();
        for _ in 0..94 {
            h.observe(0.003);
        }
        for _ in 0..6 {
            h.observe(0.7);
        }
        let now = h.snapshot();
        assert_eq!(now.quantile_since(&before, 0.5), Some(0.005));
        assert_eq!(now.quantile_since(&before, 0.95), Some(1.0));
        assert_eq!(now.quantile_since(&now, 0.95), None);
        h.observe(99.0);
        assert_eq!(h.snapshot().quantile_since(&now, 0.95), Some(f64::INFINITY));
    }

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(0.0005);
        h.observe(0.003);
        h.observe(100.0);
        let mut out = String::new();
        h.write(&mut out, "x", "f=\"a\"");
        assert!(out.contains("x_bucket{f=\"a\",le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{f=\"a\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{f=\"a\",le=\"30\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{f=\"a\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{f=\"a\"} 3\n"), "{out}");
    }

    #[test]
    fn merged_histograms_add_up() {
        let (a, b) = (Histogram::default(), Histogram::default());
        a.observe(0.0005);
        b.observe(0.0005);
        b.observe(0.7);
        let total = Histogram::merged([&a, &b]);
        let mut out = String::new();
        total.write(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("x_count{} 3\n"), "{out}");
        assert_eq!(total.sum_micros(), 500 + 500 + 700_000);
    }
}
