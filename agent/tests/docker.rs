//! `DockerRuntime` against the local Docker Engine: the conformance suite and the
//! secure-defaults audit, and the whole agent on real containers. Needs a running
//! daemon and an image answering 2xx on its health path: `scripts/test.sh` builds
//! `sluice/hello:latest` first (override with SLUICE_TEST_IMAGE). Without them
//! these tests fail, loudly; they never skip.

mod support;

use sluice_agent::runtime::conformance::{self, ConformanceContext};
use sluice_agent::runtime::docker::{check_secure_defaults, DockerConfig, DockerRuntime};
use sluice_agent::runtime::{probe, ContainerRuntime};
use sluice_agent::{Agent, AgentConfig};
use sluice_common::{DesiredInstance, DesiredState, FunctionName, FunctionSpec, ImageRef, InstanceId, InstanceState, NodeId, Resources, SystemClock};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::FakeControl;
use tokio::sync::oneshot;

fn template(id: u64) -> DesiredInstance {
    let image = std::env::var("SLUICE_TEST_IMAGE").unwrap_or_else(|_| "sluice/hello:latest".into());
    let mut spec = FunctionSpec::new(FunctionName::new("conformance").unwrap(), ImageRef::parse(image).unwrap());
    if let Ok(path) = std::env::var("SLUICE_TEST_HEALTH_PATH") {
        spec.health_path = path;
    }
    spec.limits.memory_mb = 64;
    spec.limits.cpu_millis = 500;
    spec.limits.pids = 64;
    DesiredInstance { id: InstanceId(id), spec, state: DesiredState::Running }
}

#[tokio::test]
async fn docker_runtime_conforms() {
    let rt = DockerRuntime::connect(DockerConfig::default()).await.unwrap();
    let ctx = ConformanceContext::new(NodeId::new("agent-docker-test").unwrap(), template(900_000), true);
    conformance::run_all(&rt, &ctx).await.unwrap();
}

#[tokio::test]
async fn docker_containers_carry_secure_defaults() {
    let rt = DockerRuntime::connect(DockerConfig::default()).await.unwrap();
    let node = NodeId::new("agent-docker-test").unwrap();
    let inst = template(900_500);
    rt.ensure_image(&inst.spec.image).await.unwrap();
    let id = rt.create(&node, &inst).await.unwrap();
    let t = Instant::now();
    let started = rt.start(&id).await;
    let audited = match &started {
        Ok(_) => check_secure_defaults(&rt, &id, &inst.spec.limits).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    eprintln!("start took {:?}", t.elapsed());
    rt.stop(&id, Duration::ZERO).await.unwrap();
    rt.remove(&id).await.unwrap();
    audited.unwrap();
}

fn spawn_agent(rt: Arc<DockerRuntime>, control: Arc<FakeControl>, node: &NodeId) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let agent = Agent::new(
        node.clone(),
        Resources { cpu_millis: 2000, memory_mb: 1024 },
        rt,
        control,
        Arc::new(SystemClock),
        AgentConfig { stop_grace: Duration::from_secs(2), ..AgentConfig::default() },
    );
    let (stop, rx) = oneshot::channel::<()>();
    (
        stop,
        tokio::spawn(agent.run(async move {
            let _ = rx.await;
        })),
    )
}

async fn wait_state(control: &FakeControl, id: u64, want: InstanceState, within: Duration) -> Duration {
    let began = Instant::now();
    while control.state(id) != Some(want) {
        assert!(began.elapsed() < within, "i{id} not {want} within {within:?}; history {:?}", control.history(id));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    began.elapsed()
}

/// The whole agent on Docker: start, serve, adopt after a restart, notice a crash, stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_agent_lifecycle() {
    let rt = Arc::new(DockerRuntime::connect(DockerConfig::default()).await.unwrap());
    let node = NodeId::new("agent-docker-lifecycle").unwrap();
    let control = FakeControl::new();
    let (a, b) = (template(901_001), template(901_002));
    let (stop, handle) = spawn_agent(rt.clone(), control.clone(), &node);
    control.want(vec![a.clone(), b.clone()]);
    wait_state(&control, a.id.0, InstanceState::Ready, Duration::from_secs(30)).await;
    wait_state(&control, b.id.0, InstanceState::Ready, Duration::from_secs(30)).await;
    let endpoint = control.latest(a.id.0).unwrap().endpoint.unwrap();
    assert_eq!(probe::get_status(&endpoint, &a.spec.health_path, probe::TRY_TIMEOUT).await.unwrap() / 100, 2);
    let listed = rt.list(&node).await.unwrap();
    assert_eq!(listed.len(), 2);
    for c in &listed {
        check_secure_defaults(&rt, &c.id, &a.spec.limits).await.unwrap();
    }

    // Restart: the new agent adopts both containers instead of recreating them.
    let _ = stop.send(());
    handle.await.unwrap();
    control.reports.lock().unwrap().clear();
    let (stop, handle) = spawn_agent(rt.clone(), control.clone(), &node);
    wait_state(&control, a.id.0, InstanceState::Ready, Duration::from_secs(10)).await;
    assert_eq!(control.latest(a.id.0).unwrap().endpoint, Some(endpoint));
    let mut after: Vec<_> = rt.list(&node).await.unwrap().into_iter().map(|c| c.id.0).collect();
    let mut before: Vec<_> = listed.iter().map(|c| c.id.0.clone()).collect();
    after.sort();
    before.sort();
    assert_eq!(after, before, "adopted, not recreated");

    // A crash (kill) is reported Gone with the exit code and the container removed.
    let b_container = listed.iter().find(|c| c.instance == b.id).unwrap().id.clone();
    rt.client().kill_container(&b_container.0, None).await.unwrap();
    wait_state(&control, b.id.0, InstanceState::Gone, Duration::from_secs(5)).await;
    assert!(control.latest(b.id.0).unwrap().reason.unwrap().contains("137"));

    // Undesired: stopped and removed.
    control.want(vec![]);
    wait_state(&control, a.id.0, InstanceState::Gone, Duration::from_secs(10)).await;
    let began = Instant::now();
    while !rt.list(&node).await.unwrap().is_empty() {
        assert!(began.elapsed() < Duration::from_secs(10), "containers left: {:?}", rt.list(&node).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    handle.await.unwrap();
}
