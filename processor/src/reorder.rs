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

use serde::{Deserialize, Serialize};

use schemas::raw::{header, RawMeta};
use schemas::time::Millis;
use schemas::trace::TraceParent;

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

/// The first byte of a buffer value in the binary layout. Values written before it start
/// with their partition (big-endian, never negative), so never with this byte.
const BINARY: u8 = 0xff;
/// The binary layout with the event's trace context ([`TRACE_BYTES`] after the fields).
const BINARY_TRACED: u8 = 0xfe;
/// Trace id, span id, sampled flag.
const TRACE_BYTES: usize = 16 + 8 + 1;

/// A buffered event's fields: borrowed to write, owned when read back.
#[derive(Serialize, Deserialize)]
struct Held<S> {
    partition: i32,
    offset: i64,
    tenant: S,
    source: S,
    scheme: S,
    event_id: S,
    event_type: S,
    entity: S,
    occurred_at: Millis,
    received_at: Millis,
    content_type: S,
    key_id: S,
    event_id_derived: bool,
    redrive_id: Option<S>,
    claimed_at: Option<Millis>,
}

/// Buffer value: the event as decoded from `raw` (position, metadata, body): [`BINARY`], the
/// fields in postcard, the body; or, with a trace context, [`BINARY_TRACED`], the fields, the
/// context, the body.
pub fn encode(input: &RawInput) -> Vec<u8> {
    let meta = &input.meta;
    let held = Held::<&str> {
        partition: input.partition,
        offset: input.offset,
        tenant: &meta.tenant,
        source: &meta.source,
        scheme: &meta.scheme,
        event_id: &meta.event_id,
        event_type: &meta.event_type,
        entity: &meta.entity,
        occurred_at: meta.occurred_at,
        received_at: meta.received_at,
        content_type: &meta.content_type,
        key_id: &meta.key_id,
        event_id_derived: meta.event_id_derived,
        redrive_id: meta.redrive_id.as_deref(),
        claimed_at: input.claimed_at,
    };
    let mut value =
        Vec::with_capacity(64 + meta.tenant.len() + meta.event_id.len() * 2 + input.body.len());
    value.push(if input.trace.is_some() {
        BINARY_TRACED
    } else {
        BINARY
    });
    let mut value = postcard::to_extend(&held, value).expect("buffered events serialize");
    if let Some(trace) = &input.trace {
        value.extend_from_slice(&trace.trace_id);
        value.extend_from_slice(&trace.span_id);
        value.push(u8::from(trace.sampled));
    }
    value.extend_from_slice(&input.body);
    value
}

pub fn decode(value: &[u8]) -> Option<RawInput> {
    match value.split_first()? {
        (&BINARY, rest) => decode_binary(rest, false),
        (&BINARY_TRACED, rest) => decode_binary(rest, true),
        _ => decode_headers(value),
    }
}

fn decode_binary(value: &[u8], traced: bool) -> Option<RawInput> {
    let (held, rest) = postcard::take_from_bytes::<Held<String>>(value).ok()?;
    let (trace, body) = if traced {
        let (trace, body) = rest.split_at_checked(TRACE_BYTES)?;
        let trace = TraceParent {
            trace_id: trace[..16].try_into().ok()?,
            span_id: trace[16..24].try_into().ok()?,
            sampled: trace[24] == 1,
        };
        (Some(trace), body)
    } else {
        (None, rest)
    };
    Some(RawInput {
        partition: held.partition,
        offset: held.offset,
        meta: RawMeta {
            tenant: held.tenant,
            source: held.source,
            scheme: held.scheme,
            event_id: held.event_id,
            event_type: held.event_type,
            entity: held.entity,
            occurred_at: held.occurred_at,
            received_at: held.received_at,
            content_type: held.content_type,
            key_id: held.key_id,
            event_id_derived: held.event_id_derived,
            redrive_id: held.redrive_id,
        },
        body: body.to_vec(),
        claimed_at: held.claimed_at,
        trace,
    })
}

/// The layout written before the binary one: position, the headers as JSON, the body.
fn decode_headers(value: &[u8]) -> Option<RawInput> {
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
        trace: None,
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
            trace: None,
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

    /// The layout before [`BINARY`], as stores and changelogs of earlier versions hold it.
    fn encode_headers(input: &RawInput) -> Vec<u8> {
        let mut headers: Vec<(&str, String)> = input.meta.to_headers();
        if let Some(claimed) = input.claimed_at {
            headers.push((CLAIMED_AT, claimed.to_string()));
        }
        headers.push((OCCURRED_MS, input.meta.occurred_at.to_string()));
        headers.push((RECEIVED_MS, input.meta.received_at.to_string()));
        let headers = serde_json::to_vec(&headers).unwrap();
        let mut value = Vec::new();
        value.extend_from_slice(&input.partition.to_be_bytes());
        value.extend_from_slice(&input.offset.to_be_bytes());
        value.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        value.extend_from_slice(&headers);
        value.extend_from_slice(&input.body);
        value
    }

    #[test]
    fn events_buffered_by_earlier_versions_still_decode() {
        let mut original = input(9, "evt", -5);
        original.claimed_at = Some(4_102_444_800_000);
        original.meta.redrive_id = Some("r1".into());
        let old = encode_headers(&original);
        assert_ne!(old[0], BINARY);
        let decoded = decode(&old).unwrap();
        assert_eq!(decoded.meta, original.meta);
        assert_eq!(decoded.claimed_at, original.claimed_at);
        assert_eq!(decoded.body, original.body);
        let new = encode(&original);
        assert_eq!(new[0], BINARY);
        assert_eq!(decode(&new).unwrap().meta, original.meta);
        // Cut short or garbled: unreadable, never a panic.
        for cut in 0..new.len() - original.body.len() {
            let _ = decode(&new[..cut]);
        }
        assert!(decode(&[BINARY, 0xff, 0xff]).is_none());
    }

    #[test]
    fn the_trace_context_is_kept_with_the_buffered_event() {
        let mut original = input(9, "evt", 5);
        original.trace = Some(TraceParent::root());
        let value = encode(&original);
        assert_eq!(value[0], BINARY_TRACED);
        let decoded = decode(&value).unwrap();
        assert_eq!(decoded.trace, original.trace);
        assert_eq!((decoded.meta, decoded.body), (original.meta, original.body));
        for cut in 0..value.len() - 7 {
            let _ = decode(&value[..cut]);
        }
        let untraced = input(9, "evt", 5);
        assert_eq!(decode(&encode(&untraced)).unwrap().trace, None);
    }
}
