use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use schemas::raw::RawMeta;
use schemas::records::{EventRecord, StateRecord, UsageRecord};
use schemas::topics::Topic;

use super::*;
use crate::catalog::{SourceCatalog, DEFAULT_GRACE_MS};

fn input(offset: i64, event_id: &str, entity: &str, at: i64, body: &str) -> Decoded {
    Ok(RawInput {
        partition: 0,
        offset,
        meta: RawMeta {
            tenant: "acme".into(),
            source: "orders".into(),
            scheme: "hmac".into(),
            event_id: event_id.into(),
            event_type: "order.updated".into(),
            entity: entity.into(),
            occurred_at: at,
            received_at: 1_000 + offset,
            content_type: "application/json".into(),
            key_id: "k1".into(),
            event_id_derived: false,
            redrive_id: None,
        },
        body: body.as_bytes().to_vec(),
        claimed_at: None,
        trace: None,
    })
}

pub(super) fn open(dir: &tempfile::TempDir, settings: TaskSettings) -> PartitionTask {
    PartitionTask::open(dir.path(), settings).unwrap()
}

/// `usage` reports at consecutive offsets from `first`, without timestamps.
pub(super) fn reports(
    first: i64,
    usage: impl IntoIterator<Item = UsageRecord>,
) -> Vec<crate::usage_view::Report> {
    usage
        .into_iter()
        .zip(first..)
        .map(|(usage, offset)| crate::usage_view::Report {
            partition: 0,
            offset,
            timestamp: None,
            key: Vec::new(),
            usage: Some(usage),
        })
        .collect()
}

pub(super) fn run(task: &mut PartitionTask, records: Vec<Decoded>) -> (Vec<OutRecord>, BatchStats) {
    let mut out = Vec::new();
    let pending = task
        .process(records, &SourceCatalog::empty(), &mut out)
        .unwrap();
    task.commit(&pending).unwrap();
    (out, pending.stats)
}

fn flush(task: &mut PartitionTask) -> Vec<OutRecord> {
    let mut out = Vec::new();
    let pending = task.flush(&SourceCatalog::empty(), &mut out).unwrap();
    task.commit(&pending).unwrap();
    out
}

fn events(out: &[OutRecord]) -> Vec<EventRecord> {
    out.iter()
        .filter(|r| r.topic == Topic::Events)
        .map(|r| serde_json::from_slice(r.value.as_ref().unwrap()).unwrap())
        .collect()
}

fn states(out: &[OutRecord]) -> Vec<StateRecord> {
    out.iter()
        .filter(|r| r.topic == Topic::State)
        .map(|r| serde_json::from_slice(r.value.as_ref().unwrap()).unwrap())
        .collect()
}

const G: i64 = DEFAULT_GRACE_MS;

/// Caps for tenant `acme` (events per hour, tokens per day), kept on window reset.
fn capped(events: Option<u64>, tokens: Option<u64>) -> Option<Arc<crate::caps::Caps>> {
    let mut limits = crate::caps::test_support::caps(events, tokens, None);
    limits.on_window_reset = schemas::config::OnWindowReset::Keep;
    let rules = crate::caps::TenantRules {
        caps: Some(limits),
        breaker: None,
    };
    Some(Arc::new(crate::caps::Caps::from_rules(
        [("acme".to_owned(), rules)],
        0,
        1,
    )))
}

#[test]
fn duplicates_are_dropped_within_and_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, TaskSettings::default());
    let (_, stats) = run(
        &mut task,
        vec![
            input(0, "e1", "o1", 10, "{}"),
            input(1, "e1", "o1", 10, "{}"),
        ],
    );
    assert_eq!((stats.events, stats.duplicates), (1, 1));
    assert_eq!(task.next_offset(), Some(2));
    let (_, stats) = run(&mut task, vec![input(2, "e1", "o1", 10, "{}")]);
    assert_eq!(stats.duplicates, 1);
    let out = flush(&mut task);
    assert_eq!(events(&out).len(), 1);
}

