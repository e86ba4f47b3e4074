//! Reorder: events wait in the `buffer` store until their source's stream time (the greatest
//! trusted event time that tenant's source has shown on the partition, see [`crate::clock`])
//! passes their event time + the source's grace, then are released in (release time, event
//! time, event id) order. Keys sort that way byte-wise after the source, so releasing a
//! source's due events is one range scan, and no other source's clock can release them.
//! An event older than what its entity already released is not held back: it is *late*
//! (see [`is_late`]).
//!
//! The buffer is bounded per source (`processor.max_buffered`): past the bound the source's
//! oldest events are released early, never dropped. A partition that stays quiet for
//! `processor.idle_flush_ms` of wall-clock time releases everything.

use schemas::raw::{header, RawMeta};
use schemas::time::Millis;

use crate::input::RawInput;
use crate::reconcile::EntityState;

/// Encodes a time so that byte order is numeric order (sign bit flipped, big-endian).
pub fn time_key(ms: Millis) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// Buffer key: source, release time, event time, event id, then the `raw` offset (unique).
/// The id is written so that byte order is the ids' own order (what reconcile compares:
/// `"e10"` before `"e8"`), with no id a prefix of another: each 0 byte as 0 0xff, then 0 0.
pub fn buffer_key(source: &[u8], release_at: Millis, input: &RawInput) -> Vec<u8> {
    let id = input.meta.event_id.as_bytes();
    let mut key = Vec::with_capacity(source.len() + 28 + id.len());
    key.extend_from_slice(source);
    key.extend_from_slice(&time_key(release_at));
    key.extend_from_slice(&time_key(input.meta.occurred_at));
    for byte in id {
        key.push(*byte);
        if *byte == 0 {
            key.push(0xff);
        }
    }
    key.extend_from_slice(&[0, 0]);
    key.extend_from_slice(&input.offset.to_be_bytes());
    key
}

/// `source` followed by `at`: where a source's entries from time `at` on begin.
pub fn at(source: &[u8], at: Millis) -> Vec<u8> {
    let mut key = Vec::with_capacity(source.len() + 8);
    key.extend_from_slice(source);
    key.extend_from_slice(&time_key(at));
    key
}

/// A source's entries due at `stream_time` are below this bound.
pub fn due_bound(source: &[u8], stream_time: Millis) -> Vec<u8> {
    match stream_time.checked_add(1) {
        Some(next) => at(source, next),
        None => end_of(source),
    }
}

/// The first key after every key that starts with `prefix`.
pub fn end_of(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 64]
}

/// Whether `meta` is older than the last event its entity released.
pub fn is_late(state: Option<&EntityState>, meta: &RawMeta) -> bool {
    state.is_some_and(|s| {
        (meta.occurred_at, meta.event_id.as_str()) < (s.updated_at, s.last_event_id.as_str())
    })
}

/// Carry [`RawInput::claimed_at`] and the exact event and receive times (RFC 3339 text does
/// not round-trip every representable time) in a buffered event's headers.
const CLAIMED_AT: &str = "hs-claimed-at";
const OCCURRED_MS: &str = "hs-occurred-ms";
const RECEIVED_MS: &str = "hs-received-ms";

/// Buffer value: the event as decoded from `raw` (offset, headers, body).
pub fn encode(input: &RawInput) -> Vec<u8> {
    let mut headers: Vec<(&str, String)> = input.meta.to_headers();
    if let Some(claimed) = input.claimed_at {
        headers.push((CLAIMED_AT, claimed.to_string()));
    }
    headers.push((OCCURRED_MS, input.meta.occurred_at.to_string()));
    headers.push((RECEIVED_MS, input.meta.received_at.to_string()));
    let headers = serde_json::to_vec(&headers).expect("headers serialize");
    let mut value = Vec::with_capacity(16 + headers.len() + input.body.len());
    value.extend_from_slice(&input.partition.to_be_bytes());
    value.extend_from_slice(&input.offset.to_be_bytes());
    value.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    value.extend_from_slice(&headers);
    value.extend_from_slice(&input.body);
    value
}

