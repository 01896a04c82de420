//! The Kafka bus (rdkafka, bundled librdkafka): an idempotent, batching,
//! compressing producer keyed by node, and one consumer per subscription in
//! the group's Kafka consumer group (`{prefix}.{group}`).

mod consumer;
mod context;
mod producer;
mod topics;

use crate::groups::Groups;
use crate::message::{check, check_group};
use crate::outage::Outage;
use crate::topic::kafka_name;
use crate::{Ack, BrokerKind, BusError, BusMetrics, KafkaConfig, Message, MetricsBus, Subscription, Topic};
use async_trait::async_trait;
use context::BusContext;
use producer::Producer;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use topics::Topics;
use tracing::warn;

/// Room for what Kafka adds around a payload (key, headers, batch framing).
const ENVELOPE: usize = 64 << 10;
/// Payload bytes the producer may hold unsent, in KiB.
const QUEUE_KBYTES: usize = 64 << 10;
/// How long a new subscription waits for its group's previous one to close.
const GROUP_WAIT: Duration = Duration::from_secs(15);
/// Added to the publish timeout before giving up on librdkafka's own report.
const REPORT_GRACE: Duration = Duration::from_secs(5);

pub struct KafkaBus {
    producer: Producer,
    context: BusContext,
    config: KafkaConfig,
    client_name: String,
    /// Wire names, indexed by `Topic as usize`.
    names: [String; Topic::ALL.len()],
    topics: Arc<Topics>,
    keeper: JoinHandle<()>,
    metrics: Arc<BusMetrics>,
    groups: Groups,
}

impl KafkaBus {
    /// Builds the producer and creates the topics. When the broker does not
    /// answer within a few seconds this still succeeds: topics are created in
    /// the background once it does, and publishes fail (`Unreachable`) until then.
    pub async fn connect(config: &KafkaConfig, client_name: &str) -> Result<Self, BusError> {
        let addr = config.addr();
        let context = BusContext::new(Outage::new(BrokerKind::Kafka, &addr, client_name));
        let producer = Producer::create(&producer_config(config, client_name), context.clone()).map_err(|e| creation_failed(&addr, "producer", &e))?;
        let admin = base_config(config, client_name).create_with_context(context.clone()).map_err(|e| creation_failed(&addr, "admin client", &e))?;
        let names = Topic::ALL.map(|t| kafka_name(&config.settings.prefix, t));
        let topics = Arc::new(Topics::new(admin, context.clone(), names.to_vec(), config.partitions, config.replication, addr.clone()));
        let created = match topics.create().await {
            Ok(()) => true,
            Err(BusError::Unreachable { .. }) => {
                warn!(addr = %addr, "kafka broker not answering; starting anyway: topics are created and messages sent once it does");
                false
            }
            Err(e) => return Err(e),
        };
        let keeper = tokio::spawn(topics.clone().keep(created, Outage::new(BrokerKind::Kafka, &addr, "topic creation")));
        Ok(KafkaBus {
            producer,
            context,
            config: config.clone(),
            client_name: client_name.to_string(),
            names,
            topics,
            keeper,
            metrics: BusMetrics::new("kafka"),
            groups: Groups::default(),
        })
    }
}

impl Drop for KafkaBus {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// What a failed delivery report means for the caller.
fn delivery_failed(addr: String, context: &BusContext, error: KafkaError) -> BusError {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut) if context.is_down() => BusError::Unreachable { kind: BrokerKind::Kafka, addr },
        Some(RDKafkaErrorCode::MessageTimedOut) => BusError::Timeout,
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => BusError::Broker {
            kind: BrokerKind::Kafka,
            addr,
            detail: "refused the message as too large: lower max_payload_bytes in --bus to the broker's message.max.bytes".into(),
        },
        _ => BusError::Broker { kind: BrokerKind::Kafka, addr, detail: format!("did not take the message: {error}") },
    }
}

/// Settings every client of the bus shares.
fn base_config(config: &KafkaConfig, client_name: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", config.addr())
        .set("client.id", client_name)
        // librdkafka's default tops out at 10 s; the MQTT bus caps at 5 s too.
        .set("reconnect.backoff.max.ms", "5000")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    c
}

fn producer_config(config: &KafkaConfig, client_name: &str) -> ClientConfig {
    let mut c = base_config(config, client_name);
    c.set("acks", "all")
        // No duplicates or reordering from librdkafka's own retries. tansu 0.6
        // answers InitProducerId and checks sequences, but with memory storage
        // it forgets producer ids on restart and then refuses the old one for
        // good (librdkafka never asks for a new one): against such a broker,
        // idempotence=false lets publishing resume after a broker restart.
        .set("enable.idempotence", config.idempotence.to_string())
        .set("compression.type", config.compression.as_str())
        .set("linger.ms", config.linger.as_millis().to_string())
        .set("message.timeout.ms", config.settings.publish_timeout.as_millis().to_string())
        // Bounded: past these, publish fails with Full instead of growing.
        .set("queue.buffering.max.messages", config.queue_messages.to_string())
        .set("queue.buffering.max.kbytes", QUEUE_KBYTES.to_string())
        .set("message.max.bytes", (config.settings.max_payload + ENVELOPE).to_string());
    c
}

fn creation_failed(addr: &str, what: &str, error: &KafkaError) -> BusError {
    BusError::Broker { kind: BrokerKind::Kafka, addr: addr.to_string(), detail: format!("could not create the {what} ({error}): check the settings in --bus") }
}

#[async_trait]
impl MetricsBus for KafkaBus {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn publish(&self, msg: Message) -> Ack {
        if let Err(e) = check(&msg, self.config.settings.max_payload) {
            return self.metrics.refuse(e);
        }
        let delivery = match self.producer.send(&self.names[msg.topic as usize], msg.key.as_str(), &msg.payload) {
            Ok(delivery) => delivery,
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                return self
                    .metrics
                    .refuse(BusError::Full { queue: "Kafka producer queue".into(), limit: format!("{} messages or {QUEUE_KBYTES} KiB", self.config.queue_messages) })
            }
            Err(e) => return self.metrics.refuse(delivery_failed(self.config.addr(), &self.context, e)),
        };
        let wait = self.config.settings.publish_timeout + REPORT_GRACE;
        let context = self.context.clone();
        let addr = self.config.addr();
        self.metrics.track(async move {
            let result = match tokio::time::timeout(wait, delivery).await {
                Ok(Ok(Ok(()))) => {
                    context.reachable();
                    return Ok(());
                }
                Ok(Ok(Err(e))) => delivery_failed(addr, &context, e),
                // The producer was dropped with the message still queued.
                Ok(Err(_)) => BusError::Closed,
                Err(_) => BusError::Timeout,
            };
            // The topics may be gone (a broker that came back empty): have them checked.
            context.check_topics();
            Err(result)
        })
    }

    async fn subscribe(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn Subscription>, BusError> {
        check_group(group, topics)?;
        let lease = self.groups.lease(group, GROUP_WAIT).await?;
        // Again now: the broker may have come back empty since connect.
        self.topics.create().await?;
        let names: Vec<&str> = topics.iter().map(|t| self.names[*t as usize].as_str()).collect();
        let sub = consumer::KafkaSubscription::open(&self.config, &self.client_name, group, &names, self.context.clone(), self.metrics.clone(), lease)?;
        Ok(Box::new(sub))
    }

    fn metrics(&self) -> Option<&BusMetrics> {
        Some(&self.metrics)
    }
}
