//! A partition task: owns one partition of `raw` and its [`StateStore`], and turns a batch of
//! that partition's records into output records plus the batch's store [`Op`]s:
//!
//! 1. **dedupe** — a (tenant, source, event id) seen within the window is dropped;
//! 2. **reorder** — the event waits in `buffer` until stream time passes its event time + grace,
//!    unless it is already late for its entity (then it is emitted at once, `late = true`);
//! 3. **release** — due events leave the buffer in order and are **reconciled** into their
//!    entity's state, emitting `events` and `state` records;
//! 4. **expire** — dedupe entries older than the window (in stream time) are removed.
//!
//! `process` is deterministic: the same records on the same store give byte-identical outputs
//! and ops, which is what makes re-processing a batch after a crash safe. The commit protocol
//! around it lives in [`crate::consumer`].

use std::path::Path;
use std::sync::Arc;

use schemas::avro::Codecs;
use schemas::key::EntityKey;
use schemas::raw::header;
use schemas::records::UsageRecord;
use schemas::scope::{InRange, Scope};
use schemas::time::Millis;

use crate::admission;
use crate::caps::{BudgetShare, Caps};
use crate::catalog::SourceCatalog;
use crate::dedupe;
use crate::error::ProcessorError;
use crate::input::{RawInput, Undecodable};
use crate::output::{self, OutRecord};
use crate::reconcile::{reconcile, Change, EntityState, Outcome};
use crate::reorder;
use crate::store::{Cf, Op, StateStore, Txn, BUFFERED, CHECKPOINT, FLUSH_PENDING, STREAM_TIME};

pub type Decoded = Result<RawInput, Box<Undecodable>>;

/// Where a record sits in `raw`: (partition, offset), decodable or not.
pub fn position(record: &Decoded) -> (i32, i64) {
    match record {
        Ok(input) => (input.partition, input.offset),
        Err(bad) => (bad.partition, bad.offset),
    }
}

#[derive(Debug, Clone)]
pub struct TaskSettings {
    pub dedupe_window_ms: Millis,
    pub max_buffered: usize,
    /// Only records in scope are processed (a rebuild); the rest are consumed and ignored.
    /// Reaching the end of the scope's range releases everything held back.
    pub scope: Option<Arc<Scope>>,
    /// Per-tenant caps and breakers (None, or no tenant with any: admission is skipped).
    pub caps: Option<Arc<Caps>>,
    /// How `events` and `state` values are encoded (JSON, or Avro under registered ids).
    pub codecs: Arc<Codecs>,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            dedupe_window_ms: 72 * 3600 * 1000,
            max_buffered: 100_000,
            scope: None,
            caps: None,
            codecs: Arc::new(Codecs::json()),
        }
    }
}

/// The result of processing: outputs were pushed to the caller's vector; these are the store
/// changes to make durable once the outputs are acknowledged.
#[derive(Debug, Default)]
pub struct Pending {
    pub ops: Vec<Op>,
    /// The next `raw` offset, when the batch consumed records.
    pub next_offset: Option<i64>,
    pub stats: BatchStats,
}

/// Counts of one processed batch, for metrics and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub events: usize,
    pub duplicates: usize,
    pub late: usize,
    pub released: usize,
    pub dead_letters: usize,
    pub already_applied: usize,
    pub expired: usize,
    pub out_of_scope: usize,
    pub deferred: usize,
}

pub struct PartitionTask {
    store: StateStore,
    epoch: i64,
    next_offset: Option<i64>,
    buffered: usize,
    settings: TaskSettings,
}

impl PartitionTask {
    pub fn open(dir: &Path, settings: TaskSettings) -> Result<Self, ProcessorError> {
        Self::from_store(StateStore::open(dir)?, settings, 0)
    }

    /// A task over a restored store; `epoch` is the offset of its fence in the changelog.
    pub fn from_store(
        store: StateStore,
        settings: TaskSettings,
        epoch: i64,
    ) -> Result<Self, ProcessorError> {
        let next_offset = store.checkpoint()?;
        let buffered = store.get_i64(BUFFERED)?.unwrap_or(0).max(0) as usize;
        Ok(Self {
            store,
            epoch,
            next_offset,
            buffered,
            settings,
        })
    }

