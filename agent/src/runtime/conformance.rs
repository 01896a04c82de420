//! The behaviour every `ContainerRuntime` must show, as a suite any implementation can run.
//!
//! `FakeRuntime` runs it in this crate's tests and `DockerRuntime` in the
//! workspace's end-to-end tests, which is what keeps the fake honest. Each check
//! uses its own instance ids and removes its containers, before and after, so
//! checks are independent and a failed run does not poison the next one.

use super::{probe, ContainerId, ContainerInfo, ContainerRuntime, ContainerStatus, RuntimeError};
use sluice_common::{DesiredInstance, Endpoint, ImageRef, InstanceId, NodeId};
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// What the suite needs to know about the runtime under test.
#[derive(Debug, Clone)]
pub struct ConformanceContext {
    /// The node the checks run as.
    pub node: NodeId,
    /// Another node; its containers must never appear in `node`'s listing.
    pub other_node: NodeId,
    /// The instance to start, with an image the runtime has or can get. Checks
    /// derive their instance ids from `template.id` upward (up to +99).
    pub template: DesiredInstance,
    /// An image that exists nowhere. For Docker, use a registry on 127.0.0.1 that
    /// does not exist, so the failed pull never leaves the host.
    pub missing_image: ImageRef,
    /// Whether started containers really answer HTTP on their endpoint.
    pub serves_http: bool,
    pub ready_timeout: Duration,
    pub stop_grace: Duration,
}

impl ConformanceContext {
    /// A context with defaults: other node `other-<node>`, a missing image on
    /// `127.0.0.1:1`, 30 s to become ready, 2 s stop grace.
    pub fn new(node: NodeId, template: DesiredInstance, serves_http: bool) -> Self {
        // Shorten first so the derived name stays a valid DNS label.
        let other = format!("other-{}", &node.as_str()[..node.as_str().len().min(50)]);
        Self {
            other_node: NodeId::new(other.trim_end_matches('-')).expect("a prefix of a DNS label after 'other-' is a DNS label"),
            node,
            template,
            missing_image: ImageRef::parse("127.0.0.1:1/sluice/conformance-missing:latest").expect("a valid image literal"),
            serves_http,
            ready_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(2),
        }
    }

    /// The template under a new id, `template.id + offset`.
    fn instance(&self, offset: u64) -> DesiredInstance {
        DesiredInstance { id: InstanceId(self.template.id.0 + offset), ..self.template.clone() }
    }
}

/// One check that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    pub check: &'static str,
    pub message: String,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.message)
    }
}

/// Every check that did not hold in a run.
#[derive(Debug, thiserror::Error)]
#[error("runtime fails {} conformance check(s): {}", .0.len(), .0.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(" | "))]
pub struct ConformanceFailures(pub Vec<CheckFailure>);

type CheckResult = Result<(), CheckFailure>;

/// Runs every check, in order, and reports all that failed.
pub async fn run_all(rt: &dyn ContainerRuntime, ctx: &ConformanceContext) -> Result<(), ConformanceFailures> {
    let results = [
        start_ready_and_list(rt, ctx).await,
        pause_and_unpause(rt, ctx).await,
        stop_is_idempotent(rt, ctx).await,
        remove_is_idempotent(rt, ctx).await,
        remove_refuses_a_running_container(rt, ctx).await,
        unknown_containers_are_not_found(rt, ctx).await,
        missing_image_is_an_image_error(rt, ctx).await,
        list_shows_only_this_node(rt, ctx).await,
    ];
    let failures: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ConformanceFailures(failures))
    }
}

