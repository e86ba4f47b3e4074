//! Live configuration of a running processor: between turns, a new valid configuration
//! (published by [`schemas::config::reload::watch`]) replaces the source catalog (grace,
//! delete types, trusted skew) and the caps and breaker rules of every tenant, in the open
//! partition tasks and in those opened later. The next batch uses them; a batch in progress
//! finishes with the rules it started with.
//!
//! The caps' running state (ledgers, windows, held events) is kept: a raised limit admits
//! more from the next event on, a lowered one defers from the next event on. Settings read
//! at start-up only (`[kafka]`, `[processor]`, the budget and usage readers, which exist only
//! when some tenant had caps at start) wait for a restart, and a reload that needs one says so.

use std::collections::HashMap;
use std::sync::Arc;

use schemas::config::Config;
use tokio::sync::watch;

use crate::caps::Caps;
use crate::catalog::SourceCatalog;
use crate::consumer::{register_tenant_counters, Pipeline};
use crate::task::PartitionTask;

impl Pipeline {
    /// Takes in the newest configuration, if a valid one was published since the last turn.
    pub(crate) fn reconfigure(&mut self, tasks: &mut HashMap<i32, PartitionTask>) {
        let Some(updates) = self.reload.as_mut() else {
            return;
        };
        if !updates.has_changed().unwrap_or(false) {
            return;
        }
        let next = updates.borrow_and_update().clone();
        let running = std::mem::replace(&mut self.running, next.clone());
        schemas::config::reload::warn_restart_sections("processor", &running, &next);
        let caps = match Caps::new(&next, 0, self.raw_partitions) {
            Ok(caps) => Arc::new(caps),
            Err(error) => {
                tracing::error!(%error, "configuration reload refused by the processor: the running rules stay");
                metrics::counter!("hookstream_config_reload_failures_total", "service" => "processor")
                    .increment(1);
                return;
            }
        };
        let caps_readers = self.budget.is_some();
        if !caps_readers && caps.any() {
            tracing::warn!("caps or breakers were added while none existed at start-up: they apply now, but budget shares and usage reports are read only after a restart");
        }
        self.catalog = SourceCatalog::new(&next);
        self.settings.caps = Some(caps.clone());
        for task in tasks.values_mut() {
            task.set_caps(Some(caps.clone()));
        }
        register_tenant_counters(next.tenants.iter().map(|t| t.id.as_str()));
        tracing::info!(
            tenants = next.tenants.len(),
            "processor rules reloaded: sources (grace, delete types, skew), caps and breakers"
        );
    }
}

/// A configuration channel for [`Pipeline::reload`]: none when the configuration is fixed.
pub type Updates = Option<watch::Receiver<Arc<Config>>>;

/// The configuration the pipeline runs with, for [`Pipeline::reconfigure`]'s comparison.
pub type Running = Arc<Config>;
