//! End-to-end robustness of the processor against hostile input and a hostile environment,
//! on a real Tansu broker with real `hookstream` processes: one tenant's clock cannot disturb
//! another's stream, a record too large to emit cannot stall anything, a store left on disk
//! from recreated topics is not trusted, and a broker that stops answering for 30 s loses
//! nothing.

mod harness;
mod workload;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use harness::kafka::{read_until, Record};
use harness::signing::{orders_signature, ORDERS_SECRET};
use harness::{http, process, Broker, Service, Settings, TestConfig};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const BASE: i64 = 1_763_800_000_000;
const YEAR_2100: i64 = 4_102_444_800_000;

/// One record as the ingest appends it to `raw`.
#[derive(Debug, Clone)]
struct Raw {
    tenant: &'static str,
    entity: String,
    event_id: String,
    occurred_at: i64,
    received_at: i64,
    body: Vec<u8>,
}

impl Raw {
    fn json(tenant: &'static str, entity: &str, id: &str, at: i64, received: i64) -> Raw {
        Raw {
            tenant,
            entity: entity.into(),
            event_id: id.into(),
            occurred_at: at,
            received_at: received,
            body: format!(r#"{{"id":"{id}","entity":"{entity}","at":{at}}}"#).into_bytes(),
        }
    }
}

fn append(brokers: &str, topic: &str, records: &[Raw]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for record in records {
            let headers = workload::raw_headers(
                record.tenant,
                &record.event_id,
                "order.updated",
                &record.entity,
                (record.occurred_at, record.received_at),
            );
            let key = format!("{}/{}", record.tenant, record.entity);
            let future = FutureRecord::to(topic)
                .key(&key)
                .payload(&record.body)
                .headers(headers);
            // In order, one at a time: the partition must hold them as listed.
            producer
                .send(future, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    });
}

/// A configuration whose topics have one partition, so every tenant shares it.
fn one_partition(broker: &Broker, name: &str, settings: &Settings) -> TestConfig {
    let config = TestConfig::write_with(broker, name, settings);
    let text = std::fs::read_to_string(&config.path).unwrap();
    std::fs::write(
        &config.path,
        text.replace("partitions = 3", "partitions = 1"),
    )
    .unwrap();
    process::run_ok(&[
        "topics",
        "--create",
        "--config",
        config.path.to_str().unwrap(),
    ]);
    config
}

fn value(record: &Record) -> serde_json::Value {
    record.json()
}

fn tenant_events<'a>(events: &'a [Record], tenant: &str) -> Vec<&'a Record> {
    events
        .iter()
        .filter(|r| r.key_str().starts_with(&format!("{tenant}/")))
        .collect()
}

