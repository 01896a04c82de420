//! The metrics bus wire format, version 1: what agents and gateways publish.
//!
//! Every message is one JSON object, so any Kafka or MQTT client can read it
//! (`mosquitto_sub -t 'sluice/v1/+/host'`). Its header says what it is: the
//! format version `v`, the `kind` (which also names the topic), the publishing
//! `node`, that process's `boot` nonce and a `seq` that counts up from 1 in each
//! boot (so a consumer can drop redeliveries), and `ts_ms`, when the figures were
//! taken (Unix milliseconds). The figures are under `body`. docs/wire-format.md
//! documents every field with examples.
//!
//! Compatibility: within version 1 fields are only ever added, and readers ignore
//! fields they do not know; anything else is version 2, published beside version 1
//! on its own topics.

use crate::ids::{FunctionName, InstanceId, NodeId};
use serde::{Deserialize, Serialize};

/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

/// What a message carries; also the last part of its topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Host,
    Container,
    Gateway,
    Event,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Host => "host",
            Kind::Container => "container",
            Kind::Gateway => "gateway",
            Kind::Event => "event",
        }
    }
}

/// One message: the header and the figures of its kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<B> {
    pub v: u32,
    pub kind: Kind,
    pub node: NodeId,
    pub boot: u64,
    pub seq: u64,
    pub ts_ms: u64,
    pub body: B,
}

/// A body type and the kind it travels as.
pub trait Body: Serialize + for<'de> Deserialize<'de> {
    const KIND: Kind;
}

/// A host's figures at one moment (the agent's sysinfo sample).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFigures {
    /// Busy share of all cores, 0-100.
    pub cpu_percent: f32,
    /// Busy share of each core, 0-100.
    pub cpu_per_core: Vec<f32>,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    pub disk_read_bytes_per_sec: f64,
    pub disk_write_bytes_per_sec: f64,
    pub net_rx_bytes_per_sec: f64,
    pub net_tx_bytes_per_sec: f64,
}

impl Body for HostFigures {
    const KIND: Kind = Kind::Host;
}

/// The figures of every instance container on a node at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerBatch {
    pub containers: Vec<ContainerFigures>,
}

impl Body for ContainerBatch {
    const KIND: Kind = Kind::Container;
}

/// One instance container's figures. Rates are over the time since the agent's
/// previous sample of that container; the first sample of a container has no CPU
/// figure yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerFigures {
    pub instance: InstanceId,
    pub function: FunctionName,
    /// Share of one core, 0-100 per core (200 = two cores busy).
    pub cpu_percent: Option<f64>,
    pub memory_used_bytes: u64,
    /// None when the container has no memory limit.
    pub memory_limit_bytes: Option<u64>,
    pub net_rx_bytes_per_sec: f64,
    pub net_tx_bytes_per_sec: f64,
    pub block_read_bytes_per_sec: f64,
    pub block_write_bytes_per_sec: f64,
    pub pids: u64,
}

/// A gateway's per-function figures at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayBatch {
    pub functions: Vec<FunctionFigures>,
    /// Function-to-function calls seen by this gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<CallFigures>,
}

impl Body for GatewayBatch {
    const KIND: Kind = Kind::Gateway;
}

/// One function's figures at one gateway. `*_total` are counters since that
/// gateway started (a consumer takes rates and treats a decrease as a restart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionFigures {
    pub function: FunctionName,
    pub requests_total: u64,
    pub responses_2xx_total: u64,
    pub responses_4xx_total: u64,
    pub responses_5xx_total: u64,
    /// Requests that waited for an instance to start.
    pub cold_starts_total: u64,
    /// Requests refused with 429 because the queue was full.
    pub shed_total: u64,
    pub in_flight: u32,
    pub queued: u32,
    /// 95th percentile of the latency of requests answered since the previous
    /// message, in seconds: the upper bound of the gateway's latency bucket it falls
    /// in (0.001 to 30; 30 means 30 or more); None when there were none.
    pub latency_p95_seconds: Option<f64>,
    /// Median and 99th percentile, read the same way as the p95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p50_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_seconds: Option<f64>,
    /// Counter: microseconds requests have spent in this gateway, waiting or
    /// served, counted when each ends. Its rate is the mean concurrency (Little's law).
    #[serde(default)]
    pub request_us_total: u64,
    /// The function's ready instances as this gateway routes to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceActivity>,
    /// The gateway's response cache, for functions that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheFigures>,
}

/// One function's share of one gateway's response cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheFigures {
    /// Requests answered from the cache; they are not in `requests_total`.
    pub hits_total: u64,
    pub misses_total: u64,
    /// Entries dropped to make room for others.
    pub evictions_total: u64,
    /// Bytes held now.
    pub bytes: u64,
}