#[test]
fn events_wait_for_the_grace_and_leave_in_event_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, TaskSettings::default());
    let (out, _) = run(
        &mut task,
        vec![
            input(0, "b", "o1", 2_000, r#"{"v":2}"#),
            input(1, "a", "o1", 1_000, r#"{"v":1}"#),
        ],
    );
    assert!(
        out.is_empty(),
        "nothing is due before stream time passes event time + grace"
    );
    assert_eq!(task.buffered(), 2);
    let (out, _) = run(&mut task, vec![input(2, "c", "o2", 2_000 + G, "{}")]);
    let ids: Vec<String> = events(&out).into_iter().map(|e| e.event_id).collect();
    assert_eq!(ids, ["a", "b"]);
    let versions: Vec<u64> = states(&out).into_iter().map(|s| s.version).collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(task.buffered(), 1);
    let out = flush(&mut task);
    assert_eq!(events(&out)[0].event_id, "c");
    assert_eq!(task.buffered(), 0);
}

#[test]
fn an_event_older_than_its_entitys_released_state_is_late_and_does_not_regress_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, TaskSettings::default());
    run(&mut task, vec![input(0, "new", "o1", 10_000, r#"{"v":2}"#)]);
    flush(&mut task);
    let (out, stats) = run(&mut task, vec![input(1, "old", "o1", 9_000, r#"{"v":1}"#)]);
    assert_eq!(stats.late, 1);
    let late = events(&out);
    assert!(late[0].late && late[0].event_id == "old");
    assert!(states(&out).is_empty());
}

#[test]
fn reprocessing_an_uncommitted_batch_gives_identical_outputs_and_committed_ones_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, TaskSettings::default());
    let records = || {
        vec![
            input(0, "e1", "o1", 20_000, r#"{"v":1}"#),
            input(1, "e2", "o1", 10_000, r#"{"v":0}"#),
        ]
    };
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let pending = task
        .process(records(), &SourceCatalog::empty(), &mut first)
        .unwrap();
    let again = task
        .process(records(), &SourceCatalog::empty(), &mut second)
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(pending.ops, again.ops);
    task.commit(&pending).unwrap();
    drop(task);
    let task = open(&dir, TaskSettings::default());
    let mut out = Vec::new();
    let pending = task
        .process(records(), &SourceCatalog::empty(), &mut out)
        .unwrap();
    assert_eq!(pending.stats.already_applied, 2);
    assert!(out.is_empty());
}

#[test]
fn dedupe_forgets_ids_once_stream_time_passes_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(
        &dir,
        TaskSettings {
            dedupe_window_ms: 60_000,
            ..TaskSettings::default()
        },
    );
    run(&mut task, vec![input(0, "e1", "o1", 0, "{}")]);
    let (_, stats) = run(
        &mut task,
        vec![
            input(1, "e1", "o1", 0, "{}"),
            input(2, "x", "o2", 59_000, "{}"),
        ],
    );
    assert_eq!(stats.duplicates, 1);
    let (_, stats) = run(&mut task, vec![input(3, "y", "o2", 61_000, "{}")]);
    assert_eq!(stats.expired, 1);
    let (_, stats) = run(&mut task, vec![input(4, "e1", "o1", 0, "{}")]);
    assert_eq!(
        (stats.duplicates, stats.events),
        (0, 1),
        "outside the window the id is new again"
    );
}

#[test]
fn a_full_buffer_releases_its_oldest_events_early() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(
        &dir,
        TaskSettings {
            max_buffered: 2,
            ..TaskSettings::default()
        },
    );
    let (out, _) = run(
        &mut task,
        vec![
            input(0, "a", "o1", 100, "{}"),
            input(1, "b", "o2", 200, "{}"),
            input(2, "c", "o3", 300, "{}"),
        ],
    );
    assert_eq!(
        events(&out)
            .into_iter()
            .map(|e| e.event_id)
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(task.buffered(), 2);
}

#[test]
fn undecodable_records_go_to_the_dlq_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let task = open(&dir, TaskSettings::default());
    let bad = Undecodable {
        partition: 0,
        offset: 0,
        key: Some(b"acme/o1".to_vec()),
        headers: vec![],
        body: b"x".to_vec(),
        timestamp: Some(1),
        reason: "raw record is missing header `hs-tenant`".into(),
    };
    let mut out = Vec::new();
    let pending = task
        .process(vec![Err(Box::new(bad))], &SourceCatalog::empty(), &mut out)
        .unwrap();
    assert_eq!(pending.stats.dead_letters, 1);
    assert_eq!(pending.next_offset, Some(1));
    assert_eq!(out[0].topic, Topic::Dlq);
    assert!(out[0]
        .headers
        .iter()
        .any(|(k, v)| k == "hs-error" && v.starts_with(b"raw record")));
}

/// One generated event: entity, event time, and an id unique per (entity, time, n).
#[derive(Debug, Clone)]
struct Gen {
    entity: u8,
    at: i64,
    jitter: i64,
    id: String,
}

fn stream() -> impl Strategy<Value = (Vec<Gen>, Vec<usize>, Vec<usize>)> {
    let event = (0u8..4, 0i64..60_000, 0i64..G, 0u32..1_000_000);
    (
        prop::collection::vec(event, 1..60),
        prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        prop::collection::vec(1usize..8, 1..20),
    )
        .prop_map(|(events, dupes, batches)| {
            let gens: Vec<Gen> = events
                .into_iter()
                .enumerate()
                .map(|(n, (entity, at, jitter, salt))| Gen {
                    entity,
                    at,
                    jitter,
                    id: format!("e{n}-{salt}"),
                })
                .collect();
            let dupes = dupes.into_iter().map(|i| i.index(gens.len())).collect();
            (gens, dupes, batches)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Shuffles within the grace and duplicate deliveries, split into arbitrary batches with a
    /// commit after each: every event comes out once, none late, each entity's events in
    /// (event time, id) order, and the final state is the fold of the sorted, deduped stream.
    #[test]
    fn shuffles_within_grace_and_duplicates_give_the_sorted_deduped_result((gens, dupes, batches) in stream()) {
        // Arrival order: event time + a jitter below the grace; duplicates arrive again later.
        let mut arrivals: Vec<(i64, Gen)> = gens.iter().map(|g| (g.at + g.jitter, g.clone())).collect();
        arrivals.sort_by_key(|(t, g)| (*t, g.id.clone()));
        let mut sequence: Vec<Gen> = arrivals.into_iter().map(|(_, g)| g).collect();
        // Redeliveries come after the first delivery, anywhere later in the stream.
        for (n, d) in dupes.iter().enumerate() {
            let first = sequence.iter().position(|g| g.id == gens[*d].id).unwrap();
            let at = first + 1 + (n * 7919) % (sequence.len() - first);
            sequence.insert(at, gens[*d].clone());
        }
        let dir = tempfile::tempdir().unwrap();
        let mut task = open(&dir, TaskSettings::default());
        let mut out = Vec::new();
        let mut offset = 0i64;
        let mut rest = sequence.as_slice();
        for size in batches.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (batch, tail) = rest.split_at((*size).min(rest.len()));
            rest = tail;
            let records = batch
                .iter()
                .map(|g| {
                    offset += 1;
                    input(offset, &g.id, &format!("o{}", g.entity), g.at, &format!(r#"{{"id":"{}"}}"#, g.id))
                })
                .collect();
            let (o, _) = run(&mut task, records);
            out.extend(o);
        }
        out.extend(flush(&mut task));

        let emitted = events(&out);
        prop_assert!(emitted.iter().all(|e| !e.late), "no event may be late when shuffles stay within the grace");
        let ids: HashSet<&str> = emitted.iter().map(|e| e.event_id.as_str()).collect();
        prop_assert_eq!(ids.len(), emitted.len(), "an event was emitted twice");
        prop_assert_eq!(ids.len(), gens.len());
        let mut expected: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for g in &gens {
            expected.entry(format!("o{}", g.entity)).or_default().push((g.at, g.id.clone()));
        }
        let mut final_states: BTreeMap<String, StateRecord> = BTreeMap::new();
        for s in states(&out) {
            final_states.insert(s.entity.clone(), s);
        }
        for (entity, mut list) in expected {
            list.sort();
            let order: Vec<String> = emitted.iter().filter(|e| e.entity == entity).map(|e| e.event_id.clone()).collect();
            prop_assert_eq!(&order, &list.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>());
            let state = &final_states[&entity];
            prop_assert_eq!(state.version as usize, list.len());
            prop_assert_eq!(&state.last_event_id, &list.last().unwrap().1);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Outputs depend on the records alone, not on where batches begin and end: any sequence
    /// (out of order beyond the grace, so some events are late; redeliveries; a buffer small
    /// enough to overflow; deletes whose tombstones expire) gives byte-identical outputs whether processed in one batch or in
    /// arbitrary ones, so a batch re-processed after a crash, with other boundaries, re-emits
    /// exactly what the crashed attempt emitted.
    #[test]
    fn outputs_do_not_depend_on_batch_boundaries((gens, dupes, batches) in stream()) {
        let mut sequence: Vec<Gen> = gens.clone();
        sequence.sort_by_key(|g| (g.at + g.jitter * 20, g.id.clone()));
        for (n, d) in dupes.iter().enumerate() {
            sequence.insert((n * 7919) % (sequence.len() + 1), gens[*d].clone());
        }
        let records = |from: usize, to: usize| -> Vec<Decoded> {
            sequence[from..to]
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    input((from + i) as i64, &g.id, &format!("o{}", g.entity), g.at, "{}").map(|mut r| {
                        if g.at % 3 == 0 {
                            r.meta.event_type = "order.deleted".into();
                        }
                        r
                    })
                })
                .collect()
        };
        let settings = TaskSettings {
            max_buffered: 5,
            tombstone_retention_ms: Some(5_000),
            ..TaskSettings::default()
        };
        let whole_dir = tempfile::tempdir().unwrap();
        let mut whole = open(&whole_dir, settings.clone());
        let (mut expected, _) = run(&mut whole, records(0, sequence.len()));
        expected.extend(flush(&mut whole));

        let split_dir = tempfile::tempdir().unwrap();
        let mut split = open(&split_dir, settings);
        let mut out = Vec::new();
        let mut at = 0;
        for size in batches.iter().cycle() {
            if at == sequence.len() {
                break;
            }
            let end = (at + size).min(sequence.len());
            let (o, _) = run(&mut split, records(at, end));
            out.extend(o);
            at = end;
        }
        out.extend(flush(&mut split));
        prop_assert_eq!(out, expected);
    }
}

/// A flush decided before a crash is redone first when the task resumes, so the records it
/// re-emits are the ones the cut-short flush emitted, even though new input is waiting.
#[test]
fn a_decided_flush_is_redone_before_new_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, TaskSettings::default());
    run(
        &mut task,
        vec![
            input(0, "a", "o1", 10_000, "{}"),
            input(1, "b", "o2", 10_001, "{}"),
        ],
    );
    assert_eq!(task.buffered(), 2);
    task.commit(&task.flush_intent(&Flush::All)).unwrap();
    let mut cut_short = Vec::new();
    task.flush(&SourceCatalog::empty(), &mut cut_short).unwrap();
    // Restart: the next batch brings an earlier event for o1, which would otherwise sort first.
    let (out, _) = run(&mut task, vec![input(2, "c", "o1", 9_000, "{}")]);
    assert_eq!(out[..cut_short.len()], cut_short[..]);
    assert!(
        events(&out[cut_short.len()..])[0].late,
        "c arrives after o1 released a"
    );
    assert_eq!(task.buffered(), 0);
}

/// A rebuild's scope: records before the range and of other tenants are consumed but ignored,
/// and the first record past the range releases everything held back.
#[test]
fn a_scope_ignores_what_is_outside_and_flushes_at_its_end() {
    use schemas::scope::{OffsetRange, RecordFilter};
    let dir = tempfile::tempdir().unwrap();
    let scope = Scope {
        filter: RecordFilter {
            entities: vec!["o1".into()],
            ..RecordFilter::default()
        },
        ranges: Some([(0, OffsetRange { start: 1, end: 4 })].into()),
    };
    let settings = TaskSettings {
        scope: Some(Arc::new(scope)),
        ..TaskSettings::default()
    };
    let mut task = open(&dir, settings);
    let (out, stats) = run(
        &mut task,
        vec![
            input(0, "before", "o1", 10_000, "{}"),
            input(1, "a", "o1", 10_001, "{}"),
            input(2, "other", "o2", 10_002, "{}"),
            input(3, "b", "o1", 10_003, "{}"),
        ],
    );
    assert!(out.is_empty(), "held back for reordering");
    assert_eq!((stats.events, stats.out_of_scope), (2, 2));
    assert_eq!(task.next_offset(), Some(4));
    let (out, stats) = run(&mut task, vec![input(4, "after", "o1", 99_000, "{}")]);
    let ids: Vec<String> = events(&out).into_iter().map(|e| e.event_id).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!((stats.events, stats.out_of_scope), (0, 1));
    assert_eq!(task.buffered(), 0);
    assert_eq!(
        task.next_offset(),
        Some(4),
        "the checkpoint stops at the range's end"
    );
}

#[test]
fn a_redrive_passes_dedupe_once_per_redrive_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, TaskSettings::default());
    let redrive = |offset: i64, id: &str| {
        let mut record = input(offset, "a", "o1", 10_000, "{}");
        if let Ok(input) = &mut record {
            input.meta.redrive_id = Some(id.into());
        }
        record
    };
    run(&mut task, vec![input(0, "a", "o1", 10_000, "{}")]);
    let (_, stats) = run(
        &mut task,
        vec![
            input(1, "a", "o1", 10_000, "{}"),
            redrive(2, "r1"),
            redrive(3, "r1"),
            redrive(4, "r2"),
        ],
    );
    assert_eq!((stats.events, stats.duplicates), (2, 2));
    let out = flush(&mut task);
    let redriven: Vec<&str> = out
        .iter()
        .filter(|r| r.topic == Topic::Events)
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == header::REDRIVE_ID)
                .map(|(_, v)| std::str::from_utf8(v).unwrap())
        })
        .collect();
    assert_eq!(redriven, ["r1", "r2"]);
}

