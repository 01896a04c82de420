//! Agents' reports: every one is liveness (noted in memory, never logged), and
//! one that changes something becomes a single log entry with the node's facts
//! and the instances whose state changed, however many there are (an agent
//! that adopts 50 containers after a restart costs one fsync, not 50).

use crate::liveness::Liveness;
use crate::state::ClusterState;
use crate::state_machine::Command;
use sluice_common::{NodeReport, Timestamp};
use std::sync::Mutex;

/// The entry a report needs, if it changes anything. Pure.
pub fn report_command(state: &ClusterState, mut report: NodeReport, at: Timestamp) -> Option<Command> {
    let facts_changed = match state.nodes.get(&report.node) {
        None => true,
        Some(n) => n.capacity != report.capacity || n.labels != report.labels || n.max_instances != report.max_instances || n.images != report.images,
    };
    report.instances.retain(|r| match state.instances.get(&r.id) {
        Some(known) => known.state != r.state || (r.endpoint.is_some() && known.endpoint != r.endpoint) || (r.addr.is_some() && known.addr != r.addr),
        None => r.id.0 >= state.next_instance,
    });
    (facts_changed || !report.instances.is_empty()).then_some(Command::Report { report, at })
}

/// Notes that the report's node was heard from.
pub fn note_heard(liveness: &Mutex<Liveness>, report: &NodeReport, at: Timestamp) {
    liveness.lock().expect("liveness lock poisoned").heard(&report.node, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::{apply, LogPosition};
    use sluice_common::{InstanceId, InstanceReport, InstanceState, NodeId, Resources};

    fn report(instances: Vec<InstanceReport>) -> NodeReport {
        NodeReport {
            node: NodeId::new("n1").unwrap(),
            capacity: Resources { cpu_millis: 1000, memory_mb: 1000 },
            instances,
            at: Timestamp(0),
            labels: Default::default(),
            max_instances: None,
            images: Default::default(),
            agent_addr: None,
        }
    }

    #[test]
    fn a_heartbeat_that_changes_nothing_is_not_logged_and_adoption_is_one_entry() {
        let mut st = ClusterState::default();
        let first = report_command(&st, report(vec![]), Timestamp(1)).expect("a new node is recorded");
        apply(&mut st, &first, LogPosition::default());
        assert_eq!(report_command(&st, report(vec![]), Timestamp(2)), None, "a plain heartbeat");
        let adopted: Vec<InstanceReport> = (1..=50)
            .map(|i| InstanceReport {
                id: InstanceId(i),
                function: sluice_common::FunctionName::new("f").unwrap(),
                state: InstanceState::Ready,
                endpoint: None,
                reason: None,
                addr: None,
            })
            .collect();
        let Some(Command::Report { report: r, .. }) = report_command(&st, report(adopted), Timestamp(3)) else { panic!("adoption must be recorded") };
        assert_eq!(r.instances.len(), 50, "all 50 in one entry");
    }
}
