//! Sluice coordinator.
