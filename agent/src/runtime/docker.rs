//! `DockerRuntime`: the container runtime on the local Docker Engine, through bollard.

mod audit;
mod body;
mod convert;
mod gc;
mod images;

pub use audit::{check_secure_defaults, violations as secure_defaults_violations, SecureDefaultsError};

use super::{container_name, probe, ContainerId, ContainerInfo, ContainerRuntime, ContainerStatus, LogLines, RuntimeError};
use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use sluice_common::logs::{LogLine, LogQuery, LogStream};
use sluice_common::registry_auth::{self, RegistryCredentials};
use sluice_common::{DesiredInstance, Endpoint, ImageRef, InstanceId, NodeId};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// What to do when an instance's image is not on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull it from its registry.
    #[default]
    IfMissing,
    /// Fail the start: for hosts where images are loaded by other means.
    Never,
}

/// How the agent uses the local Docker Engine.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Host address container ports are published on; gateways on other hosts
    /// connect here (one on this host reaches containers at their own address).
    /// Keep the loopback default unless a gateway runs on another host.
    pub publish_host: String,
    /// The address instances advertise for their published ports, when not
    /// `publish_host` (which may be `0.0.0.0`, every address: no one's to dial).
    pub advertise_host: Option<String>,
    pub pull: PullPolicy,
    /// How long a confirmed-present image is trusted without asking Docker again.
    pub image_cache_ttl: Duration,
    /// Size at which a container's json-file log is rotated, in Docker's syntax (`10m`).
    pub log_max_size: String,
    /// What pulls from each registry that asks for credentials send.
    pub registry_credentials: Vec<RegistryCredentials>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            publish_host: "127.0.0.1".into(),
            advertise_host: None,
            pull: PullPolicy::IfMissing,
            image_cache_ttl: Duration::from_secs(60),
            log_max_size: "10m".into(),
            registry_credentials: Vec::new(),
        }
    }
}

/// The Docker Engine API version Sluice is written against (Engine 20.10); newer
/// engines still serve it, older ones are refused at connect.
const API_VERSION: bollard::ClientVersion = bollard::ClientVersion { major_version: 1, minor_version: 41 };

/// Where the local engine listens unless `DOCKER_HOST` names another unix socket.
const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// Seconds bollard waits for any one Docker API call; a pull may take this long.
const REQUEST_TIMEOUT_SECS: u64 = 300;

/// Containers on the local Docker Engine.
pub struct DockerRuntime {
    docker: Docker,
    config: DockerConfig,
    images: images::ImageCache,
    /// Images instances started with, and when: what the image GC watches (`gc`).
    used: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime").field("config", &self.config).finish_non_exhaustive()
    }
}

impl DockerRuntime {
    /// Connects to the local engine (`/var/run/docker.sock`, or `DOCKER_HOST` if it
    /// names a unix socket) and checks that it speaks API 1.41 or newer.
    pub async fn connect(config: DockerConfig) -> Result<Self, RuntimeError> {
        let socket = std::env::var("DOCKER_HOST").ok().filter(|h| h.starts_with("unix://"));
        let socket = socket.as_deref().unwrap_or(DEFAULT_SOCKET);
        let docker = Docker::connect_with_unix(socket, REQUEST_TIMEOUT_SECS, &API_VERSION).map_err(|e| RuntimeError::Backend(format!("cannot use Docker socket {socket}: {e}")))?;
        let version = docker.version().await.map_err(|e| RuntimeError::Backend(format!("Docker at {socket} does not answer: {e}")))?;
        let api = version.api_version.unwrap_or_default();
        if !api_at_least(&api, &API_VERSION) {
            return Err(RuntimeError::Backend(format!("Docker at {socket} speaks API {api:?}; Sluice needs 1.41 or newer (Docker Engine 20.10+), upgrade Docker")));
        }
        info!(socket, api = %api, engine = version.version.as_deref().unwrap_or("?"), "connected to docker");
        let images = images::ImageCache::new(config.image_cache_ttl);
        Ok(Self { docker, config, images, used: Default::default() })
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The bollard client, for checks beyond the `ContainerRuntime` trait (audits, tests).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Where gateways reach published ports: the advertised host, else the
    /// publish host, or loopback when ports are published on every address and
    /// nothing better was said.
    fn endpoint_host(&self) -> &str {
        if let Some(advertised) = &self.config.advertise_host {
            return advertised;
        }
        match self.config.publish_host.as_str() {
            "0.0.0.0" | "" | "::" => "127.0.0.1",
            h => h,
        }
    }

    async fn pull(&self, image: &ImageRef) -> Result<(), RuntimeError> {
        let (from_image, tag) = images::pull_params(image);
        let options = CreateImageOptionsBuilder::default().from_image(&from_image).tag(&tag).build();
        let started = Instant::now();
        let registry = image.parts().registry_or_default().to_string();
        let credentials = registry_auth::for_registry(&self.config.registry_credentials, &registry);
        info!(image = %image, %registry, with_credentials = credentials.is_some(), "pulling image");
        let auth = credentials.map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(c.registry.clone()),
            ..DockerCredentials::default()
        });
        let mut progress = self.docker.create_image(Some(options), None, auth);
        while let Some(item) = progress.next().await {
            item.map_err(|e| pull_error(image, &registry, credentials, &docker_message(&e)))?;
        }
        info!(image = %image, elapsed_ms = started.elapsed().as_millis() as u64, "image pulled");
        Ok(())
    }
}

