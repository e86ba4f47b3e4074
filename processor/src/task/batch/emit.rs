//! The end of a record's path: release from the buffer, reconcile, emit; wall-clock
//! flushes; and the detour to `dlq` for inputs whose records can never be produced.

use schemas::key::EntityKey;
use schemas::time::Millis;

use crate::clock;
use crate::error::ProcessorError;
use crate::input::{RawInput, Undecodable};
use crate::output;
use crate::reconcile::{reconcile, Change, EntityState, Outcome};
use crate::reorder;
use crate::store::{Cf, Txn, FLUSH_PENDING};
use crate::ttl;

use super::Batch;

/// What a wall-clock flush releases: everything, or the events of some sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flush {
    All,
    Sources(Vec<Vec<u8>>),
}

impl Flush {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Flush::All => vec![1],
            Flush::Sources(sources) => serde_json::to_vec(sources).expect("sources serialize"),
        }
    }

    fn decode(value: &[u8]) -> Flush {
        serde_json::from_slice(value).map_or(Flush::All, Flush::Sources)
    }
}

impl Batch<'_> {
    /// A wall-clock flush decided (durably) but not carried out before a crash, if any.
    pub fn flush_pending(&self) -> Result<Option<Flush>, ProcessorError> {
        Ok(self
            .txn
            .get(Cf::Meta, FLUSH_PENDING)?
            .map(|value| Flush::decode(&value)))
    }

    /// Carries out a (durably decided) flush: releases at most `limit` of the events the
    /// flush names, in order; the flush stays
    /// pending (durably) until a step finds nothing left, so a large flush is split into
    /// bounded steps that a crash cannot reorder. Returns whether it is done.
    pub fn flush(&mut self, flush: &Flush, limit: usize) -> Result<bool, ProcessorError> {
        let ranges: Vec<(Vec<u8>, Vec<u8>)> = match flush {
            // Every buffer key starts with a source key: the range after the empty prefix.
            Flush::All => vec![(Vec::new(), reorder::end_of(&[]))],
            Flush::Sources(sources) => sources
                .iter()
                .map(|s| (reorder::at(s, Millis::MIN), reorder::end_of(s)))
                .collect(),
        };
        let mut left = limit;
        for (from, to) in &ranges {
            if left == 0 {
                break;
            }
            let held = self.txn.range_first(Cf::Buffer, from, to, left)?;
            left -= held.len();
            self.release(held)?;
        }
        let mut done = left > 0;
        if !done {
            done = true;
            for (from, to) in &ranges {
                if !self.txn.range_first(Cf::Buffer, from, to, 1)?.is_empty() {
                    done = false;
                    break;
                }
            }
        }
        if done {
            self.txn.delete(Cf::Meta, FLUSH_PENDING.to_vec());
        }
        Ok(done)
    }

    pub fn dead_letter(&mut self, bad: Undecodable) {
        self.stats.dead_letters += 1;
        self.stats.tenant("").dead_letters += 1;
        self.out.push(output::dead_letter(bad));
    }

    /// Why an input cannot be emitted, if it cannot: its records would be too large for the
    /// producer (decided from the input alone, so a replay decides the same), or the broker
    /// refused one of them for good.
    pub(super) fn refusal(&self, input: &RawInput) -> Option<String> {
        if let Some(reason) = self.refused.get(&(input.partition, input.offset)) {
            return Some(reason.clone());
        }
        let size = output::largest_output_bytes(input);
        let limit = self.settings.max_record_bytes;
        (size > limit).then(|| {
            format!("too_large: the records derived from this event could take {size} bytes, over the {limit} bytes the processor may produce (kafka.producer message.max.bytes)")
        })
    }

    /// Sends `input` to `dlq` if the broker refused one of its records; whether it did.
    pub(super) fn divert_if_refused(&mut self, input: &RawInput) -> bool {
        let Some(reason) = self.refused.get(&(input.partition, input.offset)).cloned() else {
            return false;
        };
        self.divert(input, &reason);
        true
    }

    pub(super) fn divert(&mut self, input: &RawInput, reason: &str) {
        self.stats.dead_letters += 1;
        self.stats.tenant(&input.meta.tenant).dead_letters += 1;
        metrics::counter!("hookstream_processor_diverted_total", "tenant" => input.meta.tenant.clone())
            .increment(1);
        self.out.push(output::diverted(input, reason));
    }

    /// Releases every held-back event of every source, in order (the end of a rebuild's
    /// range, or a flush decided before a crash, redone before anything else).
    pub fn flush_all(&mut self) -> Result<(), ProcessorError> {
        self.flush(&Flush::All, usize::MAX).map(|_| ())
    }

    /// Reconciles buffered events into their entities, in the given (key) order, emitting
    /// `events` and `state`.
    pub(super) fn release(
        &mut self,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), ProcessorError> {
        for (key, value) in entries {
            self.txn.delete(Cf::Buffer, key.clone());
            self.buffered = self.buffered.saturating_sub(1);
            let input = reorder::decode(&value).ok_or_else(|| ProcessorError::Corrupt {
                path: String::new(),
                key: format!("buffer/{}", String::from_utf8_lossy(&key)),
                reason: "undecodable buffered event".into(),
            })?;
            let tracked = self.clock(&clock::source_key_of(&input.meta))?;
            tracked.clock.buffered = tracked.clock.buffered.saturating_sub(1);
            tracked.changed = true;
            self.apply(input)?;
        }
        Ok(())
    }

    pub(super) fn apply(&mut self, input: RawInput) -> Result<(), ProcessorError> {
        if self.divert_if_refused(&input) {
            return Ok(());
        }
        let codecs = &self.settings.codecs;
        let meta = &input.meta;
        let entity_key = EntityKey::new(&meta.tenant, &meta.entity).encode();
        let current = self.entity(&entity_key)?;
        let change = Change {
            event_id: &meta.event_id,
            event_type: &meta.event_type,
            occurred_at: meta.occurred_at,
            is_delete: self
                .catalog
                .is_delete(&meta.tenant, &meta.source, &meta.event_type),
            body: &input.body,
        };
        self.stats.released += 1;
        match reconcile(current.as_ref(), &change) {
            Outcome::Late => {
                self.stats.late += 1;
                self.stats.tenant(&meta.tenant).late += 1;
                self.out.push(output::event(&input, true, codecs));
            }
            Outcome::Applied(state) => {
                self.out.push(output::event(&input, false, codecs));
                self.out.push(output::state(&input, &state, codecs));
                if let (true, Some(retention)) =
                    (state.deleted, self.settings.tombstone_retention_ms)
                {
                    self.schedule_ttl(
                        &meta.tenant,
                        state.updated_at.saturating_add(retention),
                        ttl::Kind::Tombstone,
                        entity_key.as_bytes(),
                        state.updated_at.to_be_bytes().to_vec(),
                    );
                }
                self.set_entity(entity_key, Some(state));
            }
        }
        Ok(())
    }

    /// An entity's reconciled state as this batch sees it, decoded once per batch.
    pub(super) fn entity(&mut self, key: &str) -> Result<Option<EntityState>, ProcessorError> {
        if let Some(state) = self.entities.get(key) {
            return Ok(state.clone());
        }
        let state = stored_entity(&self.txn, key)?;
        self.entities.insert(key.to_owned(), state.clone());
        Ok(state)
    }

    /// Writes (or deletes, `None`) an entity's state.
    pub(super) fn set_entity(&mut self, key: String, state: Option<EntityState>) {
        match &state {
            Some(state) => self.txn.put(
                Cf::Entity,
                key.clone().into_bytes(),
                serde_json::to_vec(state).expect("state serializes"),
            ),
            None => self.txn.delete(Cf::Entity, key.clone().into_bytes()),
        }
        self.entities.insert(key, state);
    }
}

fn stored_entity(txn: &Txn<'_>, key: &str) -> Result<Option<EntityState>, ProcessorError> {
    txn.get(Cf::Entity, key.as_bytes())?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| ProcessorError::Corrupt {
                path: String::new(),
                key: key.to_owned(),
                reason: e.to_string(),
            })
        })
        .transpose()
}
