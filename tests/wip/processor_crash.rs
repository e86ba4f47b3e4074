//! End-to-end processor behaviour on a real Tansu broker with real `hookstream process`
//! processes: crash safety under `kill -9` and partitions moving between instances. The input
//! is written straight to `raw` (as the ingest writes it) so the processor is what is tested.

mod harness;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use harness::kafka::{record_count, stream_until};
use harness::{Broker, Service, Settings, TestConfig};

/// One input event.
#[derive(Debug, Clone)]
struct Input {
    tenant: String,
    entity: String,
    event_id: String,
    event_type: String,
    occurred_at: i64,
    body: String,
}

/// A stream with many tenants and entities, duplicates, and events out of order (some within
/// the grace, some far beyond it, which come out late).
fn stream(count: usize) -> Vec<Input> {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base = 1_763_800_000_000i64;
    let mut events: Vec<Input> = Vec::with_capacity(count);
    while events.len() < count {
        let n = events.len();
        if n > 10 && next() % 20 == 0 {
            let again = events[(next() as usize) % n].clone();
            events.push(again);
            continue;
        }
        let tenant = format!("t{}", next() % 10);
        let entity = format!("e{}", next() % 300);
        let skew = match next() % 10 {
            0 => -((next() % 60_000) as i64),
            1..=3 => -((next() % 4_000) as i64),
            _ => 0,
        };
        let occurred_at = base + n as i64 * 20 + skew;
        let event_type = if next() % 50 == 0 { "thing.deleted" } else { "thing.updated" };
        let body = format!(r#"{{"n":{n},"entity":"{entity}","v":{}}}"#, next() % 1000);
        events.push(Input { tenant, entity, event_id: format!("evt-{n}"), event_type: event_type.into(), occurred_at, body });
    }
    events
}

fn produce(brokers: &str, topic: &str, inputs: &[Input]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        for chunk in inputs.chunks(5_000) {
            let mut deliveries = Vec::with_capacity(chunk.len());
            for input in chunk {
                let ts = schemas::time::to_rfc3339(input.occurred_at);
                let pairs = [
                    ("hs-version", "1"),
                    ("hs-tenant", input.tenant.as_str()),
                    ("hs-source", "orders"),
                    ("hs-scheme", "hmac"),
                    ("hs-event-id", input.event_id.as_str()),
                    ("hs-event-type", input.event_type.as_str()),
                    ("hs-entity", input.entity.as_str()),
                    ("hs-occurred-at", ts.as_str()),
                    ("hs-received-at", ts.as_str()),
                    ("hs-content-type", "application/json"),
                    ("hs-key-id", "k1"),
                ];
                let headers = pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: Some(v.as_bytes()) }));
                let key = format!("{}/{}", input.tenant, input.entity);
                let record = FutureRecord::to(topic).key(&key).payload(&input.body).headers(headers);
                deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
            }
            for delivery in futures::future::join_all(deliveries).await {
                delivery.unwrap().unwrap();
            }
        }
    });
}

/// The reference fold: per entity, the greatest (event time, event id) among unique events.
fn reference(inputs: &[Input]) -> BTreeMap<String, (i64, String, bool)> {
    let mut seen = HashSet::new();
    let mut fold: BTreeMap<String, (i64, String, bool)> = BTreeMap::new();
    for input in inputs {
        if !seen.insert(input.event_id.clone()) {
            continue;
        }
        let key = format!("{}/{}", input.tenant, input.entity);
        let candidate = (input.occurred_at, input.event_id.clone(), input.event_type.ends_with(".deleted"));
        let entry = fold.entry(key).or_insert(candidate.clone());
        if (candidate.0, &candidate.1) > (entry.0, &entry.1) {
            *entry = candidate;
        }
    }
    fold
}

