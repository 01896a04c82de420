//! The agent's loop against `FakeRuntime` and a scripted control plane, in tokio's
//! paused time: starts, stops, crashes, failures, adoption and outages.

mod support;

use sluice_agent::runtime::fake::{FakeRuntime, Op};
use sluice_agent::runtime::{ContainerRuntime, ContainerStatus};
use sluice_agent::{Agent, AgentConfig};
use sluice_common::{DesiredInstance, DesiredState, FunctionName, FunctionSpec, ImageRef, InstanceId, InstanceState, ManualClock, NodeId, Resources, Timestamp};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use support::FakeControl;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

fn image() -> ImageRef {
    ImageRef::parse("sluice/hello:latest").unwrap()
}

fn node() -> NodeId {
    NodeId::new("n1").unwrap()
}

fn inst(id: u64) -> DesiredInstance {
    DesiredInstance { id: InstanceId(id), spec: FunctionSpec::new(FunctionName::new("hello").unwrap(), image()), state: DesiredState::Running }
}

fn paused(id: u64) -> DesiredInstance {
    DesiredInstance { state: DesiredState::Paused, ..inst(id) }
}

struct Running {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap();
    }
}

fn spawn_agent(rt: &Arc<FakeRuntime>, control: &Arc<FakeControl>) -> Running {
    let agent = Agent::new(
        node(),
        Resources { cpu_millis: 2000, memory_mb: 1024 },
        rt.clone(),
        control.clone(),
        Arc::new(ManualClock::new(Timestamp(1_000))),
        AgentConfig { stop_grace: Duration::from_secs(3), ..AgentConfig::default() },
    );
    let (stop, rx) = oneshot::channel();
    let handle = tokio::spawn(agent.run(async move {
        let _ = rx.await;
    }));
    Running { stop, handle }
}

fn setup() -> (Arc<FakeRuntime>, Arc<FakeControl>) {
    (Arc::new(FakeRuntime::with_images([image()])), FakeControl::new())
}

/// Waits (in tokio time) until `cond` holds; fails the test after a minute.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        sleep(Duration::from_millis(5)).await;
    }
}

fn live_containers(rt: &FakeRuntime) -> usize {
    rt.containers().iter().filter(|c| matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused)).count()
}

