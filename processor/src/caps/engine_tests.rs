use schemas::config::Estimate;

use super::*;
use crate::caps::test_support::{at, caps, meta};

const PARTITIONS: i32 = 4;

/// Caps for tenant `acme` as seen from its alert partition (or from another one).
fn engine(rules: TenantRules, on_alert_partition: bool) -> Caps {
    let owner = alert_partition("acme", PARTITIONS);
    let partition = if on_alert_partition {
        owner
    } else {
        (owner + 1) % PARTITIONS
    };
    Caps::from_rules([("acme".to_owned(), rules)], partition, PARTITIONS)
}

fn capped(limits: CapLimits) -> TenantRules {
    TenantRules {
        caps: Some(limits),
        breaker: None,
    }
}

fn deferred_reason(decision: &Decision) -> Option<&'static str> {
    match decision {
        Decision::Defer(d) => Some(d.reason.as_str()),
        Decision::Admit(_) => None,
    }
}

#[test]
fn a_cap_of_n_events_admits_n_defers_the_rest_and_alerts_once() {
    let caps = engine(capped(caps(Some(3), None, None)), true);
    let mut state = TenantState::default();
    let now = at("2026-11-22T17:00:00Z");
    let mut alerts = Vec::new();
    let mut decisions = Vec::new();
    for i in 0..6 {
        let (d, a) = caps.admit(
            &mut state,
            &meta("acme", "o1", &format!("e{i}")),
            10,
            now + i,
        );
        decisions.push(d);
        alerts.extend(a);
    }
    assert!(decisions[..3]
        .iter()
        .all(|d| matches!(d, Decision::Admit(Some(_)))));
    for d in &decisions[3..] {
        let until = Some(at("2026-11-22T18:00:00Z"));
        let reason = DeferReason::Cap(CapKind::EventsPerHour);
        assert_eq!(*d, Decision::Defer(Deferral { reason, until }));
    }
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, "cap_reached");
    assert_eq!(alerts[0].cap.as_deref(), Some("events_per_hour"));
    assert_eq!(state.wake_at(), Some(at("2026-11-22T18:00:00Z")));

    // The window resets: one recovery, the deferred events are to be released.
    let tick = caps.tick(&mut state, "acme", at("2026-11-22T18:00:00Z"));
    assert_eq!(tick.release, vec![CapKind::EventsPerHour]);
    assert_eq!(tick.alerts.len(), 1);
    assert_eq!(tick.alerts[0].kind, "cap_recovered");
    let again = caps.tick(&mut state, "acme", at("2026-11-22T18:00:01Z"));
    assert_eq!(again, Tick::default());
    let (d, _) = caps.readmit(
        &mut state,
        &meta("acme", "o1", "e3"),
        10,
        at("2026-11-22T18:00:01Z"),
    );
    assert!(matches!(d, Decision::Admit(Some(_))));
}

#[test]
fn other_partitions_defer_silently_and_keep_means_no_release() {
    let mut limits = caps(Some(1), None, None);
    limits.on_window_reset = OnWindowReset::Keep;
    let caps = engine(capped(limits), false);
    let mut state = TenantState::default();
    let now = at("2026-11-22T17:00:00Z");
    let (_, a1) = caps.admit(&mut state, &meta("acme", "o1", "e1"), 0, now);
    let (d, a2) = caps.admit(&mut state, &meta("acme", "o1", "e2"), 0, now);
    assert_eq!(deferred_reason(&d), Some("events_per_hour"));
    assert!(a1.is_empty() && a2.is_empty(), "not the alert partition");
    let share = caps.share(&state, "acme");
    assert_eq!(share.deferred, vec![CapKind::EventsPerHour]);
    let tick = caps.tick(&mut state, "acme", at("2026-11-22T18:00:00Z"));
    assert_eq!(tick, Tick::default());
}

#[test]
fn the_alert_partition_learns_of_deferrals_from_shares() {
    let limits = caps(Some(10), None, None);
    let elsewhere = engine(capped(limits.clone()), false);
    let owner = engine(capped(limits), true);
    let now = at("2026-11-22T17:00:00Z");
    let mut busy = TenantState::default();
    for i in 0..11 {
        elsewhere.admit(&mut busy, &meta("acme", "o1", &format!("e{i}")), 0, now);
    }
    let share = elsewhere.share(&busy, "acme");
    let mut quiet = TenantState::default();
    let own = alert_partition("acme", PARTITIONS);
    assert!(quiet.absorb_share(own, share));
    let tick = owner.tick(&mut quiet, "acme", now + 1);
    assert_eq!(tick.alerts.len(), 1);
    assert_eq!(tick.alerts[0].observed, Some(10));
    assert!(
        tick.release.is_empty(),
        "nothing deferred on this partition"
    );
    // The shared usage counts against the owner's own admissions too.
    let (d, _) = owner.admit(&mut quiet, &meta("acme", "o2", "x"), 0, now + 2);
    assert_eq!(deferred_reason(&d), Some("events_per_hour"));
}

