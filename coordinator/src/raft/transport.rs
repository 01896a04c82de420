//! Raft messages between coordinators: length-prefixed frames over one TCP
//! connection per peer and direction. A frame is a protobuf Raft message, a
//! follower's liveness notes (JSON, `liveness::HeardReport`) for the leader, or the hello that
//! opens every connection (the sender's id and address), from which a new
//! member learns where to answer before it has the cluster's configuration.
//! The hello also carries the sender's cluster identity, whether it holds no
//! log yet, and the entry version it runs: a peer of another cluster, or a
//! voter that lost its data directory, is refused (and counted), and a blank
//! voter that hears of an identity it lacks stops (`Gate`).
//!
//! Sending never blocks the Raft loop: each peer has a bounded queue drained by
//! its own task, which writes everything queued in one go (batching), and
//! reconnects with a capped backoff. A full queue or a dead link drops messages,
//! which Raft tolerates by design (it retransmits); the replica is told the peer
//! is unreachable so it probes gently instead of streaming into the void.
//! Receiving is bounded too: a reader waits when the Raft loop is behind, which
//! pushes back through TCP to the sender.
//!
//! With `RaftTls`, every connection is mutual TLS: the dialer shows its
//! certificate and checks the peer's against the cluster CA, the acceptor
//! refuses (and counts) any peer without a valid certificate from that CA
//! before reading a frame, so a hello cannot come from an impostor.

use super::replica::Member;
use crate::liveness::{HeardReport, Liveness};
use crate::state_machine::ENTRY_VERSION;
use crate::tls::RaftTls;
use bytes::Bytes;
use bytes::{Buf, BytesMut};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use sluice_common::Clock;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Largest frame accepted: a snapshot of a large cluster state fits.
const MAX_FRAME: usize = 256 * 1024 * 1024;
/// Bytes written per batch before the socket is flushed.
const BATCH_BYTES: usize = 1024 * 1024;
const KIND_RAFT: u8 = 0;
/// Gateway load of older coordinators (load now travels on the metrics bus): ignored.
const KIND_OLD_LOAD: u8 = 1;
const KIND_HELLO: u8 = 2;
const KIND_HEARD: u8 = 3;
/// Least time between two logged TLS failures of one outbound link.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The first frame on a connection. Fields after `raft_addr` are absent from
/// older coordinators' hellos.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Hello {
    id: u64,
    raft_addr: String,
    /// The sender's cluster identity, once it has one.
    #[serde(default)]
    cluster: Option<String>,
    /// The sender holds no log of a cluster yet (see `Replica::is_blank`).
    #[serde(default)]
    blank: bool,
    /// The newest entry version the sender reads.
    #[serde(default = "first_version")]
    version: u32,
}

fn first_version() -> u32 {
    1
}

/// This coordinator as its hellos describe it, and what a peer's hello is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    pub id: u64,
    pub raft_addr: String,
    pub cluster: Option<String>,
    pub blank: bool,
    /// The voters as this coordinator knows them.
    pub voters: BTreeSet<u64>,
}

/// What a hello decides about its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Accept,
    /// Close the connection: the peer must not take part.
    Refuse(String),
    /// This coordinator must stop: it lost its data and a peer just said so.
    Halt(String),
}

/// Checks peers' hellos against this coordinator's identity, and keeps what
/// they taught: each peer's version, and a reason to stop if one showed that
/// this coordinator has lost its data.
#[derive(Debug, Default)]
pub struct Gate {
    local: Mutex<Local>,
    versions: Mutex<BTreeMap<u64, u32>>,
    halted: Mutex<Option<String>>,
}

impl Gate {
    pub fn new(local: Local) -> Arc<Self> {
        Arc::new(Self { local: Mutex::new(local), ..Default::default() })
    }

    /// Updates what this coordinator says of itself (new links say it).
    pub fn set_local(&self, local: Local) {
        let mut current = self.local.lock().expect("gate lock poisoned");
        if *current != local {
            *current = local;
        }
    }

    /// The entry version each peer said it runs.
    pub fn versions(&self) -> BTreeMap<u64, u32> {
        self.versions.lock().expect("gate lock poisoned").clone()
    }

    /// Why this coordinator must stop, once a peer's hello showed it.
    pub fn halted(&self) -> Option<String> {
        self.halted.lock().expect("gate lock poisoned").clone()
    }

