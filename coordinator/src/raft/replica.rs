//! One coordinator's Raft replica, without I/O: a raft-rs `RawNode` over the
//! on-disk log, the state machine it feeds, and the requests waiting on both.
//!
//! Everything here is driven by calls (`tick`, `step`, `propose`, `read`,
//! `change_members`, `handle_ready`) and answers by returning the messages to
//! send and by calling each request's reply. The tokio driver (`driver.rs`) and
//! the deterministic simulator (`sim.rs`) both drive the same code; time is the
//! number of ticks.
//!
//! Proposals carry (origin, boot, seq), so the replica that took a request
//! answers it when it applies that entry, wherever it was proposed from: a
//! follower hands its proposals to the leader (raft-rs forwards `MsgProp`) and
//! still answers its own client. A request that is not applied within its
//! deadline is answered "outcome unknown", never guessed.
//!
//! Entries carry the entry version of their command (`v`; none means 1). An
//! entry this binary cannot read, or of a newer version than it knows, stops
//! the replica (`Fatal::Entry`): skipping it would let members of different
//! versions hold different states. The leader keeps the cluster version at the
//! lowest version its members run (`SetClusterVersion`) and gives the cluster
//! its identity once (`SetClusterId`).

use super::log_store::{LogError, LogStore, Persist};
use crate::applied::AppliedState;
use crate::state::ClusterState;
use crate::state_machine::{apply, Command, LogPosition, Response, ENTRY_VERSION};
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, ReadOnlyOption, SnapshotStatus, StateRole, Storage};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tracing::{info, warn};

/// Why a request did not get a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    #[error("no coordinator leader is known right now (an election is under way or a majority is unreachable); retry in a moment")]
    NoLeader,
    #[error("the change was not committed in time (leader lost or majority unreachable); its outcome is unknown: read back before retrying if the change is not idempotent")]
    Unknown,
    #[error("membership changes are made by the leader (coordinator {leader:?} as far as this one knows); send it there")]
    NotLeader { leader: Option<u64> },
    #[error("{0}")]
    Rejected(String),
    #[error("the coordinator is shutting down; retry on another coordinator")]
    Stopped,
    /// The command's kind is newer than the cluster version (a member runs an older sluice).
    #[error("{0}")]
    TooNew(String),
}

/// Why a replica stops taking part in the cluster for good: going on would
/// risk acknowledging what it did not store, or holding a state its peers do not.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("raft storage failed: {0}")]
    Storage(#[from] LogError),
    #[error(
        "log entry {index} cannot be applied: {reason}; this coordinator stops rather than skip it and hold a different state from its peers \
         (run the same or a newer sluice than the rest of the cluster, then restart it)"
    )]
    Entry { index: u64, reason: String },
}

/// How a request is answered: called once, from inside the replica.
pub type Reply<T> = Box<dyn FnOnce(Result<T, RaftError>) + Send>;

/// A coordinator as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where its peers reach its Raft port.
    pub raft_addr: String,
}

/// A membership change, one at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MemberChange {
    AddLearner { id: u64, raft_addr: String },
    Promote { id: u64 },
    Remove { id: u64 },
}

#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: u64,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Ticks without a leader before a follower campaigns (randomised up to 2x).
    pub election_ticks: usize,
    /// Take a snapshot and compact the log every this many applied entries.
    pub snapshot_every: u64,
    /// Ticks a proposal or read may wait before it is answered `Unknown`/`NoLeader`.
    pub request_ticks: u64,
    /// The identity this replica gives the cluster if it is the leader that
    /// sets it (a random id drawn at start); `None` never sets one.
    pub new_cluster_id: Option<String>,
}

/// What the replica wants sent after handling a `Ready`.
#[derive(Debug, Default)]
pub struct Outbox {
    pub messages: Vec<Message>,
}

/// Entry payload of a normal proposal.
#[derive(Debug, Serialize, Deserialize)]
struct Proposal {
    /// The entry version (`Command::entry_version`); absent in entries written
    /// before versions existed, which are version 1.
    #[serde(default = "first_version")]
    v: u32,
    origin: u64,
    boot: u64,
    seq: u64,
    command: Command,
}

fn first_version() -> u32 {
    1
}

/// What is read of an entry before its command: its version alone, so that
/// an entry of a newer version is told apart from a damaged one.
#[derive(Debug, Deserialize)]
struct EntryHeader {
    #[serde(default = "first_version")]
    v: u32,
}

