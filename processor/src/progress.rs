//! Where each partition task stands: for `/healthz` and `/readyz`, the
//! `hookstream_processor_partition_phase` gauges, and a rebuild's progress bar.
//!
//! A partition assigned to this instance goes through these phases:
//!
//! - `opening`: its fence is being appended to the changelog;
//! - `restoring`: its store is read back from the changelog in the background (the partition
//!   is paused meanwhile; the other partitions and the group membership carry on), with the
//!   stage, the records left in that stage and what was read so far;
//! - `catching_up`: processing what `raw` held when it opened (`until`), during which nothing
//!   wall-clock driven touches its state;
//! - `running`;
//! - `waiting`: opening failed for broker trouble and is retried with backoff;
//! - `failed`: it cannot open (history lost, a broken local store) until an operator acts;
//!   the partition stays paused and the other partitions are unaffected.
//!
//! The instance is ready (`/readyz` 200) when every partition it owns is `running`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Serialize, Serializer};

use crate::restore::Meter;
use crate::task::PartitionTask;

/// Per partition of `raw` assigned here: its phase, and the task's next offset and how many
/// events it holds back as of its last durable batch.
pub type Progress = Arc<Mutex<BTreeMap<i32, TaskProgress>>>;

#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskProgress {
    #[serde(flatten)]
    pub phase: Phase,
    pub next_offset: Option<i64>,
    pub buffered: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Opening,
    Restoring {
        #[serde(flatten)]
        restore: Restoring,
    },
    CatchingUp {
        until: i64,
    },
    Running,
    Waiting {
        error: String,
    },
    Failed {
        error: String,
    },
}

impl Phase {
    pub const NAMES: [&'static str; 6] = [
        "opening",
        "restoring",
        "catching_up",
        "running",
        "waiting",
        "failed",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Phase::Opening => "opening",
            Phase::Restoring { .. } => "restoring",
            Phase::CatchingUp { .. } => "catching_up",
            Phase::Running => "running",
            Phase::Waiting { .. } => "waiting",
            Phase::Failed { .. } => "failed",
        }
    }
}

/// A restore in progress, reported as its [`Meter`] reads when serialized.
#[derive(Debug, Clone)]
pub struct Restoring(pub Arc<Meter>);

impl Serialize for Restoring {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.progress().serialize(serializer)
    }
}

/// Sets a partition's phase (and its `hookstream_processor_partition_phase` gauges).
pub fn set_phase(progress: &Progress, partition: i32, phase: Phase) {
    let label = partition.to_string();
    if matches!(phase, Phase::Running) {
        metrics::gauge!("hookstream_processor_restore_remaining_records", "partition" => label.clone())
            .set(0.0);
    }
    for name in Phase::NAMES {
        let value = if name == phase.name() { 1.0 } else { 0.0 };
        metrics::gauge!("hookstream_processor_partition_phase", "partition" => label.clone(), "phase" => name)
            .set(value);
    }
    progress
        .lock()
        .expect("progress lock")
        .entry(partition)
        .or_default()
        .phase = phase;
}

/// The partition left this instance.
pub fn remove(progress: &Progress, partition: i32) {
    let label = partition.to_string();
    for name in Phase::NAMES {
        metrics::gauge!("hookstream_processor_partition_phase", "partition" => label.clone(), "phase" => name)
            .set(0.0);
    }
    progress.lock().expect("progress lock").remove(&partition);
}

/// Records the task's position after a durable batch.
pub fn report(progress: &Progress, partition: i32, task: &PartitionTask) {
    let mut progress = progress.lock().expect("progress lock");
    let entry = progress.entry(partition).or_default();
    entry.next_offset = task.next_offset();
    entry.buffered = task.buffered();
}

/// Whether every partition here is running (`/readyz`).
pub fn ready(partitions: &BTreeMap<i32, TaskProgress>) -> bool {
    partitions
        .values()
        .all(|p| matches!(p.phase, Phase::Running))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_serialize_flat_with_live_restore_progress() {
        let progress = Progress::default();
        let meter = Arc::new(Meter::default());
        set_phase(
            &progress,
            3,
            Phase::Restoring {
                restore: Restoring(meter.clone()),
            },
        );
        set_phase(&progress, 4, Phase::Running);
        let json = serde_json::to_value(&*progress.lock().unwrap()).unwrap();
        assert_eq!(json["3"]["phase"], "restoring");
        assert_eq!(json["3"]["records"], 0);
        assert_eq!(json["4"]["phase"], "running");
        assert!(!ready(&progress.lock().unwrap()));
        set_phase(&progress, 3, Phase::CatchingUp { until: 9 });
        assert_eq!(
            serde_json::to_value(&progress.lock().unwrap()[&3]).unwrap()["until"],
            9
        );
        set_phase(&progress, 3, Phase::Running);
        assert!(ready(&progress.lock().unwrap()));
        remove(&progress, 3);
        assert!(progress.lock().unwrap().get(&3).is_none());
    }
}
