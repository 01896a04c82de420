//! The slow parts of carrying out a plan, each run as its own tokio task.
//!
//! Cold starts run in parallel and a slow one never blocks a stop. Tasks own no
//! state: they talk to the runtime and send `Event`s back to the agent's loop,
//! which alone updates the report table.

use crate::runtime::{ContainerId, ContainerRuntime, RuntimeError};
use sluice_common::{DesiredInstance, Endpoint, InstanceId, InstanceState, NodeId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tracing::{info, warn};

/// What a task tells the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The instance's state changed; the loop reports it at once.
    State { state: InstanceState, endpoint: Option<Endpoint>, reason: Option<String> },
    /// The task is over (finished, failed, panicked or aborted): the instance may be planned again.
    Done,
}

/// An event from the task numbered `serial`, about `instance`. The loop ignores
/// events whose serial is not the instance's current task (an aborted one's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub instance: InstanceId,
    pub serial: u64,
    pub kind: EventKind,
}

/// What every task needs: the runtime, the node, the way back to the loop,
/// and the agent's figures.
#[derive(Clone)]
pub struct Worker {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub node: NodeId,
    pub events: UnboundedSender<Event>,
    pub metrics: Arc<super::AgentMetrics>,
}

/// One task's handle on the loop. Dropping it sends `Done`, so the instance is
/// released even if the task panics or is aborted.
pub struct Task {
    worker: Worker,
    instance: InstanceId,
    serial: u64,
}

impl Task {
    /// The handle of task number `serial` on `instance`.
    pub fn new(worker: Worker, instance: InstanceId, serial: u64) -> Self {
        Self { worker, instance, serial }
    }

    fn send(&self, kind: EventKind) {
        // The loop has ended (agent shutdown): nobody is left to tell.
        let _ = self.worker.events.send(Event { instance: self.instance, serial: self.serial, kind });
    }

    fn state(&self, state: InstanceState, endpoint: Option<Endpoint>, reason: Option<String>) {
        self.send(EventKind::State { state, endpoint, reason });
    }

    fn runtime(&self) -> &dyn ContainerRuntime {
        self.worker.runtime.as_ref()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.send(EventKind::Done);
    }
}

/// Pull if needed → create → start → health check. Ready on success; on failure
/// Gone with the reason, then the half-made container is removed.
pub async fn start(task: Task, desired: DesiredInstance) {
    let (id, function) = (desired.id, desired.spec.name.clone());
    let began = Instant::now();
    let mut created = None;
    match launch(&task, &desired, &mut created).await {
        Ok((endpoint, timings)) => {
            info!(
                instance = %id, function = %function, endpoint = %endpoint,
                image_ms = timings[0], create_ms = timings[1], start_ms = timings[2], ready_ms = timings[3],
                total_ms = began.elapsed().as_millis() as u64, "instance ready"
            );
            task.state(InstanceState::Ready, Some(endpoint), None);
        }
        Err(e) => {
            warn!(instance = %id, function = %function, error = %e, "instance failed to start");
            // Tell the coordinator first: requests waiting on this instance should
            // fail over now, not after the cleanup.
            task.state(InstanceState::Gone, None, Some(format!("failed to start: {e}")));
            if let Some(container) = created {
                teardown_quietly(&task, &[container], Duration::ZERO).await;
            }
        }
    }
}

/// Runs the start steps, noting the container once it exists so a failure can remove it.
/// Returns the endpoint and the milliseconds each step took.
async fn launch(task: &Task, desired: &DesiredInstance, created: &mut Option<ContainerId>) -> Result<(Endpoint, [u64; 4]), RuntimeError> {
    let rt = task.runtime();
    let spec = &desired.spec;
    let mut lap = Instant::now();
    let mut split = || {
        let ms = lap.elapsed().as_millis() as u64;
        lap = Instant::now();
        ms
    };
    rt.ensure_image(&spec.runnable_image()).await?;
    let image_ms = split();
    let container = rt.create(&task.worker.node, desired).await?;
    *created = Some(container.clone());
    let create_ms = split();
    let endpoint = rt.start(&container).await?;
    let start_ms = split();
    rt.wait_ready(desired.id, &endpoint, &spec.health_path, spec.start_timeout()).await?;
    Ok((endpoint, [image_ms, create_ms, start_ms, split()]))
}

/// Health-checks a running container found at startup (already recorded Ready);
/// if it never answers it is reported Gone and removed, as a failed start would be.
pub async fn adopt(task: Task, desired: DesiredInstance, container: ContainerId, endpoint: Endpoint) {
    let (id, function) = (desired.id, &desired.spec.name);
    match task.runtime().wait_ready(id, &endpoint, &desired.spec.health_path, desired.spec.start_timeout()).await {
        Ok(()) => info!(instance = %id, function = %function, "adopted container is healthy"),
        Err(e) => {
            warn!(instance = %id, function = %function, error = %e, "running container failed its health check");
            task.state(InstanceState::Gone, None, Some(format!("adopted container is unhealthy: {e}")));
            teardown_quietly(&task, &[container], Duration::ZERO).await;
        }
    }
}

/// Stops and removes `containers`; on success, reports `gone` (retiring an
/// instance) or nothing (discarding leftovers). On failure the containers are
/// still listed, so the next pass tries again.
pub async fn teardown(task: Task, containers: Vec<ContainerId>, grace: Duration, gone: Option<String>) {
    if teardown_quietly(&task, &containers, grace).await {
        if let Some(reason) = gone {
            task.state(InstanceState::Gone, None, Some(reason));
        }
    }
}

async fn teardown_quietly(task: &Task, containers: &[ContainerId], grace: Duration) -> bool {
    let rt = task.runtime();
    let mut all = true;
    for container in containers {
        let result = match rt.stop(container, grace).await {
            Ok(()) => rt.remove(container).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => info!(instance = %task.instance, container = %container.0, "container removed"),
            Err(e) => {
                warn!(instance = %task.instance, container = %container.0, error = %e, "could not stop and remove container; retrying next pass");
                all = false;
            }
        }
    }
    all
}

/// Freezes the container; Paused on success.
pub async fn pause(task: Task, container: ContainerId, endpoint: Option<Endpoint>) {
    match task.runtime().pause(&container).await {
        Ok(()) => {
            info!(instance = %task.instance, "instance paused");
            task.state(InstanceState::Paused, endpoint, None);
        }
        Err(e) => warn!(instance = %task.instance, error = %e, "could not pause; retrying next pass"),
    }
}

/// Thaws the container; Ready on success, at once. No health check follows:
/// the container passed one before it was frozen, and the coordinator already
/// routes requests to it (they wait in its sockets until it thaws), so every
/// millisecond here is one those requests wait. `desired_at` is when the
/// desired set that asked for it arrived.
pub async fn unpause(task: Task, container: ContainerId, endpoint: Option<Endpoint>, desired_at: Instant) {
    let began = Instant::now();
    match task.runtime().unpause(&container).await {
        Ok(()) => {
            let (call, since_desired) = (began.elapsed(), desired_at.elapsed());
            task.worker.metrics.unpaused(call, since_desired);
            info!(instance = %task.instance, unpause_ms = call.as_secs_f64() * 1e3, since_desired_ms = since_desired.as_secs_f64() * 1e3, "instance unpaused");
            task.state(InstanceState::Ready, endpoint, None);
        }
        Err(e) => warn!(instance = %task.instance, error = %e, "could not unpause; retrying next pass"),
    }
}
