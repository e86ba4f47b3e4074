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
use schemas::kafka::{client_config, Role};
use schemas::time::to_rfc3339;
use tokio::sync::{mpsc, watch};

use crate::breaker::{Breakers, Gate};
use crate::copy::Copier;
use crate::endpoints::{Endpoint, Endpoints};
use crate::error::DeliverError;
use crate::journal::{Entry, Intent, SETTLE_GRACE_MS};
use crate::offsets::Offsets;
use crate::record::{AttemptRecord, Delivery};
use crate::schedule::{self, Response, Verdict, TIERS};

/// The delivery topics' names under the configured prefix.
pub struct Names {
    pub events: String,
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
            (self.deliveries.clone(), false),
            (self.dlq.clone(), false),
            (self.endpoints.clone(), true),
            (self.journal.clone(), false),
        ];
        names.extend(self.tiers.iter().map(|t| (t.clone(), false)));
        names
    }
}

/// Most consumed records with deliveries outstanding before the loop stops fetching.
const MAX_IN_FLIGHT: usize = 10_000;
/// Deliveries queued per endpoint; beyond, they wait in the first retry tier.
const QUEUE_PER_ENDPOINT: usize = 64;

/// Where a delivery came from: the record whose offset waits for it.
#[derive(Debug, Clone)]
struct Origin {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

struct Job {
    delivery: Delivery,
    origin: Origin,
}

type Done = (Origin, Result<(), DeliverError>);

pub struct Deliverer {
    endpoints: Arc<Endpoints>,
    breakers: Breakers,
    producer: FutureProducer,
    names: Names,
    /// For the journal reader's look-back into `deliveries`.
    lookup: rdkafka::ClientConfig,
    attempt_ids: AttemptIds,
}

/// Attempt ids unique across runs: this run's random prefix and a counter.
struct AttemptIds {
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

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n}", self.run)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Deliverer {
    pub fn new(config: &Config) -> Result<Self, DeliverError> {
        Ok(Self {
            endpoints: Arc::new(Endpoints::from_config(config)?),
            breakers: Breakers::default(),
            producer: client_config(&config.kafka, Role::Producer).create()?,
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
        let mut topics = vec![self.names.events.as_str()];
        topics.extend(self.names.tiers.iter().map(String::as_str));
        topics.push(self.names.journal.as_str());
        consumer.subscribe(&topics)?;
        let mut copier = Copier::new(
            self.names.journal.clone(),
            self.names.deliveries.clone(),
            self.lookup.clone(),
        );
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut workers: HashMap<(String, String), mpsc::Sender<Job>> = HashMap::new();
        let mut offsets = Offsets::default();
        let mut paused: HashMap<(String, i32), Instant> = HashMap::new();
        loop {
            resume_due(consumer, &mut paused);
            while let Ok(done) = done_rx.try_recv() {
                finished(&mut offsets, done)?;
            }
            for (partition, write) in copier.overdue(consumer, now_ms()) {
                metrics::counter!("hookstream_deliver_interrupted_total").increment(1);
                self.spawn_log(partition, write, &done_tx);
            }
            commit(consumer, &mut offsets);
            // Wake up for the next paused partition coming due, not a poll interval later.
            let now = Instant::now();
            let poll = paused
                .values()
                .map(|at| at.saturating_duration_since(now))
                .fold(Duration::from_millis(200), Duration::min);
            let room = offsets.in_flight() < MAX_IN_FLIGHT;
            let message = tokio::select! {
                _ = stop.changed() => break,
                done = done_rx.recv() => {
                    if let Some(done) = done {
                        finished(&mut offsets, done)?;
                    }
                    continue;
                }
                m = tokio::time::timeout(poll, consumer.recv()), if room => m,
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
            let deliveries = if message.topic() == self.names.events {
                self.fan_out(&message)
            } else {
                match self.due(&message) {
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
                }
            };
            let origin = Origin {
                topic: Arc::from(message.topic()),
                partition: message.partition(),
                offset: message.offset(),
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
                if let Some(origin) = self.dispatch(&mut workers, &done_tx, job).await? {
                    offsets.finish(&origin.topic, origin.partition, origin.offset);
                }
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

    /// Queues a delivery on its endpoint's worker, or, when that queue is full, sends it to
    /// wait in the first retry tier (returning its origin: done here).
    async fn dispatch(
        self: &Arc<Self>,
        workers: &mut HashMap<(String, String), mpsc::Sender<Job>>,
        done: &mpsc::UnboundedSender<Done>,
        job: Job,
    ) -> Result<Option<Origin>, DeliverError> {
        let key = (job.delivery.tenant.clone(), job.delivery.endpoint.clone());
        let queue = workers
            .entry(key.clone())
            .or_insert_with(|| self.spawn_worker(&key, done.clone()));
        match queue.try_send(job) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(job)) => {
                metrics::counter!("hookstream_deliver_overflow_total", "tenant" => key.0, "endpoint" => key.1).increment(1);
                self.defer(job.delivery, TIERS[0]).await?;
                Ok(Some(job.origin))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(DeliverError::Client("an endpoint worker stopped".into()))
            }
        }
    }

    /// The endpoint's worker; it reports its backlog (queued and in flight) and how late
    /// the delivery it works on is (the age of its oldest pending delivery).
    fn spawn_worker(
        self: &Arc<Self>,
        (tenant, endpoint): &(String, String),
        done: mpsc::UnboundedSender<Done>,
    ) -> mpsc::Sender<Job> {
        let (queue, mut jobs) = mpsc::channel::<Job>(QUEUE_PER_ENDPOINT);
        let this = Arc::clone(self);
        let labels = [("tenant", tenant.clone()), ("endpoint", endpoint.clone())];
        tokio::spawn(async move {
            let backlog = metrics::gauge!("hookstream_deliver_backlog", &labels);
            let oldest = metrics::gauge!("hookstream_deliver_oldest_pending_seconds", &labels);
            while let Some(job) = jobs.recv().await {
                backlog.set((jobs.len() + 1) as f64);
                oldest.set((now_ms() - job.delivery.due_at).max(0) as f64 / 1000.0);
                let result = this.deliver(job.delivery).await;
                backlog.set(jobs.len() as f64);
                if jobs.is_empty() {
                    oldest.set(0.0);
                }
                if done.send((job.origin, result)).is_err() {
                    return;
                }
            }
        });
        queue
    }

    /// An event: one delivery per endpoint of its tenant that wants its type.
    fn fan_out(&self, message: &BorrowedMessage<'_>) -> Vec<Delivery> {
        let Some(body) = message.payload().and_then(|p| std::str::from_utf8(p).ok()) else {
            return Vec::new();
        };
        let Ok(event) = serde_json::from_str::<serde_json::Value>(body) else {
            metrics::counter!("hookstream_deliver_undecodable_total").increment(1);
            tracing::warn!(
                offset = message.offset(),
                "an `events` record that is not JSON is not delivered"
            );
            return Vec::new();
        };
        let field = |name: &str| event[name].as_str().unwrap_or_default().to_owned();
        let (tenant, event_type) = (field("tenant"), field("event_type"));
        let (source, event_id) = (field("source"), field("event_id"));
        self.endpoints
            .wanting(&tenant, &event_type)
            .map(|endpoint| Delivery {
                delivery_id: format!("{tenant}/{}/{source}/{event_id}", endpoint.config.id),
                tenant: tenant.clone(),
                endpoint: endpoint.config.id.clone(),
                source: source.clone(),
                event_id: event_id.clone(),
                event_type: event_type.clone(),
                attempt: 1,
                due_at: now_ms(),
                reason: None,
                body: body.to_owned(),
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

    /// One delivery's attempt (or dead letter, for an endpoint no longer configured).
    async fn deliver(&self, delivery: Delivery) -> Result<(), DeliverError> {
        match self.endpoints.get(&delivery.tenant, &delivery.endpoint) {
            Some(endpoint) => self.attempt(endpoint, delivery).await,
            None => self.dead(delivery, "endpoint_removed").await,
        }
    }

    /// The same attempt again after `wait`, in the retry tier that keeps its order.
    async fn defer(&self, delivery: Delivery, wait: Duration) -> Result<(), DeliverError> {
        let (tier, wait) = schedule::wait_tier(wait);
        let key = delivery.key();
        let later = Delivery {
            due_at: now_ms() + wait.as_millis() as i64,
            ..delivery
        };
        let value = serde_json::to_vec(&later).expect("delivery serializes");
        self.send_record(&self.names.tiers[tier], &key, &value)
            .await
    }

    async fn attempt(&self, endpoint: &Endpoint, delivery: Delivery) -> Result<(), DeliverError> {
        if self
            .endpoints
            .is_disabled(&delivery.tenant, &delivery.endpoint)
        {
            return self.dead(delivery, "endpoint_disabled").await;
        }
        let (tenant, id) = (delivery.tenant.clone(), delivery.endpoint.clone());
        if let Gate::Wait(wait) = self.breakers.gate(&tenant, &id, Instant::now()) {
            // The endpoint's breaker is open: no request; the same attempt after it.
            metrics::counter!("hookstream_deliver_breaker_deferred_total", "tenant" => tenant, "endpoint" => id).increment(1);
            return self.defer(delivery, wait).await;
        }
        let attempt_id = self.attempt_ids.next();
        let attempted_at = now_ms();
        let key = delivery.key();
        if endpoint.refused.is_none() {
            // Journaled before the request: should this process die during it, the journal's
            // reader logs the attempt as `interrupted`.
            let intent = Intent {
                attempt_id: attempt_id.clone(),
                delivery_id: delivery.delivery_id.clone(),
                tenant: delivery.tenant.clone(),
                endpoint: delivery.endpoint.clone(),
                event_id: delivery.event_id.clone(),
                attempt: delivery.attempt,
                started_at: attempted_at,
                settle_by: attempted_at + endpoint.config.timeout_ms as i64 + SETTLE_GRACE_MS,
            };
            self.journal(&key, &Entry::Intent(intent)).await?;
        }
        let started = Instant::now();
        let (response, prefix) = self
            .send(endpoint, &delivery, &attempt_id, attempted_at / 1000)
            .await;
        let duration_ms = started.elapsed().as_millis() as u64;
        if self.breakers.record(
            &tenant,
            &id,
            schedule::is_failure(&response),
            Instant::now(),
        ) {
            tracing::warn!(%tenant, endpoint = %id, "the endpoint keeps failing: its circuit breaker opened");
        }
        let failed = schedule::is_failure(&response);
        if let Some(status) = self.endpoints.after_attempt(endpoint, failed, now_ms()) {
            if status.disabled.is_some() {
                tracing::warn!(%tenant, endpoint = %id, "the endpoint has failed for its disable_after_failing_secs: disabled");
            }
            self.publish_status(&status).await?;
        }
        let verdict = schedule::verdict(&response, delivery.attempt);
        let (status, error) = match &response {
            Response::Status { code, .. } => (Some(*code), None),
            Response::Timeout => (None, Some("timeout".to_owned())),
            Response::Connection => (None, Some("connection".to_owned())),
            Response::Refused(_) => (None, Some("refused".to_owned())),
        };
        let outcome = match verdict {
            Verdict::Delivered => "delivered",
            Verdict::Retry => "retry",
            Verdict::Wait(_) => "wait",
            Verdict::Disable => "disabled",
            Verdict::Dead => "dead",
        };
        metrics::counter!("hookstream_deliver_attempts_total", "tenant" => delivery.tenant.clone(), "endpoint" => delivery.endpoint.clone(), "outcome" => outcome).increment(1);
        metrics::histogram!("hookstream_deliver_attempt_seconds", "tenant" => delivery.tenant.clone(), "endpoint" => delivery.endpoint.clone()).record(duration_ms as f64 / 1000.0);
        // Waits count from the answer.
        let next = self.next(&delivery, verdict, now_ms());
        let log = AttemptRecord {
            attempt_id,
            delivery_id: delivery.delivery_id.clone(),
            tenant: delivery.tenant.clone(),
            endpoint: delivery.endpoint.clone(),
            event_id: delivery.event_id.clone(),
            attempt: delivery.attempt,
            outcome: outcome.to_owned(),
            status,
            error,
            attempted_at: to_rfc3339(attempted_at),
            duration_ms,
            next_attempt_at: next.as_ref().map(|(_, d)| to_rfc3339(d.due_at)),
            response_prefix: prefix,
        };
        let outcome = Entry::Outcome(log);
        let logged = self.journal(&key, &outcome);
        match (verdict, next) {
            (_, Some((tier, next))) => {
                let value = serde_json::to_vec(&next).expect("delivery serializes");
                let queued = self.send_record(&self.names.tiers[tier], &key, &value);
                let (a, b) = tokio::join!(logged, queued);
                a?;
                b?;
            }
            (Verdict::Disable, None) => {
                tracing::warn!(tenant = %delivery.tenant, endpoint = %delivery.endpoint, "the endpoint answered 410 Gone: disabled");
                let status = self.endpoints.disable(
                    &delivery.tenant,
                    &delivery.endpoint,
                    "http_410",
                    now_ms(),
                );
                let (a, b) = tokio::join!(logged, self.publish_status(&status));
                a?;
                b?;
                self.dead(delivery, "http_410").await?;
            }
            (Verdict::Dead, None) => {
                logged.await?;
                let reason = schedule::reason(&response);
                self.dead(delivery, &reason).await?;
            }
            _ => logged.await?,
        }
        Ok(())
    }

    /// The retry a verdict calls for: its tier and the delivery as it waits there.
    fn next(&self, delivery: &Delivery, verdict: Verdict, now: i64) -> Option<(usize, Delivery)> {
        let (tier, attempt, due_at) = match verdict {
            Verdict::Retry => {
                let next = delivery.attempt + 1;
                let tier = schedule::tier_before(next)?;
                let jitter = schedule::jitter(&delivery.delivery_id, next, tier);
                let due = now + (TIERS[tier] + jitter).as_millis() as i64;
                (tier, next, due)
            }
            Verdict::Wait(wait) => {
                let (tier, wait) = schedule::wait_tier(wait);
                (tier, delivery.attempt, now + wait.as_millis() as i64)
            }
            _ => return None,
        };
        Some((
            tier,
            Delivery {
                attempt,
                due_at,
                ..delivery.clone()
            },
        ))
    }

    async fn dead(&self, delivery: Delivery, reason: &str) -> Result<(), DeliverError> {
        metrics::counter!("hookstream_deliver_dead_letters_total", "tenant" => delivery.tenant.clone(), "endpoint" => delivery.endpoint.clone()).increment(1);
        let key = delivery.key();
        let dead = Delivery {
            reason: Some(reason.to_owned()),
            ..delivery
        };
        let value = serde_json::to_vec(&dead).expect("delivery serializes");
        self.send_record(&self.names.dlq, &key, &value).await
    }

    /// Appends to the attempt journal, keyed like the endpoint's other records.
    async fn journal(&self, key: &str, entry: &Entry) -> Result<(), DeliverError> {
        let value = serde_json::to_vec(entry).expect("journal entry serializes");
        self.send_record(&self.names.journal, key, &value).await
    }

    async fn send(
        &self,
        endpoint: &Endpoint,
        delivery: &Delivery,
        attempt_id: &str,
        timestamp: i64,
    ) -> (Response, Option<String>) {
        let body = delivery.body.as_bytes();
        let signature = match endpoint.signer.sign(&delivery.event_id, timestamp, body) {
            Ok(signature) => signature,
            Err(error) => {
                tracing::error!(%error, "cannot sign");
                return (Response::Connection, None);
            }
        };
        if let Some(refused) = endpoint.refused {
            return (Response::Refused(refused), None);
        }
        let request = endpoint
            .client
            .post(&endpoint.config.url)
            .timeout(endpoint.timeout())
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("hookstream-attempt-id", attempt_id)
            .body(delivery.body.clone());
        match request.send().await {
            Ok(response) => {
                let code = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let bytes = response.bytes().await.unwrap_or_default();
                let prefix = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]).into_owned();
                (Response::Status { code, retry_after }, Some(prefix))
            }
            Err(error) if error.is_timeout() => (Response::Timeout, None),
            Err(error) => match crate::guard::refused_in(&error) {
                Some(refused) => (Response::Refused(refused.class), None),
                None => (Response::Connection, None),
            },
        }
    }

    /// Writes an endpoint's status to `delivery-endpoints` (and metrics).
    async fn publish_status(
        &self,
        status: &crate::status::EndpointStatus,
    ) -> Result<(), DeliverError> {
        metrics::gauge!("hookstream_deliver_endpoint_disabled", "tenant" => status.tenant.clone(), "endpoint" => status.endpoint.clone())
            .set(if status.disabled.is_some() { 1.0 } else { 0.0 });
        let value = serde_json::to_vec(status).expect("status serializes");
        self.send_record(&self.names.endpoints, &status.key(), &value)
            .await
    }

    /// Takes in the endpoint statuses written before (`delivery-endpoints`).
    pub fn restore_statuses(
        &self,
        statuses: std::collections::HashMap<String, crate::status::EndpointStatus>,
    ) {
        self.endpoints.restore(statuses);
    }

    async fn send_record(&self, topic: &str, key: &str, value: &[u8]) -> Result<(), DeliverError> {
        let headers = OwnedHeaders::new().insert(Header {
            key: "hs-version",
            value: Some("1"),
        });
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(value)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(60))
            .await
            .map(|_| ())
            .map_err(|(error, _)| DeliverError::Kafka(error))
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
