//! The delivery loop: one consumer (group `<processor group>-deliver`) over `events` and the
//! retry tiers; each record is handled to the end (the attempt, its log record, the next
//! retry or dead letter, all acknowledged by the broker) before its offset is committed, so a
//! crash repeats at most the attempt in flight (same `webhook-id`), never loses one.
//!
//! A tier record not yet due pauses its partition (seeking back to it) until it is: the
//! tier's later records are due later still.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use schemas::config::Config;
use schemas::kafka::{client_config, default_unless_set, Role};
use tokio::sync::{mpsc, watch};

use crate::breaker::Breakers;
use crate::copy::Copier;
use crate::endpoints::Endpoints;
use crate::error::DeliverError;
use crate::offsets::Offsets;
use crate::recent::Recent;
use crate::record::Delivery;
use crate::schedule::{self, TIERS};

/// The delivery topics' names under the configured prefix.
pub struct Names {
    pub events: String,
    /// The tenants' alerts (the processor's topic): endpoints failing and disabled.
    pub alerts: String,
    /// One record per (event, endpoint), keyed by endpoint: the fan-out's output.
    pub queue: String,
    pub deliveries: String,
    pub dlq: String,
    pub tiers: Vec<String>,
    /// Compacted: each endpoint's [`crate::status::EndpointStatus`].
    pub endpoints: String,
    /// Intents and outcomes of attempts ([`crate::journal`]).
    pub journal: String,
}

impl Names {
    pub fn new(config: &Config) -> Self {
        let prefix = &config.kafka.topic_prefix;
        Self {
            events: config.topics().name(schemas::topics::Topic::Events),
            alerts: config.topics().name(schemas::topics::Topic::Alerts),
            queue: format!("{prefix}delivery-queue"),
            deliveries: format!("{prefix}deliveries"),
            dlq: format!("{prefix}delivery-dlq"),
            endpoints: format!("{prefix}delivery-endpoints"),
            journal: format!("{prefix}delivery-journal"),
            tiers: (0..TIERS.len())
                .map(|i| format!("{prefix}{}", schedule::tier_name(i)))
                .collect(),
        }
    }

    /// The topics `deliver` creates, and whether each is compacted.
    pub fn own(&self) -> Vec<(String, bool)> {
        let mut names = vec![
            (self.queue.clone(), false),
            (self.deliveries.clone(), false),
            (self.dlq.clone(), false),
            (self.endpoints.clone(), true),
            (self.journal.clone(), false),
        ];
        names.extend(self.tiers.iter().map(|t| (t.clone(), false)));
        names
    }
}

/// Most consumed records (events, queue, tiers) with deliveries outstanding before the loop
/// stops reading them (it reads on at three quarters).
const MAX_IN_FLIGHT: usize = 10_000;
/// How often done offsets are committed (asynchronously), at most: not once per record.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Deliveries queued per endpoint (a backlog drains from memory, not through the retry
/// tiers); beyond, they wait in the first retry tier.
const QUEUE_PER_ENDPOINT: usize = 1024;
/// How long the loop waits for room in a full endpoint queue before it treats the endpoint
/// as slow: a healthy endpoint frees a place in far less, and its backlog then pushes back
/// on the loop (Kafka holds it) instead of taking detours through a retry tier.
const SPILL_AFTER: Duration = Duration::from_millis(25);

/// An endpoint's queue on its worker. `spilling`: it stayed full for [`SPILL_AFTER`], so its
/// overflow goes to a retry tier at once, until the queue is half empty again.
struct EndpointQueue {
    sender: mpsc::Sender<Job>,
    spilling: bool,
}

/// Where a delivery came from: the record whose offset waits for it.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

pub(crate) struct Job {
    pub delivery: Delivery,
    pub origin: Origin,
}

pub(crate) type Done = (Origin, Result<(), DeliverError>);

