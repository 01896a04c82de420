//! Sluice's host agent: runs the containers the coordinator wants on this host.
//!
//! The agent (`agent::Agent`) fetches its node's desired instances through a
//! `control::ControlPlane`, plans the difference against what the container
//! runtime holds (`reconcile::plan`, a pure function), carries the plan out on a
//! `runtime::ContainerRuntime` (Docker, or an in-memory fake for tests), and
//! reports each instance's state back. `image_gc` removes images its instances
//! no longer use when the disk fills.

pub mod agent;
pub mod container_stats;
pub mod control;
pub mod host;
pub mod image_gc;
pub mod kept_file;
pub mod logs;
pub mod reconcile;
pub mod runtime;

pub use agent::{Agent, AgentConfig};
pub use control::{ControlError, ControlPlane};
pub use runtime::{ContainerRuntime, DockerRuntime, FakeRuntime};
