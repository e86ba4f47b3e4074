//! What expires by a tenant's stream time (the `ttl` column family): an index of entries to
//! delete once the tenant's stream time reaches their expiry, so a store holding them stays
//! bounded without ever scanning it.
//!
//! Key: the tenant (length-prefixed), the expiry time (order-preserving), the kind, then the
//! target's key; value: what the target must still hold to be deleted (a tombstone's time),
//! since the target may have changed after it was indexed (an entity re-created, or deleted
//! again later). Kinds:
//!
//! - [`Kind::Tombstone`]: a deleted entity (`entity` store), `processor.tombstone_retention_secs`
//!   after its delete's event time;
//! - [`Kind::Usage`]: the usage entry a report left for an event not (yet) seen, the dedupe
//!   window after the report was applied — the event's own entry would have expired by then;
//! - [`Kind::Breaker`]: an entity breaker's track (`caps` store), once it could be idle: a
//!   minute after its last arrival, or when its cooldown ends; found active, it is indexed again.
//!
//! Only the tenant's own stream time expires its entries: one tenant's clock far in the future
//! cannot expire another tenant's tombstones.

use schemas::time::Millis;

use crate::reorder;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tombstone,
    Usage,
    Breaker,
}

impl Kind {
    fn tag(self) -> u8 {
        match self {
            Kind::Tombstone => b'd',
            Kind::Usage => b'u',
            Kind::Breaker => b'b',
        }
    }

    fn of(tag: u8) -> Option<Kind> {
        match tag {
            b'd' => Some(Kind::Tombstone),
            b'u' => Some(Kind::Usage),
            b'b' => Some(Kind::Breaker),
            _ => None,
        }
    }
}

pub fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut key = (tenant.len() as u32).to_be_bytes().to_vec();
    key.extend_from_slice(tenant.as_bytes());
    key
}

pub fn key(tenant: &str, expires_at: Millis, kind: Kind, target: &[u8]) -> Vec<u8> {
    let mut key = reorder::at(&tenant_prefix(tenant), expires_at);
    key.push(kind.tag());
    key.extend_from_slice(target);
    key
}

/// An index entry of one tenant, read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'k> {
    pub expires_at: Millis,
    pub kind: Kind,
    pub target: &'k [u8],
}

/// The entry an index key of `tenant` names.
pub fn parse<'k>(tenant: &str, key: &'k [u8]) -> Option<Entry<'k>> {
    let rest = key.get(tenant_prefix(tenant).len()..)?;
    let (time, rest) = rest.split_first_chunk::<8>()?;
    let (tag, target) = rest.split_first()?;
    Some(Entry {
        expires_at: (u64::from_be_bytes(*time) ^ (1 << 63)) as Millis,
        kind: Kind::of(*tag)?,
        target,
    })
}

/// The tenant's entries due at stream time `now` are in `[from, to)`.
pub fn due(tenant: &str, now: Millis) -> (Vec<u8>, Vec<u8>) {
    let prefix = tenant_prefix(tenant);
    (
        reorder::at(&prefix, Millis::MIN),
        reorder::due_bound(&prefix, now),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_tenant_then_time_and_parse_back() {
        let early = key("a", -5, Kind::Usage, b"zz");
        let late = key("a", 7, Kind::Tombstone, b"aa");
        assert!(early < late);
        let entry = Entry {
            expires_at: 7,
            kind: Kind::Tombstone,
            target: b"aa",
        };
        assert_eq!(parse("a", &late), Some(entry));
        assert_eq!(parse("a", &early).map(|e| e.expires_at), Some(-5));
        let (from, to) = due("a", 6);
        assert!(from <= early && early < to && late >= to);
        let (from, to) = due("a", Millis::MAX);
        assert!(from <= late && late < to);
        // Another tenant's entries, even one whose name extends this one's, are out of range.
        let other = key("ab", -5, Kind::Usage, b"zz");
        assert!(!(from <= other && other < to));
    }
}
