//! The agent's memory of its instances: the state last decided for each, as reported.
//!
//! Gone is terminal (instance ids are never reused), and a Gone entry is kept until
//! a report carrying it was delivered and the instance left the desired set, so
//! the coordinator always hears about a loss even across an outage.

use sluice_common::{Endpoint, FunctionName, InstanceId, InstanceReport, InstanceState, NodeId, NodeReport, Resources, Timestamp};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone)]
struct Entry {
    report: InstanceReport,
    /// Sequence number of the first report that carried this entry as Gone.
    gone_in: Option<u64>,
}

/// Instance reports keyed by id, with a flag for "changed since the last report".
#[derive(Debug, Default)]
pub struct ReportTable {
    entries: BTreeMap<InstanceId, Entry>,
    last_seq: u64,
    changed: bool,
}

impl ReportTable {
    /// An empty table: nothing known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a new state; returns whether anything changed. A Gone instance stays
    /// Gone: a late event from an old task cannot bring it back.
    pub fn set(&mut self, id: InstanceId, function: &FunctionName, state: InstanceState, endpoint: Option<Endpoint>, reason: Option<String>) -> bool {
        let report = InstanceReport { id, function: function.clone(), state, endpoint, reason, addr: None };
        match self.entries.get_mut(&id) {
            Some(e) if e.report.state == InstanceState::Gone => false,
            Some(e) if e.report == report => false,
            Some(e) => {
                e.report = report;
                self.changed = true;
                true
            }
            None => {
                self.entries.insert(id, Entry { report, gone_in: None });
                self.changed = true;
                true
            }
        }
    }

    /// The state last recorded for `id`.
    pub fn state_of(&self, id: InstanceId) -> Option<InstanceState> {
        self.entries.get(&id).map(|e| e.report.state)
    }

    /// Every instance's state, as the reconciler wants it.
    pub fn states(&self) -> HashMap<InstanceId, InstanceState> {
        self.entries.iter().map(|(id, e)| (*id, e.report.state)).collect()
    }

    /// True if a state changed since the last `build`.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The full report to send now, with its sequence number.
    pub fn build(&mut self, node: &NodeId, capacity: Resources, at: Timestamp) -> (u64, NodeReport) {
        self.last_seq += 1;
        self.changed = false;
        let seq = self.last_seq;
        for e in self.entries.values_mut() {
            if e.report.state == InstanceState::Gone && e.gone_in.is_none() {
                e.gone_in = Some(seq);
            }
        }
        let instances = self.entries.values().map(|e| e.report.clone()).collect();
        (seq, NodeReport { node: node.clone(), capacity, instances, at, labels: Default::default(), max_instances: None, images: Default::default(), agent_addr: None })
    }

    /// Forgets Gone instances that are no longer desired and whose Gone state was
    /// in a report numbered `delivered` or earlier.
    pub fn prune(&mut self, desired: &HashSet<InstanceId>, delivered: u64) {
        self.entries.retain(|id, e| {
            let told = e.report.state == InstanceState::Gone && e.gone_in.is_some_and(|s| s <= delivered);
            !told || desired.contains(id)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> FunctionName {
        FunctionName::new("f").unwrap()
    }

    fn node() -> NodeId {
        NodeId::new("n").unwrap()
    }

    #[test]
    fn tracks_changes_between_reports() {
        let mut t = ReportTable::new();
        assert!(!t.changed());
        assert!(t.set(InstanceId(1), &f(), InstanceState::Starting, None, None));
        assert!(t.changed());
        let (seq, report) = t.build(&node(), Resources::default(), Timestamp(5));
        assert_eq!(seq, 1);
        assert_eq!(report.instances.len(), 1);
        assert_eq!(report.at, Timestamp(5));
        assert!(!t.changed());
        assert!(!t.set(InstanceId(1), &f(), InstanceState::Starting, None, None), "same state is no change");
        assert!(!t.changed());
    }

    #[test]
    fn gone_is_terminal() {
        let mut t = ReportTable::new();
        t.set(InstanceId(1), &f(), InstanceState::Gone, None, Some("crashed".into()));
        assert!(!t.set(InstanceId(1), &f(), InstanceState::Ready, None, None));
        let (_, report) = t.build(&node(), Resources::default(), Timestamp(0));
        assert_eq!(report.instances[0].state, InstanceState::Gone);
        assert_eq!(report.instances[0].reason.as_deref(), Some("crashed"));
    }

    #[test]
    fn gone_is_kept_until_delivered_and_undesired() {
        let mut t = ReportTable::new();
        let (a, b) = (InstanceId(1), InstanceId(2));
        t.set(a, &f(), InstanceState::Gone, None, None);
        t.set(b, &f(), InstanceState::Ready, None, None);
        let none = HashSet::new();
        t.prune(&none, 100);
        assert!(t.states().contains_key(&a), "not yet in any report");
        let (seq, _) = t.build(&node(), Resources::default(), Timestamp(0));
        t.prune(&none, seq - 1);
        assert!(t.states().contains_key(&a), "its report was not delivered");
        t.prune(&HashSet::from([a]), seq);
        assert!(t.states().contains_key(&a), "still desired");
        t.prune(&none, seq);
        assert!(!t.states().contains_key(&a));
        assert!(t.states().contains_key(&b), "live instances are never pruned");
    }
}
