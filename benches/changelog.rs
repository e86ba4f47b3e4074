//! Changelog volume against input volume: how many changelog bytes does a partition task write
//! per byte it reads from `raw`, with and without capped tenants?
//!
//! The tests' workload (10 tenants × 300 entities, 5 % redeliveries, shuffles within and
//! beyond the grace, a delete in 50) is split over three partition tasks by key, as `raw`'s
//! partitioner would, and processed in batches of 500 records (a busy processor) and of one
//! record (a quiet one: every record is its own durable step). Each batch's store changes are
//! framed exactly as `hookstream process` writes them (`changelog::frames`); snapshots are
//! left out (their volume is set by `[processor.snapshots]`, see `benches/restore.rs`).
//! Between rounds the tasks take in each other's budget shares, as the absorb step does.
//!
//! Two settings: no caps, and every tenant with all three caps (never reached) and a breaker
//! (never tripped), so every event is admitted and only the bookkeeping differs. Input bytes
//! are the `raw` records' key, value and headers. Prints changelog bytes per input byte for
//! each case and the capped / uncapped ratio, all from one invocation.
//!
//! `cargo bench --bench changelog`; under `cargo test` a smoke run of 3 000 events.

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "../tests/workload/mod.rs"]
mod workload;

use std::sync::Arc;

use processor::caps::{BudgetShare, Caps, TenantRules};
use processor::catalog::SourceCatalog;
use processor::changelog;
use processor::input::RawInput;
use processor::output::OutRecord;
use processor::task::{PartitionTask, TaskSettings};
use schemas::config::{BreakerConfig, CapLimits, Estimate, OnWindowReset};
use schemas::raw::RawMeta;
use schemas::topics::Topic;

const PARTITIONS: i32 = 3;

fn raw_input(input: &workload::Input, offset: i64) -> RawInput {
    RawInput {
        partition: 0,
        offset,
        meta: RawMeta {
            tenant: input.tenant.clone(),
            source: "orders".into(),
            scheme: "hmac".into(),
            event_id: input.event_id.clone(),
            event_type: input.event_type.clone(),
            entity: input.entity.clone(),
            occurred_at: input.occurred_at,
            received_at: input.occurred_at,
            content_type: "application/json".into(),
            key_id: "k1".into(),
            event_id_derived: false,
            redrive_id: None,
        },
        body: input.body.clone().into_bytes(),
        claimed_at: None,
        trace: None,
    }
}

/// What the record takes in `raw`: key, value and headers.
fn raw_bytes(input: &RawInput) -> u64 {
    let key = input.meta.tenant.len() + 1 + input.meta.entity.len();
    let headers: usize = input
        .meta
        .to_headers()
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    (key + input.body.len() + headers) as u64
}

fn capped(tenants: &[String], partition: i32) -> Arc<Caps> {
    let rules = tenants.iter().map(|tenant| {
        let limits = CapLimits {
            events_per_hour: Some(1 << 40),
            tokens_per_day: Some(1 << 50),
            cost_per_day_micros: Some(1 << 50),
            timezone: "UTC".parse().unwrap(),
            on_window_reset: OnWindowReset::Release,
            estimates: vec![Estimate {
                source: None,
                event_type: None,
                fixed_tokens: 120,
                tokens_per_kib: 400,
                cost_per_1k_tokens_micros: 2_000,
            }],
        };
        let breaker = BreakerConfig {
            entity_per_minute: 10_000,
            tenant_per_minute: Some(1_000_000),
            spike_multiple: Some(50.0),
            ..BreakerConfig::default()
        };
        let rules = TenantRules {
            caps: Some(limits),
            breaker: Some(breaker),
        };
        (tenant.clone(), rules)
    });
    Arc::new(Caps::from_rules(rules, partition, PARTITIONS))
}

#[derive(Default)]
struct Volume {
    input: u64,
    changelog: u64,
    frames: u64,
}