pub struct Deliverer {
    pub(crate) endpoints: Arc<Endpoints>,
    pub(crate) breakers: Breakers,
    producer: FutureProducer,
    pub(crate) names: Names,
    /// For the journal reader's look-back into `deliveries`.
    lookup: rdkafka::ClientConfig,
    pub(crate) attempt_ids: AttemptIds,
    /// `deliver.partitions`: assigned, not subscribed, when not empty.
    partitions: Vec<i32>,
    /// How `alerts` values are written (JSON, or Avro when configured).
    pub(crate) codecs: schemas::avro::Codecs,
    /// The instance's requests in flight, by lane.
    pub(crate) lanes: crate::lanes::Lanes,
}

/// Attempt ids unique across runs: this run's random prefix and a counter.
pub(crate) struct AttemptIds {
    run: String,
    next: std::sync::atomic::AtomicU64,
}

impl AttemptIds {
    fn new() -> Self {
        let seed = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
        let digest = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
        let run = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            run,
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub(crate) fn next(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n}", self.run)
    }
}

/// The largest record `deliver` writes, unless `message.max.bytes` is configured: the
/// largest `events` record (the processor's default limit, 1 000 000 bytes) with a
/// delivery's own fields around it. The delivery topics are created to take it.
pub const MAX_RECORD_BYTES: usize = 1_000_000 + 64 * 1024;

/// The largest record `deliver`'s producer sends: `message.max.bytes` as configured, else
/// [`MAX_RECORD_BYTES`].
pub fn max_record_bytes(kafka: &schemas::config::KafkaConfig) -> usize {
    producer_config(kafka)
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(MAX_RECORD_BYTES)
}

