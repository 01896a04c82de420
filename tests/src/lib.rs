//! The harness for Sluice's end-to-end tests: a real single-node Sluice in the
//! test process, the real Docker Engine, and an HTTP client.
//!
//! Tests need the example images (`scripts/build-images.sh`) and a registry
//! (`scripts/registry.sh start`); `scripts/test.sh` sets both up. A test whose
//! service is missing fails with a message saying which script to run. The
//! registry asks for credentials: every coordinator and agent the tests start
//! gets the file `registry_credentials_file` names.

use anyhow::{bail, Context, Result};
pub use hyper::Method;
use serde_json::Value;
use sluice_agent::runtime::{ContainerInfo, ContainerRuntime, ContainerStatus, DockerConfig, DockerRuntime, RuntimeError};
pub use sluice_cli::client::{Http, Reply};
use sluice_cli::node::{AgentHandle, CoordinatorArgs, HostArgs, Node, UpArgs};
use sluice_common::NodeId;
use std::future::Future;
use std::time::{Duration, Instant};

pub mod cut;
pub mod docker_cluster;
pub mod linearizability;
pub mod mosquitto;
pub mod nemesis;
pub mod ports;
pub mod powercut;
pub mod process_cluster;
pub mod workload;

/// The registry the test script starts, and the images it pushes there.
pub const REGISTRY: &str = "127.0.0.1:5000";
pub fn hello_image() -> String {
    format!("{REGISTRY}/sluice/hello:latest")
}
pub fn sleep_image() -> String {
    format!("{REGISTRY}/sluice/sleep:latest")
}

/// The credentials file of the registry (`SLUICE_REGISTRY_CREDENTIALS`, else the one
/// `scripts/registry.sh` writes), if it exists. Without it, pulls from a registry
/// that asks for credentials fail with an error naming the registry.
pub fn registry_credentials_file() -> Option<std::path::PathBuf> {
    let path = match std::env::var_os("SLUICE_REGISTRY_CREDENTIALS") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".cache/sluice/registry/credentials"),
    };
    path.is_file().then_some(path)
}

/// Gives a spawned `sluice` process the registry's credentials (it reads the variable as its flag).
pub fn with_registry_credentials(command: &mut std::process::Command) -> &mut std::process::Command {
    match registry_credentials_file() {
        Some(file) => command.env("SLUICE_REGISTRY_CREDENTIALS", file),
        None => command,
    }
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).with_test_writer().try_init();
}

/// A single-node Sluice on ephemeral ports, with its own node name so that tests
/// never see each other's containers.
pub struct Cluster {
    pub node: Node,
    pub node_id: NodeId,
    pub docker: DockerRuntime,
    pub http: Http,
    /// The coordinator's Raft log; removed when the cluster is dropped.
    pub data_dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(node_name: &str) -> Result<Cluster> {
        Self::start_with(node_name, |_| {}).await
    }

    /// Starts a cluster after `adjust` has changed its arguments (the bus, sampling, buffers).
    pub async fn start_with(node_name: &str, adjust: impl FnOnce(&mut UpArgs)) -> Result<Cluster> {
        init_logs();
        let docker = DockerRuntime::connect(DockerConfig::default()).await.context("Docker is not reachable: start the Docker daemon")?;
        let node_id = NodeId::new(node_name)?;
        remove_containers(&docker, &node_id).await?;
        let data_dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
        let args = UpArgs { coordinator: CoordinatorArgs::ephemeral(data_dir.path().to_path_buf()), host: host_args(node_name) };
        let mut args = args;
        adjust(&mut args);
        let node = Node::start(args).await?;
        Ok(Cluster { node, node_id, docker, http: Http::new(), data_dir })
    }

    /// Starts another agent in this process for node `name` (its containers are
    /// removed first), reaching the coordinator at `coordinator` (default: its API).
    /// Starts another agent (through `coordinator`, e.g. a relay, if given) and
    /// returns once the coordinator lists its node as ready: a function deployed
    /// before that would be placed as if the node did not exist.
    pub async fn add_agent(&self, name: &str, coordinator: Option<String>) -> Result<AgentHandle> {
        remove_containers(&self.docker, &NodeId::new(name)?).await?;
        let url = coordinator.unwrap_or_else(|| self.node.api_url());
        let agent = self.node.add_agent(&host_args(name), vec![url]).await?;
        eventually(&format!("node {name} listed as ready"), Duration::from_secs(15), || async {
            let nodes = self.http.get(&self.api("/v1/nodes")).await?.json()?;
            Ok(nodes.as_array().is_some_and(|n| n.iter().any(|n| n["id"] == name && n["state"] == "ready")).then_some(()))
        })
        .await?;
        Ok(agent)
    }

