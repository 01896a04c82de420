//! A deterministic simulation of a coordinator cluster: N `Replica`s (the code
//! the tokio driver runs) wired together by an in-memory network that a seeded
//! PRNG controls.
//!
//! What it models:
//! - time as whole ticks. Each step every running replica ticks, then due
//!   messages are delivered (`step`) and every replica handles its `Ready`
//!   (persisting synchronously, applying, sending), in a few rounds so that a
//!   message sent with no delay arrives within the tick it was sent in;
//! - a network that delays each message 0..=`max_delay` ticks (which reorders
//!   them), loses each with probability `drop`, and loses whatever crosses a cut
//!   link. Links are cut one direction at a time, so partitions can be
//!   majority/minority, one-way, or isolate one node. Senders hear of cut links
//!   and dead peers as the TCP transport tells them (`report_unreachable`), and
//!   of each snapshot's fate (`report_snapshot`);
//! - crashes: a crashed replica is dropped with everything it had not persisted
//!   and every message to or from it in flight. A restart reopens its redb log
//!   (on tmpfs, so the fsyncs are cheap) with a new machine and boot nonce;
//! - clients: writes (each a distinct function, so its presence is exact),
//!   ReadIndex reads and membership changes sent to any replica, every reply
//!   recorded through its `Reply` closure.
//!
//! Checked after every step: at most one leader per term; commit and applied
//! never go back on a running replica; no two replicas ever commit different
//! entries at the same index; an acknowledged read saw every write acknowledged
//! before it was asked; nothing is answered twice. Checked at the end of each
//! scenario, once everything is healed and restarted and has caught up: every
//! member holds the same state and configuration, with every acknowledged write
//! and no write that was refused outright; every request to a replica that kept
//! running was answered.
//!
//! Everything is a function of the seed: the network, faults and workloads draw
//! from the sim's own PRNG, and raft-rs's election timeouts (which it draws from
//! the thread RNG) are overwritten from it whenever raft-rs resets them. A
//! failing scenario panics with its seed; rerun just that seed with
//! `SLUICE_SIM_SEED=<seed> cargo test -p sluice-coordinator raft::sim::<test>`,
//! or run more seeds per test with `SLUICE_SIM_SEEDS=<n>`; a failure prints the
//! cluster's state (also when raft-rs itself panics), and `SLUICE_SIM_VERBOSE=1`
//! prints what each run went through (`-- --nocapture` to see it).

use super::log_store::LogStore;
use super::replica::{Member, MemberChange, RaftError, Replica, ReplicaConfig, Reply};
use crate::applied::AppliedState;
use crate::state::ClusterState;
use crate::state_machine::{Command, Response};
use raft::prelude::{Entry, Message, MessageType};
use raft::{GetEntriesContext, StateRole};
use sluice_common::rng::SplitMix64 as Rng;
use sluice_common::{FunctionName, FunctionSpec, ImageRef};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Display, Write as _};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
struct SimConfig {
    /// Founding members, ids 1..=nodes.
    nodes: u64,
    heartbeat: usize,
    election: usize,
    snapshot_every: u64,
    request_ticks: u64,
    /// Each message takes 0..=max_delay ticks; 0 arrives within the tick it was sent.
    max_delay: u64,
    /// Probability that a message is lost.
    drop: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self { nodes: 3, heartbeat: 2, election: 10, snapshot_every: 1000, request_ticks: 60, max_delay: 2, drop: 0.0 }
    }
}

/// What a client asked.
#[derive(Debug, Clone)]
enum OpKind {
    /// `PutFunction` of a function named `w<op>` with env `V=<op>`.
    Write,
    /// A read barrier; answered Ok, the machine must hold these (acknowledged) writes.
    Read {
        must_see: Vec<usize>,
    },
    Change(MemberChange),
}

#[derive(Debug, Clone)]
struct Op {
    node: u64,
    /// Which run of `node` took it: a crash loses its requests unanswered.
    incarnation: u64,
    kind: OpKind,
}

#[derive(Debug, Clone)]
enum Outcome {
    Written(Response),
    /// The machine as it was when the read was answered.
    Read(Box<ClusterState>),
    Changed,
    Failed(RaftError),
}

struct Node {
    replica: Option<Replica>,
    machine: Arc<AppliedState>,
    path: PathBuf,
    /// Members it was created with: the founders, or empty for a joining node.
    initial: BTreeMap<u64, Member>,
    incarnation: u64,
    /// Commit and applied as last seen in this run: they must never go back.
    seen_commit: u64,
    seen_applied: u64,
    /// Committed entries up to here were compared with what other replicas committed.
    checked: u64,
    /// Removed from the cluster and stopped for good.
    retired: bool,
}

type Replies = Arc<Mutex<Vec<(usize, Outcome)>>>;

/// Message exchange rounds per tick: how deep a chain of zero-delay messages goes.
const ROUNDS: usize = 8;
const IMAGE: &str = "sluice/sim:1";

struct Sim {
    seed: u64,
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    dir: tempfile::TempDir,
    nodes: BTreeMap<u64, Node>,
    /// Messages in flight by (delivery tick, send order).
    queue: BTreeMap<(u64, u64), Message>,
    sent: u64,
    /// Cut links (from, to).
    cut: BTreeSet<(u64, u64)>,
    /// Leader of each term, as seen so far.
    leaders: BTreeMap<u64, u64>,
    /// Every committed entry seen on any replica: index -> (term, digest).
    committed: BTreeMap<u64, (u64, u64)>,
    /// `MsgSnapshot`s delivered, by receiver.
    snapshots: BTreeMap<u64, u64>,
    ops: Vec<Op>,
    replies: Replies,
    outcomes: BTreeMap<usize, Outcome>,
    /// Digest of every delivery: two runs of one seed must agree on it.
    trace: u64,
    /// A failure was reported with the cluster's state.
    reported: std::cell::Cell<bool>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        // A panic from inside a replica (raft-rs asserts) carries no cluster state.
        if std::thread::panicking() && !self.reported.get() {
            eprintln!("seed {}, tick {}: panicked inside the cluster, which was:\n{}", self.seed, self.now, self.describe());
        }
    }
}