fn capped_with_a_minute_window(dir: &tempfile::TempDir) -> PartitionTask {
    let settings = TaskSettings {
        dedupe_window_ms: 60_000,
        caps: capped(Some(1_000), None),
        ..TaskSettings::default()
    };
    open(dir, settings)
}

/// A tenant's usage entry (estimate, later actual) lives as long as the event's dedupe entry.
#[test]
fn usage_entries_expire_with_their_dedupe_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = capped_with_a_minute_window(&dir);
    let entry = crate::admission::usage_key("acme", "a", "orders");
    run(&mut task, vec![input(0, "a", "o1", 10_000, "{}")]);
    assert!(task.store.get(Cf::Caps, &entry).unwrap().is_some());
    run(&mut task, vec![input(1, "b", "o2", 10_000 + 60_001, "{}")]);
    assert!(task.store.get(Cf::Caps, &entry).unwrap().is_none());
    assert!(task
        .store
        .get(
            Cf::Caps,
            &crate::admission::usage_key("acme", "b", "orders")
        )
        .unwrap()
        .is_some());
}

/// An input the broker refused a record of goes to `dlq` when the batch is processed again,
/// and the rest of the batch comes out as if it had never been there; an input too large for
/// the producer goes to `dlq` on its own, decided from the input.
#[test]
fn refused_and_too_large_inputs_go_to_the_dlq_and_the_rest_flows() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(
        &dir,
        TaskSettings {
            max_record_bytes: 100_000,
            ..TaskSettings::default()
        },
    );
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(150_000));
    let records = || {
        vec![
            input(0, "a", "o1", 1_000, "{}"),
            input(1, "b", "o1", 2_000, "{}"),
            input(2, "c", "o1", 3_000, &big),
            input(3, "d", "o1", 4_000, "{}"),
        ]
    };
    task.refuse((0, 1), "refused: Broker: Message size too large".into());
    let (mut out, stats) = run(&mut task, records());
    out.extend(flush(&mut task));
    assert_eq!(stats.dead_letters, 2);
    let dlq: Vec<(&str, &str)> = out
        .iter()
        .filter(|r| r.topic == Topic::Dlq)
        .map(|r| {
            let header = |name: &str| {
                r.headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| std::str::from_utf8(v).unwrap())
                    .unwrap()
            };
            (header(header::EVENT_ID), header(header::ERROR))
        })
        .collect();
    assert_eq!(dlq[0], ("b", "refused: Broker: Message size too large"));
    assert_eq!(dlq[1].0, "c");
    assert!(dlq[1].1.starts_with("too_large:"), "{}", dlq[1].1);
    let ids: Vec<String> = events(&out).into_iter().map(|e| e.event_id).collect();
    assert_eq!(ids, ["a", "d"]);
    let versions: Vec<u64> = states(&out).into_iter().map(|s| s.version).collect();
    assert_eq!(versions, [1, 2]);
}

