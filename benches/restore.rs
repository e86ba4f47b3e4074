//! Restore time against a partition's age: does a fresh instance restore in time proportional
//! to the state, not to the history?
//!
//! For N = 100 000 and N = 1 000 000 input events over the same 3 000 entities (one event a
//! second of event time, so the dedupe window of one hour holds the same number of ids for
//! both), a partition task processes the events in batches of 500, writing each batch's
//! frames to a changelog partition on a Tansu broker and the snapshots its policy makes due
//! (`min_bytes` 256 KiB, `ratio` 0.25), exactly as `hookstream process` does. Then a fresh
//! instance (no local store) restores the partition, three times; the median is reported.
//! Prints restore(1 M) / restore(100 k) (target ≤ 1.3) and, after 1 M events, the changelog
//! bytes a restore needs (from the latest snapshot on: what the changelog keeps with
//! `processor.snapshots.delete_records`) against the store's live bytes (target ≤ 3×).
//!
//! `TANSU_BIN=… cargo bench --bench restore`; under `cargo test` a smoke run of 20 000 and
//! 2 000 events keeps it working.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use processor::catalog::SourceCatalog;
use processor::changelog;
use processor::input::RawInput;
use processor::output::OutRecord;
use processor::restore;
use processor::snapshot::Policy;
use processor::store::{Op, CHANGELOG_NEXT, EPOCH};
use processor::task::{PartitionTask, TaskSettings};
use schemas::raw::RawMeta;

const ENTITIES: i64 = 3_000;
const BATCH: i64 = 500;
const START: i64 = 1_700_000_000_000;
const POLICY: Policy = Policy {
    min_bytes: 256 * 1024,
    ratio: 0.25,
    interval: Duration::from_secs(3600),
    refresh: None,
};

fn input(offset: i64) -> RawInput {
    let at = START + offset * 1_000;
    RawInput {
        partition: 0,
        offset,
        meta: RawMeta {
            tenant: "acme".into(),
            source: "calls".into(),
            scheme: "hmac".into(),
            event_id: format!("evt-{offset}"),
            event_type: "call.updated".into(),
            entity: format!("call-{}", offset % ENTITIES),
            occurred_at: at,
            received_at: at,
            content_type: "application/json".into(),
            key_id: "k1".into(),
            event_id_derived: false,
            redrive_id: None,
        },
        body: format!(
            r#"{{"offset":{offset},"status":"in_progress","text":"{}"}}"#,
            "x".repeat(200)
        )
        .into_bytes(),
        claimed_at: None,
        trace: None,
    }
}

/// Appends records to partition 0 of `topic`, keeping track of offsets (it is the only writer).
struct Changelog {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    next: i64,
    bytes: u64,
}

impl Changelog {
    fn append(&mut self, records: &[OutRecord]) -> i64 {
        let first = self.next;
        for record in records {
            let value = record.value.as_ref().unwrap();
            let mut base = BaseRecord::<Vec<u8>, Vec<u8>>::to(&self.topic)
                .key(&record.key)
                .payload(value)
                .partition(0);
            loop {
                match self.producer.send(base) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        self.producer.poll(Duration::from_millis(10));
                        base = back;
                    }
                }
            }
            self.next += 1;
            self.bytes += value.len() as u64;
        }
        self.producer.flush(Duration::from_secs(60)).unwrap();
        first
    }
}

struct History {
    /// Bytes of the changelog from the latest snapshot on, and in all.
    needed_bytes: u64,
    total_bytes: u64,
    live_bytes: u64,
    snapshots: usize,
}

