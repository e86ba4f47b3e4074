//! Per-source settings the cores need — delete types, reorder grace and the future skew an
//! event time may have — looked up by tenant
//! and source. Events of sources no longer configured get the defaults.

use std::collections::HashMap;

use schemas::config::Config;
use schemas::time::Millis;

pub const DEFAULT_GRACE_MS: Millis = 5_000;

struct SourceSettings {
    delete_types: Vec<String>,
    grace_ms: Millis,
    max_future_skew_ms: Millis,
}

fn millis(n: u64) -> Millis {
    n.min(i64::MAX as u64) as Millis
}

pub struct SourceCatalog {
    sources: HashMap<(String, String), SourceSettings>,
}

impl SourceCatalog {
    pub fn new(config: &Config) -> Self {
        let sources = config
            .tenants
            .iter()
            .flat_map(|t| {
                t.sources.iter().map(move |s| {
                    let settings = SourceSettings {
                        delete_types: s.delete_types.clone(),
                        grace_ms: millis(s.grace_ms),
                        max_future_skew_ms: millis(s.max_future_skew_secs.saturating_mul(1000)),
                    };
                    ((t.id.clone(), s.id.clone()), settings)
                })
            })
            .collect();
        Self { sources }
    }

    /// Defaults only (tests, sources removed from the configuration).
    pub fn empty() -> Self {
        Self {
            sources: HashMap::new(),
        }
    }

    fn get(&self, tenant: &str, source: &str) -> Option<&SourceSettings> {
        self.sources.get(&(tenant.to_owned(), source.to_owned()))
    }

    pub fn is_delete(&self, tenant: &str, source: &str, event_type: &str) -> bool {
        match self.get(tenant, source) {
            Some(s) => schemas::config::matches_delete_type(&s.delete_types, event_type),
            None => schemas::config::matches_delete_type(&["*.deleted".to_owned()], event_type),
        }
    }

    /// How far ahead of its receive time an event time may be and still be trusted.
    pub fn max_future_skew(&self, tenant: &str, source: &str) -> Millis {
        self.get(tenant, source).map_or(
            millis(schemas::config::DEFAULT_MAX_FUTURE_SKEW_SECS * 1000),
            |s| s.max_future_skew_ms,
        )
    }

    pub fn grace(&self, tenant: &str, source: &str) -> Millis {
        self.get(tenant, source)
            .map_or(DEFAULT_GRACE_MS, |s| s.grace_ms)
    }
}
