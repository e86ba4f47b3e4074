//! `hookstream deliver`: sends the tenants' events on to their customers' endpoints as
//! Standard Webhooks, with retries kept in Kafka (delay topics), an attempt log
//! (`deliveries`) and dead letters (`delivery-dlq`). See docs/delivery.md.
//!
//! The cores are pure: [`schedule`] (tiers, jitter, what a status means), [`breaker`] (per
//! endpoint) and [`sign`]; the I/O (Kafka, HTTP) is in [`run`].

pub mod breaker;
pub mod endpoints;
pub mod error;
pub mod guard;
pub mod offsets;
pub mod record;
pub mod run;
pub mod schedule;
pub mod sign;
pub mod status;

use rdkafka::consumer::StreamConsumer;
use schemas::config::Config;
use schemas::kafka::{client_config, ensure_named_topics, ensure_topics_waiting, Role};
use tokio::sync::watch;

pub use error::DeliverError;
pub use run::Deliverer;

/// A delivery service ready to run: its topics exist, its consumer is created.
pub struct Ready {
    deliverer: std::sync::Arc<Deliverer>,
    consumer: StreamConsumer,
}

impl Ready {
    /// Runs the delivery loop until `stop` turns true.
    pub async fn run(&self, stop: watch::Receiver<bool>) -> Result<(), DeliverError> {
        self.deliverer.run(&self.consumer, stop).await
    }
}

/// Creates the delivery topics (waiting out broker trouble) and the consumer.
pub async fn start(config: &Config) -> Result<Ready, DeliverError> {
    let deliverer = Deliverer::new(config)?;
    let names = config.topics();
    ensure_topics_waiting(&config.kafka, &names, &[schemas::topics::Topic::Events], 0).await?;
    let mut backoff = std::time::Duration::from_millis(500);
    loop {
        match ensure_named_topics(&config.kafka, &deliverer.names().own()).await {
            Err(error) if error.is_retriable() => {
                tracing::warn!(%error, retry_in = ?backoff, "cannot create the delivery topics yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
            result => break result?,
        }
    }
    let statuses = {
        let mut client = client_config(&config.kafka, Role::Consumer);
        // Assigned, never committing; librdkafka still wants a group id to assign.
        client.set(
            "group.id",
            format!("{}-deliver-status", config.processor.group_id),
        );
        let topic = deliverer.names().endpoints.clone();
        tokio::task::spawn_blocking(move || status::load(client, &topic))
            .await
            .map_err(|e| DeliverError::Config(format!("loading endpoint statuses: {e}")))??
    };
    deliverer.restore_statuses(statuses);
    let mut client = client_config(&config.kafka, Role::Consumer);
    client
        .set("group.id", format!("{}-deliver", config.processor.group_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // A resumed retry tier is fetched within this, so a wait ends on time.
        .set("fetch.wait.max.ms", "50");
    let consumer: StreamConsumer = client.create()?;
    Ok(Ready {
        deliverer: std::sync::Arc::new(deliverer),
        consumer,
    })
}

/// Re-enables an endpoint disabled by a 410, by failing, or by hand (`TENANT/ENDPOINT`):
/// writes its cleared status to `delivery-endpoints`, which running instances read at their
/// next start.
pub async fn enable(config: &Config, key: &str) -> Result<(), DeliverError> {
    let (tenant, endpoint) = key
        .split_once('/')
        .ok_or_else(|| DeliverError::Config(format!("`{key}` is not TENANT/ENDPOINT")))?;
    let names = run::Names::new(config);
    ensure_named_topics(&config.kafka, &names.own()).await?;
    let producer: rdkafka::producer::FutureProducer =
        client_config(&config.kafka, Role::Producer).create()?;
    let status = status::EndpointStatus::new(tenant, endpoint);
    let value = serde_json::to_vec(&status).expect("status serializes");
    let record = rdkafka::producer::FutureRecord::to(&names.endpoints)
        .key(key)
        .payload(&value);
    producer
        .send(record, std::time::Duration::from_secs(30))
        .await
        .map_err(|(e, _)| DeliverError::Kafka(e))?;
    Ok(())
}
