//! Instances of functions and their lifecycle.
//!
//! `Pending → Starting → Ready ⇄ Paused → Stopping → Gone`

use crate::clock::Timestamp;
use crate::ids::{FunctionName, InstanceId, NodeId};
use serde::{Deserialize, Serialize};
use std::fmt;

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

/// A host and port where an instance serves HTTP, reachable from the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

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
