//! Per-tenant caps and the loop/spike breaker: pure cores, without Kafka, RocksDB or the wall
//! clock. Time is always a parameter (the tenant's stream time on the partition: the greatest
//! of its sources' clocks, see [`crate::clock`]), state is plain serde
//! data the task persists, and outputs are returned, so a replay decides exactly as the live
//! run did.
//!
//! # Admission
//!
//! Each event goes through **dedupe → breaker → caps → reorder**:
//!
//! 1. dedupe drops repeated deliveries (they must not count against anything);
//! 2. the [`breaker`] counts every remaining arrival per entity and per tenant over the last
//!    minute; an open breaker defers the event (`loop_suspected` for the entity,
//!    `spike_suspected` for the tenant). Other entities of the tenant are not affected by an
//!    entity's breaker;
//! 3. the caps ([`ledger`]) check events/hour, tokens/day and cost/day against
//!    *used + this event's estimate* ([`estimate`]); an event that fits is counted, one that
//!    does not is deferred with the first cap it would break;
//! 4. admitted events go on to reorder and reconcile.
//!
//! A deferred event goes to `deferred` with its reason — **nothing is dropped**. Cap
//! deferrals carry their window's end and, with `on_window_reset = "release"`, are re-admitted
//! in order when [`Caps::tick`] reports the window reset (through [`Caps::readmit`], which
//! skips the breaker: those arrivals were already counted). Breaker deferrals wait for a
//! manual redrive, since releasing a loop's events would restart it.
//!
//! # Usage reports
//!
//! Reports from the `usage` topic replace an event's estimate by its actual usage; the
//! per-event [`EventUsage`] entry makes a repeated report count once ([`ledger`]).
//!
//! # Alerts
//!
//! One `cap_reached` per tenant, window and cap, one `cap_recovered` when that window resets
//! ([`alerts`]), raised by one partition per tenant (its *alert partition*, which learns of
//! deferrals on the others from their budget shares); one `loop_suspected` /
//! `spike_suspected` by the partition whose breaker opens ([`breaker`]). Alert times are
//! stream time.
//!
//! # Global budget and its over-admission bound
//!
//! A tenant's entities span every partition, so each task decides on **its own exact usage
//! plus the last [`BudgetShare`] published by every other partition** (a compacted `budget`
//! topic keyed `tenant/partition`, see [`budget`]). Another partition's share is at most
//! `publish interval + propagation delay` old, so the tenant-wide overshoot is bounded by
//! *the sum over the other partitions of (their admission rate × (publish interval +
//! propagation delay))*, in the cap's unit (events, or estimated tokens and cost). Usage
//! reports that exceed their estimates add to this, by how much they exceed them.
//!
//! # Determinism
//!
//! Decisions depend only on the task's store and its input. The budget view of the other
//! partitions is therefore **taken into the store as a durable step** before it is used
//! ([`TenantState::absorb_share`] in the same batch as the records it affects, and in the
//! changelog), never read live from the `budget` topic in the middle of a decision. Windows
//! follow the tenant's stream time on each partition — never another tenant's — so a
//! partition behind in stream time counts its events in its own current window.

pub mod alerts;
pub mod breaker;
pub mod budget;
mod engine;
pub mod estimate;
pub mod ledger;
pub mod window;

#[cfg(test)]
pub(crate) mod test_support;

use serde::{Deserialize, Serialize};

pub use budget::BudgetShare;
pub use engine::{Caps, Decision, DeferReason, Deferral, TenantRules, TenantState, Tick};
pub use ledger::{EventUsage, Ledger, Used};
pub use window::{window_of, Window, WindowKind};

/// One of a tenant's three caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapKind {
    EventsPerHour,
    TokensPerDay,
    CostPerDay,
}

impl CapKind {
    /// In the order admission checks them.
    pub const ALL: [CapKind; 3] = [
        CapKind::EventsPerHour,
        CapKind::TokensPerDay,
        CapKind::CostPerDay,
    ];

    /// The name used in `deferred.reason`, `alerts.cap` and the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            CapKind::EventsPerHour => "events_per_hour",
            CapKind::TokensPerDay => "tokens_per_day",
            CapKind::CostPerDay => "cost_per_day",
        }
    }

    pub fn window_kind(self) -> WindowKind {
        match self {
            CapKind::EventsPerHour => WindowKind::Hour,
            CapKind::TokensPerDay | CapKind::CostPerDay => WindowKind::Day,
        }
    }
}

/// Tokens and cost of handling one event (or a sum of them). Sums saturate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub tokens: u64,
    /// Millionths of the tenant's billing currency unit.
    pub cost_micros: u64,
}

impl Usage {
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            tokens: self.tokens.saturating_add(other.tokens),
            cost_micros: self.cost_micros.saturating_add(other.cost_micros),
        }
    }

    pub fn minus(self, other: Usage) -> Usage {
        Usage {
            tokens: self.tokens.saturating_sub(other.tokens),
            cost_micros: self.cost_micros.saturating_sub(other.cost_micros),
        }
    }
}
