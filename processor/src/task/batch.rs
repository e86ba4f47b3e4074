//! One batch over a partition task's store, as one straight pipeline per record:
//!
//! **trust time → dedupe → admit → reorder → release (reconcile, emit)**, then, once per batch,
//! **expire** and write back the clocks.
//!
//! Every stage that depends on time reads the clock of the record's own (tenant, source)
//! ([`crate::clock`]), never a partition-wide one: dedupe expiry and reorder release of a
//! source follow that source's stream time, the caps of a tenant follow the tenant's. The
//! stages are small functions over one [`Batch`] context that holds the store view, the
//! outputs and the clocks touched; nothing here does I/O beyond reading the store.

use std::collections::{BTreeMap, HashMap};

use schemas::key::EntityKey;
use schemas::time::Millis;

use crate::admission;
use crate::caps::{BudgetShare, Caps};
use crate::catalog::SourceCatalog;
use crate::clock::{self, SourceClock};
use crate::dedupe;
use crate::error::ProcessorError;
use crate::input::RawInput;
use crate::output::{self, OutRecord};
use crate::reconcile::EntityState;
use crate::reorder;
use crate::store::{Cf, Op, Txn, BATCH_BOUND, BUFFERED, FORMAT, STORE_FORMAT};

use super::{BatchStats, TaskSettings};

mod emit;
mod expire;
pub use emit::Flush;

/// A source's clock as the batch works with it.
struct Tracked {
    clock: SourceClock,
    /// No buffered event of the source releases before this: scans start here, not at the
    /// source's beginning (events released earlier are deletes in the store's view). Kept in
    /// the clock as `held_from` between batches.
    floor: Millis,
    changed: bool,
    /// Stream time moved: expire the source's dedupe entries at the end of the batch.
    advanced: bool,
    /// A record of the source arrived in this batch.
    arrived: bool,
}

pub(super) struct Batch<'a> {
    txn: Txn<'a>,
    out: &'a mut Vec<OutRecord>,
    pub stats: BatchStats,
    buffered: usize,
    settings: &'a TaskSettings,
    catalog: &'a SourceCatalog,
    caps: Option<Caps>,
    tenants: admission::Tenants,
    clocks: BTreeMap<Vec<u8>, Tracked>,
    /// Tenants' stream times this batch moved (written back at the end).
    pub(super) tenant_times: BTreeMap<String, Millis>,
    /// The earliest expiry in each tenant's `ttl` index as far as this batch has looked
    /// (`None`: the index is empty), so a stream time that moves short of it costs no seek.
    pub(super) ttl_next: BTreeMap<String, Option<Millis>>,
    /// Inputs the broker refused records of, for good, with why: sent to `dlq` instead.
    refused: &'a BTreeMap<(i32, i64), String>,
    /// Entity states this batch read or wrote, decoded (the store holds them as JSON).
    entities: HashMap<String, Option<EntityState>>,
}

impl<'a> Batch<'a> {
    pub fn new(
        task: &'a super::PartitionTask,
        catalog: &'a SourceCatalog,
        caps: Option<Caps>,
        out: &'a mut Vec<OutRecord>,
    ) -> Self {
        let (store, settings, buffered) = (&task.store, &task.settings, task.buffered);
        Self {
            txn: Txn::new(store),
            out,
            stats: BatchStats::default(),
            buffered,
            settings,
            catalog,
            caps,
            tenants: admission::Tenants::default(),
            clocks: BTreeMap::new(),
            tenant_times: BTreeMap::new(),
            ttl_next: BTreeMap::new(),
            refused: &task.refused,
            entities: HashMap::new(),
        }
    }

    /// One decoded `raw` record through the whole pipeline.
    pub fn record(&mut self, mut input: RawInput) -> Result<(), ProcessorError> {
        if let Some(reason) = self.refusal(&input) {
            self.divert(&input, &reason);
            return Ok(());
        }
        let source = clock::source_key_of(&input.meta);
        self.clock(&source)?.arrived = true;
        self.trust_time(&mut input);
        if !self.first_delivery(&source, &input)? {
            self.stats.duplicates += 1;
            self.stats.tenant(&input.meta.tenant).duplicates += 1;
            return Ok(());
        }
        self.stats.events += 1;
        self.stats.tenant(&input.meta.tenant).events += 1;
        self.note_skew(&source, &input)?;
        let admitted = self.admit(input)?;
        self.reorder(Some(source), admitted)
    }

    /// An event time too far ahead of the receive time is replaced by the receive time.
    fn trust_time(&self, input: &mut RawInput) {
        let meta = &input.meta;
        let max_skew = self.catalog.max_future_skew(&meta.tenant, &meta.source);
        if let Err(at) = clock::trusted_time(meta.occurred_at, meta.received_at, max_skew) {
            input.claimed_at = Some(meta.occurred_at);
            input.meta.occurred_at = at;
        }
    }

