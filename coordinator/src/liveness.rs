//! Liveness: when each node's agent was last heard from, kept in memory and
//! out of the Raft log. Only a change of a node's health is written.
//!
//! Agents report to whichever coordinator they reach. Each coordinator notes
//! what it hears; followers pass their notes to the leader (`HeardReport`, over
//! the Raft link, as ages so clocks need not agree), and the leader decides
//! health from the merged notes, as Nomad's servers do with forwarded
//! heartbeats. Pure: time comes in as arguments.

use serde::{Deserialize, Serialize};
use sluice_common::{NodeId, Timestamp};
use std::collections::HashMap;
use std::time::Duration;

/// Last heard, per node.
#[derive(Debug, Default, Clone)]
pub struct Liveness {
    heard: HashMap<NodeId, Timestamp>,
}

/// A follower's notes for the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeardReport {
    /// The follower's Raft id.
    pub from: u64,
    pub nodes: Vec<Heard>,
}

/// One node heard `age_ms` before the report was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heard {
    pub node: NodeId,
    pub age_ms: u64,
}

impl Liveness {
    /// Notes that `node` was heard from at `at`.
    pub fn heard(&mut self, node: &NodeId, at: Timestamp) {
        match self.heard.get_mut(node) {
            Some(t) => *t = (*t).max(at),
            None => {
                self.heard.insert(node.clone(), at);
            }
        }
    }

    pub fn last_heard(&self, node: &NodeId) -> Option<Timestamp> {
        self.heard.get(node).copied()
    }

    /// The nodes heard within `within` before `now`, as a report from `from`.
    pub fn recent(&self, from: u64, now: Timestamp, within: Duration) -> HeardReport {
        let mut nodes: Vec<Heard> =
            self.heard.iter().filter(|(_, at)| now.since(**at) <= within).map(|(node, at)| Heard { node: node.clone(), age_ms: now.since(*at).as_millis() as u64 }).collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        HeardReport { from, nodes }
    }

    /// Takes in a follower's report, received at `now`.
    pub fn merge(&mut self, report: &HeardReport, now: Timestamp) {
        for h in &report.nodes {
            self.heard(&h.node, Timestamp(now.0.saturating_sub(h.age_ms)));
        }
    }

    /// Forgets nodes not heard from within `horizon`: a bound on memory.
    pub fn forget_older(&mut self, now: Timestamp, horizon: Duration) {
        self.heard.retain(|_, at| now.since(*at) <= horizon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn a_followers_notes_arrive_as_ages_and_keep_the_latest() {
        let mut follower = Liveness::default();
        follower.heard(&node("a"), Timestamp(10_000));
        follower.heard(&node("b"), Timestamp(1_000));
        let report = follower.recent(2, Timestamp(10_500), Duration::from_secs(5));
        assert_eq!(report.nodes, vec![Heard { node: node("a"), age_ms: 500 }], "b is too old to pass on");
        // The leader's clock is 2 s ahead: ages make that harmless.
        let mut leader = Liveness::default();
        leader.heard(&node("a"), Timestamp(12_100));
        leader.merge(&report, Timestamp(12_500));
        assert_eq!(leader.last_heard(&node("a")), Some(Timestamp(12_100)), "its own, later note wins");
        leader.merge(&HeardReport { from: 3, nodes: vec![Heard { node: node("a"), age_ms: 100 }] }, Timestamp(12_500));
        assert_eq!(leader.last_heard(&node("a")), Some(Timestamp(12_400)));
        leader.forget_older(Timestamp(100_000), Duration::from_secs(60));
        assert_eq!(leader.last_heard(&node("a")), None);
    }
}
