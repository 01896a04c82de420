//! The agent's own figures, for `/metrics`: its instances by state, the state
//! changes it made, how long thawing paused instances takes, the images its GC removed, whether its
//! container runtime and coordinator answer, and the host's latest sample.

use crate::host::{self, HostSample};
use sluice_bus::Publisher;
use sluice_common::metrics::{header, sample, Histogram};
use sluice_common::wire::ContainerFigures;
use sluice_common::InstanceState;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const STATES: [InstanceState; 6] = InstanceState::ALL;

fn slot(state: InstanceState) -> usize {
    STATES.iter().position(|s| *s == state).expect("every state is listed")
}

#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// Instances in each state, as of the last report.
    instances: [AtomicU64; 6],
    /// Changes into each state since the agent started.
    transitions: [AtomicU64; 6],
    desired_revision: AtomicU64,
    reports_delivered: AtomicU64,
    /// Turns of the agent's loop: it turns at least once a resync interval
    /// while it lives, so a count that stands still means it is wedged (the
    /// systemd watchdog reads it).
    loop_turns: AtomicU64,
    runtime_unreachable: AtomicBool,
    /// The runtime's unpause call alone.
    unpause: Histogram,
    /// From the desired set that wants a paused instance running to its
    /// container thawed: what a request waiting on a resume waits for here.
    thaw: Histogram,
    host: Mutex<Option<HostSample>>,
    containers: Mutex<Vec<ContainerFigures>>,
    publisher: std::sync::OnceLock<Arc<Publisher>>,
    /// Images the image GC removed since the agent started.
    images_removed: AtomicU64,
}

impl AgentMetrics {
    pub(super) fn set_host(&self, sample: HostSample) {
        *self.host.lock().expect("host sample lock poisoned") = Some(sample);
    }

    /// The latest host sample, if one was taken.
    pub fn host(&self) -> Option<HostSample> {
        self.host.lock().expect("host sample lock poisoned").clone()
    }

    pub(super) fn set_containers(&self, figures: Vec<ContainerFigures>) {
        *self.containers.lock().expect("container figures lock poisoned") = figures;
    }

    /// The latest figures of each running instance container.
    pub fn containers(&self) -> Vec<ContainerFigures> {
        self.containers.lock().expect("container figures lock poisoned").clone()
    }

    pub(super) fn set_publisher(&self, publisher: Arc<Publisher>) {
        let _ = self.publisher.set(publisher);
    }

