//! The store: the one place the cluster state lives and changes.
//!
//! Every change goes through `execute`, which applies a `Command` with
//! `state::apply` and wakes whoever watches. Today the log is in memory on one
//! node; the Raft issue puts a replicated, durable log under `execute` without
//! changing its callers.

use crate::state::{apply, ClusterState, Command, Response};
use sluice_common::{Clock, DesiredSet, NodeId, Timestamp};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tracing::debug;

pub struct Store {
    state: RwLock<ClusterState>,
    /// Bumped on every applied command; the gateway's routing table follows it.
    applied: watch::Sender<u64>,
    /// Mirrors `ClusterState::desired_revision`; agents and the controller follow it.
    desired: watch::Sender<u64>,
    clock: Arc<dyn Clock>,
}

impl Store {
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self { state: RwLock::new(ClusterState::default()), applied: watch::channel(0).0, desired: watch::channel(0).0, clock })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Applies a command and returns its response once it is in effect.
    pub async fn execute(&self, cmd: Command) -> Response {
        let (response, effects, revision) = {
            let mut state = self.state.write().expect("state lock poisoned");
            let (response, effects) = apply(&mut state, &cmd);
            (response, effects, state.desired_revision)
        };
        debug!(command = ?cmd, response = ?response, "applied");
        self.applied.send_modify(|n| *n += 1);
        if effects.desired_changed {
            self.desired.send_replace(revision);
        }
        response
    }

    /// Reads the state; keep `f` short, writers wait for it.
    pub fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(&self.state.read().expect("state lock poisoned"))
    }

    /// Every applied command bumps this.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The desired revision: bumped when any node's desired set changes.
    pub fn watch_desired(&self) -> watch::Receiver<u64> {
        self.desired.subscribe()
    }

    /// `node`'s desired set once the revision passes `after`, or the current one after `wait`.
    pub async fn desired_for(&self, node: &NodeId, after: u64, wait: Duration) -> DesiredSet {
        let mut rx = self.watch_desired();
        let _ = tokio::time::timeout(wait, rx.wait_for(|rev| *rev > after)).await;
        self.read(|s| s.desired_for(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::{FunctionName, FunctionSpec, ImageRef, ManualClock, Resources};

    #[tokio::test]
    async fn long_poll_returns_when_the_desired_set_changes() {
        let store = Store::new(Arc::new(ManualClock::new(Timestamp(0))));
        let node = NodeId::new("n1").unwrap();
        let f = FunctionName::new("f").unwrap();
        store.execute(Command::PutFunction { spec: FunctionSpec::new(f.clone(), ImageRef::parse("img").unwrap()) }).await;
        store.execute(Command::NodeSeen { node: node.clone(), capacity: Resources { cpu_millis: 1000, memory_mb: 1000 }, at: Timestamp(0) }).await;

        let quiet = store.desired_for(&node, 0, Duration::from_millis(20)).await;
        assert_eq!(quiet.revision, 0);

        let waiter = {
            let store = store.clone();
            let node = node.clone();
            tokio::spawn(async move { store.desired_for(&node, 0, Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        store.execute(Command::StartInstance { function: f, node, at: Timestamp(1) }).await;
        let set = tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
        assert_eq!(set.revision, 1);
        assert_eq!(set.instances.len(), 1);
    }
}