    fn hello(&self) -> Bytes {
        let local = self.local.lock().expect("gate lock poisoned");
        let hello = Hello { id: local.id, raft_addr: local.raft_addr.clone(), cluster: local.cluster.clone(), blank: local.blank, version: ENTRY_VERSION };
        Bytes::from(serde_json::to_vec(&hello).unwrap_or_default())
    }

    fn check(&self, hello: &Hello) -> Verdict {
        let local = self.local.lock().expect("gate lock poisoned");
        match (&local.cluster, &hello.cluster) {
            (Some(mine), Some(theirs)) if mine != theirs => {
                Verdict::Refuse(format!("coordinator {} belongs to another cluster ({theirs}; this one is {mine}): check its --initial-cluster and --data-dir", hello.id))
            }
            (Some(mine), None) if hello.blank && local.voters.contains(&hello.id) => Verdict::Refuse(format!(
                "coordinator {} is a voter of cluster {mine} but holds neither its log nor its identity: its data directory was lost; \
                 wipe it and rejoin it as a new member (start it with --join and a new --id, then `sluice cluster leave {}` and `sluice cluster join NEW_ID HOST:PORT`)",
                hello.id, hello.id
            )),
            (None, Some(theirs)) if local.blank && local.voters.contains(&local.id) => Verdict::Halt(format!(
                "coordinator {} belongs to cluster {theirs}, and this coordinator is one of its voters but holds neither its log nor its identity: \
                 its data directory was lost after it joined, or it was started with --initial-cluster to found a cluster that already exists. \
                 It must not vote with a log it no longer has: wipe its data directory and rejoin it as a new member \
                 (start it with --join and a new --id, then `sluice cluster leave {}` and `sluice cluster join NEW_ID HOST:PORT` on the cluster)",
                hello.id, local.id
            )),
            _ => {
                self.versions.lock().expect("gate lock poisoned").insert(hello.id, hello.version);
                Verdict::Accept
            }
        }
    }
}

/// Peers' addresses learnt from hellos, for peers the configuration does not
/// (yet) name.
#[derive(Debug, Default)]
pub struct LearntAddresses(std::sync::Mutex<BTreeMap<u64, String>>);

impl LearntAddresses {
    fn learn(&self, id: u64, addr: String) {
        self.0.lock().expect("addresses lock poisoned").insert(id, addr);
    }

    /// `members`, plus learnt peers it does not name.
    pub fn fill(&self, members: &BTreeMap<u64, Member>) -> BTreeMap<u64, Member> {
        let mut all = members.clone();
        for (id, addr) in self.0.lock().expect("addresses lock poisoned").iter() {
            all.entry(*id).or_insert_with(|| Member { raft_addr: addr.clone() });
        }
        all
    }
}

/// What travels on a link.
#[derive(Debug)]
pub enum Frame {
    Raft(Message),
    /// An encoded `HeardReport`.
    Heard(Bytes),
}

impl Frame {
    fn snapshot_to(&self) -> Option<u64> {
        match self {
            Frame::Raft(m) if m.get_msg_type() == MessageType::MsgSnapshot => Some(m.to),
            _ => None,
        }
    }
}

/// What the links report back to the Raft loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    Unreachable(u64),
    Snapshot { to: u64, delivered: bool },
}

#[derive(Debug, Default)]
pub struct TransportCounters {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub received: AtomicU64,
    /// Connections closed at their hello: a peer of another cluster, or a voter that lost its data.
    pub refused: AtomicU64,
}

struct Link {
    addr: String,
    queue: mpsc::Sender<Frame>,
    task: JoinHandle<()>,
}

/// The outbound side: one link per peer.
pub struct Transport {
    gate: Arc<Gate>,
    links: HashMap<u64, Link>,
    events: mpsc::UnboundedSender<LinkEvent>,
    pub counters: Arc<TransportCounters>,
    tls: Option<RaftTls>,
}

impl Transport {
    /// Links from the coordinator `gate` describes; mutual TLS with `tls`.
    pub fn new(gate: Arc<Gate>, events: mpsc::UnboundedSender<LinkEvent>, counters: Arc<TransportCounters>, tls: Option<RaftTls>) -> Self {
        Self { gate, links: HashMap::new(), events, counters, tls }
    }

