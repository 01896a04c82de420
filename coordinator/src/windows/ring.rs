//! One fixed-resolution ring buffer: a slot per step of time holding the
//! aggregates of the samples that fell in it, the oldest overwritten as time
//! moves on.
//!
//! A slot remembers which period (timestamp / step) it holds, so a slot left
//! from an earlier lap reads as empty and is reset by the next sample that lands
//! on it; nothing sweeps the ring. The first period recorded goes to index 0 and
//! the slots grow from there (doubling, capped at the ring's length), so a young
//! series costs only what it has filled.

/// A slot in storage: 56 bytes. Times are kept as milliseconds into the slot's
/// period (steps up to 49 days) and the period modulo 2^32 steps (a stale slot
/// could only pass for a current one 2^32 steps later: 136 years at 1 s).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slot {
    period: u32,
    /// 0 for a slot never used since the ring grew to it.
    count: u32,
    first_at: u32,
    last_at: u32,
    sum: f64,
    min: f64,
    max: f64,
    first: f64,
    last: f64,
}

impl Slot {
    const EMPTY: Slot = Slot { period: 0, count: 0, first_at: 0, last_at: 0, sum: 0.0, min: 0.0, max: 0.0, first: 0.0, last: 0.0 };
}

/// Where a sample goes: found by `Ring::locate`, written by `Ring::add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    index: usize,
    period: u64,
    at: u32,
}

/// Why a sample cannot go into a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its period is a full lap or more behind the reference time: its slot
    /// belongs to newer data (or soon will).
    TooOld,
    /// Its slot already holds a sample with exactly this timestamp, as its
    /// earliest or latest one.
    Duplicate,
}

/// A filled slot read back for a query, with absolute times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The earliest sample in the slot (by timestamp) and its time (ms).
    pub first: f64,
    pub first_ms: u64,
    /// The latest sample in the slot (by timestamp) and its time (ms).
    pub last: f64,
    pub last_ms: u64,
}

impl Reading {
    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

#[derive(Debug, Clone)]
pub struct Ring {
    step_ms: u64,
    /// Slots when full.
    len: u64,
    /// Added to a period before taking it modulo `len`, so the first period
    /// recorded lands at index 0 and the ring grows from the front.
    shift: u64,
    slots: Vec<Slot>,
}

/// Slots allocated at first, before doubling.
const FIRST_GROWTH: usize = 16;

impl Ring {
    /// A ring of `len` slots of `step_ms` each; both at least 1.
    pub fn new(step_ms: u64, len: usize) -> Self {
        Self { step_ms: step_ms.max(1), len: len.max(1) as u64, shift: 0, slots: Vec::new() }
    }

    pub fn span_ms(&self) -> u64 {
        self.step_ms * self.len
    }

    pub fn step_ms(&self) -> u64 {
        self.step_ms
    }

    /// Where a sample taken at `ts_ms` goes, given that the ring's newest slot is
    /// the one holding `reference_ms` (the later of now and the newest sample).
    pub fn locate(&self, ts_ms: u64, reference_ms: u64) -> Result<Place, Refusal> {
        let period = ts_ms / self.step_ms;
        if period + self.len <= reference_ms / self.step_ms {
            return Err(Refusal::TooOld);
        }
        let at = (ts_ms - period * self.step_ms) as u32;
        let index = self.index(period);
        if let Some(slot) = self.slots.get(index) {
            if slot.count > 0 && slot.period == period as u32 && (slot.first_at == at || slot.last_at == at) {
                return Err(Refusal::Duplicate);
            }
        }
        Ok(Place { index, period, at })
    }

    fn index(&self, period: u64) -> usize {
        let shift = if self.slots.is_empty() { self.len - period % self.len } else { self.shift };
        ((period + shift) % self.len) as usize
    }

    /// Adds `value` where `locate` said; resets the slot first if it holds an older lap.
    pub fn add(&mut self, place: Place, value: f64) {
        if self.slots.is_empty() {
            self.shift = self.len - place.period % self.len;
        }
        if place.index >= self.slots.len() {
            let grown = (place.index + 1).max(self.slots.len() * 2).max(FIRST_GROWTH).min(self.len as usize);
            self.slots.reserve_exact(grown - self.slots.len());
            self.slots.resize(grown, Slot::EMPTY);
        }
        let slot = &mut self.slots[place.index];
        let period = place.period as u32;
        if slot.count == 0 || slot.period != period {
            *slot = Slot { period, count: 1, first_at: place.at, last_at: place.at, sum: value, min: value, max: value, first: value, last: value };
            return;
        }
        slot.count += 1;
        slot.sum += value;
        slot.min = slot.min.min(value);
        slot.max = slot.max.max(value);
        // Samples may arrive out of order: first and last follow timestamps.
        if place.at < slot.first_at {
            slot.first = value;
            slot.first_at = place.at;
        }
        if place.at > slot.last_at {
            slot.last = value;
            slot.last_at = place.at;
        }
    }

    /// The filled slots of the `ceil(range_ms / step)` periods ending with the
    /// one holding `now_ms` (at most a lap), oldest first.
    pub fn read(&self, range_ms: u64, now_ms: u64) -> Vec<Reading> {
        let mut out = Vec::new();
        self.visit(range_ms, now_ms, |r| out.push(r));
        out
    }

