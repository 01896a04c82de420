//! Ingest: messages from the metrics bus into the windows.
//!
//! Each coordinator reads every message in a consumer group of its own
//! (`sluice-coordinator-<id>`), so every one holds full windows and a new leader
//! decides on the same figures at once. A message is decoded (`wire`), repeats
//! are dropped by sequence number (`dedup`), its figures become samples in the
//! windows (`record_*`, pure), and only then is it marked processed, so a crash
//! between the two reads it again rather than losing it.

mod dedup;

use crate::windows::{Scope, SeriesKind, Windows};
use dedup::{Dedup, Verdict};
use sluice_bus::{MetricsBus, Received, Topic};
use sluice_common::metrics::{header, sample};
use sluice_common::wire::{self, Body, ContainerBatch, DecodeError, Envelope, Event, GatewayBatch, HostFigures, Kind};
use sluice_common::{Clock, FunctionName, Timestamp};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};

/// How many recent instance events are kept for the API.
const RECENT_EVENTS: usize = 1000;

/// The coordinator's windows and what its ingest has seen, shared with the API.
pub struct Telemetry {
    pub windows: Mutex<Windows>,
    events: Mutex<VecDeque<Envelope<Event>>>,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    messages: [AtomicU64; 4],
    repeats: AtomicU64,
    lost: AtomicU64,
    malformed: AtomicU64,
    version: AtomicU64,
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Host => 0,
        Kind::Container => 1,
        Kind::Gateway => 2,
        Kind::Event => 3,
    }
}

impl Telemetry {
    pub fn new(windows: Windows) -> Arc<Self> {
        Arc::new(Self { windows: Mutex::new(windows), events: Mutex::default(), counters: Counters::default() })
    }

    pub fn windows(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().expect("windows lock poisoned")
    }

    /// The latest instance events, newest last.
    pub fn recent_events(&self, limit: usize) -> Vec<Envelope<Event>> {
        let events = self.events.lock().expect("events lock poisoned");
        events.iter().skip(events.len().saturating_sub(limit)).cloned().collect()
    }

    /// Messages lost upstream (gaps in sequence numbers) so far.
    pub fn lost(&self) -> u64 {
        self.counters.lost.load(Ordering::Relaxed)
    }

    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        let c = &self.counters;
        header(out, "sluice_ingest_messages_total", "counter", "Metrics bus messages taken into the windows, by kind.");
        for kind in [Kind::Host, Kind::Container, Kind::Gateway, Kind::Event] {
            sample(out, "sluice_ingest_messages_total", &format!("kind=\"{}\"", kind.as_str()), c.messages[slot(kind)].load(Ordering::Relaxed));
        }
        header(out, "sluice_ingest_rejected_total", "counter", "Messages not taken in, by reason.");
        for (reason, n) in [("repeat", &c.repeats), ("malformed", &c.malformed), ("version", &c.version)] {
            sample(out, "sluice_ingest_rejected_total", &format!("reason=\"{reason}\""), n.load(Ordering::Relaxed));
        }
        header(out, "sluice_ingest_lost_total", "counter", "Messages missing from publishers' sequences (dropped by a full outbox or the bus).");
        sample(out, "sluice_ingest_lost_total", "", c.lost.load(Ordering::Relaxed));
        self.windows().render(out);
    }
}

/// Reads `bus` into `telemetry` as consumer group `group` until `shutdown`,
/// resubscribing after errors.
pub async fn run(bus: Arc<dyn MetricsBus>, group: String, telemetry: Arc<Telemetry>, clock: Arc<dyn Clock>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut ingestor = Ingestor::new(telemetry.clone());
    let mut expired_at = clock.now();
    loop {
        let subscribed = tokio::select! {
            s = bus.subscribe(&group, &[Topic::Host, Topic::Container, Topic::Gateway, Topic::Event]) => s,
            () = &mut shutdown => return,
        };
        let mut sub = match subscribed {
            Ok(sub) => sub,
            Err(e) => {
                warn!(bus = bus.name(), error = %e, "cannot subscribe to the metrics bus; retrying in 2 s");
                tokio::select! { () = tokio::time::sleep(Duration::from_secs(2)) => continue, () = &mut shutdown => return }
            }
        };
        info!(bus = bus.name(), group = %group, "reading the metrics bus into the windows");
        loop {
            let next = tokio::select! { r = sub.next() => r, () = &mut shutdown => return };
            let received = match next {
                Ok(r) => r,
                Err(e) => {
                    warn!(bus = bus.name(), error = %e, "metrics bus subscription failed; subscribing again");
                    break;
                }
            };
            let now = clock.now();
            ingestor.take(&received, now);
            if let Err(e) = sub.processed(&received) {
                debug!(error = %e, "could not mark a message processed; it may be read again");
            }
            if now.since(expired_at) >= Duration::from_secs(60) {
                telemetry.windows().expire(now);
                expired_at = now;
            }
        }
    }
}

/// Takes messages into a `Telemetry`, dropping repeats.
pub struct Ingestor {
    telemetry: Arc<Telemetry>,
    dedup: Dedup,
}

impl Ingestor {
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Self { telemetry, dedup: Dedup::default() }
    }

    /// Takes one message in; `now` bounds how far ahead its time may be.
    pub fn take(&mut self, received: &Received, now: Timestamp) {
        ingest(&self.telemetry, &mut self.dedup, received, now);
    }
}