impl Sim {
    fn new(seed: u64, cfg: SimConfig) -> Self {
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).expect("a temporary directory");
        let founders: BTreeMap<u64, Member> = (1..=cfg.nodes).map(|id| (id, Member { raft_addr: format!("sim:{id}") })).collect();
        let mut sim = Self {
            seed,
            cfg,
            rng: Rng::new(seed),
            now: 0,
            dir,
            nodes: BTreeMap::new(),
            queue: BTreeMap::new(),
            sent: 0,
            cut: BTreeSet::new(),
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            ops: Vec::new(),
            replies: Arc::default(),
            outcomes: BTreeMap::new(),
            trace: FNV,
            reported: std::cell::Cell::new(false),
        };
        for &id in founders.keys() {
            sim.add_node(id, founders.clone());
        }
        sim
    }

    fn fail(&self, what: impl Display) -> ! {
        self.reported.set(true);
        panic!("seed {}, tick {}: {what}\n{}", self.seed, self.now, self.describe())
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for (id, node) in &self.nodes {
            let _ = match &node.replica {
                None => writeln!(s, "  node {id}: down{}", if node.retired { " (removed)" } else { "" }),
                Some(r) => {
                    let log = &r.raw().raft.raft_log;
                    writeln!(
                        s,
                        "  node {id}: {:?} term {} leader {:?} log {}..={} commit {} applied {} voters {:?} learners {:?}",
                        r.role(),
                        r.term(),
                        r.leader(),
                        log.first_index(),
                        log.last_index(),
                        r.commit(),
                        r.applied(),
                        sorted(&r.conf_state().voters),
                        sorted(&r.conf_state().learners)
                    )
                }
            };
        }
        let _ = writeln!(s, "  cut links: {:?}; in flight: {}", self.cut, self.queue.len());
        s
    }

    // --- nodes -----------------------------------------------------------------

    /// Creates node `id` over an empty log and starts it: a founder when `initial`
    /// holds the founding members, a node waiting to be added when it is empty.
    fn add_node(&mut self, id: u64, initial: BTreeMap<u64, Member>) {
        let path = self.dir.path().join(format!("node-{id}.redb"));
        let node = Node { replica: None, machine: AppliedState::new(), path, initial, incarnation: 0, seen_commit: 0, seen_applied: 0, checked: 0, retired: false };
        self.nodes.insert(id, node);
        self.start(id);
    }

    fn start(&mut self, id: u64) {
        let boot = self.rng.next_u64();
        let config = ReplicaConfig {
            id,
            heartbeat_ticks: self.cfg.heartbeat,
            election_ticks: self.cfg.election,
            snapshot_every: self.cfg.snapshot_every,
            request_ticks: self.cfg.request_ticks,
            new_cluster_id: None,
        };
        let machine = AppliedState::new();
        let node = &self.nodes[&id];
        let replica = match LogStore::open(&node.path).and_then(|log| Replica::new(config, log, &node.initial, machine.clone(), boot)) {
            Ok(r) => r,
            Err(e) => self.fail(format!("node {id} cannot start: {e}")),
        };
        let node = self.nodes.get_mut(&id).unwrap();
        node.seen_commit = replica.commit();
        node.seen_applied = replica.applied();
        node.incarnation += 1;
        node.machine = machine;
        node.replica = Some(replica);
        self.settle(id);
    }

    /// Drops the replica: what it persisted survives, nothing else does.
    fn crash(&mut self, id: u64) {
        if !self.is_live(id) {
            self.fail(format!("cannot crash node {id}: it is down"));
        }
        self.nodes.get_mut(&id).unwrap().replica = None;
        let lost: Vec<(u64, u64)> = self.queue.iter().filter(|(_, m)| m.to == id || m.from == id).map(|(k, _)| *k).collect();
        for key in lost {
            let msg = self.queue.remove(&key).unwrap();
            if msg.to == id && msg.get_msg_type() == MessageType::MsgSnapshot {
                self.with_replica(msg.from, |r| r.report_snapshot(id, false));
            }
        }
    }

    fn restart(&mut self, id: u64) {
        if self.is_live(id) || self.nodes[&id].retired {
            self.fail(format!("cannot restart node {id}: it is running or removed"));
        }
        self.start(id);
    }

    /// Stops a node removed from the cluster, for good.
    fn retire(&mut self, id: u64) {
        if self.is_live(id) {
            self.crash(id);
        }
        self.nodes.get_mut(&id).unwrap().retired = true;
    }

    fn is_live(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.replica.is_some())
    }

    fn live(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, n)| n.replica.is_some()).map(|(id, _)| *id).collect()
    }

    fn down(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, n)| n.replica.is_none() && !n.retired).map(|(id, _)| *id).collect()
    }

    fn replica(&self, id: u64) -> &Replica {
        match self.nodes.get(&id).and_then(|n| n.replica.as_ref()) {
            Some(r) => r,
            None => self.fail(format!("node {id} is down")),
        }
    }

    /// Calls `f` on node `id` if it is running.
    fn with_replica<R>(&mut self, id: u64, f: impl FnOnce(&mut Replica) -> R) -> Option<R> {
        let out = f(self.nodes.get_mut(&id)?.replica.as_mut()?);
        self.settle(id);
        Some(out)
    }

    /// raft-rs draws each election timeout from the thread RNG when it resets its
    /// election clock (which always zeroes `election_elapsed`); redraw it from the
    /// seed so that runs replay exactly. Redrawing at other zeroes (a heartbeat
    /// received) picks from the same range, so it changes nothing else.
    fn settle(&mut self, id: u64) {
        let election = self.cfg.election;
        let Some(replica) = self.nodes.get_mut(&id).and_then(|n| n.replica.as_mut()) else { return };
        let raft = &mut replica.raw_mut().raft;
        if raft.election_elapsed == 0 {
            raft.set_randomized_election_timeout(election + self.rng.below(election as u64) as usize);
        }
    }

    /// The leader of the highest term among running replicas.
    fn leader(&self) -> Option<u64> {
        self.nodes.iter().filter_map(|(id, n)| n.replica.as_ref().filter(|r| r.role() == StateRole::Leader).map(|r| (r.term(), *id))).max().map(|(_, id)| id)
    }

    fn await_leader(&mut self) -> u64 {
        let bound = 6 * self.cfg.election as u64;
        if !self.run_until(bound, |s| s.leader().is_some()) {
            self.fail(format!("no leader within {bound} ticks"));
        }
        self.leader().unwrap()
    }

    fn last_index(&self, id: u64) -> u64 {
        self.replica(id).raw().raft.raft_log.last_index()
    }

    fn first_index(&self, id: u64) -> u64 {
        self.replica(id).raw().raft.raft_log.first_index()
    }

    fn state(&self, id: u64) -> ClusterState {
        let _ = self.replica(id);
        self.nodes[&id].machine.read().clone()
    }

    // --- network ---------------------------------------------------------------

    fn heal(&mut self) {
        self.cut.clear();
    }

    /// Cuts every link between different groups, both ways.
    fn partition(&mut self, groups: &[Vec<u64>]) {
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for &x in a {
                        for &y in b {
                            self.cut.insert((x, y));
                        }
                    }
                }
            }
        }
    }

    fn isolate(&mut self, id: u64) {
        let others: Vec<u64> = self.nodes.keys().copied().filter(|&o| o != id).collect();
        self.partition(&[vec![id], others]);
    }

    // --- time ------------------------------------------------------------------

    fn step(&mut self) {
        self.now += 1;
        for id in self.live() {
            self.with_replica(id, Replica::tick);
        }
        let mut rounds = 0;
        loop {
            self.handle_ready_all();
            rounds += 1;
            if rounds == ROUNDS || !self.deliver_due() {
                break;
            }
        }
        self.check();
        self.collect();
    }

    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.step();
        }
    }

    /// Steps until `done` holds, at most `max` ticks; whether it held.
    fn run_until(&mut self, max: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        for _ in 0..max {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    fn handle_ready_all(&mut self) {
        for id in self.live() {
            let result = self.nodes.get_mut(&id).unwrap().replica.as_mut().unwrap().handle_ready();
            let out = match result {
                Ok(out) => out,
                Err(e) => self.fail(format!("node {id}: handle_ready failed: {e}")),
            };
            self.settle(id);
            self.send(id, out.messages);
        }
    }

    fn send(&mut self, from: u64, messages: Vec<Message>) {
        for msg in messages {
            let to = msg.to;
            let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
            if self.cut.contains(&(from, to)) || !self.is_live(to) {
                // What the transport says when it cannot reach the peer.
                self.with_replica(from, |r| {
                    r.report_unreachable(to);
                    if snapshot {
                        r.report_snapshot(to, false);
                    }
                });
                continue;
            }
            if self.rng.chance(self.cfg.drop) {
                if snapshot {
                    self.with_replica(from, |r| r.report_snapshot(to, false));
                }
                continue;
            }
            let at = self.now + self.rng.below(self.cfg.max_delay + 1);
            self.queue.insert((at, self.sent), msg);
            self.sent += 1;
        }
    }

    /// Delivers every message due by now; whether there were any.
    fn deliver_due(&mut self) -> bool {
        let due: Vec<(u64, u64)> = self.queue.range(..(self.now + 1, 0)).map(|(k, _)| *k).collect();
        for key in &due {
            let msg = self.queue.remove(key).unwrap();
            let (from, to) = (msg.from, msg.to);
            let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
            if self.cut.contains(&(from, to)) || !self.is_live(to) {
                if snapshot {
                    self.with_replica(from, |r| r.report_snapshot(to, false));
                }
                continue;
            }
            self.trace = mix(self.trace, &[self.now, from, to, msg.get_msg_type() as u64, msg.term, msg.index, msg.commit, msg.entries.len() as u64]);
            if snapshot {
                *self.snapshots.entry(to).or_default() += 1;
            }
            self.with_replica(to, |r| r.step(msg));
            if snapshot {
                self.with_replica(from, |r| r.report_snapshot(to, true));
            }
            // A leader's commit moves here; look before a Ready compacts the entries away.
            self.record_committed(to);
        }
        !due.is_empty()
    }

    // --- invariants ------------------------------------------------------------

    fn check(&mut self) {
        for id in self.live() {
            let r = self.replica(id);
            let (term, commit, applied) = (r.term(), r.commit(), r.applied());
            if r.role() == StateRole::Leader {
                match self.leaders.get(&term) {
                    Some(&other) if other != id => self.fail(format!("two leaders in term {term}: {other} and {id}")),
                    Some(_) => {}
                    None => {
                        self.leaders.insert(term, id);
                    }
                }
            }
            let node = &self.nodes[&id];
            if commit < node.seen_commit || applied < node.seen_applied {
                self.fail(format!("node {id} went back: commit {} -> {commit}, applied {} -> {applied}", node.seen_commit, node.seen_applied));
            }
            if applied > commit {
                self.fail(format!("node {id} applied {applied} beyond its commit {commit}"));
            }
            let node = self.nodes.get_mut(&id).unwrap();
            node.seen_commit = commit;
            node.seen_applied = applied;
            self.record_committed(id);
        }
    }

    /// Compares the entries node `id` holds as committed with what every other
    /// replica committed at the same indexes (State Machine Safety).
    fn record_committed(&mut self, id: u64) {
        let Some(node) = self.nodes.get(&id) else { return };
        let Some(r) = node.replica.as_ref() else { return };
        let log = &r.raw().raft.raft_log;
        let low = (node.checked + 1).max(log.first_index());
        let high = r.commit().min(log.last_index());
        if low > high {
            return;
        }
        let entries = match log.slice(low, high + 1, None, GetEntriesContext::empty(false)) {
            Ok(entries) => entries,
            Err(e) => self.fail(format!("node {id}: committed entries {low}..={high} unreadable: {e}")),
        };
        for e in &entries {
            let seen = (e.term, entry_digest(e));
            match self.committed.get(&e.index) {
                Some(&other) if other != seen => self.fail(format!(
                    "node {id} committed (term {}, digest {:x}) at index {}, another replica committed (term {}, digest {:x})",
                    seen.0, seen.1, e.index, other.0, other.1
                )),
                Some(_) => {}
                None => {
                    self.committed.insert(e.index, seen);
                }
            }
        }
        self.nodes.get_mut(&id).unwrap().checked = high;
    }

    /// Takes the replies given since the last call, checking each as it comes.
    fn collect(&mut self) {
        let replies = std::mem::take(&mut *self.replies.lock().unwrap());
        for (op, outcome) in replies {
            if let Some(previous) = self.outcomes.get(&op) {
                self.fail(format!("request {op} answered twice: {previous:?}, then {outcome:?}"));
            }
            match (&self.ops[op].kind, &outcome) {
                (OpKind::Read { must_see }, Outcome::Read(state)) => {
                    let missing: Vec<usize> = must_see.iter().copied().filter(|w| !has_write(state, *w)).collect();
                    if !missing.is_empty() {
                        self.fail(format!("read {op} on node {} answered Ok, but misses writes acknowledged before it was asked: {missing:?}", self.ops[op].node));
                    }
                }
                (OpKind::Write, Outcome::Written(response)) if *response != Response::FunctionCreated => {
                    self.fail(format!("write {op} of a new function answered {response:?}: applied twice?"));
                }
                _ => {}
            }
            self.outcomes.insert(op, outcome);
        }
    }

    // --- clients ---------------------------------------------------------------

    fn push_op(&mut self, node: u64, kind: OpKind) -> usize {
        if !self.is_live(node) {
            self.fail(format!("request to node {node}, which is down"));
        }
        self.ops.push(Op { node, incarnation: self.nodes[&node].incarnation, kind });
        self.ops.len() - 1
    }

    fn write(&mut self, node: u64) -> usize {
        let op = self.push_op(node, OpKind::Write);
        let mut spec = FunctionSpec::new(FunctionName::new(format!("w{op}")).unwrap(), ImageRef::parse(IMAGE).unwrap());
        spec.env.insert("V".into(), op.to_string());
        let replies = self.replies.clone();
        let reply: Reply<Response> = Box::new(move |r| replies.lock().unwrap().push((op, r.map_or_else(Outcome::Failed, Outcome::Written))));
        self.with_replica(node, |r| r.propose(Command::PutFunction { spec }, reply));
        self.collect();
        op
    }

    fn read(&mut self, node: u64) -> usize {
        let must_see = self.acked_writes();
        let op = self.push_op(node, OpKind::Read { must_see });
        let machine = self.nodes[&node].machine.clone();
        let replies = self.replies.clone();
        let reply: Reply<()> = Box::new(move |r| {
            let outcome = match r {
                Ok(()) => Outcome::Read(Box::new(machine.read().clone())),
                Err(e) => Outcome::Failed(e),
            };
            replies.lock().unwrap().push((op, outcome));
        });
        self.with_replica(node, |r| r.read(reply));
        self.collect();
        op
    }

    fn change(&mut self, node: u64, change: MemberChange) -> usize {
        let op = self.push_op(node, OpKind::Change(change.clone()));
        let replies = self.replies.clone();
        let reply: Reply<u64> = Box::new(move |r| replies.lock().unwrap().push((op, r.map_or_else(Outcome::Failed, |_index| Outcome::Changed))));
        self.with_replica(node, |r| r.change_members(change, reply));
        self.collect();
        op
    }

    fn outcome(&self, op: usize) -> Option<&Outcome> {
        self.outcomes.get(&op)
    }

    fn wait_for(&mut self, op: usize, max: u64) -> Outcome {
        if !self.run_until(max, |s| s.outcome(op).is_some()) {
            self.fail(format!("request {op} ({:?}) not answered within {max} ticks", self.ops[op]));
        }
        self.outcomes[&op].clone()
    }

    /// Writes through `node` and waits for the acknowledgement.
    fn write_acked(&mut self, node: u64) -> usize {
        let op = self.write(node);
        match self.wait_for(op, self.cfg.request_ticks + 1) {
            Outcome::Written(_) => op,
            other => self.fail(format!("write {op} through node {node} failed: {other:?}")),
        }
    }

    /// Proposes `change` on the current leader and waits for it to be applied there.
    fn change_acked(&mut self, change: MemberChange) {
        let bound = 6 * self.cfg.election as u64;
        if !self.run_until(bound, |s| s.leader().is_some()) {
            self.fail(format!("no leader to take {change:?}"));
        }
        let leader = self.leader().unwrap();
        let op = self.change(leader, change.clone());
        for _ in 0..=self.cfg.request_ticks {
            if let Some(outcome) = self.outcome(op) {
                match outcome {
                    Outcome::Changed => return,
                    other => self.fail(format!("{change:?} through leader {leader} failed: {other:?}")),
                }
            }
            self.traffic(0.5, 0.1);
            self.step();
        }
        self.fail(format!("{change:?} through leader {leader} was never answered"));
    }

    fn acked_writes(&self) -> Vec<usize> {
        self.outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Written(_))).map(|(op, _)| *op).collect()
    }

    fn read_pending(&self, node: u64) -> bool {
        let incarnation = self.nodes[&node].incarnation;
        self.ops.iter().enumerate().any(|(op, o)| o.node == node && o.incarnation == incarnation && matches!(o.kind, OpKind::Read { .. }) && !self.outcomes.contains_key(&op))
    }

    /// One tick's client traffic: a write with probability `writes` and a read
    /// with probability `reads` (one outstanding per replica), each to a random
    /// running replica.
    fn traffic(&mut self, writes: f64, reads: f64) {
        let live = self.live();
        if live.is_empty() {
            return;
        }
        if self.rng.chance(writes) {
            let node = self.rng.pick(&live);
            self.write(node);
        }
        if self.rng.chance(reads) {
            let node = self.rng.pick(&live);
            if !self.read_pending(node) {
                self.read(node);
            }
        }
    }

    // --- the end -----------------------------------------------------------------

    /// Whether a leader (a voter) has committed its whole log and every member
    /// has applied it.
    fn caught_up(&self) -> bool {
        let Some(leader) = self.leader() else { return false };
        let r = self.replica(leader);
        let conf = r.conf_state();
        let commit = r.commit();
        conf.voters.contains(&leader)
            && commit == self.last_index(leader)
            && conf.voters.iter().chain(&conf.learners).all(|id| self.nodes.get(id).and_then(|n| n.replica.as_ref()).is_some_and(|m| m.applied() == commit))
    }

    /// Heals the network, stops losing messages, restarts every crashed member,
    /// runs until all have caught up, lets every request reach its answer, and
    /// checks the end state.
    fn converge(&mut self) {
        self.heal();
        self.cfg.drop = 0.0;
        for id in self.down() {
            self.restart(id);
        }
        let bound = 30 * self.cfg.election as u64;
        if !self.run_until(bound, Self::caught_up) {
            self.fail(format!("not caught up {bound} ticks after healing"));
        }
        // Every request still waiting reaches its deadline.
        self.run(self.cfg.request_ticks + 1);
        if !self.run_until(bound, Self::caught_up) {
            self.fail("fell behind again after healing");
        }
        self.check_end();
        if std::env::var_os("SLUICE_SIM_VERBOSE").is_some() {
            eprintln!("{}", self.summary());
        }
    }

    /// What a run went through, for `SLUICE_SIM_VERBOSE=1`.
    fn summary(&self) -> String {
        // Requests of one kind: how many, and how many answered each way.
        let tally = |kind: fn(&OpKind) -> bool, answer: fn(&Outcome) -> bool| {
            self.ops.iter().enumerate().filter(|(op, o)| kind(&o.kind) && self.outcomes.get(op).is_some_and(answer)).count()
        };
        let is_write: fn(&OpKind) -> bool = |k| matches!(k, OpKind::Write);
        let is_read: fn(&OpKind) -> bool = |k| matches!(k, OpKind::Read { .. });
        let is_change: fn(&OpKind) -> bool = |k| matches!(k, OpKind::Change(_));
        let unknown: fn(&Outcome) -> bool = |o| matches!(o, Outcome::Failed(RaftError::Unknown));
        let refused: fn(&Outcome) -> bool = |o| matches!(o, Outcome::Failed(RaftError::NoLeader | RaftError::NotLeader { .. } | RaftError::Rejected(_)));
        format!(
            "seed {}: {} nodes, {} ticks, {} messages sent, {} terms with a leader, commit {}, {} snapshots delivered, {} restarts; \
             writes: {} asked, {} acknowledged, {} unknown, {} refused; reads: {} asked, {} ok; membership changes: {} asked, {} made",
            self.seed,
            self.nodes.len(),
            self.now,
            self.sent,
            self.leaders.len(),
            self.leader().map_or(0, |l| self.replica(l).commit()),
            self.snapshots.values().sum::<u64>(),
            self.nodes.values().map(|n| n.incarnation - 1).sum::<u64>(),
            self.ops.iter().filter(|o| is_write(&o.kind)).count(),
            tally(is_write, |o| matches!(o, Outcome::Written(_))),
            tally(is_write, unknown),
            tally(is_write, refused),
            self.ops.iter().filter(|o| is_read(&o.kind)).count(),
            tally(is_read, |o| matches!(o, Outcome::Read(_))),
            self.ops.iter().filter(|o| is_change(&o.kind)).count(),
            tally(is_change, |o| matches!(o, Outcome::Changed)),
        )
    }

    fn check_end(&mut self) {
        let leader = self.leader().unwrap();
        let conf = self.replica(leader).conf_state().clone();
        let members = self.replica(leader).members().clone();
        let reference = self.state(leader);
        for &id in conf.voters.iter().chain(&conf.learners) {
            let r = self.replica(id);
            if sorted(&r.conf_state().voters) != sorted(&conf.voters) || sorted(&r.conf_state().learners) != sorted(&conf.learners) {
                self.fail(format!("node {id}'s configuration {:?} differs from leader {leader}'s {conf:?}", r.conf_state()));
            }
            if r.members() != &members {
                self.fail(format!("node {id}'s members {:?} differ from leader {leader}'s {members:?}", r.members()));
            }
            let state = self.state(id);
            if state != reference {
                self.fail(format!("node {id}'s state differs from leader {leader}'s: {}", state_diff(&state, &reference)));
            }
        }
        let lost: Vec<usize> = self.acked_writes().into_iter().filter(|&w| !has_write(&reference, w)).collect();
        if !lost.is_empty() {
            self.fail(format!("acknowledged writes lost: {lost:?}"));
        }
        for name in reference.functions.keys() {
            let op = name.as_str().strip_prefix('w').and_then(|n| n.parse::<usize>().ok());
            let Some(op) = op.filter(|&op| matches!(self.ops.get(op).map(|o| &o.kind), Some(OpKind::Write))) else {
                self.fail(format!("the state holds {name}, which no client wrote"));
            };
            if let Some(Outcome::Failed(e @ (RaftError::NoLeader | RaftError::NotLeader { .. } | RaftError::Rejected(_)))) = self.outcome(op) {
                self.fail(format!("write {op} was refused ({e:?}) but applied"));
            }
        }
        for (op, o) in self.ops.iter().enumerate() {
            if !self.outcomes.contains_key(&op) && self.is_live(o.node) && self.nodes[&o.node].incarnation == o.incarnation {
                let what = match &o.kind {
                    OpKind::Write => "write".to_string(),
                    OpKind::Read { .. } => "read".to_string(),
                    OpKind::Change(change) => format!("{change:?}"),
                };
                self.fail(format!("request {op} ({what} to node {}) was never answered, though its replica kept running", o.node));
            }
        }
    }

    /// A read on every member after the end: each sees every acknowledged write.
    fn final_reads(&mut self) {
        let leader = self.leader().unwrap();
        let conf = self.replica(leader).conf_state().clone();
        for id in sorted(&conf.voters).into_iter().chain(sorted(&conf.learners)) {
            let op = self.read(id);
            match self.wait_for(op, self.cfg.request_ticks + 1) {
                Outcome::Read(_) => {}
                other => self.fail(format!("read {op} on node {id} of a healed cluster failed: {other:?}")),
            }
        }
    }

    /// A random fault, keeping at most `max_down` nodes crashed.
    fn random_fault(&mut self, max_down: usize) {
        let ids: Vec<u64> = self.nodes.iter().filter(|(_, n)| !n.retired).map(|(id, _)| *id).collect();
        match self.rng.below(9) {
            0 | 1 => self.heal(),
            2 => {
                // Majority and minority.
                let mut shuffled = ids.clone();
                self.rng.shuffle(&mut shuffled);
                let k = 1 + self.rng.below(((ids.len() - 1) / 2) as u64) as usize;
                let (minority, majority) = shuffled.split_at(k);
                self.heal();
                self.partition(&[minority.to_vec(), majority.to_vec()]);
            }
            3 => {
                if let Some(leader) = self.leader() {
                    self.isolate(leader);
                }
            }
            4 | 5 => {
                // One-way cuts.
                for _ in 0..1 + self.rng.below(3) {
                    let (a, b) = (self.rng.pick(&ids), self.rng.pick(&ids));
                    if a != b {
                        self.cut.insert((a, b));
                    }
                }
            }
            6 => {
                if self.down().len() < max_down {
                    let live = self.live();
                    let victim = self.rng.pick(&live);
                    self.crash(victim);
                }
            }
            _ => {
                let down = self.down();
                if !down.is_empty() {
                    let id = self.rng.pick(&down);
                    self.restart(id);
                }
            }
        }
    }
}

