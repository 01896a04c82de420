//! Tests of `apply`: instance lifecycles, agent reports, and plans re-checked
//! when they apply.

use super::*;
use crate::plan::{Mode, PlacementNote};
use sluice_common::{Endpoint, ImageRef};

const POS: LogPosition = LogPosition { index: 1, term: 3 };

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
    let endpoint = (s == InstanceState::Ready).then(|| Endpoint::published("127.0.0.1", 4000));
    InstanceReport { id, function: name(f), state: s, endpoint, reason: None, addr: None }
}
fn node_report(n: &str, cpu: u64, instances: Vec<InstanceReport>) -> Command {
    let report = NodeReport {
        node: node(n),
        capacity: Resources { cpu_millis: cpu, memory_mb: 4096 },
        instances,
        at: Timestamp(1),
        labels: Default::default(),
        max_instances: None,
        images: Default::default(),
        agent_addr: None,
    };
    Command::Report { report, at: Timestamp(1) }
}
fn demand() -> Reason {
    Reason::Demand { desired: 1, live: 0, stable: 1.0, panic: 1.0, now: 1.0, target: 2.8, mode: Mode::Stable }
}
fn start(f: &str, n: &str) -> Decision {
    Decision { action: Action::Start { function: name(f), node: node(n), replaces: None, placement: PlacementNote { score: 1.0, feasible: 1, considered: 1 } }, reason: demand() }
}
fn plan(term: u64, decisions: Vec<Decision>) -> Command {
    Command::Plan(Plan { term, at: Timestamp(2), decisions })
}
fn outcomes(r: Response) -> Vec<Outcome> {
    match r {
        Response::Planned { outcomes } => outcomes,
        other => panic!("not a plan response: {other:?}"),
    }
}

fn cluster_with_instance() -> (ClusterState, InstanceId) {
    let mut st = ClusterState::default();
    apply(&mut st, &Command::PutFunction { spec: spec("hello") }, POS);
    apply(&mut st, &node_report("n1", 4000, vec![]), POS);
    let (r, e) = apply(&mut st, &plan(3, vec![start("hello", "n1")]), POS);
    assert!(e.desired_changed);
    let [Outcome::Started { id }] = outcomes(r)[..] else { panic!("not started") };
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
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Ready)]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Ready);
    assert!(st.instances[&id].endpoint.is_some());
    let (_, e) = apply(&mut st, &plan(3, vec![Decision { action: Action::Stop { id }, reason: demand() }]), POS);
    assert!(e.desired_changed);
    // Taking a ready instance out of service changes its function's route.
    assert_eq!(e.routes, vec![name("hello")]);
    // a stale Ready report must not bring it back
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Ready)]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Stopping);
    assert!(st.desired_for(&node("n1")).instances.is_empty());
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Gone)]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Gone);
    assert_eq!(st.reserved_on(&node("n1")), Resources::default(), "a gone instance reserves nothing");
    apply(&mut st, &Command::PruneGone { before: Timestamp(7) }, POS);
    assert!(st.instances.is_empty());
}

#[test]
fn a_crash_report_frees_the_slot() {
    let (mut st, id) = cluster_with_instance();
    let (_, e) = apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Gone)]), POS);
    assert!(e.desired_changed);
    assert_eq!(st.live_instances(&name("hello")).count(), 0);
}

