//! What librdkafka tells a Kafka client about its brokers: outages logged once
//! (not per reconnect attempt), and whether the broker is down right now, so a
//! timed-out publish can say "unreachable" rather than "slow".

use crate::outage::Outage;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tracing::{debug, warn};

/// Shared by the producer, admin client and consumers of one bus.
#[derive(Clone)]
pub(crate) struct BusContext {
    outage: Arc<Mutex<Outage>>,
    /// Notified when the bus's topics may be missing (see `topics`).
    topics_missing: Arc<Notify>,
}

impl BusContext {
    pub(crate) fn new(outage: Outage) -> Self {
        BusContext { outage: Arc::new(Mutex::new(outage)), topics_missing: Arc::default() }
    }

    pub(crate) fn topics_missing(&self) -> &Notify {
        &self.topics_missing
    }

    /// Has the topics checked (and created if need be) in the background.
    pub(crate) fn check_topics(&self) {
        self.topics_missing.notify_one();
    }

    /// Something got through: the broker answers.
    pub(crate) fn reachable(&self) {
        self.outage.lock().unwrap().up();
    }

    pub(crate) fn is_down(&self) -> bool {
        self.outage.lock().unwrap().is_down()
    }
}

impl ClientContext for BusContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // Connection failures also arrive through `error`, which logs them once per outage.
        let quiet = facility == "FAIL" || self.is_down();
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning if !quiet => {
                warn!(facility, "librdkafka: {message}")
            }
            _ => debug!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                // librdkafka paces its own reconnects; only the logging is ours.
                let _ = self.outage.lock().unwrap().down(&reason);
                // It may come back empty: have the topics recreated as soon as it answers.
                self.check_topics();
            }
            // One broker connection dropping (idle close, restart) is routine; AllBrokersDown follows if it matters.
            Some(RDKafkaErrorCode::BrokerTransportFailure) => debug!(reason, "kafka connection lost"),
            // A subscribed topic is gone: the broker came back empty.
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                debug!(reason, "kafka topic missing; creating it again");
                self.check_topics();
            }
            _ => warn!(error = %error, reason, "kafka client error"),
        }
    }
}

impl ConsumerContext for BusContext {
    /// Which partitions this consumer holds after a rebalance: what an operator
    /// asks when a group's work does not move after a member died.
    fn post_rebalance(&self, _consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        match rebalance {
            rdkafka::consumer::Rebalance::Assign(list) => {
                let held: Vec<String> = list.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect();
                tracing::info!(partitions = ?held, "kafka group assigned partitions");
            }
            rdkafka::consumer::Rebalance::Revoke(list) => tracing::info!(count = list.count(), "kafka group revoked partitions"),
            rdkafka::consumer::Rebalance::Error(e) => tracing::warn!(error = %e, "kafka group rebalance failed"),
        }
    }
}
