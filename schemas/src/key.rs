//! The partition-key rule. Every record about an entity is keyed `tenant/entity`, so all of
//! an entity's events land on one partition of `raw` and are handled, in order, by one
//! partition task; the derived topics reuse the key, so they are co-partitioned with `raw`.
//! Tenant ids cannot contain `/` (see config validation), so the key splits at its first `/`;
//! entity ids may contain anything.
//!
//! All producers use librdkafka's `murmur2_random` partitioner, the Java client's default, so
//! Kafka Streams or Java consumers joining these topics see the same partitioning.

use crate::SchemasError;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey {
    pub tenant: String,
    pub entity: String,
}

impl EntityKey {
    pub fn new(tenant: impl Into<String>, entity: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            entity: entity.into(),
        }
    }

    pub fn encode(&self) -> String {
        format!("{}/{}", self.tenant, self.entity)
    }

    pub fn decode(key: &[u8]) -> Result<Self, SchemasError> {
        let text = std::str::from_utf8(key)
            .map_err(|_| SchemasError::BadKey(String::from_utf8_lossy(key).into_owned()))?;
        match text.split_once('/') {
            Some((tenant, entity)) if !tenant.is_empty() => Ok(Self::new(tenant, entity)),
            _ => Err(SchemasError::BadKey(text.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_and_entity_may_contain_slashes() {
        let key = EntityKey::new("acme", "orders/42");
        assert_eq!(key.encode(), "acme/orders/42");
        assert_eq!(EntityKey::decode(b"acme/orders/42").unwrap(), key);
        assert!(EntityKey::decode(b"no-slash").is_err());
        assert!(EntityKey::decode(b"/entity").is_err());
    }
}
