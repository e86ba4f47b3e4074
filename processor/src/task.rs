//! A partition task: owns one partition of `raw` and its [`StateStore`], and turns a batch of
//! that partition's records into output records plus the batch's store [`Op`]s. Each record
//! goes through one straight pipeline ([`batch`]):
//!
//! 1. **trust time** — an event time too far ahead of its receive time is replaced by the
//!    receive time and flagged ([`crate::clock`]);
//! 2. **dedupe** — a (tenant, source, event id) seen within the window is dropped;
//! 3. **admit** — the tenant's caps and breaker may defer it ([`crate::admission`]);
//! 4. **reorder** — the event waits in `buffer` until its source's stream time passes its
//!    event time + grace, unless it is already late for its entity (then it is emitted at
//!    once, `late = true`);
//! 5. **release** — due events leave the buffer in order and are **reconciled** into their
//!    entity's state, emitting `events` and `state` records;
//!
//! and at the end of the batch, **expire**: dedupe entries older than the window (in their
//! source's stream time) are removed.
//!
//! Stream time is per (tenant, source), so what the task emits for one tenant is a function
//! of that tenant's records alone, whatever other tenants share the partition (the wall-clock
//! idle flush aside). `process` is deterministic: the same records on the same store give
//! byte-identical outputs and ops, which is what makes re-processing a batch after a crash
//! safe. The commit protocol around it lives in [`crate::consumer`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use schemas::avro::Codecs;
use schemas::raw::header;
use schemas::scope::{InRange, Scope};
use schemas::time::Millis;

use crate::caps::{BudgetShare, Caps};
use crate::catalog::SourceCatalog;
use crate::error::ProcessorError;
use crate::input::{RawInput, Undecodable};
use crate::output::OutRecord;
use crate::snapshot::SnapshotState;
use crate::store::{
    Cf, Op, StateStore, BUFFERED, CHANGELOG_NEXT, FLUSH_PENDING, FORMAT, SNAPSHOT, STORE_FORMAT,
};
use crate::usage_view::Report;
use batch::Batch;
pub use batch::Flush;

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
    /// Bound of each (tenant, source)'s reorder buffer: past it, the source's oldest events
    /// are released early.
    pub max_buffered: usize,
    /// Only records in scope are processed (a rebuild); the rest are consumed and ignored.
    /// Reaching the end of the scope's range releases everything held back.
    pub scope: Option<Arc<Scope>>,
    /// The largest record the processor may produce (the producer's `message.max.bytes`): an
    /// input whose records could be larger goes to `dlq` instead (`too_large`).
    pub max_record_bytes: usize,
    /// Most events one step of a wall-clock flush releases: the durable set of one loop turn
    /// stays bounded however much a source held back.
    pub max_flush: usize,
    /// Per-tenant caps and breakers (None, or no tenant with any: admission is skipped).
    pub caps: Option<Arc<Caps>>,
    /// How `events` and `state` values are encoded (JSON, or Avro under registered ids).
    pub codecs: Arc<Codecs>,
    /// How long a tombstone outlives its delete, in the tenant's stream time (None: forever).
    pub tombstone_retention_ms: Option<Millis>,
    /// Most events a tenant's caps hold on this task; past it deferrals go to `dlq`.
    pub max_held: u64,
    /// Most records one loop turn processes (`processor.batch_max`).
    pub batch_max: usize,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            dedupe_window_ms: 72 * 3600 * 1000,
            max_buffered: 100_000,
            max_record_bytes: 1_000_000,
            max_flush: 5_000,
            scope: None,
            caps: None,
            codecs: Arc::new(Codecs::json()),
            tombstone_retention_ms: Some(7 * 24 * 3600 * 1000),
            max_held: 100_000,
            batch_max: 500,
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
    /// The sources whose clocks the batch changed, for the wall-clock flush of quiet ones.
    pub sources: Vec<SourceActivity>,
}

/// A source's reorder buffer after a batch, and whether the batch had a record of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceActivity {
    pub source: Vec<u8>,
    pub buffered: u64,
    pub arrived: bool,
}

