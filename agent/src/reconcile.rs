//! The reconciler: what to do so a node's containers match its desired set.
//!
//! `plan` is a pure function of what the coordinator wants, what the runtime
//! shows and what the agent remembers, so each rule below is a table test and a
//! lost or repeated message can never leave a host wrong: the next pass repairs it.
//!
//! Rules, per instance (instances with an operation in flight are left alone):
//! - wanted, no container, never seen running here → `Start`
//! - wanted, no container, but it was running here → `Reap` (it vanished)
//! - wanted, container running, not known ready → `Adopt` (health check, then Ready)
//! - wanted paused but running → `Pause`; wanted running but paused → `Unpause`
//! - wanted, but its container exited, died or never started → `Reap`: reported
//!   Gone and removed, never restarted under the same id (the coordinator replaces it)
//! - already reported Gone → never started again; leftovers are `Discard`ed
//! - several containers for one instance → keep the liveliest, `Discard` the rest
//! - not wanted → `Retire`: stop, remove, report Gone

use crate::runtime::{ContainerId, ContainerInfo, ContainerStatus};
use sluice_common::{DesiredInstance, DesiredState, Endpoint, FunctionName, InstanceId, InstanceState};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// One step toward the desired state. At most one action per instance per plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pull if needed, create, start, wait for the health check.
    Start(DesiredInstance),
    /// A running container the agent does not know as ready (after an agent
    /// restart): health-check it, then report it Ready without recreating it.
    Adopt {
        desired: DesiredInstance,
        container: ContainerId,
        endpoint: Endpoint,
    },
    /// A paused container the agent does not know as paused: record it.
    MarkPaused {
        instance: InstanceId,
        function: FunctionName,
        endpoint: Option<Endpoint>,
    },
    Pause {
        instance: InstanceId,
        function: FunctionName,
        container: ContainerId,
        endpoint: Option<Endpoint>,
    },
    Unpause {
        instance: InstanceId,
        function: FunctionName,
        container: ContainerId,
        endpoint: Option<Endpoint>,
    },
    /// The instance is not wanted here: stop and remove its containers, report it Gone.
    Retire {
        instance: InstanceId,
        function: FunctionName,
        containers: Vec<ContainerId>,
        grace: Duration,
    },
    /// The instance died (exited, never started, vanished): report it Gone with
    /// `reason` and remove what is left of it.
    Reap {
        instance: InstanceId,
        function: FunctionName,
        containers: Vec<ContainerId>,
        reason: String,
    },
    /// Containers to stop and remove without touching the instance's report:
    /// duplicates, or leftovers of an instance already reported Gone.
    Discard {
        instance: InstanceId,
        function: FunctionName,
        containers: Vec<ContainerId>,
        grace: Duration,
    },
}

impl Action {
    /// The instance the action is about.
    pub fn instance(&self) -> InstanceId {
        match self {
            Action::Start(d) | Action::Adopt { desired: d, .. } => d.id,
            Action::MarkPaused { instance, .. }
            | Action::Pause { instance, .. }
            | Action::Unpause { instance, .. }
            | Action::Retire { instance, .. }
            | Action::Reap { instance, .. }
            | Action::Discard { instance, .. } => *instance,
        }
    }
}

/// Plans the actions that move `observed` toward `desired`.
///
/// `known` is the state the agent last recorded for each instance (Gone ones are
/// never run again); `busy` instances have an operation in flight and are left
/// for a later pass; `stop_grace` is how long a retired container gets to exit.
pub fn plan(desired: &[DesiredInstance], observed: &[ContainerInfo], known: &HashMap<InstanceId, InstanceState>, busy: &HashSet<InstanceId>, stop_grace: Duration) -> Vec<Action> {
    let wanted: BTreeMap<InstanceId, &DesiredInstance> = desired.iter().map(|d| (d.id, d)).collect();
    let mut containers: BTreeMap<InstanceId, Vec<&ContainerInfo>> = BTreeMap::new();
    for c in observed {
        containers.entry(c.instance).or_default().push(c);
    }
    let ids: BTreeSet<InstanceId> = wanted.keys().chain(containers.keys()).copied().collect();
    ids.into_iter()
        .filter(|id| !busy.contains(id))
        .filter_map(|id| {
            let mut found = containers.remove(&id).unwrap_or_default();
            // Liveliest first; ties broken by id so plans are deterministic.
            found.sort_by(|a, b| rank(b.status).cmp(&rank(a.status)).then_with(|| a.id.0.cmp(&b.id.0)));
            match wanted.get(&id) {
                None => retire(id, &found, stop_grace),
                Some(d) => plan_wanted(d, &found, known.get(&id).copied(), stop_grace),
            }
        })
        .collect()
}

