//! The changelog's record format: the durable history of every partition task's state store.
//!
//! A batch's store changes ([`Op`]s) travel as **frames**: a few records of up to
//! [`FRAME_BYTES`] each rather than one record per changed key (a batch of 500 events changes
//! ~2 500 keys; framing turns that into one or two records, which is what lets the processor
//! keep up with brokers that are bound by records per second). The last frame of a batch is
//! produced only after every output of the batch was acknowledged, so a batch whose last frame
//! is in the log is complete; restore drops the frames of an attempt that never got its last.
//!
//! **Epochs fence zombies.** When a task opens it first appends a [`ChangelogRecord::Fence`];
//! the fence's offset is the *epoch* of that incarnation, carried by all its frames. Restore
//! ignores frames whose epoch is older than the newest fence before them: an instance that lost
//! its partition without noticing (a long GC pause, a network partition) cannot change the
//! history its successor restored. (Kafka Streams without exactly-once has no such guard.)
//!
//! **Snapshots bound the history a restore reads.** Now and then a task writes its whole
//! store as [`SnapshotChunk`]s: the state as of changelog `position` (every batch before it
//! applied, none after). A snapshot is complete when its last chunk is in the log; restore
//! loads the latest complete one and applies the frames from its position on, so it reads
//! about the state plus the frames since, however old the partition is. A snapshot cut short
//! by a crash is never used. History before the latest snapshot is no longer needed: time
//! retention (or `DeleteRecords`) removes it. See [`crate::snapshot`].
//!
//! Value: one format byte ([`FORMAT`]), then the record in the
//! [postcard](https://postcard.jamesmunns.com/wire-format) wire format. Key: readable text
//! (`fence-…`, `epoch-seq-index`, or `snapshot-position-index`) for people inspecting the
//! topic; restore uses the `snapshot-` prefix only to skip chunks without decoding them. The
//! changelog is not compacted (frames are not keyed by store key): it is created with
//! `cleanup.policy=delete` and a time retention of several snapshot intervals.

use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};

use crate::output::OutRecord;
use crate::store::{Cf, Op};
use schemas::topics::Topic;

/// The first byte of every changelog value: the version of this format.
pub const FORMAT: u8 = 1;
/// Largest sum of key and value bytes in one frame (brokers accept 1 MiB records by default).
pub const FRAME_BYTES: usize = 512 * 1024;

/// A decoded changelog record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangelogRecord {
    /// A task incarnation starts; its offset is the incarnation's epoch.
    Fence,
    Frame(Frame),
    Snapshot(SnapshotChunk),
}

/// Part of a snapshot: a task's whole store as of changelog `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The epoch of the incarnation that wrote it.
    pub epoch: i64,
    /// The changelog offset the snapshot's state is current to (exclusive).
    pub position: i64,
    /// When it was taken (wall clock, ms): with `epoch` and `position`, the snapshot's id.
    pub taken_at_ms: i64,
    pub index: u32,
    /// The snapshot's last chunk: the snapshot is complete.
    pub last: bool,
    pub ops: Vec<Op>,
}

/// The key prefix of snapshot chunks.
pub const SNAPSHOT_KEY_PREFIX: &str = "snapshot-";

/// Part of one batch's store changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub epoch: i64,
    /// The batch's number within the incarnation.
    pub seq: u64,
    /// The frame's position within the batch (0, 1, …).
    pub index: u32,
    /// The batch's last frame: the batch is complete.
    pub last: bool,
    pub ops: Vec<Op>,
}

#[derive(Serialize)]
enum WireOut<'a> {
    Fence,
    Frame {
        epoch: i64,
        seq: u64,
        index: u32,
        last: bool,
        ops: Vec<WireOpOut<'a>>,
    },
    Snapshot {
        epoch: i64,
        position: i64,
        taken_at_ms: i64,
        index: u32,
        last: bool,
        ops: Vec<WireOpOut<'a>>,
    },
}

#[derive(Serialize)]
struct WireOpOut<'a> {
    cf: u8,
    key: &'a Bytes,
    value: Option<&'a Bytes>,
}

#[derive(Deserialize)]
enum WireIn {
    Fence,
    Frame {
        epoch: i64,
        seq: u64,
        index: u32,
        last: bool,
        ops: Vec<WireOpIn>,
    },
    Snapshot {
        epoch: i64,
        position: i64,
        taken_at_ms: i64,
        index: u32,
        last: bool,
        ops: Vec<WireOpIn>,
    },
}

#[derive(Deserialize)]
struct WireOpIn {
    cf: u8,
    key: ByteBuf,
    value: Option<ByteBuf>,
}

/// The leading fields of each kind of record (the ops, last on the wire, are not read).
#[derive(Deserialize)]
enum WireHead {
    Fence,
    Frame {
        _epoch: i64,
        _seq: u64,
        _index: u32,
        _last: bool,
    },
    Snapshot {
        epoch: i64,
        position: i64,
        taken_at_ms: i64,
        index: u32,
        last: bool,
    },
}