const FNV: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn mix(h: u64, words: &[u64]) -> u64 {
    words.iter().fold(h, |h, w| fnv(h, &w.to_le_bytes()))
}

fn entry_digest(e: &Entry) -> u64 {
    fnv(fnv(fnv(FNV, &[e.get_entry_type() as u8]), &e.data), &e.context)
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v
}

fn has_write(state: &ClusterState, op: usize) -> bool {
    let name = FunctionName::new(format!("w{op}")).unwrap();
    state.functions.get(&name).and_then(|s| s.env.get("V")).is_some_and(|v| *v == op.to_string())
}

fn state_diff(a: &ClusterState, b: &ClusterState) -> String {
    let names = |s: &ClusterState| s.functions.keys().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    let (na, nb) = (names(a), names(b));
    format!(
        "functions only here {:?}, only on the leader {:?}; instances {} vs {}; nodes {} vs {}; revision {} vs {}",
        na.difference(&nb).collect::<Vec<_>>(),
        nb.difference(&na).collect::<Vec<_>>(),
        a.instances.len(),
        b.instances.len(),
        a.nodes.len(),
        b.nodes.len(),
        a.desired_revision,
        b.desired_revision
    )
}

/// Runs `scenario` for each seed (or just `SLUICE_SIM_SEED`), and turns a
/// failure into a panic that names the seed and how to rerun it.
fn for_seeds(test: &str, default_seeds: u64, scenario: impl Fn(u64)) {
    let seeds: Vec<u64> = match std::env::var("SLUICE_SIM_SEED") {
        Ok(s) => vec![s.trim().parse().unwrap_or_else(|_| panic!("SLUICE_SIM_SEED={s:?} is not a number"))],
        Err(_) => {
            let n = std::env::var("SLUICE_SIM_SEEDS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default_seeds);
            (1..=n).collect()
        }
    };
    for seed in seeds {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| scenario(seed))) {
            let msg = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("(no message)");
            panic!("raft sim `{test}` failed with seed {seed}: {msg}\nrerun it with: SLUICE_SIM_SEED={seed} cargo test -p sluice-coordinator raft::sim::{test}");
        }
    }
}

