//! [`Caps`]: what a partition task calls, per tenant, with the tenant's [`TenantState`]
//! (which the task loads from and saves to its store, and writes to the changelog).
//!
//! * [`Caps::tick`] first, whenever stream time moves (and for tenants whose
//!   [`TenantState::wake_at`] has passed): rolls windows, raises `cap_recovered`, and says
//!   when the task should release its cap-deferred events of the tenant, in order, through
//!   [`Caps::readmit`];
//! * [`Caps::admit`] for each new event, after dedupe: breaker, then caps;
//! * [`Caps::report`] for each usage report, with the event's stored [`EventUsage`];
//! * [`TenantState::absorb_share`] for each record read from the `budget` topic, and
//!   [`Caps::share`] for what to publish there.
//!
//! Cap alerts (`cap_reached`, `cap_recovered`) are raised by one partition per tenant, its
//! *alert partition* ([`alert_partition`]), so a tenant gets one alert per window whatever the
//! number of partitions; it learns of deferrals elsewhere from the budget shares. Breaker
//! alerts come from the partition whose breaker opened.

use std::collections::HashMap;
use std::sync::Arc;

use schemas::config::{BreakerConfig, CapLimits, Config, OnWindowReset};
use schemas::raw::RawMeta;
use schemas::records::{AlertRecord, UsageRecord};
use schemas::time::Millis;
use serde::{Deserialize, Serialize};

use super::alerts::{cap_alerts, CapStatus};
use super::breaker::{BreakerState, Held, Phase};
use super::budget::{tenant_used, BudgetShare, OtherShares};
use super::estimate::estimate;
use super::ledger::{admit, Admission, EventUsage, Ledger};
use super::window::{window_of, WindowKind};
use super::{CapKind, Usage};
use crate::error::ProcessorError;

/// One tenant's configuration, as the caps need it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantRules {
    pub caps: Option<CapLimits>,
    pub breaker: Option<BreakerConfig>,
}

/// Everything the caps keep about one tenant in one partition task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantState {
    pub ledger: Ledger,
    pub status: CapStatus,
    pub breaker: BreakerState,
    /// The other partitions' last shares (stored under keys of their own).
    #[serde(default)]
    pub others: OtherShares,
    /// Events this task holds for release at a window's reset.
    #[serde(default)]
    pub held: u64,
}

impl TenantState {
    /// Takes another partition's share into this state (a durable step: the task saves the
    /// state with the batch). Returns whether anything changed.
    pub fn absorb_share(&mut self, own_partition: i32, share: BudgetShare) -> bool {
        self.others.absorb(own_partition, share)
    }

    /// The earliest stream time at which [`Caps::tick`] would change something: the end of a
    /// reached cap's window.
    pub fn wake_at(&self) -> Option<Millis> {
        let cap_ends = self.status.caps.values().filter(|s| s.reached);
        cap_ends.map(|s| s.window.end_ms).min()
    }
}

/// Why an event was deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferReason {
    Cap(CapKind),
    /// The entity's breaker is open.
    Loop,
    /// The tenant's breaker is open.
    Spike,
}

impl DeferReason {
    /// The `deferred.reason` value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeferReason::Cap(cap) => cap.as_str(),
            DeferReason::Loop => "loop_suspected",
            DeferReason::Spike => "spike_suspected",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferral {
    pub reason: DeferReason,
    /// The earliest release (`deferred.window_end`): the cap's window end; None for breaker
    /// deferrals, which wait for a manual redrive.
    pub until: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Admitted; the entry to store under the event's id (None: the tenant has no caps).
    Admit(Option<EventUsage>),
    Defer(Deferral),
}

/// The result of [`Caps::tick`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tick {
    pub alerts: Vec<AlertRecord>,
    /// Caps whose window reset while this task held events deferred by them; with
    /// `on_window_reset = "release"` those events are to be re-admitted now, in order.
    pub release: Vec<CapKind>,
}