/// What [`decode_head`] reads of a record: enough to find snapshots without copying ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    Fence,
    Frame,
    Snapshot(SnapshotId, u32, bool),
}

/// A snapshot's identity: who wrote it, the position it covers, when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotId {
    pub epoch: i64,
    pub position: i64,
    pub taken_at_ms: i64,
}

impl SnapshotChunk {
    pub fn id(&self) -> SnapshotId {
        SnapshotId {
            epoch: self.epoch,
            position: self.position,
            taken_at_ms: self.taken_at_ms,
        }
    }
}

/// Decodes the kind of a changelog value and a snapshot chunk's place, not its ops.
pub fn decode_head(value: &[u8]) -> Result<Head, String> {
    match value.split_first() {
        Some((&FORMAT, rest)) => Ok(
            match postcard::from_bytes::<WireHead>(rest).map_err(|e| e.to_string())? {
                WireHead::Fence => Head::Fence,
                WireHead::Frame { .. } => Head::Frame,
                WireHead::Snapshot {
                    epoch,
                    position,
                    taken_at_ms,
                    index,
                    last,
                } => Head::Snapshot(
                    SnapshotId {
                        epoch,
                        position,
                        taken_at_ms,
                    },
                    index,
                    last,
                ),
            },
        ),
        Some((version, _)) => Err(format!("unknown changelog format {version}")),
        None => Err("empty changelog value".into()),
    }
}

fn fence_key() -> Vec<u8> {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("fence-{:016x}{:016x}", hasher.finish(), nanos as u64).into_bytes()
}

fn encode(wire: &WireOut<'_>) -> Vec<u8> {
    postcard::to_extend(wire, vec![FORMAT]).expect("changelog records serialize")
}

/// The record that opens an incarnation of the task of `partition`. Its key is unique
/// (`fence-` and 32 hex digits): a store remembers the key and offset of the fence it
/// caught up to, which tells whether the changelog it meets again is the one it came from.
pub fn fence(partition: i32) -> OutRecord {
    OutRecord {
        topic: Topic::Changelog,
        key: fence_key(),
        value: Some(encode(&WireOut::Fence)),
        headers: Vec::new(),
        timestamp: None,
        partition: Some(partition),
        origin: None,
    }
}

/// `ops` split into runs of at most [`FRAME_BYTES`] (a larger op is a run of its own).
fn chunks(ops: &[Op]) -> Vec<&[Op]> {
    let mut chunks: Vec<&[Op]> = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, op) in ops.iter().enumerate() {
        let size = op_bytes(op);
        if i > start && bytes + size > FRAME_BYTES {
            chunks.push(&ops[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < ops.len() {
        chunks.push(&ops[start..]);
    }
    chunks
}

/// About what an op takes in a record.
pub fn op_bytes(op: &Op) -> usize {
    op.key.len() + op.value.as_ref().map_or(0, Vec::len) + 8
}

fn wire_ops(ops: &[Op]) -> Vec<WireOpOut<'_>> {
    ops.iter()
        .map(|op| WireOpOut {
            cf: op.cf.tag(),
            key: Bytes::new(&op.key),
            value: op.value.as_deref().map(Bytes::new),
        })
        .collect()
}

fn record(partition: i32, key: String, wire: &WireOut<'_>) -> OutRecord {
    OutRecord {
        topic: Topic::Changelog,
        key: key.into_bytes(),
        value: Some(encode(wire)),
        headers: Vec::new(),
        timestamp: None,
        partition: Some(partition),
        origin: None,
    }
}

/// One record per chunk; `wire` makes chunk `index`'s record (and `last` tells the last).
fn chunk_records<'a>(
    partition: i32,
    chunks: Vec<&'a [Op]>,
    wire: impl Fn(u32, bool, Vec<WireOpOut<'a>>) -> (String, WireOut<'a>),
) -> Vec<OutRecord> {
    let count = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            let (key, wire) = wire(index as u32, index + 1 == count, wire_ops(chunk));
            record(partition, key, &wire)
        })
        .collect()
}

/// A batch's ops as frames; the last one closes the batch. No ops, no frames.
pub fn frames(partition: i32, epoch: i64, seq: u64, ops: &[Op]) -> Vec<OutRecord> {
    chunk_records(partition, chunks(ops), |index, last, ops| {
        let wire = WireOut::Frame {
            epoch,
            seq,
            index,
            last,
            ops,
        };
        (format!("{epoch}-{seq}-{index}"), wire)
    })
}

/// A store's entries as the chunks of one snapshot (at least one, even for an empty store).
pub fn snapshot(
    partition: i32,
    epoch: i64,
    position: i64,
    taken_at_ms: i64,
    ops: &[Op],
) -> Vec<OutRecord> {
    let mut chunks = chunks(ops);
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    chunk_records(partition, chunks, |index, last, ops| {
        let wire = WireOut::Snapshot {
            epoch,
            position,
            taken_at_ms,
            index,
            last,
            ops,
        };
        (format!("{SNAPSHOT_KEY_PREFIX}{position}-{index}"), wire)
    })
}