/// A large wall-clock flush goes in bounded steps, each durable on its own, and releases
/// exactly what one unbounded flush would, in the same order.
#[test]
fn a_large_flush_goes_in_bounded_steps_with_the_same_result() {
    let records = || -> Vec<Decoded> {
        (0..12)
            .map(|n| {
                input(
                    n,
                    &format!("e{n}"),
                    &format!("o{}", n % 3),
                    10_000 + n * 10,
                    "{}",
                )
            })
            .collect()
    };
    let flushed = |max_flush: usize| -> (Vec<OutRecord>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut task = open(
            &dir,
            TaskSettings {
                max_flush,
                ..TaskSettings::default()
            },
        );
        run(&mut task, records());
        assert_eq!(task.buffered(), 12);
        task.commit(&task.flush_intent(&Flush::All)).unwrap();
        let (mut out, mut steps) = (Vec::new(), 0);
        while task.flush_pending() {
            let mut step = Vec::new();
            let pending = task.flush(&SourceCatalog::empty(), &mut step).unwrap();
            assert!(events(&step).len() <= max_flush, "a step is bounded");
            task.commit(&pending).unwrap();
            out.extend(step);
            steps += 1;
        }
        assert_eq!(task.buffered(), 0);
        (out, steps)
    };
    let (stepped, steps) = flushed(5);
    let (whole, one) = flushed(usize::MAX);
    assert_eq!((steps, one), (3, 1));
    assert_eq!(stepped, whole);
}

