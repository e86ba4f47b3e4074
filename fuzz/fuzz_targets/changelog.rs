//! The changelog's record format (`processor::changelog`). The first input byte picks the mode:
//!
//! * **any value** (even): `decode` of arbitrary bytes never panics, and what it decodes is
//!   stable: the decoded frame written again with `frames` (or the fence with `fence`) decodes
//!   to the same record.
//! * **round trip** (odd): fuzzed ops (every store, keys and values of any bytes, deletes),
//!   epoch and sequence number are framed with `frames`; every frame decodes, carries the
//!   epoch, the sequence number, its index and `last` on the final frame only, stays within the
//!   frame size, and the frames' ops concatenated are the original ops.

#![no_main]

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use processor::changelog::{
    decode, decode_head, fence, frames, snapshot, ChangelogRecord, Head, FRAME_BYTES,
};
use processor::store::{Cf, Op};

fn value(record: &processor::output::OutRecord) -> &[u8] {
    record
        .value
        .as_deref()
        .expect("changelog records have values")
}

fn any_value(data: &[u8]) {
    // Restore reads every record's head first: it must never panic either.
    let _ = decode_head(data);
    match decode(data) {
        Ok(ChangelogRecord::Fence) => {
            assert_eq!(decode(value(&fence(0))), Ok(ChangelogRecord::Fence));
        }
        Ok(ChangelogRecord::Frame(frame)) => {
            // Re-framing renumbers (index, last), so compare the content.
            let records = frames(0, frame.epoch, frame.seq, &frame.ops);
            let mut ops = Vec::new();
            for record in &records {
                let Ok(ChangelogRecord::Frame(again)) = decode(value(record)) else {
                    panic!("a re-encoded frame does not decode");
                };
                assert_eq!((again.epoch, again.seq), (frame.epoch, frame.seq));
                ops.extend(again.ops);
            }
            assert_eq!(ops, frame.ops);
        }
        Ok(ChangelogRecord::Snapshot(chunk)) => {
            // What restore reads of a chunk without its ops agrees with the full decoding.
            assert_eq!(
                decode_head(data),
                Ok(Head::Snapshot(chunk.id(), chunk.index, chunk.last))
            );
            let records = snapshot(
                0,
                chunk.epoch,
                chunk.position,
                chunk.taken_at_ms,
                &chunk.ops,
            );
            let mut ops = Vec::new();
            for record in &records {
                let Ok(ChangelogRecord::Snapshot(again)) = decode(value(record)) else {
                    panic!("a re-encoded snapshot chunk does not decode");
                };
                assert_eq!(again.id(), chunk.id());
                ops.extend(again.ops);
            }
            assert_eq!(ops, chunk.ops);
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

fn round_trip(u: &mut Unstructured<'_>) -> ArbResult<()> {
    let epoch: i64 = u.arbitrary()?;
    let seq: u64 = u.arbitrary()?;
    let partition: i32 = u.arbitrary()?;
    // Occasionally large values, so batches split into several frames.
    let big = u.ratio(1u8, 16)?;
    let mut ops = Vec::new();
    for _ in 0..u.int_in_range(0..=64)? {
        let cf = Cf::ALL[u.choose_index(Cf::ALL.len())?];
        let key: Vec<u8> = u.arbitrary()?;
        let value = match u.int_in_range(0u8..=3)? {
            0 => None,
            1 if big => Some(vec![u.arbitrary::<u8>()?; u.int_in_range(1..=300_000)?]),
            _ => Some(u.arbitrary()?),
        };
        ops.push(Op { cf, key, value });
    }
    let records = frames(partition, epoch, seq, &ops);
    assert_eq!(records.is_empty(), ops.is_empty(), "no ops, no frames");
    let mut decoded = Vec::new();
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.partition, Some(partition));
        let bytes = value(record);
        let Ok(ChangelogRecord::Frame(frame)) = decode(bytes) else {
            panic!("frame {i} does not decode");
        };
        assert_eq!(
            (frame.epoch, frame.seq, frame.index),
            (epoch, seq, i as u32)
        );
        assert_eq!(frame.last, i + 1 == records.len(), "`last` on frame {i}");
        assert!(!frame.ops.is_empty(), "an empty frame");
        // A frame exceeds FRAME_BYTES only when its one op does.
        if frame.ops.len() > 1 {
            assert!(
                bytes.len() <= FRAME_BYTES + 64 * 1024,
                "frame of {} bytes",
                bytes.len()
            );
        }
        decoded.extend(frame.ops);
    }
    assert_eq!(decoded, ops);
    assert_eq!(decode(value(&fence(partition))), Ok(ChangelogRecord::Fence));
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 => {
            let _ = round_trip(&mut Unstructured::new(rest));
        }
        Some((_, rest)) => any_value(rest),
        None => {}
    }
});
