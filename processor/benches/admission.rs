//! Admission cost per event against how many events the tenant holds back.
//!
//! A tenant capped at one event per hour (`on_window_reset = "release"`) sends `held + 1`
//! events in one hour: one is admitted, `held` are deferred and held. In the next hour each
//! new event makes admission try to release the held ones: the first is admitted, the next is
//! refused again, and so is every later one. This measures processing one such event (a batch
//! of one, committed to RocksDB), with 0, 10 000 and 100 000 events held, and prints the ratio
//! to the run with none held, all in one invocation (this machine is noisy; ratios are not).
//! Target (issue 13): at most 1.5× from 0 to 100 000.
//!
//! `cargo bench -p hookstream-processor --bench admission`; under `cargo test` it makes a small
//! smoke run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use processor::caps::{Caps, TenantRules};
use processor::catalog::SourceCatalog;
use processor::input::RawInput;
use processor::task::{PartitionTask, TaskSettings};
use schemas::config::{CapLimits, OnWindowReset};
use schemas::raw::RawMeta;

const HOUR: i64 = 3_600_000;
const START: i64 = 1_700_002_800_000; // the top of an hour (UTC)

fn input(offset: i64, at: i64) -> RawInput {
    RawInput {
        partition: 0,
        offset,
        meta: RawMeta {
            tenant: "acme".into(),
            source: "calls".into(),
            scheme: "hmac".into(),
            event_id: format!("evt-{offset}"),
            event_type: "call.turn".into(),
            entity: format!("call-{}", offset % 1_000),
            occurred_at: at,
            received_at: at,
            content_type: "application/json".into(),
            key_id: "k1".into(),
            event_id_derived: false,
            redrive_id: None,
        },
        body: format!(r#"{{"offset":{offset},"text":"{}"}}"#, "x".repeat(200)).into_bytes(),
        claimed_at: None,
        trace: None,
    }
}

fn settings() -> TaskSettings {
    let limits = CapLimits {
        events_per_hour: Some(1),
        tokens_per_day: None,
        cost_per_day_micros: None,
        timezone: "UTC".parse().unwrap(),
        on_window_reset: OnWindowReset::Release,
        estimates: Vec::new(),
    };
    let rules = TenantRules {
        caps: Some(limits),
        breaker: None,
    };
    TaskSettings {
        max_buffered: 1_000_000,
        max_held: u64::MAX,
        caps: Some(Arc::new(Caps::from_rules(
            [("acme".to_owned(), rules)],
            0,
            1,
        ))),
        ..TaskSettings::default()
    }
}

/// Median time to process (and commit) one event in the next hour, with `held` held back.
fn per_event(held: i64, rounds: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut task = PartitionTask::open(dir.path(), settings()).unwrap();
    let catalog = SourceCatalog::empty();
    let mut offset = 0;
    let run = |task: &mut PartitionTask, inputs: Vec<RawInput>| {
        let mut out = Vec::new();
        let pending = task
            .process(inputs.into_iter().map(Ok).collect(), &catalog, &mut out)
            .unwrap();
        task.commit(&pending).unwrap();
    };
    let first_hour: Vec<RawInput> = (0..=held)
        .map(|n| {
            offset += 1;
            input(offset, START + n % HOUR)
        })
        .collect();
    for chunk in first_hour.chunks(1_000) {
        run(&mut task, chunk.to_vec());
    }
    let mut times = Vec::with_capacity(rounds);
    for n in 0..rounds as i64 {
        offset += 1;
        let event = input(offset, START + HOUR + n);
        let started = Instant::now();
        run(&mut task, vec![event]);
        times.push(started.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (sizes, rounds): (&[i64], usize) = if measuring {
        (&[0, 10_000, 100_000], 400)
    } else {
        (&[0, 1_000], 20)
    };
    let baseline = per_event(sizes[0], rounds);
    println!(
        "admission: {:>7} held: {:>8.1} µs/event (baseline)",
        sizes[0],
        baseline.as_secs_f64() * 1e6
    );
    for held in &sizes[1..] {
        let took = per_event(*held, rounds);
        println!(
            "admission: {held:>7} held: {:>8.1} µs/event, {:.2}× the baseline",
            took.as_secs_f64() * 1e6,
            took.as_secs_f64() / baseline.as_secs_f64()
        );
    }
}
