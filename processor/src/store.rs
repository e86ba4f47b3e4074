//! The state store of one partition task: a RocksDB instance with one column family per
//! store — `dedupe` (seen event ids), `entity` (reconciled state per `tenant/entity`) and
//! `meta` (the checkpoint: the next input offset to process). A task's changes for a batch
//! are written in one atomic `WriteBatch` *together with* the checkpoint, so the store and
//! the position in `raw` can never disagree: after a crash, records before the checkpoint are
//! skipped, records after it are processed again.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};

use crate::error::ProcessorError;
use crate::reconcile::EntityState;

const CF_DEDUPE: &str = "dedupe";
const CF_ENTITY: &str = "entity";
const CF_META: &str = "meta";
const CHECKPOINT: &[u8] = b"checkpoint";

pub struct StateStore {
    db: DB,
    path: PathBuf,
}

/// The changes of one batch, applied atomically by [`StateStore::write`].
#[derive(Debug, Default)]
pub struct StoreBatch {
    pub seen: Vec<Vec<u8>>,
    pub entities: Vec<(String, EntityState)>,
    pub next_offset: Option<i64>,
}

impl StoreBatch {
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.entities.is_empty() && self.next_offset.is_none()
    }
}

impl StateStore {
    pub fn open(path: &Path) -> Result<Self, ProcessorError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let families = [CF_DEDUPE, CF_ENTITY, CF_META]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db =
            DB::open_cf_descriptors(&options, path, families).map_err(|e| store_error(path, e))?;
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next `raw` offset this store has not yet applied, if it applied any.
    pub fn checkpoint(&self) -> Result<Option<i64>, ProcessorError> {
        let value = self
            .db
            .get_cf(self.cf(CF_META), CHECKPOINT)
            .map_err(|e| self.error(e))?;
        match value {
            None => Ok(None),
            Some(bytes) => {
                let array: [u8; 8] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.corrupt("checkpoint", "not 8 bytes"))?;
                Ok(Some(i64::from_be_bytes(array)))
            }
        }
    }

    pub fn seen(&self, dedupe_key: &[u8]) -> Result<bool, ProcessorError> {
        let found = self
            .db
            .get_pinned_cf(self.cf(CF_DEDUPE), dedupe_key)
            .map_err(|e| self.error(e))?;
        Ok(found.is_some())
    }

    pub fn entity(&self, key: &str) -> Result<Option<EntityState>, ProcessorError> {
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_ENTITY), key.as_bytes())
            .map_err(|e| self.error(e))?;
        value
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| self.corrupt(key, &e.to_string()))
            })
            .transpose()
    }

    pub fn write(&self, batch: &StoreBatch) -> Result<(), ProcessorError> {
        let mut write = WriteBatch::default();
        for key in &batch.seen {
            write.put_cf(self.cf(CF_DEDUPE), key, []);
        }
        for (key, state) in &batch.entities {
            let value = serde_json::to_vec(state).expect("entity state serializes");
            write.put_cf(self.cf(CF_ENTITY), key.as_bytes(), value);
        }
        if let Some(next) = batch.next_offset {
            write.put_cf(self.cf(CF_META), CHECKPOINT, next.to_be_bytes());
        }
        self.db.write(write).map_err(|e| self.error(e))
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created on open")
    }

    fn error(&self, source: rocksdb::Error) -> ProcessorError {
        store_error(&self.path, source)
    }

    fn corrupt(&self, key: &str, reason: &str) -> ProcessorError {
        ProcessorError::Corrupt {
            path: self.path.display().to_string(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

fn store_error(path: &Path, source: rocksdb::Error) -> ProcessorError {
    ProcessorError::Store {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(version: u64) -> EntityState {
        EntityState {
            version,
            updated_at: 5,
            last_event_id: "e".into(),
            last_event_type: "t".into(),
            deleted: false,
            state: None,
            state_base64: None,
        }
    }

    #[test]
    fn a_batch_and_its_checkpoint_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path()).unwrap();
            assert_eq!(store.checkpoint().unwrap(), None);
            let batch = StoreBatch {
                seen: vec![b"k1".to_vec()],
                entities: vec![("acme/o1".into(), state(3))],
                next_offset: Some(42),
            };
            store.write(&batch).unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.checkpoint().unwrap(), Some(42));
        assert!(store.seen(b"k1").unwrap());
        assert!(!store.seen(b"k2").unwrap());
        assert_eq!(store.entity("acme/o1").unwrap(), Some(state(3)));
        assert_eq!(store.entity("acme/o2").unwrap(), None);
    }
}
