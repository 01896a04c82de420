//! The Kafka producer: librdkafka's `BaseProducer` with a delivery-report
//! thread of our own, each report resolving the one-shot channel its message
//! was sent with.
//!
//! Why not rdkafka's `FutureProducer`: its thread polls every 100 ms, and each
//! poll ends by spinning through its last millisecond (the wait is truncated to
//! whole milliseconds, then retried with zero until the deadline passes). On an
//! idle agent that spin was 0.7% of a core, more than everything else the agent
//! does (B5). Here the thread waits up to `POLL_WAIT` and wakes as soon as a
//! report arrives, so the spin happens once per `POLL_WAIT`.

use super::context::BusContext;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, ProducerContext};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Longest the delivery-report thread sleeps between checks of whether it should
/// stop; a report wakes it at once.
const POLL_WAIT: Duration = Duration::from_secs(5);

/// What a message's delivery report says.
pub(crate) type Report = Result<(), KafkaError>;

/// The bus's context plus delivery reports.
pub(crate) struct Deliveries(BusContext);

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<oneshot::Sender<Report>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        // The publisher may have stopped waiting; nobody to tell then.
        let _ = reply.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// A producer whose delivery reports are served by its own thread until dropped.
pub(crate) struct Producer {
    inner: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
}

impl Producer {
    pub(crate) fn create(config: &ClientConfig, context: BusContext) -> Result<Self, KafkaError> {
        let inner: Arc<BaseProducer<Deliveries>> = Arc::new(config.create_with_context(Deliveries(context))?);
        let stop = Arc::new(AtomicBool::new(false));
        let (producer, stopping) = (inner.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kafka-deliveries".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    producer.poll(POLL_WAIT);
                }
                // The last reference may be this one: dropping it here purges
                // what is still queued, answering its senders with errors.
            })
            .map_err(|e| KafkaError::ClientCreation(format!("cannot start the delivery-report thread: {e}")))?;
        Ok(Self { inner, stop })
    }

    /// Queues `payload` for `topic` under `key`; the receiver gets its delivery
    /// report. Fails at once when librdkafka's queue is full or the message is refused.
    pub(crate) fn send(&self, topic: &str, key: &str, payload: &[u8]) -> Result<oneshot::Receiver<Report>, KafkaError> {
        let (reply, report) = oneshot::channel();
        let record = BaseRecord::with_opaque_to(topic, Box::new(reply)).key(key).payload(payload);
        self.inner.send(record).map_err(|(e, _)| e)?;
        Ok(report)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
