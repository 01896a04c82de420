//! The replicated log under the store: raft-rs (tikv) with a durable log,
//! a TCP transport, and a loop on its own thread.
//!
//! - `log_store`: entries, hard state and snapshots in redb, fsynced per `Ready`.
//! - `replica`: the I/O-free replica: proposals, ReadIndex reads, membership,
//!   applying to the state machine, snapshots.
//! - `transport`: framed protobuf over TCP, batched, bounded, reconnecting.
//! - `driver`: the loop that ties them together, and the `RaftHandle` callers use.
//! - `logger`: raft-rs's slog records into `tracing`.
//!
//! A single coordinator (`sluice up`) is a cluster of one on the same path.

mod driver;
pub mod identity;
mod log_store;
mod logger;
mod replica;
#[cfg(test)]
mod sim;
mod transport;

pub use driver::{Leadership, MemberView, RaftHandle, RaftStatus};
pub use log_store::{LogError, LogStore};
pub use replica::{Fatal, Member, MemberChange, RaftError};
pub use transport::TransportCounters;

use crate::applied::AppliedState;
use crate::tls::RaftTls;
use replica::{Replica, ReplicaConfig};
use sluice_common::Clock;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Client requests batched into one `Ready` (one fsync) by default.
pub const DEFAULT_MAX_BATCH: usize = 4096;

/// Length of one Raft tick; timeouts are whole numbers of ticks.
pub const TICK: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This coordinator's id, unique in the cluster and never reused.
    pub id: u64,
    /// Where peers' Raft traffic is received (port 0 picks one).
    pub listen: SocketAddr,
    /// The address peers use to reach `listen`; defaults to the bound address.
    pub advertise: Option<String>,
    /// Founding members (id -> Raft address), used only when the data directory
    /// never held a log (no `raft.redb` entries, no `cluster.id`). Empty means
    /// "join": wait to be added by an existing cluster. `None` means a cluster
    /// of just this coordinator.
    pub initial: Option<BTreeMap<u64, String>>,
    /// Where the log lives.
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    /// Minimum election timeout; raft-rs randomises it up to twice this.
    pub election: Duration,
    /// Compact the log into a snapshot every this many entries.
    pub snapshot_every: u64,
    /// How long a write or read may wait for the cluster before it is answered 503.
    pub request_timeout: Duration,
    /// Most client requests committed together per fsync; 1 turns batching off.
    pub max_batch: usize,
    /// Mutual TLS between coordinators; `None` is plain TCP.
    pub tls: Option<RaftTls>,
}

impl RaftConfig {
    /// A single coordinator with its log in `data_dir`.
    pub fn single(data_dir: PathBuf) -> Self {
        Self {
            id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            initial: None,
            data_dir,
            heartbeat: Duration::from_millis(150),
            election: Duration::from_millis(1000),
            snapshot_every: 10_000,
            request_timeout: Duration::from_secs(5),
            max_batch: DEFAULT_MAX_BATCH,
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for Raft peers on {addr}: {source}; pick a free address with --raft")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot create the data directory {dir}: {source}; choose a writable --data-dir")]
    DataDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot open the Raft log in {dir}: {source} (is another coordinator using this --data-dir?)")]
    Log { dir: PathBuf, source: LogError },
    #[error("invalid Raft settings: {0}")]
    Config(String),
    #[error("{0}")]
    Identity(String),
    #[error(
        "the data directory {dir} belonged to cluster {cluster} as coordinator {member}, but its Raft log (raft.redb) is gone or empty: \
         this coordinator may have voted and acknowledged entries it no longer has, so it must not come back as coordinator {member}. \
         Wipe {dir} and rejoin it as a new member: start it with --join and a new --id, then run `sluice cluster leave {member}` and \
         `sluice cluster join NEW_ID HOST:PORT` against the cluster (for `sluice up`, a cluster of one, the state is gone: delete {dir} to start afresh)"
    )]
    LostLog { dir: PathBuf, cluster: String, member: u64 },
    #[error("cannot start the Raft thread: {0}")]
    Thread(std::io::Error),
}

/// A started Raft loop.
pub struct RaftNode {
    pub handle: RaftHandle,
    /// The bound peer address.
    pub raft_addr: SocketAddr,
    thread: std::thread::JoinHandle<()>,
}

