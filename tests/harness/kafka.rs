//! Reading topics as a downstream consumer does: every partition from the beginning.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl From<&BorrowedMessage<'_>> for Record {
    fn from(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().unwrap_or_default().to_vec(),
            value: message.payload().unwrap_or_default().to_vec(),
            headers,
        }
    }
}

impl Record {
    pub fn key_str(&self) -> &str {
        std::str::from_utf8(&self.key).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).unwrap()
    }
}

fn consumer(brokers: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "hookstream-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(60))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "topic {topic} does not exist");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    consumer
}

/// Reads `topic` from the beginning until `done` holds for what was read so far; panics with
/// what it read if the deadline passes first.
pub fn read_until(brokers: &str, topic: &str, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    let consumer = consumer(brokers, topic);
    let mut records = Vec::new();
    let deadline = Instant::now() + super::DEADLINE;
    while !done(&records) {
        assert!(
            Instant::now() < deadline,
            "timed out reading {topic}; read so far: {records:#?}"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            records.push(Record::from(&message.unwrap()));
        }
    }
    records
}

/// Total records in `topic` (sum of high watermarks over its partitions).
pub fn record_count(brokers: &str, topic: &str) -> i64 {
    let consumer = consumer(brokers, topic);
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(60))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(60))
                .unwrap();
            high - low
        })
        .sum()
}

/// Watches how many records `topic` holds, through one long-lived client (cheap on the
/// broker: offset lookups only, no fetches).
pub struct Watermarks {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
}

impl Watermarks {
    pub fn new(brokers: &str, topic: &str) -> Self {
        let consumer = consumer(brokers, topic);
        let partitions = consumer
            .assignment()
            .unwrap()
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        Self {
            consumer,
            topic: topic.to_owned(),
            partitions,
        }
    }

    pub fn count(&self) -> i64 {
        self.partitions
            .iter()
            .map(|p| {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(&self.topic, *p, Duration::from_secs(60))
                    .unwrap();
                high - low
            })
            .sum()
    }

    /// Polls until the topic holds at least `count` records; returns how many it holds.
    pub fn wait_for(&self, count: i64, deadline: Duration) -> i64 {
        let deadline = Instant::now() + deadline;
        loop {
            let now = self.count();
            if now >= count {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {now} records after the deadline, waiting for {count}",
                self.topic
            );
            std::thread::sleep(Duration::from_millis(100)); // polling interval
        }
    }
}

/// Reads `topic` from the beginning, handing each record to `on_record` until it returns true;
/// panics if the deadline passes first. For large topics (no re-scan per record).
pub fn stream_until(
    brokers: &str,
    topic: &str,
    deadline: Duration,
    mut on_record: impl FnMut(&Record) -> bool,
) {
    let consumer = consumer(brokers, topic);
    let deadline = Instant::now() + deadline;
    loop {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let record = Record::from(&message.unwrap());
        if on_record(&record) {
            return;
        }
    }
}

/// Polls until `group` has committed, on every partition of `topic`, the topic's high
/// watermark: the group has consumed everything written so far.
pub fn wait_caught_up(brokers: &str, group: &str, topic: &str) {
    let watermarks = Watermarks::new(brokers, topic);
    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let deadline = Instant::now() + super::DEADLINE * 2;
    loop {
        let mut wanted = TopicPartitionList::new();
        let mut high = Vec::new();
        for partition in &watermarks.partitions {
            wanted.add_partition(topic, *partition);
            let (_, h) = watermarks
                .consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(60))
                .unwrap();
            high.push((*partition, h));
        }
        let committed = committer
            .committed_offsets(wanted, Duration::from_secs(30))
            .unwrap();
        let behind: Vec<(i32, i64, Offset)> = high
            .iter()
            .filter_map(|(p, h)| {
                let offset = committed
                    .find_partition(topic, *p)
                    .map_or(Offset::Invalid, |e| e.offset());
                match offset {
                    Offset::Offset(o) if o >= *h => None,
                    _ if *h == 0 => None,
                    other => Some((*p, *h, other)),
                }
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} did not catch up on {topic}: (partition, high, committed) {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(100)); // polling interval
    }
}
