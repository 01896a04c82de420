//! One fixed-resolution ring buffer of a series: a slot per step of time, the
//! oldest overwritten as time moves on.
//!
//! A slot remembers which period (timestamp / step) it holds, so a slot left
//! from an earlier lap reads as empty and is reset lazily by the next sample;
//! nothing sweeps the ring. Slots grow on demand up to the ring's length, so a
//! young series costs only what it has filled.

/// Aggregates of the samples that fell in one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    /// Which step since the epoch this slot holds; 0 means never used.
    period: u32,
    pub count: u32,
    pub sum: f64,
    pub min: f32,
    pub max: f32,
    /// The latest sample's value and time (ms), for counters and `last`.
    pub last: f64,
    last_ts: u64,
}

impl Slot {
    const EMPTY: Slot = Slot { period: 0, count: 0, sum: 0.0, min: 0.0, max: 0.0, last: 0.0, last_ts: 0 };

    /// When the slot's latest sample was taken (ms).
    pub fn last_ms(&self) -> u64 {
        self.last_ts
    }

    pub fn mean(&self) -> f64 {
        self.sum / f64::from(self.count.max(1))
    }
}

/// What recording a sample did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    Stored,
    /// Same timestamp as the latest sample already in that slot.
    Duplicate,
    /// Older than the ring's span.
    TooOld,
}

#[derive(Debug, Clone)]
pub struct Ring {
    step_ms: u64,
    len: usize,
    slots: Vec<Slot>,
}

impl Ring {
    pub fn new(step_ms: u64, len: usize) -> Self {
        Self { step_ms: step_ms.max(1), len: len.max(1), slots: Vec::new() }
    }

    pub fn span_ms(&self) -> u64 {
        self.step_ms * self.len as u64
    }

    fn period(&self, ts_ms: u64) -> u32 {
        // +1 keeps period 0 free to mean "never used".
        (ts_ms / self.step_ms + 1) as u32
    }

    /// Records `value` at `ts_ms`; `newest_ms` is the latest time the series has seen.
    pub fn record(&mut self, ts_ms: u64, value: f64, newest_ms: u64) -> Placed {
        if ts_ms + self.span_ms() <= newest_ms.max(ts_ms) {
            return Placed::TooOld;
        }
        let period = self.period(ts_ms);
        let index = period as usize % self.len;
        if index >= self.slots.len() {
            self.slots.resize(index + 1, Slot::EMPTY);
        }
        let slot = &mut self.slots[index];
        if slot.period != period {
            *slot = Slot { period, count: 0, sum: 0.0, min: f32::INFINITY, max: f32::NEG_INFINITY, last: value, last_ts: ts_ms };
        } else if slot.last_ts == ts_ms {
            return Placed::Duplicate;
        }
        slot.count += 1;
        slot.sum += value;
        slot.min = slot.min.min(value as f32);
        slot.max = slot.max.max(value as f32);
        if ts_ms >= slot.last_ts {
            slot.last = value;
            slot.last_ts = ts_ms;
        }
        Placed::Stored
    }

    /// The filled slots whose step lies in (`now_ms` - `range_ms`, `now_ms`], oldest first.
    pub fn slots_in(&self, range_ms: u64, now_ms: u64) -> Vec<Slot> {
        let newest = self.period(now_ms);
        let steps = range_ms.div_ceil(self.step_ms).clamp(1, self.len as u64) as u32;
        let oldest = newest.saturating_sub(steps - 1).max(1);
        let mut out: Vec<Slot> = self.slots.iter().filter(|s| s.period >= oldest && s.period <= newest && s.count > 0).copied().collect();
        out.sort_by_key(|s| s.period);
        out
    }

    /// Bytes held by the slots.
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_their_step_and_aggregate() {
        let mut r = Ring::new(1000, 10);
        assert_eq!(r.record(10_100, 2.0, 10_100), Placed::Stored);
        assert_eq!(r.record(10_900, 4.0, 10_900), Placed::Stored);
        assert_eq!(r.record(11_000, 8.0, 11_000), Placed::Stored);
        let s = r.slots_in(2000, 11_000);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].count, s[0].mean(), s[0].min, s[0].max, s[0].last), (2, 3.0, 2.0, 4.0, 4.0));
        assert_eq!(s[1].last, 8.0);
        // A range of one step holds only the newest.
        assert_eq!(r.slots_in(1000, 11_000).len(), 1);
    }

    #[test]
    fn a_lap_later_the_old_slot_reads_empty_and_resets() {
        let mut r = Ring::new(1000, 10);
        r.record(5_000, 1.0, 5_000);
        r.record(15_000, 7.0, 15_000); // same index, next lap
        let s = r.slots_in(10_000, 15_000);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].count, s[0].sum), (1, 7.0));
    }

    #[test]
    fn late_samples_within_the_span_count_and_older_ones_do_not() {
        let mut r = Ring::new(1000, 10);
        r.record(20_000, 1.0, 20_000);
        assert_eq!(r.record(12_500, 5.0, 20_000), Placed::Stored, "late but inside the span");
        assert_eq!(r.record(10_000, 5.0, 20_000), Placed::TooOld);
        assert_eq!(r.slots_in(10_000, 20_000).len(), 2);
    }

    #[test]
    fn a_repeated_timestamp_is_a_duplicate() {
        let mut r = Ring::new(1000, 10);
        r.record(3_000, 1.0, 3_000);
        assert_eq!(r.record(3_000, 1.0, 3_000), Placed::Duplicate);
        assert_eq!(r.slots_in(1000, 3_000)[0].count, 1);
    }
}
