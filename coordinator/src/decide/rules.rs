//! Rules at work: for one function, which of its rules hold, which take
//! effect, and what they do to its count, its bounds, its idle instances and
//! its placement; and, for `sluice rules explain`, why each does or does not.
//!
//! A rule *holds* when its condition is true now and has been at every second
//! of its `for` duration; that is read back from the windows, so a new leader
//! knows at once what its predecessor knew. It *fires* when it holds and is
//! not in its cooldown; the firing is recorded in the replicated state (with
//! the instance count at that moment, which `scale_out(n)` and `scale_in(n)`
//! count from). Its actions are *in effect* while it holds and until its
//! cooldown after its last firing ends.
//!
//! Precedence, documented in docs/rules.md and tested in `scaler`:
//! 1. the default policy sizes the function (target tracking);
//! 2. of the rules in effect that change the count (`scale_to`,
//!    `scale_out`, `scale_in`, `prewarm`), the one of highest priority decides
//!    (ties: the name first in order), the others are overridden;
//! 3. `set_min` and `set_max` of the highest priority in effect replace the
//!    function's bounds, within 0 and its `max_instances`;
//! 4. the bounds clamp the count: nothing runs more than `max_instances`.
//!
//! Pure: evaluation reads the windows at the times it is given.

use super::placer::Preferences;
use crate::state::{ClusterState, Firing};
use crate::windows::{Agg, Metric, Scope, Windows};
use serde::Serialize;
use sluice_common::rules::{Action as RuleAction, CmpOp, Condition, EvalContext, Expr, Param, Rule, RuleName, RuleScope, Signal, WindowRef};
use sluice_common::{FunctionName, FunctionSpec, NodeId, Timestamp};
use std::collections::BTreeSet;
use std::time::Duration;

/// How far back `explain` looks for when a condition started to hold.
const EXPLAIN_LOOKBACK: Duration = Duration::from_secs(300);

/// A function's series, and the numbers rules may name, at one moment.
pub struct FunctionView<'a> {
    pub windows: &'a Windows,
    pub spec: &'a FunctionSpec,
    instances: Vec<Scope>,
    gateways: Vec<Scope>,
    hosts: Vec<Scope>,
    /// Live instances (`instances` in a rule).
    pub live: u32,
    pub at: Timestamp,
}

impl<'a> FunctionView<'a> {
    pub fn new(windows: &'a Windows, state: &ClusterState, spec: &'a FunctionSpec, live: u32, at: Timestamp) -> Self {
        let instances: Vec<Scope> = windows.instances_of(&spec.name).into_iter().map(Scope::Instance).collect();
        let gateways = windows.gateways_of(&spec.name).into_iter().map(|n| Scope::Gateway(n, spec.name.clone())).collect();
        let hosts: BTreeSet<NodeId> = state.live_of(&spec.name).map(|i| i.node.clone()).collect();
        Self { windows, spec, instances, gateways, hosts: hosts.into_iter().map(Scope::Node).collect(), live, at }
    }

    /// The same view at another moment.
    fn at(&self, at: Timestamp) -> FunctionView<'a> {
        FunctionView { windows: self.windows, spec: self.spec, instances: self.instances.clone(), gateways: self.gateways.clone(), hosts: self.hosts.clone(), live: self.live, at }
    }
}

impl EvalContext for FunctionView<'_> {
    fn window(&self, w: &WindowRef) -> Option<f64> {
        let (scopes, metrics, across) = signal_source(w.signal, self);
        match across {
            Across::Pool => self.windows.query_combined(scopes, metrics[0], w.agg, w.range, self.at),
            Across::Sum | Across::Max if w.agg == Agg::Rate => self.windows.query_combined(scopes, metrics[0], Agg::Rate, w.range, self.at),
            Across::Sum | Across::Max => aggregate(&per_slot(self.windows, scopes, metrics, across, w.range, self.at), w.agg),
        }
    }

    fn param(&self, p: Param) -> Option<f64> {
        let s = self.spec;
        Some(match p {
            Param::Target => s.scaling.target_per_instance(s.concurrency) * f64::from(self.live),
            Param::Instances => f64::from(self.live),
            Param::Min => f64::from(s.min_instances),
            Param::Max => f64::from(s.max_instances),
            Param::Concurrency => f64::from(s.concurrency),
        })
    }
}

