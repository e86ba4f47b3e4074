//! The `usage` input: reports of actual tokens and cost from downstream workers. A thread
//! reads every partition of the topic (JSON values, or Avro through the schema registry) and
//! queues the reports; the pipeline hands each to the partition task that owns the event —
//! the task of the `raw` partition its key `tenant/entity` maps to (Kafka's murmur2
//! partitioner, as producers use) — as part of the same durable absorb step as budget shares.
//! Applying a report is idempotent per event (see [`crate::caps::ledger`]), so re-reading the
//! topic from the beginning after a restart counts nothing twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::ClientConfig;
use schemas::avro::unframe;
use schemas::records::UsageRecord;
use schemas::registry::Decoder;

use crate::error::ProcessorError;

/// The partition Kafka's default partitioner (murmur2, as librdkafka's `murmur2_random`)
/// assigns to `key` among `partitions`.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff;
    (hash % partitions.max(1) as u32) as i32
}

/// A report with the key it was written under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub key: Vec<u8>,
    pub usage: UsageRecord,
}

#[derive(Default)]
pub struct UsageView {
    queue: Mutex<Vec<Report>>,
    stop: AtomicBool,
}

impl UsageView {
    pub fn start(
        client: ClientConfig,
        topic: &str,
        registry: Option<String>,
    ) -> Result<Arc<Self>, ProcessorError> {
        let consumer = crate::budget_view::read_all(client, topic)?;
        let decoder = registry.map(|url| Decoder::new(&url));
        let runtime = tokio::runtime::Handle::current();
        let view = Arc::new(Self::default());
        let weak = Arc::downgrade(&view);
        std::thread::Builder::new()
            .name("usage-view".into())
            .spawn(move || loop {
                let Some(view) = weak.upgrade() else { return };
                if view.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let bytes = message.payload().unwrap_or_default();
                let usage = match (unframe(bytes), &decoder) {
                    (Some(_), Some(decoder)) => {
                        let Some(json) = decode_waiting(&runtime, decoder, bytes, &view) else {
                            return;
                        };
                        json.and_then(|json| serde_json::from_value::<UsageRecord>(json).ok())
                    }
                    _ => serde_json::from_slice::<UsageRecord>(bytes).ok(),
                };
                match usage {
                    Some(usage) => view.queue.lock().expect("usage lock").push(Report {
                        key: message.key().unwrap_or_default().to_vec(),
                        usage,
                    }),
                    None => {
                        metrics::counter!("hookstream_processor_usage_unreadable_total")
                            .increment(1);
                        tracing::warn!(
                            partition = message.partition(),
                            offset = message.offset(),
                            "unreadable usage report skipped"
                        );
                    }
                }
            })
            .map_err(|e| ProcessorError::Startup(format!("usage view thread: {e}")))?;
        Ok(view)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.lock().expect("usage lock").is_empty()
    }

    /// Takes the queued reports that `keep` accepts, leaving the others queued.
    pub fn take(&self, keep: impl Fn(&Report) -> bool) -> Vec<Report> {
        let mut queue = self.queue.lock().expect("usage lock");
        let (taken, left): (Vec<Report>, Vec<Report>) = queue.drain(..).partition(keep);
        *queue = left;
        taken
    }
}

/// Decodes an Avro report, waiting out a registry that cannot be reached (reports after it
/// wait too: none is skipped for that). `Some(None)`: the value itself is undecodable;
/// `None`: the view was dropped meanwhile.
fn decode_waiting(
    runtime: &tokio::runtime::Handle,
    decoder: &Decoder,
    bytes: &[u8],
    view: &Arc<UsageView>,
) -> Option<Option<serde_json::Value>> {
    // The reading thread holds the last reference once the processor let go of the view.
    let dropped = || view.stop.load(Ordering::Relaxed) || Arc::strong_count(view) == 1;
    let mut backoff = Duration::from_millis(200);
    loop {
        match runtime.block_on(decoder.decode(bytes)) {
            Ok(json) => return Some(Some(json)),
            Err(error) if error.is_retriable() => {
                metrics::counter!("hookstream_processor_usage_decode_retries_total").increment(1);
                tracing::warn!(%error, retry_in = ?backoff, "usage reports wait for the schema registry");
            }
            Err(error) => {
                tracing::warn!(%error, "undecodable usage report");
                return Some(None);
            }
        }
        let until = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < until {
            if dropped() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50)); // backoff, checking for stop
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

impl Drop for UsageView {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own test vectors (`UtilsTest.testMurmur2`): `"21"` hashes to -973932308.
    #[test]
    fn partitions_like_kafka() {
        assert_eq!(
            murmur2::murmur2(b"21", murmur2::KAFKA_SEED) as i32,
            -973_932_308
        );
        assert_eq!(
            partition_of(b"21", 3),
            ((-973_932_308i32 as u32 & 0x7fff_ffff) % 3) as i32
        );
    }
}