/// When each source holding events last had a record (wall clock, this process only).
#[derive(Debug, Default)]
struct Holding {
    sources: BTreeMap<Vec<u8>, Instant>,
}

/// One tenant's counts in a batch (the `tenant` label of the processor's counters).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TenantStats {
    pub events: usize,
    pub duplicates: usize,
    pub late: usize,
    pub deferred: usize,
    pub dead_letters: usize,
}

/// Counts of one processed batch, for metrics and logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchStats {
    /// By tenant (`""`: records whose tenant could not be read).
    pub tenants: BTreeMap<String, TenantStats>,
    pub events: usize,
    pub duplicates: usize,
    pub late: usize,
    pub released: usize,
    pub dead_letters: usize,
    pub already_applied: usize,
    pub expired: usize,
    pub out_of_scope: usize,
    pub deferred: usize,
    /// First deliveries whose event time was not trusted (too far ahead of receipt).
    pub time_skewed: usize,
    /// Tombstones and usage entries of unknown events that expired.
    pub tombstones_expired: usize,
    pub usage_expired: usize,
}

impl BatchStats {
    pub fn tenant(&mut self, tenant: &str) -> &mut TenantStats {
        if !self.tenants.contains_key(tenant) {
            self.tenants
                .insert(tenant.to_owned(), TenantStats::default());
        }
        self.tenants.get_mut(tenant).expect("inserted above")
    }
}

pub struct PartitionTask {
    store: StateStore,
    epoch: i64,
    next_offset: Option<i64>,
    buffered: usize,
    settings: TaskSettings,
    /// Inputs whose records the broker refused for good, with why (see [`Self::refuse`]).
    refused: BTreeMap<(i32, i64), String>,
    holding: Holding,
    flush_pending: bool,
    snapshot: SnapshotState,
    /// The changelog partition's end after this task's last append (frames, a snapshot).
    changelog_end: i64,
}

