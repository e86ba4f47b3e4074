//! The `exactly_once` mode runs its transactional calls — init, begin, produce, send offsets,
//! commit — against librdkafka's in-process mock cluster. The mock accepts transactions but
//! neither stores transactional offsets nor hides aborted records, so this shows that the
//! calls are made and succeed, not isolation; see docs/architecture.md ("Brokers").

use std::time::{Duration, Instant};

use processor::changelog::{decode, ChangelogRecord};
use processor::{ProcessorService, StartOptions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use schemas::config::Config;
use schemas::raw::RawMeta;

/// Reads `topics` (2 partitions each) from the beginning until `want` records came.
fn read(brokers: &str, topics: &[&str], want: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for p in 0..2 {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = Vec::new();
    while records.len() < want {
        assert!(
            Instant::now() < deadline,
            "{topics:?}: {} of {want} records",
            records.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            records.push((
                message.key().unwrap_or_default().to_vec(),
                message.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_mode_commits_each_batch_in_a_transaction_on_the_mock_cluster() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,librdkafka=warn")
        .with_test_writer()
        .try_init();
    let cluster = MockCluster::new(1).unwrap();
    for topic in ["events", "state", "dlq", "changelog", "raw"] {
        cluster.create_topic(&format!("eos.{topic}"), 2, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookstream.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
topic_prefix = "eos."
partitions = 2
[processor]
group_id = "eos"
state_dir = "{state}"
exactly_once = true
idle_flush_ms = 200
[[tenants]]
id = "acme"
[[tenants.sources]]
id = "orders"
scheme = "hmac"
secrets = [{{ id = "k1", value = "c2VjcmV0" }}]
hmac = {{ header = "x-signature", encoding = "hex" }}
"#,
            state = dir.path().join("state").display()
        ),
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    let service = ProcessorService::start(&config, StartOptions::default())
        .await
        .unwrap();

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for n in 0..20 {
        let meta = RawMeta {
            tenant: "acme".into(),
            source: "orders".into(),
            scheme: "hmac".into(),
            event_id: format!("evt-{n}"),
            event_type: "order.updated".into(),
            entity: format!("o{}", n % 4),
            occurred_at: 1_700_000_000_000 + n,
            received_at: 1_700_000_000_000 + n,
            content_type: "application/json".into(),
            key_id: "k1".into(),
            event_id_derived: false,
            redrive_id: None,
        };
        let headers = meta
            .to_headers()
            .iter()
            .fold(OwnedHeaders::new(), |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                })
            });
        let key = format!("acme/o{}", n % 4);
        let body = format!(r#"{{"n":{n}}}"#);
        producer
            .send(
                BaseRecord::to("eos.raw")
                    .key(&key)
                    .payload(&body)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    // Every input comes out (to `events`, or to `dlq` where the mock lost the headers),
    // committed: a read_committed reader sees them.
    read(&brokers, &["eos.events", "eos.dlq"], 20);
    // A partition task's fence, then the frames of its batches, all in transactions.
    let changelog = read(&brokers, &["eos.changelog"], 3);
    let decoded: Vec<_> = changelog.iter().map(|(_, v)| decode(v).unwrap()).collect();
    assert!(decoded.iter().any(|r| matches!(r, ChangelogRecord::Fence)));
    assert!(decoded
        .iter()
        .any(|r| matches!(r, ChangelogRecord::Frame(f) if f.last && !f.ops.is_empty())));
    service.stop().await.unwrap();
}
