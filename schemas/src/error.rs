use thiserror::Error;

/// Errors of the contract layer: configuration, decoding of records, broker administration.
#[derive(Debug, Error)]
pub enum SchemasError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("configuration is invalid:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
    #[error("raw record is missing header `{0}`")]
    MissingHeader(&'static str),
    #[error("raw record header `{name}` is malformed: {reason}")]
    BadHeader { name: &'static str, reason: String },
    #[error("record key `{0}` is not of the form tenant/entity")]
    BadKey(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic `{topic}` could not be created: {reason}")]
    TopicCreation {
        topic: String,
        reason: String,
        /// The broker could not do it now (a timeout, no controller yet), as opposed to
        /// refusing it (replication factor, policy, authorization).
        retriable: bool,
    },
    #[error("avro: {0}")]
    Avro(String),
    #[error("schema registry: {0}")]
    Registry(String),
    /// The registry refused a schema: it is not compatible with the subject's latest version.
    #[error("schema registry refused the schema of `{subject}`: it is not compatible with the subject's latest version{}", if .details.is_empty() { String::new() } else { format!(" ({})", .details.join("; ")) })]
    Incompatible {
        subject: String,
        details: Vec<String>,
    },
}

impl SchemasError {
    /// Whether retrying the same operation later can succeed (broker trouble), as opposed to
    /// a permanent problem with the input.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            SchemasError::Kafka(_)
                | SchemasError::TopicCreation {
                    retriable: true,
                    ..
                }
                | SchemasError::Registry(_)
        )
    }
}
