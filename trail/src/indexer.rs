//! The indexer: reads every partition of the fact topics from where the index left off
//! (offsets kept in the index, in the same write batch as the facts) and writes their facts.
//! Values in Avro are decoded through the schema registry. Facts older than the retention
//! are deleted every minute. A topic that does not exist yet is looked for again later.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use schemas::config::Config;
use schemas::kafka::{client_config, Role};
use schemas::topics::Topic;

use crate::fact::{self, Kind};
use crate::index::Index;
use crate::TrailError;

const BATCH: usize = 2_000;

/// The fact topics of a configuration, by name.
pub fn topics(config: &Config) -> Vec<(String, Kind)> {
    let names = config.topics();
    let prefix = &config.kafka.topic_prefix;
    vec![
        (names.name(Topic::Rejected), Kind::Rejected),
        (names.name(Topic::Raw), Kind::Raw),
        (names.name(Topic::Dlq), Kind::Dlq),
        (names.name(Topic::Deferred), Kind::Deferred),
        (names.name(Topic::Events), Kind::Events),
        (format!("{prefix}deliveries"), Kind::Deliveries),
        (format!("{prefix}delivery-dlq"), Kind::DeliveryDlq),
    ]
}

/// How far the indexer has read: the wall-clock time (ms) of its last pass that found
/// nothing new, for readiness.
#[derive(Debug, Default)]
pub struct Progress {
    pub caught_up_at: AtomicI64,
    pub facts: AtomicI64,
}

/// Runs until `stop` is set: a blocking loop (run it on its own thread).
pub fn run(
    config: &Config,
    index: &Index,
    progress: &Progress,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), TrailError> {
    let mut client = client_config(&config.kafka, Role::Consumer);
    client
        .set("group.id", format!("{}-trail", config.processor.group_id))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = client.create()?;
    let topics = topics(config);
    let kinds: HashMap<String, Kind> = topics.iter().cloned().collect();
    let retention = config.trail.retention_hours as i64 * 3_600_000;
    let decoder = config
        .schema_registry
        .url
        .as_deref()
        .map(schemas::registry::Decoder::new);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut assigned = 0usize;
    let mut last_assign = None::<Instant>;
    let mut last_expiry = Instant::now() - Duration::from_secs(3600);
    while !stop.load(Ordering::Relaxed) {
        if last_assign.is_none_or(|at: Instant| at.elapsed() > Duration::from_secs(10)) {
            assigned = assign(&consumer, &topics, index, assigned)?;
            last_assign = Some(Instant::now());
        }
        if last_expiry.elapsed() > Duration::from_secs(60) {
            let expired = index.expire(schemas::time::now_millis() - retention)?;
            if expired > 0 {
                tracing::info!(expired, "trail: facts past the retention deleted");
            }
            last_expiry = Instant::now();
        }
        let mut facts = Vec::new();
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        while facts.len() < BATCH {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                break;
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "trail: reading");
                    break;
                }
            };
            next.insert(
                (message.topic().to_owned(), message.partition()),
                message.offset() + 1,
            );
            let Some(kind) = kinds.get(message.topic()).copied() else {
                continue;
            };
            let value = message.payload().unwrap_or_default();
            let headers: Vec<(String, Vec<u8>)> = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            let json = match serde_json::from_slice::<serde_json::Value>(value) {
                Ok(json) => Some(json),
                Err(_) => match (&decoder, schemas::avro::unframe(value)) {
                    (Some(decoder), Some(_)) => runtime.block_on(decoder.decode(value)).ok(),
                    _ => None,
                },
            };
            let record = fact::Record {
                kind,
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp().to_millis(),
                headers: &headers,
                value,
                json: json.as_ref(),
            };
            facts.extend(fact::of(&record));
        }
        if next.is_empty() {
            progress
                .caught_up_at
                .store(schemas::time::now_millis(), Ordering::Relaxed);
            continue;
        }
        index.apply(&facts, &next)?;
        progress
            .facts
            .fetch_add(facts.len() as i64, Ordering::Relaxed);
        metrics::counter!("hookstream_trail_facts_total").increment(facts.len() as u64);
    }
    Ok(())
}

/// Assigns every partition of the fact topics that exist, each from the index's next
/// offset (or the beginning); returns how many are assigned.
fn assign(
    consumer: &BaseConsumer,
    topics: &[(String, Kind)],
    index: &Index,
    assigned: usize,
) -> Result<usize, TrailError> {
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let mut list = TopicPartitionList::new();
    for topic in metadata.topics() {
        if !topics.iter().any(|(name, _)| name == topic.name()) {
            continue;
        }
        for partition in topic.partitions() {
            let offset = match index.next_offset(topic.name(), partition.id())? {
                Some(next) => Offset::Offset(next),
                None => Offset::Beginning,
            };
            list.add_partition_offset(topic.name(), partition.id(), offset)?;
        }
    }
    if list.count() != assigned {
        // Positions of partitions already read come from the index, which is up to date
        // with what was applied.
        consumer.assign(&list)?;
        tracing::info!(partitions = list.count(), "trail: reading the fact topics");
    }
    Ok(list.count())
}
