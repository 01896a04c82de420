//! Running Sluice processes: `up` (everything on one host), `coordinator`, `agent`.
//!
//! The agent always reaches its coordinator through the HTTP API, even inside
//! `sluice up`: one code path, exercised by every single-node run.

use crate::service::Supervisor;
use anyhow::{Context, Result};
use clap::{Args, FromArgMatches};
use hyper::body::Incoming;
use hyper::{Method, Request};
use rustls::ClientConfig;
use sluice_agent::agent::{Agent, AgentConfig, AgentMetrics, Placement};
use sluice_agent::control::{HttpControlConfig, HttpControlPlane};
use sluice_agent::logs::{logs_path, LogServer};
use sluice_agent::runtime::{DockerConfig, DockerRuntime};
use sluice_bus::{BusUrl, InProcessBus, MetricsBus, OutboxLimits};
use sluice_bus::{Publisher, PublisherConfig};
use sluice_common::labels::Labels;
use sluice_common::predict::PolicyKind;
use sluice_common::registry_auth::RegistryCredentials;
use sluice_common::tls::TlsFiles;
use sluice_common::{Clock, NodeId, Resources, SystemClock};
use sluice_coordinator::auth::bootstrap::AuthConfig;
use sluice_coordinator::auth::{AuthMode, Role};
use sluice_coordinator::controller::ControllerConfig;
use sluice_coordinator::decide::placer::Weights;
use sluice_coordinator::decide::DecideConfig;
use sluice_coordinator::http::{self, ApiError};
use sluice_coordinator::node::{stopped, ClusterTls, Coordinator, CoordinatorConfig, CoordinatorTls, MetricsConfig};
use sluice_coordinator::predictor::PredictConfig;
use sluice_coordinator::raft::RaftConfig;
use sluice_coordinator::registry::ImagesConfig;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
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
    /// Keep-warm prediction: sluice (the default), hybrid, fixed-<N>m (N bins
    /// of keep-alive) or off (reactive scaling only). See `sluice sim`.
    #[arg(long, default_value = "sluice")]
    pub predict_policy: String,
    /// The prediction's unit of time, in seconds: each function's history is
    /// kept in bins this long (a minute; shorter only for tests and demos).
    #[arg(long, default_value_t = 60)]
    pub predict_bin_secs: u32,
    /// Threads serving the gateway (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub gateway_threads: usize,
    /// MiB the gateway's response cache holds, all functions with a cache together
    /// (least recently used responses go first).
    #[arg(long, default_value_t = 64)]
    pub gateway_cache_mb: u64,
    /// This coordinator's Raft id: unique in its cluster, never reused.
    #[arg(long, default_value_t = 1)]
    pub id: u64,
    /// Where Raft traffic from the other coordinators is received.
    #[arg(long = "raft", default_value = "127.0.0.1:7071")]
    pub raft_addr: SocketAddr,
    /// Address the other coordinators reach --raft at (default: --raft itself).
    #[arg(long)]
    pub advertise_raft: Option<String>,
    /// Founding members as id=host:port,... (the same on each of them); read only
    /// when the data directory never held anything (no log, no cluster.id): a
    /// directory that lost its log is refused. Default: a cluster of this coordinator alone.
    #[arg(long, value_delimiter = ',', conflicts_with = "join")]
    pub initial_cluster: Vec<String>,
    /// Start empty and wait to be added by `sluice cluster join` on a running cluster.
    #[arg(long)]
    pub join: bool,
    /// Where the Raft log and snapshots are kept (default: $XDG_DATA_HOME/sluice or ~/.local/share/sluice).
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Milliseconds between the leader's heartbeats.
    #[arg(long, default_value_t = 150)]
    pub heartbeat_ms: u64,
    /// Minimum milliseconds without a leader before an election (randomised up to twice this).
    #[arg(long, default_value_t = 1000)]
    pub election_ms: u64,
    /// Compact the log into a snapshot every this many entries.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// Most writes committed together per fsync (1 turns batching off; for benchmarks).
    #[arg(long, default_value_t = sluice_coordinator::raft::DEFAULT_MAX_BATCH)]
    pub raft_max_batch: usize,
    /// Metrics bus to read agents' figures from into the resource windows, and to publish the
    /// gateway's figures to (kafka://..., mqtt://..., see docs/wire-format.md). Without it a
    /// coordinator keeps no windows; `sluice up` then uses a bus inside the process.
    #[arg(long, env = "SLUICE_BUS")]
    pub bus: Option<String>,
    /// Seconds an agent may be silent before its node gets no new instances.
    #[arg(long, default_value_t = 5)]
    pub suspect_after_secs: u64,
    /// Seconds an agent may be silent before its node is down and its instances are replaced elsewhere.
    #[arg(long, default_value_t = 15)]
    pub lost_after_secs: u64,
    /// Placement score weights, name=number,... of fit, image, load, colocation, preference
    /// (default fit=1,image=0.5,load=0.5,colocation=1,preference=2).
    #[arg(long, default_value = "")]
    pub placement_weights: String,
    /// Whether callers need a token: required (the default) or off. Off is
    /// refused on a non-loopback address unless --insecure-expose-without-auth.
    #[arg(long, value_enum, default_value_t = AuthArg::Required)]
    pub auth: AuthArg,
    /// Serve a non-loopback address with --auth off (a trusted, private network only).
    #[arg(long)]
    pub insecure_expose_without_auth: bool,
    /// Where a new cluster's first admin token is written, mode 0600 (default: <data-dir>/admin.token).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Run images as named instead of pinning each deploy to the digest its
    /// registry names (for hosts that load images by other means).
    #[arg(long)]
    pub no_image_pinning: bool,
    /// A registry host:port spoken to over plain HTTP (loopback ones always are); repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
}

