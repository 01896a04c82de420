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
/// duration; failures are retried after `backoff`. Only sets with a revision other
/// than the last one are passed on.
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
                if last == Some(set.revision) {
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
