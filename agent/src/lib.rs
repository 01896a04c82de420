//! Sluice's host agent: runs the containers the coordinator wants on this host.
//!
//! The agent fetches its node's desired instances, plans the difference against
//! what the container runtime holds (`reconcile::plan`, a pure function), carries
//! the plan out, and reports each instance's state back.

pub mod control;
pub mod runtime;
