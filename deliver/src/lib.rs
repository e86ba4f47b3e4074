//! `hookstream deliver`: sends the tenants' events on to their customers' endpoints as
//! Standard Webhooks, with retries kept in Kafka (delay topics), an attempt log
//! (`deliveries`) and dead letters (`delivery-dlq`). See docs/delivery.md.
//!
//! The cores are pure: [`schedule`] (tiers, jitter, what a status means), [`breaker`] (per
//! endpoint) and [`sign`]; the I/O (Kafka, HTTP) is in [`run`].

pub mod attempt;
pub mod breaker;
pub mod copy;
pub mod endpoints;
pub mod error;
pub mod forward;
pub mod guard;
pub mod journal;
pub mod lanes;
pub mod offsets;
pub mod recent;
pub mod record;
pub mod run;
pub mod schedule;
pub mod serve;
pub mod sign;
pub mod status;
pub mod timing;
pub mod worker;

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
    forwarder: Option<forward::Forwarder>,
}

impl Ready {
    /// Takes in every valid new configuration's endpoints ([`endpoints::Endpoints::replace`]):
    /// added, removed and changed endpoints apply without a restart.
    pub fn follow(&self, mut updates: watch::Receiver<std::sync::Arc<Config>>) {
        let endpoints = self.deliverer.endpoints.clone();
        let mut running = updates.borrow_and_update().clone();
        tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let next = updates.borrow_and_update().clone();
                schemas::config::reload::warn_restart_sections("deliver", &running, &next);
                running = next.clone();
                match endpoints.replace(&next) {
                    Ok(()) => {
                        let count: usize = next.tenants.iter().map(|t| t.endpoints.len()).sum();
                        tracing::info!(endpoints = count, "delivery endpoints reloaded");
                    }
                    Err(error) => {
                        tracing::error!(%error, "configuration reload refused by deliver: the running endpoints stay");
                        metrics::counter!("hookstream_config_reload_failures_total", "service" => "deliver")
                            .increment(1);
                    }
                }
            }
        });
    }

    /// Runs the delivery loop (and the alerts forwarder, if configured) until `stop` turns
    /// true.
    pub async fn run(&self, stop: watch::Receiver<bool>) -> Result<(), DeliverError> {
        let deliver = self.deliverer.run(&self.consumer, stop.clone());
        match &self.forwarder {
            None => deliver.await,
            Some(forwarder) => tokio::try_join!(deliver, forwarder.run(stop)).map(|_| ()),
        }
    }
}