/// create → start → wait_ready; the listing shows it running, labelled, at its
/// endpoint, with an address on its network, where it is also reachable directly.
pub async fn start_ready_and_list(rt: &dyn ContainerRuntime, ctx: &ConformanceContext) -> CheckResult {
    const CHECK: &str = "start_ready_and_list";
    let inst = ctx.instance(0);
    isolated(rt, &ctx.node, &[inst.id], CHECK, async {
        expect(CHECK, "ensure_image", rt.ensure_image(&inst.spec.image).await)?;
        let id = expect(CHECK, "create", rt.create(&ctx.node, &inst).await)?;
        let created = find(CHECK, rt, &ctx.node, inst.id).await?;
        ensure(CHECK, created.status == ContainerStatus::Created, || format!("created container is {:?}", created.status))?;
        ensure(CHECK, created.endpoint.is_none(), || "a created container already has an endpoint".into())?;
        let endpoint = expect(CHECK, "start", rt.start(&id).await)?;
        expect(CHECK, "wait_ready", rt.wait_ready(inst.id, &endpoint, &inst.spec.health_path, ctx.ready_timeout).await)?;
        let listed = find(CHECK, rt, &ctx.node, inst.id).await?;
        ensure(CHECK, listed.id == id, || format!("listed id {:?} is not the created {:?}", listed.id, id))?;
        ensure(CHECK, listed.function == inst.spec.name, || format!("listed function {} is not {}", listed.function, inst.spec.name))?;
        ensure(CHECK, listed.status == ContainerStatus::Running, || format!("started container is {:?}", listed.status))?;
        ensure(CHECK, listed.endpoint.as_ref() == Some(&endpoint), || format!("listed endpoint {:?} is not {endpoint}", listed.endpoint))?;
        ensure(CHECK, listed.addr.is_some(), || "a running container has no address on its network".into())?;
        // The gateway on this host skips the published port: the endpoint also
        // names the container's own address, with the function's port.
        let direct = endpoint.direct.ok_or_else(|| fail(CHECK, format!("endpoint {endpoint:?} has no direct address")))?;
        ensure(CHECK, Some(direct.ip()) == listed.addr && direct.port() == inst.spec.port, || {
            format!("direct address {direct} is not the container's address {:?} with its port {}", listed.addr, inst.spec.port)
        })?;
        let inspected = expect(CHECK, "inspect", rt.inspect(&id).await)?;
        ensure(CHECK, inspected == listed, || format!("inspect {inspected:?} disagrees with list {listed:?}"))?;
        if ctx.serves_http {
            answers_2xx(CHECK, &endpoint, &inst.spec.health_path).await?;
            let direct = Endpoint::published(direct.ip().to_string(), direct.port());
            answers_2xx(CHECK, &direct, &inst.spec.health_path).await?;
        }
        Ok(())
    })
    .await
}

/// pause and unpause change the status, and repeating either is harmless.
pub async fn pause_and_unpause(rt: &dyn ContainerRuntime, ctx: &ConformanceContext) -> CheckResult {
    const CHECK: &str = "pause_and_unpause";
    let inst = ctx.instance(10);
    isolated(rt, &ctx.node, &[inst.id], CHECK, async {
        let (id, endpoint) = launch(CHECK, rt, ctx, &inst).await?;
        expect(CHECK, "pause", rt.pause(&id).await)?;
        expect(CHECK, "pause again", rt.pause(&id).await)?;
        status_is(CHECK, rt, &id, ContainerStatus::Paused).await?;
        let listed = find(CHECK, rt, &ctx.node, inst.id).await?;
        ensure(CHECK, listed.status == ContainerStatus::Paused, || format!("listing shows a paused container as {:?}", listed.status))?;
        ensure(CHECK, listed.endpoint.as_ref() == Some(&endpoint), || "a paused container lost its endpoint".into())?;
        expect(CHECK, "unpause", rt.unpause(&id).await)?;
        expect(CHECK, "unpause again", rt.unpause(&id).await)?;
        status_is(CHECK, rt, &id, ContainerStatus::Running).await?;
        expect(CHECK, "wait_ready after unpause", rt.wait_ready(inst.id, &endpoint, &inst.spec.health_path, ctx.ready_timeout).await)?;
        if ctx.serves_http {
            answers_2xx(CHECK, &endpoint, &inst.spec.health_path).await?;
        }
        Ok(())
    })
    .await
}

/// Stopping twice, or stopping a container that does not exist, succeeds.
pub async fn stop_is_idempotent(rt: &dyn ContainerRuntime, ctx: &ConformanceContext) -> CheckResult {
    const CHECK: &str = "stop_is_idempotent";
    let inst = ctx.instance(20);
    isolated(rt, &ctx.node, &[inst.id], CHECK, async {
        let (id, _) = launch(CHECK, rt, ctx, &inst).await?;
        expect(CHECK, "stop", rt.stop(&id, ctx.stop_grace).await)?;
        let info = expect(CHECK, "inspect", rt.inspect(&id).await)?;
        ensure(CHECK, matches!(info.status, ContainerStatus::Exited { .. }), || format!("stopped container is {:?}", info.status))?;
        ensure(CHECK, info.endpoint.is_none(), || "a stopped container still has an endpoint".into())?;
        expect(CHECK, "stop again", rt.stop(&id, ctx.stop_grace).await)?;
        expect(CHECK, "stop unknown", rt.stop(&unknown(), ctx.stop_grace).await)?;
        Ok(())
    })
    .await
}

