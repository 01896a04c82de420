//! A running coordinator: the store, the controller, the API server and the
//! gateway server, wired together and stopped together.

use crate::api::Api;
use crate::controller::{self, ControllerConfig};
use crate::gateway::{self, Gateway};
use crate::http;
use crate::store::Store;
use sluice_common::Clock;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where the JSON API listens (port 0 picks one).
    pub api_addr: SocketAddr,
    /// Where the gateway listens (port 0 picks one).
    pub gateway_addr: SocketAddr,
    /// Threads serving the gateway, each with its own listener (SO_REUSEPORT),
    /// runtime and connection pool; 0 means one per core.
    pub gateway_threads: usize,
    pub controller: ControllerConfig,
}

/// A started coordinator. Dropping it does not stop it: call `shutdown`.
pub struct Coordinator {
    pub store: Arc<Store>,
    pub gateway: Arc<Gateway>,
    pub api_addr: SocketAddr,
    pub gateway_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    gateway_threads: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the {what}: {source}; pick a free address or stop what uses it")]
pub struct BindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

impl Coordinator {
    /// Binds both servers and starts every task.
    pub async fn start(config: CoordinatorConfig, clock: Arc<dyn Clock>) -> Result<Self, BindError> {
        let bind = |what, addr| async move { TcpListener::bind(addr).await.map_err(|source| BindError { what, addr, source }) };
        let api_listener = bind("API", config.api_addr).await?;
        let api_addr = api_listener.local_addr().map_err(|source| BindError { what: "API", addr: config.api_addr, source })?;
        let threads = match config.gateway_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let gateway_listeners = bind_shared(config.gateway_addr, threads).map_err(|source| BindError { what: "gateway", addr: config.gateway_addr, source })?;
        let gateway_addr = gateway_listeners[0].local_addr().map_err(|source| BindError { what: "gateway", addr: config.gateway_addr, source })?;

        let store = Store::new(clock.clone());
        let demand = Arc::new(Notify::new());
        let gateway = Gateway::new(clock, demand.clone());
        let api = Api::new(store.clone(), gateway.clone());
        let (stop, _) = watch::channel(false);
        let stopped = |rx: watch::Receiver<bool>| async move {
            let mut rx = rx;
            let _ = rx.wait_for(|s| *s).await;
        };

        let mut tasks = JoinSet::new();
        tasks.spawn(http::serve("api", api_listener, move |req| api.clone().handle(req), stopped(stop.subscribe())));
        tasks.spawn(gateway::follow_store(gateway.clone(), store.clone(), stopped(stop.subscribe())));
        tasks.spawn(controller::run(store.clone(), gateway.clone(), demand, config.controller, stopped(stop.subscribe())));
        let gateway_threads = gateway_listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| serve_gateway_thread(i, listener, gateway.clone(), stop.subscribe()))
            .collect::<Result<_, _>>()
            .map_err(|source| BindError { what: "gateway", addr: gateway_addr, source })?;
        Ok(Self { store, gateway, api_addr, gateway_addr, stop, tasks, gateway_threads })
    }

    /// Stops accepting, drains open requests and waits for every task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        let threads = std::mem::take(&mut self.gateway_threads);
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    }

    /// Runs until `signal` fires, then shuts down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// Binds `count` listeners to one address with SO_REUSEPORT, so the kernel
/// spreads connections over them; with port 0 they share the first one's port.
fn bind_shared(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let at = listeners.first().map_or(Ok(addr), |l| l.local_addr())?;
        let socket = if at.is_ipv4() { socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)? } else { socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)? };
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        socket.listen(1024)?;
        listeners.push(socket.into());
    }
    Ok(listeners)
}

/// One gateway thread: a single-threaded runtime serving its own listener with
/// its own upstream pool. Like nginx's workers, a request never changes thread,
/// which on a small machine saves the cross-thread wake-ups that dominate a proxy.
fn serve_gateway_thread(index: usize, listener: std::net::TcpListener, gateway: Arc<Gateway>, stop: watch::Receiver<bool>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name(format!("gateway-{index}")).spawn(move || {
        runtime.block_on(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::error!(error = %e, "gateway listener unusable"),
            };
            let client = gateway::client();
            let mut stop = stop;
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            http::serve("gateway", listener, move |req| gateway.clone().handle(client.clone(), req), stopped).await;
        })
    })
}
