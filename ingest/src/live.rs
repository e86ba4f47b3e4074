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
use schemas::config::{reload, Config};
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
                    reload::warn_restart_sections("ingest", &running, &next);
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
