//! The tenant-wide budget: every partition task publishes its share of a tenant's usage
//! (a [`BudgetShare`], to a compacted `budget` topic keyed `tenant/partition`), and decides
//! on its own exact usage plus the last share of every other partition.
//!
//! A share covers two windows, as the caps do: events in the hour window, tokens and cost in
//! the day window. A share counts only while its window is the one the reading task is in:
//! a share of a past window (its partition has not published since the reset) counts as
//! nothing, and so does one of a later window (its partition is ahead in stream time).

use std::collections::BTreeMap;

use schemas::time::Millis;
use serde::{Deserialize, Serialize};

use super::alerts::CapStatus;
use super::breaker::{BreakerState, Meter, Phase};
use super::ledger::{Ledger, Previous, Used};
use super::window::{Window, WindowKind};
use super::CapKind;

/// One partition's usage of one tenant in its current windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetShare {
    pub tenant: String,
    pub partition: i32,
    pub hour_start: Millis,
    /// Events admitted in the hour window.
    pub events: u64,
    pub day_start: Millis,
    /// Effective tokens (actual where reported, else estimated) in the day window.
    pub tokens: u64,
    pub cost_micros: u64,
    /// Caps that deferred an event on this partition in their current window, so that the
    /// partition raising the tenant's cap alerts learns of them.
    pub deferred: Vec<CapKind>,
    /// The tenant's arrivals on this partition per second of its last minute (the tenant
    /// breaker counts tenant-wide).
    #[serde(default)]
    pub arrivals: Meter,
    /// Until when this partition's tenant breaker holds events back (open, or half-open for
    /// its probe minute): another partition opening it meanwhile raises no second alert.
    #[serde(default)]
    pub breaker_until: Option<Millis>,
    /// This partition's baseline of the tenant's events per minute, in thousandths (the
    /// tenant's is the sum over partitions).
    #[serde(default)]
    pub baseline_milli: u64,
    /// The windows before `hour_start` and `day_start` and this partition's usage in them: a
    /// partition that lags behind, still in those windows, counts them (not zero).
    #[serde(default)]
    pub previous: Previous,
}

impl BudgetShare {
    pub fn of(
        tenant: &str,
        partition: i32,
        ledger: &Ledger,
        status: &CapStatus,
        breaker: &BreakerState,
    ) -> Self {
        let used = ledger.used();
        let breaker_until = match breaker.tenant.phase {
            Phase::Closed => None,
            Phase::Open { until } => Some(until),
            Phase::HalfOpen { since } => Some(since.saturating_add(60_000)),
        };
        Self {
            tenant: tenant.to_owned(),
            partition,
            hour_start: ledger.hour.start_ms,
            events: used.events,
            day_start: ledger.day.start_ms,
            tokens: used.tokens,
            cost_micros: used.cost_micros,
            deferred: status.deferred_here(),
            arrivals: breaker.tenant.meter.clone(),
            breaker_until,
            baseline_milli: breaker.tenant.baseline_milli,
            previous: ledger.previous,
        }
    }

    fn window_start(&self, cap: CapKind) -> Millis {
        match cap.window_kind() {
            WindowKind::Hour => self.hour_start,
            WindowKind::Day => self.day_start,
        }
    }

    /// The record key in the compacted `budget` topic: one live record per partition.
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.partition)
    }
}

/// The last share of every other partition, as taken into the task's store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherShares {
    pub by_partition: BTreeMap<i32, BudgetShare>,
}

impl OtherShares {
    /// Keeps `share` unless it is this task's own or older than the one held (a share never
    /// moves back to an earlier window). Returns whether anything changed.
    pub fn absorb(&mut self, own_partition: i32, share: BudgetShare) -> bool {
        if share.partition == own_partition {
            return false;
        }
        match self.by_partition.get(&share.partition) {
            Some(held) if *held == share => false,
            Some(held)
                if (share.day_start, share.hour_start) < (held.day_start, held.hour_start) =>
            {
                false
            }
            _ => {
                self.by_partition.insert(share.partition, share);
                true
            }
        }
    }

    /// Whether another partition deferred an event by `cap` in `window`.
    pub fn deferred_in(&self, cap: CapKind, window: Window) -> bool {
        self.by_partition
            .values()
            .any(|s| s.window_start(cap) == window.start_ms && s.deferred.contains(&cap))
    }

