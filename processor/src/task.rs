//! A partition task: owns one partition of `raw` and its [`StateStore`], and turns a batch of
//! that partition's records into output records plus one atomic store batch.
//!
//! `process` is deterministic: the same records on the same store give byte-identical
//! outputs (same keys, values, headers and timestamps), which is what makes re-processing a
//! batch after a crash safe. The commit protocol around it lives in [`crate::consumer`].

use std::collections::{HashMap, HashSet};
use std::path::Path;

use schemas::config::Config;
use schemas::key::EntityKey;
use schemas::raw::header;
use schemas::records::{EventRecord, Payload, StateRecord};
use schemas::time::to_rfc3339;
use schemas::topics::Topic;

use crate::dedupe;
use crate::error::ProcessorError;
use crate::input::{RawInput, Undecodable};
use crate::reconcile::{reconcile, Change, EntityState, Outcome};
use crate::store::{StateStore, StoreBatch};

/// A record to produce, to a topic named by its [`Topic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub topic: Topic,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp: Option<i64>,
}

/// Per-source settings the cores need (delete types), looked up by tenant and source.
pub struct SourceCatalog {
    sources: HashMap<(String, String), Vec<String>>,
}

impl SourceCatalog {
    pub fn new(config: &Config) -> Self {
        let sources = config
            .tenants
            .iter()
            .flat_map(|t| {
                t.sources
                    .iter()
                    .map(move |s| ((t.id.clone(), s.id.clone()), s.delete_types.clone()))
            })
            .collect();
        Self { sources }
    }

