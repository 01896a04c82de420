//! Long-polls the coordinator for the node's desired set and hands each new one to the loop.

use crate::control::ControlPlane;
use sluice_common::backoff::Backoff;
use sluice_common::{DesiredSet, NodeId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{sleep, Instant};
use tracing::{debug, info, warn};

/// Pause after a poll that came back early with nothing new, so a control plane
/// that does not hold long polls cannot make the agent spin.
const EARLY_ANSWER_PAUSE: Duration = Duration::from_millis(250);

/// Polls forever; run it as a task and abort it to stop. `wait` is the long-poll
/// duration; failures are retried after `backoff`. Only sets newer than the last
/// one are passed on: a coordinator that lags behind the one the agent heard
/// last (it failed over to a follower that has not applied as much) answers with
/// an older set, and acting on it would stop instances that should run.
pub async fn run(control: Arc<dyn ControlPlane>, node: NodeId, wait: Duration, mut backoff: Backoff, out: watch::Sender<Option<DesiredSet>>) {
    let mut last: Option<u64> = None;
    let mut failing = false;
    loop {
        // The first poll does not wait: the agent needs its desired set before it
        // may touch any container.
        let this_wait = if last.is_some() { wait } else { Duration::ZERO };
        let asked = Instant::now();
        match control.desired(&node, last.unwrap_or(0), this_wait).await {
            Ok(set) => {
                backoff.reset();
                if failing {
                    info!(node = %node, revision = set.revision, "coordinator reachable again");
                    failing = false;
                }
                if let Some(newest) = last.filter(|l| set.revision <= *l) {
                    if set.revision < newest {
                        warn!(node = %node, revision = set.revision, newest, "the coordinator answered with an older desired set than the agent has; keeping the newer one until it catches up");
                    }
                    if asked.elapsed() < this_wait / 2 {
                        sleep(EARLY_ANSWER_PAUSE).await;
                    }
                    continue;
                }
                debug!(node = %node, revision = set.revision, instances = set.instances.len(), "new desired set");
                last = Some(set.revision);
                if out.send(Some(set)).is_err() {
                    return; // the loop is gone
                }
            }
            Err(e) => {
                let delay = backoff.next_delay();
                // Loud once, then quiet: an outage should not flood the log.
                if !failing {
                    warn!(node = %node, error = %e, retry_ms = delay.as_millis() as u64, "cannot fetch desired set; keeping containers as they are");
                    failing = true;
                } else {
                    debug!(node = %node, error = %e, retry_ms = delay.as_millis() as u64, "still cannot fetch desired set");
                }
                sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ControlError;
    use async_trait::async_trait;
    use sluice_common::NodeReport;
    use std::sync::Mutex;

    /// Answers with the revisions it is given, in order, then the last forever.
    struct Scripted(Mutex<Vec<u64>>);

    #[async_trait]
    impl ControlPlane for Scripted {
        async fn desired(&self, _: &NodeId, _: u64, _: Duration) -> Result<DesiredSet, ControlError> {
            // A moment per answer, so the watcher sees each set passed on.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let mut left = self.0.lock().unwrap();
            let revision = if left.len() > 1 { left.remove(0) } else { left[0] };
            Ok(DesiredSet { revision, instances: vec![] })
        }
        async fn report(&self, _: NodeReport) -> Result<(), ControlError> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_desired_set_from_a_lagging_coordinator_is_never_passed_on() {
        // 5, then a lagging coordinator's 3 (and 5 again), then 6.
        let control = Arc::new(Scripted(Mutex::new(vec![5, 3, 5, 6])));
        let (tx, mut rx) = watch::channel(None);
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100), 1);
        let task = tokio::spawn(run(control, NodeId::new("n").unwrap(), Duration::from_secs(1), backoff, tx));
        let mut seen = Vec::new();
        while seen.last() != Some(&6) {
            rx.changed().await.unwrap();
            seen.push(rx.borrow_and_update().as_ref().unwrap().revision);
        }
        task.abort();
        assert_eq!(seen, vec![5, 6]);
    }
}
