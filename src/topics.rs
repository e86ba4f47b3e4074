//! `hookstream topics`: hookstream's topics as the broker has them (partitions and the real
//! cleanup and retention settings, read with DescribeConfigs), and `--create` to create the
//! missing ones (what `ingest` and `process` do at start-up) without starting a service: for
//! deployments where services run without topic-creation rights, and for scripts that must
//! not join the processor's consumer group. Exits non-zero when a topic is missing or is
//! configured so that it would lose data the processor needs.

use std::process::ExitCode;

use anyhow::Context;
use schemas::config::Config;
use schemas::kafka::{describe_topics, ensure_topics};
use schemas::topic_config::{describe, min_retention_ms, unsafe_config};
use schemas::topics::Topic;

pub async fn run(config: &Config, create: bool) -> anyhow::Result<ExitCode> {
    let names = config.topics();
    if create {
        let retention = config.processor.snapshots.retention_ms();
        ensure_topics(&config.kafka, &names, &Topic::ALL, retention)
            .await
            .context("creating topics")?;
    }
    let statuses = tokio::task::block_in_place(|| describe_topics(&config.kafka, &names))
        .context("reading topic metadata")?;
    let configs = describe(&config.kafka, &names, &Topic::ALL)
        .await
        .context("reading topic configurations")?;
    let width = statuses.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let (mut missing, mut unsafe_) = (0, 0);
    for status in &statuses {
        let Some(partitions) = status.partitions else {
            missing += 1;
            println!(
                "{:<width$}  missing (hookstream topics --create)",
                status.name
            );
            continue;
        };
        let real = configs
            .iter()
            .find(|(topic, _, _)| *topic == status.topic)
            .and_then(|(_, _, config)| config.as_ref());
        let Some(real) = real else {
            println!(
                "{:<width$}  {partitions:>3} partitions  (configuration not readable)",
                status.name
            );
            continue;
        };
        let value = |key: &str| real.get(key).map(String::as_str).unwrap_or("?");
        let retention = match value("retention.ms") {
            "-1" => "forever".to_owned(),
            ms => ms
                .parse::<u64>()
                .map_or(ms.to_owned(), |ms| format!("{}s", ms / 1000)),
        };
        let policy = value("cleanup.policy");
        let verdict = match unsafe_config(status.topic, real, min_retention_ms(config)) {
            Some(why) => {
                unsafe_ += 1;
                format!("  UNSAFE: {why}")
            }
            None => String::new(),
        };
        println!(
            "{:<width$}  {partitions:>3} partitions  cleanup.policy={policy}  retention={retention}{verdict}",
            status.name
        );
    }
    Ok(if missing == 0 && unsafe_ == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
