//! Sluice's keep-warm model: hold an instance at an idle age when the chance
//! that the idle time ends there is worth the memory.
//!
//! Per function it keeps a histogram of idle times (bins between active bins;
//! each sample spread over ±10% + 1 bin, since a 30-minute timer also fires at
//! 29 or 31), mixed with a weak prior that idle times are log-uniform over the
//! range, so a function with little history still gets a sensible keep-alive.
//! From the mix it takes the hazard: h(e) = P(idle = e | idle >= e), the chance
//! that an instance still idle at age e is used in that bin. Holding through
//! bin e costs the function's memory for one bin on every idle period that
//! reaches e; it saves a cold start with probability h(e), which is h(e)
//! percentage points of the function's cold-start rate. So it holds at age e
//! when
//!
//! ```text
//!     h(e) x 100 x worth  >=  memory (GB) x idle periods per 60 bins
//! ```
//!
//! One exchange rate (`worth`, GB-bins per 60 bins for each percentage point)
//! for all functions. It is what "Serverless in the Wild" judges: each
//! function's cold-start percentage counts alike, so a rarely used function,
//! whose few cold starts are a large share of its invocations and whose idle
//! periods are few, is held longer; a large, busy one less. Unlike the hybrid
//! policy's single window from the 5th to the 99th percentile, the held ages
//! can be several windows (a timer at 15 and 60 minutes is held around both).
//!
//! How many: right after use, what the last active bins needed plus their
//! rise when they ramp (two rises in a row: met before it arrives); after a gap, the largest
//! of the last arrivals' needs. Which tier: hot right after use and where an
//! invocation is likely in the bin (`hot_chance`); otherwise paused, which
//! keeps the memory but frees the CPU, and a request resumes it in tens of
//! milliseconds instead of a cold start's hundreds.
//!
//! State: about 1.4 KB per function whatever its history (the histogram, the
//! hazard per age in whole percent, two 240-bit sets, a few counters); weights fade by half when they pass
//! `max_weight`, so a changed pattern takes over.

use super::{Hold, IdleHistogram, KeepWarm, Why, RANGE_BINS};

#[derive(Debug, Clone, PartialEq)]
pub struct SluiceParams {
    /// Percentage points of a function's cold-start rate a GB-bin per 60 bins
    /// is worth (see the module's formula).
    pub worth: f64,
    /// Weight of the log-uniform prior, in idle periods.
    pub prior_weight: f32,
    /// Hold hot (not paused) where the hazard is at least this.
    pub hot_chance: f64,
    /// Past this much histogram weight, all weights halve.
    pub max_weight: f32,
}

impl Default for SluiceParams {
    fn default() -> Self {
        Self { worth: 0.3, prior_weight: 3.0, hot_chance: 0.2, max_weight: 256.0 }
    }
}

impl SluiceParams {
    /// `worth=W,prior=P` (either may be left out): for exploring the
    /// trade-off in `sluice sim`.
    pub fn parse(text: &str) -> Result<SluiceParams, String> {
        let mut p = SluiceParams::default();
        for part in text.split(',').filter(|s| !s.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected key=value"))?;
            let v: f64 = value.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0).ok_or_else(|| format!("{key}: {value:?} is not a number of at least 0"))?;
            match key {
                "worth" => p.worth = v,
                "prior" => p.prior_weight = v as f32,
                _ => return Err(format!("unknown sluice parameter {key:?}: use worth or prior")),
            }
        }
        Ok(p)
    }
}

/// A 240-bit set of idle ages.
type AgeSet = [u64; RANGE_BINS.div_ceil(64)];

fn contains(set: &AgeSet, age: u64) -> bool {
    age < RANGE_BINS as u64 && set[(age / 64) as usize] & (1 << (age % 64)) != 0
}

fn insert(set: &mut AgeSet, age: usize) {
    set[age / 64] |= 1 << (age % 64);
}

/// Arrival needs remembered, and consecutive active bins for the trend.
const ARRIVALS: usize = 5;
const RECENT: usize = 3;
/// Gaps in the held ages this short are held through.
const SHORT_GAP: usize = 2;

#[derive(Debug, Clone)]
pub struct Sluice {
    params: SluiceParams,
    memory_gb: f64,
    histogram: IdleHistogram,
    /// The first bin observed: the rate of idle periods is counted from it.
    born: Option<u64>,
    last_active: Option<u64>,
    /// Idle periods that ended (arrivals after a gap), faded with the histogram.
    periods: f32,
    /// Needs of the last arrivals after a gap, newest last.
    arrivals: [u32; ARRIVALS],
    /// Needs of the current run of consecutive active bins, newest last.
    recent: [u32; RECENT],
    run: u8,
    /// Ages to hold at, and of those, ages to hold hot.
    held: AgeSet,
    hot: AgeSet,
    /// The hazard at each age, in whole percent, for the reasons.
    chance: [u8; RANGE_BINS],
}