/// `--auth`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthArg {
    Required,
    Off,
}

/// Mutual TLS of a coordinator or an agent: all three files, or none for plain TCP.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// This node's certificate (NAME.pem from `sluice certs issue`): shown to peers, and served on the API.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (NAME.key from `sluice certs issue`).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA's certificate (ca.pem from `sluice certs init`): peers' certificates must be signed by it.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    pub fn files(&self) -> Result<Option<TlsFiles>> {
        Ok(TlsFiles::from_flags("--tls", self.tls_cert.as_deref(), self.tls_key.as_deref(), self.tls_ca.as_deref())?)
    }
}

/// What every node process takes besides its own flags: its config file and what it logs.
#[derive(Args, Debug, Clone)]
pub struct ProcessArgs {
    /// Config file to read instead of /etc/sluice/coordinator.toml or agent.toml (`sluice up`: both):
    /// a key per flag, below environment and flags (examples/config/).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to log, written as RUST_LOG is (info, debug, warn,sluice_coordinator=debug, ...); SIGHUP
    /// applies a new value from the config file.
    #[arg(long, env = "RUST_LOG", default_value = "info", value_parser = log_filter)]
    pub log_level: String,
}

/// `--label`: a KEY=VALUE pair a node may carry.
fn label_pair(text: &str) -> Result<String, String> {
    match sluice_common::labels::parse_pair("--label", text) {
        Ok(_) => Ok(text.to_string()),
        Err(e) => Err(e.message),
    }
}

/// `--log-level`: a filter tracing accepts.
fn log_filter(filter: &str) -> Result<String, String> {
    match tracing_subscriber::EnvFilter::try_new(filter) {
        Ok(_) => Ok(filter.to_string()),
        Err(e) => Err(format!("{e}: write it as RUST_LOG is written, e.g. info, or warn,sluice_coordinator=debug")),
    }
}

/// `sluice coordinator`: a coordinator, with TLS if asked for.
#[derive(Args, Debug, Clone)]
pub struct CoordinatorCommand {
    #[command(flatten)]
    pub process: ProcessArgs,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    /// With these, Raft links are mutual TLS, the API is served over TLS and agents must show a certificate from the CA.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The gateway's certificate: with it and --gateway-tls-key, the gateway is served over TLS.
    #[arg(long, requires = "gateway_tls_key")]
    pub gateway_tls_cert: Option<PathBuf>,
    /// The gateway certificate's private key.
    #[arg(long, requires = "gateway_tls_cert")]
    pub gateway_tls_key: Option<PathBuf>,
    /// The node (an agent's --node) that runs on this coordinator's host, in its
    /// network: the gateway reaches that node's instances at their containers' own
    /// addresses, skipping Docker's port publishing, and every other node's at
    /// their published ports. Leave it out when no agent shares the host, or when
    /// the coordinator runs in a container on a network of its own.
    #[arg(long, value_name = "NAME")]
    pub local_node: Option<String>,
    /// A file with registry=, username= and password= lines: sent when asking that registry
    /// for a deployed image's digest (scripts/registry.sh writes one); repeatable, one per registry.
    #[arg(long = "registry-credentials", env = "SLUICE_REGISTRY_CREDENTIALS", value_delimiter = ',')]
    pub registry_credentials: Vec<PathBuf>,
}

impl CoordinatorCommand {
    pub fn tls(&self) -> Result<CoordinatorTls> {
        let cluster = self.tls.files()?.map(|files| ClusterTls::load(&files)).transpose()?;
        let gateway = match (&self.gateway_tls_cert, &self.gateway_tls_key) {
            (Some(cert), Some(key)) => Some(sluice_common::tls::server_config_without_client_certs("--gateway-tls", cert, key)?),
            _ => None,
        };
        Ok(CoordinatorTls { cluster, gateway })
    }
}

