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
        let gateway_listener = bind("gateway", config.gateway_addr).await?;
        let api_addr = api_listener.local_addr().map_err(|source| BindError { what: "API", addr: config.api_addr, source })?;
        let gateway_addr = gateway_listener.local_addr().map_err(|source| BindError { what: "gateway", addr: config.gateway_addr, source })?;

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
        let g = gateway.clone();
        tasks.spawn(http::serve("gateway", gateway_listener, move |req| g.clone().handle(req), stopped(stop.subscribe())));
        tasks.spawn(gateway::follow_store(gateway.clone(), store.clone(), stopped(stop.subscribe())));
        tasks.spawn(controller::run(store.clone(), gateway.clone(), demand, config.controller, stopped(stop.subscribe())));
        Ok(Self { store, gateway, api_addr, gateway_addr, stop, tasks })
    }

    /// Stops accepting, drains open requests and waits for every task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Runs until `signal` fires, then shuts down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}
