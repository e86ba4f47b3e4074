//! Tenant isolation as a property: what a partition task emits for tenant `tb` is a function
//! of `tb`'s records alone. Interleaving any stream of other tenants' records (any event and
//! receive times, far future and far past included, the same event ids, entities and source
//! names) into the partition leaves every `tb` output — events, state, deferred, alerts,
//! budget, their `late` flags and versions — byte for byte the same. And a snapshot of a
//! store filled by such input is the whole state: restoring from it changes no output.

use std::sync::Arc;

use proptest::prelude::*;
use schemas::config::{BreakerConfig, CapLimits, OnWindowReset};
use schemas::raw::RawMeta;
use schemas::records::{AlertRecord, EventRecord};
use schemas::topics::Topic;

use super::*;
use crate::caps::{Caps, TenantRules};
use crate::catalog::SourceCatalog;

const B: &str = "tb";
const BASE: i64 = 1_700_000_000_000;
const YEAR_2100: i64 = 4_102_444_800_000;
const YEAR_1: i64 = -62_135_596_800_000;

#[derive(Debug, Clone)]
struct Rec {
    tenant: &'static str,
    source: u8,
    id: u16,
    entity: u8,
    occurred_at: i64,
    received_at: i64,
}

fn decoded(offset: i64, r: &Rec) -> Decoded {
    Ok(RawInput {
        partition: 0,
        offset,
        meta: RawMeta {
            tenant: r.tenant.into(),
            source: format!("s{}", r.source),
            scheme: "hmac".into(),
            event_id: format!("evt_{}", r.id),
            event_type: if r.id.is_multiple_of(11) {
                "order.deleted"
            } else {
                "order.updated"
            }
            .into(),
            entity: format!("o{}", r.entity),
            occurred_at: r.occurred_at,
            received_at: r.received_at,
            content_type: "application/json".into(),
            key_id: "k1".into(),
            event_id_derived: false,
            redrive_id: None,
        },
        body: format!(r#"{{"id":{},"tenant":"{}"}}"#, r.id, r.tenant).into_bytes(),
        claimed_at: None,
        trace: None,
    })
}

/// Times a sender may claim: ordinary ones near `received`, and hostile ones.
fn claimed(received: i64) -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => (-20_000i64..20_000).prop_map(move |d| received + d),
        1 => Just(YEAR_2100),
        1 => Just(YEAR_1),
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => (0i64..3_600_000).prop_map(move |d| received + 200_000 + d),
    ]
}

/// Tenant `tb`'s stream: receive times move forward, ids repeat (redeliveries).
fn tenant_b() -> impl Strategy<Value = Vec<Rec>> {
    prop::collection::vec((0u8..2, 0u16..40, 0u8..4, 0i64..5_000), 1..50).prop_flat_map(|recs| {
        let mut received = BASE;
        let with_times: Vec<_> = recs
            .into_iter()
            .map(|(source, id, entity, step)| {
                received += step;
                (source, id, entity, received)
            })
            .collect();
        let times: Vec<_> = with_times.iter().map(|(.., r)| claimed(*r)).collect();
        (Just(with_times), times).prop_map(|(recs, times)| {
            recs.into_iter()
                .zip(times)
                .map(|((source, id, entity, received_at), occurred_at)| Rec {
                    tenant: B,
                    source,
                    id,
                    entity,
                    occurred_at,
                    received_at,
                })
                .collect()
        })
    })
}

/// Other tenants: anything at all, including receive times far from `tb`'s.
fn others() -> impl Strategy<Value = Vec<Rec>> {
    let time = prop_oneof![
        4 => BASE - 100_000..BASE + 400_000,
        1 => Just(YEAR_2100),
        1 => Just(YEAR_1),
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => any::<i64>(),
    ];
    let rec = (
        prop::bool::ANY,
        0u8..2,
        0u16..40,
        0u8..4,
        time.clone(),
        time,
    );
    prop::collection::vec(rec, 0..60).prop_map(|recs| {
        recs.into_iter()
            .map(|(a, source, id, entity, occurred_at, received_at)| Rec {
                tenant: if a { "ta" } else { "tc" },
                source,
                id,
                entity,
                occurred_at,
                received_at,
            })
            .collect()
    })
}

