//! What can go wrong on the bus; every message says what failed and what to do next.

use std::fmt;

/// The broker behind a bus, for messages that name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Kafka,
    Mqtt,
}

impl BrokerKind {
    /// The argument `scripts/brokers.sh` takes for this broker.
    pub fn script_name(self) -> &'static str {
        match self {
            BrokerKind::Kafka => "kafka",
            BrokerKind::Mqtt => "mqtt",
        }
    }
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrokerKind::Kafka => "Kafka",
            BrokerKind::Mqtt => "MQTT",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("{kind} broker at {addr} unreachable: start it (locally: scripts/brokers.sh start {}) or check --bus", .kind.script_name())]
    Unreachable { kind: BrokerKind, addr: String },

    #[error("the broker did not acknowledge the message within the publish timeout: check that it is up and keeping up, or raise publish_timeout_ms in --bus")]
    Timeout,

    #[error("{queue} is full ({limit}): its consumer or broker is not keeping up; retry later")]
    Full { queue: String, limit: String },

    #[error("payload of {size} bytes is over the bus limit of {limit} bytes: send smaller messages or raise max_payload_bytes in --bus")]
    TooLarge { size: usize, limit: usize },

    #[error("message key {key:?} is invalid: use 1-{} bytes without '/', '+', '#' or control characters (it is an MQTT topic level; the node id fits)", crate::MAX_KEY_LEN)]
    InvalidKey { key: String },

    #[error("group {group:?} is invalid: use 1-100 letters, digits, '-', '_' or '.'")]
    InvalidGroup { group: String },

    #[error("subscribing group {group:?} to no topic: name at least one topic")]
    NoTopics { group: String },

    #[error("client name {name:?} is invalid: use the node id (1-200 characters, no '/' or control characters)")]
    InvalidClientName { name: String },

    #[error("group {group:?} already has a live subscription on this bus: drop it before subscribing again")]
    GroupBusy { group: String },

    #[error("--bus: {part} {problem}: {fix}")]
    InvalidUrl { part: String, problem: String, fix: String },

    #[error("TLS setup for the MQTT bus failed: {0}")]
    Tls(String),

    #[error("{kind} broker at {addr}: {detail}")]
    Broker { kind: BrokerKind, addr: String, detail: String },

    #[error("the bus connection behind this call was closed (the bus or subscription was dropped); open a new one")]
    Closed,

    #[error("this message was received on another subscription: mark it processed on the one it came from")]
    ForeignMessage,
}

impl BusError {
    pub(crate) fn url(part: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        BusError::InvalidUrl { part: part.into(), problem: problem.into(), fix: fix.into() }
    }
}
