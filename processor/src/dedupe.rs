//! Exact dedupe, keyed by (tenant, source, event id): the first delivery of an event passes,
//! every later one within the window is dropped. The window is measured in the source's own
//! stream time ([`crate::clock`]), so a replay drops exactly what the live run dropped and no
//! other tenant's clock can expire an entry. Entries live in RocksDB (`dedupe`, with an
//! `expiry` index ordered by expiry time), so memory stays bounded whatever the key count.
//! The key encoding is length-prefixed so no choice of ids can make two triples collide.
//!
//! A deliberate redrive (`hs-redrive-id`, see `hookstream replay --redrive`) is deduped under
//! (tenant, source, event id, redrive id): it passes once per redrive id, however often the
//! redrive runs, while plain redeliveries of the event are still dropped.

use schemas::raw::RawMeta;
use schemas::time::Millis;

use crate::reorder::time_key;

pub fn key(meta: &RawMeta) -> Vec<u8> {
    let mut key =
        Vec::with_capacity(meta.tenant.len() + meta.source.len() + meta.event_id.len() + 12);
    for part in [&meta.tenant, &meta.source, &meta.event_id] {
        key.extend_from_slice(&(part.len() as u32).to_be_bytes());
        key.extend_from_slice(part.as_bytes());
    }
    if let Some(redrive) = &meta.redrive_id {
        key.extend_from_slice(&(redrive.len() as u32).to_be_bytes());
        key.extend_from_slice(redrive.as_bytes());
    }
    key
}

/// The (tenant, source, event id) a dedupe key names (None for a malformed key).
pub fn parts(key: &[u8]) -> Option<(&str, &str, &str)> {
    let mut parts = Vec::with_capacity(3);
    let mut rest = key;
    for _ in 0..3 {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        parts.push(std::str::from_utf8(rest.get(4..4 + len)?).ok()?);
        rest = &rest[4 + len..];
    }
    Some((parts[0], parts[1], parts[2]))
}

/// The expiry time a `dedupe` value holds (an unreadable value counts as expired).
pub fn expires_at(value: &[u8]) -> Millis {
    value
        .try_into()
        .map(i64::from_be_bytes)
        .unwrap_or(Millis::MIN)
}

/// Index key: the source, then the expiry time, so a source's expired entries are one range
/// scan bounded by that source's own stream time.
pub fn expiry_key(source: &[u8], expires_at: Millis, dedupe_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(source.len() + 8 + dedupe_key.len());
    key.extend_from_slice(source);
    key.extend_from_slice(&time_key(expires_at));
    key.extend_from_slice(dedupe_key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(tenant: &str, source: &str, event_id: &str) -> RawMeta {
        RawMeta {
            tenant: tenant.into(),
            source: source.into(),
            scheme: "hmac".into(),
            event_id: event_id.into(),
            event_type: String::new(),
            entity: "e".into(),
            occurred_at: 0,
            received_at: 0,
            content_type: String::new(),
            key_id: String::new(),
            event_id_derived: false,
            redrive_id: None,
        }
    }

    #[test]
    fn keys_separate_fields_unambiguously() {
        assert_ne!(key(&meta("ab", "c", "d")), key(&meta("a", "bc", "d")));
        assert_eq!(key(&meta("a", "b", "c")), key(&meta("a", "b", "c")));
        assert_ne!(key(&meta("a", "b", "c")), key(&meta("a", "x", "c")));
    }

    #[test]
    fn a_redrive_has_its_own_key_per_redrive_id() {
        let plain = meta("a", "b", "c");
        let redrive = |id: &str| RawMeta {
            redrive_id: Some(id.into()),
            ..meta("a", "b", "c")
        };
        assert_ne!(key(&plain), key(&redrive("r1")));
        assert_ne!(key(&redrive("r1")), key(&redrive("r2")));
        assert_eq!(key(&redrive("r1")), key(&redrive("r1")));
    }

    #[test]
    fn keys_give_back_their_parts() {
        assert_eq!(parts(&key(&meta("t", "s", "e1"))), Some(("t", "s", "e1")));
        assert_eq!(parts(b"\0\0"), None);
    }

    #[test]
    fn expiry_keys_sort_by_time() {
        assert!(expiry_key(b"s", 5, b"zzz") < expiry_key(b"s", 6, b"aaa"));
        assert!(expiry_key(b"s", -1, b"z") < expiry_key(b"s", 0, b"a"));
    }
}
