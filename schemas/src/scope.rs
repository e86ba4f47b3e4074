//! Which records of a topic an operation concerns: by header fields (tenant, source, entity,
//! event type) and by offset range per partition. Used by `hookstream replay` to select what
//! it reads, and by a rebuilding processor (`processor.scope`) to ignore what is outside.
//!
//! A field with no values matches everything; several values of one field are alternatives
//! (any may match); different fields must all match.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::raw::header;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordFilter {
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub entities: Vec<String>,
    #[serde(default)]
    pub event_types: Vec<String>,
}

impl RecordFilter {
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
            && self.sources.is_empty()
            && self.entities.is_empty()
            && self.event_types.is_empty()
    }

    /// Whether a record whose fields `field` looks up (by `hs-*` header name) matches.
    pub fn matches<S: AsRef<str>>(&self, field: impl Fn(&str) -> Option<S>) -> bool {
        let one = |values: &[String], name: &str| {
            values.is_empty() || field(name).is_some_and(|v| values.iter().any(|w| w == v.as_ref()))
        };
        one(&self.tenants, header::TENANT)
            && one(&self.sources, header::SOURCE)
            && one(&self.entities, header::ENTITY)
            && one(&self.event_types, header::EVENT_TYPE)
    }
}

/// Offsets `[start, end)` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    pub start: i64,
    pub end: i64,
}

impl OffsetRange {
    pub fn contains(&self, offset: i64) -> bool {
        self.start <= offset && offset < self.end
    }

    pub fn len(&self) -> i64 {
        (self.end - self.start).max(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A processor's input scope: records outside it are consumed (their offsets committed) but
/// not processed. Partitions absent from `ranges` are wholly outside when `ranges` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default, flatten)]
    pub filter: RecordFilter,
    /// Per partition of `raw`: the offsets to process.
    #[serde(default)]
    pub ranges: Option<BTreeMap<i32, OffsetRange>>,
}

impl Scope {
    /// The end of `partition`'s range (None: no ranges, or the partition is outside them).
    pub fn end_of(&self, partition: i32) -> Option<i64> {
        self.ranges.as_ref()?.get(&partition).map(|r| r.end)
    }

    /// Where `offset` of `partition` stands relative to the scope's range.
    pub fn position(&self, partition: i32, offset: i64) -> InRange {
        let Some(ranges) = &self.ranges else {
            return InRange::Inside;
        };
        match ranges.get(&partition) {
            None => InRange::After,
            Some(range) if offset < range.start => InRange::Before,
            Some(range) if offset >= range.end => InRange::After,
            Some(_) => InRange::Inside,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InRange {
    Before,
    Inside,
    After,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(RecordFilter::default().matches(fields(&[])));
    }

    #[test]
    fn values_of_a_field_are_alternatives_and_fields_all_apply() {
        let filter = RecordFilter {
            tenants: vec!["acme".into(), "globex".into()],
            event_types: vec!["invoice.paid".into()],
            ..RecordFilter::default()
        };
        let record = [
            (header::TENANT, "globex"),
            (header::EVENT_TYPE, "invoice.paid"),
        ];
        assert!(filter.matches(fields(&record)));
        let other_type = [
            (header::TENANT, "acme"),
            (header::EVENT_TYPE, "invoice.sent"),
        ];
        assert!(!filter.matches(fields(&other_type)));
        assert!(!filter.matches(fields(&[(header::EVENT_TYPE, "invoice.paid")])));
    }

    #[test]
    fn scope_positions() {
        let scope = Scope {
            ranges: Some([(0, OffsetRange { start: 5, end: 9 })].into()),
            ..Scope::default()
        };
        assert_eq!(scope.position(0, 4), InRange::Before);
        assert_eq!(scope.position(0, 5), InRange::Inside);
        assert_eq!(scope.position(0, 9), InRange::After);
        assert_eq!(scope.position(1, 0), InRange::After);
        assert_eq!(Scope::default().position(7, 0), InRange::Inside);
    }
}
