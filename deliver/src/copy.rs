//! The I/O side of the attempt journal ([`crate::journal`]): the reader state of each
//! journal partition this instance is given, the look-back into `deliveries` when it takes a
//! partition over, and the watermark check that decides when an intent is overdue.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::DeliverError;
use crate::journal::{Entry, Partition, Taken, Write, CLOCK_SKEW_MS, SOURCE_HEADER};

/// How often overdue intents are looked for.
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct Copier {
    journal: String,
    deliveries: String,
    /// For the look-back reads (assigned, never committing).
    lookup: ClientConfig,
    partitions: HashMap<i32, Partition>,
    checked: Instant,
}

/// A journal record taken in: what it asks for, and whether the partition was (re)started
/// for it (then its offsets from before are forgotten).
pub struct Took {
    pub taken: Taken,
    pub restarted: bool,
}

impl Copier {
    pub fn new(journal: String, deliveries: String, lookup: ClientConfig) -> Self {
        Self {
            journal,
            deliveries,
            lookup,
            partitions: HashMap::new(),
            checked: Instant::now(),
        }
    }

    pub fn journal(&self) -> &str {
        &self.journal
    }

    /// A journal record. An undecodable one waits for nothing.
    pub fn take(&mut self, message: &BorrowedMessage<'_>) -> Result<Took, DeliverError> {
        let (partition, offset) = (message.partition(), message.offset());
        let restarted = self
            .partitions
            .get(&partition)
            .is_none_or(|p| p.next != offset);
        if restarted {
            // First record here, or the partition was elsewhere meanwhile: what a predecessor
            // wrote to `deliveries` since this record was journaled is not written again.
            let since = message.timestamp().to_millis().unwrap_or(0) - CLOCK_SKEW_MS;
            let written = tokio::task::block_in_place(|| {
                written_since(&self.lookup, &self.deliveries, partition, since)
            })?;
            tracing::info!(
                partition,
                offset,
                copied_before = written.len(),
                "reading the attempt journal"
            );
            self.partitions
                .insert(partition, Partition::new(offset, written));
        }
        let state = self.partitions.get_mut(&partition).expect("inserted above");
        let taken = match message
            .payload()
            .and_then(|p| serde_json::from_slice::<Entry>(p).ok())
        {
            Some(entry) => state.take(offset, entry),
            None => {
                tracing::warn!(partition, offset, "undecodable journal record skipped");
                state.next = offset + 1;
                Taken::default()
            }
        };
        if taken.late {
            metrics::counter!("hookstream_deliver_late_outcomes_total").increment(1);
        }
        Ok(Took { taken, restarted })
    }

    /// The intents given up since the last check, by partition; only partitions still
    /// assigned here, read to their end as of the check.
    pub fn overdue(&mut self, consumer: &StreamConsumer, now_ms: i64) -> Vec<(i32, Write)> {
        if self.checked.elapsed() < CHECK_EVERY {
            return Vec::new();
        }
        self.checked = Instant::now();
        let assigned: HashSet<i32> = consumer
            .assignment()
            .map(|list| {
                list.elements_for_topic(&self.journal)
                    .iter()
                    .map(|e| e.partition())
                    .collect()
            })
            .unwrap_or_default();
        self.partitions.retain(|p, _| assigned.contains(p));
        let mut out = Vec::new();
        for (&partition, state) in &mut self.partitions {
            if state.first_deadline().is_none_or(|d| d >= now_ms) {
                continue;
            }
            let end = tokio::task::block_in_place(|| {
                consumer.fetch_watermarks(&self.journal, partition, Duration::from_secs(5))
            });
            match end {
                Ok((_, high)) => out.extend(
                    state
                        .overdue(now_ms, high)
                        .into_iter()
                        .map(|w| (partition, w)),
                ),
                Err(error) => {
                    tracing::warn!(%error, partition, "journal end unknown; overdue intents wait")
                }
            }
        }
        out
    }
}

/// The journal offsets named by the `deliveries` records of `partition` written since
/// `since_ms`.
fn written_since(
    client: &ClientConfig,
    topic: &str,
    partition: i32,
    since_ms: i64,
) -> Result<HashSet<i64>, DeliverError> {
    let consumer: BaseConsumer = client.create()?;
    let (_, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
    let mut query = TopicPartitionList::new();
    query.add_partition_offset(topic, partition, Offset::Offset(since_ms.max(0)))?;
    let start = consumer
        .offsets_for_times(query, TIMEOUT)?
        .elements()
        .first()
        .and_then(|e| e.offset().to_raw())
        .filter(|o| *o >= 0)
        .unwrap_or(high);
    let mut written = HashSet::new();
    read_range(&consumer, topic, partition, start..high, |message| {
        let source = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == SOURCE_HEADER)
                .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<i64>().ok())
        });
        written.extend(source);
    })?;
    Ok(written)
}

/// The delivery ids of the (at most [`crate::recent::WINDOW`]) `delivery-queue` records of
/// `partition` before `offset`.
pub fn ids_before(
    client: &ClientConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Vec<String>, DeliverError> {
    let consumer: BaseConsumer = client.create()?;
    let (low, _) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
    let from = low.max(offset - crate::recent::WINDOW as i64);
    let mut ids = Vec::new();
    read_range(&consumer, topic, partition, from..offset, |message| {
        let id = message
            .payload()
            .and_then(|p| serde_json::from_slice::<crate::record::Delivery>(p).ok())
            .map(|d| d.delivery_id);
        ids.extend(id);
    })?;
    Ok(ids)
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the records of `range` of one partition.
fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    range: std::ops::Range<i64>,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(), DeliverError> {
    if range.is_empty() {
        return Ok(());
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(range.start))?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() > deadline {
            return Err(DeliverError::Client(format!(
                "could not read `{topic}` partition {partition} to {} within 60 s",
                range.end
            )));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        if message.offset() >= range.end {
            return Ok(());
        }
        each(&message);
        if message.offset() + 1 >= range.end {
            return Ok(());
        }
    }
}

/// Topics that must have as many partitions: `deliveries` and `delivery-journal` (a journal
/// partition's reader writes the `deliveries` partition of its number), and the queue and the
/// retry tiers (an endpoint's records of all of them go to one instance).
pub fn same_partitions(client: ClientConfig, topics: &[String]) -> Result<(), DeliverError> {
    let consumer: BaseConsumer = client.create()?;
    let mut counts = Vec::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        counts.push((topic.as_str(), count));
    }
    match counts.iter().find(|(_, n)| *n != counts[0].1) {
        None => Ok(()),
        Some((other, n)) => Err(DeliverError::Config(format!(
            "`{}` has {} partitions and `{other}` {n}: they need as many (recreate `{other}` with {})",
            counts[0].0, counts[0].1, counts[0].1
        ))),
    }
}