    pub(super) fn transition(&self, to: InstanceState) {
        self.transitions[slot(to)].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set_instances(&self, states: impl Iterator<Item = InstanceState>) {
        let mut counts = [0u64; 6];
        for s in states {
            counts[slot(s)] += 1;
        }
        for (gauge, n) in self.instances.iter().zip(counts) {
            gauge.store(n, Ordering::Relaxed);
        }
    }

    pub(super) fn set_desired_revision(&self, revision: u64) {
        self.desired_revision.store(revision, Ordering::Relaxed);
    }

    pub(super) fn set_reports_delivered(&self, n: u64) {
        self.reports_delivered.store(n, Ordering::Relaxed);
    }

    /// An instance was thawed: the unpause call took `call`, and `since_desired`
    /// passed from its desired set's arrival to the end of that call.
    pub(super) fn unpaused(&self, call: std::time::Duration, since_desired: std::time::Duration) {
        self.unpause.observe(call.as_secs_f64());
        self.thaw.observe(since_desired.as_secs_f64());
    }

    pub(super) fn turned(&self) {
        self.loop_turns.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the agent's loop has turned since it started.
    pub fn loop_turns(&self) -> u64 {
        self.loop_turns.load(Ordering::Relaxed)
    }

    /// Sequence number of the last report a coordinator accepted (0: none yet).
    pub fn reports_delivered(&self) -> u64 {
        self.reports_delivered.load(Ordering::Relaxed)
    }

    /// Instances on this node as of the last report (gone ones aside), and how many of them are ready.
    pub fn instance_counts(&self) -> (u64, u64) {
        let total = STATES.iter().zip(&self.instances).filter(|(s, _)| **s != InstanceState::Gone).map(|(_, n)| n.load(Ordering::Relaxed)).sum();
        (total, self.instances[slot(InstanceState::Ready)].load(Ordering::Relaxed))
    }

    /// The image GC removed `n` images.
    pub fn images_removed(&self, n: u64) {
        self.images_removed.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn set_runtime_unreachable(&self, down: bool) {
        self.runtime_unreachable.store(down, Ordering::Relaxed);
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        header(&mut out, "sluice_agent_instances", "gauge", "Instances on this node by state.");
        for (s, n) in STATES.iter().zip(&self.instances) {
            sample(&mut out, "sluice_agent_instances", &format!("state=\"{s}\""), n.load(Ordering::Relaxed));
        }
        header(&mut out, "sluice_agent_transitions_total", "counter", "Instance state changes made by this agent.");
        for (s, n) in STATES.iter().zip(&self.transitions) {
            sample(&mut out, "sluice_agent_transitions_total", &format!("to=\"{s}\""), n.load(Ordering::Relaxed));
        }
        header(&mut out, "sluice_agent_desired_revision", "gauge", "Revision of the desired set last received.");
        sample(&mut out, "sluice_agent_desired_revision", "", self.desired_revision.load(Ordering::Relaxed));
        header(&mut out, "sluice_agent_reports_delivered", "gauge", "Sequence number of the last report the coordinator accepted.");
        sample(&mut out, "sluice_agent_reports_delivered", "", self.reports_delivered.load(Ordering::Relaxed));
        header(&mut out, "sluice_agent_loop_turns_total", "counter", "Turns of the agent's loop (at least one per resync interval while it is alive).");
        sample(&mut out, "sluice_agent_loop_turns_total", "", self.loop_turns.load(Ordering::Relaxed));
        header(&mut out, "sluice_agent_runtime_unreachable", "gauge", "1 while the container runtime cannot be listed.");
        sample(&mut out, "sluice_agent_runtime_unreachable", "", u8::from(self.runtime_unreachable.load(Ordering::Relaxed)));
        header(&mut out, "sluice_agent_images_removed_total", "counter", "Unused images the image GC removed from this host.");
        sample(&mut out, "sluice_agent_images_removed_total", "", self.images_removed.load(Ordering::Relaxed));
        header(&mut out, "sluice_agent_unpause_seconds", "histogram", "Time the container runtime took to unpause an instance.");
        self.unpause.write(&mut out, "sluice_agent_unpause_seconds", "");
        header(&mut out, "sluice_agent_thaw_seconds", "histogram", "Time from a desired set wanting a paused instance running to its container unpaused.");
        self.thaw.write(&mut out, "sluice_agent_thaw_seconds", "");
        if let Some(h) = self.host() {
            host::render(&h, &mut out);
        }
        render_containers(&self.containers(), &mut out);
        if let Some(t) = self.publisher.get() {
            t.render(&mut out);
        }
        out
    }
}

/// Each instance container's latest figures.
fn render_containers(figures: &[ContainerFigures], out: &mut String) {
    type Figure = fn(&ContainerFigures) -> Option<f64>;
    let families: [(&str, &str, Figure); 8] = [
        ("sluice_container_cpu_percent", "CPU in use, percent of one core.", |c| c.cpu_percent),
        ("sluice_container_memory_used_bytes", "Memory in use, not counting reclaimable page cache.", |c| Some(c.memory_used_bytes as f64)),
        ("sluice_container_memory_limit_bytes", "Memory limit.", |c| c.memory_limit_bytes.map(|b| b as f64)),
        ("sluice_container_net_rx_bytes_per_second", "Network bytes received per second.", |c| Some(c.net_rx_bytes_per_sec)),
        ("sluice_container_net_tx_bytes_per_second", "Network bytes sent per second.", |c| Some(c.net_tx_bytes_per_sec)),
        ("sluice_container_block_read_bytes_per_second", "Block device bytes read per second.", |c| Some(c.block_read_bytes_per_sec)),
        ("sluice_container_block_write_bytes_per_second", "Block device bytes written per second.", |c| Some(c.block_write_bytes_per_sec)),
        ("sluice_container_pids", "Processes and threads.", |c| Some(c.pids as f64)),
    ];
    if figures.is_empty() {
        return;
    }
    for (name, help, figure) in families {
        header(out, name, "gauge", help);
        for c in figures {
            if let Some(v) = figure(c) {
                sample(out, name, &format!("instance=\"{}\",function=\"{}\"", c.instance, c.function), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_by_state() {
        let m = AgentMetrics::default();
        m.set_instances([InstanceState::Ready, InstanceState::Ready, InstanceState::Starting].into_iter());
        m.transition(InstanceState::Ready);
        let text = m.render();
        assert!(text.contains("sluice_agent_instances{state=\"ready\"} 2\n"), "{text}");
        assert!(text.contains("sluice_agent_instances{state=\"starting\"} 1\n"), "{text}");
        assert!(text.contains("sluice_agent_transitions_total{to=\"ready\"} 1\n"), "{text}");
        assert!(text.contains("sluice_agent_runtime_unreachable 0\n"), "{text}");
    }
}