/// The producer's settings: each request waits for its intent's acknowledgement, so
/// records linger 1 ms, not 5 (batches still form under load, while a send is in flight);
/// a delivery of the largest event fits ([`MAX_RECORD_BYTES`]). `[kafka.producer]`
/// overrides both.
fn producer_config(kafka: &schemas::config::KafkaConfig) -> rdkafka::ClientConfig {
    let mut config = client_config(kafka, Role::Producer);
    default_unless_set(&mut config, kafka, Role::Producer, "linger.ms", "1");
    let max = MAX_RECORD_BYTES.to_string();
    default_unless_set(
        &mut config,
        kafka,
        Role::Producer,
        "message.max.bytes",
        &max,
    );
    config
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Deliverer {
    pub fn new(config: &Config, codecs: schemas::avro::Codecs) -> Result<Self, DeliverError> {
        Ok(Self {
            endpoints: Arc::new(Endpoints::from_config(config)?),
            breakers: Breakers::default(),
            producer: producer_config(&config.kafka).create()?,
            names: Names::new(config),
            lookup: {
                let mut lookup = client_config(&config.kafka, Role::Consumer);
                lookup
                    .set(
                        "group.id",
                        format!("{}-deliver-journal", config.processor.group_id),
                    )
                    .set("enable.auto.commit", "false");
                lookup
            },
            attempt_ids: AttemptIds::new(),
            partitions: config.deliver.partitions.clone(),
            codecs,
            lanes: crate::lanes::Lanes::new(
                config.deliver.max_in_flight,
                config.deliver.retry_share,
            ),
        })
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Runs until `stop` turns true. Each endpoint has a worker and a bounded queue; what
    /// one endpoint's slowness holds back is its own queue, whose overflow waits in the first
    /// retry tier (attempt not used up), never the other endpoints.
    pub async fn run(
        self: &Arc<Self>,
        consumer: &StreamConsumer,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), DeliverError> {
        let mut topics = vec![self.names.events.as_str(), self.names.queue.as_str()];
        topics.extend(self.names.tiers.iter().map(String::as_str));
        topics.push(self.names.journal.as_str());
        if self.partitions.is_empty() {
            consumer.subscribe(&topics)?;
        } else {
            let mut list = TopicPartitionList::new();
            for topic in &topics {
                for partition in &self.partitions {
                    list.add_partition_offset(topic, *partition, Offset::Stored)?;
                }
            }
            consumer.assign(&list)?;
        }
        let mut copier = Copier::new(
            self.names.journal.clone(),
            self.names.deliveries.clone(),
            self.lookup.clone(),
        );
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut workers: HashMap<(String, String), EndpointQueue> = HashMap::new();
        let mut offsets = Offsets::default();
        let mut paused: HashMap<(String, i32), Instant> = HashMap::new();
        let mut recent = Recent::default();
        let mut last_commit = Instant::now();
        let mut intake_open = true;
        loop {
            // Reading stops at MAX_IN_FLIGHT records outstanding, for the intake only: the
            // journal is always read, since reading it is how attempts settle.
            let outstanding = offsets.in_flight_except(copier.journal());
            let open = if intake_open {
                outstanding < MAX_IN_FLIGHT
            } else {
                outstanding < MAX_IN_FLIGHT * 3 / 4
            };
            if open != intake_open {
                let positions = offsets.positions_except(copier.journal());
                set_intake(consumer, positions, &paused, open);
                intake_open = open;
            }
            if intake_open {
                resume_due(consumer, &mut paused);
            }
            while let Ok(done) = done_rx.try_recv() {
                finished(&mut offsets, done)?;
            }
            for (partition, write) in copier.overdue(consumer, now_ms()) {
                metrics::counter!("hookstream_deliver_interrupted_total").increment(1);
                self.spawn_log(partition, write, &done_tx);
            }
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                commit(consumer, &mut offsets);
                last_commit = Instant::now();
            }
            // Wake up for the next paused partition coming due, not a poll interval later.
            let now = Instant::now();
            let poll = paused
                .values()
                .map(|at| at.saturating_duration_since(now))
                .fold(COMMIT_INTERVAL, Duration::min);
            let message = tokio::select! {
                _ = stop.changed() => break,
                done = done_rx.recv() => {
                    if let Some(done) = done {
                        finished(&mut offsets, done)?;
                    }
                    continue;
                }
                m = tokio::time::timeout(poll, consumer.recv()) => m,
            };
            let message = match message {
                Err(_) => continue, // nothing within the poll interval: check due partitions
                Ok(Err(error)) => {
                    tracing::warn!(%error, "deliver consumer");
                    continue;
                }
                Ok(Ok(message)) => message,
            };
            if message.topic() == copier.journal() {
                let took = copier.take(&message)?;
                let (topic, partition) = (copier.journal(), message.partition());
                if took.restarted {
                    offsets.forget(topic, partition);
                }
                offsets.start(
                    topic,
                    partition,
                    message.offset(),
                    took.taken.waits as usize,
                );
                for settled in &took.taken.settled {
                    offsets.finish(topic, partition, *settled);
                }
                if let Some(write) = took.taken.write {
                    self.spawn_log(partition, write, &done_tx);
                }
                continue;
            }
            let origin = Origin {
                topic: Arc::from(message.topic()),
                partition: message.partition(),
                offset: message.offset(),
            };
            if message.topic() == self.names.events {
                let deliveries = self.fan_out(&message);
                offsets.start(
                    &origin.topic,
                    origin.partition,
                    origin.offset,
                    deliveries.len(),
                );
                self.enqueue(deliveries, &origin, &done_tx).await?;
                continue;
            }
            let deliveries: Vec<Delivery> = match self.due(&message) {
                Ok(delivery) => delivery.into_iter().collect(),
                Err(wait) => {
                    let key = (message.topic().to_owned(), message.partition());
                    if let Err(error) = hold_back(consumer, &key, message.offset()) {
                        // Revoked meanwhile, or broker trouble: fetched again anyway.
                        tracing::warn!(%error, topic = %key.0, partition = key.1, "cannot pause a retry tier partition");
                    }
                    paused.insert(key, Instant::now() + wait);
                    continue; // not handled: its offset is not committed
                }
            };
            let deliveries = if message.topic() == self.names.queue {
                self.first_seen(&mut recent, &message, deliveries)?
            } else {
                deliveries
            };
            offsets.start(
                message.topic(),
                origin.partition,
                origin.offset,
                deliveries.len(),
            );
            for delivery in deliveries {
                let job = Job {
                    delivery,
                    origin: origin.clone(),
                };
                self.dispatch(&mut workers, &done_tx, job).await?;
            }
        }
        // Stopping: what is done is committed; what is in flight is repeated by the next
        // owner (same `webhook-id`).
        while let Ok(done) = done_rx.try_recv() {
            finished(&mut offsets, done)?;
        }
        commit(consumer, &mut offsets);
        Ok(())
    }

    /// The queue's deliveries not seen before (a repeated fan-out writes them twice).
    fn first_seen(
        &self,
        recent: &mut Recent,
        message: &BorrowedMessage<'_>,
        deliveries: Vec<Delivery>,
    ) -> Result<Vec<Delivery>, DeliverError> {
        let (partition, offset) = (message.partition(), message.offset());
        if recent.needs_read_back(partition, offset) {
            let before = tokio::task::block_in_place(|| {
                crate::copy::ids_before(&self.lookup, &self.names.queue, partition, offset)
            })?;
            tracing::info!(
                partition,
                offset,
                ids = before.len(),
                "reading back the delivery queue"
            );
            recent.start(partition, offset, before);
        }
        Ok(deliveries
            .into_iter()
            .filter(|d| {
                let first = recent.admit(partition, offset, &d.delivery_id);
                if !first {
                    metrics::counter!("hookstream_deliver_fan_out_duplicates_total").increment(1);
                }
                first
            })
            .collect())
    }

    /// Writes an event's deliveries to `delivery-queue` in order (each endpoint's records
    /// keep the order of `events`); the event is done once all are acknowledged.
    async fn enqueue(
        self: &Arc<Self>,
        deliveries: Vec<Delivery>,
        origin: &Origin,
        done: &mpsc::UnboundedSender<Done>,
    ) -> Result<(), DeliverError> {
        let mut acks = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let value = serde_json::to_vec(&delivery).expect("delivery serializes");
            let key = delivery.key();
            match self.send_in_order(&self.names.queue, &key, &value).await {
                Ok(ack) => acks.push(Some(ack)),
                Err(DeliverError::Kafka(error)) if too_large(&error) => {
                    skip_too_large(&delivery, value.len());
                    acks.push(None);
                }
                Err(error) => return Err(error),
            }
        }
        let (done, origin) = (done.clone(), origin.clone());
        tokio::spawn(async move {
            for ack in acks {
                let result = match ack {
                    None => Ok(()),
                    Some(ack) => match acked(ack).await {
                        Err(DeliverError::Kafka(error)) if too_large(&error) => {
                            metrics::counter!("hookstream_deliver_too_large_total").increment(1);
                            tracing::error!(%error, "the broker refused a delivery as too large: not delivered");
                            Ok(())
                        }
                        result => result,
                    },
                };
                if done.send((origin.clone(), result)).is_err() {
                    return;
                }
            }
        });
        Ok(())
    }

    /// Writes a record to `deliveries` (the partition of its journal record); once it is
    /// acknowledged, the journal offsets it settles are done.
    fn spawn_log(
        self: &Arc<Self>,
        partition: i32,
        write: crate::journal::Write,
        done: &mpsc::UnboundedSender<Done>,
    ) {
        let (this, done) = (Arc::clone(self), done.clone());
        tokio::spawn(async move {
            let value = serde_json::to_vec(&write.record).expect("attempt record serializes");
            let key = format!("{}/{}", write.record.tenant, write.record.endpoint);
            let source = write.source.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "hs-version",
                    value: Some("1"),
                })
                .insert(Header {
                    key: crate::journal::SOURCE_HEADER,
                    value: Some(&source),
                });
            let record = FutureRecord::to(&this.names.deliveries)
                .partition(partition)
                .key(&key)
                .payload(&value)
                .headers(headers);
            let result = this
                .producer
                .send(record, Duration::from_secs(60))
                .await
                .map(|_| ())
                .map_err(|(error, _)| DeliverError::Kafka(error));
            let topic: Arc<str> = Arc::from(this.names.journal.as_str());
            if let Err(error) = result {
                let _ = done.send((
                    Origin {
                        topic,
                        partition,
                        offset: write.source,
                    },
                    Err(error),
                ));
                return;
            }
            for offset in write.settles {
                let origin = Origin {
                    topic: topic.clone(),
                    partition,
                    offset,
                };
                let _ = done.send((origin, Ok(())));
            }
        });
    }

    /// Queues a delivery on its endpoint's worker. When that queue is full, the loop waits
    /// for room up to [`SPILL_AFTER`] (a healthy endpoint's backlog pushes back on reading);
    /// an endpoint that stays full, or is closed to requests, gets the delivery back in a
    /// retry tier (its origin is done once that is acknowledged), so it never holds up the
    /// other endpoints for longer than that.
    async fn dispatch(
        self: &Arc<Self>,
        workers: &mut HashMap<(String, String), EndpointQueue>,
        done: &mpsc::UnboundedSender<Done>,
        job: Job,
    ) -> Result<(), DeliverError> {
        let key = (job.delivery.tenant.clone(), job.delivery.endpoint.clone());
        let queue = workers.entry(key.clone()).or_insert_with(|| EndpointQueue {
            sender: self.spawn_worker(&key, done.clone()),
            spilling: false,
        });
        // An endpoint closed to requests (open breaker, pause) gets its deliveries back in a
        // retry tier at once, for as long as it stays closed: they would only wait here.
        let closed = self.breakers.closed_for(&key.0, &key.1, Instant::now());
        if queue.spilling && queue.sender.capacity() >= QUEUE_PER_ENDPOINT / 2 {
            queue.spilling = false;
        }
        if closed.is_none() && !queue.spilling {
            match tokio::time::timeout(SPILL_AFTER, queue.sender.reserve()).await {
                Ok(Ok(permit)) => {
                    permit.send(job);
                    return Ok(());
                }
                Ok(Err(_)) => {
                    return Err(DeliverError::Client("an endpoint worker stopped".into()))
                }
                Err(_) => queue.spilling = true,
            }
        }
        self.spill(job, closed, done).await
    }

    /// A delivery its endpoint cannot take now, to a retry tier: for as long as the endpoint
    /// is closed to requests if it is, else the first tier. The loop goes on without waiting
    /// for the acknowledgement.
    async fn spill(
        self: &Arc<Self>,
        job: Job,
        closed: Option<Duration>,
        done: &mpsc::UnboundedSender<Done>,
    ) -> Result<(), DeliverError> {
        let wait = closed.map_or(TIERS[0], |closed| closed.max(TIERS[0]));
        let delivery = job.delivery;
        metrics::counter!("hookstream_deliver_overflow_total", "tenant" => delivery.tenant.clone(), "endpoint" => delivery.endpoint.clone()).increment(1);
        let (tier, later) = schedule::later(delivery, wait, now_ms());
        let value = serde_json::to_vec(&later).expect("delivery serializes");
        let ack = self
            .send_in_order(&self.names.tiers[tier], &later.key(), &value)
            .await?;
        let (done, origin) = (done.clone(), job.origin);
        tokio::spawn(async move {
            let _ = done.send((origin, acked(ack).await));
        });
        Ok(())
    }

    /// The endpoint's worker ([`crate::worker`]).
    fn spawn_worker(
        self: &Arc<Self>,
        key: &(String, String),
        done: mpsc::UnboundedSender<Done>,
    ) -> mpsc::Sender<Job> {
        let (queue, jobs) = mpsc::channel::<Job>(QUEUE_PER_ENDPOINT);
        tokio::spawn(crate::worker::run(
            Arc::clone(self),
            key.clone(),
            jobs,
            done,
        ));
        queue
    }

    /// An event: one delivery per endpoint of its tenant that wants its type. A value that
    /// is not a JSON object with a tenant and an event id is skipped and counted.
    fn fan_out(&self, message: &BorrowedMessage<'_>) -> Vec<Delivery> {
        let skip = |reason: &'static str| {
            metrics::counter!("hookstream_deliver_undecodable_total", "reason" => reason)
                .increment(1);
            tracing::warn!(
                partition = message.partition(),
                offset = message.offset(),
                reason,
                "an `events` record that cannot be delivered is skipped"
            );
            Vec::new()
        };
        let Some((body, event)) = message.payload().and_then(decode_event) else {
            return skip("not_json");
        };
        let field = |name: &str| event[name].as_str().unwrap_or_default().to_owned();
        let (tenant, event_type) = (field("tenant"), field("event_type"));
        let (source, event_id) = (field("source"), field("event_id"));
        if tenant.is_empty() || event_id.is_empty() {
            return skip("incomplete");
        }
        let traceparent = schemas::kafka::header_pairs(message.headers())
            .into_iter()
            .find(|(name, _)| name == schemas::trace::HEADER)
            .and_then(|(_, value)| schemas::trace::TraceParent::parse(&value))
            .map(|trace| trace.header());
        self.endpoints
            .wanting(&tenant, &event_type)
            .into_iter()
            .filter(|endpoint| endpoint.config.admits(&event))
            .map(|endpoint| Delivery {
                delivery_id: format!("{tenant}/{}/{source}/{event_id}", endpoint.config.id),
                tenant: tenant.clone(),
                endpoint: endpoint.config.id.clone(),
                source: source.clone(),
                event_id: event_id.clone(),
                event_type: event_type.clone(),
                entity: event["entity"].as_str().map(str::to_owned),
                attempt: 1,
                redriven: false,
                due_at: now_ms(),
                dead_at: None,
                reason: None,
                traceparent: traceparent.clone(),
                body: crate::record::Body::json(body.clone()),
            })
            .collect()
    }

    /// A retry tier record: its delivery when due (none if undecodable), else how long to
    /// wait for it.
    fn due(&self, message: &BorrowedMessage<'_>) -> Result<Option<Delivery>, Duration> {
        let Some(delivery) = message
            .payload()
            .and_then(|p| serde_json::from_slice::<Delivery>(p).ok())
        else {
            tracing::warn!(
                topic = message.topic(),
                offset = message.offset(),
                "undecodable retry record skipped"
            );
            return Ok(None);
        };
        match delivery.due_at - now_ms() {
            wait if wait > 0 => Err(Duration::from_millis(wait as u64)),
            _ => Ok(Some(delivery)),
        }
    }

    /// Takes in the endpoint statuses written before (`delivery-endpoints`).
    pub fn restore_statuses(
        &self,
        statuses: std::collections::HashMap<String, crate::status::EndpointStatus>,
    ) {
        self.endpoints.restore(statuses);
    }

    /// Hands a record to the producer now (so records handed over in sequence keep their
    /// order in a partition); the future resolves with the broker's acknowledgement.
    async fn send_in_order(
        &self,
        topic: &str,
        key: &str,
        value: &[u8],
    ) -> Result<rdkafka::producer::DeliveryFuture, DeliverError> {
        loop {
            let headers = OwnedHeaders::new().insert(Header {
                key: "hs-version",
                value: Some("1"),
            });
            let record = FutureRecord::to(topic)
                .key(key)
                .payload(value)
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(ack) => return Ok(ack),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => {
                    // The producer's queue is full: wait for room (backpressure).
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(DeliverError::Kafka(error)),
            }
        }
    }

    /// Writes a record and waits for the broker's acknowledgement.
    pub(crate) async fn send_record(
        &self,
        topic: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), DeliverError> {
        acked(self.send_in_order(topic, key, value).await?).await
    }
}

