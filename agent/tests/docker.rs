//! `DockerRuntime` against the local Docker Engine: the conformance suite and the
//! secure-defaults audit. Needs a running daemon and an image answering 2xx on
//! its health path, so these are ignored by default; run them with
//! `SLUICE_TEST_IMAGE=sluice/hello:latest cargo test -p sluice-agent --test docker -- --ignored`.
//! The workspace's tests/ crate runs the same suite end to end.

mod support;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use sluice_agent::runtime::conformance::{self, ConformanceContext};
use sluice_agent::runtime::docker::{check_secure_defaults, DockerConfig, DockerRuntime};
use sluice_agent::runtime::{probe, ContainerRuntime};
use sluice_agent::{Agent, AgentConfig};
use sluice_common::{DesiredInstance, DesiredState, Endpoint, FunctionName, FunctionSpec, ImageRef, InstanceId, InstanceState, NodeId, Resources, SystemClock};
use std::collections::HashMap;
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
#[ignore = "needs Docker and SLUICE_TEST_IMAGE (default sluice/hello:latest); run with --ignored"]
async fn docker_runtime_conforms() {
    let rt = DockerRuntime::connect(DockerConfig::default()).await.unwrap();
    let ctx = ConformanceContext::new(NodeId::new("agent-docker-test").unwrap(), template(900_000), true);
    conformance::run_all(&rt, &ctx).await.unwrap();
}

#[tokio::test]
#[ignore = "needs Docker and SLUICE_TEST_IMAGE (default sluice/hello:latest); run with --ignored"]
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
    let agent = Agent::new(node.clone(), Resources { cpu_millis: 2000, memory_mb: 1024 }, rt, control, Arc::new(SystemClock), AgentConfig { stop_grace: Duration::from_secs(2), ..AgentConfig::default() });
    let (stop, rx) = oneshot::channel::<()>();
    (stop, tokio::spawn(agent.run(async move {
        let _ = rx.await;
    })))
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
#[ignore = "needs Docker and SLUICE_TEST_IMAGE (default sluice/hello:latest); run with --ignored"]
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

/// Raw create+start+first response, straight on bollard with no limits, the way a
/// benchmark baseline would do it; returns the milliseconds it took.
async fn raw_cold_start(docker: &bollard::Docker, image: &str, name: &str) -> f64 {
    let began = Instant::now();
    let binding = PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) };
    let body = ContainerCreateBody {
        image: Some(image.into()),
        exposed_ports: Some(vec!["8080/tcp".into()]),
        host_config: Some(HostConfig { port_bindings: Some(HashMap::from([("8080/tcp".to_string(), Some(vec![binding]))])), ..Default::default() }),
        ..Default::default()
    };
    let id = docker.create_container(Some(CreateContainerOptionsBuilder::default().name(name).build()), body).await.unwrap().id;
    docker.start_container(&id, None).await.unwrap();
    let inspect = docker.inspect_container(&id, None).await.unwrap();
    let port: u16 = inspect.network_settings.unwrap().ports.unwrap()["8080/tcp"].as_ref().unwrap()[0].host_port.as_ref().unwrap().parse().unwrap();
    let endpoint = Endpoint { host: "127.0.0.1".into(), port };
    while !matches!(probe::get_status(&endpoint, "/", probe::TRY_TIMEOUT).await, Ok(200..=299)) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ms = began.elapsed().as_secs_f64() * 1000.0;
    docker.remove_container(&id, Some(RemoveContainerOptionsBuilder::default().force(true).build())).await.unwrap();
    ms
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Cold start through the runtime and through the whole agent, against the raw
/// baseline. Prints the numbers; fails only if the agent is grossly slower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker and SLUICE_TEST_IMAGE (default sluice/hello:latest); run with --ignored --nocapture"]
async fn docker_cold_start_timings() {
    let rounds: u64 = std::env::var("SLUICE_TEST_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(10);
    let rt = Arc::new(DockerRuntime::connect(DockerConfig::default()).await.unwrap());
    let node = NodeId::new("agent-docker-timing").unwrap();
    let image = template(0).spec.image;
    rt.ensure_image(&image).await.unwrap();

    // What the image cache saves: one inspect round trip per cold start.
    let fresh = DockerRuntime::connect(DockerConfig::default()).await.unwrap();
    let t = Instant::now();
    fresh.ensure_image(&image).await.unwrap();
    let uncached = t.elapsed();
    let t = Instant::now();
    fresh.ensure_image(&image).await.unwrap();
    eprintln!("ensure_image: {:.2} ms uncached, {:.3} ms cached", uncached.as_secs_f64() * 1e3, t.elapsed().as_secs_f64() * 1e3);

    let control = FakeControl::new();
    let (stop, handle) = spawn_agent(rt.clone(), control.clone(), &node);
    control.want(vec![]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (mut raw, mut runtime, mut agent) = (vec![], vec![], vec![]);
    let mut steps: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        raw.push(raw_cold_start(rt.client(), image.as_str(), &format!("sluice-raw-timing-{round}")).await);

        let inst = template(902_000 + round);
        let t = Instant::now();
        rt.ensure_image(&inst.spec.image).await.unwrap();
        let id = rt.create(&NodeId::new("agent-docker-timing-rt").unwrap(), &inst).await.unwrap();
        let created = t.elapsed();
        let ep = rt.start(&id).await.unwrap();
        let started = t.elapsed();
        rt.wait_ready(inst.id, &ep, &inst.spec.health_path, Duration::from_secs(30)).await.unwrap();
        runtime.push(t.elapsed().as_secs_f64() * 1e3);
        steps[0].push(created.as_secs_f64() * 1e3);
        steps[1].push((started - created).as_secs_f64() * 1e3);
        steps[2].push((t.elapsed() - started).as_secs_f64() * 1e3);
        rt.stop(&id, Duration::ZERO).await.unwrap();
        rt.remove(&id).await.unwrap();

        let inst = template(903_000 + round);
        let t = Instant::now();
        control.want(vec![inst.clone()]);
        wait_state(&control, inst.id.0, InstanceState::Ready, Duration::from_secs(30)).await;
        agent.push(t.elapsed().as_secs_f64() * 1e3);
        control.want(vec![]);
        wait_state(&control, inst.id.0, InstanceState::Gone, Duration::from_secs(30)).await;
        // Let the removal finish so rounds do not overlap.
        while !rt.list(&node).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let _ = stop.send(());
    handle.await.unwrap();
    eprintln!("raw     create+start+first 2xx: median {:.1} ms  all {raw:.0?}", median(raw.clone()));
    eprintln!("runtime ensure+create+start+ready: median {:.1} ms  all {runtime:.0?}", median(runtime.clone()));
    let [create, start, ready] = steps.map(median);
    eprintln!("runtime steps (median): ensure+create {create:.1} ms, start+inspect {start:.1} ms, health check {ready:.1} ms");
    eprintln!("agent   desired -> Ready reported: median {:.1} ms  all {agent:.0?}", median(agent.clone()));
    assert!(median(agent) < 3.0 * median(raw), "the agent is far slower than raw Docker");
}
