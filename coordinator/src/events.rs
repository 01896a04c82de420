//! Decision events: every scale and placement decision as it was applied, with
//! its reason and outcome, for `sluice events` and the API.
//!
//! They are made when a plan is applied, so every coordinator holds the same
//! ones; they live in memory only, in a ring of `CAPACITY` (about 300 bytes
//! each, so about 3 MB when full).

use crate::plan::{Action, Decision, Outcome, Reason};
use crate::state::ClusterState;
use serde::Serialize;
use sluice_common::{FunctionName, InstanceId, NodeId, Timestamp};
use std::collections::VecDeque;

/// Events kept; the oldest go first.
pub const CAPACITY: usize = 10_000;

/// One applied decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionEvent {
    /// Log position of the plan it belongs to.
    pub index: u64,
    pub term: u64,
    pub at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// What was decided, in words.
    pub action: String,
    /// Why, as text, and the figures it read.
    pub why: String,
    pub reason: Reason,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl DecisionEvent {
    /// The event of decision `d` of the plan at log `index` of `term`, its
    /// subject resolved in `state`.
    pub fn new(index: u64, term: u64, at: Timestamp, d: &Decision, state: &ClusterState, outcome: Outcome) -> Self {
        let of_instance = |id: &InstanceId| state.instances.get(id).map(|i| (i.function.clone(), i.node.clone()));
        let (function, instance, node) = match &d.action {
            Action::Start { function, node, replaces, .. } => (Some(function.clone()), *replaces, Some(node.clone())),
            Action::Stop { id } | Action::Pause { id } | Action::Resume { id } | Action::MarkLost { id } => {
                let (f, n) = of_instance(id).unzip();
                (f, Some(*id), n)
            }
            Action::SetHealth { node, .. } => (None, None, Some(node.clone())),
            Action::Fired { function, .. } | Action::Panic { function, .. } => (Some(function.clone()), None, None),
            Action::Prune { .. } => (None, None, None),
        };
        Self { index, term, at, function, instance, node, action: d.action.describe(), why: d.reason.to_string(), reason: d.reason.clone(), outcome }
    }
}

/// The newest `CAPACITY` events.
#[derive(Debug, Default)]
pub struct EventLog {
    ring: VecDeque<DecisionEvent>,
}

impl EventLog {
    pub fn extend(&mut self, events: Vec<DecisionEvent>) {
        for e in events {
            if matches!(e.reason, Reason::Housekeeping) {
                continue;
            }
            if self.ring.len() == CAPACITY {
                self.ring.pop_front();
            }
            self.ring.push_back(e);
        }
    }

    /// Up to `limit` of the newest events (of `function`, if given), newest last.
    pub fn latest(&self, function: Option<&FunctionName>, limit: usize) -> Vec<DecisionEvent> {
        let mut out: Vec<DecisionEvent> = self.ring.iter().rev().filter(|e| function.is_none_or(|f| e.function.as_ref() == Some(f))).take(limit).cloned().collect();
        out.reverse();
        out
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Reason;

    fn event(i: u64, f: &str) -> DecisionEvent {
        DecisionEvent {
            index: i,
            term: 1,
            at: Timestamp(i),
            function: Some(FunctionName::new(f).unwrap()),
            instance: None,
            node: None,
            action: "x".into(),
            why: "y".into(),
            reason: Reason::StartTimedOut { waited_secs: 1 },
            outcome: Outcome::Done,
        }
    }

    #[test]
    fn the_ring_is_bounded_and_filters_by_function() {
        let mut log = EventLog::default();
        log.extend((0..CAPACITY as u64 + 5).map(|i| event(i, if i % 2 == 0 { "a" } else { "b" })).collect());
        assert_eq!(log.len(), CAPACITY);
        let a = log.latest(Some(&FunctionName::new("a").unwrap()), 3);
        assert_eq!(a.iter().map(|e| e.index).collect::<Vec<_>>(), vec![CAPACITY as u64, CAPACITY as u64 + 2, CAPACITY as u64 + 4]);
        assert_eq!(log.latest(None, 1)[0].index, CAPACITY as u64 + 4);
    }
}