/// Removing twice, or removing a container that does not exist, succeeds, and a
/// removed container is gone from list and inspect.
pub async fn remove_is_idempotent(rt: &dyn ContainerRuntime, ctx: &ConformanceContext) -> CheckResult {
    const CHECK: &str = "remove_is_idempotent";
    let inst = ctx.instance(30);
    isolated(rt, &ctx.node, &[inst.id], CHECK, async {
        let (id, _) = launch(CHECK, rt, ctx, &inst).await?;
        expect(CHECK, "stop", rt.stop(&id, ctx.stop_grace).await)?;
        expect(CHECK, "remove", rt.remove(&id).await)?;
        expect(CHECK, "remove again", rt.remove(&id).await)?;
        expect(CHECK, "remove unknown", rt.remove(&unknown()).await)?;
        let listed = expect(CHECK, "list", rt.list(&ctx.node).await)?;
        ensure(CHECK, listed.iter().all(|c| c.id != id && c.instance != inst.id), || "a removed container is still listed".into())?;
        not_found(CHECK, "inspect removed", rt.inspect(&id).await)
    })
    .await
}

/// Removing a running container fails with `Conflict` and leaves it running: the
/// agent always stops first, and must hear about it if it did not.
pub async fn remove_refuses_a_running_container(rt: &dyn ContainerRuntime, ctx: &ConformanceContext) -> CheckResult {
    const CHECK: &str = "remove_refuses_a_running_container";
    let inst = ctx.instance(40);
    isolated(rt, &ctx.node, &[inst.id], CHECK, async {
        let (id, _) = launch(CHECK, rt, ctx, &inst).await?;
        match rt.remove(&id).await {
            Err(RuntimeError::Conflict { .. }) => {}
            other => return Err(fail(CHECK, format!("remove of a running container gave {other:?}, want Conflict"))),
        }
        status_is(CHECK, rt, &id, ContainerStatus::Running).await
    })
    .await
}

/// inspect, start, pause and unpause of an unknown container fail with `NotFound`.
pub async fn unknown_containers_are_not_found(rt: &dyn ContainerRuntime, _ctx: &ConformanceContext) -> CheckResult {
    const CHECK: &str = "unknown_containers_are_not_found";
    not_found(CHECK, "inspect", rt.inspect(&unknown()).await)?;
    not_found(CHECK, "start", rt.start(&unknown()).await)?;
    not_found(CHECK, "pause", rt.pause(&unknown()).await)?;
    not_found(CHECK, "unpause", rt.unpause(&unknown()).await)
}

/// A missing image fails `ensure_image` and `create` with `Image`.
pub async fn missing_image_is_an_image_error(rt: &dyn ContainerRuntime, ctx: &ConformanceContext) -> CheckResult {
    const CHECK: &str = "missing_image_is_an_image_error";
    let mut inst = ctx.instance(50);
    inst.spec.image = ctx.missing_image.clone();
    isolated(rt, &ctx.node, &[inst.id], CHECK, async {
        match rt.ensure_image(&ctx.missing_image).await {
            Err(RuntimeError::Image { image, .. }) if image == ctx.missing_image.as_str() => {}
            other => return Err(fail(CHECK, format!("ensure_image of a missing image gave {other:?}, want Image naming it"))),
        }
        match rt.create(&ctx.node, &inst).await {
            Err(RuntimeError::Image { .. }) => Ok(()),
            other => Err(fail(CHECK, format!("create with a missing image gave {other:?}, want Image"))),
        }
    })
    .await
}

/// A node's listing holds its own containers and never another node's.
pub async fn list_shows_only_this_node(rt: &dyn ContainerRuntime, ctx: &ConformanceContext) -> CheckResult {
    const CHECK: &str = "list_shows_only_this_node";
    let mine = ctx.instance(60);
    let theirs = ctx.instance(61);
    let work = async {
        expect(CHECK, "ensure_image", rt.ensure_image(&mine.spec.image).await)?;
        let my_id = expect(CHECK, "create mine", rt.create(&ctx.node, &mine).await)?;
        let their_id = expect(CHECK, "create theirs", rt.create(&ctx.other_node, &theirs).await)?;
        let listed = expect(CHECK, "list", rt.list(&ctx.node).await)?;
        ensure(CHECK, listed.iter().any(|c| c.id == my_id), || "this node's container is not listed".into())?;
        ensure(CHECK, listed.iter().all(|c| c.id != their_id), || "another node's container is listed".into())?;
        let other = expect(CHECK, "list other", rt.list(&ctx.other_node).await)?;
        ensure(CHECK, other.iter().any(|c| c.id == their_id) && other.iter().all(|c| c.id != my_id), || "the other node's listing is wrong".into())
    };
    // Two nodes to clean, so `isolated` is applied by hand.
    clear(rt, &ctx.other_node, &[theirs.id]).await;
    let result = isolated(rt, &ctx.node, &[mine.id], CHECK, work).await;
    clear(rt, &ctx.other_node, &[theirs.id]).await;
    result
}

