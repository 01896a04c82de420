//! One series: a metric of a scope kept in a fine and a coarse ring, and the
//! rules that decide what becomes of a sample (stored, late, too late, duplicate).

use super::ring::{Reading, Refusal, Ring};
use super::{Metric, Recorded, WindowsConfig};

#[derive(Debug, Clone)]
pub struct Series {
    pub metric: Metric,
    fine: Ring,
    coarse: Ring,
    /// Time of the latest sample recorded (ms); 0 before the first.
    pub newest_ms: u64,
}

impl Series {
    pub fn new(metric: Metric, config: &WindowsConfig) -> Self {
        Self {
            metric,
            fine: Ring::new(config.fine_step.as_millis() as u64, config.fine_slots),
            coarse: Ring::new(config.coarse_step.as_millis() as u64, config.coarse_slots),
            newest_ms: 0,
        }
    }

    /// Records a sample taken at `ts_ms` and received at `now_ms` (the caller has
    /// already refused samples from the future).
    ///
    /// A ring's lap is measured back from the later of now and the newest sample,
    /// so a sample no query could reach is refused rather than stored unseen. Both
    /// rings are checked before either is written, so they always hold the same
    /// samples except those too old for the fine ring alone. The coarse ring spans
    /// longer and may still take a sample the fine ring cannot.
    pub fn record(&mut self, ts_ms: u64, value: f64, now_ms: u64) -> Recorded {
        let reference_ms = self.newest_ms.max(now_ms);
        let fine = self.fine.locate(ts_ms, reference_ms);
        let coarse = self.coarse.locate(ts_ms, reference_ms);
        if fine == Err(Refusal::Duplicate) || coarse == Err(Refusal::Duplicate) {
            return Recorded::Duplicate;
        }
        if fine.is_err() && coarse.is_err() {
            return Recorded::TooLate;
        }
        if let Ok(place) = fine {
            self.fine.add(place, value);
        }
        if let Ok(place) = coarse {
            self.coarse.add(place, value);
        }
        let late = ts_ms < self.newest_ms;
        self.newest_ms = self.newest_ms.max(ts_ms);
        if late {
            Recorded::Late
        } else {
            Recorded::Stored
        }
    }

    /// The filled slots covering `range_ms` up to `now_ms`, oldest first: from the
    /// fine ring when the range fits in it, the coarse ring otherwise.
    pub fn readings(&self, range_ms: u64, now_ms: u64) -> Vec<Reading> {
        let ring = if range_ms <= self.fine.span_ms() { &self.fine } else { &self.coarse };
        ring.read(range_ms, now_ms)
    }

    /// Each reading `readings` would return, without collecting them; returns the step.
    pub fn visit(&self, range_ms: u64, now_ms: u64, f: impl FnMut(Reading)) -> u64 {
        let ring = if range_ms <= self.fine.span_ms() { &self.fine } else { &self.coarse };
        ring.visit(range_ms, now_ms, f);
        ring.step_ms()
    }

    pub fn bytes(&self) -> usize {
        self.fine.bytes() + self.coarse.bytes()
    }
}