    /// The next offset of `raw` this task has not applied (None: nothing applied yet).
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// This incarnation's epoch: the offset of its fence in the changelog.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Events held back for reordering.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    pub fn process(
        &self,
        records: Vec<Decoded>,
        catalog: &SourceCatalog,
        out: &mut Vec<OutRecord>,
    ) -> Result<Pending, ProcessorError> {
        let mut txn = Txn::new(&self.store);
        let mut stats = BatchStats::default();
        let mut stream_time = txn.get_i64(STREAM_TIME)?.unwrap_or(i64::MIN);
        let mut buffered = self.buffered;
        if txn.get(Cf::Meta, FLUSH_PENDING)?.is_some() {
            // A flush was decided before a crash: redo it first, as it was going to happen.
            buffered = flush_all(
                &mut txn,
                buffered,
                catalog,
                &self.settings.codecs,
                out,
                &mut stats,
            )?;
        }
        let mut next_offset = None;
        let caps = self.caps_for(&records);
        let mut tenants = admission::Tenants::default();
        // No buffered event releases before `floor`: later scans start there, not at the
        // beginning (events released earlier in this batch are still in the store's view).
        let mut floor = Millis::MIN;
        for record in records {
            let (_, offset) = position(&record);
            if self.next_offset.is_some_and(|next| offset < next) {
                stats.already_applied += 1;
                continue;
            }
            let before = next_offset;
            next_offset = Some(offset + 1);
            if let Some(scope) = &self.settings.scope {
                match scoped(scope, &record) {
                    Scoped::Process => {}
                    Scoped::Ignore => {
                        stats.out_of_scope += 1;
                        continue;
                    }
                    Scoped::Ended => {
                        stats.out_of_scope += 1;
                        // The checkpoint stops at the range's end, so a group that goes on
                        // from the rebuild's offsets starts with the first record after it.
                        next_offset = scope.end_of(position(&record).0).or(before);
                        buffered = flush_all(
                            &mut txn,
                            buffered,
                            catalog,
                            &self.settings.codecs,
                            out,
                            &mut stats,
                        )?;
                        continue;
                    }
                }
            }
            let input = match record {
                Ok(input) => input,
                Err(bad) => {
                    stats.dead_letters += 1;
                    out.push(output::dead_letter(*bad));
                    continue;
                }
            };
            let dedupe_key = dedupe::key(&input.meta);
            if txn
                .get(Cf::Dedupe, &dedupe_key)?
                .is_some_and(|v| dedupe::expires_at(&v) > stream_time)
            {
                stats.duplicates += 1;
                continue;
            }
            let advanced = input.meta.occurred_at > stream_time;
            stream_time = stream_time.max(input.meta.occurred_at);
            let expires_at = stream_time.saturating_add(self.settings.dedupe_window_ms);
            txn.put(
                Cf::Expiry,
                dedupe::expiry_key(expires_at, &dedupe_key),
                Vec::new(),
            );
            txn.put(
                Cf::Dedupe,
                dedupe_key.clone(),
                expires_at.to_be_bytes().to_vec(),
            );
            stats.events += 1;
            let arrived = input.offset;
            let admitted = match &caps {
                Some(caps) => {
                    let codecs = &self.settings.codecs;
                    let admitted = admission::admit(
                        caps,
                        codecs,
                        &mut txn,
                        &mut tenants,
                        input,
                        stream_time,
                        out,
                    )?;
                    stats.deferred += admitted.deferred;
                    admitted.inputs
                }
                None => vec![input],
            };
            for input in admitted {
                let advanced = advanced && input.offset == arrived;
                let queue = Queue {
                    catalog,
                    stream_time,
                    advanced,
                };
                buffered = self.enqueue(
                    &mut txn, input, &queue, &mut floor, buffered, out, &mut stats,
                )?;
            }
        }
        if let Some(caps) = &caps {
            tenants.finish(caps, &mut txn, out);
        }
        for (expiry_key, _) in txn.range(Cf::Expiry, &[0; 8], &reorder::due_bound(stream_time))? {
            let dedupe_key = expiry_key[8..].to_vec();
            // The entry may have been renewed (a delivery after it expired): keep the new one.
            if txn
                .get(Cf::Dedupe, &dedupe_key)?
                .is_some_and(|v| dedupe::expires_at(&v) <= stream_time)
            {
                // The event's usage entry goes with it: after the dedupe window a report for
                // it counts as one for an unknown event.
                if caps.is_some() {
                    if let Some((tenant, event_id)) = dedupe::tenant_and_event(&dedupe_key) {
                        txn.delete(Cf::Caps, admission::usage_key(tenant, event_id));
                    }
                }
                txn.delete(Cf::Dedupe, dedupe_key);
                stats.expired += 1;
            }
            txn.delete(Cf::Expiry, expiry_key);
        }
        if stream_time != i64::MIN {
            txn.put_i64(STREAM_TIME, stream_time);
        }
        txn.put_i64(BUFFERED, buffered as i64);
        if let Some(next) = next_offset {
            txn.put_i64(CHECKPOINT, next);
        }
        Ok(Pending {
            ops: txn.into_ops(),
            next_offset,
            stats,
        })
    }

    /// The caps engine for this batch's partition, when any tenant has caps or a breaker.
    fn caps_for(&self, records: &[Decoded]) -> Option<Caps> {
        let caps = self.settings.caps.as_ref().filter(|c| c.any())?;
        let (partition, _) = position(records.first()?);
        Some(caps.for_partition(partition))
    }

    /// Reorder an admitted event: late ones are emitted at once, the others wait in the buffer
    /// until stream time passes their release time (checked record by record, so outputs do
    /// not depend on where batches begin and end).
    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &self,
        txn: &mut Txn<'_>,
        input: RawInput,
        queue: &Queue<'_>,
        floor: &mut Millis,
        mut buffered: usize,
        out: &mut Vec<OutRecord>,
        stats: &mut BatchStats,
    ) -> Result<usize, ProcessorError> {
        let (catalog, stream_time, codecs) =
            (queue.catalog, queue.stream_time, &self.settings.codecs);
        let entity_key = EntityKey::new(&input.meta.tenant, &input.meta.entity).encode();
        let state = entity(txn, &entity_key)?;
        if reorder::is_late(state.as_ref(), &input.meta) {
            stats.late += 1;
            out.push(output::event(&input, true, codecs));
            return Ok(buffered);
        }
        let grace = catalog.grace(&input.meta.tenant, &input.meta.source);
        let release_at = input.meta.occurred_at.saturating_add(grace);
        txn.put(
            Cf::Buffer,
            reorder::buffer_key(release_at, &input),
            reorder::encode(&input),
        );
        buffered += 1;
        *floor = (*floor).min(release_at);
        if queue.advanced || release_at <= stream_time {
            let due = txn.range(
                Cf::Buffer,
                &reorder::time_key(*floor),
                &reorder::due_bound(stream_time),
            )?;
            buffered = release(txn, due, buffered, catalog, codecs, out, stats)?;
            *floor = stream_time.saturating_add(1);
        }
        if buffered > self.settings.max_buffered {
            let oldest = txn.first(Cf::Buffer, buffered - self.settings.max_buffered)?;
            buffered = release(txn, oldest, buffered, catalog, codecs, out, stats)?;
        }
        Ok(buffered)
    }

    /// Takes other partitions' budget shares into this task's tenant states: a durable step
    /// of its own, before the next batch, so decisions depend only on the store and the input.
    pub fn absorb(
        &self,
        partition: i32,
        shares: &[BudgetShare],
        reports: &[UsageRecord],
        catalog: &SourceCatalog,
        out: &mut Vec<OutRecord>,
    ) -> Result<Pending, ProcessorError> {
        let Some(caps) = self.settings.caps.as_ref().filter(|c| c.any()) else {
            return Ok(Pending::default());
        };
        let caps = caps.for_partition(partition);
        let mut txn = Txn::new(&self.store);
        let at = txn.get_i64(STREAM_TIME)?;
        let codecs = &self.settings.codecs;
        let mut tenants = admission::Tenants::default();
        let released = admission::absorb(
            &caps,
            partition,
            codecs,
            &mut txn,
            &mut tenants,
            shares,
            at,
            out,
        )?;
        if !released.is_empty() {
            let queue = Queue {
                catalog,
                stream_time: at.unwrap_or(Millis::MIN),
                advanced: false,
            };
            let (mut floor, mut stats) = (Millis::MIN, BatchStats::default());
            let mut buffered = self.buffered;
            for input in released {
                buffered = self.enqueue(
                    &mut txn, input, &queue, &mut floor, buffered, out, &mut stats,
                )?;
            }
            txn.put_i64(BUFFERED, buffered as i64);
        }
        admission::absorb_usage(&caps, codecs, &mut txn, &mut tenants, reports, at, out)?;
        tenants.finish(&caps, &mut txn, out);
        Ok(Pending {
            ops: txn.into_ops(),
            ..Pending::default()
        })
    }

    /// The store change that records a decision to flush (wall-clock punctuation): made
    /// durable before the flush, so that a flush cut short by a crash is redone first, exactly
    /// as it was going to happen, and re-emits the same records.
    pub fn flush_intent(&self) -> Pending {
        Pending {
            ops: vec![Op {
                cf: Cf::Meta,
                key: FLUSH_PENDING.to_vec(),
                value: Some(vec![1]),
            }],
            ..Pending::default()
        }
    }

    /// Releases every held-back event (wall-clock idle flush), in order.
    pub fn flush(
        &self,
        catalog: &SourceCatalog,
        out: &mut Vec<OutRecord>,
    ) -> Result<Pending, ProcessorError> {
        let mut txn = Txn::new(&self.store);
        let mut stats = BatchStats::default();
        let buffered = flush_all(
            &mut txn,
            self.buffered,
            catalog,
            &self.settings.codecs,
            out,
            &mut stats,
        )?;
        txn.put_i64(BUFFERED, buffered as i64);
        Ok(Pending {
            ops: txn.into_ops(),
            next_offset: None,
            stats,
        })
    }

    /// Makes a processed batch durable: store changes and checkpoint in one atomic write.
    pub fn commit(&mut self, pending: &Pending) -> Result<(), ProcessorError> {
        if pending.ops.is_empty() {
            return Ok(());
        }
        self.store.write(&pending.ops)?;
        if let Some(next) = pending.next_offset {
            self.next_offset = Some(next);
        }
        self.buffered = self.store.get_i64(BUFFERED)?.unwrap_or(0).max(0) as usize;
        Ok(())
    }
}

