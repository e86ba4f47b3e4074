//! Opening a partition task: append its fence to the changelog, restore its store up to it
//! (see [`crate::restore`]), and find the end of its `raw` partition, which the new task
//! catches up with before anything wall-clock driven touches its state.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use schemas::topics::Topic;
use tokio::sync::watch;

use crate::changelog;
use crate::consumer::{report, Pipeline};
use crate::error::ProcessorError;
use crate::restore;
use crate::task::PartitionTask;

impl Pipeline {
    /// Opens the task of `partition`: appends its fence, then restores its store up to it.
    /// None when asked to stop first.
    /// Also returns the end of the `raw` partition as the task opens: what it catches up with.
    pub(crate) async fn open_task(
        &self,
        partition: i32,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<(PartitionTask, i64)>, ProcessorError> {
        let fence = changelog::fence(partition);
        let Some(fenced) = self.append(std::slice::from_ref(&fence), stop).await? else {
            return Ok(None);
        };
        let epoch = fenced[0].1;
        let raw = self.topics.name(Topic::Raw);
        let dir = self.state_root.join(format!("{raw}-{partition}"));
        let topic = self.topics.name(Topic::Changelog);
        let started = Instant::now();
        let (store, restored) = tokio::task::block_in_place(|| {
            let own = restore::Fence {
                offset: epoch,
                key: &fence.key,
            };
            restore::open(&dir, &self.restore, &topic, partition, own)
        })?;
        let mut task = PartitionTask::from_store(store, self.settings.clone(), epoch)?;
        for (origin, reason) in self.refused.lock().expect("refused lock").iter() {
            if origin.0 == partition {
                task.refuse(*origin, reason.clone());
            }
        }
        report(&self.progress, partition, &task);
        metrics::counter!("hookstream_processor_restored_batches_total")
            .increment(restored.batches);
        tracing::info!(
            partition,
            epoch,
            checkpoint = ?task.next_offset(),
            restored_batches = restored.batches,
            restored_records = restored.records,
            dropped_incomplete = restored.incomplete,
            ignored_fenced = restored.fenced,
            rebuilt = restored.rebuilt,
            seconds = started.elapsed().as_secs_f64(),
            dir = %dir.display(),
            "opened partition task"
        );
        let raw_end = tokio::task::block_in_place(|| {
            self.consumer
                .fetch_watermarks(&raw, partition, Duration::from_secs(10))
        })
        .map_or_else(
            |error| {
                // The partition's end, when the consumer reports it, bounds it too.
                tracing::warn!(partition, %error, "no high watermark for the new task: it catches up to the partition's end");
                i64::MAX
            },
            |(_, high)| high,
        );
        Ok(Some((task, raw_end)))
    }
}
