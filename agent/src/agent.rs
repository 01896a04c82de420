//! The node agent: keeps this host's containers matching what the coordinator wants.
//!
//! One loop owns all state. A poller task long-polls for the desired set; on each
//! new set and on every resync tick the loop lists the containers, plans with
//! `reconcile::plan` and hands slow steps to tasks (`tasks`). A new set that
//! wants a paused container running thaws it before the listing: requests are
//! already waiting on it. Every state change
//! is reported at once through a reporter task, and each tick sends a heartbeat.
//! Nothing here stops a container because the coordinator is unreachable, and
//! shutting the agent down leaves containers running for the next agent to adopt.

mod config;
mod metrics;
mod poller;
mod reporter;
mod sampler;
mod table;
mod tasks;

pub use config::AgentConfig;
pub use metrics::AgentMetrics;

use crate::control::ControlPlane;
use crate::reconcile::{self, Action};
use crate::runtime::{ContainerRuntime, ContainerStatus, RuntimeError};
use sluice_bus::Publisher;
use sluice_common::backoff::{self, Backoff};
use sluice_common::labels::Labels;
use sluice_common::wire::EventKind as EventKindOut;
use sluice_common::{Clock, DesiredSet, FunctionName, InstanceId, InstanceState, NodeId, Resources};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use table::ReportTable;
use tasks::{Event, EventKind, Task, Worker};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::{interval, MissedTickBehavior};
use tracing::{debug, info, warn};

/// Longest a container listing may take; past it the pass is skipped, so a hung
/// daemon cannot hold up the loop (and the Ready reports it sends).
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Most images a report names (the coordinator accepts up to 1,024).
const MAX_REPORTED_IMAGES: usize = 256;

/// What a node reports for placement besides its capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub labels: Labels,
    pub max_instances: Option<u32>,
}

/// The agent of one node. Build it with `new`, then drive it with `run`.
pub struct Agent {
    node: NodeId,
    capacity: Resources,
    /// Labels and instance limit the node reports, for placement; they may
    /// change while the agent runs (the next report carries them).
    placement: watch::Sender<Placement>,
    runtime: Arc<dyn ContainerRuntime>,
    control: Arc<dyn ControlPlane>,
    clock: Arc<dyn Clock>,
    config: AgentConfig,
    metrics: Arc<AgentMetrics>,
    /// Where figures and instance events go; None when no metrics bus is set.
    publisher: Option<Arc<Publisher>>,
    /// Where this agent serves `/metrics` and logs, told to the coordinator in each report.
    agent_addr: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("node", &self.node).field("capacity", &self.capacity).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent for `node`, offering `capacity` to function instances.
    pub fn new(node: NodeId, capacity: Resources, runtime: Arc<dyn ContainerRuntime>, control: Arc<dyn ControlPlane>, clock: Arc<dyn Clock>, config: AgentConfig) -> Self {
        let placement = watch::Sender::new(Placement::default());
        Self { node, capacity, placement, runtime, control, clock, config, metrics: Arc::default(), publisher: None, agent_addr: None }
    }

    /// Reports `labels` (node selectors and rules read them) and at most
    /// `max_instances` instances for this node.
    pub fn with_placement(self, labels: Labels, max_instances: Option<u32>) -> Self {
        self.placement.send_replace(Placement { labels, max_instances });
        self
    }

    /// Where a new placement goes while the agent runs: a report with it is sent at once.
    pub fn placement(&self) -> watch::Sender<Placement> {
        self.placement.clone()
    }

    /// Publishes host and container figures and instance events through `publisher`
    /// (whose delivery to a bus the caller starts).
    pub fn with_publisher(mut self, publisher: Arc<Publisher>) -> Self {
        self.metrics.set_publisher(publisher.clone());
        self.publisher = Some(publisher);
        self
    }

