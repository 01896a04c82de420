//! Fixed keep-alive: every instance stays loaded for N bins after its last use
//! (OpenWhisk keeps containers 10 minutes, Lambda about as long).

use super::{Hold, KeepWarm, Why};

#[derive(Debug, Clone)]
pub struct FixedKeepAlive {
    keep: u32,
    /// The instances needed in each of the last `keep` active bins, newest
    /// last: an instance used within the keep-alive is still loaded.
    recent: Vec<(u64, u32)>,
}

/// The needs remembered: beyond this many recent active bins only the
/// largest counts, which the fold below keeps.
const REMEMBERED: usize = 16;

impl FixedKeepAlive {
    pub fn new(keep: u32) -> Self {
        Self { keep, recent: Vec::new() }
    }
}

impl KeepWarm for FixedKeepAlive {
    fn observe(&mut self, bin: u64, _arrivals: u32, needed: u32) {
        if needed == 0 {
            return;
        }
        let keep = u64::from(self.keep);
        self.recent.retain(|(b, _)| bin.saturating_sub(*b) < keep);
        // Keep the list short: an older, smaller need is covered by a newer, larger one.
        self.recent.retain(|(_, n)| *n > needed);
        self.recent.push((bin, needed));
        if self.recent.len() > REMEMBERED {
            self.recent.remove(0);
        }
    }

    fn hold(&self, bin: u64) -> Hold {
        let keep = u64::from(self.keep);
        let alive = self.recent.iter().filter(|(b, _)| bin > *b && bin - *b <= keep);
        match alive.map(|(_, n)| *n).max() {
            Some(n) => {
                let last = self.recent.last().map_or(0, |(b, _)| *b);
                Hold { hot: n, paused: 0, why: Why::KeepAlive { idle_bins: (bin - last - 1) as u32, keep_bins: self.keep } }
            }
            None => Hold::NOTHING,
        }
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + REMEMBERED * std::mem::size_of::<(u64, u32)>()
    }
}