    /// `read` without the allocation: `f` gets each reading, oldest first.
    pub fn visit(&self, range_ms: u64, now_ms: u64, mut f: impl FnMut(Reading)) {
        let newest = now_ms / self.step_ms;
        let periods = range_ms.div_ceil(self.step_ms).min(self.len);
        let oldest = (newest + 1).saturating_sub(periods);
        for period in oldest..=newest {
            let Some(slot) = self.slots.get(self.index(period)) else { continue };
            if slot.count == 0 || slot.period != period as u32 {
                continue;
            }
            let start = period * self.step_ms;
            f(Reading {
                count: u64::from(slot.count),
                sum: slot.sum,
                min: slot.min,
                max: slot.max,
                first: slot.first,
                first_ms: start + u64::from(slot.first_at),
                last: slot.last,
                last_ms: start + u64::from(slot.last_at),
            });
        }
    }

    /// Bytes held by the slots.
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(r: &mut Ring, ts_ms: u64, value: f64, reference_ms: u64) -> Result<(), Refusal> {
        let place = r.locate(ts_ms, reference_ms)?;
        r.add(place, value);
        Ok(())
    }

    #[test]
    fn a_slot_is_56_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 56);
    }

    #[test]
    fn samples_land_in_their_step_at_the_boundaries() {
        let mut r = Ring::new(1000, 10);
        for (ts, v) in [(10_000, 1.0), (10_999, 3.0), (11_000, 8.0)] {
            put(&mut r, ts, v, ts).unwrap();
        }
        let s = r.read(2000, 11_000);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].count, s[0].mean(), s[0].min, s[0].max), (2, 2.0, 1.0, 3.0));
        assert_eq!((s[0].first, s[0].first_ms, s[0].last, s[0].last_ms), (1.0, 10_000, 3.0, 10_999));
        assert_eq!((s[1].count, s[1].first_ms, s[1].last), (1, 11_000, 8.0));
        assert_eq!(r.read(1000, 11_999).len(), 1, "one step holds only now's slot");
        assert_eq!(r.read(1, 11_000).len(), 1, "a part of a step counts as the whole step");
        assert!(r.read(0, 11_000).is_empty(), "an empty range");
        assert!(r.read(1000, 12_000).is_empty(), "now's slot is empty");
    }

    #[test]
    fn out_of_order_samples_keep_first_and_last_by_time() {
        let mut r = Ring::new(1000, 10);
        put(&mut r, 5_500, 2.0, 5_500).unwrap();
        put(&mut r, 5_900, 3.0, 5_900).unwrap();
        put(&mut r, 5_100, 1.0, 5_900).unwrap();
        put(&mut r, 5_700, 9.0, 5_900).unwrap();
        let s = r.read(1000, 5_900)[0];
        assert_eq!((s.first, s.first_ms, s.last, s.last_ms, s.count, s.max), (1.0, 5_100, 3.0, 5_900, 4, 9.0));
    }

    #[test]
    fn a_lap_later_the_old_slot_reads_empty_and_resets() {
        let mut r = Ring::new(1000, 10);
        put(&mut r, 5_000, 1.0, 5_000).unwrap();
        put(&mut r, 6_000, 2.0, 6_000).unwrap();
        assert_eq!(r.read(10_000, 14_999).len(), 2, "still inside the lap");
        // 15 s shares 5 s's slot: the old period reads empty, then is replaced.
        assert_eq!(r.read(10_000, 15_000).len(), 1);
        put(&mut r, 15_000, 7.0, 15_000).unwrap();
        let s = r.read(10_000, 15_000);
        assert_eq!(s.len(), 2);
        assert_eq!((s[1].count, s[1].sum), (1, 7.0));
        assert_eq!(s[0].sum, 2.0, "6 s's slot is untouched");
    }

    #[test]
    fn late_samples_inside_the_lap_are_placed_and_older_ones_refused() {
        let mut r = Ring::new(1000, 10);
        put(&mut r, 20_000, 1.0, 20_000).unwrap();
        assert_eq!(put(&mut r, 11_000, 5.0, 20_000), Ok(()), "the oldest period of the lap");
        assert_eq!(put(&mut r, 10_999, 5.0, 20_000), Err(Refusal::TooOld));
        assert_eq!(put(&mut r, 15_000, 5.0, 25_000), Err(Refusal::TooOld), "the reference, not the newest sample, sets the lap");
        assert_eq!(r.read(10_000, 20_000).len(), 2);
    }

    #[test]
    fn a_repeat_of_the_first_or_last_timestamp_in_a_slot_is_a_duplicate() {
        let mut r = Ring::new(1000, 10);
        for ts in [3_100, 3_500, 3_900] {
            put(&mut r, ts, 1.0, ts).unwrap();
        }
        assert_eq!(put(&mut r, 3_100, 1.0, 3_900), Err(Refusal::Duplicate));
        assert_eq!(put(&mut r, 3_900, 1.0, 3_900), Err(Refusal::Duplicate));
        // The known limit: a repeat of neither the first nor the last is not seen.
        assert_eq!(put(&mut r, 3_500, 1.0, 3_900), Ok(()));
        assert_eq!(r.read(1000, 3_900)[0].count, 4);
    }

    #[test]
    fn the_ring_grows_as_it_fills_up_to_its_length() {
        let mut r = Ring::new(1000, 900);
        put(&mut r, 1_234_567_000, 1.0, 1_234_567_000).unwrap();
        assert_eq!(r.bytes(), FIRST_GROWTH * 56, "a new series holds a few slots, wherever its first period falls");
        for s in 1..2000 {
            let ts = 1_234_567_000 + s * 1000;
            put(&mut r, ts, 1.0, ts).unwrap();
        }
        assert_eq!(r.bytes(), 900 * 56, "full, and no more");
        assert_eq!(r.read(900_000, 1_234_567_000 + 1_999_000).len(), 900);
    }
}
