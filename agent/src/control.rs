//! The agent's link to the coordinator: fetch the desired set, send reports.
//!
//! In `sluice up` the coordinator is in the same process and the link is a
//! function call; on a real host it is the coordinator's HTTP API (`HttpControlPlane`).

use async_trait::async_trait;
use sluice_common::{DesiredSet, NodeId, NodeReport};
use std::time::Duration;

pub mod http;
#[cfg(test)]
mod http_proptests;

pub use http::{HttpControlConfig, HttpControlPlane, InvalidBaseUrl};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("coordinator unreachable at {addr}: {reason}; the agent keeps its containers and retries")]
    Unreachable { addr: String, reason: String },
    #[error("coordinator refused the request: {0}")]
    Refused(String),
    /// The coordinator answered, but not with what the API promises.
    #[error("coordinator sent a malformed message ({0}); check that the agent and coordinator run the same Sluice version")]
    Malformed(String),
}

#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// The node's desired set once its revision is above `after`, or the current
    /// one when `wait` passes first (a long poll).
    async fn desired(&self, node: &NodeId, after: u64, wait: Duration) -> Result<DesiredSet, ControlError>;

    /// Tells the coordinator what the node holds now.
    async fn report(&self, report: NodeReport) -> Result<(), ControlError>;
}
