//! The hybrid histogram policy of "Serverless in the Wild" (Shahrad et al.,
//! ATC'20): a histogram of idle times in one-minute bins over four hours. When
//! it is representative, unload after each invocation, load again at its 5th
//! percentile less 10% and keep until its 99th percentile plus 10%. When it is
//! not (its bins' coefficient of variation is under 2, or half the idle times
//! are out of its range, or it is empty), keep loaded for the whole range
//! after each invocation. The paper forecasts out-of-range idle times with
//! ARIMA; that branch is not built here (out-of-range idle times take the
//! keep-alive fallback), which matters only for idle times over four hours.

use super::{Hold, IdleHistogram, KeepWarm, Why, RANGE_BINS};

const HEAD: f64 = 0.05;
const TAIL: f64 = 0.99;
const MARGIN: f64 = 0.10;
const CV_THRESHOLD: f64 = 2.0;
const OUT_OF_BOUNDS_THRESHOLD: f32 = 0.5;

#[derive(Debug, Clone, Default)]
pub struct Hybrid {
    histogram: IdleHistogram,
    last_active: Option<u64>,
    /// Instances the last active bin needed.
    needed: u32,
    /// Hold from this many idle bins to before `until`.
    from: u32,
    until: u32,
}

impl Hybrid {
    pub fn new() -> Self {
        Self { until: RANGE_BINS as u32, ..Self::default() }
    }

    fn window(&self) -> (u32, u32) {
        let h = &self.histogram;
        let all = h.total() + h.out_of_bounds();
        let representative = all > 0.0 && h.out_of_bounds() / all < OUT_OF_BOUNDS_THRESHOLD && h.coefficient_of_variation() >= CV_THRESHOLD;
        match (representative, h.percentile(HEAD), h.percentile(TAIL)) {
            (true, Some(head), Some(tail)) => ((head as f64 * (1.0 - MARGIN)).floor() as u32, ((tail + 1) as f64 * (1.0 + MARGIN)).ceil() as u32),
            _ => (0, RANGE_BINS as u32),
        }
    }
}

impl KeepWarm for Hybrid {
    fn observe(&mut self, bin: u64, _arrivals: u32, needed: u32) {
        if needed == 0 {
            return;
        }
        if let Some(last) = self.last_active {
            self.histogram.add(bin - last - 1, 1.0);
        }
        self.last_active = Some(bin);
        self.needed = needed;
        (self.from, self.until) = self.window();
    }

    fn hold(&self, bin: u64) -> Hold {
        let Some(last) = self.last_active.filter(|l| bin > *l) else { return Hold::NOTHING };
        let idle = bin - last - 1;
        if idle >= u64::from(self.from) && idle < u64::from(self.until) {
            Hold { hot: self.needed, paused: 0, why: Why::Window { idle_bins: idle as u32, from_bins: self.from, until_bins: self.until } }
        } else {
            Hold::NOTHING
        }
    }

    fn bytes(&self) -> usize {
        IdleHistogram::bytes() + std::mem::size_of::<Self>()
    }
}
