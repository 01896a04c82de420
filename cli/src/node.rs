//! Running Sluice processes: `up` (everything on one host), `coordinator`, `agent`.
//!
//! The agent always reaches its coordinator through the HTTP API, even inside
//! `sluice up`: one code path, exercised by every single-node run.

use anyhow::{Context, Result};
use clap::Args;
use sluice_agent::agent::{Agent, AgentConfig};
use sluice_agent::control::{HttpControlConfig, HttpControlPlane};
use sluice_agent::runtime::{DockerConfig, DockerRuntime};
use sluice_common::{Clock, NodeId, Resources, SystemClock};
use sluice_coordinator::controller::ControllerConfig;
use sluice_coordinator::node::{stopped, Coordinator, CoordinatorConfig};
use hyper::body::Incoming;
use hyper::{Method, Request};
use sluice_coordinator::http::{self, ApiError};
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;

#[derive(Args, Debug, Clone)]
pub struct CoordinatorArgs {
    /// Address of the JSON API.
    #[arg(long = "api", default_value = "127.0.0.1:7070")]
    pub api_addr: SocketAddr,
    /// Address of the gateway that serves /function/<name>.
    #[arg(long = "gateway", default_value = "127.0.0.1:8080")]
    pub gateway_addr: SocketAddr,
    /// Seconds between decision ticks (demand wakes decisions sooner).
    #[arg(long, default_value_t = 1.0)]
    pub tick_secs: f64,
    /// Threads serving the gateway (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub gateway_threads: usize,
}

#[derive(Args, Debug, Clone)]
pub struct HostArgs {
    /// This host's node name in the cluster.
    #[arg(long, default_value = "local")]
    pub node: String,
    /// Address that function containers' ports are published on; the gateway must reach it.
    #[arg(long, default_value = "127.0.0.1")]
    pub publish_host: String,
    /// CPU offered to functions, in thousandths of a core (default: cores x 1000 x overcommit).
    #[arg(long)]
    pub cpu_millis: Option<u64>,
    /// How many times the cores CPU limits may add up to; limits are ceilings, not reservations.
    #[arg(long, default_value_t = 4.0)]
    pub cpu_overcommit: f64,
    /// Memory offered to functions in MiB (default: 90% of the host's).
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// Where the agent serves its Prometheus `/metrics`.
    #[arg(long = "agent-metrics", default_value = "127.0.0.1:9101")]
    pub metrics_addr: SocketAddr,
}

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Coordinator API URLs, comma separated; the agent follows the one that answers.
    #[arg(long, env = "SLUICE_COORDINATORS", default_value = "http://127.0.0.1:7070", value_delimiter = ',')]
    pub coordinator: Vec<String>,
    #[command(flatten)]
    pub host: HostArgs,
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutdown requested");
}

impl CoordinatorArgs {
    pub fn config(&self) -> Result<CoordinatorConfig> {
        anyhow::ensure!(self.tick_secs > 0.0 && self.tick_secs <= 60.0, "--tick-secs {}: use a value above 0 and at most 60", self.tick_secs);
        Ok(CoordinatorConfig {
            api_addr: self.api_addr,
            gateway_addr: self.gateway_addr,
            gateway_threads: self.gateway_threads,
            controller: ControllerConfig { tick: Duration::from_secs_f64(self.tick_secs), ..ControllerConfig::default() },
        })
    }
}

impl HostArgs {
    pub fn node_id(&self) -> Result<NodeId> {
        NodeId::new(self.node.clone()).map_err(|e| anyhow::anyhow!("--node: {}", e.message))
    }

    /// What this host offers to function instances.
    pub fn capacity(&self) -> Resources {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Resources {
            cpu_millis: self.cpu_millis.unwrap_or((cores * 1000.0 * self.cpu_overcommit.max(1.0)) as u64),
            memory_mb: self.memory_mb.unwrap_or_else(|| host_memory_mb() * 9 / 10),
        }
    }
}

/// Total memory from /proc/meminfo; 1 GiB if it cannot be read.
fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or(1024, |kb| kb / 1024)
}

/// Starts an agent for `host` that talks to `coordinators`.
pub async fn start_agent(host: &HostArgs, coordinators: Vec<String>, clock: Arc<dyn Clock>) -> Result<Agent> {
    let runtime = DockerRuntime::connect(DockerConfig { publish_host: host.publish_host.clone(), ..DockerConfig::default() })
        .await
        .context("connecting to Docker")?;
    let control = HttpControlPlane::new(coordinators, HttpControlConfig::default()).context("coordinator addresses")?;
    Ok(Agent::new(host.node_id()?, host.capacity(), Arc::new(runtime), Arc::new(control), clock, AgentConfig::default()))
}

