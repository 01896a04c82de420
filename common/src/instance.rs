//! Instances of functions and their lifecycle.
//!
//! `Pending → Starting → Ready ⇄ Paused → Stopping → Gone`

use crate::clock::Timestamp;
use crate::ids::{FunctionName, InstanceId, NodeId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Decided and placed; its agent has not reported it yet.
    Pending,
    /// The container exists and is starting; not yet answering its health check.
    Starting,
    /// Answering requests.
    Ready,
    /// Frozen by the runtime: holds its memory but no CPU, and is not routed
    /// to; a waiting request resumes it, much faster than a cold start.
    Paused,
    /// Being stopped; takes no new requests.
    Stopping,
    /// Stopped and removed, or lost.
    Gone,
}

impl InstanceState {
    /// Every state, in lifecycle order.
    pub const ALL: [InstanceState; 6] =
        [InstanceState::Pending, InstanceState::Starting, InstanceState::Ready, InstanceState::Paused, InstanceState::Stopping, InstanceState::Gone];

    /// True while the instance holds (or will soon hold) resources on its node.
    pub fn is_live(self) -> bool {
        !matches!(self, InstanceState::Gone)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Starting => "starting",
            InstanceState::Ready => "ready",
            InstanceState::Paused => "paused",
            InstanceState::Stopping => "stopping",
            InstanceState::Gone => "gone",
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an instance serves HTTP, as its agent advertises it: two ways in.
///
/// `host:port` is the port its host publishes, which any gateway that can reach
/// the host can use. `direct` is the container's own address on its network with
/// the container's port: only reachable from the instance's own host (the
/// instance record says which node that is), and there it skips what publishes
/// the port (Docker's userland proxy, which costs more per request than a small
/// function does). A gateway uses `direct` for instances on the node it shares a
/// host with and `host:port` for all others (see the gateway's `local_node`).
/// Reports from agents that predate `direct` decode without it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<SocketAddr>,
}

impl Endpoint {
    /// An endpoint reachable only through its published `host:port`.
    pub fn published(host: impl Into<String>, port: u16) -> Self {
        Self { host: host.into(), port, direct: None }
    }

    /// The same, also reachable at `direct` from its own host.
    pub fn with_direct(self, direct: Option<SocketAddr>) -> Self {
        Self { direct, ..self }
    }
}

/// The published `host:port` (what any gateway can use); `direct` is left out.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The coordinator's record of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub function: FunctionName,
    pub node: NodeId,
    pub state: InstanceState,
    pub endpoint: Option<Endpoint>,
    pub created_at: Timestamp,
    /// When `state` last changed.
    pub state_since: Timestamp,
    /// Why the instance is in its state, when that is worth telling (a crash, a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The instance this one was started to replace (a drain moves instances by
    /// starting the new one before stopping the old).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<InstanceId>,
    /// The container's own address on its network, as its agent reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<std::net::IpAddr>,
    /// What it holds on its node: its function's limits when it was placed (a
    /// running container keeps the limits it was started with).
    #[serde(default)]
    pub reserved: crate::node::Resources,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_without_a_direct_address_still_decode_and_encode_as_before() {
        let old: Endpoint = serde_json::from_str(r#"{"host":"127.0.0.1","port":32768}"#).unwrap();
        assert_eq!(old, Endpoint::published("127.0.0.1", 32768));
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"host":"127.0.0.1","port":32768}"#);
        let both = Endpoint::published("10.0.0.5", 32768).with_direct(Some("172.17.0.3:8080".parse().unwrap()));
        let json = serde_json::to_string(&both).unwrap();
        assert_eq!(json, r#"{"host":"10.0.0.5","port":32768,"direct":"172.17.0.3:8080"}"#);
        assert_eq!(serde_json::from_str::<Endpoint>(&json).unwrap(), both);
        assert_eq!(both.to_string(), "10.0.0.5:32768", "shown as what every gateway can reach");
    }
}
