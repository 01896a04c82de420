//! Sluice's shared vocabulary: the types every part of the system speaks.
//!
//! Almost nothing here does I/O or needs an async runtime: the crate is plain
//! data, validation and the `Clock` trait, so that decision code built on it
//! stays pure. The exceptions are the edges every process shares: loading TLS
//! files (`tls`) and the HTTP client connector (`connector`).

pub mod backoff;
pub mod cache;
pub mod channel_body;
pub mod clock;
pub mod command;
pub mod connector;
pub mod ids;
pub mod instance;
pub mod labels;
pub mod logs;
pub mod metric;
pub mod metrics;
pub mod node;
#[cfg(test)]
mod parser_proptests;
pub mod placement;
pub mod predict;
pub mod rate;
pub mod registry_auth;
pub mod rng;
pub mod rules;
pub mod scaling;
pub mod sd_notify;
pub mod spec;
pub mod tls;
pub mod validation;
pub mod wire;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use command::{DesiredInstance, DesiredSet, DesiredState, InstanceReport, NodeReport};
pub use ids::{FunctionName, InstanceId, NodeId};
pub use instance::{Endpoint, Instance, InstanceState};
pub use node::{Health, NodeInfo, Resources};
pub use spec::{FunctionSpec, ImageRef, Limits};
pub use validation::ValidationError;
