//! Bounded history, end to end on a real Tansu broker with real `hookstream process`
//! processes: a task killed (`kill -9`) in the middle of writing a snapshot, on a machine that
//! also loses its disk, restores on restart from the previous complete snapshot and the
//! frames after it, and its outputs stay byte-identical.

mod harness;
mod workload;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harness::kafka::{read_until, record_count};
use harness::{Broker, Service, Settings, TestConfig};
use processor::changelog::{decode_head, Head, SnapshotId};
use workload::{check_state, final_state, produce, reference, stream, wait_for_events};

/// Snapshots of one changelog partition, in order: (id, complete).
fn snapshots(records: &[harness::kafka::Record], partition: i32) -> Vec<(SnapshotId, bool)> {
    let mut found: BTreeMap<i64, (SnapshotId, bool)> = BTreeMap::new();
    for record in records.iter().filter(|r| r.partition == partition) {
        if let Ok(Head::Snapshot(id, index, last)) = decode_head(&record.value) {
            if index == 0 {
                found.insert(record.offset, (id, false));
            }
            if last {
                if let Some(entry) = found.values_mut().rev().find(|(i, _)| *i == id) {
                    entry.1 = true;
                }
            }
        }
    }
    found.into_values().collect()
}

/// `text` without terminal colour codes.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().take_while(|c| *c != 'm').for_each(drop);
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `key=` on the first line of `log` containing `message`.
fn logged(log: &str, message: &str, key: &str) -> Option<String> {
    let log = plain(log);
    let line = log.lines().find(|l| l.contains(message))?;
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    Some(
        line[start..]
            .split(|c: char| c.is_whitespace())
            .next()?
            .to_owned(),
    )
}

#[test]
fn kill_9_mid_snapshot_restores_from_the_previous_snapshot_with_identical_outputs() {
    let broker = Broker::start();
    // Small snapshots thresholds: several snapshots per partition within the test's input.
    let settings = Settings {
        processor: "partitions = [0, 1, 2]\n[processor.snapshots]\nmin_bytes = 262144\n".into(),
        batch_max: 500,
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "torn", &settings);
    harness::create_topics(&config);
    let inputs = stream(24_000);
    let started = Instant::now();
    let (brokers, topic, all) = (config.brokers.clone(), config.topic("raw"), inputs.clone());
    let writer = std::thread::spawn(move || produce(&brokers, &topic, &all, 200));
    // The seventh snapshot that takes more than one chunk is cut short after its first chunk:
    // by then its partition has written earlier ones.
    let mut processor = Service::processor_with_env(
        &config.path,
        &[("FAILPOINTS", "snapshot-torn=6*off->return")],
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    let torn_partition = loop {
        let log = processor.log();
        if let Some(partition) = logged(&log, "failpoint snapshot-torn", "partition") {
            break partition.parse::<i32>().unwrap();
        }
        assert!(
            Instant::now() < deadline && processor.exited().is_none(),
            "the failpoint never fired; processor log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The first chunk is acknowledged before the task hangs: wait for it in the changelog.
    let changelog = config.topic("changelog");
    let torn = loop {
        let count = record_count(&config.brokers, &changelog);
        let records = read_until(&config.brokers, &changelog, |r| r.len() as i64 >= count);
        let found = snapshots(&records, torn_partition);
        if found.last().is_some_and(|(_, complete)| !complete) {
            break found;
        }
        assert!(Instant::now() < deadline, "no torn snapshot: {found:?}");
    };
    processor.kill();
    let previous = torn
        .iter()
        .rev()
        .find(|(_, complete)| *complete)
        .map(|(id, _)| *id)
        .expect("the torn partition wrote a complete snapshot before");
    eprintln!(
        "[{:?}] killed partition {torn_partition} mid-snapshot; its snapshots: {torn:?}",
        started.elapsed()
    );
    // A fresh machine: no local stores.
    let state_dir = config.path.parent().unwrap().join("state");
    std::fs::remove_dir_all(&state_dir).unwrap();

    let restarted = Service::processor(&config.path);
    writer.join().unwrap();
    let repeats = wait_for_events(&config.brokers, &config.topic("events"), &inputs);
    check_state(
        &final_state(&config.brokers, &config.topic("state")),
        &reference(&inputs),
    );
    let log = restarted.log();
    let loaded: Vec<(i32, i64)> = log
        .lines()
        .filter(|l| l.contains("loaded the latest snapshot"))
        .filter_map(|l| {
            let p = logged(l, "loaded", "partition")?.parse().ok()?;
            let position = logged(l, "loaded", "position")?.parse().ok()?;
            Some((p, position))
        })
        .collect();
    assert!(
        loaded.contains(&(torn_partition, previous.position)),
        "partition {torn_partition} restores from its previous complete snapshot at {}; loaded: {loaded:?}\n{log}",
        previous.position
    );
    eprintln!(
        "[{:?}] restored from snapshots {loaded:?}; re-emitted (byte-identical) records: {repeats}",
        started.elapsed()
    );
}

/// A changelog someone created compacted (compaction destroys frames, which are not keyed by
/// store key) and one whose retention is shorter than four snapshot intervals: `hookstream
/// topics` shows the broker's real values and marks them, and `hookstream process` refuses to
/// start, naming the key, before it reads or writes anything.
#[test]
fn topics_configured_to_lose_history_are_refused_by_name() {
    let broker = Broker::start();
    for (name, key, value) in [
        ("compacted", "cleanup.policy", "compact"),
        ("short", "retention.ms", "3600000"),
    ] {
        let config = TestConfig::write(&broker, name);
        let changelog = config.topic("changelog");
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &config.brokers)
                .create()
                .unwrap();
        let topic = rdkafka::admin::NewTopic::new(
            &changelog,
            3,
            rdkafka::admin::TopicReplication::Fixed(1),
        )
        .set(key, value);
        let created = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(admin.create_topics([&topic], &rdkafka::admin::AdminOptions::new()))
            .unwrap();
        assert!(created.iter().all(Result::is_ok), "{created:?}");
        let path = config.path.to_str().unwrap();
        let listed = harness::process::run(&["topics", "--create", "--config", path]);
        let stdout = String::from_utf8_lossy(&listed.stdout);
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{changelog} ")))
            .unwrap_or_else(|| panic!("{changelog} listed:\n{stdout}"));
        assert!(
            line.contains(&format!("UNSAFE: {key}=")),
            "the changelog is marked by its key: {line}"
        );
        assert!(!listed.status.success(), "`hookstream topics` exits 1");
        let started = harness::process::run(&["process", "--config", path]);
        let stderr = String::from_utf8_lossy(&started.stderr);
        assert!(
            !started.status.success(),
            "the processor started:\n{stderr}"
        );
        assert!(
            stderr.contains(&changelog) && stderr.contains(&format!("{key}={value}")),
            "the refusal names the topic and the key:\n{stderr}"
        );
    }
}
