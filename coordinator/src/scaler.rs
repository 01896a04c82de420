//! The reactive scaler: how many instances each function should have, now.
//!
//! Policy: one instance per `concurrency` requests in flight or queued, started at
//! once when demand appears; an instance idle for the function's idle timeout is
//! stopped, down to `min_instances` (zero allowed). Starting instances count as
//! capacity, so a burst never starts more instances than the burst needs.

use crate::load::LoadSnapshot;
use crate::state::ClusterState;
use sluice_common::{FunctionName, FunctionSpec, Instance, InstanceId, InstanceState, Timestamp};
use std::time::Duration;

/// Extra time an instance gets beyond its start timeout before the coordinator
/// gives up on it (its agent normally reports the failure first).
pub const START_GRACE: Duration = Duration::from_secs(10);

/// What the scaler wants done; the placer and the state machine carry it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start { function: FunctionName, count: u32 },
    Stop { id: InstanceId, reason: StopReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Idle,
    AboveMax,
    StartTimedOut,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Idle => "idle",
            StopReason::AboveMax => "above max_instances",
            StopReason::StartTimedOut => "start timed out",
        }
    }
}

/// Decides scaling actions for every function. Pure: reads no clock.
pub fn decide(state: &ClusterState, load: &LoadSnapshot, now: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    for spec in state.functions.values() {
        decide_function(state, spec, load, now, &mut actions);
    }
    actions
}

fn decide_function(state: &ClusterState, spec: &FunctionSpec, load: &LoadSnapshot, now: Timestamp, actions: &mut Vec<Action>) {
    let mut live: Vec<&Instance> = state.live_instances(&spec.name).collect();

    // Instances stuck before Ready for too long are given up on.
    let give_up_after = spec.start_timeout() + START_GRACE;
    live.retain(|i| {
        let stuck = matches!(i.state, InstanceState::Pending | InstanceState::Starting) && now.since(i.state_since) > give_up_after;
        if stuck {
            actions.push(Action::Stop { id: i.id, reason: StopReason::StartTimedOut });
        }
        !stuck
    });

    let demand = load.function(&spec.name);
    let needed = (demand.in_flight + demand.queued).div_ceil(spec.concurrency);
    let target = needed.clamp(spec.min_instances, spec.max_instances);
    let count = live.len() as u32;

    if count < target {
        actions.push(Action::Start { function: spec.name.clone(), count: target - count });
        return;
    }

    // Above max (e.g. after the spec was lowered): drop the least useful first.
    let mut surplus = count.saturating_sub(spec.max_instances);
    if surplus > 0 {
        live.sort_by_key(|i| (usefulness(i.state), outstanding(load, i.id), std::cmp::Reverse(i.id)));
        for i in live.drain(..surplus as usize) {
            actions.push(Action::Stop { id: i.id, reason: StopReason::AboveMax });
        }
    }

    // Idle instances go, longest idle first, keeping what demand and min need.
    let keep = target.max(spec.min_instances) as usize;
    surplus = live.len().saturating_sub(keep) as u32;
    let mut idle: Vec<(Duration, InstanceId)> = live
        .iter()
        .filter(|i| i.state == InstanceState::Ready && outstanding(load, i.id) == 0)
        .map(|i| (idle_for(load, i, now), i.id))
        .filter(|(idle, _)| *idle >= spec.idle_timeout())
        .collect();
    idle.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, id) in idle.into_iter().take(surplus as usize) {
        actions.push(Action::Stop { id, reason: StopReason::Idle });
    }
}

fn outstanding(load: &LoadSnapshot, id: InstanceId) -> u32 {
    load.instances.get(&id).map_or(0, |l| l.outstanding)
}

/// How long an instance has served nothing: since its last request, or since it
/// became ready if it never served one.
fn idle_for(load: &LoadSnapshot, i: &Instance, now: Timestamp) -> Duration {
    let last = load.instances.get(&i.id).map_or(i.state_since, |l| l.last_active.max(i.state_since));
    now.since(last)
}