/// Elections: a leader within a bound; after the leader is cut off, the rest
/// elect another within a bound and the old one steps down (check-quorum);
/// nothing written through the cut-off leader is ever acknowledged (R3).
#[test]
fn elections() {
    for_seeds("elections", 16, |seed| {
        let nodes = if seed % 2 == 0 { 3 } else { 5 };
        let mut sim = Sim::new(seed, SimConfig { nodes, ..SimConfig::default() });
        let e = sim.cfg.election as u64;
        let old = sim.await_leader();
        let old_term = sim.replica(old).term();
        sim.write_acked(old);

        sim.isolate(old);
        let cut_at = sim.now;
        let mut doomed = Vec::new();
        let (mut elected, mut stepped_down) = (None, None);
        while sim.now - cut_at < 10 * e && (elected.is_none() || stepped_down.is_none()) {
            if sim.replica(old).role() == StateRole::Leader {
                doomed.push(sim.write(old));
            }
            sim.step();
            let elapsed = sim.now - cut_at;
            if elected.is_none() {
                elected = sim.leader().filter(|&l| l != old).map(|l| (l, elapsed));
            }
            if stepped_down.is_none() && sim.replica(old).role() != StateRole::Leader {
                stepped_down = Some(elapsed);
            }
        }
        let Some((new, took)) = elected else { sim.fail(format!("no new leader within {} ticks of isolating leader {old}", 10 * e)) };
        // Followers wait out the leader's lease (< 2 election timeouts), then a
        // pre-vote and a vote; a split vote or two on top.
        if took > 6 * e {
            sim.fail(format!("the majority took {took} ticks to elect a new leader"));
        }
        if sim.replica(new).term() <= old_term {
            sim.fail("the new leader's term is not above the old one's");
        }
        // Check-quorum: the first check after the cut may still count peers heard
        // before it, the second cannot.
        let Some(down_after) = stepped_down else { sim.fail(format!("isolated leader {old} never stepped down")) };
        if down_after > 2 * e + 1 {
            sim.fail(format!("isolated leader {old} stepped down only {down_after} ticks after the cut"));
        }
        if doomed.is_empty() {
            sim.fail("no write reached the isolated leader");
        }
        sim.write_acked(new);
        sim.converge();
        let state = sim.state(new);
        for &w in &doomed {
            if matches!(sim.outcome(w), Some(Outcome::Written(_))) || has_write(&state, w) {
                sim.fail(format!("write {w}, sent to isolated leader {old}, was acknowledged or applied: {:?}", sim.outcome(w)));
            }
        }
    });
}

