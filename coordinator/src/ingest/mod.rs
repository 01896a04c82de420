//! Ingest: messages from the metrics bus into the windows.
//!
//! Each coordinator reads every message in a consumer group of its own
//! (`sluice-coordinator-<id>`), so every one holds full windows and a new leader
//! decides on the same figures at once. A message is decoded (`wire`), repeats
//! are dropped by sequence number (`dedup`), its figures become samples in the
//! windows (`record_*`, pure) and gateways' instance figures become activity,
//! and only then is it marked processed, so a crash between the two reads it
//! again rather than losing it.
//!
//! A coordinator's own gateway figures are also taken in directly when they
//! are published (`Telemetry::take`), and their copy from the bus is then a
//! repeat: the leader sees its own gateway's waiting requests at once. A
//! gateway message with waiting requests wakes the controller (`demand`).

mod dedup;

use crate::decide::calls::CallGraph;
use crate::decide::load::Activity;
use crate::timeline::Timeline;
use crate::windows::{Metric, Scope, Windows};
use dedup::{Dedup, Verdict};
use sluice_bus::{MetricsBus, Topic};
use sluice_common::metrics::{header, sample};
use sluice_common::wire::{self, Body, ContainerBatch, DecodeError, Envelope, Event, GatewayBatch, HostFigures, Kind};
use sluice_common::{Clock, FunctionName, Timestamp};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

/// How many recent instance events are kept for the API.
const RECENT_EVENTS: usize = 1000;

/// Instances no gateway has mentioned for this long are forgotten.
const ACTIVITY_HORIZON: Duration = Duration::from_secs(120);
/// Calls between functions not seen for this long are forgotten.
pub const CALLS_HORIZON: Duration = Duration::from_secs(600);

/// The coordinator's windows and what its ingest has seen, shared with the
/// API and the controller.
pub struct Telemetry {
    pub windows: Mutex<Windows>,
    activity: Mutex<Activity>,
    calls: Mutex<CallGraph>,
    events: Mutex<VecDeque<Envelope<Event>>>,
    dedup: Mutex<Dedup>,
    counters: Counters,
    /// When the first message was taken in: how much history the windows hold.
    first_at: Mutex<Option<Timestamp>>,
    /// Woken when a gateway reports waiting requests: an instance is wanted now.
    pub demand: Notify,
    /// Each function's instance counts over time, sampled by the control loop
    /// (kept here, beside the windows it mirrors, so the API reads both).
    timeline: Mutex<Timeline>,
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
        Arc::new(Self {
            timeline: Mutex::new(Timeline::new(windows.config())),
            windows: Mutex::new(windows),
            activity: Mutex::default(),
            calls: Mutex::default(),
            events: Mutex::default(),
            dedup: Mutex::default(),
            counters: Counters::default(),
            first_at: Mutex::new(None),
            demand: Notify::new(),
        })
    }

    pub fn windows(&self) -> MutexGuard<'_, Windows> {
        self.windows.lock().expect("windows lock poisoned")
    }

    pub fn activity(&self) -> MutexGuard<'_, Activity> {
        self.activity.lock().expect("activity lock poisoned")
    }

    /// Taken after the windows when both are held, as everywhere.
    pub fn timeline(&self) -> MutexGuard<'_, Timeline> {
        self.timeline.lock().expect("timeline lock poisoned")
    }

    /// Who calls whom, as the gateways saw it.
    pub fn calls(&self) -> MutexGuard<'_, CallGraph> {
        self.calls.lock().expect("calls lock poisoned")
    }

    /// When the windows began to fill (the first message taken in), if they have.
    pub fn history_from(&self) -> Option<Timestamp> {
        *self.first_at.lock().expect("first_at lock poisoned")
    }

    /// Takes one message in (from the bus, or straight from this coordinator's
    /// own gateway); `now` bounds how far ahead its time may be.
    pub fn take(&self, topic: Topic, payload: &[u8], now: Timestamp) {
        self.first_at.lock().expect("first_at lock poisoned").get_or_insert(now);
        ingest(self, topic, payload, now);
    }

    /// Drops what has gone quiet (series past the coarse ring, instances no
    /// gateway mentions).
    pub fn expire(&self, now: Timestamp) {
        self.windows().expire(now);
        self.activity().expire(now, ACTIVITY_HORIZON);
        self.calls().expire(now, CALLS_HORIZON);
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
            telemetry.take(received.topic, &received.payload, now);
            if let Err(e) = sub.processed(&received) {
                debug!(error = %e, "could not mark a message processed; it may be read again");
            }
            if now.since(expired_at) >= Duration::from_secs(60) {
                telemetry.expire(now);
                expired_at = now;
            }
        }
    }
}

fn ingest(t: &Telemetry, topic: Topic, payload: &[u8], now: Timestamp) {
    let c = &t.counters;
    let outcome = match topic {
        Topic::Host => admit::<HostFigures>(t, payload, |w, e| record_host(w, e, now)),
        Topic::Container => admit::<ContainerBatch>(t, payload, |w, e| record_containers(w, e, now)),
        Topic::Gateway => admit::<GatewayBatch>(t, payload, |w, e| {
            record_gateway(w, e, now);
            for f in &e.body.functions {
                t.activity().record(&e.node, Timestamp(e.ts_ms), &f.instances);
            }
            if !e.body.calls.is_empty() {
                t.calls().record(&e.node, Timestamp(e.ts_ms), &e.body.calls);
            }
            if e.body.functions.iter().any(|f| f.queued > 0) {
                t.demand.notify_one();
            }
        }),
        Topic::Event => admit::<Event>(t, payload, |_, e| {
            let mut events = t.events.lock().expect("events lock poisoned");
            if events.len() == RECENT_EVENTS {
                events.pop_front();
            }
            events.push_back(e.clone());
        }),
        // Not metrics: the invocations module reads these, and this group never subscribes to them.
        Topic::Invocation | Topic::InvocationState | Topic::DeadLetter => return,
    };
    if let Err(e) = outcome {
        match e {
            DecodeError::Version(_) => c.version.fetch_add(1, Ordering::Relaxed),
            _ => c.malformed.fetch_add(1, Ordering::Relaxed),
        };
        debug!(topic = ?topic, error = %e, "skipped a metrics message");
    }
}