fn settings() -> TaskSettings {
    let caps = |events: u64| CapLimits {
        events_per_hour: Some(events),
        tokens_per_day: None,
        cost_per_day_micros: None,
        timezone: "UTC".parse().unwrap(),
        on_window_reset: OnWindowReset::Release,
        estimates: Vec::new(),
    };
    let breaker = BreakerConfig {
        entity_per_minute: 6,
        tenant_per_minute: Some(30),
        ..BreakerConfig::default()
    };
    let rules = [
        (
            B.to_owned(),
            TenantRules {
                caps: Some(caps(15)),
                breaker: Some(breaker.clone()),
            },
        ),
        (
            "ta".to_owned(),
            TenantRules {
                caps: Some(caps(3)),
                breaker: Some(breaker),
            },
        ),
    ];
    TaskSettings {
        dedupe_window_ms: 60_000,
        tombstone_retention_ms: Some(120_000),
        max_held: 4,
        max_buffered: 8,
        caps: Some(Arc::new(Caps::from_rules(rules, 0, 1))),
        ..TaskSettings::default()
    }
}

fn tenant_of(record: &OutRecord) -> &[u8] {
    let key = record.key.as_slice();
    key.iter()
        .position(|b| *b == b'/')
        .map_or(key, |slash| &key[..slash])
}

/// Runs `batches` (records with their offsets) through a new task, then an idle flush;
/// returns `tb`'s outputs.
fn outputs_of_b(batches: &[Vec<(i64, Rec)>]) -> Vec<OutRecord> {
    let dir = tempfile::tempdir().unwrap();
    let mut task = PartitionTask::open(dir.path(), settings()).unwrap();
    let catalog = SourceCatalog::empty();
    let mut out = Vec::new();
    for batch in batches.iter().filter(|b| !b.is_empty()) {
        let records = batch.iter().map(|(o, r)| decoded(*o, r)).collect();
        let pending = task.process(records, &catalog, &mut out).unwrap();
        task.commit(&pending).unwrap();
    }
    let pending = task.flush(&catalog, &mut out).unwrap();
    task.commit(&pending).unwrap();
    out.retain(|r| tenant_of(r) == B.as_bytes());
    out
}

/// Merges `b` and `others` in the order `picks` says, then splits into batches.
fn interleave(b: &[Rec], others: &[Rec], picks: &[bool], sizes: &[usize]) -> Vec<Vec<(i64, Rec)>> {
    let (mut bi, mut oi) = (b.iter(), others.iter());
    let mut merged = Vec::new();
    for pick in picks.iter().copied().chain(std::iter::repeat(true)) {
        let next = if pick {
            bi.next().or_else(|| oi.next())
        } else {
            oi.next().or_else(|| bi.next())
        };
        match next {
            Some(rec) => merged.push(rec.clone()),
            None => break,
        }
    }
    let mut offset = 100;
    let mut records: Vec<(i64, Rec)> = merged
        .into_iter()
        .map(|r| {
            offset += 1;
            (offset, r)
        })
        .collect();
    let mut batches = Vec::new();
    for size in sizes.iter().cycle() {
        if records.is_empty() {
            break;
        }
        let rest = records.split_off((*size).min(records.len()));
        batches.push(std::mem::replace(&mut records, rest));
    }
    batches
}

proptest! {
    // 256 cases per test run; `HOOKSTREAM_ISOLATION_CASES=20000` for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("HOOKSTREAM_ISOLATION_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_tenants_outputs_do_not_depend_on_other_tenants_records(
        b in tenant_b(),
        others in others(),
        picks in prop::collection::vec(any::<bool>(), 0..120),
        sizes in prop::collection::vec(1usize..9, 1..10),
    ) {
        let shared = interleave(&b, &others, &picks, &sizes);
        // The same batches with only tb's records, at the offsets they had in the partition.
        let alone: Vec<Vec<(i64, Rec)>> = shared
            .iter()
            .map(|batch| batch.iter().filter(|(_, r)| r.tenant == B).cloned().collect())
            .collect();
        let with_others = outputs_of_b(&shared);
        let by_itself = outputs_of_b(&alone);
        prop_assert!(by_itself.iter().any(|r| r.topic == Topic::Events), "tb emitted no event");
        prop_assert_eq!(with_others.len(), by_itself.len());
        for (n, (x, y)) in with_others.iter().zip(&by_itself).enumerate() {
            prop_assert_eq!(x, y, "output {} of tb differs", n);
        }
    }
}

