//! The Raft loop: one thread with its own runtime owns the replica, ticks it,
//! feeds it peers' messages and local requests, and sends what it says.
//!
//! Requests that arrive while the loop is busy (usually in an fsync) queue up
//! and are all handled before the next `Ready`, so one fsync commits a whole
//! batch: throughput grows with load instead of latency. The thread is its own
//! so that an fsync never stalls the API or the gateway.

use super::identity::{self, Identity};
use super::replica::{MemberChange, RaftError, Replica, Reply};
use super::transport::{self, Gate, LearntAddresses, LinkEvent, Local, Sinks, Transport, TransportCounters};
use crate::liveness::Liveness;
use crate::state_machine::{Command, Response};
use crate::tls::RaftTls;
use bytes::Bytes;
use raft::prelude::Message;
use raft::StateRole;
use serde::Serialize;
use sluice_common::{Clock, Timestamp};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info};

/// Requests queued for the Raft loop before callers are told to back off.
const REQUEST_QUEUE: usize = 16 * 1024;
/// Peer messages taken per loop turn before a `Ready` is handled: bounds latency.
const MAX_BATCH: usize = 4096;

enum Request {
    /// Boxed: a command is large (a function spec), the other requests small.
    Propose(Box<Command>, Reply<Response>),
    Read(Reply<()>),
    Change(MemberChange, Reply<u64>),
    /// Encoded liveness notes (`HeardReport`) for the leader.
    ShareHeard(Bytes),
    /// Answered by the loop itself on its next turn: proof that it turns.
    Ping(Reply<()>),
}

/// A member as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    pub id: u64,
    pub raft_addr: Option<String>,
    pub role: &'static str,
    /// Highest log index known to be on that member (leader only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
}

/// This coordinator's view of the cluster, republished after every loop turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RaftStatus {
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub role: &'static str,
    pub commit: u64,
    pub applied: u64,
    pub members: Vec<MemberView>,
    /// The cluster's identity, once its first leader has set it.
    pub cluster_id: Option<String>,
    /// The lowest entry version every member runs, as committed.
    pub cluster_version: u32,
    /// Why the replica stopped taking part in the cluster (its storage failed,
    /// its listener is unusable); `role` is then "stopped". The process should
    /// fail its health check and exit, so that its service manager restarts it.
    pub stopped: Option<String>,
}

/// Who leads, republished only when that changes: what the controller and the
/// failover grace need, without waking on every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leadership {
    pub leader: Option<u64>,
    /// The term this coordinator leads in; `None` unless it leads.
    pub term: Option<u64>,
    /// When this coordinator, leading, applied the first entry of its term:
    /// from then on its state holds every earlier decision, so it may decide.
    /// `None` unless it leads and has got that far.
    pub since: Option<Timestamp>,
}

/// How the rest of the coordinator talks to the Raft loop.
#[derive(Clone)]
pub struct RaftHandle {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<RaftStatus>,
    leadership: watch::Receiver<Leadership>,
    pub counters: Arc<TransportCounters>,
    /// When agents were last heard from: by this coordinator, and by followers
    /// that sent it their notes while it led.
    pub liveness: Arc<Mutex<Liveness>>,
}

impl RaftHandle {
    pub async fn propose(&self, command: Command) -> Result<Response, RaftError> {
        self.call(|reply| Request::Propose(Box::new(command), reply)).await
    }

    /// Resolves once the local state reflects every write committed before the call.
    pub async fn read_barrier(&self) -> Result<(), RaftError> {
        self.call(Request::Read).await
    }

    /// Commits one membership change; returns once `status()` shows it.
    pub async fn change_members(&self, change: MemberChange) -> Result<(), RaftError> {
        let index = self.call(|reply| Request::Change(change, reply)).await?;
        let mut status = self.status.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), status.wait_for(|s| s.applied >= index)).await;
        Ok(())
    }

    /// Sends this coordinator's liveness notes (an encoded `HeardReport`) to the leader.
    pub fn share_heard(&self, report: Bytes) {
        let _ = self.requests.try_send(Request::ShareHeard(report));
    }

    /// Resolves once the Raft loop has taken this request off its queue: it
    /// is turning (not wedged in an fsync, not overloaded past its queue).
    /// Needs no quorum, so a follower cut off from its peers still answers.
    pub async fn ping(&self) -> Result<(), RaftError> {
        self.call(Request::Ping).await
    }

    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    /// Resolves, with the reason, once the replica has stopped taking part in
    /// the cluster on its own (not when it is told to stop).
    pub async fn stopped(&self) -> String {
        let mut status = self.status.clone();
        let why = match status.wait_for(|s| s.stopped.is_some()).await {
            Ok(s) => s.stopped.clone().unwrap_or_default(),
            // The loop's thread has gone without saying why: as bad.
            Err(_) => "the raft loop ended".to_string(),
        };
        why
    }

    pub fn leadership(&self) -> Leadership {
        *self.leadership.borrow()
    }

    pub fn watch_leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    async fn call<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, RaftError> {
        let (tx, rx) = oneshot::channel();
        let reply: Reply<T> = Box::new(move |r| {
            let _ = tx.send(r);
        });
        match self.requests.try_send(make(reply)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(RaftError::Rejected("the coordinator is overloaded with writes; retry in a moment".into())),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(RaftError::Stopped),
        }
        // The replica answers every request (at the latest at its deadline).
        rx.await.unwrap_or(Err(RaftError::Stopped))
    }
}

