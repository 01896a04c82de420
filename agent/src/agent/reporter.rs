//! Sends node reports to the coordinator without ever blocking the agent's loop.
//!
//! The loop publishes each report into a watch channel; this task sends the newest
//! one, so reports made during a slow send or an outage collapse into one, and
//! tells the loop the sequence number of the last report the coordinator accepted.

use crate::control::ControlPlane;
use sluice_common::backoff::Backoff;
use sluice_common::NodeReport;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::sleep;
use tracing::{debug, info, warn};

/// A report and its sequence number (from `ReportTable::build`).
pub type Numbered = (u64, NodeReport);

/// Sends reports forever; run it as a task and abort it to stop.
pub async fn run(control: Arc<dyn ControlPlane>, mut reports: watch::Receiver<Option<Numbered>>, delivered: watch::Sender<u64>, mut backoff: Backoff) {
    let mut failing = false;
    while reports.changed().await.is_ok() {
        let Some((seq, report)) = reports.borrow_and_update().clone() else { continue };
        match control.report(report).await {
            Ok(()) => {
                backoff.reset();
                if failing {
                    info!("coordinator accepts reports again");
                    failing = false;
                }
                delivered.send_replace(seq);
            }
            Err(e) => {
                let delay = backoff.next_delay();
                if !failing {
                    warn!(error = %e, retry_ms = delay.as_millis() as u64, "cannot send report; will retry");
                    failing = true;
                } else {
                    debug!(error = %e, retry_ms = delay.as_millis() as u64, "still cannot send report");
                }
                sleep(delay).await;
                // Retry with whatever is newest, even if nothing new was published.
                reports.mark_changed();
            }
        }
    }
}
