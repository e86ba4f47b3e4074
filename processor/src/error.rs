//! The processor's one error type, and the one place that decides how a failure is retried.
//!
//! Every failure carries a [`RetryClass`], decided where it arises, so no loop can retry a
//! permanent error:
//!
//! * **permanent** — retrying the same thing cannot succeed: a record the producer or broker
//!   refuses for good (too large, invalid), a corrupt local store, a configuration error;
//! * **retriable** — broker trouble (timeouts, a broker restarting, a leader moving): back off
//!   and try again, never stop the service for it;
//! * **backpressure** — the producer's queue is full: wait for it to drain, nothing failed.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    Permanent,
    Retriable,
    Backpressure,
}

impl RetryClass {
    /// How a Kafka client error is retried.
    pub fn of_kafka(error: &KafkaError) -> RetryClass {
        use RDKafkaErrorCode as C;
        match error.rdkafka_error_code() {
            Some(C::QueueFull) => RetryClass::Backpressure,
            Some(
                C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::MessageBatchTooLarge
                | C::BadMessage
                | C::InvalidTimestamp
                | C::InvalidArgument
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::UnsupportedForMessageFormat
                | C::InvalidTopic
                | C::PolicyViolation,
            ) => RetryClass::Permanent,
            _ => RetryClass::Retriable,
        }
    }
}

#[derive(Debug, Error)]
pub enum ProcessorError {
    #[error("state store at `{path}`: {source}")]
    Store {
        path: String,
        source: rocksdb::Error,
    },
    #[error("state store at `{path}` holds a corrupt value under `{key}`: {reason}")]
    Corrupt {
        path: String,
        key: String,
        reason: String,
    },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Contract(#[from] schemas::SchemasError),
    /// The broker refuses, for good, a record that no input can be blamed for (a changelog
    /// frame, an alert): a topic or broker limit below what the processor was configured for.
    #[error("the broker refuses `{topic}` records for good ({reason}); check the topic's and broker's limits (max.message.bytes) against kafka.producer")]
    Refused { topic: String, reason: String },
    /// The broker gave no progress for too long (a restore, a read): retried with backoff.
    #[error("{0}")]
    Stalled(String),
    #[error("processor cannot start: {0}")]
    Startup(String),
    /// A background restore was cancelled: its partition was revoked, or the processor stops.
    #[error("the restore of partition {0} was cancelled")]
    RestoreCancelled(i32),
    /// The changelog no longer holds what a restore needs (from offset `needed`; it starts at
    /// `low`) and has no complete snapshot after it: its retention deleted history.
    #[error("partition {partition} of `{topic}` lost history: the restore needs offset {needed} but the changelog starts at {low} and holds no complete snapshot to start from; the task's state cannot be restored (rebuild the derived topics with `hookstream replay --rebuild`, and give the changelog a longer retention or run the processor within it)")]
    HistoryLost {
        topic: String,
        partition: i32,
        needed: i64,
        low: i64,
    },
}

impl ProcessorError {
    pub fn retry_class(&self) -> RetryClass {
        match self {
            ProcessorError::Kafka(e) => RetryClass::of_kafka(e),
            ProcessorError::Contract(e) if e.is_retriable() => RetryClass::Retriable,
            ProcessorError::Stalled(_) | ProcessorError::RestoreCancelled(_) => {
                RetryClass::Retriable
            }
            _ => RetryClass::Permanent,
        }
    }

    /// Broker trouble can be retried; a broken local store cannot (the task must be rebuilt).
    pub fn is_retriable(&self) -> bool {
        self.retry_class() != RetryClass::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_errors_are_classified_once() {
        let produce = |code| KafkaError::MessageProduction(code);
        assert_eq!(
            RetryClass::of_kafka(&produce(RDKafkaErrorCode::MessageSizeTooLarge)),
            RetryClass::Permanent
        );
        assert_eq!(
            RetryClass::of_kafka(&produce(RDKafkaErrorCode::QueueFull)),
            RetryClass::Backpressure
        );
        assert_eq!(
            RetryClass::of_kafka(&produce(RDKafkaErrorCode::MessageTimedOut)),
            RetryClass::Retriable
        );
        assert_eq!(
            RetryClass::of_kafka(&KafkaError::MetadataFetch(
                RDKafkaErrorCode::OperationTimedOut
            )),
            RetryClass::Retriable
        );
        assert!(ProcessorError::Kafka(KafkaError::MetadataFetch(
            RDKafkaErrorCode::OperationTimedOut
        ))
        .is_retriable());
        assert!(!ProcessorError::Startup("x".into()).is_retriable());
    }
}
