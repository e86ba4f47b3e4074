//! Restore: the changelog is the source of truth for every state store; a local RocksDB is a
//! cache of it up to `changelog_next`.
//!
//! When a partition task opens it appends a fence to its changelog partition (see
//! [`crate::changelog`]) and [`open`] brings the local store up to that fence: from the store's
//! `changelog_next`, or, for a store that is new because the partition moved here or the disk
//! was lost, from the latest complete snapshot ([`snapshot`]) and the frames after it. Only a
//! changelog that never had a snapshot is read from its beginning; one whose beginning was
//! deleted and that holds no complete snapshot has lost history, and the task refuses to
//! open ([`ProcessorError::HistoryLost`]) rather than apply the frames that remain to an empty
//! store. A batch is applied, atomically with the new `changelog_next`, only
//! when its last frame is read; frames of an attempt cut short by a crash are dropped (that
//! batch is processed again from `raw`), and frames of a fenced-off incarnation are ignored.
//! A local store that applied a batch its successor never saw (it was a zombie) is detected
//! by epoch and rebuilt from the changelog. The task then resumes from the restored checkpoint:
//! `raw` records before it are skipped, so nothing is applied twice.
//!
//! **Store identity.** A local store is reused only if it belongs to the changelog it meets:
//! it remembers the offset and the (unique) key of the fence it last caught up to, and that
//! record must still be there. A store left on disk from another incarnation of the topics
//! (recreated under the same names, another cluster, a restored backup of the disk) fails that
//! check and is rebuilt from the changelog instead of skipping input from its old checkpoint.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::ProcessorError;
use crate::snapshot::SnapshotState;
use crate::store::{Cf, Op, StateStore, CHANGELOG_NEXT, EPOCH, FENCE as FENCE_KEY, SNAPSHOT};
use replay::Replay;

/// Restore fails when the changelog yields nothing for this long before the fence is reached.
const STALL: Duration = Duration::from_secs(120);

/// What a restore read and applied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Changelog records read.
    pub records: u64,
    /// Complete batches applied.
    pub batches: u64,
    /// Attempts whose last frame never came (crashed mid-batch).
    pub incomplete: u64,
    /// Frames of fenced-off incarnations, ignored.
    pub fenced: u64,
    /// The local store was stale and rebuilt from the changelog.
    pub rebuilt: bool,
    /// The changelog position of the snapshot the store was loaded from, if it was.
    pub snapshot: Option<i64>,
    /// Bytes of the snapshot's entries, and of the frames applied.
    pub snapshot_bytes: u64,
    pub frame_bytes: u64,
}

/// How far a restore has got, shared with whoever reports it (`/readyz`, gauges), and the
/// switch that cancels it (the partition was revoked, the processor stops).
#[derive(Debug, Default)]
pub struct Meter {
    stage: Mutex<&'static str>,
    remaining: AtomicI64,
    records: AtomicU64,
    bytes: AtomicU64,
    cancelled: AtomicBool,
}

/// A restore's progress as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreProgress {
    /// What it reads now: `finding the latest snapshot`, `loading a snapshot`, `restoring`.
    pub stage: &'static str,
    /// Changelog records left to read in this stage.
    pub remaining_records: i64,
    /// Changelog records and bytes read so far.
    pub records: u64,
    pub bytes: u64,
}

