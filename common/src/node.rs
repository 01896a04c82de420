//! Hosts in the cluster: what they can hold, what they carry, and whether the
//! coordinator hears from them.

use crate::clock::Timestamp;
use crate::ids::NodeId;
use crate::labels::Labels;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// CPU and memory, as capacities or as reservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_mb: u64,
}

impl Resources {
    pub fn fits_within(&self, capacity: &Resources) -> bool {
        self.cpu_millis <= capacity.cpu_millis && self.memory_mb <= capacity.memory_mb
    }

    pub fn plus(&self, other: &Resources) -> Resources {
        Resources { cpu_millis: self.cpu_millis + other.cpu_millis, memory_mb: self.memory_mb + other.memory_mb }
    }

    pub fn minus(&self, other: &Resources) -> Resources {
        Resources { cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis), memory_mb: self.memory_mb.saturating_sub(other.memory_mb) }
    }
}

/// Whether the coordinator hears from a node's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Heard from recently: takes new instances.
    #[default]
    Ready,
    /// Silent for a while: takes no new instances; its instances still count.
    Suspect,
    /// Silent past its lost-after: its instances are replaced elsewhere.
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ready => "ready",
            Health::Suspect => "suspect",
            Health::Down => "down",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host running an agent, as the replicated state records it. Liveness is
/// not here: heartbeats stay out of the log, and only a change of `health`
/// is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// What the node offers to function instances.
    pub capacity: Resources,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Most instances the node takes, whatever their size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Images the agent holds locally: an instance of one starts without a pull.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub images: BTreeSet<String>,
    #[serde(default)]
    pub health: Health,
    /// Set by an operator: no new instances, and the ones there move away.
    #[serde(default)]
    pub draining: bool,
    /// When `health` or `draining` last changed.
    #[serde(default)]
    pub state_since: Timestamp,
    /// When these facts were last recorded (a report that changed them).
    #[serde(alias = "last_seen")]
    pub recorded_at: Timestamp,
}

impl NodeInfo {
    /// A node first heard of at `at`: ready, not draining.
    pub fn new(id: NodeId, capacity: Resources, at: Timestamp) -> Self {
        Self { id, capacity, labels: Labels::new(), max_instances: None, images: BTreeSet::new(), health: Health::Ready, draining: false, state_since: at, recorded_at: at }
    }

    /// What `sluice nodes ls` shows: draining wins over health.
    pub fn state_name(&self) -> &'static str {
        if self.draining {
            "draining"
        } else {
            self.health.as_str()
        }
    }

    /// Whether new instances may go here.
    pub fn schedulable(&self) -> bool {
        self.health == Health::Ready && !self.draining
    }
}
