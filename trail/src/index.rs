//! The trail's index: a RocksDB store of [`Fact`]s, derived from the topics (which stay the
//! source of truth: delete the directory and it is read again).
//!
//! Keys (`\0` separates text parts; times are big-endian with the sign bit flipped, so
//! they sort):
//!
//! * `E tenant\0source\0event_id\0 time topic\0 partition offset` → the fact (JSON): an
//!   event's trail is one prefix scan.
//! * `N tenant\0entity\0 time source\0event_id` → nothing: an entity's events by time.
//! * `H tenant\0source\0body_sha256\0 time topic\0 partition offset` → a refusal (JSON),
//!   found from the body hash of the event's `raw` record.
//! * `R tenant\0source\0 time topic\0 partition offset` → a refusal: a source's refusals by
//!   time.
//! * `X time <the fact's keys>` → nothing: expiry in time order.
//! * `O topic\0 partition` → the next offset to read.
//!
//! A fact is keyed by its topic, partition and offset, so reading a record twice writes the
//! same keys: indexing is idempotent, and offsets are stored in the same write batch as the
//! facts they cover.

use std::collections::HashMap;
use std::path::Path;

use rocksdb::{Direction, IteratorMode, Options, WriteBatch, DB};

use crate::fact::{Fact, Stage};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("trail index: {0}")]
    Store(#[from] rocksdb::Error),
}

/// A stored key and value.
type Entry = (Box<[u8]>, Box<[u8]>);

pub struct Index {
    db: DB,
}

fn time_bytes(at: i64) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

fn text_key(tag: u8, parts: &[&str]) -> Vec<u8> {
    let mut key = vec![tag];
    for part in parts {
        key.extend_from_slice(part.as_bytes());
        key.push(0);
    }
    key
}

fn position(key: &mut Vec<u8>, fact: &Fact) {
    key.extend_from_slice(&time_bytes(fact.at));
    key.extend_from_slice(fact.topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&fact.partition.to_be_bytes());
    key.extend_from_slice(&fact.offset.to_be_bytes());
}

/// The keys a fact is written under (the first holds it).
fn keys(fact: &Fact) -> Vec<Vec<u8>> {
    let source = fact.source.as_deref().unwrap_or("");
    let mut keys = Vec::new();
    if let Some(event_id) = &fact.event_id {
        let mut key = text_key(b'E', &[&fact.tenant, source, event_id]);
        position(&mut key, fact);
        keys.push(key);
        if let (Some(entity), Stage::Appended | Stage::Redriven) = (&fact.entity, fact.stage) {
            let mut key = text_key(b'N', &[&fact.tenant, entity]);
            key.extend_from_slice(&time_bytes(fact.at));
            key.extend_from_slice(source.as_bytes());
            key.push(0);
            key.extend_from_slice(event_id.as_bytes());
            keys.push(key);
        }
    }
    if fact.stage == Stage::Refused {
        let hash = fact.body_sha256.as_deref().unwrap_or("");
        let mut key = text_key(b'H', &[&fact.tenant, source, hash]);
        position(&mut key, fact);
        keys.push(key);
        let mut key = text_key(b'R', &[&fact.tenant, source]);
        position(&mut key, fact);
        keys.push(key);
    }
    keys
}

