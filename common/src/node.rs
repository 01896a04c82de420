//! Hosts in the cluster and what they can hold.

use crate::clock::Timestamp;
use crate::ids::NodeId;
use serde::{Deserialize, Serialize};

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
}

/// A host running an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// What the node offers to function instances.
    pub capacity: Resources,
    pub last_seen: Timestamp,
}
