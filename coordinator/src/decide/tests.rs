//! The decision layer run second by second over synthetic load: a simulated
//! gateway feeds the windows, each round's plan is applied to the state, and
//! a simulated agent makes placed instances ready at once. Time is an input,
//! so ten minutes of scaling take milliseconds.

use super::*;
use crate::plan::{Mode, Reason};
use crate::state_machine::{apply, Command, LogPosition};
use crate::windows::WindowsConfig;
use sluice_common::rules::{Rule, RuleSource};
use sluice_common::wire::InstanceActivity;
use sluice_common::{FunctionSpec, ImageRef, InstanceReport, NodeId, NodeReport, Resources};

const T0: u64 = 1_700_000_000_000;

pub struct Sim {
    pub state: ClusterState,
    pub windows: Windows,
    pub activity: Activity,
    pub liveness: Liveness,
    pub config: DecideConfig,
    pub now: Timestamp,
    pub leader_since: Timestamp,
    pub history_from: Timestamp,
    pub term: u64,
    index: u64,
    busy_seconds: f64,
    last_active: HashMap<sluice_common::InstanceId, u64>,
    /// Every decision applied so far.
    pub reasons: Vec<Reason>,
    /// What the keep-warm models hold (set by hand here).
    pub holds: HashMap<FunctionName, Hold>,
}

pub fn fname() -> FunctionName {
    FunctionName::new("f").unwrap()
}

impl Sim {
    /// One function `f` (concurrency 4) and `nodes` nodes of 16 cores each.
    pub fn new(nodes: usize, adjust: impl FnOnce(&mut FunctionSpec)) -> Sim {
        let mut spec = FunctionSpec::new(fname(), ImageRef::parse("img").unwrap());
        spec.max_instances = 50;
        adjust(&mut spec);
        let mut sim = Sim {
            state: ClusterState::default(),
            windows: Windows::new(WindowsConfig::default()),
            activity: Activity::default(),
            liveness: Liveness::default(),
            config: DecideConfig::default(),
            now: Timestamp(T0),
            leader_since: Timestamp(T0 - 600_000),
            history_from: Timestamp(T0 - 600_000),
            term: 1,
            index: 0,
            busy_seconds: 0.0,
            last_active: HashMap::new(),
            reasons: Vec::new(),
            holds: HashMap::new(),
        };
        sim.apply(Command::PutFunction { spec });
        for n in 0..nodes {
            let report = NodeReport {
                node: NodeId::new(format!("n{n}")).unwrap(),
                capacity: Resources { cpu_millis: 16_000, memory_mb: 65_536 },
                instances: vec![],
                at: sim.now,
                labels: [("zone".to_string(), if n % 2 == 0 { "a" } else { "b" }.to_string())].into(),
                max_instances: None,
                images: Default::default(),
                agent_addr: None,
            };
            sim.apply(Command::Report { report, at: sim.now });
        }
        sim
    }

    pub fn apply(&mut self, cmd: Command) {
        self.index += 1;
        let (_, fx) = apply(&mut self.state, &cmd, LogPosition { index: self.index, term: self.term });
        for e in fx.events {
            self.reasons.push(e.reason);
        }
    }

    pub fn rule(&mut self, name: &str, priority: i32, text: &str) {
        let rule = Rule::from_source(RuleSource { name: name.into(), scope: "function:f".into(), priority, rule: text.into() }).unwrap();
        self.apply(Command::PutRules { rules: vec![rule] });
    }

    pub fn ready(&self) -> u32 {
        self.state.live_instances(&fname()).filter(|i| i.state == sluice_common::InstanceState::Ready).count() as u32
    }