    /// The tenant's arrivals on the other partitions from `from` to `at` (their seconds within
    /// the minute ending at `at`).
    pub fn arrivals_since(&self, from: Millis, at: Millis) -> u64 {
        self.by_partition
            .values()
            .map(|s| s.arrivals.since(from, at))
            .sum()
    }

    /// The other partitions' baselines of the tenant's events per minute, in thousandths.
    pub fn baseline_milli(&self) -> u64 {
        self.by_partition
            .values()
            .fold(0u64, |sum, s| sum.saturating_add(s.baseline_milli))
    }

    /// Whether another partition's tenant breaker holds events back at `at`.
    pub fn breaker_open(&self, at: Millis) -> bool {
        self.by_partition
            .values()
            .any(|s| s.breaker_until.is_some_and(|until| at < until))
    }

    /// The other partitions' usage in the given windows.
    pub fn used_in(&self, hour: Window, day: Window) -> Used {
        self.by_partition.values().fold(Used::default(), |sum, s| {
            let events = match s.previous.hour {
                _ if s.hour_start == hour.start_ms => s.events,
                Some((start, events)) if start == hour.start_ms => events,
                _ => 0,
            };
            let (tokens, cost_micros) = match s.previous.day {
                _ if s.day_start == day.start_ms => (s.tokens, s.cost_micros),
                Some((start, used)) if start == day.start_ms => (used.tokens, used.cost_micros),
                _ => (0, 0),
            };
            sum.plus(Used {
                events,
                tokens,
                cost_micros,
            })
        })
    }
}

