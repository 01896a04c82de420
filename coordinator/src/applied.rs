//! The applied state: the cluster state as of the last applied log entry, the
//! decisions applied so far (the event log), and the watches that wake whoever
//! follows it (the gateway's routes, agents' long polls, the controller).
//!
//! Only the Raft replica writes it, by applying committed entries or restoring
//! a snapshot; everyone else reads.

use crate::events::{DecisionEvent, EventLog};
use crate::state::ClusterState;
use crate::state_machine::CachePurge;
use sluice_common::FunctionName;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::watch;

pub struct AppliedState {
    state: RwLock<ClusterState>,
    /// Every coordinator applies the same plans, so every one holds the same
    /// recent decisions, and a new leader can explain its predecessor's.
    events: Mutex<EventLog>,
    /// The index of the last applied log entry.
    applied: watch::Sender<u64>,
    /// Mirrors `ClusterState::desired_revision`.
    desired: watch::Sender<u64>,
    /// Routes changed since the gateway last looked.
    dirty: Mutex<DirtyRoutes>,
    /// Cache purges the gateway has not applied yet, and a flag it reads on
    /// every cached request: a purge or redeploy holds on this coordinator's
    /// gateway by the time its writer is answered.
    purges: Mutex<Purges>,
    purges_pending: AtomicBool,
}

/// Cache purges to apply, in log order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purges {
    /// Everything: a snapshot replaced the state, and purges in the entries it covers were never seen here.
    pub all: bool,
    pub functions: Vec<CachePurge>,
}

/// Which functions' routes need a look: the gateway syncs only these, so a
/// write costs the gateway the same with ten functions or ten thousand.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DirtyRoutes {
    /// Everything (at start, and after a snapshot replaced the state).
    pub all: bool,
    pub functions: BTreeSet<FunctionName>,
}

impl AppliedState {
    pub fn new() -> Arc<Self> {
        let dirty = Mutex::new(DirtyRoutes { all: true, functions: BTreeSet::new() });
        Arc::new(Self {
            state: RwLock::new(ClusterState::default()),
            events: Mutex::new(EventLog::default()),
            applied: watch::channel(0).0,
            desired: watch::channel(0).0,
            dirty,
            purges: Mutex::default(),
            purges_pending: AtomicBool::new(false),
        })
    }

    /// Keep the guard short: the replica waits for it to apply.
    pub fn read(&self) -> RwLockReadGuard<'_, ClusterState> {
        self.state.read().expect("state lock poisoned")
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, ClusterState> {
        self.state.write().expect("state lock poisoned")
    }

    /// Replaces the whole state (a snapshot was restored).
    pub(crate) fn replace(&self, state: ClusterState) {
        let revision = state.desired_revision;
        *self.write() = state;
        self.dirty.lock().expect("dirty routes lock poisoned").all = true;
        self.purges.lock().expect("purges lock poisoned").all = true;
        self.purges_pending.store(true, Ordering::SeqCst);
        self.desired.send_replace(revision);
    }

    /// Entries up to `index` are applied, changing the routes of `routes`; wakes followers.
    pub(crate) fn applied(&self, index: u64, desired_changed: bool, routes: impl IntoIterator<Item = FunctionName>) {
        self.dirty.lock().expect("dirty routes lock poisoned").functions.extend(routes);
        self.applied.send_replace(index);
        if desired_changed {
            let revision = self.read().desired_revision;
            self.desired.send_replace(revision);
        }
    }

    /// Queues cache purges for the gateway; called before the entry's writer is answered.
    pub(crate) fn record_purges(&self, purges: Vec<CachePurge>) {
        if !purges.is_empty() {
            self.purges.lock().expect("purges lock poisoned").functions.extend(purges);
            self.purges_pending.store(true, Ordering::SeqCst);
        }
    }

    /// The cache purges not taken yet, if any; cheap when there are none.
    pub fn take_purges(&self) -> Option<Purges> {
        // A load first: on the hit path, a swap on every request would bounce the line between threads.
        if !self.purges_pending.load(Ordering::SeqCst) || !self.purges_pending.swap(false, Ordering::SeqCst) {
            return None;
        }
        Some(std::mem::take(&mut *self.purges.lock().expect("purges lock poisoned")))
    }

    /// Adds applied decisions to the event log.
    pub(crate) fn record_events(&self, events: Vec<DecisionEvent>) {
        if !events.is_empty() {
            self.events.lock().expect("event log lock poisoned").extend(events);
        }
    }

    /// The latest decisions, newest last, of `function` if given.
    pub fn events(&self, function: Option<&sluice_common::FunctionName>, limit: usize) -> Vec<DecisionEvent> {
        self.events.lock().expect("event log lock poisoned").latest(function, limit)
    }

    /// The routes changed since the last call.
    pub fn take_dirty_routes(&self) -> DirtyRoutes {
        std::mem::take(&mut *self.dirty.lock().expect("dirty routes lock poisoned"))
    }

    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    pub fn watch_desired(&self) -> watch::Receiver<u64> {
        self.desired.subscribe()
    }
}
