use super::*;
use crate::caps::budget::OtherShares;

/// The start of a minute.
const T0: Millis = 1_699_999_980_000;

fn config() -> BreakerConfig {
    BreakerConfig {
        entity_per_minute: 100,
        cooldown_secs: 120,
        ..BreakerConfig::default()
    }
}

/// `n` arrivals on `entity`, `gap_ms` apart from `from`; the decisions and alerts.
fn burst(
    state: &mut BreakerState,
    config: &BreakerConfig,
    entity: &str,
    from: Millis,
    n: usize,
    gap_ms: Millis,
) -> (Vec<Option<Held>>, Vec<AlertRecord>) {
    let mut held = Vec::new();
    let mut alerts = Vec::new();
    for i in 0..n {
        let (h, a) = state.observe(
            config,
            "acme",
            entity,
            from + i as Millis * gap_ms,
            &OtherShares::default(),
        );
        held.push(h);
        alerts.extend(a);
    }
    (held, alerts)
}

/// In the store (binary) a meter is dense and small; in JSON (the `budget` topic) it keeps
/// its pairs form.
#[test]
fn meters_are_dense_in_the_store_and_pairs_in_json() {
    let mut track = TenantTrack::default();
    for at in [T0, T0 + 5, T0 + 2_000, T0 + 59_999] {
        track.record(&config(), at);
    }
    let binary = postcard::to_allocvec(&track).unwrap();
    assert_eq!(postcard::from_bytes::<TenantTrack>(&binary).unwrap(), track);
    let meter = postcard::to_allocvec(&track.meter).unwrap();
    assert!(meter.len() <= 8 + 60, "{} bytes", meter.len());
    let json = serde_json::to_string(&track.meter).unwrap();
    let second = T0 / 1000;
    assert_eq!(
        json,
        format!(
            r#"{{"seconds":[[{second},2],[{},1],[{},1]]}}"#,
            second + 2,
            second + 59
        )
    );
    assert_eq!(serde_json::from_str::<Meter>(&json).unwrap(), track.meter);
}

#[test]
fn the_meter_counts_the_last_minute_only() {
    let mut meter = Meter::default();
    for i in 0..120 {
        meter.record(T0 + i * 1000);
    }
    assert_eq!(meter.per_minute(T0 + 119_000), 60);
    assert_eq!(meter.since(T0 + 110_000, T0 + 119_000), 10);
    meter.record(T0); // more than a minute older than the newest: ignored
    assert_eq!(meter.per_minute(T0 + 119_000), 60);
    meter.record(T0 + 100_500); // late but within the minute: counted
    assert_eq!(meter.per_minute(T0 + 119_000), 61);
    assert_eq!(meter.per_minute(T0 + 500_000), 0);
}

#[test]
fn a_loop_opens_the_entity_breaker_once_and_spares_other_entities() {
    let config = config();
    let mut state = BreakerState::default();
    // 100 events/s on one entity: the 101st within the minute opens the breaker.
    let (held, alerts) = burst(&mut state, &config, "loop", T0, 300, 10);
    assert!(held[..100].iter().all(Option::is_none));
    assert!(held[100..].iter().all(|h| *h == Some(Held::Entity)));
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, "loop_suspected");
    assert_eq!(alerts[0].entity.as_deref(), Some("loop"));
    assert_eq!(
        (alerts[0].limit, alerts[0].observed),
        (Some(100), Some(101))
    );
    // Another entity of the same tenant keeps flowing.
    let (held, alerts) = burst(&mut state, &config, "calm", T0 + 3_000, 5, 1000);
    assert!(held.iter().all(Option::is_none) && alerts.is_empty());
}

