//! What a message is about, and the wire names each broker uses for it.
//!
//! Kafka: `{prefix}.v1.{topic}`, keyed by the publisher's node id (which picks
//! the partition). MQTT: `{prefix}/v1/{key}/{topic}`, the key a topic level so
//! `mosquitto_sub -t 'sluice/v1/+/host'` follows one kind from every node. The
//! `v1` is the wire format's version: a new format gets new topics.
//!
//! Besides the metrics, the bus carries asynchronous invocations: a work queue
//! (`invocation`, shared by every coordinator's group of the same name, so each
//! invocation is taken by one), their state records (`invocation-state`, read by
//! every coordinator) and the ones that failed every try (`dead-letter`).

use std::fmt;

/// The kinds of message on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Host,
    Container,
    Gateway,
    Event,
    /// An accepted asynchronous invocation, keyed by its id.
    Invocation,
    /// A state record of an invocation (queued, running, failed try, done, dead-lettered), keyed by its id.
    InvocationState,
    /// An invocation that failed its last try, with its request, keyed by its id.
    DeadLetter,
}

impl Topic {
    pub const ALL: [Topic; 7] = [Topic::Host, Topic::Container, Topic::Gateway, Topic::Event, Topic::Invocation, Topic::InvocationState, Topic::DeadLetter];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Host => "host",
            Topic::Container => "container",
            Topic::Gateway => "gateway",
            Topic::Event => "event",
            Topic::Invocation => "invocation",
            Topic::InvocationState => "invocation-state",
            Topic::DeadLetter => "dead-letter",
        }
    }

    fn from_wire(s: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const VERSION: &str = "v1";

/// The Kafka topic name of `topic`.
pub(crate) fn kafka_name(prefix: &str, topic: Topic) -> String {
    format!("{prefix}.{VERSION}.{topic}")
}

/// The topic a Kafka topic name stands for, if it is one of ours.
pub(crate) fn from_kafka_name(prefix: &str, name: &str) -> Option<Topic> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('.')?.strip_prefix(VERSION)?.strip_prefix('.')?;
    Topic::from_wire(rest)
}

/// The MQTT topic a message of `topic` from `key` is published on.
pub(crate) fn mqtt_name(prefix: &str, key: &str, topic: Topic) -> String {
    format!("{prefix}/{VERSION}/{key}/{topic}")
}

/// The MQTT filter matching `topic` from every key. The work queue is a shared
/// subscription of the group: the broker hands each invocation to one of the
/// group's sessions (one per coordinator), not to all.
pub(crate) fn mqtt_filter(prefix: &str, topic: Topic, group: &str) -> String {
    match topic {
        Topic::Invocation => format!("$share/{prefix}.{group}/{prefix}/{VERSION}/+/{topic}"),
        _ => format!("{prefix}/{VERSION}/+/{topic}"),
    }
}

/// The (topic, key) of an MQTT topic name, if it is one of ours.
pub(crate) fn from_mqtt_name<'a>(prefix: &str, name: &'a str) -> Option<(Topic, &'a str)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('/')?.strip_prefix(VERSION)?.strip_prefix('/')?;
    let (key, topic) = rest.split_once('/')?;
    Some((Topic::from_wire(topic)?, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in Topic::ALL {
            assert_eq!(from_kafka_name("sluice", &kafka_name("sluice", t)), Some(t));
            assert_eq!(from_mqtt_name("sluice", &mqtt_name("sluice", "node-1", t)), Some((t, "node-1")));
        }
        assert_eq!(kafka_name("sluice", Topic::Host), "sluice.v1.host");
        assert_eq!(mqtt_name("sluice", "n1", Topic::Container), "sluice/v1/n1/container");
        assert_eq!(mqtt_filter("sluice", Topic::Gateway, "g"), "sluice/v1/+/gateway");
        assert_eq!(mqtt_filter("sluice", Topic::Invocation, "g"), "$share/sluice.g/sluice/v1/+/invocation");
        assert_eq!(kafka_name("sluice", Topic::InvocationState), "sluice.v1.invocation-state");
    }

    #[test]
    fn foreign_names_are_not_ours() {
        assert_eq!(from_kafka_name("sluice", "sluice.v2.host"), None);
        assert_eq!(from_kafka_name("sluice", "sluicex.v1.host"), None);
        assert_eq!(from_mqtt_name("sluice", "sluice/v1/n1/host/extra"), None);
        assert_eq!(from_mqtt_name("sluice", "other/v1/n1/host"), None);
    }
}
