//! A tenant's usage in its current windows, as seen by one partition task, and the
//! admission check against the caps.
//!
//! The [`Ledger`] holds small totals: events in the current hour, and for the current day
//! the estimates of admitted events not yet reported plus the actual usage reported. The
//! effective usage of an event is its actual usage once reported, else its estimate. Per
//! event, an [`EventUsage`] entry (stored by the task under the event's id, kept at least
//! as long as reports may arrive) remembers the estimate and the actual, so that:
//!
//! * **a repeated report counts once**: the same numbers for the same event change nothing;
//! * **a different report replaces the previous one** rather than adding to it (workers
//!   correct themselves by re-sending; summing would count an event twice);
//! * **a report for an event outside the current day window** — admitted in a window that
//!   has since rolled over, or unknown (its entry expired, or another task admitted it) — is
//!   counted in full in the window current at the report's time: the usage happened now, and
//!   closed windows are never reopened. Its entry then records it, so a repeat still counts
//!   once; a later different report for an event whose report was counted in a closed window
//!   is recorded but changes nothing.
//!
//! Time must not go backwards between calls (stream time never does); an earlier instant
//! counts in the current windows.

use chrono_tz::Tz;
use schemas::config::CapLimits;
use schemas::time::Millis;
use serde::{Deserialize, Serialize};

use super::window::{window_of, Window, WindowKind};
use super::{CapKind, Usage};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub hour: Window,
    /// Events admitted in `hour`.
    pub hour_events: u64,
    pub day: Window,
    /// Events admitted in `day`.
    pub day_events: u64,
    /// Estimates of the events admitted in `day` that have no usage report yet.
    pub estimated: Usage,
    /// Usage reported in `day`.
    pub actual: Usage,
    /// The windows before `hour` and `day` and what they ended with, for the budget share: a
    /// partition still in those windows counts them.
    #[serde(default)]
    pub previous: Previous,
}

/// A ledger's last closed windows and their usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    pub hour: Option<(Millis, u64)>,
    pub day: Option<(Millis, Usage)>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            hour: Window::NONE,
            hour_events: 0,
            day: Window::NONE,
            day_events: 0,
            estimated: Usage::default(),
            actual: Usage::default(),
            previous: Previous::default(),
        }
    }
}

/// Which windows a [`Ledger::roll`] started afresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollover {
    pub hour: bool,
    pub day: bool,
}

/// What an event uses, per cap unit: events in the hour window, tokens and cost in the day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Used {
    pub events: u64,
    pub tokens: u64,
    pub cost_micros: u64,
}

impl Used {
    pub fn plus(self, o: Used) -> Used {
        Used {
            events: self.events.saturating_add(o.events),
            tokens: self.tokens.saturating_add(o.tokens),
            cost_micros: self.cost_micros.saturating_add(o.cost_micros),
        }
    }

    pub fn of(&self, cap: CapKind) -> u64 {
        match cap {
            CapKind::EventsPerHour => self.events,
            CapKind::TokensPerDay => self.tokens,
            CapKind::CostPerDay => self.cost_micros,
        }
    }
}

/// The per-event entry: the estimate made at admission and the actual usage once reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventUsage {
    /// Start of the day window the event's usage is counted in.
    pub day_start: Millis,
    /// None for an event this ledger did not admit (a report came first).
    pub estimate: Option<Usage>,
    pub actual: Option<Usage>,
}

impl EventUsage {
    pub fn effective(&self) -> Usage {
        self.actual.or(self.estimate).unwrap_or_default()
    }
}

