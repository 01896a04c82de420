//! The replicated state machine: functions, nodes and instances, changed only by
//! applying typed `Command`s.
//!
//! `apply` is a pure function of (state, command): no clock, no I/O. Time arrives
//! inside the command, stamped by whoever proposed it, so every replica that
//! applies the same log reaches the same state. New command variants are only
//! ever appended, never reordered, because a log written by an older version
//! must still replay.

use serde::{Deserialize, Serialize};
use sluice_common::{
    DesiredInstance, DesiredSet, DesiredState, FunctionName, FunctionSpec, Instance, InstanceId, InstanceReport,
    InstanceState, NodeId, NodeInfo, Resources, Timestamp,
};
use std::collections::BTreeMap;

/// Everything the coordinator knows. Replicas hold identical copies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub functions: BTreeMap<FunctionName, FunctionSpec>,
    pub instances: BTreeMap<InstanceId, Instance>,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// The next instance id to hand out; ids are never reused.
    pub next_instance: u64,
    /// Bumped whenever any node's desired set changes; agents long-poll on it.
    pub desired_revision: u64,
}

/// A change to the cluster state: the entries of the (future) replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Create or update a function.
    PutFunction { spec: FunctionSpec },
    /// Delete a function and stop all its instances.
    RemoveFunction { name: FunctionName },
    /// An agent's heartbeat: the node exists and offers `capacity`.
    NodeSeen { node: NodeId, capacity: Resources, at: Timestamp },
    /// Place a new instance of `function` on `node` (a scaler + placer decision).
    StartInstance { function: FunctionName, node: NodeId, at: Timestamp },
    /// Take an instance out of service; its agent stops it.
    StopInstance { id: InstanceId, reason: String, at: Timestamp },
    /// What an agent observed of one of its instances.
    ReportInstance { node: NodeId, report: InstanceReport, at: Timestamp },
    /// Forget instances that have been gone since before `before`.
    PruneGone { before: Timestamp },
}

/// The outcome of applying one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok,
    FunctionCreated,
    FunctionUpdated,
    InstanceStarted { id: InstanceId },
    /// The command was valid but refers to something that does not exist.
    NotFound { what: String },
    /// The command was refused for a reason the state explains.
    Rejected { reason: String },
}

/// What a command changed, so that callers wake only whom it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Some node's desired set changed.
    pub desired_changed: bool,
    /// The function whose route (spec or ready instances) may have changed.
    pub route_of: Option<FunctionName>,
}

impl ClusterState {
    /// Instances of `function` that hold or will hold a container.
    pub fn live_instances<'a>(&'a self, function: &'a FunctionName) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.values().filter(move |i| &i.function == function && is_serving_state(i.state))
    }

    /// The instances `node` should run, with their specs.
    pub fn desired_for(&self, node: &NodeId) -> DesiredSet {
        let instances = self
            .instances
            .values()
            .filter(|i| &i.node == node && is_serving_state(i.state))
            .filter_map(|i| {
                let spec = self.functions.get(&i.function)?.clone();
                let state = if i.state == InstanceState::Paused { DesiredState::Paused } else { DesiredState::Running };
                Some(DesiredInstance { id: i.id, spec, state })
            })
            .collect();
        DesiredSet { revision: self.desired_revision, instances }
    }

    /// Resources reserved on `node` by its live instances.
    pub fn reserved_on(&self, node: &NodeId) -> Resources {
        self.instances
            .values()
            .filter(|i| &i.node == node && i.state.is_live())
            .filter_map(|i| self.functions.get(&i.function))
            .fold(Resources::default(), |acc, spec| acc.plus(&reservation(spec)))
    }
}

/// What one instance of `spec` reserves on its node.
pub fn reservation(spec: &FunctionSpec) -> Resources {
    Resources { cpu_millis: spec.limits.cpu_millis.into(), memory_mb: spec.limits.memory_mb.into() }
}

/// States in which an instance is wanted on its node.
fn is_serving_state(s: InstanceState) -> bool {
    matches!(s, InstanceState::Pending | InstanceState::Starting | InstanceState::Ready | InstanceState::Paused)
}

