//! A Kafka subscription: one consumer in the group's consumer group. Offsets
//! are stored only when the caller marks a message processed, committed every
//! second, and committed once more when the subscription closes.

use super::context::BusContext;
use super::ENVELOPE;
use crate::groups::GroupLease;
use crate::message::{next_subscription_id, Position, Token};
use crate::topic::{from_kafka_name, kafka_name};
use crate::{BrokerKind, BusError, BusMetrics, KafkaConfig, Received, Subscription};
use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use std::sync::Arc;
use tracing::{debug, warn};

pub(super) struct KafkaSubscription {
    id: u64,
    /// Taken by `drop`, which closes it on a thread of its own.
    consumer: Option<StreamConsumer<BusContext>>,
    lease: Option<GroupLease>,
    prefix: String,
    addr: String,
    context: BusContext,
    metrics: Arc<BusMetrics>,
}

impl KafkaSubscription {
    pub(super) fn open(
        config: &KafkaConfig,
        client_name: &str,
        group: &str,
        topics: &[&str],
        context: BusContext,
        metrics: Arc<BusMetrics>,
        lease: GroupLease,
    ) -> Result<Self, BusError> {
        let addr = config.addr();
        let mut c = super::base_config(config, client_name);
        // Groups are per installation: two prefixes sharing a broker must not rebalance together.
        c.set("group.id", format!("{}.{group}", config.settings.prefix))
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            // A group's first subscription starts at the beginning: nothing published after it subscribed is missed.
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            // Topics recreated on a broker that came back empty are noticed within seconds.
            .set("topic.metadata.refresh.interval.ms", "10000")
            .set("max.partition.fetch.bytes", (config.settings.max_payload + ENVELOPE).max(1 << 20).to_string());
        let consumer: StreamConsumer<BusContext> = c.create_with_context(context.clone()).map_err(|e| super::creation_failed(&addr, "consumer", &e))?;
        consumer.subscribe(topics).map_err(|e| BusError::Broker {
            kind: BrokerKind::Kafka,
            addr: addr.clone(),
            detail: format!("subscribing group {group:?} to {topics:?} failed ({e}): check the group name and topics"),
        })?;
        Ok(KafkaSubscription { id: next_subscription_id(), consumer: Some(consumer), lease: Some(lease), prefix: config.settings.prefix.clone(), addr, context, metrics })
    }

    fn broker_error(&self, detail: String) -> BusError {
        BusError::Broker { kind: BrokerKind::Kafka, addr: self.addr.clone(), detail }
    }
}

/// Errors a consumer recovers from by itself; the caller just keeps waiting.
fn transient(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(
            BrokerTransportFailure
                | AllBrokersDown
                | OperationTimedOut
                | RequestTimedOut
                | UnknownTopicOrPartition
                | UnknownTopic
                | UnknownPartition
                | NotCoordinator
                | CoordinatorNotAvailable
                | CoordinatorLoadInProgress
                | LeaderNotAvailable
                | NotLeaderForPartition
                | RebalanceInProgress
                | NetworkException
        )
    )
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Result<Received, BusError> {
        let consumer = self.consumer.as_ref().ok_or(BusError::Closed)?;
        loop {
            let message = match consumer.recv().await {
                Ok(m) => m,
                Err(e) if transient(&e) => {
                    debug!(error = %e, "kafka consumer waiting out a broker error");
                    continue;
                }
                Err(e) => return Err(self.broker_error(format!("consuming failed ({e}): check the broker's log; subscribe again once it is fixed"))),
            };
            self.context.reachable();
            let Some(topic) = from_kafka_name(&self.prefix, message.topic()) else {
                warn!(topic = message.topic(), "skipping a message from a topic that is not the bus's");
                continue;
            };
            let Some(Ok(key)) = message.key().map(std::str::from_utf8) else {
                warn!(topic = message.topic(), offset = message.offset(), "skipping a message without a UTF-8 key (not published by a sluice bus)");
                continue;
            };
            let position = Position::Offset { partition: message.partition(), offset: message.offset() };
            let received =
                Received { topic, key: key.to_string(), payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()), token: Token { subscription: self.id, position } };
            self.metrics.count_received();
            return Ok(received);
        }
    }

    fn processed(&mut self, received: &Received) -> Result<(), BusError> {
        let Position::Offset { partition, offset } = received.token.position_in(self.id)? else { return Err(BusError::ForeignMessage) };
        let consumer = self.consumer.as_ref().ok_or(BusError::Closed)?;
        // The legacy call stores offset + 1, the next one to read, as Kafka wants.
        consumer
            .store_offset(&kafka_name(&self.prefix, received.topic), partition, offset)
            .map_err(|e| self.broker_error(format!("could not store the offset ({e}): the partition was probably reassigned; the message may be delivered again")))
    }
}

impl Drop for KafkaSubscription {
    /// Commits what was processed and leaves the group. Both block (they talk to
    /// the broker), so a thread does it; the group's lease goes with it, so the
    /// next subscription of the group starts after the commit.
    fn drop(&mut self) {
        let (Some(consumer), lease) = (self.consumer.take(), self.lease.take()) else { return };
        let spawned = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => {}
                // Nothing was marked processed since the last commit.
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
                Err(e) => warn!(error = %e, "final kafka offset commit failed; unprocessed messages since the last commit will be delivered again"),
            }
            drop(consumer);
            drop(lease);
        });
        if let Err(e) = spawned {
            warn!(error = %e, "could not start a thread to close the kafka consumer; it is dropped without a final commit");
        }
    }
}
