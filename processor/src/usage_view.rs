//! The `usage` input: reports of actual tokens and cost from downstream workers.
//!
//! `usage` is co-partitioned with `raw` (the same partition count, keys `tenant/entity` under
//! Kafka's murmur2 partitioner), so the reports about the events of `raw` partition P are in
//! `usage` partition P, and P's task consumes them from its own position: the next `usage`
//! offset is part of the task's store, moved in the same durable absorb step that applies the
//! reports. A report is therefore applied exactly once across restarts, rebalances and lost
//! disks, reports are never read again from the beginning, and none is dropped while its
//! partition is elsewhere or not open yet: it waits in the topic for the task that owns it.
//!
//! A thread reads the partitions whose tasks are open here, each from the position its task
//! gave ([`UsageView::follow`]), decodes the values (JSON, or Avro through the schema registry)
//! and queues the reports per partition; a partition with [`MAX_QUEUED`] reports waiting is
//! paused until its task takes them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use schemas::avro::unframe;
use schemas::records::UsageRecord;
use schemas::registry::Decoder;
use schemas::time::Millis;

use crate::error::ProcessorError;

/// Reports queued for one partition before its reading pauses.
pub const MAX_QUEUED: usize = 10_000;

/// The partition Kafka's default partitioner (murmur2, as librdkafka's `murmur2_random`)
/// assigns to `key` among `partitions`.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff;
    (hash % partitions.max(1) as u32) as i32
}

/// A report and where it is in `usage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka timestamp: when the report was written.
    pub timestamp: Option<Millis>,
    pub key: Vec<u8>,
    /// None: the value could not be decoded (counted, skipped, its offset still consumed).
    pub usage: Option<UsageRecord>,
}

#[derive(Default)]
struct Followed {
    /// The next offset to read (the task's position, then past what was queued).
    next: i64,
    queue: Vec<Report>,
    paused: bool,
}

#[derive(Default)]
struct Shared {
    followed: BTreeMap<i32, Followed>,
    /// The followed set or a position changed: the reader reassigns.
    reassign: bool,
}

#[derive(Default)]
pub struct UsageView {
    shared: Mutex<Shared>,
    stop: AtomicBool,
}

impl UsageView {
    pub fn start(
        client: ClientConfig,
        topic: &str,
        registry: Option<String>,
    ) -> Result<Arc<Self>, ProcessorError> {
        let mut client = client;
        client
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        let consumer: BaseConsumer = client.create()?;
        let decoder = registry.map(|url| Decoder::new(&url));
        let runtime = tokio::runtime::Handle::current();
        let view = Arc::new(Self::default());
        let weak = Arc::downgrade(&view);
        let topic = topic.to_owned();
        std::thread::Builder::new()
            .name("usage-view".into())
            .spawn(move || loop {
                let Some(view) = weak.upgrade() else { return };
                if view.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Err(error) = view.steer(&consumer, &topic) {
                    tracing::warn!(%error, "usage view: cannot (re)assign; retried");
                }
                let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let bytes = message.payload().unwrap_or_default();
                let usage = match (unframe(bytes), &decoder) {
                    (Some(_), Some(decoder)) => {
                        let Some(json) = decode_waiting(&runtime, decoder, bytes, &view) else {
                            return;
                        };
                        json.and_then(|json| serde_json::from_value::<UsageRecord>(json).ok())
                    }
                    _ => serde_json::from_slice::<UsageRecord>(bytes).ok(),
                };
                if usage.is_none() {
                    metrics::counter!("hookstream_processor_usage_unreadable_total").increment(1);
                    tracing::warn!(
                        partition = message.partition(),
                        offset = message.offset(),
                        "unreadable usage report skipped"
                    );
                }
                view.queue(Report {
                    partition: message.partition(),
                    offset: message.offset(),
                    timestamp: message.timestamp().to_millis(),
                    key: message.key().unwrap_or_default().to_vec(),
                    usage,
                });
            })
            .map_err(|e| ProcessorError::Startup(format!("usage view thread: {e}")))?;
        Ok(view)
    }

