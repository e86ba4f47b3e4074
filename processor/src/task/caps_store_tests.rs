//! The caps' state in the store: one key per part that changes on its own, so a batch's
//! changelog frame carries what it changed; entity tracks forgotten by the tenant's stream
//! time; stores in the old one-value layout moved on first use.

use std::sync::Arc;

use schemas::config::BreakerConfig;

use super::tests::{open, received as input, run};
use super::*;
use crate::admission::stored;
use crate::caps::breaker::{BreakerState, EntityTrack};
use crate::caps::{BudgetShare, Caps, TenantRules, TenantState};
use crate::catalog::SourceCatalog;
use crate::store::{Cf, Op};

const T0: i64 = 1_700_000_000_000;

fn settings() -> TaskSettings {
    let breaker = BreakerConfig {
        entity_per_minute: 1_000,
        ..BreakerConfig::default()
    };
    let rules = |tenant: &str| {
        let mut limits = crate::caps::test_support::caps(Some(1_000_000), None, None);
        limits.on_window_reset = schemas::config::OnWindowReset::Keep;
        let rules = TenantRules {
            caps: Some(limits),
            breaker: Some(breaker.clone()),
        };
        (tenant.to_owned(), rules)
    };
    TaskSettings {
        caps: Some(Arc::new(Caps::from_rules(
            [rules("acme"), rules("zeta")],
            0,
            3,
        ))),
        ..TaskSettings::default()
    }
}

fn caps_keys(ops: &[Op]) -> Vec<Vec<u8>> {
    ops.iter()
        .filter(|op| op.cf == Cf::Caps)
        .map(|op| op.key.clone())
        .collect()
}

fn share(partition: i32, events: u64) -> BudgetShare {
    let state = TenantState::default();
    let mut share = BudgetShare::of(
        "acme",
        partition,
        &state.ledger,
        &state.status,
        &state.breaker,
    );
    share.events = events;
    share
}

fn absorb(task: &mut PartitionTask, shares: &[BudgetShare]) -> Vec<Op> {
    let mut out = Vec::new();
    let pending = task
        .absorb(0, shares, &[], &SourceCatalog::empty(), &mut out)
        .unwrap();
    task.commit(&pending).unwrap();
    pending.ops
}

fn process(task: &mut PartitionTask, records: Vec<Decoded>) -> Vec<Op> {
    let mut out = Vec::new();
    let pending = task
        .process(records, &SourceCatalog::empty(), &mut out)
        .unwrap();
    task.commit(&pending).unwrap();
    pending.ops
}

/// A batch of one entity's event writes that entity's track, the tenant's own state and the
/// event's usage entry — not the other entities' tracks nor the other partitions' shares,
/// which an absorb step writes once, when they change.
#[test]
fn a_batch_writes_only_the_caps_state_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, settings());
    let first: Vec<Decoded> = (0..50)
        .map(|n| input(n, &format!("a{n}"), &format!("o{n}"), T0 + n, "{}"))
        .collect();
    process(&mut task, first);
    let ops = absorb(&mut task, &[share(1, 7), share(2, 9)]);
    let shares: Vec<_> = caps_keys(&ops)
        .into_iter()
        .filter(|k| k[0] == b'o')
        .collect();
    assert_eq!(shares.len(), 2);
    assert!(
        caps_keys(&absorb(&mut task, &[share(1, 7)])).is_empty(),
        "an unchanged share writes nothing"
    );

    let ops = process(&mut task, vec![input(50, "b", "o7", T0 + 100, "{}")]);
    let mut keys = caps_keys(&ops);
    keys.sort();
    let mut expected = vec![
        b"tacme".to_vec(),
        stored::entity_key("acme", "o7"),
        crate::admission::usage_key("acme", "b", "orders"),
    ];
    expected.sort();
    assert_eq!(keys, expected);
    let own = task.store.get(Cf::Caps, b"tacme").unwrap().unwrap();
    assert!(
        own.len() < 400,
        "the tenant's own state is {} bytes",
        own.len()
    );
    let reloaded = stored::load(&mut crate::store::Txn::new(&task.store), "acme")
        .unwrap()
        .0;
    assert_eq!(reloaded.others.by_partition[&2].events, 9);
}

/// An entity's breaker track is forgotten once the tenant's stream time is a minute past its
/// last arrival (an open breaker's: past its cooldown), through the `ttl` index; one entity
/// active all along keeps its track; another tenant's clock forgets nothing.
#[test]
fn idle_entity_tracks_are_forgotten_by_their_tenants_stream_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = open(&dir, settings());
    let track = |task: &PartitionTask, entity: &str| {
        stored::load_entity(&crate::store::Txn::new(&task.store), "acme", entity).unwrap()
    };
    run(
        &mut task,
        vec![
            input(0, "a", "idle", T0, "{}"),
            input(1, "b", "busy", T0, "{}"),
        ],
    );
    let zeta = input(2, "z", "x", T0 + 3_600_000, "{}").map(|mut i| {
        i.meta.tenant = "zeta".into();
        i
    });
    run(&mut task, vec![zeta]);
    assert!(
        track(&task, "idle").is_some(),
        "zeta's clock forgets nothing of acme's"
    );
    for (n, at) in [(3, T0 + 40_000), (4, T0 + 80_000)] {
        run(
            &mut task,
            vec![input(n, &format!("c{n}"), "busy", at, "{}")],
        );
    }
    assert!(track(&task, "idle").is_none());
    assert_eq!(track(&task, "busy").unwrap().last_seen, T0 + 80_000);
    run(&mut task, vec![input(5, "d", "other", T0 + 140_000, "{}")]);
    assert!(track(&task, "busy").is_none());
}

/// A tenant stored in the old layout (shares and entity tracks inside its one value) is
/// moved to per-key entries the first time a batch loads it, and decides the same.
#[test]
fn a_store_in_the_old_layout_is_moved_to_keys_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let task = open(&dir, settings());
    let mut old = TenantState::default();
    old.others.by_partition.insert(1, share(1, 5));
    let mut breaker = BreakerState::default();
    breaker.entities.insert(
        "o1".into(),
        EntityTrack {
            last_seen: T0,
            ..EntityTrack::default()
        },
    );
    old.breaker = breaker;
    let legacy = serde_json::to_value(&old).unwrap();
    assert!(legacy["breaker"]["entities"]["o1"].is_object());
    task.store
        .write(&[Op {
            cf: Cf::Caps,
            key: b"tacme".to_vec(),
            value: Some(serde_json::to_vec(&legacy).unwrap()),
        }])
        .unwrap();
    drop(task);
    let mut task = open(&dir, settings());
    process(&mut task, vec![input(0, "a", "o2", T0 + 1_000, "{}")]);
    let own = task.store.get(Cf::Caps, b"tacme").unwrap().unwrap();
    assert_ne!(own[0], b'{', "rewritten in the binary layout");
    assert!(task
        .store
        .get(Cf::Caps, &stored::entity_key("acme", "o1"))
        .unwrap()
        .is_some());
    let state = stored::load(&mut crate::store::Txn::new(&task.store), "acme")
        .unwrap()
        .0;
    assert_eq!(state.others.by_partition[&1].events, 5);
}