/// How a signal's series of several scopes make one figure.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Across {
    /// Every sample of every scope together (container CPU over instances).
    Pool,
    /// Per second, summed over gateways (requests in flight add up).
    Sum,
    /// Per second, the worst gateway (latency).
    Max,
}

fn signal_source<'v>(signal: Signal, v: &'v FunctionView<'_>) -> (&'v [Scope], &'static [Metric], Across) {
    use Metric::*;
    match signal {
        Signal::HostCpu => (&v.hosts, &[HostCpuPercent], Across::Pool),
        Signal::HostMemory => (&v.hosts, &[HostMemoryUsedPercent], Across::Pool),
        Signal::HostLoad => (&v.hosts, &[HostLoad1], Across::Pool),
        Signal::ContainerCpu => (&v.instances, &[ContainerCpuPercent], Across::Pool),
        Signal::ContainerMemory => (&v.instances, &[ContainerMemoryUsedPercent], Across::Pool),
        Signal::FunctionRequests => (&v.gateways, &[GatewayRequestsTotal], Across::Sum),
        Signal::FunctionErrors => (&v.gateways, &[GatewayResponses5xxTotal], Across::Sum),
        Signal::FunctionColdStarts => (&v.gateways, &[GatewayColdStartsTotal], Across::Sum),
        Signal::FunctionShed => (&v.gateways, &[GatewayShedTotal], Across::Sum),
        Signal::FunctionInflight => (&v.gateways, &[GatewayInFlight], Across::Sum),
        Signal::FunctionQueue => (&v.gateways, &[GatewayQueued], Across::Sum),
        Signal::FunctionConcurrency => (&v.gateways, &[GatewayInFlight, GatewayQueued], Across::Sum),
        Signal::FunctionLatencyP50 => (&v.gateways, &[GatewayLatencyP50Seconds], Across::Max),
        Signal::FunctionLatencyP95 => (&v.gateways, &[GatewayLatencyP95Seconds], Across::Max),
        Signal::FunctionLatencyP99 => (&v.gateways, &[GatewayLatencyP99Seconds], Across::Max),
    }
}

/// Per-slot figures over `scopes`, each slot the sum (or max) over scopes of
/// the sum over `metrics` of the slot's mean, oldest first.
fn per_slot(windows: &Windows, scopes: &[Scope], metrics: &[Metric], across: Across, range: Duration, at: Timestamp) -> Vec<f64> {
    let mut slots: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
    for scope in scopes {
        let mut mine: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
        for metric in metrics {
            // Slot numbers need the step, known only once read: keep the start times.
            let mut readings = Vec::new();
            let Some(step) = windows.visit_slots(scope, *metric, range, at, |r| readings.push((r.first_ms, r.mean()))) else { continue };
            for (first_ms, mean) in readings {
                *mine.entry(first_ms / step).or_default() += mean;
            }
        }
        for (slot, v) in mine {
            let total = slots.entry(slot).or_insert(if across == Across::Max { f64::MIN } else { 0.0 });
            *total = if across == Across::Max { total.max(v) } else { *total + v };
        }
    }
    slots.into_values().collect()
}

/// `agg` of per-slot values (oldest first).
fn aggregate(values: &[f64], agg: Agg) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    match agg {
        Agg::Avg => Some(values.iter().sum::<f64>() / values.len() as f64),
        Agg::Min => values.iter().copied().reduce(f64::min),
        Agg::Max => values.iter().copied().reduce(f64::max),
        Agg::Last => values.last().copied(),
        Agg::Count => Some(values.len() as f64),
        Agg::P95 => {
            let mut v = values.to_vec();
            v.sort_by(f64::total_cmp);
            let rank = (95 * v.len()).div_ceil(100);
            v.get(rank.checked_sub(1)?).copied()
        }
        Agg::Rate => None,
    }
}

/// Whether a rule scope covers a function.
pub fn applies_to(rule: &Rule, spec: &FunctionSpec) -> bool {
    match &rule.scope {
        RuleScope::All => true,
        RuleScope::Function(f) => f == &spec.name,
        RuleScope::Labels(selector) => selector.matches(&spec.labels),
    }
}

/// When a condition has held since, looking back at most `lookback`; None if
/// it does not hold now. Evaluated second by second from the windows.
fn held_since(condition: &Condition, view: &FunctionView<'_>, lookback: Duration) -> Option<Timestamp> {
    condition.eval(view).filter(|b| *b)?;
    let mut since = view.at;
    while view.at.since(since) < lookback {
        let earlier = Timestamp(since.0.saturating_sub(1000));
        if condition.eval(&view.at(earlier)) != Some(true) {
            break;
        }
        since = earlier;
    }
    Some(since)
}