    /// Dedupe against the source's own stream time; a first delivery moves that clock and
    /// is remembered for the window.
    fn first_delivery(&mut self, source: &[u8], input: &RawInput) -> Result<bool, ProcessorError> {
        let key = dedupe::key(&input.meta);
        let now = self.clock(source)?.clock.now();
        if self
            .txn
            .get(Cf::Dedupe, &key)?
            .is_some_and(|v| dedupe::expires_at(&v) > now)
        {
            return Ok(false);
        }
        let tracked = self.clock(source)?;
        tracked.clock.advance(input.meta.occurred_at);
        tracked.advanced |= tracked.clock.now() != now;
        tracked.changed = true;
        let now = tracked.clock.now();
        self.advance_tenant(&input.meta.tenant, now)?;
        let expires_at = now.saturating_add(self.settings.dedupe_window_ms);
        self.txn.put(
            Cf::Expiry,
            dedupe::expiry_key(source, expires_at, &key),
            Vec::new(),
        );
        self.txn
            .put(Cf::Dedupe, key, expires_at.to_be_bytes().to_vec());
        Ok(true)
    }

    /// Counts a skewed first delivery; one alert per source per hour of its stream time.
    fn note_skew(&mut self, source: &[u8], input: &RawInput) -> Result<(), ProcessorError> {
        let Some(claimed) = input.claimed_at else {
            return Ok(());
        };
        let meta = &input.meta;
        self.stats.time_skewed += 1;
        metrics::counter!("hookstream_processor_time_skewed_total", "tenant" => meta.tenant.clone())
            .increment(1);
        let tracked = self.clock(source)?;
        if tracked.clock.skew_alert_due() {
            tracked.changed = true;
            let at = tracked.clock.now();
            let max_skew = self.catalog.max_future_skew(&meta.tenant, &meta.source);
            let codecs = &self.settings.codecs;
            self.out
                .push(output::skew_alert(meta, claimed, max_skew, at, codecs));
        }
        Ok(())
    }

    /// Caps and breaker, at the tenant's stream time: what may go on (held events the
    /// tenant's window reset released first, in arrival order, then the event).
    fn admit(&mut self, input: RawInput) -> Result<Vec<RawInput>, ProcessorError> {
        if self.caps.is_none() {
            return Ok(vec![input]);
        }
        let at = self.tenant_time(&input.meta.tenant)?.unwrap_or(Millis::MIN);
        let tenant = input.meta.tenant.clone();
        let caps = self.caps.as_ref().expect("checked above");
        let admitted = admission::admit(
            caps,
            &self.settings.codecs,
            &mut self.txn,
            &mut self.tenants,
            input,
            at,
            self.settings.max_held,
            self.out,
        )?;
        self.stats.deferred += admitted.deferred;
        self.stats.dead_letters += admitted.diverted;
        let counts = self.stats.tenant(&tenant);
        counts.deferred += admitted.deferred;
        counts.dead_letters += admitted.diverted;
        if admitted.ttl_scheduled {
            self.ttl_next.remove(&tenant);
        }
        Ok(admitted.inputs)
    }

    /// Buffers (or emits as late) each input, then releases what is due on the clocks of
    /// `arrived` (whose clock may have moved even when its event was deferred) and of the
    /// inputs' sources.
    fn reorder(
        &mut self,
        arrived: Option<Vec<u8>>,
        inputs: Vec<RawInput>,
    ) -> Result<(), ProcessorError> {
        let mut sources: Vec<Vec<u8>> = arrived.into_iter().collect();
        for input in inputs {
            let source = clock::source_key_of(&input.meta);
            self.enqueue(&source, input)?;
            if !sources.contains(&source) {
                sources.push(source);
            }
        }
        for source in sources {
            self.release_due(&source)?;
        }
        Ok(())
    }

    /// A late event is emitted at once; the others wait until their source's stream time
    /// passes their event time + grace.
    fn enqueue(&mut self, source: &[u8], input: RawInput) -> Result<(), ProcessorError> {
        let entity_key = EntityKey::new(&input.meta.tenant, &input.meta.entity).encode();
        if reorder::is_late(self.entity(&entity_key)?.as_ref(), &input.meta) {
            if self.divert_if_refused(&input) {
                return Ok(());
            }
            self.stats.late += 1;
            self.stats.tenant(&input.meta.tenant).late += 1;
            self.out
                .push(output::event(&input, true, &self.settings.codecs));
            return Ok(());
        }
        let grace = self.catalog.grace(&input.meta.tenant, &input.meta.source);
        let release_at = input.meta.occurred_at.saturating_add(grace);
        self.txn.put_new(
            Cf::Buffer,
            reorder::buffer_key(source, release_at, &input),
            reorder::encode(&input),
        );
        self.buffered += 1;
        let tracked = self.clock(source)?;
        tracked.clock.buffered += 1;
        tracked.changed = true;
        tracked.floor = tracked.floor.min(release_at);
        Ok(())
    }

