//! Appending to `raw`: an idempotent, `acks=all` producer. [`Appender::append`] resolves only
//! when the broker acknowledged every record of the request, so a 202 is never sent for an
//! event that could still be lost. A full local queue is refused at once (503 `queue_full`)
//! instead of letting requests pile up; a broker that does not acknowledge within
//! `ack_timeout_ms` gets 503 `broker_unavailable` (`message.timeout.ms` is set to the same
//! bound, so librdkafka stops retrying too; a provider's retry is then a duplicate the
//! processor removes).
//!
//! A record the producer or broker refuses for good (`MessageSizeTooLarge`,
//! `MessageBatchTooLarge` (Kafka's `RECORD_LIST_TOO_LARGE`), `InvalidRecord`, `InvalidMessageSize`) is a permanent condition: 413
//! `payload_too_large`, never 503. The body limit itself is derived from what one producer
//! message can hold ([`Limits`]), so that case stays rare (a huge header, a smaller broker
//! limit).
//!
//! Verified requests the extraction rules cannot read are appended to `dlq` the same way
//! ([`Appender::dead_letter`], see [`crate::dead_letter`]).
//!
//! The same producer writes the `rejected` audit records, without waiting for them: an audit
//! record that cannot be queued is counted (`hookstream_ingest_audit_dropped_total`) and never
//! delays or fails an answer.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use schemas::avro::Codecs;
use schemas::config::Config;
use schemas::kafka::{client_config, default_unless_set, Role};
use schemas::key::EntityKey;
use schemas::records::RejectedRecord;
use schemas::topics::Topic;
use schemas::trace::TraceParent;

use crate::dead_letter::DeadLetter;
use crate::error::IngestError;
use crate::extract::Extracted;
use crate::request::{Request, Verified};

/// Bytes of every producer message kept for what is not the body: the key (`tenant/entity`,
/// the entity up to 1 KiB), the `hs-*` headers (event id and type up to 1 KiB each, the
/// request's content type) and the record framing; on `dlq` records also the kept request
/// headers (at most [`crate::dead_letter::REQUEST_HEADERS_BUDGET`]) and `hs-error`.
pub const RECORD_OVERHEAD_BYTES: usize = 16 * 1024;
/// librdkafka's own default of `message.max.bytes`.
pub const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The ingest's body limit and the producer's message size it derives from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `message.max.bytes` of the ingest's producer.
    pub message_max_bytes: usize,
    /// Whether `message.max.bytes` was set in `[kafka.properties]` / `[kafka.producer]`;
    /// otherwise the ingest sets it to `max_body_bytes` + [`RECORD_OVERHEAD_BYTES`].
    pub explicit: bool,
    /// The body limit applied: `min(max_body_bytes, message_max_bytes - overhead)`.
    pub body_bytes: usize,
}

impl Limits {
    pub fn of(config: &Config) -> Self {
        let client = client_config(&config.kafka, Role::Producer);
        let configured = config.ingest.max_body_bytes;
        let explicit = client
            .get("message.max.bytes")
            .map(|v| v.trim().parse::<usize>().unwrap_or(0));
        let message_max_bytes =
            explicit.unwrap_or_else(|| configured.saturating_add(RECORD_OVERHEAD_BYTES));
        Self {
            message_max_bytes,
            explicit: explicit.is_some(),
            body_bytes: configured.min(message_max_bytes.saturating_sub(RECORD_OVERHEAD_BYTES)),
        }
    }

    /// Why `ingest.max_body_bytes` cannot be appended whole, if it cannot (`check-config`).
    pub fn problem(config: &Config) -> Option<String> {
        let limits = Self::of(config);
        let configured = config.ingest.max_body_bytes;
        (limits.body_bytes < configured).then(|| {
            format!(
                "ingest.max_body_bytes: {configured} does not fit in one producer message:                  message.max.bytes is {} and {RECORD_OVERHEAD_BYTES} bytes of each message are                  kept for the key and headers, so bodies up to {} bytes can be appended; lower                  max_body_bytes or raise message.max.bytes (or leave it unset: the ingest then                  sets it to max_body_bytes + {RECORD_OVERHEAD_BYTES})",
                limits.message_max_bytes, limits.body_bytes
            )
        })
    }
}

/// The ingest producer's `linger.ms` unless `[kafka.producer]` sets it.
const LINGER_MS: &str = "1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Clone)]
pub struct Appender {
    producer: Arc<RwLock<FutureProducer>>,
    client: ClientConfig,
    ack_timeout: Duration,
    topic: String,
    rejected_topic: String,
    dlq_topic: String,
    retry_after: u32,
    discard: bool,
    codecs: Arc<Codecs>,
}

