//! The cluster state: functions, nodes, instances and rules, identical on every
//! coordinator, and the questions decisions ask of it.
//!
//! It changes only through `state_machine::apply`. Besides what is replicated
//! it keeps an index (live instances by function and by node), rebuilt whenever
//! a state is decoded, so questions about one function or one node cost what
//! that function or node holds, not what the cluster holds: at 10,000
//! functions a plan applies in milliseconds instead of minutes.

use crate::auth::TokenRecord;
use serde::{Deserialize, Serialize};
use sluice_common::rules::{Rule, RuleName};
use sluice_common::{DesiredInstance, DesiredSet, DesiredState, FunctionName, FunctionSpec, Instance, InstanceId, InstanceState, NodeId, NodeInfo, Resources, Timestamp};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Everything the coordinator knows. Replicas hold identical copies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Stored", into = "Stored")]
pub struct ClusterState {
    pub functions: BTreeMap<FunctionName, FunctionSpec>,
    /// Read freely; change only through the methods below, which keep the index.
    pub instances: BTreeMap<InstanceId, Instance>,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub rules: BTreeMap<RuleName, Rule>,
    /// The next instance id to hand out; ids are never reused.
    pub next_instance: u64,
    /// Bumped whenever any node's desired set changes; agents long-poll on it.
    pub desired_revision: u64,
    /// What the scaler must remember between rounds, per function.
    pub memory: BTreeMap<FunctionName, ScalingMemory>,
    /// Access: the tokens (hashed) and whether the first admin token was made.
    pub auth: AuthState,
    /// Registries images may come from (`host[:port]`); empty allows any.
    pub allowed_registries: Vec<String>,
    /// The cluster's identity, set once by its first leader (`SetClusterId`)
    /// and written by every member into its data directory (`raft::identity`);
    /// `None` until then (and in logs of versions before it).
    pub cluster_id: Option<String>,
    /// The lowest entry version every member runs, as committed by the leader
    /// (`SetClusterVersion`); read it through `cluster_version()`.
    pub version: u32,
    index: Index,
}

/// The cluster's tokens, as hashes of their secrets (`crate::auth`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Set once the first admin token exists; a cluster is bootstrapped once,
    /// so revoking every admin token does not let a restart mint a new one.
    #[serde(default)]
    pub bootstrapped: bool,
}

/// Decisions that later decisions depend on, kept in the replicated state so a
/// new leader honours them: rate limits and rule cooldowns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalingMemory {
    /// When the function last lost instances to a scale-down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down: Option<Timestamp>,
    /// Rules that took effect on this function, and when.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub firings: BTreeMap<RuleName, Firing>,
    /// The last time the function entered panic mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic: Option<Firing>,
}

/// A rule taking effect on one function, or its panic mode starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firing {
    pub at: Timestamp,
    /// Instances when it fired: what `scale_out(n)` and `scale_in(n)` count
    /// from; for panic mode, the ready instances it measures surges against.
    pub base: u32,
}

/// Live (not gone) instances by function and by node, and what they hold on
/// each node (see [`held`]).
#[derive(Debug, Clone, Default, PartialEq)]
struct Index {
    by_function: HashMap<FunctionName, BTreeSet<InstanceId>>,
    by_node: HashMap<NodeId, BTreeSet<InstanceId>>,
    reserved: HashMap<NodeId, Resources>,
}

/// The replicated part, as logs and snapshots hold it.
#[derive(Serialize, Deserialize)]
struct Stored {
    functions: BTreeMap<FunctionName, FunctionSpec>,
    instances: BTreeMap<InstanceId, Instance>,
    nodes: BTreeMap<NodeId, NodeInfo>,
    #[serde(default)]
    rules: BTreeMap<RuleName, Rule>,
    next_instance: u64,
    desired_revision: u64,
    #[serde(default)]
    memory: BTreeMap<FunctionName, ScalingMemory>,
    #[serde(default)]
    auth: AuthState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    allowed_registries: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_id: Option<String>,
    /// Absent in snapshots of versions before it: version 1.
    #[serde(default = "first_version")]
    version: u32,
}