    /// Reads `partition` from `next` on (its task's stored position), forgetting what was
    /// queued for it: a task that (re)opens takes reports from its own position.
    pub fn follow(&self, partition: i32, next: i64) {
        let mut shared = self.shared.lock().expect("usage lock");
        shared.followed.insert(
            partition,
            Followed {
                next,
                ..Followed::default()
            },
        );
        shared.reassign = true;
    }

    /// Stops reading `partition` (its task closed); its reports wait in the topic.
    pub fn unfollow(&self, partition: i32) {
        let mut shared = self.shared.lock().expect("usage lock");
        if shared.followed.remove(&partition).is_some() {
            shared.reassign = true;
        }
    }

    pub fn waiting(&self, partition: i32) -> bool {
        let shared = self.shared.lock().expect("usage lock");
        shared
            .followed
            .get(&partition)
            .is_some_and(|f| !f.queue.is_empty())
    }

    /// Takes up to `max` of `partition`'s queued reports, in offset order.
    pub fn take(&self, partition: i32, max: usize) -> Vec<Report> {
        let mut shared = self.shared.lock().expect("usage lock");
        let Some(followed) = shared.followed.get_mut(&partition) else {
            return Vec::new();
        };
        let n = followed.queue.len().min(max);
        followed.queue.drain(..n).collect()
    }

    fn queue(&self, report: Report) {
        let mut shared = self.shared.lock().expect("usage lock");
        // Reports of a partition no longer followed, or from before a re-follow's position,
        // are what its task will read again from its own position.
        if let Some(followed) = shared.followed.get_mut(&report.partition) {
            if report.offset >= followed.next {
                followed.next = report.offset + 1;
                followed.queue.push(report);
            }
        }
    }

    /// Applies follow/unfollow changes to the consumer's assignment and pauses partitions
    /// with a full queue (resuming them once taken from).
    fn steer(&self, consumer: &BaseConsumer, topic: &str) -> Result<(), ProcessorError> {
        let mut shared = self.shared.lock().expect("usage lock");
        if shared.reassign {
            let mut assignment = TopicPartitionList::new();
            for (partition, followed) in &mut shared.followed {
                assignment.add_partition_offset(
                    topic,
                    *partition,
                    Offset::Offset(followed.next),
                )?;
                followed.paused = false;
            }
            consumer.assign(&assignment)?;
            shared.reassign = false;
        }
        for (partition, followed) in &mut shared.followed {
            let full = followed.queue.len() >= MAX_QUEUED;
            if full != followed.paused {
                let mut list = TopicPartitionList::new();
                list.add_partition(topic, *partition);
                if full {
                    consumer.pause(&list)?;
                } else {
                    consumer.resume(&list)?;
                }
                followed.paused = full;
            }
        }
        Ok(())
    }
}

/// Decodes an Avro report, waiting out a registry that cannot be reached (reports after it
/// wait too: none is skipped for that). `Some(None)`: the value itself is undecodable;
/// `None`: the view was dropped meanwhile.
fn decode_waiting(
    runtime: &tokio::runtime::Handle,
    decoder: &Decoder,
    bytes: &[u8],
    view: &Arc<UsageView>,
) -> Option<Option<serde_json::Value>> {
    // The reading thread holds the last reference once the processor let go of the view.
    let dropped = || view.stop.load(Ordering::Relaxed) || Arc::strong_count(view) == 1;
    let mut backoff = Duration::from_millis(200);
    loop {
        match runtime.block_on(decoder.decode(bytes)) {
            Ok(json) => return Some(Some(json)),
            Err(error) if error.is_retriable() => {
                metrics::counter!("hookstream_processor_usage_decode_retries_total").increment(1);
                tracing::warn!(%error, retry_in = ?backoff, "usage reports wait for the schema registry");
            }
            Err(error) => {
                tracing::warn!(%error, "undecodable usage report");
                return Some(None);
            }
        }
        let until = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < until {
            if dropped() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50)); // backoff, checking for stop
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

impl Drop for UsageView {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own test vectors (`UtilsTest.testMurmur2`): `"21"` hashes to -973932308.
    #[test]
    fn partitions_like_kafka() {
        assert_eq!(
            murmur2::murmur2(b"21", murmur2::KAFKA_SEED) as i32,
            -973_932_308
        );
        assert_eq!(
            partition_of(b"21", 3),
            ((-973_932_308i32 as u32 & 0x7fff_ffff) % 3) as i32
        );
    }
}
