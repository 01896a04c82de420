//! The publisher: a node's figures and instance events, as versioned bus messages
//! (`sluice_common::wire`), used by agents and by coordinators' gateways.
//!
//! `Publisher` numbers and encodes each message and queues it in one of two
//! outboxes: `samples` (host, container and gateway figures, frequent, the first
//! to be dropped when a link stays down) and `events` (instance lifecycle, rare,
//! with room of their own so a long outage of samples cannot crowd them out).
//! Each outbox has its own delivery task, so a stream's order holds and one
//! stream's backlog does not hold up the other.

use crate::outbox::{self, Outbox, OutboxLimits};
use crate::{Message, MetricsBus, Topic};
use bytes::Bytes;
use sluice_common::backoff::{self, Backoff};
use sluice_common::wire::{self, Body, Event, EventKind, Kind};
use sluice_common::{Clock, FunctionName, InstanceId, NodeId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Sizes of the outboxes and of the delivery window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherConfig {
    pub samples: OutboxLimits,
    pub events: OutboxLimits,
    /// Messages sent ahead of their acknowledgement, per outbox.
    pub window: usize,
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        // At one host and one container message a second, 8 MiB holds about an
        // hour of a 50-container node's figures (a container message is ~10 KiB).
        Self {
            samples: OutboxLimits { max_messages: 20_000, max_bytes: 8 << 20 },
            events: OutboxLimits { max_messages: 10_000, max_bytes: 2 << 20 },
            window: 64,
            retry_base: Duration::from_millis(200),
            retry_cap: Duration::from_secs(10),
        }
    }
}

/// Where a node's messages are numbered, encoded and queued.
pub struct Publisher {
    node: NodeId,
    /// Distinguishes this process's sequence numbers from a previous run's.
    boot: u64,
    /// The last sequence number used, per kind.
    seq: [AtomicU64; 4],
    samples: Arc<Outbox>,
    events: Arc<Outbox>,
    clock: Arc<dyn Clock>,
    config: PublisherConfig,
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Host => 0,
        Kind::Container => 1,
        Kind::Gateway => 2,
        Kind::Event => 3,
    }
}

/// The bus topic a wire kind travels on.
pub fn topic_of(kind: Kind) -> Topic {
    match kind {
        Kind::Host => Topic::Host,
        Kind::Container => Topic::Container,
        Kind::Gateway => Topic::Gateway,
        Kind::Event => Topic::Event,
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("node", &self.node).field("boot", &self.boot).finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(node: NodeId, clock: Arc<dyn Clock>, config: PublisherConfig) -> Arc<Self> {
        let boot = backoff::seed(&[node.as_str().as_bytes(), &clock.now().millis().to_le_bytes(), &std::process::id().to_le_bytes()]);
        Arc::new(Self { node, boot, seq: Default::default(), samples: Outbox::new("samples", config.samples), events: Outbox::new("events", config.events), clock, config })
    }

    /// Queues `body`, taken at `ts_ms`, as the next message of its kind.
    pub fn send<B: Body>(&self, ts_ms: u64, body: &B) -> Message {
        let seq = self.seq[slot(B::KIND)].fetch_add(1, Ordering::Relaxed) + 1;
        let payload = wire::encode(&self.node, self.boot, seq, ts_ms, body);
        let msg = Message { topic: topic_of(B::KIND), key: self.node.to_string(), payload: Bytes::from(payload) };
        match B::KIND {
            Kind::Event => self.events.push(msg.clone()),
            _ => self.samples.push(msg.clone()),
        }
        msg
    }

    /// Queues an instance event, stamped now.
    pub fn event(&self, kind: EventKind, instance: InstanceId, function: &FunctionName, detail: Option<String>) {
        let event = Event { kind, instance, function: function.clone(), detail };
        self.send(self.clock.now().millis(), &event);
    }

    /// Starts one delivery task per outbox on `bus`; abort them to stop.
    pub fn deliver_to(&self, bus: Arc<dyn MetricsBus>) -> Vec<JoinHandle<()>> {
        let c = &self.config;
        [(&self.samples, 1), (&self.events, 2)]
            .into_iter()
            .map(|(outbox, n)| {
                let backoff = Backoff::new(c.retry_base, c.retry_cap, self.boot.rotate_left(n * 8));
                tokio::spawn(outbox::deliver(outbox.clone(), bus.clone(), c.window, backoff))
            })
            .collect()
    }

    /// The samples outbox (for tests and reporting).
    pub fn samples(&self) -> &Arc<Outbox> {
        &self.samples
    }

    pub fn events(&self) -> &Arc<Outbox> {
        &self.events
    }

    /// Prometheus text for both outboxes.
    pub fn render(&self, out: &mut String) {
        outbox::render(&[&self.samples, &self.events], out);
    }
}
