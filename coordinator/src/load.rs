//! The load figures decisions read: what the gateways see per function and instance.
//!
//! Every coordinator runs a gateway, but only the leader decides; followers send
//! their snapshots to the leader (`PeerLoads`), which merges them with its own.

use serde::{Deserialize, Serialize};
use sluice_common::{FunctionName, InstanceId, Timestamp};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Requests of one function at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FunctionLoad {
    /// Requests being served by an instance.
    pub in_flight: u32,
    /// Requests waiting for an instance with spare concurrency.
    pub queued: u32,
}

/// Requests of one instance at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceLoad {
    pub outstanding: u32,
    /// When it last finished or started a request.
    pub last_active: Timestamp,
}

/// A snapshot of a gateway's load, taken once per decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSnapshot {
    pub functions: HashMap<FunctionName, FunctionLoad>,
    pub instances: HashMap<InstanceId, InstanceLoad>,
}

impl LoadSnapshot {
    pub fn function(&self, name: &FunctionName) -> FunctionLoad {
        self.functions.get(name).copied().unwrap_or_default()
    }

    /// Adds another gateway's load: requests add up, activity is the latest.
    pub fn merge(&mut self, other: &LoadSnapshot) {
        for (name, l) in &other.functions {
            let mine = self.functions.entry(name.clone()).or_default();
            mine.in_flight += l.in_flight;
            mine.queued += l.queued;
        }
        for (id, l) in &other.instances {
            self.instances
                .entry(*id)
                .and_modify(|mine| {
                    mine.outstanding += l.outstanding;
                    mine.last_active = mine.last_active.max(l.last_active);
                })
                .or_insert(*l);
        }
    }

    pub fn has_waiting(&self) -> bool {
        self.functions.values().any(|f| f.queued > 0)
    }
}

/// A follower's load, as sent to the leader over the Raft link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    pub from: u64,
    pub load: LoadSnapshot,
}

/// The latest load of each other coordinator's gateway, on the leader.
#[derive(Debug, Default)]
pub struct PeerLoads {
    latest: Mutex<HashMap<u64, (LoadSnapshot, Instant)>>,
    /// Woken when a peer reports waiting requests: a cold start is wanted now.
    pub waiting: Notify,
}

impl PeerLoads {
    pub fn record(&self, report: LoadReport) {
        let wake = report.load.has_waiting();
        self.latest.lock().expect("peer loads lock poisoned").insert(report.from, (report.load, Instant::now()));
        if wake {
            self.waiting.notify_one();
        }
    }

    /// Reports younger than `max_age`: an older one is from a peer that is gone
    /// or cut off, whose requests no longer wait here.
    pub fn fresh(&self, max_age: Duration) -> Vec<LoadSnapshot> {
        let mut latest = self.latest.lock().expect("peer loads lock poisoned");
        latest.retain(|_, (_, at)| at.elapsed() <= max_age);
        latest.values().map(|(l, _)| l.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_requests_and_keeps_the_latest_activity() {
        let f = FunctionName::new("f").unwrap();
        let mut a = LoadSnapshot::default();
        a.functions.insert(f.clone(), FunctionLoad { in_flight: 2, queued: 0 });
        a.instances.insert(InstanceId(1), InstanceLoad { outstanding: 2, last_active: Timestamp(50) });
        let mut b = LoadSnapshot::default();
        b.functions.insert(f.clone(), FunctionLoad { in_flight: 1, queued: 3 });
        b.instances.insert(InstanceId(1), InstanceLoad { outstanding: 1, last_active: Timestamp(90) });
        b.instances.insert(InstanceId(2), InstanceLoad { outstanding: 0, last_active: Timestamp(10) });
        a.merge(&b);
        assert_eq!(a.function(&f), FunctionLoad { in_flight: 3, queued: 3 });
        assert_eq!(a.instances[&InstanceId(1)], InstanceLoad { outstanding: 3, last_active: Timestamp(90) });
        assert_eq!(a.instances[&InstanceId(2)].last_active, Timestamp(10));
        assert!(a.has_waiting());
    }
}