impl Appender {
    pub fn new(config: &Config) -> Result<Self, KafkaError> {
        let mut client = client_config(&config.kafka, Role::Producer);
        // Each request waits for its own record's acknowledgement: lingering adds to every
        // answer, while records still batch behind the requests in flight (issue 16: at 64
        // connections, 5 ms of linger held ingest to 13 % of its HTTP ceiling).
        default_unless_set(
            &mut client,
            &config.kafka,
            Role::Producer,
            "linger.ms",
            LINGER_MS,
        );
        let limits = Limits::of(config);
        if !limits.explicit {
            client.set("message.max.bytes", limits.message_max_bytes.to_string());
        }
        if !config.kafka.producer.contains_key("message.timeout.ms") {
            client.set(
                "message.timeout.ms",
                config.ingest.ack_timeout_ms.to_string(),
            );
        }
        Ok(Self {
            producer: Arc::new(RwLock::new(client.create()?)),
            client,
            ack_timeout: Duration::from_millis(config.ingest.ack_timeout_ms),
            topic: config.topics().name(Topic::Raw),
            rejected_topic: config.topics().name(Topic::Rejected),
            dlq_topic: config.topics().name(Topic::Dlq),
            retry_after: config.ingest.retry_after_secs,
            discard: false,
            codecs: Arc::new(Codecs::json()),
        })
    }

    /// Encodes `rejected` values with these codecs (Avro when configured).
    pub fn with_codecs(mut self, codecs: Codecs) -> Self {
        self.codecs = Arc::new(codecs);
        self
    }

    /// Benchmarks only: answer without producing, to measure the HTTP ceiling. Never durable.
    pub fn discarding(mut self) -> Self {
        self.discard = true;
        self
    }

    /// Appends every event of a verified request and waits for all acknowledgements.
    /// `trace`: the ingest span's context, written as the `traceparent` header.
    pub async fn append(
        &self,
        request: &Request<Verified>,
        events: &[Extracted],
        trace: &TraceParent,
    ) -> Result<Vec<Appended>, IngestError> {
        if self.discard {
            return Ok(events
                .iter()
                .map(|_| Appended {
                    partition: -1,
                    offset: -1,
                })
                .collect());
        }
        let mut deliveries = Vec::with_capacity(events.len());
        let producer = self.producer();
        let traceparent = trace.header();
        for event in events {
            let meta = &event.meta;
            let key = EntityKey::new(&meta.tenant, &meta.entity).encode();
            let pairs = meta.to_headers();
            let headers = pairs.iter().fold(
                OwnedHeaders::new_with_capacity(pairs.len() + 1),
                |h, (name, value)| {
                    h.insert(Header {
                        key: name,
                        value: Some(value.as_bytes()),
                    })
                },
            );
            let headers = headers.insert(Header {
                key: schemas::trace::HEADER,
                value: Some(traceparent.as_bytes()),
            });
            let record = FutureRecord::to(&self.topic)
                .key(key.as_bytes())
                .payload(&request.body()[event.body.clone()])
                .headers(headers)
                .timestamp(meta.received_at);
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(error, _)| self.refusal(error))?,
            );
        }
        self.wait(deliveries).await
    }

    /// Appends a verified request the extraction rules could not read to `dlq`, the body byte
    /// for byte, and waits for the acknowledgement like [`Appender::append`].
    pub async fn dead_letter(
        &self,
        request: &Request<Verified>,
        letter: &DeadLetter,
    ) -> Result<Appended, IngestError> {
        if self.discard {
            return Ok(Appended {
                partition: -1,
                offset: -1,
            });
        }
        let headers = letter.headers.iter().fold(
            OwnedHeaders::new_with_capacity(letter.headers.len()),
            |h, (name, value)| {
                h.insert(Header {
                    key: name,
                    value: Some(value.as_slice()),
                })
            },
        );
        let record = FutureRecord::to(&self.dlq_topic)
            .key(letter.key.as_bytes())
            .payload(request.body().as_ref())
            .headers(headers)
            .timestamp(request.received_at());
        let delivery = self
            .producer()
            .send_result(record)
            .map_err(|(error, _)| self.refusal(error))?;
        let mut appended = self.wait(vec![delivery]).await?;
        Ok(appended.remove(0))
    }

    async fn wait(
        &self,
        deliveries: Vec<rdkafka::producer::DeliveryFuture>,
    ) -> Result<Vec<Appended>, IngestError> {
        let mut appended = Vec::with_capacity(deliveries.len());
        // The answer never waits past the deadline, even for records librdkafka keeps in
        // flight (an idempotent producer does not time out records already sent). A record
        // acknowledged after the 503 is a duplicate of the provider's retry: the processor
        // removes it.
        let Ok(deliveries) = tokio::time::timeout(self.ack_timeout, join_all(deliveries)).await
        else {
            return Err(IngestError::Unavailable {
                reason: format!(
                    "not acknowledged within {} ms",
                    self.ack_timeout.as_millis()
                ),
                retry_after: self.retry_after,
            });
        };
        for delivery in deliveries {
            match delivery {
                Ok(Ok(delivered)) => appended.push(Appended {
                    partition: delivered.partition,
                    offset: delivered.offset,
                }),
                Ok(Err((error, _))) => return Err(self.refusal(error)),
                Err(_cancelled) => {
                    return Err(IngestError::Unavailable {
                        reason: "the producer shut down".into(),
                        retry_after: self.retry_after,
                    })
                }
            }
        }
        Ok(appended)
    }

    /// Queues an audit record of a refused request; never waits, never fails the request.
    pub fn audit(&self, record: &RejectedRecord) {
        if self.discard {
            return;
        }
        let value = self.codecs.encode(Topic::Rejected, record);
        let future = FutureRecord::to(&self.rejected_topic)
            .key(record.tenant.as_bytes())
            .payload(&value);
        match self.producer().send_result(future) {
            Ok(delivery) => {
                tokio::spawn(async move {
                    if !matches!(delivery.await, Ok(Ok(_))) {
                        metrics::counter!("hookstream_ingest_audit_dropped_total").increment(1);
                    }
                });
            }
            Err(_) => metrics::counter!("hookstream_ingest_audit_dropped_total").increment(1),
        }
    }

    fn producer(&self) -> FutureProducer {
        self.producer.read().expect("producer lock").clone()
    }

    /// An idempotent producer that hit a fatal error cannot produce again: replace it (a new
    /// producer id starts a new idempotence session). Records of the old one that are still
    /// in flight complete or fail on their own; their requests were already answered 503.
    fn replace_if_fatal(&self) {
        let mut producer = self.producer.write().expect("producer lock");
        if let Some((code, reason)) = producer.client().fatal_error() {
            match self.client.create::<FutureProducer>() {
                Ok(fresh) => {
                    tracing::error!(?code, %reason, "producer hit a fatal error; replaced it");
                    metrics::counter!("hookstream_ingest_producer_replaced_total").increment(1);
                    *producer = fresh;
                }
                Err(error) => {
                    tracing::error!(%error, "producer hit a fatal error and cannot be replaced")
                }
            }
        }
    }

    fn refusal(&self, error: KafkaError) -> IngestError {
        self.replace_if_fatal();
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => IngestError::QueueFull {
                retry_after: self.retry_after,
            },
            Some(code) if permanent(code) => IngestError::NotAppendable {
                reason: format!("the producer or broker refused the record: {code}"),
            },
            _ => IngestError::Unavailable {
                reason: error.to_string(),
                retry_after: self.retry_after,
            },
        }
    }

    /// The producer's `message.max.bytes` and the body limit derived from it.
    pub fn limits(config: &Config) -> Limits {
        Limits::of(config)
    }

    /// Whether the broker answers a metadata request for `raw` within `timeout`.
    pub fn ready(&self, timeout: Duration) -> Result<(), String> {
        let metadata = self
            .producer()
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
        if let Err(e) = self.producer().flush(Timeout::After(timeout)) {
            tracing::warn!(error = %e, "not every in-flight append was acknowledged before shutdown");
        }
    }
}

