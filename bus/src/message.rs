//! What travels on the bus, and the checks every bus applies before accepting a message.

use crate::{BusError, Topic};
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest message key, in bytes.
pub const MAX_KEY_LEN: usize = 200;

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: Topic,
    /// The publisher's node id: it keeps one node's messages in order and picks
    /// the Kafka partition; it is a level of the MQTT topic.
    pub key: String,
    pub payload: Bytes,
}

/// A message delivered to a subscription; hand it back to
/// [`Subscription::processed`](crate::Subscription::processed) once handled.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: Topic,
    pub key: String,
    pub payload: Bytes,
    pub(crate) token: Token,
}

/// Where a received message sits on its subscription's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    /// The subscription that delivered it.
    pub(crate) subscription: u64,
    pub(crate) position: Position,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// The n-th message the subscription delivered (in-process, MQTT).
    Seq(u64),
    /// A Kafka offset, per partition.
    Offset { partition: i32, offset: i64 },
}

impl Token {
    /// The position, if `self` came from `subscription`.
    pub(crate) fn position_in(&self, subscription: u64) -> Result<Position, BusError> {
        if self.subscription == subscription {
            Ok(self.position)
        } else {
            Err(BusError::ForeignMessage)
        }
    }
}

/// A process-wide unique id for a new subscription.
pub(crate) fn next_subscription_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Refuses messages every bus would refuse: too large, or keyed so the MQTT
/// topic would break. All buses share it so code tried on one runs on all.
pub(crate) fn check(msg: &Message, max_payload: usize) -> Result<(), BusError> {
    if msg.payload.len() > max_payload {
        return Err(BusError::TooLarge { size: msg.payload.len(), limit: max_payload });
    }
    let key = &msg.key;
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(|c| matches!(c, '/' | '+' | '#') || c.is_control()) {
        return Err(BusError::InvalidKey { key: key.clone() });
    }
    Ok(())
}

/// Refuses group names that would not be valid everywhere (a Kafka group id,
/// part of an MQTT client id).
pub(crate) fn check_group(group: &str, topics: &[Topic]) -> Result<(), BusError> {
    if group.is_empty() || group.len() > 100 || !group.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(BusError::InvalidGroup { group: group.to_string() });
    }
    if topics.is_empty() {
        return Err(BusError::NoTopics { group: group.to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(key: &str, size: usize) -> Message {
        Message { topic: Topic::Host, key: key.into(), payload: Bytes::from(vec![0; size]) }
    }

    #[test]
    fn limits_hold() {
        assert_eq!(check(&msg("n1", 10), 10), Ok(()));
        assert_eq!(check(&msg("n1", 11), 10), Err(BusError::TooLarge { size: 11, limit: 10 }));
        for bad in ["", "a/b", "a+", "#", "a\nb", &"x".repeat(MAX_KEY_LEN + 1)] {
            assert!(matches!(check(&msg(bad, 1), 10), Err(BusError::InvalidKey { .. })), "{bad:?}");
        }
    }

    #[test]
    fn groups_are_checked() {
        assert_eq!(check_group("coordinator-1.metrics_v1", &[Topic::Host]), Ok(()));
        assert!(matches!(check_group("a b", &[Topic::Host]), Err(BusError::InvalidGroup { .. })));
        assert!(matches!(check_group("g", &[]), Err(BusError::NoTopics { .. })));
    }

    #[test]
    fn tokens_belong_to_their_subscription() {
        let t = Token { subscription: 7, position: Position::Seq(3) };
        assert_eq!(t.position_in(7), Ok(Position::Seq(3)));
        assert_eq!(t.position_in(8), Err(BusError::ForeignMessage));
    }
}
