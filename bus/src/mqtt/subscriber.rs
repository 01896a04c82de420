//! An MQTT subscription: its own connection and persistent session, QoS 1 with
//! manual acks, so the broker keeps (and redelivers) every message until the
//! caller marks it processed. Acks go through rumqttc's bounded request queue;
//! a caller acking faster than the connection sends them (a backlog handed over
//! at once) parks the overflow in `deferred`, sent by the next `next`.

use super::connection::{drive, refusal, Step};
use crate::groups::GroupLease;
use crate::message::{next_subscription_id, Position, Token};
use crate::topic::{from_mqtt_name, mqtt_filter};
use crate::{BrokerKind, BusError, BusMetrics, MqttConfig, Received, Subscription, Topic};
use async_trait::async_trait;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Publish, QoS, SubscribeFilter, SubscribeReasonCode};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Acks and the subscribe request queued for the connection; more acks wait in `deferred`.
const REQUESTS: usize = 1024;
/// How long a closing subscription may take to have its last PUBACKs read.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub(super) struct MqttSubscription {
    id: u64,
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(Publish, u64)>,
    /// Bumped whenever the broker starts a fresh session: packet ids of the old
    /// one mean nothing to it any more.
    session: Arc<AtomicU64>,
    /// Delivered and not yet acknowledged: (seq, packet id, qos, session), oldest first.
    unacked: VecDeque<(u64, u16, QoS, u64)>,
    /// Acks that found the request queue full, with their session, oldest first.
    deferred: VecDeque<(Publish, u64)>,
    next_seq: u64,
    prefix: String,
    metrics: Arc<BusMetrics>,
    /// Dropped with the subscription, which tells the loop to send the acks and disconnect.
    _stop: oneshot::Sender<()>,
}

impl MqttSubscription {
    /// Connects and subscribes; returns once the broker confirmed the
    /// subscription, so the session holds from then on.
    pub(super) async fn open(options: MqttOptions, config: &MqttConfig, group: &str, topics: &[Topic], metrics: Arc<BusMetrics>, lease: GroupLease) -> Result<Self, BusError> {
        let prefix = config.settings.prefix.clone();
        let filters: Vec<_> = topics.iter().map(|t| SubscribeFilter::new(mqtt_filter(&prefix, *t, group), QoS::AtLeastOnce)).collect();
        let (client, eventloop) = AsyncClient::new(options, REQUESTS);
        let (tx, messages) = mpsc::unbounded_channel();
        let (ready_tx, ready) = oneshot::channel();
        let (stop, stopped) = oneshot::channel();
        let session = Arc::new(AtomicU64::new(0));
        let looping = Loop { client: client.clone(), filters, messages: tx, ready: Some(ready_tx), session: session.clone(), addr: config.addr() };
        tokio::spawn(looping.run(eventloop, stopped, lease));
        let unreachable = || BusError::Unreachable { kind: BrokerKind::Mqtt, addr: config.addr() };
        match tokio::time::timeout(config.settings.publish_timeout, ready).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) | Err(_) => return Err(unreachable()),
        }
        Ok(MqttSubscription {
            id: next_subscription_id(),
            client,
            messages,
            session,
            unacked: VecDeque::new(),
            deferred: VecDeque::new(),
            next_seq: 0,
            prefix,
            metrics,
            _stop: stop,
        })
    }

    /// Queues the ack of packet `pkid` of `session`, or defers it when the
    /// queue is full (in order: once one is deferred, later ones wait behind it).
    fn ack(&mut self, pkid: u16, qos: QoS, session: u64) {
        let mut publish = Publish::new("", qos, Vec::new());
        publish.pkid = pkid;
        if !self.deferred.is_empty() || self.client.try_ack(&publish).is_err() {
            self.deferred.push_back((publish, session));
        }
    }

    /// Sends the deferred acks, waiting for room; fails only when the connection's loop has ended.
    async fn send_deferred(&mut self) -> Result<(), BusError> {
        while let Some((publish, session)) = self.deferred.front() {
            // An ack of a session the broker dropped could acknowledge a new
            // session's message that reuses the packet id: it is not sent.
            if *session == self.session.load(Ordering::Relaxed) {
                self.client.ack(publish).await.map_err(|_| BusError::Closed)?;
            }
            self.deferred.pop_front();
        }
        Ok(())
    }
}

