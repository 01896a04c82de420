//! Image GC: when the disk holding Docker's images passes a threshold, the
//! agent removes images its instances used that no container has used for a
//! while. `choose` is the decision, pure and unit-tested; the I/O edge (listing,
//! removing through Docker) is `DockerRuntime::collect_images`, and `run`
//! repeats it, logging and counting what went.

use crate::agent::AgentMetrics;
use crate::runtime::DockerRuntime;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// When images go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Collect only while the disk holding Docker's data is at least this full, in percent.
    pub disk_percent: f64,
    /// An image must have gone unused this long before it may go.
    pub min_unused: Duration,
}

/// An image the agent's instances used, as the GC sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The reference the instances ran it by.
    pub reference: String,
    /// Whether any container on the host (running, paused or stopped) uses it.
    pub in_use: bool,
    /// Last time it was seen in use (or first seen by the agent).
    pub last_used: Instant,
}

/// The references to remove, longest unused first: none while the disk is
/// below the threshold; never one in use; never one used within `min_unused`.
pub fn choose<'a>(candidates: &'a [Candidate], disk_used_percent: f64, policy: &Policy, now: Instant) -> Vec<&'a str> {
    if disk_used_percent < policy.disk_percent {
        return Vec::new();
    }
    let mut old: Vec<&Candidate> = candidates.iter().filter(|c| !c.in_use && now.saturating_duration_since(c.last_used) >= policy.min_unused).collect();
    old.sort_by_key(|c| c.last_used);
    old.into_iter().map(|c| c.reference.as_str()).collect()
}

/// How often the GC looks: often enough for short `min_unused`, at most once a minute.
pub fn interval(policy: &Policy) -> Duration {
    (policy.min_unused / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Collects every `interval` until the runtime is dropped (the agent stopped).
pub async fn run(runtime: Weak<DockerRuntime>, policy: Policy, metrics: Arc<AgentMetrics>) {
    let every = interval(&policy);
    info!(disk_percent = policy.disk_percent, min_unused_secs = policy.min_unused.as_secs(), every_secs = every.as_secs(), "image GC on");
    loop {
        tokio::time::sleep(every).await;
        let Some(runtime) = runtime.upgrade() else { return };
        match runtime.collect_images(&policy).await {
            Ok(removed) => {
                for image in &removed {
                    info!(image = %image, "image GC removed an unused image");
                }
                metrics.images_removed(removed.len() as u64);
            }
            Err(e) => warn!(error = %e, "image GC could not look at the images; it tries again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(reference: &str, in_use: bool, unused_for: u64, now: Instant) -> Candidate {
        Candidate { reference: reference.into(), in_use, last_used: now - Duration::from_secs(unused_for) }
    }

    #[test]
    fn removes_old_unused_images_only_past_the_threshold() {
        let now = Instant::now() + Duration::from_secs(100_000);
        let policy = Policy { disk_percent: 80.0, min_unused: Duration::from_secs(3600) };
        let images = [
            image("in-use-for-ages", true, 90_000, now),
            image("recent", false, 60, now),
            image("old", false, 7200, now),
            image("older", false, 50_000, now),
            image("just-old-enough", false, 3600, now),
        ];
        assert!(choose(&images, 79.9, &policy, now).is_empty(), "below the threshold nothing goes");
        assert_eq!(choose(&images, 80.0, &policy, now), ["older", "old", "just-old-enough"], "longest unused first; never in use, never recent");
        assert_eq!(choose(&images, 100.0, &Policy { min_unused: Duration::from_secs(100_000), ..policy }, now), Vec::<&str>::new());
        assert!(choose(&[], 100.0, &policy, now).is_empty());
    }

    #[test]
    fn looks_often_enough_but_not_too_often() {
        let at = |secs| interval(&Policy { disk_percent: 85.0, min_unused: Duration::from_secs(secs) });
        assert_eq!((at(1), at(20), at(3600)), (Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(60)));
    }
}