    pub fn is_delete(&self, tenant: &str, source: &str, event_type: &str) -> bool {
        let default = ["*.deleted".to_owned()];
        let patterns = self
            .sources
            .get(&(tenant.to_owned(), source.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or(&default);
        schemas::config::matches_delete_type(patterns, event_type)
    }
}

pub type Decoded = Result<RawInput, Box<Undecodable>>;

pub struct PartitionTask {
    partition: i32,
    store: StateStore,
    next_offset: Option<i64>,
}

/// Counts of one processed batch, for metrics and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub events: usize,
    pub duplicates: usize,
    pub late: usize,
    pub dead_letters: usize,
    pub already_applied: usize,
}

impl PartitionTask {
    pub fn open(partition: i32, dir: &Path) -> Result<Self, ProcessorError> {
        let store = StateStore::open(dir)?;
        let next_offset = store.checkpoint()?;
        Ok(Self {
            partition,
            store,
            next_offset,
        })
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The next offset of `raw` this task has not applied (None: nothing applied yet).
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    pub fn process(
        &self,
        records: Vec<Decoded>,
        catalog: &SourceCatalog,
        out: &mut Vec<OutRecord>,
    ) -> Result<(StoreBatch, BatchStats), ProcessorError> {
        let mut batch = StoreBatch::default();
        let mut stats = BatchStats::default();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut entities: HashMap<String, EntityState> = HashMap::new();
        let mut touched: Vec<String> = Vec::new();
        for record in records {
            let offset = match &record {
                Ok(input) => input.offset,
                Err(bad) => bad.offset,
            };
            if self.next_offset.is_some_and(|next| offset < next) {
                stats.already_applied += 1;
                continue;
            }
            batch.next_offset = Some(offset + 1);
            let input = match record {
                Ok(input) => input,
                Err(bad) => {
                    stats.dead_letters += 1;
                    out.push(dead_letter(*bad));
                    continue;
                }
            };
            let dedupe_key = dedupe::key(&input.meta);
            if seen.contains(&dedupe_key) || self.store.seen(&dedupe_key)? {
                stats.duplicates += 1;
                continue;
            }
            seen.insert(dedupe_key.clone());
            batch.seen.push(dedupe_key);

            let meta = &input.meta;
            let key = EntityKey::new(&meta.tenant, &meta.entity).encode();
            if !entities.contains_key(&key) {
                if let Some(state) = self.store.entity(&key)? {
                    entities.insert(key.clone(), state);
                }
            }
            let change = Change {
                event_id: &meta.event_id,
                event_type: &meta.event_type,
                occurred_at: meta.occurred_at,
                is_delete: catalog.is_delete(&meta.tenant, &meta.source, &meta.event_type),
                body: &input.body,
            };
            let outcome = reconcile(entities.get(&key), &change);
            let late = outcome == Outcome::Late;
            stats.events += 1;
            stats.late += usize::from(late);
            out.push(event_record(&input, &key, late));
            if let Outcome::Applied(state) = outcome {
                out.push(state_record(
                    meta.tenant.as_str(),
                    meta.entity.as_str(),
                    &key,
                    &state,
                ));
                if !touched.contains(&key) {
                    touched.push(key.clone());
                }
                entities.insert(key, state);
            }
        }
        batch.entities = touched
            .into_iter()
            .map(|key| {
                let state = entities
                    .remove(&key)
                    .expect("touched entities are in the overlay");
                (key, state)
            })
            .collect();
        Ok((batch, stats))
    }

    /// Makes a processed batch durable: store changes and checkpoint in one atomic write.
    pub fn commit(&mut self, batch: &StoreBatch) -> Result<(), ProcessorError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.store.write(batch)?;
        if let Some(next) = batch.next_offset {
            self.next_offset = Some(next);
        }
        Ok(())
    }
}

fn event_record(input: &RawInput, key: &str, late: bool) -> OutRecord {
    let meta = &input.meta;
    let payload = Payload::from_body(&input.body);
    let record = EventRecord {
        tenant: meta.tenant.clone(),
        source: meta.source.clone(),
        event_id: meta.event_id.clone(),
        event_type: meta.event_type.clone(),
        entity: meta.entity.clone(),
        occurred_at: to_rfc3339(meta.occurred_at),
        received_at: to_rfc3339(meta.received_at),
        late,
        raw_offset: input.offset,
        payload: payload.payload,
        payload_base64: payload.payload_base64,
    };
    OutRecord {
        topic: Topic::Events,
        key: key.as_bytes().to_vec(),
        value: serde_json::to_vec(&record).expect("event record serializes"),
        headers: vec![(
            header::EVENT_ID.to_owned(),
            meta.event_id.as_bytes().to_vec(),
        )],
        timestamp: Some(meta.occurred_at),
    }
}

fn state_record(tenant: &str, entity: &str, key: &str, state: &EntityState) -> OutRecord {
    let record = StateRecord {
        tenant: tenant.to_owned(),
        entity: entity.to_owned(),
        version: state.version,
        updated_at: to_rfc3339(state.updated_at),
        last_event_id: state.last_event_id.clone(),
        last_event_type: state.last_event_type.clone(),
        deleted: state.deleted,
        state: state.state.clone(),
        state_base64: state.state_base64.clone(),
    };
    OutRecord {
        topic: Topic::State,
        key: key.as_bytes().to_vec(),
        value: serde_json::to_vec(&record).expect("state record serializes"),
        headers: vec![(
            header::EVENT_ID.to_owned(),
            state.last_event_id.as_bytes().to_vec(),
        )],
        timestamp: Some(state.updated_at),
    }
}

fn dead_letter(bad: Undecodable) -> OutRecord {
    let mut headers = bad.headers;
    headers.push((header::ERROR.to_owned(), bad.reason.into_bytes()));
    headers.push((
        "hs-raw-partition".to_owned(),
        bad.partition.to_string().into_bytes(),
    ));
    headers.push((
        "hs-raw-offset".to_owned(),
        bad.offset.to_string().into_bytes(),
    ));
    OutRecord {
        topic: Topic::Dlq,
        key: bad.key.unwrap_or_default(),
        value: bad.body,
        headers,
        timestamp: bad.timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::raw::RawMeta;

    fn input(offset: i64, event_id: &str, entity: &str, at: i64, body: &str) -> Decoded {
        Ok(RawInput {
            partition: 0,
            offset,
            meta: RawMeta {
                tenant: "acme".into(),
                source: "orders".into(),
                scheme: "hmac".into(),
                event_id: event_id.into(),
                event_type: "order.updated".into(),
                entity: entity.into(),
                occurred_at: at,
                received_at: 1_000 + offset,
                content_type: "application/json".into(),
                key_id: "k1".into(),
                event_id_derived: false,
            },
            body: body.as_bytes().to_vec(),
        })
    }

    fn catalog() -> SourceCatalog {
        SourceCatalog {
            sources: HashMap::new(),
        }
    }

    fn topics(out: &[OutRecord]) -> Vec<Topic> {
        out.iter().map(|r| r.topic).collect()
    }

    #[test]
    fn duplicates_are_dropped_within_and_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = PartitionTask::open(0, dir.path()).unwrap();
        let mut out = Vec::new();
        let (batch, stats) = task
            .process(
                vec![
                    input(0, "e1", "o1", 10, "{}"),
                    input(1, "e1", "o1", 10, "{}"),
                ],
                &catalog(),
                &mut out,
            )
            .unwrap();
        assert_eq!((stats.events, stats.duplicates), (1, 1));
        assert_eq!(topics(&out), vec![Topic::Events, Topic::State]);
        task.commit(&batch).unwrap();
        assert_eq!(task.next_offset(), Some(2));

        out.clear();
        let (_, stats) = task
            .process(vec![input(2, "e1", "o1", 10, "{}")], &catalog(), &mut out)
            .unwrap();
        assert_eq!(stats.duplicates, 1);
        assert!(out.is_empty());
    }

    #[test]
    fn reprocessing_an_uncommitted_batch_gives_identical_outputs_and_committed_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = PartitionTask::open(0, dir.path()).unwrap();
        let records = || {
            vec![
                input(0, "e1", "o1", 20, r#"{"v":1}"#),
                input(1, "e2", "o1", 10, r#"{"v":0}"#),
            ]
        };
        let (mut first, mut second) = (Vec::new(), Vec::new());
        let (batch, stats) = task.process(records(), &catalog(), &mut first).unwrap();
        assert_eq!(stats.late, 1);
        task.process(records(), &catalog(), &mut second).unwrap();
        assert_eq!(first, second);
        task.commit(&batch).unwrap();
        drop(task);

        let task = PartitionTask::open(0, dir.path()).unwrap();
        let mut again = Vec::new();
        let (_, stats) = task.process(records(), &catalog(), &mut again).unwrap();
        assert_eq!(stats.already_applied, 2);
        assert!(again.is_empty());
    }

    #[test]
    fn late_events_are_flagged_and_do_not_regress_state() {
        let dir = tempfile::tempdir().unwrap();
        let task = PartitionTask::open(0, dir.path()).unwrap();
        let mut out = Vec::new();
        task.process(
            vec![
                input(0, "new", "o1", 20, r#"{"v":2}"#),
                input(1, "old", "o1", 10, r#"{"v":1}"#),
            ],
            &catalog(),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            topics(&out),
            vec![Topic::Events, Topic::State, Topic::Events]
        );
        let late: EventRecord = serde_json::from_slice(&out[2].value).unwrap();
        assert!(late.late);
        let state: StateRecord = serde_json::from_slice(&out[1].value).unwrap();
        assert_eq!((state.version, state.last_event_id.as_str()), (1, "new"));
    }

    #[test]
    fn undecodable_records_go_to_the_dlq_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let task = PartitionTask::open(0, dir.path()).unwrap();
        let bad = Undecodable {
            partition: 0,
            offset: 0,
            key: Some(b"acme/o1".to_vec()),
            headers: vec![],
            body: b"x".to_vec(),
            timestamp: Some(1),
            reason: "raw record is missing header `hs-tenant`".into(),
        };
        let mut out = Vec::new();
        let (batch, stats) = task
            .process(vec![Err(Box::new(bad))], &catalog(), &mut out)
            .unwrap();
        assert_eq!(stats.dead_letters, 1);
        assert_eq!(batch.next_offset, Some(1));
        assert_eq!(out[0].topic, Topic::Dlq);
        assert!(out[0]
            .headers
            .iter()
            .any(|(k, v)| k == "hs-error" && v.starts_with(b"raw record")));
    }
}