/// Decodes a normal entry, or says why this binary cannot apply it.
fn decode_proposal(data: &[u8]) -> Result<Proposal, String> {
    let header: EntryHeader = serde_json::from_slice(data).map_err(|e| format!("it is not a proposal this version can read ({e})"))?;
    if header.v > ENTRY_VERSION {
        return Err(format!("it was written by a coordinator of entry version {}, and this one reads up to version {ENTRY_VERSION}", header.v));
    }
    serde_json::from_slice(data).map_err(|e| format!("its command cannot be decoded ({e}); a newer coordinator may have written it"))
}

/// Context of a membership entry.
#[derive(Debug, Serialize, Deserialize)]
struct ChangeContext {
    origin: u64,
    boot: u64,
    seq: u64,
    raft_addr: Option<String>,
}

/// The state machine as a snapshot holds it.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotData {
    state: ClusterState,
    members: BTreeMap<u64, Member>,
}

struct Waiting<T> {
    reply: Reply<T>,
    deadline: u64,
    /// The leader when the request was made.
    leader: Option<u64>,
}

/// Ticks between re-asking for a read index: raft-rs drops the request silently
/// when it reaches a leader that has not yet committed in its term, or is lost.
const READ_RETRY_TICKS: u64 = 2;

pub struct Replica {
    raw: RawNode<LogStore>,
    config: ReplicaConfig,
    machine: Arc<AppliedState>,
    members: BTreeMap<u64, Member>,
    applied: u64,
    /// Distinguishes this run's proposals from an earlier run's with the same seq.
    boot: u64,
    next_seq: u64,
    now: u64,
    proposals: HashMap<u64, Waiting<Response>>,
    /// Membership changes, answered with the index they were applied at.
    changes: HashMap<u64, Waiting<u64>>,
    /// Reads waiting for the leader to confirm a read index.
    reads: HashMap<u64, Waiting<()>>,
    /// Reads with a confirmed index, waiting for it to be applied.
    ready_reads: Vec<(u64, Waiting<()>)>,
    /// The leader as of the last `Ready`.
    seen_leader: Option<u64>,
    /// Term of the last applied entry: once it is the current term, a leader
    /// has applied its own first entry, and with it everything committed before.
    applied_term: u64,
    /// The first entry applied in the latest term seen (term, index): a
    /// leader's own first entry, which every voter must hold before the
    /// leader gives the cluster its identity.
    term_start: (u64, u64),
    /// The entry version each peer runs, as its hello said.
    peer_versions: BTreeMap<u64, u32>,
    /// No leader's proposal of its own (`housekeeping`) before this tick.
    housekeeping_after: u64,
}

impl Replica {
    /// Opens the replica over `log`. An empty log is bootstrapped with `initial`
    /// (the same on every founding member) unless `initial` is empty, which means
    /// "wait to be added to an existing cluster".
    pub fn new(config: ReplicaConfig, mut log: LogStore, initial: &BTreeMap<u64, Member>, machine: Arc<AppliedState>, boot: u64) -> Result<Self, LogError> {
        if log.is_empty() && !initial.is_empty() {
            log.persist(Persist { snapshot: Some(&bootstrap_snapshot(initial)?), ..Default::default() })?;
        }
        let snap = log.snapshot_ref().clone();
        let (state, members) = decode_snapshot(&snap)?;
        machine.replace(state);
        let applied = snap.get_metadata().index;
        let raft_config = raft::Config {
            id: config.id,
            heartbeat_tick: config.heartbeat_ticks,
            election_tick: config.election_ticks,
            applied,
            pre_vote: true,
            check_quorum: true,
            read_only_option: ReadOnlyOption::Safe,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        let logger = super::logger::tracing_logger(config.id);
        let raw = RawNode::new(&raft_config, log, &logger).map_err(|e| LogError::Db(format!("raft refused the stored state: {e}")))?;
        Ok(Self {
            raw,
            config,
            machine,
            members,
            applied,
            boot,
            next_seq: 1,
            now: 0,
            proposals: HashMap::new(),
            changes: HashMap::new(),
            reads: HashMap::new(),
            ready_reads: Vec::new(),
            seen_leader: None,
            applied_term: snap.get_metadata().term,
            term_start: (snap.get_metadata().term, snap.get_metadata().index),
            peer_versions: BTreeMap::new(),
            housekeeping_after: 0,
        })
    }

    /// A cluster of one elects itself at once instead of after an election timeout.
    pub fn campaign_if_alone(&mut self) {
        if self.conf_state().voters == [self.config.id] && self.role() != StateRole::Leader {
            let _ = self.raw.campaign();
        }
    }

    pub fn id(&self) -> u64 {
        self.config.id
    }

    pub fn leader(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|&l| l != raft::INVALID_ID)
    }

    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// A leader that has applied an entry of its own term: its state holds
    /// every decision its predecessors committed, so it may decide.
    pub fn leader_ready(&self) -> bool {
        self.role() == StateRole::Leader && self.applied_term == self.term()
    }

