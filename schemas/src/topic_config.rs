//! The topic configuration hookstream relies on, checked against what the broker really has.
//!
//! Some topics must never lose what they hold: the changelog must keep every frame after a
//! task's latest snapshot (it is not keyed, so compaction would destroy it), and `state` and
//! `budget` must keep the latest record per key. A topic created by hand or changed after
//! creation can break that silently; the processor and `hookstream topics` read the real
//! configuration (DescribeConfigs) and [`unsafe_config`] names the key that would lose data.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use crate::config::{Config, KafkaConfig};
use crate::kafka::{client_config, Role};
use crate::topics::{Topic, TopicNames};
use crate::SchemasError;

/// Kafka's defaults for what a broker leaves out of its answer (Tansu reports only the keys
/// set when the topic was created).
const DEFAULTS: [(&str, &str); 3] = [
    ("cleanup.policy", "delete"),
    ("retention.ms", "604800000"),
    ("retention.bytes", "-1"),
];

/// A topic's configuration as the broker reports it, with Kafka's defaults for absent keys.
pub type TopicConfig = BTreeMap<String, String>;

/// The configuration of each named topic (None: the broker does not have it).
pub async fn describe(
    kafka: &KafkaConfig,
    names: &TopicNames,
    topics: &[Topic],
) -> Result<Vec<(Topic, String, Option<TopicConfig>)>, SchemasError> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka, Role::Admin).create()?;
    let named: Vec<(Topic, String)> = topics.iter().map(|t| (*t, names.name(*t))).collect();
    let specifiers: Vec<ResourceSpecifier<'_>> = named
        .iter()
        .map(|(_, name)| ResourceSpecifier::Topic(name))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let results = admin.describe_configs(specifiers.iter(), &options).await?;
    Ok(named
        .into_iter()
        .zip(results)
        .map(|((topic, name), result)| {
            let config = result.ok().map(|resource| {
                let mut config: TopicConfig = DEFAULTS
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                for entry in resource.entries {
                    if let Some(value) = entry.value {
                        config.insert(entry.name, value);
                    }
                }
                config
            });
            (topic, name, config)
        })
        .collect())
}

/// Why `topic`'s configuration would lose data hookstream needs, naming the key; None when
/// it is safe. `min_retention_ms`: the shortest changelog retention the snapshot settings
/// allow (four snapshot intervals).
pub fn unsafe_config(topic: Topic, config: &TopicConfig, min_retention_ms: i64) -> Option<String> {
    let get = |key: &str| config.get(key).map(String::as_str).unwrap_or_default();
    let policy: Vec<&str> = get("cleanup.policy").split(',').map(str::trim).collect();
    let number = |key: &str| get(key).parse::<i64>().unwrap_or(-1);
    if topic.compacted() {
        if !policy.contains(&"compact") {
            return Some(format!(
                "cleanup.policy={}: must be `compact`, or the latest record of a key can be deleted",
                get("cleanup.policy")
            ));
        }
        if policy.contains(&"delete") && number("retention.ms") >= 0 {
            return Some(format!(
                "cleanup.policy=compact,delete with retention.ms={}: the latest record of a quiet key is deleted",
                get("retention.ms")
            ));
        }
        return None;
    }
    if topic != Topic::Changelog {
        return None;
    }
    if policy.contains(&"compact") {
        return Some(format!(
            "cleanup.policy={}: changelog frames are not keyed by store key, so compaction destroys them; use `delete`",
            get("cleanup.policy")
        ));
    }
    if number("retention.bytes") >= 0 {
        return Some(format!(
            "retention.bytes={}: size retention can delete a task's only snapshot as its state grows; use -1 (bounded by time retention and snapshots)",
            get("retention.bytes")
        ));
    }
    let retention = number("retention.ms");
    if retention >= 0 && retention < min_retention_ms {
        return Some(format!(
            "retention.ms={retention}: shorter than four snapshot intervals ({min_retention_ms} ms), so a task's only snapshot could be deleted; raise it or lower processor.snapshots.interval_secs"
        ));
    }
    None
}

/// The topics whose real configuration would lose data, each with why: what the processor
/// refuses to start with.
pub async fn check(config: &Config) -> Result<Vec<(String, String)>, SchemasError> {
    let min = min_retention_ms(config);
    let guarded = [Topic::Changelog, Topic::State, Topic::Budget];
    Ok(describe(&config.kafka, &config.topics(), &guarded)
        .await?
        .into_iter()
        .filter_map(|(topic, name, real)| {
            let why = unsafe_config(topic, real.as_ref()?, min)?;
            Some((name, why))
        })
        .collect())
}

/// Four snapshot intervals, in milliseconds.
pub fn min_retention_ms(config: &Config) -> i64 {
    (config.processor.snapshots.interval_secs as i64)
        .saturating_mul(4)
        .saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> TopicConfig {
        let mut config: TopicConfig = DEFAULTS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in pairs {
            config.insert(k.to_string(), v.to_string());
        }
        config
    }

    const HOUR4: i64 = 4 * 3600 * 1000;

    #[test]
    fn a_changelog_that_would_lose_frames_is_named_by_its_key() {
        let unsafe_ = |pairs| unsafe_config(Topic::Changelog, &config(pairs), HOUR4);
        assert!(unsafe_(&[("cleanup.policy", "compact")])
            .unwrap()
            .contains("cleanup.policy=compact"));
        assert!(unsafe_(&[("retention.bytes", "1073741824")])
            .unwrap()
            .contains("retention.bytes"));
        assert!(unsafe_(&[("retention.ms", "3600000")])
            .unwrap()
            .contains("retention.ms=3600000"));
        assert_eq!(unsafe_(&[("retention.ms", "-1")]), None);
        assert_eq!(unsafe_(&[]), None, "Kafka's default of 7 days is enough");
    }

    #[test]
    fn compacted_topics_must_stay_compacted_and_keep_quiet_keys() {
        let unsafe_ = |topic, pairs| unsafe_config(topic, &config(pairs), HOUR4);
        assert!(unsafe_(Topic::State, &[]).unwrap().contains("compact"));
        assert!(unsafe_(
            Topic::Budget,
            &[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "1000")
            ]
        )
        .is_some());
        assert_eq!(
            unsafe_(Topic::State, &[("cleanup.policy", "compact")]),
            None
        );
        assert_eq!(unsafe_(Topic::Events, &[("retention.ms", "1")]), None);
    }
}
