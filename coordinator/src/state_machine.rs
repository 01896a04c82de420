//! The replicated state machine: the log's entries (`Command`) and `apply`,
//! which turns the cluster state from one entry to the next.
//!
//! `apply` is a pure function of (state, command, log position): no clock, no
//! I/O. Time arrives inside the command, stamped by whoever proposed it, so
//! every replica that applies the same log reaches the same state. New command
//! variants are only ever appended, never reordered, because a log written by
//! an older version must still replay; the first variants below are such
//! entries, no longer proposed.
//!
//! Versions: every kind of command names the entry version it was introduced
//! in (`Command::introduced_in`). A kind newer than the cluster's committed
//! version (`ClusterState::cluster_version`, the lowest version every member
//! runs) is refused, when proposed and again when applied, so that a member
//! still running an older binary never meets an entry it cannot read during a
//! rolling upgrade. To add a kind: append the variant, bump `ENTRY_VERSION` if
//! no kind has been introduced at the next version yet, and return that
//! version for it from `introduced_in`.

use crate::auth::{TokenRecord, MAX_TOKENS};
use crate::events::DecisionEvent;
use crate::plan::{Action, Decision, Outcome, Plan, Reason};
use crate::state::{is_serving_state, reservation, ClusterState, Firing};
use serde::{Deserialize, Serialize};
use sluice_common::rules::{Rule, RuleName};
use sluice_common::{FunctionName, FunctionSpec, Health, Instance, InstanceId, InstanceReport, InstanceState, NodeId, NodeInfo, NodeReport, Resources, Timestamp};

/// The newest entry version this binary reads and writes. Entries written
/// before versions existed carry none and are version 1.
pub const ENTRY_VERSION: u32 = 2;

/// A change to the cluster state: the entries of the replicated log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Create or update a function.
    PutFunction { spec: FunctionSpec },
    /// Delete a function and stop all its instances.
    RemoveFunction { name: FunctionName },
    /// Replayed from older logs: a node's heartbeat (now liveness stays out of the log).
    NodeSeen { node: NodeId, capacity: Resources, at: Timestamp },
    /// Replayed from older logs: one placement (now a `Plan`).
    StartInstance { function: FunctionName, node: NodeId, at: Timestamp },
    /// Replayed from older logs: one stop (now a `Plan`).
    StopInstance { id: InstanceId, reason: String, at: Timestamp },
    /// Replayed from older logs: one instance of a report (now a `Report`).
    ReportInstance { node: NodeId, report: InstanceReport, at: Timestamp },
    /// Forget instances that have been gone since before `before`.
    PruneGone { before: Timestamp },
    /// The leader's decisions of one round.
    Plan(Plan),
    /// An agent's report: the node's facts and the instances whose state changed.
    Report { report: NodeReport, at: Timestamp },
    /// An operator drains a node (or stops draining it).
    SetDraining { node: NodeId, draining: bool, at: Timestamp },
    /// Create or replace rules, all at once.
    PutRules { rules: Vec<Rule> },
    /// Delete a rule.
    RemoveRule { name: RuleName },
    /// Version 2. Add a token (its secret's hash only).
    CreateToken { token: TokenRecord },
    /// Version 2. Delete a token: it stops working on every coordinator as this applies.
    RevokeToken { id: String },
    /// Version 2. The cluster's first admin token; applies once per cluster.
    BootstrapAdmin { token: TokenRecord },
    /// Version 2. Registries images may come from; empty allows any.
    SetAllowedRegistries { registries: Vec<String> },
    /// Version 2. Every member runs at least `version`: kinds introduced up to
    /// it may be proposed from now on. Proposed by the leader (never lowered).
    SetClusterVersion { version: u32 },
    /// Version 2. The cluster's identity, set once by its first leader.
    SetClusterId { id: String },
    /// Version 2. Every gateway drops its cached responses of `function`, of
    /// one path (below the function's name, any query) or all of them. The
    /// state keeps nothing of it: each gateway acts as it applies the entry.
    PurgeCache { function: FunctionName, path: Option<String>, at: Timestamp },
}

impl Command {
    /// The entry version this kind of command was introduced in: it is refused
    /// until the cluster version is at least that. Kinds of the first version
    /// answer 1; a new kind answers the version it arrives in.
    pub fn introduced_in(&self) -> u32 {
        match self {
            Command::PutFunction { .. }
            | Command::RemoveFunction { .. }
            | Command::NodeSeen { .. }
            | Command::StartInstance { .. }
            | Command::StopInstance { .. }
            | Command::ReportInstance { .. }
            | Command::PruneGone { .. }
            | Command::Plan(_)
            | Command::Report { .. }
            | Command::SetDraining { .. }
            | Command::PutRules { .. }
            | Command::RemoveRule { .. } => 1,
            Command::SetClusterVersion { .. }
            | Command::SetClusterId { .. }
            | Command::CreateToken { .. }
            | Command::RevokeToken { .. }
            | Command::BootstrapAdmin { .. }
            | Command::SetAllowedRegistries { .. }
            | Command::PurgeCache { .. } => 2,
        }
    }