#[test]
fn after_the_cooldown_a_probe_passes_and_a_quiet_minute_closes() {
    let config = config();
    let mut state = BreakerState::default();
    burst(&mut state, &config, "e", T0, 101, 10);
    let opened_at = T0 + 1_000;
    assert_eq!(
        state.entities["e"].phase,
        Phase::Open {
            until: opened_at + 120_000
        }
    );
    let (held, _) = state.observe(
        &config,
        "acme",
        "e",
        opened_at + 119_999,
        &OtherShares::default(),
    );
    assert_eq!(held, Some(Held::Entity));
    let probe_at = opened_at + 120_000;
    let (held, alerts) = state.observe(&config, "acme", "e", probe_at, &OtherShares::default());
    assert_eq!((held, alerts.len()), (None, 0));
    assert_eq!(
        state.entities["e"].phase,
        Phase::HalfOpen { since: probe_at }
    );
    let (held, _) = burst(&mut state, &config, "e", probe_at + 1_000, 10, 5_000);
    assert!(held.iter().all(Option::is_none));
    let (held, _) = state.observe(
        &config,
        "acme",
        "e",
        probe_at + 60_000,
        &OtherShares::default(),
    );
    assert_eq!(held, None);
    assert_eq!(state.entities["e"].phase, Phase::Closed);
}

#[test]
fn a_loop_that_resumes_after_the_probe_reopens_without_a_new_alert() {
    let config = config();
    let mut state = BreakerState::default();
    burst(&mut state, &config, "e", T0, 101, 10);
    let probe_at = T0 + 1_000 + 120_000;
    let (held, alerts) = burst(&mut state, &config, "e", probe_at, 150, 10);
    assert!(held[..100].iter().all(Option::is_none), "{held:?}");
    assert!(held[100..].iter().all(|h| *h == Some(Held::Entity)));
    assert!(alerts.is_empty());
    assert!(matches!(state.entities["e"].phase, Phase::Open { .. }));
}

#[test]
fn a_tenant_spike_over_its_baseline_opens_the_tenant_breaker() {
    let config = BreakerConfig {
        entity_per_minute: 1_000_000,
        spike_multiple: Some(10.0),
        spike_min_baseline_per_minute: 6,
        baseline_half_life_mins: 10,
        ..config()
    };
    let mut state = BreakerState::default();
    // An hour at 30 events/minute, spread over many entities.
    for i in 0..(60 * 30) {
        let (held, alerts) = state.observe(
            &config,
            "acme",
            &format!("e{}", i % 50),
            T0 + i * 2_000,
            &OtherShares::default(),
        );
        assert!(held.is_none() && alerts.is_empty(), "event {i}");
    }
    let baseline = state.tenant.baseline_milli as f64 / 1000.0;
    assert!((20.0..=30.0).contains(&baseline), "baseline {baseline}");
    let threshold = state.tenant.threshold(&config, 0).unwrap();
    assert_eq!(threshold, (10.0 * baseline).ceil() as u64);
    // Then a burst across entities: the tenant breaker opens, with one alert.
    let start = T0 + 3_600_000;
    let mut alerts = Vec::new();
    let mut spiked = 0;
    for i in 0..(threshold as i64 + 50) {
        let (held, a) = state.observe(
            &config,
            "acme",
            &format!("x{}", i % 500),
            start + i,
            &OtherShares::default(),
        );
        alerts.extend(a);
        spiked += usize::from(held == Some(Held::Tenant));
    }
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].kind.as_str(), alerts[0].entity.as_deref()),
        ("spike_suspected", None)
    );
    assert!(spiked >= 50);
}

#[test]
fn a_new_tenant_is_judged_against_the_baseline_floor() {
    let config = BreakerConfig {
        spike_multiple: Some(10.0),
        spike_min_baseline_per_minute: 6,
        tenant_per_minute: Some(1_000),
        ..config()
    };
    let state = BreakerState::default();
    assert_eq!(state.tenant.threshold(&config, 0), Some(60));
    let only_fixed = BreakerConfig {
        tenant_per_minute: Some(1_000),
        ..self::config()
    };
    assert_eq!(state.tenant.threshold(&only_fixed, 0), Some(1_000));
    assert_eq!(state.tenant.threshold(&self::config(), 0), None);
}

