use std::fmt;

/// Everything that can go wrong in a replay, rebuild, redrive, tail or admin request; the
/// HTTP status of each lives in [`ReplayError::status`].
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The request asks for something impossible (bad position, unknown topic, …).
    #[error("{0}")]
    Invalid(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{failed} record(s) were not acknowledged by the broker: {first}")]
    Undelivered { failed: u64, first: String },
    #[error("processor: {0}")]
    Processor(#[from] processor::ProcessorError),
    #[error("deliver: {0}")]
    Deliver(#[from] deliver::DeliverError),
    #[error("schemas: {0}")]
    Schemas(#[from] schemas::SchemasError),
    #[error("job `{0}` does not exist")]
    NoSuchJob(String),
    #[error("job `{0}` is still running")]
    JobRunning(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ReplayError {
    pub fn invalid(message: impl fmt::Display) -> Self {
        Self::Invalid(message.to_string())
    }

    /// HTTP status for the admin API: the client's mistakes are 4xx, the broker's are 503.
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(_) => 400,
            Self::NoSuchJob(_) => 404,
            Self::JobRunning(_) => 409,
            Self::Kafka(_) | Self::Undelivered { .. } => 503,
            Self::Deliver(e) if e.is_retriable() => 503,
            Self::Deliver(_) => 400,
            Self::Processor(_) | Self::Schemas(_) | Self::Io(_) => 500,
        }
    }

    /// The error code in JSON error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_request",
            Self::NoSuchJob(_) => "not_found",
            Self::JobRunning(_) => "conflict",
            Self::Kafka(_) | Self::Undelivered { .. } => "broker_unavailable",
            Self::Deliver(e) if e.is_retriable() => "broker_unavailable",
            Self::Deliver(_) => "invalid_request",
            Self::Processor(_) | Self::Schemas(_) | Self::Io(_) => "internal",
        }
    }
}
