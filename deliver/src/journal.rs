//! The attempt journal: how `deliveries` gets exactly one record for every request that
//! went out, across `kill -9` at any point.
//!
//! A worker writes an [`Intent`] to `delivery-journal` (key `tenant/endpoint`) and waits for
//! the broker's acknowledgement **before** its request, then the attempt's outcome (an
//! [`AttemptRecord`]) to the journal after it. The journal's partitions are read by the same
//! consumer group as the work, and a partition's reader (this module's [`Partition`]) is the
//! only writer of the `deliveries` partition with the same number:
//!
//! * an outcome is copied to `deliveries` and settles its intent;
//! * an intent still unsettled at its `settle_by` (the request's timeout plus
//!   [`SETTLE_GRACE_MS`]), once the reader has read the partition to its end, belonged to a
//!   worker that died: it is logged as `interrupted` (the request may or may not have
//!   reached the endpoint; the delivery itself is repeated from its uncommitted record, as a
//!   new attempt id with the same `webhook-id`).
//!
//! Each `deliveries` record carries the journal offset it came from (header `hs-journal`).
//! A reader that takes over a partition first reads what its predecessor wrote to
//! `deliveries` since the first journal record it is given (minus [`CLOCK_SKEW_MS`]) and
//! skips those offsets, so a copy is never written twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::record::AttemptRecord;

/// How long after a request's timeout its worker has to journal the outcome before the
/// attempt is logged as `interrupted`.
pub const SETTLE_GRACE_MS: i64 = 30_000;
/// How far before a journal record's timestamp a successor looks for copies in `deliveries`.
pub const CLOCK_SKEW_MS: i64 = 60_000;
/// The header of a `deliveries` record naming its journal offset.
pub const SOURCE_HEADER: &str = "hs-journal";

/// A request about to go out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub attempt_id: String,
    pub delivery_id: String,
    pub tenant: String,
    pub endpoint: String,
    pub event_id: String,
    pub attempt: u32,
    /// ms since the epoch.
    pub started_at: i64,
    /// The outcome is journaled before this, or the attempt is `interrupted`.
    pub settle_by: i64,
}

impl Intent {
    /// The attempt record of an intent whose worker died.
    pub fn interrupted(&self) -> AttemptRecord {
        AttemptRecord {
            attempt_id: self.attempt_id.clone(),
            delivery_id: self.delivery_id.clone(),
            tenant: self.tenant.clone(),
            endpoint: self.endpoint.clone(),
            event_id: self.event_id.clone(),
            attempt: self.attempt,
            outcome: "interrupted".to_owned(),
            status: None,
            error: Some("interrupted".to_owned()),
            attempted_at: schemas::time::to_rfc3339(self.started_at),
            duration_ms: 0,
            dns_ms: None,
            connect_ms: None,
            first_byte_ms: None,
            address: None,
            next_attempt_at: None,
            response_prefix: None,
        }
    }
}

/// A `delivery-journal` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Intent(Intent),
    Outcome(AttemptRecord),
    /// The intent's request did not go out after all (the endpoint closed meanwhile): it
    /// settles the intent, and nothing is logged.
    Withdrawn {
        attempt_id: String,
    },
}

/// A record to write to `deliveries`, and the journal offsets it settles once acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub record: AttemptRecord,
    /// The journal offset it comes from (its `hs-journal` header).
    pub source: i64,
    pub settles: Vec<i64>,
}

/// What to do with one journal record.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// Whether the record waits to be settled (an intent) or for its write.
    pub waits: bool,
    pub write: Option<Write>,
    /// Journal offsets settled now, without a write.
    pub settled: Vec<i64>,
    /// An outcome journaled after its intent was logged `interrupted`.
    pub late: bool,
}

/// One journal partition's reader state.
#[derive(Debug, Default)]
pub struct Partition {
    /// The next offset this reader expects; another one means it lost the partition between.
    pub next: i64,
    pending: BTreeMap<i64, Intent>,
    by_attempt: HashMap<String, i64>,
    /// Journal offsets a predecessor already wrote to `deliveries`.
    written: HashSet<i64>,
    /// Attempts logged `interrupted` (a later outcome of theirs is late).
    given_up: HashSet<String>,
}

impl Partition {
    pub fn new(next: i64, written: HashSet<i64>) -> Self {
        Self {
            next,
            written,
            ..Self::default()
        }
    }

    pub fn take(&mut self, offset: i64, entry: Entry) -> Taken {
        self.next = offset + 1;
        match entry {
            Entry::Intent(intent) if self.written.contains(&offset) => {
                self.given_up.insert(intent.attempt_id);
                Taken::default()
            }
            Entry::Intent(intent) => {
                self.by_attempt.insert(intent.attempt_id.clone(), offset);
                self.pending.insert(offset, intent);
                Taken {
                    waits: true,
                    ..Taken::default()
                }
            }
            Entry::Withdrawn { attempt_id } => {
                let intent = self.by_attempt.remove(&attempt_id);
                if let Some(at) = intent {
                    self.pending.remove(&at);
                }
                Taken {
                    settled: intent.into_iter().collect(),
                    ..Taken::default()
                }
            }
            Entry::Outcome(record) => {
                let intent = self.by_attempt.remove(&record.attempt_id);
                if let Some(at) = intent {
                    self.pending.remove(&at);
                }
                let late = intent.is_none() && self.given_up.remove(&record.attempt_id);
                let settles: Vec<i64> = intent.into_iter().collect();
                if self.written.contains(&offset) {
                    return Taken {
                        settled: settles,
                        late,
                        ..Taken::default()
                    };
                }
                Taken {
                    waits: true,
                    write: Some(Write {
                        record,
                        source: offset,
                        settles: settles.into_iter().chain([offset]).collect(),
                    }),
                    settled: Vec::new(),
                    late,
                }
            }
        }
    }

