//! Live configuration of a running ingest: each valid configuration published by
//! [`schemas::config::reload::watch`] rebuilds the [`Tenants`] and swaps them in.
//!
//! Reloaded without a restart: tenants and sources (added, removed, changed), their secrets,
//! tokens, `allow_ips`, extraction rules, and rate limits (`ingest.rate_limit`,
//! `ingest.replicas` and each tenant's). Every other setting (`[kafka]`, the listeners, body
//! limits, TLS files — those reload on `SIGHUP` themselves) is read at start-up only: a
//! reload that changes one applies the rest and logs which sections wait for a restart.

use std::sync::Arc;

use arc_swap::ArcSwap;
use schemas::config::Config;
use tokio::sync::watch;

use crate::tenants::Tenants;

/// Applies every configuration `updates` publishes to `live`, until the sender is dropped.
pub fn follow(live: Arc<ArcSwap<Tenants>>, mut updates: watch::Receiver<Arc<Config>>) {
    let mut running = updates.borrow_and_update().clone();
    tokio::spawn(async move {
        while updates.changed().await.is_ok() {
            let next = updates.borrow_and_update().clone();
            match Tenants::build(&next, Some(&live.load())) {
                Ok(tenants) => {
                    live.store(Arc::new(tenants));
                    crate::telemetry::register(&next);
                    let sources: usize = next.tenants.iter().map(|t| t.sources.len()).sum();
                    tracing::info!(
                        tenants = next.tenants.len(),
                        sources,
                        "tenants, sources, secrets and rate limits reloaded"
                    );
                    let waiting = needs_restart(&running, &next);
                    if !waiting.is_empty() {
                        tracing::warn!(
                            sections = %waiting.join(", "),
                            "these settings changed but are read at start-up only: restart the ingest to apply them"
                        );
                    }
                    running = next;
                }
                Err(problems) => {
                    // Checked before publication; a secret file can still change in between.
                    tracing::error!(problems = %problems.join("; "), "configuration reload refused: the running tenants stay");
                    metrics::counter!("hookstream_config_reload_failures_total", "service" => "ingest")
                        .increment(1);
                }
            }
        }
    });
}

/// The sections whose change a reload cannot apply.
pub fn needs_restart(running: &Config, next: &Config) -> Vec<&'static str> {
    let mut sections = Vec::new();
    if format!("{:?}", running.kafka) != format!("{:?}", next.kafka) {
        sections.push("kafka");
    }
    let fixed = |config: &Config| {
        let mut ingest = config.ingest.clone();
        ingest.rate_limit = None;
        ingest.replicas = 1;
        format!("{ingest:?}")
    };
    if fixed(running) != fixed(next) {
        sections.push("ingest (other than rate_limit and replicas)");
    }
    if format!("{:?}", running.schema_registry) != format!("{:?}", next.schema_registry) {
        sections.push("schema_registry");
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::parse_str(toml).unwrap()
    }

    #[test]
    fn only_settings_read_at_start_up_need_a_restart() {
        let base = config("[ingest]\nmax_body_bytes = 100\n[[tenants]]\nid = \"a\"\n");
        let tenants_and_limits = config(
            "[ingest]\nmax_body_bytes = 100\nreplicas = 3\nrate_limit = { per_second = 9 }\n[[tenants]]\nid = \"a\"\n[[tenants]]\nid = \"b\"\n",
        );
        assert!(needs_restart(&base, &tenants_and_limits).is_empty());
        let body = config("[ingest]\nmax_body_bytes = 200\n[[tenants]]\nid = \"a\"\n");
        assert_eq!(
            needs_restart(&base, &body),
            vec!["ingest (other than rate_limit and replicas)"]
        );
        let brokers = config("[kafka]\nbrokers = \"elsewhere:9092\"\n[ingest]\nmax_body_bytes = 100\n[[tenants]]\nid = \"a\"\n");
        assert_eq!(needs_restart(&base, &brokers), vec!["kafka"]);
    }
}