/// Applies one command. Pure: the same state and command always give the same result.
pub fn apply(state: &mut ClusterState, cmd: &Command) -> (Response, Effects) {
    let mut desired_changed = false;
    let route_of = match cmd {
        Command::PutFunction { spec } => Some(spec.name.clone()),
        Command::RemoveFunction { name } => Some(name.clone()),
        Command::StopInstance { id, .. } => state.instances.get(id).map(|i| i.function.clone()),
        Command::ReportInstance { report, .. } => Some(report.function.clone()),
        // Pending and gone instances take no requests: routes are unchanged.
        Command::NodeSeen { .. } | Command::StartInstance { .. } | Command::PruneGone { .. } => None,
    };
    let response = match cmd {
        Command::PutFunction { spec } => {
            let existed = state.functions.insert(spec.name.clone(), spec.clone()).is_some();
            // Running instances pick up the new spec on their next start; the desired
            // sets carry the spec, so agents must hear about it.
            desired_changed = existed && state.live_instances(&spec.name).next().is_some();
            if existed {
                Response::FunctionUpdated
            } else {
                Response::FunctionCreated
            }
        }
        Command::RemoveFunction { name } => {
            if state.functions.remove(name).is_none() {
                Response::NotFound { what: format!("function {name}") }
            } else {
                for inst in state.instances.values_mut().filter(|i| &i.function == name) {
                    if inst.state.is_live() && inst.state != InstanceState::Stopping {
                        inst.state = InstanceState::Stopping;
                        inst.reason = Some("function removed".into());
                        desired_changed = true;
                    }
                }
                Response::Ok
            }
        }
        Command::NodeSeen { node, capacity, at } => {
            state.nodes.insert(node.clone(), NodeInfo { id: node.clone(), capacity: *capacity, last_seen: *at });
            Response::Ok
        }
        Command::StartInstance { function, node, at } => {
            if !state.functions.contains_key(function) {
                Response::NotFound { what: format!("function {function}") }
            } else if !state.nodes.contains_key(node) {
                Response::NotFound { what: format!("node {node}") }
            } else {
                state.next_instance = state.next_instance.max(1);
                let id = InstanceId(state.next_instance);
                state.next_instance += 1;
                state.instances.insert(
                    id,
                    Instance {
                        id,
                        function: function.clone(),
                        node: node.clone(),
                        state: InstanceState::Pending,
                        endpoint: None,
                        created_at: *at,
                        state_since: *at,
                        reason: None,
                    },
                );
                desired_changed = true;
                Response::InstanceStarted { id }
            }
        }
        Command::StopInstance { id, reason, at } => match state.instances.get_mut(id) {
            None => Response::NotFound { what: format!("instance {id}") },
            Some(inst) if !is_serving_state(inst.state) => Response::Ok,
            Some(inst) => {
                set_state(inst, InstanceState::Stopping, *at);
                inst.reason = Some(reason.clone());
                desired_changed = true;
                Response::Ok
            }
        },
        Command::ReportInstance { node, report, at } => apply_report(state, node, report, *at, &mut desired_changed),
        Command::PruneGone { before } => {
            state.instances.retain(|_, i| i.state != InstanceState::Gone || i.state_since >= *before);
            Response::Ok
        }
    };
    if desired_changed {
        state.desired_revision += 1;
    }
    (response, Effects { desired_changed, route_of })
}

fn set_state(inst: &mut Instance, to: InstanceState, at: Timestamp) {
    if inst.state != to {
        inst.state = to;
        inst.state_since = at;
    }
}

