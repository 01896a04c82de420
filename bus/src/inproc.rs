//! The in-process bus, for `sluice up` where the agent and coordinator share a
//! process: every publish is copied to each group subscribed to its topic, into
//! a bounded queue per group that outlives the group's subscriptions.

use crate::groups::{GroupLease, Groups};
use crate::message::{check, check_group, next_subscription_id, Position, Token};
use crate::{Ack, BusError, BusMetrics, InProcessConfig, Message, MetricsBus, Received, Subscription, Topic};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Cheap to share: clone the `Arc` for each user in the process.
pub struct InProcessBus {
    state: Arc<Mutex<State>>,
    config: InProcessConfig,
    metrics: Arc<BusMetrics>,
    groups: Groups,
}

#[derive(Default)]
struct State {
    groups: HashMap<String, Group>,
    /// Numbers every message enqueued, so "this and everything before" is a comparison.
    next_seq: u64,
}

struct Group {
    /// What the group's latest subscription asked for.
    topics: HashSet<Topic>,
    queue: VecDeque<Entry>,
    /// Delivered to a subscription and not yet processed; they count against the
    /// capacity because a dropped subscription hands them back.
    outstanding: usize,
    notify: Arc<Notify>,
}

#[derive(Clone)]
struct Entry {
    seq: u64,
    msg: Message,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::with_config(InProcessConfig::default())
    }

    pub fn with_config(config: InProcessConfig) -> Self {
        InProcessBus { state: Arc::default(), config, metrics: BusMetrics::new("in-process"), groups: Groups::default() }
    }
}

#[async_trait]
impl MetricsBus for InProcessBus {
    fn name(&self) -> &'static str {
        "in-process"
    }

    fn publish(&self, msg: Message) -> Ack {
        if let Err(e) = check(&msg, self.config.max_payload) {
            return self.metrics.refuse(e);
        }
        let mut state = self.state.lock().unwrap();
        // All or nothing: a message some groups got and others did not could
        // not be retried without duplicating it.
        let capacity = self.config.capacity;
        if let Some((name, _)) = state.groups.iter().find(|(_, g)| g.topics.contains(&msg.topic) && g.queue.len() + g.outstanding >= capacity) {
            let error = BusError::Full { queue: format!("in-process queue of group {name:?}"), limit: format!("{capacity} messages") };
            drop(state);
            return self.metrics.refuse(error);
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        for group in state.groups.values_mut().filter(|g| g.topics.contains(&msg.topic)) {
            group.queue.push_back(Entry { seq, msg: msg.clone() });
            group.notify.notify_waiters();
        }
        drop(state);
        self.metrics.track(async { Ok(()) })
    }

    async fn subscribe(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn Subscription>, BusError> {
        check_group(group, topics)?;
        // Nothing closes in the background here, so a busy group is a caller's mistake: say so at once.
        let lease = self.groups.lease(group, Duration::ZERO).await?;
        let notify = {
            let mut state = self.state.lock().unwrap();
            let g =
                state.groups.entry(group.to_string()).or_insert_with(|| Group { topics: HashSet::new(), queue: VecDeque::new(), outstanding: 0, notify: Arc::new(Notify::new()) });
            g.topics = topics.iter().copied().collect();
            g.notify.clone()
        };
        Ok(Box::new(InProcessSubscription {
            id: next_subscription_id(),
            state: self.state.clone(),
            group: group.to_string(),
            notify,
            delivered: VecDeque::new(),
            metrics: self.metrics.clone(),
            _lease: lease,
        }))
    }

    fn metrics(&self) -> Option<&BusMetrics> {
        Some(&self.metrics)
    }
}

struct InProcessSubscription {
    id: u64,
    state: Arc<Mutex<State>>,
    group: String,
    notify: Arc<Notify>,
    /// Delivered, not yet processed, oldest first.
    delivered: VecDeque<Entry>,
    metrics: Arc<BusMetrics>,
    _lease: GroupLease,
}

#[async_trait]
impl Subscription for InProcessSubscription {
    async fn next(&mut self) -> Result<Received, BusError> {
        loop {
            // Registered before looking, so a publish in between still wakes us.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock().unwrap();
                let group = state.groups.get_mut(&self.group).ok_or(BusError::Closed)?;
                while let Some(entry) = group.queue.pop_front() {
                    // Queued before a resubscription narrowed the topics: no longer wanted.
                    if !group.topics.contains(&entry.msg.topic) {
                        continue;
                    }
                    group.outstanding += 1;
                    let Message { topic, key, payload } = entry.msg.clone();
                    let token = Token { subscription: self.id, position: Position::Seq(entry.seq) };
                    self.delivered.push_back(entry);
                    self.metrics.count_received();
                    return Ok(Received { topic, key, payload, token });
                }
            }
            notified.await;
        }
    }

    fn processed(&mut self, received: &Received) -> Result<(), BusError> {
        let Position::Seq(seq) = received.token.position_in(self.id)? else { return Err(BusError::ForeignMessage) };
        let before = self.delivered.len();
        while self.delivered.front().is_some_and(|e| e.seq <= seq) {
            self.delivered.pop_front();
        }
        let done = before - self.delivered.len();
        if let Some(group) = self.state.lock().unwrap().groups.get_mut(&self.group) {
            group.outstanding -= done;
        }
        Ok(())
    }
}

