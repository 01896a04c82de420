//! Which way in a gateway takes to an instance: the container's own address
//! when the instance is on the node it shares a host with, the published port
//! otherwise, and the published port after all when the own address cannot be
//! reached from here. Real sockets: two tiny HTTP servers stand for the two
//! ways in, each answering with its own name.

use super::{Gateway, Worker};
use crate::applied::AppliedState;
use crate::auth::AuthMode;
use crate::plan::{Action, Decision, Mode, PlacementNote, Plan, Reason};
use crate::raft::{RaftConfig, RaftNode};
use crate::state::ClusterState;
use crate::state_machine::{apply, Command, LogPosition, Response};
use crate::store::Store;
use sluice_common::{Endpoint, FunctionName, FunctionSpec, ImageRef, InstanceReport, InstanceState, NodeId, NodeReport, Resources, SystemClock, Timestamp};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const POS: LogPosition = LogPosition { index: 1, term: 1 };

/// A keep-alive HTTP/1.1 server on loopback answering every request with `body`.
async fn answering(body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if conn.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Function `f` with one ready instance on node `n1` at `endpoint`.
fn state_with(endpoint: Endpoint) -> ClusterState {
    let mut st = ClusterState::default();
    let f = FunctionName::new("f").unwrap();
    let node = NodeId::new("n1").unwrap();
    apply(&mut st, &Command::PutFunction { spec: FunctionSpec::new(f.clone(), ImageRef::parse("img").unwrap()) }, POS);
    let report = |instances| Command::Report {
        report: NodeReport {
            node: node.clone(),
            capacity: Resources { cpu_millis: 4000, memory_mb: 4096 },
            instances,
            at: Timestamp(1),
            labels: Default::default(),
            max_instances: None,
            images: Default::default(),
            agent_addr: None,
        },
        at: Timestamp(1),
    };
    apply(&mut st, &report(vec![]), POS);
    let start = Decision {
        action: Action::Start { function: f.clone(), node: node.clone(), replaces: None, placement: PlacementNote { score: 1.0, feasible: 1, considered: 1 } },
        reason: Reason::Demand { desired: 1, live: 0, stable: 1.0, panic: 1.0, now: 1.0, target: 1.0, mode: Mode::Stable },
    };
    let (Response::Planned { .. }, _) = apply(&mut st, &Command::Plan(Plan { term: 1, at: Timestamp(1), decisions: vec![start] }), POS) else { panic!("not planned") };
    let id = *st.instances.keys().next().expect("an instance");
    let ready = InstanceReport { id, function: f, state: InstanceState::Ready, endpoint: Some(endpoint), reason: None, addr: None };
    apply(&mut st, &report(vec![ready]), POS);
    assert_eq!(st.instances[&id].state, InstanceState::Ready);
    st
}

/// A gateway (with `local_node`) serving on loopback, its routing table
/// synced to `state`; returns its address. The store is only there because a
/// gateway needs one: every route is already in the table.
struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    raft: RaftNode,
    _dir: tempfile::TempDir,
}

async fn gateway(local_node: Option<&str>, state: &ClusterState) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (stop, stopped) = watch::channel(false);
    let applied = AppliedState::new();
    let clock: Arc<dyn sluice_common::Clock> = Arc::new(SystemClock);
    let raft = RaftNode::start(RaftConfig::single(dir.path().into()), applied.clone(), clock.clone(), stopped.clone()).unwrap();
    let store = Store::new(applied, raft.handle.clone(), clock.clone());
    let gw = Gateway::new(store, clock, AuthMode::Off, local_node.map(|n| NodeId::new(n).unwrap()), super::DEFAULT_CACHE_BYTES);
    gw.sync(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let worker = Worker::new(gw.clone());
    tokio::spawn(crate::http::serve_with_peers("gateway", listener, None, move |req, peer| worker.clone().handle(peer.ip, req), crate::node::stopped(stopped)));
    Running { addr, stop, raft, _dir: dir }
}

impl Running {
    /// `GET /function/f` on a new connection: the status and body.
    async fn call(&self) -> (u16, String) {
        let mut conn = TcpStream::connect(self.addr).await.unwrap();
        conn.write_all(b"GET /function/f HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await.unwrap();
        let status = reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        (status, body)
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::task::spawn_blocking(move || self.raft.join()).await.unwrap();
    }
}

#[tokio::test]
async fn the_gateway_on_the_instances_host_goes_to_its_own_address_and_others_to_the_published_port() {
    let (published, direct) = (answering("published").await, answering("direct").await);
    let endpoint = Endpoint::published("127.0.0.1", published.port()).with_direct(Some(direct));
    let state = state_with(endpoint.clone());

    let local = gateway(Some("n1"), &state).await;
    for _ in 0..3 {
        assert_eq!(local.call().await, (200, "direct".to_string()));
    }
    local.stop().await;

    // A gateway on another host, or one told of another node, uses the published port.
    for other in [None, Some("n2")] {
        let remote = gateway(other, &state).await;
        assert_eq!(remote.call().await, (200, "published".to_string()), "local node {other:?}");
        remote.stop().await;
    }

    // An agent that advertises no direct address is reached at its published port, even from its own host.
    let old = gateway(Some("n1"), &state_with(Endpoint::published("127.0.0.1", published.port()))).await;
    assert_eq!(old.call().await, (200, "published".to_string()));
    old.stop().await;
}

#[tokio::test]
async fn an_own_address_that_never_worked_from_here_gives_way_to_the_published_port() {
    let published = answering("published").await;
    let unreachable = closed_port().await;
    let state = state_with(Endpoint::published("127.0.0.1", published.port()).with_direct(Some(unreachable)));
    let gw = gateway(Some("n1"), &state).await;
    // The first request is not lost: it goes to the published port at once, and so do the next.
    for _ in 0..3 {
        assert_eq!(gw.call().await, (200, "published".to_string()));
    }
    gw.stop().await;
}

#[tokio::test]
async fn once_the_own_address_has_worked_its_failure_is_the_instances() {
    let published = answering("published").await;
    // The direct server answers once, then goes away (the container died).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let direct = listener.local_addr().unwrap();
    let state = state_with(Endpoint::published("127.0.0.1", published.port()).with_direct(Some(direct)));
    let gw = gateway(Some("n1"), &state).await;
    let served = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf).await.unwrap();
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\ndirect").await.unwrap();
    });
    assert_eq!(gw.call().await, (200, "direct".to_string()));
    served.await.unwrap();
    // Now nothing listens there: that is the instance failing (502), not a reason to change ways.
    let (status, _) = gw.call().await;
    assert_eq!(status, 502);
    gw.stop().await;
}

#[tokio::test]
async fn a_new_connection_to_the_own_address_waits_for_the_published_port_to_say_the_container_is_there() {
    // The container is gone (its published port refuses) and its address now
    // belongs to another container, which answers: that one must not get the request.
    let reused = answering("another function").await;
    let gone = closed_port().await;
    let state = state_with(Endpoint::published("127.0.0.1", gone.port()).with_direct(Some(reused)));
    let gw = gateway(Some("n1"), &state).await;
    let (status, body) = gw.call().await;
    assert_eq!(status, 502, "{body}");
    assert!(!body.contains("another function"), "{body}");
    gw.stop().await;
}