fn run(inputs: &[workload::Input], batch: usize, caps: bool) -> Volume {
    let tenants: Vec<String> = (0..10).map(|t| format!("t{t}")).collect();
    let dirs: Vec<_> = (0..PARTITIONS)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let mut tasks: Vec<PartitionTask> = (0..PARTITIONS)
        .map(|p| {
            let settings = TaskSettings {
                caps: caps.then(|| capped(&tenants, p)),
                ..TaskSettings::default()
            };
            PartitionTask::open(dirs[p as usize].path(), settings).unwrap()
        })
        .collect();
    let mut queues: Vec<Vec<RawInput>> = vec![Vec::new(); PARTITIONS as usize];
    for input in inputs {
        let key = format!("{}/{}", input.tenant, input.entity);
        let p = processor::usage_view::partition_of(key.as_bytes(), PARTITIONS);
        let queue = &mut queues[p as usize];
        let mut raw = raw_input(input, queue.len() as i64);
        raw.partition = p;
        queue.push(raw);
    }
    let catalog = SourceCatalog::empty();
    let mut volume = Volume::default();
    let mut seq = vec![0u64; PARTITIONS as usize];
    let mut frame = |p: usize, pending: &processor::task::Pending, volume: &mut Volume| {
        for record in changelog::frames(p as i32, 1, seq[p], &pending.ops) {
            volume.changelog += record.value.as_ref().map_or(0, Vec::len) as u64;
            volume.changelog += record.key.len() as u64;
            volume.frames += 1;
        }
        seq[p] += 1;
    };
    let rounds = queues
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .div_ceil(batch);
    for round in 0..rounds {
        let mut shares: Vec<BudgetShare> = Vec::new();
        for (p, task) in tasks.iter_mut().enumerate() {
            let queue = &queues[p];
            let from = (round * batch).min(queue.len());
            let to = (from + batch).min(queue.len());
            let records: Vec<_> = queue[from..to].to_vec();
            volume.input += records.iter().map(raw_bytes).sum::<u64>();
            let mut out: Vec<OutRecord> = Vec::new();
            let pending = task
                .process(records.into_iter().map(Ok).collect(), &catalog, &mut out)
                .unwrap();
            task.commit(&pending).unwrap();
            frame(p, &pending, &mut volume);
            shares.extend(out.iter().filter(|r| r.topic == Topic::Budget).map(|r| {
                serde_json::from_slice::<BudgetShare>(r.value.as_deref().unwrap()).unwrap()
            }));
        }
        if caps && !shares.is_empty() {
            for (p, task) in tasks.iter_mut().enumerate() {
                let mut out = Vec::new();
                let pending = task
                    .absorb(p as i32, &shares, &[], &catalog, &mut out)
                    .unwrap();
                task.commit(&pending).unwrap();
                frame(p, &pending, &mut volume);
            }
        }
    }
    volume
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let count: usize = harness::env_or(
        "HOOKSTREAM_BENCH_EVENTS",
        if measuring { 30_000 } else { 3_000 },
    );
    let inputs = workload::stream(count);
    println!("{count} records over {PARTITIONS} partition tasks; changelog frames only");
    println!(
        "{:<28} {:>14} {:>16} {:>10} {:>16}",
        "case", "input bytes", "changelog bytes", "frames", "changelog/input"
    );
    for batch in [500, 1] {
        let mut per_input = Vec::new();
        for caps in [false, true] {
            let v = run(&inputs, batch, caps);
            let ratio = v.changelog as f64 / v.input as f64;
            per_input.push(ratio);
            let case = format!(
                "batch {batch}, {}",
                if caps { "capped tenants" } else { "no caps" }
            );
            println!(
                "{case:<28} {:>14} {:>16} {:>10} {ratio:>16.2}",
                v.input, v.changelog, v.frames
            );
        }
        println!(
            "batch {batch}: capped / uncapped = {:.2}",
            per_input[1] / per_input[0]
        );
    }
}
