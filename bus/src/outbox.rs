//! The outbox: messages made but not yet acknowledged by the bus.
//!
//! Edge links fail for minutes at a time. Messages wait here oldest first,
//! bounded in count and bytes so the agent's memory stays flat; when full, the
//! oldest is dropped and counted, because for scaling a recent figure is worth
//! more than an old one. One delivery task sends in order with up to `window`
//! unacknowledged at once. On a failure everything unacknowledged goes back to
//! the front, in order, and is sent again after a backoff: a consumer may see a
//! message twice (it drops repeats by sequence number) but never out of order.

use crate::{Ack, Message, MetricsBus};
use sluice_common::backoff::Backoff;
use sluice_common::metrics::{header, sample};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;
use tracing::{info, warn};

/// How much an outbox may hold before it drops its oldest messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

/// A bounded, ordered queue of messages waiting for the bus.
#[derive(Debug)]
pub struct Outbox {
    /// Names the outbox in logs and metrics ("samples", "events").
    name: &'static str,
    limits: OutboxLimits,
    queue: Mutex<Queue>,
    wake: Notify,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Message>,
    /// Payload bytes of `messages`.
    bytes: usize,
}

#[derive(Debug, Default)]
struct Counters {
    pushed: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    /// Publishes the bus failed (each is retried).
    failed: AtomicU64,
    in_flight: AtomicU64,
}

impl Outbox {
    pub fn new(name: &'static str, limits: OutboxLimits) -> Arc<Self> {
        Arc::new(Self { name, limits, queue: Mutex::default(), wake: Notify::new(), counters: Counters::default() })
    }

    /// Queues `msg` behind the others, dropping the oldest if over the limits.
    pub fn push(&self, msg: Message) {
        let mut q = self.lock();
        q.bytes += msg.payload.len();
        q.messages.push_back(msg);
        self.counters.pushed.fetch_add(1, Ordering::Relaxed);
        self.trim(&mut q);
        drop(q);
        self.wake.notify_one();
    }

    /// Messages waiting (not counting those in flight).
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Messages the bus acknowledged.
    pub fn delivered(&self) -> u64 {
        self.counters.delivered.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().expect("outbox lock poisoned")
    }

