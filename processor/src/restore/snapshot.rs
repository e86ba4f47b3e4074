//! Finding and loading a partition's latest complete snapshot (see [`crate::snapshot`]).
//!
//! Snapshots are near the end of the changelog: [`latest`] reads back from the end in
//! growing windows (4× each time) until a window holds a complete snapshot, reading only
//! record heads ([`changelog::decode_head`]), so finding it costs about the snapshot and the
//! frames after it. A snapshot is complete when chunks `0..=last` of one snapshot id are all
//! there, in order; other records may sit between them.

use std::ops::ControlFlow;

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

use super::{scan, Meter};
use crate::changelog::{self, ChangelogRecord, Head, SnapshotId};
use crate::error::ProcessorError;
use crate::store::{Op, StateStore, CHANGELOG_NEXT, EPOCH};

/// First window read back from the end, in records.
const FIRST_WINDOW: i64 = 8;

/// A complete snapshot in the changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub id: SnapshotId,
    /// Offsets of its first and last chunk.
    pub first: i64,
    pub last: i64,
}

/// The latest complete snapshot in `[low, end)` of the changelog partition, if any.
pub fn latest(
    consumer: &BaseConsumer,
    meter: &Meter,
    topic: &str,
    partition: i32,
    low: i64,
    end: i64,
) -> Result<Option<Located>, ProcessorError> {
    let mut window = FIRST_WINDOW;
    loop {
        let from = end.saturating_sub(window).max(low);
        let found = complete_in(consumer, meter, topic, partition, from, end)?;
        if found.is_some() || from == low {
            return Ok(found);
        }
        window = window.saturating_mul(4);
    }
}

/// The latest snapshot whose chunks are all in `[from, end)`.
fn complete_in(
    consumer: &BaseConsumer,
    meter: &Meter,
    topic: &str,
    partition: i32,
    from: i64,
    end: i64,
) -> Result<Option<Located>, ProcessorError> {
    let mut assembling: Option<(SnapshotId, u32, i64)> = None;
    let mut found = None;
    scan(
        consumer,
        meter,
        topic,
        partition,
        from..end,
        "finding the latest snapshot",
        |message| {
            let Ok(Head::Snapshot(id, index, last)) =
                changelog::decode_head(message.payload().unwrap_or_default())
            else {
                return Ok(ControlFlow::Continue(()));
            };
            let offset = message.offset();
            assembling = match assembling {
                Some((current, next, first)) if current == id && next == index => {
                    Some((id, next + 1, first))
                }
                _ if index == 0 => Some((id, 1, offset)),
                _ => None,
            };
            if last {
                if let Some((id, _, first)) = assembling.take() {
                    found = Some(Located {
                        id,
                        first,
                        last: offset,
                    });
                }
            }
            Ok(ControlFlow::Continue(()))
        },
    )?;
    Ok(found)
}

/// Writes the snapshot's entries into an empty `store`, and its position and epoch: the store
/// is then as the snapshot's writer had it at that position. Returns the entries' bytes.
pub fn load(
    store: &StateStore,
    consumer: &BaseConsumer,
    meter: &Meter,
    topic: &str,
    partition: i32,
    snapshot: &Located,
) -> Result<u64, ProcessorError> {
    let mut next_index = 0u32;
    let mut bytes = 0u64;
    let until = snapshot.last + 1;
    scan(
        consumer,
        meter,
        topic,
        partition,
        snapshot.first..until,
        "loading a snapshot",
        |message| {
            let payload = message.payload().unwrap_or_default();
            if !matches!(changelog::decode_head(payload), Ok(Head::Snapshot(id, index, _)) if id == snapshot.id && index == next_index)
            {
                return Ok(ControlFlow::Continue(()));
            }
            let Ok(ChangelogRecord::Snapshot(chunk)) = changelog::decode(payload) else {
                return Err(ProcessorError::Startup(format!(
                    "partition {partition}: snapshot chunk at offset {} of `{topic}` is unreadable",
                    message.offset()
                )));
            };
            bytes += chunk
                .ops
                .iter()
                .map(|op| changelog::op_bytes(op) as u64)
                .sum::<u64>();
            store.write(&chunk.ops)?;
            next_index += 1;
            Ok(ControlFlow::Continue(()))
        },
    )?;
    store.write(&[
        Op::meta(CHANGELOG_NEXT, snapshot.id.position),
        Op::meta(EPOCH, snapshot.id.epoch),
    ])?;
    Ok(bytes)
}
