//! Snapshots: when a partition task writes its whole store to the changelog.
//!
//! A restore reads the latest complete snapshot and the frames after it (see
//! [`crate::restore`]), so its cost is the state plus the frames since that snapshot. A
//! snapshot is due when the frames written since the last one reach
//! `max(min_bytes, ratio × last snapshot bytes)`: the history a restore replays after the
//! snapshot is then at most `ratio` of the state (or `min_bytes`), and snapshots cost at most
//! `1 / ratio` of the changelog's frame bytes. A store that changed is also snapshotted once
//! its last snapshot is `interval` old, and any store once its last snapshot is a quarter of
//! the changelog's retention old: time retention never deletes a running task's only
//! snapshot.
//!
//! The task writes a snapshot between two batches, from its store as of its changelog
//! position; a crash while it is written leaves a torn snapshot that restore ignores (the
//! previous complete one and the frames after it still cover everything, as the changelog
//! before a snapshot is deleted only once that snapshot is complete).

use std::time::Duration;

use serde::{Deserialize, Serialize};

mod write;

/// What a store knows of its latest snapshot (the `meta` key [`crate::store::SNAPSHOT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotState {
    /// The changelog position the latest snapshot covers (-1: none yet).
    pub position: i64,
    /// Its size (the ops' bytes).
    pub bytes: u64,
    /// Changelog frame bytes since it.
    pub since: u64,
    /// When it was taken (wall clock, ms since the epoch; 0: none yet).
    pub taken_at_ms: i64,
    /// When the first frame since it was written (wall clock, ms; 0: none since).
    #[serde(default)]
    pub changed_at_ms: i64,
}

impl SnapshotState {
    pub const NONE: SnapshotState = SnapshotState {
        position: -1,
        bytes: 0,
        since: 0,
        taken_at_ms: 0,
        changed_at_ms: 0,
    };

    /// The state after `bytes` more frame bytes, written at `now_ms`.
    pub fn written(self, bytes: u64, now_ms: i64) -> SnapshotState {
        SnapshotState {
            since: self.since.saturating_add(bytes),
            changed_at_ms: if self.since == 0 && bytes > 0 {
                now_ms
            } else {
                self.changed_at_ms
            },
            ..self
        }
    }

    pub fn decode(bytes: Option<&[u8]>) -> SnapshotState {
        bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(SnapshotState::NONE)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a snapshot state serializes")
    }
}

/// When snapshots are due (`processor.snapshots`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub min_bytes: u64,
    pub ratio: f64,
    pub interval: Duration,
    /// A quarter of the changelog's retention (None: kept forever).
    pub refresh: Option<Duration>,
}

impl Policy {
    pub fn of(config: &schemas::config::SnapshotConfig) -> Policy {
        Policy {
            min_bytes: config.min_bytes,
            ratio: config.ratio,
            interval: Duration::from_secs(config.interval_secs),
            refresh: (config.changelog_retention_secs > 0)
                .then(|| Duration::from_secs(config.changelog_retention_secs / 4)),
        }
    }

    /// Frame bytes after which the next snapshot is due.
    pub fn threshold(&self, state: &SnapshotState) -> u64 {
        self.min_bytes
            .max((self.ratio * state.bytes as f64).min(u64::MAX as f64) as u64)
    }

    /// Whether a store in `state` should be snapshotted at `now_ms` (wall clock).
    pub fn due(&self, state: &SnapshotState, now_ms: i64) -> bool {
        if state.since >= self.threshold(state) {
            return true;
        }
        let age =
            |since_ms: i64| Duration::from_millis(now_ms.saturating_sub(since_ms).max(0) as u64);
        let changed_long_ago = state.since > 0 && age(state.changed_at_ms) >= self.interval;
        let refresh =
            state.taken_at_ms > 0 && self.refresh.is_some_and(|r| age(state.taken_at_ms) >= r);
        changed_long_ago || refresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        min_bytes: 1000,
        ratio: 0.25,
        interval: Duration::from_secs(3600),
        refresh: Some(Duration::from_secs(42 * 3600)),
    };

    fn state(bytes: u64, since: u64, taken_at_ms: i64) -> SnapshotState {
        SnapshotState {
            position: 10,
            bytes,
            since,
            taken_at_ms,
            changed_at_ms: if since > 0 { taken_at_ms } else { 0 },
        }
    }

    #[test]
    fn due_by_bytes_relative_to_the_state_with_a_floor() {
        assert!(!POLICY.due(&state(100, 999, 1), 1));
        assert!(POLICY.due(&state(100, 1000, 1), 1));
        assert!(!POLICY.due(&state(100_000, 24_999, 1), 1));
        assert!(POLICY.due(&state(100_000, 25_000, 1), 1));
        assert!(POLICY.due(
            &SnapshotState {
                since: 1000,
                ..SnapshotState::NONE
            },
            1
        ));
    }

    #[test]
    fn due_by_age_when_changed_and_refreshed_before_retention_could_delete_it() {
        let hour = 3_600_000;
        assert!(!POLICY.due(&state(10, 0, 1), hour + 1), "unchanged");
        assert!(POLICY.due(&state(10, 1, 1), hour + 1));
        assert!(!POLICY.due(&state(10, 1, 1), hour - 1));
        assert!(POLICY.due(&state(10, 0, 1), 42 * hour + 1), "refresh");
        let forever = Policy {
            refresh: None,
            ..POLICY
        };
        assert!(!forever.due(&state(10, 0, 1), 1000 * hour));
    }

    #[test]
    fn a_never_snapshotted_store_is_due_an_interval_after_its_first_frames() {
        let written = SnapshotState::NONE.written(10, 5).written(10, 9);
        assert_eq!((written.since, written.changed_at_ms), (20, 5));
        assert!(!POLICY.due(&written, 5 + 3_599_999));
        assert!(POLICY.due(&written, 5 + 3_600_000));
        assert!(
            !POLICY.due(&SnapshotState::NONE, i64::MAX),
            "nothing to snapshot"
        );
    }

    #[test]
    fn states_round_trip_and_garbage_reads_as_none() {
        let s = state(5, 6, 7);
        assert_eq!(SnapshotState::decode(Some(&s.encode())), s);
        assert_eq!(SnapshotState::decode(Some(b"junk")), SnapshotState::NONE);
        assert_eq!(SnapshotState::decode(None), SnapshotState::NONE);
    }
}
