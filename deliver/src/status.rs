//! Endpoint status that outlives the process, in the compacted `delivery-endpoints` topic
//! (key `tenant/endpoint`, JSON): whether the endpoint is disabled (it answered 410 Gone, it
//! kept failing for its `disable_after_failing_secs`, or by hand) and since when it has been
//! failing without a success. Written only when that changes; read whole at start-up, so a
//! restarted `deliver` (or another instance) knows it. `hookstream deliver --enable
//! TENANT/ENDPOINT` clears it.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::error::DeliverError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStatus {
    pub tenant: String,
    pub endpoint: String,
    /// Set while the endpoint is disabled.
    pub disabled: Option<Disabled>,
    /// When its current run of failures began (ms since the epoch); none after a success.
    pub failing_since: Option<i64>,
    /// The share (%) of `disable_after_failing_secs` the current run of failures has been
    /// alerted at: 0, then [`WARN_AT`] in turn.
    #[serde(default)]
    pub warned_percent: u8,
}

/// Shares of the disable span at which a failing endpoint is alerted before it is disabled.
pub const WARN_AT: [u8; 2] = [50, 90];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    /// `http_410`, `failing` or `manual`.
    pub reason: String,
    /// When (ms since the epoch).
    pub at: i64,
}

impl EndpointStatus {
    pub fn new(tenant: &str, endpoint: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            endpoint: endpoint.to_owned(),
            ..Self::default()
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.endpoint)
    }

    /// The status after an attempt at `now` (`failed`: it counts against the endpoint), when
    /// it changes: a failure starts a run of failures, or disables the endpoint once the run
    /// has lasted `disable_after`; a success ends the run.
    pub fn after_attempt(&self, failed: bool, now: i64, disable_after: Duration) -> Option<Self> {
        if self.disabled.is_some() {
            return None;
        }
        match (failed, self.failing_since) {
            (false, None) => None,
            (false, Some(_)) => Some(Self {
                failing_since: None,
                warned_percent: 0,
                ..self.clone()
            }),
            (true, None) => Some(Self {
                failing_since: Some(now),
                ..self.clone()
            }),
            (true, Some(since))
                if now.saturating_sub(since) >= disable_after.as_millis() as i64 =>
            {
                Some(Self {
                    disabled: Some(Disabled {
                        reason: "failing".into(),
                        at: now,
                    }),
                    ..self.clone()
                })
            }
            (true, Some(since)) => {
                let span = disable_after.as_millis().max(1) as i64;
                let share = (now.saturating_sub(since).saturating_mul(100) / span).min(100);
                let warn = WARN_AT
                    .iter()
                    .copied()
                    .filter(|at| i64::from(*at) <= share)
                    .max()?;
                (warn > self.warned_percent).then(|| Self {
                    warned_percent: warn,
                    ..self.clone()
                })
            }
        }
    }

    /// When a failing endpoint will be disabled, if it keeps failing.
    pub fn disables_at(&self, disable_after: Duration) -> Option<i64> {
        self.failing_since
            .map(|since| since + disable_after.as_millis() as i64)
    }
}

/// The latest status per endpoint (key `tenant/endpoint`), and where each partition ended.
pub type Loaded = (HashMap<String, EndpointStatus>, HashMap<i32, i64>);

/// Reads the whole topic: the latest status per endpoint, and where each partition ends.
pub fn load(client: ClientConfig, topic: &str) -> Result<Loaded, DeliverError> {
    let mut statuses = HashMap::new();
    let ends = read_to_end(client, topic, |payload| {
        if let Ok(status) = serde_json::from_slice::<EndpointStatus>(payload) {
            statuses.insert(status.key(), status);
        }
    })?;
    Ok((statuses, ends))
}

