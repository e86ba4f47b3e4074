//! The consumer loop: batch → process → make durable → store.
//!
//! One consumer in the processor group reads `raw`; each assigned partition gets a
//! [`PartitionTask`] with its own RocksDB store, opened as soon as the partition is assigned
//! (its fence appended and its store restored, see [`crate::restore`]) and closed when the
//! partition is revoked. Opening on assignment rather than on the first record matters: a
//! task whose predecessor consumed all of `raw` may still hold events back, and only an open
//! task punctuates (idle flush) to release them.
//!
//! Every turn of the loop takes the records available now (at most `processor.batch_max`),
//! lets each task compute its outputs and store delta (pure and deterministic), punctuates
//! quiet partitions on wall-clock time (idle flush), and makes the batch durable as
//! [`crate::commit`] describes before the tasks' stores are written.
//!
//! A newly opened task first *catches up*: until it has processed what `raw` held when it
//! opened (or what the consumer had fetched when it reached the partition's end, whichever
//! is less), it may be re-processing what a crashed predecessor already emitted, so nothing
//! wall-clock driven (idle flush, budget absorb) touches its state and it re-emits exactly
//! the same records.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use schemas::topics::{Topic, TopicNames};
use tokio::sync::watch;

use crate::assignment::{Fetched, RebalanceContext};
use crate::catalog::SourceCatalog;
use crate::changelog;
use crate::commit::Outcome;
use crate::error::ProcessorError;
use crate::input::decode_borrowed;
use crate::open::{CatchUp, Opened, Openings};
use crate::progress::{self, report, set_phase, Phase, Progress};
use crate::store::{Op, CHANGELOG_NEXT, EPOCH};
use crate::task::{position, Decoded, Flush, PartitionTask, Pending, TaskSettings};
use crate::usage_view::{partition_of, Report};

pub type GroupConsumer = StreamConsumer<RebalanceContext>;

pub struct Pipeline {
    pub consumer: Arc<GroupConsumer>,
    pub producer: FutureProducer,
    pub topics: TopicNames,
    pub catalog: SourceCatalog,
    pub state_root: PathBuf,
    pub batch_max: usize,
    pub settings: TaskSettings,
    pub idle_flush: Duration,
    /// Client settings for reading the changelog when a task opens.
    pub restore: rdkafka::ClientConfig,
    /// Outputs, changelog frames and offsets in one transaction per batch.
    pub exactly_once: bool,
    /// Where each assigned partition's task stands (`/readyz`, a rebuild's progress bar).
    pub progress: Progress,
    /// Other partitions' budget shares (when some tenant has caps), absorbed at most every
    /// `budget_absorb`.
    pub budget: Option<Arc<crate::budget_view::BudgetView>>,
    pub budget_absorb: Duration,
    /// Usage reports (when some tenant has caps), routed to the task owning their event.
    pub usage: Option<Arc<crate::usage_view::UsageView>>,
    /// Partitions of `raw` (`kafka.partitions`), to route usage reports by key.
    pub raw_partitions: i32,
    /// New configurations, taken in between turns ([`crate::live`]).
    pub reload: crate::live::Updates,
    pub running: crate::live::Running,
    /// Inputs whose records the broker refused for good (see [`PartitionTask::refuse`]):
    /// kept across task reopenings, so re-processing sends them to `dlq`.
    pub refused: Mutex<BTreeMap<(i32, i64), String>>,
    /// Partitions whose task waits to open again after broker trouble (`/healthz`).
    pub waiting: crate::retry::Waiting,
    /// When tasks snapshot their stores into the changelog.
    pub snapshots: crate::snapshot::Policy,
    /// Deletes the changelog before each new snapshot (`processor.snapshots.delete_records`).
    pub delete_records: Option<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>>,
}

/// How often an idle loop wakes to see whether a snapshot is due by age.
const SNAPSHOT_CHECK: Duration = Duration::from_secs(60);