#[derive(Args, Debug, Clone)]
pub struct HostArgs {
    /// This host's node name in the cluster.
    #[arg(long, default_value = "local")]
    pub node: String,
    /// Address that function containers' ports are published on; the gateway must reach it.
    #[arg(long, default_value = "127.0.0.1")]
    pub publish_host: String,
    /// Address gateways on other hosts reach this host's published ports at
    /// (default: --publish-host; with --publish-host 0.0.0.0, the address this
    /// host reaches its first coordinator from).
    #[arg(long)]
    pub advertise_host: Option<String>,
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
    /// Seconds between samples of the host's and its containers' CPU, memory, disk and network.
    #[arg(long, default_value_t = 1.0)]
    pub sample_secs: f64,
    /// Most figure messages kept while the metrics bus is unreachable; past it the oldest are dropped (and counted).
    #[arg(long, default_value_t = 20_000)]
    pub bus_buffer_messages: usize,
    /// Most KiB of figure messages kept while the metrics bus is unreachable.
    #[arg(long, default_value_t = 8192)]
    pub bus_buffer_kib: usize,
    /// A label KEY=VALUE of this node, for functions' node selectors and rules (repeatable).
    #[arg(long = "label", value_parser = label_pair)]
    pub labels: Vec<String>,
    /// Most instances this node takes, whatever their size.
    #[arg(long)]
    pub max_instances: Option<u32>,
    /// A file with registry=, username= and password= lines: what pulls from that registry
    /// send (scripts/registry.sh writes one); repeatable, one per registry. Under `sluice up`
    /// the coordinator also uses them to ask for digests.
    #[arg(long = "registry-credentials", env = "SLUICE_REGISTRY_CREDENTIALS", value_delimiter = ',')]
    pub registry_credentials: Vec<PathBuf>,
    /// Image GC: when the disk holding Docker's data is at least this full (percent),
    /// images this agent's instances used and no container has used for --image-gc-unused-secs are removed.
    #[arg(long, default_value_t = 85.0)]
    pub image_gc_disk_percent: f64,
    /// Image GC: seconds an image must have gone unused before it may be removed.
    #[arg(long, default_value_t = 3600)]
    pub image_gc_unused_secs: u64,
}

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    #[command(flatten)]
    pub host: HostArgs,
}

/// `sluice up`: its node's flags, and the process's.
#[derive(Args, Debug, Clone)]
pub struct UpCommand {
    #[command(flatten)]
    pub process: ProcessArgs,
    #[command(flatten)]
    pub up: UpArgs,
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    #[command(flatten)]
    pub process: ProcessArgs,
    /// Coordinator API URLs, comma separated; the agent follows the one that answers.
    #[arg(long, env = "SLUICE_COORDINATORS", default_value = "http://127.0.0.1:7070", value_delimiter = ',')]
    pub coordinator: Vec<String>,
    /// Metrics bus the agent publishes its figures and events to: kafka://host:port[,host:port][?prefix=..],
    /// mqtt://[user:pass@]host:port[?client_id=..&prefix=..] or mqtts://... (docs/wire-format.md).
    /// Without it the figures are only on the agent's /metrics.
    #[arg(long, env = "SLUICE_BUS")]
    pub bus: Option<String>,
    /// File holding a token with the agent role (`sluice tokens create NAME --role agent`).
    #[arg(long, env = "SLUICE_AGENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostArgs,
    /// With these, the agent reaches https:// coordinators over mutual TLS: it checks them against the CA and shows its certificate.
    #[command(flatten)]
    pub tls: TlsArgs,
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
    /// A single coordinator on ports the OS picks, with its log in `data_dir`:
    /// for tests and benchmarks that run several Sluices side by side.
    pub fn ephemeral(data_dir: PathBuf) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            api_addr: any,
            gateway_addr: any,
            tick_secs: 0.25,
            // Tests and benchmarks of reactive behaviour want it alone; those of
            // prediction turn it on.
            predict_policy: "off".into(),
            predict_bin_secs: 60,
            gateway_threads: 2,
            gateway_cache_mb: 64,
            id: 1,
            raft_addr: any,
            advertise_raft: None,
            initial_cluster: Vec::new(),
            join: false,
            data_dir: Some(data_dir),
            heartbeat_ms: 150,
            election_ms: 1000,
            snapshot_every: 10_000,
            raft_max_batch: sluice_coordinator::raft::DEFAULT_MAX_BATCH,
            bus: None,
            suspect_after_secs: 5,
            lost_after_secs: 15,
            placement_weights: String::new(),
            // Tests of everything else call without tokens; the auth tests turn it on.
            auth: AuthArg::Off,
            insecure_expose_without_auth: false,
            admin_token_file: None,
            no_image_pinning: false,
            insecure_registries: Vec::new(),
        }
    }

    /// The data directory: --data-dir, else the user's default.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(crate::credentials::default_data_dir)
    }

    pub fn config(&self) -> Result<CoordinatorConfig> {
        for r in &self.insecure_registries {
            sluice_coordinator::registry::validate_entry(r).map_err(|why| anyhow::anyhow!("--insecure-registry: {why}"))?;
        }
        anyhow::ensure!(self.tick_secs > 0.0 && self.tick_secs <= 60.0, "--tick-secs {}: use a value above 0 and at most 60", self.tick_secs);
        anyhow::ensure!(self.id > 0, "--id 0: use a whole number from 1 up");
        anyhow::ensure!((1..=1 << 20).contains(&self.gateway_cache_mb), "--gateway-cache-mb {}: use 1 to 1048576 (MiB)", self.gateway_cache_mb);
        let initial = if self.join {
            Some(BTreeMap::new())
        } else if self.initial_cluster.is_empty() {
            None
        } else {
            Some(parse_initial_cluster(&self.initial_cluster)?)
        };
        Ok(CoordinatorConfig {
            api_addr: self.api_addr,
            gateway_addr: self.gateway_addr,
            gateway_threads: self.gateway_threads,
            gateway_cache_bytes: self.gateway_cache_mb << 20,
            controller: self.controller()?,
            raft: RaftConfig {
                id: self.id,
                listen: self.raft_addr,
                advertise: self.advertise_raft.clone(),
                initial,
                data_dir: self.data_dir(),
                heartbeat: Duration::from_millis(self.heartbeat_ms),
                election: Duration::from_millis(self.election_ms),
                snapshot_every: self.snapshot_every,
                request_timeout: Duration::from_secs(5),
                max_batch: self.raft_max_batch,
                tls: None,
            },
            bus: None,
            metrics: MetricsConfig::default(),
            auth: AuthConfig {
                mode: match self.auth {
                    AuthArg::Required => AuthMode::Required,
                    AuthArg::Off => AuthMode::Off,
                },
                admin_token_file: Some(self.admin_token_file.clone().unwrap_or_else(|| self.data_dir().join(crate::credentials::ADMIN_TOKEN_FILE))),
                expose_without_auth: self.insecure_expose_without_auth,
            },
            images: ImagesConfig { pin: !self.no_image_pinning, insecure_registries: self.insecure_registries.clone(), credentials: Vec::new() },
            tls: CoordinatorTls::default(),
            local_node: None,
        })
    }
}