#[test]
fn usage_reports_count_once_and_can_trip_the_token_cap() {
    let mut limits = caps(None, Some(1_000), None);
    limits.estimates = vec![Estimate {
        source: None,
        event_type: None,
        fixed_tokens: 100,
        tokens_per_kib: 0,
        cost_per_1k_tokens_micros: 0,
    }];
    let caps = engine(capped(limits), true);
    let mut state = TenantState::default();
    let now = at("2026-11-22T17:00:00Z");
    let (d, _) = caps.admit(&mut state, &meta("acme", "o1", "e1"), 10, now);
    let Decision::Admit(Some(entry)) = d else {
        panic!("expected an admission")
    };
    assert_eq!(entry.estimate.unwrap().tokens, 100);
    let report = UsageRecord {
        tenant: "acme".into(),
        event_id: "e1".into(),
        tokens: 600,
        cost_micros: 0,
        source: None,
    };
    let (stored, alerts) = caps.report(&mut state, Some(&entry), &report, now + 1, None);
    let stored = stored.unwrap();
    assert!(alerts.is_empty());
    assert_eq!(
        caps.report(&mut state, Some(&stored), &report, now + 2, None)
            .0,
        None
    );
    assert_eq!(state.ledger.used().tokens, 600);
    // 600 + 100 fits; then a corrected report (replacing, not adding) goes past the cap.
    let (d, _) = caps.admit(&mut state, &meta("acme", "o1", "e2"), 10, now + 3);
    assert!(matches!(d, Decision::Admit(_)));
    let bigger = UsageRecord {
        tokens: 950,
        ..report
    };
    let (_, alerts) = caps.report(&mut state, Some(&stored), &bigger, now + 4, None);
    assert_eq!(state.ledger.used().tokens, 1_050);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].cap.as_deref(), Some("tokens_per_day"));
    let (d, more) = caps.admit(&mut state, &meta("acme", "o1", "e3"), 10, now + 5);
    assert_eq!(deferred_reason(&d), Some("tokens_per_day"));
    assert!(more.is_empty(), "already reached in this window");
}

#[test]
fn the_breaker_defers_before_the_caps_and_readmit_skips_it() {
    let rules = TenantRules {
        caps: Some(caps(Some(1_000), None, None)),
        breaker: Some(BreakerConfig {
            entity_per_minute: 5,
            ..BreakerConfig::default()
        }),
    };
    let caps = engine(rules, true);
    let mut state = TenantState::default();
    let now = at("2026-11-22T17:00:00Z");
    let mut reasons = Vec::new();
    let mut alerts = Vec::new();
    for i in 0..8 {
        let (d, a) = caps.admit(
            &mut state,
            &meta("acme", "loop", &format!("e{i}")),
            0,
            now + i,
        );
        reasons.push(deferred_reason(&d));
        alerts.extend(a);
    }
    assert_eq!(reasons[5..], [Some("loop_suspected"); 3]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(state.ledger.hour_events, 5, "deferred events use no budget");
    let (d, _) = caps.admit(&mut state, &meta("acme", "other", "x"), 0, now + 9);
    assert!(matches!(d, Decision::Admit(_)));
    let (d, _) = caps.readmit(&mut state, &meta("acme", "loop", "e5"), 0, now + 10);
    assert!(matches!(d, Decision::Admit(_)));
    let (entity, tenant) = Caps::breaker_phases(&state, "loop");
    assert!(matches!(entity, Phase::Open { .. }) && tenant == Phase::Closed);
}

#[test]
fn tenants_without_rules_are_admitted_untracked() {
    let caps = engine(TenantRules::default(), true);
    let mut state = TenantState::default();
    let (d, a) = caps.admit(&mut state, &meta("other", "o", "e"), 1, 0);
    assert_eq!((d, a), (Decision::Admit(None), Vec::new()));
    assert_eq!(caps.tick(&mut state, "other", 5), Tick::default());
    assert_eq!(state, TenantState::default());
}

#[test]
fn tenant_state_round_trips_through_the_store_encoding() {
    let rules = TenantRules {
        caps: Some(caps(Some(1), Some(5), Some(5))),
        breaker: Some(BreakerConfig::default()),
    };
    let caps = engine(rules, true);
    let mut state = TenantState::default();
    let now = at("2026-11-22T17:00:00Z");
    for i in 0..3 {
        caps.admit(
            &mut state,
            &meta("acme", "o", &format!("e{i}")),
            2048,
            now + i,
        );
    }
    let bytes = postcard::to_allocvec(&state).unwrap();
    let back: TenantState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, state);
    let json = serde_json::to_string(&caps.share(&state, "acme")).unwrap();
    assert!(json.contains(r#""deferred":["events_per_hour"]"#), "{json}");
}

#[test]
fn alert_partitions_spread_tenants() {
    let owners: std::collections::HashSet<i32> = (0..50)
        .map(|i| alert_partition(&format!("t{i}"), 6))
        .collect();
    assert!(owners.len() > 3 && owners.iter().all(|p| (0..6).contains(p)));
    assert_eq!(alert_partition("acme", 0), 0);
}
