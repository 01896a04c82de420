//! The container runtime boundary: the only place the agent touches containers.
//!
//! `DockerRuntime` drives the real Docker Engine through bollard; `FakeRuntime`
//! keeps containers in memory, records calls and can be told to fail. Both pass
//! the suite in `conformance`. `probe` is the HTTP readiness check behind
//! `DockerRuntime::wait_ready`.

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use sluice_common::logs::{LogLine, LogQuery};
use sluice_common::{DesiredInstance, Endpoint, FunctionName, ImageRef, InstanceId, NodeId};
use std::time::Duration;

pub mod conformance;
pub mod docker;
pub mod fake;
pub mod probe;

pub use docker::{DockerConfig, DockerRuntime, PullPolicy};
pub use fake::FakeRuntime;

/// Labels that tie a container to Sluice; listing by them is how an agent adopts
/// its containers after a restart.
pub mod labels {
    pub const MANAGED: &str = "io.sluice.managed";
    pub const NODE: &str = "io.sluice.node";
    pub const FUNCTION: &str = "io.sluice.function";
    pub const INSTANCE: &str = "io.sluice.instance";
}

/// The name of an instance's container, `sluice-<function>-<instance>` (e.g.
/// `sluice-hello-i3`): readable in `docker ps`, and unique because instance ids
/// are never reused.
pub fn container_name(function: &FunctionName, instance: InstanceId) -> String {
    format!("sluice-{function}-{instance}")
}

/// The runtime's own id of a container (Docker's container id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId(pub String);

/// What a container is doing, as the runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    Created,
    Running,
    Paused,
    /// Stopped by itself or by us; `code` is its exit code when known.
    Exited {
        code: Option<i64>,
    },
    /// Restarting, being removed, dead: nothing Sluice should route to.
    Other,
}

/// One Sluice container on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: ContainerId,
    pub instance: InstanceId,
    pub function: FunctionName,
    pub status: ContainerStatus,
    /// Where the container's port is published, once it runs.
    pub endpoint: Option<Endpoint>,
    /// Its own address on its network while it runs: where its requests to a
    /// gateway come from.
    pub addr: Option<std::net::IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image {image} is not available: {reason}; push it to the registry or check the image name")]
    Image { image: String, reason: String },
    #[error("container {0} not found")]
    NotFound(String),
    #[error("instance {id} did not become ready within {timeout:?}: {last_error}")]
    NotReady { id: InstanceId, timeout: Duration, last_error: String },
    #[error("container runtime failed: {0}; check that the Docker daemon is running and reachable")]
    Backend(String),
    /// The container exists but is in a state that does not allow the operation
    /// (removing a running container, pausing a stopped one, a taken name).
    #[error("container {id} cannot do that now: {reason}; the agent retries on its next pass")]
    Conflict { id: String, reason: String },
}

/// Operations on the containers of one node. Every method is idempotent where its
/// meaning allows: stopping a stopped container or removing a missing one succeeds.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Makes sure the image is present locally, pulling it from its registry if not.
    async fn ensure_image(&self, image: &ImageRef) -> Result<(), RuntimeError>;

    /// Creates (does not start) the container of `instance` on `node`, labelled,
    /// with Sluice's secure defaults and the spec's limits.
    async fn create(&self, node: &NodeId, instance: &DesiredInstance) -> Result<ContainerId, RuntimeError>;

    /// Starts a created container and returns where its port is published.
    async fn start(&self, id: &ContainerId) -> Result<Endpoint, RuntimeError>;

    /// Waits until `GET health_path` on `endpoint` answers 2xx, or `timeout` passes.
    async fn wait_ready(&self, instance: InstanceId, endpoint: &Endpoint, health_path: &str, timeout: Duration) -> Result<(), RuntimeError>;

    /// Stops with a grace period (SIGTERM, then SIGKILL after `grace`).
    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<(), RuntimeError>;

    /// Removes a stopped container; missing is not an error.
    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError>;

    async fn pause(&self, id: &ContainerId) -> Result<(), RuntimeError>;

    async fn unpause(&self, id: &ContainerId) -> Result<(), RuntimeError>;

    /// Every Sluice container of `node`, in any status.
    async fn list(&self, node: &NodeId) -> Result<Vec<ContainerInfo>, RuntimeError>;

    async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo, RuntimeError>;

    /// The last `query.tail` lines of a Sluice container's output (of the last
    /// `query.since_secs` if set), then with `query.follow` each new line until
    /// the container stops. A container that is not Sluice's is `NotFound`.
    async fn logs(&self, id: &ContainerId, query: &LogQuery) -> Result<LogLines, RuntimeError>;
}

/// A container's output, line by line.
pub type LogLines = BoxStream<'static, Result<LogLine, RuntimeError>>;
