//! Drops the duplicates a repeated fan-out writes to `delivery-queue`.
//!
//! The fan-out commits an `events` record once its delivery records are acknowledged; a
//! crash between the two writes them again, after the originals, in the same queue partition
//! (the key is the endpoint). Each queue partition's reader remembers the delivery ids of
//! its last [`WINDOW`] records and drops a record whose id it has seen. A reader taking a
//! partition over first reads the window before its first offset.

use std::collections::{HashMap, HashSet, VecDeque};

/// Records per queue partition whose ids are remembered.
pub const WINDOW: usize = 20_000;

#[derive(Debug, Default)]
struct Window {
    next: i64,
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Window {
    fn remember(&mut self, id: String) -> bool {
        if !self.ids.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

#[derive(Debug, Default)]
pub struct Recent {
    partitions: HashMap<i32, Window>,
}

impl Recent {
    /// Whether the partition must be read back before `offset` (first record here, or the
    /// partition was elsewhere meanwhile).
    pub fn needs_read_back(&self, partition: i32, offset: i64) -> bool {
        self.partitions
            .get(&partition)
            .is_none_or(|w| w.next != offset)
    }

    /// Starts the partition at `offset` with the ids of the records before it.
    pub fn start(&mut self, partition: i32, offset: i64, before: impl IntoIterator<Item = String>) {
        let mut window = Window {
            next: offset,
            ..Window::default()
        };
        for id in before {
            window.remember(id);
        }
        self.partitions.insert(partition, window);
    }

    /// Whether the record at `offset` is the first with `id` (else a duplicate to drop).
    pub fn admit(&mut self, partition: i32, offset: i64, id: &str) -> bool {
        let window = self.partitions.entry(partition).or_default();
        window.next = offset + 1;
        window.remember(id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_fan_out_is_dropped_also_after_a_read_back() {
        let mut recent = Recent::default();
        assert!(recent.needs_read_back(0, 5));
        recent.start(0, 5, ["a".to_owned(), "b".to_owned()]);
        assert!(!recent.needs_read_back(0, 5));
        assert!(recent.admit(0, 5, "c"));
        assert!(
            !recent.admit(0, 6, "a"),
            "written before the read-back point"
        );
        assert!(!recent.admit(0, 7, "c"));
        assert!(recent.needs_read_back(0, 3), "rewound: read back again");
    }

    #[test]
    fn the_window_is_bounded() {
        let mut recent = Recent::default();
        recent.start(1, 0, []);
        for i in 0..=WINDOW {
            assert!(recent.admit(1, i as i64, &i.to_string()));
        }
        assert!(recent.admit(1, WINDOW as i64 + 1, "0"), "forgotten");
        assert_eq!(recent.partitions[&1].ids.len(), WINDOW);
    }
}
