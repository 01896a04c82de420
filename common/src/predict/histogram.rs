//! A histogram of a function's idle times in bins, `RANGE_BINS` wide plus an
//! out-of-bounds count, with weights so that a sample can be spread over its
//! neighbours and old samples can fade.

use super::RANGE_BINS;

#[derive(Debug, Clone)]
pub struct IdleHistogram {
    bins: Box<[f32; RANGE_BINS]>,
    /// Idle times of `RANGE_BINS` bins or longer.
    out_of_bounds: f32,
    /// Sum of `bins` (out-of-bounds not included).
    total: f32,
}

impl Default for IdleHistogram {
    fn default() -> Self {
        Self { bins: Box::new([0.0; RANGE_BINS]), out_of_bounds: 0.0, total: 0.0 }
    }
}

impl IdleHistogram {
    /// Adds `weight` at `idle` bins.
    pub fn add(&mut self, idle: u64, weight: f32) {
        match usize::try_from(idle).ok().filter(|i| *i < RANGE_BINS) {
            Some(i) => {
                self.bins[i] += weight;
                self.total += weight;
            }
            None => self.out_of_bounds += weight,
        }
    }

    /// Adds `weight` spread evenly over `idle - spread ..= idle + spread`
    /// (clipped to the range): an idle time of 30 minutes says 29 or 31 are
    /// likely too.
    pub fn add_spread(&mut self, idle: u64, spread: u64, weight: f32) {
        if idle >= RANGE_BINS as u64 {
            self.out_of_bounds += weight;
            return;
        }
        let lo = idle.saturating_sub(spread);
        let hi = (idle + spread).min(RANGE_BINS as u64 - 1);
        let each = weight / (hi - lo + 1) as f32;
        for i in lo..=hi {
            self.add(i, each);
        }
    }

    /// Multiplies every weight by `factor` (old samples fade).
    pub fn scale(&mut self, factor: f32) {
        for b in self.bins.iter_mut() {
            *b *= factor;
        }
        self.out_of_bounds *= factor;
        self.total *= factor;
    }

    pub fn total(&self) -> f32 {
        self.total
    }

    pub fn out_of_bounds(&self) -> f32 {
        self.out_of_bounds
    }

    pub fn bin(&self, i: usize) -> f32 {
        self.bins.get(i).copied().unwrap_or(0.0)
    }

    /// The smallest bin at which the in-range weight reaches `p` of the total.
    pub fn percentile(&self, p: f64) -> Option<usize> {
        if self.total <= 0.0 {
            return None;
        }
        let goal = p * f64::from(self.total);
        let mut seen = 0.0;
        for (i, b) in self.bins.iter().enumerate() {
            seen += f64::from(*b);
            if seen >= goal - 1e-9 {
                return Some(i);
            }
        }
        Some(RANGE_BINS - 1)
    }

    /// Coefficient of variation of the bin weights (ATC'20's test of whether a
    /// histogram is representative: a flat one is not).
    pub fn coefficient_of_variation(&self) -> f64 {
        let n = RANGE_BINS as f64;
        let mean = f64::from(self.total) / n;
        if mean <= 0.0 {
            return 0.0;
        }
        let var = self.bins.iter().map(|b| (f64::from(*b) - mean).powi(2)).sum::<f64>() / (n - 1.0);
        var.sqrt() / mean
    }

    pub const fn bytes() -> usize {
        std::mem::size_of::<[f32; RANGE_BINS]>() + std::mem::size_of::<Self>()
    }
}
