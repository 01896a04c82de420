//! The store: the one place the cluster state lives and changes.
//!
//! Every change is a `Command` committed through the Raft log (`execute`), so it
//! is on a majority of coordinators' disks before anyone hears "done". Reads come
//! in two strengths: `read` is the local applied state (cheap, possibly a few
//! milliseconds behind on a follower), `read_linearizable` first confirms with
//! the leader that nothing newer is committed (ReadIndex).

use crate::applied::AppliedState;
use crate::raft::{Leadership, MemberChange, RaftError, RaftHandle, RaftStatus};
use crate::state::ClusterState;
use crate::state_machine::{Command, Response};
use sluice_common::{Clock, DesiredSet, NodeId, Timestamp};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::debug;

pub struct Store {
    machine: Arc<AppliedState>,
    raft: RaftHandle,
    clock: Arc<dyn Clock>,
}

impl Store {
    pub fn new(machine: Arc<AppliedState>, raft: RaftHandle, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self { machine, raft, clock })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Commits a command and returns its response once it is applied here.
    pub async fn execute(&self, cmd: Command) -> Result<Response, RaftError> {
        let result = self.raft.propose(cmd).await;
        debug!(result = ?result, "command executed");
        result
    }

    /// Reads the local applied state; keep `f` short, the Raft loop waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(&self.machine.read())
    }

    /// Reads a state that includes every write acknowledged before the call.
    pub async fn read_linearizable<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> Result<R, RaftError> {
        self.raft.read_barrier().await?;
        Ok(self.read(f))
    }

    /// The index of the last applied entry; bumped on every applied command.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.machine.watch_applied()
    }

    /// The desired revision: bumped when any node's desired set changes.
    pub fn watch_desired(&self) -> watch::Receiver<u64> {
        self.machine.watch_desired()
    }

    /// Which functions' routes changed since the last call (see `AppliedState`).
    pub fn take_dirty_routes(&self) -> crate::applied::DirtyRoutes {
        self.machine.take_dirty_routes()
    }

    /// Cache purges applied since the last call, if any (see `AppliedState::take_purges`).
    pub fn take_purges(&self) -> Option<crate::applied::Purges> {
        self.machine.take_purges()
    }

    /// The latest applied decisions (of `function`, if given), newest last.
    pub fn events(&self, function: Option<&sluice_common::FunctionName>, limit: usize) -> Vec<crate::events::DecisionEvent> {
        self.machine.events(function, limit)
    }

    pub fn raft_status(&self) -> RaftStatus {
        self.raft.status()
    }

    pub fn leadership(&self) -> Leadership {
        self.raft.leadership()
    }

    pub fn watch_leadership(&self) -> watch::Receiver<Leadership> {
        self.raft.watch_leadership()
    }

    pub fn raft(&self) -> &RaftHandle {
        &self.raft
    }

    pub async fn change_members(&self, change: MemberChange) -> Result<(), RaftError> {
        self.raft.change_members(change).await
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
    use crate::raft::{RaftConfig, RaftNode};
    use sluice_common::{FunctionName, FunctionSpec, ImageRef, ManualClock, Resources};

    #[tokio::test]
    async fn a_single_coordinator_commits_reads_and_remembers_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(0)));
        let f = FunctionName::new("f").unwrap();
        let node = NodeId::new("n1").unwrap();
        {
            let (stop, stopped) = watch::channel(false);
            let machine = AppliedState::new();
            let raft = RaftNode::start(RaftConfig::single(dir.path().into()), machine.clone(), clock.clone(), stopped).unwrap();
            let store = Store::new(machine, raft.handle.clone(), clock.clone());
            let created = store.execute(Command::PutFunction { spec: FunctionSpec::new(f.clone(), ImageRef::parse("img").unwrap()) }).await;
            assert_eq!(created, Ok(Response::FunctionCreated));
            store.execute(Command::NodeSeen { node: node.clone(), capacity: Resources { cpu_millis: 1000, memory_mb: 1000 }, at: Timestamp(0) }).await.unwrap();

            // The long poll wakes when the desired set changes.
            let quiet = store.desired_for(&node, 0, Duration::from_millis(20)).await;
            assert_eq!(quiet.revision, 0);
            let waiter = {
                let store = store.clone();
                let node = node.clone();
                tokio::spawn(async move { store.desired_for(&node, 0, Duration::from_secs(10)).await })
            };
            tokio::task::yield_now().await;
            store.execute(Command::StartInstance { function: f.clone(), node: node.clone(), at: Timestamp(1) }).await.unwrap();
            let set = tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap();
            assert_eq!((set.revision, set.instances.len()), (1, 1));
            assert!(store.read_linearizable(|s| s.functions.contains_key(&f)).await.unwrap());
            stop.send(true).unwrap();
            tokio::task::spawn_blocking(move || raft.join()).await.unwrap();
        }
        // A new process over the same data directory replays the log.
        let (_stop, stopped) = watch::channel(false);
        let machine = AppliedState::new();
        let raft = RaftNode::start(RaftConfig::single(dir.path().into()), machine.clone(), clock.clone(), stopped).unwrap();
        let store = Store::new(machine, raft.handle.clone(), clock);
        let (has_f, instances) = store.read_linearizable(|s| (s.functions.contains_key(&f), s.instances.len())).await.unwrap();
        assert!(has_f);
        assert_eq!(instances, 1);
    }
}
