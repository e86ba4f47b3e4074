//! Kafka client settings and topic provisioning.
//!
//! Producers are idempotent with `acks=all` and the Java-compatible `murmur2_random`
//! partitioner; consumers never auto-commit (the processor commits after its state is
//! durable). Properties from `[kafka.properties]` apply to every client, then
//! `[kafka.producer]` / `[kafka.consumer]` override them, so any librdkafka setting (TLS,
//! SASL, tuning) passes through unchanged.
//!
//! Brokers such as Tansu do not auto-create topics, so both roles create the topics they need
//! at start-up through the admin API ([`ensure_topics`]); a topic that already exists is left
//! as it is.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{BorrowedHeaders, Headers};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::config::KafkaConfig;
use crate::topics::{Topic, TopicNames};
use crate::SchemasError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Producer,
    Consumer,
    Admin,
}

pub fn client_config(kafka: &KafkaConfig, role: Role) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    match role {
        Role::Producer => {
            config
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("partitioner", "murmur2_random")
                .set("linger.ms", "5")
                .set("compression.type", "lz4");
        }
        Role::Consumer => {
            config
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("isolation.level", "read_committed")
                // librdkafka waits this long (1 s by default) before fetching a partition again
                // once its local queue is full: a consumer that drains the queue in batches
                // idled most of each second (the processor and `deliver` benchmarks).
                .set("fetch.queue.backoff.ms", "10");
        }
        Role::Admin => {}
    }
    for (k, v) in &kafka.properties {
        config.set(k, v);
    }
    for (k, v) in role_table(kafka, role).into_iter().flatten() {
        config.set(k, v);
    }
    config
}

/// The role's own table of librdkafka properties (`[kafka.producer]`, `[kafka.consumer]`).
fn role_table(kafka: &KafkaConfig, role: Role) -> Option<&BTreeMap<String, String>> {
    match role {
        Role::Producer => Some(&kafka.producer),
        Role::Consumer => Some(&kafka.consumer),
        Role::Admin => None,
    }
}

/// Sets a component's own default for `key` unless the configuration sets it (in
/// `[kafka.properties]` or the role's table).
pub fn default_unless_set(
    config: &mut ClientConfig,
    kafka: &KafkaConfig,
    role: Role,
    key: &str,
    value: &str,
) {
    let set = kafka.properties.contains_key(key)
        || role_table(kafka, role).is_some_and(|table| table.contains_key(key));
    if !set {
        config.set(key, value);
    }
}

/// Creates the given topics if they are missing, with the configured partitions and
/// replication; `state` and `budget` are created compacted, the changelog with
/// `retention.ms = changelog_retention_ms` (-1: kept forever).
pub async fn ensure_topics(
    kafka: &KafkaConfig,
    names: &TopicNames,
    topics: &[Topic],
    changelog_retention_ms: i64,
) -> Result<(), SchemasError> {
    let retention = changelog_retention_ms.to_string();
    let admin: AdminClient<DefaultClientContext> = client_config(kafka, Role::Admin).create()?;
    let named: Vec<(Topic, String)> = topics.iter().map(|t| (*t, names.name(*t))).collect();
    let new_topics: Vec<NewTopic<'_>> = named
        .iter()
        .map(|(topic, name)| {
            let t = NewTopic::new(
                name,
                kafka.partitions,
                TopicReplication::Fixed(kafka.replication_factor),
            );
            if topic.compacted() {
                t.set("cleanup.policy", "compact")
            } else if *topic == Topic::Changelog {
                t.set("cleanup.policy", "delete")
                    .set("retention.ms", &retention)
                    .set("retention.bytes", "-1")
            } else {
                t
            }
        })
        .collect();
    create(&admin, &new_topics).await
}

/// Creates topics by name if they are missing, with the configured partitions and
/// replication, compacted (`true`) or with the broker's default retention, each taking
/// records up to `max_message_bytes` (`max.message.bytes`): the delivery topics.
pub async fn ensure_named_topics(
    kafka: &KafkaConfig,
    names: &[(String, bool)],
    max_message_bytes: usize,
) -> Result<(), SchemasError> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka, Role::Admin).create()?;
    let max = max_message_bytes.to_string();
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|(name, compacted)| {
            let replication = TopicReplication::Fixed(kafka.replication_factor);
            let topic =
                NewTopic::new(name, kafka.partitions, replication).set("max.message.bytes", &max);
            if *compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    create(&admin, &new_topics).await
}