/// Everything the loop needs, built by `RaftNode::start`.
pub(super) struct Loop {
    pub replica: Replica,
    pub tick: Duration,
    pub listener: std::net::TcpListener,
    pub clock: Arc<dyn Clock>,
    /// The address peers reach this coordinator at.
    pub advertise: String,
    /// Local requests taken per loop turn (1 turns batching off, for comparison).
    pub max_batch: usize,
    /// Mutual TLS on every link, in and out.
    pub tls: Option<RaftTls>,
    /// Where `cluster.id` is written once the cluster has an identity.
    pub data_dir: PathBuf,
    /// The identity found there at start.
    pub identity: Option<Identity>,
}

/// Starts the loop on its own thread; it runs until `stop` turns true.
pub(super) fn spawn(parts: Loop, stop: watch::Receiver<bool>) -> std::io::Result<(RaftHandle, std::thread::JoinHandle<()>)> {
    let (requests_tx, requests) = mpsc::channel(REQUEST_QUEUE);
    let (status_tx, status) = watch::channel(status_of(&parts.replica));
    let (leadership_tx, leadership) = watch::channel(Leadership::default());
    let counters = Arc::new(TransportCounters::default());
    let liveness = Arc::new(Mutex::new(Liveness::default()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outputs = Outputs { status: status_tx, leadership: leadership_tx, counters: counters.clone(), liveness: liveness.clone() };
    let thread = std::thread::Builder::new().name(format!("raft-{}", parts.replica.id())).spawn(move || {
        runtime.block_on(run(parts, requests, outputs, stop));
    })?;
    Ok((RaftHandle { requests: requests_tx, status, leadership, counters, liveness }, thread))
}

/// What the loop publishes.
struct Outputs {
    status: watch::Sender<RaftStatus>,
    leadership: watch::Sender<Leadership>,
    counters: Arc<TransportCounters>,
    liveness: Arc<Mutex<Liveness>>,
}

async fn run(parts: Loop, mut requests: mpsc::Receiver<Request>, outputs: Outputs, mut stop: watch::Receiver<bool>) {
    let Loop { mut replica, tick, listener, clock, advertise, max_batch, tls, data_dir, mut identity } = parts;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let gate = Gate::new(local(&replica, &advertise, identity.as_ref()));
    let mut transport = Transport::new(gate.clone(), events_tx, outputs.counters.clone(), tls.clone());
    let addresses = Arc::new(LearntAddresses::default());
    let (inbox_tx, mut inbox) = mpsc::channel::<Message>(MAX_BATCH);
    let listener = match listener.set_nonblocking(true).and_then(|_| TcpListener::from_std(listener)) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "raft listener unusable; this coordinator cannot take part in the cluster");
            stopped(&outputs, format!("the raft listener is unusable: {e}"));
            return;
        }
    };
    let sinks =
        Sinks { inbox: inbox_tx, liveness: outputs.liveness.clone(), clock: clock.clone(), addresses: addresses.clone(), counters: outputs.counters.clone(), gate: gate.clone() };
    let mut server_stop = stop.clone();
    tokio::spawn(transport::serve(listener, sinks, tls, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));
    let mut peers = addresses.fill(replica.members());
    transport.set_peers(replica.id(), &peers);
    replica.campaign_if_alone();

    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => replica.tick(),
            Some(msg) = inbox.recv() => {
                replica.step(msg);
                for _ in 0..MAX_BATCH {
                    match inbox.try_recv() { Ok(m) => replica.step(m), Err(_) => break }
                }
            }
            Some(req) = requests.recv() => {
                handle(&mut replica, &transport, req);
                for _ in 1..max_batch {
                    match requests.try_recv() { Ok(r) => handle(&mut replica, &transport, r), Err(_) => break }
                }
            }
            Some(ev) = events.recv() => on_link_event(&mut replica, ev),
            _ = stop.wait_for(|s| *s) => break,
        }
        match replica.handle_ready() {
            Ok(out) => transport.send(out.messages),
            Err(e) => {
                // A replica that cannot persist, or cannot apply what its peers
                // apply, must not vote or acknowledge anything.
                error!(error = %e, "this coordinator stops taking part in the cluster");
                stopped(&outputs, e.to_string());
                break;
            }
        }
        if let Err(why) = keep_identity(&replica, &data_dir, &mut identity) {
            error!("{why}");
            stopped(&outputs, why);
            break;
        }
        if let Some(why) = gate.halted() {
            error!("{why}");
            stopped(&outputs, why);
            break;
        }
        gate.set_local(local(&replica, &advertise, identity.as_ref()));
        replica.set_peer_versions(gate.versions());
        let now_peers = addresses.fill(replica.members());
        if now_peers != peers {
            peers = now_peers;
            transport.set_peers(replica.id(), &peers);
        }
        // Leading, but deciding only once the term's first entry is applied.
        let ready_term = replica.leader_ready().then(|| replica.term());
        match (ready_term, since) {
            (Some(term), Some((since_term, _))) if since_term == term => {}
            (Some(term), _) => {
                since = Some((term, clock.now()));
                info!(term, "this coordinator is the leader");
            }
            (None, _) => since = None,
        }
        let term = (replica.role() == StateRole::Leader).then(|| replica.term());
        publish(&outputs.leadership, Leadership { leader: replica.leader(), term, since: since.map(|(_, at)| at) });
        publish(&outputs.status, status_of(&replica));
    }
    replica.stop();
    transport.close();
    requests.close();
    while let Ok(req) = requests.try_recv() {
        handle_stopped(req);
    }
}