/// Follows the topic from `from` (where [`load`] ended) on a thread of its own, calling
/// `apply` with each status written since: an endpoint enabled by `hookstream deliver
/// --enable`, or disabled by another instance, is taken in while running.
pub fn follow(
    mut client: ClientConfig,
    topic: &str,
    from: &HashMap<i32, i64>,
    apply: impl Fn(EndpointStatus) + Send + 'static,
) -> Result<(), DeliverError> {
    client.set("enable.auto.commit", "false");
    let consumer: BaseConsumer = client.create()?;
    let mut assignment = TopicPartitionList::new();
    for (partition, offset) in from {
        assignment.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.assign(&assignment)?;
    std::thread::Builder::new()
        .name("endpoint-statuses".into())
        .spawn(move || loop {
            match consumer.poll(Duration::from_secs(1)) {
                Some(Ok(message)) => {
                    if let Some(status) = message
                        .payload()
                        .and_then(|p| serde_json::from_slice::<EndpointStatus>(p).ok())
                    {
                        apply(status);
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "following endpoint statuses"),
                None => {}
            }
        })
        .map_err(|e| DeliverError::Client(format!("cannot start the status follower: {e}")))?;
    Ok(())
}

/// Calls `each` with every value of `topic`, from the start of every partition to its end as
/// of now (a consumer assigned, never committing; `client` needs a `group.id`); returns
/// each partition's end.
pub fn read_to_end(
    mut client: ClientConfig,
    topic: &str,
    mut each: impl FnMut(&[u8]),
) -> Result<HashMap<i32, i64>, DeliverError> {
    client
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = client.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    let mut all_ends = HashMap::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(30))?;
            all_ends.insert(p.id(), high);
            if high > low {
                assignment.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
                ends.insert(p.id(), high);
            }
        }
    }
    if ends.is_empty() {
        return Ok(all_ends);
    }
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(DeliverError::Config(format!(
                "could not read `{topic}` to its end within 60 s"
            )));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        if let Some(payload) = message.payload() {
            each(payload);
        }
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
    }
    Ok(all_ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    /// The schema example (checked by `schemas/check.py`) is what this type writes.
    #[test]
    fn the_status_matches_the_schema_example() {
        let example = include_str!("../../schemas/examples/delivery-endpoints.json");
        let status: EndpointStatus = serde_json::from_str(example).unwrap();
        let expected: serde_json::Value = serde_json::from_str(example).unwrap();
        assert_eq!(serde_json::to_value(&status).unwrap(), expected);
    }

    #[test]
    fn a_run_of_failures_disables_after_its_span_and_a_success_ends_it() {
        let ok = EndpointStatus::new("t", "e");
        assert_eq!(ok.after_attempt(false, 10, DAY), None);
        let failing = ok.after_attempt(true, 10, DAY).unwrap();
        assert_eq!(failing.failing_since, Some(10));
        assert_eq!(failing.after_attempt(true, 10 + 1_000, DAY), None);
        assert_eq!(
            failing.after_attempt(false, 20, DAY).unwrap().failing_since,
            None
        );
        let later = 10 + DAY.as_millis() as i64;
        let disabled = failing.after_attempt(true, later, DAY).unwrap();
        assert_eq!(disabled.disabled.as_ref().unwrap().reason, "failing");
        assert_eq!(disabled.after_attempt(true, later + 1, DAY), None);
        assert_eq!(disabled.key(), "t/e");
    }

    #[test]
    fn a_failing_endpoint_is_warned_at_half_and_nine_tenths_of_its_span_once_each() {
        let failing = EndpointStatus::new("t", "e")
            .after_attempt(true, 0, DAY)
            .unwrap();
        let at = |share: u64| (DAY.as_millis() as u64 * share / 100) as i64;
        assert_eq!(failing.after_attempt(true, at(49), DAY), None);
        let half = failing.after_attempt(true, at(50), DAY).unwrap();
        assert_eq!((half.warned_percent, half.disabled.is_none()), (50, true));
        assert_eq!(half.after_attempt(true, at(60), DAY), None, "once");
        let late = half.after_attempt(true, at(95), DAY).unwrap();
        assert_eq!(late.warned_percent, 90);
        assert_eq!(late.disables_at(DAY), Some(at(100)));
        let recovered = late.after_attempt(false, at(96), DAY).unwrap();
        assert_eq!(recovered.warned_percent, 0, "a success starts over");
    }
}