#[test]
fn reports_from_the_wrong_node_are_rejected() {
    let (mut st, id) = cluster_with_instance();
    apply(&mut st, &node_report("n2", 4000, vec![report(id, "hello", InstanceState::Gone)]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Pending);
}

#[test]
fn unknown_reported_ids_are_never_reused() {
    let mut st = ClusterState::default();
    apply(&mut st, &node_report("n1", 4000, vec![report(InstanceId(41), "hello", InstanceState::Ready)]), POS);
    apply(&mut st, &Command::PutFunction { spec: spec("hello") }, POS);
    let r = apply(&mut st, &plan(3, vec![start("hello", "n1")]), POS).0;
    assert_eq!(outcomes(r), vec![Outcome::Started { id: InstanceId(42) }]);
}

#[test]
fn removing_a_function_stops_its_instances() {
    let (mut st, id) = cluster_with_instance();
    let (r, e) = apply(&mut st, &Command::RemoveFunction { name: name("hello") }, POS);
    assert_eq!(r, Response::Ok);
    assert!(e.desired_changed);
    assert_eq!(st.instances[&id].state, InstanceState::Stopping);
    let (r, _) = apply(&mut st, &Command::RemoveFunction { name: name("hello") }, POS);
    assert!(matches!(r, Response::NotFound { .. }));
}

#[test]
fn a_plan_from_another_term_changes_nothing() {
    // A deposed leader's controller proposes after it lost leadership; raft
    // forwards the proposal and the new leader commits it in its own term.
    let (mut st, _) = cluster_with_instance();
    let before = st.clone();
    let (r, e) = apply(&mut st, &plan(2, vec![start("hello", "n1")]), POS);
    assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
    assert_eq!(st, before);
    assert!(!e.desired_changed);
    assert!(e.events.iter().all(|ev| matches!(ev.outcome, Outcome::Refused { .. })));
}

#[test]
fn placements_are_rechecked_against_capacity_and_max() {
    let mut st = ClusterState::default();
    let mut s = spec("hello");
    s.max_instances = 3;
    apply(&mut st, &Command::PutFunction { spec: s }, POS);
    apply(&mut st, &node_report("n1", 500, vec![]), POS);
    apply(&mut st, &node_report("n2", 4000, vec![]), POS);
    // n1 holds two at 250 millis; the third is refused there, the fourth by max.
    let r = apply(&mut st, &plan(3, vec![start("hello", "n1"), start("hello", "n1"), start("hello", "n1"), start("hello", "n2"), start("hello", "n2")]), POS).0;
    let o = outcomes(r);
    assert!(matches!(o[0], Outcome::Started { .. }) && matches!(o[1], Outcome::Started { .. }));
    assert!(matches!(&o[2], Outcome::Refused { why } if why.contains("no room")), "{:?}", o[2]);
    assert!(matches!(o[3], Outcome::Started { .. }));
    assert!(matches!(&o[4], Outcome::Refused { why } if why.contains("maximum")), "{:?}", o[4]);
    assert_eq!(st.counted_instances(&name("hello")), 3);
}

#[test]
fn a_replacement_may_exceed_max_by_the_instance_it_replaces() {
    let (mut st, id) = cluster_with_instance();
    st.functions.get_mut(&name("hello")).unwrap().max_instances = 1;
    apply(&mut st, &node_report("n2", 4000, vec![]), POS);
    let moved = Decision {
        action: Action::Start { function: name("hello"), node: node("n2"), replaces: Some(id), placement: PlacementNote { score: 1.0, feasible: 1, considered: 2 } },
        reason: Reason::Drain { node: node("n1") },
    };
    let o = outcomes(apply(&mut st, &plan(3, vec![moved.clone()]), POS).0);
    assert!(matches!(o[0], Outcome::Started { .. }), "{o:?}");
    assert_eq!(st.counted_instances(&name("hello")), 1, "the old one counts through its replacement");
    // A second replacement of the same instance, or a plain start, is over max.
    let o = outcomes(apply(&mut st, &plan(3, vec![start("hello", "n2")]), POS).0);
    assert!(matches!(o[0], Outcome::Refused { .. }), "{o:?}");
}

#[test]
fn draining_and_down_nodes_take_no_new_instances() {
    let (mut st, _) = cluster_with_instance();
    apply(&mut st, &Command::SetDraining { node: node("n1"), draining: true, at: Timestamp(5) }, POS);
    let o = outcomes(apply(&mut st, &plan(3, vec![start("hello", "n1")]), POS).0);
    assert!(matches!(&o[0], Outcome::Refused { why } if why.contains("draining")), "{o:?}");
    apply(&mut st, &Command::SetDraining { node: node("n1"), draining: false, at: Timestamp(6) }, POS);
    let down = Decision { action: Action::SetHealth { node: node("n1"), health: Health::Down }, reason: Reason::Liveness { silent_secs: 20 } };
    apply(&mut st, &plan(3, vec![down]), POS);
    let o = outcomes(apply(&mut st, &plan(3, vec![start("hello", "n1")]), POS).0);
    assert!(matches!(&o[0], Outcome::Refused { why } if why.contains("down")), "{o:?}");
}

#[test]
fn instances_on_a_down_node_are_lost_and_stay_lost() {
    let (mut st, id) = cluster_with_instance();
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Ready)]), POS);
    let lost = Decision { action: Action::MarkLost { id }, reason: Reason::NodeLost { node: node("n1") } };
    // Not while the node is up.
    assert!(matches!(outcomes(apply(&mut st, &plan(3, vec![lost.clone()]), POS).0)[0], Outcome::Refused { .. }));
    let down = Decision { action: Action::SetHealth { node: node("n1"), health: Health::Down }, reason: Reason::Liveness { silent_secs: 20 } };
    let (_, e) = apply(&mut st, &plan(3, vec![down, lost]), POS);
    assert!(e.desired_changed);
    assert_eq!(st.instances[&id].state, InstanceState::Gone);
    // The agent comes back and still reports it running: it stays gone.
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Ready)]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Gone);
    assert!(st.desired_for(&node("n1")).instances.is_empty());
}

