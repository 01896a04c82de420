//! `FakeRuntime`: containers in memory, with Docker's semantics, for tests.
//!
//! It records every call, can be told to fail the next calls of an operation or to
//! make one slow, and can crash a container, so agent tests can script failures
//! that are hard to produce with a real engine.

use super::{container_name, ContainerId, ContainerInfo, ContainerRuntime, ContainerStatus, LogLines, RuntimeError};
use async_trait::async_trait;
use futures_util::StreamExt;
use sluice_common::logs::{LogLine, LogQuery};
use sluice_common::{DesiredInstance, Endpoint, FunctionName, ImageRef, InstanceId, NodeId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// First published port handed out; fake ports are never actually bound.
const FIRST_PORT: u16 = 40_000;

/// One operation of the `ContainerRuntime` trait, to aim failures and delays at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    EnsureImage,
    Create,
    Start,
    WaitReady,
    Stop,
    Remove,
    Pause,
    Unpause,
    List,
    Inspect,
}

/// One call made to the fake, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    EnsureImage(ImageRef),
    Create { node: NodeId, instance: InstanceId },
    Start(ContainerId),
    WaitReady { instance: InstanceId, endpoint: Endpoint },
    Stop { id: ContainerId, grace: Duration },
    Remove(ContainerId),
    Pause(ContainerId),
    Unpause(ContainerId),
    List(NodeId),
    Inspect(ContainerId),
}

impl Call {
    /// The operation this call was.
    pub fn op(&self) -> Op {
        match self {
            Call::EnsureImage(_) => Op::EnsureImage,
            Call::Create { .. } => Op::Create,
            Call::Start(_) => Op::Start,
            Call::WaitReady { .. } => Op::WaitReady,
            Call::Stop { .. } => Op::Stop,
            Call::Remove(_) => Op::Remove,
            Call::Pause(_) => Op::Pause,
            Call::Unpause(_) => Op::Unpause,
            Call::List(_) => Op::List,
            Call::Inspect(_) => Op::Inspect,
        }
    }
}

#[derive(Debug, Clone)]
struct Container {
    name: String,
    node: NodeId,
    instance: InstanceId,
    function: FunctionName,
    status: ContainerStatus,
    endpoint: Option<Endpoint>,
    /// The port the function listens on inside the container.
    port: u16,
    /// What the container has written, for `logs`.
    output: Vec<LogLine>,
}

#[derive(Debug, Default)]
struct State {
    images: HashSet<ImageRef>,
    // Ordered so listings are deterministic.
    containers: BTreeMap<String, Container>,
    calls: Vec<Call>,
    failures: HashMap<Op, usize>,
    delays: HashMap<Op, Duration>,
    unhealthy: HashSet<InstanceId>,
    next_id: u64,
    next_port: u16,
}

/// An in-memory `ContainerRuntime`; share it (with the agent under test) through an `Arc`.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

impl FakeRuntime {
    /// A runtime with no images and no containers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A runtime where `images` are already present.
    pub fn with_images(images: impl IntoIterator<Item = ImageRef>) -> Self {
        let fake = Self::new();
        fake.lock().images.extend(images);
        fake
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the next assertion.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `image` present, as a pull would.
    pub fn add_image(&self, image: ImageRef) {
        self.lock().images.insert(image);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many calls of `op` were made so far.
    pub fn count(&self, op: Op) -> usize {
        self.lock().calls.iter().filter(|c| c.op() == op).count()
    }

    /// Forgets the calls so far, so a test can look at what follows.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// The next `n` calls of `op` fail: `EnsureImage` with `Image`, `WaitReady`
    /// with `NotReady`, everything else with `Backend`. Failed calls change nothing.
    pub fn fail_next(&self, op: Op, n: usize) {
        *self.lock().failures.entry(op).or_default() += n;
    }

    /// Every call of `op` sleeps `delay` (tokio time) before acting.
    pub fn set_delay(&self, op: Op, delay: Duration) {
        self.lock().delays.insert(op, delay);
    }

    /// `wait_ready` for `instance` fails as if its health check never answered.
    pub fn set_unhealthy(&self, instance: InstanceId) {
        self.lock().unhealthy.insert(instance);
    }

    /// The container of `instance` exits by itself with `code`, as on a crash.
    /// Returns false if the instance has no running or paused container.
    /// Has `instance`'s container write `line`; false if it has no container.
    pub fn write_log(&self, instance: InstanceId, line: LogLine) -> bool {
        let mut state = self.lock();
        let Some(c) = state.containers.values_mut().find(|c| c.instance == instance) else { return false };
        c.output.push(line);
        true
    }

    pub fn crash(&self, instance: InstanceId, code: i64) -> bool {
        let mut state = self.lock();
        let live = state.containers.values_mut().find(|c| c.instance == instance && matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused));
        match live {
            Some(c) => {
                c.status = ContainerStatus::Exited { code: Some(code) };
                c.endpoint = None;
                true
            }
            None => false,
        }
    }

    /// Removes every container of `instance` behind the agent's back, as `docker rm -f` would.
    pub fn vanish(&self, instance: InstanceId) {
        self.lock().containers.retain(|_, c| c.instance != instance);
    }

    /// Every container on every node.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        self.lock().containers.iter().map(|(id, c)| info(id, c)).collect()
    }