    /// The version a binary needs to apply this entry: its kind's, or for a
    /// version change the version it moves to (a member that cannot run it
    /// must stop rather than pretend).
    pub fn entry_version(&self) -> u32 {
        match self {
            Command::SetClusterVersion { version } => (*version).max(self.introduced_in()),
            _ => self.introduced_in(),
        }
    }

    /// Whether the cluster, at version `cluster_version`, takes this command.
    /// The version change itself is exempt: the leader proposes it only once
    /// every member says it runs that version.
    pub fn allowed_at(&self, cluster_version: u32) -> Result<(), String> {
        if matches!(self, Command::SetClusterVersion { .. }) || self.introduced_in() <= cluster_version {
            return Ok(());
        }
        Err(format!(
            "this kind of change needs cluster version {}, and the cluster is at version {cluster_version}: some coordinator still runs an older sluice; \
             upgrade every coordinator, then retry (the leader raises the version once all of them run the new one)",
            self.introduced_in()
        ))
    }
}

/// Where an entry sits in the log: plans check the term they were made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogPosition {
    pub index: u64,
    pub term: u64,
}

/// The outcome of applying one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok,
    FunctionCreated,
    FunctionUpdated,
    InstanceStarted {
        id: InstanceId,
    },
    /// Each decision of a plan, in order.
    Planned {
        outcomes: Vec<Outcome>,
    },
    /// The command was valid but refers to something that does not exist.
    NotFound {
        what: String,
    },
    /// The command was refused for a reason the state explains.
    Rejected {
        reason: String,
    },
}

/// What a command changed, so that callers wake only whom it concerns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Effects {
    /// Some node's desired set changed.
    pub desired_changed: bool,
    /// Functions whose route (spec or ready instances) may have changed.
    pub routes: Vec<FunctionName>,
    /// The decisions of a plan, for the event log.
    pub events: Vec<DecisionEvent>,
    /// Cached responses the gateways must drop: a purge, or a function
    /// deployed again or removed (its old answers are not its new ones).
    pub purges: Vec<CachePurge>,
}

/// Cached responses of one function to drop: of one path, or all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePurge {
    pub function: FunctionName,
    pub path: Option<String>,
}

