//! Every coordinator's view of recent invocations, folded from the state
//! records on the bus, for `GET /v1/invocations/{id}` on any coordinator and
//! for the workers' "already done?" check. Bounded by count and by age: the
//! entries this coordinator heard of first go first, and none stays longer
//! than the retention after this coordinator first heard of it.

use super::record::{Outcome, State, StateRecord};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Failed tries kept per invocation; a function failing more often than this
/// is dead-lettered long before (the attempt limit is smaller), so it only
/// guards against a misconfigured limit.
const MAX_ERRORS: usize = 20;

/// What `GET /v1/invocations/{id}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct View {
    pub id: String,
    pub function: String,
    /// queued, running, retrying, done or dead_lettered.
    pub state: &'static str,
    /// Tries started so far.
    pub attempts: u32,
    /// The failed tries, oldest first.
    pub errors: Vec<TryError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Outcome>,
    /// The coordinator that started the latest try.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<String>,
    pub first_seen_ms: u64,
    pub updated_ms: u64,
    #[serde(skip)]
    rank: (u8, u32, u8),
    /// When this coordinator first heard of it (its own clock: what age counts from).
    #[serde(skip)]
    heard_ms: u64,
    /// (attempt, time) of the try `coordinator` names: the latest start wins, in any order of arrival.
    #[serde(skip)]
    started: (u32, u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TryError {
    pub attempt: u32,
    pub error: String,
}

pub struct Table {
    entries: BTreeMap<String, View>,
    /// Ids in the order first heard of, for eviction by count and age.
    order: VecDeque<String>,
    max_entries: usize,
    retention: Duration,
}

impl Table {
    pub fn new(max_entries: usize, retention: Duration) -> Self {
        Table { entries: BTreeMap::new(), order: VecDeque::new(), max_entries: max_entries.max(1), retention }
    }

    /// Folds one record in. Records may come late, twice or out of order (from
    /// several coordinators, and again after a redelivery): the state shown is
    /// the highest ranked seen, and failures accumulate by attempt.
    pub fn apply(&mut self, record: &StateRecord, now_ms: u64) {
        self.expire(now_ms);
        if !self.entries.contains_key(&record.id) {
            while self.entries.len() >= self.max_entries {
                let Some(oldest) = self.order.pop_front() else { break };
                self.entries.remove(&oldest);
            }
            self.order.push_back(record.id.clone());
            let view = View {
                id: record.id.clone(),
                function: record.function.clone(),
                state: "queued",
                attempts: 0,
                errors: Vec::new(),
                result: None,
                coordinator: None,
                first_seen_ms: record.ts_ms,
                updated_ms: record.ts_ms,
                rank: (0, 0, 0),
                heard_ms: now_ms,
                started: (0, 0),
            };
            self.entries.insert(record.id.clone(), view);
        }
        let view = self.entries.get_mut(&record.id).expect("inserted above");
        view.first_seen_ms = view.first_seen_ms.min(record.ts_ms);
        view.updated_ms = view.updated_ms.max(record.ts_ms);
        if let State::Failed { attempt, error, .. } | State::DeadLettered { attempt, error } = &record.state {
            if !view.errors.iter().any(|e| e.attempt == *attempt) && view.errors.len() < MAX_ERRORS {
                view.errors.push(TryError { attempt: *attempt, error: error.clone() });
                view.errors.sort_by_key(|e| e.attempt);
            }
        }
        if let State::Running { attempt, coordinator } = &record.state {
            if (*attempt, record.ts_ms) >= view.started {
                view.started = (*attempt, record.ts_ms);
                view.coordinator = Some(coordinator.clone());
            }
        }
        let rank = record.state.rank();
        if let State::Running { attempt, .. } | State::Failed { attempt, .. } | State::Done { attempt, .. } | State::DeadLettered { attempt, .. } = &record.state {
            view.attempts = view.attempts.max(*attempt);
        }
        if rank >= view.rank {
            view.rank = rank;
            view.state = record.state.name();
            if let State::Done { result, .. } = &record.state {
                view.result = Some(result.clone());
            }
        }
    }

    /// Drops entries first heard of longer than the retention ago (`order` is
    /// in that order, so only its front need be looked at).
    fn expire(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.retention.as_millis() as u64);
        while let Some(id) = self.order.front() {
            match self.entries.get(id) {
                Some(view) if view.heard_ms >= horizon => break,
                _ => {
                    let id = self.order.pop_front().expect("front exists");
                    self.entries.remove(&id);
                }
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&View> {
        self.entries.get(id)
    }

    /// Whether `id` has ended (done or dead-lettered).
    pub fn is_final(&self, id: &str) -> bool {
        self.entries.get(id).is_some_and(|v| v.rank.0 == 1)
    }

    /// How many tries of `id` are known to have failed, so a redelivered
    /// invocation continues its count rather than starting over.
    pub fn failed_tries(&self, id: &str) -> u32 {
        self.entries.get(id).map_or(0, |v| v.errors.iter().map(|e| e.attempt).max().unwrap_or(0))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invocations::record::VERSION;

    fn rec(id: &str, ts_ms: u64, state: State) -> StateRecord {
        StateRecord { v: VERSION, id: id.into(), function: "f".into(), ts_ms, state }
    }

    fn failed(attempt: u32) -> State {
        State::Failed { attempt, error: format!("try {attempt} failed"), retry_in_ms: 10 }
    }

    #[test]
    fn records_in_any_order_end_in_the_same_view() {
        let done = State::Done { attempt: 3, result: Outcome::new(200, None, b"ok", 10) };
        let records = [
            rec("a", 1, State::Queued),
            rec("a", 2, State::Running { attempt: 1, coordinator: "c1".into() }),
            rec("a", 3, failed(1)),
            rec("a", 4, State::Running { attempt: 2, coordinator: "c2".into() }),
            rec("a", 5, failed(2)),
            rec("a", 6, State::Running { attempt: 3, coordinator: "c2".into() }),
            rec("a", 7, done),
        ];
        let mut forward = Table::new(10, Duration::from_secs(60));
        records.iter().for_each(|r| forward.apply(r, 10));
        let mut backward = Table::new(10, Duration::from_secs(60));
        records.iter().rev().chain(records.iter()).for_each(|r| backward.apply(r, 10));
        let (f, b) = (forward.get("a").unwrap(), backward.get("a").unwrap());
        assert_eq!(f, b);
        assert_eq!((f.state, f.attempts, f.errors.len(), f.first_seen_ms, f.updated_ms), ("done", 3, 2, 1, 7));
        assert_eq!(f.result.as_ref().unwrap().body.as_deref(), Some("ok"));
        assert_eq!(f.coordinator.as_deref(), Some("c2"));
        assert!(forward.is_final("a"));
        assert_eq!(forward.failed_tries("a"), 2);
    }

    #[test]
    fn a_rerun_after_an_ending_does_not_hide_it() {
        let mut t = Table::new(10, Duration::from_secs(60));
        t.apply(&rec("a", 1, State::DeadLettered { attempt: 3, error: "boom".into() }), 1);
        t.apply(&rec("a", 2, State::Running { attempt: 1, coordinator: "c1".into() }), 2);
        assert_eq!(t.get("a").unwrap().state, "dead_lettered");
        assert_eq!(t.failed_tries("a"), 3);
    }

    #[test]
    fn retention_is_bounded_by_count_and_age() {
        let mut t = Table::new(2, Duration::from_secs(10));
        t.apply(&rec("a", 0, State::Queued), 0);
        t.apply(&rec("b", 1_000, State::Queued), 1_000);
        t.apply(&rec("c", 2_000, State::Queued), 2_000);
        assert!(t.get("a").is_none(), "the oldest goes when the table is full");
        assert_eq!(t.len(), 2);
        // An update does not extend the retention: b goes 10 s after it was first heard of.
        t.apply(&rec("b", 9_000, failed(1)), 9_000);
        t.apply(&rec("c", 10_000, failed(1)), 10_000);
        assert_eq!(t.get("b").unwrap().state, "retrying");
        t.apply(&rec("d", 11_500, State::Queued), 11_500);
        assert!(t.get("b").is_none(), "b was first heard of more than 10 s ago");
        assert!(t.get("c").is_some() && t.get("d").is_some());
        assert!(!t.is_empty());
    }
}
