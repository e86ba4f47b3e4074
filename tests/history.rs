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

/// A restore that takes five times `max.poll.interval.ms` (failpoint `restore-slow` on
/// partition 0, after the machine lost its disk): it runs in the background, so the instance
/// stays in the group (no revocation, no "poll interval exceeded"), partitions 1 and 2
/// process new input meanwhile, `/readyz` reports partition 0 restoring (503) until it runs,
/// and every event comes out exactly once.
#[test]
fn a_restore_longer_than_max_poll_interval_keeps_the_other_partitions_and_the_membership() {
    let broker = Broker::start();
    let settings = Settings {
        processor: "listen = \"127.0.0.1:0\"".into(),
        ..Settings::default()
    };
    let config = TestConfig::write_with(&broker, "slowrestore", &settings);
    let path = config.variant("slowrestore", |text| {
        text.replace(
            "\"session.timeout.ms\" = \"6000\"",
            "\"session.timeout.ms\" = \"6000\"\n\"max.poll.interval.ms\" = \"6000\"",
        )
    });
    harness::create_topics(&config);
    let first = stream(3_000);
    produce(&config.brokers, &config.topic("raw"), &first, 0);
    let mut processor = Service::processor(&path);
    wait_for_events(&config.brokers, &config.topic("events"), &first);
    processor.terminate();
    std::fs::remove_dir_all(config.dir().join("state-slowrestore")).unwrap();

    let started = Instant::now();
    let processor =
        Service::processor_with_env(&path, &[("FAILPOINTS", "restore-slow=return(0:30000)")]);
    let readyz = format!("{}/readyz", processor.base_url());
    let phases = |body: &str| -> BTreeMap<String, String> {
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        json["partitions"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(p, t)| (p.clone(), t["phase"].as_str().unwrap().to_owned()))
            .collect()
    };
    harness::wait_until(|| {
        let (status, body) = harness::http::get(&readyz);
        status == 503
            && phases(&body)
                == BTreeMap::from([
                    ("0".to_owned(), "restoring".to_owned()),
                    ("1".to_owned(), "running".to_owned()),
                    ("2".to_owned(), "running".to_owned()),
                ])
    })
    .unwrap_or_else(|| {
        panic!(
            "partition 0 restoring while 1 and 2 run: {:?}",
            harness::http::get(&readyz)
        )
    });

    let second: Vec<_> = stream(1_500)
        .into_iter()
        .map(|mut input| {
            input.event_id = format!("after-{}", input.event_id);
            input.occurred_at += 3_600_000;
            input
        })
        .collect();
    produce(&config.brokers, &config.topic("raw"), &second, 0);
    let raw = read_until(&config.brokers, &config.topic("raw"), |r| {
        r.len() >= first.len() + second.len()
    });
    let elsewhere: std::collections::HashSet<&str> = raw
        .iter()
        .filter(|r| r.partition != 0)
        .filter_map(|r| r.header("hs-event-id"))
        .filter(|id| id.starts_with("after-"))
        .collect();
    assert!(!elsewhere.is_empty());
    let elsewhere_inputs: Vec<_> = second
        .iter()
        .filter(|i| elsewhere.contains(i.event_id.as_str()))
        .cloned()
        .collect();
    wait_for_events(&config.brokers, &config.topic("events"), &elsewhere_inputs);
    let (status, body) = harness::http::get(&readyz);
    assert_eq!(
        (status, phases(&body)["0"].as_str()),
        (503, "restoring"),
        "partitions 1 and 2 emitted their new events while partition 0 was still restoring: {body}"
    );
    eprintln!(
        "[{:?}] partitions 1 and 2 emitted {} new events while partition 0 restores",
        started.elapsed(),
        elsewhere_inputs.len()
    );

    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    let repeats = wait_for_events(&config.brokers, &config.topic("events"), &all);
    assert_eq!(repeats, 0, "no event is emitted twice");
    harness::wait_until(|| harness::http::get(&readyz).0 == 200)
        .unwrap_or_else(|| panic!("ready once restored: {:?}", harness::http::get(&readyz)));
    let metrics = format!("{}/metrics", processor.base_url());
    assert_eq!(
        harness::http::metric(
            &metrics,
            "hookstream_processor_partition_phase",
            &[("partition", "0"), ("phase", "running")]
        ),
        Some(1.0)
    );
    let log = plain(&processor.log());
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "the restore took its 30 s"
    );
    assert!(
        !log.contains("partitions revoked") && !log.contains("poll interval"),
        "the instance was never evicted:\n{log}"
    );
    assert_eq!(
        log.matches("partitions assigned").count(),
        1,
        "one assignment:\n{log}"
    );
}
