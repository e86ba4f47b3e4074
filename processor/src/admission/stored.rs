//! How the caps keep their state in the `caps` column family: one key per part that changes
//! on its own, so a batch writes (and the changelog carries) only what it changed, not the
//! tenant's whole state.
//!
//! * `t` + tenant → the tenant's [`TenantState`] on this task (ledger, cap status, the
//!   tenant breaker's track, held count): small, written once per batch that touches it;
//! * `o` + tenant (length-prefixed) + partition → another partition's last [`BudgetShare`],
//!   written when an absorb step takes in a newer one;
//! * `e` + tenant (length-prefixed) + entity → an entity breaker's [`EntityTrack`], written
//!   when that entity has an arrival, and forgotten once idle through the `ttl` index
//!   ([`crate::ttl::Kind::Breaker`]) by the tenant's stream time;
//! * `u` + … → an event's usage entry ([`super::usage_key`]).
//!
//! Values are postcard after a format byte (meters in their dense binary form), a few hundred
//! bytes for a tenant. Stores written before this layout hold one JSON value per tenant, with
//! the shares and entity tracks inside; loading such a tenant moves them to their own keys in
//! the same batch.

use schemas::time::Millis;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::caps::alerts::CapStatus;
use crate::caps::breaker::{BreakerState, EntityTrack, TenantTrack};
use crate::caps::{BudgetShare, Ledger, TenantState};
use crate::error::ProcessorError;
use crate::reorder;
use crate::store::{Cf, Txn};
use crate::ttl;

fn tenant_key(tenant: &str) -> Vec<u8> {
    let mut key = b"t".to_vec();
    key.extend_from_slice(tenant.as_bytes());
    key
}

fn prefixed(tag: u8, tenant: &str) -> Vec<u8> {
    let mut key = vec![tag];
    key.extend_from_slice(&(tenant.len() as u32).to_be_bytes());
    key.extend_from_slice(tenant.as_bytes());
    key
}

fn share_key(tenant: &str, partition: i32) -> Vec<u8> {
    let mut key = prefixed(b'o', tenant);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

pub fn entity_key(tenant: &str, entity: &str) -> Vec<u8> {
    let mut key = prefixed(b'e', tenant);
    key.extend_from_slice(entity.as_bytes());
    key
}

fn corrupt(key: &[u8], reason: impl ToString) -> ProcessorError {
    ProcessorError::Corrupt {
        path: String::new(),
        key: format!("caps/{}", String::from_utf8_lossy(key)),
        reason: reason.to_string(),
    }
}

/// The first byte of a value in this layout: postcard follows. (Values of the old layout
/// are JSON objects: `{`.)
const BINARY: u8 = 1;

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![BINARY]).expect("caps state serializes")
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, ProcessorError> {
    match bytes.split_first() {
        Some((&BINARY, rest)) => postcard::from_bytes(rest).map_err(|e| corrupt(key, e)),
        _ => serde_json::from_slice(bytes).map_err(|e| corrupt(key, e)),
    }
}

/// The tenant's own state as stored: what changes with its own decisions.
#[derive(Serialize, Deserialize)]
struct Own {
    ledger: Ledger,
    status: CapStatus,
    breaker: TenantTrack,
    held: u64,
}

/// The tenant's state with the other partitions' shares; `true` when it came in the old
/// single-value layout and was just moved to its own keys (the caller must save it).
pub fn load(txn: &mut Txn<'_>, tenant: &str) -> Result<(TenantState, bool), ProcessorError> {
    let key = tenant_key(tenant);
    let mut state = match txn.get(Cf::Caps, &key)? {
        None => TenantState::default(),
        Some(bytes) if bytes.first() == Some(&BINARY) => {
            let own: Own = decode(&key, &bytes)?;
            TenantState {
                ledger: own.ledger,
                status: own.status,
                breaker: BreakerState {
                    tenant: own.breaker,
                    entities: Default::default(),
                },
                others: Default::default(),
                held: own.held,
            }
        }
        Some(bytes) => decode(&key, &bytes)?,
    };
    let legacy = !state.others.by_partition.is_empty() || !state.breaker.entities.is_empty();
    if legacy {
        for share in state.others.by_partition.values() {
            save_share(txn, share);
        }
        for (entity, track) in std::mem::take(&mut state.breaker.entities) {
            save_entity(txn, tenant, &entity, &track, true);
        }
    } else {
        let from = prefixed(b'o', tenant);
        for (key, value) in txn.range(Cf::Caps, &from, &reorder::end_of(&from))? {
            let share: BudgetShare = decode(&key, &value)?;
            state.others.by_partition.insert(share.partition, share);
        }
    }
    Ok((state, legacy))
}

/// Writes the tenant's own state (its shares and entity tracks have keys of their own),
/// unless it is what the store holds (an absorb step that only took in shares).
pub fn save(txn: &mut Txn<'_>, tenant: &str, state: &TenantState) -> Result<(), ProcessorError> {
    let key = tenant_key(tenant);
    let value = encode(&Own {
        ledger: state.ledger.clone(),
        status: state.status.clone(),
        breaker: state.breaker.tenant.clone(),
        held: state.held,
    });
    if txn.get(Cf::Caps, &key)?.as_ref() != Some(&value) {
        txn.put(Cf::Caps, key, value);
    }
    Ok(())
}

pub fn save_share(txn: &mut Txn<'_>, share: &BudgetShare) {
    let value = encode(share);
    txn.put(Cf::Caps, share_key(&share.tenant, share.partition), value);
}

pub fn load_entity(
    txn: &Txn<'_>,
    tenant: &str,
    entity: &str,
) -> Result<Option<EntityTrack>, ProcessorError> {
    let key = entity_key(tenant, entity);
    txn.get(Cf::Caps, &key)?
        .map(|bytes| decode(&key, &bytes))
        .transpose()
}

/// Writes an entity's track; a new one is also indexed to be forgotten once idle (an index
/// entry that comes due while the entity is still active is moved on, see [`expire_entity`]).
pub fn save_entity(txn: &mut Txn<'_>, tenant: &str, entity: &str, track: &EntityTrack, new: bool) {
    let key = entity_key(tenant, entity);
    if new {
        let due = ttl::key(tenant, track.evictable_at(), ttl::Kind::Breaker, &key);
        txn.put(Cf::Ttl, due, Vec::new());
    }
    let value = encode(track);
    txn.put(Cf::Caps, key, value);
}

/// At the tenant's stream time `now`, forgets the entity track `key` if it is idle and holds
/// nothing back; otherwise indexes it again for when it could be. Returns whether it went.
pub fn expire_entity(
    txn: &mut Txn<'_>,
    tenant: &str,
    key: &[u8],
    now: Millis,
) -> Result<bool, ProcessorError> {
    let Some(bytes) = txn.get(Cf::Caps, key)? else {
        return Ok(false);
    };
    let track: EntityTrack = decode(key, &bytes)?;
    let at = track.evictable_at();
    if at <= now {
        txn.delete(Cf::Caps, key.to_vec());
        return Ok(true);
    }
    txn.put(
        Cf::Ttl,
        ttl::key(tenant, at, ttl::Kind::Breaker, key),
        Vec::new(),
    );
    Ok(false)
}
