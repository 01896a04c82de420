//! The publishing MQTT connection, and acks that mean "the broker has it".
//!
//! rumqttc's `try_publish` returns once the message is queued; the broker's
//! PUBACK only shows up in the event loop as `Outgoing::Publish(pkid)` (when
//! sent, the packet id assigned) then `Incoming::PubAck(pkid)`. Queue order is
//! send order, so each new packet id goes to the oldest waiter without one. A
//! packet id already waiting is a retransmission after a reconnect.
//!
//! rumqttc keeps unacknowledged publishes across reconnects, but drops them
//! (and everything queued at the time of the disconnect) when the broker comes
//! back without the session. This loop therefore holds them itself while
//! disconnected and hands them back after every CONNACK, oldest first, so
//! nothing queued is lost and the id matching stays true.

use super::connection::{drive, refusal, Step};
use crate::topic::mqtt_name;
use crate::{Ack, BrokerKind, BusError, BusMetrics, Message, MqttConfig};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS, Request};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::debug;

/// Publishes rumqttc may hold before publish fails with `Full`...
const QUEUE_MESSAGES: usize = 10_000;
/// ...or payload bytes, whichever comes first.
const QUEUE_BYTES: usize = 64 << 20;
/// How long connect waits for the broker's first answer.
const FIRST_ANSWER: Duration = Duration::from_secs(3);
/// How long a closing connection may take to say goodbye (see `connection::drive`).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

pub(super) struct Publisher {
    client: AsyncClient,
    tracker: Arc<Mutex<Tracker>>,
    connected: Arc<AtomicBool>,
    timeout: Duration,
    addr: String,
    task: JoinHandle<()>,
    /// Dropped with the publisher, which tells the loop to disconnect and end.
    _stop: oneshot::Sender<()>,
}

/// Someone awaiting the broker's PUBACK.
struct Waiter {
    acked: oneshot::Sender<()>,
    size: usize,
}

/// The waiters, in the order rumqttc sends their messages.
#[derive(Default)]
struct Tracker {
    /// Queued in rumqttc, no packet id yet, oldest first.
    unsent: VecDeque<Waiter>,
    /// Sent, not yet acknowledged, in send order.
    inflight: VecDeque<(u16, Waiter)>,
    /// Held back by rumqttc until its packet id is free (a broker acking out of order).
    collided: Option<(u16, Waiter)>,
    /// Payload bytes of all of the above.
    bytes: usize,
}

impl Tracker {
    fn sent(&mut self, pkid: u16) {
        if self.inflight.iter().any(|(p, _)| *p == pkid) {
            return; // a retransmission
        }
        let waiter = match self.collided.take() {
            Some((p, w)) if p == pkid => w,
            other => {
                self.collided = other;
                match self.unsent.pop_front() {
                    Some(w) => w,
                    None => return debug!(pkid, "mqtt publish sent with nobody waiting for it"),
                }
            }
        };
        self.inflight.push_back((pkid, waiter));
    }

    fn held_back(&mut self, pkid: u16) {
        if let Some(w) = self.unsent.pop_front() {
            self.collided = Some((pkid, w));
        }
    }

    fn acked(&mut self, pkid: u16) {
        if let Some(i) = self.inflight.iter().position(|(p, _)| *p == pkid) {
            let (_, waiter) = self.inflight.remove(i).unwrap();
            self.bytes -= waiter.size;
            let _ = waiter.acked.send(());
        }
    }

    /// Puts `requests` in the order they were first queued: those sent before
    /// (by when they were sent), then those never sent (already in queue order).
    fn reorder(&self, requests: &mut VecDeque<Request>) {
        let rank = |r: &Request| match r {
            Request::Publish(p) if p.pkid != 0 => self.inflight.iter().position(|(id, _)| *id == p.pkid).unwrap_or(usize::MAX - 1),
            _ => usize::MAX,
        };
        requests.make_contiguous().sort_by_key(rank);
    }
}

impl Publisher {
    pub(super) async fn start(options: MqttOptions, config: &MqttConfig) -> Result<Self, BusError> {
        let (client, eventloop) = AsyncClient::new(options, QUEUE_MESSAGES);
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let connected = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = oneshot::channel();
        let (first_tx, first_rx) = oneshot::channel();
        let addr = config.addr();
        let task = tokio::spawn(run(eventloop, client.clone(), stopped, tracker.clone(), connected.clone(), addr.clone(), first_tx));
        let publisher = Publisher { client, tracker, connected, timeout: config.settings.publish_timeout, addr, task, _stop: stop };
        match tokio::time::timeout(FIRST_ANSWER, first_rx).await {
            Ok(Ok(Err(refused))) => Err(refused),
            _ => Ok(publisher),
        }
    }