/// Log repair: a cut-off minority holding the old leader accepts entries that
/// can never commit; after healing they are overwritten and everyone converges.
#[test]
fn log_repair() {
    for_seeds("log_repair", 12, |seed| {
        let mut sim = Sim::new(seed, SimConfig { nodes: 5, drop: 0.02, ..SimConfig::default() });
        let e = sim.cfg.election as u64;
        let old = sim.await_leader();
        for _ in 0..3 {
            sim.write_acked(old);
        }
        let others: Vec<u64> = (1..=5).filter(|&id| id != old).collect();
        let buddy = sim.rng.pick(&others);
        let minority = vec![old, buddy];
        let majority: Vec<u64> = others.iter().copied().filter(|&id| id != buddy).collect();
        let commit_at_cut = sim.replica(old).commit();
        sim.partition(&[minority.clone(), majority.clone()]);

        let mut doomed = Vec::new();
        for _ in 0..3 * e {
            if sim.replica(old).role() == StateRole::Leader {
                let via = sim.rng.pick(&minority);
                doomed.push(sim.write(via));
            }
            sim.step();
        }
        for id in [old, buddy] {
            if sim.last_index(id) <= commit_at_cut {
                sim.fail(format!("node {id} of the minority accepted no entries past the commit index {commit_at_cut}"));
            }
        }
        if !sim.run_until(6 * e, |s| s.leader().is_some_and(|l| majority.contains(&l))) {
            sim.fail("the majority elected no leader");
        }
        let mut acked = 0;
        for _ in 0..10 {
            let via = sim.rng.pick(&majority);
            let w = sim.write(via);
            if matches!(sim.wait_for(w, sim.cfg.request_ticks + 1), Outcome::Written(_)) {
                acked += 1;
            }
        }
        if acked == 0 {
            sim.fail("the majority acknowledged no write while cut off from the minority");
        }
        sim.converge();
        let state = sim.state(sim.leader().unwrap());
        for &w in &doomed {
            if matches!(sim.outcome(w), Some(Outcome::Written(_))) || has_write(&state, w) {
                sim.fail(format!("write {w}, taken by the minority, was acknowledged or applied: {:?}", sim.outcome(w)));
            }
        }
    });
}

