//! Transient broker trouble never stops the processor: a partition task that cannot open
//! (the changelog unreachable, a metadata request timed out, a broker restarting) waits with
//! exponential backoff and tries again, while the other tasks go on. Records of its partition
//! fetched meanwhile are not processed; the partition is rewound to the first of them once
//! the task opens (its checkpoint skips whatever it had already applied). While any partition
//! waits, the status endpoint's `/healthz` answers 503 with the reason, and
//! `hookstream_processor_broker_retries_total` counts the attempts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What waits for the broker (`partition N`, `produce`), with the last error: what
/// `/healthz` reports.
pub type Waiting = Arc<Mutex<BTreeMap<String, String>>>;

fn partition_key(partition: i32) -> String {
    format!("partition {partition}")
}

const FIRST: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(10);

struct Pending {
    at: Instant,
    delay: Duration,
}

/// Per partition: when to try opening its task again, and where to rewind it to when it opens.
#[derive(Default)]
pub struct Reopen {
    pending: BTreeMap<i32, Pending>,
    /// The first offset of a partition fetched but not processed while its task was not open
    /// (restoring, or waiting to try again).
    rewind_to: BTreeMap<i32, i64>,
    waiting: Waiting,
}

impl Reopen {
    pub fn new(waiting: Waiting) -> Self {
        Self {
            pending: BTreeMap::new(),
            rewind_to: BTreeMap::new(),
            waiting,
        }
    }

    /// Whether `partition` may be tried now.
    pub fn due(&self, partition: i32, now: Instant) -> bool {
        self.pending.get(&partition).is_none_or(|p| p.at <= now)
    }

    /// The next moment a waiting partition may be tried.
    pub fn next_attempt(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.at).min()
    }

    /// Opening failed with a retriable error: back off (doubling, up to 10 s).
    pub fn failed(&mut self, partition: i32, error: &dyn std::fmt::Display, now: Instant) {
        metrics::counter!("hookstream_processor_broker_retries_total", "operation" => "open_task")
            .increment(1);
        let entry = self.pending.entry(partition).or_insert(Pending {
            at: now,
            delay: FIRST / 2,
        });
        entry.delay = (entry.delay * 2).min(MAX);
        entry.at = now + entry.delay;
        tracing::warn!(partition, %error, retry_in = ?entry.delay, "the partition task cannot open (broker trouble); retrying");
        self.waiting
            .lock()
            .expect("waiting lock")
            .insert(partition_key(partition), error.to_string());
    }

    /// Records of `partition` from `offset` on were fetched but not processed.
    pub fn skipped(&mut self, partition: i32, offset: i64) {
        let first = self.rewind_to.entry(partition).or_insert(offset);
        *first = (*first).min(offset);
    }

    /// The task opened: where to rewind the partition to, if records were skipped.
    pub fn opened(&mut self, partition: i32) -> Option<i64> {
        self.waiting
            .lock()
            .expect("waiting lock")
            .remove(&partition_key(partition));
        self.pending.remove(&partition);
        self.rewind_to.remove(&partition)
    }

    /// The partition was revoked: nothing to retry.
    pub fn forget(&mut self, partition: i32) {
        self.waiting
            .lock()
            .expect("waiting lock")
            .remove(&partition_key(partition));
        self.pending.remove(&partition);
        self.rewind_to.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_remembers_the_first_skipped_offset() {
        let mut reopen = Reopen::default();
        let now = Instant::now();
        assert!(reopen.due(3, now));
        reopen.failed(3, &"timed out", now);
        assert!(!reopen.due(3, now));
        assert!(reopen.due(3, now + FIRST));
        for _ in 0..10 {
            reopen.failed(3, &"timed out", now);
        }
        assert_eq!(reopen.next_attempt(), Some(now + MAX));
        reopen.skipped(3, 40);
        reopen.skipped(3, 12);
        reopen.skipped(4, 1);
        assert_eq!(reopen.waiting.lock().unwrap().len(), 1);
        assert_eq!(reopen.opened(3), Some(12));
        assert!(reopen.waiting.lock().unwrap().is_empty());
        assert_eq!(reopen.opened(4), Some(1), "skipped while restoring");
        assert_eq!(reopen.opened(4), None);
    }
}
