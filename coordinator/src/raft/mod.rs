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
         `sluice cluster join NEW_ID HOST:PORT` against the cluster"
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
        let (handle, thread) =
            driver::spawn(driver::Loop { replica, tick: TICK, listener, clock, advertise, max_batch: config.max_batch.max(1), data_dir: config.data_dir.clone(), identity }, stop)
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
}
