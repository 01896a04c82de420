//! The MQTT bus (rumqttc, MQTT 3.1.1): QoS 1 on persistent sessions. One
//! connection publishes; each subscription is a connection of its own whose
//! session (client id `{client_id}.{group}`) is the group: MQTT has no consumer
//! groups, so an MQTT group is per node, where a Kafka group spans nodes. The
//! exception is the invocation work queue, subscribed as a shared subscription
//! (`$share/{prefix}.{group}/...`) so each invocation goes to one node of the
//! group; one a node took and did not acknowledge stays in that node's session
//! until it comes back (mosquitto does not hand it to another member).

mod connection;
mod publisher;
mod subscriber;
mod tls;

use crate::groups::Groups;
use crate::message::{check, check_group};
use crate::{Ack, BusError, BusMetrics, Message, MetricsBus, MqttConfig, Subscription, Topic};
use async_trait::async_trait;
use publisher::Publisher;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use std::sync::Arc;
use std::time::Duration;

/// Room for what MQTT adds around a payload (topic, header).
const ENVELOPE: usize = 64 << 10;
/// How long a new subscription waits for its group's previous one to close.
const GROUP_WAIT: Duration = Duration::from_secs(15);

pub struct MqttBus {
    config: MqttConfig,
    client_id: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    publisher: Publisher,
    metrics: Arc<BusMetrics>,
    groups: Groups,
}

impl MqttBus {
    /// Starts the publishing connection. Waits a few seconds for the broker's
    /// answer: a refusal (credentials, TLS) is an error; no answer is not, and
    /// the connection keeps trying in the background while publishes fail.
    pub async fn connect(config: &MqttConfig, client_name: &str) -> Result<Self, BusError> {
        let tls = config.tls.as_ref().map(tls::client_config).transpose()?;
        let client_id = config.client_id.clone().unwrap_or_else(|| client_name.to_string());
        let publisher = Publisher::start(options(config, tls.as_ref(), client_id.clone(), false), config).await?;
        Ok(MqttBus { config: config.clone(), client_id, tls, publisher, metrics: BusMetrics::new("mqtt"), groups: Groups::default() })
    }
}

/// Options shared by the publishing and subscribing connections.
fn options(config: &MqttConfig, tls: Option<&Arc<rustls::ClientConfig>>, client_id: String, manual_acks: bool) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, &config.host, config.port);
    // rumqttc's default packet limit is 10 KiB; payloads up to the bus limit must pass both ways.
    let packet = config.settings.max_payload + ENVELOPE;
    o.set_keep_alive(config.keepalive)
        // The broker keeps the session (subscriptions, queued and unacknowledged messages) across disconnects.
        .set_clean_session(false)
        .set_max_packet_size(packet, packet)
        .set_inflight(config.inflight)
        .set_manual_acks(manual_acks);
    if let Some(c) = &config.credentials {
        o.set_credentials(c.username.clone(), c.password.clone());
    }
    if let Some(tls) = tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
    }
    o
}

#[async_trait]
impl MetricsBus for MqttBus {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn publish(&self, msg: Message) -> Ack {
        if let Err(e) = check(&msg, self.config.settings.max_payload) {
            return self.metrics.refuse(e);
        }
        self.publisher.publish(&self.config.settings.prefix, msg, &self.metrics)
    }

    async fn subscribe(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn Subscription>, BusError> {
        check_group(group, topics)?;
        let lease = self.groups.lease(group, GROUP_WAIT).await?;
        let options = options(&self.config, self.tls.as_ref(), format!("{}.{group}", self.client_id), true);
        let sub = subscriber::MqttSubscription::open(options, &self.config, group, topics, self.metrics.clone(), lease).await?;
        Ok(Box::new(sub))
    }

    fn metrics(&self) -> Option<&BusMetrics> {
        Some(&self.metrics)
    }
}