fn ingest(t: &Telemetry, dedup: &mut Dedup, received: &Received, now: Timestamp) {
    let c = &t.counters;
    let outcome = match received.topic {
        Topic::Host => admit::<HostFigures>(t, dedup, received, |w, e| record_host(w, e, now)),
        Topic::Container => admit::<ContainerBatch>(t, dedup, received, |w, e| record_containers(w, e, now)),
        Topic::Gateway => admit::<GatewayBatch>(t, dedup, received, |w, e| record_gateway(w, e, now)),
        Topic::Event => admit::<Event>(t, dedup, received, |_, e| {
            let mut events = t.events.lock().expect("events lock poisoned");
            if events.len() == RECENT_EVENTS {
                events.pop_front();
            }
            events.push_back(e.clone());
        }),
    };
    if let Err(e) = outcome {
        match e {
            DecodeError::Version(_) => c.version.fetch_add(1, Ordering::Relaxed),
            _ => c.malformed.fetch_add(1, Ordering::Relaxed),
        };
        debug!(topic = ?received.topic, key = %received.key, error = %e, "skipped a metrics message");
    }
}

fn admit<B: Body>(t: &Telemetry, dedup: &mut Dedup, received: &Received, take: impl FnOnce(&mut Windows, &Envelope<B>)) -> Result<(), DecodeError> {
    let envelope = wire::decode::<B>(&received.payload)?;
    let c = &t.counters;
    match dedup.admit(&envelope.node, B::KIND, envelope.boot, envelope.seq) {
        Verdict::Repeat => {
            c.repeats.fetch_add(1, Ordering::Relaxed);
        }
        Verdict::New { lost } => {
            c.lost.fetch_add(lost, Ordering::Relaxed);
            c.messages[slot(B::KIND)].fetch_add(1, Ordering::Relaxed);
            take(&mut t.windows(), &envelope);
        }
    }
    Ok(())
}

/// A host message as node samples.
pub fn record_host(w: &mut Windows, e: &Envelope<HostFigures>, now: Timestamp) {
    let (scope, ts, h) = (Scope::Node(e.node.clone()), Timestamp(e.ts_ms), &e.body);
    let memory_percent = if h.memory_total_bytes > 0 { 100.0 * h.memory_used_bytes as f64 / h.memory_total_bytes as f64 } else { 0.0 };
    let gauges: [(&'static str, f64); 9] = [
        ("cpu_percent", f64::from(h.cpu_percent)),
        ("memory_used_bytes", h.memory_used_bytes as f64),
        ("memory_used_percent", memory_percent),
        ("swap_used_bytes", h.swap_used_bytes as f64),
        ("load1", h.load[0]),
        ("disk_read_bytes_per_sec", h.disk_read_bytes_per_sec),
        ("disk_write_bytes_per_sec", h.disk_write_bytes_per_sec),
        ("net_rx_bytes_per_sec", h.net_rx_bytes_per_sec),
        ("net_tx_bytes_per_sec", h.net_tx_bytes_per_sec),
    ];
    for (metric, value) in gauges {
        w.record(&scope, metric, SeriesKind::Gauge, None, ts, value, now);
    }
}

/// A container message as instance samples.
pub fn record_containers(w: &mut Windows, e: &Envelope<ContainerBatch>, now: Timestamp) {
    let ts = Timestamp(e.ts_ms);
    for c in &e.body.containers {
        let scope = Scope::Instance(c.instance);
        let mut gauges: Vec<(&'static str, f64)> = vec![
            ("memory_used_bytes", c.memory_used_bytes as f64),
            ("net_rx_bytes_per_sec", c.net_rx_bytes_per_sec),
            ("net_tx_bytes_per_sec", c.net_tx_bytes_per_sec),
            ("block_read_bytes_per_sec", c.block_read_bytes_per_sec),
            ("block_write_bytes_per_sec", c.block_write_bytes_per_sec),
            ("pids", c.pids as f64),
        ];
        if let Some(cpu) = c.cpu_percent {
            gauges.push(("cpu_percent", cpu));
        }
        if let Some(limit) = c.memory_limit_bytes.filter(|l| *l > 0) {
            gauges.push(("memory_used_percent", 100.0 * c.memory_used_bytes as f64 / limit as f64));
        }
        for (metric, value) in gauges {
            w.record(&scope, metric, SeriesKind::Gauge, Some(&c.function), ts, value, now);
        }
    }
}

/// A gateway message as per-gateway, per-function samples.
pub fn record_gateway(w: &mut Windows, e: &Envelope<GatewayBatch>, now: Timestamp) {
    let ts = Timestamp(e.ts_ms);
    for f in &e.body.functions {
        let scope = Scope::Gateway(e.node.clone(), f.function.clone());
        let counters: [(&'static str, u64); 6] = [
            ("requests_total", f.requests_total),
            ("responses_2xx_total", f.responses_2xx_total),
            ("responses_4xx_total", f.responses_4xx_total),
            ("responses_5xx_total", f.responses_5xx_total),
            ("cold_starts_total", f.cold_starts_total),
            ("shed_total", f.shed_total),
        ];
        for (metric, value) in counters {
            w.record(&scope, metric, SeriesKind::Counter, Some(&f.function), ts, value as f64, now);
        }
        w.record(&scope, "in_flight", SeriesKind::Gauge, Some(&f.function), ts, f64::from(f.in_flight), now);
        w.record(&scope, "queued", SeriesKind::Gauge, Some(&f.function), ts, f64::from(f.queued), now);
        if let Some(p95) = f.latency_p95_seconds {
            w.record(&scope, "latency_p95_seconds", SeriesKind::Gauge, Some(&f.function), ts, p95, now);
        }
    }
}

/// The scopes that make up a function: its instances and its gateways.
pub fn function_scopes(w: &Windows, function: &FunctionName) -> (Vec<Scope>, Vec<Scope>) {
    let instances = w.instances_of(function).into_iter().map(Scope::Instance).collect();
    let gateways = w.gateways_of(function).into_iter().map(|n| Scope::Gateway(n, function.clone())).collect();
    (instances, gateways)
}
