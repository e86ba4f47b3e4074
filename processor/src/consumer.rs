//! The consumer loop and its commit protocol.
//!
//! One consumer in the processor group reads `raw`; each assigned partition gets a
//! [`PartitionTask`] with its own RocksDB store, opened on the partition's first record and
//! closed when the partition is revoked. Every turn of the loop:
//!
//! 1. **batch** — take the records available now (at most `processor.batch_max`);
//! 2. **process** — each task computes its outputs and store delta (pure and deterministic);
//! 3. **produce** — send every output and wait until *all* are acknowledged (on failure the
//!    whole batch's outputs are sent again: identical bytes, so keyed consumers see at most a
//!    repeat, never a different value);
//! 4. **store** — each task writes its delta *and its next input offset* in one atomic
//!    RocksDB batch;
//! 5. **commit** — commit the group offsets.
//!
//! A crash between 3 and 4 re-processes one batch and re-emits identical outputs; between 4
//! and 5 the task's checkpoint is ahead of the group offset, and the records before it are
//! skipped on restart. Either way nothing is lost and no state is applied twice.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use schemas::topics::{Topic, TopicNames};
use tokio::sync::watch;

use crate::catalog::SourceCatalog;
use crate::error::ProcessorError;
use crate::input::decode;
use crate::output::{self, OutRecord};
use crate::restore;
use crate::store::{Cf, Op, StateStore, CHANGELOG_NEXT};
use crate::task::{Decoded, PartitionTask, TaskSettings};

/// Tracks assignment changes reported by librdkafka during `recv`.
#[derive(Default)]
pub struct RebalanceContext {
    assigned: Mutex<HashSet<i32>>,
    revoked: Mutex<Vec<i32>>,
}

impl RebalanceContext {
    fn take_revoked(&self) -> Vec<i32> {
        std::mem::take(&mut *self.revoked.lock().expect("rebalance lock"))
    }

    /// Records a manual assignment (no group rebalance callbacks happen then).
    pub fn assign_manually(&self, partitions: &[i32]) {
        self.assigned
            .lock()
            .expect("rebalance lock")
            .extend(partitions.iter().copied());
    }

