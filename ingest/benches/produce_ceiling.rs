//! The broker ceiling for the ingest load benchmark: how fast a plain Rust rdkafka producer
//! with the ingest's settings (idempotent, acks=all, same partitioner, lz4, linger) appends
//! the benchmark's records to a fresh topic, with up to 10 000 records in flight.
//!
//! Run by `bench/ingest.sh` as `cargo bench -p hookstream-ingest --bench produce_ceiling` with
//! BENCH_BROKERS, BENCH_REQUESTS (requests.tsv) and BENCH_SECONDS in the environment; prints
//! `ceiling_records_per_sec=N`.

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::config::KafkaConfig;
use schemas::kafka::{client_config, ensure_topics, Role};
use schemas::topics::{Topic, TopicNames};

const WINDOW: usize = 10_000;

#[tokio::main]
async fn main() {
    let Ok(brokers) = std::env::var("BENCH_BROKERS") else {
        eprintln!("produce_ceiling: set BENCH_BROKERS, BENCH_REQUESTS and BENCH_SECONDS (run bench/ingest.sh)");
        return;
    };
    let requests =
        std::fs::read_to_string(std::env::var("BENCH_REQUESTS").expect("BENCH_REQUESTS")).unwrap();
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let records: Vec<(String, String)> = requests
        .lines()
        .map(|line| {
            let mut fields = line.splitn(3, '\t');
            let path = fields.next().unwrap();
            let body = fields.nth(1).unwrap().to_owned();
            let tenant = path.split('/').nth(3).unwrap();
            let event: serde_json::Value = serde_json::from_str(&body).unwrap();
            (
                format!("{tenant}/{}", event["call_id"].as_str().unwrap()),
                body,
            )
        })
        .collect();

    let kafka = KafkaConfig {
        brokers,
        partitions: 3,
        replication_factor: 1,
        ..KafkaConfig::default()
    };
    let names = TopicNames::new(format!("bench.ceiling.{}.", std::process::id()));
    ensure_topics(&kafka, &names, &[Topic::Raw], -1)
        .await
        .expect("creating the ceiling topic");
    let topic = names.name(Topic::Raw);
    let mut client = client_config(&kafka, Role::Producer);
    // Extra librdkafka properties, `k=v,k=v`, as `[kafka.producer]` would give the ingest.
    for pair in std::env::var("BENCH_PRODUCER_PROPS")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair
            .split_once('=')
            .expect("BENCH_PRODUCER_PROPS is k=v,k=v");
        client.set(k, v);
    }
    let producer: FutureProducer = client.create().unwrap();
    let header_values: Vec<(&str, String)> = (0..11)
        .map(|i| ("hs-header", format!("value-{i}")))
        .collect();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut in_flight = FuturesUnordered::new();
    let (mut acked, mut failed, mut next) = (0u64, 0u64, 0usize);
    while Instant::now() < deadline {
        while in_flight.len() < WINDOW {
            let (key, body) = &records[next % records.len()];
            next += 1;
            let headers =
                header_values
                    .iter()
                    .fold(OwnedHeaders::new_with_capacity(11), |h, (k, v)| {
                        h.insert(Header {
                            key: k,
                            value: Some(v.as_bytes()),
                        })
                    });
            let record = FutureRecord::to(&topic)
                .key(key.as_bytes())
                .payload(body.as_bytes())
                .headers(headers);
            match producer.send_result(record) {
                Ok(delivery) => in_flight.push(delivery),
                Err(_) => break,
            }
        }
        match in_flight.next().await {
            Some(Ok(Ok(_))) => acked += 1,
            Some(_) => failed += 1,
            None => {}
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "ceiling_records_per_sec={:.0} acked={acked} failed={failed} seconds={elapsed:.1}",
        acked as f64 / elapsed
    );
}