/// Snapshots: a follower cut off (or crashed) while the others commit far past
/// the leader's compaction point catches up through a snapshot.
#[test]
fn snapshot_catch_up() {
    for_seeds("snapshot_catch_up", 10, |seed| {
        let mut sim = Sim::new(seed, SimConfig { nodes: 3, snapshot_every: 5, ..SimConfig::default() });
        let e = sim.cfg.election as u64;
        let leader = sim.await_leader();
        let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
        let lagging = sim.rng.pick(&followers);
        let lagging_last = sim.last_index(lagging);
        let crash = seed % 2 == 1;
        if crash {
            sim.crash(lagging);
        } else {
            sim.isolate(lagging);
        }
        let mut writes = Vec::new();
        for _ in 0..30 {
            writes.push(sim.write(leader));
            writes.push(sim.write(leader));
            sim.step();
        }
        for &w in &writes {
            if !matches!(sim.wait_for(w, sim.cfg.request_ticks + 1), Outcome::Written(_)) {
                sim.fail(format!("write {w} not acknowledged: {:?}", sim.outcome(w)));
            }
        }
        let leader = sim.leader().unwrap();
        if sim.first_index(leader) <= lagging_last + 1 {
            sim.fail(format!("the leader's log starts at {}: not compacted past the lagging follower's {lagging_last}", sim.first_index(leader)));
        }
        if crash {
            sim.restart(lagging);
        } else {
            sim.heal();
        }
        let target = sim.replica(leader).commit();
        if !sim.run_until(10 * e, |s| s.replica(lagging).applied() >= target) {
            sim.fail(format!("node {lagging} did not catch up to {target}"));
        }
        if sim.snapshots.get(&lagging).copied().unwrap_or(0) == 0 || sim.first_index(lagging) <= lagging_last + 1 {
            sim.fail(format!("node {lagging} caught up without a snapshot (log starts at {})", sim.first_index(lagging)));
        }
        if sim.state(lagging) != sim.state(leader) {
            sim.fail(format!("node {lagging}'s state after the snapshot: {}", state_diff(&sim.state(lagging), &sim.state(leader))));
        }
        sim.converge();
    });
}

