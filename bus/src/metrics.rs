//! Counters every bus keeps (published, acknowledged, failed, received), in Prometheus text.

use crate::{Ack, BusError};
use futures_util::FutureExt;
use sluice_common::metrics::{header, sample};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One bus's counters; shared by the bus and its subscriptions.
#[derive(Debug)]
pub struct BusMetrics {
    bus: &'static str,
    published: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    received: AtomicU64,
}

impl BusMetrics {
    pub(crate) fn new(bus: &'static str) -> Arc<Self> {
        Arc::new(BusMetrics { bus, published: AtomicU64::new(0), acked: AtomicU64::new(0), failed: AtomicU64::new(0), received: AtomicU64::new(0) })
    }

    /// Messages accepted into the bus's send queue.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Publishes whose ack resolved Ok.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Publishes refused at once or whose ack resolved to an error.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Messages handed to subscriptions.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Writes the counters, labelled with the bus's name.
    pub fn render(&self, out: &mut String) {
        let label = format!("bus=\"{}\"", self.bus);
        for (name, help, value) in [
            ("sluice_bus_published_total", "Messages queued for the metrics bus.", self.published()),
            ("sluice_bus_acked_total", "Published messages the broker took responsibility for.", self.acked()),
            ("sluice_bus_failed_total", "Publishes refused or not acknowledged in time.", self.failed()),
            ("sluice_bus_received_total", "Messages delivered to subscriptions.", self.received()),
        ] {
            header(out, name, "counter", help);
            sample(out, name, &label, value);
        }
    }

    /// The ack of a publish the bus queued, counted when it resolves.
    pub(crate) fn track(self: &Arc<Self>, ack: impl Future<Output = Result<(), BusError>> + Send + 'static) -> Ack {
        self.published.fetch_add(1, Ordering::Relaxed);
        let metrics = self.clone();
        async move {
            let result = ack.await;
            let counter = if result.is_ok() { &metrics.acked } else { &metrics.failed };
            counter.fetch_add(1, Ordering::Relaxed);
            result
        }
        .boxed()
    }

    /// The ack of a publish refused before it was queued.
    pub(crate) fn refuse(&self, error: BusError) -> Ack {
        self.failed.fetch_add(1, Ordering::Relaxed);
        futures_util::future::ready(Err(error)).boxed()
    }

    pub(crate) fn count_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acks_are_counted_when_they_resolve() {
        let m = BusMetrics::new("test");
        let ok = m.track(async { Ok(()) });
        let failed = m.track(async { Err(BusError::Timeout) });
        assert_eq!((m.published(), m.acked()), (2, 0));
        ok.await.unwrap();
        failed.await.unwrap_err();
        m.refuse(BusError::Closed).await.unwrap_err();
        m.count_received();
        assert_eq!((m.published(), m.acked(), m.failed(), m.received()), (2, 1, 2, 1));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("sluice_bus_failed_total{bus=\"test\"} 2\n"), "{out}");
        assert!(out.contains("# TYPE sluice_bus_received_total counter\n"), "{out}");
    }
}
