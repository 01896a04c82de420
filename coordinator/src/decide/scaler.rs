//! The scaler: how many instances one function should have now, and which to
//! start, resume, pause or stop to get there.
//!
//! The default policy is target tracking over windowed concurrency, as in
//! Knative's autoscaler: the stable window's mean concurrency divided by the
//! concurrency one instance should carry (`target_utilization_percent` of
//! `concurrency`). It grows as soon as the panic window asks for more, and
//! shrinks only as the stable window asks for less. When the panic window asks
//! for `panic_threshold_percent` of the instances ready, the function enters
//! panic mode (remembered in the state, with that ready count): it does not
//! scale down while its panic window's peak over the last stable window still
//! asks for that much, so it leaves a stable window after the surge. Requests
//! waiting now always get room at once, and room stays for the busiest second
//! of the panic window (the burst floor: one instance per `concurrency` in
//! flight or queued at the gateways).
//!
//! The function's keep-warm model then raises the count to what it holds for
//! the moment (`hold`: pre-warmed ahead of an expected call, or kept through
//! an idle time expected to end), split into hot instances and paused ones:
//! idle instances beyond the hot count are paused rather than stopped while
//! the model holds them, and started ahead (then paused) when it holds more
//! than there are. Rules then apply by precedence (see `rules`), the bounds clamp, and
//! scale-downs are held back: until the leader's view of load is complete,
//! during panic mode, within `scale_down_step_secs` of the last one, and to at
//! most `scale_down_max_percent` of the instances at a time. The last instance
//! stays for the scale-to-zero grace (`idle_timeout_secs`) after the last
//! request. An instance with requests on it is never chosen to stop.

use super::load::{Activity, FunctionLoad};
use super::rules::{CountEffect, RuleEffects};
use crate::plan::{Mode, Reason};
use crate::state::ScalingMemory;
use sluice_common::predict::Hold;
use sluice_common::{FunctionSpec, Instance, InstanceId, InstanceState, Timestamp};
use std::time::Duration;

/// Extra time an instance gets beyond its start timeout before the coordinator
/// gives up on it (its agent normally reports the failure first).
pub const START_GRACE: Duration = Duration::from_secs(10);

/// Everything the scaler reads about one function.
pub struct FunctionInputs<'a> {
    pub spec: &'a FunctionSpec,
    /// Its serving instances (pending, starting, ready, paused), less any being
    /// replaced by a drain move and any lost this round.
    pub instances: Vec<&'a Instance>,
    pub load: FunctionLoad,
    pub rules: &'a RuleEffects,
    pub activity: &'a Activity,
    pub memory: Option<&'a ScalingMemory>,
    /// Instances on draining nodes: stopped first when there is a choice.
    pub leaving: &'a dyn Fn(&Instance) -> bool,
    pub now: Timestamp,
    /// The leader has everyone's load: stops may be decided.
    pub view_complete: bool,
    /// What the keep-warm model holds now (`Hold::NOTHING` when prediction is off).
    pub hold: Hold,
}

/// What to do with one function.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sizing {
    /// The count wanted, and why.
    pub desired: u32,
    pub reason: Option<Reason>,
    pub start: u32,
    pub resume: Vec<InstanceId>,
    pub pause: Vec<(InstanceId, Reason)>,
    pub stop: Vec<(InstanceId, Reason)>,
    /// Panic mode starts now, at this many ready instances.
    pub enter_panic: Option<u32>,
}

