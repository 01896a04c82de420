//! The decision layer: one pure function from what the leader knows to the
//! plan it commits.
//!
//! ```text
//! state (read through the Raft barrier) ─┐
//! windows (metrics bus) + activity       ├─▶ plan():  1. node health (liveness)
//! liveness (agents, followers' notes)    │            2. per function: load, rules, scaler
//! rules (in the state)                   ┘            3. placer for every start
//!                                                     4. drain moves, housekeeping
//! ```
//!
//! The modules: `load` (concurrency from the windows, instance activity),
//! `rules` (which rules hold and what they do), `scaler` (the count),
//! `placer` (where), `nodes` (health and drains). None reads a clock or does
//! I/O: `controller` gathers the inputs and commits the plan.

pub mod calls;
pub mod load;
pub mod nodes;
pub mod placer;
pub mod rules;
pub mod scaler;

use crate::liveness::Liveness;
use crate::plan::{Action, Decision, PlacementNote, Plan, Reason};
use crate::state::{is_serving_state, ClusterState};
use crate::windows::{Agg, Metric, Scope, Windows};
use load::{function_load, Activity};
use placer::{Placer, Weights};
use sluice_common::predict::Hold;
use sluice_common::{FunctionName, InstanceId, InstanceState, Timestamp};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The leader's settings for decisions.
#[derive(Debug, Clone)]
pub struct DecideConfig {
    /// A node silent this long is suspect: it gets no new instances.
    pub suspect_after: Duration,
    /// A node silent this long is down: its instances are replaced.
    pub lost_after: Duration,
    /// How long gone instances stay visible in `sluice ls`.
    pub keep_gone_for: Duration,
    /// How long a new leader (or a coordinator whose windows just began to
    /// fill) waits before it stops anything: every gateway must have published
    /// to it first.
    pub view_wait: Duration,
    pub weights: Weights,
}

impl Default for DecideConfig {
    fn default() -> Self {
        Self {
            suspect_after: Duration::from_secs(5),
            lost_after: Duration::from_secs(15),
            keep_gone_for: Duration::from_secs(300),
            view_wait: Duration::from_secs(3),
            weights: Weights::default(),
        }
    }
}

/// Everything a decision reads.
pub struct Inputs<'a> {
    pub state: &'a ClusterState,
    pub windows: &'a Windows,
    pub activity: &'a Activity,
    pub liveness: &'a Liveness,
    /// Call rates between functions, both ways (see `Placer`).
    pub calls: &'a HashMap<FunctionName, Vec<(FunctionName, f64)>>,
    pub now: Timestamp,
    /// The term the leader decides in.
    pub term: u64,
    /// When it became leader (applied its term's first entry).
    pub leader_since: Timestamp,
    /// When this coordinator's windows began to fill.
    pub history_from: Timestamp,
    pub config: &'a DecideConfig,
    /// What each function's keep-warm model holds now (absent: nothing).
    pub holds: &'a HashMap<FunctionName, Hold>,
}

/// A round's outcome: the plan, and what could not be placed.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    pub plan: Plan,
    pub unplaced: Vec<(FunctionName, u32)>,
}

/// Host CPU over the last 30 s, what the placer's load score reads.
pub fn node_cpu(windows: &Windows, now: Timestamp) -> impl Fn(&sluice_common::NodeId) -> Option<f64> + '_ {
    move |node| windows.query(&Scope::Node(node.clone()), Metric::HostCpuPercent, Agg::Avg, Duration::from_secs(30), now)
}