    /// Opens links to new members, closes links to removed ones, follows moves.
    pub fn set_peers(&mut self, me: u64, members: &BTreeMap<u64, Member>) {
        self.links.retain(|id, link| {
            let keep = members.get(id).is_some_and(|m| m.raft_addr == link.addr) && *id != me;
            if !keep {
                link.task.abort();
            }
            keep
        });
        for (id, member) in members {
            if *id == me || self.links.contains_key(id) {
                continue;
            }
            let (queue, rx) = mpsc::channel(PEER_QUEUE);
            let link = LinkParts { peer: *id, addr: member.raft_addr.clone(), gate: self.gate.clone(), tls: self.tls.clone() };
            let task = tokio::spawn(run_link(link, rx, self.events.clone(), self.counters.clone()));
            info!(peer = id, addr = %member.raft_addr, "raft link opened");
            self.links.insert(*id, Link { addr: member.raft_addr.clone(), queue, task });
        }
    }

    pub fn send(&self, messages: Vec<Message>) {
        for msg in messages {
            let to = msg.to;
            let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
            let Some(link) = self.links.get(&to) else {
                // A peer we have no address for yet (e.g. added a moment ago).
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                let _ = self.events.send(LinkEvent::Unreachable(to));
                continue;
            };
            if link.queue.try_send(Frame::Raft(msg)).is_err() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                let _ = self.events.send(LinkEvent::Unreachable(to));
                if is_snapshot {
                    let _ = self.events.send(LinkEvent::Snapshot { to, delivered: false });
                }
            }
        }
    }

    /// Sends liveness notes to `to`; dropped if the link is busy or down (the
    /// next ones follow within a second).
    pub fn send_heard(&self, to: u64, report: Bytes) {
        if let Some(link) = self.links.get(&to) {
            let _ = link.queue.try_send(Frame::Heard(report));
        }
    }

    pub fn close(&mut self) {
        for (_, link) in self.links.drain() {
            link.task.abort();
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.close();
    }
}

/// What an outbound link needs to know.
struct LinkParts {
    peer: u64,
    addr: String,
    gate: Arc<Gate>,
    tls: Option<RaftTls>,
}

/// An outbound link's stream: plain TCP, or TLS over it.
type LinkStream = Box<dyn AsyncWrite + Unpin + Send>;

/// Why a link could not connect.
enum ConnectError {
    /// Down, or not there yet: Raft's everyday business.
    Unreachable(String),
    /// No answer in time: the wait was the backoff already.
    TimedOut,
    /// Reached, but the TLS handshake failed: a configuration problem.
    Tls(String),
}

/// Connects to `addr`, with the TLS handshake if `tls`.
async fn connect(addr: &str, tls: Option<&RaftTls>) -> Result<LinkStream, ConnectError> {
    let tcp = match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Unreachable(e.to_string())),
        Err(_) => return Err(ConnectError::TimedOut),
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else { return Ok(Box::new(tcp)) };
    // As long as a TCP connect: a peer that accepts but never answers (a
    // paused process) is as good as unreachable.
    match tokio::time::timeout(Duration::from_secs(1), tls.connect(addr, tcp)).await {
        Ok(Ok(stream)) => Ok(Box::new(stream)),
        Ok(Err(e)) => Err(ConnectError::Tls(e)),
        Err(_) => Err(ConnectError::TimedOut),
    }
}

