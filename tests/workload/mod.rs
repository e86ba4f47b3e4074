//! The processor tests' workload: a reproducible event stream written straight to `raw` (as
//! the ingest writes it), the reference fold it must produce, and checks of the outputs.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::harness::kafka::{stream_until, Watermarks};

/// One input event.
#[derive(Debug, Clone)]
pub struct Input {
    pub tenant: String,
    pub entity: String,
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: i64,
    pub body: String,
}

/// A stream with many tenants and entities, duplicates, and events out of order (some within
/// the grace, some far beyond it, which come out late).
pub fn stream(count: usize) -> Vec<Input> {
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
        let event_type = if next() % 50 == 0 {
            "thing.deleted"
        } else {
            "thing.updated"
        };
        let body = format!(r#"{{"n":{n},"entity":"{entity}","v":{}}}"#, next() % 1000);
        events.push(Input {
            tenant,
            entity,
            event_id: format!("evt-{n}"),
            event_type: event_type.into(),
            occurred_at,
            body,
        });
    }
    events
}

pub fn produce(brokers: &str, topic: &str, inputs: &[Input], pace_ms: u64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (i, chunk) in inputs.chunks(2_500).enumerate() {
            if i > 0 {
                // Paced at about the processor's speed, so the kills land while input flows.
                tokio::time::sleep(Duration::from_millis(pace_ms)).await;
            }
            let mut deliveries = Vec::with_capacity(chunk.len());
            for input in chunk {
                let headers = raw_headers(
                    &input.tenant,
                    &input.event_id,
                    &input.event_type,
                    &input.entity,
                    (input.occurred_at, input.occurred_at),
                );
                let key = format!("{}/{}", input.tenant, input.entity);
                let record = FutureRecord::to(topic)
                    .key(&key)
                    .payload(&input.body)
                    .headers(headers);
                deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
            }
            for delivery in futures::future::join_all(deliveries).await {
                delivery.unwrap().unwrap();
            }
        }
    });
}

/// The headers the ingest gives a `raw` record of the `orders` source, with (event time,
/// receive time).
pub fn raw_headers(
    tenant: &str,
    event_id: &str,
    event_type: &str,
    entity: &str,
    (occurred_at, received_at): (i64, i64),
) -> OwnedHeaders {
    let (occurred, received) = (
        schemas::time::to_rfc3339(occurred_at),
        schemas::time::to_rfc3339(received_at),
    );
    let pairs = [
        ("hs-version", "1"),
        ("hs-tenant", tenant),
        ("hs-source", "orders"),
        ("hs-scheme", "hmac"),
        ("hs-event-id", event_id),
        ("hs-event-type", event_type),
        ("hs-entity", entity),
        ("hs-occurred-at", occurred.as_str()),
        ("hs-received-at", received.as_str()),
        ("hs-content-type", "application/json"),
        ("hs-key-id", "k1"),
    ];
    pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    })
}

/// Per entity: the greatest (event time, event id) among unique events, and whether it deletes.
pub type Reference = BTreeMap<String, (i64, String, bool)>;

/// The reference fold: per entity, the greatest (event time, event id) among unique events.
pub fn reference(inputs: &[Input]) -> Reference {
    let mut seen = HashSet::new();
    let mut fold = Reference::new();
    for input in inputs {
        if !seen.insert(input.event_id.clone()) {
            continue;
        }
        let key = format!("{}/{}", input.tenant, input.entity);
        let candidate = (
            input.occurred_at,
            input.event_id.clone(),
            input.event_type.ends_with(".deleted"),
        );
        let entry = fold.entry(key).or_insert(candidate.clone());
        if (candidate.0, &candidate.1) > (entry.0, &entry.1) {
            *entry = candidate;
        }
    }
    fold
}

pub fn unique(inputs: &[Input]) -> i64 {
    inputs
        .iter()
        .map(|i| &i.event_id)
        .collect::<HashSet<_>>()
        .len() as i64
}

/// Reads all of a `state` topic (once the processor is done) and returns the last value per
/// entity, checking on the way that no event was applied twice: per entity, versions rise
/// one at a time, and a version seen again is a byte-identical repeat of its first record.
pub fn final_state(brokers: &str, topic: &str) -> BTreeMap<String, serde_json::Value> {
    let total = Watermarks::new(brokers, topic).count();
    let mut latest: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut versions: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let mut read = 0;
    stream_until(brokers, topic, Duration::from_secs(600), |record| {
        let key = record.key_str().to_owned();
        let value = record.json();
        let version = value["version"].as_u64().unwrap() as usize;
        let seen = versions.entry(key.clone()).or_default();
        if version <= seen.len() {
            assert_eq!(
                seen[version - 1],
                record.value,
                "{key}: version {version} emitted twice with different values"
            );
        } else {
            assert_eq!(version, seen.len() + 1, "{key}: version skipped: {value}");
            seen.push(record.value.clone());
        }
        latest.insert(key, value);
        read += 1;
        read == total
    });
    latest
}

/// The last state per entity matches the reference fold, and there is no other entity.
pub fn check_state(latest: &BTreeMap<String, serde_json::Value>, expected: &Reference) {
    assert_eq!(
        latest.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "entities in `state`"
    );
    for (key, (_, id, deleted)) in expected {
        let value = &latest[key];
        assert_eq!(value["last_event_id"], id.as_str(), "{key}: {value}");
        assert_eq!(value["deleted"], *deleted, "{key}: {value}");
    }
}

/// Reads an `events` topic until every unique event id was seen; checks copies are
/// byte-identical and returns how many records were repeats.
pub fn wait_for_events(brokers: &str, topic: &str, inputs: &[Input]) -> usize {
    let ids: HashSet<&str> = inputs.iter().map(|i| i.event_id.as_str()).collect();
    let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
    let mut repeats = 0;
    stream_until(brokers, topic, Duration::from_secs(600), |record| {
        let id = record.header("hs-event-id").unwrap().to_owned();
        match seen.get(&id) {
            Some(first) => {
                repeats += 1;
                assert_eq!(
                    first, &record.value,
                    "a re-emitted event differs from its first emission: {id}"
                );
            }
            None => {
                seen.insert(id, record.value.clone());
            }
        }
        seen.len() == ids.len()
    });
    repeats
}
