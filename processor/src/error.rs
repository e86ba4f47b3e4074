use thiserror::Error;

/// The processor's one error type, with its retry mapping in [`ProcessorError::is_retriable`].
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
    #[error("processor cannot start: {0}")]
    Startup(String),
}

impl ProcessorError {
    /// Broker trouble can be retried; a broken local store cannot (the task must be rebuilt).
    pub fn is_retriable(&self) -> bool {
        match self {
            ProcessorError::Kafka(_) => true,
            ProcessorError::Contract(e) => e.is_retriable(),
            _ => false,
        }
    }
}