    /// One second with `concurrency` requests in the gateway: figures, a round, its plan applied.
    pub fn second(&mut self, concurrency: f64) -> Round {
        self.now = self.now.plus(Duration::from_secs(1));
        let capacity = f64::from(self.ready() * 4);
        let in_flight = concurrency.min(capacity);
        let queued = (concurrency - in_flight).max(0.0);
        self.busy_seconds += concurrency;
        let gw = Scope::Gateway(NodeId::new("coordinator-1").unwrap(), fname());
        let ts = self.now;
        for (m, v) in [(Metric::GatewayInFlight, in_flight), (Metric::GatewayQueued, queued), (Metric::GatewayRequestSecondsTotal, self.busy_seconds)] {
            self.windows.record(&gw, m, Some(&fname()), ts, v, ts);
        }
        let ready: Vec<_> = self.state.live_instances(&fname()).filter(|i| i.state == sluice_common::InstanceState::Ready).map(|i| i.id).collect();
        // Least-outstanding routing spreads requests evenly; the first ones take the remainder.
        let requests = in_flight.ceil() as usize;
        let mut figures = Vec::new();
        for (k, id) in ready.iter().enumerate() {
            let outstanding = (requests / ready.len() + usize::from(k < requests % ready.len())) as u32;
            let at = self.last_active.entry(*id).or_insert(ts.0);
            if outstanding > 0 {
                *at = ts.0;
            }
            figures.push(InstanceActivity { instance: *id, outstanding, last_active_ms: *at });
        }
        self.activity.record(&NodeId::new("coordinator-1").unwrap(), ts, &figures);
        for n in self.state.nodes.keys().cloned().collect::<Vec<_>>() {
            self.liveness.heard(&n, ts);
        }
        self.round()
    }

    /// A round at the current time, its plan applied, then the agent's reports.
    pub fn round(&mut self) -> Round {
        let calls = HashMap::new();
        let round = plan(&Inputs {
            state: &self.state,
            windows: &self.windows,
            activity: &self.activity,
            liveness: &self.liveness,
            calls: &calls,
            now: self.now,
            term: self.term,
            leader_since: self.leader_since,
            history_from: self.history_from,
            config: &self.config,
            holds: &self.holds,
        });
        if !round.plan.decisions.is_empty() {
            self.apply(Command::Plan(round.plan.clone()));
        }
        self.agents_report();
        round
    }

    /// Every agent makes its pending instances ready and its stopping ones gone.
    fn agents_report(&mut self) {
        let by_node: Vec<(NodeId, Vec<InstanceReport>)> = self
            .state
            .nodes
            .keys()
            .map(|n| {
                let reports = self
                    .state
                    .live_on(n)
                    .filter_map(|i| {
                        let state = match i.state {
                            sluice_common::InstanceState::Pending | sluice_common::InstanceState::Starting => sluice_common::InstanceState::Ready,
                            sluice_common::InstanceState::Stopping => sluice_common::InstanceState::Gone,
                            _ => return None,
                        };
                        let endpoint = Some(sluice_common::Endpoint::published("127.0.0.1", 1000 + i.id.0 as u16));
                        Some(InstanceReport { id: i.id, function: i.function.clone(), state, endpoint, reason: None, addr: None })
                    })
                    .collect();
                (n.clone(), reports)
            })
            .collect();
        for (node, instances) in by_node {
            if instances.is_empty() {
                continue;
            }
            let capacity = self.state.nodes[&node].capacity;
            let labels = self.state.nodes[&node].labels.clone();
            let report = NodeReport { node, capacity, instances, at: self.now, labels, max_instances: None, images: Default::default(), agent_addr: None };
            self.apply(Command::Report { report, at: self.now });
        }
    }

    /// Runs `seconds` of `load(second)` and returns the ready count after each.
    pub fn run(&mut self, seconds: u32, load: impl Fn(u32) -> f64) -> Vec<u32> {
        (0..seconds)
            .map(|s| {
                self.second(load(s));
                self.ready()
            })
            .collect()
    }
}