impl Index {
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        Ok(Self {
            db: DB::open(&options, path)?,
        })
    }

    /// Writes facts and the next offsets of the partitions they came from, atomically.
    pub fn apply(
        &self,
        facts: &[Fact],
        next: &HashMap<(String, i32), i64>,
    ) -> Result<(), IndexError> {
        let mut batch = WriteBatch::default();
        let now = schemas::time::now_millis();
        for fact in facts {
            let keys = keys(fact);
            if keys.is_empty() {
                continue;
            }
            let value = serde_json::to_vec(fact).expect("a fact serializes");
            // An emission or deferral is timed by its event's time (a late event's is far in
            // the past): it is kept for the retention from when it was indexed.
            let expires_from = match fact.stage {
                Stage::Emitted | Stage::Deferred => fact.at.max(now),
                _ => fact.at,
            };
            let mut expiry = vec![b'X'];
            expiry.extend_from_slice(&time_bytes(expires_from));
            expiry.extend_from_slice(&(keys.len() as u32).to_be_bytes());
            for (i, key) in keys.iter().enumerate() {
                let holds = i == 0 || key[0] == b'H' || key[0] == b'R';
                batch.put(key, if holds { value.as_slice() } else { &[] });
                expiry.extend_from_slice(&(key.len() as u32).to_be_bytes());
                expiry.extend_from_slice(key);
            }
            batch.put(expiry, []);
        }
        for ((topic, partition), offset) in next {
            let mut key = text_key(b'O', &[topic]);
            key.extend_from_slice(&partition.to_be_bytes());
            batch.put(key, offset.to_be_bytes());
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// The next offset to read of a partition, if any was indexed.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, IndexError> {
        let mut key = text_key(b'O', &[topic]);
        key.extend_from_slice(&partition.to_be_bytes());
        Ok(self
            .db
            .get(key)?
            .and_then(|v| v.try_into().ok())
            .map(i64::from_be_bytes))
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, IndexError> {
        let start = from.unwrap_or(prefix);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(start, Direction::Forward))
        {
            let (key, value) = item?;
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((key, value));
        }
        Ok(out)
    }

    /// Every fact of an event, and the refusals of a request with the same body as one of
    /// its `raw` records, in time order.
    pub fn event(
        &self,
        tenant: &str,
        source: &str,
        event_id: &str,
        limit: usize,
    ) -> Result<Vec<Fact>, IndexError> {
        let prefix = text_key(b'E', &[tenant, source, event_id]);
        let mut facts: Vec<Fact> = self
            .scan(&prefix, None, limit)?
            .iter()
            .filter_map(|(_, v)| serde_json::from_slice(v).ok())
            .collect();
        let hashes: std::collections::BTreeSet<String> = facts
            .iter()
            .filter(|f| matches!(f.stage, Stage::Appended))
            .filter_map(|f| f.body_sha256.clone())
            .collect();
        for hash in hashes {
            let prefix = text_key(b'H', &[tenant, source, &hash]);
            facts.extend(
                self.scan(&prefix, None, limit)?
                    .iter()
                    .filter_map(|(_, v)| serde_json::from_slice::<Fact>(v).ok()),
            );
        }
        // `events` and `deferred` records carry event time as their timestamp; what came of
        // a `raw` record happened after it was appended.
        let appended: HashMap<(i32, i64), i64> = facts
            .iter()
            .filter(|f| matches!(f.stage, Stage::Appended | Stage::Redriven))
            .map(|f| ((f.partition, f.offset), f.at))
            .collect();
        for fact in &mut facts {
            if let Some(at) = fact
                .raw_offset
                .and_then(|o| appended.get(&(fact.partition, o)))
            {
                fact.at = fact.at.max(*at);
            }
        }
        facts.sort_by(|a, b| {
            (a.at, a.stage.rank(), &a.topic, a.offset).cmp(&(
                b.at,
                b.stage.rank(),
                &b.topic,
                b.offset,
            ))
        });
        facts.dedup();
        Ok(facts)
    }

    /// The events of an entity since `since` (ms), oldest first: (source, event id).
    pub fn entity(
        &self,
        tenant: &str,
        entity: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, IndexError> {
        let prefix = text_key(b'N', &[tenant, entity]);
        let mut from = prefix.clone();
        from.extend_from_slice(&time_bytes(since));
        let mut seen = Vec::new();
        for (key, _) in self.scan(&prefix, Some(&from), usize::MAX)? {
            let rest = &key[prefix.len() + 8..];
            let mut parts = rest.splitn(2, |b| *b == 0);
            let source = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let event = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            if !seen.contains(&(source.clone(), event.clone())) {
                seen.push((source, event));
                if seen.len() >= limit {
                    break;
                }
            }
        }
        Ok(seen)
    }

    /// A source's refusals since `since` (ms), oldest first.
    pub fn refusals(
        &self,
        tenant: &str,
        source: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<Fact>, IndexError> {
        let prefix = text_key(b'R', &[tenant, source]);
        let mut from = prefix.clone();
        from.extend_from_slice(&time_bytes(since));
        Ok(self
            .scan(&prefix, Some(&from), limit)?
            .iter()
            .filter_map(|(_, v)| serde_json::from_slice(v).ok())
            .collect())
    }

    /// Deletes facts older than `before` (ms); returns how many.
    pub fn expire(&self, before: i64) -> Result<usize, IndexError> {
        let end = {
            let mut key = vec![b'X'];
            key.extend_from_slice(&time_bytes(before));
            key
        };
        let mut batch = WriteBatch::default();
        let mut expired = 0;
        for item in self
            .db
            .iterator(IteratorMode::From(b"X", Direction::Forward))
        {
            let (key, _) = item?;
            if key[0] != b'X' || *key >= *end {
                break;
            }
            let mut rest = &key[9..];
            let count = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
            rest = &rest[4..];
            for _ in 0..count {
                let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
                batch.delete(&rest[4..4 + len]);
                rest = &rest[4 + len..];
            }
            batch.delete(&key);
            expired += 1;
        }
        self.db.write(batch)?;
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(stage: Stage, event: &str, at: i64, offset: i64) -> Fact {
        Fact {
            stage,
            tenant: "acme".into(),
            source: Some("stripe".into()),
            event_id: (stage != Stage::Refused).then(|| event.to_owned()),
            entity: Some("cus_1".into()),
            at,
            topic: "raw".into(),
            partition: 0,
            offset,
            detail: String::new(),
            raw_offset: None,
            body_sha256: matches!(stage, Stage::Refused | Stage::Appended)
                .then(|| "b0d7".to_owned()),
        }
    }

    #[test]
    fn an_events_trail_has_its_facts_and_the_refusals_of_its_body_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let facts = [
            fact(Stage::Refused, "", 10, 1),
            fact(Stage::Appended, "evt_1", 20, 2),
            fact(Stage::Emitted, "evt_1", 30, 3),
            fact(Stage::Appended, "evt_2", 25, 4),
            fact(Stage::Appended, "evt_1", 20, 2), // read twice: the same keys
        ];
        let next = HashMap::from([(("raw".to_owned(), 0), 5)]);
        index.apply(&facts, &next).unwrap();
        let trail = index.event("acme", "stripe", "evt_1", 100).unwrap();
        let stages: Vec<(Stage, i64)> = trail.iter().map(|f| (f.stage, f.at)).collect();
        assert_eq!(
            stages,
            [
                (Stage::Refused, 10),
                (Stage::Appended, 20),
                (Stage::Emitted, 30)
            ]
        );
        assert_eq!(
            index.event("acme", "stripe", "evt_", 100).unwrap(),
            [],
            "ids are whole"
        );
        assert_eq!(index.event("other", "stripe", "evt_1", 100).unwrap(), []);
        assert_eq!(index.next_offset("raw", 0).unwrap(), Some(5));
        assert_eq!(
            index.entity("acme", "cus_1", 0, 10).unwrap(),
            [
                ("stripe".to_owned(), "evt_1".to_owned()),
                ("stripe".to_owned(), "evt_2".to_owned())
            ]
        );
        assert_eq!(index.entity("acme", "cus_1", 21, 10).unwrap().len(), 1);
        assert_eq!(index.refusals("acme", "stripe", 0, 10).unwrap().len(), 1);
        assert_eq!(
            index.expire(21).unwrap(),
            2,
            "the refusal and the first append"
        );
        let trail = index.event("acme", "stripe", "evt_1", 100).unwrap();
        assert_eq!(
            trail.iter().map(|f| f.stage).collect::<Vec<_>>(),
            [Stage::Emitted]
        );
        assert_eq!(index.refusals("acme", "stripe", 0, 10).unwrap(), []);
    }

    #[test]
    fn an_emission_of_a_late_event_is_kept_for_the_retention_from_when_it_was_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let long_ago = schemas::time::parse_rfc3339("2020-01-01T00:00:00.000Z").unwrap();
        let now = schemas::time::now_millis();
        let facts = [
            fact(Stage::Appended, "late", now, 1),
            Fact {
                topic: "events".into(),
                raw_offset: Some(1),
                ..fact(Stage::Emitted, "late", long_ago, 1)
            },
        ];
        index.apply(&facts, &HashMap::new()).unwrap();
        assert_eq!(
            index.expire(now - 3_600_000).unwrap(),
            0,
            "nothing is an hour old"
        );
        let stages: Vec<Stage> = index
            .event("acme", "stripe", "late", 100)
            .unwrap()
            .iter()
            .map(|f| f.stage)
            .collect();
        assert_eq!(
            stages,
            [Stage::Appended, Stage::Emitted],
            "after its raw record"
        );
    }

    #[test]
    fn times_before_the_epoch_and_far_ahead_sort() {
        let mut times = [i64::MIN, -5, 0, 7, i64::MAX];
        times.reverse();
        let mut keys: Vec<[u8; 8]> = times.iter().map(|t| time_bytes(*t)).collect();
        keys.sort();
        let sorted: Vec<i64> = keys
            .iter()
            .map(|k| (u64::from_be_bytes(*k) ^ (1 << 63)) as i64)
            .collect();
        assert_eq!(sorted, [i64::MIN, -5, 0, 7, i64::MAX]);
    }
}
