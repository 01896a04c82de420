//! Sluice's coordinator: the cluster state and its replication, the decisions
//! made on it, its HTTP API and the gateway that routes invocations to instances.
//!
//! Decisions (`decide`) and the state machine (`state_machine::apply`) are pure
//! functions of state, metrics and time; `store`, `controller` and `ingest`
//! hold the I/O.

pub mod api;
pub mod applied;
pub mod auth;
pub mod controller;
pub mod decide;
pub mod events;
pub mod gateway;
pub mod http;
pub mod ingest;
pub mod invocations;
pub mod liveness;
pub mod node;
pub mod plan;
pub mod predictor;
pub mod raft;
pub mod registry;
pub mod reports;
pub mod state;
pub mod state_machine;
pub mod store;
pub mod timeline;
pub mod tls;
pub mod windows;
pub mod windows_api;