    /// The earliest `settle_by` of the intents waiting.
    pub fn first_deadline(&self) -> Option<i64> {
        self.pending.values().map(|i| i.settle_by).min()
    }

    /// The intents given up: those whose `settle_by` is before `queried_at`, when this
    /// reader has read the partition up to `end`, its end as of `queried_at`.
    pub fn overdue(&mut self, queried_at: i64, end: i64) -> Vec<Write> {
        if self.next < end {
            return Vec::new();
        }
        let due: Vec<i64> = self
            .pending
            .iter()
            .filter(|(_, i)| i.settle_by < queried_at)
            .map(|(offset, _)| *offset)
            .collect();
        due.into_iter()
            .filter_map(|offset| {
                let intent = self.pending.remove(&offset)?;
                self.by_attempt.remove(&intent.attempt_id);
                self.given_up.insert(intent.attempt_id.clone());
                Some(Write {
                    record: intent.interrupted(),
                    source: offset,
                    settles: vec![offset],
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(id: &str, settle_by: i64) -> Intent {
        Intent {
            attempt_id: id.into(),
            delivery_id: "t/e/s/1".into(),
            tenant: "t".into(),
            endpoint: "e".into(),
            event_id: "1".into(),
            attempt: 1,
            started_at: 0,
            settle_by,
        }
    }

    fn outcome(id: &str) -> AttemptRecord {
        AttemptRecord {
            outcome: "delivered".into(),
            status: Some(200),
            error: None,
            ..intent(id, 0).interrupted()
        }
    }

    #[test]
    fn an_outcome_is_copied_and_settles_its_intent() {
        let mut p = Partition::new(10, HashSet::new());
        assert!(p.take(10, Entry::Intent(intent("a", 100))).waits);
        let taken = p.take(11, Entry::Outcome(outcome("a")));
        let write = taken.write.unwrap();
        assert_eq!((write.source, write.settles), (11, vec![10, 11]));
        assert_eq!(p.first_deadline(), None);
        assert!(p.overdue(1_000, 12).is_empty());
    }

    #[test]
    fn an_unsettled_intent_is_interrupted_only_past_its_deadline_and_once_read_to_the_end() {
        let mut p = Partition::new(0, HashSet::new());
        p.take(0, Entry::Intent(intent("a", 100)));
        p.take(1, Entry::Intent(intent("b", 300)));
        assert!(p.overdue(200, 5).is_empty(), "not read to the end yet");
        assert!(p.overdue(100, 2).is_empty(), "not past settle_by");
        let given_up = p.overdue(200, 2);
        assert_eq!(given_up.len(), 1);
        assert_eq!(given_up[0].record.outcome, "interrupted");
        assert_eq!(given_up[0].record.attempt_id, "a");
        assert_eq!(p.first_deadline(), Some(300));
        let late = p.take(2, Entry::Outcome(outcome("a")));
        assert!(late.late, "an outcome after its interruption is late");
        assert_eq!(late.write.unwrap().settles, vec![2]);
    }

    #[test]
    fn a_successor_skips_what_its_predecessor_wrote() {
        let mut p = Partition::new(0, HashSet::from([0, 3]));
        let interrupted = p.take(0, Entry::Intent(intent("a", 100)));
        assert_eq!(interrupted, Taken::default());
        p.take(2, Entry::Intent(intent("b", 100)));
        let copied = p.take(3, Entry::Outcome(outcome("b")));
        assert_eq!(copied.write, None);
        assert_eq!(copied.settled, vec![2]);
        assert!(!copied.waits);
        assert!(p.take(4, Entry::Outcome(outcome("a"))).late);
    }

    #[test]
    fn a_withdrawn_intent_is_settled_without_a_record() {
        let mut p = Partition::new(0, HashSet::new());
        p.take(0, Entry::Intent(intent("a", 100)));
        let taken = p.take(
            1,
            Entry::Withdrawn {
                attempt_id: "a".into(),
            },
        );
        assert_eq!(
            (taken.write, taken.settled, taken.waits),
            (None, vec![0], false)
        );
        assert!(p.overdue(1_000, 2).is_empty());
    }

    #[test]
    fn journal_values_are_tagged() {
        let value = serde_json::to_value(Entry::Intent(intent("a", 1))).unwrap();
        assert_eq!(value["kind"], "intent");
        let back: Entry = serde_json::from_value(value).unwrap();
        assert_eq!(back, Entry::Intent(intent("a", 1)));
    }
}
