//! A running coordinator: the Raft loop, the store, the controller, the API
//! server and the gateway server, wired together and stopped together.

use crate::api::{Api, ImagePinning};
use crate::applied::AppliedState;
use crate::auth::{self, bootstrap::AuthConfig, AuthMode};
use crate::controller::{self, ControllerConfig};
use crate::gateway::{self, coordinator_node_id, FiguresTaker, Gateway};
use crate::http;
use crate::ingest::{self, Telemetry};
use crate::invocations::{InvocationConfig, Invocations};
use crate::raft::{RaftConfig, RaftNode, StartError};
use crate::registry::{ImagesConfig, Resolver};
use crate::store::Store;
use crate::tls::{HandshakeFailures, Listener, RaftTls, ServerTls};
use crate::windows::{Windows, WindowsConfig};
use rustls::{ClientConfig, ServerConfig};
use sluice_bus::{InProcessBus, MetricsBus, Publisher, PublisherConfig, Topic};
use sluice_common::tls::{ClientCerts, TlsError, TlsFiles};
use sluice_common::{Clock, NodeId};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::info;

#[derive(Clone)]
pub struct CoordinatorConfig {
    /// Where the JSON API listens (port 0 picks one).
    pub api_addr: SocketAddr,
    /// Where the gateway listens (port 0 picks one).
    pub gateway_addr: SocketAddr,
    /// Threads serving the gateway, each with its own runtime and upstream
    /// connection pool; 0 means one per core.
    pub gateway_threads: usize,
    /// Bytes the gateway's response cache holds, all functions together.
    pub gateway_cache_bytes: u64,
    pub controller: ControllerConfig,
    pub raft: RaftConfig,
    /// Where agents' figures are read from and the gateway's published. Without
    /// one, a bus inside this process: the windows then hold only what this
    /// coordinator's own gateway and the agents in this process publish.
    pub bus: Option<Arc<dyn MetricsBus>>,
    pub metrics: MetricsConfig,
    pub auth: AuthConfig,
    pub images: ImagesConfig,
    pub tls: CoordinatorTls,
    /// The node whose agent shares this coordinator's host (and network): the
    /// gateway reaches its instances at their containers' own addresses rather
    /// than through their published ports. None: every instance through its
    /// published port.
    pub local_node: Option<NodeId>,
}

/// TLS of a coordinator; what is `None` is plain TCP, as without any flag.
#[derive(Debug, Clone, Default)]
pub struct CoordinatorTls {
    /// Mutual TLS on Raft links, and TLS on the API (where client certificates
    /// are checked when shown: agents show theirs).
    pub cluster: Option<ClusterTls>,
    /// TLS on the gateway, without client certificates.
    pub gateway: Option<Arc<ServerConfig>>,
}

/// The rustls configurations behind `--tls-cert`, `--tls-key` and `--tls-ca`.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    pub raft_server: Arc<ServerConfig>,
    pub api_server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

impl ClusterTls {
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self { raft_server: files.server_config(ClientCerts::Required)?, api_server: files.server_config(ClientCerts::Optional)?, client: files.client_config()? })
    }
}

impl std::fmt::Debug for CoordinatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorConfig")
            .field("api_addr", &self.api_addr)
            .field("gateway_addr", &self.gateway_addr)
            .field("raft", &self.raft)
            .field("bus", &self.bus.as_ref().map(|b| b.name()))
            .field("tls", &(self.tls.cluster.is_some(), self.tls.gateway.is_some()))
            .field("local_node", &self.local_node)
            .finish_non_exhaustive()
    }
}

/// The metric windows and the gateway's publishing.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    pub windows: WindowsConfig,
    /// How often the gateway publishes its per-function figures.
    pub publish_every: PublishEvery,
}

/// A period of at least 100 ms (default 1 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishEvery(pub Duration);

impl Default for PublishEvery {
    fn default() -> Self {
        Self(Duration::from_secs(1))
    }
}

/// A started coordinator. Dropping it does not stop it: call `shutdown`.
pub struct Coordinator {
    pub store: Arc<Store>,
    pub gateway: Arc<Gateway>,
    pub api_addr: SocketAddr,
    pub gateway_addr: SocketAddr,
    pub raft_addr: SocketAddr,
    /// Peers refused by the TLS handshake, per listener.
    pub tls_failures: Arc<HandshakeFailures>,
    stop: watch::Sender<bool>,
    raft: Option<RaftNode>,
    tasks: JoinSet<()>,
    gateway_threads: Vec<std::thread::JoinHandle<()>>,
    /// True once the cluster's first admin token is settled (at once with auth off).
    admin_ready: watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {addr} for the {what}: {source}; pick a free address or stop what uses it")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Raft(#[from] StartError),
    #[error(
        "refusing to serve {addr} without authentication: anyone who can reach it could run containers on every host; \
         drop `--auth off`, bind to 127.0.0.1, or add --insecure-expose-without-auth if this network is trusted"
    )]
    ExposedWithoutAuth { addr: SocketAddr },
}