fn retire(id: InstanceId, found: &[&ContainerInfo], grace: Duration) -> Option<Action> {
    let first = found.first()?;
    Some(Action::Retire { instance: id, function: first.function.clone(), containers: ids(found), grace })
}

fn plan_wanted(d: &DesiredInstance, found: &[&ContainerInfo], known: Option<InstanceState>, grace: Duration) -> Option<Action> {
    if known == Some(InstanceState::Gone) {
        // Reported Gone: the coordinator replaces it under a new id; whatever is
        // left goes, with no grace since nothing routes to it any more.
        return (!found.is_empty()).then(|| Action::Discard { instance: d.id, function: d.spec.name.clone(), containers: ids(found), grace: Duration::ZERO });
    }
    let Some((best, rest)) = found.split_first() else {
        return Some(match known {
            Some(InstanceState::Ready | InstanceState::Paused | InstanceState::Stopping) => reap(d, vec![], "its container disappeared".into()),
            _ => Action::Start(d.clone()),
        });
    };
    let alive = matches!(best.status, ContainerStatus::Running | ContainerStatus::Paused);
    if alive && !rest.is_empty() {
        return Some(Action::Discard { instance: d.id, function: d.spec.name.clone(), containers: ids(rest), grace });
    }
    let container = best.id.clone();
    let (function, endpoint) = (d.spec.name.clone(), best.endpoint.clone());
    match (best.status, d.state) {
        (ContainerStatus::Running, DesiredState::Paused) => Some(Action::Pause { instance: d.id, function, container, endpoint }),
        (ContainerStatus::Paused, DesiredState::Running) => Some(Action::Unpause { instance: d.id, function, container, endpoint }),
        (ContainerStatus::Running, DesiredState::Running) => match (endpoint, known) {
            (_, Some(InstanceState::Ready)) => None,
            (Some(endpoint), _) => Some(Action::Adopt { desired: d.clone(), container, endpoint }),
            (None, _) => Some(reap(d, ids(found), "its running container publishes no port".into())),
        },
        (ContainerStatus::Paused, DesiredState::Paused) => (known != Some(InstanceState::Paused)).then_some(Action::MarkPaused { instance: d.id, function, endpoint }),
        (ContainerStatus::Exited { code }, _) => {
            let reason = match code {
                Some(code) => format!("its container exited with code {code}"),
                None => "its container exited".to_string(),
            };
            Some(reap(d, ids(found), reason))
        }
        (ContainerStatus::Created, _) => Some(reap(d, ids(found), "its container was created but never started".into())),
        (ContainerStatus::Other, _) => Some(reap(d, ids(found), "its container is dead or restarting".into())),
    }
}

fn reap(d: &DesiredInstance, containers: Vec<ContainerId>, reason: String) -> Action {
    Action::Reap { instance: d.id, function: d.spec.name.clone(), containers, reason }
}

fn ids(found: &[&ContainerInfo]) -> Vec<ContainerId> {
    found.iter().map(|c| c.id.clone()).collect()
}