/// Pauses a retry tier partition at `offset` (its first record not yet due).
fn hold_back(
    consumer: &StreamConsumer,
    key: &(String, i32),
    offset: i64,
) -> Result<(), DeliverError> {
    let mut list = TopicPartitionList::new();
    list.add_partition(&key.0, key.1);
    consumer.pause(&list)?;
    consumer.seek(
        &key.0,
        key.1,
        Offset::Offset(offset),
        Duration::from_secs(10),
    )?;
    Ok(())
}

/// Pauses (or resumes) reading the partitions read so far, but the journal's. A paused
/// partition is sought to the record after the last one read, so what was fetched ahead
/// is fetched again on resuming, never skipped; one held back until its first record is
/// due stays paused. A partition not read yet has nothing outstanding and is left alone.
fn set_intake(
    consumer: &StreamConsumer,
    positions: Vec<(String, i32, i64)>,
    held: &HashMap<(String, i32), Instant>,
    open: bool,
) {
    for (topic, partition, next) in positions {
        let key = (topic, partition);
        if held.contains_key(&key) {
            continue;
        }
        let result = if open {
            let mut list = TopicPartitionList::new();
            list.add_partition(&key.0, key.1);
            consumer.resume(&list).map_err(DeliverError::Kafka)
        } else {
            hold_back(consumer, &key, next)
        };
        if let Err(error) = result {
            // Revoked meanwhile: its next owner reads it.
            tracing::debug!(%error, topic = %key.0, partition = key.1, open, "cannot pause or resume reading");
        }
    }
}