impl Coordinator {
    /// Waits until the cluster's first admin token is settled, and its file
    /// written if this coordinator made it.
    pub async fn admin_token_ready(&self, within: Duration) -> Result<(), String> {
        let mut ready = self.admin_ready.clone();
        let settled = tokio::time::timeout(within, async move { ready.wait_for(|r| *r).await.is_ok() }).await;
        match settled {
            Ok(true) => Ok(()),
            _ => Err(format!("the admin token was not settled within {within:?}: can this coordinator reach a quorum?")),
        }
    }

    /// Binds both servers and starts every task.
    pub async fn start(mut config: CoordinatorConfig, clock: Arc<dyn Clock>) -> Result<Self, BindError> {
        if config.auth.mode == AuthMode::Off && !config.auth.expose_without_auth {
            if let Some(addr) = [config.api_addr, config.gateway_addr].into_iter().find(|a| !a.ip().is_loopback()) {
                return Err(BindError::ExposedWithoutAuth { addr });
            }
        }
        let bind = |what, addr| async move { TcpListener::bind(addr).await.map_err(|source| BindError::Listen { what, addr, source }) };
        let api_listener = bind("API", config.api_addr).await?;
        let api_addr = api_listener.local_addr().map_err(|source| BindError::Listen { what: "API", addr: config.api_addr, source })?;
        let threads = match config.gateway_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let gateway_listener = bind("gateway", config.gateway_addr).await?;
        let gateway_addr = gateway_listener.local_addr().map_err(|source| BindError::Listen { what: "gateway", addr: config.gateway_addr, source })?;

        let tls_failures = Arc::new(HandshakeFailures::default());
        let api_tls = config.tls.cluster.as_ref().map(|t| ServerTls::new(t.api_server.clone(), Listener::Api, tls_failures.clone()));
        let gateway_tls = config.tls.gateway.as_ref().map(|c| ServerTls::new(c.clone(), Listener::Gateway, tls_failures.clone()));
        config.raft.tls = config.tls.cluster.as_ref().map(|t| RaftTls::new(t.raft_server.clone(), t.client.clone(), tls_failures.clone()));
        let (stop, _) = watch::channel(false);
        let applied = AppliedState::new();
        let raft_id = config.raft.id;
        let raft = RaftNode::start(config.raft, applied.clone(), clock.clone(), stop.subscribe())?;
        let raft_addr = raft.raft_addr;
        let store = Store::new(applied, raft.handle.clone(), clock.clone());
        let gateway = Gateway::new(store.clone(), clock.clone(), config.auth.mode, config.local_node.clone(), config.gateway_cache_bytes);
        let telemetry = Telemetry::new(Windows::new(config.metrics.windows.clone()));
        let pinning = match config.images.pin {
            true => ImagePinning::Resolve(Resolver::new(config.images.insecure_registries.clone(), config.images.credentials.clone())),
            false => ImagePinning::Off,
        };
        let api = Api::new(store.clone(), gateway.clone(), telemetry.clone(), config.controller.decide.clone(), config.auth.mode, pinning, tls_failures.clone());
        let bus: Arc<dyn MetricsBus> = config.bus.clone().unwrap_or_else(|| Arc::new(InProcessBus::new()));

        let mut tasks = JoinSet::new();
        let (admin_ready_tx, admin_ready) = watch::channel(true);
        if let (AuthMode::Required, Some(file)) = (config.auth.mode, config.auth.admin_token_file.clone()) {
            admin_ready_tx.send_replace(false);
            let store = store.clone();
            let stop = stopped(stop.subscribe());
            tasks.spawn(async move {
                tokio::select! {
                    () = auth::bootstrap::admin_token(store, file) => { admin_ready_tx.send_replace(true); }
                    () = stop => {}
                }
            });
        }
        tasks.spawn(http::serve_tls("api", api_listener, api_tls, move |req| api.clone().handle(req), stopped(stop.subscribe())));
        tasks.spawn(gateway.clone().follow_store(stopped(stop.subscribe())));
        tasks.spawn(controller::run(store.clone(), telemetry.clone(), config.controller, stopped(stop.subscribe())));
        let group = format!("sluice-coordinator-{raft_id}");
        tasks.spawn(ingest::run(bus.clone(), group, telemetry.clone(), clock.clone(), stopped(stop.subscribe())));
        let invocations = Invocations::new(bus.clone(), coordinator_node_id(raft_id).to_string(), clock.clone(), InvocationConfig::default());
        let _ = gateway.invocations.set(invocations.clone());
        tasks.spawn(invocations.clone().follow_states(format!("sluice-coordinator-{raft_id}-invocation-states"), stopped(stop.subscribe())));
        tasks.spawn(invocations.work(gateway.clone(), stopped(stop.subscribe())));
        let publisher = Publisher::new(coordinator_node_id(raft_id), clock.clone(), PublisherConfig::default());
        let every = config.metrics.publish_every.0.max(Duration::from_millis(100));
        tasks.spawn(publish_gateway(gateway.clone(), publisher, bus, telemetry, every, stopped(stop.subscribe())));
        let mut workers = Vec::with_capacity(threads);
        let mut gateway_threads = Vec::with_capacity(threads);
        for i in 0..threads {
            let (tx, rx) = mpsc::unbounded_channel();
            workers.push(tx);
            let thread = serve_gateway_thread(i, rx, gateway.clone(), gateway_tls.clone(), stop.subscribe()).map_err(|source| BindError::Listen {
                what: "gateway",
                addr: gateway_addr,
                source,
            })?;
            gateway_threads.push(thread);
        }
        let (cluster_tls, gateway_tls) = (config.tls.cluster.is_some(), config.tls.gateway.is_some());
        info!(api = %api_addr, gateway = %gateway_addr, raft = %raft_addr, gateway_threads = threads, cluster_tls, gateway_tls, "coordinator listening");
        tasks.spawn(deal_connections(gateway_listener, workers, stopped(stop.subscribe())));
        Ok(Self { store, gateway, api_addr, gateway_addr, raft_addr, tls_failures, stop, raft: Some(raft), tasks, gateway_threads, admin_ready })
    }

