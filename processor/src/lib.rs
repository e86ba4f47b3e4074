//! hookstream processor: derives clean topics from `raw`.
//!
//! Kafka Streams vocabulary: the processor is a consumer group over `raw`; each assigned
//! partition is a **partition task** ([`task`]) with its own **state store** ([`store`],
//! RocksDB, column families per store). The cores are pure functions without I/O —
//! [`dedupe`] (exact, by tenant, source and event id) and [`reconcile`] (latest event time
//! wins, tombstones block resurrection) — and the I/O lives at the edges: [`input`] decodes
//! `raw` records, [`consumer`] runs the batch → process → produce → store → commit protocol.
//!
//! Outputs: `events` (every first delivery, flagged `late` when older than the entity's
//! state), `state` (the entity's new state whenever it changed) and `dlq` (records that could
//! not be decoded, with the reason in `hs-error`).

pub mod admission;
pub mod assignment;
pub mod budget_view;
pub mod caps;
pub mod catalog;
pub mod changelog;
pub mod clock;
pub mod commit;
pub mod consumer;
pub mod dedupe;
pub mod error;
pub mod input;
mod live;
mod open;
pub mod output;
pub mod progress;
pub mod reconcile;
pub mod reorder;
pub mod restore;
pub mod retry;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod task;
pub mod ttl;
pub mod usage_view;

use std::collections::BTreeMap;
use std::sync::Arc;

use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, Producer};
use schemas::config::Config;
use schemas::kafka::{client_config, Role};
use schemas::topics::{Topic, TopicNames};
use tokio::sync::watch;

pub use error::ProcessorError;

use crate::assignment::RebalanceContext;
use crate::catalog::SourceCatalog;
use crate::consumer::{GroupConsumer, Pipeline};
use crate::progress::Progress;
pub use crate::progress::{Phase, TaskProgress};
use crate::task::TaskSettings;

#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Create the topics through the admin API first (off for the embedded mock cluster).
    pub create_topics: bool,
    /// Refuse topics configured to lose data (DescribeConfigs; off for the embedded mock
    /// cluster, which does not implement it).
    pub check_topics: bool,
    /// Valid new configurations to take in between turns (see `live`); none: fixed rules.
    pub reload: Option<watch::Receiver<Arc<Config>>>,
}

/// With static partitions the id is stable, so a restarted instance fences its predecessor's
/// transactions; with group assignment the group metadata sent with the offsets does the
/// fencing (KIP-447) and the id only has to be unique.
fn transactional_id(config: &Config) -> String {
    let group = &config.processor.group_id;
    if config.processor.partitions.is_empty() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("{group}-{:x}-{nanos:x}", std::process::id())
    } else {
        let partitions: Vec<String> = config
            .processor
            .partitions
            .iter()
            .map(i32::to_string)
            .collect();
        format!("{group}-p{}", partitions.join("_"))
    }
}

/// The partition count of `raw`, which routes usage reports and picks alert partitions
/// (`kafka.partitions` only says how many partitions topics are *created* with). Each task
/// writes the changelog partition of its `raw` partition, so the changelog needs as many.
fn checked_partitions(
    consumer: &GroupConsumer,
    config: &Config,
    topics: &TopicNames,
) -> Result<i32, ProcessorError> {
    let count = |topic: Topic| -> Result<i32, ProcessorError> {
        let name = topics.name(topic);
        // A topic just created may take a moment to show in every broker's metadata.
        let partitions = tokio::task::block_in_place(|| {
            let mut backoff = std::time::Duration::from_millis(200);
            for attempt in 0.. {
                let metadata = match consumer
                    .fetch_metadata(Some(&name), std::time::Duration::from_secs(30))
                {
                    Ok(metadata) => metadata,
                    // Broker trouble at start-up is waited out, not a reason to exit.
                    Err(error)
                        if error::RetryClass::of_kafka(&error) != error::RetryClass::Permanent =>
                    {
                        metrics::counter!("hookstream_processor_broker_retries_total", "operation" => "metadata").increment(1);
                        tracing::warn!(topic = %name, %error, retry_in = ?backoff, "cannot read the topic's metadata; retrying");
                        std::thread::sleep(backoff); // backoff between metadata attempts
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                };
                let partitions = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == name && t.error().is_none())
                    .map_or(0, |t| t.partitions().len() as i32);
                if partitions > 0 || attempt == 4 {
                    return Ok::<_, ProcessorError>(partitions);
                }
                std::thread::sleep(std::time::Duration::from_millis(500)); // metadata retry
            }
            unreachable!("the loop returns by its fifth attempt")
        })?;
        if partitions == 0 {
            return Err(ProcessorError::Startup(format!(
                "topic `{name}` does not exist (start `hookstream ingest` or `hookstream process` once with topic creation, or create it)"
            )));
        }
        Ok(partitions)
    };
    let raw = count(Topic::Raw)?;
    if raw != config.kafka.partitions {
        tracing::warn!(
            configured = config.kafka.partitions,
            raw,
            "kafka.partitions differs from the partitions of `raw`; routing by `raw`'s"
        );
    }
    let changelog = count(Topic::Changelog)?;
    if changelog < raw {
        return Err(ProcessorError::Startup(format!(
            "`{}` has {changelog} partitions but `{}` has {raw}: each partition task needs its own changelog partition; add partitions to the changelog",
            topics.name(Topic::Changelog),
            topics.name(Topic::Raw),
        )));
    }
    let reads_usage =
        config.processor.scope.is_none() && config.tenants.iter().any(|t| t.caps.is_some());
    if reads_usage {
        let usage = count(Topic::Usage)?;
        if usage != raw {
            return Err(ProcessorError::Startup(format!(
                "`{}` has {usage} partitions but `{}` has {raw}: each partition task reads the usage reports of its own events from the same partition of `usage` (keys `tenant/entity`, default partitioner); recreate `usage` with {raw} partitions",
                topics.name(Topic::Usage),
                topics.name(Topic::Raw),
            )));
        }
    }
    Ok(raw)
}