    /// Releases the source's events due at its stream time, then its oldest ones past the
    /// per-source bound (`processor.max_buffered`).
    fn release_due(&mut self, source: &[u8]) -> Result<(), ProcessorError> {
        let tracked = self.clock(source)?;
        let (floor, now) = (tracked.floor, tracked.clock.now());
        if tracked.clock.buffered == 0 {
            return Ok(());
        }
        // Nothing below `floor` is held: when it is past stream time nothing is due, and
        // the store is not read (the common case of an arrival that moves no clock).
        if floor <= now {
            let due = self.txn.range(
                Cf::Buffer,
                &reorder::at(source, floor),
                &reorder::due_bound(source, now),
            )?;
            self.release(due)?;
            self.clock(source)?.floor = now.saturating_add(1);
        }
        let max = self.settings.max_buffered as u64;
        let over = self.clock(source)?.clock.buffered.saturating_sub(max);
        if over > 0 {
            let oldest = self.txn.range_first(
                Cf::Buffer,
                &reorder::at(source, Millis::MIN),
                &reorder::end_of(source),
                over as usize,
            )?;
            self.release(oldest)?;
        }
        Ok(())
    }

    /// Other partitions' budget shares and this partition's usage reports, taken in at each
    /// tenant's own stream time; held events they release go through reorder.
    pub fn absorb(
        &mut self,
        partition: i32,
        shares: &[BudgetShare],
        reports: &[crate::usage_view::Report],
    ) -> Result<(), ProcessorError> {
        let Some(caps) = &self.caps else {
            return Ok(());
        };
        let codecs = &self.settings.codecs;
        let released = admission::absorb(
            caps,
            partition,
            codecs,
            &mut self.txn,
            &mut self.tenants,
            shares,
            self.out,
        )?;
        admission::absorb_usage(
            caps,
            codecs,
            &mut self.txn,
            &mut self.tenants,
            reports,
            self.settings.dedupe_window_ms,
            self.out,
        )?;
        self.ttl_next.clear();
        self.reorder(None, released)
    }

    /// Expires the dedupe entries of every source whose clock moved, writes the clocks,
    /// tenant states and counters back, and returns the batch's store changes.
    pub fn finish(mut self, next_offset: Option<i64>) -> Result<super::Pending, ProcessorError> {
        let clocks = std::mem::take(&mut self.clocks);
        for (source, tracked) in &clocks {
            if tracked.advanced {
                self.expire(source, tracked.clock.now())?;
            }
        }
        let mut sources = Vec::new();
        for (source, mut tracked) in clocks.into_iter().filter(|(_, t)| t.changed) {
            tracked.clock.held_from = (tracked.clock.buffered > 0).then_some(tracked.floor);
            clock::save(&mut self.txn, &source, &tracked.clock);
            sources.push(super::SourceActivity {
                buffered: tracked.clock.buffered,
                arrived: tracked.arrived,
                source,
            });
        }
        for (tenant, at) in std::mem::take(&mut self.tenant_times) {
            clock::save_tenant_time(&mut self.txn, &tenant, at);
        }
        if let Some(caps) = &self.caps {
            std::mem::take(&mut self.tenants).finish(caps, &mut self.txn, self.out)?;
        }
        self.txn.put_i64(BUFFERED, self.buffered as i64);
        let bound = self.settings.batch_max as i64;
        if next_offset.is_some() && self.txn.get_i64(BATCH_BOUND)? != Some(bound) {
            self.txn.put_i64(BATCH_BOUND, bound);
        }
        self.txn.put_i64(FORMAT, STORE_FORMAT);
        if let Some(next) = next_offset {
            self.txn.put_i64(crate::store::CHECKPOINT, next);
        }
        let ops: Vec<Op> = self.txn.into_ops();
        Ok(super::Pending {
            ops,
            next_offset,
            stats: self.stats,
            sources,
        })
    }

    fn clock(&mut self, source: &[u8]) -> Result<&mut Tracked, ProcessorError> {
        if !self.clocks.contains_key(source) {
            let clock = clock::load(&self.txn, source)?;
            let floor = match clock.buffered {
                0 => Millis::MAX,
                _ => clock.held_from.unwrap_or(Millis::MIN),
            };
            self.clocks.insert(
                source.to_vec(),
                Tracked {
                    clock,
                    floor,
                    changed: false,
                    advanced: false,
                    arrived: false,
                },
            );
        }
        Ok(self.clocks.get_mut(source).expect("inserted above"))
    }

    fn tenant_time(&mut self, tenant: &str) -> Result<Option<Millis>, ProcessorError> {
        if let Some(at) = self.tenant_times.get(tenant) {
            return Ok(Some(*at));
        }
        clock::tenant_time(&self.txn, tenant)
    }

    fn advance_tenant(&mut self, tenant: &str, at: Millis) -> Result<(), ProcessorError> {
        let current = self.tenant_time(tenant)?;
        if current.is_none_or(|c| c < at) {
            self.tenant_times.insert(tenant.to_owned(), at);
            self.expire_ttl(tenant, at)?;
        }
        Ok(())
    }
}