/// What this coordinator's hellos say of it.
fn local(replica: &Replica, advertise: &str, identity: Option<&Identity>) -> Local {
    let cluster = replica.cluster_id().or_else(|| identity.map(|i| i.cluster_id.clone()));
    Local { id: replica.id(), raft_addr: advertise.to_string(), blank: replica.is_blank(), cluster, voters: replica.conf_state().voters.iter().copied().collect() }
}

/// Writes the cluster's identity into the data directory once the replica
/// has it (applied from the log, or from a leader's snapshot), and refuses a
/// log of another cluster than the directory's.
fn keep_identity(replica: &Replica, data_dir: &std::path::Path, stored: &mut Option<Identity>) -> Result<(), String> {
    let Some(cluster_id) = replica.cluster_id() else { return Ok(()) };
    match stored {
        Some(s) if s.cluster_id == cluster_id => Ok(()),
        Some(s) => Err(format!(
            "the data directory {} belongs to cluster {}, but its log is of cluster {cluster_id}: it was mixed up with another coordinator's; restore the right one, or wipe it and rejoin as a new member",
            data_dir.display(),
            s.cluster_id
        )),
        None => {
            let new = Identity { cluster_id, member_id: replica.id() };
            identity::write(data_dir, &new).map_err(|e| format!("cannot record the cluster identity in {}: {e}; fix the disk or data directory and restart", data_dir.display()))?;
            info!(cluster = %new.cluster_id, "this coordinator belongs to its cluster for good (cluster.id written)");
            *stored = Some(new);
            Ok(())
        }
    }
}

/// Publishes that the replica no longer takes part: it leads nobody, knows no
/// leader, and says why.
fn stopped(outputs: &Outputs, why: String) {
    outputs.leadership.send_replace(Leadership::default());
    outputs.status.send_modify(|s| {
        s.role = "stopped";
        s.leader = None;
        s.stopped = Some(why);
    });
}

fn publish<T: PartialEq>(tx: &watch::Sender<T>, next: T) {
    tx.send_if_modified(|current| {
        let changed = *current != next;
        if changed {
            *current = next;
        }
        changed
    });
}

fn handle(replica: &mut Replica, transport: &Transport, req: Request) {
    match req {
        Request::Propose(cmd, reply) => replica.propose(*cmd, reply),
        Request::Read(reply) => replica.read(reply),
        Request::Change(change, reply) => replica.change_members(change, reply),
        Request::ShareHeard(report) => {
            if let Some(leader) = replica.leader().filter(|l| *l != replica.id()) {
                transport.send_heard(leader, report);
            }
        }
        Request::Ping(reply) => reply(Ok(())),
    }
}

fn handle_stopped(req: Request) {
    match req {
        Request::Propose(_, reply) => reply(Err(RaftError::Stopped)),
        Request::Read(reply) => reply(Err(RaftError::Stopped)),
        Request::Change(_, reply) => reply(Err(RaftError::Stopped)),
        Request::ShareHeard(_) => {}
        Request::Ping(reply) => reply(Err(RaftError::Stopped)),
    }
}

fn on_link_event(replica: &mut Replica, ev: LinkEvent) {
    match ev {
        LinkEvent::Unreachable(id) => replica.report_unreachable(id),
        LinkEvent::Snapshot { to, delivered } => replica.report_snapshot(to, delivered),
    }
}

fn status_of(replica: &Replica) -> RaftStatus {
    let progress = replica.progress();
    let conf = replica.conf_state();
    let mut roles: BTreeMap<u64, &'static str> = conf.voters.iter().map(|id| (*id, "voter")).collect();
    roles.extend(conf.learners.iter().map(|id| (*id, "learner")));
    let members = roles
        .into_iter()
        .map(|(id, role)| MemberView { id, raft_addr: replica.members().get(&id).map(|m| m.raft_addr.clone()), role, matched: progress.as_ref().and_then(|p| p.get(&id).copied()) })
        .collect();
    RaftStatus {
        id: replica.id(),
        leader: replica.leader(),
        term: replica.term(),
        role: match replica.role() {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre_candidate",
        },
        commit: replica.commit(),
        applied: replica.applied(),
        stopped: None,
        cluster_id: replica.cluster_id(),
        cluster_version: replica.cluster_version(),
        members,
    }
}