    /// Stops accepting, drains open requests and waits for every task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        let threads = std::mem::take(&mut self.gateway_threads);
        let raft = self.raft.take();
        let _ = tokio::task::spawn_blocking(move || {
            threads.into_iter().for_each(|t| drop(t.join()));
            if let Some(raft) = raft {
                raft.join();
            }
        })
        .await;
    }

    /// Runs until `signal` fires, then shuts down.
    /// Runs until `signal`, or until the Raft replica stops on its own (its
    /// storage failed); then shuts down. Returns why it stopped on its own.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Option<String> {
        let raft = self.store.raft().clone();
        let why = tokio::select! {
            _ = signal => None,
            why = raft.stopped() => Some(why),
        };
        self.shutdown().await;
        why
    }
}

/// Least time between two gateway publications: a burst of cold starts sends
/// one message per this, not one per request.
const PUBLISH_AT_MOST_EVERY: Duration = Duration::from_millis(20);

/// Publishes the gateway's per-function figures every `every`, and at once when
/// a request starts to wait, until `shutdown`. Each message is also taken into
/// this coordinator's own windows straight away (its copy from the bus is then
/// a repeat), so a leader sees its own gateway's waiting requests without a
/// round trip through the broker.
async fn publish_gateway(
    gateway: Arc<Gateway>,
    publisher: Arc<Publisher>,
    bus: Arc<dyn MetricsBus>,
    telemetry: Arc<Telemetry>,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let delivery = publisher.deliver_to(bus);
    let mut taker = FiguresTaker::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = gateway.waiting.notified() => {}
            () = &mut shutdown => break,
        }
        let batch = taker.take(&gateway);
        if !batch.functions.is_empty() {
            let now = gateway.now();
            let message = publisher.send(now.millis(), &batch);
            telemetry.take(Topic::Gateway, &message.payload, now);
        }
        tokio::time::sleep(PUBLISH_AT_MOST_EVERY).await;
    }
    for task in delivery {
        task.abort();
    }
}

/// Accepts gateway connections and deals them round-robin to the gateway
/// threads: even spreading, where SO_REUSEPORT's hashing can leave one thread
/// with most of a few dozen keep-alive connections.
async fn deal_connections(listener: TcpListener, workers: Vec<mpsc::UnboundedSender<std::net::TcpStream>>, shutdown: impl Future<Output = ()>) {
    let mut listener = listener;
    tokio::pin!(shutdown);
    for turn in 0.. {
        let stream = tokio::select! {
            next = http::Acceptor::next(&mut listener) => match next { Some(s) => s, None => return },
            _ = &mut shutdown => return,
        };
        match stream.into_std() {
            Ok(std_stream) => {
                let _ = workers[turn % workers.len()].send(std_stream);
            }
            Err(e) => tracing::warn!(error = %e, "cannot hand a connection to a gateway thread"),
        }
    }
}

/// One gateway thread: a single-threaded runtime serving the connections dealt
/// to it with its own upstream pool. Like nginx's workers, a request never
/// changes thread, which on a small machine saves the cross-thread wake-ups
/// that dominate a proxy's cost.
fn serve_gateway_thread(
    index: usize,
    connections: mpsc::UnboundedReceiver<std::net::TcpStream>,
    gateway: Arc<Gateway>,
    tls: Option<ServerTls>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name(format!("gateway-{index}")).spawn(move || {
        runtime.block_on(async move {
            let worker = gateway::Worker::new(gateway);
            tokio::spawn(anchor_timers());
            http::serve_with_peers("gateway", connections, tls, move |req, peer| worker.clone().handle(peer.ip, req), stopped(stop)).await;
        })
    })
}

/// Keeps a timer pending about a second ahead on a gateway thread, for ever.
/// Every proxied request arms a timeout. When the thread parked with no timer
/// pending, tokio's time driver answers the next timer armed by writing to the
/// thread's eventfd (so that the park re-reads its deadline): a system call and
/// a wasted wake-up, for about one request in six under B3. With this timer
/// pending, the park's deadline is always earlier than a request's, and arming
/// one needs no wake-up.
async fn anchor_timers() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
    }
}

/// Resolves once `stop` turns true (or its sender is gone): the shutdown signal
/// every long-running task of a node takes.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