/// Keeps one outbound connection to `addr` alive and writes what is queued.
async fn run_link(link: LinkParts, mut queue: mpsc::Receiver<Frame>, events: mpsc::UnboundedSender<LinkEvent>, counters: Arc<TransportCounters>) {
    let LinkParts { peer, addr, gate, tls } = link;
    let mut backoff = Duration::from_millis(50);
    let mut buf = BytesMut::new();
    let mut warned: Option<Instant> = None;
    loop {
        // Connect only when there is something to say: an idle link costs nothing.
        let Some(first) = queue.recv().await else { return };
        let mut stream = match connect(&addr, tls.as_ref()).await {
            Ok(s) => {
                backoff = Duration::from_millis(50);
                debug!(peer, addr = %addr, "raft link connected");
                s
            }
            Err(e) => {
                fail(peer, &first, &events, &counters);
                match &e {
                    // Warned now and then: the link retries every second.
                    ConnectError::Tls(e) if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) => {
                        warn!(peer, addr = %addr, error = %e, "raft link refused");
                        warned = Some(Instant::now());
                    }
                    ConnectError::Tls(e) | ConnectError::Unreachable(e) => debug!(peer, addr = %addr, error = %e, "raft peer unreachable"),
                    ConnectError::TimedOut => debug!(peer, addr = %addr, "raft peer did not answer in time"),
                }
                discard_queued(peer, &mut queue, &events, &counters);
                if let ConnectError::TimedOut = e {
                    continue;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let mut next = Some(first);
        let mut greeted = false;
        while let Some(msg) = next.take() {
            // Batch: everything already queued goes out in one write.
            let mut batch = vec![msg];
            buf.clear();
            if !greeted {
                // Said afresh on each connection: the identity may have come since.
                encode_raw(KIND_HELLO, &gate.hello(), &mut buf);
                greeted = true;
            }
            encode(&batch[0], &mut buf);
            while buf.len() < BATCH_BYTES {
                match queue.try_recv() {
                    Ok(m) => {
                        encode(&m, &mut buf);
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            // TLS holds records until flushed; on plain TCP the flush is free.
            let written = async {
                stream.write_all(&buf).await?;
                stream.flush().await
            }
            .await;
            if let Err(e) = written {
                debug!(peer, addr = %addr, error = %e, "raft link broke; reconnecting");
                for m in &batch {
                    fail(peer, m, &events, &counters);
                }
                break;
            }
            counters.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
            for to in batch.iter().filter_map(Frame::snapshot_to) {
                let _ = events.send(LinkEvent::Snapshot { to, delivered: true });
            }
            next = queue.recv().await;
            if next.is_none() {
                return;
            }
        }
    }
}

fn fail(peer: u64, frame: &Frame, events: &mpsc::UnboundedSender<LinkEvent>, counters: &TransportCounters) {
    counters.dropped.fetch_add(1, Ordering::Relaxed);
    let _ = events.send(LinkEvent::Unreachable(peer));
    if frame.snapshot_to().is_some() {
        let _ = events.send(LinkEvent::Snapshot { to: peer, delivered: false });
    }
}

/// Drops what queued up while the peer was unreachable: Raft resends what matters.
fn discard_queued(peer: u64, queue: &mut mpsc::Receiver<Frame>, events: &mpsc::UnboundedSender<LinkEvent>, counters: &TransportCounters) {
    while let Ok(m) = queue.try_recv() {
        fail(peer, &m, events, counters);
    }
}

/// `[u32 length of what follows][u8 kind][payload]`.
fn encode(frame: &Frame, buf: &mut BytesMut) {
    let (kind, payload) = match frame {
        Frame::Raft(msg) => match msg.write_to_bytes() {
            Ok(bytes) => (KIND_RAFT, Bytes::from(bytes)),
            Err(e) => return warn!(error = %e, "cannot encode a raft message; dropped"),
        },
        Frame::Heard(bytes) => (KIND_HEARD, bytes.clone()),
    };
    encode_raw(kind, &payload, buf);
}

fn encode_raw(kind: u8, payload: &[u8], buf: &mut BytesMut) {
    buf.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
    buf.extend_from_slice(&[kind]);
    buf.extend_from_slice(payload);
}

/// Where received frames go.
#[derive(Clone)]
pub struct Sinks {
    pub inbox: mpsc::Sender<Message>,
    /// Where followers' notes are merged, on the clock of this coordinator.
    pub liveness: Arc<Mutex<Liveness>>,
    pub clock: Arc<dyn Clock>,
    pub addresses: Arc<LearntAddresses>,
    pub counters: Arc<TransportCounters>,
    pub gate: Arc<Gate>,
}

/// Accepts peers' connections and feeds their frames to `sinks` until
/// `shutdown`; with `tls`, only from peers that pass its handshake.
pub async fn serve(listener: TcpListener, sinks: Sinks, tls: Option<RaftTls>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut readers = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let _ = stream.set_nodelay(true);
                    let sinks = sinks.clone();
                    match &tls {
                        None => readers.spawn(read_frames(stream, from.to_string(), sinks)),
                        Some(tls) => {
                            let server = tls.server.clone();
                            readers.spawn(async move {
                                if let Some((stream, _)) = server.accept(stream, from).await {
                                    read_frames(stream, from.to_string(), sinks).await;
                                }
                            })
                        }
                    };
                }
                Err(e) => {
                    warn!(error = %e, "raft listener cannot accept; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
            _ = &mut shutdown => return,
        }
    }
}

async fn read_frames(mut stream: impl AsyncRead + Unpin, from: String, sinks: Sinks) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len == 0 || len > MAX_FRAME {
                warn!(from = %from, len, "raft frame too large; closing the connection");
                return;
            }
            if buf.len() < 4 + len {
                buf.reserve(4 + len - buf.len());
                break;
            }
            buf.advance(4);
            let frame = buf.split_to(len);
            match frame[0] {
                KIND_RAFT => match Message::parse_from_bytes(&frame[1..]) {
                    Ok(msg) => {
                        sinks.counters.received.fetch_add(1, Ordering::Relaxed);
                        if sinks.inbox.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!(from = %from, error = %e, "undecodable raft frame; closing the connection");
                        return;
                    }
                },
                KIND_HELLO => match serde_json::from_slice::<Hello>(&frame[1..]) {
                    Ok(hello) => match sinks.gate.check(&hello) {
                        Verdict::Accept => sinks.addresses.learn(hello.id, hello.raft_addr),
                        Verdict::Refuse(why) => {
                            sinks.counters.refused.fetch_add(1, Ordering::Relaxed);
                            warn!(from = %from, peer = hello.id, "raft peer refused: {why}");
                            return;
                        }
                        Verdict::Halt(why) => {
                            *sinks.gate.halted.lock().expect("gate lock poisoned") = Some(why);
                            return;
                        }
                    },
                    Err(e) => warn!(from = %from, error = %e, "undecodable hello; ignored"),
                },
                KIND_OLD_LOAD => {}
                KIND_HEARD => match serde_json::from_slice::<HeardReport>(&frame[1..]) {
                    Ok(report) => sinks.liveness.lock().expect("liveness lock poisoned").merge(&report, sinks.clock.now()),
                    Err(e) => warn!(from = %from, error = %e, "undecodable liveness notes; ignored"),
                },
                other => {
                    warn!(from = %from, kind = other, "unknown frame kind (a newer coordinator?); closing the connection");
                    return;
                }
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(cluster: Option<&str>, blank: bool) -> Gate {
        Gate { local: Mutex::new(Local { id: 1, raft_addr: "a".into(), cluster: cluster.map(Into::into), blank, voters: BTreeSet::from([1, 2, 3]) }), ..Default::default() }
    }

    fn hello(id: u64, cluster: Option<&str>, blank: bool) -> Hello {
        Hello { id, raft_addr: "b".into(), cluster: cluster.map(Into::into), blank, version: ENTRY_VERSION }
    }

    #[test]
    fn hellos_of_another_cluster_or_of_a_voter_that_lost_its_data_are_refused() {
        let member = gate(Some("c"), false);
        assert!(matches!(member.check(&hello(2, Some("other"), false)), Verdict::Refuse(why) if why.contains("another cluster")));
        assert!(matches!(member.check(&hello(3, None, true)), Verdict::Refuse(why) if why.contains("data directory was lost")));
        // A blank coordinator being added (not a voter yet) adopts the identity later.
        assert_eq!(member.check(&hello(4, None, true)), Verdict::Accept);
        // A member with a log but no identity yet (it had not applied it) is fine.
        assert_eq!(member.check(&hello(2, None, false)), Verdict::Accept);
        assert_eq!(member.check(&hello(3, Some("c"), false)), Verdict::Accept);
        // An older coordinator's hello has none of the new fields: version 1.
        let old: Hello = serde_json::from_str(r#"{"id":2,"raft_addr":"x"}"#).unwrap();
        assert_eq!(member.check(&old), Verdict::Accept);
        assert_eq!(member.versions().get(&2), Some(&1));
        assert_eq!(member.versions().get(&3), Some(&ENTRY_VERSION));
    }

    #[test]
    fn a_blank_voter_that_hears_of_an_identity_must_stop() {
        assert!(matches!(gate(None, true).check(&hello(2, Some("c"), false)), Verdict::Halt(why) if why.contains("--join and a new --id")));
        // While founding, nobody has an identity yet.
        assert_eq!(gate(None, true).check(&hello(2, None, true)), Verdict::Accept);
        // Not blank: it holds a log, and takes the identity when it applies it.
        assert_eq!(gate(None, false).check(&hello(2, Some("c"), false)), Verdict::Accept);
    }
}