/// Two sources of a tenant may use the same event id: each event has its own usage entry, a
/// report naming its source changes only that one, and a report without a source finds the
/// entry of the one source that used the id.
#[test]
fn usage_entries_are_per_source() {
    use crate::caps::{EventUsage, Usage};
    let settings = TaskSettings {
        caps: capped(None, Some(1_000_000)),
        ..TaskSettings::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, settings);
    let from = |source: &str, record: Decoded| {
        record.map(|mut input| {
            input.meta.source = source.into();
            input
        })
    };
    run(
        &mut task,
        vec![
            from("orders", input(0, "a", "o1", 10_000, "{}")),
            from("billing", input(1, "a", "o2", 10_000, "{}")),
            from("orders", input(2, "b", "o3", 10_000, "{}")),
        ],
    );
    let report = |event_id: &str, source: Option<&str>, tokens: u64| UsageRecord {
        tenant: "acme".into(),
        event_id: event_id.into(),
        tokens,
        cost_micros: 0,
        source: source.map(str::to_owned),
    };
    let mut out = Vec::new();
    let pending = task
        .absorb(
            0,
            &[],
            &reports(0, [report("a", Some("billing"), 7), report("b", None, 9)]),
            &SourceCatalog::empty(),
            &mut out,
        )
        .unwrap();
    task.commit(&pending).unwrap();
    let actual = |task: &PartitionTask, event_id: &str, source: &str| {
        let key = crate::admission::usage_key("acme", event_id, source);
        let entry: EventUsage =
            serde_json::from_slice(&task.store.get(Cf::Caps, &key).unwrap().unwrap()).unwrap();
        entry.actual.map(|u: Usage| u.tokens)
    };
    assert_eq!(actual(&task, "a", "billing"), Some(7));
    assert_eq!(
        actual(&task, "a", "orders"),
        None,
        "the other source's event is untouched"
    );
    assert_eq!(
        actual(&task, "b", "orders"),
        Some(9),
        "found without a source"
    );

    // A report without a source before its event: the event takes the report's entry.
    let mut out = Vec::new();
    let pending = task
        .absorb(
            0,
            &[],
            &reports(2, [report("c", None, 5)]),
            &SourceCatalog::empty(),
            &mut out,
        )
        .unwrap();
    task.commit(&pending).unwrap();
    run(
        &mut task,
        vec![from("orders", input(3, "c", "o4", 11_000, "{}"))],
    );
    assert_eq!(actual(&task, "c", "orders"), Some(5));
    let early = crate::admission::usage_prefix("acme", "c");
    assert_eq!(task.store.get(Cf::Caps, &early).unwrap(), None);
}

