//! The processor's cores without a broker: events per second on one core.
//!
//! Drives partition tasks the way the consumer loop does — decode `raw` records (key, value,
//! the ingest's eleven headers) → `PartitionTask::process` (trust time, dedupe, admit with
//! caps on, reorder, reconcile, emit) → frame the batch's store ops as changelog records →
//! `PartitionTask::commit` into a real RocksDB store — on one thread, on the processor
//! benchmark's workload with 1–4 KiB JSON bodies (10 tenants, 300 entities, 5 % redeliveries,
//! events shuffled within and beyond the grace), 3 partitions in batches of 500.
//!
//! Baseline in the same run, on the same records: **bare** decodes each record and writes its
//! body to a RocksDB store under its key, one write batch per 500 (what any stateful consumer
//! pays). Prints both rates and their ratio (this machine is noisy; the ratio is not).
//! Target (issue 16): ≥ 100 000 events/s on one core.
//!
//! `cargo bench --bench processor_core` (`HOOKSTREAM_BENCH_EVENTS`, default 300 000;
//! `HOOKSTREAM_BENCH_BODIES=small|large` for one of the two runs); under
//! `cargo test` a smoke run of 5 000 events.

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "../tests/workload/mod.rs"]
mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use processor::caps::{Caps, TenantRules};
use processor::catalog::SourceCatalog;
use processor::changelog;
use processor::input::decode;
use processor::store::{Op, CHANGELOG_NEXT, EPOCH};
use processor::task::{PartitionTask, TaskSettings};
use rdkafka::message::{OwnedMessage, Timestamp};
use schemas::config::{CapLimits, Estimate, OnWindowReset};

/// The allocator of the `hookstream` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: i32 = 3;
const BATCH: usize = 500;

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let count: usize = harness::env_or(
        "HOOKSTREAM_BENCH_EVENTS",
        if measuring { 300_000 } else { 5_000 },
    );
    let bodies = std::env::var("HOOKSTREAM_BENCH_BODIES").unwrap_or_default();
    for large in [false, true] {
        if bodies.is_empty() || bodies == if large { "large" } else { "small" } {
            run(count, large);
        }
    }
}

/// One measurement: the workload's own bodies (about 45 bytes), or 1–4 KiB ones.
fn run(count: usize, large: bool) {
    let partitions = records(count, large);
    let bytes: usize = partitions
        .iter()
        .flatten()
        .map(|m| rdkafka::Message::payload(m).map_or(0, <[u8]>::len))
        .sum();
    println!(
        "processor core, {} bodies: {count} records, {:.0} bytes of body on average, {PARTITIONS} partitions, batches of {BATCH}",
        if large { "1–4 KiB" } else { "small" },
        bytes as f64 / count as f64,
    );
    let bare = bare(&partitions);
    println!(
        "  bare (decode + RocksDB write per batch): {:.2} s = {:.0} records/s",
        bare.as_secs_f64(),
        count as f64 / bare.as_secs_f64()
    );
    let core = core(&partitions);
    let tasks = core.total - core.decode;
    println!(
        "  decode: {:.2} s = {:.0} records/s",
        core.decode.as_secs_f64(),
        count as f64 / core.decode.as_secs_f64()
    );
    let rate = count as f64 / tasks.as_secs_f64();
    println!(
        "  partition tasks (dedupe → admit → reorder → reconcile → emit → frame → commit): {:.2} s = {rate:.0} records/s ({} events emitted)",
        tasks.as_secs_f64(),
        core.emitted,
    );
    println!(
        "  {:.1} store ops and {:.0} changelog bytes per record",
        core.ops as f64 / count as f64,
        core.changelog_bytes as f64 / count as f64
    );
    println!(
        "  decode + tasks: {:.0} records/s, {:.2} of bare; tasks alone {rate:.0} records/s on one core (target ≥ 100 000)",
        count as f64 / core.total.as_secs_f64(),
        bare.as_secs_f64() / core.total.as_secs_f64()
    );
}

/// The workload as `raw` records, by partition (routed by key as the ingest's producer does).
fn records(count: usize, large: bool) -> Vec<Vec<OwnedMessage>> {
    let mut partitions: Vec<Vec<OwnedMessage>> = vec![Vec::new(); PARTITIONS as usize];
    for input in workload::stream(count) {
        let key = format!("{}/{}", input.tenant, input.entity);
        let partition = (murmur2::murmur2(key.as_bytes(), murmur2::KAFKA_SEED) & 0x7fff_ffff)
            as i32
            % PARTITIONS;
        let headers = workload::raw_headers(
            &input.tenant,
            &input.event_id,
            &input.event_type,
            &input.entity,
            (input.occurred_at, input.occurred_at),
        );
        let list = &mut partitions[partition as usize];
        list.push(OwnedMessage::new(
            Some(if large {
                padded(&input.body)
            } else {
                input.body.into_bytes()
            }),
            Some(key.into_bytes()),
            "bench-raw".into(),
            Timestamp::CreateTime(input.occurred_at),
            partition,
            list.len() as i64,
            Some(headers),
        ));
    }
    partitions
}

