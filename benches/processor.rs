//! Processor throughput against a stateless passthrough, on one pre-filled `raw` topic.
//!
//! Starts a Tansu broker (as the tests do; `HOOKSTREAM_BENCH_ENGINE=memory|sqlite`, memory by
//! default), writes `HOOKSTREAM_BENCH_EVENTS` events (default 1 000 000; many tenants and
//! entities, 5 % redeliveries, shuffles within the grace) to `raw` (`HOOKSTREAM_BENCH_PARTITIONS`
//! partitions, default 3), then measures, in the same run and on the same input (the processor
//! first: Tansu's sqlite engine slows down as its database grows, and at 1 M events a
//! processor run after two passthroughs once tipped it into a panic):
//!
//! - **processor**: the release `hookstream process` binary with the default settings under a
//!   fresh group, from its start until its tasks have applied every record and hold nothing
//!   back (its `/readyz`; a task moves on only once its batch is durable), then checks by
//!   reading `events` that every unique event is there;
//! - **passthrough**: consume `raw` → produce every record unchanged to another topic, in
//!   batches of `batch_max`, waiting for every acknowledgement and committing offsets
//!   synchronously after each batch; the processor's client settings (linger 1 ms);
//! - the same without headers (**bare**).
//!
//! and prints input records per second for each and the ratios. Run with
//! `TANSU_BIN=… cargo bench --bench processor`. Under `cargo test` (no `--bench` argument) it
//! makes a smoke run of 3 000 events, so the suite keeps the benchmark working.
//! `HOOKSTREAM_BENCH_LOG=1` keeps the processor's log in /tmp/hookstream-bench-processor.log.

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "../tests/workload/mod.rs"]
mod workload;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use schemas::config::Config;
use schemas::kafka::{client_config, Role};

use harness::{Broker, Service, Settings, TestConfig};

/// The product's default `processor.batch_max`, also the passthroughs' batch.
const BATCH_MAX: usize = 2_000;

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let count: usize = harness::env_or(
        "HOOKSTREAM_BENCH_EVENTS",
        if measuring { 1_000_000 } else { 3_000 },
    );
    let engine = harness::broker::Engine::from_env(harness::broker::Engine::Memory);
    println!("broker: Tansu, {} engine", engine.name());
    let broker = Broker::start_on(engine);
    let settings = Settings {
        batch_max: BATCH_MAX,
        // Its status endpoint shows each task's progress while the benchmark runs.
        processor: r#"listen = "127.0.0.1:0""#.into(),
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "bench", &settings);
    // The product's consumer fetch sizes, not the tests' small ones; the partitions asked for.
    let partitions: i32 = harness::env_or("HOOKSTREAM_BENCH_PARTITIONS", 3);
    println!("{partitions} partitions of `raw`");
    let text = std::fs::read_to_string(&config.path).unwrap().replace(
        "\npartitions = 3\n",
        &format!("\npartitions = {partitions}\n"),
    );
    let text: String = text
        .lines()
        .filter(|l| {
            ![
                "fetch.max.bytes",
                "max.partition.fetch.bytes",
                "queued.max.messages.kbytes",
            ]
            .iter()
            .any(|k| l.starts_with(&format!("\"{k}\"")))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config.path, text).unwrap();
    harness::create_topics(&config);
    let inputs = workload::stream(count);
    let unique = workload::unique(&inputs);
    let started = Instant::now();
    workload::produce(&config.brokers, &config.topic("raw"), &inputs, 0);
    let fill = started.elapsed();
    println!(
        "raw pre-filled: {count} records in {:.1} s ({:.0} records/s)",
        fill.as_secs_f64(),
        count as f64 / fill.as_secs_f64()
    );
    drop(inputs);

    let started = Instant::now();
    let processor = Service::processor(&config.path);
    // A deadline by size: a smoke run under `cargo test` must fail fast, not hang CI.
    let deadline = Duration::from_secs(120 + count as u64 / 500);
    wait_processed(processor.base_url(), count as i64, deadline);
    let processed = started.elapsed();
    if std::env::var_os("HOOKSTREAM_BENCH_LOG").is_some() {
        std::fs::write("/tmp/hookstream-bench-processor.log", processor.log()).unwrap();
    }
    drop(processor);
    let emitted = count_records(&config.brokers, &config.topic("events"), unique, deadline);
    assert_eq!(emitted, unique);
    println!(
        "processor: {count} records ({unique} unique events) in {:.1} s = {:.0} records/s",
        processed.as_secs_f64(),
        count as f64 / processed.as_secs_f64()
    );
    let passthrough = passthrough(&config, count as i64, true);
    println!(
        "passthrough (key, value, headers): {count} records in {:.1} s = {:.0} records/s",
        passthrough.as_secs_f64(),
        count as f64 / passthrough.as_secs_f64()
    );
    let bare = passthrough_bare(&config, count as i64);
    println!(
        "passthrough (key, value; headers dropped): {count} records in {:.1} s = {:.0} records/s",
        bare.as_secs_f64(),
        count as f64 / bare.as_secs_f64()
    );

    println!(
        "ratio processor / passthrough: {:.2} (target ≥ 0.8); against the header-less passthrough: {:.2} (target ≥ 0.5)",
        passthrough.as_secs_f64() / processed.as_secs_f64(),
        bare.as_secs_f64() / processed.as_secs_f64()
    );
}