impl CoordinatorArgs {
    fn controller(&self) -> Result<ControllerConfig> {
        anyhow::ensure!(
            (1..=3600).contains(&self.suspect_after_secs) && self.suspect_after_secs < self.lost_after_secs && self.lost_after_secs <= 3600,
            "--suspect-after-secs {} and --lost-after-secs {}: use 1 to 3600 s, suspect before lost",
            self.suspect_after_secs,
            self.lost_after_secs
        );
        let weights = Weights::parse(&self.placement_weights).map_err(|e| anyhow::anyhow!("--placement-weights: {e}"))?;
        let decide =
            DecideConfig { suspect_after: Duration::from_secs(self.suspect_after_secs), lost_after: Duration::from_secs(self.lost_after_secs), weights, ..DecideConfig::default() };
        anyhow::ensure!((1..=3600).contains(&self.predict_bin_secs), "--predict-bin-secs {}: use 1 to 3600 s", self.predict_bin_secs);
        let predict = match self.predict_policy.as_str() {
            "off" => None,
            name => Some(PredictConfig {
                policy: PolicyKind::parse(name).map_err(|e| anyhow::anyhow!("--predict-policy: {e}, or off"))?,
                bin: Duration::from_secs(self.predict_bin_secs.into()),
            }),
        };
        Ok(ControllerConfig { tick: Duration::from_secs_f64(self.tick_secs), decide, predict })
    }

    /// How many coordinators the cluster is founded with (1 when joining: unknown).
    pub fn founders(&self) -> usize {
        self.initial_cluster.len().max(1)
    }
}

/// `1=10.0.0.1:7071,2=10.0.0.2:7071` as a map.
fn parse_initial_cluster(items: &[String]) -> Result<BTreeMap<u64, String>> {
    let mut members = BTreeMap::new();
    for item in items {
        let (id, addr) = item.split_once('=').with_context(|| format!("--initial-cluster item {item:?}: write it as id=host:port, e.g. 1=10.0.0.1:7071"))?;
        let id: u64 = id.trim().parse().ok().filter(|n| *n > 0).with_context(|| format!("--initial-cluster item {item:?}: the id must be a whole number from 1 up"))?;
        anyhow::ensure!(addr.contains(':'), "--initial-cluster item {item:?}: the address needs a port, e.g. {id}=10.0.0.1:7071");
        anyhow::ensure!(members.insert(id, addr.trim().to_string()).is_none(), "--initial-cluster names id {id} twice");
    }
    Ok(members)
}

impl HostArgs {
    pub fn node_id(&self) -> Result<NodeId> {
        NodeId::new(self.node.clone()).map_err(|e| anyhow::anyhow!("--node: {}", e.message))
    }

    /// The `--registry-credentials` files, read and checked.
    pub fn registry_credentials(&self) -> Result<Vec<RegistryCredentials>> {
        RegistryCredentials::read_all(&self.registry_credentials).map_err(|e| anyhow::anyhow!("--registry-credentials: {e}"))
    }

    /// The image GC's policy from `--image-gc-*`.
    pub fn image_gc(&self) -> Result<sluice_agent::image_gc::Policy> {
        anyhow::ensure!(
            (0.0..=100.0).contains(&self.image_gc_disk_percent),
            "--image-gc-disk-percent {}: use 0 to 100 (0 collects whatever the disk holds, 100 never)",
            self.image_gc_disk_percent
        );
        anyhow::ensure!(self.image_gc_unused_secs >= 1, "--image-gc-unused-secs 0: use at least 1 (an image just pulled is about to be used)");
        Ok(sluice_agent::image_gc::Policy { disk_percent: self.image_gc_disk_percent, min_unused: Duration::from_secs(self.image_gc_unused_secs) })
    }