/// Tenant A's broken clock (an event dated 2100, and even a receive time in 2100) changes
/// nothing for tenant B on the same partition: B's redeliveries stay duplicates, B's
/// out-of-order pairs inside the grace come out in order and not late, exactly once. A's
/// untrusted event time is flagged and alerted.
#[test]
fn one_tenants_clock_never_moves_another_tenants_dedupe_or_order() {
    let broker = Broker::start();
    // No wall-clock flush in the way: what comes out is decided by stream time alone.
    let settings = Settings {
        idle_flush_ms: 600_000,
        processor: "listen = \"127.0.0.1:0\"".into(),
        ..Settings::default()
    };
    let config = one_partition(&broker, "clock", &settings);
    let raw = config.topic("raw");
    let mut processor = Service::processor(&config.path);

    let first: Vec<Raw> = (0..200)
        .map(|n| {
            let at = BASE + n * 10;
            Raw::json("tb", &format!("o{}", n % 4), &format!("b{n}"), at, at)
        })
        .collect();
    append(&config.brokers, &raw, &first);
    append(
        &config.brokers,
        &raw,
        &[
            Raw::json("ta", "x", "a-claims-2100", YEAR_2100, BASE + 3_000),
            Raw::json("ta", "x", "a-received-2100", YEAR_2100, YEAR_2100),
        ],
    );
    append(&config.brokers, &raw, &first); // B's provider redelivers everything
    let mut pairs = Vec::new();
    for n in 0..100 {
        let at = BASE + 60_000 + n * 10_000;
        pairs.push(Raw::json(
            "tb",
            "o9",
            &format!("p{:03}b", n),
            at + 1_000,
            at + 1_000,
        ));
        pairs.push(Raw::json(
            "tb",
            "o9",
            &format!("p{:03}a", n),
            at,
            at + 1_100,
        ));
    }
    append(&config.brokers, &raw, &pairs);
    // Later events of each tenant move its own clock past everything above.
    append(
        &config.brokers,
        &raw,
        &[
            Raw::json("tb", "o10", "b-later", BASE + 3_600_000, BASE + 3_600_000),
            Raw::json("ta", "x", "a-later", YEAR_2100 + 60_000, YEAR_2100 + 60_000),
        ],
    );

    let events = read_until(&config.brokers, &config.topic("events"), |r| {
        tenant_events(r, "tb").len() >= 400 && tenant_events(r, "ta").len() >= 2
    });
    let b = tenant_events(&events, "tb");
    let ids: Vec<String> = b
        .iter()
        .map(|r| value(r)["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        400,
        "every B event once, no redelivery emitted again"
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 400);
    assert!(
        b.iter().all(|r| value(r)["late"] == false),
        "no B event late"
    );
    let pair_order: Vec<&String> = ids.iter().filter(|id| id.starts_with('p')).collect();
    let mut sorted = pair_order.clone();
    sorted.sort();
    assert_eq!(pair_order, sorted, "B's pairs in event-time order");

    let a: HashMap<String, serde_json::Value> = tenant_events(&events, "ta")
        .iter()
        .map(|r| (value(r)["event_id"].as_str().unwrap().to_owned(), value(r)))
        .collect();
    assert_eq!(a["a-claims-2100"]["time_skewed"], true);
    assert_eq!(
        a["a-claims-2100"]["occurred_at"],
        "2100-01-01T00:00:00.000Z"
    );
    assert_eq!(a["a-received-2100"]["time_skewed"], false);
    let alerts = read_until(&config.brokers, &config.topic("alerts"), |r| !r.is_empty());
    let alert = value(&alerts[0]);
    assert_eq!(
        (alert["kind"].as_str(), alert["source"].as_str()),
        (Some("time_skewed"), Some("orders"))
    );
    assert_eq!(alerts[0].key_str(), "ta");
    let metrics = format!("{}/metrics", processor.base_url());
    let skewed = |tenant| {
        http::metric(
            &metrics,
            "hookstream_processor_time_skewed_total",
            &[("tenant", tenant)],
        )
    };
    assert_eq!(skewed("ta"), Some(1.0), "counted per tenant");
    assert_eq!(skewed("tb"), None);
    processor.terminate();
}

/// Records whose `events`/`state` values would exceed the producer's message.max.bytes (an
/// 800 KB binary body is ~1.07 MB in base64) go to `dlq` with the reason; everything else
/// comes out, in order, exactly once, and the partition never stalls.
#[test]
fn records_too_large_to_emit_go_to_dlq_and_the_rest_flow_in_order_exactly_once() {
    let broker = Broker::start();
    let config = one_partition(&broker, "large", &Settings::default());
    let raw = config.topic("raw");
    let mut processor = Service::processor(&config.path);

    let binary: Vec<u8> = (0..800_000u32).map(|n| (n % 251) as u8).collect();
    let big_json = format!(r#"{{"blob":"{}"}}"#, "j".repeat(700_000)).into_bytes();
    let mut records = Vec::new();
    for n in 0..60i64 {
        let at = BASE + n * 1_000;
        let mut record = Raw::json("tb", "o1", &format!("e{n:02}"), at, at);
        match n {
            20 | 41 => record.body = binary.clone(),
            30 => record.body = big_json.clone(),
            _ => {}
        }
        records.push(record);
    }
    append(&config.brokers, &raw, &records);

    let dlq = read_until(&config.brokers, &config.topic("dlq"), |r| r.len() >= 2);
    assert_eq!(dlq.len(), 2);
    for (record, id) in dlq.iter().zip(["e20", "e41"]) {
        assert_eq!(record.header("hs-event-id"), Some(id));
        assert!(
            record.header("hs-error").unwrap().starts_with("too_large:"),
            "{:?}",
            record.header("hs-error")
        );
        assert_eq!(record.value, binary, "the input kept byte for byte");
        assert_eq!(record.header("hs-raw-partition"), Some("0"));
    }
    let events = read_until(&config.brokers, &config.topic("events"), |r| r.len() >= 58);
    let ids: Vec<String> = events
        .iter()
        .map(|r| value(r)["event_id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..60)
        .filter(|n| *n != 20 && *n != 41)
        .map(|n| format!("e{n:02}"))
        .collect();
    assert_eq!(ids, expected, "all others, in order, once");
    let states = read_until(&config.brokers, &config.topic("state"), |r| {
        r.iter().any(|s| value(s)["last_event_id"] == "e59")
    });
    let last = value(states.last().unwrap());
    assert_eq!(
        (last["last_event_id"].as_str(), last["version"].as_u64()),
        (Some("e59"), Some(58))
    );
    assert!(processor.exited().is_none(), "the processor keeps running");
    processor.terminate();
}

/// Topics recreated under the same names (here: a new broker) with a processor state
/// directory left on disk: the store is rebuilt, not trusted, and no input is skipped.
#[test]
fn a_store_left_from_recreated_topics_is_rebuilt_and_skips_nothing() {
    let first_broker = Broker::start();
    let config = one_partition(&first_broker, "identity", &Settings::default());
    let events = |n: i64, prefix: &str| -> Vec<Raw> {
        (0..n)
            .map(|i| {
                let at = BASE + i * 100;
                Raw::json(
                    "tb",
                    &format!("o{}", i % 7),
                    &format!("{prefix}{i}"),
                    at,
                    at,
                )
            })
            .collect()
    };
    append(&config.brokers, &config.topic("raw"), &events(300, "old"));
    let mut processor = Service::processor(&config.path);
    read_until(&config.brokers, &config.topic("events"), |r| r.len() >= 300);
    processor.terminate();
    drop(first_broker);

    let second_broker = Broker::start();
    let text = std::fs::read_to_string(&config.path)
        .unwrap()
        .replace(&config.brokers, &second_broker.address());
    std::fs::write(&config.path, text).unwrap();
    process::run_ok(&[
        "topics",
        "--create",
        "--config",
        config.path.to_str().unwrap(),
    ]);
    append(
        &second_broker.address(),
        &config.topic("raw"),
        &events(100, "new"),
    );
    let mut processor = Service::processor(&config.path);
    let emitted = read_until(&second_broker.address(), &config.topic("events"), |r| {
        r.len() >= 100
    });
    let ids: HashSet<String> = emitted
        .iter()
        .map(|r| value(r)["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        100,
        "every event of the new topics, none skipped"
    );
    assert!(ids.iter().all(|id| id.starts_with("new")));
    processor.terminate();
    let log = processor.log();
    assert!(
        log.contains("rebuilding the local store"),
        "the log says why:\n{log}"
    );
}

/// The broker stops answering (SIGSTOP) for 30 s while webhooks flow, then goes on, and then
/// restarts (SIGKILL and start again on the same data): ingest answers 503 meanwhile (never a
/// lost 202), the processor does not stop, and every acknowledged event comes out of
/// `events` (a repeat only as the byte-identical record).
#[test]
fn a_broker_stalled_for_30_s_under_load_loses_nothing_acknowledged() {
    let settings = Settings {
        ack_timeout_ms: 5_000,
        // Static partitions: after a stall Tansu's group coordinator keeps the timed-out
        // member and never completes the rejoin (a broker limitation, as with kill -9).
        processor: "listen = \"127.0.0.1:0\"\npartitions = [0, 1, 2]".into(),
        ..Settings::default()
    };
    let mut broker = Broker::start();
    let config = TestConfig::write_with(&broker, "stall", &settings);
    // Producers wait out the stall instead of timing their requests out: Tansu's sqlite
    // engine panics on an idempotent producer's epoch bump after such a timeout.
    let text = std::fs::read_to_string(&config.path).unwrap().replace(
        r#""message.timeout.ms" = "15000""#,
        r#""message.timeout.ms" = "300000"
"request.timeout.ms" = "120000""#,
    );
    std::fs::write(&config.path, text).unwrap();
    let ingest = Service::ingest(&config.path);
    let mut processor = Service::processor(&config.path);
    let url = format!("{}/v1/hooks/acme/orders", ingest.base_url());
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|worker| {
            let (url, acknowledged, stop) = (url.clone(), acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
                let mut n = 0;
                let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let id = format!("w{worker}-{n}");
                    let body = format!(
                        r#"{{"id":"{id}","type":"order.updated","order_id":"ord-{}","occurred_at":"2026-11-24T06:00:00.000Z"}}"#,
                        n % 50
                    );
                    let headers = vec![
                        ("content-type".to_owned(), "application/json".to_owned()),
                        ("x-signature".to_owned(), orders_signature(ORDERS_SECRET, body.as_bytes())),
                    ];
                    match http::try_post(&agent, &url, &headers, body.as_bytes()) {
                        Ok(reply) => {
                            *statuses.entry(reply.status).or_default() += 1;
                            assert!(
                                reply.status == 202 || reply.status == 503,
                                "only 202 or 503 while the broker stalls: {} {}",
                                reply.status,
                                reply.json
                            );
                            if reply.status == 202 {
                                acknowledged.lock().unwrap().push(id);
                            }
                        }
                        Err(error) => panic!("ingest must answer: {error}"),
                    }
                }
                statuses
            })
        })
        .collect();
    let count = || acknowledged.lock().unwrap().len();
    harness::wait_until(|| count() >= 200).expect("load flows");
    broker.pause();
    let stalled = Instant::now();
    while stalled.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500)); // the stall itself is the scenario
    }
    let during = count();
    broker.resume();
    harness::wait_until(|| count() >= during + 200).expect("load flows again");
    // Then the broker restarts (SIGKILL, started again on the same data) under the same load.
    let before_restart = count();
    broker.restart();
    harness::wait_until(|| count() >= before_restart + 200).expect("load flows after the restart");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for sender in senders {
        for (status, n) in sender.join().unwrap() {
            *statuses.entry(status).or_default() += n;
        }
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!("answers: {statuses:?}; acknowledged {}", acknowledged.len());
    let wanted: HashSet<&str> = acknowledged.iter().map(String::as_str).collect();
    let events = read_until(&config.brokers, &config.topic("events"), |r| {
        let seen: HashSet<String> = r
            .iter()
            .map(|e| value(e)["event_id"].as_str().unwrap().to_owned())
            .collect();
        wanted.iter().all(|id| seen.contains(*id))
    });
    // Without broker transactions (Tansu) a batch cut short is produced again: a repeat is
    // allowed only as the byte-identical record (same key, same value), which keyed
    // consumers see as one event.
    let mut first: HashMap<String, &Record> = HashMap::new();
    let mut repeats = 0;
    for record in &events {
        let id = value(record)["event_id"].as_str().unwrap().to_owned();
        match first.get(&id) {
            None => {
                first.insert(id, record);
            }
            Some(earlier) => {
                repeats += 1;
                assert_eq!(
                    (&earlier.key, &earlier.value),
                    (&record.key, &record.value),
                    "a repeat of {id} differs"
                );
            }
        }
    }
    eprintln!(
        "{} distinct events, {repeats} byte-identical repeats",
        first.len()
    );
    assert!(
        processor.exited().is_none(),
        "the processor kept running:\n{}",
        processor.log()
    );
    let (status, health) = http::get(&format!("{}/healthz", processor.base_url()));
    assert_eq!(status, 200, "{health}");
}

