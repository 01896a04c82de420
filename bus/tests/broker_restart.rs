//! The conformance suite's broker restart, against real brokers. Its own test
//! binary, so it runs apart from the other suites: it stops the shared brokers.

use sluice_bus::conformance::{self, BrokerScript, Restart};
use sluice_bus::{connect, BrokerKind, BusUrl};
use std::time::Duration;

async fn restart(kind: BrokerKind, url_tail: &str, restart: Restart) -> anyhow::Result<()> {
    conformance::init_logs();
    let addr = conformance::broker_addr(kind);
    conformance::require_broker(kind, &addr);
    let broker = BrokerScript::new(kind);
    let prefix = conformance::unique_prefix();
    let url = BusUrl::parse_with_env(&format!("{}://{addr}?prefix={prefix}&publish_timeout_ms=5000{url_tail}", kind.script_name()), |_| None)?;
    let bus = connect(&url, &format!("test-{prefix}")).await?;
    conformance::survives_restart(&*bus, &broker, Duration::from_secs(5), restart).await
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_broker_restart() -> anyhow::Result<()> {
    restart(BrokerKind::Mqtt, "", Restart::KeepsData).await
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_broker_restart() -> anyhow::Result<()> {
    // tansu with memory storage comes back empty. It also forgets producer ids
    // and then refuses the old one for good, so an idempotent producer could
    // not publish again; and a consumer living through the restart can crash:
    // librdkafka 2.12.1 dereferences the null topic name of a metadata update
    // it builds from tansu's answers (rd_kafka_metadata_update_op ->
    // rd_kafka_metadata_cache_find -> strcmp(NULL)), so the suite closes it first.
    restart(BrokerKind::Kafka, "&idempotence=false", Restart::ComesBackEmpty).await
}
