//! `--rebuild`: runs a processor under a fresh group id into a fresh set of output topics
//! (`processor.output_prefix`), over exactly the selected records of `raw` (`processor.scope`),
//! leaving the live pipeline alone. The rebuild ends when every selected partition is
//! processed up to its end offset and has released everything it held back; its `state`
//! then equals what the live run derived from the same records.
//!
//! A rebuild is resumable: its group's committed offsets and its state directory persist, so
//! running it again with the same id continues where it stopped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use schemas::config::Config;
use schemas::kafka::{client_config, Role};
use schemas::scope::{OffsetRange, Scope};
use schemas::topics::Topic;
use serde::Serialize;

use crate::count::total;
use crate::progress::Tracker;
use crate::reader;
use crate::select::Selection;
use crate::ReplayError;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rebuilt {
    pub group_id: String,
    pub output_prefix: String,
    pub ranges: BTreeMap<i32, OffsetRange>,
    pub cancelled: bool,
}

/// The configuration of the processor a rebuild runs.
pub fn rebuild_config(
    live: &Config,
    id: &str,
    into: &str,
    scope: Scope,
) -> Result<Config, ReplayError> {
    if id.trim().is_empty() || id.contains(char::is_whitespace) {
        return Err(ReplayError::invalid(
            "the rebuild id must be non-empty, without spaces",
        ));
    }
    let mut config = live.clone();
    config.processor.group_id = format!("{}-rebuild-{id}", live.processor.group_id);
    config.processor.output_prefix = Some(into.to_owned());
    config.processor.partitions = scope
        .ranges
        .iter()
        .flatten()
        .filter(|(_, r)| !r.is_empty())
        .map(|(p, _)| *p)
        .collect();
    config.processor.scope = Some(scope);
    let problems = config.problems();
    if let Some(problem) = problems
        .into_iter()
        .find(|p| p.starts_with("processor.output_prefix"))
    {
        return Err(ReplayError::invalid(format!("--into: {problem}")));
    }
    Ok(config)
}

pub async fn rebuild(
    live: &Config,
    selection: &Selection,
    id: &str,
    into: &str,
    tracker: Arc<Tracker>,
    cancel: Arc<AtomicBool>,
) -> Result<Rebuilt, ReplayError> {
    let raw = live.topics().name(Topic::Raw);
    if selection.topic != raw {
        return Err(ReplayError::invalid(format!(
            "a rebuild reads `{raw}`; to process records of `{}` again, redrive them",
            selection.topic
        )));
    }
    if selection.error.is_some() {
        return Err(ReplayError::invalid(
            "--error selects dead letters; a rebuild reads `raw`",
        ));
    }
    let client = client_config(&live.kafka, Role::Consumer);
    let ranges = {
        let selection = selection.clone();
        tokio::task::spawn_blocking(move || selection.resolve(&reader::consumer(client)?))
            .await
            .map_err(|e| ReplayError::invalid(format!("resolving offsets failed: {e}")))??
    };
    tracker.total.store(total(&ranges), Ordering::Relaxed);
    let scope = Scope {
        filter: selection.filter.clone(),
        ranges: Some(ranges.clone()),
    };
    let config = rebuild_config(live, id, into, scope)?;
    start_at(&config, &raw, &ranges);
    let report = |cancelled| Rebuilt {
        group_id: config.processor.group_id.clone(),
        output_prefix: into.to_owned(),
        ranges: ranges.clone(),
        cancelled,
    };
    if config.processor.partitions.is_empty() {
        return Ok(report(false));
    }
    let options = processor::StartOptions {
        create_topics: true,
        check_topics: true,
        reload: None,
    };
    let mut service = processor::ProcessorService::start(&config, options).await?;
    loop {
        if service.is_finished() {
            service.wait().await?;
            return Err(ReplayError::invalid("the rebuild's processor stopped"));
        }
        let progress = service.progress();
        let mut done = true;
        let mut processed = 0u64;
        for (partition, range) in ranges.iter().filter(|(_, r)| !r.is_empty()) {
            let task = progress.get(partition).cloned().unwrap_or_default();
            let next = task
                .next_offset
                .unwrap_or(range.start)
                .clamp(range.start, range.end);
            processed += (next - range.start) as u64;
            done &= next >= range.end && task.buffered == 0;
        }
        tracker.read.store(processed, Ordering::Relaxed);
        tracker.matched.store(processed, Ordering::Relaxed);
        tracker.written.store(processed, Ordering::Relaxed);
        if done || cancel.load(Ordering::Relaxed) {
            service.stop().await?;
            return Ok(report(!done));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Commits the ranges' start offsets for a rebuild group that has none yet, so it does not
/// read (and skip) everything before them. Best effort: the scope skips them anyway.
fn start_at(config: &Config, raw: &str, ranges: &BTreeMap<i32, OffsetRange>) {
    let mut client = client_config(&config.kafka, Role::Consumer);
    client.set("group.id", &config.processor.group_id);
    let attempt = || -> Result<(), rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = client.create()?;
        let mut wanted = TopicPartitionList::new();
        for partition in ranges.keys() {
            wanted.add_partition(raw, *partition);
        }
        let committed = consumer.committed_offsets(wanted, Duration::from_secs(10))?;
        if committed
            .elements()
            .iter()
            .any(|e| matches!(e.offset(), Offset::Offset(_)))
        {
            return Ok(()); // resuming: the group continues where it stopped
        }
        let mut start = TopicPartitionList::new();
        for (partition, range) in ranges {
            start.add_partition_offset(raw, *partition, Offset::Offset(range.start))?;
        }
        consumer.commit(&start, CommitMode::Sync)
    };
    if let Err(error) = attempt() {
        tracing::info!(%error, "could not commit the rebuild's start offsets; it reads from the beginning and skips what is before them");
    }
}