    /// Records the call, then applies the configured delay and failure for its op.
    async fn enter(&self, call: Call) -> Result<(), ()> {
        let op = call.op();
        let delay = {
            let mut state = self.lock();
            state.calls.push(call);
            state.delays.get(&op).copied()
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.lock();
        match state.failures.get_mut(&op) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Err(())
            }
            _ => Ok(()),
        }
    }

    fn with_container<T>(&self, id: &ContainerId, f: impl FnOnce(&mut State, &str) -> Result<T, RuntimeError>) -> Result<T, RuntimeError> {
        let mut state = self.lock();
        if !state.containers.contains_key(&id.0) {
            return Err(RuntimeError::NotFound(id.0.clone()));
        }
        f(&mut state, &id.0)
    }
}

fn info(id: &str, c: &Container) -> ContainerInfo {
    let live = matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused);
    let addr = live.then(|| address(c.instance));
    ContainerInfo { id: ContainerId(id.to_string()), instance: c.instance, function: c.function.clone(), status: c.status, endpoint: c.endpoint.clone(), addr }
}

/// Like a bridge network: a container's address while it runs, from its instance id.
fn address(instance: InstanceId) -> std::net::IpAddr {
    let n = instance.0;
    std::net::IpAddr::from([10, 88, (n >> 8) as u8, n as u8])
}

fn injected(op: Op) -> RuntimeError {
    RuntimeError::Backend(format!("injected failure of {op:?}"))
}

