//! Sluice's coordinator: the cluster state, the decisions made on it, its HTTP
//! API and the gateway that routes invocations to instances.
//!
//! Decisions (`scaler`, `placer`) and the state machine (`state::apply`) are pure
//! functions of state, load and time; `store` and `controller` hold the I/O.

pub mod api;
pub mod controller;
pub mod gateway;
pub mod http;
pub mod ingest;
pub mod load;
pub mod machine;
pub mod node;
pub mod placer;
pub mod raft;
pub mod scaler;
pub mod state;
pub mod store;
pub mod windows;
pub mod windows_api;
