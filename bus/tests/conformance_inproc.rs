//! The conformance suite against the in-process bus.

use sluice_bus::{conformance, InProcessBus};

#[tokio::test]
async fn delivery_and_order() -> anyhow::Result<()> {
    conformance::delivery_and_order(&InProcessBus::new()).await
}

#[tokio::test]
async fn durable_group() -> anyhow::Result<()> {
    conformance::durable_group(&InProcessBus::new()).await
}

#[tokio::test]
async fn two_groups() -> anyhow::Result<()> {
    conformance::two_groups(&InProcessBus::new()).await
}

#[tokio::test]
async fn payload_limits() -> anyhow::Result<()> {
    conformance::payload_limits(&InProcessBus::new()).await
}