/// The tenant-wide usage a task decides on: its own exact usage plus the others' shares.
pub fn tenant_used(local: &Ledger, others: &OtherShares) -> Used {
    local.used().plus(others.used_in(local.hour, local.day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::ledger::{admit, Admission};
    use crate::caps::test_support::{at, caps};
    use crate::caps::Usage;
    use chrono_tz::Tz;

    fn share(partition: i32, hour_start: Millis, events: u64) -> BudgetShare {
        BudgetShare {
            tenant: "acme".into(),
            partition,
            hour_start,
            events,
            day_start: 0,
            tokens: events * 10,
            cost_micros: events,
            deferred: vec![CapKind::EventsPerHour],
            arrivals: Meter::default(),
            breaker_until: None,
            baseline_milli: 0,
            previous: Previous::default(),
        }
    }

    /// A partition already in the next window still publishes what it used in the one before:
    /// a partition lagging behind, still in that window, counts it instead of zero (so it
    /// cannot admit the whole cap again at the boundary).
    #[test]
    fn a_lagging_partition_counts_the_others_previous_window() {
        let mut ahead = Ledger::default();
        ahead.roll(Tz::UTC, at("2026-01-01T10:30:00Z"));
        for _ in 0..7 {
            ahead.record_admitted(Usage::default());
        }
        ahead.roll(Tz::UTC, at("2026-01-02T00:10:00Z"));
        ahead.record_admitted(Usage::default());
        let share = BudgetShare::of(
            "acme",
            1,
            &ahead,
            &CapStatus::default(),
            &BreakerState::default(),
        );
        let json = serde_json::to_string(&share).unwrap();
        assert_eq!(serde_json::from_str::<BudgetShare>(&json).unwrap(), share);
        let mut lagging = Ledger::default();
        lagging.roll(Tz::UTC, at("2026-01-01T10:45:00Z"));
        let mut others = OtherShares::default();
        others.absorb(0, share);
        assert_eq!(tenant_used(&lagging, &others).events, 7);
        assert_eq!(
            tenant_used(&ahead, &others).events,
            2,
            "its own and its share"
        );
        lagging.roll(Tz::UTC, at("2026-01-01T12:00:00Z"));
        assert_eq!(
            tenant_used(&lagging, &others).events,
            0,
            "two windows behind"
        );
        let old = r#"{"tenant":"acme","partition":1,"hour_start":0,"events":1,"day_start":0,"tokens":0,"cost_micros":0,"deferred":[]}"#;
        assert_eq!(
            serde_json::from_str::<BudgetShare>(old).unwrap().previous,
            Previous::default()
        );
    }

    #[test]
    fn only_other_partitions_newest_shares_of_the_current_windows_count() {
        let mut ledger = Ledger::default();
        ledger.roll(Tz::UTC, at("2026-01-01T10:30:00Z"));
        ledger.record_admitted(Usage {
            tokens: 5,
            cost_micros: 1,
        });
        let (hour, day) = (ledger.hour.start_ms, ledger.day.start_ms);
        let mut others = OtherShares::default();
        assert!(!others.absorb(0, share(0, hour, 100)), "own share ignored");
        let current = BudgetShare {
            day_start: day,
            ..share(1, hour, 7)
        };
        assert!(others.absorb(0, current.clone()));
        assert!(!others.absorb(0, current.clone()), "same share again");
        let older = BudgetShare {
            hour_start: hour - 3_600_000,
            ..current.clone()
        };
        assert!(
            !others.absorb(0, older),
            "an older window never replaces a newer one"
        );
        others.absorb(
            0,
            BudgetShare {
                day_start: day,
                ..share(2, hour - 3_600_000, 9)
            },
        );
        let used = tenant_used(&ledger, &others);
        // Partition 2's events are from the previous hour; its tokens are today's.
        assert_eq!(
            used,
            Used {
                events: 1 + 7,
                tokens: 5 + 70 + 90,
                cost_micros: 1 + 7 + 9
            }
        );
        assert!(others.deferred_in(CapKind::EventsPerHour, ledger.hour));
        assert!(!others.deferred_in(CapKind::TokensPerDay, ledger.day));
        let status = CapStatus::default();
        assert_eq!(
            BudgetShare::of("acme", 3, &ledger, &status, &BreakerState::default()).key(),
            "acme/3"
        );
    }

    /// Partitions admitting at their own rates, each publishing its share every `publish` ms,
    /// seen by the others `delay` ms later: the tenant-wide total stays within the cap plus
    /// the documented bound, the sum over the other partitions of (rate × (publish + delay)).
    #[test]
    fn over_admission_stays_within_rate_times_staleness() {
        let cap = 1_000u64;
        let (publish, delay) = (1_000i64, 400i64);
        // Milliseconds between arrivals on each partition (all arrive until the end).
        let gaps = [2i64, 3, 7, 11];
        let limits = caps(Some(cap), None, None);
        let start = at("2026-01-01T10:00:00Z");
        let mut ledgers = vec![Ledger::default(); gaps.len()];
        let mut views = vec![OtherShares::default(); gaps.len()];
        let mut published: Vec<(Millis, BudgetShare)> = Vec::new();
        for t in start..start + 20_000 {
            for (p, gap) in gaps.iter().enumerate() {
                let visible = published.iter().filter(|(at, _)| *at + delay <= t);
                for (_, share) in visible {
                    views[p].absorb(p as i32, share.clone());
                }
                ledgers[p].roll(Tz::UTC, t);
                if (t - start) % gap == 0 {
                    let used = tenant_used(&ledgers[p], &views[p]);
                    if admit(&used, &limits, Usage::default()) == Admission::Admit {
                        ledgers[p].record_admitted(Usage::default());
                    }
                }
                if (t - start) % publish == 0 {
                    let share = BudgetShare::of(
                        "acme",
                        p as i32,
                        &ledgers[p],
                        &CapStatus::default(),
                        &BreakerState::default(),
                    );
                    published.push((t, share));
                }
            }
            published.retain(|(at, _)| *at + delay > t - publish * 2);
        }
        let total: u64 = ledgers.iter().map(|l| l.hour_events).sum();
        // Admissions per (publish + delay), per partition; the bound leaves out the
        // partition that admitted last, at worst the slowest one.
        let per_staleness: Vec<f64> = gaps
            .iter()
            .map(|&g| (publish + delay) as f64 / g as f64)
            .collect();
        let slowest = per_staleness.iter().cloned().fold(f64::INFINITY, f64::min);
        let worst_bound = per_staleness.iter().sum::<f64>() - slowest;
        assert!(total >= cap, "the cap is reached: {total}");
        assert!(
            (total - cap) as f64 <= worst_bound,
            "over-admitted {} > bound {worst_bound}",
            total - cap
        );
        // Without sharing, each partition would admit up to the cap by itself.
        assert!(total < cap * 2);
    }
}