    /// The node's `--label`s.
    pub fn labels(&self) -> Result<Labels> {
        let mut labels = Labels::new();
        for kv in &self.labels {
            let (k, v) = sluice_common::labels::parse_pair("--label", kv).map_err(|e| anyhow::anyhow!("{}", e.message))?;
            labels.insert(k, v);
        }
        anyhow::ensure!(labels.len() <= sluice_common::labels::MAX_LABELS, "--label: at most {} labels", sluice_common::labels::MAX_LABELS);
        Ok(labels)
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

/// Starts an agent for `host` that talks to `coordinators`, with `token` (agent role) and over mutual TLS with `tls`.
pub async fn start_agent(host: &HostArgs, coordinators: Vec<String>, token: Option<String>, tls: Option<Arc<ClientConfig>>, clock: Arc<dyn Clock>) -> Result<Agent> {
    let advertise_host = Some(advertised_host(host, &coordinators)?);
    let registry_credentials = host.registry_credentials()?;
    let runtime = DockerRuntime::connect(DockerConfig { publish_host: host.publish_host.clone(), advertise_host, registry_credentials, ..DockerConfig::default() })
        .await
        .context("connecting to Docker")?;
    let control = HttpControlPlane::new(coordinators, HttpControlConfig { token, tls, ..HttpControlConfig::default() }).context("coordinator addresses")?;
    anyhow::ensure!(host.sample_secs >= 0.1 && host.sample_secs <= 3600.0, "--sample-secs {}: use a value from 0.1 to 3600", host.sample_secs);
    let gc = host.image_gc()?;
    let config = AgentConfig { host_sample_interval: Duration::from_secs_f64(host.sample_secs), ..AgentConfig::default() };
    let runtime = Arc::new(runtime);
    let agent = Agent::new(host.node_id()?, host.capacity(), runtime.clone(), Arc::new(control), clock, config).with_placement(host.labels()?, host.max_instances);
    // It holds the runtime weakly: it ends when the agent and its log server drop theirs.
    tokio::spawn(sluice_agent::image_gc::run(Arc::downgrade(&runtime), gc, agent.metrics()));
    Ok(agent)
}

/// Where gateways reach this host's published ports: `--advertise-host`, or
/// the address ports are published on, or, when they are published on every
/// address, the one this host reaches its first coordinator from (the route a
/// gateway on that coordinator's host takes back). Loopback is only right for
/// gateways on this host, and `0.0.0.0` for none.
fn advertised_host(host: &HostArgs, coordinators: &[String]) -> Result<String> {
    if let Some(advertised) = &host.advertise_host {
        anyhow::ensure!(
            !is_wildcard(advertised) && !advertised.contains(['/', ' ']),
            "--advertise-host {advertised:?}: give an address or host name other hosts reach this one at, e.g. 10.0.0.5"
        );
        return Ok(advertised.clone());
    }
    if !is_wildcard(&host.publish_host) {
        return Ok(host.publish_host.clone());
    }
    let first = coordinators.first().context("no coordinator address to find this host's address from: give --advertise-host")?;
    let uri: hyper::Uri = first.parse().with_context(|| format!("coordinator address {first:?}"))?;
    let target = (uri.host().unwrap_or_default().trim_matches(['[', ']']), uri.port_u16().unwrap_or(80));
    let source = std::net::UdpSocket::bind(("0.0.0.0", 0))
        .and_then(|socket| {
            // Connecting a UDP socket sends nothing: it only picks the route, and with it our address.
            socket.connect(target)?;
            socket.local_addr()
        })
        .with_context(|| format!("finding the address this host reaches {first} from (--publish-host {}): give --advertise-host", host.publish_host))?;
    info!(address = %source.ip(), coordinator = %first, "advertising published ports at the address this host reaches its coordinator from (--advertise-host to choose)");
    Ok(source.ip().to_string())
}

/// An address that means every address of the host.
fn is_wildcard(host: &str) -> bool {
    matches!(host.trim_matches(['[', ']']), "" | "0.0.0.0" | "::")
}

/// A single-node Sluice in this process: coordinator, gateway and agent.
pub struct Node {
    pub coordinator: Coordinator,
    host: HostArgs,
    clock: Arc<dyn Clock>,
    /// The metrics bus the agent publishes to and the coordinator reads.
    bus: Arc<dyn MetricsBus>,
    agent: AgentHandle,
    /// The token the agents in this process speak with (none with --auth off).
    agent_token: Option<String>,
}

impl Node {
    pub async fn start(args: UpArgs) -> Result<Node> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let bus: Arc<dyn MetricsBus> = match &args.coordinator.bus {
            Some(url) => connect_bus(url, &args.host.node).await?,
            None => Arc::new(InProcessBus::new()),
        };
        let mut config = args.coordinator.config()?;
        config.bus = Some(bus.clone());
        // One host, one set of registry credentials: the coordinator asks for digests with the agent's.
        config.images.credentials = args.host.registry_credentials()?;
        // Its own agent's containers are on this host: the gateway goes to them directly.
        config.local_node = Some(args.host.node_id()?);
        let auth = config.auth.clone();
        let coordinator = Coordinator::start(config, clock.clone()).await?;
        let agent_token = match auth.mode {
            AuthMode::Off => None,
            AuthMode::Required => {
                let file = args.coordinator.data_dir().join(crate::credentials::AGENT_TOKEN_FILE);
                let name = format!("agent-{}", args.host.node);
                let token = tokio::time::timeout(START_TIMEOUT, ensure_agent_token(&coordinator, &file, &name)).await;
                let token = token.map_err(|_| anyhow::anyhow!("the cluster could not commit the agent's token within {START_TIMEOUT:?}: is the data directory right?"))?;
                coordinator.admin_token_ready(START_TIMEOUT).await.map_err(anyhow::Error::msg)?;
                Some(token)
            }
        };
        let agent = spawn_agent(&args.host, &coordinator, agent_token.clone(), clock.clone(), bus.clone()).await?;
        info!(api = %format!("http://{}", coordinator.api_addr), gateway = %format!("http://{}", coordinator.gateway_addr), bus = bus.name(), "sluice is up");
        Ok(Node { coordinator, host: args.host, clock, bus, agent, agent_token })
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.coordinator.api_addr)
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.coordinator.gateway_addr)
    }

    /// Starts one more agent in this process, for another node, on the same
    /// metrics bus; it reaches the coordinator at `coordinators` (the API, or
    /// something in front of it).
    pub async fn add_agent(&self, host: &HostArgs, coordinators: Vec<String>) -> Result<AgentHandle> {
        let (stop, rx) = watch::channel(false);
        let (metrics_addr, agent) = run_agent(host, coordinators, self.agent_token.clone(), None, self.clock.clone(), Some(self.bus.clone()), rx).await?;
        Ok(AgentHandle { stop, task: tokio::spawn(agent), metrics_addr })
    }

    pub fn agent_metrics_url(&self) -> String {
        format!("http://{}/metrics", self.agent.metrics_addr)
    }

    /// Stops the agent and starts a fresh one, as after a crash of the agent
    /// alone: its containers keep running and must be adopted.
    pub async fn restart_agent(&mut self) -> Result<()> {
        let _ = self.agent.stop.send(true);
        (&mut self.agent.task).await.context("agent task")?;
        self.agent = spawn_agent(&self.host, &self.coordinator, self.agent_token.clone(), self.clock.clone(), self.bus.clone()).await?;
        Ok(())
    }

    pub async fn shutdown(self) {
        let _ = self.agent.stop.send(true);
        let _ = self.agent.task.await;
        self.coordinator.shutdown().await;
    }
}