impl RaftNode {
    pub fn start(config: RaftConfig, machine: Arc<AppliedState>, clock: Arc<dyn Clock>, stop: watch::Receiver<bool>) -> Result<Self, StartError> {
        Self::start_with(config, None, machine, clock, stop)
    }

    /// `start`, on `log` if given instead of the one in the data directory
    /// (tests give one whose disk fails on demand).
    fn start_with(config: RaftConfig, log: Option<LogStore>, machine: Arc<AppliedState>, clock: Arc<dyn Clock>, stop: watch::Receiver<bool>) -> Result<Self, StartError> {
        if config.id == 0 {
            return Err(StartError::Config("--id must be 1 or more (0 means \"nobody\" in Raft)".into()));
        }
        if config.heartbeat < TICK || config.election < config.heartbeat * 3 {
            return Err(StartError::Config(format!(
                "heartbeat {:?} must be at least {TICK:?}, and the election timeout {:?} at least 3 heartbeats",
                config.heartbeat, config.election
            )));
        }
        let listener = std::net::TcpListener::bind(config.listen).map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let raft_addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir { dir: config.data_dir.clone(), source })?;
        let log_error = |source| StartError::Log { dir: config.data_dir.clone(), source };
        let identity = identity::read(&config.data_dir).map_err(StartError::Identity)?;
        let log = match log {
            Some(log) => log,
            None => LogStore::open(&config.data_dir.join("raft.redb")).map_err(log_error)?,
        };
        if let Some(id) = &identity {
            if id.member_id != config.id {
                return Err(StartError::Identity(format!(
                    "the data directory {} is coordinator {}'s (cluster {}), not {}'s: start it with --id {}, or give this coordinator its own --data-dir",
                    config.data_dir.display(),
                    id.member_id,
                    id.cluster_id,
                    config.id,
                    id.member_id
                )));
            }
            // Founding again, or waiting empty, would make a member that voted forget its votes.
            if log.is_empty() {
                return Err(StartError::LostLog { dir: config.data_dir.clone(), cluster: id.cluster_id.clone(), member: id.member_id });
            }
        }
        if config.advertise.is_none() && raft_addr.ip().is_unspecified() {
            return Err(StartError::Config(format!("--raft {raft_addr} listens on every interface: say which address peers reach it at with --advertise-raft host:port")));
        }
        let advertise = config.advertise.clone().unwrap_or_else(|| raft_addr.to_string());
        let initial: BTreeMap<u64, Member> = match &config.initial {
            None => BTreeMap::from([(config.id, Member { raft_addr: advertise.clone() })]),
            Some(members) => members.iter().map(|(id, addr)| (*id, Member { raft_addr: addr.clone() })).collect(),
        };
        if !initial.is_empty() && !initial.contains_key(&config.id) {
            return Err(StartError::Config(format!("the initial cluster does not include this coordinator's id {}: add {}=<its raft address>", config.id, config.id)));
        }
        let ticks = |d: Duration| (d.as_millis() / TICK.as_millis()).max(1) as usize;
        let replica_config = ReplicaConfig {
            id: config.id,
            heartbeat_ticks: ticks(config.heartbeat),
            election_ticks: ticks(config.election),
            snapshot_every: config.snapshot_every.max(1),
            request_ticks: ticks(config.request_timeout) as u64,
            new_cluster_id: Some(identity::new_cluster_id().map_err(|e| StartError::Config(format!("cannot draw a random cluster id from /dev/urandom: {e}")))?),
        };
        let replica = Replica::new(replica_config, log, &initial, machine, boot_nonce()).map_err(log_error)?;
        let (handle, thread) = driver::spawn(
            driver::Loop { replica, tick: TICK, listener, clock, advertise, max_batch: config.max_batch.max(1), tls: config.tls, data_dir: config.data_dir.clone(), identity },
            stop,
        )
        .map_err(StartError::Thread)?;
        Ok(Self { handle, raft_addr, thread })
    }

    /// Waits for the loop's thread to end (after `stop`).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// A number that differs between runs of the same coordinator, so a restarted