/// An input received when it occurred (event times far from the test's receive times are
/// not trusted).
pub(super) fn received(offset: i64, event_id: &str, entity: &str, at: i64, body: &str) -> Decoded {
    input(offset, event_id, entity, at, body).map(|mut i| {
        i.meta.received_at = at;
        i
    })
}

/// A tombstone blocks older updates until the tenant's stream time is
/// `tombstone_retention` past the delete; then the entity leaves the store, `state` gets a
/// Kafka tombstone for its key, and an older update re-creates it (documented). Another
/// tenant's clock, however far ahead, expires nothing of this tenant's.
#[test]
fn tombstones_expire_by_their_tenants_stream_time() {
    const RETENTION: i64 = 3_600_000;
    let settings = TaskSettings {
        tombstone_retention_ms: Some(RETENTION),
        ..TaskSettings::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, settings);
    let delete = |offset: i64, id: &str, at: i64| {
        received(offset, id, "o1", at, "{}").map(|mut i| {
            i.meta.event_type = "order.deleted".into();
            i
        })
    };
    let other_tenant = |offset: i64, id: &str, at: i64| {
        received(offset, id, "x1", at, "{}").map(|mut i| {
            i.meta.tenant = "zeta".into();
            i
        })
    };
    run(&mut task, vec![received(0, "a", "o1", 10_000, "{}")]);
    run(&mut task, vec![delete(1, "d", 20_000)]);
    let (out, _) = run(&mut task, vec![received(2, "b", "o2", 20_000 + G, "{}")]);
    assert!(states(&out).iter().any(|s| s.entity == "o1" && s.deleted));
    let key = schemas::key::EntityKey::new("acme", "o1").encode();
    let (out, _) = run(&mut task, vec![other_tenant(3, "z", i64::MAX - G)]);
    assert!(
        out.iter().all(|r| r.value.is_some()),
        "no tombstone expired by zeta's clock"
    );
    assert!(task
        .store
        .get(Cf::Entity, key.as_bytes())
        .unwrap()
        .is_some());

    let (out, stats) = run(
        &mut task,
        vec![received(4, "c", "o3", 20_000 + RETENTION - 1, "{}")],
    );
    assert_eq!(stats.tombstones_expired, 0);
    assert!(out.iter().all(|r| r.value.is_some()));
    let (out, stats) = run(
        &mut task,
        vec![received(5, "e", "o3", 20_000 + RETENTION, "{}")],
    );
    assert_eq!(stats.tombstones_expired, 1);
    let expired: Vec<&OutRecord> = out.iter().filter(|r| r.value.is_none()).collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].topic, expired[0].key.as_slice()),
        (Topic::State, key.as_bytes())
    );
    assert!(task
        .store
        .get(Cf::Entity, key.as_bytes())
        .unwrap()
        .is_none());
    assert!(task
        .store
        .range(Cf::Ttl, b"", &[0xff; 8])
        .unwrap()
        .is_empty());

    // After expiry an update older than the delete is no longer late: it re-creates o1.
    let (out, _) = run(&mut task, vec![received(6, "old", "o1", 15_000, "{}")]);
    let out = [out, flush(&mut task)].concat();
    let old = events(&out)
        .into_iter()
        .find(|e| e.event_id == "old")
        .unwrap();
    assert!(!old.late);
}

