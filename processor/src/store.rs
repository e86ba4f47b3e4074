//! The state store of one partition task: a RocksDB instance with one column family per
//! store —
//!
//! | store    | key | value |
//! |----------|-----|-------|
//! | `dedupe` | dedupe key (tenant, source, event id) | source stream time at which it expires |
//! | `expiry` | source + expiry time + dedupe key | — (index to expire `dedupe` by stream time) |
//! | `entity` | `tenant/entity` | reconciled [`EntityState`](crate::reconcile::EntityState) |
//! | `buffer` | source + release time + event time + event id + offset | an event held back for reordering |
//! | `clock`  | source, or tenant | stream time per source ([`crate::clock`]) and per tenant |
//! | `meta`   | `checkpoint`, `buffered`, `format` | task position and counters |
//!
//! "source" is the length-prefixed (tenant, source) of [`crate::clock::source_key`]: every
//! store a source's stream time drives is ordered by source first, so each source's due
//! entries are one range scan and no source's clock can reach another's entries.
//!
//! Every change of a batch is an [`Op`]; a batch's ops are written in one atomic `WriteBatch`
//! *together with* the checkpoint, so the store and the position in `raw` never disagree:
//! after a crash, records before the checkpoint are skipped, records after it processed again.
//! The same ops are what the changelog carries.
//!
//! The store keeps no write-ahead log of its own: every write but the local `meta` keys is
//! in the changelog before it reaches the store, as in Kafka Streams. Its column families
//! flush atomically, so a crash leaves it as of some earlier write, consistent with its
//! `changelog_next`: a stale store, which [`crate::restore`] brings up to date from there.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteOptions, DB,
};

use crate::error::ProcessorError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    Dedupe,
    Expiry,
    Entity,
    Buffer,
    Meta,
    /// Caps: each tenant's own state, the other partitions' budget shares, the entity
    /// breakers' tracks (one key each, [`crate::admission::stored`]) and each admitted
    /// event's usage entry (`u` + …).
    Caps,
    /// Events deferred by a cap until its window resets, per tenant in `raw` offset order.
    Held,
    /// Stream time per (tenant, source) and per tenant ([`crate::clock`]).
    Clock,
    /// What expires by a tenant's stream time: tombstones, usage entries of unknown events,
    /// idle entity breaker tracks ([`crate::ttl`]).
    Ttl,
}

impl Cf {
    pub const ALL: [Cf; 9] = [
        Cf::Dedupe,
        Cf::Expiry,
        Cf::Entity,
        Cf::Buffer,
        Cf::Meta,
        Cf::Caps,
        Cf::Held,
        Cf::Clock,
        Cf::Ttl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Dedupe => "dedupe",
            Cf::Expiry => "expiry",
            Cf::Entity => "entity",
            Cf::Buffer => "buffer",
            Cf::Meta => "meta",
            Cf::Caps => "caps",
            Cf::Held => "held",
            Cf::Clock => "clock",
            Cf::Ttl => "ttl",
        }
    }

    pub fn tag(self) -> u8 {
        self as u8
    }

    pub fn from_tag(tag: u8) -> Option<Cf> {
        Cf::ALL.into_iter().find(|cf| cf.tag() == tag)
    }
}

