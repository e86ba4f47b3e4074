//! `hookstream topics`: hookstream's topics as the broker has them, and `--create` to create
//! the missing ones (what `ingest` and `process` do at start-up) without starting a service:
//! for deployments where services run without topic-creation rights, and for scripts that
//! must not join the processor's consumer group.

use std::process::ExitCode;

use anyhow::Context;
use schemas::config::Config;
use schemas::kafka::{describe_topics, ensure_topics};
use schemas::topics::Topic;

pub async fn run(config: &Config, create: bool) -> anyhow::Result<ExitCode> {
    let names = config.topics();
    if create {
        ensure_topics(&config.kafka, &names, &Topic::ALL)
            .await
            .context("creating topics")?;
    }
    let statuses = tokio::task::block_in_place(|| describe_topics(&config.kafka, &names))
        .context("reading topic metadata")?;
    let width = statuses.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut missing = 0;
    for status in &statuses {
        let policy = if status.topic.compacted() {
            "compact"
        } else if status.topic.retained_forever() {
            "delete, retention.ms=-1"
        } else {
            "delete"
        };
        match status.partitions {
            Some(partitions) => println!(
                "{:<width$}  {:>3} partitions  {policy}",
                status.name, partitions
            ),
            None => {
                missing += 1;
                println!(
                    "{:<width$}  missing (hookstream topics --create)",
                    status.name
                );
            }
        }
    }
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