impl Meter {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn progress(&self) -> RestoreProgress {
        RestoreProgress {
            stage: *self.stage.lock().expect("meter lock"),
            remaining_records: self.remaining.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    fn stage(&self, stage: &'static str, remaining: i64) {
        *self.stage.lock().expect("meter lock") = stage;
        self.remaining.store(remaining, Ordering::Relaxed);
    }

    fn read(&self, partition: i32, remaining: i64, bytes: usize) {
        self.remaining.store(remaining, Ordering::Relaxed);
        let records = self.records.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if records.is_multiple_of(1024) || remaining == 0 {
            metrics::gauge!("hookstream_processor_restore_remaining_records", "partition" => partition.to_string())
                .set(remaining as f64);
        }
    }
}

/// Opens the store in `dir` and brings it up to the task's own `fence`.
pub fn open(
    dir: &Path,
    client: &ClientConfig,
    topic: &str,
    partition: i32,
    fence: Fence<'_>,
    meter: &Meter,
) -> Result<(StateStore, Restored), ProcessorError> {
    slow_down_for_tests(partition, meter);
    let store = StateStore::open(dir)?;
    if store.get_i64(CHANGELOG_NEXT)?.is_none() {
        drop(store);
        return fresh(dir, client, topic, partition, fence, meter);
    }
    let why = match foreign(&store, client, topic, partition)? {
        Some(why) => why,
        None => match catch_up(&store, client, topic, partition, fence, meter)? {
            Some(restored) => return Ok((store, restored)),
            None => "the local store applied a batch another incarnation never saw".to_owned(),
        },
    };
    tracing::warn!(
        partition,
        dir = %dir.display(),
        reason = %why,
        "rebuilding the local store from the changelog"
    );
    drop(store);
    let (store, restored) = fresh(dir, client, topic, partition, fence, meter)?;
    Ok((
        store,
        Restored {
            rebuilt: true,
            ..restored
        },
    ))
}

/// Builds the store in `dir` from nothing: the latest complete snapshot, then the frames after
/// it (or the whole changelog when it never had a snapshot).
fn fresh(
    dir: &Path,
    client: &ClientConfig,
    topic: &str,
    partition: i32,
    fence: Fence<'_>,
    meter: &Meter,
) -> Result<(StateStore, Restored), ProcessorError> {
    // Whatever is there is not a store (a load cut short leaves entries without a position).
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| {
            ProcessorError::Startup(format!(
                "cannot remove stale store `{}`: {e}",
                dir.display()
            ))
        })?;
    }
    let store = StateStore::open(dir)?;
    let consumer: BaseConsumer = client.create()?;
    let (low, _) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
    let latest = snapshot::latest(&consumer, meter, topic, partition, low, fence.offset)?;
    let Some(located) = start_of(topic, partition, low, latest)? else {
        let restored = catch_up(&store, client, topic, partition, fence, meter)?
            .expect("a new store is never stale");
        return Ok((store, restored));
    };
    let started = Instant::now();
    let snapshot_bytes = snapshot::load(&store, &consumer, meter, topic, partition, &located)?;
    tracing::info!(
        partition,
        position = located.id.position,
        bytes = snapshot_bytes,
        seconds = started.elapsed().as_secs_f64(),
        "loaded the latest snapshot"
    );
    store.write(&[Op {
        cf: Cf::Meta,
        key: SNAPSHOT.to_vec(),
        value: Some(
            SnapshotState {
                position: located.id.position,
                bytes: snapshot_bytes,
                taken_at_ms: located.id.taken_at_ms,
                ..SnapshotState::NONE
            }
            .encode(),
        ),
    }])?;
    let restored = catch_up(&store, client, topic, partition, fence, meter)?.ok_or_else(|| {
        ProcessorError::Startup(format!(
            "partition {partition}: the snapshot at changelog position {} (epoch {}) disagrees with the frames after it: two instances wrote this partition's changelog at once (check processor.partitions across instances)",
            located.id.position, located.id.epoch
        ))
    })?;
    Ok((
        store,
        Restored {
            snapshot: Some(located.id.position),
            snapshot_bytes,
            ..restored
        },
    ))
}

/// Where a new store starts: the latest complete snapshot (`Some`), else the beginning of
/// the changelog (`None`) if it still starts at offset 0; else history is lost.
fn start_of(
    topic: &str,
    partition: i32,
    low: i64,
    latest: Option<snapshot::Located>,
) -> Result<Option<snapshot::Located>, ProcessorError> {
    match latest {
        Some(located) => Ok(Some(located)),
        None if low > 0 => Err(history_lost(topic, partition, 0, low)),
        None => Ok(None),
    }
}

fn history_lost(topic: &str, partition: i32, needed: i64, low: i64) -> ProcessorError {
    metrics::counter!("hookstream_processor_restore_gaps_total").increment(1);
    ProcessorError::HistoryLost {
        topic: topic.to_owned(),
        partition,
        needed,
        low,
    }
}

/// Reads `[from, until)` of a changelog partition, handing each record to `each` until it
/// breaks; fails when nothing comes for [`STALL`], or when cancelled. Reports progress to
/// `meter` and logs it every 10 s, as `what`.
pub(crate) fn scan(
    consumer: &BaseConsumer,
    meter: &Meter,
    topic: &str,
    partition: i32,
    range: std::ops::Range<i64>,
    what: &'static str,
    mut each: impl FnMut(
        &rdkafka::message::BorrowedMessage<'_>,
    ) -> Result<ControlFlow<()>, ProcessorError>,
) -> Result<(), ProcessorError> {
    let std::ops::Range {
        start: from,
        end: until,
    } = range;
    if from >= until {
        return Ok(());
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
    consumer.assign(&assignment)?;
    let (mut last_progress, mut last_log) = (Instant::now(), Instant::now());
    let mut next = from;
    meter.stage(what, until - from);
    while next < until {
        if meter.cancelled() {
            return Err(ProcessorError::RestoreCancelled(partition));
        }
        if last_progress.elapsed() > STALL {
            return Err(ProcessorError::Stalled(format!(
                "{what}: partition {partition} of `{topic}` stalled at offset {next} of {until}"
            )));
        }
        if last_log.elapsed() > Duration::from_secs(10) {
            tracing::info!(partition, offset = next, until, "{what}");
            last_log = Instant::now();
        }
        let Some(message) = consumer.poll(Duration::from_secs(1)) else {
            continue;
        };
        let message = message?;
        next = message.offset() + 1;
        last_progress = Instant::now();
        if message.offset() >= until {
            break;
        }
        meter.read(partition, until - next, message.payload_len());
        if each(&message)?.is_break() {
            break;
        }
    }
    Ok(())
}

/// The task's own fence: its offset (the epoch) and its key.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub offset: i64,
    pub key: &'a [u8],
}