    pub(super) fn publish(&self, prefix: &str, msg: Message, metrics: &Arc<BusMetrics>) -> Ack {
        let size = msg.payload.len();
        let mut tracker = self.tracker.lock().unwrap();
        if tracker.bytes + size > QUEUE_BYTES {
            return metrics.refuse(BusError::Full { queue: "MQTT publish queue".into(), limit: format!("{} MiB of payloads", QUEUE_BYTES >> 20) });
        }
        // Queued under the tracker's lock, so the waiter lines up with the message.
        if self.client.try_publish(mqtt_name(prefix, &msg.key, msg.topic), QoS::AtLeastOnce, false, msg.payload.to_vec()).is_err() {
            let error = if self.task.is_finished() { BusError::Closed } else { BusError::Full { queue: "MQTT publish queue".into(), limit: format!("{QUEUE_MESSAGES} messages") } };
            return metrics.refuse(error);
        }
        let (acked, ack) = oneshot::channel();
        tracker.unsent.push_back(Waiter { acked, size });
        tracker.bytes += size;
        drop(tracker);
        let (timeout, connected, addr) = (self.timeout, self.connected.clone(), self.addr.clone());
        metrics.track(async move {
            match tokio::time::timeout(timeout, ack).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(BusError::Closed),
                Err(_) if !connected.load(Ordering::Relaxed) => Err(BusError::Unreachable { kind: BrokerKind::Mqtt, addr }),
                Err(_) => Err(BusError::Timeout),
            }
        })
    }
}

/// Runs the connection, matching its events to the waiters.
async fn run(
    eventloop: EventLoop,
    client: AsyncClient,
    stopped: oneshot::Receiver<()>,
    tracker: Arc<Mutex<Tracker>>,
    connected: Arc<AtomicBool>,
    addr: String,
    first: oneshot::Sender<Result<(), BusError>>,
) {
    let mut first = Some(first);
    // Unacknowledged and unsent publishes, kept here while disconnected.
    let mut held: VecDeque<Request> = VecDeque::new();
    drive(eventloop, client, stopped, &addr, CLOSE_GRACE, |eventloop, event| {
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                connected.store(true, Ordering::Relaxed);
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
                let mut pending = std::mem::take(&mut held);
                pending.append(&mut eventloop.pending);
                eventloop.pending = pending;
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => tracker.lock().unwrap().sent(pkid),
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => tracker.lock().unwrap().held_back(pkid),
            Ok(Event::Incoming(Incoming::PubAck(ack))) => tracker.lock().unwrap().acked(ack.pkid),
            Ok(_) => {}
            Err(e) => {
                connected.store(false, Ordering::Relaxed);
                held.append(&mut eventloop.pending);
                tracker.lock().unwrap().reorder(&mut held);
                if let Some(first) = first.take() {
                    let _ = first.send(refusal(&e, &addr).map_or(Ok(()), Err));
                }
            }
        }
        Step::Continue
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::Publish;

    fn waiter() -> (Waiter, oneshot::Receiver<()>) {
        let (acked, rx) = oneshot::channel();
        (Waiter { acked, size: 10 }, rx)
    }

    fn tracker_with(n: usize) -> (Tracker, Vec<oneshot::Receiver<()>>) {
        let mut t = Tracker::default();
        let rxs = (0..n)
            .map(|_| {
                let (w, rx) = waiter();
                t.unsent.push_back(w);
                t.bytes += 10;
                rx
            })
            .collect();
        (t, rxs)
    }

    #[test]
    fn acks_reach_the_right_waiters_despite_retransmissions() {
        let (mut t, mut rx) = tracker_with(3);
        t.sent(1);
        t.sent(2);
        t.sent(1); // resent after a reconnect: still the first message
        t.acked(2);
        assert!(rx[1].try_recv().is_ok());
        assert!(rx[0].try_recv().is_err());
        t.sent(3);
        t.acked(1);
        t.acked(3);
        assert!(rx[0].try_recv().is_ok() && rx[2].try_recv().is_ok());
        assert_eq!((t.bytes, t.inflight.len(), t.unsent.len()), (0, 0, 0));
    }

    #[test]
    fn a_held_back_publish_keeps_its_waiter() {
        let (mut t, mut rx) = tracker_with(2);
        t.sent(1);
        t.held_back(1); // the second message wants id 1, still in use
        t.acked(1);
        t.sent(1); // now it goes out
        t.acked(1);
        assert!(rx[0].try_recv().is_ok() && rx[1].try_recv().is_ok());
    }

    #[test]
    fn held_requests_go_back_in_queue_order() {
        let (mut t, _rx) = tracker_with(4);
        for pkid in [7, 8, 9] {
            t.sent(pkid);
        }
        let publish = |pkid| {
            let mut p = Publish::new("t", QoS::AtLeastOnce, vec![]);
            p.pkid = pkid;
            Request::Publish(p)
        };
        // As rumqttc may hand them over after two disconnects in a row.
        let mut held: VecDeque<_> = [publish(9), publish(0), publish(7), publish(8)].into();
        t.reorder(&mut held);
        let ids: Vec<_> = held.iter().map(|r| if let Request::Publish(p) = r { p.pkid } else { u16::MAX }).collect();
        assert_eq!(ids, [7, 8, 9, 0]);
    }
}