    /// Reports `addr` as where the coordinator reaches this agent's `/v1/logs`.
    pub fn with_agent_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.agent_addr = Some(addr);
        self
    }

    /// The runtime the agent drives; its HTTP listener reads logs through it.
    pub fn runtime(&self) -> Arc<dyn ContainerRuntime> {
        self.runtime.clone()
    }

    /// The agent's figures, live while it runs.
    pub fn metrics(&self) -> Arc<AgentMetrics> {
        self.metrics.clone()
    }

    /// Runs until `shutdown` completes. Containers are left running on return;
    /// the next agent on this node adopts them.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let cfg = &self.config;
        let seed = backoff::seed(&[self.node.as_str().as_bytes(), &self.clock.now().millis().to_le_bytes()]);
        let (desired_tx, mut desired_rx) = watch::channel(None);
        let poller = tokio::spawn(poller::run(self.control.clone(), self.node.clone(), cfg.poll_wait, Backoff::new(cfg.retry_base, cfg.retry_cap, seed), desired_tx));
        let (reports_tx, reports_rx) = watch::channel(None);
        let (delivered_tx, delivered_rx) = watch::channel(0);
        let (watched_tx, watched_rx) = watch::channel(Vec::new());
        let sampler = tokio::spawn(sampler::run(self.metrics.clone(), self.publisher.clone(), self.clock.clone(), watched_rx, cfg.host_sample_interval));
        let reporter = tokio::spawn(reporter::run(self.control.clone(), reports_rx, delivered_tx, Backoff::new(cfg.retry_base, cfg.retry_cap, seed.rotate_left(32))));
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let worker = Worker { runtime: self.runtime.clone(), node: self.node.clone(), events: events_tx, metrics: self.metrics.clone() };
        let mut state = LoopState {
            desired: None,
            desired_at: tokio::time::Instant::now(),
            table: ReportTable::new(),
            inflight: HashMap::new(),
            next_serial: 0,
            reconciled: false,
            list_failing: false,
            worker,
            watched: watched_tx,
            addresses: HashMap::new(),
            paused: HashMap::new(),
            images: std::collections::BTreeSet::new(),
            reports: reports_tx,
            delivered: delivered_rx,
            agent: &self,
        };

        let mut placement = self.placement.subscribe();
        let mut tick = interval(cfg.resync_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        info!(node = %self.node, cpu_millis = self.capacity.cpu_millis, memory_mb = self.capacity.memory_mb, "agent started");
        loop {
            let (mut resync, mut heartbeat) = (false, false);
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(event) = events_rx.recv() => {
                    resync |= state.apply(event);
                    while let Ok(event) = events_rx.try_recv() {
                        resync |= state.apply(event);
                    }
                }
                Ok(()) = desired_rx.changed() => {
                    state.desired = desired_rx.borrow_and_update().clone();
                    state.desired_at = tokio::time::Instant::now();
                    resync = true;
                }
                _ = tick.tick() => (resync, heartbeat) = (true, true),
                Ok(()) = placement.changed() => heartbeat = true,
            }
            self.metrics.turned();
            // Report before reconciling: a Ready must not wait for a container listing.
            state.publish(heartbeat);
            if resync {
                state.reconcile().await;
                state.publish(false);
            }
        }
        poller.abort();
        reporter.abort();
        sampler.abort();
        state.abort_all();
        info!(node = %self.node, "agent stopped; containers left running");
    }
}

/// Whether an operation may be abandoned when its instance stops being wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Start or adopt: abandoning it loses nothing, the container is retired next pass.
    Launch,
    /// Pause, unpause, stop: short, and cut off midway they help no one.
    Other,
}

/// An operation in flight on one instance.
struct InFlight {
    serial: u64,
    function: FunctionName,
    kind: Kind,
    /// Revision of the desired set when the operation began.
    revision: u64,
    /// The container a pause freezes: once paused, a thaw needs it.
    pausing: Option<crate::runtime::ContainerId>,
    abort: AbortHandle,
}