/// The caps of every tenant, for one partition task.
#[derive(Debug, Clone)]
pub struct Caps {
    /// Shared by the tasks of every partition ([`Caps::for_partition`] copies no rules).
    tenants: Arc<HashMap<String, TenantRules>>,
    partition: i32,
    partitions: i32,
}

/// The partition that raises a tenant's cap alerts (FNV-1a of the tenant id).
pub fn alert_partition(tenant: &str, partitions: i32) -> i32 {
    let hash = tenant.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % partitions.max(1) as u64) as i32
}

impl Caps {
    /// The rules of every configured tenant; `partition` is this task's partition of `raw`,
    /// `partitions` how many `raw` has.
    pub fn new(config: &Config, partition: i32, partitions: i32) -> Result<Self, ProcessorError> {
        let mut tenants = HashMap::new();
        for tenant in &config.tenants {
            let caps = match &tenant.caps {
                Some(caps) => Some(caps.resolve().map_err(|problems| {
                    ProcessorError::Startup(format!(
                        "tenant `{}` caps: {}",
                        tenant.id,
                        problems.join("; ")
                    ))
                })?),
                None => None,
            };
            let breaker = tenant.breaker.clone();
            tenants.insert(tenant.id.clone(), TenantRules { caps, breaker });
        }
        Ok(Self::from_rules(tenants, partition, partitions))
    }

    pub fn from_rules(
        tenants: impl IntoIterator<Item = (String, TenantRules)>,
        partition: i32,
        partitions: i32,
    ) -> Self {
        Self {
            tenants: Arc::new(tenants.into_iter().collect()),
            partition,
            partitions,
        }
    }

    pub fn rules(&self, tenant: &str) -> Option<&TenantRules> {
        self.tenants.get(tenant)
    }

    /// Admission of a new event at stream time `at`: the breaker, then the caps.
    pub fn admit(
        &self,
        state: &mut TenantState,
        meta: &RawMeta,
        body_len: usize,
        at: Millis,
    ) -> (Decision, Vec<AlertRecord>) {
        let mut alerts = Vec::new();
        let breaker = self.rules(&meta.tenant).and_then(|r| r.breaker.as_ref());
        if let Some(breaker) = breaker {
            let (held, opened) =
                state
                    .breaker
                    .observe(breaker, &meta.tenant, &meta.entity, at, &state.others);
            alerts.extend(opened);
            if let Some(held) = held {
                let reason = match held {
                    Held::Entity => DeferReason::Loop,
                    Held::Tenant => DeferReason::Spike,
                };
                let until = None;
                return (Decision::Defer(Deferral { reason, until }), alerts);
            }
        }
        let (decision, cap_alerts) = self.readmit(state, meta, body_len, at);
        alerts.extend(cap_alerts);
        (decision, alerts)
    }

    /// The caps alone, for a released event (its arrival was already seen by the breaker).
    pub fn readmit(
        &self,
        state: &mut TenantState,
        meta: &RawMeta,
        body_len: usize,
        at: Millis,
    ) -> (Decision, Vec<AlertRecord>) {
        let Some(limits) = self.rules(&meta.tenant).and_then(|r| r.caps.as_ref()) else {
            return (Decision::Admit(None), Vec::new());
        };
        state.ledger.roll(limits.timezone, at);
        let estimate = estimate(limits, &meta.source, &meta.event_type, body_len);
        let used = tenant_used(&state.ledger, &state.others);
        let (decision, deferred_by) = match admit(&used, limits, estimate) {
            Admission::Admit => {
                let entry = state.ledger.record_admitted(estimate);
                (Decision::Admit(Some(entry)), None)
            }
            Admission::Defer(cap) => {
                let until = Some(state.ledger.window(cap).end_ms);
                let reason = DeferReason::Cap(cap);
                (Decision::Defer(Deferral { reason, until }), Some(cap))
            }
        };
        let alerts = self
            .update_status(&meta.tenant, limits, state, deferred_by, at)
            .0;
        (decision, alerts)
    }

