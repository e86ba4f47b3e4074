//! One error type for the crate, with its retry class decided where it arises.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DeliverError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topics: {0}")]
    Schemas(#[from] schemas::SchemasError),
    #[error("http client: {0}")]
    Client(String),
}

impl DeliverError {
    /// Broker trouble is waited out; configuration problems stop the service.
    pub fn is_retriable(&self) -> bool {
        matches!(self, DeliverError::Kafka(_))
    }
}