/// Why a store that has applied changelog records does not belong to this changelog, if it
/// does not: the fence it last caught up to is not there (any more) under its key.
pub fn foreign(
    store: &StateStore,
    client: &ClientConfig,
    topic: &str,
    partition: i32,
) -> Result<Option<String>, ProcessorError> {
    if store.get_i64(CHANGELOG_NEXT)?.is_none() {
        return Ok(None); // a new store
    }
    let Some(remembered) = store.get(crate::store::Cf::Meta, FENCE_KEY)? else {
        return Ok(Some("the store records no changelog fence".into()));
    };
    let Some((offset, key)) = remembered
        .split_first_chunk::<8>()
        .map(|(o, k)| (i64::from_be_bytes(*o), k))
    else {
        return Ok(Some("the store's fence record is unreadable".into()));
    };
    let consumer: BaseConsumer = client.create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
    if offset < low || offset >= high {
        return Ok(Some(format!(
            "its fence at offset {offset} is not in the changelog partition (offsets {low}..{high})"
        )));
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    let started = Instant::now();
    while started.elapsed() < STALL {
        let Some(message) = consumer.poll(Duration::from_secs(1)) else {
            continue;
        };
        let message = message?;
        if message.offset() != offset {
            return Ok(Some(format!(
                "the changelog has no record at offset {offset}"
            )));
        }
        return Ok((message.key() != Some(key)).then(|| {
            format!("the changelog record at offset {offset} is not the fence the store caught up to (topics recreated, or another cluster)")
        }));
    }
    Err(ProcessorError::Stalled(format!(
        "reading the fence at offset {offset} of `{topic}` partition {partition} stalled"
    )))
}

/// Applies the changelog partition from the store's position up to `fence` (exclusive).
/// `None`: the store is stale and must be rebuilt.
pub fn catch_up(
    store: &StateStore,
    client: &ClientConfig,
    topic: &str,
    partition: i32,
    own: Fence<'_>,
    meter: &Meter,
) -> Result<Option<Restored>, ProcessorError> {
    let fence = own.offset;
    let consumer: BaseConsumer = client.create()?;
    let (low, _) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
    let stored = store.get_i64(CHANGELOG_NEXT)?;
    if let Some(next) = stored.filter(|next| *next < low) {
        return Err(history_lost(topic, partition, next, low));
    }
    let mut replay = Replay::new(store, partition, stored.is_some())?;
    scan(
        &consumer,
        meter,
        topic,
        partition,
        stored.unwrap_or(low)..fence,
        "restoring",
        |message| {
            replay.record(
                message.offset(),
                message.key().unwrap_or_default(),
                message.payload().unwrap_or_default(),
            )
        },
    )?;
    let Some(restored) = replay.finish() else {
        return Ok(None);
    };
    let mut identity = fence.to_be_bytes().to_vec();
    identity.extend_from_slice(own.key);
    let snapshot = SnapshotState::decode(store.get(Cf::Meta, SNAPSHOT)?.as_deref())
        .written(restored.frame_bytes, now_ms());
    store.write(&[
        Op::meta(CHANGELOG_NEXT, fence + 1),
        Op::meta(EPOCH, fence),
        Op {
            cf: Cf::Meta,
            key: FENCE_KEY.to_vec(),
            value: Some(identity),
        },
        Op {
            cf: Cf::Meta,
            key: SNAPSHOT.to_vec(),
            value: Some(snapshot.encode()),
        },
    ])?;
    Ok(Some(restored))
}

/// Test support: failpoint `restore-slow` with `return(P:MS)` makes the restore of partition
/// P take MS milliseconds longer (a restore longer than `max.poll.interval.ms`).
fn slow_down_for_tests(partition: i32, meter: &Meter) {
    let Some(Some(arg)) = fail::eval("restore-slow", |arg| arg) else {
        return;
    };
    let Some((p, ms)) = arg.split_once(':') else {
        return;
    };
    if p.parse() != Ok(partition) {
        return;
    }
    let until = Instant::now() + Duration::from_millis(ms.parse().unwrap_or(0));
    while Instant::now() < until && !meter.cancelled() {
        std::thread::sleep(Duration::from_millis(10)); // the failpoint's delay, cancellable
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

mod replay;
pub mod snapshot;
#[cfg(test)]
mod tests;