    /// Applies a usage report at stream time `at`; `previous` is the event's stored entry,
    /// `reported_at` when the report was written (its Kafka timestamp; never later than `at`
    /// counts). Returns the entry to store (None: nothing changed, e.g. a repeated report).
    pub fn report(
        &self,
        state: &mut TenantState,
        previous: Option<&EventUsage>,
        report: &UsageRecord,
        at: Millis,
        reported_at: Option<Millis>,
    ) -> (Option<EventUsage>, Vec<AlertRecord>) {
        let Some(limits) = self.rules(&report.tenant).and_then(|r| r.caps.as_ref()) else {
            return (None, Vec::new());
        };
        state.ledger.roll(limits.timezone, at);
        let actual = Usage {
            tokens: report.tokens,
            cost_micros: report.cost_micros,
        };
        let reported = reported_at.map_or(at, |r| r.min(at));
        let reported_day = window_of(WindowKind::Day, limits.timezone, reported).start_ms;
        let entry = state.ledger.apply_report(previous, actual, reported_day);
        let alerts = self
            .update_status(&report.tenant, limits, state, None, at)
            .0;
        (entry, alerts)
    }

    /// Moves the tenant to stream time `at`: window resets, recovered caps.
    pub fn tick(&self, state: &mut TenantState, tenant: &str, at: Millis) -> Tick {
        let Some(limits) = self.rules(tenant).and_then(|r| r.caps.as_ref()) else {
            return Tick::default();
        };
        state.ledger.roll(limits.timezone, at);
        let (alerts, reset) = self.update_status(tenant, limits, state, None, at);
        let release = match limits.on_window_reset {
            OnWindowReset::Release => reset,
            OnWindowReset::Keep => Vec::new(),
        };
        Tick { alerts, release }
    }

    /// The same rules, for the task of `partition`.
    pub fn for_partition(&self, partition: i32) -> Self {
        Self {
            partition,
            ..self.clone()
        }
    }

    /// The partition of `raw` whose task this engine decides for.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Whether any tenant has caps or a breaker (otherwise admission is skipped entirely).
    pub fn any(&self) -> bool {
        self.tenants
            .values()
            .any(|r| r.caps.is_some() || r.breaker.is_some())
    }

    /// This task's share of the tenant's usage, to publish to `budget`.
    pub fn share(&self, state: &TenantState, tenant: &str) -> BudgetShare {
        BudgetShare::of(
            tenant,
            self.partition,
            &state.ledger,
            &state.status,
            &state.breaker,
        )
    }

    /// The state of the entity's and the tenant's breakers (for metrics).
    pub fn breaker_phases(state: &TenantState, entity: &str) -> (Phase, Phase) {
        let entity = state.breaker.entities.get(entity).map(|t| t.phase);
        (entity.unwrap_or_default(), state.breaker.tenant.phase)
    }

    /// New status and its alerts (only on the tenant's alert partition), and the caps
    /// reset while this task held events they deferred.
    fn update_status(
        &self,
        tenant: &str,
        limits: &CapLimits,
        state: &mut TenantState,
        deferred_by: Option<CapKind>,
        at: Millis,
    ) -> (Vec<AlertRecord>, Vec<CapKind>) {
        let used = tenant_used(&state.ledger, &state.others);
        let others = &state.others;
        let elsewhere = |cap, window| others.deferred_in(cap, window);
        let next = state
            .status
            .next(limits, &state.ledger, &used, deferred_by, elsewhere);
        let alerts = if alert_partition(tenant, self.partitions) == self.partition {
            cap_alerts(tenant, &state.status, &next, at)
        } else {
            Vec::new()
        };
        let reset = state.status.reset_with_deferrals(&next);
        state.status = next;
        (alerts, reset)
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
