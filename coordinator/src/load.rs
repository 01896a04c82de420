//! The load figures decisions read: what the gateway sees per function and instance.

use sluice_common::{FunctionName, InstanceId, Timestamp};
use std::collections::HashMap;

/// Requests of one function at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FunctionLoad {
    /// Requests being served by an instance.
    pub in_flight: u32,
    /// Requests waiting for an instance with spare concurrency.
    pub queued: u32,
}

/// Requests of one instance at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLoad {
    pub outstanding: u32,
    /// When it last finished or started a request.
    pub last_active: Timestamp,
}

/// A snapshot of the gateway's load, taken once per decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadSnapshot {
    pub functions: HashMap<FunctionName, FunctionLoad>,
    pub instances: HashMap<InstanceId, InstanceLoad>,
}

impl LoadSnapshot {
    pub fn function(&self, name: &FunctionName) -> FunctionLoad {
        self.functions.get(name).copied().unwrap_or_default()
    }
}
