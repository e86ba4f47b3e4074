//! Cap alerts, from the change of a tenant's [`CapStatus`]: one `cap_reached` per tenant,
//! window and cap — when an event is first deferred by that cap, or usage reports push the
//! tenant past it — and one `cap_recovered` when the window of a reached cap resets. Also
//! the constructors of the breaker's `loop_suspected` / `spike_suspected` alerts. Shapes are
//! those of `schemas/avro/alerts.avsc`; every time is stream time.

use std::collections::BTreeMap;

use schemas::config::CapLimits;
use schemas::records::AlertRecord;
use schemas::time::{to_rfc3339, Millis};
use serde::{Deserialize, Serialize};

use super::ledger::{limit, Ledger, Used};
use super::window::Window;
use super::CapKind;

/// Where one cap stands in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapState {
    pub window: Window,
    pub limit: u64,
    /// Tenant-wide usage as this task sees it.
    pub used: u64,
    /// This task deferred an event by this cap in this window (its events to release).
    pub deferred_here: bool,
    /// Tenant-wide: an event was deferred by this cap in this window (here or on another
    /// partition), or usage went past it.
    pub reached: bool,
}

/// The state of every configured cap of a tenant, kept with the tenant's ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapStatus {
    pub caps: BTreeMap<CapKind, CapState>,
}

impl CapStatus {
    /// The status after an update of `ledger` to tenant-wide `used`. `deferred_by` is the cap
    /// that just deferred an event here, if one did; `deferred_elsewhere` tells whether
    /// another partition deferred by a cap in a window. Both flags stay set within a window.
    pub fn next(
        &self,
        limits: &CapLimits,
        ledger: &Ledger,
        used: &Used,
        deferred_by: Option<CapKind>,
        deferred_elsewhere: impl Fn(CapKind, Window) -> bool,
    ) -> CapStatus {
        let mut caps = BTreeMap::new();
        for cap in CapKind::ALL {
            let Some(limit) = limit(limits, cap) else {
                continue;
            };
            let window = ledger.window(cap);
            let used = used.of(cap);
            let before = self.caps.get(&cap).filter(|s| s.window == window);
            let deferred_here = before.is_some_and(|s| s.deferred_here) || deferred_by == Some(cap);
            let reached = before.is_some_and(|s| s.reached)
                || deferred_here
                || used > limit
                || deferred_elsewhere(cap, window);
            caps.insert(
                cap,
                CapState {
                    window,
                    limit,
                    used,
                    deferred_here,
                    reached,
                },
            );
        }
        CapStatus { caps }
    }

    /// Whether any cap is reached in its current window.
    pub fn any_reached(&self) -> bool {
        self.caps.values().any(|s| s.reached)
    }

    /// The caps that deferred an event here in their current window.
    pub fn deferred_here(&self) -> Vec<CapKind> {
        self.caps
            .iter()
            .filter(|(_, s)| s.deferred_here)
            .map(|(&cap, _)| cap)
            .collect()
    }

    /// The caps whose window changed from `self` to `next` while this task held events
    /// deferred by them: their events may be released.
    pub fn reset_with_deferrals(&self, next: &CapStatus) -> Vec<CapKind> {
        self.caps
            .iter()
            .filter(|(cap, s)| {
                s.deferred_here && next.caps.get(cap).is_none_or(|n| n.window != s.window)
            })
            .map(|(&cap, _)| cap)
            .collect()
    }
}

/// The alerts for a change from `previous` to `next`: `cap_recovered` for a reached cap
/// whose window changed (the values after the reset), then `cap_reached` for a cap newly
/// reached in its window. A cap no longer configured is forgotten without an alert.
pub fn cap_alerts(
    tenant: &str,
    previous: &CapStatus,
    next: &CapStatus,
    at: Millis,
) -> Vec<AlertRecord> {
    let mut alerts = Vec::new();
    for (&cap, now) in &next.caps {
        let before = previous.caps.get(&cap);
        if before.is_some_and(|b| b.reached && b.window != now.window) {
            alerts.push(cap_alert(tenant, "cap_recovered", cap, now, at));
        }
        let already = before.is_some_and(|b| b.reached && b.window == now.window);
        if now.reached && !already {
            alerts.push(cap_alert(tenant, "cap_reached", cap, now, at));
        }
    }
    alerts
}

fn cap_alert(tenant: &str, kind: &str, cap: CapKind, state: &CapState, at: Millis) -> AlertRecord {
    let end = to_rfc3339(state.window.end_ms);
    let message = if kind == "cap_reached" {
        format!(
            "tenant {tenant} reached its {} cap ({} of {}); events are deferred until {end}",
            cap.as_str(),
            state.used,
            state.limit
        )
    } else {
        format!(
            "tenant {tenant} is within its {} cap again ({} of {}) in the window ending {end}",
            cap.as_str(),
            state.used,
            state.limit
        )
    };
    AlertRecord {
        tenant: tenant.to_owned(),
        kind: kind.to_owned(),
        cap: Some(cap.as_str().to_owned()),
        entity: None,
        limit: Some(state.limit),
        observed: Some(state.used),
        window_start: Some(to_rfc3339(state.window.start_ms)),
        window_end: Some(end),
        raised_at: to_rfc3339(at),
        message,
        source: None,
    }
}