impl PartitionTask {
    /// Replaces the caps and breaker rules from the next batch on ([`crate::live`]).
    pub fn set_caps(&mut self, caps: Option<Arc<Caps>>) {
        self.settings.caps = caps;
    }

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
        let format = store.get_i64(FORMAT)?;
        if next_offset.is_some() && format != Some(STORE_FORMAT) {
            return Err(ProcessorError::Startup(format!(
                "the state store (and changelog) of this partition were written by an earlier hookstream with another key layout (format {}, this version writes {STORE_FORMAT}); rebuild the derived topics into fresh ones (`hookstream replay --rebuild`), or start over with a new processor.group_id",
                format.map_or_else(|| "1".to_owned(), |f| f.to_string()),
            )));
        }
        let buffered = store.get_i64(BUFFERED)?.unwrap_or(0).max(0) as usize;
        let flush_pending = store.get(Cf::Meta, FLUSH_PENDING)?.is_some();
        let snapshot = SnapshotState::decode(store.get(Cf::Meta, SNAPSHOT)?.as_deref());
        let changelog_end = store.get_i64(CHANGELOG_NEXT)?.unwrap_or(0);
        Ok(Self {
            store,
            epoch,
            next_offset,
            buffered,
            settings,
            refused: Default::default(),
            holding: Holding::default(),
            flush_pending,
            snapshot,
            changelog_end,
        })
        .and_then(|mut task| {
            // Sources the store holds events of are as quiet as if their records had just come.
            let now = Instant::now();
            for (key, value) in task.store.range(Cf::Clock, b"s", b"t")? {
                let held = serde_json::from_slice::<crate::clock::SourceClock>(&value)
                    .map_or(0, |c| c.buffered);
                if held > 0 {
                    task.holding.sources.insert(key[1..].to_vec(), now);
                }
            }
            Ok(task)
        })
    }

    /// The next offset of `raw` this task has not applied (None: nothing applied yet).
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// How many records past its checkpoint a newly opened task re-processes exactly as its
    /// predecessor would have (no wall-clock step in between): the most one batch of the
    /// predecessor, or of this task, may have decided.
    pub fn catch_up_window(&self) -> Result<i64, ProcessorError> {
        let stored = self.store.get_i64(crate::store::BATCH_BOUND)?.unwrap_or(0);
        Ok(stored.max(self.settings.batch_max as i64))
    }

    /// The next offset of this partition of `usage` to apply (0: from the beginning).
    pub fn usage_next(&self) -> Result<i64, ProcessorError> {
        Ok(self.store.get_i64(crate::store::USAGE_NEXT)?.unwrap_or(0))
    }

    /// This incarnation's epoch: the offset of its fence in the changelog.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// From now on the input at `origin` goes to `dlq` with `reason` instead of being
    /// emitted: the broker refused one of its records for good. Re-processing the batch then
    /// moves on past it.
    pub fn refuse(&mut self, origin: (i32, i64), reason: String) {
        self.refused.insert(origin, reason);
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
        let caps = self.caps_for(&records);
        let mut batch = Batch::new(self, catalog, caps, out);
        if let Some(flush) = batch.flush_pending()? {
            // A flush was decided before a crash: redo it first, as it was going to happen.
            batch.flush(&flush, usize::MAX)?;
        }
        let mut next_offset = None;
        for record in records {
            let (partition, offset) = position(&record);
            if self.next_offset.is_some_and(|next| offset < next) {
                batch.stats.already_applied += 1;
                continue;
            }
            let before = next_offset;
            next_offset = Some(offset + 1);
            if let Some(scope) = &self.settings.scope {
                match scoped(scope, &record) {
                    Scoped::Process => {}
                    Scoped::Ignore => {
                        batch.stats.out_of_scope += 1;
                        continue;
                    }
                    Scoped::Ended => {
                        batch.stats.out_of_scope += 1;
                        // The checkpoint stops at the range's end, so a group that goes on
                        // from the rebuild's offsets starts with the first record after it.
                        next_offset = scope.end_of(partition).or(before);
                        batch.flush_all()?;
                        continue;
                    }
                }
            }
            match record {
                Ok(input) => batch.record(input)?,
                Err(bad) => batch.dead_letter(*bad),
            }
        }
        batch.finish(next_offset)
    }

    /// The caps engine for this batch's partition, when any tenant has caps or a breaker.
    fn caps_for(&self, records: &[Decoded]) -> Option<Caps> {
        let caps = self.settings.caps.as_ref().filter(|c| c.any())?;
        let (partition, _) = position(records.first()?);
        Some(caps.for_partition(partition))
    }

    /// Takes other partitions' budget shares into this task's tenant states: a durable step
    /// of its own, before the next batch, so decisions depend only on the store and the input.
    pub fn absorb(
        &self,
        partition: i32,
        shares: &[BudgetShare],
        reports: &[Report],
        catalog: &SourceCatalog,
        out: &mut Vec<OutRecord>,
    ) -> Result<Pending, ProcessorError> {
        let Some(caps) = self.settings.caps.as_ref().filter(|c| c.any()) else {
            return Ok(Pending::default());
        };
        let caps = caps.for_partition(partition);
        let mut batch = Batch::new(self, catalog, Some(caps), out);
        batch.absorb(partition, shares, reports)?;
        batch.finish(None)
    }

    /// Sources holding events that had no record for `idle` of wall-clock time: a busy
    /// partition must not keep a quiet tenant's events waiting for that tenant's next event.
    pub fn quiet_sources(&self, now: Instant, idle: std::time::Duration) -> Vec<Vec<u8>> {
        self.holding
            .sources
            .iter()
            .filter(|(_, last)| now.saturating_duration_since(**last) >= idle)
            .map(|(source, _)| source.clone())
            .collect()
    }

    /// Whether every source holding events is among `quiet`.
    pub fn all_quiet(&self, quiet: &[Vec<u8>]) -> bool {
        self.holding.sources.len() == quiet.len()
    }

    /// The store change that records a decision to flush (wall-clock punctuation): made
    /// durable before the flush, so that a flush cut short by a crash is redone first, exactly
    /// as it was going to happen, and re-emits the same records.
    pub fn flush_intent(&self, flush: &Flush) -> Pending {
        Pending {
            ops: vec![Op {
                cf: Cf::Meta,
                key: FLUSH_PENDING.to_vec(),
                value: Some(flush.encode()),
            }],
            ..Pending::default()
        }
    }

    /// Whether a durable flush is not finished: the task releases its next step before it
    /// takes more input.
    pub fn flush_pending(&self) -> bool {
        self.flush_pending
    }

    /// Releases (a bounded step of) the held-back events a durable flush intent names (all of them when there
    /// is none: a rebuild's end, tests), in order.
    pub fn flush(
        &self,
        catalog: &SourceCatalog,
        out: &mut Vec<OutRecord>,
    ) -> Result<Pending, ProcessorError> {
        let mut batch = Batch::new(self, catalog, None, out);
        let flush = batch.flush_pending()?.unwrap_or(Flush::All);
        batch.flush(&flush, self.settings.max_flush)?;
        batch.finish(None)
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
        self.flush_pending = self.store.get(Cf::Meta, FLUSH_PENDING)?.is_some();
        let now = Instant::now();
        for activity in &pending.sources {
            if activity.buffered == 0 {
                self.holding.sources.remove(&activity.source);
            } else if activity.arrived || !self.holding.sources.contains_key(&activity.source) {
                self.holding.sources.insert(activity.source.clone(), now);
            }
        }
        self.buffered = self.store.get_i64(BUFFERED)?.unwrap_or(0).max(0) as usize;
        self.snapshot = SnapshotState::decode(self.store.get(Cf::Meta, SNAPSHOT)?.as_deref());
        self.changelog_end = self.store.get_i64(CHANGELOG_NEXT)?.unwrap_or(0);
        Ok(())
    }

    /// Where the changelog partition ends if nobody but this task appended to it since its
    /// last append: a zombie check before a step that commits no input offsets.
    pub fn changelog_end(&self) -> i64 {
        self.changelog_end
    }

    /// The store's latest snapshot and the changelog bytes written since.
    pub fn snapshot_state(&self) -> SnapshotState {
        self.snapshot
    }

    /// The store change that counts `bytes` more changelog frames (written with the batch).
    pub fn changelog_written(&self, bytes: u64, now_ms: i64) -> Op {
        Op {
            cf: Cf::Meta,
            key: SNAPSHOT.to_vec(),
            value: Some(self.snapshot.written(bytes, now_ms).encode()),
        }
    }

    /// A snapshot of the store as of its changelog position (see [`crate::snapshot`]): its
    /// chunks for partition `partition` of the changelog, and the state once they are written.
    pub fn snapshot(
        &self,
        partition: i32,
        now_ms: i64,
    ) -> Result<(Vec<OutRecord>, SnapshotState), ProcessorError> {
        let position = self.store.get_i64(CHANGELOG_NEXT)?.unwrap_or(0);
        let ops = self.store.state_ops()?;
        let bytes = ops
            .iter()
            .map(|op| crate::changelog::op_bytes(op) as u64)
            .sum();
        let records = crate::changelog::snapshot(partition, self.epoch, position, now_ms, &ops);
        let state = SnapshotState {
            position,
            bytes,
            taken_at_ms: now_ms,
            ..SnapshotState::NONE
        };
        Ok((records, state))
    }

    /// Records that the snapshot `state` describes is complete in the changelog, which now
    /// ends at `changelog_end`.
    pub fn snapshot_written(
        &mut self,
        state: SnapshotState,
        changelog_end: i64,
    ) -> Result<(), ProcessorError> {
        self.changelog_end = changelog_end;
        self.store.write(&[Op {
            cf: Cf::Meta,
            key: SNAPSHOT.to_vec(),
            value: Some(state.encode()),
        }])?;
        self.snapshot = state;
        Ok(())
    }
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

mod batch;

#[cfg(test)]
mod caps_store_tests;
#[cfg(test)]
mod isolation_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod usage_tests;