/// The largest record the processor's producer sends: its `message.max.bytes` (librdkafka's
/// default 1 000 000 when not set).
fn max_record_bytes(config: &Config) -> usize {
    client_config(&config.kafka, Role::Producer)
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1_000_000)
}

/// Test support: failpoints named in the `FAILPOINTS` environment variable (the `fail`
/// crate's syntax, e.g. `snapshot-torn=2*off->return`) take effect. Unset: none.
fn failpoints_from_env() {
    static SETUP: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("FAILPOINTS").is_some() {
        SETUP.call_once(|| {
            tracing::warn!("FAILPOINTS is set: test failpoints are active");
            std::mem::forget(fail::FailScenario::setup());
        });
    }
}

/// A running processor; [`ProcessorService::stop`] finishes the current batch and returns.
pub struct ProcessorService {
    progress: Progress,
    waiting: retry::Waiting,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<Result<(), ProcessorError>>,
}

impl ProcessorService {
    pub async fn start(config: &Config, options: StartOptions) -> Result<Self, ProcessorError> {
        failpoints_from_env();
        let topics = config.topics();
        if options.create_topics {
            schemas::kafka::ensure_topics_waiting(
                &config.kafka,
                &topics,
                &Topic::ALL,
                config.processor.snapshots.retention_ms(),
            )
            .await?;
        }
        let unsafe_topics = if options.check_topics {
            schemas::topic_config::check(config).await?
        } else {
            Vec::new()
        };
        if !unsafe_topics.is_empty() {
            return Err(ProcessorError::Startup(format!(
                "topics configured to lose data the processor needs (change them with your broker's admin tools, then start again):\n{}",
                unsafe_topics
                    .iter()
                    .map(|(name, why)| format!("  - {name}: {why}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )));
        }
        let state_root = config.processor.state_dir.join(&config.processor.group_id);
        std::fs::create_dir_all(&state_root).map_err(|e| {
            ProcessorError::Startup(format!(
                "cannot create state directory `{}`: {e}",
                state_root.display()
            ))
        })?;
        let mut consumer_config = client_config(&config.kafka, Role::Consumer);
        consumer_config.set("group.id", &config.processor.group_id);
        // A partition task needs to know when it has caught up (see `consumer::Pipeline::run`).
        consumer_config.set("enable.partition.eof", "true");
        let (kafka, consumer_role) = (&config.kafka, Role::Consumer);
        schemas::kafka::default_unless_set(
            &mut consumer_config,
            kafka,
            consumer_role,
            "statistics.interval.ms",
            "5000",
        );
        let consumer: GroupConsumer =
            consumer_config.create_with_context(RebalanceContext::default())?;
        let raw = topics.name(Topic::Raw);
        let raw_partitions = checked_partitions(&consumer, config, &topics)?;
        if config.processor.partitions.is_empty() {
            consumer.subscribe(&[&raw])?;
        } else {
            // Static assignment: no rebalancing; positions come from the group's committed
            // offsets (the task checkpoints stay authoritative and skip what was applied).
            let mut assignment = rdkafka::TopicPartitionList::new();
            for partition in &config.processor.partitions {
                assignment.add_partition_offset(&raw, *partition, rdkafka::Offset::Stored)?;
            }
            consumer.assign(&assignment)?;
            consumer
                .context()
                .assign_manually(&config.processor.partitions);
            tracing::info!(partitions = ?config.processor.partitions, "consuming assigned partitions (no group rebalancing)");
        }
        let mut producer_config = client_config(&config.kafka, Role::Producer);
        // A batch's records are all sent at once and then awaited: lingering only delays the
        // last of them (batches still form while a request is in flight).
        let (kafka, role) = (&config.kafka, Role::Producer);
        schemas::kafka::default_unless_set(&mut producer_config, kafka, role, "linger.ms", "1");
        if config.processor.exactly_once {
            producer_config.set("transactional.id", transactional_id(config));
        }
        let producer: FutureProducer = producer_config.create()?;
        if config.processor.exactly_once {
            let init = std::time::Duration::from_secs(30);
            tokio::task::block_in_place(|| producer.init_transactions(init))?;
        }
        consumer::register_tenant_counters(config.tenants.iter().map(|t| t.id.as_str()));
        let waiting = retry::Waiting::default();
        let pipeline = Pipeline {
            consumer: Arc::new(consumer),
            producer,
            topics,
            catalog: SourceCatalog::new(config),
            state_root,
            batch_max: config.processor.batch_max,
            settings: TaskSettings {
                dedupe_window_ms: (config.processor.dedupe_window_secs.saturating_mul(1000))
                    .min(i64::MAX as u64) as i64,
                max_buffered: config.processor.max_buffered,
                max_record_bytes: max_record_bytes(config),
                max_flush: config.processor.batch_max.saturating_mul(10).max(1),
                batch_max: config.processor.batch_max,
                scope: config.processor.scope.clone().map(Arc::new),
                caps: Some(Arc::new(caps::Caps::new(config, 0, raw_partitions)?)),
                tombstone_retention_ms: match config.processor.tombstone_retention_secs {
                    0 => None,
                    secs => Some(secs.saturating_mul(1000).min(i64::MAX as u64) as i64),
                },
                max_held: config.processor.max_held_per_tenant,
                codecs: Arc::new(
                    schemas::registry::codecs(
                        config,
                        &[Topic::Events, Topic::State, Topic::Deferred, Topic::Alerts],
                    )
                    .await?,
                ),
            },
            idle_flush: std::time::Duration::from_millis(config.processor.idle_flush_ms),
            exactly_once: config.processor.exactly_once,
            progress: Progress::default(),
            budget: if config
                .tenants
                .iter()
                .any(|t| t.caps.is_some() || t.breaker.is_some())
            {
                let mut client = client_config(&config.kafka, Role::Consumer);
                client.set("group.id", format!("{}-budget", config.processor.group_id));
                Some(crate::budget_view::BudgetView::start(
                    client,
                    &config.topics().name(Topic::Budget),
                )?)
            } else {
                None
            },
            budget_absorb: std::time::Duration::from_millis(config.processor.budget_absorb_ms),
            // A rebuild (a scope) does not read live usage reports: they would be applied at
            // wall-clock moments of the rebuild, not where the live run applied them.
            usage: if config.processor.scope.is_none()
                && config.tenants.iter().any(|t| t.caps.is_some())
            {
                let mut client = client_config(&config.kafka, Role::Consumer);
                client.set("group.id", format!("{}-usage", config.processor.group_id));
                Some(crate::usage_view::UsageView::start(
                    client,
                    &config.topics().name(Topic::Usage),
                    config.schema_registry.url.clone(),
                )?)
            } else {
                None
            },
            raw_partitions,
            reload: options.reload,
            running: Arc::new(config.clone()),
            refused: Default::default(),
            waiting: waiting.clone(),
            snapshots: crate::snapshot::Policy::of(&config.processor.snapshots),
            delete_records: if config.processor.snapshots.delete_records {
                Some(client_config(&config.kafka, Role::Admin).create()?)
            } else {
                None
            },
            restore: {
                let mut restore = client_config(&config.kafka, Role::Consumer);
                restore.set("group.id", format!("{}-restore", config.processor.group_id));
                // Restore reads known offset ranges: no reason to long-poll at their end.
                restore.set("fetch.wait.max.ms", "10");
                restore
            },
        };
        let progress = pipeline.progress.clone();
        let (stop, stopped) = watch::channel(false);
        let join = tokio::spawn(pipeline.run(stopped));
        Ok(Self {
            progress,
            waiting,
            stop,
            join,
        })
    }

    /// Serves `GET /metrics` (rendered by `render`) and `GET /healthz` on `listen`.
    pub fn serve_status(
        &self,
        listen: &str,
        render: status::Render,
    ) -> Result<status::StatusServer, ProcessorError> {
        status::StatusServer::start(listen, render, self.progress.clone(), self.waiting.clone())
    }

    /// Where each open partition task stands (as of its last durable batch).
    pub fn progress(&self) -> BTreeMap<i32, TaskProgress> {
        self.progress.lock().expect("progress lock").clone()
    }

    /// Whether the processor has ended (a fatal error; see [`Self::wait`]).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Waits until the processor ends by itself (a fatal error).
    pub async fn wait(&mut self) -> Result<(), ProcessorError> {
        match (&mut self.join).await {
            Ok(result) => result,
            Err(join) => Err(ProcessorError::Startup(format!(
                "processor task failed: {join}"
            ))),
        }
    }

    pub async fn stop(self) -> Result<(), ProcessorError> {
        let _ = self.stop.send(true);
        match self.join.await {
            Ok(result) => result,
            Err(join) => Err(ProcessorError::Startup(format!(
                "processor task failed: {join}"
            ))),
        }
    }
}
