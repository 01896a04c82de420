//! The sampling task: every interval, the host's figures and each running
//! instance container's, shown on the agent's `/metrics` and, with a metrics bus,
//! published (`sluice_bus::Publisher`).
//!
//! Both collectors read /proc and the cgroup files synchronously, a few small
//! files per container with no Docker call, so a pass runs inline.

use super::AgentMetrics;
use crate::container_stats::{ContainerCollector, Watched};
use crate::host::HostCollector;
use crate::runtime::ContainerInfo;
use sluice_bus::Publisher;
use sluice_common::wire::ContainerBatch;
use sluice_common::Clock;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{interval, MissedTickBehavior};

/// Samples every `every` until aborted. `watched` holds the running containers.
pub(super) async fn run(metrics: Arc<AgentMetrics>, publisher: Option<Arc<Publisher>>, clock: Arc<dyn Clock>, watched: watch::Receiver<Vec<ContainerInfo>>, every: Duration) {
    let mut host = HostCollector::new();
    let mut containers = ContainerCollector::default();
    let mut tick = interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let at = clock.now().millis();
        let figures = host.sample();
        if let Some(t) = &publisher {
            t.send(at, &figures);
        }
        metrics.set_host(figures);
        let list: Vec<Watched> = watched.borrow().iter().map(|c| Watched { container: c.id.0.clone(), instance: c.instance, function: c.function.clone() }).collect();
        let batch = ContainerBatch { containers: containers.sample(&list, std::time::Instant::now()) };
        if let Some(p) = &publisher {
            p.send(at, &batch);
        }
        metrics.set_containers(batch.containers);
    }
}