pub fn decode(value: &[u8]) -> Option<RawInput> {
    let partition = i32::from_be_bytes(value.get(0..4)?.try_into().ok()?);
    let offset = i64::from_be_bytes(value.get(4..12)?.try_into().ok()?);
    let len = u32::from_be_bytes(value.get(12..16)?.try_into().ok()?) as usize;
    let headers: Vec<(String, String)> = serde_json::from_slice(value.get(16..16 + len)?).ok()?;
    let number = |name: &str| -> Option<Option<i64>> {
        match headers.iter().find(|(k, _)| k == name) {
            Some((_, v)) => Some(Some(v.parse().ok()?)),
            None => Some(None),
        }
    };
    let (claimed_at, occurred_ms, received_ms) = (
        number(CLAIMED_AT)?,
        number(OCCURRED_MS)?,
        number(RECEIVED_MS)?,
    );
    const PLACEHOLDER: &str = "1970-01-01T00:00:00Z";
    let mut meta = RawMeta::from_headers(headers.iter().map(|(k, v)| {
        let exact = (k == header::OCCURRED_AT && occurred_ms.is_some())
            || (k == header::RECEIVED_AT && received_ms.is_some());
        (
            k.as_str(),
            Some(if exact { PLACEHOLDER } else { v.as_str() }.as_bytes()),
        )
    }))
    .ok()?;
    if let Some(ms) = occurred_ms {
        meta.occurred_at = ms;
    }
    if let Some(ms) = received_ms {
        meta.received_at = ms;
    }
    Some(RawInput {
        partition,
        offset,
        meta,
        body: value.get(16 + len..)?.to_vec(),
        claimed_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(offset: i64, id: &str, at: Millis) -> RawInput {
        RawInput {
            partition: 2,
            offset,
            meta: RawMeta {
                tenant: "t".into(),
                source: "s".into(),
                scheme: "hmac".into(),
                event_id: id.into(),
                event_type: "x".into(),
                entity: "e".into(),
                occurred_at: at,
                received_at: 7,
                content_type: String::new(),
                key_id: "k".into(),
                event_id_derived: false,
                redrive_id: None,
            },
            body: b"{\"a\":1}".to_vec(),
            claimed_at: None,
        }
    }

    #[test]
    fn keys_sort_by_release_then_event_time_then_id_including_negative_times() {
        let s = b"\0\0\0\x01t\0\0\0\x01s";
        let mut keys = [
            buffer_key(s, 10, &input(0, "b", 5)),
            buffer_key(s, -3, &input(1, "z", -8)),
            buffer_key(s, 10, &input(2, "a", 5)),
            buffer_key(s, 10, &input(3, "a", 4)),
        ];
        keys.sort();
        let offsets: Vec<i64> = keys
            .iter()
            .map(|k| i64::from_be_bytes(k[k.len() - 8..].try_into().unwrap()))
            .collect();
        assert_eq!(offsets, [1, 3, 2, 0]);
        // Ids of different lengths sort as reconcile compares them, and none is a prefix.
        let id_order = |ids: &[&str]| {
            let mut keys: Vec<(Vec<u8>, String)> = ids
                .iter()
                .map(|id| (buffer_key(s, 10, &input(0, id, 5)), id.to_string()))
                .collect();
            keys.sort();
            keys.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
        };
        let mut expected = vec!["e8-1", "e10-3", "e1", "e1\0", "e1\0\0", "e1\u{1}", "f", ""];
        expected.sort();
        assert_eq!(
            id_order(&["e8-1", "e10-3", "e1", "e1\0", "e1\0\0", "e1\u{1}", "f", ""]),
            expected
        );
        assert!(due_bound(s, 10) > buffer_key(s, 10, &input(0, "zzz", i64::MAX)));
        assert!(due_bound(s, 9) < buffer_key(s, 10, &input(0, "", i64::MIN)));
        assert!(due_bound(s, i64::MAX) > buffer_key(s, i64::MAX, &input(0, "zzz", i64::MAX)));
        let other = b"\0\0\0\x01t\0\0\0\x02s2";
        assert!(due_bound(s, i64::MAX) < buffer_key(other, i64::MIN, &input(0, "", i64::MIN)));
    }

    #[test]
    fn buffered_events_round_trip() {
        let mut original = input(9, "evt", i64::MAX);
        original.meta.received_at = 400_000_000_000_000;
        original.claimed_at = Some(4_102_444_800_000);
        let decoded = decode(&encode(&original)).unwrap();
        assert_eq!(decoded.claimed_at, original.claimed_at);
        assert_eq!(
            (decoded.partition, decoded.offset, decoded.body.clone()),
            (2, 9, original.body.clone())
        );
        assert_eq!(decoded.meta, original.meta);
    }
}
