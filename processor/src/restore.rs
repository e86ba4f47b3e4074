//! Restore: the changelog is the source of truth for every state store; a local RocksDB is a
//! cache of it up to `changelog_next`. When a partition task opens, [`catch_up`] applies the
//! changelog partition from the store's `changelog_next` (or from the beginning, for a store
//! that is new because the partition moved here or the disk was lost) to its end. Ops are
//! applied a batch at a time, atomically with the new `changelog_next`, and only when the
//! batch's commit record follows them (it is produced after the batch's outputs and ops were
//! acknowledged): ops of an attempt cut short by a crash are dropped, and that batch is
//! processed again from `raw`. The task then resumes from the restored
//! checkpoint: `raw` records before it are skipped, so a batch whose changelog records were
//! acknowledged just before a crash is not applied twice.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::ProcessorError;
use crate::output::CHANGELOG_COMMIT;
use crate::store::{Cf, Op, StateStore, CHANGELOG_NEXT};

const DEADLINE: Duration = Duration::from_secs(600);

/// Brings `store` up to the end of its changelog partition; returns the records applied.
pub fn catch_up(
    store: &StateStore,
    client: &ClientConfig,
    topic: &str,
    partition: i32,
) -> Result<u64, ProcessorError> {
    let consumer: BaseConsumer = client.create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
    let stored = store.get_i64(CHANGELOG_NEXT)?;
    if stored.is_some_and(|next| next < low) {
        tracing::warn!(partition, stored = ?stored, low, "changelog records the store needs were deleted; restoring what remains");
    }
    let mut next = stored.unwrap_or(low).max(low);
    if next >= high {
        return Ok(0);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(next))?;
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut ops: Vec<Op> = Vec::new();
    let mut applied = 0u64;
    while next < high {
        if started.elapsed() > DEADLINE {
            return Err(ProcessorError::Startup(format!(
                "restoring partition {partition} from `{topic}` did not reach offset {high} in {DEADLINE:?}"
            )));
        }
        let Some(message) = consumer.poll(Duration::from_secs(1)) else {
            continue;
        };
        let message = message?;
        next = message.offset() + 1;
        let key = message.key().unwrap_or_default();
        if key.first() == Some(&CHANGELOG_COMMIT) {
            let count = message
                .payload()
                .and_then(|p| <[u8; 8]>::try_from(p).ok())
                .map_or(0, |b| u64::from_be_bytes(b) as usize);
            // The batch's ops are the `count` just before its commit; anything earlier and not
            // yet applied belongs to an attempt that never completed.
            let keep = ops.len().saturating_sub(count);
            if keep > 0 {
                tracing::info!(
                    partition,
                    discarded = keep,
                    "dropping changelog ops of an attempt that never completed"
                );
            }
            let mut batch: Vec<Op> = ops.drain(..).skip(keep).collect();
            applied += batch.len() as u64;
            batch.push(Op {
                cf: Cf::Meta,
                key: CHANGELOG_NEXT.to_vec(),
                value: Some(next.to_be_bytes().to_vec()),
            });
            store.write(&batch)?;
            continue;
        }
        match key.first().and_then(|tag| Cf::from_tag(*tag)) {
            Some(cf) => ops.push(Op {
                cf,
                key: key[1..].to_vec(),
                value: message.payload().map(<[u8]>::to_vec),
            }),
            None => tracing::warn!(
                partition,
                offset = message.offset(),
                "skipping a changelog record with an unknown store"
            ),
        }
    }
    if !ops.is_empty() {
        tracing::info!(
            partition,
            discarded = ops.len(),
            "dropping changelog ops of an attempt that never completed"
        );
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    use super::*;
    use crate::output;
    use crate::store::{Txn, CHECKPOINT};

    /// A store rebuilt from its changelog (here on librdkafka's in-process mock cluster) equals
    /// the store that wrote it, and catching up again is a no-op.
    #[test]
    fn a_missing_store_is_rebuilt_from_the_changelog() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("changelog", 2, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();

        let original_dir = tempfile::tempdir().unwrap();
        let original = StateStore::open(original_dir.path()).unwrap();
        for batch in 0..3u8 {
            let mut txn = Txn::new(&original);
            txn.put(Cf::Entity, vec![b'e', batch], vec![batch; 3]);
            txn.put(Cf::Dedupe, vec![b'd', batch], vec![1]);
            if batch == 2 {
                txn.delete(Cf::Entity, vec![b'e', 0]);
            }
            txn.put_i64(CHECKPOINT, i64::from(batch) * 10);
            let ops = txn.into_ops();
            let mut records: Vec<_> = ops.iter().map(|op| output::changelog(1, op)).collect();
            if batch == 1 {
                // An attempt that crashed after two of its records: never applied.
                let crashed: Vec<_> = ops
                    .iter()
                    .take(2)
                    .map(|op| output::changelog(1, op))
                    .collect();
                records.splice(0..0, crashed);
            }
            records.push(output::changelog_commit(
                1,
                &format!("attempt-{batch}"),
                ops.len(),
            ));
            for record in &records {
                let mut base = BaseRecord::<Vec<u8>, Vec<u8>>::to("changelog")
                    .key(&record.key)
                    .partition(1);
                if let Some(value) = &record.value {
                    base = base.payload(value);
                }
                producer.send(base).map_err(|(e, _)| e).unwrap();
            }
            original.write(&ops).unwrap();
        }
        // A last attempt cut short: its ops have no commit record and must not be applied.
        let mut tail = Txn::new(&original);
        tail.put(Cf::Entity, b"never".to_vec(), b"applied".to_vec());
        for op in tail.into_ops() {
            let record = output::changelog(1, &op);
            let base = BaseRecord::<Vec<u8>, Vec<u8>>::to("changelog")
                .key(&record.key)
                .payload(record.value.as_ref().unwrap())
                .partition(1);
            producer.send(base).map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();

        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &brokers)
            .set("group.id", "restore-test");
        let rebuilt_dir = tempfile::tempdir().unwrap();
        let rebuilt = StateStore::open(rebuilt_dir.path()).unwrap();
        let applied = catch_up(&rebuilt, &client, "changelog", 1).unwrap();
        assert_eq!(applied, 3 * 3 + 1);
        assert_eq!(rebuilt.get(Cf::Entity, b"never").unwrap(), None);
        for cf in [Cf::Entity, Cf::Dedupe] {
            assert_eq!(
                rebuilt.first(cf, 100).unwrap(),
                original.first(cf, 100).unwrap(),
                "{}",
                cf.name()
            );
        }
        assert_eq!(rebuilt.checkpoint().unwrap(), Some(20));
        assert_eq!(
            rebuilt.get(Cf::Entity, b"e\0").unwrap(),
            None,
            "the delete was restored"
        );
        assert_eq!(catch_up(&rebuilt, &client, "changelog", 1).unwrap(), 0);
        assert_eq!(
            catch_up(&rebuilt, &client, "changelog", 0).unwrap(),
            0,
            "an empty partition restores nothing"
        );
    }
}