/// Waits until the processor's tasks have applied all `count` records of `raw` (its partitions
/// start at offset 0) and hold nothing back: every output is acknowledged by then (a task's
/// position moves only after its batch is durable). Read from the processor's `/readyz`, not
/// from the broker: Tansu's memory engine reports high watermarks short of a partition's last
/// batch.
fn wait_processed(status: &str, count: i64, deadline: Duration) {
    let deadline = Instant::now() + deadline;
    loop {
        // 503 while a task is not running yet: its body says where each task stands too.
        let response = match ureq::get(&format!("{status}/readyz")).call() {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(error) => panic!("the processor's status endpoint: {error}"),
        };
        let body: serde_json::Value = response.into_json().unwrap();
        let tasks = body["partitions"].as_object().cloned().unwrap_or_default();
        let applied: i64 = tasks
            .values()
            .filter_map(|t| t["next_offset"].as_i64())
            .sum();
        let holding = tasks.values().any(|t| t["buffered"].as_i64() != Some(0));
        if applied >= count && !holding {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the processor applied {applied} of {count} records before the deadline"
        );
        std::thread::sleep(Duration::from_millis(20)); // polling interval
    }
}

/// Reads `topic` until `expected` records came (see [`wait_processed`] for why not by its
/// watermarks); fails at the deadline.
fn count_records(brokers: &str, topic: &str, expected: i64, deadline: Duration) -> i64 {
    let mut seen = 0i64;
    harness::kafka::stream_until(brokers, topic, deadline, |_| {
        seen += 1;
        seen >= expected
    });
    seen
}

/// Tansu stores each header as a row, so copying `raw`'s eleven `hs-*` headers costs more
/// than the processor's one header per output; this baseline drops them.
fn passthrough_bare(test: &TestConfig, count: i64) -> Duration {
    passthrough(test, count, false)
}

/// Copies `raw` to `<prefix>passthrough` with the processor's client settings and loop shape.
fn passthrough(test: &TestConfig, count: i64, headers: bool) -> Duration {
    let config = Config::load(&test.path).unwrap();
    let raw = test.topic("raw");
    let mut consumer_config = client_config(&config.kafka, Role::Consumer);
    let name = if headers { "passthrough" } else { "bare" };
    consumer_config.set("group.id", name);
    let consumer: BaseConsumer = consumer_config.create().unwrap();
    let mut producer_config = client_config(&config.kafka, Role::Producer);
    schemas::kafka::default_unless_set(
        &mut producer_config,
        &config.kafka,
        Role::Producer,
        "linger.ms",
        "1",
    );
    let producer: FutureProducer = producer_config.create().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(schemas::kafka::ensure_topics(
            &config.kafka,
            &schemas::topics::TopicNames::new(format!("{}{name}-", test.prefix)),
            &[schemas::topics::Topic::Raw],
            -1,
        ))
        .unwrap();
    let out = format!("{}{name}-raw", test.prefix);
    let mut assignment = TopicPartitionList::new();
    for partition in 0..config.kafka.partitions {
        assignment
            .add_partition_offset(&raw, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let started = Instant::now();
    let mut copied = 0i64;
    while copied < count {
        let mut batch = Vec::with_capacity(BATCH_MAX);
        if let Some(message) = consumer.poll(Duration::from_secs(1)) {
            batch.push(message.unwrap().detach());
        }
        while !batch.is_empty() && batch.len() < BATCH_MAX {
            match consumer.poll(Duration::ZERO) {
                Some(message) => batch.push(message.unwrap().detach()),
                None => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        // Like the processor: any failure sends the whole batch again (Tansu stalls at times).
        let mut attempts = 0;
        loop {
            let deliveries: Vec<_> = batch
                .iter()
                .map(|m| {
                    let mut record = FutureRecord::to(&out)
                        .key(m.key().unwrap_or_default())
                        .payload(m.payload().unwrap_or_default());
                    if let Some(copied) = m.headers().filter(|_| headers) {
                        record = record.headers(copied.clone());
                    }
                    producer.send_result(record).map_err(|(e, _)| e).unwrap()
                })
                .collect();
            let acked = runtime.block_on(async {
                futures::future::join_all(deliveries)
                    .await
                    .into_iter()
                    .all(|d| matches!(d, Ok(Ok(_))))
            });
            if acked {
                break;
            }
            attempts += 1;
            assert!(
                attempts < 10,
                "the broker kept refusing the passthrough's batch"
            );
            eprintln!("passthrough: batch not acknowledged; sending it again");
        }
        let mut offsets = TopicPartitionList::new();
        for m in &batch {
            offsets
                .add_partition_offset(&raw, m.partition(), Offset::Offset(m.offset() + 1))
                .unwrap();
        }
        // Like the processor, a failed commit is not fatal (its work is already durable).
        if let Err(error) = consumer.commit(&offsets, CommitMode::Sync) {
            eprintln!("passthrough: offset commit failed ({error}); going on");
        }
        copied += batch.len() as i64;
    }
    started.elapsed()
}