impl Ledger {
    /// Moves to the windows containing `at` when it is past the current ones.
    pub fn roll(&mut self, tz: Tz, at: Millis) -> Rollover {
        let mut rolled = Rollover::default();
        if at >= self.hour.end_ms {
            if self.hour != Window::NONE {
                self.previous.hour = Some((self.hour.start_ms, self.hour_events));
            }
            self.hour = window_of(WindowKind::Hour, tz, at);
            self.hour_events = 0;
            rolled.hour = true;
        }
        if at >= self.day.end_ms {
            if self.day != Window::NONE {
                self.previous.day = Some((self.day.start_ms, self.estimated.plus(self.actual)));
            }
            self.day = window_of(WindowKind::Day, tz, at);
            self.day_events = 0;
            self.estimated = Usage::default();
            self.actual = Usage::default();
            rolled.day = true;
        }
        rolled
    }

    pub fn window(&self, cap: CapKind) -> Window {
        match cap.window_kind() {
            WindowKind::Hour => self.hour,
            WindowKind::Day => self.day,
        }
    }

    /// This ledger's effective usage in its current windows.
    pub fn used(&self) -> Used {
        let day = self.estimated.plus(self.actual);
        Used {
            events: self.hour_events,
            tokens: day.tokens,
            cost_micros: day.cost_micros,
        }
    }

    /// Counts an admitted event; the returned entry is for the task to store.
    pub fn record_admitted(&mut self, estimate: Usage) -> EventUsage {
        self.hour_events = self.hour_events.saturating_add(1);
        self.day_events = self.day_events.saturating_add(1);
        self.estimated = self.estimated.plus(estimate);
        EventUsage {
            day_start: self.day.start_ms,
            estimate: Some(estimate),
            actual: None,
        }
    }

    /// Applies a usage report for an event whose stored entry is `previous` (None: unknown),
    /// written in the day starting at `reported_day`. Returns the entry to store, or None when
    /// the report changes nothing (a repeat). A report counts in the day it was written: one
    /// written in a day already closed (read late, or read again) is recorded and counts
    /// nothing today, unless it corrects an estimate counted today.
    pub fn apply_report(
        &mut self,
        previous: Option<&EventUsage>,
        actual: Usage,
        reported_day: Millis,
    ) -> Option<EventUsage> {
        let current = self.day.start_ms;
        let counted_here = previous.is_some_and(|p| p.day_start == current);
        match previous {
            Some(p) if p.actual == Some(actual) => return None,
            // Written in a day that has closed (read late, or again): recorded, counts nothing.
            _ if !counted_here && reported_day < current => {
                return Some(EventUsage {
                    day_start: previous.map_or(reported_day, |p| p.day_start),
                    estimate: previous.and_then(|p| p.estimate),
                    actual: Some(actual),
                })
            }
            Some(p) if counted_here => match p.actual {
                None => {
                    self.estimated = self.estimated.minus(p.estimate.unwrap_or_default());
                    self.actual = self.actual.plus(actual);
                }
                Some(old) => self.actual = self.actual.minus(old).plus(actual),
            },
            // Counted in a closed window: record the correction, count nothing.
            Some(p) if p.actual.is_some() => {
                return Some(EventUsage {
                    actual: Some(actual),
                    ..p.clone()
                })
            }
            _ => self.actual = self.actual.plus(actual),
        }
        Some(EventUsage {
            day_start: current,
            estimate: previous.and_then(|p| p.estimate),
            actual: Some(actual),
        })
    }
}

/// The outcome of checking one event against the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// The first cap (in [`CapKind::ALL`] order) the event would exceed.
    Defer(CapKind),
}

/// Admits when *used + estimate* stays within every configured cap; reaching a cap exactly
/// is within it (a cap of N events admits N).
pub fn admit(used: &Used, limits: &CapLimits, estimate: Usage) -> Admission {
    let this = Used {
        events: 1,
        tokens: estimate.tokens,
        cost_micros: estimate.cost_micros,
    };
    let after = used.plus(this);
    CapKind::ALL
        .into_iter()
        .find(|&cap| limit(limits, cap).is_some_and(|limit| after.of(cap) > limit))
        .map_or(Admission::Admit, Admission::Defer)
}