/// A count change a rule in effect asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountEffect {
    /// `scale_to(n)`.
    Exactly(u32),
    /// `scale_out(n)`: at least its base plus n.
    AtLeast(u32),
    /// `scale_in(n)`: at most its base minus n.
    AtMost(u32),
    /// `prewarm(n)`: n more than demand asks.
    Extra(u32),
}

/// What the rules in effect do to one function this round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleEffects {
    pub count: Option<(RuleName, CountEffect)>,
    pub min: Option<(RuleName, u32)>,
    pub max: Option<(RuleName, u32)>,
    pub pause_idle: Option<RuleName>,
    pub placement: Preferences,
    /// Rules firing now, with the count they fire at and their first window's value.
    pub fired: Vec<(RuleName, u32, Option<f64>)>,
}

/// One rule's state for one function, as `sluice rules explain` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub rule: RuleName,
    pub function: FunctionName,
    pub priority: i32,
    pub text: String,
    /// Each comparison with the values of its sides now.
    pub values: Vec<ComparisonValue>,
    /// True, false, or None when a value is missing (no data).
    pub condition: Option<bool>,
    /// Since when the condition has held (looking back 5 minutes at most).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holding_since: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_until: Option<Timestamp>,
    /// Whether its actions are in effect now.
    pub in_effect: bool,
    /// In words: why it is, or is not, in effect.
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonValue {
    pub comparison: String,
    pub left: Option<f64>,
    pub right: Option<f64>,
}

/// A rule's standing for one function at the view's moment.
struct Standing {
    condition: Option<bool>,
    holds: bool,
    holding_since: Option<Timestamp>,
    firing: Option<Firing>,
    in_cooldown: bool,
    fires_now: bool,
    in_effect: bool,
}

fn standing(rule: &Rule, view: &FunctionView<'_>, state: &ClusterState, lookback: Duration) -> Standing {
    let condition = rule.condition.eval(view);
    let holding_since = if condition == Some(true) { held_since(&rule.condition, view, lookback.max(rule.hold_for)) } else { None };
    let holds = holding_since.is_some_and(|since| view.at.since(since) >= rule.hold_for);
    let firing = state.memory.get(&view.spec.name).and_then(|m| m.firings.get(&rule.name)).copied();
    let in_cooldown = firing.is_some_and(|f| view.at.since(f.at) < rule.cooldown);
    // A rule with a cooldown or a relative count remembers its firings; one
    // without acts plainly while it holds.
    let remembers = !rule.cooldown.is_zero() || rule.actions.iter().any(|a| matches!(a, RuleAction::ScaleOut(_) | RuleAction::ScaleIn(_)));
    let fires_now = holds && !in_cooldown && remembers;
    Standing { condition, holds, holding_since, firing, in_cooldown, fires_now, in_effect: holds || in_cooldown }
}

/// The effects of every rule that covers `view.spec`, by precedence.
pub fn effects(rules: &[&Rule], view: &FunctionView<'_>, state: &ClusterState) -> RuleEffects {
    let mut out = RuleEffects::default();
    for rule in rules {
        let s = standing(rule, view, state, rule.hold_for);
        if !s.in_effect {
            continue;
        }
        let base = match (s.fires_now, s.firing) {
            (true, _) | (false, None) => view.live,
            (false, Some(f)) => f.base,
        };
        if s.fires_now {
            let value = rule.condition.windows().first().and_then(|w| view.window(w));
            out.fired.push((rule.name.clone(), view.live, value));
        }
        for action in &rule.actions {
            let name = || rule.name.clone();
            match action {
                RuleAction::ScaleTo(n) if out.count.is_none() => out.count = Some((name(), CountEffect::Exactly(*n))),
                RuleAction::ScaleOut(n) if out.count.is_none() => out.count = Some((name(), CountEffect::AtLeast(base.saturating_add(*n)))),
                RuleAction::ScaleIn(n) if out.count.is_none() => out.count = Some((name(), CountEffect::AtMost(base.saturating_sub(*n)))),
                RuleAction::Prewarm(n) if out.count.is_none() => out.count = Some((name(), CountEffect::Extra(*n))),
                RuleAction::SetMin(n) if out.min.is_none() => out.min = Some((name(), *n)),
                RuleAction::SetMax(n) if out.max.is_none() => out.max = Some((name(), *n)),
                RuleAction::PauseIdle if out.pause_idle.is_none() => out.pause_idle = Some(name()),
                RuleAction::PreferNodes(sel) => out.placement.prefer.push(sel.0.clone()),
                RuleAction::AvoidNodes(sel) => out.placement.avoid.push(sel.0.clone()),
                _ => {} // overridden by a rule of higher precedence
            }
        }
    }
    out
}