/// Sizes one function. Pure.
pub fn size(i: &FunctionInputs<'_>) -> Sizing {
    let spec = i.spec;
    let mut out = Sizing::default();

    // Instances stuck before Ready for too long are given up on.
    let give_up_after = spec.start_timeout() + START_GRACE;
    let mut active: Vec<&Instance> = Vec::new();
    let mut paused: Vec<&Instance> = Vec::new();
    for inst in &i.instances {
        let waited = i.now.since(inst.state_since);
        match inst.state {
            InstanceState::Pending | InstanceState::Starting if waited > give_up_after => {
                out.stop.push((inst.id, Reason::StartTimedOut { waited_secs: waited.as_secs() }));
            }
            InstanceState::Paused => paused.push(inst),
            _ => active.push(inst),
        }
    }
    let live = active.len() as u32;
    let ready = active.iter().filter(|x| x.state == InstanceState::Ready).count() as u32;

    // 1. The default policy. Up on the panic window, down on the stable one,
    // never below the room the last seconds' peak needed.
    let target = spec.scaling.target_per_instance(spec.concurrency);
    let per = |c: f64, t: f64| (c / t - 1e-9).ceil().max(0.0) as u32;
    let threshold = f64::from(spec.scaling.panic_threshold_percent) / 100.0;
    let crossing = i.load.panic / target >= threshold * f64::from(ready.max(1));
    let remembered = i.memory.and_then(|m| m.panic).is_some_and(|p| i.load.panic_peak / target >= threshold * f64::from(p.base.max(1)));
    let panicking = crossing || remembered;
    if crossing && !remembered {
        out.enter_panic = Some(ready);
    }
    let (stable, panic) = (per(i.load.stable, target), per(i.load.panic, target));
    let burst = per(i.load.now.max(i.load.recent_peak), f64::from(spec.concurrency));
    let mut policy = stable.max(burst);
    if panic > live {
        policy = policy.max(panic);
    }
    if panicking {
        policy = policy.max(live);
    }
    let mode = if panicking { Mode::Panic } else { Mode::Stable };
    let demand = |desired| Reason::Demand { desired, live, stable: i.load.stable, panic: i.load.panic, now: i.load.now, target, mode };
    let predicted = || Reason::Predicted { hot: i.hold.hot, paused: i.hold.paused, live, why: i.hold.why };
    let base = if i.hold.hot > policy {
        policy = i.hold.hot;
        predicted()
    } else {
        demand(policy)
    };

    // 2. Rules that change the count.
    let (mut desired, mut reason) = match &i.rules.count {
        None => (policy, base),
        Some((rule, effect)) => {
            let d = match *effect {
                CountEffect::Exactly(n) => n,
                CountEffect::AtLeast(n) => policy.max(n),
                CountEffect::AtMost(n) => policy.min(n),
                CountEffect::Extra(n) => policy.saturating_add(n),
            };
            (d, Reason::Rule { rule: rule.clone(), desired: d, live })
        }
    };

    // 3. Bounds: rules may move them, never past max_instances.
    let max = i.rules.max.as_ref().map_or(spec.max_instances, |(_, m)| (*m).min(spec.max_instances));
    let min = i.rules.min.as_ref().map_or(spec.min_instances, |(_, m)| *m).min(max);
    if desired > max {
        desired = max;
        reason = match &i.rules.max {
            Some((rule, _)) => Reason::Rule { rule: rule.clone(), desired, live },
            None => Reason::Maximum { max, live },
        };
    } else if desired < min {
        desired = min;
        reason = match &i.rules.min {
            Some((rule, _)) => Reason::Rule { rule: rule.clone(), desired, live },
            None => Reason::Minimum { min, live },
        };
    }

    // 4. The scale-to-zero grace keeps the last instance a while after the last request.
    if desired == 0 && live > 0 {
        let last_active = active.iter().map(|x| i.activity.last_active(x.id).unwrap_or(x.state_since).max(x.state_since)).max();
        if last_active.is_some_and(|t| i.now.since(t) < spec.idle_timeout()) {
            desired = 1;
        }
    }
    out.desired = desired;
    // The model's hold is a floor on all instances, hot and paused: those
    // beyond the hot count wanted are kept paused. A rule that sets the count
    // owns it, and the maximum caps both.
    let keep_paused = if i.rules.count.is_some() { 0 } else { i.hold.total().min(max).saturating_sub(desired) };

    if desired > live {
        let mut need = desired - live;
        for p in paused.iter().take(need as usize) {
            out.resume.push(p.id);
            need -= 1;
        }
        // Paused instances already count against the maximum.
        let room = max.saturating_sub(live + paused.len() as u32);
        out.start = need.min(room);
        out.reason = Some(reason);
        return out;
    }

    // Pre-warm: the model holds more paused instances than there are idle
    // ones to pause; start them now (they are paused once ready).
    let surplus = live - desired;
    let short = keep_paused.saturating_sub(paused.len() as u32 + surplus);
    if short > 0 {
        out.start = short.min(max.saturating_sub(live + paused.len() as u32));
        out.reason = Some(predicted());
    }

    // Paused instances the model does not hold, and no rule keeps paused, go
    // after the grace (the longest paused first).
    if i.rules.pause_idle.is_none() {
        let mut by_age = paused.clone();
        by_age.sort_by_key(|p| (p.state_since, p.id));
        let unwanted = (paused.len() as u32).saturating_sub(keep_paused) as usize;
        for p in by_age.into_iter().take(unwanted) {
            if i.now.since(p.state_since) >= spec.idle_timeout() && i.view_complete {
                out.stop.push((p.id, reason.clone()));
            }
        }
    }
    if desired == live || !i.view_complete {
        out.reason.get_or_insert(reason);
        return out;
    }

    // 5. Fewer instances: how many may go now.
    let above_max = (live + paused.len() as u32).saturating_sub(max);
    let held_back = (panicking && i.rules.count.is_none()) || i.memory.and_then(|m| m.last_scale_down).is_some_and(|t| i.now.since(t) < spec.scaling.scale_down_step());
    let at_most = ((u64::from(live) * u64::from(spec.scaling.scale_down_max_percent)) / 100).max(1) as u32;
    let wanted = live - desired;
    let remove = if held_back { above_max.min(wanted) } else { wanted.min(at_most).max(above_max.min(wanted)) };
    let mut candidates: Vec<&Instance> = active.iter().copied().filter(|x| remove > 0 && (above_max > 0 || i.activity.outstanding(x.id, i.now) == 0)).collect();
    candidates.sort_by_key(|x| {
        let idle = i.now.since(i.activity.last_active(x.id).unwrap_or(x.state_since).max(x.state_since));
        (!(i.leaving)(x), usefulness(x.state), i.activity.outstanding(x.id, i.now), std::cmp::Reverse(idle), std::cmp::Reverse(x.id))
    });
    let mut to_pause = keep_paused.saturating_sub(paused.len() as u32);
    for victim in candidates.into_iter().take(remove as usize) {
        match &i.rules.pause_idle {
            Some(rule) if victim.state == InstanceState::Ready => out.pause.push((victim.id, Reason::PauseIdle { rule: rule.clone() })),
            _ if to_pause > 0 && victim.state == InstanceState::Ready => {
                to_pause -= 1;
                out.pause.push((victim.id, predicted()));
            }
            _ => out.stop.push((victim.id, reason.clone())),
        }
    }
    out.reason.get_or_insert(reason);
    out
}

/// Lower goes first when some must stop.
fn usefulness(s: InstanceState) -> u8 {
    match s {
        InstanceState::Pending => 0,
        InstanceState::Starting => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests;