impl Pipeline {
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), ProcessorError> {
        let mut tasks: HashMap<i32, PartitionTask> = HashMap::new();
        let mut seq = 0u64;
        let mut absorbed = (0u64, Instant::now());
        // Per newly opened task: how far it re-processes what a crashed predecessor may already
        // have emitted; until then nothing wall-clock driven (idle flush, budget absorb) may
        // change its state: it re-emits the same outputs.
        let mut catching_up: HashMap<i32, CatchUp> = HashMap::new();
        let mut fetched = Fetched::default();
        let mut reopen = crate::retry::Reopen::new(self.waiting.clone());
        let mut openings = Openings::default();
        loop {
            self.reconfigure(&mut tasks);
            let holding = tasks.values().any(|t| t.buffered() > 0);
            let flush_unfinished = tasks.values().any(PartitionTask::flush_pending);
            // With caps, the loop also wakes every `budget_absorb` to take in new budget shares
            // (and raise their alerts) without waiting for input.
            let shares_waiting = self.budget.is_some() || self.usage.is_some();
            let context = self.consumer.context();
            let now = Instant::now();
            let unopened = context
                .assigned()
                .iter()
                .any(|p| !tasks.contains_key(p) && !openings.busy(*p) && reopen.due(*p, now));
            let retry_at = reopen.next_attempt().map(tokio::time::Instant::from_std);
            let turn = Instant::now();
            let first = tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = std::future::ready(()), if unopened || flush_unfinished => None,
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => None,
                _ = context.changed.notified() => None,
                _ = openings.next() => None,
                message = self.consumer.recv() => Some(message),
                _ = tokio::time::sleep(self.idle_flush), if holding => None,
                _ = tokio::time::sleep(self.budget_absorb), if shares_waiting => None,
                _ = tokio::time::sleep(SNAPSHOT_CHECK), if !tasks.is_empty() => None,
            };
            // Decoded as they are handed over (no copy of the record first).
            let mut messages: Vec<Decoded> = Vec::new();
            match first {
                Some(Ok(message)) => take(&mut fetched, &mut messages, &message),
                Some(Err(error)) => {
                    fetched.error(error);
                }
                // A flush step does not wait for input, but other partitions' input that is
                // already here is taken along.
                None if flush_unfinished => {
                    if let Some(Ok(message)) = self.consumer.recv().now_or_never() {
                        take(&mut fetched, &mut messages, &message);
                    }
                }
                None => {}
            }
            while !messages.is_empty() && messages.len() < self.batch_max {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => take(&mut fetched, &mut messages, &message),
                    Some(Err(error)) => {
                        if !fetched.error(error) {
                            break;
                        }
                    }
                    None => break,
                }
            }
            for partition in context.take_revoked() {
                if let Some(usage) = &self.usage {
                    usage.unfollow(partition);
                }
                reopen.forget(partition);
                fetched.forget(partition);
                openings.revoke(partition);
                progress::remove(&self.progress, partition);
                if tasks.remove(&partition).is_some() {
                    tracing::info!(partition, "closed partition task");
                }
            }
            let gathered = turn.elapsed();
            let received = messages.len();
            let mut by_partition: BTreeMap<i32, Vec<Decoded>> = BTreeMap::new();
            for record in messages {
                let (partition, _) = position(&record);
                if context.is_assigned(partition) {
                    by_partition.entry(partition).or_default().push(record);
                }
            }
            // Every record here is of an assigned partition (filtered above).
            for partition in context.assigned() {
                let idle = !tasks.contains_key(&partition) && !openings.busy(partition);
                if !idle || !reopen.due(partition, Instant::now()) {
                    continue;
                }
                match self.begin_open(partition, &mut openings, &mut stop).await {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(error) if error.is_retriable() => {
                        self.waiting_to_open(&mut reopen, partition, &error);
                    }
                    Err(error) => return Err(error),
                }
            }
            for (partition, opened) in self.finish_opens(&mut openings)? {
                match opened {
                    Opened::Task(task, raw_end) => {
                        if let Some(usage) = &self.usage {
                            usage.follow(partition, task.usage_next()?);
                        }
                        if let Some(offset) = reopen.opened(partition) {
                            self.rewind(&[(partition, offset)])?;
                            // What was fetched in this turn is fetched again after the rewind.
                            by_partition.remove(&partition);
                        }
                        let catch_up =
                            CatchUp::new(raw_end, task.next_offset(), task.catch_up_window()?);
                        set_phase(
                            &self.progress,
                            partition,
                            Phase::CatchingUp {
                                until: catch_up.until(),
                            },
                        );
                        catching_up.insert(partition, catch_up);
                        tasks.insert(partition, *task);
                    }
                    Opened::Retry(error) => self.waiting_to_open(&mut reopen, partition, &error),
                }
            }
            // Partitions whose task could not open: their records are fetched again later.
            by_partition.retain(|partition, records| {
                let open = tasks.contains_key(partition);
                if !open {
                    if let Some(first) = records.first() {
                        reopen.skipped(*partition, position(first).1);
                    }
                }
                open
            });
            catching_up.retain(|p, catch_up| {
                let until = catch_up.until();
                let until = fetched.end.get(p).map_or(until, |end| until.min(*end));
                let behind = tasks
                    .get(p)
                    .is_some_and(|t| t.next_offset().unwrap_or(0) < until);
                if !behind && tasks.contains_key(p) {
                    set_phase(&self.progress, *p, Phase::Running);
                }
                behind
            });
            // Between batches: snapshots due by size or age (their records go before this
            // turn's, which the tasks have not processed yet).
            if !self.write_snapshots(&mut tasks, &mut stop).await? {
                break;
            }
            let first_offsets: Vec<(i32, i64)> = by_partition
                .iter()
                .filter_map(|(p, records)| records.first().map(|r| (*p, position(r).1)))
                .collect();
            if let Some(view) = &self.budget {
                let version = view.version();
                // A task absorbs only once it has caught up (see `catching_up`).
                let ready = |p: &i32| tasks.contains_key(p) && !catching_up.contains_key(p);
                let reports_waiting = self
                    .usage
                    .as_ref()
                    .is_some_and(|u| tasks.keys().filter(|p| ready(p)).any(|p| u.waiting(*p)));
                if (version != absorbed.0 || reports_waiting)
                    && absorbed.1.elapsed() >= self.budget_absorb
                {
                    // Failpoint: without absorption each task judges alone (the caps e2e shows
                    // its bound fails then).
                    let shares = match fail::eval("budget-absorb-off", |_| ()) {
                        Some(()) => Vec::new(),
                        None => view.snapshot(),
                    };
                    let mut intents: Vec<(i32, Pending)> = Vec::new();
                    let mut alerts = Vec::new();
                    for (partition, task) in tasks.iter().filter(|(p, _)| ready(p)) {
                        // This partition's reports (`usage` is co-partitioned with `raw`),
                        // from the task's position: a step that fails reopens the task,
                        // which reads them again from its stored position.
                        let own = self.usage.as_ref().map_or_else(Vec::new, |usage| {
                            usage.take(*partition, MAX_REPORTS_PER_STEP)
                        });
                        count_misrouted(&own, self.raw_partitions);
                        let pending =
                            task.absorb(*partition, &shares, &own, &self.catalog, &mut alerts)?;
                        if !pending.ops.is_empty() {
                            intents.push((*partition, pending));
                        }
                    }
                    if !intents.is_empty() {
                        match self
                            .durable(
                                &mut tasks,
                                &mut intents,
                                &alerts,
                                &first_offsets,
                                &mut seq,
                                &mut stop,
                            )
                            .await?
                        {
                            Durable::Yes => {}
                            Durable::Stopped => break,
                            Durable::No => continue,
                        }
                    }
                    // Tasks still catching up took in nothing: the same shares are due to them.
                    let taken = if catching_up.is_empty() {
                        version
                    } else {
                        absorbed.0
                    };
                    absorbed = (taken, Instant::now());
                }
            }
            let started = Instant::now();
            // Punctuate on wall clock: sources quiet for `idle_flush` release what they hold,
            // once the decision to do so is durable (see `PartitionTask::flush_intent`). A
            // flush goes in bounded steps, each a durable turn of its own: the task takes no
            // input until it is done (its records are fetched again), so a crash cannot
            // change where a step falls between records.
            let mut flushing: Vec<i32> = tasks
                .iter()
                .filter(|(_, task)| task.flush_pending())
                .map(|(partition, _)| *partition)
                .collect();
            let mut intents: Vec<(i32, Pending)> = Vec::new();
            // Only a partition the consumer has read to its end: with a backlog, "no record for
            // `idle_flush`" says how fast this instance reads, not that a source went quiet, and
            // its next records may be in the backlog (stream time releases them as they come).
            for (partition, task) in tasks.iter().filter(|(p, t)| {
                !catching_up.contains_key(*p) && !t.flush_pending() && fetched.at_end(**p)
            }) {
                let quiet = task.quiet_sources(started, self.idle_flush);
                if quiet.is_empty() {
                    continue;
                }
                let flush = if task.all_quiet(&quiet) {
                    Flush::All
                } else {
                    Flush::Sources(quiet)
                };
                intents.push((*partition, task.flush_intent(&flush)));
            }
            if !intents.is_empty() {
                let durable = self
                    .durable(&mut tasks, &mut intents, &[], &[], &mut seq, &mut stop)
                    .await?;
                match durable {
                    Durable::Yes => flushing.extend(intents.iter().map(|(p, _)| *p)),
                    Durable::Stopped => break,
                    Durable::No => {}
                }
            }
            let mut outputs = Vec::new();
            let mut pending: Vec<(i32, Pending)> = Vec::new();
            let partitions_in_turn = by_partition.len();
            let mut jobs = Vec::with_capacity(by_partition.len());
            for (partition, records) in by_partition {
                let task = tasks
                    .get(&partition)
                    .filter(|_| !flushing.contains(&partition));
                let Some(task) = task else {
                    // Flushing, or closed by a failed flush intent: fetched again later.
                    if let Some(first) = records.first() {
                        self.rewind(&[(partition, position(first).1)])?;
                    }
                    continue;
                };
                if let (Some(catch_up), Some(first)) =
                    (catching_up.get_mut(&partition), records.first())
                {
                    catch_up.first_record(position(first).1);
                }
                jobs.push((partition, task, records));
            }
            for (partition, processed) in process_all(jobs, &self.catalog) {
                let (batch, records) = processed?;
                record_stats(&batch.stats);
                outputs.extend(records);
                pending.push((partition, batch));
            }
            for partition in flushing {
                if let Some(task) = tasks.get(&partition) {
                    let flushed = task.flush(&self.catalog, &mut outputs)?;
                    record_stats(&flushed.stats);
                    pending.push((partition, flushed));
                }
            }
            pending.retain(|(partition, batch)| {
                !batch.ops.is_empty() && tasks.contains_key(partition)
            });
            if pending.is_empty() {
                continue;
            }
            match self
                .durable(
                    &mut tasks,
                    &mut pending,
                    &outputs,
                    &first_offsets,
                    &mut seq,
                    &mut stop,
                )
                .await?
            {
                Durable::Yes => {}
                Durable::Stopped => break,
                Durable::No => continue,
            }
            tracing::debug!(records = received, partitions = partitions_in_turn, ?gathered, before_batch = ?started.duration_since(turn), turn = ?turn.elapsed(), "turn");
            metrics::histogram!("hookstream_processor_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("hookstream_processor_batch_records").record(received as f64);
        }
        Ok(())
    }

    /// Makes `pending` durable with `outputs` (see [`crate::commit`]), then writes each task's
    /// store. On failure the tasks are closed (and the consumer rewound to `first_offsets`
    /// when the attempt was a transaction).
    async fn durable(
        &self,
        tasks: &mut HashMap<i32, PartitionTask>,
        pending: &mut [(i32, Pending)],
        outputs: &[crate::output::OutRecord],
        first_offsets: &[(i32, i64)],
        seq: &mut u64,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Durable, ProcessorError> {
        let zombie = match self.zombie(tasks, pending) {
            Ok(zombie) => zombie,
            Err(error) if error.is_retriable() => {
                // The broker cannot say: the step is not made durable; its tasks reopen
                // (with backoff) and do it again once the broker answers.
                tracing::warn!(%error, "cannot check the changelog's end before a flush or absorb step; closing the step's tasks to reopen them");
                for (partition, _) in pending.iter() {
                    tasks.remove(partition);
                }
                self.rewind(first_offsets)?;
                return Ok(Durable::No);
            }
            Err(error) => return Err(error),
        };
        if let Some(partition) = zombie {
            tracing::warn!(partition, "another incarnation appended to this task's changelog partition: this instance lost the partition; closing the step's tasks before they produce");
            metrics::counter!("hookstream_processor_fenced_steps_total").increment(1);
            for (partition, _) in pending.iter() {
                tasks.remove(partition);
            }
            self.rewind(first_offsets)?;
            return Ok(Durable::No);
        }
        let raw = self.topics.name(Topic::Raw);
        let mut frames = Vec::new();
        let mut last_frame = Vec::with_capacity(pending.len());
        let mut frame_bytes = Vec::with_capacity(pending.len());
        let mut offsets = TopicPartitionList::new();
        for (partition, batch) in pending.iter() {
            *seq += 1;
            let epoch = tasks[partition].epoch();
            let first = frames.len();
            frames.extend(changelog::frames(*partition, epoch, *seq, &batch.ops));
            last_frame.push(frames.len() - 1);
            frame_bytes.push(
                frames[first..]
                    .iter()
                    .map(|f| f.value.as_ref().map_or(0, Vec::len) as u64)
                    .sum::<u64>(),
            );
            if let Some(next) = batch.next_offset {
                offsets.add_partition_offset(&raw, *partition, Offset::Offset(next))?;
            }
        }
        let positions = match self.make_durable(outputs, &frames, &offsets, stop).await {
            Outcome::Committed(positions) => positions,
            Outcome::Stopped => return Ok(Durable::Stopped),
            Outcome::Refused(refusals) => {
                // Only a record derived from one input can be dead-lettered; anything else
                // refused for good is a limit of the broker below the configured one.
                if let Some(blameless) = refusals.iter().find(|r| r.origin.is_none()) {
                    return Err(ProcessorError::Refused {
                        topic: self.topics.name(blameless.topic),
                        reason: blameless.reason.clone(),
                    });
                }
                let mut refused = self.refused.lock().expect("refused lock");
                for refusal in refusals {
                    let origin = refusal.origin.expect("checked above");
                    tracing::warn!(partition = origin.0, offset = origin.1, topic = %self.topics.name(refusal.topic), reason = %refusal.reason, "the broker refused a record for good; its input goes to the dead-letter topic and the batch is processed again");
                    refused.entry(origin).or_insert(refusal.reason);
                }
                drop(refused);
                for (partition, _) in pending.iter() {
                    tasks.remove(partition);
                }
                self.rewind(first_offsets)?;
                return Ok(Durable::No);
            }
            Outcome::Failed { rewind } => {
                for (partition, _) in pending.iter() {
                    tasks.remove(partition);
                }
                if rewind {
                    self.rewind(first_offsets)?;
                }
                return Ok(Durable::No);
            }
        };
        let now = crate::restore::now_ms();
        for (((partition, batch), last), bytes) in
            pending.iter_mut().zip(last_frame).zip(frame_bytes)
        {
            let task = tasks.get_mut(partition).expect("pending tasks are open");
            let (_, frame_offset) = positions[last];
            batch.ops.push(Op::meta(CHANGELOG_NEXT, frame_offset + 1));
            batch.ops.push(Op::meta(EPOCH, task.epoch()));
            batch.ops.push(task.changelog_written(bytes, now));
            task.commit(batch)?;
            report(&self.progress, *partition, task);
        }
        Ok(Durable::Yes)
    }
}