/// Reads `state` until every entity shows its reference state; returns the latest per key.
fn wait_for_state(config: &TestConfig, expected: &BTreeMap<String, (i64, String, bool)>) {
    let mut latest: HashMap<String, serde_json::Value> = HashMap::new();
    let mut matching = 0usize;
    stream_until(&config.brokers, &config.topic("state"), Duration::from_secs(600), |record| {
        let key = record.key_str().to_owned();
        let value = record.json();
        let Some((_, id, deleted)) = expected.get(&key) else { panic!("unexpected entity {key}") };
        let was = latest.get(&key).is_some_and(|v| v["last_event_id"] == id.as_str());
        let is = value["last_event_id"] == id.as_str();
        if is {
            assert_eq!(value["deleted"], *deleted, "{key}");
        }
        matching = matching + usize::from(is) - usize::from(was);
        latest.insert(key, value);
        matching == expected.len()
    });
}

/// Reads `events` until every unique event id was seen; checks copies are byte-identical and
/// returns how many records were repeats.
fn wait_for_events(config: &TestConfig, inputs: &[Input]) -> usize {
    let ids: HashSet<&str> = inputs.iter().map(|i| i.event_id.as_str()).collect();
    let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
    let mut repeats = 0;
    stream_until(&config.brokers, &config.topic("events"), Duration::from_secs(600), |record| {
        let id = record.header("hs-event-id").unwrap().to_owned();
        match seen.get(&id) {
            Some(first) => {
                repeats += 1;
                assert_eq!(first, &record.value, "a re-emitted event differs from its first emission: {id}");
            }
            None => {
                seen.insert(id, record.value.clone());
            }
        }
        seen.len() == ids.len()
    });
    repeats
}

fn events_count() -> usize {
    std::env::var("HOOKSTREAM_TEST_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000)
}

#[test]
fn kill_9_at_random_points_loses_nothing_and_applies_nothing_twice() {
    let broker = Broker::start();
    // Static assignment: Tansu's group coordinator never evicts a member killed with SIGKILL,
    // so a restarted group member would get no partitions (see tests/wip/README.md).
    let settings = Settings { processor: "partitions = [0, 1, 2]".into(), ..Settings::default() };
    let config = TestConfig::write_with(&broker, "crash", &settings);
    // The input is written first: Tansu 0.6's sqlite engine can panic under concurrent heavy
    // produce from two clients ("more or less than one row").
    let inputs = stream(events_count());
    let mut processor = Service::processor(&config.path); // creates the topics
    processor.kill();
    produce(&config.brokers, &config.topic("raw"), &inputs);
    let mut processor = Service::processor(&config.path);
    let events_topic = config.topic("events");
    let mut progress = Vec::new();
    for crash in 1..=5u64 {
        // Let the processor get a little further each time, then kill it mid-flight.
        // Once everything is out, the remaining kills hit a caught-up processor (still a restart).
        let unique = inputs.iter().map(|i| &i.event_id).collect::<HashSet<_>>().len() as i64;
        let step = (inputs.len() / 8) as i64;
        let target = (record_count(&config.brokers, &events_topic) + step / 2 + (crash as i64 * 7_919) % (step / 2).max(1)).min(unique);
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while record_count(&config.brokers, &events_topic) < target {
            assert!(std::time::Instant::now() < deadline, "processor made no progress before crash {crash}");
            std::thread::sleep(Duration::from_millis(100)); // polling interval, not synchronisation
        }
        processor.kill();
        progress.push(record_count(&config.brokers, &events_topic));
        processor = Service::processor(&config.path);
    }
    let expected = reference(&inputs);
    wait_for_state(&config, &expected);
    let repeats = wait_for_events(&config, &inputs);
    eprintln!(
        "{} inputs, {} unique events, {} entities; events records at each kill: {progress:?}; re-emitted (byte-identical) records: {repeats} ({:.0} per crash)",
        inputs.len(),
        inputs.iter().map(|i| &i.event_id).collect::<HashSet<_>>().len(),
        expected.len(),
        repeats as f64 / 5.0
    );
    drop(processor);
}