/// Direction changes in a series (up then down, or down then up).
fn reversals(counts: &[u32]) -> usize {
    let steps: Vec<i64> = counts.windows(2).map(|w| i64::from(w[1]) - i64::from(w[0])).filter(|d| *d != 0).collect();
    steps.windows(2).filter(|w| w[0].signum() != w[1].signum()).count()
}

#[test]
fn a_step_from_1_to_32_panics_up_fast_and_leaves_calmly() {
    let mut sim = Sim::new(4, |_| {});
    let warm = sim.run(90, |_| 1.0);
    assert_eq!(*warm.last().unwrap(), 1, "one instance carries 1 request at a target of 2.8");
    let step = sim.run(120, |_| 32.0);
    // The burst floor (32 / 4 = 8) acts within a second, panic mode reaches 12 (32 / 2.8) within the panic window.
    assert!(step[0] >= 8, "{:?}", &step[..8]);
    let at = step.iter().position(|c| *c >= 12).expect("reaches 12");
    assert!(at <= 6, "12 instances after {at} s: {:?}", &step[..10]);
    assert!(step.iter().all(|c| *c <= 13), "no over-shoot: {step:?}");
    assert!(sim.reasons.iter().any(|r| matches!(r, Reason::Demand { mode: Mode::Panic, .. })), "panic mode engaged");
    let after = sim.run(200, |_| 1.0);
    // Calm: nothing goes while the surge is in the panic history (a stable
    // window), then it comes down in steps of at most half.
    assert!(after[..55].iter().all(|c| *c >= 12), "held through the stable window: {:?}", &after[..60]);
    for w in after.windows(2) {
        assert!(w[1] >= w[0] / 2, "at most half at a time: {after:?}");
    }
    assert_eq!(*after.last().unwrap(), 1, "{after:?}");
    assert_eq!(reversals(&after), 0, "only down: {after:?}");
}

#[test]
fn a_flapping_load_does_not_oscillate_the_instance_count() {
    let mut sim = Sim::new(2, |_| {});
    let counts = sim.run(400, |s| if s % 2 == 0 { 16.0 } else { 0.0 });
    let settled = &counts[60..];
    assert!(reversals(settled) <= 1, "{settled:?}");
    let (lo, hi) = (settled.iter().min().unwrap(), settled.iter().max().unwrap());
    assert!(hi - lo <= 2, "steady within 2: {settled:?}");
}

#[test]
fn a_flapping_condition_never_holds_for_its_duration() {
    let mut sim = Sim::new(2, |_| {});
    sim.rule("flappy", 0, "when last(function.concurrency, 1s) > 10 for 5s then scale_to(9)");
    let counts = sim.run(120, |s| if s % 3 == 0 { 20.0 } else { 0.0 });
    assert!(counts.iter().all(|c| *c < 9), "{counts:?}");
    assert!(!sim.reasons.iter().any(|r| matches!(r, Reason::Rule { .. })), "the rule never decided");
}

#[test]
fn conflicting_rules_resolve_by_priority_and_bounds_clamp_last() {
    let mut sim = Sim::new(4, |_| {});
    sim.rule("low", 5, "when avg(function.concurrency, 5s) >= 0 then scale_to(6)");
    sim.rule("high", 10, "when avg(function.concurrency, 5s) >= 0 then scale_to(3)");
    assert_eq!(*sim.run(10, |_| 1.0).last().unwrap(), 3, "the higher priority wins");
    sim.apply(Command::RemoveRule { name: sluice_common::rules::RuleName::new("high").unwrap() });
    assert_eq!(*sim.run(10, |_| 1.0).last().unwrap(), 6);
    sim.rule("cap", 1, "when avg(function.concurrency, 5s) >= 0 then set_max(4)");
    assert_eq!(*sim.run(10, |_| 1.0).last().unwrap(), 4, "set_max of any priority bounds the count");
    sim.rule("cap", 1, "when avg(function.concurrency, 5s) >= 0 then set_max(900)");
    sim.rule("low", 5, "when avg(function.concurrency, 5s) >= 0 then scale_to(80)");
    assert_eq!(*sim.run(30, |_| 1.0).last().unwrap(), 50, "nothing passes max_instances");
}