/// Which container of an instance to keep: the one closest to serving.
fn rank(status: ContainerStatus) -> u8 {
    match status {
        ContainerStatus::Running => 4,
        ContainerStatus::Paused => 3,
        ContainerStatus::Created => 2,
        ContainerStatus::Exited { .. } => 1,
        ContainerStatus::Other => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::{FunctionSpec, ImageRef};
    use ContainerStatus::{Created, Exited, Other, Paused, Running};
    use InstanceState as S;

    const GRACE: Duration = Duration::from_secs(10);

    fn f() -> FunctionName {
        FunctionName::new("hello").unwrap()
    }

    fn want(id: u64, state: DesiredState) -> DesiredInstance {
        DesiredInstance { id: InstanceId(id), spec: FunctionSpec::new(f(), ImageRef::parse("sluice/hello").unwrap()), state }
    }

    fn run(id: u64) -> DesiredInstance {
        want(id, DesiredState::Running)
    }

    fn ep(port: u16) -> Endpoint {
        Endpoint::published("127.0.0.1", port)
    }

    fn c(container: &str, instance: u64, status: ContainerStatus) -> ContainerInfo {
        let live = matches!(status, Running | Paused);
        ContainerInfo { id: cid(container), instance: InstanceId(instance), function: f(), status, endpoint: live.then(|| ep(4000)), addr: None }
    }

    fn cid(s: &str) -> ContainerId {
        ContainerId(s.into())
    }

    struct Case {
        name: &'static str,
        desired: Vec<DesiredInstance>,
        observed: Vec<ContainerInfo>,
        known: Vec<(u64, InstanceState)>,
        busy: Vec<u64>,
        want: Vec<Action>,
    }

    fn case(name: &'static str, desired: Vec<DesiredInstance>, observed: Vec<ContainerInfo>, want: Vec<Action>) -> Case {
        Case { name, desired, observed, known: vec![], busy: vec![], want }
    }

    impl Case {
        fn known(mut self, k: Vec<(u64, InstanceState)>) -> Self {
            self.known = k;
            self
        }
        fn busy(mut self, b: Vec<u64>) -> Self {
            self.busy = b;
            self
        }
    }

    #[test]
    fn plans() {
        let i = InstanceId;
        let cases = vec![
            case("nothing wanted, nothing there", vec![], vec![], vec![]),
            case("wanted and missing: start", vec![run(1)], vec![], vec![Action::Start(run(1))]),
            case("wanted paused and missing: start (pause follows)", vec![want(1, DesiredState::Paused)], vec![], vec![Action::Start(want(1, DesiredState::Paused))]),
            case("starting: left alone", vec![run(1)], vec![c("a", 1, Created)], vec![]).busy(vec![1]),
            case("known ready and running: nothing to do", vec![run(1)], vec![c("a", 1, Running)], vec![]).known(vec![(1, S::Ready)]),
            case(
                "running but not known (agent restart): adopt",
                vec![run(1)],
                vec![c("a", 1, Running)],
                vec![Action::Adopt { desired: run(1), container: cid("a"), endpoint: ep(4000) }],
            ),
            case(
                "paused but not known: record it",
                vec![want(1, DesiredState::Paused)],
                vec![c("a", 1, Paused)],
                vec![Action::MarkPaused { instance: i(1), function: f(), endpoint: Some(ep(4000)) }],
            ),
            case("paused and known paused: nothing", vec![want(1, DesiredState::Paused)], vec![c("a", 1, Paused)], vec![]).known(vec![(1, S::Paused)]),
            case(
                "wanted paused, running: pause",
                vec![want(1, DesiredState::Paused)],
                vec![c("a", 1, Running)],
                vec![Action::Pause { instance: i(1), function: f(), container: cid("a"), endpoint: Some(ep(4000)) }],
            )
            .known(vec![(1, S::Ready)]),
            case(
                "wanted running, paused: unpause",
                vec![run(1)],
                vec![c("a", 1, Paused)],
                vec![Action::Unpause { instance: i(1), function: f(), container: cid("a"), endpoint: Some(ep(4000)) }],
            )
            .known(vec![(1, S::Paused)]),
            case("not wanted: retire", vec![], vec![c("a", 1, Running)], vec![Action::Retire { instance: i(1), function: f(), containers: vec![cid("a")], grace: GRACE }])
                .known(vec![(1, S::Ready)]),
            case(
                "not wanted, exited: retire removes it too",
                vec![],
                vec![c("a", 1, Exited { code: Some(0) })],
                vec![Action::Retire { instance: i(1), function: f(), containers: vec![cid("a")], grace: GRACE }],
            ),
            case("not wanted but busy: wait", vec![], vec![c("a", 1, Running)], vec![]).busy(vec![1]),
            case(
                "crashed: reaped, not restarted",
                vec![run(1)],
                vec![c("a", 1, Exited { code: Some(137) })],
                vec![Action::Reap { instance: i(1), function: f(), containers: vec![cid("a")], reason: "its container exited with code 137".into() }],
            )
            .known(vec![(1, S::Ready)]),
            case(
                "dead: reaped",
                vec![run(1)],
                vec![c("a", 1, Other)],
                vec![Action::Reap { instance: i(1), function: f(), containers: vec![cid("a")], reason: "its container is dead or restarting".into() }],
            ),
            case(
                "created, never started (agent died mid-start): reaped",
                vec![run(1)],
                vec![c("a", 1, Created)],
                vec![Action::Reap { instance: i(1), function: f(), containers: vec![cid("a")], reason: "its container was created but never started".into() }],
            ),
            case(
                "was ready, container vanished: reaped, not restarted",
                vec![run(1)],
                vec![],
                vec![Action::Reap { instance: i(1), function: f(), containers: vec![], reason: "its container disappeared".into() }],
            )
            .known(vec![(1, S::Ready)]),
            case("reported gone, nothing left: never started again", vec![run(1)], vec![], vec![]).known(vec![(1, S::Gone)]),
            case(
                "reported gone, container left: discarded quietly",
                vec![run(1)],
                vec![c("a", 1, Running)],
                vec![Action::Discard { instance: i(1), function: f(), containers: vec![cid("a")], grace: Duration::ZERO }],
            )
            .known(vec![(1, S::Gone)]),
            case(
                "duplicates: keep the running one, discard the rest",
                vec![run(1)],
                vec![c("b", 1, Exited { code: Some(0) }), c("c", 1, Running), c("a", 1, Created)],
                vec![Action::Discard { instance: i(1), function: f(), containers: vec![cid("a"), cid("b")], grace: GRACE }],
            )
            .known(vec![(1, S::Ready)]),
            case(
                "duplicates of the same status: keep the lowest id",
                vec![run(1)],
                vec![c("b", 1, Running), c("a", 1, Running)],
                vec![Action::Discard { instance: i(1), function: f(), containers: vec![cid("b")], grace: GRACE }],
            )
            .known(vec![(1, S::Ready)]),
            case(
                "duplicates all dead: reap them all",
                vec![run(1)],
                vec![c("a", 1, Exited { code: None }), c("b", 1, Exited { code: Some(1) })],
                vec![Action::Reap { instance: i(1), function: f(), containers: vec![cid("a"), cid("b")], reason: "its container exited".into() }],
            ),
            case(
                "running without a published port: reaped",
                vec![run(1)],
                vec![ContainerInfo { endpoint: None, ..c("a", 1, Running) }],
                vec![Action::Reap { instance: i(1), function: f(), containers: vec![cid("a")], reason: "its running container publishes no port".into() }],
            ),
            case(
                "several instances at once, in id order",
                vec![run(3), run(1), want(2, DesiredState::Paused)],
                vec![c("x", 2, Running), c("y", 9, Running)],
                vec![
                    Action::Start(run(1)),
                    Action::Pause { instance: i(2), function: f(), container: cid("x"), endpoint: Some(ep(4000)) },
                    Action::Start(run(3)),
                    Action::Retire { instance: i(9), function: f(), containers: vec![cid("y")], grace: GRACE },
                ],
            )
            .known(vec![(2, S::Ready)]),
        ];
        for case in cases {
            let known: HashMap<_, _> = case.known.iter().map(|(id, s)| (InstanceId(*id), *s)).collect();
            let busy: HashSet<_> = case.busy.iter().copied().map(InstanceId).collect();
            let got = plan(&case.desired, &case.observed, &known, &busy, GRACE);
            assert_eq!(got, case.want, "case: {}", case.name);
        }
    }

    #[test]
    fn at_most_one_action_per_instance() {
        let desired = vec![run(1), run(2), want(3, DesiredState::Paused)];
        let observed = vec![c("a", 1, Running), c("b", 1, Running), c("c", 2, Exited { code: Some(1) }), c("d", 3, Running), c("e", 4, Paused)];
        let got = plan(&desired, &observed, &HashMap::new(), &HashSet::new(), GRACE);
        let mut seen = HashSet::new();
        for action in &got {
            assert!(seen.insert(action.instance()), "two actions for {}: {got:?}", action.instance());
        }
        assert_eq!(seen.len(), 4);
    }
}