/// A re-created entity's old tombstone index entry expires nothing.
#[test]
fn a_recreated_entity_outlives_its_old_tombstone_entry() {
    let settings = TaskSettings {
        tombstone_retention_ms: Some(1_000_000),
        ..TaskSettings::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, settings);
    let deleted = received(0, "d", "o1", 10_000, "{}").map(|mut i| {
        i.meta.event_type = "order.deleted".into();
        i
    });
    run(
        &mut task,
        vec![deleted, received(1, "n", "o1", 20_000, r#"{"v":1}"#)],
    );
    run(&mut task, vec![received(2, "next", "o3", 20_000 + G, "{}")]);
    let (_, stats) = run(&mut task, vec![received(3, "far", "o2", 5_000_000, "{}")]);
    assert_eq!(stats.tombstones_expired, 0);
    let key = schemas::key::EntityKey::new("acme", "o1").encode();
    let state: crate::reconcile::EntityState =
        serde_json::from_slice(&task.store.get(Cf::Entity, key.as_bytes()).unwrap().unwrap())
            .unwrap();
    assert!(!state.deleted);
}

/// A usage report for an event never seen leaves an entry that expires a dedupe window (of
/// the tenant's stream time) later, so reports of unknown events cannot grow the store.
#[test]
fn usage_entries_of_unknown_events_expire() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = capped_with_a_minute_window(&dir);
    run(&mut task, vec![received(0, "a", "o1", 10_000, "{}")]);
    let report = UsageRecord {
        tenant: "acme".into(),
        event_id: "never".into(),
        tokens: 5,
        cost_micros: 0,
        source: Some("orders".into()),
    };
    let mut out = Vec::new();
    let pending = task
        .absorb(
            0,
            &[],
            &reports(0, [report]),
            &SourceCatalog::empty(),
            &mut out,
        )
        .unwrap();
    task.commit(&pending).unwrap();
    let orphan = crate::admission::usage_key("acme", "never", "orders");
    assert!(task.store.get(Cf::Caps, &orphan).unwrap().is_some());
    let (_, stats) = run(
        &mut task,
        vec![received(1, "b", "o1", 10_000 + 59_999, "{}")],
    );
    assert_eq!(stats.usage_expired, 0);
    let (_, stats) = run(
        &mut task,
        vec![received(2, "c", "o1", 10_000 + 60_000, "{}")],
    );
    assert_eq!(stats.usage_expired, 1);
    assert!(task.store.get(Cf::Caps, &orphan).unwrap().is_none());
}

/// Past `max_held`, a cap's deferrals go to `dlq` (`held_full`) instead of being held; a
/// release makes room again.
#[test]
fn held_events_are_bounded_per_tenant() {
    let mut limits = crate::caps::test_support::caps(Some(1), None, None);
    limits.on_window_reset = schemas::config::OnWindowReset::Release;
    let rules = crate::caps::TenantRules {
        caps: Some(limits),
        breaker: None,
    };
    let settings = TaskSettings {
        max_held: 2,
        caps: Some(Arc::new(crate::caps::Caps::from_rules(
            [("acme".to_owned(), rules)],
            0,
            1,
        ))),
        ..TaskSettings::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, settings);
    let hour = 3_600_000;
    let (out, stats) = run(
        &mut task,
        (0..5)
            .map(|i| received(i, &format!("e{i}"), "o1", hour + i, "{}"))
            .collect(),
    );
    assert_eq!((stats.deferred, stats.dead_letters), (2, 2));
    let dlq: Vec<&OutRecord> = out.iter().filter(|r| r.topic == Topic::Dlq).collect();
    assert_eq!(dlq.len(), 2);
    assert!(dlq.iter().all(|r| {
        r.headers
            .iter()
            .any(|(k, v)| k == "hs-error" && v.starts_with(b"held_full"))
    }));
    assert_eq!(
        task.store.range(Cf::Held, b"", &[0xff; 8]).unwrap().len(),
        2
    );
    // The next hour releases one held event (the cap admits one per hour) and holds the new.
    let (_, stats) = run(&mut task, vec![received(5, "n", "o2", 2 * hour, "{}")]);
    assert_eq!((stats.deferred, stats.dead_letters), (1, 0));
    assert_eq!(
        task.store.range(Cf::Held, b"", &[0xff; 8]).unwrap().len(),
        2
    );
}

/// The per-tenant counters (the `tenant` label) count each record under its own tenant, two
/// tenants sharing the partition and one of them with a clock far in the future.
#[test]
fn batch_counts_are_kept_per_tenant_on_a_shared_partition() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, TaskSettings::default());
    let zeta = |offset: i64, id: &str, at: i64| {
        input(offset, id, "x1", at, "{}").map(|mut i| {
            i.meta.tenant = "zeta".into();
            i
        })
    };
    let (_, stats) = run(
        &mut task,
        vec![
            input(0, "e1", "o1", 10, "{}"),
            zeta(1, "e1", i64::MAX - 1),
            input(2, "e1", "o1", 10, "{}"),
            zeta(3, "z2", i64::MIN + 1),
        ],
    );
    let acme = &stats.tenants["acme"];
    assert_eq!((acme.events, acme.duplicates), (1, 1));
    let zeta = &stats.tenants["zeta"];
    assert_eq!(
        (zeta.events, zeta.duplicates),
        (2, 0),
        "same id, other tenant"
    );
    assert_eq!(stats.events, 3);
}
