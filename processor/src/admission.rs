//! Admission inside a partition task: the [`crate::caps`] engine applied to each first
//! delivery, between dedupe and reorder, with its state kept in the task's store so that it is
//! restored, replayed and fenced like the rest.
//!
//! * `caps` column family: the tenant's [`TenantState`], the other partitions' shares and the
//!   entity breakers' tracks, each under keys of their own ([`stored`]), and `u` + tenant +
//!   event id + source → the event's [`EventUsage`] (estimate, and actual once reported).
//! * `held` column family: events a cap deferred until its window resets, keyed by tenant,
//!   window end, then `raw` offset. With `on_window_reset = "release"` they are re-admitted in
//!   arrival order by the tenant's next event on the partition at or after the window's end,
//!   or — on a partition that went quiet — when another partition's budget share shows the
//!   tenant's window has moved on.
//!
//! An event the breaker or a cap defers goes to `deferred` (with the reason and, for caps, the
//! window's end); alerts go to `alerts`. After each batch the task publishes its share of
//! every tenant it touched to `budget` ([`crate::caps::budget`]); other partitions' shares
//! enter the store only through [`absorb`], a durable step of its own, so a decision never
//! depends on when a share happened to arrive.

use std::collections::BTreeMap;

use schemas::avro::Codecs;
use schemas::config::OnWindowReset;
use schemas::records::UsageRecord;
use schemas::time::Millis;

use crate::caps::breaker::Phase;
use crate::caps::budget::tenant_used;
use crate::caps::{BudgetShare, CapKind, Caps, Decision, EventUsage, TenantState};
use crate::clock;
use crate::error::ProcessorError;
use crate::input::RawInput;
use crate::output::{self, OutRecord};
use crate::reorder;
use crate::store::{Cf, Txn, USAGE_NEXT};
use crate::ttl;
use crate::usage_view::Report;

pub mod stored;

/// Usage entries are per (tenant, event id, source): two sources may use the same event id.
/// The entries of one (tenant, event id) are adjacent, so a report that names no source finds
/// its event's entry ([`report_key`]).
pub fn usage_key(tenant: &str, event_id: &str, source: &str) -> Vec<u8> {
    let mut key = usage_prefix(tenant, event_id);
    key.extend_from_slice(source.as_bytes());
    key
}