fn read_ops(ops: Vec<WireOpIn>) -> Result<Vec<Op>, String> {
    ops.into_iter()
        .map(|op| {
            Ok(Op {
                cf: Cf::from_tag(op.cf).ok_or_else(|| format!("unknown store tag {}", op.cf))?,
                key: op.key.into_vec(),
                value: op.value.map(ByteBuf::into_vec),
            })
        })
        .collect()
}

/// Decodes a changelog value; the error says what is wrong with it.
pub fn decode(value: &[u8]) -> Result<ChangelogRecord, String> {
    match value.split_first() {
        Some((&FORMAT, rest)) => {
            match postcard::from_bytes::<WireIn>(rest).map_err(|e| e.to_string())? {
                WireIn::Fence => Ok(ChangelogRecord::Fence),
                WireIn::Frame {
                    epoch,
                    seq,
                    index,
                    last,
                    ops,
                } => Ok(ChangelogRecord::Frame(Frame {
                    epoch,
                    seq,
                    index,
                    last,
                    ops: read_ops(ops)?,
                })),
                WireIn::Snapshot {
                    epoch,
                    position,
                    taken_at_ms,
                    index,
                    last,
                    ops,
                } => Ok(ChangelogRecord::Snapshot(SnapshotChunk {
                    epoch,
                    position,
                    taken_at_ms,
                    index,
                    last,
                    ops: read_ops(ops)?,
                })),
            }
        }
        Some((version, _)) => Err(format!("unknown changelog format {version}")),
        None => Err("empty changelog value".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(i: usize, size: usize) -> Op {
        Op {
            cf: if i.is_multiple_of(2) {
                Cf::Entity
            } else {
                Cf::Dedupe
            },
            key: format!("key-{i}").into_bytes(),
            value: (!i.is_multiple_of(3)).then(|| vec![i as u8; size]),
        }
    }

    #[test]
    fn frames_round_trip_and_split_by_size() {
        let ops: Vec<Op> = (0..40).map(|i| op(i, 40 * 1024)).collect();
        let records = frames(3, 17, 9, &ops);
        assert!(records.len() >= 2, "{} frames", records.len());
        let mut decoded = Vec::new();
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.partition, Some(3));
            assert!(record.value.as_ref().unwrap().len() <= FRAME_BYTES + 64 * 1024);
            let ChangelogRecord::Frame(frame) = decode(record.value.as_ref().unwrap()).unwrap()
            else {
                panic!("not a frame");
            };
            assert_eq!((frame.epoch, frame.seq, frame.index), (17, 9, i as u32));
            assert_eq!(frame.last, i + 1 == records.len());
            decoded.extend(frame.ops);
        }
        assert_eq!(decoded, ops);
    }

    #[test]
    fn small_batches_take_one_frame_and_empty_ones_none() {
        let ops: Vec<Op> = (0..500).map(|i| op(i, 100)).collect();
        assert_eq!(frames(0, 1, 1, &ops).len(), 1);
        assert!(frames(0, 1, 1, &[]).is_empty());
    }

    #[test]
    fn snapshots_round_trip_in_chunks_and_an_empty_store_is_one_chunk() {
        let ops: Vec<Op> = (0..40)
            .map(|i| Op {
                value: Some(vec![i as u8; 40 * 1024]),
                ..op(i, 0)
            })
            .collect();
        let records = snapshot(1, 7, 120, 99, &ops);
        assert!(records.len() >= 2);
        let mut decoded = Vec::new();
        for (i, record) in records.iter().enumerate() {
            assert!(record.key.starts_with(SNAPSHOT_KEY_PREFIX.as_bytes()));
            let ChangelogRecord::Snapshot(chunk) = decode(record.value.as_ref().unwrap()).unwrap()
            else {
                panic!("not a snapshot chunk");
            };
            assert_eq!(
                (chunk.epoch, chunk.position, chunk.taken_at_ms, chunk.index),
                (7, 120, 99, i as u32)
            );
            assert_eq!(chunk.last, i + 1 == records.len());
            assert_eq!(
                decode_head(record.value.as_ref().unwrap()),
                Ok(Head::Snapshot(chunk.id(), chunk.index, chunk.last))
            );
            decoded.extend(chunk.ops);
        }
        assert_eq!(decoded, ops);
        let frame = &frames(1, 2, 3, &ops)[0];
        assert_eq!(decode_head(frame.value.as_ref().unwrap()), Ok(Head::Frame));
        let empty = snapshot(1, 7, 0, 1, &[]);
        assert_eq!(empty.len(), 1);
        assert!(matches!(
            decode(empty[0].value.as_ref().unwrap()),
            Ok(ChangelogRecord::Snapshot(SnapshotChunk { last: true, .. }))
        ));
    }

    #[test]
    fn fences_and_bad_values_decode_as_such() {
        let fence = fence(2);
        assert_eq!(
            decode(fence.value.as_ref().unwrap()),
            Ok(ChangelogRecord::Fence)
        );
        assert!(decode(&[]).is_err());
        assert!(decode(&[9, 0]).unwrap_err().contains("format 9"));
        assert!(decode(&[FORMAT, 1, 0xff]).is_err());
    }
}
