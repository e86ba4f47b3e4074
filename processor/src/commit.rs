//! Making a processed batch durable, in one of two modes.
//!
//! **At least once with exact state** (the default; any Kafka-compatible broker):
//! 1. produce the batch's outputs and wait until *all* are acknowledged (any failure: send the
//!    whole set again — identical bytes, so a keyed consumer sees at most a repeat);
//! 2. produce the batch's changelog frames, the last one closing the batch;
//! 3. commit the group offsets, synchronously;
//! 4. write each task's delta, its next input offset and its changelog position to RocksDB in
//!    one atomic batch.
//!
//! A crash before 2 completes re-processes the batch from `raw` and re-emits identical
//! outputs. After 2 the changelog holds the batch: a restarted task restores it and its
//! checkpoint skips the batch's records, whatever the group offset says. If 3 fails (the
//! instance lost the partition in a rebalance, or the coordinator is unreachable) the local
//! store is *not* written and the task is closed: whoever owns the partition next restores the
//! batch from the changelog, so a zombie's local store never diverges from the changelog.
//!
//! **Exactly once** (`processor.exactly_once`; brokers with transactions): outputs, frames and
//! the group offsets are one Kafka transaction, and read_committed consumers (restore
//! included) never see an aborted attempt. On any failure the transaction is aborted, the
//! batch's tasks are closed and the consumer rewinds to the batch's first record.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::TopicPartitionList;
use tokio::sync::watch;

use schemas::topics::Topic;

use crate::consumer::Pipeline;
use crate::error::{ProcessorError, RetryClass};
use crate::output::OutRecord;

const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The `/healthz` entry while produced records are not acknowledged.
const PRODUCE: &str = "produce";

/// How an attempt to make a batch durable ended.
#[derive(Debug)]
pub enum Outcome {
    /// Durable: the (partition, offset) of every frame, in order.
    Committed(Vec<(i32, i64)>),
    /// Not committed: close the batch's tasks, rewinding the consumer when `rewind`.
    Failed { rewind: bool },
    /// The producer or broker refused these records for good: not committed; the inputs they
    /// came from go to `dlq` when the batch is processed again.
    Refused(Vec<Refusal>),
    /// Asked to stop first.
    Stopped,
}

/// A record refused for good.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub topic: Topic,
    /// The input the record was derived from (None: a changelog frame, an alert, a share).
    pub origin: Option<(i32, i64)>,
    pub reason: String,
}

/// How producing a set of records ended.
pub(crate) enum Produced {
    /// Every record acknowledged: its (partition, offset), in order.
    All(Vec<(i32, i64)>),
    /// These records (index in the set, error) were refused for good.
    Refused(Vec<(usize, KafkaError)>),
    Stopped,
}

impl Pipeline {
    pub(crate) async fn make_durable(
        &self,
        outputs: &[OutRecord],
        frames: &[OutRecord],
        offsets: &TopicPartitionList,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        if self.exactly_once {
            return self.transaction(outputs, frames, offsets).await;
        }
        let started = std::time::Instant::now();
        match self.produce_all(outputs, stop).await {
            Produced::All(_) => {}
            Produced::Refused(refused) => return Outcome::Refused(refusals(outputs, refused)),
            Produced::Stopped => return Outcome::Stopped,
        }
        let produced = started.elapsed();
        let positions = match self.produce_all(frames, stop).await {
            Produced::All(positions) => positions,
            Produced::Refused(refused) => return Outcome::Refused(refusals(frames, refused)),
            Produced::Stopped => return Outcome::Stopped,
        };
        let framed = started.elapsed();
        tracing::debug!(
            outputs = outputs.len(),
            frames = frames.len(),
            offsets = offsets.count(),
            ?produced,
            ?framed,
            "produced"
        );
        if offsets.count() > 0 {
            let committed =
                tokio::task::block_in_place(|| self.consumer.commit(offsets, CommitMode::Sync));
            tracing::debug!(outputs = outputs.len(), frames = frames.len(), ?produced, ?framed, committed = ?started.elapsed(), "batch durable");
            if let Err(error) = committed {
                metrics::counter!("hookstream_processor_commit_failures_total").increment(1);
                tracing::warn!(%error, "group offset commit failed; closing the batch's tasks, which restore the batch from the changelog when they reopen");
                return Outcome::Failed { rewind: false };
            }
        }
        Outcome::Committed(positions)
    }

