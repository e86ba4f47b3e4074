//! Appending to `raw`: an idempotent, `acks=all` producer. [`Appender::append`] resolves only
//! when the broker acknowledged the record, so a 202 is never sent for an event that could
//! still be lost. A full local queue is refused at once (503 `queue_full`) instead of letting
//! requests pile up; a broker that does not acknowledge within `ack_timeout_ms` gets 503
//! `broker_unavailable` (`message.timeout.ms` is set to the same bound, so librdkafka stops
//! retrying too; a provider's retry is then a duplicate the processor removes).

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use schemas::config::Config;
use schemas::kafka::{client_config, Role};
use schemas::key::EntityKey;
use schemas::raw::RawMeta;
use schemas::topics::Topic;

use crate::error::IngestError;
use crate::request::{Request, Verified};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Clone)]
pub struct Appender {
    producer: FutureProducer,
    topic: String,
    retry_after: u32,
}

impl Appender {
    pub fn new(config: &Config) -> Result<Self, KafkaError> {
        let mut client = client_config(&config.kafka, Role::Producer);
        if !config.kafka.producer.contains_key("message.timeout.ms") {
            client.set(
                "message.timeout.ms",
                config.ingest.ack_timeout_ms.to_string(),
            );
        }
        Ok(Self {
            producer: client.create()?,
            topic: config.topics().name(Topic::Raw),
            retry_after: config.ingest.retry_after_secs,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub async fn append(
        &self,
        request: &Request<Verified>,
        meta: &RawMeta,
    ) -> Result<Appended, IngestError> {
        let key = EntityKey::new(&meta.tenant, &meta.entity).encode();
        let pairs = meta.to_headers();
        let headers = pairs.iter().fold(
            OwnedHeaders::new_with_capacity(pairs.len()),
            |h, (name, value)| {
                h.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                })
            },
        );
        let record = FutureRecord::to(&self.topic)
            .key(key.as_bytes())
            .payload(request.body().as_ref())
            .headers(headers)
            .timestamp(meta.received_at);
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(error, _)| self.refusal(error))?;
        match delivery.await {
            Ok(Ok(delivered)) => Ok(Appended {
                partition: delivered.partition,
                offset: delivered.offset,
            }),
            Ok(Err((error, _))) => Err(self.refusal(error)),
            Err(_cancelled) => Err(IngestError::Unavailable {
                reason: "the producer shut down".into(),
                retry_after: self.retry_after,
            }),
        }
    }

    fn refusal(&self, error: KafkaError) -> IngestError {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => IngestError::QueueFull {
                retry_after: self.retry_after,
            },
            _ => IngestError::Unavailable {
                reason: error.to_string(),
                retry_after: self.retry_after,
            },
        }
    }

    /// Whether the broker answers a metadata request for `raw` within `timeout`.
    pub fn ready(&self, timeout: Duration) -> Result<(), String> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), Timeout::After(timeout))
            .map_err(|e| e.to_string())?;
        match metadata.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
            _ => Err(format!("topic `{}` is not available", self.topic)),
        }
    }

    /// Waits for in-flight appends to be acknowledged (on shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(error = %e, "not every in-flight append was acknowledged before shutdown");
        }
    }
}