#[test]
fn the_index_survives_a_snapshot() {
    let (mut st, id) = cluster_with_instance();
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Ready)]), POS);
    let text = serde_json::to_string(&st).unwrap();
    let back: ClusterState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, st);
    assert_eq!(back.live_instances(&name("hello")).count(), 1);
    assert_eq!(back.reserved_on(&node("n1")), st.reserved_on(&node("n1")));
}

#[test]
fn commands_round_trip_through_json() {
    let cmd = plan(4, vec![start("hello", "n1"), Decision { action: Action::Stop { id: InstanceId(3) }, reason: demand() }]);
    let text = serde_json::to_string(&cmd).unwrap();
    assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), cmd);
    // An entry an older version wrote still reads.
    let old = r#"{"type":"stop_instance","id":3,"reason":"idle","at":9}"#;
    assert!(matches!(serde_json::from_str::<Command>(old).unwrap(), Command::StopInstance { .. }));
}

fn decide(action: Action) -> Decision {
    Decision { action, reason: demand() }
}

/// What the index says `node` holds, checked against the same state decoded
/// afresh (which rebuilds the index from the instances alone).
fn reserved(st: &ClusterState, n: &str) -> Resources {
    let fresh: ClusterState = serde_json::from_str(&serde_json::to_string(st).unwrap()).unwrap();
    assert_eq!(fresh.reserved_on(&node(n)), st.reserved_on(&node(n)), "the index kept through the transitions matches one rebuilt");
    st.reserved_on(&node(n))
}

fn ready_instance() -> (ClusterState, InstanceId) {
    let (mut st, id) = cluster_with_instance();
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Ready)]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Ready);
    (st, id)
}

fn paused_instance() -> (ClusterState, InstanceId) {
    let (mut st, id) = ready_instance();
    let o = outcomes(apply(&mut st, &plan(3, vec![decide(Action::Pause { id })]), POS).0);
    assert_eq!(o, vec![Outcome::Done]);
    (st, id)
}

#[test]
fn a_paused_instance_holds_its_memory_but_no_cpu_through_every_transition() {
    let full = Resources { cpu_millis: 250, memory_mb: 128 };
    let frozen = Resources { cpu_millis: 0, memory_mb: 128 };
    let (mut st, id) = ready_instance();
    assert_eq!(reserved(&st, "n1"), full);
    apply(&mut st, &plan(3, vec![decide(Action::Pause { id })]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Paused);
    assert_eq!(reserved(&st, "n1"), frozen, "paused: memory only");
    // The agent's acknowledgement changes nothing.
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Paused)]), POS);
    assert_eq!(reserved(&st, "n1"), frozen);
    apply(&mut st, &plan(3, vec![decide(Action::Resume { id })]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Ready);
    assert_eq!(reserved(&st, "n1"), full, "resumed: its CPU is back");
    apply(&mut st, &plan(3, vec![decide(Action::Pause { id })]), POS);
    apply(&mut st, &plan(3, vec![decide(Action::Resume { id })]), POS);
    assert_eq!(reserved(&st, "n1"), full, "a second round trip leaves nothing behind");
    apply(&mut st, &plan(3, vec![decide(Action::Stop { id })]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Stopping);
    assert_eq!(reserved(&st, "n1"), full, "a stopping container still holds it all");
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Gone)]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Gone);
    assert_eq!(reserved(&st, "n1"), Resources::default());
}