fn api_at_least(api: &str, want: &bollard::ClientVersion) -> bool {
    let mut parts = api.split('.').map(|p| p.parse::<usize>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (want.major_version, want.minor_version),
        _ => false,
    }
}

/// The daemon's own message when it sent one; it says more than bollard's wrapper.
fn docker_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// A failed pull; one the registry refused for want of (right) credentials says
/// which registry and what to check, since that is what the operator must fix.
fn pull_error(image: &ImageRef, registry: &str, credentials: Option<&RegistryCredentials>, message: &str) -> RuntimeError {
    let reason = match (registry_auth::is_auth_failure(message), credentials) {
        (false, _) => format!("pull failed: {message}"),
        (true, Some(c)) => format!(
            "registry {registry} refused the credentials of user {:?} ({message}): check the username and password in the --registry-credentials file for {registry}",
            c.username
        ),
        (true, None) => format!("registry {registry} asks for credentials ({message}): give the agent a --registry-credentials file for {registry}"),
    };
    RuntimeError::Image { image: image.to_string(), reason }
}

fn status_code(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Maps a Docker failure on container `what` to the runtime's error kinds.
pub(crate) fn map_error(e: DockerError, what: &str) -> RuntimeError {
    match status_code(&e) {
        Some(404) => RuntimeError::NotFound(what.to_string()),
        Some(409) => RuntimeError::Conflict { id: what.to_string(), reason: docker_message(&e) },
        _ => RuntimeError::Backend(format!("{what}: {}", docker_message(&e))),
    }
}

fn millis(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn ensure_image(&self, image: &ImageRef) -> Result<(), RuntimeError> {
        self.note_used(image.as_str());
        if self.images.is_fresh(image) {
            return Ok(());
        }
        match self.docker.inspect_image(image.as_str()).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => match self.config.pull {
                PullPolicy::IfMissing => self.pull(image).await?,
                PullPolicy::Never => {
                    return Err(RuntimeError::Image { image: image.to_string(), reason: "not on this host and pulling is disabled".into() });
                }
            },
            Err(e) => return Err(RuntimeError::Backend(format!("inspecting image {image}: {}", docker_message(&e)))),
        }
        self.images.remember(image);
        Ok(())
    }

    async fn create(&self, node: &NodeId, instance: &DesiredInstance) -> Result<ContainerId, RuntimeError> {
        let name = container_name(&instance.spec.name, instance.id);
        let place = body::Placement { publish_host: &self.config.publish_host, log_max_size: &self.config.log_max_size };
        let request = body::create_body(node, instance, &place);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let started = Instant::now();
        let created = self.docker.create_container(Some(options), request).await.map_err(|e| match status_code(&e) {
            // On create, 404 means the image is gone (removed since ensure_image).
            Some(404) => RuntimeError::Image { image: instance.spec.runnable_image().to_string(), reason: docker_message(&e) },
            _ => map_error(e, &name),
        })?;
        for warning in &created.warnings {
            warn!(instance = %instance.id, container = %name, warning = %warning, "docker warned on create");
        }
        debug!(instance = %instance.id, container = %name, elapsed_ms = millis(started), "container created");
        Ok(ContainerId(created.id))
    }

    async fn start(&self, id: &ContainerId) -> Result<Endpoint, RuntimeError> {
        let started = Instant::now();
        self.docker.start_container(&id.0, None).await.map_err(|e| map_error(e, &id.0))?;
        let started_ms = millis(started);
        // The ephemeral host port, and the container's address, are only known once Docker has bound them.
        let inspect = self.docker.inspect_container(&id.0, None).await.map_err(|e| map_error(e, &id.0))?;
        let settings = inspect.network_settings.as_ref();
        let ports = convert::port_map_ports(settings.and_then(|n| n.ports.as_ref()))
            .ok_or_else(|| RuntimeError::Backend(format!("container {} started but publishes no port; check that nothing else changed its port bindings", id.0)))?;
        let addr = convert::network_address(settings.and_then(|n| n.networks.as_ref()));
        let endpoint = convert::endpoint(self.endpoint_host(), Some(ports), addr, ContainerStatus::Running).expect("a running container with a port has an endpoint");
        debug!(container = %id.0, start_ms = started_ms, elapsed_ms = millis(started), port = ports.published, direct = ?endpoint.direct, "container started");
        Ok(endpoint)
    }

    async fn wait_ready(&self, instance: InstanceId, endpoint: &Endpoint, health_path: &str, timeout: Duration) -> Result<(), RuntimeError> {
        probe::wait_healthy(instance, endpoint, health_path, timeout).await
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<(), RuntimeError> {
        // Docker counts grace in whole seconds; round up so a grace is never cut short.
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptionsBuilder::default().t(i32::try_from(secs).unwrap_or(i32::MAX)).build();
        match self.docker.stop_container(&id.0, Some(options)).await {
            // bollard maps 304 (already stopped) to Ok.
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(map_error(e, &id.0)),
        }
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        // force=false: removing a running container is a bug in the caller, not
        // something to paper over. v=true: anonymous volumes go with the container.
        let options = RemoveContainerOptionsBuilder::default().force(false).v(true).build();
        match self.docker.remove_container(&id.0, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(map_error(e, &id.0)),
        }
    }

    async fn pause(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        match self.docker.pause_container(&id.0).await {
            Ok(()) => Ok(()),
            // Engine 20.10 answers these with 500, newer ones with 409: match the message.
            Err(e) if docker_message(&e).contains("is already paused") => Ok(()),
            Err(e) => Err(map_error(e, &id.0)),
        }
    }

    async fn unpause(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        match self.docker.unpause_container(&id.0).await {
            Ok(()) => Ok(()),
            // The goal is "not paused": a container that is not paused already meets it.
            Err(e) if docker_message(&e).contains("is not paused") => Ok(()),
            Err(e) => Err(map_error(e, &id.0)),
        }
    }

    async fn list(&self, node: &NodeId) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([("label", vec![format!("{}=true", super::labels::MANAGED), format!("{}={node}", super::labels::NODE)])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let summaries = self.docker.list_containers(Some(options)).await.map_err(|e| RuntimeError::Backend(format!("listing containers: {}", docker_message(&e))))?;
        let host = self.endpoint_host();
        let mut found = Vec::with_capacity(summaries.len());
        for summary in &summaries {
            match convert::from_summary(summary, host) {
                Ok(info) => found.push(info),
                Err(why) => {
                    let id = summary.id.as_deref().unwrap_or("?");
                    warn!(container = id, reason = %why, "skipping container with bad sluice labels; remove it by hand");
                }
            }
        }
        Ok(found)
    }

    async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo, RuntimeError> {
        let inspect = self.docker.inspect_container(&id.0, None).await.map_err(|e| map_error(e, &id.0))?;
        // A container without Sluice's labels is not one of ours: as far as Sluice goes, it does not exist.
        convert::from_inspect(&inspect, self.endpoint_host()).map_err(|why| RuntimeError::NotFound(format!("{} (not a Sluice container: {why})", id.0)))
    }

    async fn logs(&self, id: &ContainerId, query: &LogQuery) -> Result<LogLines, RuntimeError> {
        // Only Sluice's own containers: `inspect` refuses any other.
        self.inspect(id).await?;
        let mut options = LogsOptionsBuilder::new().stdout(true).stderr(true).follow(query.follow).tail(&query.tail.to_string());
        if let Some(secs) = query.since_secs {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
            options = options.since(i32::try_from(now.saturating_sub(secs)).unwrap_or(i32::MAX));
        }
        let what = id.0.clone();
        let lines = self.docker.logs(&id.0, Some(options.build())).filter_map(move |frame| {
            let line = match frame {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => Some(Ok(LogLine::new(LogStream::Stdout, &message))),
                Ok(LogOutput::StdErr { message }) => Some(Ok(LogLine::new(LogStream::Stderr, &message))),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(map_error(e, &what))),
            };
            std::future::ready(line)
        });
        Ok(lines.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        assert!(api_at_least("1.41", &API_VERSION));
        assert!(api_at_least("1.53", &API_VERSION));
        assert!(api_at_least("2.0", &API_VERSION));
        assert!(!api_at_least("1.40", &API_VERSION));
        assert!(!api_at_least("", &API_VERSION));
    }

    #[test]
    fn docker_errors_map_to_runtime_errors() {
        let server = |status_code, message: &str| DockerError::DockerResponseServerError { status_code, message: message.into() };
        assert!(matches!(map_error(server(404, "No such container"), "c1"), RuntimeError::NotFound(id) if id == "c1"));
        assert!(matches!(map_error(server(409, "is running"), "c1"), RuntimeError::Conflict { reason, .. } if reason == "is running"));
        let backend = map_error(server(500, "boom"), "c1");
        assert!(matches!(&backend, RuntimeError::Backend(m) if m.contains("boom")), "{backend}");
    }

    #[test]
    fn refused_pulls_name_the_registry_and_the_fix() {
        let image = ImageRef::parse("127.0.0.1:5001/app:1").unwrap();
        let creds = RegistryCredentials { registry: "127.0.0.1:5001".into(), username: "sluice".into(), password: "wrong".into() };
        let refused = pull_error(&image, "127.0.0.1:5001", Some(&creds), "unauthorized: authentication required").to_string();
        assert!(refused.contains("registry 127.0.0.1:5001 refused the credentials of user \"sluice\"") && refused.contains("--registry-credentials"), "{refused}");
        let missing = pull_error(&image, "127.0.0.1:5001", None, "no basic auth credentials").to_string();
        assert!(missing.contains("registry 127.0.0.1:5001 asks for credentials") && missing.contains("--registry-credentials"), "{missing}");
        let other = pull_error(&image, "127.0.0.1:5001", None, "manifest unknown").to_string();
        assert!(other.contains("pull failed: manifest unknown"), "{other}");
    }
}
