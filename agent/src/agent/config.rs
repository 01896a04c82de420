//! The agent's timing knobs.

use std::time::Duration;

/// How often the agent looks, how long it waits, and how it retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// How often the agent lists its containers even without a new desired set;
    /// this is what notices crashed containers. Each pass also sends a heartbeat report.
    pub resync_interval: Duration,
    /// How long one desired-set long poll may wait at the coordinator.
    pub poll_wait: Duration,
    /// How long a container that is no longer wanted gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// First delay before retrying an unreachable coordinator.
    pub retry_base: Duration,
    /// Longest delay between retries.
    pub retry_cap: Duration,
    /// How often host figures (CPU, memory, load, disk and network rates) are sampled.
    pub host_sample_interval: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(1),
            poll_wait: Duration::from_secs(10),
            stop_grace: Duration::from_secs(10),
            retry_base: Duration::from_millis(100),
            // Short enough that an agent whose link comes back reconciles within
            // seconds (A4 asks for the desired count within 10 s of healing).
            retry_cap: Duration::from_secs(5),
            host_sample_interval: Duration::from_secs(1),
        }
    }
}