/// Runs `work` between two sweeps that remove any container of `instances` on `node`.
async fn isolated(rt: &dyn ContainerRuntime, node: &NodeId, instances: &[InstanceId], check: &'static str, work: impl Future<Output = CheckResult>) -> CheckResult {
    clear(rt, node, instances).await;
    let result = work.await;
    let leftovers = clear(rt, node, instances).await;
    match (result, leftovers) {
        (Err(e), _) => Err(e),
        (Ok(()), 0) => Ok(()),
        (Ok(()), n) => Err(fail(check, format!("{n} container(s) could not be cleaned up"))),
    }
}

/// Stops and removes every container of `instances` on `node`; returns how many could not be removed.
async fn clear(rt: &dyn ContainerRuntime, node: &NodeId, instances: &[InstanceId]) -> usize {
    let Ok(listed) = rt.list(node).await else { return usize::MAX };
    let mut stuck = 0;
    for c in listed.iter().filter(|c| instances.contains(&c.instance)) {
        let _ = rt.unpause(&c.id).await;
        let gone = rt.stop(&c.id, Duration::ZERO).await.is_ok() && rt.remove(&c.id).await.is_ok();
        stuck += usize::from(!gone);
    }
    stuck
}

/// ensure_image → create → start → wait_ready.
async fn launch(check: &'static str, rt: &dyn ContainerRuntime, ctx: &ConformanceContext, inst: &DesiredInstance) -> Result<(ContainerId, Endpoint), CheckFailure> {
    expect(check, "ensure_image", rt.ensure_image(&inst.spec.image).await)?;
    let id = expect(check, "create", rt.create(&ctx.node, inst).await)?;
    let endpoint = expect(check, "start", rt.start(&id).await)?;
    expect(check, "wait_ready", rt.wait_ready(inst.id, &endpoint, &inst.spec.health_path, ctx.ready_timeout).await)?;
    Ok((id, endpoint))
}

async fn find(check: &'static str, rt: &dyn ContainerRuntime, node: &NodeId, instance: InstanceId) -> Result<ContainerInfo, CheckFailure> {
    let listed = expect(check, "list", rt.list(node).await)?;
    let mut mine: Vec<_> = listed.into_iter().filter(|c| c.instance == instance).collect();
    match mine.len() {
        1 => Ok(mine.remove(0)),
        n => Err(fail(check, format!("list shows {n} containers for {instance}, want 1"))),
    }
}

async fn status_is(check: &'static str, rt: &dyn ContainerRuntime, id: &ContainerId, want: ContainerStatus) -> CheckResult {
    let info = expect(check, "inspect", rt.inspect(id).await)?;
    ensure(check, info.status == want, || format!("container is {:?}, want {want:?}", info.status))
}

async fn answers_2xx(check: &'static str, endpoint: &Endpoint, path: &str) -> CheckResult {
    match probe::get_status(endpoint, path, probe::TRY_TIMEOUT).await {
        Ok(code) if (200..300).contains(&code) => Ok(()),
        other => Err(fail(check, format!("GET {path} on {endpoint} gave {other:?}, want 2xx"))),
    }
}

/// An id no runtime will have.
fn unknown() -> ContainerId {
    ContainerId("sluice-conformance-no-such-container".into())
}

fn fail(check: &'static str, message: String) -> CheckFailure {
    CheckFailure { check, message }
}

fn ensure(check: &'static str, ok: bool, message: impl FnOnce() -> String) -> CheckResult {
    if ok {
        Ok(())
    } else {
        Err(fail(check, message()))
    }
}

fn expect<T>(check: &'static str, step: &str, result: Result<T, RuntimeError>) -> Result<T, CheckFailure> {
    result.map_err(|e| fail(check, format!("{step} failed: {e}")))
}

fn not_found<T: fmt::Debug>(check: &'static str, step: &str, result: Result<T, RuntimeError>) -> CheckResult {
    match result {
        Err(RuntimeError::NotFound(_)) => Ok(()),
        other => Err(fail(check, format!("{step} gave {other:?}, want NotFound"))),
    }
}