/// Merges an agent's observation. The coordinator's decisions win over stale
/// observations: an instance taken out of service never comes back to Ready.
fn apply_report(state: &mut ClusterState, node: &NodeId, report: &InstanceReport, at: Timestamp, desired_changed: &mut bool) -> Response {
    let Some(inst) = state.instances.get_mut(&report.id) else {
        // A container this state does not know (e.g. from before a restart): make
        // sure its id is never handed out again; the agent stops it since it is not desired.
        state.next_instance = state.next_instance.max(report.id.0 + 1);
        return Response::NotFound { what: format!("instance {}", report.id) };
    };
    if &inst.node != node || inst.function != report.function {
        return Response::Rejected { reason: format!("instance {} belongs to node {} and function {}", inst.id, inst.node, inst.function) };
    }
    use InstanceState::*;
    let allowed = match (inst.state, report.state) {
        (Gone, _) => false,
        (_, Gone) => true,
        (Stopping, _) => false,
        (_, Stopping) => true,
        (Pending | Starting | Ready | Paused, Starting | Ready | Paused) => true,
        (_, Pending) => false,
    };
    if !allowed {
        return Response::Ok;
    }
    if report.state == Gone && is_serving_state(inst.state) {
        *desired_changed = true;
    }
    set_state(inst, report.state, at);
    if report.endpoint.is_some() || report.state == Gone {
        inst.endpoint = report.endpoint.clone();
    }
    if report.reason.is_some() {
        inst.reason = report.reason.clone();
    }
    Response::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::{Endpoint, ImageRef};

    fn name(s: &str) -> FunctionName {
        FunctionName::new(s).unwrap()
    }
    fn node(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }
    fn spec(n: &str) -> FunctionSpec {
        FunctionSpec::new(name(n), ImageRef::parse("sluice/hello:latest").unwrap())
    }
    fn report(id: InstanceId, f: &str, s: InstanceState) -> InstanceReport {
        let endpoint = (s == InstanceState::Ready).then(|| Endpoint { host: "127.0.0.1".into(), port: 4000 });
        InstanceReport { id, function: name(f), state: s, endpoint, reason: None }
    }
    fn cluster_with_instance() -> (ClusterState, InstanceId) {
        let mut st = ClusterState::default();
        apply(&mut st, &Command::PutFunction { spec: spec("hello") });
        apply(&mut st, &Command::NodeSeen { node: node("n1"), capacity: Resources { cpu_millis: 4000, memory_mb: 4096 }, at: Timestamp(1) });
        let (r, e) = apply(&mut st, &Command::StartInstance { function: name("hello"), node: node("n1"), at: Timestamp(2) });
        assert!(e.desired_changed);
        let Response::InstanceStarted { id } = r else { panic!("{r:?}") };
        (st, id)
    }

    #[test]
    fn started_instances_are_desired_on_their_node() {
        let (st, id) = cluster_with_instance();
        let set = st.desired_for(&node("n1"));
        assert_eq!(set.instances.len(), 1);
        assert_eq!(set.instances[0].id, id);
        assert_eq!(set.revision, 1);
        assert!(st.desired_for(&node("n2")).instances.is_empty());
        assert_eq!(st.reserved_on(&node("n1")), Resources { cpu_millis: 250, memory_mb: 128 });
    }

    #[test]
    fn reports_move_instances_forward_only() {
        let (mut st, id) = cluster_with_instance();
        apply(&mut st, &Command::ReportInstance { node: node("n1"), report: report(id, "hello", InstanceState::Ready), at: Timestamp(3) });
        assert_eq!(st.instances[&id].state, InstanceState::Ready);
        assert!(st.instances[&id].endpoint.is_some());
        let (_, e) = apply(&mut st, &Command::StopInstance { id, reason: "idle".into(), at: Timestamp(4) });
        assert!(e.desired_changed);
        // Taking a ready instance out of service changes its function's route.
        assert_eq!(e.route_of, Some(FunctionName::new("hello").unwrap()));
        // a stale Ready report must not bring it back
        apply(&mut st, &Command::ReportInstance { node: node("n1"), report: report(id, "hello", InstanceState::Ready), at: Timestamp(5) });
        assert_eq!(st.instances[&id].state, InstanceState::Stopping);
        assert!(st.desired_for(&node("n1")).instances.is_empty());
        apply(&mut st, &Command::ReportInstance { node: node("n1"), report: report(id, "hello", InstanceState::Gone), at: Timestamp(6) });
        assert_eq!(st.instances[&id].state, InstanceState::Gone);
        apply(&mut st, &Command::PruneGone { before: Timestamp(7) });
        assert!(st.instances.is_empty());
    }

    #[test]
    fn a_crash_report_frees_the_slot() {
        let (mut st, id) = cluster_with_instance();
        let (_, e) = apply(&mut st, &Command::ReportInstance { node: node("n1"), report: report(id, "hello", InstanceState::Gone), at: Timestamp(3) });
        assert!(e.desired_changed);
        assert_eq!(st.live_instances(&name("hello")).count(), 0);
    }

    #[test]
    fn reports_from_the_wrong_node_are_rejected() {
        let (mut st, id) = cluster_with_instance();
        let (r, _) = apply(&mut st, &Command::ReportInstance { node: node("n2"), report: report(id, "hello", InstanceState::Gone), at: Timestamp(3) });
        assert!(matches!(r, Response::Rejected { .. }));
        assert_eq!(st.instances[&id].state, InstanceState::Pending);
    }

    #[test]
    fn unknown_reported_ids_are_never_reused() {
        let mut st = ClusterState::default();
        apply(&mut st, &Command::ReportInstance { node: node("n1"), report: report(InstanceId(41), "hello", InstanceState::Ready), at: Timestamp(1) });
        apply(&mut st, &Command::PutFunction { spec: spec("hello") });
        apply(&mut st, &Command::NodeSeen { node: node("n1"), capacity: Resources::default(), at: Timestamp(1) });
        let (r, _) = apply(&mut st, &Command::StartInstance { function: name("hello"), node: node("n1"), at: Timestamp(2) });
        assert_eq!(r, Response::InstanceStarted { id: InstanceId(42) });
    }

    #[test]
    fn removing_a_function_stops_its_instances() {
        let (mut st, id) = cluster_with_instance();
        let (r, e) = apply(&mut st, &Command::RemoveFunction { name: name("hello") });
        assert_eq!(r, Response::Ok);
        assert!(e.desired_changed);
        assert_eq!(st.instances[&id].state, InstanceState::Stopping);
        let (r, _) = apply(&mut st, &Command::RemoveFunction { name: name("hello") });
        assert!(matches!(r, Response::NotFound { .. }));
    }

    #[test]
    fn commands_round_trip_through_json() {
        let cmd = Command::StopInstance { id: InstanceId(3), reason: "idle".into(), at: Timestamp(9) };
        let text = serde_json::to_string(&cmd).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), cmd);
    }
}