fn flush_all(
    txn: &mut Txn<'_>,
    buffered: usize,
    catalog: &SourceCatalog,
    codecs: &Codecs,
    out: &mut Vec<OutRecord>,
    stats: &mut BatchStats,
) -> Result<usize, ProcessorError> {
    let all = txn.first(Cf::Buffer, usize::MAX)?;
    let buffered = release(txn, all, buffered, catalog, codecs, out, stats)?;
    txn.delete(Cf::Meta, FLUSH_PENDING.to_vec());
    Ok(buffered)
}

struct Queue<'a> {
    catalog: &'a SourceCatalog,
    stream_time: Millis,
    /// The arriving record moved stream time forward.
    advanced: bool,
}

enum Scoped {
    Process,
    Ignore,
    /// At or past the end of the scope's range.
    Ended,
}

fn scoped(scope: &Scope, record: &Decoded) -> Scoped {
    let (partition, offset) = position(record);
    match scope.position(partition, offset) {
        InRange::Before => Scoped::Ignore,
        InRange::After => Scoped::Ended,
        InRange::Inside => match record {
            Ok(input) => {
                let meta = &input.meta;
                let field = |name: &str| match name {
                    header::TENANT => Some(meta.tenant.as_str()),
                    header::SOURCE => Some(meta.source.as_str()),
                    header::ENTITY => Some(meta.entity.as_str()),
                    header::EVENT_TYPE => Some(meta.event_type.as_str()),
                    _ => None,
                };
                if scope.filter.matches(field) {
                    Scoped::Process
                } else {
                    Scoped::Ignore
                }
            }
            // An unreadable record has no fields to filter on: only an unfiltered scope keeps it.
            Err(_) if scope.filter.is_empty() => Scoped::Process,
            Err(_) => Scoped::Ignore,
        },
    }
}