#[test]
fn stopping_a_paused_instance_counts_its_cpu_again() {
    let (mut st, id) = paused_instance();
    apply(&mut st, &plan(3, vec![decide(Action::Stop { id })]), POS);
    assert_eq!(reserved(&st, "n1"), Resources { cpu_millis: 250, memory_mb: 128 });
    // Removing a function stops its paused instances the same way.
    let (mut st, id) = paused_instance();
    apply(&mut st, &Command::RemoveFunction { name: name("hello") }, POS);
    assert_eq!(st.instances[&id].state, InstanceState::Stopping);
    assert_eq!(reserved(&st, "n1"), Resources { cpu_millis: 250, memory_mb: 128 });
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Gone)]), POS);
    assert_eq!(reserved(&st, "n1"), Resources::default());
}

#[test]
fn a_resume_makes_the_instance_ready_and_routable_at_once() {
    let (mut st, id) = paused_instance();
    assert_eq!(st.desired_for(&node("n1")).instances[0].state, sluice_common::DesiredState::Paused);
    let (r, e) = apply(&mut st, &plan(3, vec![decide(Action::Resume { id })]), POS);
    assert_eq!(outcomes(r), vec![Outcome::Done]);
    assert_eq!(st.instances[&id].state, InstanceState::Ready, "its container passed its health check before it was frozen");
    assert!(st.instances[&id].endpoint.is_some());
    assert!(e.desired_changed, "its agent must hear it is wanted running");
    assert_eq!(e.routes, vec![name("hello")], "the gateways must route to it");
    assert_eq!(st.desired_for(&node("n1")).instances[0].state, sluice_common::DesiredState::Running);
    // A second resume of the same instance (two gateways asked) is refused, harmlessly.
    let o = outcomes(apply(&mut st, &plan(3, vec![decide(Action::Resume { id })]), POS).0);
    assert!(matches!(&o[0], Outcome::Refused { why } if why.contains("not paused")), "{o:?}");
    assert_eq!(st.instances[&id].state, InstanceState::Ready);
}

#[test]
fn a_paused_instance_without_an_endpoint_resumes_through_starting() {
    let (mut st, id) = cluster_with_instance();
    let mut ready = report(id, "hello", InstanceState::Ready);
    ready.endpoint = None;
    apply(&mut st, &node_report("n1", 4000, vec![ready]), POS);
    apply(&mut st, &plan(3, vec![decide(Action::Pause { id })]), POS);
    apply(&mut st, &plan(3, vec![decide(Action::Resume { id })]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Starting, "nowhere to route yet: its agent's Ready says where");
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Ready)]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Ready);
}

#[test]
fn late_agent_reports_undo_neither_a_pause_nor_a_resume() {
    let (mut st, id) = paused_instance();
    // The agent has not paused it yet: its reports still say Ready (or, from a
    // start long ago, Starting). The pause stands.
    for late in [InstanceState::Ready, InstanceState::Starting, InstanceState::Pending] {
        apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", late)]), POS);
        assert_eq!(st.instances[&id].state, InstanceState::Paused, "a late {late} report");
    }
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Paused)]), POS);
    apply(&mut st, &plan(3, vec![decide(Action::Resume { id })]), POS);
    // The agent has not unpaused it yet: its reports still say Paused. The resume stands.
    let (_, e) = apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Paused)]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Ready);
    assert!(!e.desired_changed);
    assert_eq!(reserved(&st, "n1"), Resources { cpu_millis: 250, memory_mb: 128 });
    // And its Ready once thawed changes nothing.
    apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Ready)]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Ready);
    // Losing a paused container is the agent's to say.
    let (mut st, id) = paused_instance();
    let (_, e) = apply(&mut st, &node_report("n1", 4000, vec![report(id, "hello", InstanceState::Gone)]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Gone);
    assert!(e.desired_changed);
    assert_eq!(reserved(&st, "n1"), Resources::default());
}