/// Decides one round. Pure.
pub fn plan(i: &Inputs<'_>) -> Round {
    let state = i.state;
    let mut decisions = Vec::new();
    let mut unplaced = Vec::new();
    let thresholds = nodes::Thresholds { suspect_after: i.config.suspect_after, lost_after: i.config.lost_after };
    let lost = nodes::health(state, i.liveness, i.leader_since, i.now, thresholds, &mut decisions);
    let view_complete = i.now.since(i.leader_since) >= i.config.view_wait && i.now.since(i.history_from) >= i.config.view_wait;
    // Built on the first placement: a round with nothing to place skips it.
    let mut placer: Option<Placer> = None;
    let new_placer = || Placer::new(state, i.config.weights, node_cpu(i.windows, i.now), i.calls);
    let mut stopped: HashSet<InstanceId> = HashSet::new();
    let draining = |inst: &sluice_common::Instance| state.nodes.get(&inst.node).is_some_and(|n| n.draining);

    for spec in state.functions.values() {
        let mut instances: Vec<&sluice_common::Instance> = state.live_instances(&spec.name).filter(|x| lost.is_empty() || !lost.contains(&x.id)).collect();
        // An instance with a live replacement is counted through the replacement.
        if instances.iter().any(|x| x.replaces.is_some()) {
            let replaced: HashSet<InstanceId> = instances.iter().filter_map(|x| x.replaces).collect();
            instances.retain(|x| !replaced.contains(&x.id));
        }
        let load = function_load(i.windows, i.windows.gateway_scopes_of(&spec.name), &spec.scaling, i.now);
        let rules = rules::rules_for(state, spec);
        let effects = if rules.is_empty() {
            rules::RuleEffects::default()
        } else {
            let live = instances.iter().filter(|x| x.state != InstanceState::Paused).count() as u32;
            rules::effects(&rules, &rules::FunctionView::new(i.windows, state, spec, live, i.now), state)
        };
        for (rule, base, value) in &effects.fired {
            decisions.push(Decision {
                action: Action::Fired { function: spec.name.clone(), rule: rule.clone(), base: *base },
                reason: Reason::RuleFired { rule: rule.clone(), value: *value },
            });
        }
        let sizing = scaler::size(&scaler::FunctionInputs {
            spec,
            instances,
            load,
            rules: &effects,
            activity: i.activity,
            memory: state.memory.get(&spec.name),
            leaving: &draining,
            now: i.now,
            view_complete,
            hold: i.holds.get(&spec.name).copied().unwrap_or(Hold::NOTHING),
        });
        let reason = sizing.reason.clone().unwrap_or(Reason::Housekeeping);
        if let Some(ready) = sizing.enter_panic {
            decisions.push(Decision { action: Action::Panic { function: spec.name.clone(), ready }, reason: reason.clone() });
        }
        for (id, why) in sizing.stop {
            stopped.insert(id);
            decisions.push(Decision { action: Action::Stop { id }, reason: why });
        }
        for (id, why) in sizing.pause {
            stopped.insert(id);
            decisions.push(Decision { action: Action::Pause { id }, reason: why });
        }
        for id in sizing.resume {
            decisions.push(Decision { action: Action::Resume { id }, reason: reason.clone() });
        }
        let mut missing = 0;
        for _ in 0..sizing.start {
            match placer.get_or_insert_with(new_placer).place(spec, &effects.placement, None) {
                Some(c) => decisions.push(Decision {
                    action: Action::Start {
                        function: spec.name.clone(),
                        node: c.node,
                        replaces: None,
                        placement: PlacementNote { score: c.score, feasible: c.feasible, considered: c.considered },
                    },
                    reason: reason.clone(),
                }),
                None => missing += 1,
            }
        }
        if missing > 0 {
            unplaced.push((spec.name.clone(), missing));
        }
    }

    if state.nodes.values().any(|n| n.draining) {
        nodes::drain(state, placer.get_or_insert_with(new_placer), &stopped, &mut decisions, &mut unplaced);
    }

    let before = Timestamp(i.now.0.saturating_sub(i.config.keep_gone_for.as_millis() as u64));
    if state.instances.values().any(|x| x.state == InstanceState::Gone && x.state_since < before) {
        decisions.push(Decision { action: Action::Prune { before }, reason: Reason::Housekeeping });
    }
    Round { plan: Plan { term: i.term, at: i.now, decisions }, unplaced }
}

/// Every node's filters and scores for one more instance of `function`.
pub fn explain_placement(i: &Inputs<'_>, function: &FunctionName) -> Option<Vec<placer::NodeVerdict>> {
    let spec = i.state.functions.get(function)?;
    let placer = Placer::new(i.state, i.config.weights, node_cpu(i.windows, i.now), i.calls);
    let rules = rules::rules_for(i.state, spec);
    let live = i.state.live_instances(function).filter(|x| is_serving_state(x.state)).count() as u32;
    let prefs = rules::effects(&rules, &rules::FunctionView::new(i.windows, i.state, spec, live, i.now), i.state).placement;
    Some(placer.explain(spec, &prefs))
}

#[cfg(test)]
mod tests;