    pub fn commit(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The cluster's identity, once its first leader has set it.
    pub fn cluster_id(&self) -> Option<String> {
        self.machine.read().cluster_id.clone()
    }

    pub fn cluster_version(&self) -> u32 {
        self.machine.read().cluster_version()
    }

    /// Holds nothing of a cluster yet: no entry past a founder's first
    /// snapshot, and no identity. Such a replica that is a voter and hears of
    /// a cluster with an identity has lost its data (see `driver`).
    pub fn is_blank(&self) -> bool {
        self.raw.raft.raft_log.last_index() <= 1 && self.machine.read().cluster_id.is_none()
    }

    /// What entry version each peer runs, from their hellos.
    pub fn set_peer_versions(&mut self, versions: BTreeMap<u64, u32>) {
        self.peer_versions = versions;
    }

    pub fn members(&self) -> &BTreeMap<u64, Member> {
        &self.members
    }

    pub fn conf_state(&self) -> &ConfState {
        self.raw.store().conf_state()
    }

    /// What the leader knows of each member's log (`None` on a non-leader).
    pub fn progress(&self) -> Option<BTreeMap<u64, u64>> {
        (self.role() == StateRole::Leader).then(|| self.raw.raft.prs().iter().map(|(id, p)| (*id, p.matched)).collect())
    }

    /// The raft-rs node underneath, for the simulator (`sim.rs`) to inspect the log
    /// and to draw election timeouts from its seed instead of raft-rs's thread RNG.
    #[cfg(test)]
    pub(super) fn raw(&self) -> &RawNode<LogStore> {
        &self.raw
    }

    #[cfg(test)]
    pub(super) fn raw_mut(&mut self) -> &mut RawNode<LogStore> {
        &mut self.raw
    }

    /// Advances time by one tick and expires requests past their deadline.
    pub fn tick(&mut self) {
        self.now += 1;
        self.raw.tick();
        let now = self.now;
        if now.is_multiple_of(READ_RETRY_TICKS) && self.leader().is_some() {
            let unconfirmed: Vec<u64> = self.reads.keys().copied().collect();
            for seq in unconfirmed {
                self.ask_read_index(seq);
            }
        }
        expire(&mut self.proposals, now, RaftError::Unknown);
        expire(&mut self.changes, now, RaftError::Unknown);
        expire(&mut self.reads, now, RaftError::NoLeader);
        let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready_reads).into_iter().partition(|(_, w)| w.deadline <= now);
        self.ready_reads = waiting;
        for (_, w) in late {
            (w.reply)(Err(RaftError::Unknown));
        }
    }

    pub fn step(&mut self, msg: Message) {
        if let Err(e) = self.raw.step(msg) {
            // Messages from removed or unknown peers, or stale ones: harmless.
            tracing::debug!(error = %e, "raft message ignored");
        }
    }