#[test]
fn a_scale_out_rule_adds_from_its_firing_and_holds_for_its_cooldown() {
    let mut sim = Sim::new(4, |_| {});
    sim.run(70, |_| 1.0);
    assert_eq!(sim.ready(), 1);
    sim.rule("more", 0, "when avg(function.concurrency, 10s) > 0.5 for 5s then scale_out(2) cooldown 30s");
    let counts = sim.run(6, |_| 1.0);
    assert_eq!(*counts.last().unwrap(), 3, "1 + 2 after the rule held 5 s: {counts:?}");
    let counts = sim.run(24, |_| 1.0);
    assert!(counts.iter().all(|c| *c == 3), "held through the cooldown, no second firing yet: {counts:?}");
    let counts = sim.run(10, |_| 1.0);
    assert_eq!(*counts.last().unwrap(), 5, "fired again after its cooldown: {counts:?}");
}

#[test]
fn a_new_leader_stops_nothing_until_it_has_everyones_load() {
    // Before this fix a new leader read only its own gateway: every instance
    // looked idle and its first round stopped instances that were serving.
    let mut sim = Sim::new(2, |s| s.idle_timeout_secs = 5);
    sim.run(120, |_| 20.0);
    let serving = sim.ready();
    assert!(serving >= 7);
    // A coordinator restarted with empty windows is elected.
    sim.windows = Windows::new(WindowsConfig::default());
    sim.activity = Activity::default();
    sim.leader_since = sim.now;
    sim.history_from = sim.now;
    sim.term += 1;
    for _ in 0..2 {
        sim.now = sim.now.plus(Duration::from_secs(1));
        let round = sim.round();
        assert!(!round.plan.decisions.iter().any(|d| matches!(d.action, Action::Stop { .. })), "stopped with no view: {:?}", round.plan);
    }
    assert_eq!(sim.ready(), serving);
    // With the load flowing again it keeps what the load needs.
    let counts = sim.run(30, |_| 20.0);
    assert!(counts.iter().all(|c| *c + 1 >= serving), "{counts:?}");
}

#[test]
fn the_last_instance_stays_for_the_grace_then_goes() {
    let mut sim = Sim::new(1, |s| {
        s.idle_timeout_secs = 30;
        s.scaling.stable_window_secs = 10;
        s.scaling.panic_window_secs = 2;
    });
    sim.run(20, |_| 2.0);
    assert_eq!(sim.ready(), 1);
    let counts = sim.run(60, |_| 0.0);
    let gone_at = counts.iter().position(|c| *c == 0).expect("scales to zero");
    assert!((25..=45).contains(&gone_at), "after the 30 s grace, at {gone_at}: {counts:?}");
}

#[test]
fn waiting_requests_start_instances_in_the_same_second() {
    let mut sim = Sim::new(1, |_| {});
    let counts = sim.run(1, |_| 9.0);
    assert_eq!(counts, vec![4], "9 requests at a target of 2.8 per instance need 4 now");
}

#[test]
fn a_lost_node_has_its_instances_replaced_elsewhere() {
    let mut sim = Sim::new(2, |s| s.min_instances = 4);
    sim.run(5, |_| 0.0);
    assert_eq!(sim.ready(), 4);
    let n0 = NodeId::new("n0").unwrap();
    let on_n0 = sim.state.live_on(&n0).count();
    assert!(on_n0 > 0);
    // n0's agent goes silent: the simulated agent reports nothing more from it.
    let mut silent = Liveness::default();
    std::mem::swap(&mut silent, &mut sim.liveness);
    for s in 0..20 {
        sim.now = sim.now.plus(Duration::from_secs(1));
        sim.liveness.heard(&NodeId::new("n1").unwrap(), sim.now);
        if s == 0 {
            sim.liveness.heard(&n0, sim.now);
        }
        sim.round();
    }
    assert_eq!(sim.state.nodes[&n0].health, sluice_common::Health::Down);
    assert_eq!(sim.state.live_on(&n0).count(), 0);
    assert_eq!(sim.ready(), 4, "replaced on n1");
}