/// One instance as one gateway sees it: what keeps a busy instance from being
/// taken for an idle one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceActivity {
    pub instance: InstanceId,
    /// Requests this gateway has on it now.
    pub outstanding: u32,
    /// When this gateway last started or finished a request on it (Unix ms), or
    /// began routing to it.
    pub last_active_ms: u64,
}

/// Calls from one function's instances to another function through this
/// gateway, counted since it started: what co-location learns from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallFigures {
    pub from: FunctionName,
    pub to: FunctionName,
    pub calls_total: u64,
}

/// Something that happened to an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub instance: InstanceId,
    pub function: FunctionName,
    /// Why, for failures; what, otherwise (free text for people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Body for Event {
    const KIND: Kind = Kind::Event;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    InstanceStarted,
    InstanceReady,
    InstancePaused,
    InstanceStopped,
    InstanceFailed,
}

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a Sluice v{VERSION} message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("message version {0} is not supported (this reader knows version {VERSION}); upgrade the coordinator")]
    Version(u32),
    #[error("a {found:?} message on the {expected:?} topic")]
    WrongKind { expected: Kind, found: Kind },
}

/// Writes one message of `body`'s kind.
pub fn encode<B: Body>(node: &NodeId, boot: u64, seq: u64, ts_ms: u64, body: &B) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a, B> {
        v: u32,
        kind: Kind,
        node: &'a NodeId,
        boot: u64,
        seq: u64,
        ts_ms: u64,
        body: &'a B,
    }
    let out = Out { v: VERSION, kind: B::KIND, node, boot, seq, ts_ms, body };
    serde_json::to_vec(&out).expect("wire bodies are plain data and always serialize")
}

/// Reads one message that should be of `B`'s kind.
pub fn decode<B: Body>(payload: &[u8]) -> Result<Envelope<B>, DecodeError> {
    #[derive(Deserialize)]
    struct Header {
        v: u32,
        kind: Kind,
    }
    // The header first, so a newer version is named as such instead of failing
    // on whatever field changed.
    let header: Header = serde_json::from_slice(payload)?;
    if header.v != VERSION {
        return Err(DecodeError::Version(header.v));
    }
    if header.kind != B::KIND {
        return Err(DecodeError::WrongKind { expected: B::KIND, found: header.kind });
    }
    Ok(serde_json::from_slice(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        NodeId::new("edge-1").unwrap()
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let batch = ContainerBatch {
            containers: vec![ContainerFigures {
                instance: InstanceId(7),
                function: FunctionName::new("resize").unwrap(),
                cpu_percent: Some(97.5),
                memory_used_bytes: 3 << 20,
                memory_limit_bytes: Some(128 << 20),
                net_rx_bytes_per_sec: 10.0,
                net_tx_bytes_per_sec: 20.0,
                block_read_bytes_per_sec: 0.0,
                block_write_bytes_per_sec: 4096.0,
                pids: 3,
            }],
        };
        let bytes = encode(&node(), 42, 9, 1_700_000_000_000, &batch);
        let back: Envelope<ContainerBatch> = decode(&bytes).unwrap();
        assert_eq!((back.v, back.kind, back.boot, back.seq, back.ts_ms), (1, Kind::Container, 42, 9, 1_700_000_000_000));
        assert_eq!(back.node, node());
        assert_eq!(back.body, batch);
    }

    #[test]
    fn the_documented_event_example_reads() {
        // Kept in step with docs/wire-format.md.
        let text = r#"{"v":1,"kind":"event","node":"edge-1","boot":1,"seq":3,"ts_ms":5,
            "body":{"type":"instance_failed","instance":4,"function":"resize","detail":"exited with 137"},
            "added_later":true}"#;
        let e: Envelope<Event> = decode(text.as_bytes()).unwrap();
        assert_eq!(e.body.kind, EventKind::InstanceFailed);
        assert_eq!(e.body.detail.as_deref(), Some("exited with 137"));
    }

    #[test]
    fn other_versions_and_kinds_are_named() {
        let v2 = br#"{"v":2,"kind":"host","whatever":1}"#;
        assert!(matches!(decode::<HostFigures>(v2), Err(DecodeError::Version(2))));
        let bytes = encode(&node(), 1, 1, 1, &HostFigures::default());
        assert!(matches!(decode::<ContainerBatch>(&bytes), Err(DecodeError::WrongKind { expected: Kind::Container, found: Kind::Host })));
        assert!(matches!(decode::<HostFigures>(b"not json"), Err(DecodeError::Malformed(_))));
    }
}