/// A running in-process agent and how to stop it.
pub struct AgentHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    pub metrics_addr: SocketAddr,
}

impl AgentHandle {
    /// Stops the agent; its containers keep running.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// How long `sluice up` waits for its single-node cluster to commit its first entries.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent token of `sluice up`, kept in its data directory across restarts.
async fn ensure_agent_token(coordinator: &Coordinator, file: &std::path::Path, name: &str) -> String {
    loop {
        match sluice_coordinator::auth::bootstrap::ensure_token_file(&coordinator.store, file, name, [Role::Agent].into()).await {
            Ok(token) => return token,
            Err(e) => {
                tracing::debug!(error = %e, "agent token not settled yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn spawn_agent(host: &HostArgs, coordinator: &Coordinator, token: Option<String>, clock: Arc<dyn Clock>, bus: Arc<dyn MetricsBus>) -> Result<AgentHandle> {
    let (stop, rx) = watch::channel(false);
    let bus = Some(bus);
    let (metrics_addr, agent) = run_agent(host, vec![format!("http://{}", coordinator.api_addr)], token, None, clock, bus, rx).await?;
    Ok(AgentHandle { stop, task: tokio::spawn(agent), metrics_addr })
}

/// Starts an agent for `host` and its `/metrics` server; returns the metrics
/// address and a future that runs both until `stop` turns true.
/// With `bus`, the agent's figures and events are published there; with `tls`,
/// it reaches the coordinators over mutual TLS.
pub async fn run_agent(
    host: &HostArgs,
    coordinators: Vec<String>,
    token: Option<String>,
    tls: Option<Arc<ClientConfig>>,
    clock: Arc<dyn Clock>,
    bus: Option<Arc<dyn MetricsBus>>,
    stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, impl Future<Output = ()>)> {
    // The coordinator calls this agent's plain-HTTP listener for logs with the
    // agent's token; with TLS that token must not cross the network in clear.
    let logs_token = if tls.is_some() { None } else { token.clone() };
    let agent = start_agent(host, coordinators, token, tls, clock.clone()).await?;
    let (addr, _, run) = serve_agent(agent, host, logs_token, clock, bus, stop).await?;
    Ok((addr, run))
}

/// Runs a started `agent` as `run_agent` does: its publishing to `bus` and its
/// `/metrics` server, which also serves its instances' logs to holders of
/// `logs_token`; also returns the agent's figures (what `sluice agent` tells
/// systemd).
async fn serve_agent(
    mut agent: Agent,
    host: &HostArgs,
    logs_token: Option<String>,
    clock: Arc<dyn Clock>,
    bus: Option<Arc<dyn MetricsBus>>,
    stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, Arc<AgentMetrics>, impl Future<Output = ()>)> {
    let mut delivery = Vec::new();
    if let Some(bus) = bus {
        anyhow::ensure!(host.bus_buffer_messages >= 1 && host.bus_buffer_kib >= 1, "--bus-buffer-messages and --bus-buffer-kib: use at least 1");
        let samples = OutboxLimits { max_messages: host.bus_buffer_messages, max_bytes: host.bus_buffer_kib.saturating_mul(1024) };
        let config = PublisherConfig { samples, ..PublisherConfig::default() };
        let publisher = Publisher::new(host.node_id()?, clock, config);
        delivery = publisher.deliver_to(bus.clone());
        info!(bus = bus.name(), "agent publishes its figures and events on the metrics bus");
        agent = agent.with_publisher(publisher);
    }
    let listener = TcpListener::bind(host.metrics_addr).await.with_context(|| format!("--agent-metrics {}: cannot listen there; pick a free address", host.metrics_addr))?;
    let metrics_addr = listener.local_addr()?;
    info!(addr = %metrics_addr, "agent metrics at /metrics, logs at /v1/instances/ID/logs");
    agent = agent.with_agent_addr(metrics_addr);
    let figures = agent.metrics();
    let metrics = figures.clone();
    let logs = LogServer::new(host.node_id()?, agent.runtime(), logs_token);
    let server = http::serve(
        "agent-metrics",
        listener,
        move |req: Request<Incoming>| {
            let metrics = metrics.clone();
            let logs = logs.clone();
            async move {
                let path = req.uri().path();
                match (req.method(), logs_path(path)) {
                    (&Method::GET, _) if path == "/metrics" => http::text(metrics.render()),
                    (&Method::GET, Some(instance)) => logs.serve(instance, &req).await,
                    _ => ApiError::not_found("the agent serves only GET /metrics and, to its coordinator, GET /v1/instances/{id}/logs").into_response(),
                }
            }
        },
        stopped(stop.clone()),
    );
    Ok((metrics_addr, figures, async move {
        tokio::join!(agent.run(stopped(stop)), server);
        for task in delivery {
            task.abort();
        }
    }))
}

/// Opens the metrics bus `url` as `client` (a node name). An unreachable broker
/// is not an error: publishing waits in the outbox until it answers.
pub async fn connect_bus(url: &str, client: &str) -> Result<Arc<dyn MetricsBus>> {
    let url = BusUrl::parse(url).map_err(|e| anyhow::anyhow!("--bus {url:?}: {e}"))?;
    sluice_bus::connect(&url, client).await.map_err(|e| anyhow::anyhow!("--bus {url}: {e}"))
}

pub async fn up(args: UpArgs) -> Result<ExitCode> {
    let node = Node::start(args).await?;
    let raft = node.coordinator.store.raft().clone();
    let why = tokio::select! {
        _ = signal() => None,
        why = raft.stopped() => Some(why),
    };
    node.shutdown().await;
    match why {
        Some(why) => anyhow::bail!("{why}. sluice exits so that its service manager restarts it; fix the cause first"),
        None => Ok(ExitCode::SUCCESS),
    }
}

pub async fn coordinator(command: CoordinatorCommand) -> Result<ExitCode> {
    let args = &command.coordinator;
    let mut config = args.config()?;
    config.tls = command.tls()?;
    config.local_node = command.local_node.as_deref().map(NodeId::new).transpose().map_err(|e| anyhow::anyhow!("--local-node: {}", e.message))?;
    config.images.credentials = RegistryCredentials::read_all(&command.registry_credentials).map_err(|e| anyhow::anyhow!("--registry-credentials: {e}"))?;
    // Load travels on the bus: without a shared one, the leader never sees a
    // follower's gateway, and requests waiting there start nothing.
    anyhow::ensure!(
        args.bus.is_some() || (args.founders() == 1 && !args.join),
        "a cluster of several coordinators needs a shared metrics bus, so the leader sees every gateway's load: \
         pass --bus kafka://host:9092 or --bus mqtt://host:1883 (the same on every coordinator), or --bus inproc to go without one \
         (then only the leader's own gateway can start instances)"
    );
    if let Some(url) = &args.bus {
        config.bus = Some(connect_bus(url, &format!("coordinator-{}", args.id)).await?);
    }
    let supervisor = Supervisor::from_env();
    let coordinator = Coordinator::start(config, Arc::new(SystemClock)).await?;
    supervisor.ready(&coordinator_status(&coordinator.store));
    let store = coordinator.store.clone();
    supervisor.watch(move || {
        let store = store.clone();
        async move {
            if let Some(why) = store.raft_status().stopped {
                return Err(why);
            }
            store.raft().ping().await.map_err(|e| format!("the raft loop did not answer: {e}"))?;
            Ok(coordinator_status(&store))
        }
    });
    let stopping = supervisor.clone();
    let why = coordinator
        .run_until(async move {
            signal().await;
            stopping.stopping();
        })
        .await;
    if let Some(why) = why {
        supervisor.stopping();
        anyhow::bail!("{why}. This coordinator exits so that its service manager restarts it; fix the cause first");
    }
    Ok(ExitCode::SUCCESS)
}

/// The one-line state `systemctl status` shows: role, cluster size, leader and functions.
fn coordinator_status(store: &sluice_coordinator::store::Store) -> String {
    let raft = store.raft_status();
    let voters = raft.members.iter().filter(|m| m.role == "voter").count();
    let (functions, instances) = store.read(|s| (s.functions.len(), s.instances.len()));
    let role = match (raft.role, raft.leader) {
        ("leader", _) => format!("leader of {voters}"),
        (role, Some(leader)) => format!("{role} of {voters}, leader {leader}"),
        (role, None) => format!("{role} of {voters}, no leader known"),
    };
    format!("{role}; {functions} functions, {instances} instances")
}

/// `sluice agent`; `reloads` brings its labels and instance limit as changed by SIGHUP.
pub async fn agent(args: AgentArgs, mut reloads: crate::config::Reloads) -> Result<ExitCode> {
    let (stop, rx) = watch::channel(false);
    let bus = match &args.bus {
        Some(url) => Some(connect_bus(url, &args.host.node).await?),
        None => None,
    };
    let token = match &args.token_file {
        Some(file) => Some(crate::credentials::resolve(None, Some(file))?.context("--token-file is empty")?),
        None => None,
    };
    let tls = args.tls.files()?.map(|files| files.client_config()).transpose()?;
    let supervisor = Supervisor::from_env();
    let coordinators = args.coordinator.join(",");
    supervisor.status(&format!("waiting for a coordinator ({coordinators}) to accept the first report"));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let logs_token = if tls.is_some() { None } else { token.clone() };
    let agent = start_agent(&args.host, args.coordinator, token, tls, clock.clone()).await?;
    let placement = agent.placement();
    let (_, metrics, agent) = serve_agent(agent, &args.host, logs_token, clock, bus, rx).await?;
    tokio::spawn(async move {
        while let Some(matches) = reloads.next().await {
            let host = match AgentArgs::from_arg_matches(&matches) {
                Ok(args) => args.host,
                Err(e) => {
                    tracing::warn!(error = %e, "labels and max_instances not reloaded");
                    continue;
                }
            };
            match host.labels() {
                Ok(labels) => {
                    placement.send_replace(Placement { labels, max_instances: host.max_instances });
                }
                Err(e) => tracing::warn!("labels and max_instances not reloaded: {e:#}"),
            }
        }
    });
    let stopping = supervisor.clone();
    tokio::spawn(async move {
        signal().await;
        stopping.stopping();
        let _ = stop.send(true);
    });
    tokio::spawn(supervise_agent(supervisor, metrics));
    agent.await;
    Ok(ExitCode::SUCCESS)
}

/// Tells systemd the agent is ready once a coordinator has accepted its first
/// report, then keeps its watchdog fed while the agent's loop turns.
async fn supervise_agent(supervisor: Supervisor, metrics: Arc<AgentMetrics>) {
    while metrics.reports_delivered() == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    supervisor.ready(&agent_status(&metrics));
    let mut seen = metrics.loop_turns();
    supervisor.watch(move || {
        let (before, now) = (seen, metrics.loop_turns());
        seen = now;
        let verdict = match now > before {
            true => Ok(agent_status(&metrics)),
            false => Err(format!("the agent's loop has not turned since the last check ({now} turns)")),
        };
        std::future::ready(verdict)
    });
}

fn agent_status(metrics: &AgentMetrics) -> String {
    let (instances, ready) = metrics.instance_counts();
    format!("serving; {instances} instances, {ready} ready; report {} accepted", metrics.reports_delivered())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn host(publish: &str, advertise: Option<&str>) -> HostArgs {
        let mut args = UpCommandForTests::parse_from(["t"]).host;
        args.publish_host = publish.into();
        args.advertise_host = advertise.map(str::to_string);
        args
    }

    #[derive(clap::Parser)]
    struct UpCommandForTests {
        #[command(flatten)]
        host: HostArgs,
    }

    #[test]
    fn the_advertised_host_is_one_other_hosts_can_dial() {
        let coordinators = vec!["http://127.0.0.1:7070".to_string()];
        // Said, or the specific address ports are published on.
        assert_eq!(advertised_host(&host("0.0.0.0", Some("10.0.0.5")), &coordinators).unwrap(), "10.0.0.5");
        assert_eq!(advertised_host(&host("192.168.1.4", None), &coordinators).unwrap(), "192.168.1.4");
        // Every address: the one the coordinator is reached from (here loopback, so loopback).
        assert_eq!(advertised_host(&host("0.0.0.0", None), &coordinators).unwrap(), "127.0.0.1");
        assert_eq!(advertised_host(&host("::", None), &["http://127.0.0.2:7070".to_string()]).unwrap(), "127.0.0.1");
        // A wildcard cannot be advertised, and without a coordinator there is nothing to go by.
        let e = advertised_host(&host("0.0.0.0", Some("0.0.0.0")), &coordinators).unwrap_err().to_string();
        assert!(e.contains("--advertise-host"), "{e}");
        assert!(advertised_host(&host("0.0.0.0", None), &[]).unwrap_err().to_string().contains("--advertise-host"));
    }
}
