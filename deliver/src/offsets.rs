//! Which offsets may be committed while deliveries finish out of order: a consumed record
//! is done when every delivery it started is (an event fans out to several endpoints, each
//! on its own worker); a partition's committed offset is its lowest record not yet done, so
//! a crash repeats only records that were not done (their requests carry the same
//! `webhook-id`), never skips one.

use std::collections::{BTreeMap, HashMap};

#[derive(Default)]
struct Partition {
    /// Records not done yet: offset → deliveries outstanding.
    outstanding: BTreeMap<i64, usize>,
    /// The next offset after the highest record seen.
    end: i64,
    committed: Option<i64>,
}

#[derive(Default)]
pub struct Offsets {
    partitions: HashMap<(String, i32), Partition>,
}

impl Offsets {
    /// A consumed record that started `deliveries` deliveries (0: done already).
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64, deliveries: usize) {
        let p = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_default();
        p.end = p.end.max(offset + 1);
        if deliveries > 0 {
            *p.outstanding.entry(offset).or_default() += deliveries;
        }
    }

    /// One delivery of the record at `offset` is done.
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) {
        let Some(p) = self.partitions.get_mut(&(topic.to_owned(), partition)) else {
            return;
        };
        if let Some(left) = p.outstanding.get_mut(&offset) {
            *left -= 1;
            if *left == 0 {
                p.outstanding.remove(&offset);
            }
        }
    }

    /// Records with deliveries outstanding.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.outstanding.len()).sum()
    }

    /// Each partition read here but `topic`'s, with the offset after the last record read.
    pub fn positions_except(&self, topic: &str) -> Vec<(String, i32, i64)> {
        self.partitions
            .iter()
            .filter(|((t, _), _)| t != topic)
            .map(|((t, partition), p)| (t.clone(), *partition, p.end))
            .collect()
    }

    /// Records with deliveries outstanding, but for `topic`'s.
    pub fn in_flight_except(&self, topic: &str) -> usize {
        self.partitions
            .iter()
            .filter(|((t, _), _)| t != topic)
            .map(|(_, p)| p.outstanding.len())
            .sum()
    }

    /// The offsets to commit now (each partition's first record not done, when it moved).
    pub fn to_commit(&mut self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for ((topic, partition), p) in &mut self.partitions {
            let next = p.outstanding.keys().next().copied().unwrap_or(p.end);
            if p.committed != Some(next) {
                p.committed = Some(next);
                out.push((topic.clone(), *partition, next));
            }
        }
        out
    }

    /// Forgets a partition this instance no longer owns.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_owned(), partition));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_first_record_not_done() {
        let mut offsets = Offsets::default();
        offsets.start("events", 0, 10, 2);
        offsets.start("events", 0, 11, 0);
        offsets.start("events", 0, 12, 1);
        assert_eq!(offsets.to_commit(), [("events".to_owned(), 0, 10)]);
        offsets.finish("events", 0, 12);
        offsets.finish("events", 0, 10);
        assert_eq!(offsets.to_commit(), [], "one delivery of 10 is still out");
        assert_eq!(offsets.in_flight(), 1);
        offsets.finish("events", 0, 10);
        assert_eq!(offsets.to_commit(), [("events".to_owned(), 0, 13)]);
        assert_eq!(offsets.in_flight(), 0);
        offsets.finish("events", 0, 10);
        offsets.finish("other", 3, 1);
        assert_eq!(offsets.to_commit(), []);
    }

    #[test]
    fn the_intake_is_counted_and_positioned_without_the_journal() {
        let mut offsets = Offsets::default();
        offsets.start("queue", 1, 4, 1);
        offsets.start("queue", 1, 5, 0);
        offsets.start("journal", 1, 7, 1);
        assert_eq!(offsets.in_flight(), 2);
        assert_eq!(offsets.in_flight_except("journal"), 1);
        assert_eq!(
            offsets.positions_except("journal"),
            [("queue".to_owned(), 1, 6)]
        );
    }
}
