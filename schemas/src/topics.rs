//! The topics hookstream reads and writes, all under one configurable prefix
//! (default `hookstream.`). See `docs/topics.md` for each value's format.
//!
//! | topic      | key             | cleanup | written by |
//! |------------|-----------------|---------|------------|
//! | `raw`      | `tenant/entity` | delete  | ingest     |
//! | `events`   | `tenant/entity` | delete  | processor  |
//! | `state`    | `tenant/entity` | compact | processor  |
//! | `deferred` | `tenant/entity` | delete  | processor  |
//! | `alerts`   | `tenant`        | delete  | processor  |
//! | `usage`    | `tenant`        | delete  | downstream workers |
//! | `dlq`      | `tenant/entity` | delete  | processor  |
//! | `rejected` | `tenant`        | delete  | ingest     |
//! | `changelog`| frame id        | delete (snapshots bound it) | processor (its state stores; partition = `raw` partition) |
//!
//! The topics the processor writes can live under their own prefix
//! (`processor.output_prefix`): a rebuild writes a fresh set next to the live one.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Raw,
    Events,
    State,
    Deferred,
    Alerts,
    Usage,
    Dlq,
    Rejected,
    Changelog,
    /// Per tenant and partition, the usage each partition task admitted in the current cap
    /// windows (compacted): how tasks share a tenant's budget.
    Budget,
}

impl Topic {
    pub const ALL: [Topic; 10] = [
        Topic::Raw,
        Topic::Events,
        Topic::State,
        Topic::Deferred,
        Topic::Alerts,
        Topic::Usage,
        Topic::Dlq,
        Topic::Rejected,
        Topic::Changelog,
        Topic::Budget,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            Topic::Raw => "raw",
            Topic::Events => "events",
            Topic::State => "state",
            Topic::Deferred => "deferred",
            Topic::Alerts => "alerts",
            Topic::Usage => "usage",
            Topic::Dlq => "dlq",
            Topic::Rejected => "rejected",
            Topic::Changelog => "changelog",
            Topic::Budget => "budget",
        }
    }

    /// `state` keeps only the latest record per key; every other topic is a log.
    pub fn compacted(self) -> bool {
        matches!(self, Topic::State | Topic::Budget)
    }

    /// Topics the processor writes (and so may put under its own output prefix).
    pub fn processor_output(self) -> bool {
        matches!(
            self,
            Topic::Events
                | Topic::State
                | Topic::Deferred
                | Topic::Alerts
                | Topic::Dlq
                | Topic::Changelog
                | Topic::Budget
        )
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// Resolves topic names under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNames {
    prefix: String,
    output_prefix: Option<String>,
}

impl TopicNames {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            output_prefix: None,
        }
    }

    /// The processor's outputs under `prefix` instead (inputs keep the common prefix).
    pub fn with_output_prefix(mut self, prefix: Option<String>) -> Self {
        self.output_prefix = prefix;
        self
    }

    pub fn name(&self, topic: Topic) -> String {
        let prefix = match &self.output_prefix {
            Some(output) if topic.processor_output() => output,
            _ => &self.prefix,
        };
        format!("{prefix}{}", topic.suffix())
    }

    pub fn all(&self) -> Vec<(Topic, String)> {
        Topic::ALL.iter().map(|t| (*t, self.name(*t))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed() {
        let names = TopicNames::new("hookstream.");
        assert_eq!(names.name(Topic::Raw), "hookstream.raw");
        assert_eq!(names.name(Topic::State), "hookstream.state");
        assert_eq!(names.all().len(), 10);
        assert!(Topic::Budget.compacted() && Topic::Budget.processor_output());
        assert!(Topic::State.compacted() && !Topic::Events.compacted());
        let rebuild = names.with_output_prefix(Some("rebuild1.".into()));
        assert_eq!(rebuild.name(Topic::Raw), "hookstream.raw");
        assert_eq!(rebuild.name(Topic::State), "rebuild1.state");
        assert_eq!(rebuild.name(Topic::Changelog), "rebuild1.changelog");
    }
}
