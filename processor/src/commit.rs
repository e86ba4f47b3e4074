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
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::TopicPartitionList;
use tokio::sync::watch;

use crate::consumer::Pipeline;
use crate::output::OutRecord;

const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// How an attempt to make a batch durable ended.
#[derive(Debug)]
pub enum Outcome {
    /// Durable: the (partition, offset) of every frame, in order.
    Committed(Vec<(i32, i64)>),
    /// Not committed: close the batch's tasks, rewinding the consumer when `rewind`.
    Failed { rewind: bool },
    /// Asked to stop first.
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
        if self.produce_all(outputs, stop).await.is_none() {
            return Outcome::Stopped;
        }
        let produced = started.elapsed();
        let Some(positions) = self.produce_all(frames, stop).await else {
            return Outcome::Stopped;
        };
        let framed = started.elapsed();
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
    ) -> Option<Vec<(i32, i64)>> {
        if !self.exactly_once {
            return self.produce_all(records, stop).await;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Outcome::Committed(positions) = self
                .transaction(&[], records, &TopicPartitionList::new())
                .await
            {
                return Some(positions);
            }
            tokio::select! {
                _ = stop.changed() => return None,
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
            let outputs = self.send_all(outputs);
            let frames = self.send_all(frames);
            let (outputs, frames) = futures::join!(outputs, frames);
            outputs?;
            let positions = frames?;
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
                Outcome::Failed { rewind: true }
            }
        }
    }

    /// Sends every record and waits for all acknowledgements; the first error wins.
    async fn send_all(
        &self,
        records: &[OutRecord],
    ) -> Result<Vec<(i32, i64)>, rdkafka::error::KafkaError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let topic = self.topics.name(record.topic);
            let delivery = self
                .producer
                .send_result(future_record(&topic, record))
                .map_err(|(error, _)| error)?;
            deliveries.push(delivery);
        }
        let mut positions = Vec::with_capacity(records.len());
        for delivery in futures::future::join_all(deliveries).await {
            match delivery {
                Ok(Ok(delivered)) => positions.push((delivered.partition, delivered.offset)),
                Ok(Err((error, _))) => return Err(error),
                Err(_) => return Err(rdkafka::error::KafkaError::Canceled),
            }
        }
        Ok(positions)
    }

    /// Sends all records and waits for every acknowledgement; retries the whole set on any
    /// failure. Returns each record's (partition, offset), or None when asked to stop before
    /// all were acknowledged.
    pub(crate) async fn produce_all(
        &self,
        records: &[OutRecord],
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Vec<(i32, i64)>> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let error = match self.send_all(records).await {
                Ok(positions) => return Some(positions),
                Err(error) => error,
            };
            metrics::counter!("hookstream_processor_produce_retries_total").increment(1);
            tracing::warn!(%error, retry_in = ?backoff, "records not acknowledged; sending them again");
            tokio::select! {
                _ = stop.changed() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

/// Why a transaction failed.
#[derive(Debug, thiserror::Error)]
enum TransactionError {
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
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