impl Pipeline {
    /// Opening `partition` failed for broker trouble: it is tried again with backoff.
    fn waiting_to_open(
        &self,
        reopen: &mut crate::retry::Reopen,
        partition: i32,
        error: &ProcessorError,
    ) {
        reopen.failed(partition, error, Instant::now());
        set_phase(
            &self.progress,
            partition,
            Phase::Waiting {
                error: error.to_string(),
            },
        );
    }

    /// A task of `pending` that commits no `raw` offsets (a flush or absorb step: no failed
    /// offset commit would tell a zombie) and whose changelog partition grew since its own
    /// last append: another incarnation opened it. Transactions fence zombies in
    /// exactly-once mode (where commit markers also take offsets), so it is not checked there.
    fn zombie(
        &self,
        tasks: &HashMap<i32, PartitionTask>,
        pending: &[(i32, Pending)],
    ) -> Result<Option<i32>, ProcessorError> {
        if self.exactly_once {
            return Ok(None);
        }
        let topic = self.topics.name(Topic::Changelog);
        for (partition, _) in pending.iter().filter(|(_, b)| b.next_offset.is_none()) {
            let (_, high) = tokio::task::block_in_place(|| {
                self.consumer
                    .fetch_watermarks(&topic, *partition, Duration::from_secs(10))
            })?;
            if high > tasks[partition].changelog_end() {
                return Ok(Some(*partition));
            }
        }
        Ok(None)
    }