/// The configured limit of `cap`, in its unit.
pub fn limit(limits: &CapLimits, cap: CapKind) -> Option<u64> {
    match cap {
        CapKind::EventsPerHour => limits.events_per_hour,
        CapKind::TokensPerDay => limits.tokens_per_day,
        CapKind::CostPerDay => limits.cost_per_day_micros,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::caps::test_support::{at, caps};

    fn usage(tokens: u64, cost_micros: u64) -> Usage {
        Usage {
            tokens,
            cost_micros,
        }
    }

    #[test]
    fn reaching_a_cap_exactly_is_admitted_and_one_more_is_not() {
        let limits = caps(Some(3), Some(100), Some(1_000));
        let mut ledger = Ledger::default();
        ledger.roll(Tz::UTC, at("2026-01-01T10:00:00Z"));
        for _ in 0..3 {
            assert_eq!(
                admit(&ledger.used(), &limits, usage(0, 0)),
                Admission::Admit
            );
            ledger.record_admitted(usage(0, 0));
        }
        assert_eq!(
            admit(&ledger.used(), &limits, usage(0, 0)),
            Admission::Defer(CapKind::EventsPerHour)
        );
        let fresh = Ledger::default();
        let only_tokens = caps(None, Some(100), Some(1_000));
        assert_eq!(
            admit(&fresh.used(), &only_tokens, usage(100, 1_000)),
            Admission::Admit
        );
        assert_eq!(
            admit(&fresh.used(), &only_tokens, usage(101, 0)),
            Admission::Defer(CapKind::TokensPerDay)
        );
        assert_eq!(
            admit(&fresh.used(), &only_tokens, usage(0, 1_001)),
            Admission::Defer(CapKind::CostPerDay)
        );
        assert_eq!(
            admit(&fresh.used(), &caps(None, None, None), usage(u64::MAX, 9)),
            Admission::Admit
        );
    }

    #[test]
    fn windows_roll_over_independently() {
        let mut ledger = Ledger::default();
        ledger.roll(Tz::UTC, at("2026-01-01T10:59:59.999Z"));
        ledger.record_admitted(usage(10, 1));
        let rolled = ledger.roll(Tz::UTC, at("2026-01-01T11:00:00Z"));
        assert_eq!(
            rolled,
            Rollover {
                hour: true,
                day: false
            }
        );
        assert_eq!(
            ledger.used(),
            Used {
                events: 0,
                tokens: 10,
                cost_micros: 1
            }
        );
        let rolled = ledger.roll(Tz::UTC, at("2026-01-02T00:00:00Z"));
        assert_eq!(
            rolled,
            Rollover {
                hour: true,
                day: true
            }
        );
        assert_eq!(ledger.used(), Used::default());
        // Time going back counts in the current windows.
        assert_eq!(
            ledger.roll(Tz::UTC, at("2026-01-01T23:00:00Z")),
            Rollover::default()
        );
    }

    #[test]
    fn a_repeated_report_counts_once_and_a_different_one_replaces_it() {
        let mut ledger = Ledger::default();
        ledger.roll(Tz::UTC, at("2026-01-01T10:00:00Z"));
        let entry = ledger.record_admitted(usage(100, 10));
        let reported = ledger
            .apply_report(Some(&entry), usage(40, 4), today(&ledger))
            .unwrap();
        assert_eq!(ledger.used().tokens, 40);
        assert_eq!(reported.effective(), usage(40, 4));
        assert_eq!(
            ledger.apply_report(Some(&reported), usage(40, 4), today(&ledger)),
            None
        );
        assert_eq!(ledger.used().tokens, 40);
        let replaced = ledger
            .apply_report(Some(&reported), usage(70, 7), today(&ledger))
            .unwrap();
        assert_eq!((ledger.used().tokens, ledger.used().cost_micros), (70, 7));
        assert_eq!(replaced.estimate, Some(usage(100, 10)));
        assert_eq!(ledger.estimated, Usage::default());
    }

    #[test]
    fn a_report_larger_than_its_estimate_pushes_the_tenant_over_the_cap() {
        let limits = caps(None, Some(1_000), None);
        let mut ledger = Ledger::default();
        ledger.roll(Tz::UTC, at("2026-01-01T10:00:00Z"));
        let entry = ledger.record_admitted(usage(100, 0));
        assert_eq!(
            admit(&ledger.used(), &limits, usage(100, 0)),
            Admission::Admit
        );
        ledger.apply_report(Some(&entry), usage(1_200, 0), today(&ledger));
        assert_eq!(
            admit(&ledger.used(), &limits, usage(0, 0)),
            Admission::Defer(CapKind::TokensPerDay)
        );
    }

    #[test]
    fn reports_outside_the_current_window_count_where_they_arrive() {
        let mut ledger = Ledger::default();
        ledger.roll(Tz::UTC, at("2026-01-01T23:00:00Z"));
        let yesterday = ledger.record_admitted(usage(100, 0));
        ledger.roll(Tz::UTC, at("2026-01-02T01:00:00Z"));
        // Admitted yesterday, reported today: counted today, in full.
        let moved = ledger
            .apply_report(Some(&yesterday), usage(30, 0), today(&ledger))
            .unwrap();
        assert_eq!(ledger.used().tokens, 30);
        assert_eq!(moved.day_start, ledger.day.start_ms);
        assert_eq!(
            ledger.apply_report(Some(&moved), usage(30, 0), today(&ledger)),
            None
        );
        // Unknown event: counted, and remembered so a repeat counts once.
        let unknown = ledger
            .apply_report(None, usage(5, 0), today(&ledger))
            .unwrap();
        assert_eq!((unknown.estimate, ledger.used().tokens), (None, 35));
        assert_eq!(
            ledger.apply_report(Some(&unknown), usage(5, 0), today(&ledger)),
            None
        );
        // Reported in a window that has closed: a correction is recorded, nothing counted.
        ledger.roll(Tz::UTC, at("2026-01-03T01:00:00Z"));
        let corrected = ledger
            .apply_report(Some(&moved), usage(50, 0), today(&ledger))
            .unwrap();
        assert_eq!(
            (corrected.actual, ledger.used().tokens),
            (Some(usage(50, 0)), 0)
        );
    }

    /// A report counts in the day it was written: read late or again (after a restart), a
    /// report from a closed day charges nothing today, whether its event is unknown or was
    /// counted in that day; one that corrects an estimate counted today still does.
    #[test]
    fn reports_written_in_a_closed_day_charge_nothing_today() {
        let mut ledger = Ledger::default();
        ledger.roll(Tz::UTC, at("2026-01-01T10:00:00Z"));
        let yesterday = ledger.day.start_ms;
        let old_event = ledger.record_admitted(usage(100, 0));
        ledger.roll(Tz::UTC, at("2026-01-08T10:00:00Z"));
        let week_ago = ledger.apply_report(None, usage(500, 5), yesterday).unwrap();
        assert_eq!(week_ago.day_start, yesterday);
        let late = ledger
            .apply_report(Some(&old_event), usage(70, 0), yesterday)
            .unwrap();
        assert_eq!(
            (late.day_start, late.actual),
            (yesterday, Some(usage(70, 0)))
        );
        assert_eq!(ledger.used(), Used::default());
        let todays = ledger.record_admitted(usage(100, 0));
        ledger.apply_report(Some(&todays), usage(40, 0), yesterday);
        assert_eq!(ledger.used().tokens, 40);
        ledger.apply_report(None, usage(5, 0), today(&ledger));
        assert_eq!(ledger.used().tokens, 45);
    }

    fn today(ledger: &Ledger) -> Millis {
        ledger.day.start_ms
    }
}