/// The body grown to 1–4 KiB with a text field (a transcript, say), still one JSON object.
fn padded(body: &str) -> Vec<u8> {
    let seed = body.len() * 2_654_435_761 % 3_072;
    let text = &"lorem ipsum dolor sit amet ".repeat(160)[..1_024 + seed];
    format!(r#"{},"text":"{text}"}}"#, &body[..body.len() - 1]).into_bytes()
}

fn settings() -> TaskSettings {
    let limits = CapLimits {
        events_per_hour: Some(u64::MAX / 4),
        tokens_per_day: Some(u64::MAX / 4),
        cost_per_day_micros: None,
        timezone: "UTC".parse().unwrap(),
        on_window_reset: OnWindowReset::Release,
        estimates: vec![Estimate {
            source: None,
            event_type: None,
            fixed_tokens: 10,
            tokens_per_kib: 250,
            cost_per_1k_tokens_micros: 0,
        }],
    };
    let tenants = (0..10).map(|t| {
        let rules = TenantRules {
            caps: Some(limits.clone()),
            breaker: None,
        };
        (format!("t{t}"), rules)
    });
    TaskSettings {
        batch_max: BATCH,
        caps: Some(Arc::new(Caps::from_rules(tenants, 0, PARTITIONS))),
        ..TaskSettings::default()
    }
}

/// Processes every partition's records batch by batch, round robin, as the consumer loop
/// does, and returns the time taken and the number of `events` records.
fn core(partitions: &[Vec<OwnedMessage>]) -> Timed {
    let dir = tempfile::tempdir().unwrap();
    let catalog = SourceCatalog::empty();
    let mut tasks: Vec<PartitionTask> = (0..PARTITIONS)
        .map(|p| PartitionTask::open(&dir.path().join(p.to_string()), settings()).unwrap())
        .collect();
    let mut emitted = 0;
    let mut decode_time = Duration::ZERO;
    let (mut ops, mut changelog_bytes) = (0, 0);
    let mut seq = 0u64;
    let mut changelog_next = vec![0i64; PARTITIONS as usize];
    let started = Instant::now();
    let rounds = partitions.iter().map(Vec::len).max().unwrap_or(0);
    for start in (0..rounds).step_by(BATCH) {
        for (partition, records) in partitions.iter().enumerate() {
            let Some(batch) = records.get(start..(start + BATCH).min(records.len())) else {
                continue;
            };
            let task = &mut tasks[partition];
            let decoding = Instant::now();
            let decoded = batch.iter().map(decode).collect();
            decode_time += decoding.elapsed();
            let mut out = Vec::new();
            let mut pending = task.process(decoded, &catalog, &mut out).unwrap();
            emitted += out
                .iter()
                .filter(|r| r.topic == schemas::topics::Topic::Events)
                .count();
            seq += 1;
            let frames = changelog::frames(partition as i32, 0, seq, &pending.ops);
            ops += pending.ops.len();
            let framed: usize = frames
                .iter()
                .map(|f| f.value.as_ref().map_or(0, Vec::len))
                .sum();
            changelog_next[partition] += frames.len() as i64;
            changelog_bytes += framed;
            pending
                .ops
                .push(Op::meta(CHANGELOG_NEXT, changelog_next[partition]));
            pending.ops.push(Op::meta(EPOCH, 0));
            pending.ops.push(task.changelog_written(framed as u64, 0));
            task.commit(&pending).unwrap();
            std::hint::black_box(out);
        }
    }
    Timed {
        total: started.elapsed(),
        decode: decode_time,
        emitted,
        ops,
        changelog_bytes,
    }
}

struct Timed {
    total: Duration,
    /// Of `total`, decoding `raw` records (headers, key) into inputs.
    decode: Duration,
    emitted: usize,
    /// Store changes written, and their bytes in the changelog.
    ops: usize,
    changelog_bytes: usize,
}

fn bare(partitions: &[Vec<OwnedMessage>]) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<rocksdb::DB> = (0..PARTITIONS)
        .map(|p| rocksdb::DB::open_default(dir.path().join(p.to_string())).unwrap())
        .collect();
    let started = Instant::now();
    for (partition, records) in partitions.iter().enumerate() {
        for batch in records.chunks(BATCH) {
            let mut write = rocksdb::WriteBatch::default();
            for message in batch {
                let input = decode(message).unwrap();
                write.put(input.meta.entity.as_bytes(), &input.body);
            }
            stores[partition].write(write).unwrap();
        }
    }
    started.elapsed()
}