/// Lower is dropped first when over max.
fn usefulness(s: InstanceState) -> u8 {
    match s {
        InstanceState::Pending => 0,
        InstanceState::Starting => 1,
        InstanceState::Paused => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{FunctionLoad, InstanceLoad};
    use sluice_common::{ImageRef, NodeId};

    const T0: Timestamp = Timestamp(1_000_000);

    fn name() -> FunctionName {
        FunctionName::new("f").unwrap()
    }

    fn state(min: u32, max: u32, concurrency: u32, instances: &[(u64, InstanceState, u64)]) -> ClusterState {
        let mut spec = FunctionSpec::new(name(), ImageRef::parse("img").unwrap());
        spec.min_instances = min;
        spec.max_instances = max;
        spec.concurrency = concurrency;
        spec.idle_timeout_secs = 60;
        spec.start_timeout_secs = 30;
        let mut st = ClusterState::default();
        st.functions.insert(name(), spec);
        for &(id, s, since_ms) in instances {
            st.instances.insert(
                InstanceId(id),
                Instance {
                    id: InstanceId(id),
                    function: name(),
                    node: NodeId::new("n1").unwrap(),
                    state: s,
                    endpoint: None,
                    created_at: Timestamp(since_ms),
                    state_since: Timestamp(since_ms),
                    reason: None,
                },
            );
        }
        st
    }

    fn load(in_flight: u32, queued: u32, instances: &[(u64, u32, u64)]) -> LoadSnapshot {
        let mut l = LoadSnapshot::default();
        l.functions.insert(name(), FunctionLoad { in_flight, queued });
        for &(id, outstanding, last) in instances {
            l.instances.insert(InstanceId(id), InstanceLoad { outstanding, last_active: Timestamp(last) });
        }
        l
    }

    fn start(count: u32) -> Action {
        Action::Start { function: name(), count }
    }
    fn stop(id: u64, reason: StopReason) -> Action {
        Action::Stop { id: InstanceId(id), reason }
    }

    use InstanceState::*;
    const MIN: u64 = 60_000;

    #[test]
    fn decisions_table() {
        let now = T0;
        let cases: Vec<(&str, ClusterState, LoadSnapshot, Vec<Action>)> = vec![
            ("idle and at zero: nothing", state(0, 10, 4, &[]), load(0, 0, &[]), vec![]),
            ("min keeps instances up", state(2, 10, 4, &[]), load(0, 0, &[]), vec![start(2)]),
            ("one queued request starts one instance", state(0, 10, 4, &[]), load(0, 1, &[]), vec![start(1)]),
            ("50 queued at concurrency 4 start 10 (max)", state(0, 10, 4, &[]), load(0, 50, &[]), vec![start(10)]),
            ("50 queued at concurrency 10 start 5", state(0, 10, 10, &[]), load(0, 50, &[]), vec![start(5)]),
            ("starting instances count as capacity", state(0, 10, 4, &[(1, Starting, T0.0 - 100)]), load(0, 4, &[]), vec![]),
            ("in-flight plus queued beyond capacity adds one", state(0, 10, 4, &[(1, Ready, 0)]), load(4, 1, &[(1, 4, T0.0)]), vec![start(1)]),
            (
                "busy instance is never stopped",
                state(0, 10, 4, &[(1, Ready, 0)]),
                load(1, 0, &[(1, 1, T0.0 - 10 * MIN)]),
                vec![],
            ),
            ("idle past timeout stops (to zero)", state(0, 10, 4, &[(1, Ready, 0)]), load(0, 0, &[(1, 0, T0.0 - 2 * MIN)]), vec![stop(1, StopReason::Idle)]),
            ("idle under timeout stays", state(0, 10, 4, &[(1, Ready, 0)]), load(0, 0, &[(1, 0, T0.0 - MIN / 2)]), vec![]),
            (
                "never used: idle counts from ready",
                state(0, 10, 4, &[(1, Ready, T0.0 - 2 * MIN)]),
                load(0, 0, &[]),
                vec![stop(1, StopReason::Idle)],
            ),
            ("min is kept even when idle", state(1, 10, 4, &[(1, Ready, 0)]), load(0, 0, &[(1, 0, 0)]), vec![]),
            (
                "longest idle goes first, one kept for demand",
                state(0, 10, 4, &[(1, Ready, 0), (2, Ready, 0), (3, Ready, 0)]),
                load(2, 0, &[(1, 0, T0.0 - 2 * MIN), (2, 0, T0.0 - 3 * MIN), (3, 2, T0.0)]),
                vec![stop(2, StopReason::Idle), stop(1, StopReason::Idle)],
            ),
            (
                "above max drops starting before ready",
                state(0, 1, 4, &[(1, Ready, 0), (2, Starting, T0.0)]),
                load(1, 0, &[(1, 1, T0.0)]),
                vec![stop(2, StopReason::AboveMax)],
            ),
            (
                "stuck starting is given up and replaced",
                state(1, 10, 4, &[(1, Starting, T0.0 - 41_000)]),
                load(0, 0, &[]),
                vec![stop(1, StopReason::StartTimedOut), start(1)],
            ),
            ("stopping instances do not count", state(1, 10, 4, &[(1, Stopping, 0)]), load(0, 0, &[]), vec![start(1)]),
        ];
        for (what, st, l, expected) in cases {
            assert_eq!(decide(&st, &l, now), expected, "{what}");
        }
    }

    #[test]
    fn an_hour_of_idleness_in_a_millisecond() {
        // Time is an input: walk a function through a burst and an idle hour.
        let mut st = state(0, 10, 4, &[]);
        assert_eq!(decide(&st, &load(0, 8, &[]), T0), vec![start(2)]);
        st = state(0, 10, 4, &[(1, Ready, T0.0), (2, Ready, T0.0)]);
        let mut t = T0;
        let mut stopped = Vec::new();
        while t.0 < T0.0 + 3_600_000 && stopped.len() < 2 {
            t = t.plus(Duration::from_secs(10));
            for a in decide(&st, &load(0, 0, &[(1, 0, T0.0), (2, 0, T0.0)]), t) {
                if let Action::Stop { id, .. } = a {
                    st.instances.get_mut(&id).unwrap().state = Stopping;
                    stopped.push((id, t));
                }
            }
        }
        assert_eq!(stopped.len(), 2);
        assert!(stopped.iter().all(|(_, at)| at.since(T0) >= Duration::from_secs(60) && at.since(T0) <= Duration::from_secs(70)));
    }
}