impl Drop for InProcessSubscription {
    /// Hands what was delivered and not processed back to the group, in order,
    /// for its next subscription (at least once).
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap();
        if let Some(group) = state.groups.get_mut(&self.group) {
            group.outstanding -= self.delivered.len();
            while let Some(entry) = self.delivered.pop_back() {
                group.queue.push_front(entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(topic: Topic, n: u32) -> Message {
        Message { topic, key: "n1".into(), payload: Bytes::from(n.to_string()) }
    }

    #[tokio::test]
    async fn a_full_group_refuses_the_publish_for_every_group() {
        let bus = InProcessBus::with_config(InProcessConfig { capacity: 2, ..Default::default() });
        let _slow = bus.subscribe("slow", &[Topic::Host]).await.unwrap();
        let mut fast = bus.subscribe("fast", &[Topic::Host]).await.unwrap();
        bus.publish(msg(Topic::Host, 1)).await.unwrap();
        bus.publish(msg(Topic::Host, 2)).await.unwrap();
        for n in [1, 2] {
            let r = fast.next().await.unwrap();
            assert_eq!(r.payload, Bytes::from(n.to_string()));
            fast.processed(&r).unwrap();
        }
        let err = bus.publish(msg(Topic::Host, 3)).await.unwrap_err();
        assert!(matches!(&err, BusError::Full { queue, .. } if queue.contains("\"slow\"")), "{err}");
        assert!(err.to_string().contains("(2 messages)"), "{err}");
        // Not half-delivered: "fast", which had room, did not get it either.
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), fast.next()).await.is_err());
        bus.publish(msg(Topic::Gateway, 4)).await.expect("other topics still flow");
        let m = bus.metrics().unwrap();
        assert_eq!((m.published(), m.acked(), m.failed(), m.received()), (3, 3, 1, 2));
    }

    #[tokio::test]
    async fn delivered_but_unprocessed_count_against_the_capacity() {
        let bus = InProcessBus::with_config(InProcessConfig { capacity: 1, ..Default::default() });
        let mut sub = bus.subscribe("g", &[Topic::Host]).await.unwrap();
        bus.publish(msg(Topic::Host, 1)).await.unwrap();
        let r = sub.next().await.unwrap();
        assert!(matches!(bus.publish(msg(Topic::Host, 2)).await, Err(BusError::Full { .. })));
        sub.processed(&r).unwrap();
        bus.publish(msg(Topic::Host, 2)).await.unwrap();
    }

    #[tokio::test]
    async fn one_live_subscription_per_group() {
        let bus = InProcessBus::new();
        let first = bus.subscribe("g", &[Topic::Host]).await.unwrap();
        assert!(matches!(bus.subscribe("g", &[Topic::Host]).await, Err(BusError::GroupBusy { .. })));
        drop(first);
        bus.subscribe("g", &[Topic::Host]).await.unwrap();
    }

    #[tokio::test]
    async fn a_message_from_another_subscription_is_refused() {
        let bus = InProcessBus::new();
        let mut a = bus.subscribe("a", &[Topic::Host]).await.unwrap();
        let mut b = bus.subscribe("b", &[Topic::Host]).await.unwrap();
        bus.publish(msg(Topic::Host, 1)).await.unwrap();
        let from_a = a.next().await.unwrap();
        b.next().await.unwrap();
        assert_eq!(b.processed(&from_a), Err(BusError::ForeignMessage));
    }
}
