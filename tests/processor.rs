//! End-to-end processor behaviour on a real Tansu broker with real `hookstream process`
//! processes: crash safety under `kill -9`, partitions moving between instances, and a rebuild
//! into fresh topics. The input is written straight to `raw` (as the ingest writes it) so the
//! processor is what is tested.

mod harness;
mod workload;

use std::time::{Duration, Instant};

use harness::kafka::Watermarks;
use harness::{Broker, Service, Settings, TestConfig};
use workload::{check_state, final_state, produce, reference, stream, unique, wait_for_events};

fn events_count() -> usize {
    std::env::var("HOOKSTREAM_TEST_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

fn settings(processor: &str) -> Settings {
    Settings {
        processor: processor.into(),
        batch_max: 500,
        ..Settings::default()
    }
}

/// Writes `inputs` to `raw` from a thread, in chunks of 2 500 every `pace_ms`.
fn writer(
    config: &TestConfig,
    inputs: &[workload::Input],
    pace_ms: u64,
) -> std::thread::JoinHandle<()> {
    let (brokers, topic, inputs) = (config.brokers.clone(), config.topic("raw"), inputs.to_vec());
    std::thread::spawn(move || produce(&brokers, &topic, &inputs, pace_ms))
}

/// xorshift64: reproducible kill points from a printed seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn kill_9_at_random_points_loses_nothing_and_applies_nothing_twice() {
    let broker = Broker::start();
    // Static assignment: Tansu's group coordinator never evicts a member killed with SIGKILL,
    // so a restarted group member would get no partitions.
    let config = TestConfig::write_with(&broker, "crash", &settings("partitions = [0, 1, 2]"));
    let inputs = stream(events_count());
    let unique = unique(&inputs);
    let started = Instant::now();
    harness::create_topics(&config);
    // The input flows while the processor runs and is killed.
    let writer = writer(&config, &inputs, 300);
    let events = Watermarks::new(&config.brokers, &config.topic("events"));
    let mut processor = Service::processor(&config.path);
    let mut random = std::env::var("HOOKSTREAM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill points from HOOKSTREAM_TEST_SEED={random}");
    let mut progress = Vec::new();
    for crash in 1..=5 {
        // Kill anywhere within each sixth of the stream: mid-batch, mid-restore, idle.
        let sixth = unique / 6;
        let target =
            (crash * sixth + (next(&mut random) % sixth as u64) as i64 - sixth / 2).min(unique);
        let seen = events.wait_for(target, Duration::from_secs(600));
        processor.kill();
        progress.push(seen);
        eprintln!(
            "[{:?}] crash {crash} after {seen} event records",
            started.elapsed()
        );
        processor = Service::processor(&config.path);
    }
    writer.join().unwrap();
    let repeats = wait_for_events(&config.brokers, &config.topic("events"), &inputs);
    let expected = reference(&inputs);
    check_state(
        &final_state(&config.brokers, &config.topic("state")),
        &expected,
    );
    eprintln!(
        "[{:?}] {} inputs, {unique} unique events, {} entities; `events` records at each kill: {progress:?}; re-emitted (byte-identical) records: {repeats} ({:.0} per crash)",
        started.elapsed(),
        inputs.len(),
        expected.len(),
        repeats as f64 / 5.0
    );
}

/// A task whose predecessor consumed all of `raw` but still held events back (waiting for
/// stream time to pass their grace) releases them after a `kill -9` and restart, although no
/// record of its partition ever arrives again: tasks open on assignment, not on input.
#[test]
fn a_restarted_task_releases_held_events_without_new_input() {
    let broker = Broker::start();
    let hour = Settings {
        idle_flush_ms: 3_600_000,
        ..settings("partitions = [0, 1, 2]")
    };
    let config = TestConfig::write_with(&broker, "held", &hour);
    let inputs = stream(3_000);
    let unique = unique(&inputs);
    harness::create_topics(&config);
    produce(&config.brokers, &config.topic("raw"), &inputs, 0);
    let mut first = Service::processor(&config.path);
    harness::kafka::wait_caught_up(&config.brokers, "processor-held", &config.topic("raw"));
    let events = Watermarks::new(&config.brokers, &config.topic("events"));
    let emitted = events.count();
    assert!(
        emitted < unique,
        "the first run holds the stream's last events back ({emitted} of {unique} emitted)"
    );
    first.kill();
    let quick = config.variant("quick", |text| {
        text.replace("idle_flush_ms = 3600000", "idle_flush_ms = 300")
            .replace("state-quick\"", "state\"")
    });
    let _second = Service::processor(&quick);
    events.wait_for(unique, harness::DEADLINE);
    wait_for_events(&config.brokers, &config.topic("events"), &inputs);
    check_state(
        &final_state(&config.brokers, &config.topic("state")),
        &reference(&inputs),
    );
    eprintln!("{emitted} of {unique} events emitted before the kill; the rest after the restart");
}

/// A second instance joins mid-stream (partitions move to it with their state, restored from
/// the changelog), then the first leaves: the same final state, nothing applied twice. The
/// first leaves with SIGTERM: Tansu never evicts a member killed with SIGKILL (the crash test
/// covers SIGKILL, with static assignment).
#[test]
fn a_second_instance_takes_over_partitions_with_their_state() {
    let broker = Broker::start();
    let config = TestConfig::write_with(&broker, "rebalance", &settings(""));
    let inputs = stream(events_count() / 2);
    let unique = unique(&inputs);
    let mut first = Service::processor(&config.path);
    let writer = writer(&config, &inputs, 1_000);
    let events = Watermarks::new(&config.brokers, &config.topic("events"));
    events.wait_for(unique / 4, Duration::from_secs(600));
    let second = Service::processor(&config.variant("second", |text| text));
    events.wait_for(unique / 2, Duration::from_secs(600));
    first.terminate();
    writer.join().unwrap();
    let repeats = wait_for_events(&config.brokers, &config.topic("events"), &inputs);
    check_state(
        &final_state(&config.brokers, &config.topic("state")),
        &reference(&inputs),
    );
    let log = second.log();
    assert!(
        log.matches("opened partition task").count() >= 3,
        "the second instance ends up with every partition:\n{log}"
    );
    eprintln!("{unique} unique events; re-emitted (byte-identical) records: {repeats}");
}

/// A fresh group replaying `raw` from the beginning into new output topics produces the same
/// `state`, value for value (versions included) per entity, as the live run. The input is
/// written first and the idle flush (the one wall-clock input) set long, so that neither run
/// releases held-back events early; otherwise the runs may flag different events late and
/// count versions differently (docs/topics.md, "Determinism").
#[test]
fn a_rebuild_into_new_topics_reproduces_the_live_state() {
    let broker = Broker::start();
    let settings = Settings {
        idle_flush_ms: 5_000,
        ..settings("")
    };
    let config = TestConfig::write_with(&broker, "rebuild", &settings);
    let inputs = stream(events_count() / 5);
    harness::create_topics(&config);
    produce(&config.brokers, &config.topic("raw"), &inputs, 0);
    let mut live = Service::processor(&config.path);
    wait_for_events(&config.brokers, &config.topic("events"), &inputs);
    live.terminate();
    let rebuild = config.variant("rebuild", |text| {
        text.replace(
            "group_id = \"processor-rebuild\"",
            "group_id = \"rebuild-1\"\noutput_prefix = \"t.rebuild1.\"",
        )
    });
    let _rebuild = Service::processor(&rebuild);
    wait_for_events(&config.brokers, "t.rebuild1.events", &inputs);
    let live_state = final_state(&config.brokers, &config.topic("state"));
    check_state(&live_state, &reference(&inputs));
    let rebuilt = final_state(&config.brokers, "t.rebuild1.state");
    let differing: Vec<_> = live_state
        .iter()
        .filter(|(key, value)| rebuilt.get(*key) != Some(value))
        .map(|(key, value)| format!("{key}: live {value} rebuilt {:?}", rebuilt.get(key)))
        .collect();
    assert!(
        differing.is_empty() && rebuilt.len() == live_state.len(),
        "{} of {} entities differ, e.g. {:#?}",
        differing.len(),
        live_state.len(),
        &differing[..differing.len().min(3)]
    );
}

/// Each partition task writes the changelog partition of its `raw` partition: a processor
/// facing a changelog with fewer partitions than `raw` refuses to start, naming both.
#[test]
fn a_changelog_with_fewer_partitions_than_raw_is_refused_at_start() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let broker = Broker::start();
    let config = TestConfig::write(&broker, "narrow");
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .unwrap();
    let listed = harness::process::run(&["topics", "--config", config.path.to_str().unwrap()]);
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        !listed.status.success(),
        "missing topics exit 1:\n{listing}"
    );
    assert!(
        listing.contains("t.narrow.raw  ")
            && listing.contains("missing (hookstream topics --create)"),
        "{listing}"
    );
    let changelog = config.topic("changelog");
    let created = futures::executor::block_on(admin.create_topics(
        [&NewTopic::new(&changelog, 1, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    let output = harness::process::run(&["process", "--config", config.path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("`t.narrow.changelog` has 1 partitions but `t.narrow.raw` has 3"),
        "{stderr}"
    );
}
