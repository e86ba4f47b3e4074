//! Applying changelog records to a store, one at a time: whole batches only, frames of
//! fenced-off incarnations ignored, snapshot chunks skipped (see [`super`]).

use std::ops::ControlFlow;

use super::Restored;
use crate::changelog::{self, ChangelogRecord, Frame};
use crate::error::ProcessorError;
use crate::store::{Op, StateStore, CHANGELOG_NEXT, EPOCH};

/// The batch being assembled from its frames.
struct Assembling {
    epoch: i64,
    seq: u64,
    next_index: u32,
    ops: Vec<Op>,
}

pub(super) struct Replay<'s> {
    store: &'s StateStore,
    partition: i32,
    /// The store had applied records before: a frame of an unknown newer epoch means it
    /// applied what its successor never saw.
    had_position: bool,
    latest_fence: i64,
    assembling: Option<Assembling>,
    restored: Restored,
    stale: bool,
}

impl<'s> Replay<'s> {
    pub(super) fn new(
        store: &'s StateStore,
        partition: i32,
        had_position: bool,
    ) -> Result<Self, ProcessorError> {
        Ok(Self {
            store,
            partition,
            had_position,
            latest_fence: store.get_i64(EPOCH)?.unwrap_or(i64::MIN),
            assembling: None,
            restored: Restored::default(),
            stale: false,
        })
    }

    /// Applies the record at `offset`; breaks once the store turns out stale.
    pub(super) fn record(
        &mut self,
        offset: i64,
        key: &[u8],
        payload: &[u8],
    ) -> Result<ControlFlow<()>, ProcessorError> {
        self.restored.records += 1;
        if key.starts_with(changelog::SNAPSHOT_KEY_PREFIX.as_bytes()) {
            return Ok(ControlFlow::Continue(()));
        }
        match changelog::decode(payload) {
            Ok(ChangelogRecord::Fence) => {
                self.latest_fence = self.latest_fence.max(offset);
                self.drop_unfinished();
            }
            Ok(ChangelogRecord::Snapshot(_)) => {}
            Ok(ChangelogRecord::Frame(frame)) => {
                return self.frame(offset, payload.len(), frame);
            }
            Err(reason) => {
                tracing::warn!(partition = self.partition, offset, %reason, "skipping an undecodable changelog record");
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    fn frame(
        &mut self,
        offset: i64,
        bytes: usize,
        frame: Frame,
    ) -> Result<ControlFlow<()>, ProcessorError> {
        if frame.epoch < self.latest_fence {
            self.restored.fenced += 1;
            return Ok(ControlFlow::Continue(()));
        }
        if frame.epoch > self.latest_fence {
            if self.had_position {
                self.stale = true;
                return Ok(ControlFlow::Break(()));
            }
            self.latest_fence = frame.epoch;
        }
        self.restored.frame_bytes += bytes as u64;
        let continues = self.assembling.as_ref().is_some_and(|a| {
            (a.epoch, a.seq, a.next_index) == (frame.epoch, frame.seq, frame.index)
        });
        if !continues {
            self.drop_unfinished();
            if frame.index != 0 {
                return Ok(ControlFlow::Continue(()));
            }
            self.assembling = Some(Assembling {
                epoch: frame.epoch,
                seq: frame.seq,
                next_index: 0,
                ops: Vec::new(),
            });
        }
        let batch = self.assembling.as_mut().expect("assembling a batch");
        batch.ops.extend(frame.ops);
        batch.next_index += 1;
        if frame.last {
            let mut ops = self.assembling.take().expect("assembling a batch").ops;
            ops.push(Op::meta(CHANGELOG_NEXT, offset + 1));
            ops.push(Op::meta(EPOCH, frame.epoch));
            self.store.write(&ops)?;
            self.restored.batches += 1;
        }
        Ok(ControlFlow::Continue(()))
    }

    fn drop_unfinished(&mut self) {
        self.restored.incomplete += u64::from(self.assembling.take().is_some());
    }

    /// What was restored; None when the store is stale and must be rebuilt.
    pub(super) fn finish(mut self) -> Option<Restored> {
        if self.stale {
            return None;
        }
        self.drop_unfinished();
        Some(self.restored)
    }
}