    /// Proposes `command`; `reply` gets its response once applied here.
    pub fn propose(&mut self, command: Command, reply: Reply<Response>) {
        if self.leader().is_none() {
            return reply(Err(RaftError::NoLeader));
        }
        if let Err(why) = command.allowed_at(self.cluster_version()) {
            return reply(Err(RaftError::TooNew(why)));
        }
        let seq = self.take_seq();
        let data = match serde_json::to_vec(&Proposal { v: command.entry_version(), origin: self.config.id, boot: self.boot, seq, command }) {
            Ok(d) => d,
            Err(e) => return reply(Err(RaftError::Rejected(format!("command cannot be encoded: {e}")))),
        };
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                self.proposals.insert(seq, Waiting { reply, deadline: self.now + self.config.request_ticks, leader: self.leader() });
            }
            Err(raft::Error::ProposalDropped) => reply(Err(RaftError::NoLeader)),
            Err(e) => reply(Err(RaftError::Rejected(e.to_string()))),
        }
    }

    /// Answers once this replica has applied everything committed when the read
    /// was asked: reading the machine then is linearizable (ReadIndex).
    pub fn read(&mut self, reply: Reply<()>) {
        if self.leader().is_none() {
            return reply(Err(RaftError::NoLeader));
        }
        let seq = self.take_seq();
        self.ask_read_index(seq);
        self.reads.insert(seq, Waiting { reply, deadline: self.now + self.config.request_ticks, leader: self.leader() });
    }

    fn ask_read_index(&mut self, seq: u64) {
        let mut ctx = self.boot.to_be_bytes().to_vec();
        ctx.extend_from_slice(&seq.to_be_bytes());
        self.raw.read_index(ctx);
    }

    /// Proposes one membership change. Only the leader takes them, one at a time.
    pub fn change_members(&mut self, change: MemberChange, reply: Reply<u64>) {
        if self.role() != StateRole::Leader {
            return reply(Err(RaftError::NotLeader { leader: self.leader() }));
        }
        if self.raw.raft.has_pending_conf() {
            return reply(Err(RaftError::Rejected("another membership change is still being committed; retry when it is done".into())));
        }
        let voters = &self.conf_state().voters;
        let learners = &self.conf_state().learners;
        let (id, change_type, raft_addr) = match change {
            MemberChange::AddLearner { id, raft_addr } => {
                if voters.contains(&id) || learners.contains(&id) {
                    return reply(Err(RaftError::Rejected(format!("coordinator {id} is already a member; remove it first to change its address"))));
                }
                (id, ConfChangeType::AddLearnerNode, Some(raft_addr))
            }
            MemberChange::Promote { id } => {
                if !learners.contains(&id) {
                    return reply(Err(RaftError::Rejected(format!("coordinator {id} is not a learner; add it first"))));
                }
                (id, ConfChangeType::AddNode, None)
            }
            MemberChange::Remove { id } => {
                if !voters.contains(&id) && !learners.contains(&id) {
                    return reply(Err(RaftError::Rejected(format!("coordinator {id} is not a member"))));
                }
                if voters.len() == 1 && voters.contains(&id) {
                    return reply(Err(RaftError::Rejected("cannot remove the last voting coordinator".into())));
                }
                (id, ConfChangeType::RemoveNode, None)
            }
        };
        let seq = self.take_seq();
        let context = match serde_json::to_vec(&ChangeContext { origin: self.config.id, boot: self.boot, seq, raft_addr }) {
            Ok(c) => c,
            Err(e) => return reply(Err(RaftError::Rejected(e.to_string()))),
        };
        let cc = ConfChange { change_type, node_id: id, ..Default::default() };
        match self.raw.propose_conf_change(context, cc) {
            Ok(()) => {
                self.changes.insert(seq, Waiting { reply, deadline: self.now + self.config.request_ticks, leader: self.leader() });
            }
            Err(e) => reply(Err(RaftError::Rejected(e.to_string()))),
        }
    }

    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    pub fn report_snapshot(&mut self, id: u64, delivered: bool) {
        self.raw.report_snapshot(id, if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure });
    }

    /// Persists, applies and collects messages: the raft-rs `Ready` cycle.
    pub fn handle_ready(&mut self) -> Result<Outbox, Fatal> {
        let mut out = Outbox::default();
        self.housekeeping();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut ready = self.raw.ready();
        // A leader may send before it persists (the paper's parallel append).
        out.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            self.raw.mut_store().persist(Persist { snapshot: Some(&snap), ..Default::default() })?;
            self.restore(&snap)?;
        }
        self.apply_committed(ready.take_committed_entries())?;
        self.raw.mut_store().persist(Persist { entries: ready.entries(), hard_state: ready.hs(), ..Default::default() })?;
        for rs in ready.take_read_states() {
            self.read_confirmed(&rs.request_ctx, rs.index);
        }
        out.messages.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        out.messages.extend(light.take_messages());
        self.apply_committed(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        self.on_leader_change();
        Ok(out)
    }

    /// The leader's own proposals, one at a time: the cluster version, once
    /// every member says it runs a newer one; then the cluster's identity,
    /// once every voter holds this leader's first entry (so that afterwards a
    /// voter without the identity and without a log has lost its data).
    fn housekeeping(&mut self) {
        if !self.leader_ready() || self.now < self.housekeeping_after {
            return;
        }
        let (version, has_id) = {
            let state = self.machine.read();
            (state.cluster_version(), state.cluster_id.is_some())
        };
        let set_id = self.config.new_cluster_id.clone().map(|id| Command::SetClusterId { id });
        let command = match (self.members_version(), set_id) {
            (Some(v), _) if v > version => Command::SetClusterVersion { version: v },
            (_, Some(set_id)) if !has_id && set_id.allowed_at(version).is_ok() && self.voters_hold_term_start() => set_id,
            _ => return,
        };
        info!(?command, "the leader proposes a change of its own");
        self.housekeeping_after = self.now + self.config.request_ticks;
        let seq = self.take_seq();
        match serde_json::to_vec(&Proposal { v: command.entry_version(), origin: self.config.id, boot: self.boot, seq, command }) {
            Ok(data) => {
                // Lost with a leader change; proposed again by the next leader.
                let _ = self.raw.propose(vec![], data);
            }
            Err(e) => warn!(error = %e, "cannot encode the leader's own proposal"),
        }
    }

    /// The lowest entry version the members run, once every one has said.
    fn members_version(&self) -> Option<u32> {
        let conf = self.conf_state();
        conf.voters
            .iter()
            .chain(&conf.learners)
            .map(|id| if *id == self.config.id { Some(ENTRY_VERSION) } else { self.peer_versions.get(id).copied() })
            .try_fold(ENTRY_VERSION, |low, v| v.map(|v| low.min(v)))
    }

    fn voters_hold_term_start(&self) -> bool {
        let (term, index) = self.term_start;
        term == self.term() && self.progress().is_some_and(|p| self.conf_state().voters.iter().all(|id| p.get(id).is_some_and(|m| *m >= index)))
    }

    /// When the leader changes, a write still waiting was proposed to, or by, a
    /// leader that is gone: it may have been committed or lost, and nothing will
    /// tell. Answering "unknown" now, rather than at its deadline, lets the
    /// client retry against the new leader after an election instead of 5 s.
    /// Reads keep waiting: they ask the new leader for a read index themselves.
    fn on_leader_change(&mut self) {
        let leader = self.leader();
        if leader == self.seen_leader {
            return;
        }
        self.seen_leader = leader;
        abandon(&mut self.proposals, leader);
        abandon(&mut self.changes, leader);
    }

    fn take_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn apply_committed(&mut self, entries: Vec<Entry>) -> Result<(), Fatal> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut desired_changed = false;
        let mut routes = Vec::new();
        for entry in entries {
            self.applied = entry.index;
            self.applied_term = entry.term;
            if entry.term != self.term_start.0 {
                self.term_start = (entry.term, entry.index);
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {} // a new leader's no-op
                EntryType::EntryNormal => match decode_proposal(&entry.data) {
                    Ok(p) => {
                        // The lock is held per entry so that replies run without it.
                        let position = LogPosition { index: entry.index, term: entry.term };
                        let (response, effects) = apply(&mut self.machine.write(), &p.command, position);
                        desired_changed |= effects.desired_changed;
                        routes.extend(effects.routes);
                        self.machine.record_events(effects.events);
                        self.machine.record_purges(effects.purges);
                        if p.origin == self.config.id && p.boot == self.boot {
                            if let Some(w) = self.proposals.remove(&p.seq) {
                                (w.reply)(Ok(response));
                            }
                        }
                    }
                    // Skipping it would be silent divergence from the members that can
                    // apply it (older versions skipped, and could disagree forever).
                    Err(reason) => return Err(Fatal::Entry { index: entry.index, reason }),
                },
                EntryType::EntryConfChange => self.apply_conf_change(&entry)?,
                EntryType::EntryConfChangeV2 => {
                    return Err(Fatal::Entry { index: entry.index, reason: "it is a joint-consensus change, and this version makes one change at a time".into() })
                }
            }
        }
        self.machine.applied(self.applied, desired_changed, routes);
        self.release_reads();
        Ok(())
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), Fatal> {
        let cc = ConfChange::parse_from_bytes(&entry.data).map_err(|e| Fatal::Entry { index: entry.index, reason: format!("its membership change cannot be decoded ({e})") })?;
        let ctx: Option<ChangeContext> = serde_json::from_slice(&entry.context).ok();
        let outcome = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                self.raw.mut_store().persist(Persist { conf_state: Some(&cs), ..Default::default() })?;
                match cc.get_change_type() {
                    ConfChangeType::AddLearnerNode | ConfChangeType::AddNode => {
                        if let Some(addr) = ctx.as_ref().and_then(|c| c.raft_addr.clone()) {
                            self.members.insert(cc.node_id, Member { raft_addr: addr });
                        }
                    }
                    ConfChangeType::RemoveNode => {
                        self.members.remove(&cc.node_id);
                        if cc.node_id == self.config.id {
                            warn!("this coordinator was removed from the cluster: it takes no further part; stop it");
                            self.step_down_if_leading();
                        }
                    }
                }
                info!(change = ?cc.get_change_type(), node = cc.node_id, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
                Ok(entry.index)
            }
            Err(e) => Err(RaftError::Rejected(format!("membership change refused: {e}"))),
        };
        if let Some(ctx) = ctx.filter(|c| c.origin == self.config.id && c.boot == self.boot) {
            if let Some(w) = self.changes.remove(&ctx.seq) {
                (w.reply)(outcome);
            }
        }
        Ok(())
    }

    /// A leader that removed itself stops leading at once. raft-rs 0.7 keeps it
    /// leader without a progress entry of its own, and panics (`unwrap` on `None`
    /// in `maybe_commit` or `on_persist_entries`) as soon as its commit or persisted
    /// index moves again. This is etcd's `StepDownOnRemoval`; the remaining voters
    /// elect a leader once their election timeout passes. It must not send anything
    /// here (a transfer would): raft-rs refuses messages from a non-leader after `advance`.
    fn step_down_if_leading(&mut self) {
        if self.role() == StateRole::Leader {
            let term = self.term();
            self.raw.raft.become_follower(term, raft::INVALID_ID);
        }
    }

    fn read_confirmed(&mut self, ctx: &[u8], index: u64) {
        let Some(seq) = ctx.get(8..16).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else { return };
        if ctx[..8] != self.boot.to_be_bytes() {
            return;
        }
        if let Some(w) = self.reads.remove(&seq) {
            self.ready_reads.push((index, w));
        }
        self.release_reads();
    }

    fn release_reads(&mut self) {
        let applied = self.applied;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready_reads).into_iter().partition(|(i, _)| *i <= applied);
        self.ready_reads = waiting;
        for (_, w) in done {
            (w.reply)(Ok(()));
        }
    }

    /// Replaces the machine with a snapshot received from the leader.
    fn restore(&mut self, snap: &Snapshot) -> Result<(), LogError> {
        let (state, members) = decode_snapshot(snap)?;
        self.machine.replace(state);
        self.members = members;
        self.applied = snap.get_metadata().index;
        self.applied_term = snap.get_metadata().term;
        self.machine.applied(self.applied, true, None);
        info!(index = self.applied, "state restored from the leader's snapshot");
        self.release_reads();
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), LogError> {
        let last = self.raw.store().snapshot_ref().get_metadata().index;
        let wanted = self.raw.store().take_snapshot_wanted() && self.applied > last;
        if self.applied < last + self.config.snapshot_every && !wanted {
            return Ok(());
        }
        let term = self.raw.store().term(self.applied).map_err(|e| LogError::Db(format!("term of applied entry {}: {e}", self.applied)))?;
        let data = SnapshotData { state: self.machine.read().clone(), members: self.members.clone() };
        let mut snap = Snapshot { data: encode_snapshot(&data)?, ..Default::default() };
        let meta = snap.mut_metadata();
        meta.index = self.applied;
        meta.term = term;
        meta.set_conf_state(self.conf_state().clone());
        self.raw.mut_store().compact(snap)?;
        tracing::debug!(index = self.applied, "log compacted into a snapshot");
        Ok(())
    }

    /// Answers every waiting request with `Stopped`.
    pub fn stop(&mut self) {
        for (_, w) in self.proposals.drain() {
            (w.reply)(Err(RaftError::Stopped));
        }
        for (_, w) in self.changes.drain() {
            (w.reply)(Err(RaftError::Stopped));
        }
        for (_, w) in self.reads.drain() {
            (w.reply)(Err(RaftError::Stopped));
        }
        for (_, w) in self.ready_reads.drain(..) {
            (w.reply)(Err(RaftError::Stopped));
        }
    }
}