/// replica never mistakes an entry proposed by its earlier run for its own.
fn boot_nonce() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::{ManualClock, Timestamp};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A disk in memory that fails every write once told to.
    #[derive(Debug)]
    struct FailingDisk {
        inner: redb::backends::InMemoryBackend,
        failing: Arc<AtomicBool>,
    }

    impl redb::StorageBackend for FailingDisk {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.fail()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.fail()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.fail()?;
            self.inner.write(offset, data)
        }
    }

    impl FailingDisk {
        fn fail(&self) -> Result<(), std::io::Error> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("the disk is gone"));
            }
            Ok(())
        }
    }

    /// Before: the loop ended quietly, the status still said leader, and the
    /// leadership watch closed (which made the controller spin). Now the
    /// replica says it stopped, and why, and leads nobody.
    #[tokio::test]
    async fn a_storage_failure_stops_the_replica_and_says_so() {
        let failing = Arc::new(AtomicBool::new(false));
        let disk = FailingDisk { inner: redb::backends::InMemoryBackend::new(), failing: failing.clone() };
        let log = LogStore::with_backend(disk).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = RaftConfig::single(dir.path().to_path_buf());
        let (_stop, stop) = watch::channel(false);
        let node = RaftNode::start_with(config, Some(log), AppliedState::new(), Arc::new(ManualClock::new(Timestamp(1_000))), stop).unwrap();
        let raft = node.handle.clone();
        let mut leadership = raft.watch_leadership();
        tokio::time::timeout(Duration::from_secs(10), leadership.wait_for(|l| l.since.is_some())).await.expect("a cluster of one elects itself").unwrap();

        failing.store(true, Ordering::SeqCst);
        let refused = raft.propose(crate::state_machine::Command::SetDraining { node: sluice_common::NodeId::new("n").unwrap(), draining: true, at: Timestamp(1_000) }).await;
        assert!(refused.is_err(), "{refused:?}");
        let why = tokio::time::timeout(Duration::from_secs(5), raft.stopped()).await.expect("the replica says it stopped");
        assert!(why.contains("storage failed"), "{why}");
        let status = raft.status();
        assert_eq!((status.role, status.leader, status.stopped.is_some()), ("stopped", None, true));
        assert_eq!(raft.leadership(), Leadership::default());
        node.join();
    }

    fn clock() -> Arc<dyn Clock> {
        Arc::new(ManualClock::new(Timestamp(1_000)))
    }

    async fn wait_status(raft: &RaftHandle, what: &str, ok: impl Fn(&RaftStatus) -> bool) -> RaftStatus {
        for _ in 0..300 {
            let status = raft.status();
            if ok(&status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}: {:?}", raft.status());
    }

    /// `sluice up` needs nothing set up: its first start founds the cluster
    /// and gives it an identity, later starts reuse it. A data directory whose
    /// log was lost but whose identity remains refuses to start (before, it
    /// bootstrapped a fresh log and came back as the same member).
    #[tokio::test]
    async fn a_data_directory_that_lost_its_log_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let start = || {
            let (stop_tx, stop) = watch::channel(false);
            RaftNode::start(RaftConfig::single(dir.path().to_path_buf()), AppliedState::new(), clock(), stop).map(|node| (node, stop_tx))
        };
        let (node, stop) = start().unwrap();
        let first = wait_status(&node.handle, "an identity", |s| s.cluster_id.is_some()).await;
        assert_eq!(first.cluster_version, crate::state_machine::ENTRY_VERSION);
        let cluster = first.cluster_id.unwrap();
        // Written once the state has it: poll, the loop writes it on its next turn.
        for _ in 0..100 {
            if identity::read(dir.path()).unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(identity::read(dir.path()).unwrap(), Some(identity::Identity { cluster_id: cluster.clone(), member_id: 1 }));
        stop.send(true).unwrap();
        tokio::task::spawn_blocking(move || node.join()).await.unwrap();

        let (node, stop) = start().unwrap();
        let again = wait_status(&node.handle, "a leader", |s| s.leader.is_some()).await;
        assert_eq!(again.cluster_id.as_deref(), Some(cluster.as_str()), "a restart keeps the cluster's identity");
        stop.send(true).unwrap();
        tokio::task::spawn_blocking(move || node.join()).await.unwrap();

        // Another coordinator's directory is refused too.
        let (_stop, stop) = watch::channel(false);
        let other = RaftConfig { id: 2, ..RaftConfig::single(dir.path().to_path_buf()) };
        let refused = RaftNode::start(other, AppliedState::new(), clock(), stop).err().expect("another id must be refused");
        assert!(refused.to_string().contains("start it with --id 1"), "{refused}");

        std::fs::remove_file(dir.path().join("raft.redb")).unwrap();
        let refused = start().err().expect("a lost log must be refused");
        assert!(matches!(refused, StartError::LostLog { member: 1, .. }), "{refused}");
        assert!(refused.to_string().contains("--join and a new --id"), "{refused}");
    }

    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    /// Three founders agree on one identity. One loses its whole data
    /// directory and is started again with the same --initial-cluster: it
    /// must not come back as a voter with no log (before, it did, and could
    /// vote twice in a term); it stops and says to rejoin as a new member,
    /// while the others keep their leader.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_founder_that_lost_its_data_directory_is_kept_out() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let initial: BTreeMap<u64, String> = (1..=3).map(|id| (id, addrs[id as usize - 1].to_string())).collect();
        let config = |id: u64| RaftConfig {
            id,
            listen: addrs[id as usize - 1],
            initial: Some(initial.clone()),
            heartbeat: Duration::from_millis(100),
            election: Duration::from_millis(500),
            ..RaftConfig::single(dirs[id as usize - 1].path().to_path_buf())
        };
        let mut nodes = BTreeMap::new();
        for id in 1..=3 {
            let (stop_tx, stop) = watch::channel(false);
            nodes.insert(id, (RaftNode::start(config(id), AppliedState::new(), clock(), stop).unwrap(), stop_tx));
        }
        let mut ids = std::collections::BTreeSet::new();
        for (node, _) in nodes.values() {
            ids.insert(wait_status(&node.handle, "the cluster's identity", |s| s.cluster_id.is_some()).await.cluster_id);
        }
        assert_eq!(ids.len(), 1, "founders share one identity: {ids:?}");

        let (node, stop) = nodes.remove(&3).unwrap();
        stop.send(true).unwrap();
        tokio::task::spawn_blocking(move || node.join()).await.unwrap();
        for entry in std::fs::read_dir(dirs[2].path()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let (_stop3, stop) = watch::channel(false);
        let again = RaftNode::start(config(3), AppliedState::new(), clock(), stop).unwrap();
        let why = tokio::time::timeout(Duration::from_secs(15), again.handle.stopped()).await.expect("the re-founded coordinator must stop");
        assert!(why.contains("neither its log nor its identity") && why.contains("rejoin it as a new member"), "{why}");
        assert_eq!(again.handle.status().role, "stopped");
        let leader = nodes[&1].0.handle.status().leader;
        assert!(matches!(leader, Some(1 | 2)), "the others keep a leader: {leader:?}");
        let cluster = nodes[&1].0.handle.status().cluster_id;

        // The way back: the wiped directory joins as a new member under a new id,
        // and takes the cluster's identity from the leader's snapshot.
        let leader = nodes[&leader.unwrap()].0.handle.clone();
        leader.change_members(MemberChange::Remove { id: 3 }).await.unwrap();
        for entry in std::fs::read_dir(dirs[2].path()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let join = RaftConfig { id: 4, listen: free_addr(), initial: Some(BTreeMap::new()), ..config(3) };
        let join_addr = join.listen.to_string();
        let (_stop4, stop) = watch::channel(false);
        let joined = RaftNode::start(join, AppliedState::new(), clock(), stop).unwrap();
        leader.change_members(MemberChange::AddLearner { id: 4, raft_addr: join_addr }).await.unwrap();
        let adopted = wait_status(&joined.handle, "the joiner to adopt the identity", |s| s.cluster_id.is_some()).await;
        assert_eq!(adopted.cluster_id, cluster);
        for _ in 0..100 {
            if identity::read(dirs[2].path()).unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(identity::read(dirs[2].path()).unwrap().map(|i| (Some(i.cluster_id), i.member_id)), Some((cluster, 4)));
        for (_, (node, stop)) in nodes {
            stop.send(true).unwrap();
            tokio::task::spawn_blocking(move || node.join()).await.unwrap();
        }
    }
}