/// Applies one command. Pure: the same state, command and position always give the same result.
pub fn apply(state: &mut ClusterState, cmd: &Command, at: LogPosition) -> (Response, Effects) {
    let mut fx = Effects::default();
    // Checked again here, not only when proposed: a proposer's view of the
    // version may be stale, and every replica must refuse the same entries.
    if let Err(reason) = cmd.allowed_at(state.cluster_version()) {
        return (Response::Rejected { reason }, fx);
    }
    let response = match cmd {
        Command::PutFunction { spec } => {
            fx.routes.push(spec.name.clone());
            // A redeploy invalidates, even of the same spec: it is how a user
            // says the function's answers may have changed.
            fx.purges.push(CachePurge { function: spec.name.clone(), path: None });
            let existed = state.functions.insert(spec.name.clone(), spec.clone()).is_some();
            // Running instances pick up the new spec on their next start; the desired
            // sets carry the spec, so agents must hear about it.
            fx.desired_changed = existed && state.live_instances(&spec.name).next().is_some();
            if existed {
                Response::FunctionUpdated
            } else {
                Response::FunctionCreated
            }
        }
        Command::RemoveFunction { name } => remove_function(state, name, &mut fx),
        Command::NodeSeen { node, capacity, at } => {
            record_node(state, node, *capacity, None, *at);
            Response::Ok
        }
        Command::StartInstance { function, node, at } => {
            if !state.functions.contains_key(function) {
                Response::NotFound { what: format!("function {function}") }
            } else if !state.nodes.contains_key(node) {
                Response::NotFound { what: format!("node {node}") }
            } else {
                fx.desired_changed = true;
                Response::InstanceStarted { id: new_instance(state, function, node, None, *at) }
            }
        }
        Command::StopInstance { id, reason, at } => {
            stop(state, *id, reason, *at, &mut fx);
            Response::Ok
        }
        Command::ReportInstance { node, report, at } => apply_instance_report(state, node, report, *at, &mut fx),
        Command::PruneGone { before } => {
            state.prune_gone(*before);
            Response::Ok
        }
        Command::Plan(plan) => apply_plan(state, plan, at, &mut fx),
        Command::Report { report, at } => {
            record_node(state, &report.node, report.capacity, Some(report), *at);
            for r in &report.instances {
                apply_instance_report(state, &report.node, r, *at, &mut fx);
            }
            Response::Ok
        }
        Command::SetDraining { node, draining, at } => match state.nodes.get_mut(node) {
            None => Response::NotFound { what: format!("node {node}") },
            Some(n) => {
                if n.draining != *draining {
                    n.draining = *draining;
                    n.state_since = *at;
                }
                Response::Ok
            }
        },
        Command::PutRules { rules } => {
            for rule in rules {
                state.rules.insert(rule.name.clone(), rule.clone());
            }
            Response::Ok
        }
        Command::RemoveRule { name } => match state.rules.remove(name) {
            Some(_) => {
                for memory in state.memory.values_mut() {
                    memory.firings.remove(name);
                }
                Response::Ok
            }
            None => Response::NotFound { what: format!("rule {name}") },
        },
        Command::CreateToken { token } => create_token(state, token),
        Command::RevokeToken { id } => match state.auth.tokens.remove(id) {
            Some(_) => Response::Ok,
            None => Response::NotFound { what: format!("token {id}") },
        },
        Command::BootstrapAdmin { token } => {
            if state.auth.bootstrapped {
                Response::Rejected { reason: "the cluster already has its first admin token".into() }
            } else {
                state.auth.bootstrapped = true;
                create_token(state, token)
            }
        }
        Command::SetAllowedRegistries { registries } => {
            state.allowed_registries = registries.clone();
            Response::Ok
        }
        Command::SetClusterVersion { version } => {
            state.version = state.cluster_version().max(*version);
            Response::Ok
        }
        Command::PurgeCache { function, path, .. } => {
            if state.functions.contains_key(function) {
                fx.purges.push(CachePurge { function: function.clone(), path: path.clone() });
                Response::Ok
            } else {
                Response::NotFound { what: format!("function {function}") }
            }
        }
        Command::SetClusterId { id } => match &state.cluster_id {
            None => {
                state.cluster_id = Some(id.clone());
                Response::Ok
            }
            Some(existing) if existing == id => Response::Ok,
            Some(existing) => Response::Rejected { reason: format!("the cluster already has the identity {existing}") },
        },
    };
    if fx.desired_changed {
        state.desired_revision += 1;
    }
    (response, fx)
}

fn create_token(state: &mut ClusterState, token: &TokenRecord) -> Response {
    if let Some(existing) = state.auth.tokens.get(&token.id) {
        // A retried proposal of the same token is a success; another token under the id is not.
        return if existing == token { Response::Ok } else { Response::Rejected { reason: format!("token id {} is taken", token.id) } };
    }
    if state.auth.tokens.len() >= MAX_TOKENS {
        return Response::Rejected { reason: format!("the cluster holds {MAX_TOKENS} tokens, the most it keeps: revoke unused ones (`sluice tokens ls`, `sluice tokens revoke`)") };
    }
    state.auth.tokens.insert(token.id.clone(), token.clone());
    Response::Ok
}

fn remove_function(state: &mut ClusterState, name: &FunctionName, fx: &mut Effects) -> Response {
    if state.functions.remove(name).is_none() {
        return Response::NotFound { what: format!("function {name}") };
    }
    fx.routes.push(name.clone());
    fx.purges.push(CachePurge { function: name.clone(), path: None });
    let live: Vec<InstanceId> = state.live_of(name).filter(|i| i.state != InstanceState::Stopping).map(|i| i.id).collect();
    for id in live {
        if let Some(inst) = state.instances.get_mut(&id) {
            inst.reason = Some("function removed".into());
            // Through the state's own method, so a paused instance's CPU is
            // counted again while it stops; the entry carries no time, so its
            // `state_since` stays as older versions left it.
            state.set_instance_state_untimed(id, InstanceState::Stopping);
            fx.desired_changed = true;
        }
    }
    state.memory.remove(name);
    Response::Ok
}

/// Records a node heard of at `at`; `report`, when there is one, carries the
/// facts only an agent's report has (labels, instance limit, images).
fn record_node(state: &mut ClusterState, node: &NodeId, capacity: Resources, report: Option<&NodeReport>, at: Timestamp) {
    let info = state.nodes.entry(node.clone()).or_insert_with(|| NodeInfo::new(node.clone(), capacity, at));
    info.capacity = capacity;
    info.recorded_at = at;
    if let Some(r) = report {
        info.labels = r.labels.clone();
        info.max_instances = r.max_instances;
        info.images = r.images.clone();
    }
}