/// Resumes the paused tier partitions whose first record is due.
fn resume_due(consumer: &StreamConsumer, paused: &mut HashMap<(String, i32), Instant>) {
    let now = Instant::now();
    paused.retain(|key, at| {
        if *at > now {
            return true;
        }
        let mut list = TopicPartitionList::new();
        list.add_partition(&key.0, key.1);
        if let Err(error) = consumer.resume(&list) {
            tracing::debug!(%error, topic = %key.0, partition = key.1, "resume (partition revoked?)");
        }
        false
    });
}

/// A delivery is done: its record may be committed once all its deliveries are. A failure
/// to write the outcome (broker) stops the service: the record is delivered again by the
/// next owner.
fn finished(offsets: &mut Offsets, (origin, result): Done) -> Result<(), DeliverError> {
    result?;
    offsets.finish(&origin.topic, origin.partition, origin.offset);
    Ok(())
}

fn commit(consumer: &StreamConsumer, offsets: &mut Offsets) {
    let due = offsets.to_commit();
    if due.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in &due {
        if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(%error, "offset to commit");
        }
    }
    if let Err(error) = consumer.commit(&list, CommitMode::Async) {
        // Revoked meanwhile: the new owner repeats what was not committed.
        tracing::warn!(%error, "cannot commit delivery offsets");
    }
}