fn build(brokers: &str, topic: &str, events: i64) -> History {
    let mut log = Changelog {
        producer: ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("message.max.bytes", "2000000")
            .set("linger.ms", "5")
            .create()
            .unwrap(),
        topic: topic.to_owned(),
        next: 0,
        bytes: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    let settings = TaskSettings {
        dedupe_window_ms: 3_600_000,
        ..TaskSettings::default()
    };
    let epoch = log.append(&[changelog::fence(0)]);
    let mut task = PartitionTask::from_store(
        processor::store::StateStore::open(dir.path()).unwrap(),
        settings,
        epoch,
    )
    .unwrap();
    let catalog = SourceCatalog::empty();
    let (mut snapshots, mut snapshot_at_bytes) = (0, 0);
    let started = Instant::now();
    for (seq, first) in (0..events).step_by(BATCH as usize).enumerate() {
        let records = (first..(first + BATCH).min(events))
            .map(|o| Ok(input(o)))
            .collect();
        let mut outputs = Vec::new();
        let mut pending = task.process(records, &catalog, &mut outputs).unwrap();
        let frames = changelog::frames(0, epoch, seq as u64 + 1, &pending.ops);
        let bytes: u64 = frames
            .iter()
            .map(|f| f.value.as_ref().unwrap().len() as u64)
            .sum();
        log.append(&frames);
        pending.ops.push(Op::meta(CHANGELOG_NEXT, log.next));
        pending.ops.push(Op::meta(EPOCH, epoch));
        pending
            .ops
            .push(task.changelog_written(bytes, restore::now_ms()));
        task.commit(&pending).unwrap();
        let now = restore::now_ms();
        if POLICY.due(&task.snapshot_state(), now) {
            let (records, state) = task.snapshot(0, now).unwrap();
            snapshot_at_bytes = log.bytes;
            log.append(&records);
            task.snapshot_written(state, log.next).unwrap();
            snapshots += 1;
        }
    }
    let (_, live) = task.snapshot(0, restore::now_ms()).unwrap();
    println!(
        "  built {events} events: {} changelog records, {:.1} MB, {snapshots} snapshots, in {:.1} s",
        log.next,
        log.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    History {
        needed_bytes: log.bytes - snapshot_at_bytes,
        total_bytes: log.bytes,
        live_bytes: live.bytes,
        snapshots,
    }
}

/// Median time for a fresh instance to restore partition 0 of `topic`.
fn restore_time(brokers: &str, topic: &str) -> Duration {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", brokers)
        .set("group.id", "restore-bench")
        .set("fetch.wait.max.ms", "10");
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let mut times: Vec<Duration> = (0..3)
        .map(|_| {
            let fence = changelog::fence(0);
            producer
                .send(
                    BaseRecord::<Vec<u8>, Vec<u8>>::to(topic)
                        .key(&fence.key)
                        .payload(fence.value.as_ref().unwrap())
                        .partition(0),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            producer.flush(Duration::from_secs(30)).unwrap();
            let (_, high) = rdkafka::consumer::Consumer::fetch_watermarks(
                &client.create::<rdkafka::consumer::BaseConsumer>().unwrap(),
                topic,
                0,
                Duration::from_secs(30),
            )
            .unwrap();
            let own = restore::Fence {
                offset: high - 1,
                key: &fence.key,
            };
            let dir = tempfile::tempdir().unwrap();
            let started = Instant::now();
            let (_, restored) = restore::open(dir.path(), &client, topic, 0, own, &restore::Meter::default()).unwrap();
            let took = started.elapsed();
            println!(
                "  restore: {:.3} s (snapshot at {:?}, {} snapshot bytes, {} frame batches after it, {} records read)",
                took.as_secs_f64(),
                restored.snapshot,
                restored.snapshot_bytes,
                restored.batches,
                restored.records
            );
            took
        })
        .collect();
    times.sort();
    times[1]
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (small, large) = if measuring {
        (100_000, 1_000_000)
    } else {
        (2_000, 20_000)
    };
    let broker = harness::Broker::start();
    let brokers = broker.address();
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
    let mut results = Vec::new();
    for events in [small, large] {
        let topic = format!("bench.restore.{events}.changelog");
        let new =
            rdkafka::admin::NewTopic::new(&topic, 1, rdkafka::admin::TopicReplication::Fixed(1))
                .set("cleanup.policy", "delete")
                .set("retention.ms", "-1");
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(admin.create_topics([&new], &rdkafka::admin::AdminOptions::new()))
            .unwrap();
        println!("{events} events over {ENTITIES} entities:");
        let history = build(&brokers, &topic, events);
        let time = restore_time(&brokers, &topic);
        results.push((events, history, time));
    }
    let (_, _, small_time) = &results[0];
    let (large_events, history, large_time) = &results[1];
    println!(
        "restore({large_events}) / restore({small}) = {:.2} (target ≤ 1.3): {:.3} s / {:.3} s",
        large_time.as_secs_f64() / small_time.as_secs_f64(),
        large_time.as_secs_f64(),
        small_time.as_secs_f64()
    );
    println!(
        "after {large_events} events: changelog {:.1} MB written, {:.2} MB needed from the latest snapshot on ({} snapshots), store live {:.2} MB: needed / live = {:.2} (target ≤ 3)",
        history.total_bytes as f64 / 1e6,
        history.needed_bytes as f64 / 1e6,
        history.snapshots,
        history.live_bytes as f64 / 1e6,
        history.needed_bytes as f64 / history.live_bytes as f64
    );
    assert!(history.snapshots > 0, "the policy made no snapshot");
}
