//! Drops repeated bus messages and counts lost ones, by each stream's sequence numbers.
//!
//! A stream is one publisher's messages of one kind. Publishers number them from
//! 1 in each boot and resend everything unacknowledged after a failure, and the
//! bus keeps a stream's order, so a message at or below the highest number seen
//! in its boot is a repeat. A jump past the next number is loss (the publisher's
//! outbox overflowed, or the bus dropped data). A new boot starts the count again;
//! the previous boot is remembered too, so its stragglers are still recognised.

use sluice_common::wire::Kind;
use sluice_common::NodeId;
use std::collections::HashMap;

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New; `lost` messages of its stream were skipped just before it.
    New { lost: u64 },
    /// Seen before: ignore.
    Repeat,
}

#[derive(Debug, Clone, Copy)]
struct Boot {
    boot: u64,
    highest: u64,
}

#[derive(Debug, Default)]
struct Stream {
    current: Option<Boot>,
    previous: Option<Boot>,
}

/// Per-stream high-water marks.
#[derive(Debug, Default)]
pub struct Dedup {
    streams: HashMap<(NodeId, Kind), Stream>,
}

impl Dedup {
    /// Judges message `seq` of `boot` from `node`'s `kind` stream, and records it.
    pub fn admit(&mut self, node: &NodeId, kind: Kind, boot: u64, seq: u64) -> Verdict {
        let stream = match self.streams.get_mut(&(node.clone(), kind)) {
            Some(s) => s,
            None => self.streams.entry((node.clone(), kind)).or_default(),
        };
        let mark = match (&mut stream.current, &mut stream.previous) {
            (Some(c), _) if c.boot == boot => c,
            (_, Some(p)) if p.boot == boot => p,
            _ => {
                // A new boot. The first message seen of it sets the mark: numbers
                // before it are not counted as lost, as they may predate this
                // coordinator (or the bus's retention).
                stream.previous = stream.current.take();
                stream.current = Some(Boot { boot, highest: seq });
                return Verdict::New { lost: 0 };
            }
        };
        if seq <= mark.highest {
            return Verdict::Repeat;
        }
        let lost = seq - mark.highest - 1;
        mark.highest = seq;
        Verdict::New { lost }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    #[test]
    fn repeats_are_dropped_and_gaps_counted() {
        let mut d = Dedup::default();
        let a = n("a");
        assert_eq!(d.admit(&a, Kind::Host, 7, 1), Verdict::New { lost: 0 });
        assert_eq!(d.admit(&a, Kind::Host, 7, 2), Verdict::New { lost: 0 });
        assert_eq!(d.admit(&a, Kind::Host, 7, 2), Verdict::Repeat);
        assert_eq!(d.admit(&a, Kind::Host, 7, 1), Verdict::Repeat);
        assert_eq!(d.admit(&a, Kind::Host, 7, 6), Verdict::New { lost: 3 });
        // Streams are per node and kind.
        assert_eq!(d.admit(&a, Kind::Container, 7, 1), Verdict::New { lost: 0 });
        assert_eq!(d.admit(&n("b"), Kind::Host, 7, 1), Verdict::New { lost: 0 });
    }

    #[test]
    fn a_restart_starts_a_new_count_and_old_stragglers_stay_repeats() {
        let mut d = Dedup::default();
        let a = n("a");
        for seq in 1..=5 {
            d.admit(&a, Kind::Host, 1, seq);
        }
        assert_eq!(d.admit(&a, Kind::Host, 2, 1), Verdict::New { lost: 0 });
        assert_eq!(d.admit(&a, Kind::Host, 1, 4), Verdict::Repeat, "a resend from the previous boot");
        assert_eq!(d.admit(&a, Kind::Host, 1, 6), Verdict::New { lost: 0 }, "the previous boot's last words still count");
        assert_eq!(d.admit(&a, Kind::Host, 2, 2), Verdict::New { lost: 0 });
    }

    #[test]
    fn a_first_message_mid_stream_is_not_loss() {
        let mut d = Dedup::default();
        assert_eq!(d.admit(&n("a"), Kind::Event, 3, 900), Verdict::New { lost: 0 });
    }
}