impl Sluice {
    pub fn new(params: SluiceParams, memory_mb: f64) -> Self {
        Self {
            params,
            memory_gb: memory_mb.max(1.0) / 1024.0,
            histogram: IdleHistogram::default(),
            born: None,
            last_active: None,
            periods: 0.0,
            arrivals: [0; ARRIVALS],
            recent: [0; RECENT],
            run: 0,
            held: [0; RANGE_BINS.div_ceil(64)],
            hot: [0; RANGE_BINS.div_ceil(64)],
            chance: [0; RANGE_BINS],
        }
    }

    /// Recomputes the held ages from the histogram, the prior and the rate.
    fn plan(&mut self, bin: u64) {
        let p = &self.params;
        let observed = bin + 1 - self.born.unwrap_or(bin);
        let periods_per_60 = f64::from(self.periods.max(1.0)) / observed.max(60) as f64 * 60.0;
        let cost = self.memory_gb * periods_per_60;
        // log-uniform prior: weight ∝ 1/(e+1) over the range, and some beyond it.
        let norm: f64 = (1..=RANGE_BINS).map(|k| 1.0 / k as f64).sum();
        let prior = f64::from(p.prior_weight);
        let mut survivors = f64::from(self.histogram.total() + self.histogram.out_of_bounds()) + prior * 1.5;
        self.held = [0; RANGE_BINS.div_ceil(64)];
        self.hot = [0; RANGE_BINS.div_ceil(64)];
        for age in 0..RANGE_BINS {
            let weight = f64::from(self.histogram.bin(age)) + prior / (age + 1) as f64 / norm;
            let hazard = if survivors > 1e-9 { weight / survivors } else { 0.0 };
            if hazard * 100.0 * p.worth >= cost {
                insert(&mut self.held, age);
                if age == 0 || hazard >= p.hot_chance {
                    insert(&mut self.hot, age);
                }
            }
            self.chance[age] = (hazard * 100.0).round().clamp(0.0, 100.0) as u8;
            survivors -= weight;
        }
        self.fill_short_gaps();
    }

    /// Holds through gaps of at most `SHORT_GAP` ages between held ones:
    /// letting an instance go for a bin or two and starting another saves
    /// little memory for a start, and such gaps are mostly noise in few samples.
    fn fill_short_gaps(&mut self) {
        let mut last_held: Option<usize> = None;
        for age in 0..RANGE_BINS {
            if !contains(&self.held, age as u64) {
                continue;
            }
            if let Some(prev) = last_held.filter(|p| age - p - 1 <= SHORT_GAP) {
                for gap in prev + 1..age {
                    insert(&mut self.held, gap);
                }
            }
            last_held = Some(age);
        }
    }

    fn size(&self, age: u64) -> u32 {
        if age == 0 && self.run > 0 {
            let run = &self.recent[RECENT - usize::from(self.run).min(RECENT)..];
            let peak = run.iter().copied().max().unwrap_or(1);
            // A ramp (two rises in a row) is extrapolated one bin; a single
            // jump is a step, already met by the peak.
            let rise = match run {
                [x, a, b] if b > a && a > x => (b - a).min(a - x),
                _ => 0,
            };
            return (peak + rise).max(1);
        }
        self.arrivals.iter().copied().max().unwrap_or(0).max(1)
    }
}

impl KeepWarm for Sluice {
    fn observe(&mut self, bin: u64, _arrivals: u32, needed: u32) {
        self.born.get_or_insert(bin);
        if needed == 0 {
            return;
        }
        let consecutive = self.last_active.is_some_and(|l| l + 1 == bin);
        if let Some(last) = self.last_active {
            let idle = bin - last - 1;
            // ±10% (rounded) + 1 bin.
            self.histogram.add_spread(idle, (idle + 5) / 10 + 1, 1.0);
            if idle >= 1 {
                self.arrivals.rotate_left(1);
                self.arrivals[ARRIVALS - 1] = needed;
            }
        }
        if !consecutive {
            self.periods += 1.0;
            self.run = 0;
        }
        self.recent.rotate_left(1);
        self.recent[RECENT - 1] = needed;
        self.run = self.run.saturating_add(1);
        if self.histogram.total() + self.histogram.out_of_bounds() > self.params.max_weight {
            self.histogram.scale(0.5);
            self.periods *= 0.5;
        }
        self.last_active = Some(bin);
        self.plan(bin);
    }

    fn hold(&self, bin: u64) -> Hold {
        let Some(last) = self.last_active.filter(|l| bin > *l) else { return Hold::NOTHING };
        let age = bin - last - 1;
        if !contains(&self.held, age) {
            return Hold::NOTHING;
        }
        let n = self.size(age);
        let why = if age == 0 { Why::Busy { needed: n } } else { Why::Likely { idle_bins: age as u32, chance_pct: self.chance[age as usize] } };
        if contains(&self.hot, age) {
            Hold { hot: n, paused: 0, why }
        } else {
            Hold { hot: 0, paused: n, why }
        }
    }

    fn bytes(&self) -> usize {
        IdleHistogram::bytes() + std::mem::size_of::<Self>()
    }
}
