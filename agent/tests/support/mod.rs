//! A scripted control plane shared by the agent tests.

use async_trait::async_trait;
use sluice_agent::control::{ControlError, ControlPlane};
use sluice_common::{DesiredInstance, DesiredSet, InstanceId, InstanceReport, InstanceState, NodeId, NodeReport};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

/// A coordinator stand-in: holds the desired set, long-polls like the real one,
/// records reports, and can be taken down.
pub struct FakeControl {
    desired: watch::Sender<DesiredSet>,
    pub reports: Mutex<Vec<NodeReport>>,
    pub down: AtomicBool,
    /// Only the desired-set long poll fails; reports still go through.
    pub desired_down: AtomicBool,
    pub desired_calls: AtomicUsize,
}

#[allow(dead_code)] // each test binary uses a different part
impl FakeControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            desired: watch::channel(DesiredSet::default()).0,
            reports: Mutex::new(vec![]),
            down: AtomicBool::new(false),
            desired_down: AtomicBool::new(false),
            desired_calls: AtomicUsize::new(0),
        })
    }

    pub fn want(&self, instances: Vec<DesiredInstance>) {
        self.desired.send_modify(|d| {
            d.revision += 1;
            d.instances = instances;
        });
    }

    fn unreachable(&self) -> ControlError {
        ControlError::Unreachable { addr: "fake".into(), reason: "down".into() }
    }

    pub fn reports(&self) -> Vec<NodeReport> {
        self.reports.lock().unwrap().clone()
    }

    pub fn latest(&self, id: u64) -> Option<InstanceReport> {
        self.reports().last()?.instances.iter().find(|r| r.id == InstanceId(id)).cloned()
    }

    pub fn state(&self, id: u64) -> Option<InstanceState> {
        self.latest(id).map(|r| r.state)
    }

    /// Every state `id` was reported in, without repeats, in order.
    pub fn history(&self, id: u64) -> Vec<InstanceState> {
        let mut seen: Vec<InstanceState> = vec![];
        for report in self.reports() {
            if let Some(r) = report.instances.iter().find(|r| r.id == InstanceId(id)) {
                if seen.last() != Some(&r.state) {
                    seen.push(r.state);
                }
            }
        }
        seen
    }
}

#[async_trait]
impl ControlPlane for FakeControl {
    async fn desired(&self, _node: &NodeId, after: u64, wait: Duration) -> Result<DesiredSet, ControlError> {
        self.desired_calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) || self.desired_down.load(Ordering::SeqCst) {
            return Err(self.unreachable());
        }
        let mut rx = self.desired.subscribe();
        let deadline = Instant::now() + wait;
        loop {
            let current = rx.borrow_and_update().clone();
            if current.revision > after {
                return Ok(current);
            }
            if timeout_at(deadline, rx.changed()).await.is_err() {
                return Ok(rx.borrow().clone());
            }
        }
    }

    async fn report(&self, report: NodeReport) -> Result<(), ControlError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(self.unreachable());
        }
        self.reports.lock().unwrap().push(report);
        Ok(())
    }
}
