//! The event trail: "what happened to event X?" answered from an index, not a scan.
//!
//! Every fact about an event is already in a topic: refused (`rejected`), appended or
//! redriven (`raw`), dead-lettered (`dlq`), deferred by a cap or breaker (`deferred`),
//! emitted (`events`), delivery attempts (`deliveries`) and given up (`delivery-dlq`). The
//! [`indexer`] reads them all into a RocksDB [`index`] keyed by tenant, source and event id
//! (and by entity and time, and refusals by body hash), so a lookup is one prefix scan.
//!
//! The topics stay the source of truth: the index is derived, bounded by
//! `trail.retention_hours` (7 days by default), and rebuilt by deleting its directory.
//! `hookstream admin` runs the indexer and serves `GET /v1/trail/…`; `hookstream trail`
//! asks it. See docs/trail.md.

pub mod cli;
pub mod fact;
pub mod index;
pub mod indexer;
pub mod timeline;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use schemas::config::Config;

pub use timeline::Timeline;

/// At most this many facts per event, and events per entity lookup.
pub const LIMIT: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error(transparent)]
    Index(#[from] index::IndexError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running trail: its index, and the indexer filling it.
pub struct Trail {
    index: Arc<index::Index>,
    progress: Arc<indexer::Progress>,
    stop: Arc<AtomicBool>,
}

impl Trail {
    /// Opens the index (`trail.dir`) and starts the indexer on its own thread.
    pub fn start(config: &Config) -> Result<Self, TrailError> {
        std::fs::create_dir_all(&config.trail.dir)?;
        let index = Arc::new(index::Index::open(&config.trail.dir)?);
        let progress = Arc::new(indexer::Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (config, i, p, s) = (
            config.clone(),
            index.clone(),
            progress.clone(),
            stop.clone(),
        );
        std::thread::Builder::new()
            .name("trail-indexer".into())
            .spawn(move || {
                if let Err(error) = indexer::run(&config, &i, &p, &s) {
                    tracing::error!(%error, "trail: the indexer stopped");
                }
            })?;
        Ok(Self {
            index,
            progress,
            stop,
        })
    }

    /// An event's timeline.
    pub fn event(
        &self,
        tenant: &str,
        source: &str,
        event_id: &str,
    ) -> Result<Timeline, TrailError> {
        let facts = self.index.event(tenant, source, event_id, LIMIT)?;
        Ok(timeline::build(tenant, source, event_id, facts))
    }

    /// The timelines of an entity's events since `since` (ms), oldest first.
    pub fn entity(
        &self,
        tenant: &str,
        entity: &str,
        since: i64,
    ) -> Result<Vec<Timeline>, TrailError> {
        self.index
            .entity(tenant, entity, since, 100)?
            .into_iter()
            .map(|(source, event_id)| self.event(tenant, &source, &event_id))
            .collect()
    }

    /// A source's refusals since `since` (ms): requests refused before any event id was
    /// trusted, by time and body hash.
    pub fn refusals(
        &self,
        tenant: &str,
        source: &str,
        since: i64,
    ) -> Result<Vec<fact::Fact>, TrailError> {
        Ok(self.index.refusals(tenant, source, since, LIMIT)?)
    }

    /// When the indexer last found nothing new to read (ms; 0: not yet).
    pub fn caught_up_at(&self) -> i64 {
        self.progress.caught_up_at.load(Ordering::Relaxed)
    }
}

impl Drop for Trail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
