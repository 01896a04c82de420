//! What the coordinator asks of an agent, and what an agent reports back.
//!
//! The coordinator publishes the *desired* instances of each node rather than
//! one-off commands; the agent diffs them against what its runtime holds and
//! plans its own actions (`sluice_agent::reconcile`), so a lost or repeated
//! message never leaves a host wrong.

use crate::clock::Timestamp;
use crate::ids::{FunctionName, InstanceId, NodeId};
use crate::instance::{Endpoint, InstanceState};
use crate::labels::Labels;
use crate::node::Resources;
use crate::spec::FunctionSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Whether a desired instance should be running or frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Paused,
}

/// One instance a node should hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredInstance {
    pub id: InstanceId,
    pub spec: FunctionSpec,
    pub state: DesiredState,
}

/// The full desired set of a node at a revision; newer revisions replace older ones.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DesiredSet {
    pub revision: u64,
    pub instances: Vec<DesiredInstance>,
}

/// An agent's view of one of its instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub id: InstanceId,
    pub function: FunctionName,
    pub state: InstanceState,
    pub endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The container's own address on its network: requests from it to a
    /// gateway come from there, which is how calls between functions are seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<std::net::IpAddr>,
}

/// Everything an agent tells the coordinator in one report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: NodeId,
    pub capacity: Resources,
    pub instances: Vec<InstanceReport>,
    pub at: Timestamp,
    /// The node's labels (`--label`), for node selectors and rules.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Most instances the node takes (`--max-instances`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Images the agent holds locally.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub images: BTreeSet<String>,
    /// Where the agent serves `/metrics` and its instances' logs (`--agent-metrics`),
    /// as it is bound; the coordinator puts the report's source address in for
    /// a wildcard (`0.0.0.0`). Kept in the coordinator's memory, not replicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_addr: Option<std::net::SocketAddr>,
}