/// The common start of a (tenant, event id)'s entries, and the key of the entry a report
/// that names no source leaves when it comes before its event.
pub fn usage_prefix(tenant: &str, event_id: &str) -> Vec<u8> {
    let mut key = b"u".to_vec();
    for part in [tenant, event_id] {
        key.extend_from_slice(&(part.len() as u32).to_be_bytes());
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// The entry a report is for: its source's; for a report without a source, the entry of the
/// event id's source (the first in byte order if several sources of the tenant used the id),
/// or, before the event came, the sourceless entry.
fn report_key(txn: &Txn<'_>, report: &UsageRecord) -> Result<Vec<u8>, ProcessorError> {
    if let Some(source) = &report.source {
        return Ok(usage_key(&report.tenant, &report.event_id, source));
    }
    let prefix = usage_prefix(&report.tenant, &report.event_id);
    let first = txn.range_first(Cf::Caps, &prefix, &reorder::end_of(&prefix), 1)?;
    Ok(first.into_iter().next().map_or(prefix, |(key, _)| key))
}

/// Stores an admitted event's usage entry, unless a report came first: its entry (its actual
/// usage) is kept, moved to the event's source when the report named none.
fn record_usage(
    txn: &mut Txn<'_>,
    meta: &schemas::raw::RawMeta,
    usage: Option<EventUsage>,
    keep_early: bool,
) -> Result<(), ProcessorError> {
    let key = usage_key(&meta.tenant, &meta.event_id, &meta.source);
    if keep_early && txn.get(Cf::Caps, &key)?.is_some() {
        return Ok(());
    }
    let early = usage_prefix(&meta.tenant, &meta.event_id);
    if let (true, Some(entry)) = (keep_early, txn.get(Cf::Caps, &early)?) {
        txn.delete(Cf::Caps, early);
        txn.put(Cf::Caps, key, entry);
    } else if let Some(usage) = usage {
        txn.put(
            Cf::Caps,
            key,
            serde_json::to_vec(&usage).expect("usage serializes"),
        );
    }
    Ok(())
}

fn held_prefix(tenant: &str) -> Vec<u8> {
    let mut key = (tenant.len() as u32).to_be_bytes().to_vec();
    key.extend_from_slice(tenant.as_bytes());
    key
}

/// Held events sort by tenant, then the end of the window that deferred them, then offset.
fn held_key(tenant: &str, until: Millis, offset: i64) -> Vec<u8> {
    let mut key = held_prefix(tenant);
    key.extend_from_slice(&reorder::time_key(until));
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

struct Loaded {
    state: TenantState,
    changed: bool,
    /// The change is this partition's own (admissions, releases, reports): publish its share.
    publish: bool,
}

/// The tenant states a batch (or an absorb step) works on: each read from the store once and
/// written back once, at [`Tenants::finish`], however many events of the tenant it handles.
#[derive(Default)]
pub struct Tenants {
    loaded: BTreeMap<String, Loaded>,
}

impl Tenants {
    fn get(&mut self, txn: &mut Txn<'_>, tenant: &str) -> Result<&mut Loaded, ProcessorError> {
        if !self.loaded.contains_key(tenant) {
            let (state, moved) = stored::load(txn, tenant)?;
            self.loaded.insert(
                tenant.to_owned(),
                Loaded {
                    state,
                    changed: moved,
                    publish: false,
                },
            );
        }
        Ok(self.loaded.get_mut(tenant).expect("inserted above"))
    }

    /// Writes back the states that changed and publishes this partition's share of the
    /// tenants it changed itself to `budget` (absorbing others' shares alone publishes nothing,
    /// or partitions would answer each other's shares forever).
    pub fn finish(
        self,
        caps: &Caps,
        txn: &mut Txn<'_>,
        out: &mut Vec<OutRecord>,
    ) -> Result<(), ProcessorError> {
        for (tenant, loaded) in self.loaded.into_iter().filter(|(_, l)| l.changed) {
            stored::save(txn, &tenant, &loaded.state)?;
            gauges(caps, &tenant, &loaded.state);
            if loaded.publish {
                out.push(output::budget(&caps.share(&loaded.state, &tenant)));
            }
        }
        Ok(())
    }
}

/// What admission let through: released held events first (in arrival order), then the event.
#[derive(Debug, Default)]
pub struct Admitted {
    pub inputs: Vec<RawInput>,
    pub deferred: usize,
    /// Deferrals past `processor.max_held_per_tenant`, sent to `dlq`.
    pub diverted: usize,
    /// Something was added to the tenant's `ttl` index.
    pub ttl_scheduled: bool,
}

/// Applies the caps engine to `input` at the tenant's stream time `at`.
#[allow(clippy::too_many_arguments)]
pub fn admit(
    caps: &Caps,
    codecs: &Codecs,
    txn: &mut Txn<'_>,
    tenants: &mut Tenants,
    input: RawInput,
    at: Millis,
    max_held: u64,
    out: &mut Vec<OutRecord>,
) -> Result<Admitted, ProcessorError> {
    let tenant = input.meta.tenant.clone();
    let Some(rules) = caps.rules(&tenant) else {
        return Ok(Admitted {
            inputs: vec![input],
            ..Admitted::default()
        });
    };
    let release_mode = rules
        .caps
        .as_ref()
        .is_some_and(|c| c.on_window_reset == OnWindowReset::Release);
    let loaded = tenants.get(txn, &tenant)?;
    (loaded.changed, loaded.publish) = (true, true);
    let state = &mut loaded.state;
    let mut admitted = Admitted::default();
    let tick = caps.tick(state, &tenant, at);
    out.extend(tick.alerts.iter().map(|a| output::alert(a, codecs)));
    if release_mode {
        release(caps, codecs, txn, state, &tenant, at, out, &mut admitted)?;
    }
    let entity = &input.meta.entity;
    let track = match rules.breaker {
        Some(_) => Some(stored::load_entity(txn, &tenant, entity)?),
        None => None,
    };
    if let Some(Some(track)) = &track {
        state.breaker.entities.insert(entity.clone(), track.clone());
    }
    let (decision, alerts) = caps.admit(state, &input.meta, input.body.len(), at);
    if let (Some(before), Some(after)) = (track, state.breaker.entities.remove(entity)) {
        stored::save_entity(txn, &tenant, entity, &after, before.is_none());
        admitted.ttl_scheduled |= before.is_none();
    }
    out.extend(alerts.iter().map(|a| output::alert(a, codecs)));
    match decision {
        Decision::Admit(usage) => {
            record_usage(txn, &input.meta, usage, true)?;
            admitted.inputs.push(input);
        }
        Decision::Defer(deferral) => {
            let hold = deferral.until.filter(|_| release_mode);
            if hold.is_some() && state.held >= max_held {
                metrics::counter!("hookstream_caps_held_overflow_total", "tenant" => tenant.clone())
                    .increment(1);
                let reason = format!("held_full: tenant `{tenant}` already holds {} events deferred by its caps on this partition (processor.max_held_per_tenant); redrive this one once the cap allows", state.held);
                out.push(output::diverted(&input, &reason));
                admitted.diverted += 1;
                return Ok(admitted);
            }
            metrics::counter!("hookstream_caps_deferred_total", "tenant" => tenant.clone(), "reason" => deferral.reason.as_str())
                .increment(1);
            out.push(output::deferred(&input, &deferral, codecs));
            if let Some(until) = hold {
                txn.put(
                    Cf::Held,
                    held_key(&tenant, until, input.offset),
                    reorder::encode(&input),
                );
                state.held += 1;
            }
            admitted.deferred += 1;
        }
    }
    Ok(admitted)
}

/// Per-tenant gauges as of the tenant's last decision: usage (tenant-wide, as this task sees
/// it), limits, and whether the tenant's breaker is open on this task's partition (each task
/// keeps its own breaker state over the tenant-wide count).
fn gauges(caps: &Caps, tenant: &str, state: &TenantState) {
    let Some(rules) = caps.rules(tenant) else {
        return;
    };
    if let Some(limits) = &rules.caps {
        let used = tenant_used(&state.ledger, &state.others);
        for (cap, limit) in [
            (CapKind::EventsPerHour, limits.events_per_hour),
            (CapKind::TokensPerDay, limits.tokens_per_day),
            (CapKind::CostPerDay, limits.cost_per_day_micros),
        ] {
            let Some(limit) = limit else { continue };
            let labels = [
                ("tenant", tenant.to_owned()),
                ("cap", cap.as_str().to_owned()),
            ];
            metrics::gauge!("hookstream_caps_used", &labels).set(used.of(cap) as f64);
            metrics::gauge!("hookstream_caps_limit", &labels).set(limit as f64);
        }
    }
    if rules.caps.is_some() {
        let labels = [
            ("tenant", tenant.to_owned()),
            ("partition", caps.partition().to_string()),
        ];
        metrics::gauge!("hookstream_caps_held", &labels).set(state.held as f64);
    }
    if rules.breaker.is_some() {
        let open = !matches!(state.breaker.tenant.phase, Phase::Closed);
        let labels = [
            ("tenant", tenant.to_owned()),
            ("partition", caps.partition().to_string()),
        ];
        metrics::gauge!("hookstream_caps_breaker_open", &labels).set(if open { 1.0 } else { 0.0 });
    }
}

/// Re-admits the tenant's held events whose window has ended by `at`, in arrival order;
/// those the caps still refuse stay held (and so do the ones after them).
#[allow(clippy::too_many_arguments)]
fn release(
    caps: &Caps,
    codecs: &Codecs,
    txn: &mut Txn<'_>,
    state: &mut TenantState,
    tenant: &str,
    at: Millis,
    out: &mut Vec<OutRecord>,
    admitted: &mut Admitted,
) -> Result<(), ProcessorError> {
    let mut from = held_prefix(tenant);
    let mut end = from.clone();
    end.extend_from_slice(&reorder::time_key(at.saturating_add(1)));
    // One held event at a time: the first the caps refuse ends the scan, so the cost is
    // O(released + 1) however many events the tenant holds (no body loads for the rest).
    while let Some((key, value)) = txn.range_first(Cf::Held, &from, &end, 1)?.pop() {
        let input = reorder::decode(&value).ok_or_else(|| ProcessorError::Corrupt {
            path: String::new(),
            key: format!("held/{tenant}"),
            reason: "undecodable held event".into(),
        })?;
        let (decision, alerts) = caps.readmit(state, &input.meta, input.body.len(), at);
        out.extend(alerts.iter().map(|a| output::alert(a, codecs)));
        if let Decision::Admit(usage) = decision {
            record_usage(txn, &input.meta, usage, false)?;
            from = key.clone();
            from.push(0); // the next key after this one
            txn.delete(Cf::Held, key);
            state.held = state.held.saturating_sub(1);
            admitted.inputs.push(input);
        } else {
            break; // the caps refuse again: later ones wait too, in order
        }
    }
    Ok(())
}

/// Applies this partition's `usage` reports from its stored position on, in offset order, and
/// moves the position past them: an event's actual usage replaces its estimate, once per
/// report (a repeated report counts nothing), counted in the day the report was written.
pub fn absorb_usage(
    caps: &Caps,
    codecs: &Codecs,
    txn: &mut Txn<'_>,
    tenants: &mut Tenants,
    reports: &[Report],
    ttl_ms: Millis,
    out: &mut Vec<OutRecord>,
) -> Result<(), ProcessorError> {
    let mut next = txn.get_i64(USAGE_NEXT)?.unwrap_or(0);
    for Report {
        offset,
        timestamp,
        usage,
        ..
    } in reports
    {
        if *offset < next {
            continue; // applied before (a re-read after the task reopened)
        }
        next = offset + 1;
        txn.put_i64(USAGE_NEXT, next);
        let Some(report) = usage else { continue };
        if caps
            .rules(&report.tenant)
            .and_then(|r| r.caps.as_ref())
            .is_none()
        {
            continue;
        }
        let key = report_key(txn, report)?;
        let previous: Option<EventUsage> = txn
            .get(Cf::Caps, &key)?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let at = clock::tenant_time(txn, &report.tenant)?;
        let loaded = tenants.get(txn, &report.tenant)?;
        (loaded.changed, loaded.publish) = (true, true);
        let state = &mut loaded.state;
        // A tenant without events here yet: the report's own time is all there is.
        let at = at.or(*timestamp).unwrap_or(Millis::MIN).max(
            state
                .ledger
                .window(crate::caps::CapKind::TokensPerDay)
                .start_ms,
        );
        let (entry, alerts) = caps.report(state, previous.as_ref(), report, at, *timestamp);
        out.extend(alerts.iter().map(|a| output::alert(a, codecs)));
        if let Some(entry) = entry {
            if previous.is_none() {
                // No entry: the event is unknown (not seen yet, or its entry expired). Its
                // own entry would expire within the dedupe window; this one does too.
                let expires_at = at.saturating_add(ttl_ms);
                txn.put(
                    Cf::Ttl,
                    ttl::key(&report.tenant, expires_at, ttl::Kind::Usage, &key),
                    Vec::new(),
                );
            }
            txn.put(
                Cf::Caps,
                key,
                serde_json::to_vec(&entry).expect("usage serializes"),
            );
        }
    }
    Ok(())
}

/// Takes other partitions' budget shares into the tenants' stored states (a durable step),
/// raising the cap alerts they imply (on the tenant's alert partition) at the tenant's stream
/// time,
/// and re-admitting held events whose window the shares show has ended (returned in order,
/// for the task to reorder): a partition that went quiet still releases what it holds.
#[allow(clippy::too_many_arguments)]
pub fn absorb(
    caps: &Caps,
    partition: i32,
    codecs: &Codecs,
    txn: &mut Txn<'_>,
    tenants: &mut Tenants,
    shares: &[BudgetShare],
    out: &mut Vec<OutRecord>,
) -> Result<Vec<RawInput>, ProcessorError> {
    let mut admitted = Admitted::default();
    for share in shares {
        if share.partition == partition || caps.rules(&share.tenant).is_none() {
            continue;
        }
        let at = clock::tenant_time(txn, &share.tenant)?;
        let loaded = tenants.get(txn, &share.tenant)?;
        let state = &mut loaded.state;
        if state.absorb_share(partition, share.clone()) {
            stored::save_share(txn, share);
            loaded.changed = true;
            // The share proves the tenant's stream time reached its windows: move ours there
            // too, so the alert partition raises `cap_recovered` without traffic of its own.
            let at = at
                .unwrap_or(Millis::MIN)
                .max(share.hour_start)
                .max(share.day_start);
            let tick = caps.tick(state, &share.tenant, at);
            out.extend(tick.alerts.iter().map(|a| output::alert(a, codecs)));
            let release_mode = caps
                .rules(&share.tenant)
                .and_then(|r| r.caps.as_ref())
                .is_some_and(|c| c.on_window_reset == OnWindowReset::Release);
            if release_mode {
                let before = admitted.inputs.len();
                release(
                    caps,
                    codecs,
                    txn,
                    state,
                    &share.tenant,
                    at,
                    out,
                    &mut admitted,
                )?;
                loaded.publish |= admitted.inputs.len() > before;
            }
        }
    }
    Ok(admitted.inputs)
}