/// Everything the loop owns while it runs.
struct LoopState<'a> {
    agent: &'a Agent,
    /// None until the first desired set arrives; until then no container is touched.
    desired: Option<DesiredSet>,
    /// When the current desired set arrived.
    desired_at: tokio::time::Instant,
    table: ReportTable,
    inflight: HashMap<InstanceId, InFlight>,
    next_serial: u64,
    /// Whether a pass has listed the containers yet; reports wait for it.
    reconciled: bool,
    list_failing: bool,
    worker: Worker,
    /// The running containers, for the sampler.
    watched: watch::Sender<Vec<crate::runtime::ContainerInfo>>,
    /// Each live container's address on its network, from the last listing.
    addresses: HashMap<InstanceId, std::net::IpAddr>,
    /// Instances whose one container was paused at the last listing, or that
    /// this agent paused since, with that container and its endpoint: what a
    /// thaw needs without listing again.
    paused: HashMap<InstanceId, (crate::runtime::ContainerId, Option<sluice_common::Endpoint>)>,
    /// Images instances ran from since the agent started: on this host's disk.
    images: std::collections::BTreeSet<String>,
    reports: watch::Sender<Option<reporter::Numbered>>,
    delivered: watch::Receiver<u64>,
}

impl LoopState<'_> {
    fn revision(&self) -> u64 {
        self.desired.as_ref().map_or(0, |d| d.revision)
    }

    /// Applies a task's event; returns whether a resync is due (the desired set
    /// moved on while the task ran, so something may have been deferred).
    fn apply(&mut self, event: Event) -> bool {
        let Some(op) = self.inflight.get(&event.instance).filter(|op| op.serial == event.serial) else {
            return false; // from an aborted task
        };
        match event.kind {
            EventKind::State { state, endpoint, reason } => {
                let function = op.function.clone();
                if let (InstanceState::Paused, Some(container)) = (state, &op.pausing) {
                    self.paused.insert(event.instance, (container.clone(), endpoint.clone()));
                }
                self.set_state(event.instance, &function, state, endpoint, reason);
                false
            }
            EventKind::Done => {
                let revision = op.revision;
                self.inflight.remove(&event.instance);
                revision != self.revision()
            }
        }
    }

    /// Sends the report if a state changed, or always when `heartbeat`. Nothing is
    /// sent before the first pass: until then the table does not hold the
    /// containers already running, and a report without them would read as losses.
    fn publish(&mut self, heartbeat: bool) {
        if !self.reconciled || (!heartbeat && !self.table.changed()) {
            return;
        }
        let a = self.agent;
        a.metrics.set_instances(self.table.states().into_values());
        a.metrics.set_desired_revision(self.revision());
        a.metrics.set_reports_delivered(*self.delivered.borrow());
        let (seq, mut report) = self.table.build(&a.node, a.capacity, a.clock.now());
        for r in &mut report.instances {
            r.addr = self.addresses.get(&r.id).copied();
        }
        let placement = a.placement.borrow().clone();
        report.labels = placement.labels;
        report.max_instances = placement.max_instances;
        report.agent_addr = a.agent_addr;
        // Images of instances that run (or ran) here are on this host: placing
        // another instance of one needs no pull. Kept once seen, up to a bound,
        // so the set changes (and is written to the log) only when it grows.
        let states = self.table.states();
        for d in self.desired.iter().flat_map(|d| &d.instances) {
            if self.images.len() < MAX_REPORTED_IMAGES && matches!(states.get(&d.id), Some(InstanceState::Ready | InstanceState::Paused)) {
                self.images.insert(d.spec.image.to_string());
            }
        }
        report.images = self.images.clone();
        self.reports.send_replace(Some((seq, report)));
    }

    /// Records a state in the report table, counting real changes and publishing
    /// them as events.
    fn set_state(&mut self, id: InstanceId, function: &FunctionName, state: InstanceState, endpoint: Option<sluice_common::Endpoint>, reason: Option<String>) {
        let before = self.table.state_of(id);
        if self.table.set(id, function, state, endpoint, reason.clone()) {
            self.agent.metrics.transition(state);
            if let (Some(publisher), Some(kind)) = (&self.agent.publisher, event_kind(before, state)) {
                publisher.event(kind, id, function, reason);
            }
        }
    }

    /// Lists, plans and executes one pass.
    async fn reconcile(&mut self) {
        let Some(desired) = self.desired.clone() else { return };
        let wanted: HashSet<InstanceId> = desired.instances.iter().map(|d| d.id).collect();
        self.abandon_unwanted_launches(&wanted);
        self.thaw_at_once(&desired);
        let a = self.agent;
        let listed = tokio::time::timeout(LIST_TIMEOUT, a.runtime.list(&a.node)).await;
        let observed = match listed.unwrap_or_else(|_| Err(RuntimeError::Backend(format!("listing containers took over {LIST_TIMEOUT:?}")))) {
            Ok(observed) => {
                a.metrics.set_runtime_unreachable(false);
                if std::mem::take(&mut self.list_failing) {
                    info!(node = %a.node, "container runtime reachable again");
                }
                observed
            }
            Err(e) => {
                a.metrics.set_runtime_unreachable(true);
                if !std::mem::replace(&mut self.list_failing, true) {
                    warn!(node = %a.node, error = %e, "cannot list containers; leaving them as they are");
                }
                return;
            }
        };
        self.reconciled = true;
        self.watched.send_replace(observed.iter().filter(|c| c.status == ContainerStatus::Running).cloned().collect());
        self.addresses = observed.iter().filter_map(|c| Some((c.instance, c.addr?))).collect();
        self.paused = paused_alone(&observed);
        let busy: HashSet<InstanceId> = self.inflight.keys().copied().collect();
        let actions = reconcile::plan(&desired.instances, &observed, &self.table.states(), &busy, a.config.stop_grace);
        if !actions.is_empty() {
            debug!(node = %a.node, revision = desired.revision, actions = actions.len(), "reconciling");
        }
        for action in actions {
            self.execute(action, desired.revision);
        }
        self.table.prune(&wanted, *self.delivered.borrow());
    }

    /// Unpauses, before listing the containers, every instance this desired set
    /// wants running that this agent paused, and whose one container the last
    /// listing showed paused or this agent has paused since. It is what the
    /// pass would decide (`reconcile` rules: wanted running, container paused),
    /// decided without waiting for the listing: requests already wait on the
    /// instance (a resume routes them there at once), and the unpause then
    /// runs beside the listing. If the container changed meanwhile, the
    /// unpause fails or finds it running, and the next pass repairs the rest.
    fn thaw_at_once(&mut self, desired: &DesiredSet) {
        let revision = desired.revision;
        for d in desired.instances.iter().filter(|d| d.state == sluice_common::DesiredState::Running) {
            if self.inflight.contains_key(&d.id) || self.table.state_of(d.id) != Some(InstanceState::Paused) {
                continue;
            }
            let Some((container, endpoint)) = self.paused.remove(&d.id) else { continue };
            debug!(instance = %d.id, "thawing before the listing");
            self.execute(Action::Unpause { instance: d.id, function: d.spec.name.clone(), container, endpoint }, revision);
        }
    }

    /// A start still in flight for an instance no longer wanted is cut short: the
    /// instance is reported Gone now, and its container, if it got one, is retired
    /// on this or the next pass.
    fn abandon_unwanted_launches(&mut self, wanted: &HashSet<InstanceId>) {
        let unwanted: Vec<InstanceId> = self.inflight.iter().filter(|(id, op)| op.kind == Kind::Launch && !wanted.contains(id)).map(|(id, _)| *id).collect();
        for id in unwanted {
            if let Some(op) = self.inflight.remove(&id) {
                op.abort.abort();
                info!(instance = %id, function = %op.function, "start abandoned: instance no longer wanted");
                let function = op.function.clone();
                self.set_state(id, &function, InstanceState::Gone, None, Some("no longer wanted while it was starting".into()));
            }
        }
    }

    fn execute(&mut self, action: Action, revision: u64) {
        match action {
            Action::Start(d) => {
                info!(instance = %d.id, function = %d.spec.name, image = %d.spec.image, "starting instance");
                self.set_state(d.id, &d.spec.name, InstanceState::Starting, None, None);
                let (id, function) = (d.id, d.spec.name.clone());
                self.spawn(id, function, Kind::Launch, revision, |task| tasks::start(task, d));
            }
            Action::Adopt { desired, container, endpoint } => {
                // Ready at once: the coordinator most likely knew it Ready before the
                // agent restarted, and a report must not drop it. The health check
                // runs behind and reports Gone if it fails.
                let (id, function) = (desired.id, desired.spec.name.clone());
                info!(instance = %id, function = %function, endpoint = %endpoint, "adopting running container");
                self.set_state(id, &function, InstanceState::Ready, Some(endpoint.clone()), None);
                self.spawn(id, function, Kind::Launch, revision, |task| tasks::adopt(task, desired, container, endpoint));
            }
            Action::MarkPaused { instance, function, endpoint } => {
                info!(instance = %instance, function = %function, "adopted paused container");
                self.set_state(instance, &function, InstanceState::Paused, endpoint, None);
            }
            Action::Pause { instance, function, container, endpoint } => {
                let frozen = container.clone();
                self.spawn(instance, function, Kind::Other, revision, |task| tasks::pause(task, container, endpoint));
                if let Some(op) = self.inflight.get_mut(&instance) {
                    op.pausing = Some(frozen);
                }
            }
            Action::Unpause { instance, function, container, endpoint } => {
                let desired_at = self.desired_at;
                self.spawn(instance, function, Kind::Other, revision, |task| tasks::unpause(task, container, endpoint, desired_at));
            }
            Action::Retire { instance, function, containers, grace } => {
                info!(instance = %instance, function = %function, grace_ms = grace.as_millis() as u64, "stopping instance");
                // Gone stays Gone: a retired leftover of a lost instance is not "stopping".
                self.set_state(instance, &function, InstanceState::Stopping, None, None);
                let reason = Some("stopped: no longer wanted on this node".to_string());
                self.spawn(instance, function, Kind::Other, revision, |task| tasks::teardown(task, containers, grace, reason));
            }
            Action::Reap { instance, function, containers, reason } => {
                warn!(instance = %instance, function = %function, reason = %reason, "instance lost");
                self.set_state(instance, &function, InstanceState::Gone, None, Some(reason));
                if !containers.is_empty() {
                    self.spawn(instance, function, Kind::Other, revision, |task| tasks::teardown(task, containers, Duration::ZERO, None));
                }
            }
            Action::Discard { instance, function, containers, grace } => {
                info!(instance = %instance, containers = containers.len(), "removing extra containers");
                self.spawn(instance, function, Kind::Other, revision, |task| tasks::teardown(task, containers, grace, None));
            }
        }
    }

    fn spawn<F>(&mut self, instance: InstanceId, function: FunctionName, kind: Kind, revision: u64, work: impl FnOnce(Task) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.next_serial += 1;
        let serial = self.next_serial;
        let handle = tokio::spawn(work(Task::new(self.worker.clone(), instance, serial)));
        self.inflight.insert(instance, InFlight { serial, function, kind, revision, pausing: None, abort: handle.abort_handle() });
    }

    fn abort_all(&mut self) {
        for (_, op) in self.inflight.drain() {
            op.abort.abort();
        }
    }
}

