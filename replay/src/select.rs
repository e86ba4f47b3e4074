//! A selection: which records of which topic a replay reads. Positions resolve to a fixed
//! offset range per partition when the operation starts (`end` is the high watermark then),
//! so an operation always terminates and says exactly what it covered.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use regex::Regex;
use schemas::raw::header;
use schemas::scope::{OffsetRange, RecordFilter};

use crate::position::Position;
use crate::record::Record;
use crate::ReplayError;

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Selection {
    /// Full topic name.
    pub topic: String,
    /// Partitions to read; empty: all.
    pub partitions: Vec<i32>,
    pub start: Position,
    pub end: Position,
    /// Per-partition start offsets that override `start` (resuming a stopped run).
    pub resume: BTreeMap<i32, i64>,
    /// Per-partition end offsets that override `end` (resuming: the first run's ends).
    pub until: BTreeMap<i32, i64>,
    pub filter: RecordFilter,
    /// Only records whose `hs-error` header matches (dead letters).
    pub error: Option<Regex>,
}

impl Selection {
    pub fn matches(&self, record: &Record) -> bool {
        self.filter.matches(|name| record.field(name))
            && self.error.as_ref().is_none_or(|pattern| {
                record
                    .header(header::ERROR)
                    .is_some_and(|error| pattern.is_match(error))
            })
    }

    /// Resolves the positions to offset ranges, one per selected partition.
    pub fn resolve(
        &self,
        consumer: &BaseConsumer,
    ) -> Result<BTreeMap<i32, OffsetRange>, ReplayError> {
        let partitions = partitions(consumer, &self.topic)?;
        let chosen: Vec<i32> = if self.partitions.is_empty() {
            partitions.clone()
        } else {
            for p in &self.partitions {
                if !partitions.contains(p) {
                    return Err(ReplayError::invalid(format!(
                        "topic `{}` has partitions 0..{}; there is no partition {p}",
                        self.topic,
                        partitions.len()
                    )));
                }
            }
            self.partitions.clone()
        };
        let mut ranges = BTreeMap::new();
        for partition in chosen {
            let (low, high) = consumer.fetch_watermarks(&self.topic, partition, TIMEOUT)?;
            let start = match self.resume.get(&partition) {
                Some(offset) => *offset,
                None => self.offset(consumer, partition, self.start, low, high)?,
            };
            let end = match self.until.get(&partition) {
                Some(offset) => *offset,
                None => self.offset(consumer, partition, self.end, low, high)?,
            };
            ranges.insert(
                partition,
                OffsetRange {
                    start: start.clamp(low, high),
                    end: end.clamp(low, high).max(start.clamp(low, high)),
                },
            );
        }
        Ok(ranges)
    }

    fn offset(
        &self,
        consumer: &BaseConsumer,
        partition: i32,
        position: Position,
        low: i64,
        high: i64,
    ) -> Result<i64, ReplayError> {
        Ok(match position {
            Position::Beginning => low,
            Position::End => high,
            Position::Offset(offset) => offset,
            Position::Time(at) => offset_for_time(consumer, &self.topic, partition, at, high)?,
        })
    }
}

/// The partitions of `topic`, or a clear error when it does not exist.
pub fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>, ReplayError> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(ReplayError::invalid(format!(
            "topic `{topic}` does not exist (check kafka.topic_prefix)"
        )));
    }
    let mut partitions = partitions;
    partitions.sort_unstable();
    Ok(partitions)
}

/// The first offset whose record time is at or after `at`; `high` when there is none.
fn offset_for_time(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    at: i64,
    high: i64,
) -> Result<i64, ReplayError> {
    let mut query = TopicPartitionList::new();
    query.add_partition_offset(topic, partition, Offset::Offset(at))?;
    let answer = consumer.offsets_for_times(query, TIMEOUT)?;
    let offset = answer
        .find_partition(topic, partition)
        .map(|element| element.offset());
    Ok(match offset {
        Some(Offset::Offset(offset)) if offset >= 0 => offset,
        _ => high,
    })
}
