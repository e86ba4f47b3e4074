//! `--redrive`: re-appends selected records to the live `raw` topic so the processor handles
//! them again. Each copy keeps the key, value and provenance headers of the original and gets:
//!
//! * `hs-redrive-id` — the redrive's id: the processor dedupes a redriven event under (tenant,
//!   source, event id, redrive id), so running or resuming the same redrive again processes
//!   nothing twice, while plain redeliveries stay deduped as before;
//! * `hs-redrive-from` — `topic/partition/offset` of the record copied;
//! * `hs-attempt` — the original's attempt count plus one (absent counts as 1), so a dead
//!   letter that fails again returns to `dlq` with its count incremented.
//!
//! Headers the processor added when it dead-lettered the record (`hs-error`,
//! `hs-raw-partition`, `hs-raw-offset`) are dropped. A record counts as written once the
//! broker acknowledged it (acks=all, idempotent producer).

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use schemas::raw::header;

use crate::count::total;
use crate::progress::Tracker;
use crate::reader::{self, ScanEnd};
use crate::record::Record;
use crate::select::Selection;
use crate::ReplayError;

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
pub fn headers(record: &Record, redrive_id: &str) -> Vec<(String, Vec<u8>)> {
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
    headers.push((
        header::REDRIVE_FROM.into(),
        format!("{}/{}/{}", record.topic, record.partition, record.offset).into_bytes(),
    ));
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

/// Redrives the selected records into `target` (the live `raw` topic).
pub fn redrive(
    reader_config: rdkafka::ClientConfig,
    producer_config: rdkafka::ClientConfig,
    selection: &Selection,
    target: &str,
    redrive_id: &str,
    tracker: Arc<Tracker>,
    cancel: &AtomicBool,
) -> Result<ScanEnd, ReplayError> {
    if redrive_id.trim().is_empty() {
        return Err(ReplayError::invalid("the redrive id must not be empty"));
    }
    let consumer = reader::consumer(reader_config)?;
    let ranges = selection.resolve(&consumer)?;
    tracker.total.store(total(&ranges), Ordering::Relaxed);
    let acks = Arc::new(Acks {
        written: tracker.clone(),
        ..Acks::default()
    });
    let producer: ThreadedProducer<Delivery> =
        producer_config.create_with_context(Delivery(acks.clone()))?;
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
            let mut owned = OwnedHeaders::new();
            for (name, value) in headers(&record, redrive_id) {
                owned = owned.insert(Header {
                    key: &name,
                    value: Some(&value),
                });
            }
            let mut base = BaseRecord::<Vec<u8>, Vec<u8>>::to(target).headers(owned);
            if let Some(key) = &record.key {
                base = base.key(key);
            }
            if let Some(value) = &record.value {
                base = base.payload(value);
            }
            let mut pending = base;
            loop {
                match producer.send(pending) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        producer.poll(Duration::from_millis(50));
                        pending = back;
                    }
                    Err((error, _)) => return Err(error.into()),
                }
            }
            Ok(ControlFlow::Continue(()))
        },
    )?;
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
        let headers = headers(&dead_letter(), "r7");
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
        let headers = headers(&record, "r1");
        assert!(headers.contains(&(header::ATTEMPT.into(), b"2".to_vec())));
    }
}