    /// Drops the oldest waiting messages past the limits. Messages in flight count
    /// against the message limit too (they are held in memory until acknowledged)
    /// but are never dropped: they may already be at the broker.
    fn trim(&self, q: &mut Queue) {
        let in_flight = self.counters.in_flight.load(Ordering::Relaxed) as usize;
        while q.messages.len() + in_flight > self.limits.max_messages || (q.bytes > self.limits.max_bytes && q.messages.len() > 1) {
            let Some(old) = q.messages.pop_front() else { break };
            q.bytes -= old.payload.len();
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn pop(&self) -> Option<Message> {
        let mut q = self.lock();
        let msg = q.messages.pop_front()?;
        q.bytes -= msg.payload.len();
        Some(msg)
    }

    /// Puts unacknowledged messages back at the front, oldest first.
    fn requeue(&self, unacked: impl DoubleEndedIterator<Item = Message>) {
        let mut q = self.lock();
        for msg in unacked.rev() {
            q.bytes += msg.payload.len();
            q.messages.push_front(msg);
        }
        self.trim(&mut q);
    }
}

/// Prometheus text for `outboxes`, one family per figure with a row per outbox.
pub fn render(outboxes: &[&Outbox], out: &mut String) {
    type Figure = fn(&Outbox) -> u64;
    let families: [(&str, &str, &str, Figure); 7] = [
        ("sluice_agent_outbox_messages", "gauge", "Messages waiting for the metrics bus.", |o| o.lock().messages.len() as u64),
        ("sluice_agent_outbox_bytes", "gauge", "Payload bytes waiting for the metrics bus.", |o| o.lock().bytes as u64),
        ("sluice_agent_outbox_in_flight", "gauge", "Messages sent and not yet acknowledged.", |o| o.counters.in_flight.load(Ordering::Relaxed)),
        ("sluice_agent_outbox_pushed_total", "counter", "Messages queued for the metrics bus.", |o| o.counters.pushed.load(Ordering::Relaxed)),
        ("sluice_agent_outbox_delivered_total", "counter", "Messages the metrics bus acknowledged.", |o| o.counters.delivered.load(Ordering::Relaxed)),
        ("sluice_agent_outbox_dropped_total", "counter", "Oldest messages dropped because the outbox was full (the bus was unreachable too long).", |o| {
            o.counters.dropped.load(Ordering::Relaxed)
        }),
        ("sluice_agent_outbox_failed_total", "counter", "Publishes the bus failed; each was queued again.", |o| o.counters.failed.load(Ordering::Relaxed)),
    ];
    for (name, kind, help, figure) in families {
        header(out, name, kind, help);
        for o in outboxes {
            sample(out, name, &format!("outbox=\"{}\"", o.name), figure(o));
        }
    }
}

/// Sends `outbox`'s messages on `bus` in order, forever (abort the task to stop).
pub async fn deliver(outbox: Arc<Outbox>, bus: Arc<dyn MetricsBus>, window: usize, mut backoff: Backoff) {
    // The window is part of the outbox's bound, so it cannot be larger.
    let window = window.clamp(1, outbox.limits.max_messages.max(1));
    let mut in_flight: VecDeque<(Message, Ack)> = VecDeque::with_capacity(window);
    // Set while the bus fails: when the outage began, to log it once and its end once.
    let mut outage: Option<Instant> = None;
    loop {
        while in_flight.len() < window {
            let Some(msg) = outbox.pop() else { break };
            let ack = bus.publish(msg.clone());
            in_flight.push_back((msg, ack));
            outbox.counters.in_flight.store(in_flight.len() as u64, Ordering::Relaxed);
        }
        let room = in_flight.len() < window;
        let Some((_, ack)) = in_flight.front_mut() else {
            outbox.wake.notified().await;
            continue;
        };
        let result = tokio::select! {
            r = ack => r,
            // Room in the window and something new: send it alongside.
            () = outbox.wake.notified(), if room => continue,
        };
        match result {
            Ok(()) => {
                in_flight.pop_front();
                outbox.counters.in_flight.store(in_flight.len() as u64, Ordering::Relaxed);
                outbox.counters.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(since) = outage.take() {
                    info!(
                        outbox = outbox.name,
                        bus = bus.name(),
                        down_for_ms = since.elapsed().as_millis() as u64,
                        backlog = outbox.len(),
                        dropped_total = outbox.dropped(),
                        "metrics bus reachable again; sending the backlog in order"
                    );
                }
                backoff.reset();
            }
            Err(e) => {
                outbox.counters.failed.fetch_add(1, Ordering::Relaxed);
                let unacked: Vec<Message> = in_flight.drain(..).map(|(m, _)| m).collect();
                outbox.counters.in_flight.store(0, Ordering::Relaxed);
                outbox.requeue(unacked.into_iter());
                if outage.is_none() {
                    outage = Some(Instant::now());
                    warn!(outbox = outbox.name, bus = bus.name(), error = %e, queued = outbox.len(), "metrics bus unreachable; keeping messages (oldest dropped past the outbox limits) until it is back");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BusError, InProcessBus, Topic};
    use bytes::Bytes;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    fn msg(n: usize) -> Message {
        Message { topic: Topic::Host, key: "n1".into(), payload: Bytes::from(n.to_string().into_bytes()) }
    }

    fn limits(max_messages: usize) -> OutboxLimits {
        OutboxLimits { max_messages, max_bytes: 1 << 20 }
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts() {
        let outbox = Outbox::new("samples", limits(3));
        for n in 0..5 {
            outbox.push(msg(n));
        }
        assert_eq!(outbox.dropped(), 2);
        let kept: Vec<_> = std::iter::from_fn(|| outbox.pop()).map(|m| m.payload).collect();
        assert_eq!(kept, [&b"2"[..], b"3", b"4"].map(Bytes::from_static));
    }

    #[test]
    fn the_byte_limit_holds_too() {
        let outbox = Outbox::new("samples", OutboxLimits { max_messages: 100, max_bytes: 10 });
        for _ in 0..4 {
            outbox.push(Message { topic: Topic::Host, key: "n1".into(), payload: Bytes::from_static(b"abcd") });
        }
        assert_eq!((outbox.len(), outbox.dropped()), (2, 2));
    }

    /// A bus that fails every publish while `down` is set, and otherwise hands
    /// messages to an in-process bus.
    struct Flaky {
        down: AtomicBool,
        inner: Arc<InProcessBus>,
    }

    #[async_trait::async_trait]
    impl MetricsBus for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn publish(&self, msg: Message) -> Ack {
            if self.down.load(Ordering::SeqCst) {
                return Box::pin(async { Err(BusError::Timeout) });
            }
            self.inner.publish(msg)
        }
        async fn subscribe(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn crate::Subscription>, BusError> {
            self.inner.subscribe(group, topics).await
        }
    }

    #[tokio::test]
    async fn an_outage_keeps_order_and_loses_only_what_overflowed() {
        let inner = Arc::new(InProcessBus::new());
        let mut sub = inner.subscribe("coordinator", &[Topic::Host]).await.unwrap();
        let bus = Arc::new(Flaky { down: AtomicBool::new(true), inner });
        let outbox = Outbox::new("samples", limits(50));
        let task = tokio::spawn(deliver(outbox.clone(), bus.clone(), 8, Backoff::new(Duration::from_millis(1), Duration::from_millis(5), 1)));
        for n in 0..80 {
            outbox.push(msg(n));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(outbox.delivered(), 0, "nothing gets through while the bus is down");
        bus.down.store(false, Ordering::SeqCst);
        let mut got = Vec::new();
        while got.len() < 50 {
            let r = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.expect("backlog arrives").unwrap();
            got.push(String::from_utf8(r.payload.to_vec()).unwrap().parse::<usize>().unwrap());
        }
        task.abort();
        // The 30 oldest overflowed; the rest arrive in order, each once.
        assert_eq!(got, (30..80).collect::<Vec<_>>());
        assert_eq!(outbox.dropped(), 30);
    }
}