/// A single-node Sluice in this process: coordinator, gateway and agent.
pub struct Node {
    pub coordinator: Coordinator,
    host: HostArgs,
    clock: Arc<dyn Clock>,
    agent: AgentHandle,
}

impl Node {
    pub async fn start(args: UpArgs) -> Result<Node> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let coordinator = Coordinator::start(args.coordinator.config()?, clock.clone()).await?;
        let agent = spawn_agent(&args.host, &coordinator, clock.clone()).await?;
        info!(api = %format!("http://{}", coordinator.api_addr), gateway = %format!("http://{}", coordinator.gateway_addr), "sluice is up");
        Ok(Node { coordinator, host: args.host, clock, agent })
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.coordinator.api_addr)
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.coordinator.gateway_addr)
    }

    pub fn agent_metrics_url(&self) -> String {
        format!("http://{}/metrics", self.agent.metrics_addr)
    }

    /// Stops the agent and starts a fresh one, as after a crash of the agent
    /// alone: its containers keep running and must be adopted.
    pub async fn restart_agent(&mut self) -> Result<()> {
        let _ = self.agent.stop.send(true);
        (&mut self.agent.task).await.context("agent task")?;
        self.agent = spawn_agent(&self.host, &self.coordinator, self.clock.clone()).await?;
        Ok(())
    }

    pub async fn shutdown(self) {
        let _ = self.agent.stop.send(true);
        let _ = self.agent.task.await;
        self.coordinator.shutdown().await;
    }
}

/// A running in-process agent and how to stop it.
struct AgentHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    metrics_addr: SocketAddr,
}

async fn spawn_agent(host: &HostArgs, coordinator: &Coordinator, clock: Arc<dyn Clock>) -> Result<AgentHandle> {
    let (stop, rx) = watch::channel(false);
    let (metrics_addr, agent) = run_agent(host, vec![format!("http://{}", coordinator.api_addr)], clock, rx).await?;
    Ok(AgentHandle { stop, task: tokio::spawn(agent), metrics_addr })
}

/// Starts an agent for `host` and its `/metrics` server; returns the metrics
/// address and a future that runs both until `stop` turns true.
pub async fn run_agent(host: &HostArgs, coordinators: Vec<String>, clock: Arc<dyn Clock>, stop: watch::Receiver<bool>) -> Result<(SocketAddr, impl Future<Output = ()>)> {
    let agent = start_agent(host, coordinators, clock).await?;
    let listener = TcpListener::bind(host.metrics_addr)
        .await
        .with_context(|| format!("--agent-metrics {}: cannot listen there; pick a free address", host.metrics_addr))?;
    let metrics_addr = listener.local_addr()?;
    info!(addr = %metrics_addr, "agent metrics at /metrics");
    let metrics = agent.metrics();
    let server = http::serve(
        "agent-metrics",
        listener,
        move |req: Request<Incoming>| {
            let metrics = metrics.clone();
            async move {
                match (req.method(), req.uri().path()) {
                    (&Method::GET, "/metrics") => http::text(metrics.render()),
                    _ => ApiError::not_found("the agent serves only GET /metrics").into_response(),
                }
            }
        },
        stopped(stop.clone()),
    );
    Ok((metrics_addr, async move {
        tokio::join!(agent.run(stopped(stop)), server);
    }))
}

pub async fn up(args: UpArgs) -> Result<ExitCode> {
    let node = Node::start(args).await?;
    signal().await;
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn coordinator(args: CoordinatorArgs) -> Result<ExitCode> {
    let coordinator = Coordinator::start(args.config()?, Arc::new(SystemClock)).await?;
    coordinator.run_until(signal()).await;
    Ok(ExitCode::SUCCESS)
}

pub async fn agent(args: AgentArgs) -> Result<ExitCode> {
    let (stop, rx) = watch::channel(false);
    let (_, agent) = run_agent(&args.host, args.coordinator, Arc::new(SystemClock), rx).await?;
    tokio::spawn(async move {
        signal().await;
        let _ = stop.send(true);
    });
    agent.await;
    Ok(ExitCode::SUCCESS)
}