/// Services started while their broker is down wait for it (logging and counting the
/// retries) instead of exiting: only configuration errors stop a process.
#[test]
fn services_started_while_the_broker_is_down_wait_for_it() {
    let mut broker = Broker::start();
    let config = TestConfig::write(&broker, "late");
    broker.kill();
    let (ingest_config, processor_config) = (config.path.clone(), config.path.clone());
    let ingest = std::thread::spawn(move || Service::ingest(&ingest_config));
    let processor = std::thread::spawn(move || Service::processor(&processor_config));
    // The outage the services start into: longer than the clients' 30 s request timeouts,
    // which is when a start-up used to give up.
    std::thread::sleep(Duration::from_secs(40));
    broker.restart();
    let ingest = ingest
        .join()
        .expect("ingest came up once the broker was back");
    let mut processor = processor.join().expect("the processor came up too");
    let body = br#"{"id":"evt_late","type":"order.created","order_id":"ord_late","occurred_at":"2026-11-24T06:00:00Z"}"#;
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "x-signature".to_owned(),
            orders_signature(ORDERS_SECRET, body),
        ),
    ];
    let reply = http::post(
        &format!("{}/v1/hooks/acme/orders", ingest.base_url()),
        &headers,
        body,
    );
    assert_eq!(reply.status, 202, "{}", reply.json);
    read_until(&config.brokers, &config.topic("events"), |r| {
        r.iter().any(|e| value(e)["event_id"] == "evt_late")
    });
    processor.terminate();
}