fn first_version() -> u32 {
    1
}

impl From<Stored> for ClusterState {
    fn from(s: Stored) -> Self {
        let mut state = ClusterState {
            functions: s.functions,
            instances: s.instances,
            nodes: s.nodes,
            rules: s.rules,
            next_instance: s.next_instance,
            desired_revision: s.desired_revision,
            memory: s.memory,
            auth: s.auth,
            allowed_registries: s.allowed_registries,
            cluster_id: s.cluster_id,
            version: s.version,
            index: Index::default(),
        };
        state.reindex();
        state
    }
}

impl From<ClusterState> for Stored {
    fn from(s: ClusterState) -> Self {
        Stored {
            functions: s.functions,
            instances: s.instances,
            nodes: s.nodes,
            rules: s.rules,
            next_instance: s.next_instance,
            desired_revision: s.desired_revision,
            memory: s.memory,
            auth: s.auth,
            allowed_registries: s.allowed_registries,
            cluster_id: s.cluster_id,
            version: s.version,
        }
    }
}

/// What one instance of `spec` reserves on its node.
pub fn reservation(spec: &FunctionSpec) -> Resources {
    Resources { cpu_millis: spec.limits.cpu_millis.into(), memory_mb: spec.limits.memory_mb.into() }
}

/// What an instance in `state` holds of its reservation `reserved` on its node.
///
/// A paused container keeps its memory but uses no CPU: its CPU goes back to
/// the node for the placer, and comes back to it when it resumes. That may
/// take the node past its CPU capacity (the CPU was placed meanwhile); CPU
/// limits are cgroup quotas, so that is contention, not failure, and the node
/// takes no new instance until it is back under. Memory is never lent out. A
/// stopping container may be thawed to stop, so it holds all of it.
pub fn held(state: InstanceState, reserved: &Resources) -> Resources {
    match state {
        InstanceState::Gone => Resources::default(),
        InstanceState::Paused => Resources { cpu_millis: 0, memory_mb: reserved.memory_mb },
        InstanceState::Pending | InstanceState::Starting | InstanceState::Ready | InstanceState::Stopping => *reserved,
    }
}

/// States in which an instance is wanted on its node.
pub fn is_serving_state(s: InstanceState) -> bool {
    matches!(s, InstanceState::Pending | InstanceState::Starting | InstanceState::Ready | InstanceState::Paused)
}

impl ClusterState {
    /// The committed cluster version: command kinds introduced after it are
    /// refused (`Command::introduced_in`). A new state is at version 1.
    pub fn cluster_version(&self) -> u32 {
        self.version.max(1)
    }

    fn reindex(&mut self) {
        self.index = Index::default();
        // Instances recorded before reservations were kept take their
        // function's limits now; every replica decodes the same state, so
        // every replica fills in the same.
        for inst in self.instances.values_mut() {
            if inst.reserved == Resources::default() {
                if let Some(spec) = self.functions.get(&inst.function) {
                    inst.reserved = reservation(spec);
                }
            }
        }
        let live: Vec<Instance> = self.instances.values().filter(|i| i.state.is_live()).cloned().collect();
        for inst in &live {
            self.index_live(inst);
        }
    }

    fn index_live(&mut self, inst: &Instance) {
        self.index.by_function.entry(inst.function.clone()).or_default().insert(inst.id);
        self.index.by_node.entry(inst.node.clone()).or_default().insert(inst.id);
        let r = self.index.reserved.entry(inst.node.clone()).or_default();
        *r = r.plus(&held(inst.state, &inst.reserved));
    }

    /// Adds a new instance (live by construction).
    pub(crate) fn insert_instance(&mut self, instance: Instance) {
        self.index_live(&instance);
        self.instances.insert(instance.id, instance);
    }

    /// Moves an instance to `to` at `at`; leaving the live states drops it from
    /// the index, and what it holds on its node follows its state.
    pub(crate) fn set_instance_state(&mut self, id: InstanceId, to: InstanceState, at: Timestamp) {
        self.move_instance(id, to, Some(at));
    }