/// Runs `batches` through a new task and returns everything emitted from batch `cut` on
/// (then an idle flush); with `from_snapshot`, the task that processes them is a new one whose
/// store was loaded from a snapshot of the first task's store at `cut` (chunks encoded and
/// decoded as the changelog carries them).
fn outputs_after(batches: &[Vec<(i64, Rec)>], cut: usize, from_snapshot: bool) -> Vec<OutRecord> {
    let (dir, loaded) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut task = PartitionTask::open(dir.path(), settings()).unwrap();
    let catalog = SourceCatalog::empty();
    let mut out = Vec::new();
    for (n, batch) in batches.iter().enumerate() {
        if n == cut {
            out.clear();
            if from_snapshot {
                let store = StateStore::open(loaded.path()).unwrap();
                let (chunks, _) = task.snapshot(0, 1).unwrap();
                for chunk in &chunks {
                    let Ok(crate::changelog::ChangelogRecord::Snapshot(chunk)) =
                        crate::changelog::decode(chunk.value.as_ref().unwrap())
                    else {
                        panic!("a snapshot chunk does not decode");
                    };
                    store.write(&chunk.ops).unwrap();
                }
                task = PartitionTask::from_store(store, settings(), 0).unwrap();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let records = batch.iter().map(|(o, r)| decoded(*o, r)).collect();
        let pending = task.process(records, &catalog, &mut out).unwrap();
        task.commit(&pending).unwrap();
    }
    let pending = task.flush(&catalog, &mut out).unwrap();
    task.commit(&pending).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("HOOKSTREAM_ISOLATION_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// A snapshot is the whole state: a task restored from one at any batch boundary, after
    /// hostile input from several tenants (clocks in year 1 and 2100, the extremes of `i64`,
    /// caps and breakers, held and buffered events), emits byte for byte what the original
    /// task emits from there on.
    #[test]
    fn a_task_restored_from_a_snapshot_emits_what_the_original_would(
        b in tenant_b(),
        others in others(),
        picks in prop::collection::vec(any::<bool>(), 0..120),
        sizes in prop::collection::vec(1usize..9, 1..10),
        cut in 0usize..10,
    ) {
        let batches = interleave(&b, &others, &picks, &sizes);
        let cut = cut.min(batches.len());
        let original = outputs_after(&batches, cut, false);
        let restored = outputs_after(&batches, cut, true);
        prop_assert_eq!(original.len(), restored.len());
        for (n, (x, y)) in original.iter().zip(&restored).enumerate() {
            prop_assert_eq!(x, y, "output {} after the snapshot differs", n);
        }
    }
}

/// The issue's scenario: one far-future event of tenant A no longer expires tenant B's dedupe
/// entries, reorders B's events wrongly or marks them late.
#[test]
fn a_far_future_event_of_one_tenant_leaves_another_tenants_dedupe_and_order_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = PartitionTask::open(dir.path(), TaskSettings::default()).unwrap();
    let catalog = SourceCatalog::empty();
    let rec = |tenant: &'static str, id: u16, entity: u8, at: i64, received: i64| Rec {
        tenant,
        source: 0,
        id,
        entity,
        occurred_at: at,
        received_at: received,
    };
    let mut offset = 0;
    let mut run = |recs: Vec<Rec>| {
        let records = recs
            .iter()
            .map(|r| {
                offset += 1;
                decoded(offset, r)
            })
            .collect();
        let mut out = Vec::new();
        let pending = task.process(records, &catalog, &mut out).unwrap();
        task.commit(&pending).unwrap();
        out
    };
    let first: Vec<Rec> = (0..200)
        .map(|n| {
            rec(
                B,
                n,
                (n % 4) as u8,
                BASE + n as i64 * 10,
                BASE + n as i64 * 10,
            )
        })
        .collect();
    run(first.clone());
    // A's sender dates an event in 2100 and ingest receives it then too (a host clock gone
    // wrong): A's stream time jumps, B's must not.
    let out = run(vec![rec("ta", 1, 0, YEAR_2100, YEAR_2100)]);
    assert!(events_of(&out).iter().all(|e| e.tenant == "ta"));
    let redelivered = run(first);
    assert!(
        events_of(&redelivered).is_empty(),
        "B's redeliveries are still duplicates"
    );
    // B's next out-of-order pairs, 1 s apart (inside the 5 s grace), come out in order.
    let mut pairs = Vec::new();
    for n in 0..100u16 {
        let at = BASE + 60_000 + i64::from(n) * 10_000;
        pairs.push(rec(B, 1000 + 2 * n + 1, 9, at + 1_000, at + 1_000));
        pairs.push(rec(B, 1000 + 2 * n, 9, at, at + 1_100));
    }
    let mut out = run(pairs);
    let mut flushed = Vec::new();
    let pending = task.flush(&catalog, &mut flushed).unwrap();
    task.commit(&pending).unwrap();
    out.extend(flushed);
    let events: Vec<EventRecord> = events_of(&out)
        .into_iter()
        .filter(|e| e.entity == "o9")
        .collect();
    assert_eq!(events.len(), 200);
    assert!(events.iter().all(|e| !e.late), "none late");
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| id[4..].parse::<u32>().unwrap());
    assert_eq!(ids, sorted, "event-time order");
}

