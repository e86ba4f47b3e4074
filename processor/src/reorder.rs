//! Reorder: events wait in the `buffer` store until stream time (the greatest event time the
//! partition has seen) passes their event time + the source's grace, then are released in
//! (release time, event time, event id) order — for the events of one source, event-time order.
//! Keys sort that way byte-wise, so releasing is a range scan. An event older than what its
//! entity already released is not held back: it is *late* (see [`is_late`]).
//!
//! The buffer is bounded (`processor.max_buffered`): past the bound the oldest events are
//! released early, never dropped. A partition that stays quiet for `processor.idle_flush_ms`
//! of wall-clock time releases everything.

use schemas::raw::RawMeta;
use schemas::time::Millis;

use crate::input::RawInput;
use crate::reconcile::EntityState;

/// Encodes a time so that byte order is numeric order (sign bit flipped, big-endian).
pub fn time_key(ms: Millis) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// Buffer key: release time, event time, event id, then the `raw` offset (unique).
pub fn buffer_key(release_at: Millis, input: &RawInput) -> Vec<u8> {
    let id = input.meta.event_id.as_bytes();
    let mut key = Vec::with_capacity(28 + id.len());
    key.extend_from_slice(&time_key(release_at));
    key.extend_from_slice(&time_key(input.meta.occurred_at));
    key.extend_from_slice(&(id.len() as u32).to_be_bytes());
    key.extend_from_slice(id);
    key.extend_from_slice(&input.offset.to_be_bytes());
    key
}

/// Keys of events due at `stream_time` are below this bound.
pub fn due_bound(stream_time: Millis) -> Vec<u8> {
    time_key(stream_time.saturating_add(1)).to_vec()
}

/// Whether `meta` is older than the last event its entity released.
pub fn is_late(state: Option<&EntityState>, meta: &RawMeta) -> bool {
    state.is_some_and(|s| {
        (meta.occurred_at, meta.event_id.as_str()) < (s.updated_at, s.last_event_id.as_str())
    })
}

/// Buffer value: the event as decoded from `raw` (offset, headers, body).
pub fn encode(input: &RawInput) -> Vec<u8> {
    let headers: Vec<(&str, String)> = input.meta.to_headers();
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
    let meta = RawMeta::from_headers(
        headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_bytes()))),
    )
    .ok()?;
    Some(RawInput {
        partition,
        offset,
        meta,
        body: value.get(16 + len..)?.to_vec(),
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
        }
    }

    #[test]
    fn keys_sort_by_release_then_event_time_then_id_including_negative_times() {
        let mut keys = [
            buffer_key(10, &input(0, "b", 5)),
            buffer_key(-3, &input(1, "z", -8)),
            buffer_key(10, &input(2, "a", 5)),
            buffer_key(10, &input(3, "a", 4)),
        ];
        keys.sort();
        let offsets: Vec<i64> = keys
            .iter()
            .map(|k| i64::from_be_bytes(k[k.len() - 8..].try_into().unwrap()))
            .collect();
        assert_eq!(offsets, [1, 3, 2, 0]);
        assert!(due_bound(10) > buffer_key(10, &input(0, "zzz", i64::MAX)));
        assert!(due_bound(9) < buffer_key(10, &input(0, "", i64::MIN)));
    }

    #[test]
    fn buffered_events_round_trip() {
        let original = input(9, "evt", 1_700_000_000_000);
        let decoded = decode(&encode(&original)).unwrap();
        assert_eq!(
            (decoded.partition, decoded.offset, decoded.body.clone()),
            (2, 9, original.body.clone())
        );
        assert_eq!(decoded.meta, original.meta);
    }
}
