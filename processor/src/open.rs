//! Opening a partition task without stopping the loop.
//!
//! On assignment the loop appends the task's fence to the changelog (its epoch), pauses the
//! partition of `raw`, and hands the restore of its store up to that fence
//! ([`crate::restore::open`]) to a blocking thread. The loop keeps polling meanwhile, so the
//! other partitions keep going and the group never sees this instance miss
//! `max.poll.interval.ms`, however long the restore takes. When the restore reports back the
//! task opens, the partition resumes (rewound to the first record fetched but not processed
//! meanwhile) and the task catches up ([`CatchUp`]).
//!
//! A restore whose partition is revoked is cancelled; the partition is not opened here again
//! until that restore has ended (it holds the store's lock). A restore that fails for broker
//! trouble is tried again with backoff ([`crate::retry`]); one that fails for good (history
//! lost, a broken store) leaves its partition paused and `failed` ([`crate::progress`]),
//! counted in `hookstream_processor_task_failures_total`, while the others run on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;
use schemas::topics::Topic;
use tokio::sync::{mpsc, watch};

use crate::changelog;
use crate::consumer::Pipeline;
use crate::error::ProcessorError;
use crate::progress::{report, set_phase, Phase, Restoring};
use crate::restore::{self, Meter, Restored};
use crate::store::StateStore;
use crate::task::PartitionTask;

type Outcome = Result<(StateStore, Restored), ProcessorError>;

/// A restore that reported back.
pub(crate) struct Done {
    partition: i32,
    id: u64,
    outcome: Outcome,
}

struct Opening {
    id: u64,
    epoch: i64,
    meter: Arc<Meter>,
    started: Instant,
    dir: PathBuf,
}

/// The restores running in the background, and partitions that failed to open for good.
pub(crate) struct Openings {
    running: HashMap<i32, Opening>,
    /// Partitions revoked while restoring, by the id of the (cancelled) restore not yet ended.
    cancelled: HashMap<i32, u64>,
    failed: HashMap<i32, String>,
    next_id: u64,
    sender: mpsc::UnboundedSender<Done>,
    receiver: mpsc::UnboundedReceiver<Done>,
    arrived: Vec<Done>,
}

impl Default for Openings {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            running: HashMap::new(),
            cancelled: HashMap::new(),
            failed: HashMap::new(),
            next_id: 0,
            sender,
            receiver,
            arrived: Vec::new(),
        }
    }
}

impl Openings {
    /// Whether the partition's task is being opened, cannot be opened yet, or failed for good.
    pub fn busy(&self, partition: i32) -> bool {
        self.running.contains_key(&partition)
            || self.cancelled.contains_key(&partition)
            || self.failed.contains_key(&partition)
    }

    /// Waits for the next restore to report back.
    pub async fn next(&mut self) {
        if let Some(done) = self.receiver.recv().await {
            self.arrive(done);
        }
    }

    fn arrive(&mut self, done: Done) {
        if self.cancelled.get(&done.partition) == Some(&done.id) {
            self.cancelled.remove(&done.partition);
        } else if self.running.get(&done.partition).map(|o| o.id) == Some(done.id) {
            self.arrived.push(done);
        }
    }

    /// The restores that reported back since the last call, with what they opened.
    fn take(&mut self) -> Vec<(i32, Opening, Outcome)> {
        while let Ok(done) = self.receiver.try_recv() {
            self.arrive(done);
        }
        std::mem::take(&mut self.arrived)
            .into_iter()
            .filter_map(|done| {
                let opening = self.running.remove(&done.partition)?;
                Some((done.partition, opening, done.outcome))
            })
            .collect()
    }

    /// The partition was revoked: its restore, if any, is cancelled.
    pub fn revoke(&mut self, partition: i32) {
        self.failed.remove(&partition);
        self.arrived.retain(|d| d.partition != partition);
        if let Some(opening) = self.running.remove(&partition) {
            opening.meter.cancel();
            self.cancelled.insert(partition, opening.id);
        }
    }
}

/// A newly opened task re-processing what its crashed predecessor may have emitted already:
/// the one batch past the checkpoint that predecessor may have been making durable (at most
/// the window's records, [`crate::task::PartitionTask::catch_up_window`]), bounded by the end
/// of `raw` when the task opened. Until the task is past it, no wall-clock step (idle flush,
/// budget absorb) touches its state, so it re-emits exactly what was emitted; from then on it
/// takes in the other partitions' budget shares like any task, so a backlog is not judged
/// against the shares of the crash.
#[derive(Debug, Clone, Copy)]
pub struct CatchUp {
    until: i64,
    window: i64,
    bounded: bool,
}

impl CatchUp {
    pub fn new(raw_end: i64, checkpoint: Option<i64>, window: i64) -> Self {
        match checkpoint {
            Some(checkpoint) => Self {
                until: raw_end.min(checkpoint.saturating_add(window)),
                window,
                bounded: true,
            },
            None => Self {
                until: raw_end,
                window,
                bounded: false,
            },
        }
    }

    /// A store without a checkpoint learns where its predecessor's batch began from the first
    /// record it processes.
    pub fn first_record(&mut self, offset: i64) {
        if !self.bounded {
            self.until = self.until.min(offset.saturating_add(self.window));
            self.bounded = true;
        }
    }

