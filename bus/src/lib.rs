//! The metrics bus: agents publish host, container, gateway and event messages;
//! coordinators subscribe to them in durable consumer groups.
//!
//! One trait, [`MetricsBus`], three implementations chosen by the `--bus` URL
//! ([`BusUrl`]): Kafka (`kafka://`), MQTT (`mqtt://`, `mqtts://`) and in-process
//! (`inproc`, for `sluice up`). All three pass the same conformance suite
//! (`conformance`, behind the cargo feature of that name).
//!
//! The same trait carries asynchronous invocations as a work queue (see
//! [`Topic`]): coordinators subscribe to `Topic::Invocation` with one shared
//! group, so each invocation goes to one of them, and mark a delivery processed
//! only once its result is recorded.
//!
//! Delivery is at least once: an acknowledged publish is kept by the broker, a
//! message not marked processed may be delivered again (after a crash, a
//! reconnect or a new subscription of its group), one marked processed is not.

mod error;
mod groups;
mod inproc;
mod kafka;
mod message;
mod metrics;
mod mqtt;
mod outage;
pub mod outbox;
mod publisher;
mod topic;
mod url;
#[cfg(test)]
mod url_proptests;

#[cfg(feature = "conformance")]
pub mod conformance;

use async_trait::async_trait;
use std::sync::Arc;

pub use error::{BrokerKind, BusError};
pub use inproc::InProcessBus;
pub use kafka::KafkaBus;
pub use message::{Message, Received, MAX_KEY_LEN};
pub use metrics::BusMetrics;
pub use mqtt::MqttBus;
pub use outbox::{Outbox, OutboxLimits};
pub use publisher::{topic_of, Publisher, PublisherConfig};
pub use topic::Topic;
pub use url::{BusUrl, Compression, Credentials, InProcessConfig, KafkaConfig, MqttConfig, Settings, TlsFiles};

/// Resolves once the bus has taken responsibility for a published message.
pub type Ack = futures_util::future::BoxFuture<'static, Result<(), BusError>>;

/// Where agents publish and coordinators subscribe.
#[async_trait]
pub trait MetricsBus: Send + Sync + 'static {
    /// "kafka", "mqtt" or "in-process".
    fn name(&self) -> &'static str;

    /// Queues `msg` synchronously — so publishes made one after another by a
    /// caller keep their order per (topic, key) even when their acks are awaited
    /// together — and returns a future that resolves Ok once the broker has taken
    /// responsibility for it (Kafka: delivery report with acks=all; MQTT: PUBACK
    /// at QoS 1; in-process: enqueued), or Err when it could not within the
    /// publish timeout. The future never hangs forever; this call never blocks.
    fn publish(&self, msg: Message) -> Ack;

    /// Opens a subscription of consumer group `group` to `topics`. A group is
    /// durable: messages published while it has no live subscription (after its
    /// first subscribe returned) are delivered to its next one; messages marked
    /// processed are not delivered to it again. A bus holds one live subscription
    /// per group: a second subscribe waits for the first to close.
    async fn subscribe(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn Subscription>, BusError>;

    /// The bus's counters, for `/metrics`; None for buses that keep none.
    fn metrics(&self) -> Option<&BusMetrics> {
        None
    }
}

/// A live subscription of one group; dropping it closes it (committing what
/// was marked processed).
#[async_trait]
pub trait Subscription: Send {
    /// The next message. Order is kept per (topic, key).
    async fn next(&mut self) -> Result<Received, BusError>;

    /// Marks `received` (and everything before it on its stream) processed:
    /// Kafka stores the offset and commits it (periodically, and on close); MQTT
    /// sends the PUBACK now; in-process: bookkeeping.
    fn processed(&mut self, received: &Received) -> Result<(), BusError>;
}

/// Opens the bus `url` names. `client_name` (the node id) becomes the MQTT
/// client id and the Kafka client.id.
///
/// Agents must start while the broker is down (edge hosts), so this never waits
/// for an absent broker: Kafka and MQTT wait a few seconds for a first answer,
/// fail only on answers that will not change by retrying (refused credentials,
/// bad TLS files), and otherwise return a bus that connects in the background;
/// its publishes fail with `Unreachable` until the broker is back. An
/// `inproc` URL gives a new, unshared bus: to share one between the agent and
/// coordinator of a process, create it with [`InProcessBus::new`].
pub async fn connect(url: &BusUrl, client_name: &str) -> Result<Arc<dyn MetricsBus>, BusError> {
    if client_name.is_empty() || client_name.len() > 200 || client_name.chars().any(|c| c.is_control() || c == '/') {
        return Err(BusError::InvalidClientName { name: client_name.to_string() });
    }
    Ok(match url {
        BusUrl::InProcess(config) => Arc::new(InProcessBus::with_config(config.clone())),
        BusUrl::Kafka(config) => Arc::new(KafkaBus::connect(config, client_name).await?),
        BusUrl::Mqtt(config) => Arc::new(MqttBus::connect(config, client_name).await?),
    })
}