#[test]
fn a_drain_starts_replacements_before_it_stops_anything() {
    let mut sim = Sim::new(2, |s| s.min_instances = 4);
    sim.run(5, |_| 0.0);
    let n0 = NodeId::new("n0").unwrap();
    let before = sim.state.live_on(&n0).count();
    assert!(before > 0);
    sim.apply(Command::SetDraining { node: n0.clone(), draining: true, at: sim.now });
    let first = sim.second(0.0);
    assert!(first.plan.decisions.iter().all(|d| !matches!(d.action, Action::Stop { .. })), "nothing stops before its replacement is ready");
    assert!(sim.ready() >= 4);
    sim.run(3, |_| 0.0);
    assert_eq!(sim.state.live_on(&n0).count(), 0, "all moved");
    assert_eq!(sim.ready(), 4);
}

/// The keep-warm model's holds drive the tiers: a paused hold pre-warms an
/// instance and pauses it once ready; a hot hold resumes it; no hold lets it go.
#[test]
fn predicted_holds_prewarm_pause_resume_and_release() {
    let mut sim = Sim::new(1, |s| s.idle_timeout_secs = 5);
    let why = sluice_common::predict::Why::Likely { idle_bins: 3, chance_pct: 40 };
    let count = |sim: &Sim, state: InstanceState| sim.state.live_instances(&fname()).filter(|i| i.state == state).count();
    // Nothing held, no load: nothing runs.
    for _ in 0..3 {
        sim.second(0.0);
    }
    assert_eq!(sim.state.live_instances(&fname()).count(), 0);
    // The model holds one paused: one is started, then paused once ready.
    sim.holds.insert(fname(), Hold { hot: 0, paused: 1, why });
    for _ in 0..10 {
        sim.second(0.0);
    }
    assert_eq!((count(&sim, InstanceState::Paused), sim.state.live_instances(&fname()).count()), (1, 1), "{:?}", sim.reasons);
    assert!(sim.reasons.iter().any(|r| matches!(r, Reason::Predicted { paused: 1, .. })), "{:?}", sim.reasons);
    // Now it holds one hot: the paused one is resumed, not a new one started.
    sim.holds.insert(fname(), Hold { hot: 1, paused: 0, why });
    for _ in 0..3 {
        sim.second(0.0);
    }
    assert_eq!((sim.ready(), sim.state.live_instances(&fname()).count()), (1, 1));
    // Held paused again: the idle instance is paused, not stopped.
    sim.holds.insert(fname(), Hold { hot: 0, paused: 1, why });
    for _ in 0..10 {
        sim.second(0.0);
    }
    assert_eq!((count(&sim, InstanceState::Paused), sim.state.live_instances(&fname()).count()), (1, 1));
    // No hold: after the idle timeout the paused instance is stopped.
    sim.holds.clear();
    for _ in 0..10 {
        sim.second(0.0);
    }
    assert_eq!(sim.state.live_instances(&fname()).count(), 0, "{:?}", sim.reasons);
}

/// A rule that sets the count overrides the model.
#[test]
fn a_count_rule_overrides_the_prediction() {
    let mut sim = Sim::new(1, |_| {});
    sim.rule("none", 10, "when avg(function.concurrency, 5s) >= 0 then scale_to(0)");
    sim.holds.insert(fname(), Hold { hot: 2, paused: 1, why: sluice_common::predict::Why::Busy { needed: 2 } });
    for _ in 0..5 {
        sim.second(0.0);
    }
    assert_eq!(sim.state.live_instances(&fname()).count(), 0, "{:?}", sim.reasons);
}
