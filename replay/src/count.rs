//! `--dry-run`: what a replay would select, counted per partition and per tenant, without
//! writing anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use schemas::raw::header;
use schemas::scope::OffsetRange;
use serde::Serialize;

use crate::progress::Tracker;
use crate::reader::{self, ScanEnd};
use crate::select::Selection;
use crate::ReplayError;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub topic: String,
    pub partitions: BTreeMap<i32, PartitionCount>,
    pub tenants: BTreeMap<String, u64>,
    pub scanned: u64,
    pub matched: u64,
    /// Stopped before the end (Ctrl-C, or cancelled through the admin API): partial counts.
    pub cancelled: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct PartitionCount {
    pub start: i64,
    pub end: i64,
    pub matched: u64,
}

pub fn count(
    client: rdkafka::ClientConfig,
    selection: &Selection,
    tracker: &Tracker,
    cancel: &AtomicBool,
) -> Result<(Counts, ScanEnd), ReplayError> {
    let consumer = reader::consumer(client)?;
    let ranges = selection.resolve(&consumer)?;
    tracker.total.store(total(&ranges), Ordering::Relaxed);
    let mut counts = Counts {
        topic: selection.topic.clone(),
        partitions: ranges
            .iter()
            .map(|(p, r)| {
                (
                    *p,
                    PartitionCount {
                        start: r.start,
                        end: r.end,
                        matched: 0,
                    },
                )
            })
            .collect(),
        ..Counts::default()
    };
    let end = reader::scan(
        &consumer,
        &selection.topic,
        &ranges,
        false,
        cancel,
        |record| {
            counts.scanned += 1;
            tracker.read.fetch_add(1, Ordering::Relaxed);
            if selection.matches(&record) {
                counts.matched += 1;
                tracker.matched.fetch_add(1, Ordering::Relaxed);
                if let Some(partition) = counts.partitions.get_mut(&record.partition) {
                    partition.matched += 1;
                }
                let tenant = record.field(header::TENANT).unwrap_or_else(|| "?".into());
                *counts.tenants.entry(tenant).or_default() += 1;
            }
            Ok(ControlFlow::Continue(()))
        },
    )?;
    counts.cancelled = end.cancelled;
    Ok((counts, end))
}

pub fn total(ranges: &BTreeMap<i32, OffsetRange>) -> u64 {
    ranges.values().map(|r| r.len() as u64).sum()
}

impl Counts {
    /// A table for people: per partition, then per tenant, then the totals.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<10} {:>12} {:>12} {:>10}",
            "partition", "start", "end", "matched"
        );
        for (partition, count) in &self.partitions {
            let _ = writeln!(
                out,
                "{partition:<10} {:>12} {:>12} {:>10}",
                count.start, count.end, count.matched
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<36} {:>10}", "tenant", "matched");
        for (tenant, matched) in &self.tenants {
            let _ = writeln!(out, "{tenant:<36} {matched:>10}");
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} of {} records of `{}` match (dry run: nothing written){}",
            self.matched,
            self.scanned,
            self.topic,
            if self.cancelled {
                "; STOPPED before the end: partial counts"
            } else {
                ""
            }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_partitions_tenants_and_totals() {
        let counts = Counts {
            topic: "hookstream.raw".into(),
            partitions: [(
                0,
                PartitionCount {
                    start: 3,
                    end: 10,
                    matched: 2,
                },
            )]
            .into(),
            tenants: [("acme".into(), 2)].into(),
            scanned: 7,
            matched: 2,
            cancelled: false,
        };
        let table = counts.render();
        assert!(
            table.contains("0                     3           10          2"),
            "{table}"
        );
        assert!(table.contains("acme"), "{table}");
        assert!(table
            .ends_with("2 of 7 records of `hookstream.raw` match (dry run: nothing written)\n"));
    }
}