async fn create(
    admin: &AdminClient<DefaultClientContext>,
    new_topics: &[NewTopic<'_>],
) -> Result<(), SchemasError> {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(new_topics.iter(), &options).await?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                use RDKafkaErrorCode as C;
                let retriable = matches!(
                    code,
                    C::RequestTimedOut
                        | C::OperationTimedOut
                        | C::NotController
                        | C::LeaderNotAvailable
                        | C::BrokerNotAvailable
                        | C::NetworkException
                        | C::CoordinatorNotAvailable
                        | C::CoordinatorLoadInProgress
                        | C::AllBrokersDown
                        | C::BrokerTransportFailure
                );
                return Err(SchemasError::TopicCreation {
                    topic: name,
                    reason: code.to_string(),
                    retriable,
                });
            }
        }
    }
    Ok(())
}

/// [`ensure_topics`] for a service starting up: broker trouble (unreachable, timing out) is
/// waited out with backoff, and only what the broker refuses (a bad replication factor, a
/// policy, authorization) stops the service.
pub async fn ensure_topics_waiting(
    kafka: &KafkaConfig,
    names: &TopicNames,
    topics: &[Topic],
    changelog_retention_ms: i64,
) -> Result<(), SchemasError> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match ensure_topics(kafka, names, topics, changelog_retention_ms).await {
            Err(error) if error.is_retriable() => {
                metrics::counter!("hookstream_broker_retries_total", "operation" => "create_topics")
                    .increment(1);
                tracing::warn!(%error, retry_in = ?backoff, "cannot create the topics yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            result => return result,
        }
    }
}

/// A record's headers as (name, value) pairs, in order; an absent value reads as empty.
///
/// Header names are bytes on the wire. rdkafka's `Headers` accessors panic on a name that is
/// not UTF-8 (`CStr::to_str().unwrap()`), so one odd header from any producer would crash
/// whoever reads the record, again on every restart: a poison pill. This reads them through
/// librdkafka directly and decodes names lossily (a name that is not UTF-8 cannot be one of
/// hookstream's `hs-*` headers anyway).
pub fn header_pairs(headers: Option<&BorrowedHeaders>) -> Vec<(String, Vec<u8>)> {
    let Some(headers) = headers else {
        return Vec::new();
    };
    // `BorrowedHeaders` is rdkafka's view of librdkafka's headers list (the cast rdkafka
    // itself makes to call librdkafka).
    let native = headers as *const BorrowedHeaders as *const rdkafka::bindings::rd_kafka_headers_t;
    (0..headers.count())
        .filter_map(|index| {
            let mut name: *const std::ffi::c_char = std::ptr::null();
            let mut value: *const std::ffi::c_void = std::ptr::null();
            let mut size = 0usize;
            // SAFETY: `native` points at a live headers list borrowed for this call; librdkafka
            // fills `name` with a NUL-terminated string and `value`/`size` with a byte range,
            // both owned by the list.
            let error = unsafe {
                rdkafka::bindings::rd_kafka_header_get_all(
                    native, index, &mut name, &mut value, &mut size,
                )
            };
            if error != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                || name.is_null()
            {
                return None;
            }
            // SAFETY: as above; both are copied before the borrow ends.
            let (name, value) = unsafe {
                let name = std::ffi::CStr::from_ptr(name)
                    .to_string_lossy()
                    .into_owned();
                let value = if value.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(value.cast::<u8>(), size).to_vec()
                };
                (name, value)
            };
            Some((name, value))
        })
        .collect()
}

/// A hookstream topic as the broker has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStatus {
    pub topic: Topic,
    pub name: String,
    /// Partitions on the broker; None: the topic does not exist.
    pub partitions: Option<usize>,
}

/// Looks up every hookstream topic on the broker (one metadata request).
pub fn describe_topics(
    kafka: &KafkaConfig,
    names: &TopicNames,
) -> Result<Vec<TopicStatus>, SchemasError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = client_config(kafka, Role::Consumer).create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(30))?;
    Ok(names
        .all()
        .into_iter()
        .map(|(topic, name)| {
            let partitions = metadata
                .topics()
                .iter()
                .find(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.partitions().len());
            TopicStatus {
                topic,
                name,
                partitions,
            }
        })
        .collect())
}