/// A track may be forgotten from [`EntityTrack::evictable_at`] on: the next arrival is then
/// decided as if it were kept (a quiet or half-open track also ends in the same phase; an open
/// one whose cooldown is over would probe, a fresh one is closed: the next loop is a new
/// incident). Before then, forgetting an open breaker would let the loop through.
#[test]
fn a_track_is_evictable_once_forgetting_it_changes_no_decision() {
    let config = config();
    let others = OtherShares::default();
    let mut looping = BreakerState::default();
    burst(&mut looping, &config, "e", T0, 101, 10);
    let Phase::Open { until } = looping.entities["e"].phase else {
        panic!("the burst opens the breaker");
    };
    let mut quiet = BreakerState::default();
    quiet.observe(&config, "acme", "e", T0, &others);
    let mut half_open = looping.clone();
    half_open.observe(&config, "acme", "e", until, &others);
    assert!(matches!(
        half_open.entities["e"].phase,
        Phase::HalfOpen { .. }
    ));
    assert_eq!(looping.entities["e"].evictable_at(), until);
    let next = |mut state: BreakerState, at: Millis| {
        let (held, alerts) = state.observe(&config, "acme", "e", at, &others);
        (held, alerts, state.entities["e"].phase)
    };
    for (name, state) in [
        ("quiet", quiet),
        ("open", looping.clone()),
        ("half-open", half_open),
    ] {
        let at = state.entities["e"].evictable_at();
        for later in [at, at + 1, at + 86_400_000] {
            let mut forgotten = state.clone();
            forgotten.entities.clear();
            let (kept, fresh) = (next(state.clone(), later), next(forgotten, later));
            assert_eq!(
                (&kept.0, &kept.1),
                (&fresh.0, &fresh.1),
                "{name} at {later}"
            );
            if name != "open" {
                assert_eq!(kept.2, fresh.2, "{name} at {later}");
            }
        }
    }
    let mut forgotten = looping.clone();
    forgotten.entities.clear();
    assert_eq!(next(looping, until - 1).0, Some(Held::Entity));
    assert_eq!(next(forgotten, until - 1).0, None);
}

#[test]
fn the_baseline_decays_through_quiet_minutes() {
    let config = BreakerConfig::default();
    let mut track = TenantTrack::default();
    for i in 0..600 {
        track.record(&config, T0 + i * 100); // 600 events/minute for a minute
    }
    track.record(&config, T0 + 60_000);
    let after_busy_minute = track.baseline_milli;
    assert!(after_busy_minute > 0);
    track.record(&config, T0 + 60 * 60_000 + 60_000); // an hour later: halved about once
    let ratio = track.baseline_milli as f64 / after_busy_minute as f64;
    assert!((0.45..0.55).contains(&ratio), "{ratio}");
    assert_eq!(decay_ppm(1), 500_000);
}

/// Another partition's share of the tenant, with its breaker's arrivals and state.
fn share_of(partition: i32, other: &BreakerState) -> crate::caps::budget::BudgetShare {
    use crate::caps::alerts::CapStatus;
    use crate::caps::ledger::Ledger;
    crate::caps::budget::BudgetShare::of(
        "acme",
        partition,
        &Ledger::default(),
        &CapStatus::default(),
        other,
    )
}

fn spike_config() -> BreakerConfig {
    BreakerConfig {
        tenant_per_minute: Some(50),
        ..config()
    }
}