/// Membership: add a fourth (an empty node, joining), promote it, remove one of
/// the founders (sometimes the leader), with writes flowing throughout; a
/// second change while one is pending is refused; restarting everyone replays
/// the changes to the same configuration.
#[test]
fn membership_changes() {
    for_seeds("membership_changes", 10, |seed| {
        let mut sim = Sim::new(seed, SimConfig { nodes: 3, snapshot_every: 20, drop: 0.01, ..SimConfig::default() });
        let e = sim.cfg.election as u64;
        let leader = sim.await_leader();
        sim.run(5);
        sim.add_node(4, BTreeMap::new());
        let add = sim.change(leader, MemberChange::AddLearner { id: 4, raft_addr: "sim:4".into() });
        let second = sim.change(leader, MemberChange::AddLearner { id: 5, raft_addr: "sim:5".into() });
        if !matches!(sim.outcome(second), Some(Outcome::Failed(RaftError::Rejected(_)))) {
            sim.fail(format!("a second change while one was pending was answered {:?}", sim.outcome(second)));
        }
        while sim.outcome(add).is_none() {
            sim.traffic(0.5, 0.1);
            sim.step();
        }
        if !matches!(sim.outcome(add), Some(Outcome::Changed)) {
            sim.fail(format!("adding the learner: {:?}", sim.outcome(add)));
        }
        let target = sim.replica(sim.leader().unwrap()).commit();
        for _ in 0..20 * e {
            if sim.replica(4).applied() >= target {
                break;
            }
            sim.traffic(0.5, 0.1);
            sim.step();
        }
        if sim.replica(4).applied() < target {
            sim.fail(format!("learner 4 did not catch up to {target}"));
        }
        if sim.snapshots.get(&4).copied().unwrap_or(0) == 0 {
            sim.fail("the joining node caught up without the snapshot it needs");
        }
        sim.change_acked(MemberChange::Promote { id: 4 });
        let victim = sim.rng.pick(&[1, 2, 3]);
        sim.change_acked(MemberChange::Remove { id: victim });
        sim.retire(victim);
        for _ in 0..5 * e {
            sim.traffic(0.5, 0.1);
            sim.step();
        }
        let expected: Vec<u64> = (1..=4).filter(|&id| id != victim).collect();
        for round in 0..2 {
            sim.converge();
            sim.final_reads();
            let conf = sim.replica(sim.leader().unwrap()).conf_state().clone();
            if sorted(&conf.voters) != expected || !conf.learners.is_empty() {
                sim.fail(format!("configuration {conf:?}, expected voters {expected:?}"));
            }
            if sim.replica(sim.leader().unwrap()).members().keys().copied().collect::<Vec<_>>() != expected {
                sim.fail(format!("members {:?}, expected {expected:?}", sim.replica(sim.leader().unwrap()).members()));
            }
            if round == 0 {
                // Everyone restarts and replays its log, membership changes included.
                for &id in &expected {
                    sim.crash(id);
                }
                for &id in &expected {
                    sim.restart(id);
                }
            }
        }
    });
}

