//! Broker outages: one log line when one begins and one when it ends (not one per
//! reconnect attempt), and the capped, jittered backoff between attempts.

use crate::BrokerKind;
use sluice_common::backoff::{seed, Backoff};
use std::fmt::Display;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};
use tracing::{info, warn};

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The connection state of one client of one broker.
#[derive(Debug)]
pub(crate) struct Outage {
    kind: BrokerKind,
    addr: String,
    /// Which connection this is (the publisher, or a group's subscription).
    client: String,
    down_since: Option<Instant>,
    backoff: Backoff,
}

impl Outage {
    pub(crate) fn new(kind: BrokerKind, addr: &str, client: &str) -> Self {
        // Jittered per process and client, so a fleet does not reconnect in lockstep after a broker restart.
        let random = RandomState::new().hash_one(client).to_le_bytes();
        let backoff = Backoff::new(FIRST_RETRY, MAX_RETRY, seed(&[client.as_bytes(), &random]));
        Outage { kind, addr: addr.to_string(), client: client.to_string(), down_since: None, backoff }
    }

    /// Records a failed connection or attempt; returns how long to wait before the next.
    pub(crate) fn down(&mut self, error: &dyn Display) -> Duration {
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            warn!(broker = %self.kind, addr = %self.addr, client = %self.client, error = %error, "cannot reach the broker; retrying in the background (logged once per outage)");
        }
        self.backoff.next_delay()
    }

    /// Records a working connection.
    pub(crate) fn up(&mut self) {
        if let Some(since) = self.down_since.take() {
            info!(broker = %self.kind, addr = %self.addr, client = %self.client, down_ms = since.elapsed().as_millis() as u64, "broker reachable again");
        }
        self.backoff.reset();
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut o = Outage::new(BrokerKind::Mqtt, "127.0.0.1:1", "test");
        let delays: Vec<_> = (0..8).map(|_| o.down(&"refused")).collect();
        assert!(delays[0] <= FIRST_RETRY, "{delays:?}");
        assert!(delays[7] >= MAX_RETRY / 2 && delays[7] <= MAX_RETRY, "{delays:?}");
        assert!(o.is_down());
        o.up();
        assert!(!o.is_down());
        assert!(o.down(&"refused") <= FIRST_RETRY);
    }
}