/// One change to the store: a put, or a delete when `value` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub cf: Cf,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl Op {
    /// A put of an `i64` into `meta`.
    pub fn meta(key: &[u8], value: i64) -> Op {
        Op {
            cf: Cf::Meta,
            key: key.to_vec(),
            value: Some(value.to_be_bytes().to_vec()),
        }
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

pub const CHECKPOINT: &[u8] = b"checkpoint";
/// The store's key layout version ([`STORE_FORMAT`]), written with every batch.
pub const FORMAT: &[u8] = b"format";
/// 2: stream time per (tenant, source); `buffer` and `expiry` keys start with the source.
pub const STORE_FORMAT: i64 = 2;
pub const BUFFERED: &[u8] = b"buffered";
/// The next `usage` offset the task has to apply (its partition of `usage` is co-partitioned
/// with its partition of `raw`): moved in the durable step that applies the reports.
pub const USAGE_NEXT: &[u8] = b"usage_next";
/// The most records one batch of this task may have decided (`processor.batch_max` when it
/// was written): a crashed predecessor may have emitted that many records' outputs past the
/// checkpoint, which its successor must re-emit identically.
pub const BATCH_BOUND: &[u8] = b"batch_bound";
/// Next offset of the changelog partition this store has applied (local only).
pub const CHANGELOG_NEXT: &[u8] = b"changelog_next";
/// Set while a decided wall-clock flush has not been carried out.
pub const FLUSH_PENDING: &[u8] = b"flush_pending";
/// Epoch of the newest incarnation whose changelog frames this store applied (local only).
pub const EPOCH: &[u8] = b"epoch";
/// Offset (8 bytes) and key of the changelog fence this store last caught up to (local only):
/// its identity, checked against the changelog before the store is reused.
pub const FENCE: &[u8] = b"fence";
/// The latest snapshot of this store in the changelog and the frame bytes written since
/// ([`crate::snapshot::SnapshotState`], local only).
pub const SNAPSHOT: &[u8] = b"snapshot";
/// `meta` keys about this copy of the store and its place in the changelog, not part of the
/// state: never in a snapshot.
pub const LOCAL_META: [&[u8]; 4] = [CHANGELOG_NEXT, EPOCH, FENCE, SNAPSHOT];

pub struct StateStore {
    db: DB,
    path: PathBuf,
}

/// RocksDB settings: a bounded block cache shared by the column families, modest write
/// buffers (state is small per task, and many tasks share a machine), LZ4 compression.
fn options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    let mut options = Options::default();
    options.set_block_based_table_factory(&table);
    options.set_write_buffer_size(16 * 1024 * 1024);
    options.set_max_write_buffer_number(3);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Most point reads miss (a new event's dedupe and usage keys): a memtable bloom filter
    // answers them without walking the skip list.
    options.set_memtable_prefix_bloom_ratio(0.1);
    options.set_memtable_whole_key_filtering(true);
    options
}

impl StateStore {
    pub fn open(path: &Path) -> Result<Self, ProcessorError> {
        let cache = Cache::new_lru_cache(32 * 1024 * 1024);
        let mut db_options = options(&cache);
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_max_open_files(256);
        // No write-ahead log: the changelog is this store's log (as in Kafka Streams). Column
        // families flush together, so after a crash the store is as of one earlier write, a
        // stale store that restore brings up to date from its `changelog_next`.
        db_options.set_atomic_flush(true);
        let families = Cf::ALL
            .into_iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), options(&cache)));
        let db = DB::open_cf_descriptors(&db_options, path, families)
            .map_err(|e| store_error(path, e))?;
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, ProcessorError> {
        self.db.get_cf(self.cf(cf), key).map_err(|e| self.error(e))
    }

    pub fn get_i64(&self, key: &[u8]) -> Result<Option<i64>, ProcessorError> {
        match self.get(Cf::Meta, key)? {
            None => Ok(None),
            Some(bytes) => {
                let array: [u8; 8] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.corrupt(key, "not 8 bytes"))?;
                Ok(Some(i64::from_be_bytes(array)))
            }
        }
    }

    /// The next `raw` offset this store has not yet applied, if it applied any.
    pub fn checkpoint(&self) -> Result<Option<i64>, ProcessorError> {
        self.get_i64(CHECKPOINT)
    }

    /// Entries of `cf` with keys in `[from, to)`, in key order.
    pub fn range(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Vec<Entry>, ProcessorError> {
        self.range_first(cf, from, to, usize::MAX)
    }

    /// At most `n` entries of `cf` with keys in `[from, to)`, in key order.
    pub fn range_first(
        &self,
        cf: Cf,
        from: &[u8],
        to: &[u8],
        n: usize,
    ) -> Result<Vec<Entry>, ProcessorError> {
        let mut out = Vec::new();
        if n == 0 || from >= to {
            return Ok(out);
        }
        // The bound keeps the iterator from walking the deletes past `to` (released events of
        // the next source) looking for a live key it would only discard.
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(to.to_vec());
        let mode = IteratorMode::From(from, Direction::Forward);
        for item in self.db.iterator_cf_opt(self.cf(cf), read, mode) {
            let (key, value) = item.map_err(|e| self.error(e))?;
            out.push((key.to_vec(), value.to_vec()));
            if out.len() >= n {
                break;
            }
        }
        Ok(out)
    }

    /// The first `n` entries of `cf` in key order.
    pub fn first(&self, cf: Cf, n: usize) -> Result<Vec<Entry>, ProcessorError> {
        self.db
            .iterator_cf(self.cf(cf), IteratorMode::Start)
            .take(n)
            .map(|item| {
                item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| self.error(e))
            })
            .collect()
    }

    /// Every entry of every store as puts, local `meta` keys left out: what a snapshot holds.
    pub fn state_ops(&self) -> Result<Vec<Op>, ProcessorError> {
        let mut ops = Vec::new();
        for cf in Cf::ALL {
            for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (key, value) = item.map_err(|e| self.error(e))?;
                if cf == Cf::Meta && LOCAL_META.contains(&key.as_ref()) {
                    continue;
                }
                ops.push(Op {
                    cf,
                    key: key.to_vec(),
                    value: Some(value.to_vec()),
                });
            }
        }
        Ok(ops)
    }

    /// Applies ops atomically.
    pub fn write(&self, ops: &[Op]) -> Result<(), ProcessorError> {
        let mut batch = WriteBatch::default();
        for op in ops {
            match &op.value {
                Some(value) => batch.put_cf(self.cf(op.cf), &op.key, value),
                None => batch.delete_cf(self.cf(op.cf), &op.key),
            }
        }
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| self.error(e))
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("column families are created on open")
    }

    fn error(&self, source: rocksdb::Error) -> ProcessorError {
        store_error(&self.path, source)
    }

    pub fn corrupt(&self, key: &[u8], reason: &str) -> ProcessorError {
        ProcessorError::Corrupt {
            path: self.path.display().to_string(),
            key: String::from_utf8_lossy(key).into_owned(),
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

/// A batch's view of the store: reads see the batch's own writes; writes are collected as
/// [`Op`]s and reach RocksDB only through [`StateStore::write`] at commit.
pub struct Txn<'a> {
    store: &'a StateStore,
    overlay: BTreeMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
    /// Keys [`Txn::put_new`] wrote: the store cannot hold them, so deleting one in the same
    /// batch leaves no op at all.
    fresh: HashSet<(Cf, Vec<u8>)>,
}

impl<'a> Txn<'a> {
    pub fn new(store: &'a StateStore) -> Self {
        Self {
            store,
            overlay: BTreeMap::new(),
            fresh: HashSet::new(),
        }
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, ProcessorError> {
        match self.overlay.get(&(cf, key.to_vec())) {
            Some(value) => Ok(value.clone()),
            None => self.store.get(cf, key),
        }
    }

    pub fn get_i64(&self, key: &[u8]) -> Result<Option<i64>, ProcessorError> {
        match self.overlay.get(&(Cf::Meta, key.to_vec())) {
            Some(Some(bytes)) => Ok(Some(i64::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.store.corrupt(key, "not 8 bytes"))?,
            ))),
            Some(None) => Ok(None),
            None => self.store.get_i64(key),
        }
    }

    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.insert((cf, key), Some(value));
    }

    pub fn put_i64(&mut self, key: &[u8], value: i64) {
        self.put(Cf::Meta, key.to_vec(), value.to_be_bytes().to_vec());
    }

    /// Puts a key the store cannot hold yet (unique by construction, such as a buffered
    /// event's key, which ends with its `raw` offset): an event buffered and released in one
    /// batch then costs the store and the changelog nothing.
    pub fn put_new(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.fresh.insert((cf, key.clone()));
        self.put(cf, key, value);
    }

    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        let entry = (cf, key);
        if self.fresh.remove(&entry) {
            self.overlay.remove(&entry);
        } else {
            self.overlay.insert(entry, None);
        }
    }

    /// Entries of `cf` with keys in `[from, to)` as the batch sees them, in key order.
    pub fn range(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Vec<Entry>, ProcessorError> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .store
            .range(cf, from, to)?
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        for ((_, key), value) in self.overlay.range((cf, from.to_vec())..(cf, to.to_vec())) {
            merged.insert(key.clone(), value.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    /// The first `n` live entries of `cf` with keys in `[from, to)` as the batch sees them.
    pub fn range_first(
        &self,
        cf: Cf,
        from: &[u8],
        to: &[u8],
        n: usize,
    ) -> Result<Vec<Entry>, ProcessorError> {
        let overlay = self.overlay.range((cf, from.to_vec())..(cf, to.to_vec()));
        let deleted = overlay.clone().filter(|(_, v)| v.is_none()).count();
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .store
            .range_first(cf, from, to, n.saturating_add(deleted))?
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        for ((_, key), value) in overlay {
            merged.insert(key.clone(), value.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(n)
            .collect())
    }

    /// The first `n` live entries of `cf` as the batch sees them.
    pub fn first(&self, cf: Cf, n: usize) -> Result<Vec<Entry>, ProcessorError> {
        let deleted = self
            .overlay
            .range((cf, Vec::new())..)
            .take_while(|((c, _), _)| *c == cf)
            .filter(|(_, v)| v.is_none())
            .count();
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .store
            .first(cf, n.saturating_add(deleted))?
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        for ((c, key), value) in self.overlay.range((cf, Vec::new())..) {
            if *c != cf {
                break;
            }
            merged.insert(key.clone(), value.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(n)
            .collect())
    }

    /// The batch's changes, in a deterministic order.
    pub fn into_ops(self) -> Vec<Op> {
        self.overlay
            .into_iter()
            .map(|((cf, key), value)| Op { cf, key, value })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_and_checkpoint_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path()).unwrap();
            assert_eq!(store.checkpoint().unwrap(), None);
            let mut txn = Txn::new(&store);
            txn.put(Cf::Dedupe, b"k1".to_vec(), vec![1]);
            txn.put(Cf::Entity, b"acme/o1".to_vec(), b"{}".to_vec());
            txn.put_i64(CHECKPOINT, 42);
            store.write(&txn.into_ops()).unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.checkpoint().unwrap(), Some(42));
        assert_eq!(store.get(Cf::Dedupe, b"k1").unwrap(), Some(vec![1]));
        assert_eq!(store.get(Cf::Dedupe, b"k2").unwrap(), None);
    }

    #[test]
    fn a_transaction_reads_its_own_writes_over_the_store_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let ops: Vec<Op> = [b"a", b"c", b"e"]
            .iter()
            .map(|k| Op {
                cf: Cf::Buffer,
                key: k.to_vec(),
                value: Some(k.to_vec()),
            })
            .collect();
        store.write(&ops).unwrap();
        let mut txn = Txn::new(&store);
        txn.put(Cf::Buffer, b"b".to_vec(), b"b".to_vec());
        txn.delete(Cf::Buffer, b"c".to_vec());
        txn.put(Cf::Entity, b"b".to_vec(), b"other cf".to_vec());
        let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(txn.range(Cf::Buffer, b"a", b"e").unwrap()),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            keys(txn.first(Cf::Buffer, 2).unwrap()),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(keys(txn.first(Cf::Buffer, 9).unwrap()).len(), 3);
        assert_eq!(
            keys(txn.range_first(Cf::Buffer, b"b", b"z", 2).unwrap()),
            vec![b"b".to_vec(), b"e".to_vec()]
        );
        assert_eq!(txn.get(Cf::Buffer, b"c").unwrap(), None);
        assert_eq!(txn.into_ops().len(), 3);
    }

    #[test]
    fn a_new_key_put_and_deleted_in_one_transaction_leaves_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut txn = Txn::new(&store);
        txn.put_new(Cf::Buffer, b"n1".to_vec(), b"v".to_vec());
        txn.put_new(Cf::Buffer, b"n2".to_vec(), b"v".to_vec());
        assert_eq!(txn.range(Cf::Buffer, b"n", b"o").unwrap().len(), 2);
        txn.delete(Cf::Buffer, b"n1".to_vec());
        txn.delete(Cf::Buffer, b"old".to_vec());
        assert_eq!(txn.range(Cf::Buffer, b"n", b"o").unwrap().len(), 1);
        let ops = txn.into_ops();
        let keys: Vec<(&[u8], bool)> = ops
            .iter()
            .map(|op| (op.key.as_slice(), op.value.is_some()))
            .collect();
        assert_eq!(keys, [(&b"n2"[..], true), (&b"old"[..], false)]);
    }
}