/// Membership changes under faults: nodes keep joining (as learners, then
/// promoted) and founders leaving, through lost messages, partitions and
/// crashes; each change is retried on the leader of the day until it shows.
#[test]
fn membership_under_faults() {
    for_seeds("membership_under_faults", 6, |seed| {
        let mut sim = Sim::new(seed, SimConfig { nodes: 3, drop: 0.05, snapshot_every: 20, ..SimConfig::default() });
        let mut pending: Option<(usize, MemberChange)> = None;
        let mut next_id = 4;
        for _ in 0..600 {
            sim.traffic(0.5, 0.1);
            if sim.rng.chance(0.03) {
                sim.random_fault(1);
            }
            match pending.clone() {
                Some((op, change)) => match sim.outcome(op) {
                    None => {}
                    Some(outcome) => {
                        if let (Outcome::Changed, MemberChange::Remove { id }) = (outcome, &change) {
                            sim.retire(*id);
                        }
                        pending = None;
                    }
                },
                None if sim.rng.chance(0.1) => {
                    if let Some(leader) = sim.leader() {
                        let conf = sim.replica(leader).conf_state().clone();
                        let change = if let Some(&learner) = conf.learners.first() {
                            MemberChange::Promote { id: learner }
                        } else if conf.voters.len() > 3 {
                            // A random voter leaves, the leader included, never the newest.
                            let newest = conf.voters.iter().copied().max().unwrap();
                            let old: Vec<u64> = sorted(&conf.voters).into_iter().filter(|&id| id != newest).collect();
                            MemberChange::Remove { id: sim.rng.pick(&old) }
                        } else {
                            if conf.voters.contains(&next_id) {
                                next_id += 1;
                            }
                            if !sim.nodes.contains_key(&next_id) {
                                // A joining node starts empty and waits to be added.
                                sim.add_node(next_id, BTreeMap::new());
                            }
                            MemberChange::AddLearner { id: next_id, raft_addr: format!("sim:{next_id}") }
                        };
                        let op = sim.change(leader, change.clone());
                        pending = Some((op, change));
                    }
                }
                None => {}
            }
            sim.step();
        }
        sim.converge();
        sim.final_reads();
        let conf = sim.replica(sim.leader().unwrap()).conf_state().clone();
        if conf.voters.len() < 3 {
            sim.fail(format!("fewer than three voters left: {conf:?}"));
        }
    });
}

/// Crashes and restarts of a minority, with lost and delayed messages, while
/// writes and reads flow.
#[test]
fn crash_restart() {
    for_seeds("crash_restart", 8, |seed| {
        let nodes = if seed % 2 == 0 { 3 } else { 5 };
        let mut sim = Sim::new(seed, SimConfig { nodes, drop: 0.05, snapshot_every: 20, ..SimConfig::default() });
        let max_down = ((nodes - 1) / 2) as usize;
        for _ in 0..450 {
            sim.traffic(0.6, 0.2);
            if sim.down().len() < max_down && sim.rng.chance(0.02) {
                let live = sim.live();
                let victim = sim.rng.pick(&live);
                sim.crash(victim);
            }
            for id in sim.down() {
                if sim.rng.chance(0.08) {
                    sim.restart(id);
                }
            }
            sim.step();
        }
        sim.converge();
        sim.final_reads();
        let reads = sim.outcomes.values().filter(|o| matches!(o, Outcome::Read(_))).count();
        if sim.acked_writes().len() < 80 || reads < 20 {
            sim.fail(format!("too little got through: {} writes, {reads} reads", sim.acked_writes().len()));
        }
    });
}

/// Random mixed faults: lost, delayed and reordered messages, partitions of
/// every shape, crashes and restarts.
fn random_faults_run(seed: u64) -> Sim {
    let mut pick = Rng::new(seed ^ 0xC0FF_EE00_D15E_A5E5);
    let nodes = pick.pick(&[3, 5]);
    let cfg = SimConfig { nodes, drop: pick.below(21) as f64 / 100.0, max_delay: pick.below(4), snapshot_every: pick.pick(&[5, 25, 1000]), ..SimConfig::default() };
    let mut sim = Sim::new(seed, cfg);
    let max_down = ((nodes - 1) / 2) as usize;
    for _ in 0..600 {
        sim.traffic(0.5, 0.15);
        if sim.rng.chance(0.04) {
            sim.random_fault(max_down);
        }
        sim.step();
    }
    sim.converge();
    sim.final_reads();
    sim
}

#[test]
fn random_faults() {
    for_seeds("random_faults", 10, |seed| {
        random_faults_run(seed);
    });
}

/// The same seed gives the same run, message for message.
#[test]
fn same_seed_same_run() {
    for_seeds("same_seed_same_run", 1, |seed| {
        let fingerprint = |sim: &Sim| (sim.trace, sim.now, sim.sent, mix(FNV, &[fnv(FNV, format!("{:?}", sim.outcomes).as_bytes())]));
        let (a, b) = (random_faults_run(seed), random_faults_run(seed));
        if fingerprint(&a) != fingerprint(&b) {
            b.fail(format!("two runs of one seed differ: {:?} vs {:?}", fingerprint(&a), fingerprint(&b)));
        }
    });
}

/// A cluster of one (`sluice up`) restarts after its log was compacted.
#[test]
fn single_node_restart() {
    for_seeds("single_node_restart", 3, |seed| {
        let mut sim = Sim::new(seed, SimConfig { nodes: 1, snapshot_every: 5, ..SimConfig::default() });
        for _ in 0..2 {
            let leader = sim.await_leader();
            for _ in 0..12 {
                sim.write_acked(leader);
            }
            sim.crash(1);
            sim.restart(1);
            sim.converge();
        }
    });
}

/// A leader is ready to decide (`leader_ready`) only once it has applied an
/// entry of its own term: then its state holds every write acknowledged before
/// it, by any leader. Checked at every step while a new leader takes over.
#[test]
fn a_ready_leader_holds_every_acknowledged_write() {
    for_seeds("leader_ready", 8, |seed| {
        let mut sim = Sim::new(seed, SimConfig { nodes: 3, ..SimConfig::default() });
        let old = sim.await_leader();
        let acked: Vec<usize> = (0..5).map(|_| sim.write_acked(old)).collect();
        sim.isolate(old);
        let others: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
        let mut ready = None;
        for _ in 0..(20 * sim.cfg.election as u64) {
            sim.step();
            ready = others.iter().copied().find(|&id| sim.replica(id).leader_ready());
            if let Some(new) = ready {
                let state = sim.state(new);
                if let Some(w) = acked.iter().find(|w| !has_write(&state, **w)) {
                    sim.fail(format!("leader {new} is ready to decide without acknowledged write {w}"));
                }
                break;
            }
        }
        if ready.is_none() {
            sim.fail("no new leader became ready to decide");
        }
    });
}