/// Instances with exactly one container, paused, from a listing.
fn paused_alone(observed: &[crate::runtime::ContainerInfo]) -> HashMap<InstanceId, (crate::runtime::ContainerId, Option<sluice_common::Endpoint>)> {
    let mut count: HashMap<InstanceId, usize> = HashMap::new();
    for c in observed {
        *count.entry(c.instance).or_default() += 1;
    }
    observed.iter().filter(|c| c.status == ContainerStatus::Paused && count.get(&c.instance) == Some(&1)).map(|c| (c.instance, (c.id.clone(), c.endpoint.clone()))).collect()
}

/// The event a state change is, if any. Gone after Stopping was asked for;
/// Gone from anything else is a failure.
fn event_kind(before: Option<InstanceState>, now: InstanceState) -> Option<EventKindOut> {
    Some(match now {
        InstanceState::Starting => EventKindOut::InstanceStarted,
        InstanceState::Ready => EventKindOut::InstanceReady,
        InstanceState::Paused => EventKindOut::InstancePaused,
        InstanceState::Gone if before == Some(InstanceState::Stopping) => EventKindOut::InstanceStopped,
        InstanceState::Gone => EventKindOut::InstanceFailed,
        InstanceState::Pending | InstanceState::Stopping => return None,
    })
}
