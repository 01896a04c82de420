//! The scaler's table: one function's inputs, the sizing expected.

use super::*;
use crate::decide::rules::RuleEffects;
use sluice_common::predict::Hold;
use sluice_common::{FunctionName, ImageRef, NodeId};

const NOW: Timestamp = Timestamp(1_000_000);

fn spec(min: u32, max: u32) -> FunctionSpec {
    let mut s = FunctionSpec::new(FunctionName::new("f").unwrap(), ImageRef::parse("img").unwrap());
    s.min_instances = min;
    s.max_instances = max;
    s
}

fn inst(id: u64, state: InstanceState, since: u64) -> Instance {
    Instance {
        id: InstanceId(id),
        function: FunctionName::new("f").unwrap(),
        node: NodeId::new("n1").unwrap(),
        state,
        endpoint: None,
        created_at: Timestamp(since),
        state_since: Timestamp(since),
        reason: None,
        replaces: None,
        addr: None,
        reserved: sluice_common::Resources::default(),
    }
}

fn load(stable: f64, now: f64) -> FunctionLoad {
    FunctionLoad { stable, panic: stable, panic_peak: stable, now, recent_peak: now }
}

struct Case {
    what: &'static str,
    spec: FunctionSpec,
    instances: Vec<Instance>,
    load: FunctionLoad,
    busy: Vec<u64>,
    view_complete: bool,
    start: u32,
    stop: Vec<u64>,
}

#[test]
fn sizing_table() {
    use InstanceState::*;
    let cases = vec![
        Case { what: "idle at zero: nothing", spec: spec(0, 10), instances: vec![], load: load(0.0, 0.0), busy: vec![], view_complete: true, start: 0, stop: vec![] },
        Case { what: "min keeps instances up", spec: spec(2, 10), instances: vec![], load: load(0.0, 0.0), busy: vec![], view_complete: true, start: 2, stop: vec![] },
        Case { what: "one waiting request starts one", spec: spec(0, 10), instances: vec![], load: load(0.0, 1.0), busy: vec![], view_complete: true, start: 1, stop: vec![] },
        Case {
            what: "target tracking: 14 at 2.8 each is 5",
            spec: spec(0, 10),
            instances: vec![],
            load: load(14.0, 0.0),
            busy: vec![],
            view_complete: true,
            start: 5,
            stop: vec![],
        },
        Case { what: "never past max", spec: spec(0, 3), instances: vec![], load: load(50.0, 50.0), busy: vec![], view_complete: true, start: 3, stop: vec![] },
        Case {
            what: "starting instances count as capacity",
            spec: spec(0, 10),
            instances: vec![inst(1, Starting, NOW.0 - 100)],
            load: load(2.0, 2.0),
            busy: vec![],
            view_complete: true,
            start: 0,
            stop: vec![],
        },
        Case {
            what: "a stuck start is given up and replaced",
            spec: spec(1, 10),
            instances: vec![inst(1, Starting, NOW.0 - 41_000)],
            load: load(0.0, 0.0),
            busy: vec![],
            view_complete: true,
            start: 1,
            stop: vec![1],
        },
        Case {
            what: "a busy instance is never the one stopped",
            spec: spec(0, 10),
            instances: vec![inst(1, Ready, 0), inst(2, Ready, 0)],
            load: load(1.0, 1.0),
            busy: vec![1],
            view_complete: true,
            start: 0,
            stop: vec![2],
        },
        Case {
            what: "no stops without a complete view",
            spec: spec(0, 10),
            instances: vec![inst(1, Ready, 0), inst(2, Ready, 0)],
            load: load(0.0, 0.0),
            busy: vec![],
            view_complete: false,
            start: 0,
            stop: vec![],
        },
        Case {
            what: "above max, the least useful goes first, busy or not",
            spec: spec(0, 1),
            instances: vec![inst(1, Ready, 0), inst(2, Starting, NOW.0)],
            load: load(4.0, 4.0),
            busy: vec![1],
            view_complete: true,
            start: 0,
            stop: vec![2],
        },
        Case {
            what: "at most half go in one step",
            spec: spec(0, 10),
            instances: (1..=6).map(|i| inst(i, Ready, 0)).collect(),
            load: load(0.0, 0.0),
            busy: vec![],
            view_complete: true,
            start: 0,
            stop: vec![6, 5, 4],
        },
    ];
    for c in cases {
        let activity = {
            let mut a = Activity::default();
            let figures: Vec<_> = c.busy.iter().map(|id| sluice_common::wire::InstanceActivity { instance: InstanceId(*id), outstanding: 1, last_active_ms: NOW.0 }).collect();
            a.record(&NodeId::new("c1").unwrap(), NOW, &figures);
            a
        };
        let rules = RuleEffects::default();
        let inputs = FunctionInputs {
            spec: &c.spec,
            instances: c.instances.iter().collect(),
            load: c.load,
            rules: &rules,
            activity: &activity,
            memory: None,
            leaving: &|_| false,
            now: NOW,
            view_complete: c.view_complete,
            hold: Hold::NOTHING,
        };
        let s = size(&inputs);
        assert_eq!(s.start, c.start, "{}: {s:?}", c.what);
        let stopped: Vec<u64> = s.stop.iter().map(|(id, _)| id.0).collect();
        assert_eq!(stopped, c.stop, "{}: {s:?}", c.what);
    }
}
