//! The bus's Kafka topics: created at connect, and again whenever a client
//! finds them missing or publishing fails, since a broker may be down at
//! start-up or come back empty (tansu with memory storage does) and does not
//! create topics on its own.

use super::context::BusContext;
use crate::outage::Outage;
use crate::{BrokerKind, BusError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info};

/// How long one creation attempt may take.
const ATTEMPT: Duration = Duration::from_secs(3);

pub(crate) struct Topics {
    admin: AdminClient<BusContext>,
    context: BusContext,
    names: Vec<String>,
    partitions: i32,
    replication: i32,
    addr: String,
}

impl Topics {
    pub(crate) fn new(admin: AdminClient<BusContext>, context: BusContext, names: Vec<String>, partitions: i32, replication: i32, addr: String) -> Self {
        Topics { admin, context, names, partitions, replication, addr }
    }

    /// One attempt to create the topics, bounded; those that exist already are fine.
    pub(crate) async fn create(&self) -> Result<(), BusError> {
        let topics: Vec<_> = self.names.iter().map(|n| NewTopic::new(n, self.partitions, TopicReplication::Fixed(self.replication))).collect();
        let options = AdminOptions::new().request_timeout(Some(ATTEMPT)).operation_timeout(Some(ATTEMPT));
        let results = self.admin.create_topics(&topics, &options).await.map_err(|e| self.failed("", e.rdkafka_error_code(), &e))?;
        for result in results {
            match result {
                Ok(name) => info!(topic = %name, partitions = self.partitions, "kafka topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(self.failed(&name, Some(code), &KafkaError::AdminOp(code))),
            }
        }
        self.context.reachable();
        Ok(())
    }

    fn failed(&self, topic: &str, code: Option<RDKafkaErrorCode>, error: &KafkaError) -> BusError {
        use RDKafkaErrorCode::*;
        match code {
            Some(OperationTimedOut | RequestTimedOut | BrokerTransportFailure | AllBrokersDown | BrokerNotAvailable | NotController | Resolve) | None => {
                BusError::Unreachable { kind: BrokerKind::Kafka, addr: self.addr.clone() }
            }
            Some(_) => BusError::Broker {
                kind: BrokerKind::Kafka,
                addr: self.addr.clone(),
                detail: format!(
                    "creating topic {topic:?} failed ({error}): allow this client to create topics, or create {} yourself with {} partitions",
                    self.names.join(", "),
                    self.partitions
                ),
            },
        }
    }

    /// Creates the topics whenever they may be missing, retrying with backoff
    /// while the broker is away. `created`: whether connect already did. Runs
    /// until aborted.
    pub(crate) async fn keep(self: Arc<Self>, created: bool, mut outage: Outage) {
        let mut missing = !created;
        loop {
            while missing {
                match self.create().await {
                    Ok(()) => {
                        outage.up();
                        missing = false;
                    }
                    Err(e) => {
                        debug!(error = %e, "kafka topics not created yet");
                        tokio::time::sleep(outage.down(&e)).await;
                    }
                }
            }
            self.context.topics_missing().notified().await;
            missing = true;
        }
    }
}
