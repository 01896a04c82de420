//! The conformance suite against a real Kafka-protocol broker (tansu: `scripts/brokers.sh start kafka`).

use sluice_bus::{conformance, connect, BrokerKind, BusUrl, MetricsBus};
use std::sync::Arc;
use std::time::Duration;

/// A bus on the test broker with a prefix and client id of its own.
async fn bus() -> Arc<dyn MetricsBus> {
    conformance::init_logs();
    let addr = conformance::broker_addr(BrokerKind::Kafka);
    conformance::require_broker(BrokerKind::Kafka, &addr);
    let prefix = conformance::unique_prefix();
    let url = BusUrl::parse_with_env(&format!("kafka://{addr}?prefix={prefix}"), |_| None).expect("a valid test URL");
    connect(&url, &format!("test-{prefix}")).await.expect("connecting to the test broker")
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_and_order() -> anyhow::Result<()> {
    conformance::delivery_and_order(&*bus().await).await
}

#[tokio::test(flavor = "multi_thread")]
async fn durable_group() -> anyhow::Result<()> {
    conformance::durable_group(&*bus().await).await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_groups() -> anyhow::Result<()> {
    conformance::two_groups(&*bus().await).await
}

#[tokio::test(flavor = "multi_thread")]
async fn payload_limits() -> anyhow::Result<()> {
    conformance::payload_limits(&*bus().await).await
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_broker() -> anyhow::Result<()> {
    conformance::init_logs();
    let timeout = Duration::from_secs(2);
    let url = BusUrl::parse_with_env(&format!("kafka://127.0.0.1:{}?publish_timeout_ms=2000", conformance::unused_port()), |_| None)?;
    conformance::unreachable_broker(|| connect(&url, "test-unreachable"), timeout).await
}

#[tokio::test(flavor = "multi_thread")]
async fn work_queue() -> anyhow::Result<()> {
    conformance::init_logs();
    let addr = conformance::broker_addr(BrokerKind::Kafka);
    conformance::require_broker(BrokerKind::Kafka, &addr);
    let prefix = conformance::unique_prefix();
    let url = BusUrl::parse_with_env(&format!("kafka://{addr}?prefix={prefix}"), |_| None).expect("a valid test URL");
    let a = connect(&url, "coordinator-a").await?;
    let b = connect(&url, "coordinator-b").await?;
    conformance::work_queue(&*a, &*b, true).await
}