fn new_instance(state: &mut ClusterState, function: &FunctionName, node: &NodeId, replaces: Option<InstanceId>, at: Timestamp) -> InstanceId {
    let reserved = state.functions.get(function).map(reservation).unwrap_or_default();
    state.next_instance = state.next_instance.max(1);
    let id = InstanceId(state.next_instance);
    state.next_instance += 1;
    state.insert_instance(Instance {
        id,
        function: function.clone(),
        node: node.clone(),
        state: InstanceState::Pending,
        endpoint: None,
        created_at: at,
        state_since: at,
        reason: None,
        replaces,
        addr: None,
        reserved,
    });
    id
}

/// Takes a serving instance out of service. False if it was not serving.
fn stop(state: &mut ClusterState, id: InstanceId, reason: &str, at: Timestamp, fx: &mut Effects) -> bool {
    let Some(inst) = state.instances.get_mut(&id) else { return false };
    if !is_serving_state(inst.state) {
        return false;
    }
    inst.reason = Some(reason.to_string());
    let (function, was_ready) = (inst.function.clone(), inst.state == InstanceState::Ready);
    state.set_instance_state(id, InstanceState::Stopping, at);
    fx.desired_changed = true;
    if was_ready {
        fx.routes.push(function);
    }
    true
}

fn apply_plan(state: &mut ClusterState, plan: &Plan, pos: LogPosition, fx: &mut Effects) -> Response {
    if plan.term != pos.term {
        // Proposed by a leader of another term and committed by this one (a
        // deposed leader's proposal, forwarded): its view is stale.
        let why = format!("plan made in term {} reached the log in term {}: a deposed leader's decisions are void", plan.term, pos.term);
        for d in &plan.decisions {
            fx.events.push(DecisionEvent::new(pos.index, pos.term, plan.at, d, state, Outcome::Refused { why: why.clone() }));
        }
        return Response::Rejected { reason: why };
    }
    let mut outcomes = Vec::with_capacity(plan.decisions.len());
    for d in &plan.decisions {
        // Resolve the event's subject before the action may change or prune it.
        let mut event = DecisionEvent::new(pos.index, pos.term, plan.at, d, state, Outcome::Done);
        let outcome = apply_decision(state, d, plan.at, fx);
        event.outcome = outcome.clone();
        if let Outcome::Started { id } = &outcome {
            event.instance = Some(*id);
        }
        fx.events.push(event);
        outcomes.push(outcome);
    }
    Response::Planned { outcomes }
}

fn apply_decision(state: &mut ClusterState, d: &Decision, at: Timestamp, fx: &mut Effects) -> Outcome {
    let refused = |why: String| Outcome::Refused { why };
    match &d.action {
        Action::Start { function, node, replaces, .. } => match check_start(state, function, node, *replaces) {
            Err(why) => refused(why),
            Ok(()) => {
                fx.desired_changed = true;
                Outcome::Started { id: new_instance(state, function, node, *replaces, at) }
            }
        },
        Action::Stop { id } => {
            let function = state.instances.get(id).map(|i| i.function.clone());
            if !stop(state, *id, &d.reason.to_string(), at, fx) {
                return refused(format!("instance {id} is not serving"));
            }
            if let (Some(f), Reason::Demand { .. } | Reason::Rule { .. }) = (function, &d.reason) {
                state.memory.entry(f).or_default().last_scale_down = Some(at);
            }
            Outcome::Done
        }
        Action::Pause { id } => match state.instances.get(id) {
            Some(i) if i.state == InstanceState::Ready => {
                let f = i.function.clone();
                state.set_instance_state(*id, InstanceState::Paused, at);
                fx.desired_changed = true;
                fx.routes.push(f);
                Outcome::Done
            }
            _ => refused(format!("instance {id} is not ready")),
        },
        Action::Resume { id } => match state.instances.get(id) {
            Some(i) if i.state == InstanceState::Paused => {
                // Its container passed its health check before it was frozen,
                // and a frozen container's sockets still accept connections
                // (answered when it thaws): it is routable at once, while its
                // agent's long poll sees it wanted running and unpauses it. One
                // paused before its endpoint was known waits for its agent's
                // Ready, as a start does.
                let (function, routable) = (i.function.clone(), i.endpoint.is_some());
                state.set_instance_state(*id, if routable { InstanceState::Ready } else { InstanceState::Starting }, at);
                fx.desired_changed = true;
                fx.routes.push(function);
                Outcome::Done
            }
            _ => refused(format!("instance {id} is not paused")),
        },
        Action::MarkLost { id } => {
            let Some(inst) = state.instances.get(id) else { return refused(format!("instance {id} does not exist")) };
            let node_down = state.nodes.get(&inst.node).is_some_and(|n| n.health == Health::Down);
            if !node_down || !inst.state.is_live() {
                return refused(format!("instance {id} is not live on a down node"));
            }
            let (function, was_serving) = (inst.function.clone(), is_serving_state(inst.state));
            if let Some(inst) = state.instances.get_mut(id) {
                inst.reason = Some(d.reason.to_string());
                inst.endpoint = None;
            }
            state.set_instance_state(*id, InstanceState::Gone, at);
            fx.desired_changed |= was_serving;
            fx.routes.push(function);
            Outcome::Done
        }
        Action::SetHealth { node, health } => match state.nodes.get_mut(node) {
            None => refused(format!("node {node} does not exist")),
            Some(n) => {
                if n.health != *health {
                    n.health = *health;
                    n.state_since = at;
                }
                Outcome::Done
            }
        },
        Action::Fired { function, rule, base } => {
            if !state.functions.contains_key(function) || !state.rules.contains_key(rule) {
                return refused(format!("function {function} or rule {rule} no longer exists"));
            }
            state.memory.entry(function.clone()).or_default().firings.insert(rule.clone(), Firing { at, base: *base });
            Outcome::Done
        }
        Action::Panic { function, ready } => {
            if !state.functions.contains_key(function) {
                return refused(format!("function {function} no longer exists"));
            }
            state.memory.entry(function.clone()).or_default().panic = Some(Firing { at, base: *ready });
            Outcome::Done
        }
        Action::Prune { before } => {
            state.prune_gone(*before);
            Outcome::Done
        }
    }
}

