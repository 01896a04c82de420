//! The pieces of the `sluice` binary that tests and benchmarks reuse: starting
//! nodes, and the HTTP client.

pub mod certs;
pub mod client;
pub mod config;
pub mod credentials;
pub mod node;
pub mod service;
pub mod sim;