/// Answers "unknown" every request made under another leader than `leader`.
fn abandon<T>(waiting: &mut HashMap<u64, Waiting<T>>, leader: Option<u64>) {
    let stale: Vec<u64> = waiting.iter().filter(|(_, w)| w.leader != leader).map(|(k, _)| *k).collect();
    for k in stale {
        if let Some(w) = waiting.remove(&k) {
            (w.reply)(Err(RaftError::Unknown));
        }
    }
}

fn expire<T>(waiting: &mut HashMap<u64, Waiting<T>>, now: u64, error: RaftError) {
    let late: Vec<u64> = waiting.iter().filter(|(_, w)| w.deadline <= now).map(|(k, _)| *k).collect();
    for k in late {
        if let Some(w) = waiting.remove(&k) {
            (w.reply)(Err(error.clone()));
        }
    }
}

/// The founding members' first snapshot: identical on each of them, so they
/// start from the same configuration (index 1, term 1) without a log.
fn bootstrap_snapshot(members: &BTreeMap<u64, Member>) -> Result<Snapshot, LogError> {
    let data = SnapshotData { state: ClusterState::default(), members: members.clone() };
    let mut snap = Snapshot { data: encode_snapshot(&data)?, ..Default::default() };
    let meta = snap.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    meta.mut_conf_state().voters = members.keys().copied().collect();
    Ok(snap)
}