    /// The `raw` offset the task must reach.
    pub fn until(&self) -> i64 {
        self.until
    }
}

impl Drop for Openings {
    fn drop(&mut self) {
        for opening in self.running.values() {
            opening.meter.cancel();
        }
    }
}

/// What happened to a restore that reported back.
pub(crate) enum Opened {
    /// The task, and the end of its `raw` partition as it opened: what it catches up with.
    Task(Box<PartitionTask>, i64),
    /// Broker trouble: try again later.
    Retry(ProcessorError),
}

impl Pipeline {
    /// Starts opening the task of `partition`: appends its fence, pauses the partition and
    /// starts its restore in the background. False when asked to stop first.
    pub(crate) async fn begin_open(
        &self,
        partition: i32,
        openings: &mut Openings,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, ProcessorError> {
        set_phase(&self.progress, partition, Phase::Opening);
        let fence = changelog::fence(partition);
        let Some(fenced) = self.append(std::slice::from_ref(&fence), stop).await? else {
            return Ok(false);
        };
        let epoch = fenced[0].1;
        self.pause(partition, true)?;
        let meter = Arc::new(Meter::default());
        set_phase(
            &self.progress,
            partition,
            Phase::Restoring {
                restore: Restoring(meter.clone()),
            },
        );
        let raw = self.topics.name(Topic::Raw);
        let dir = self.state_root.join(format!("{raw}-{partition}"));
        openings.next_id += 1;
        let id = openings.next_id;
        let job = {
            let (dir, client, meter) = (dir.clone(), self.restore.clone(), meter.clone());
            let topic = self.topics.name(Topic::Changelog);
            let sender = openings.sender.clone();
            move || {
                let own = restore::Fence {
                    offset: epoch,
                    key: &fence.key,
                };
                let outcome = restore::open(&dir, &client, &topic, partition, own, &meter);
                let _ = sender.send(Done {
                    partition,
                    id,
                    outcome,
                });
            }
        };
        tokio::task::spawn_blocking(job);
        openings.running.insert(
            partition,
            Opening {
                id,
                epoch,
                meter,
                started: Instant::now(),
                dir,
            },
        );
        Ok(true)
    }

    /// The restores that reported back: each opened task, or what to retry. A restore that
    /// failed for good leaves its partition `failed` and paused.
    pub(crate) fn finish_opens(
        &self,
        openings: &mut Openings,
    ) -> Result<Vec<(i32, Opened)>, ProcessorError> {
        let mut opened = Vec::new();
        for (partition, opening, outcome) in openings.take() {
            match outcome
                .and_then(|(store, restored)| self.open_task(partition, &opening, store, restored))
            {
                Ok((task, raw_end)) => {
                    self.pause(partition, false)?;
                    opened.push((partition, Opened::Task(Box::new(task), raw_end)));
                }
                Err(error) if error.is_retriable() => {
                    opened.push((partition, Opened::Retry(error)));
                }
                Err(error) => {
                    metrics::counter!("hookstream_processor_task_failures_total").increment(1);
                    tracing::error!(partition, %error, "the partition task cannot open; its partition stays paused until this is fixed and the processor restarted (the other partitions run on)");
                    set_phase(
                        &self.progress,
                        partition,
                        Phase::Failed {
                            error: error.to_string(),
                        },
                    );
                    openings.failed.insert(partition, error.to_string());
                }
            }
        }
        Ok(opened)
    }

    fn open_task(
        &self,
        partition: i32,
        opening: &Opening,
        store: StateStore,
        restored: Restored,
    ) -> Result<(PartitionTask, i64), ProcessorError> {
        let mut task = PartitionTask::from_store(store, self.settings.clone(), opening.epoch)?;
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
            epoch = opening.epoch,
            checkpoint = ?task.next_offset(),
            restored_batches = restored.batches,
            restored_records = restored.records,
            dropped_incomplete = restored.incomplete,
            ignored_fenced = restored.fenced,
            rebuilt = restored.rebuilt,
            snapshot = ?restored.snapshot,
            seconds = opening.started.elapsed().as_secs_f64(),
            dir = %opening.dir.display(),
            "opened partition task"
        );
        let raw = self.topics.name(Topic::Raw);
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
        Ok((task, raw_end))
    }

    /// Pauses (or resumes) fetching a partition of `raw`.
    fn pause(&self, partition: i32, pause: bool) -> Result<(), ProcessorError> {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topics.name(Topic::Raw), partition);
        if pause {
            self.consumer.pause(&list)?;
        } else {
            self.consumer.resume(&list)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::CatchUp;

    #[test]
    fn a_catch_up_covers_one_batch_past_the_checkpoint_at_most() {
        assert_eq!(CatchUp::new(10_000, Some(1_000), 500).until(), 1_500);
        assert_eq!(CatchUp::new(1_200, Some(1_000), 500).until(), 1_200);
        let mut fresh = CatchUp::new(10_000, None, 500);
        assert_eq!(fresh.until(), 10_000);
        fresh.first_record(40);
        fresh.first_record(900);
        assert_eq!(fresh.until(), 540);
        assert_eq!(
            CatchUp::new(i64::MAX, Some(i64::MAX - 1), 500).until(),
            i64::MAX
        );
    }
}