/// An event time beyond the source's future skew is processed at its receive time, keeps its
/// claimed time in the record, is flagged, and raises one alert per source per hour.
#[test]
fn a_future_event_time_beyond_the_skew_is_processed_at_its_receive_time_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = PartitionTask::open(dir.path(), TaskSettings::default()).unwrap();
    let catalog = SourceCatalog::empty();
    let rec = |id: u16, at: i64, received: i64| Rec {
        tenant: B,
        source: 0,
        id,
        entity: 1,
        occurred_at: at,
        received_at: received,
    };
    let records = vec![
        decoded(1, &rec(1, YEAR_2100, BASE)),
        decoded(2, &rec(2, BASE + 1_000, BASE + 1_000)),
        decoded(3, &rec(3, BASE + 300_000 + 2_000, BASE + 2_000)),
        decoded(4, &rec(4, YEAR_2100, BASE + 3_600_000)),
        decoded(
            5,
            &rec(5, BASE + 3_600_000 + 10_000, BASE + 3_600_000 + 10_000),
        ),
    ];
    let mut out = Vec::new();
    let pending = task.process(records, &catalog, &mut out).unwrap();
    assert_eq!(pending.stats.time_skewed, 2);
    task.commit(&pending).unwrap();
    let pending = task.flush(&catalog, &mut out).unwrap();
    task.commit(&pending).unwrap();
    let events = events_of(&out);
    let summary: Vec<(&str, bool, bool)> = events
        .iter()
        .map(|e| (e.event_id.as_str(), e.time_skewed, e.late))
        .collect();
    assert_eq!(
        summary,
        [
            ("evt_1", true, false),
            ("evt_2", false, false),
            ("evt_3", false, false),
            ("evt_4", true, false),
            ("evt_5", false, false),
        ],
        "processed in receive-time order, exactly at the skew bound still trusted"
    );
    assert_eq!(
        events[0].occurred_at, "2100-01-01T00:00:00.000Z",
        "claimed time kept"
    );
    let skewed_record = out
        .iter()
        .find(|r| r.topic == Topic::Events && r.headers.iter().any(|(_, v)| v == b"evt_1"))
        .unwrap();
    assert_eq!(
        skewed_record.timestamp,
        Some(BASE),
        "record time is the receive time"
    );
    let alerts: Vec<AlertRecord> = out
        .iter()
        .filter(|r| r.topic == Topic::Alerts)
        .map(|r| serde_json::from_slice(r.value.as_ref().unwrap()).unwrap())
        .collect();
    assert_eq!(
        alerts.len(),
        2,
        "one per source per hour of stream time: {alerts:?}"
    );
    assert!(alerts
        .iter()
        .all(|a| a.kind == "time_skewed" && a.source.as_deref() == Some("s0")));
}

fn events_of(out: &[OutRecord]) -> Vec<EventRecord> {
    out.iter()
        .filter(|r| r.topic == Topic::Events)
        .map(|r| serde_json::from_slice(r.value.as_ref().unwrap()).unwrap())
        .collect()
}