#[test]
fn the_tenant_breaker_counts_every_partitions_arrivals() {
    let config = spike_config();
    // Partition 1 saw 40 of the tenant's events this minute; this partition sees 20 more.
    let mut elsewhere = BreakerState::default();
    for i in 0..40 {
        elsewhere.observe(
            &config,
            "acme",
            &format!("a{i}"),
            T0 + i * 100,
            &OtherShares::default(),
        );
    }
    let mut others = OtherShares::default();
    assert!(others.absorb(0, share_of(1, &elsewhere)));
    let mut state = BreakerState::default();
    let mut held = Vec::new();
    let mut alerts = Vec::new();
    for i in 0..20 {
        let (h, a) = state.observe(
            &config,
            "acme",
            &format!("b{i}"),
            T0 + 5_000 + i * 100,
            &others,
        );
        held.push(h);
        alerts.extend(a);
    }
    let admitted = held.iter().filter(|h| h.is_none()).count();
    assert_eq!(
        admitted, 10,
        "40 elsewhere + 10 here reach the 50 per minute"
    );
    assert!(held[10..].iter().all(|h| *h == Some(Held::Tenant)));
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].entity, None);

    // Alone, the same 20 pass: the count is tenant-wide, not this partition's.
    let mut alone = BreakerState::default();
    for i in 0..20 {
        let (h, _) = alone.observe(
            &config,
            "acme",
            &format!("b{i}"),
            T0 + 5_000 + i * 100,
            &OtherShares::default(),
        );
        assert_eq!(h, None);
    }
}

#[test]
fn arrivals_older_than_a_minute_elsewhere_do_not_count() {
    let config = spike_config();
    let mut elsewhere = BreakerState::default();
    for i in 0..45 {
        elsewhere.observe(
            &config,
            "acme",
            &format!("a{i}"),
            T0 + i * 10,
            &OtherShares::default(),
        );
    }
    let mut others = OtherShares::default();
    others.absorb(0, share_of(1, &elsewhere));
    let mut state = BreakerState::default();
    for i in 0..45 {
        let (h, _) = state.observe(
            &config,
            "acme",
            &format!("b{i}"),
            T0 + 61_000 + i * 10,
            &others,
        );
        assert_eq!(h, None, "event {i}");
    }
}

#[test]
fn a_second_partition_opening_during_an_incident_raises_no_second_alert() {
    let config = spike_config();
    let mut first = BreakerState::default();
    let mut opened = Vec::new();
    for i in 0..60 {
        let (_, a) = first.observe(
            &config,
            "acme",
            &format!("a{i}"),
            T0 + i * 100,
            &OtherShares::default(),
        );
        opened.extend(a);
    }
    assert_eq!(opened.len(), 1);
    let mut others = OtherShares::default();
    others.absorb(0, share_of(1, &first));
    assert!(others.breaker_open(T0 + 7_000));
    let mut second = BreakerState::default();
    let (held, alerts) = second.observe(&config, "acme", "b", T0 + 7_000, &others);
    assert_eq!(held, Some(Held::Tenant), "the tenant-wide count is over");
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[test]
fn a_partition_that_rarely_sees_the_tenant_judges_by_the_tenants_baseline() {
    let config = BreakerConfig {
        spike_multiple: Some(3.0),
        spike_min_baseline_per_minute: 10,
        baseline_half_life_mins: 1,
        ..config()
    };
    // Elsewhere the tenant runs at 600 events a minute, steadily, for five minutes.
    let mut elsewhere = BreakerState::default();
    for i in 0..3_000 {
        elsewhere.observe(
            &config,
            "acme",
            &format!("a{}", i % 500),
            T0 + i * 100,
            &OtherShares::default(),
        );
    }
    assert!(elsewhere.tenant.baseline_milli > 400_000);
    let usual = share_of(1, &elsewhere);
    // Here: one event of the tenant in that usual traffic is no spike.
    let mut others = OtherShares::default();
    others.absorb(0, usual.clone());
    let mut here = BreakerState::default();
    let (held, alerts) = here.observe(&config, "acme", "b", T0 + 299_900, &others);
    assert_eq!((held, alerts.len()), (None, 0));
    // Non-vacuity: had the other partition no baseline, the same arrivals would be a spike.
    let mut without = OtherShares::default();
    without.absorb(
        0,
        crate::caps::budget::BudgetShare {
            baseline_milli: 0,
            ..usual
        },
    );
    let (held, _) = BreakerState::default().observe(&config, "acme", "b", T0 + 299_900, &without);
    assert_eq!(held, Some(Held::Tenant));
}
