//! The placer: which node each new instance goes to.
//!
//! A node qualifies when it has been heard from recently and the instance's
//! reservation fits in what its live instances leave free; among those the least
//! loaded (lowest of the larger of CPU and memory utilisation after placing) wins,
//! ties broken by node id so that replicas decide alike.

use crate::state::{reservation, ClusterState};
use sluice_common::{FunctionSpec, NodeId, Resources, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

/// The outcome of placing `count` instances: where each went, and how many did not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub nodes: Vec<NodeId>,
    pub unplaced: u32,
}

/// Places `count` instances of `spec`. Pure: reads no clock.
///
/// A node counts as heard from at `grace_from` at the latest: a coordinator that
/// has just become leader gives every node a full `lost_after` before calling it
/// lost, as Nomad does, so a leader change never strands an agent.
pub fn place(state: &ClusterState, spec: &FunctionSpec, count: u32, now: Timestamp, lost_after: Duration, grace_from: Timestamp) -> Placement {
    let need = reservation(spec);
    let mut used: BTreeMap<&NodeId, (Resources, Resources)> = state
        .nodes
        .values()
        .filter(|n| now.since(n.last_seen.max(grace_from)) <= lost_after)
        .map(|n| (&n.id, (state.reserved_on(&n.id), n.capacity)))
        .collect();
    let mut nodes = Vec::new();
    for _ in 0..count {
        let best = used
            .iter()
            .filter(|(_, (reserved, cap))| reserved.plus(&need).fits_within(cap))
            .min_by(|a, b| score(&a.1 .0.plus(&need), &a.1 .1).total_cmp(&score(&b.1 .0.plus(&need), &b.1 .1)).then(a.0.cmp(b.0)))
            .map(|(id, _)| (*id).clone());
        let Some(id) = best else { break };
        let entry = used.get_mut(&id).expect("chosen from the map");
        entry.0 = entry.0.plus(&need);
        nodes.push(id);
    }
    let unplaced = count - nodes.len() as u32;
    Placement { nodes, unplaced }
}

/// Utilisation of the scarcer resource, 0.0-1.0.
fn score(reserved: &Resources, capacity: &Resources) -> f64 {
    let ratio = |r: u64, c: u64| if c == 0 { 1.0 } else { r as f64 / c as f64 };
    ratio(reserved.cpu_millis, capacity.cpu_millis).max(ratio(reserved.memory_mb, capacity.memory_mb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::{FunctionName, ImageRef, Instance, InstanceId, InstanceState, NodeInfo};

    const NOW: Timestamp = Timestamp(100_000);
    const LOST: Duration = Duration::from_secs(15);

    fn spec(cpu: u32, mem: u32) -> FunctionSpec {
        let mut s = FunctionSpec::new(FunctionName::new("f").unwrap(), ImageRef::parse("img").unwrap());
        s.limits.cpu_millis = cpu;
        s.limits.memory_mb = mem;
        s
    }

    /// nodes: (name, cpu, mem, last_seen, instances of `f` already there)
    fn cluster(spec: &FunctionSpec, nodes: &[(&str, u64, u64, u64, u32)]) -> ClusterState {
        let mut st = ClusterState::default();
        st.functions.insert(spec.name.clone(), spec.clone());
        let mut next = 1;
        for &(n, cpu, mem, seen, count) in nodes {
            let id = NodeId::new(n).unwrap();
            st.nodes.insert(id.clone(), NodeInfo { id: id.clone(), capacity: Resources { cpu_millis: cpu, memory_mb: mem }, last_seen: Timestamp(seen) });
            for _ in 0..count {
                let iid = InstanceId(next);
                next += 1;
                st.instances.insert(
                    iid,
                    Instance {
                        id: iid,
                        function: spec.name.clone(),
                        node: id.clone(),
                        state: InstanceState::Ready,
                        endpoint: None,
                        created_at: Timestamp(0),
                        state_since: Timestamp(0),
                        reason: None,
                    },
                );
            }
        }
        st
    }

    /// (what, nodes, count, expected nodes, expected unplaced)
    type Case<'a> = (&'a str, Vec<(&'a str, u64, u64, u64, u32)>, u32, Vec<&'a str>, u32);

    fn ids(v: &[&str]) -> Vec<NodeId> {
        v.iter().map(|n| NodeId::new(*n).unwrap()).collect()
    }

    #[test]
    fn placements_table() {
        let s = spec(1000, 256);
        let cases: Vec<Case> = vec![
            ("no nodes: nothing placed", vec![], 2, vec![], 2),
            ("single node takes what fits", vec![("a", 2000, 4096, NOW.0, 0)], 3, vec!["a", "a"], 1),
            ("least loaded first, then spread", vec![("a", 4000, 4096, NOW.0, 2), ("b", 4000, 4096, NOW.0, 0)], 3, vec!["b", "b", "a"], 0),
            ("memory is a limit too", vec![("a", 64_000, 200, NOW.0, 0), ("b", 2000, 4096, NOW.0, 0)], 2, vec!["b", "b"], 0),
            ("lost nodes are skipped", vec![("a", 4000, 4096, NOW.0 - 20_000, 0), ("b", 4000, 4096, NOW.0, 3)], 1, vec!["b"], 0),
            ("ties go to the lower id", vec![("b", 4000, 4096, NOW.0, 0), ("a", 4000, 4096, NOW.0, 0)], 1, vec!["a"], 0),
            ("full node: nothing", vec![("a", 1000, 4096, NOW.0, 1)], 1, vec![], 1),
        ];
        for (what, nodes, count, expected, unplaced) in cases {
            let st = cluster(&s, &nodes);
            let p = place(&st, &s, count, NOW, LOST, Timestamp(0));
            assert_eq!(p, Placement { nodes: ids(&expected), unplaced }, "{what}");
        }
    }

    #[test]
    fn a_new_leader_gives_silent_nodes_a_grace_period() {
        let s = spec(1000, 256);
        let st = cluster(&s, &[("a", 4000, 4096, NOW.0 - 20_000, 0)]);
        // Not heard from for 20 s: lost to a leader of long standing...
        assert_eq!(place(&st, &s, 1, NOW, LOST, Timestamp(0)).nodes, vec![]);
        // ...but not to one elected 5 s ago, which has not had the chance to hear from it.
        assert_eq!(place(&st, &s, 1, NOW, LOST, Timestamp(NOW.0 - 5_000)).nodes, ids(&["a"]));
    }
}
