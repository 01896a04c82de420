//! Running one rumqttc event loop in a task: reconnecting with capped backoff
//! (logged once per outage), and closing gracefully — the requests queued
//! before the DISCONNECT (a subscription's last PUBACKs) go out and are read
//! by the broker before the task ends.

use crate::outage::Outage;
use crate::{BrokerKind, BusError};
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    Continue,
    /// End the connection now (its opener was told why).
    Stop,
}

/// Polls `eventloop`, handing every event to `handle`, until `stopped` fires
/// (its sender is dropped) or `handle` says stop; then disconnects, giving the
/// queued requests up to `grace` to go out first.
pub(super) async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    mut stopped: oneshot::Receiver<()>,
    addr: &str,
    grace: Duration,
    mut handle: impl FnMut(&mut EventLoop, Result<Event, ConnectionError>) -> Step,
) {
    let mut outage = Outage::new(BrokerKind::Mqtt, addr, &eventloop.mqtt_options.client_id());
    let mut connected = false;
    let mut closing: Option<Instant> = None;
    loop {
        let event = {
            // Kept alive across the stop signal: a poll dropped halfway could lose the request it was writing.
            let poll = eventloop.poll();
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    _ = &mut stopped, if closing.is_none() => {
                        if !connected {
                            return;
                        }
                        let _ = client.try_disconnect();
                        closing = Some(Instant::now() + grace);
                    }
                    _ = tokio::time::sleep_until(closing.unwrap_or_else(Instant::now)), if closing.is_some() => return,
                    event = &mut poll => break event,
                }
            }
        };
        let delay = match &event {
            // The broker closes the connection once it has read the DISCONNECT,
            // so everything sent before it was read too (a successor taking the
            // session over sooner would make the broker drop the last PUBACKs).
            Err(_) if closing.is_some() => return,
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                connected = true;
                outage.up();
                None
            }
            Ok(_) => None,
            Err(e) => {
                connected = false;
                Some(outage.down(e))
            }
        };
        if handle(&mut eventloop, event) == Step::Stop {
            return;
        }
        if let Some(delay) = delay {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// The broker's answer, when it is one retrying will not change.
pub(super) fn refusal(error: &ConnectionError, addr: &str) -> Option<BusError> {
    match error {
        ConnectionError::ConnectionRefused(code) if *code != ConnectReturnCode::ServiceUnavailable => Some(BusError::Broker {
            kind: BrokerKind::Mqtt,
            addr: addr.to_string(),
            detail: format!(
                "refused the connection ({code:?}): check the user name and password (user:pass@ in --bus, or SLUICE_BUS_USERNAME and SLUICE_BUS_PASSWORD) and that the client id is allowed"
            ),
        }),
        ConnectionError::Tls(e) => Some(BusError::Tls(format!("{e}: check ca=, cert= and key= in --bus against the broker's certificate"))),
        _ => None,
    }
}