/// The rules covering `spec`, highest precedence first.
pub fn rules_for<'r>(state: &'r ClusterState, spec: &FunctionSpec) -> Vec<&'r Rule> {
    let mut rules: Vec<&Rule> = state.rules.values().filter(|r| applies_to(r, spec)).collect();
    rules.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name)));
    rules
}

/// Explains every rule (or the one named) for every function it covers.
pub fn explain(state: &ClusterState, windows: &Windows, only: Option<&RuleName>, now: Timestamp) -> Vec<Explanation> {
    let mut out = Vec::new();
    for spec in state.functions.values() {
        let rules = rules_for(state, spec);
        if rules.is_empty() {
            continue;
        }
        let live = state.counted_instances(&spec.name);
        let view = FunctionView::new(windows, state, spec, live, now);
        let fx = effects(&rules, &view, state);
        for rule in rules.iter().filter(|r| only.is_none_or(|n| &r.name == n)) {
            let s = standing(rule, &view, state, EXPLAIN_LOOKBACK);
            let why = why(rule, &s, &fx, &view);
            out.push(Explanation {
                rule: rule.name.clone(),
                function: spec.name.clone(),
                priority: rule.priority,
                text: rule.to_string(),
                values: comparisons(&rule.condition, &view),
                condition: s.condition,
                holding_since: s.holding_since,
                last_fired: s.firing.map(|f| f.at),
                cooldown_until: s.firing.filter(|_| s.in_cooldown).map(|f| f.at.plus(rule.cooldown)),
                in_effect: s.in_effect,
                why,
            });
        }
    }
    out
}

fn why(rule: &Rule, s: &Standing, fx: &RuleEffects, view: &FunctionView<'_>) -> String {
    let overridden: Vec<String> = rule
        .actions
        .iter()
        .filter_map(|a| {
            let winner = match a {
                RuleAction::ScaleTo(_) | RuleAction::ScaleOut(_) | RuleAction::ScaleIn(_) | RuleAction::Prewarm(_) => fx.count.as_ref().map(|c| &c.0),
                RuleAction::SetMin(_) => fx.min.as_ref().map(|c| &c.0),
                RuleAction::SetMax(_) => fx.max.as_ref().map(|c| &c.0),
                _ => None,
            }?;
            (winner != &rule.name).then(|| format!("{} is overridden by rule {winner}", a.name()))
        })
        .collect();
    let note = if overridden.is_empty() { String::new() } else { format!("; {}", overridden.join("; ")) };
    match (s.condition, s.holds, s.in_cooldown) {
        (None, _, false) => "no data for its condition yet (a window is empty): it cannot hold".into(),
        (Some(false), _, false) => "its condition is false".into(),
        (Some(true), false, false) => {
            let held = s.holding_since.map_or(Duration::ZERO, |since| view.at.since(since));
            format!("its condition has held for {} s of the {} s its `for` asks", held.as_secs(), rule.hold_for.as_secs())
        }
        (_, true, _) if s.fires_now => format!("it fires now{note}"),
        (_, true, _) => format!("it holds and is in effect{note}"),
        (_, false, true) => format!("its condition no longer holds, but its effect lasts until its cooldown ends{note}"),
    }
}

/// Each comparison of a condition with its sides' values.
fn comparisons(condition: &Condition, view: &FunctionView<'_>) -> Vec<ComparisonValue> {
    let mut out = Vec::new();
    collect(condition, view, &mut out);
    out
}

fn collect(c: &Condition, view: &FunctionView<'_>, out: &mut Vec<ComparisonValue>) {
    match c {
        Condition::Compare { left, op, right } => {
            out.push(ComparisonValue { comparison: format!("{left} {} {right}", op_str(*op)), left: Expr::eval(left, view), right: Expr::eval(right, view) })
        }
        Condition::And(a, b) | Condition::Or(a, b) => {
            collect(a, view, out);
            collect(b, view, out);
        }
        Condition::Not(a) => collect(a, view, out),
    }
}

fn op_str(op: CmpOp) -> &'static str {
    op.as_str()
}
