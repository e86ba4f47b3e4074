//! The processor's view of the `budget` topic: a thread reads every partition of it from the
//! beginning and keeps the latest [`BudgetShare`] per tenant and partition. Partition tasks
//! take changes into their stores through [`crate::task::PartitionTask::absorb`], a durable
//! step, at most every `processor.budget_absorb_ms`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::caps::BudgetShare;
use crate::error::ProcessorError;

#[derive(Default)]
pub struct BudgetView {
    shares: Mutex<BTreeMap<String, BudgetShare>>,
    version: AtomicU64,
    stop: AtomicBool,
}

impl BudgetView {
    /// Starts reading `topic`; the thread ends when the view is dropped by everyone else.
    pub fn start(client: ClientConfig, topic: &str) -> Result<Arc<Self>, ProcessorError> {
        let consumer = read_all(client, topic)?;
        let view = Arc::new(Self::default());
        let weak = Arc::downgrade(&view);
        std::thread::Builder::new()
            .name("budget-view".into())
            .spawn(move || loop {
                let Some(view) = weak.upgrade() else { return };
                if view.stop.load(Ordering::Relaxed) {
                    return;
                }
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => {
                        match message.payload().map(serde_json::from_slice::<BudgetShare>) {
                            Some(Ok(share)) => {
                                view.shares
                                    .lock()
                                    .expect("budget lock")
                                    .insert(share.key(), share);
                                view.version.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => tracing::warn!("unreadable budget record skipped"),
                        }
                    }
                    Some(Err(error)) => tracing::debug!(%error, "budget view"),
                    None => {}
                }
            })
            .map_err(|e| ProcessorError::Startup(format!("budget view thread: {e}")))?;
        Ok(view)
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Vec<BudgetShare> {
        self.shares
            .lock()
            .expect("budget lock")
            .values()
            .cloned()
            .collect()
    }
}

/// A consumer of every partition of `topic` from the beginning, outside any group's
/// assignment and committing nothing (the side inputs `budget` and `usage`).
pub fn read_all(mut client: ClientConfig, topic: &str) -> Result<BaseConsumer, ProcessorError> {
    client
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // Part of the caps' over-admission bound (docs/caps.md): a share waits at most this
        // long in the broker before this reader sees it.
        .set("fetch.wait.max.ms", "100");
    let consumer: BaseConsumer = client.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

impl Drop for BudgetView {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