    /// Moves the consumer back to these (partition, offset)s of `raw`: their records are
    /// fetched again (a task's checkpoint skips what it had applied).
    fn rewind(&self, positions: &[(i32, i64)]) -> Result<(), ProcessorError> {
        let raw = self.topics.name(Topic::Raw);
        for (partition, offset) in positions {
            self.consumer.seek(
                &raw,
                *partition,
                Offset::Offset(*offset),
                Duration::from_secs(10),
            )?;
        }
        Ok(())
    }
}

/// A record the consumer handed over, noted and decoded (no copy of the record first).
fn take(fetched: &mut Fetched, records: &mut Vec<Decoded>, message: &BorrowedMessage<'_>) {
    fetched.received(message.partition(), message.offset());
    records.push(decode_borrowed(message));
}

type Processed = Result<(Pending, Vec<crate::output::OutRecord>), ProcessorError>;

/// Each partition's records through its task, the tasks side by side on their own threads
/// (they share nothing; each reads its own store), results in partition order, as if one
/// after the other.
fn process_all(
    jobs: Vec<(i32, &PartitionTask, Vec<Decoded>)>,
    catalog: &SourceCatalog,
) -> Vec<(i32, Processed)> {
    let run = |task: &PartitionTask, records: Vec<Decoded>| -> Processed {
        let mut out = Vec::new();
        let pending = task.process(records, catalog, &mut out)?;
        Ok((pending, out))
    };
    if jobs.len() <= 1 {
        return jobs
            .into_iter()
            .map(|(partition, task, records)| (partition, run(task, records)))
            .collect();
    }
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let mut jobs = jobs.into_iter();
            let (first, task, records) = jobs.next().expect("more than one job");
            let others: Vec<_> = jobs
                .map(|(partition, task, records)| {
                    (partition, scope.spawn(move || run(task, records)))
                })
                .collect();
            let mut done = vec![(first, run(task, records))];
            for (partition, handle) in others {
                let processed = handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                done.push((partition, processed));
            }
            done
        })
    })
}