#[async_trait]
impl Subscription for MqttSubscription {
    async fn next(&mut self) -> Result<Received, BusError> {
        self.send_deferred().await?;
        loop {
            let (publish, session) = self.messages.recv().await.ok_or(BusError::Closed)?;
            let Some((topic, key)) = from_mqtt_name(&self.prefix, &publish.topic) else {
                warn!(topic = %publish.topic, "skipping a message on a topic the bus does not use");
                self.ack(publish.pkid, publish.qos, session);
                continue;
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            self.unacked.push_back((seq, publish.pkid, publish.qos, session));
            self.metrics.count_received();
            let token = Token { subscription: self.id, position: Position::Seq(seq) };
            return Ok(Received { topic, key: key.to_string(), payload: publish.payload, token });
        }
    }

    fn processed(&mut self, received: &Received) -> Result<(), BusError> {
        let Position::Seq(seq) = received.token.position_in(self.id)? else { return Err(BusError::ForeignMessage) };
        let current = self.session.load(Ordering::Relaxed);
        while let Some(&(s, pkid, qos, session)) = self.unacked.front() {
            if s > seq {
                break;
            }
            // From a session the broker dropped: it will not take the ack (nor resend the message).
            if session == current {
                self.ack(pkid, qos, session);
            }
            self.unacked.pop_front();
        }
        Ok(())
    }
}

/// What the connection's task needs besides the event loop.
struct Loop {
    client: AsyncClient,
    filters: Vec<SubscribeFilter>,
    messages: mpsc::UnboundedSender<(Publish, u64)>,
    /// Told whether the first subscription was granted.
    ready: Option<oneshot::Sender<Result<(), BusError>>>,
    session: Arc<AtomicU64>,
    addr: String,
}

impl Loop {
    /// Runs the connection; `lease` is released when it has closed, letting the group subscribe again.
    async fn run(mut self, eventloop: EventLoop, stopped: oneshot::Receiver<()>, lease: GroupLease) {
        let (client, addr) = (self.client.clone(), self.addr.clone());
        drive(eventloop, client, stopped, &addr, CLOSE_GRACE, |_, event| self.handle(event)).await;
        drop(lease);
    }

    fn handle(&mut self, event: Result<Event, ConnectionError>) -> Step {
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                if !ack.session_present {
                    self.session.fetch_add(1, Ordering::Relaxed);
                }
                // Again on every connection: a broker that lost the session lost the subscription too.
                if self.client.try_subscribe_many(self.filters.clone()).is_err() {
                    return Step::Stop;
                }
            }
            Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                let refused = ack.return_codes.contains(&SubscribeReasonCode::Failure);
                let result = if refused {
                    let filters: Vec<_> = self.filters.iter().map(|f| f.path.as_str()).collect();
                    Err(BusError::Broker {
                        kind: BrokerKind::Mqtt,
                        addr: self.addr.clone(),
                        detail: format!("refused the subscription to {filters:?}: check the broker's ACL for this user"),
                    })
                } else {
                    Ok(())
                };
                match self.ready.take() {
                    Some(ready) => {
                        let _ = ready.send(result);
                    }
                    None if refused => warn!(addr = %self.addr, "the broker refused the renewed subscription; no more messages will arrive"),
                    None => {}
                }
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                // The subscription may be closing; then the broker redelivers what it did not get to.
                let _ = self.messages.send((publish, self.session.load(Ordering::Relaxed)));
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(refused) = refusal(&e, &self.addr) {
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Err(refused));
                        return Step::Stop;
                    }
                }
            }
        }
        Step::Continue
    }
}