fn admit<B: Body>(t: &Telemetry, payload: &[u8], take: impl FnOnce(&mut Windows, &Envelope<B>)) -> Result<(), DecodeError> {
    let envelope = wire::decode::<B>(payload)?;
    let c = &t.counters;
    let verdict = t.dedup.lock().expect("dedup lock poisoned").admit(&envelope.node, B::KIND, envelope.boot, envelope.seq);
    match verdict {
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
    let gauges: [(Metric, f64); 9] = [
        (Metric::HostCpuPercent, f64::from(h.cpu_percent)),
        (Metric::HostMemoryUsedBytes, h.memory_used_bytes as f64),
        (Metric::HostMemoryUsedPercent, memory_percent),
        (Metric::HostSwapUsedBytes, h.swap_used_bytes as f64),
        (Metric::HostLoad1, h.load[0]),
        (Metric::HostDiskReadBytesPerSec, h.disk_read_bytes_per_sec),
        (Metric::HostDiskWriteBytesPerSec, h.disk_write_bytes_per_sec),
        (Metric::HostNetRxBytesPerSec, h.net_rx_bytes_per_sec),
        (Metric::HostNetTxBytesPerSec, h.net_tx_bytes_per_sec),
    ];
    for (metric, value) in gauges {
        w.record(&scope, metric, None, ts, value, now);
    }
}

/// A container message as instance samples.
pub fn record_containers(w: &mut Windows, e: &Envelope<ContainerBatch>, now: Timestamp) {
    let ts = Timestamp(e.ts_ms);
    for c in &e.body.containers {
        let scope = Scope::Instance(c.instance);
        let mut gauges: Vec<(Metric, f64)> = vec![
            (Metric::ContainerMemoryUsedBytes, c.memory_used_bytes as f64),
            (Metric::ContainerNetRxBytesPerSec, c.net_rx_bytes_per_sec),
            (Metric::ContainerNetTxBytesPerSec, c.net_tx_bytes_per_sec),
            (Metric::ContainerBlockReadBytesPerSec, c.block_read_bytes_per_sec),
            (Metric::ContainerBlockWriteBytesPerSec, c.block_write_bytes_per_sec),
            (Metric::ContainerPids, c.pids as f64),
        ];
        if let Some(cpu) = c.cpu_percent {
            gauges.push((Metric::ContainerCpuPercent, cpu));
        }
        if let Some(limit) = c.memory_limit_bytes.filter(|l| *l > 0) {
            gauges.push((Metric::ContainerMemoryUsedPercent, 100.0 * c.memory_used_bytes as f64 / limit as f64));
        }
        for (metric, value) in gauges {
            w.record(&scope, metric, Some(&c.function), ts, value, now);
        }
    }
}

/// A gateway message as per-gateway, per-function samples.
pub fn record_gateway(w: &mut Windows, e: &Envelope<GatewayBatch>, now: Timestamp) {
    let ts = Timestamp(e.ts_ms);
    for f in &e.body.functions {
        let scope = Scope::Gateway(e.node.clone(), f.function.clone());
        let figures: [(Metric, Option<f64>); 12] = [
            (Metric::GatewayRequestsTotal, Some(f.requests_total as f64)),
            (Metric::GatewayResponses2xxTotal, Some(f.responses_2xx_total as f64)),
            (Metric::GatewayResponses4xxTotal, Some(f.responses_4xx_total as f64)),
            (Metric::GatewayResponses5xxTotal, Some(f.responses_5xx_total as f64)),
            (Metric::GatewayColdStartsTotal, Some(f.cold_starts_total as f64)),
            (Metric::GatewayShedTotal, Some(f.shed_total as f64)),
            (Metric::GatewayRequestSecondsTotal, Some(f.request_us_total as f64 / 1e6)),
            (Metric::GatewayInFlight, Some(f64::from(f.in_flight))),
            (Metric::GatewayQueued, Some(f64::from(f.queued))),
            (Metric::GatewayLatencyP50Seconds, f.latency_p50_seconds),
            (Metric::GatewayLatencyP95Seconds, f.latency_p95_seconds),
            (Metric::GatewayLatencyP99Seconds, f.latency_p99_seconds),
        ];
        for (metric, value) in figures {
            if let Some(value) = value {
                w.record(&scope, metric, Some(&f.function), ts, value, now);
            }
        }
        if let Some(c) = &f.cache {
            for (metric, value) in [
                (Metric::GatewayCacheHitsTotal, c.hits_total),
                (Metric::GatewayCacheMissesTotal, c.misses_total),
                (Metric::GatewayCacheEvictionsTotal, c.evictions_total),
                (Metric::GatewayCacheBytes, c.bytes),
            ] {
                w.record(&scope, metric, Some(&f.function), ts, value as f64, now);
            }
        }
    }
}

/// The scopes that make up a function: its instances and its gateways.
pub fn function_scopes(w: &Windows, function: &FunctionName) -> (Vec<Scope>, Vec<Scope>) {
    let instances = w.instances_of(function).into_iter().map(Scope::Instance).collect();
    let gateways = w.gateways_of(function).into_iter().map(|n| Scope::Gateway(n, function.clone())).collect();
    (instances, gateways)
}