    fn is_assigned(&self, partition: i32) -> bool {
        self.assigned
            .lock()
            .expect("rebalance lock")
            .contains(&partition)
    }
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut assigned = self.assigned.lock().expect("rebalance lock");
                for element in tpl.elements() {
                    assigned.insert(element.partition());
                }
                tracing::info!(partitions = ?assigned, "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let mut assigned = self.assigned.lock().expect("rebalance lock");
                let mut revoked = self.revoked.lock().expect("rebalance lock");
                for element in tpl.elements() {
                    assigned.remove(&element.partition());
                    revoked.push(element.partition());
                }
                tracing::info!(partitions = ?revoked, "partitions revoked");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}

pub type GroupConsumer = StreamConsumer<RebalanceContext>;

pub struct Pipeline {
    pub consumer: Arc<GroupConsumer>,
    pub producer: FutureProducer,
    pub topics: TopicNames,
    pub catalog: SourceCatalog,
    pub state_root: PathBuf,
    pub batch_max: usize,
    pub settings: TaskSettings,
    pub idle_flush: Duration,
    /// Client settings for reading the changelog when a task opens.
    pub restore: rdkafka::ClientConfig,
    /// Unique per process run: with a counter it names each batch attempt in the changelog.
    pub instance: String,
}

impl Pipeline {
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), ProcessorError> {
        let raw = self.topics.name(Topic::Raw);
        let mut tasks: HashMap<i32, PartitionTask> = HashMap::new();
        let mut last_input: HashMap<i32, Instant> = HashMap::new();
        let mut attempt = 0u64;
        loop {
            let holding = tasks.values().any(|t| t.buffered() > 0);
            let first = tokio::select! {
                biased;
                _ = stop.changed() => break,
                message = self.consumer.recv() => Some(message),
                _ = tokio::time::sleep(self.idle_flush), if holding => None,
            };
            let mut messages: Vec<OwnedMessage> = Vec::new();
            match first {
                Some(Ok(message)) => messages.push(message.detach()),
                Some(Err(error)) => {
                    tracing::warn!(%error, "consumer error");
                    continue;
                }
                None => {}
            }
            while !messages.is_empty() && messages.len() < self.batch_max {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => messages.push(message.detach()),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "consumer error");
                        break;
                    }
                    None => break,
                }
            }
            let context = self.consumer.context();
            for partition in context.take_revoked() {
                last_input.remove(&partition);
                if tasks.remove(&partition).is_some() {
                    tracing::info!(partition, "closed partition task");
                }
            }
            let mut by_partition: BTreeMap<i32, Vec<Decoded>> = BTreeMap::new();
            for message in messages
                .iter()
                .filter(|m| context.is_assigned(m.partition()))
            {
                by_partition
                    .entry(message.partition())
                    .or_default()
                    .push(decode(message));
            }
            let started = Instant::now();
            let mut outputs = Vec::new();
            let mut pending = Vec::new();
            for (partition, records) in by_partition {
                let task = match tasks.entry(partition) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => {
                        let dir = self.state_root.join(format!("{raw}-{partition}"));
                        let store = StateStore::open(&dir)?;
                        let restored = tokio::task::block_in_place(|| {
                            restore::catch_up(
                                &store,
                                &self.restore,
                                &self.topics.name(Topic::Changelog),
                                partition,
                            )
                        })?;
                        let task = PartitionTask::from_store(store, self.settings)?;
                        tracing::info!(
                            partition,
                            restored,
                            "restored partition task from the changelog"
                        );
                        tracing::info!(partition, checkpoint = ?task.next_offset(), dir = %dir.display(), "opened partition task");
                        entry.insert(task)
                    }
                };
                last_input.insert(partition, started);
                let batch = task.process(records, &self.catalog, &mut outputs)?;
                record_stats(&batch.stats);
                pending.push((partition, batch));
            }
            // Punctuate on wall clock: partitions quiet for `idle_flush` release what they hold.
            for (partition, task) in &tasks {
                let quiet = last_input
                    .get(partition)
                    .is_none_or(|t| started.duration_since(*t) >= self.idle_flush);
                if quiet && task.buffered() > 0 && !pending.iter().any(|(p, _)| p == partition) {
                    let flushed = task.flush(&self.catalog, &mut outputs)?;
                    record_stats(&flushed.stats);
                    pending.push((*partition, flushed));
                }
            }
            if pending.is_empty() {
                continue;
            }
            // The store changes go to the changelog with the outputs: all must be acknowledged
            // before the store is written and the offsets committed.
            for (partition, batch) in &pending {
                outputs.extend(batch.ops.iter().map(|op| output::changelog(*partition, op)));
            }
            if self.produce_all(&outputs, &mut stop).await.is_none() {
                break;
            }
            // Only now, with every output and op acknowledged, close each batch in the changelog.
            let commits: Vec<OutRecord> = pending
                .iter()
                .map(|(partition, batch)| {
                    attempt += 1;
                    let id = format!("{}-{attempt}", self.instance);
                    output::changelog_commit(*partition, &id, batch.ops.len())
                })
                .collect();
            let Some(commit_positions) = self.produce_all(&commits, &mut stop).await else {
                break;
            };
            let mut offsets = TopicPartitionList::new();
            for ((partition, batch), (_, commit_offset)) in pending.iter_mut().zip(commit_positions)
            {
                batch.ops.push(Op {
                    cf: Cf::Meta,
                    key: CHANGELOG_NEXT.to_vec(),
                    value: Some((commit_offset + 1).to_be_bytes().to_vec()),
                });
                let task = tasks.get_mut(partition).expect("task opened above");
                task.commit(batch)?;
                if let Some(next) = batch.next_offset {
                    offsets.add_partition_offset(&raw, *partition, Offset::Offset(next))?;
                }
            }
            if offsets.count() > 0 {
                if let Err(error) = self.consumer.commit(&offsets, CommitMode::Async) {
                    tracing::warn!(%error, "group offset commit failed; the task checkpoints stay authoritative");
                }
            }
            metrics::histogram!("hookstream_processor_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("hookstream_processor_batch_records").record(messages.len() as f64);
        }
        Ok(())
    }

    /// Sends all outputs and waits for every acknowledgement; retries the whole set on any
    /// failure. Returns each record's (partition, offset), or None when asked to stop before
    /// all were acknowledged.
    async fn produce_all(
        &self,
        outputs: &[OutRecord],
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Vec<(i32, i64)>> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut deliveries = Vec::with_capacity(outputs.len());
            let mut failed = None;
            for record in outputs {
                let topic = self.topics.name(record.topic);
                let headers = record.headers.iter().fold(
                    OwnedHeaders::new_with_capacity(record.headers.len()),
                    |h, (k, v)| {
                        h.insert(Header {
                            key: k,
                            value: Some(v),
                        })
                    },
                );
                let mut future = FutureRecord::to(&topic).key(&record.key).headers(headers);
                if let Some(value) = &record.value {
                    future = future.payload(value);
                }
                if let Some(partition) = record.partition {
                    future = future.partition(partition);
                }
                if let Some(ts) = record.timestamp {
                    future = future.timestamp(ts);
                }
                match self.producer.send_result(future) {
                    Ok(delivery) => deliveries.push(delivery),
                    Err((error, _)) => {
                        failed = Some(error.to_string());
                        break;
                    }
                }
            }
            let mut positions = Vec::with_capacity(outputs.len());
            for delivery in futures::future::join_all(deliveries).await {
                match delivery {
                    Ok(Ok(delivered)) => positions.push((delivered.partition, delivered.offset)),
                    Ok(Err((error, _))) => failed = Some(error.to_string()),
                    Err(_) => failed = Some("producer shut down".into()),
                }
            }
            let Some(error) = failed else {
                return Some(positions);
            };
            metrics::counter!("hookstream_processor_produce_retries_total").increment(1);
            tracing::warn!(%error, retry_in = ?backoff, "outputs not acknowledged; sending the batch again");
            tokio::select! {
                _ = stop.changed() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

fn record_stats(stats: &crate::task::BatchStats) {
    metrics::counter!("hookstream_processor_events_total").increment(stats.events as u64);
    metrics::counter!("hookstream_processor_duplicates_total").increment(stats.duplicates as u64);
    metrics::counter!("hookstream_processor_late_total").increment(stats.late as u64);
    metrics::counter!("hookstream_processor_released_total").increment(stats.released as u64);
    metrics::counter!("hookstream_processor_dedupe_expired_total").increment(stats.expired as u64);
    metrics::counter!("hookstream_processor_dead_letters_total")
        .increment(stats.dead_letters as u64);
    if stats.dead_letters > 0 {
        tracing::warn!(
            count = stats.dead_letters,
            "records sent to the dead-letter topic"
        );
    }
}