enum Durable {
    Yes,
    No,
    Stopped,
}

/// Registers the per-tenant counters of every configured tenant at zero, so dashboards and
/// alert rules see a series before the tenant's first event.
pub fn register_tenant_counters<'a>(tenants: impl IntoIterator<Item = &'a str>) {
    metrics::counter!("hookstream_processor_commit_failures_total").increment(0);
    metrics::counter!("hookstream_processor_task_failures_total").increment(0);
    for tenant in tenants {
        count_tenant(tenant, &crate::task::TenantStats::default());
    }
}

fn count_tenant(tenant: &str, counts: &crate::task::TenantStats) {
    let tenant = if tenant.is_empty() { "unknown" } else { tenant };
    let counters = [
        ("hookstream_processor_events_total", counts.events),
        ("hookstream_processor_duplicates_total", counts.duplicates),
        ("hookstream_processor_late_total", counts.late),
        ("hookstream_processor_deferred_total", counts.deferred),
        (
            "hookstream_processor_dead_letters_total",
            counts.dead_letters,
        ),
    ];
    for (name, count) in counters {
        metrics::counter!(name, "tenant" => tenant.to_owned()).increment(count as u64);
    }
}

fn record_stats(stats: &crate::task::BatchStats) {
    for (tenant, counts) in &stats.tenants {
        count_tenant(tenant, counts);
    }
    metrics::counter!("hookstream_processor_released_total").increment(stats.released as u64);
    metrics::counter!("hookstream_processor_dedupe_expired_total").increment(stats.expired as u64);
    metrics::counter!("hookstream_processor_tombstones_expired_total")
        .increment(stats.tombstones_expired as u64);
    metrics::counter!("hookstream_processor_usage_expired_total")
        .increment(stats.usage_expired as u64);
    metrics::counter!("hookstream_processor_out_of_scope_total")
        .increment(stats.out_of_scope as u64);
    if stats.dead_letters > 0 {
        tracing::warn!(
            count = stats.dead_letters,
            "records sent to the dead-letter topic"
        );
    }
}

/// Most `usage` reports one task applies in one absorb step (the durable set stays bounded).
const MAX_REPORTS_PER_STEP: usize = 5_000;

/// Reports whose key maps to another partition than the one they were written to: their
/// producer did not use Kafka's default partitioner, so they cannot replace their event's
/// estimate (they count as reports of unknown events, in the task that read them).
fn count_misrouted(reports: &[Report], partitions: i32) {
    let misrouted = reports
        .iter()
        .filter(|r| r.usage.is_some() && partition_of(&r.key, partitions) != r.partition)
        .count();
    if misrouted > 0 {
        metrics::counter!("hookstream_processor_usage_misrouted_total").increment(misrouted as u64);
        tracing::warn!(misrouted, "usage reports keyed to another partition than the one they were written to (use the default murmur2 partitioner)");
    }
}