/// Produce errors that no retry of the same record can fix.
pub fn permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessageSize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse_str(text).unwrap()
    }

    #[test]
    fn the_body_limit_leaves_room_for_key_and_headers() {
        let default = Limits::of(&config(""));
        assert!(!default.explicit);
        assert_eq!(default.body_bytes, 1024 * 1024);
        assert_eq!(
            default.message_max_bytes,
            1024 * 1024 + RECORD_OVERHEAD_BYTES
        );
        assert_eq!(Limits::problem(&config("")), None);

        let explicit = "[ingest]\nmax_body_bytes = 1048576\n[kafka.producer]\n\"message.max.bytes\" = \"1000000\"\n";
        let limits = Limits::of(&config(explicit));
        assert!(limits.explicit);
        assert_eq!(limits.body_bytes, 1_000_000 - RECORD_OVERHEAD_BYTES);
        let problem = Limits::problem(&config(explicit)).unwrap();
        assert!(
            problem.contains("ingest.max_body_bytes: 1048576"),
            "{problem}"
        );
        assert!(problem.contains(&(1_000_000 - RECORD_OVERHEAD_BYTES).to_string()));

        let fits = "[ingest]\nmax_body_bytes = 500000\n[kafka.properties]\n\"message.max.bytes\" = \"1000000\"\n";
        assert_eq!(Limits::problem(&config(fits)), None);
        assert_eq!(Limits::of(&config(fits)).body_bytes, 500_000);
    }

    #[test]
    fn size_and_invalid_record_errors_are_permanent_and_answered_413() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::MessageBatchTooLarge,
            RDKafkaErrorCode::InvalidRecord,
        ] {
            assert!(permanent(code), "{code}");
        }
        for code in [
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            assert!(!permanent(code), "{code}");
        }
    }
}