/// Creates the delivery topics (waiting out broker trouble) and the consumer.
pub async fn start(config: &Config) -> Result<Ready, DeliverError> {
    use schemas::topics::Topic;
    let codecs = schemas::registry::codecs(config, &[Topic::Alerts]).await?;
    let deliverer = Deliverer::new(config, codecs)?;
    let names = config.topics();
    ensure_topics_waiting(&config.kafka, &names, &[Topic::Events, Topic::Alerts], 0).await?;
    let mut backoff = std::time::Duration::from_millis(500);
    loop {
        match ensure_named_topics(
            &config.kafka,
            &deliverer.names().own(),
            run::max_record_bytes(&config.kafka),
        )
        .await
        {
            Err(error) if error.is_retriable() => {
                tracing::warn!(%error, retry_in = ?backoff, "cannot create the delivery topics yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
            result => break result?,
        }
    }
    {
        let client = client_config(&config.kafka, Role::Consumer);
        let names = run::Names::new(config);
        tokio::task::spawn_blocking(move || {
            copy::same_partitions(client.clone(), &[names.deliveries, names.journal])?;
            let mut endpoint_keyed = vec![names.queue];
            endpoint_keyed.extend(names.tiers);
            copy::same_partitions(client, &endpoint_keyed)
        })
        .await
        .map_err(|e| DeliverError::Config(format!("checking the delivery topics: {e}")))??;
    }
    let mut status_client = client_config(&config.kafka, Role::Consumer);
    // Assigned, never committing; librdkafka still wants a group id to assign.
    status_client.set(
        "group.id",
        format!("{}-deliver-status", config.processor.group_id),
    );
    let (statuses, ends) = {
        let (client, topic) = (status_client.clone(), deliverer.names().endpoints.clone());
        tokio::task::spawn_blocking(move || status::load(client, &topic))
            .await
            .map_err(|e| DeliverError::Config(format!("loading endpoint statuses: {e}")))??
    };
    deliverer.restore_statuses(statuses);
    let endpoints = deliverer.endpoints.clone();
    status::follow(
        status_client,
        &deliverer.names().endpoints,
        &ends,
        move |status| endpoints.apply(status),
    )?;
    let mut client = client_config(&config.kafka, Role::Consumer);
    client
        .set("group.id", format!("{}-deliver", config.processor.group_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // Partition p of the queue and of every retry tier to one instance: an endpoint's
        // deliveries are all handled by the same worker.
        .set("partition.assignment.strategy", "range")
        // A resumed retry tier is fetched within this, so a wait ends on time.
        .set("fetch.wait.max.ms", "50");
    let consumer: StreamConsumer = client.create()?;
    Ok(Ready {
        deliverer: std::sync::Arc::new(deliverer),
        consumer,
        forwarder: forward::Forwarder::start(config)?,
    })
}

/// Re-enables an endpoint disabled by a 410, by failing, or by hand (`TENANT/ENDPOINT`):
/// writes its cleared status to `delivery-endpoints` (running instances follow it), then
/// sends the deliveries refused while it was disabled (dead letters `endpoint_disabled`
/// since it was disabled) back, due [`ENABLE_REDRIVE_DELAY`] later so every instance has
/// taken the enable in. Returns how many were sent back.
pub async fn enable(config: &Config, key: &str) -> Result<usize, DeliverError> {
    let (tenant, endpoint) = key
        .split_once('/')
        .ok_or_else(|| DeliverError::Config(format!("`{key}` is not TENANT/ENDPOINT")))?;
    let names = run::Names::new(config);
    ensure_named_topics(
        &config.kafka,
        &names.own(),
        run::max_record_bytes(&config.kafka),
    )
    .await?;
    let disabled_at = {
        let mut client = client_config(&config.kafka, Role::Consumer);
        client.set(
            "group.id",
            format!("{}-deliver-enable", config.processor.group_id),
        );
        let topic = names.endpoints.clone();
        let (statuses, _) = tokio::task::spawn_blocking(move || status::load(client, &topic))
            .await
            .map_err(|e| DeliverError::Config(format!("loading endpoint statuses: {e}")))??;
        statuses
            .get(key)
            .and_then(|s| s.disabled.as_ref())
            .map(|d| d.at)
    };
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
    let Some(at) = disabled_at else {
        return Ok(0);
    };
    let refused = RedriveFilter {
        endpoint: Some(key.to_owned()),
        reason: Some("endpoint_disabled".into()),
        since: Some(at),
    };
    redrive_after(config, &refused, ENABLE_REDRIVE_DELAY).await
}

/// How long after an enable the deliveries refused meanwhile are due again: running
/// instances follow `delivery-endpoints` within this.
pub const ENABLE_REDRIVE_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

/// Which dead letters `hookstream deliver --redrive` sends again.
#[derive(Debug, Clone, Default)]
pub struct RedriveFilter {
    /// `TENANT/ENDPOINT`
    pub endpoint: Option<String>,
    /// The dead letter's reason, e.g. `endpoint_disabled`, `http_404`, `timeout`.
    pub reason: Option<String>,
    /// Only dead letters given up at or after this (ms since the epoch; for dead letters
    /// from before `dead_at` existed, their last attempt's due time).
    pub since: Option<i64>,
}

impl RedriveFilter {
    fn admits(&self, dead: &record::Delivery) -> bool {
        let dead_at = dead.dead_at.unwrap_or(dead.due_at);
        self.endpoint.as_ref().is_none_or(|e| *e == dead.key())
            && self
                .reason
                .as_ref()
                .is_none_or(|r| dead.reason.as_ref() == Some(r))
            && self.since.is_none_or(|since| dead_at >= since)
    }
}

/// Sends the dead letters of `delivery-dlq` that `filter` admits back to a running
/// `deliver`: each as a first attempt, due now, in the first retry tier (its `webhook-id`
/// is the event id as before, so a receiver that got it already drops it). Returns how many.
/// Redriving twice sends twice.
pub async fn redrive(config: &Config, filter: &RedriveFilter) -> Result<usize, DeliverError> {
    redrive_after(config, filter, std::time::Duration::ZERO).await
}

/// [`redrive`], the deliveries due `delay` from now.
async fn redrive_after(
    config: &Config,
    filter: &RedriveFilter,
    delay: std::time::Duration,
) -> Result<usize, DeliverError> {
    let names = run::Names::new(config);
    ensure_named_topics(
        &config.kafka,
        &names.own(),
        run::max_record_bytes(&config.kafka),
    )
    .await?;
    let mut client = client_config(&config.kafka, Role::Consumer);
    client.set(
        "group.id",
        format!("{}-deliver-redrive", config.processor.group_id),
    );
    let topic = names.dlq.clone();
    let filter_copy = filter.clone();
    let chosen = tokio::task::spawn_blocking(move || {
        let mut chosen = Vec::new();
        status::read_to_end(client, &topic, |payload| {
            if let Ok(dead) = serde_json::from_slice::<record::Delivery>(payload) {
                if filter_copy.admits(&dead) {
                    chosen.push(dead);
                }
            }
        })
        .map(|_| chosen)
    })
    .await
    .map_err(|e| DeliverError::Config(format!("reading the dead letters: {e}")))??;
    let producer: rdkafka::producer::FutureProducer =
        client_config(&config.kafka, Role::Producer).create()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for dead in &chosen {
        let again = record::Delivery {
            attempt: 1,
            redriven: true,
            dead_at: None,
            due_at: now + delay.as_millis() as i64,
            reason: None,
            ..dead.clone()
        };
        let value = serde_json::to_vec(&again).expect("delivery serializes");
        let key = again.key();
        let record = rdkafka::producer::FutureRecord::to(&names.tiers[0])
            .key(&key)
            .payload(&value);
        producer
            .send(record, std::time::Duration::from_secs(30))
            .await
            .map_err(|(e, _)| DeliverError::Kafka(e))?;
    }
    Ok(chosen.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redrive_filter_admits_by_endpoint_reason_and_time() {
        let dead = record::Delivery {
            delivery_id: "t/e/s/1".into(),
            tenant: "t".into(),
            endpoint: "e".into(),
            source: "s".into(),
            event_id: "1".into(),
            event_type: "x".into(),
            entity: None,
            attempt: 3,
            redriven: false,
            due_at: 1_000,
            dead_at: None,
            reason: Some("http_404".into()),
            traceparent: None,
            body: record::Body::json("{}".into()),
        };
        assert!(RedriveFilter::default().admits(&dead));
        let by = |endpoint: Option<&str>, reason: Option<&str>, since: Option<i64>| RedriveFilter {
            endpoint: endpoint.map(str::to_owned),
            reason: reason.map(str::to_owned),
            since,
        };
        assert!(by(Some("t/e"), Some("http_404"), Some(1_000)).admits(&dead));
        assert!(!by(Some("t/other"), None, None).admits(&dead));
        assert!(!by(None, Some("timeout"), None).admits(&dead));
        assert!(!by(None, None, Some(1_001)).admits(&dead));
    }
}