    /// Appends `records` on their own (a task's fence): in a transaction of their own in
    /// exactly-once mode, where nothing may be produced outside one. Retries until done;
    /// None when asked to stop first.
    pub(crate) async fn append(
        &self,
        records: &[OutRecord],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Vec<(i32, i64)>>, ProcessorError> {
        if !self.exactly_once {
            return match self.produce_all(records, stop).await {
                Produced::All(positions) => Ok(Some(positions)),
                Produced::Stopped => Ok(None),
                Produced::Refused(refused) => Err(refused_for_good(records, refused)),
            };
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match self
                .transaction(&[], records, &TopicPartitionList::new())
                .await
            {
                Outcome::Committed(positions) => return Ok(Some(positions)),
                Outcome::Refused(refusals) => {
                    let first = &refusals[0];
                    return Err(ProcessorError::Refused {
                        topic: self.topics.name(first.topic),
                        reason: first.reason.clone(),
                    });
                }
                Outcome::Failed { .. } | Outcome::Stopped => {}
            }
            tokio::select! {
                _ = stop.changed() => return Ok(None),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    async fn transaction(
        &self,
        outputs: &[OutRecord],
        frames: &[OutRecord],
        offsets: &TopicPartitionList,
    ) -> Outcome {
        let producer = &self.producer;
        let result = async {
            producer.begin_transaction()?;
            let (outputs_sent, frames_sent) =
                futures::join!(self.send_each(outputs), self.send_each(frames));
            let mut refused = Vec::new();
            let mut failed = None;
            for (records, sent) in [(outputs, &outputs_sent), (frames, &frames_sent)] {
                for (index, result) in sent.iter().enumerate() {
                    if let Err(error) = result {
                        if RetryClass::of_kafka(error) == RetryClass::Permanent {
                            refused.push(refusal(&records[index], error));
                        } else {
                            failed.get_or_insert_with(|| error.clone());
                        }
                    }
                }
            }
            if !refused.is_empty() {
                return Err(TransactionError::Refused(refused));
            }
            if let Some(error) = failed {
                return Err(error.into());
            }
            let positions = frames_sent
                .into_iter()
                .map(|r| r.expect("checked above"))
                .collect();
            if offsets.count() > 0 {
                let group = self.consumer.group_metadata().ok_or_else(|| {
                    "the consumer has no group metadata to commit offsets with".to_owned()
                })?;
                producer.send_offsets_to_transaction(offsets, &group, TRANSACTION_TIMEOUT)?;
            }
            producer.commit_transaction(TRANSACTION_TIMEOUT)?;
            Ok::<_, TransactionError>(positions)
        };
        match tokio::task::block_in_place(|| futures::executor::block_on(result)) {
            Ok(positions) => Outcome::Committed(positions),
            Err(error) => {
                metrics::counter!("hookstream_processor_commit_failures_total").increment(1);
                tracing::warn!(%error, "transaction failed; aborting it and processing the batch again");
                if let Err(error) = producer.abort_transaction(TRANSACTION_TIMEOUT) {
                    tracing::warn!(%error, "aborting the transaction failed");
                }
                match error {
                    TransactionError::Refused(refusals) => Outcome::Refused(refusals),
                    _ => Outcome::Failed { rewind: true },
                }
            }
        }
    }

    /// Sends every record and waits for its acknowledgement; one result per record. A full
    /// producer queue is backpressure: the send waits for room instead of failing.
    async fn send_each(&self, records: &[OutRecord]) -> Vec<Result<(i32, i64), KafkaError>> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let topic = self.topics.name(record.topic);
            let mut waited = Duration::ZERO;
            let delivery = loop {
                match self.producer.send_result(future_record(&topic, record)) {
                    Ok(delivery) => break Ok(delivery),
                    Err((error, _)) if RetryClass::of_kafka(&error) == RetryClass::Backpressure => {
                        if waited.is_zero() {
                            metrics::counter!("hookstream_processor_produce_backpressure_total")
                                .increment(1);
                        }
                        let pause = Duration::from_millis(5);
                        tokio::time::sleep(pause).await; // the queue drains in librdkafka's thread
                        waited += pause;
                    }
                    Err((error, _)) => break Err(error),
                }
            };
            deliveries.push(delivery);
        }
        let mut results = Vec::with_capacity(records.len());
        for delivery in deliveries {
            results.push(match delivery {
                Err(error) => Err(error),
                Ok(delivery) => match delivery.await {
                    Ok(Ok(delivered)) => Ok((delivered.partition, delivered.offset)),
                    Ok(Err((error, _))) => Err(error),
                    Err(_) => Err(KafkaError::Canceled),
                },
            });
        }
        results
    }

    /// Produces all records, in order. Retriable failures are sent again, with backoff, from
    /// the first failed record on: the acknowledged records before it stay as they are, and
    /// those after it are re-sent (identical bytes) so that every key's records end in the
    /// order they were produced — a compacted `state` must never end on an older version.
    /// Permanent failures are never retried: they end the attempt as [`Produced::Refused`].
    pub(crate) async fn produce_all(
        &self,
        records: &[OutRecord],
        stop: &mut watch::Receiver<bool>,
    ) -> Produced {
        let mut positions: Vec<(i32, i64)> = Vec::with_capacity(records.len());
        let mut backoff = Duration::from_millis(100);
        loop {
            let start = positions.len();
            let sent = tokio::select! {
                _ = stop.changed() => return Produced::Stopped,
                sent = self.send_each(&records[start..]) => sent,
            };
            let mut refused = Vec::new();
            let mut retry: Option<KafkaError> = None;
            for (i, result) in sent.into_iter().enumerate() {
                match result {
                    Ok(position) if retry.is_none() && refused.is_empty() => {
                        positions.push(position)
                    }
                    Ok(_) => {}
                    Err(error) if RetryClass::of_kafka(&error) == RetryClass::Permanent => {
                        refused.push((start + i, error));
                    }
                    Err(error) => {
                        retry.get_or_insert(error);
                    }
                }
            }
            if !refused.is_empty() {
                metrics::counter!("hookstream_processor_produce_refused_total")
                    .increment(refused.len() as u64);
                return Produced::Refused(refused);
            }
            let Some(error) = retry else {
                self.waiting.lock().expect("waiting lock").remove(PRODUCE);
                return Produced::All(positions);
            };
            self.waiting
                .lock()
                .expect("waiting lock")
                .insert(PRODUCE.to_owned(), error.to_string());
            metrics::counter!("hookstream_processor_produce_retries_total").increment(1);
            tracing::warn!(%error, retry_in = ?backoff, acknowledged = positions.len(), of = records.len(), "records not acknowledged; sending them again from the first one that failed");
            tokio::select! {
                _ = stop.changed() => return Produced::Stopped,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

fn refusal(record: &OutRecord, error: &KafkaError) -> Refusal {
    Refusal {
        topic: record.topic,
        origin: record.origin,
        reason: format!("refused: {error}"),
    }
}

fn refusals(records: &[OutRecord], refused: Vec<(usize, KafkaError)>) -> Vec<Refusal> {
    refused
        .into_iter()
        .map(|(index, error)| refusal(&records[index], &error))
        .collect()
}

fn refused_for_good(records: &[OutRecord], refused: Vec<(usize, KafkaError)>) -> ProcessorError {
    let (index, error) = &refused[0];
    ProcessorError::Refused {
        topic: format!("{:?}", records[*index].topic),
        reason: error.to_string(),
    }
}

/// Why a transaction failed.
#[derive(Debug, thiserror::Error)]
enum TransactionError {
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("records refused for good: {0:?}")]
    Refused(Vec<Refusal>),
    #[error("{0}")]
    Other(String),
}

impl From<String> for TransactionError {
    fn from(reason: String) -> Self {
        TransactionError::Other(reason)
    }
}

fn future_record<'a>(topic: &'a str, record: &'a OutRecord) -> FutureRecord<'a, [u8], [u8]> {
    let headers = record.headers.iter().fold(
        OwnedHeaders::new_with_capacity(record.headers.len()),
        |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v),
            })
        },
    );
    let mut future = FutureRecord::to(topic)
        .key(record.key.as_slice())
        .headers(headers);
    if let Some(value) = &record.value {
        future = future.payload(value.as_slice());
    }
    if let Some(partition) = record.partition {
        future = future.partition(partition);
    }
    if let Some(ts) = record.timestamp {
        future = future.timestamp(ts);
    }
    future
}