/// A record the producer or the broker refuses for its size: permanent, never retried.
fn too_large(error: &rdkafka::error::KafkaError) -> bool {
    // The producer's own refusal (larger than message.max.bytes) and the broker's share
    // the code.
    error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge)
}

fn skip_too_large(delivery: &Delivery, bytes: usize) {
    metrics::counter!("hookstream_deliver_too_large_total").increment(1);
    tracing::error!(
        tenant = %delivery.tenant,
        endpoint = %delivery.endpoint,
        event_id = %delivery.event_id,
        bytes,
        "a delivery is larger than the producer's message.max.bytes: not delivered"
    );
}

/// An `events` value as the JSON body to send and its parsed form: JSON as it is, or Avro
/// (Confluent wire format) as the JSON the JSON encoding would have written.
fn decode_event(bytes: &[u8]) -> Option<(String, serde_json::Value)> {
    if let Some(record) = schemas::records::EventRecord::from_avro(bytes) {
        let body = serde_json::to_string(&record).ok()?;
        let event = serde_json::from_str(&body).ok()?;
        return Some((body, event));
    }
    let body = std::str::from_utf8(bytes).ok()?;
    let event = serde_json::from_str(body).ok()?;
    Some((body.to_owned(), event))
}

/// A handed-over record's acknowledgement.
async fn acked(ack: rdkafka::producer::DeliveryFuture) -> Result<(), DeliverError> {
    match ack.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(DeliverError::Kafka(error)),
        Err(_) => Err(DeliverError::Client("the producer went away".into())),
    }
}