    /// As `set_instance_state`, leaving `state_since` as it was: for entries
    /// that carry no time (`RemoveFunction`), which must replay as they always did.
    pub(crate) fn set_instance_state_untimed(&mut self, id: InstanceId, to: InstanceState) {
        self.move_instance(id, to, None);
    }

    /// The one place an instance's state changes, so the index cannot drift.
    fn move_instance(&mut self, id: InstanceId, to: InstanceState, at: Option<Timestamp>) {
        let Some(inst) = self.instances.get_mut(&id) else { return };
        let from = inst.state;
        if from == to {
            return;
        }
        inst.state = to;
        if let Some(at) = at {
            inst.state_since = at;
        }
        let (function, node, reserved) = (inst.function.clone(), inst.node.clone(), inst.reserved);
        if from.is_live() && !to.is_live() {
            remove_from(&mut self.index.by_function, &function, id);
            remove_from(&mut self.index.by_node, &node, id);
        } else if !from.is_live() && to.is_live() {
            // Nothing leaves Gone today; should it ever, the index follows.
            self.index.by_function.entry(function).or_default().insert(id);
            self.index.by_node.entry(node.clone()).or_default().insert(id);
        }
        let (before, after) = (held(from, &reserved), held(to, &reserved));
        if before != after {
            let r = self.index.reserved.entry(node).or_default();
            *r = r.minus(&before).plus(&after);
        }
    }

    /// Forgets gone instances that went before `before`.
    pub(crate) fn prune_gone(&mut self, before: Timestamp) {
        self.instances.retain(|_, i| i.state != InstanceState::Gone || i.state_since >= before);
    }

    /// Instances of `function` that are not gone, in id order.
    pub fn live_of<'a>(&'a self, function: &FunctionName) -> impl Iterator<Item = &'a Instance> + 'a {
        self.index.by_function.get(function).into_iter().flatten().filter_map(|id| self.instances.get(id))
    }

    /// Instances on `node` that are not gone, in id order.
    pub fn live_on<'a>(&'a self, node: &NodeId) -> impl Iterator<Item = &'a Instance> + 'a {
        self.index.by_node.get(node).into_iter().flatten().filter_map(|id| self.instances.get(id))
    }

    /// Instances of `function` that hold or will hold a container.
    pub fn live_instances<'a>(&'a self, function: &FunctionName) -> impl Iterator<Item = &'a Instance> + 'a {
        self.live_of(function).filter(|i| is_serving_state(i.state))
    }

    /// The serving instances of `function` that count against its maximum: an
    /// instance whose replacement (a drain move) is already live counts once,
    /// through the replacement.
    pub fn counted_instances(&self, function: &FunctionName) -> u32 {
        let live: Vec<&Instance> = self.live_instances(function).collect();
        let replaced: BTreeSet<InstanceId> = live.iter().filter_map(|i| i.replaces).collect();
        live.iter().filter(|i| !replaced.contains(&i.id)).count() as u32
    }

    /// The instances `node` should run, with their specs.
    pub fn desired_for(&self, node: &NodeId) -> DesiredSet {
        let instances = self
            .live_on(node)
            .filter(|i| is_serving_state(i.state))
            .filter_map(|i| {
                let spec = self.functions.get(&i.function)?.clone();
                let state = if i.state == InstanceState::Paused { DesiredState::Paused } else { DesiredState::Running };
                Some(DesiredInstance { id: i.id, spec, state })
            })
            .collect();
        DesiredSet { revision: self.desired_revision, instances }
    }

    /// Resources reserved on `node` by its live instances (stopping ones too:
    /// their containers still hold them), each at the limits it was placed
    /// with; a paused one holds its memory only (see [`held`]).
    pub fn reserved_on(&self, node: &NodeId) -> Resources {
        self.index.reserved.get(node).copied().unwrap_or_default()
    }
}

fn remove_from<K: std::hash::Hash + Eq>(index: &mut HashMap<K, BTreeSet<InstanceId>>, key: &K, id: InstanceId) {
    if let Some(set) = index.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}
