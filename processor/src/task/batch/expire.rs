//! The end of a batch: what expired by stream time leaves the store — dedupe entries (and
//! their events' usage entries) by each source's clock, tombstones and usage entries of
//! unknown events by each tenant's ([`crate::ttl`]).

use schemas::time::Millis;

use crate::admission;
use crate::dedupe;
use crate::error::ProcessorError;
use crate::output;
use crate::reorder;
use crate::store::Cf;
use crate::ttl::{self, Kind};

use super::Batch;

impl Batch<'_> {
    /// Removes the source's dedupe entries that expired by its stream time `now` (and the
    /// usage entries of their events: after the window a report for the event counts as one
    /// for an unknown event).
    pub(super) fn expire(&mut self, source: &[u8], now: Millis) -> Result<(), ProcessorError> {
        let from = reorder::at(source, Millis::MIN);
        for (expiry_key, _) in
            self.txn
                .range(Cf::Expiry, &from, &reorder::due_bound(source, now))?
        {
            let dedupe_key = expiry_key[source.len() + 8..].to_vec();
            // The entry may have been renewed (a delivery after it expired): keep the new one.
            if self
                .txn
                .get(Cf::Dedupe, &dedupe_key)?
                .is_some_and(|v| dedupe::expires_at(&v) <= now)
            {
                if self.caps.is_some() {
                    if let Some((tenant, source, event_id)) = dedupe::parts(&dedupe_key) {
                        let entry = admission::usage_key(tenant, event_id, source);
                        self.txn.delete(Cf::Caps, entry);
                        let early = admission::usage_prefix(tenant, event_id);
                        self.txn.delete(Cf::Caps, early);
                    }
                }
                self.txn.delete(Cf::Dedupe, dedupe_key);
                self.stats.expired += 1;
            }
            self.txn.delete(Cf::Expiry, expiry_key);
        }
        Ok(())
    }

    /// Removes the tenant's tombstones, orphan usage entries and idle entity breaker tracks
    /// due at its stream time `now`.
    /// An expired tombstone also goes to `state` as a Kafka tombstone for its key, so the
    /// compacted topic forgets the entity too.
    /// Runs at the record that moves the tenant's stream time, so what expires, and where its
    /// `state` record falls among the outputs, depends only on the records, not on batches.
    pub(super) fn expire_ttl(&mut self, tenant: &str, now: Millis) -> Result<(), ProcessorError> {
        if self.next_ttl(tenant)?.is_none_or(|next| next > now) {
            return Ok(());
        }
        self.ttl_next.remove(tenant);
        let (from, to) = ttl::due(tenant, now);
        for (key, value) in self.txn.range(Cf::Ttl, &from, &to)? {
            self.txn.delete(Cf::Ttl, key.clone());
            let Some(entry) = ttl::parse(tenant, &key) else {
                continue;
            };
            match entry.kind {
                Kind::Tombstone => self.expire_tombstone(&entry, &value)?,
                Kind::Breaker => {
                    admission::stored::expire_entity(&mut self.txn, tenant, entry.target, now)?;
                }
                Kind::Usage => {
                    if self.txn.get(Cf::Caps, entry.target)?.is_some() {
                        self.txn.delete(Cf::Caps, entry.target.to_vec());
                        self.stats.usage_expired += 1;
                    }
                }
            }
        }
        Ok(())
    }

    fn next_ttl(&mut self, tenant: &str) -> Result<Option<Millis>, ProcessorError> {
        if let Some(next) = self.ttl_next.get(tenant) {
            return Ok(*next);
        }
        let (from, to) = ttl::due(tenant, Millis::MAX);
        let first = self.txn.range_first(Cf::Ttl, &from, &to, 1)?;
        let next = first
            .first()
            .and_then(|(key, _)| ttl::parse(tenant, key))
            .map(|entry| entry.expires_at);
        self.ttl_next.insert(tenant.to_owned(), next);
        Ok(next)
    }

    /// Indexes `target` to expire at the tenant's stream time `expires_at`.
    pub(super) fn schedule_ttl(
        &mut self,
        tenant: &str,
        expires_at: Millis,
        kind: Kind,
        target: &[u8],
        value: Vec<u8>,
    ) {
        self.txn
            .put(Cf::Ttl, ttl::key(tenant, expires_at, kind, target), value);
        if let Some(next) = self.ttl_next.get_mut(tenant) {
            *next = Some(next.map_or(expires_at, |n| n.min(expires_at)));
        }
    }

    /// Forgets a deleted entity if it is still the delete that was indexed (`deleted_at`, the
    /// index value); the `state` null record carries the expiry time, so a replay writes the
    /// same record whatever its batches.
    fn expire_tombstone(
        &mut self,
        entry: &ttl::Entry,
        deleted_at: &[u8],
    ) -> Result<(), ProcessorError> {
        let Ok(entity_key) = std::str::from_utf8(entry.target) else {
            return Ok(());
        };
        let deleted_at = deleted_at
            .first_chunk::<8>()
            .map(|b| i64::from_be_bytes(*b));
        let current = self.entity(entity_key)?;
        if current.is_some_and(|s| s.deleted && Some(s.updated_at) == deleted_at) {
            self.set_entity(entity_key.to_owned(), None);
            self.out
                .push(output::state_expired(entry.target, entry.expires_at));
            self.stats.tombstones_expired += 1;
        }
        Ok(())
    }
}
