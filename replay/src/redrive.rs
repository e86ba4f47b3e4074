//! `--redrive`: re-appends selected records to the live `raw` topic so the processor handles
//! them again. Each copy keeps the key, value and provenance headers of the original and gets:
//!
//! * `hs-redrive-id` — the redrive's id: the processor dedupes a redriven event under (tenant,
//!   source, event id, redrive id), so running or resuming the same redrive again processes
//!   nothing twice, while plain redeliveries stay deduped as before;
//! * `hs-redrive-from` — `topic/partition/offset` of the record selected;
//! * `hs-attempt` — the original's attempt count plus one (absent counts as 1), so a dead
//!   letter that fails again returns to `dlq` with its count incremented.
//!
//! From `deferred`, the record redriven is the original `raw` record the deferred one names
//! (same partition, `raw_offset`), so the processor handles the event as it first arrived.
//!
//! A dead letter the **ingest** wrote (`hs-dead-lettered-by: ingest`: a verified request its
//! extraction rules could not read) has no event id or entity to copy: it is read again with
//! the configuration's current rules ([`ingest::dead_letter::Reextractor`]) and redriven as the
//! `raw` record(s) the ingest would have appended had the rules been right (a batch source's
//! body becomes one record per element), with the redrive headers above. One that the current
//! rules still cannot read is not written; it counts as a failure (the command fails with the
//! count and the first reason) and stays in `dlq`.
//!
//! Headers the processor added when it dead-lettered the record (`hs-error`,
//! `hs-raw-partition`, `hs-raw-offset`) are dropped. A record counts as written once the
//! broker acknowledged it (acks=all, idempotent producer).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use schemas::raw::header;
use schemas::scope::OffsetRange;

use crate::count::total;
use crate::progress::Tracker;
use crate::reader::{self, ScanEnd};
use crate::record::Record;
use crate::select::Selection;
use crate::ReplayError;
use ingest::dead_letter::{is_unreadable, Reextractor};

/// Headers that describe a previous handling and are replaced or dropped on redrive.
const DROPPED: [&str; 6] = [
    header::ERROR,
    header::RAW_PARTITION,
    header::RAW_OFFSET,
    header::REDRIVE_ID,
    header::REDRIVE_FROM,
    header::ATTEMPT,
];

/// The headers of the copy of `record` that a redrive appends.
pub fn headers(record: &Record, redrive_id: &str, from: &str) -> Vec<(String, Vec<u8>)> {
    let attempt = record
        .header(header::ATTEMPT)
        .and_then(|a| a.parse::<u32>().ok())
        .unwrap_or(1);
    let mut headers: Vec<(String, Vec<u8>)> = record
        .headers
        .iter()
        .filter(|(name, _)| !DROPPED.contains(&name.as_str()))
        .cloned()
        .collect();
    headers.push((header::REDRIVE_ID.into(), redrive_id.as_bytes().to_vec()));
    headers.push((header::REDRIVE_FROM.into(), from.as_bytes().to_vec()));
    headers.push((
        header::ATTEMPT.into(),
        attempt.saturating_add(1).to_string().into_bytes(),
    ));
    headers
}

#[derive(Default)]
struct Acks {
    written: Arc<Tracker>,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

struct Delivery(Arc<Acks>);

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.written.written.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.0.first_failure.lock().expect("failure lock");
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Where a redrive takes its records from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// The selected records themselves (`raw`, `dlq`).
    Selected,
    /// `deferred` records name an event by its `raw` partition and offset (`raw_offset`): the
    /// original `raw` record, from this topic, is redriven.
    RawOf(&'a str),
}

fn send(
    producer: &ThreadedProducer<Delivery>,
    target: &str,
    record: &Record,
    headers: Vec<(String, Vec<u8>)>,
) -> Result<(), ReplayError> {
    let mut owned = OwnedHeaders::new();
    for (name, value) in &headers {
        owned = owned.insert(Header {
            key: name,
            value: Some(value),
        });
    }
    let mut pending = BaseRecord::<Vec<u8>, Vec<u8>>::to(target).headers(owned);
    if let Some(key) = &record.key {
        pending = pending.key(key);
    }
    if let Some(value) = &record.value {
        pending = pending.payload(value);
    }
    loop {
        match producer.send(pending) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(50));
                pending = back;
            }
            Err((error, _)) => return Err(error.into()),
        }
    }
}

/// The `raw` records of an ingest dead letter, read with the current rules; each keeps the
/// dead letter's `hs-attempt` so the redrive counts one more.
fn reextracted(reextractor: &Reextractor, record: &Record) -> Result<Vec<Record>, String> {
    let body = bytes::Bytes::from(record.value.clone().unwrap_or_default());
    let events = reextractor.reextract(&record.headers, body.clone())?;
    let attempt = record
        .headers
        .iter()
        .rev()
        .find(|(name, _)| name == header::ATTEMPT)
        .cloned();
    Ok(events
        .into_iter()
        .map(|event| {
            let mut headers: Vec<(String, Vec<u8>)> = event
                .headers
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.into_bytes()))
                .collect();
            headers.extend(attempt.clone());
            Record {
                key: Some(event.key.into_bytes()),
                value: Some(body[event.body].to_vec()),
                headers,
                ..record.clone()
            }
        })
        .collect())
}

/// The `raw` offset a `deferred` record names.
fn raw_offset(record: &Record) -> Result<i64, ReplayError> {
    record
        .value
        .as_deref()
        .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        .and_then(|v| v["raw_offset"].as_i64())
        .ok_or_else(|| {
            ReplayError::invalid(format!(
                "{}/{}/{}: not a JSON `deferred` record with a `raw_offset` (Avro-encoded deferred records cannot be redriven yet)",
                record.topic, record.partition, record.offset
            ))
        })
}