fn entity(txn: &Txn<'_>, key: &str) -> Result<Option<EntityState>, ProcessorError> {
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

/// Releases buffered events in key order: reconcile each into its entity, emit, unbuffer.
fn release(
    txn: &mut Txn<'_>,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    mut buffered: usize,
    catalog: &SourceCatalog,
    codecs: &Codecs,
    out: &mut Vec<OutRecord>,
    stats: &mut BatchStats,
) -> Result<usize, ProcessorError> {
    for (key, value) in entries {
        txn.delete(Cf::Buffer, key.clone());
        buffered = buffered.saturating_sub(1);
        let input = reorder::decode(&value).ok_or_else(|| ProcessorError::Corrupt {
            path: String::new(),
            key: format!("buffer/{}", String::from_utf8_lossy(&key)),
            reason: "undecodable buffered event".into(),
        })?;
        let meta = &input.meta;
        let entity_key = EntityKey::new(&meta.tenant, &meta.entity).encode();
        let current = entity(txn, &entity_key)?;
        let change = Change {
            event_id: &meta.event_id,
            event_type: &meta.event_type,
            occurred_at: meta.occurred_at,
            is_delete: catalog.is_delete(&meta.tenant, &meta.source, &meta.event_type),
            body: &input.body,
        };
        stats.released += 1;
        match reconcile(current.as_ref(), &change) {
            Outcome::Late => {
                stats.late += 1;
                out.push(output::event(&input, true, codecs));
            }
            Outcome::Applied(state) => {
                out.push(output::event(&input, false, codecs));
                out.push(output::state(&meta.tenant, &meta.entity, &state, codecs));
                txn.put(
                    Cf::Entity,
                    entity_key.into_bytes(),
                    serde_json::to_vec(&state).expect("state serializes"),
                );
            }
        }
    }
    Ok(buffered)
}

#[cfg(test)]
mod tests;