fn conflict(id: &str, reason: &str) -> RuntimeError {
    RuntimeError::Conflict { id: id.to_string(), reason: reason.to_string() }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn ensure_image(&self, image: &ImageRef) -> Result<(), RuntimeError> {
        let missing = || RuntimeError::Image { image: image.to_string(), reason: "not in the fake registry".into() };
        self.enter(Call::EnsureImage(image.clone())).await.map_err(|_| missing())?;
        if self.lock().images.contains(image) {
            Ok(())
        } else {
            Err(missing())
        }
    }

    async fn create(&self, node: &NodeId, instance: &DesiredInstance) -> Result<ContainerId, RuntimeError> {
        self.enter(Call::Create { node: node.clone(), instance: instance.id }).await.map_err(|_| injected(Op::Create))?;
        let name = container_name(&instance.spec.name, instance.id);
        let mut state = self.lock();
        let image = instance.spec.runnable_image();
        if !state.images.contains(&image) {
            return Err(RuntimeError::Image { image: image.to_string(), reason: "No such image".into() });
        }
        if state.containers.values().any(|c| c.name == name) {
            return Err(conflict(&name, "the container name is already in use"));
        }
        state.next_id += 1;
        let id = format!("fake{:04}", state.next_id);
        let container = Container {
            name,
            node: node.clone(),
            instance: instance.id,
            function: instance.spec.name.clone(),
            status: ContainerStatus::Created,
            endpoint: None,
            port: instance.spec.port,
            output: Vec::new(),
        };
        state.containers.insert(id.clone(), container);
        Ok(ContainerId(id))
    }

    async fn start(&self, id: &ContainerId) -> Result<Endpoint, RuntimeError> {
        self.enter(Call::Start(id.clone())).await.map_err(|_| injected(Op::Start))?;
        self.with_container(id, |state, key| {
            let port = FIRST_PORT + state.next_port;
            let c = state.containers.get_mut(key).ok_or_else(|| RuntimeError::NotFound(key.to_string()))?;
            match c.status {
                ContainerStatus::Running => {}
                ContainerStatus::Paused => return Err(conflict(key, "cannot start a paused container, try unpause instead")),
                _ => {
                    c.status = ContainerStatus::Running;
                    // Published on loopback, and directly at its address on the (pretend) bridge.
                    c.endpoint = Some(Endpoint::published("127.0.0.1", port).with_direct(Some(std::net::SocketAddr::new(address(c.instance), c.port))));
                }
            }
            let endpoint = c.endpoint.clone().ok_or_else(|| RuntimeError::Backend("running fake container has no endpoint".into()))?;
            if endpoint.port == port {
                state.next_port += 1;
            }
            Ok(endpoint)
        })
    }

    async fn wait_ready(&self, instance: InstanceId, endpoint: &Endpoint, _health_path: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let not_ready = |why: &str| RuntimeError::NotReady { id: instance, timeout, last_error: why.to_string() };
        self.enter(Call::WaitReady { instance, endpoint: endpoint.clone() }).await.map_err(|_| not_ready("injected failure of WaitReady"))?;
        let state = self.lock();
        if state.unhealthy.contains(&instance) {
            return Err(not_ready("health check answered HTTP 500"));
        }
        let serving = state.containers.values().any(|c| c.instance == instance && c.status == ContainerStatus::Running && c.endpoint.as_ref() == Some(endpoint));
        if serving {
            Ok(())
        } else {
            Err(not_ready("could not connect: connection refused"))
        }
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<(), RuntimeError> {
        self.enter(Call::Stop { id: id.clone(), grace }).await.map_err(|_| injected(Op::Stop))?;
        let mut state = self.lock();
        // Like Docker: stopping a missing, created or exited container changes nothing and succeeds.
        if let Some(c) = state.containers.get_mut(&id.0) {
            if matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused) {
                c.status = ContainerStatus::Exited { code: Some(0) };
                c.endpoint = None;
            }
        }
        Ok(())
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.enter(Call::Remove(id.clone())).await.map_err(|_| injected(Op::Remove))?;
        let mut state = self.lock();
        match state.containers.get(&id.0).map(|c| c.status) {
            None => Ok(()),
            Some(ContainerStatus::Running | ContainerStatus::Paused) => Err(conflict(&id.0, "cannot remove a running container: stop it first")),
            Some(_) => {
                state.containers.remove(&id.0);
                Ok(())
            }
        }
    }

    async fn pause(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.enter(Call::Pause(id.clone())).await.map_err(|_| injected(Op::Pause))?;
        self.with_container(id, |state, key| {
            let c = state.containers.get_mut(key).ok_or_else(|| RuntimeError::NotFound(key.to_string()))?;
            match c.status {
                ContainerStatus::Running | ContainerStatus::Paused => {
                    c.status = ContainerStatus::Paused;
                    Ok(())
                }
                _ => Err(conflict(key, "container is not running")),
            }
        })
    }

    async fn unpause(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.enter(Call::Unpause(id.clone())).await.map_err(|_| injected(Op::Unpause))?;
        self.with_container(id, |state, key| {
            let c = state.containers.get_mut(key).ok_or_else(|| RuntimeError::NotFound(key.to_string()))?;
            if c.status == ContainerStatus::Paused {
                c.status = ContainerStatus::Running;
            }
            Ok(())
        })
    }

    async fn list(&self, node: &NodeId) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.enter(Call::List(node.clone())).await.map_err(|_| injected(Op::List))?;
        let state = self.lock();
        Ok(state.containers.iter().filter(|(_, c)| &c.node == node).map(|(id, c)| info(id, c)).collect())
    }

    async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo, RuntimeError> {
        self.enter(Call::Inspect(id.clone())).await.map_err(|_| injected(Op::Inspect))?;
        self.with_container(id, |state, key| Ok(info(key, &state.containers[key])))
    }

    /// The lines written so far; the fake writes nothing on its own, so a
    /// follow ends after them.
    async fn logs(&self, id: &ContainerId, query: &LogQuery) -> Result<LogLines, RuntimeError> {
        let state = self.lock();
        // Docker takes a container's name as well as its id.
        let c = state.containers.iter().find(|(key, c)| **key == id.0 || c.name == id.0).map(|(_, c)| c).ok_or_else(|| RuntimeError::NotFound(id.0.clone()))?;
        let skip = c.output.len().saturating_sub(query.tail as usize);
        let lines: Vec<_> = c.output[skip..].iter().cloned().map(Ok).collect();
        Ok(futures_util::stream::iter(lines).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::{DesiredState, FunctionSpec};

    fn image() -> ImageRef {
        ImageRef::parse("sluice/hello:latest").unwrap()
    }

    fn instance(id: u64) -> DesiredInstance {
        DesiredInstance { id: InstanceId(id), spec: FunctionSpec::new(FunctionName::new("hello").unwrap(), image()), state: DesiredState::Running }
    }

    fn node() -> NodeId {
        NodeId::new("n1").unwrap()
    }

    #[tokio::test]
    async fn injected_failures_hit_the_next_calls_only() {
        let rt = FakeRuntime::with_images([image()]);
        rt.fail_next(Op::Create, 2);
        assert!(matches!(rt.create(&node(), &instance(1)).await, Err(RuntimeError::Backend(_))));
        assert!(rt.create(&node(), &instance(1)).await.is_err());
        assert!(rt.containers().is_empty(), "a failed create leaves nothing behind");
        rt.create(&node(), &instance(1)).await.unwrap();
        assert_eq!(rt.count(Op::Create), 3);

        rt.fail_next(Op::EnsureImage, 1);
        assert!(matches!(rt.ensure_image(&image()).await, Err(RuntimeError::Image { .. })));
        rt.ensure_image(&image()).await.unwrap();
    }

    #[tokio::test]
    async fn names_are_unique_like_dockers() {
        let rt = FakeRuntime::with_images([image()]);
        rt.create(&node(), &instance(1)).await.unwrap();
        assert!(matches!(rt.create(&node(), &instance(1)).await, Err(RuntimeError::Conflict { .. })));
    }

    #[tokio::test]
    async fn crash_exits_the_container() {
        let rt = FakeRuntime::with_images([image()]);
        let id = rt.create(&node(), &instance(4)).await.unwrap();
        assert!(!rt.crash(InstanceId(4), 1), "a created container cannot crash");
        let ep = rt.start(&id).await.unwrap();
        assert!(rt.crash(InstanceId(4), 139));
        let info = rt.inspect(&id).await.unwrap();
        assert_eq!(info.status, ContainerStatus::Exited { code: Some(139) });
        assert_eq!(info.endpoint, None);
        assert!(rt.wait_ready(InstanceId(4), &ep, "/", Duration::from_secs(1)).await.is_err());
    }

    #[tokio::test]
    async fn removing_a_running_container_is_refused() {
        let rt = FakeRuntime::with_images([image()]);
        let id = rt.create(&node(), &instance(5)).await.unwrap();
        rt.start(&id).await.unwrap();
        assert!(matches!(rt.remove(&id).await, Err(RuntimeError::Conflict { .. })));
        rt.stop(&id, Duration::from_secs(1)).await.unwrap();
        rt.remove(&id).await.unwrap();
        assert!(rt.containers().is_empty());
    }

    #[tokio::test]
    async fn restarting_keeps_the_endpoint_of_a_running_container() {
        let rt = FakeRuntime::with_images([image()]);
        let a = rt.create(&node(), &instance(1)).await.unwrap();
        let b = rt.create(&node(), &instance(2)).await.unwrap();
        let ea = rt.start(&a).await.unwrap();
        assert_eq!(rt.start(&a).await.unwrap(), ea);
        let eb = rt.start(&b).await.unwrap();
        assert_ne!(ea, eb, "each container gets its own port");
    }

    #[tokio::test(start_paused = true)]
    async fn delays_apply_in_tokio_time() {
        let rt = FakeRuntime::with_images([image()]);
        rt.set_delay(Op::List, Duration::from_secs(3));
        let before = tokio::time::Instant::now();
        rt.list(&node()).await.unwrap();
        assert_eq!(before.elapsed(), Duration::from_secs(3));
    }
}