    /// The admin token `sluice up` wrote to its data directory (with `--auth required`).
    pub fn admin_token(&self) -> Result<String> {
        let text = std::fs::read_to_string(self.data_dir.path().join("admin.token")).context("sluice up writes the admin token")?;
        Ok(text.trim().to_string())
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.node.api_url())
    }

    pub fn function_url(&self, name: &str, rest: &str) -> String {
        format!("{}/function/{name}{rest}", self.node.gateway_url())
    }

    /// Deploys a function from a JSON spec and expects success.
    pub async fn deploy(&self, spec: Value) -> Result<()> {
        let r = self.http.json(Method::POST, &self.api("/v1/functions"), &spec).await?;
        if !r.status.is_success() {
            bail!("deploy failed: {} {}", r.status, r.text());
        }
        Ok(())
    }

    pub async fn instances(&self, function: &str) -> Result<Vec<Value>> {
        let r = self.http.get(&self.api(&format!("/v1/instances?function={function}"))).await?;
        Ok(r.json()?.as_array().cloned().unwrap_or_default())
    }

    pub async fn function(&self, name: &str) -> Result<Value> {
        let r = self.http.get(&self.api(&format!("/v1/functions/{name}"))).await?;
        r.json()
    }

    /// Sluice containers of this node for `function`, as Docker sees them.
    pub async fn containers(&self, function: &str) -> Result<Vec<ContainerInfo>> {
        let all = self.docker.list(&self.node_id).await?;
        Ok(all.into_iter().filter(|c| c.function.as_str() == function).collect())
    }

    pub async fn running_containers(&self, function: &str) -> Result<Vec<ContainerInfo>> {
        Ok(self.containers(function).await?.into_iter().filter(|c| c.status == ContainerStatus::Running).collect())
    }

    /// How many containers of `function` run for another agent's `node`.
    pub async fn running_containers_of_node(&self, function: &str, node: &NodeId) -> Result<usize> {
        let all = self.docker.list(node).await?;
        Ok(all.into_iter().filter(|c| c.function.as_str() == function && c.status == ContainerStatus::Running).count())
    }

    /// Waits until instance `id` of `function`, on `node`, is paused in the
    /// coordinator's state and its container frozen in Docker.
    pub async fn wait_paused(&self, node: &NodeId, function: &str, id: u64, timeout: Duration) -> Result<()> {
        eventually("the instance paused, and its container frozen", timeout, || async {
            let paused = self.instances(function).await?.iter().any(|i| i["id"] == id && i["state"] == "paused");
            let frozen = self.docker.list(node).await?.iter().any(|c| c.instance.0 == id && c.function.as_str() == function && c.status == ContainerStatus::Paused);
            Ok((paused && frozen).then_some(()))
        })
        .await
    }

    /// Stops Sluice and removes every container it left.
    pub async fn stop(self) -> Result<()> {
        self.node.shutdown().await;
        remove_containers(&self.docker, &self.node_id).await
    }
}

/// An agent's settings for node `name` in tests: ports on loopback, sampled every second.
pub fn host_args(name: &str) -> HostArgs {
    HostArgs {
        node: name.into(),
        publish_host: "127.0.0.1".into(),
        advertise_host: None,
        cpu_millis: None,
        cpu_overcommit: 8.0,
        memory_mb: None,
        metrics_addr: "127.0.0.1:0".parse().expect("a socket address"),
        sample_secs: 1.0,
        bus_buffer_messages: 20_000,
        bus_buffer_kib: 8192,
        labels: Vec::new(),
        max_instances: None,
        registry_credentials: registry_credentials_file().into_iter().collect(),
        image_gc_disk_percent: 85.0,
        image_gc_unused_secs: 3600,
    }
}

/// Removes every container the agent of `node` created (a clean slate for a test).
/// An agent that is still winding down may be removing one of them at the same
/// moment: a conflict is retried for a few seconds.
pub async fn remove_containers(docker: &DockerRuntime, node: &NodeId) -> Result<()> {
    for c in docker.list(node).await? {
        let mut tries = 0;
        loop {
            let removed = async {
                docker.stop(&c.id, Duration::from_secs(1)).await?;
                docker.remove(&c.id).await
            };
            match removed.await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => break,
                Err(RuntimeError::Conflict { .. }) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Polls `check` every 100 ms until it returns `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
