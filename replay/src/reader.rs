//! Reads resolved offset ranges of a topic with a group-less consumer (nothing is committed,
//! no group is joined), in offset order per partition, until every range is read, the caller
//! stops, or `cancel` is set. With `follow`, it keeps waiting for new records instead.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use schemas::scope::OffsetRange;

use crate::record::Record;
use crate::ReplayError;

/// How a scan ended; `next` is the first offset not read per partition (to resume from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEnd {
    pub cancelled: bool,
    pub next: BTreeMap<i32, i64>,
    /// The resolved end of each partition's range (to resume with the same ends).
    pub until: BTreeMap<i32, i64>,
}

/// A consumer for reading: an unused group id, no commits, partition EOF events on.
pub fn consumer(mut config: ClientConfig) -> Result<BaseConsumer, ReplayError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    config
        .set("group.id", format!("hookstream-replay-{nanos:x}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    Ok(config.create()?)
}

pub fn scan(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &BTreeMap<i32, OffsetRange>,
    follow: bool,
    cancel: &AtomicBool,
    mut visit: impl FnMut(Record) -> Result<ControlFlow<()>, ReplayError>,
) -> Result<ScanEnd, ReplayError> {
    let mut next: BTreeMap<i32, i64> = ranges.iter().map(|(p, r)| (*p, r.start)).collect();
    let mut open: Vec<i32> = ranges
        .iter()
        .filter(|(_, r)| follow || !r.is_empty())
        .map(|(p, _)| *p)
        .collect();
    let mut assignment = TopicPartitionList::new();
    for partition in &open {
        assignment.add_partition_offset(topic, *partition, Offset::Offset(next[partition]))?;
    }
    consumer.assign(&assignment)?;
    while !open.is_empty() {
        if cancel.load(Ordering::Relaxed) {
            return Ok(ScanEnd {
                cancelled: true,
                next,
                until: ranges.iter().map(|(p, r)| (*p, r.end)).collect(),
            });
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(partition)) => {
                if !follow {
                    open.retain(|p| *p != partition);
                }
                continue;
            }
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::PartitionEOF)) => continue,
            Err(error) => {
                tracing::warn!(%error, "reading failed; retrying");
                continue;
            }
        };
        let record = Record::from(&message);
        let partition = record.partition;
        let Some(range) = ranges.get(&partition) else {
            continue;
        };
        if !follow && record.offset >= range.end {
            open.retain(|p| *p != partition);
            continue;
        }
        next.insert(partition, record.offset + 1);
        let flow = visit(record)?;
        if !follow && next[&partition] >= range.end {
            open.retain(|p| *p != partition);
        }
        if flow.is_break() {
            break;
        }
    }
    Ok(ScanEnd {
        cancelled: false,
        next,
        until: ranges.iter().map(|(p, r)| (*p, r.end)).collect(),
    })
}