/// A breaker opened: on `entity` (`loop_suspected`) or on the whole tenant
/// (`spike_suspected`, `entity` None), with the rate over the minute before `at`.
pub fn breaker_opened(
    tenant: &str,
    entity: Option<&str>,
    limit: u64,
    observed: u64,
    at: Millis,
) -> AlertRecord {
    let (kind, message) = match entity {
        Some(entity) => (
            "loop_suspected",
            format!(
                "tenant {tenant}: entity {entity} received {observed} events in a minute \
                 (threshold {limit}); its events are deferred"
            ),
        ),
        None => (
            "spike_suspected",
            format!(
                "tenant {tenant} received {observed} events in a minute (threshold {limit}); \
                 its events are deferred"
            ),
        ),
    };
    AlertRecord {
        tenant: tenant.to_owned(),
        kind: kind.to_owned(),
        cap: None,
        entity: entity.map(str::to_owned),
        limit: Some(limit),
        observed: Some(observed),
        window_start: Some(to_rfc3339(at.saturating_sub(60_000))),
        window_end: Some(to_rfc3339(at)),
        raised_at: to_rfc3339(at),
        message,
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::test_support::{at, caps};
    use crate::caps::Usage;
    use chrono_tz::Tz;

    fn nowhere(_: CapKind, _: Window) -> bool {
        false
    }

    fn kinds(alerts: &[AlertRecord]) -> Vec<(&str, &str)> {
        alerts
            .iter()
            .map(|a| (a.kind.as_str(), a.cap.as_deref().unwrap_or("")))
            .collect()
    }

    #[test]
    fn reached_once_per_window_and_recovered_when_it_resets() {
        let limits = caps(Some(2), Some(100), None);
        let mut ledger = Ledger::default();
        ledger.roll(Tz::UTC, at("2026-11-22T17:00:00Z"));
        let mut status = CapStatus::default();
        let mut all = Vec::new();
        for i in 0..5 {
            let deferred = (i >= 2).then_some(CapKind::EventsPerHour);
            if deferred.is_none() {
                ledger.record_admitted(Usage::default());
            }
            let next = status.next(&limits, &ledger, &ledger.used(), deferred, nowhere);
            all.extend(cap_alerts(
                "acme",
                &status,
                &next,
                at("2026-11-22T17:42:05Z"),
            ));
            status = next;
        }
        assert_eq!(kinds(&all), vec![("cap_reached", "events_per_hour")]);
        assert_eq!(all[0].limit, Some(2));
        assert_eq!(
            all[0].window_end.as_deref(),
            Some("2026-11-22T18:00:00.000Z")
        );
        assert!(status.any_reached());

        ledger.roll(Tz::UTC, at("2026-11-22T18:00:00Z"));
        let next = status.next(&limits, &ledger, &ledger.used(), None, nowhere);
        let alerts = cap_alerts("acme", &status, &next, at("2026-11-22T18:00:00Z"));
        assert_eq!(kinds(&alerts), vec![("cap_recovered", "events_per_hour")]);
        assert_eq!(alerts[0].observed, Some(0));
        assert_eq!(
            alerts[0].window_start.as_deref(),
            Some("2026-11-22T18:00:00.000Z")
        );
        assert!(!next.any_reached());
        // Nothing more until the cap is reached again.
        let again = next.next(&limits, &ledger, &ledger.used(), None, nowhere);
        assert!(cap_alerts("acme", &next, &again, at("2026-11-22T18:01:00Z")).is_empty());
    }

    #[test]
    fn usage_past_a_cap_reaches_it_without_a_deferral() {
        let limits = caps(None, Some(100), None);
        let mut ledger = Ledger::default();
        ledger.roll(Tz::UTC, at("2026-11-22T17:00:00Z"));
        let entry = ledger.record_admitted(Usage {
            tokens: 10,
            cost_micros: 0,
        });
        let status = CapStatus::default().next(&limits, &ledger, &ledger.used(), None, nowhere);
        let today = ledger.day.start_ms;
        ledger.apply_report(
            Some(&entry),
            Usage {
                tokens: 101,
                cost_micros: 0,
            },
            today,
        );
        let next = status.next(&limits, &ledger, &ledger.used(), None, nowhere);
        let alerts = cap_alerts("acme", &status, &next, at("2026-11-22T17:30:00Z"));
        assert_eq!(kinds(&alerts), vec![("cap_reached", "tokens_per_day")]);
        assert_eq!(alerts[0].observed, Some(101));
    }

    #[test]
    fn breaker_alerts_name_the_entity_only_for_loops() {
        let a = breaker_opened("acme", Some("o1"), 300, 301, at("2026-11-22T17:30:00Z"));
        assert_eq!(
            (a.kind.as_str(), a.entity.as_deref()),
            ("loop_suspected", Some("o1"))
        );
        assert_eq!(a.window_start.as_deref(), Some("2026-11-22T17:29:00.000Z"));
        let s = breaker_opened("acme", None, 600, 900, at("2026-11-22T17:30:00Z"));
        assert_eq!(
            (s.kind.as_str(), s.entity.as_deref()),
            ("spike_suspected", None)
        );
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""cap":null,"entity":null"#), "{text}");
    }
}
