//! Stream time, kept per (tenant, source) rather than per partition.
//!
//! A partition of `raw` is shared by many tenants whose clocks and payloads we do not control.
//! Everything that stream time drives — dedupe expiry, reorder release, caps and breaker
//! windows — therefore follows the clock of the records' own source: the greatest *trusted*
//! event time that (tenant, source) has shown on this partition. One sender's broken clock
//! (an event dated 2100) can move only its own windows, never another tenant's, so what the
//! processor emits for a tenant is a function of that tenant's records alone (the wall-clock
//! idle flush aside).
//!
//! **Trusted time.** An event time more than the source's `max_future_skew_secs` ahead of the
//! ingest's receive time is not trusted ([`trusted_time`]): the event is processed at its
//! receive time and flagged (`events.time_skewed`), keeping the claimed time in the record.
//! Past times are trusted; they are merely late.
//!
//! The `clock` store holds, per source, its [`SourceClock`] (key [`source_key`], prefixed
//! `s`), and per tenant the greatest of its sources' stream times (prefixed `t`), which is
//! the time the tenant's caps windows follow.

use serde::{Deserialize, Serialize};

use schemas::raw::RawMeta;
use schemas::time::Millis;

use crate::error::ProcessorError;
use crate::store::{Cf, Txn};

/// Alerts about one source's skewed clock are raised at most this often (stream time).
pub const SKEW_ALERT_EVERY_MS: Millis = 3_600_000;

/// One source's stream time and what hangs off it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceClock {
    /// Greatest trusted event time seen (None: no event yet).
    pub stream_time: Option<Millis>,
    /// Events of this source held back for reordering.
    pub buffered: u64,
    /// Stream time of the last `time_skewed` alert.
    pub skew_alerted_at: Option<Millis>,
    /// No held event of this source is released before this time: a release scans the reorder
    /// buffer from here, not from the source's first key (past the deletes of every event
    /// released before, which the store keeps until it compacts them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_from: Option<Millis>,
}

impl SourceClock {
    pub fn now(&self) -> Millis {
        self.stream_time.unwrap_or(Millis::MIN)
    }

    /// Moves stream time forward to `at` (never back).
    pub fn advance(&mut self, at: Millis) {
        self.stream_time = Some(self.now().max(at));
    }

    /// Whether a skewed event at the current stream time raises an alert (and records it).
    pub fn skew_alert_due(&mut self) -> bool {
        let now = self.now();
        let due = self
            .skew_alerted_at
            .is_none_or(|last| now.saturating_sub(last) >= SKEW_ALERT_EVERY_MS);
        if due {
            self.skew_alerted_at = Some(now);
        }
        due
    }
}

/// Length-prefixed (tenant, source): a prefix-free encoding, and the first two fields of every
/// dedupe key, so a source's entries of any store are one key range.
pub fn source_key(tenant: &str, source: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + source.len() + 8);
    for part in [tenant, source] {
        key.extend_from_slice(&(part.len() as u32).to_be_bytes());
        key.extend_from_slice(part.as_bytes());
    }
    key
}

pub fn source_key_of(meta: &RawMeta) -> Vec<u8> {
    source_key(&meta.tenant, &meta.source)
}

/// The time an event is processed at: its event time, unless that is more than `max_skew`
/// ahead of its receive time; then its receive time (`Err` carries it, the event is skewed).
pub fn trusted_time(
    occurred_at: Millis,
    received_at: Millis,
    max_skew: Millis,
) -> Result<Millis, Millis> {
    if occurred_at > received_at.saturating_add(max_skew) {
        Err(received_at)
    } else {
        Ok(occurred_at)
    }
}

fn clock_key(source_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(source_key.len() + 1);
    key.push(b's');
    key.extend_from_slice(source_key);
    key
}

fn tenant_key(tenant: &str) -> Vec<u8> {
    let mut key = b"t".to_vec();
    key.extend_from_slice(tenant.as_bytes());
    key
}

pub fn load(txn: &Txn<'_>, source_key: &[u8]) -> Result<SourceClock, ProcessorError> {
    match txn.get(Cf::Clock, &clock_key(source_key))? {
        None => Ok(SourceClock::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| ProcessorError::Corrupt {
            path: String::new(),
            key: format!("clock/{}", String::from_utf8_lossy(source_key)),
            reason: e.to_string(),
        }),
    }
}

pub fn save(txn: &mut Txn<'_>, source_key: &[u8], clock: &SourceClock) {
    txn.put(
        Cf::Clock,
        clock_key(source_key),
        serde_json::to_vec(clock).expect("clock serializes"),
    );
}

/// The greatest stream time of the tenant's sources on this partition (None: no event yet).
pub fn tenant_time(txn: &Txn<'_>, tenant: &str) -> Result<Option<Millis>, ProcessorError> {
    txn.get(Cf::Clock, &tenant_key(tenant))?
        .map(|bytes| {
            bytes
                .as_slice()
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| ProcessorError::Corrupt {
                    path: String::new(),
                    key: format!("clock/t{tenant}"),
                    reason: "not 8 bytes".into(),
                })
        })
        .transpose()
}

pub fn save_tenant_time(txn: &mut Txn<'_>, tenant: &str, at: Millis) {
    txn.put(Cf::Clock, tenant_key(tenant), at.to_be_bytes().to_vec());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_stored_before_held_from_reads_as_holding_from_anywhere() {
        let old: SourceClock =
            serde_json::from_slice(br#"{"stream_time":5,"buffered":2,"skew_alerted_at":null}"#)
                .unwrap();
        assert_eq!(
            old.held_from, None,
            "a release scans from the source's first key"
        );
        assert_eq!(old.buffered, 2);
        let written = serde_json::to_string(&SourceClock::default()).unwrap();
        assert!(!written.contains("held_from"), "{written}");
    }

    #[test]
    fn source_keys_are_prefix_free() {
        assert_ne!(source_key("ab", "c"), source_key("a", "bc"));
        assert!(!source_key("a", "b").starts_with(&source_key("a", "")));
    }

    #[test]
    fn only_future_times_beyond_the_skew_are_distrusted() {
        assert_eq!(trusted_time(1_300, 1_000, 300), Ok(1_300));
        assert_eq!(trusted_time(1_301, 1_000, 300), Err(1_000));
        assert_eq!(trusted_time(i64::MIN, 1_000, 300), Ok(i64::MIN));
        assert_eq!(trusted_time(i64::MAX, i64::MAX, 300), Ok(i64::MAX));
        assert_eq!(trusted_time(i64::MAX, 0, 0), Err(0));
    }

    #[test]
    fn skew_alerts_are_at_most_hourly_in_stream_time() {
        let mut clock = SourceClock::default();
        clock.advance(0);
        assert!(clock.skew_alert_due());
        clock.advance(SKEW_ALERT_EVERY_MS - 1);
        assert!(!clock.skew_alert_due());
        clock.advance(SKEW_ALERT_EVERY_MS);
        assert!(clock.skew_alert_due());
        clock.advance(5);
        assert!(!clock.skew_alert_due(), "stream time never goes back");
    }
}
