//! The coordinator's and the agent's side of systemd supervision
//! (`Type=notify` units with `WatchdogSec=`): readiness, a status line, the
//! watchdog and stopping, over `sluice_common::sd_notify`. Outside systemd
//! (no `NOTIFY_SOCKET`) every call does nothing.
//!
//! When each process is ready, and what a watchdog ping proves:
//! - coordinator: ready once `Coordinator::start` has returned: the API and
//!   the gateway listen and the Raft loop runs. A leader is not waited for:
//!   the first of three founders could never get one alone, and its unit would
//!   time out. A ping is sent only if the Raft loop answered a ping request
//!   within half the watchdog interval, through the queue every write takes,
//!   and the replica has not stopped: a loop wedged in an fsync, a dead Raft
//!   thread or a starved runtime stop the pings and systemd restarts the
//!   process. It needs no quorum, so a follower cut off from its peers (not
//!   broken, and useless to restart) keeps pinging.
//! - agent: ready once a coordinator has accepted its first report: it has
//!   reached Docker, listed its containers, and the cluster knows the node.
//!   Until then it is "activating" with a status that says what it waits for.
//!   A ping is sent only if the agent's loop has turned since the previous one
//!   (it turns at least once a resync interval, 1 s, and a container listing
//!   gives up after 10 s), so `WatchdogSec=` must stay above about 25 s.

use sluice_common::sd_notify::{self, Notifier, State};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// This process's link to its service manager, if it has one.
#[derive(Debug, Clone)]
pub struct Supervisor {
    notifier: Option<Arc<Notifier>>,
    /// The interval systemd expects pings within, if the watchdog is on and ours.
    watchdog: Option<Duration>,
}

impl Supervisor {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. A socket that
    /// cannot be used is logged, and the process runs unsupervised: systemd
    /// will then time its start out, which says more than refusing to run.
    pub fn from_env() -> Self {
        let notifier = match Notifier::from_env() {
            Ok(n) => n.map(Arc::new),
            Err(e) => {
                warn!(error = %e, "NOTIFY_SOCKET is set but unusable; systemd will not hear from this process");
                None
            }
        };
        let watchdog = notifier.as_ref().and_then(|_| sd_notify::watchdog_from_env());
        if let Some(interval) = watchdog {
            info!(interval_ms = interval.as_millis() as u64, "systemd watchdog on; pinging at half the interval while healthy");
        }
        Self { notifier, watchdog }
    }

    fn send(&self, states: &[State<'_>]) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.notify(states) {
                warn!(error = %e, message = %sd_notify::message(states), "cannot notify systemd");
            }
        }
    }

    /// Start-up is done; `status` says what the process does now.
    pub fn ready(&self, status: &str) {
        info!(status, "ready");
        self.send(&[State::Ready, State::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[State::Status(status)]);
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send(&[State::Stopping, State::Status("stopping")]);
    }

    /// Pings the watchdog at half its interval for as long as `probe` says the
    /// process is healthy (`Ok` with a status line) within that half; an `Err`
    /// (why not) or no answer in time skips the ping. Nothing without a watchdog.
    pub fn watch<F, Fut>(&self, mut probe: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<String, String>> + Send,
    {
        let (Some(notifier), Some(interval)) = (self.notifier.clone(), self.watchdog) else { return };
        let half = interval / 2;
        tokio::spawn(async move {
            let mut unhealthy = false;
            loop {
                let next = Instant::now() + half;
                let verdict = match tokio::time::timeout(half, probe()).await {
                    Ok(verdict) => verdict,
                    Err(_) => Err(format!("the liveness check did not answer within {half:?}")),
                };
                match verdict {
                    Ok(status) => {
                        if std::mem::take(&mut unhealthy) {
                            info!(status, "healthy again; watchdog pings resume");
                        }
                        if let Err(e) = notifier.notify(&[State::Watchdog, State::Status(&status)]) {
                            warn!(error = %e, "cannot ping the systemd watchdog");
                        }
                    }
                    Err(why) => {
                        // Loud once: systemd restarts the process if this lasts.
                        if !std::mem::replace(&mut unhealthy, true) {
                            warn!(why, "not pinging the systemd watchdog");
                        } else {
                            debug!(why, "still not pinging the systemd watchdog");
                        }
                        let _ = notifier.notify(&[State::Status(&format!("unhealthy: {why}"))]);
                    }
                }
                tokio::time::sleep_until(next).await;
            }
        });
    }
}
