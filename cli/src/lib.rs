//! The pieces of the `sluice` binary that tests reuse: starting nodes.

pub mod node;
