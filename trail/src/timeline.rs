//! An event's timeline: its facts in time order, with what follows from them together (a
//! second append of an event is a duplicate the processor drops), as a table for people or
//! JSON for tools.

use serde::{Deserialize, Serialize};

use crate::fact::{Fact, Stage};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Line {
    #[serde(flatten)]
    pub fact: Fact,
    /// What the fact means given the others, if more than its stage says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Timeline {
    pub tenant: String,
    pub source: String,
    pub event_id: String,
    pub lines: Vec<Line>,
}

/// The timeline of an event from its facts (in time order).
pub fn build(tenant: &str, source: &str, event_id: &str, facts: Vec<Fact>) -> Timeline {
    let mut appended = 0;
    let lines = facts
        .into_iter()
        .map(|fact| {
            let note = match fact.stage {
                Stage::Appended => {
                    appended += 1;
                    (appended > 1).then(|| {
                        "a repeat of an event already appended: dropped by the processor's dedupe"
                            .to_owned()
                    })
                }
                Stage::Refused => Some("a request with the same body, refused".to_owned()),
                Stage::Redriven => Some("sent through the pipeline again".to_owned()),
                _ => None,
            };
            Line { fact, note }
        })
        .collect();
    Timeline {
        tenant: tenant.to_owned(),
        source: source.to_owned(),
        event_id: event_id.to_owned(),
        lines,
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Refused => "refused",
        Stage::Appended => "appended",
        Stage::Redriven => "redriven",
        Stage::DeadLettered => "dead-lettered",
        Stage::Deferred => "deferred",
        Stage::Emitted => "emitted",
        Stage::Attempt => "delivery attempt",
        Stage::DeliveryDeadLettered => "delivery dead-lettered",
    }
}

impl Timeline {
    /// A table: time, stage, detail, topic/partition/offset, note.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}/{}/{}: {} fact(s)\n",
            self.tenant,
            self.source,
            self.event_id,
            self.lines.len()
        );
        let rows: Vec<[String; 5]> = self
            .lines
            .iter()
            .map(|l| {
                [
                    schemas::time::to_rfc3339(l.fact.at),
                    stage_name(l.fact.stage).to_owned(),
                    l.fact.detail.clone(),
                    format!("{}/{}/{}", l.fact.topic, l.fact.partition, l.fact.offset),
                    l.note.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let header = ["time", "stage", "detail", "topic/partition/offset", "note"];
        let widths: Vec<usize> = (0..5)
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: [&str; 5]| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                text.push_str(cell);
                if i < 4 {
                    text.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
                }
            }
            text.trim_end().to_owned() + "\n"
        };
        out.push_str(&line(header));
        for row in &rows {
            out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(stage: Stage, at: i64) -> Fact {
        Fact {
            stage,
            tenant: "acme".into(),
            source: Some("stripe".into()),
            event_id: Some("evt_1".into()),
            entity: None,
            at,
            topic: "raw".into(),
            partition: 0,
            offset: at,
            detail: "d".into(),
            body_sha256: None,
            raw_offset: None,
        }
    }

    #[test]
    fn a_second_append_is_a_duplicate_and_the_table_lists_every_fact() {
        let timeline = build(
            "acme",
            "stripe",
            "evt_1",
            vec![
                fact(Stage::Appended, 1),
                fact(Stage::Appended, 2),
                fact(Stage::Emitted, 3),
            ],
        );
        let notes: Vec<bool> = timeline.lines.iter().map(|l| l.note.is_some()).collect();
        assert_eq!(notes, [false, true, false]);
        let table = timeline.render();
        assert_eq!(table.lines().count(), 5, "{table}");
        assert!(
            table.contains("raw/0/2") && table.contains("dedupe"),
            "{table}"
        );
    }
}