/// The conditions a placement must still meet when it is applied.
fn check_start(state: &ClusterState, function: &FunctionName, node: &NodeId, replaces: Option<InstanceId>) -> Result<(), String> {
    let spec = state.functions.get(function).ok_or_else(|| format!("function {function} no longer exists"))?;
    let info = state.nodes.get(node).ok_or_else(|| format!("node {node} does not exist"))?;
    if !info.schedulable() {
        return Err(format!("node {node} is {}", info.state_name()));
    }
    if !state.reserved_on(node).plus(&reservation(spec)).fits_within(&info.capacity) {
        return Err(format!("node {node} has no room left"));
    }
    let on_node = state.live_on(node).count() as u32;
    if info.max_instances.is_some_and(|max| on_node >= max) {
        return Err(format!("node {node} holds its maximum of instances"));
    }
    let replaced_live = replaces.is_some_and(|old| state.instances.get(&old).is_some_and(|i| &i.function == function && is_serving_state(i.state)));
    if replaces.is_some() && !replaced_live {
        return Err("the instance to replace is no longer serving".into());
    }
    let counted = state.counted_instances(function);
    if !replaced_live && counted >= spec.max_instances {
        return Err(format!("{function} already has its maximum of {} instances", spec.max_instances));
    }
    Ok(())
}

/// Merges an agent's observation. The coordinator's decisions win over stale
/// observations: an instance taken out of service never comes back to Ready.
fn apply_instance_report(state: &mut ClusterState, node: &NodeId, report: &InstanceReport, at: Timestamp, fx: &mut Effects) -> Response {
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
        // Pausing and resuming are the coordinator's decisions; its agent acts
        // on them a moment later, and until then its reports (every report
        // carries every instance) still show the state before. So an agent's
        // Paused is only ever an acknowledgement, and a paused instance moves
        // on only by a decision, or by its agent losing or stopping it: a late
        // Ready or Starting must not undo a pause, and a late Paused must not
        // undo a resume (the instance would then be routable in no one's view
        // but stay wanted frozen).
        (Paused, Paused) => true,
        (Paused, _) | (_, Paused) => false,
        (Pending | Starting | Ready, Starting | Ready) => true,
        (_, Pending) => false,
    };
    if !allowed {
        return Response::Ok;
    }
    if report.state == Gone && is_serving_state(inst.state) {
        fx.desired_changed = true;
    }
    if report.endpoint.is_some() || report.state == Gone {
        inst.endpoint = report.endpoint.clone();
    }
    if report.addr.is_some() || report.state == Gone {
        inst.addr = report.addr;
    }
    if report.reason.is_some() {
        inst.reason = report.reason.clone();
    }
    let (id, function) = (inst.id, inst.function.clone());
    state.set_instance_state(id, report.state, at);
    fx.routes.push(function);
    Response::Ok
}

#[cfg(test)]
mod tests;
