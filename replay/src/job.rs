//! One replay operation, described by a [`JobSpec`] (from the CLI's flags or the admin API's
//! JSON body) and run by [`execute`]: a dry run, a rebuild or a redrive.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use regex::Regex;
use schemas::config::Config;
use schemas::kafka::{client_config, Role};
use schemas::scope::RecordFilter;
use schemas::topics::Topic;
use serde::{Deserialize, Serialize};

use crate::count::{self, Counts};
use crate::position::Position;
use crate::progress::Tracker;
use crate::rebuild::{self, Rebuilt};
use crate::redrive;
use crate::select::Selection;
use crate::ReplayError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Count what would be selected, per partition and tenant; write nothing.
    DryRun,
    /// Run a processor under a fresh group into fresh topics (`into`).
    Rebuild,
    /// Re-append the selected records to the live `raw` topic, marked with the redrive id.
    Redrive,
}

/// The topics a replay reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FromTopic {
    Raw,
    Dlq,
    Deferred,
}

impl FromTopic {
    pub fn topic(self) -> Topic {
        match self {
            Self::Raw => Topic::Raw,
            Self::Dlq => Topic::Dlq,
            Self::Deferred => Topic::Deferred,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub mode: Mode,
    #[serde(default = "raw")]
    pub from_topic: FromTopic,
    #[serde(default)]
    pub partitions: Vec<i32>,
    #[serde(default = "beginning")]
    pub start: String,
    #[serde(default = "end")]
    pub end: String,
    #[serde(default)]
    pub resume: BTreeMap<i32, i64>,
    /// Per-partition end offsets overriding `end` (a resumed run keeps the first run's ends).
    #[serde(default)]
    pub until: BTreeMap<i32, i64>,
    #[serde(default, flatten)]
    pub filter: RecordFilter,
    /// Regular expression on the `hs-error` header (dead letters).
    #[serde(default)]
    pub error: Option<String>,
    /// The redrive or rebuild id (generated when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// Rebuild: the topic prefix of the fresh output topics.
    #[serde(default)]
    pub into: Option<String>,
}

fn raw() -> FromTopic {
    FromTopic::Raw
}

fn beginning() -> String {
    "beginning".into()
}

fn end() -> String {
    "end".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> JobSpec {
        serde_json::from_value(serde_json::json!({"mode": "redrive", "id": id})).unwrap()
    }

    #[test]
    fn ids_cannot_be_paths() {
        let config = Config::parse_str("").unwrap();
        assert!(spec("dlq-2026-11-22_a.1").validate(&config).is_ok());
        for bad in ["x/../..", "..", "", "a b", ".hidden"] {
            let error = spec(bad).validate(&config).unwrap_err();
            assert_eq!(error.status(), 400, "{bad}: {error}");
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum JobResult {
    DryRun(Counts),
    Rebuild(Rebuilt),
    Redrive {
        id: String,
        from_topic: String,
        to_topic: String,
        matched: u64,
        written: u64,
        cancelled: bool,
        /// Per partition, the first offset not read (resume from there).
        next: BTreeMap<i32, i64>,
        /// Per partition, the end of the range read (resume up to there).
        until: BTreeMap<i32, i64>,
    },
}

impl JobSpec {
    /// The id the job runs under: the given one, or one made from the time.
    pub fn id_or_new(&self) -> String {
        self.id.clone().unwrap_or_else(|| {
            let now = chrono::Utc::now();
            format!(
                "{}-{}",
                now.format("%Y%m%dT%H%M%S"),
                now.timestamp_subsec_micros()
            )
        })
    }

    pub fn selection(&self, config: &Config) -> Result<Selection, ReplayError> {
        let now = schemas::time::now_millis();
        let error = error_filter(self.error.as_deref())?;
        Ok(Selection {
            topic: config.topics().name(self.from_topic.topic()),
            partitions: self.partitions.clone(),
            start: Position::parse(&self.start, now)?,
            end: Position::parse(&self.end, now)?,
            resume: self.resume.clone(),
            until: self.until.clone(),
            filter: self.filter.clone(),
            error,
        })
    }

    /// Checks what can be checked without a broker.
    pub fn validate(&self, config: &Config) -> Result<(), ReplayError> {
        self.selection(config)?;
        if let Some(id) = &self.id {
            // The id names a consumer group and a state directory: no paths, no surprises.
            let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if id.is_empty() || id.len() > 128 || !id.chars().all(fine) || id.starts_with('.') {
                return Err(ReplayError::invalid(format!(
                    "id `{id}`: use 1 to 128 letters, digits, `.`, `_` or `-` (not starting with `.`)"
                )));
            }
        }
        match self.mode {
            Mode::Rebuild if self.error.is_some() => Err(ReplayError::invalid(
                "--error selects dead letters; a rebuild reads `raw`",
            )),
            Mode::Rebuild if self.into.is_none() => Err(ReplayError::invalid(
                "a rebuild needs --into PREFIX: the prefix of its fresh output topics",
            )),
            Mode::Rebuild if self.from_topic != FromTopic::Raw => Err(ReplayError::invalid(
                "a rebuild reads `raw`; redrive dead letters or deferred events instead",
            )),
            _ => Ok(()),
        }
    }
}

/// Runs `spec` under `id` to its end or until `cancel` is set.
pub async fn execute(
    config: &Config,
    spec: &JobSpec,
    id: &str,
    tracker: Arc<Tracker>,
    cancel: Arc<AtomicBool>,
) -> Result<JobResult, ReplayError> {
    spec.validate(config)?;
    let selection = spec.selection(config)?;
    let reader = client_config(&config.kafka, Role::Consumer);
    match spec.mode {
        Mode::DryRun => {
            let (counts, _) = tokio::task::spawn_blocking(move || {
                count::count(reader, &selection, &tracker, &cancel)
            })
            .await
            .map_err(|e| ReplayError::invalid(format!("dry run failed: {e}")))??;
            Ok(JobResult::DryRun(counts))
        }
        Mode::Rebuild => {
            let into = spec.into.clone().unwrap_or_default();
            let rebuilt = rebuild::rebuild(config, &selection, id, &into, tracker, cancel).await?;
            Ok(JobResult::Rebuild(rebuilt))
        }
        Mode::Redrive => {
            let producer = client_config(&config.kafka, Role::Producer);
            // Ingest dead letters are read again with the current extraction rules.
            let reextractor =
                ingest::dead_letter::Reextractor::new(config).map_err(ReplayError::invalid)?;
            let to_topic = config.topics().name(Topic::Raw);
            let from_topic = selection.topic.clone();
            let (target, redrive_id, counters) = (to_topic.clone(), id.to_owned(), tracker.clone());
            let from = spec.from_topic;
            let end = tokio::task::spawn_blocking(move || {
                let source = match from {
                    FromTopic::Deferred => redrive::Source::RawOf(&target),
                    FromTopic::Raw | FromTopic::Dlq => redrive::Source::Selected,
                };
                redrive::redrive(
                    reader,
                    producer,
                    &selection,
                    source,
                    &target,
                    &redrive_id,
                    Some(&reextractor),
                    counters,
                    &cancel,
                )
            })
            .await
            .map_err(|e| ReplayError::invalid(format!("redrive failed: {e}")))??;
            let now = tracker.snapshot();
            Ok(JobResult::Redrive {
                id: id.to_owned(),
                from_topic,
                to_topic,
                matched: now.matched,
                written: now.written,
                cancelled: end.cancelled,
                next: end.next,
                until: end.until,
            })
        }
    }
}

/// The `--error REGEX` filter on dead letters' `hs-error` (replay and tail).
pub fn error_filter(pattern: Option<&str>) -> Result<Option<Regex>, ReplayError> {
    pattern
        .map(|pattern| {
            Regex::new(pattern)
                .map_err(|e| ReplayError::invalid(format!("--error `{pattern}`: {e}")))
        })
        .transpose()
}
