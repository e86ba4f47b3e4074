//! Writing due snapshots between batches, and deleting the changelog they made redundant.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::{admin::AdminOptions, Offset};
use schemas::topics::Topic;
use tokio::sync::watch;

use crate::consumer::Pipeline;
use crate::error::ProcessorError;
use crate::restore::now_ms;
use crate::task::PartitionTask;

impl Pipeline {
    /// Writes a snapshot for every task that is due one (see [`super::Policy`]). False when
    /// asked to stop first.
    pub(crate) async fn write_snapshots(
        &self,
        tasks: &mut HashMap<i32, PartitionTask>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, ProcessorError> {
        let now = now_ms();
        let mut due: Vec<i32> = tasks
            .iter()
            .filter(|(_, task)| self.snapshots.due(&task.snapshot_state(), now))
            .map(|(partition, _)| *partition)
            .collect();
        due.sort_unstable();
        for partition in due {
            let started = Instant::now();
            let task = tasks.get_mut(&partition).expect("due tasks are open");
            let (records, state) = task.snapshot(partition, now)?;
            if fail::eval("snapshot-torn", |_| ()).is_some() && records.len() > 1 {
                // Test support: a snapshot cut short, and the process stuck until killed.
                tracing::warn!(partition, chunks = records.len(), "failpoint snapshot-torn: wrote the first chunk of a snapshot; hanging until killed");
                self.append(&records[..1], stop).await?;
                std::future::pending::<()>().await;
            }
            let Some(written) = self.append(&records, stop).await? else {
                return Ok(false);
            };
            let end = written.last().map_or(task.changelog_end(), |(_, o)| o + 1);
            task.snapshot_written(state, end)?;
            metrics::counter!("hookstream_processor_snapshots_total").increment(1);
            metrics::counter!("hookstream_processor_snapshot_bytes_total").increment(state.bytes);
            tracing::info!(
                partition,
                position = state.position,
                bytes = state.bytes,
                chunks = records.len(),
                last_offset = written.last().map(|(_, o)| *o),
                seconds = started.elapsed().as_secs_f64(),
                "wrote a snapshot"
            );
            self.delete_before(partition, state.position).await;
        }
        Ok(true)
    }

    /// With `processor.snapshots.delete_records`, deletes the changelog partition before
    /// `position` (a complete snapshot covers it). A failure only leaves more to retention.
    async fn delete_before(&self, partition: i32, position: i64) {
        let Some(admin) = &self.delete_records else {
            return;
        };
        let topic = self.topics.name(Topic::Changelog);
        let mut offsets = TopicPartitionList::new();
        if let Err(error) =
            offsets.add_partition_offset(&topic, partition, Offset::Offset(position))
        {
            tracing::warn!(partition, %error, "cannot name the changelog records to delete");
            return;
        }
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        match admin.delete_records(&offsets, &options).await {
            Ok(_) => tracing::debug!(partition, before = position, "deleted changelog records"),
            Err(error) => {
                metrics::counter!("hookstream_processor_changelog_delete_failures_total")
                    .increment(1);
                tracing::warn!(partition, %error, "could not delete changelog records a snapshot covers; time retention removes them later");
            }
        }
    }
}