#[tokio::test(start_paused = true)]
async fn starts_desired_instances_and_reports_ready() {
    let (rt, control) = setup();
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 ready", || control.state(1) == Some(InstanceState::Ready)).await;
    assert_eq!(control.history(1), vec![InstanceState::Starting, InstanceState::Ready]);
    let report = control.latest(1).unwrap();
    let container = rt.containers().into_iter().find(|c| c.instance == InstanceId(1)).unwrap();
    assert_eq!(report.endpoint, container.endpoint);
    assert!(report.endpoint.is_some());
    let last = control.reports().last().cloned().unwrap();
    assert_eq!(last.node, node());
    assert_eq!(last.capacity, Resources { cpu_millis: 2000, memory_mb: 1024 });
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ready_is_reported_without_waiting_for_a_resync() {
    let (rt, control) = setup();
    let agent = spawn_agent(&rt, &control);
    // Let the first (empty) desired set arrive and the loop settle between ticks.
    sleep(Duration::from_millis(1_500)).await;
    let asked = Instant::now();
    control.want(vec![inst(1)]);
    eventually("i1 ready", || control.state(1) == Some(InstanceState::Ready)).await;
    assert!(asked.elapsed() < Duration::from_millis(100), "took {:?}", asked.elapsed());
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cold_starts_run_in_parallel() {
    let (rt, control) = setup();
    rt.set_delay(Op::WaitReady, Duration::from_secs(5));
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1), inst(2), inst(3)]);
    let began = Instant::now();
    eventually("all ready", || (1..=3).all(|i| control.state(i) == Some(InstanceState::Ready))).await;
    assert!(began.elapsed() < Duration::from_secs(7), "starts were serialised: {:?}", began.elapsed());
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_start_does_not_block_a_stop() {
    let (rt, control) = setup();
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 ready", || control.state(1) == Some(InstanceState::Ready)).await;
    rt.set_delay(Op::WaitReady, Duration::from_secs(25));
    control.want(vec![inst(2)]);
    let began = Instant::now();
    eventually("i1 gone", || control.state(1) == Some(InstanceState::Gone)).await;
    assert!(began.elapsed() < Duration::from_secs(2), "stop waited {:?}", began.elapsed());
    assert_eq!(control.state(2), Some(InstanceState::Starting));
    eventually("i2 ready", || control.state(2) == Some(InstanceState::Ready)).await;
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn undesired_instances_are_stopped_removed_and_forgotten() {
    let (rt, control) = setup();
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1), inst(2)]);
    eventually("both ready", || control.state(1) == Some(InstanceState::Ready) && control.state(2) == Some(InstanceState::Ready)).await;
    control.want(vec![inst(2)]);
    eventually("i1 gone", || control.state(1) == Some(InstanceState::Gone)).await;
    assert_eq!(control.history(1), vec![InstanceState::Starting, InstanceState::Ready, InstanceState::Stopping, InstanceState::Gone]);
    assert!(rt.calls().iter().any(|c| matches!(c, sluice_agent::runtime::fake::Call::Stop { grace, .. } if *grace == Duration::from_secs(3))));
    assert!(rt.containers().iter().all(|c| c.instance != InstanceId(1)), "container removed");
    eventually("i1 dropped from reports", || control.reports().last().is_some_and(|r| r.instances.iter().all(|i| i.id != InstanceId(1)))).await;
    assert_eq!(control.state(2), Some(InstanceState::Ready));
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_container_is_reported_gone_and_not_restarted() {
    let (rt, control) = setup();
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 ready", || control.state(1) == Some(InstanceState::Ready)).await;
    assert!(rt.crash(InstanceId(1), 137));
    eventually("i1 gone", || control.state(1) == Some(InstanceState::Gone)).await;
    let reason = control.latest(1).unwrap().reason.unwrap();
    assert!(reason.contains("137"), "{reason}");
    eventually("crashed container removed", || rt.containers().is_empty()).await;
    // Still desired (the coordinator has not caught up): it must not come back under its id.
    sleep(Duration::from_secs(5)).await;
    assert_eq!(rt.count(Op::Create), 1);
    assert_eq!(control.state(1), Some(InstanceState::Gone), "kept while still desired");
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_vanished_container_is_reported_gone() {
    let (rt, control) = setup();
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 ready", || control.state(1) == Some(InstanceState::Ready)).await;
    rt.vanish(InstanceId(1));
    eventually("i1 gone", || control.state(1) == Some(InstanceState::Gone)).await;
    assert!(control.latest(1).unwrap().reason.unwrap().contains("disappeared"));
    sleep(Duration::from_secs(3)).await;
    assert_eq!(rt.count(Op::Create), 1);
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_health_check_is_gone_with_its_container_removed() {
    let (rt, control) = setup();
    rt.set_unhealthy(InstanceId(1));
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 gone", || control.state(1) == Some(InstanceState::Gone)).await;
    assert_eq!(control.history(1), vec![InstanceState::Starting, InstanceState::Gone]);
    assert!(control.latest(1).unwrap().reason.unwrap().contains("did not become ready"));
    eventually("container removed", || rt.containers().is_empty()).await;
    sleep(Duration::from_secs(3)).await;
    assert_eq!(rt.count(Op::Create), 1, "a failed instance is not retried under its id");
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_is_gone_with_the_reason() {
    let (rt, control) = setup();
    let agent = spawn_agent(&rt, &control);
    let mut missing = inst(1);
    missing.spec.image = ImageRef::parse("127.0.0.1:1/nope:latest").unwrap();
    control.want(vec![missing]);
    eventually("i1 gone", || control.state(1) == Some(InstanceState::Gone)).await;
    let reason = control.latest(1).unwrap().reason.unwrap();
    assert!(reason.contains("127.0.0.1:1/nope:latest") && reason.contains("not available"), "{reason}");
    assert_eq!(rt.count(Op::Create), 0);
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn pauses_and_unpauses_as_desired() {
    let (rt, control) = setup();
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 ready", || control.state(1) == Some(InstanceState::Ready)).await;
    control.want(vec![paused(1)]);
    eventually("i1 paused", || control.state(1) == Some(InstanceState::Paused)).await;
    assert_eq!(rt.containers()[0].status, ContainerStatus::Paused);
    assert!(control.latest(1).unwrap().endpoint.is_some(), "a paused instance keeps its endpoint");
    control.want(vec![inst(1)]);
    eventually("i1 ready again", || control.state(1) == Some(InstanceState::Ready)).await;
    assert_eq!(rt.containers()[0].status, ContainerStatus::Running);
    assert_eq!(rt.count(Op::Create), 1);
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_instance_wanted_running_is_thawed_before_the_listing_and_not_health_checked() {
    let (rt, control) = setup();
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 ready", || control.state(1) == Some(InstanceState::Ready)).await;
    control.want(vec![paused(1)]);
    eventually("i1 paused", || control.state(1) == Some(InstanceState::Paused)).await;
    // A slow container listing: requests waiting on the resume must not wait for it.
    rt.set_delay(Op::List, Duration::from_secs(5));
    rt.clear_calls();
    let asked = Instant::now();
    control.want(vec![inst(1)]);
    eventually("i1's container running", || rt.containers()[0].status == ContainerStatus::Running).await;
    assert!(asked.elapsed() < Duration::from_secs(1), "thawed after {:?}: it waited for the listing", asked.elapsed());
    eventually("i1 ready again", || control.state(1) == Some(InstanceState::Ready)).await;
    // The unpause ran beside the listing, not after it (which took 5 s).
    let ops: Vec<Op> = rt.calls().iter().map(|c| c.op()).collect();
    assert!(!ops.contains(&Op::WaitReady), "no health check after a thaw: {ops:?}");
    assert_eq!(rt.count(Op::Unpause), 1, "{ops:?}");
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_instance_dropped_mid_start_is_abandoned_and_cleaned_up() {
    let (rt, control) = setup();
    rt.set_delay(Op::WaitReady, Duration::from_secs(30));
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 starting", || control.state(1) == Some(InstanceState::Starting)).await;
    eventually("container created", || !rt.containers().is_empty()).await;
    let began = Instant::now();
    control.want(vec![]);
    eventually("i1 gone", || control.state(1) == Some(InstanceState::Gone)).await;
    assert!(began.elapsed() < Duration::from_secs(2), "abandoning waited {:?}", began.elapsed());
    eventually("container removed", || rt.containers().is_empty()).await;
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_leaves_containers_and_a_new_agent_adopts_them() {
    let (rt, control) = setup();
    let first = spawn_agent(&rt, &control);
    control.want(vec![inst(1), paused(2)]);
    eventually("ready and paused", || control.state(1) == Some(InstanceState::Ready) && control.state(2) == Some(InstanceState::Paused)).await;
    let endpoint = control.latest(1).unwrap().endpoint;
    first.shutdown().await;
    assert_eq!(live_containers(&rt), 2, "shutdown stops nothing");

    control.reports.lock().unwrap().clear();
    rt.clear_calls();
    let second = spawn_agent(&rt, &control);
    eventually("adopted", || control.state(1) == Some(InstanceState::Ready) && control.state(2) == Some(InstanceState::Paused)).await;
    assert_eq!(control.latest(1).unwrap().endpoint, endpoint);
    assert_eq!(rt.count(Op::Create), 0, "adopted, not recreated");
    assert_eq!(rt.count(Op::WaitReady), 1, "the running one is health-checked once");
    assert_eq!(rt.containers().len(), 2);
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_touched_before_the_first_desired_set() {
    let (rt, control) = setup();
    let first = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 ready", || control.state(1) == Some(InstanceState::Ready)).await;
    first.shutdown().await;

    control.down.store(true, Ordering::SeqCst);
    rt.clear_calls();
    let second = spawn_agent(&rt, &control);
    sleep(Duration::from_secs(30)).await;
    assert_eq!(live_containers(&rt), 1);
    assert_eq!(rt.count(Op::List), 0, "no desired set yet: the agent must not even plan");
    control.down.store(false, Ordering::SeqCst);
    eventually("adopted", || control.state(1) == Some(InstanceState::Ready)).await;
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_coordinator_stops_nothing_and_is_retried_with_backoff() {
    let (rt, control) = setup();
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 ready", || control.state(1) == Some(InstanceState::Ready)).await;

    control.down.store(true, Ordering::SeqCst);
    let calls_before = control.desired_calls.load(Ordering::SeqCst);
    sleep(Duration::from_secs(60)).await;
    let retries = control.desired_calls.load(Ordering::SeqCst) - calls_before;
    // Backing off from 100 ms to a 5 s cap: a score of retries a minute, not hundreds.
    assert!((6..=30).contains(&retries), "{retries} retries in a minute");
    assert_eq!(live_containers(&rt), 1, "an outage stops nothing");

    let reports_before = control.reports().len();
    control.down.store(false, Ordering::SeqCst);
    control.want(vec![inst(1), inst(2)]);
    eventually("i2 ready after the outage", || control.state(2) == Some(InstanceState::Ready)).await;
    assert!(control.reports().len() > reports_before);
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn heartbeats_are_sent_every_resync() {
    let (rt, control) = setup();
    let agent = spawn_agent(&rt, &control);
    sleep(Duration::from_millis(500)).await;
    let before = control.reports().len();
    sleep(Duration::from_secs(10)).await;
    let beats = control.reports().len() - before;
    assert!((9..=11).contains(&beats), "{beats} reports in 10 s");
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn runtime_failures_are_retried_on_the_next_pass() {
    let (rt, control) = setup();
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 ready", || control.state(1) == Some(InstanceState::Ready)).await;
    rt.fail_next(Op::Stop, 2);
    rt.fail_next(Op::List, 2);
    control.want(vec![]);
    eventually("i1 gone", || control.state(1) == Some(InstanceState::Gone)).await;
    assert!(rt.containers().is_empty());
    assert_eq!(rt.count(Op::Stop), 3, "two failures, then success");
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn only_this_nodes_containers_are_managed() {
    let (rt, control) = setup();
    let other = NodeId::new("n2").unwrap();
    let foreign = rt.create(&other, &inst(50)).await.unwrap();
    rt.start(&foreign).await.unwrap();
    let agent = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 ready", || control.state(1) == Some(InstanceState::Ready)).await;
    sleep(Duration::from_secs(3)).await;
    assert_eq!(rt.inspect(&foreign).await.unwrap().status, ContainerStatus::Running);
    assert!(control.latest(50).is_none());
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn no_report_before_the_first_pass() {
    let (rt, control) = setup();
    control.desired_down.store(true, Ordering::SeqCst);
    let agent = spawn_agent(&rt, &control);
    sleep(Duration::from_secs(5)).await;
    assert!(control.reports().is_empty(), "a report before the containers were listed would omit them");
    control.desired_down.store(false, Ordering::SeqCst);
    eventually("first report", || !control.reports().is_empty()).await;
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_adopted_container_that_fails_its_health_check_is_gone() {
    let (rt, control) = setup();
    let first = spawn_agent(&rt, &control);
    control.want(vec![inst(1)]);
    eventually("i1 ready", || control.state(1) == Some(InstanceState::Ready)).await;
    first.shutdown().await;

    rt.set_unhealthy(InstanceId(1));
    control.reports.lock().unwrap().clear();
    let second = spawn_agent(&rt, &control);
    eventually("i1 gone", || control.state(1) == Some(InstanceState::Gone)).await;
    assert_eq!(control.history(1), vec![InstanceState::Ready, InstanceState::Gone], "adopted Ready at once, then lost");
    assert!(control.latest(1).unwrap().reason.unwrap().contains("unhealthy"));
    eventually("container removed", || rt.containers().is_empty()).await;
    second.shutdown().await;
}