/// Redrives the selected records into `target` (the live `raw` topic).
#[allow(clippy::too_many_arguments)]
pub fn redrive(
    reader_config: rdkafka::ClientConfig,
    producer_config: rdkafka::ClientConfig,
    selection: &Selection,
    source: Source<'_>,
    target: &str,
    redrive_id: &str,
    reextractor: Option<&Reextractor>,
    tracker: Arc<Tracker>,
    cancel: &AtomicBool,
) -> Result<ScanEnd, ReplayError> {
    if redrive_id.trim().is_empty() {
        return Err(ReplayError::invalid("the redrive id must not be empty"));
    }
    let consumer = reader::consumer(reader_config.clone())?;
    let ranges = selection.resolve(&consumer)?;
    tracker.total.store(total(&ranges), Ordering::Relaxed);
    let acks = Arc::new(Acks {
        written: tracker.clone(),
        ..Acks::default()
    });
    let producer: ThreadedProducer<Delivery> =
        producer_config.create_with_context(Delivery(acks.clone()))?;
    // For `deferred`: per raw partition, the offsets to redrive and where each was named.
    let mut wanted: BTreeMap<i32, BTreeMap<i64, String>> = BTreeMap::new();
    let end = reader::scan(
        &consumer,
        &selection.topic,
        &ranges,
        false,
        cancel,
        |record| {
            tracker.read.fetch_add(1, Ordering::Relaxed);
            if !selection.matches(&record) {
                return Ok(ControlFlow::Continue(()));
            }
            tracker.matched.fetch_add(1, Ordering::Relaxed);
            match source {
                Source::Selected => {
                    let from = format!("{}/{}/{}", record.topic, record.partition, record.offset);
                    match reextractor.filter(|_| is_unreadable(&record.headers)) {
                        None => send(
                            &producer,
                            target,
                            &record,
                            headers(&record, redrive_id, &from),
                        )?,
                        Some(reextractor) => match reextracted(reextractor, &record) {
                            Ok(copies) => {
                                for copy in copies {
                                    send(
                                        &producer,
                                        target,
                                        &copy,
                                        headers(&copy, redrive_id, &from),
                                    )?;
                                }
                            }
                            Err(why) => {
                                tracing::warn!(%from, reason = %why, "dead letter still unreadable; not redriven");
                                acks.failed.fetch_add(1, Ordering::Relaxed);
                                let mut first = acks.first_failure.lock().expect("failure lock");
                                first.get_or_insert_with(|| format!("{from}: {why}"));
                            }
                        },
                    }
                }
                Source::RawOf(_) => {
                    let from = format!("{}/{}/{}", record.topic, record.partition, record.offset);
                    wanted
                        .entry(record.partition)
                        .or_default()
                        .insert(raw_offset(&record)?, from);
                }
            }
            Ok(ControlFlow::Continue(()))
        },
    )?;
    if let Source::RawOf(raw) = source {
        let raw_ranges: BTreeMap<i32, OffsetRange> = wanted
            .iter()
            .filter_map(|(p, offsets)| {
                let (first, last) = (offsets.keys().next()?, offsets.keys().next_back()?);
                Some((
                    *p,
                    OffsetRange {
                        start: *first,
                        end: last + 1,
                    },
                ))
            })
            .collect();
        let originals = reader::consumer(reader_config)?;
        reader::scan(&originals, raw, &raw_ranges, false, cancel, |record| {
            if let Some(from) = wanted
                .get(&record.partition)
                .and_then(|o| o.get(&record.offset))
            {
                send(
                    &producer,
                    target,
                    &record,
                    headers(&record, redrive_id, from),
                )?;
            }
            Ok(ControlFlow::Continue(()))
        })?;
    }
    producer.flush(Duration::from_secs(60))?;
    let failed = acks.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = acks
            .first_failure
            .lock()
            .expect("failure lock")
            .clone()
            .unwrap_or_default();
        return Err(ReplayError::Undelivered { failed, first });
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_letter() -> Record {
        Record {
            topic: "hookstream.dlq".into(),
            partition: 2,
            offset: 17,
            timestamp: None,
            key: Some(b"acme/o1".to_vec()),
            value: Some(b"{}".to_vec()),
            headers: vec![
                (header::TENANT.into(), b"acme".to_vec()),
                (header::ATTEMPT.into(), b"2".to_vec()),
                (
                    header::ERROR.into(),
                    b"missing header `hs-event-id`".to_vec(),
                ),
                (header::RAW_PARTITION.into(), b"2".to_vec()),
                (header::RAW_OFFSET.into(), b"99".to_vec()),
                (header::REDRIVE_ID.into(), b"old".to_vec()),
            ],
        }
    }

    #[test]
    fn a_redriven_dead_letter_drops_its_error_and_counts_one_more_attempt() {
        let headers = headers(&dead_letter(), "r7", "hookstream.dlq/2/17");
        let text: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), std::str::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(
            text,
            [
                (header::TENANT, "acme"),
                (header::REDRIVE_ID, "r7"),
                (header::REDRIVE_FROM, "hookstream.dlq/2/17"),
                (header::ATTEMPT, "3"),
            ]
        );
    }

    #[test]
    fn a_first_redrive_is_attempt_two() {
        let mut record = dead_letter();
        record.headers.retain(|(k, _)| k != header::ATTEMPT);
        let headers = headers(&record, "r1", "hookstream.dlq/2/17");
        assert!(headers.contains(&(header::ATTEMPT.into(), b"2".to_vec())));
    }
}
