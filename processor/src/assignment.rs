//! What the consumer learns besides records: which partitions of `raw` are assigned (from
//! librdkafka's rebalance callbacks, or a static assignment) and how far it has fetched each,
//! including where it reached a partition's end (`enable.partition.eof`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

/// Tracks assignment changes reported by librdkafka during `recv`.
#[derive(Default)]
pub struct RebalanceContext {
    assigned: Mutex<HashSet<i32>>,
    revoked: Mutex<Vec<i32>>,
    /// Wakes the loop when partitions are assigned, to open their tasks without waiting for
    /// a record.
    pub changed: tokio::sync::Notify,
}

impl RebalanceContext {
    pub fn take_revoked(&self) -> Vec<i32> {
        std::mem::take(&mut *self.revoked.lock().expect("rebalance lock"))
    }

    /// Records a manual assignment (no group rebalance callbacks happen then).
    pub fn assign_manually(&self, partitions: &[i32]) {
        self.assigned
            .lock()
            .expect("rebalance lock")
            .extend(partitions.iter().copied());
    }

    pub fn assigned(&self) -> Vec<i32> {
        let mut assigned: Vec<i32> = self
            .assigned
            .lock()
            .expect("rebalance lock")
            .iter()
            .copied()
            .collect();
        assigned.sort_unstable();
        assigned
    }

    pub fn is_assigned(&self, partition: i32) -> bool {
        self.assigned
            .lock()
            .expect("rebalance lock")
            .contains(&partition)
    }
}

impl ClientContext for RebalanceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // The end of a partition (`enable.partition.eof`) is news for the loop, not an error.
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        tracing::error!("librdkafka: {error}: {reason}");
    }

    /// `hookstream_processor_consumer_lag_records{partition}`: records of `raw` not yet read,
    /// per assigned partition, from librdkafka's statistics (every `statistics.interval.ms`).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let assigned = self.assigned.lock().expect("rebalance lock").clone();
        for topic in statistics.topics.values() {
            for partition in topic.partitions.values() {
                if partition.consumer_lag >= 0 && assigned.contains(&partition.partition) {
                    metrics::gauge!("hookstream_processor_consumer_lag_records", "partition" => partition.partition.to_string())
                        .set(partition.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for RebalanceContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut assigned = self.assigned.lock().expect("rebalance lock");
                for element in tpl.elements() {
                    assigned.insert(element.partition());
                }
                tracing::info!(partitions = ?assigned, "partitions assigned");
                self.changed.notify_one();
            }
            Rebalance::Revoke(tpl) => {
                let mut assigned = self.assigned.lock().expect("rebalance lock");
                let mut revoked = self.revoked.lock().expect("rebalance lock");
                for element in tpl.elements() {
                    assigned.remove(&element.partition());
                    revoked.push(element.partition());
                    // Another instance owns its lag now; a stale value here would page.
                    metrics::gauge!("hookstream_processor_consumer_lag_records", "partition" => element.partition().to_string())
                        .set(0.0);
                }
                tracing::info!(partitions = ?revoked, "partitions revoked");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}

/// What the consumer handed over, per partition of `raw`.
#[derive(Default)]
pub struct Fetched {
    /// The offset after the last record received.
    next: HashMap<i32, i64>,
    /// Where the consumer last reached the partition's end (`enable.partition.eof`): like the
    /// high watermark a task catches up with, a bound on what any predecessor can have
    /// processed, and one that transaction markers at the end do not push out of reach.
    pub end: HashMap<i32, i64>,
}

impl Fetched {
    /// Notes a record the consumer handed over.
    pub fn received(&mut self, partition: i32, offset: i64) {
        self.next.insert(partition, offset + 1);
    }

    /// Notes a partition's end (true: not an error); logs any other consumer error (false).
    pub fn error(&mut self, error: rdkafka::error::KafkaError) -> bool {
        match error {
            rdkafka::error::KafkaError::PartitionEOF(partition) => {
                // Nothing received yet: the consumer found the end where it started, at the
                // group's committed offset, and no task checkpoint is behind that.
                let end = self.next.get(&partition).copied().unwrap_or(0);
                self.end.insert(partition, end);
                true
            }
            error => {
                tracing::warn!(%error, "consumer error");
                false
            }
        }
    }

    /// Whether the last thing the consumer handed over for `partition` was its end: nothing
    /// of it waits in the broker or the consumer's queue (as of that end).
    pub fn at_end(&self, partition: i32) -> bool {
        self.end
            .get(&partition)
            .is_some_and(|end| *end == self.next.get(&partition).copied().unwrap_or(0))
    }

    pub fn forget(&mut self, partition: i32) {
        self.next.remove(&partition);
        self.end.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_at_its_end_only_while_nothing_came_after_its_last_end() {
        let mut fetched = Fetched::default();
        assert!(!fetched.at_end(0), "no end seen yet");
        fetched.received(0, 41);
        assert!(!fetched.at_end(0));
        assert!(fetched.error(rdkafka::error::KafkaError::PartitionEOF(0)));
        assert!(fetched.at_end(0));
        assert!(
            !fetched.at_end(1),
            "another partition's end is not this one's"
        );
        fetched.received(0, 42);
        assert!(
            !fetched.at_end(0),
            "a record after the end: a backlog may follow"
        );
        fetched.error(rdkafka::error::KafkaError::PartitionEOF(0));
        assert!(fetched.at_end(0));
        fetched.received(0, 10);
        assert!(!fetched.at_end(0), "rewound: read again up to the end");
        fetched.forget(0);
        assert!(!fetched.at_end(0));
    }
}