fn encode_snapshot(data: &SnapshotData) -> Result<bytes::Bytes, LogError> {
    serde_json::to_vec(data).map(Into::into).map_err(|e| LogError::Corrupt { what: "snapshot", reason: e.to_string() })
}

fn decode_snapshot(snap: &Snapshot) -> Result<(ClusterState, BTreeMap<u64, Member>), LogError> {
    if snap.data.is_empty() {
        return Ok(Default::default());
    }
    let data: SnapshotData = serde_json::from_slice(&snap.data).map_err(|e| LogError::Corrupt { what: "snapshot", reason: e.to_string() })?;
    Ok((data.state, data.members))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Elected is not ready: a leader decides only once it has applied its
    /// term's first entry (before the fix the controller planned at election).
    #[test]
    fn a_leader_is_ready_to_decide_once_its_first_entry_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join("raft.redb")).unwrap();
        let config = ReplicaConfig { id: 1, heartbeat_ticks: 3, election_ticks: 20, snapshot_every: 1000, request_ticks: 100, new_cluster_id: None };
        let initial = BTreeMap::from([(1, Member { raft_addr: "127.0.0.1:1".into() })]);
        let mut r = Replica::new(config, log, &initial, AppliedState::new(), 7).unwrap();
        r.campaign_if_alone();
        assert_eq!(r.role(), StateRole::Leader);
        assert!(!r.leader_ready(), "elected, but its no-op is not applied");
        r.handle_ready().unwrap();
        assert!(r.leader_ready());
    }

    /// A leader of a cluster of one, ready to decide.
    fn alone(new_cluster_id: Option<String>) -> (Replica, Arc<AppliedState>) {
        let config = ReplicaConfig { id: 1, heartbeat_ticks: 3, election_ticks: 20, snapshot_every: 1000, request_ticks: 100, new_cluster_id };
        let initial = BTreeMap::from([(1, Member { raft_addr: "127.0.0.1:1".into() })]);
        let machine = AppliedState::new();
        let mut r = Replica::new(config, LogStore::in_memory().unwrap(), &initial, machine.clone(), 7).unwrap();
        r.campaign_if_alone();
        r.handle_ready().unwrap();
        assert!(r.leader_ready());
        (r, machine)
    }

    type Answer<T> = Arc<std::sync::Mutex<Option<Result<T, RaftError>>>>;

    fn answer<T: Send + 'static>() -> (Answer<T>, Reply<T>) {
        let slot: Answer<T> = Arc::default();
        let reply_slot = slot.clone();
        (slot, Box::new(move |r| *reply_slot.lock().unwrap() = Some(r)))
    }

    fn settle(r: &mut Replica) -> Result<(), Fatal> {
        for _ in 0..5 {
            r.handle_ready()?;
        }
        Ok(())
    }

    /// Before: "skipping an undecodable log entry", and the replica went on
    /// with a state its newer peers did not have. Now it stops, and says which
    /// entry and why, whether the entry is of a newer version or of a kind it
    /// does not know.
    #[test]
    fn an_entry_this_version_cannot_apply_stops_the_replica() {
        for (data, why) in [
            (r#"{"v":99,"origin":1,"boot":7,"seq":50,"command":{"type":"put_function","spec":null}}"#, "entry version 99"),
            (r#"{"origin":1,"boot":7,"seq":50,"command":{"type":"create_token","name":"t"}}"#, "cannot be decoded"),
        ] {
            let (mut r, _) = alone(None);
            r.raw.propose(vec![], data.as_bytes().to_vec()).unwrap();
            let stop = settle(&mut r).expect_err("the replica must stop at an entry it cannot apply");
            let text = stop.to_string();
            assert!(matches!(stop, Fatal::Entry { .. }), "{text}");
            assert!(text.contains(why) && text.contains("stops rather than skip"), "{text}");
        }
    }

    /// Entries written before the envelope had a version replay as version 1.
    #[test]
    fn an_entry_without_a_version_is_version_one() {
        let (mut r, machine) = alone(None);
        let data = r#"{"origin":9,"boot":1,"seq":1,"command":{"type":"put_rules","rules":[]}}"#;
        assert_eq!(decode_proposal(data.as_bytes()).unwrap().v, 1);
        r.raw.propose(vec![], data.as_bytes().to_vec()).unwrap();
        settle(&mut r).unwrap();
        assert!(machine.read().rules.is_empty());
    }

    /// A kind introduced at version 2 is refused while the cluster is at 1,
    /// with an error saying what to do, and taken once the leader has raised
    /// the version (it does so itself once every member runs version 2).
    #[test]
    fn a_newer_kind_waits_for_the_cluster_version() {
        let (mut r, machine) = alone(None);
        assert_eq!(machine.read().cluster_version(), 1, "the version is raised by a committed entry, not at once");
        let (refused, reply) = answer();
        r.propose(Command::SetClusterId { id: "c1".into() }, reply);
        let refused = refused.lock().unwrap().take();
        assert!(matches!(&refused, Some(Err(RaftError::TooNew(why))) if why.contains("cluster version 2") && why.contains("upgrade every coordinator")), "{refused:?}");
        settle(&mut r).unwrap();
        assert_eq!(machine.read().cluster_version(), ENTRY_VERSION);
        let (taken, reply) = answer();
        r.propose(Command::SetClusterId { id: "c1".into() }, reply);
        settle(&mut r).unwrap();
        assert_eq!(taken.lock().unwrap().take(), Some(Ok(Response::Ok)));
        assert_eq!(machine.read().cluster_id.as_deref(), Some("c1"));
    }

    /// The version is the lowest any member runs, and unknown until all have said.
    #[test]
    fn the_cluster_version_waits_for_every_member() {
        let config = ReplicaConfig { id: 1, heartbeat_ticks: 3, election_ticks: 20, snapshot_every: 1000, request_ticks: 100, new_cluster_id: None };
        let initial: BTreeMap<u64, Member> = (1..=3).map(|id| (id, Member { raft_addr: format!("127.0.0.1:{id}") })).collect();
        let mut r = Replica::new(config, LogStore::in_memory().unwrap(), &initial, AppliedState::new(), 7).unwrap();
        assert_eq!(r.members_version(), None);
        r.set_peer_versions(BTreeMap::from([(2, ENTRY_VERSION), (3, 1)]));
        assert_eq!(r.members_version(), Some(1));
        r.set_peer_versions(BTreeMap::from([(2, ENTRY_VERSION), (3, ENTRY_VERSION + 1)]));
        assert_eq!(r.members_version(), Some(ENTRY_VERSION));
    }

    /// A cluster of one gives itself an identity once it is at version 2.
    #[test]
    fn a_founding_leader_gives_the_cluster_its_identity() {
        let (mut r, machine) = alone(Some("fresh".into()));
        settle(&mut r).unwrap();
        for _ in 0..200 {
            r.tick();
        }
        settle(&mut r).unwrap();
        assert_eq!(machine.read().cluster_id.as_deref(), Some("fresh"));
    }
}