#[test]
fn a_paused_instances_cpu_may_be_placed_and_its_resume_still_applies() {
    let mut st = ClusterState::default();
    apply(&mut st, &Command::PutFunction { spec: spec("hello") }, POS);
    // Room for two at 250 millis.
    apply(&mut st, &node_report("n1", 500, vec![]), POS);
    let o = outcomes(apply(&mut st, &plan(3, vec![start("hello", "n1"), start("hello", "n1")]), POS).0);
    let [Outcome::Started { id: a }, Outcome::Started { .. }] = o[..] else { panic!("{o:?}") };
    apply(&mut st, &node_report("n1", 500, vec![report(a, "hello", InstanceState::Ready)]), POS);
    apply(&mut st, &plan(3, vec![decide(Action::Pause { id: a })]), POS);
    // Its CPU is free for a third.
    let o = outcomes(apply(&mut st, &plan(3, vec![start("hello", "n1")]), POS).0);
    assert!(matches!(o[0], Outcome::Started { .. }), "{o:?}");
    // Resuming it takes the node past its CPU (a quota, shared under contention,
    // not a failure): a waiting request is served rather than refused...
    let o = outcomes(apply(&mut st, &plan(3, vec![decide(Action::Resume { id: a })]), POS).0);
    assert_eq!(o, vec![Outcome::Done]);
    assert_eq!(reserved(&st, "n1"), Resources { cpu_millis: 750, memory_mb: 384 });
    // ...and the node takes nothing more until it is back under.
    let o = outcomes(apply(&mut st, &plan(3, vec![start("hello", "n1")]), POS).0);
    assert!(matches!(&o[0], Outcome::Refused { why } if why.contains("no room")), "{o:?}");
}

/// Every replica refuses a kind newer than the committed cluster version, the
/// same way, even if a proposer let it through; the identity is set once.
#[test]
fn kinds_newer_than_the_cluster_version_are_refused_when_applied() {
    let mut state = ClusterState::default();
    let set_id = Command::SetClusterId { id: "c1".into() };
    assert!(matches!(apply(&mut state, &set_id, POS).0, Response::Rejected { reason } if reason.contains("cluster version 2")));
    assert_eq!(state.cluster_id, None);
    assert_eq!(apply(&mut state, &Command::SetClusterVersion { version: 2 }, POS).0, Response::Ok);
    assert_eq!(apply(&mut state, &Command::SetClusterVersion { version: 1 }, POS).0, Response::Ok);
    assert_eq!(state.cluster_version(), 2, "never lowered");
    assert_eq!(apply(&mut state, &set_id, POS).0, Response::Ok);
    assert!(matches!(apply(&mut state, &Command::SetClusterId { id: "c2".into() }, POS).0, Response::Rejected { .. }));
    assert_eq!(state.cluster_id.as_deref(), Some("c1"));
    // Both survive a snapshot; an older snapshot, without them, is at version 1.
    let decoded: ClusterState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!((decoded.cluster_version(), decoded.cluster_id.as_deref()), (2, Some("c1")));
    let old: ClusterState = serde_json::from_str(r#"{"functions":{},"instances":{},"nodes":{},"next_instance":1,"desired_revision":0}"#).unwrap();
    assert_eq!((old.cluster_version(), old.cluster_id), (1, None));
}

/// A purge is a version-2 kind that changes no state: every gateway drops
/// what it names as it applies it. Deploying again, or removing, purges all.
#[test]
fn cache_purges_are_effects_of_purges_redeploys_and_removals() {
    let mut state = ClusterState::default();
    let f = name("web");
    let purge = Command::PurgeCache { function: f.clone(), path: Some("/a".into()), at: Timestamp(5) };
    assert_eq!(purge.introduced_in(), 2);
    assert!(matches!(apply(&mut state, &purge, POS).0, Response::Rejected { reason } if reason.contains("cluster version 2")));
    apply(&mut state, &Command::SetClusterVersion { version: 2 }, POS);
    assert!(matches!(apply(&mut state, &purge, POS).0, Response::NotFound { .. }));
    let (_, fx) = apply(&mut state, &Command::PutFunction { spec: spec("web") }, POS);
    assert_eq!(fx.purges, vec![CachePurge { function: f.clone(), path: None }]);
    let before = state.clone();
    let (r, fx) = apply(&mut state, &purge, POS);
    assert_eq!((r, fx.purges), (Response::Ok, vec![CachePurge { function: f.clone(), path: Some("/a".into()) }]));
    assert_eq!(state, before, "the state keeps nothing of a purge");
    let (_, fx) = apply(&mut state, &Command::PutFunction { spec: spec("web") }, POS);
    assert_eq!(fx.purges.len(), 1, "the same spec deployed again still purges");
    let (_, fx) = apply(&mut state, &Command::RemoveFunction { name: f.clone() }, POS);
    assert_eq!(fx.purges, vec![CachePurge { function: f, path: None }]);
}
