//! Per-source settings the cores need — delete types and reorder grace — looked up by tenant
//! and source. Events of sources no longer configured get the defaults.

use std::collections::HashMap;

use schemas::config::Config;
use schemas::time::Millis;

pub const DEFAULT_GRACE_MS: Millis = 5_000;

struct SourceSettings {
    delete_types: Vec<String>,
    grace_ms: Millis,
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
                        grace_ms: s.grace_ms.min(i64::MAX as u64) as Millis,
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

    pub fn grace(&self, tenant: &str, source: &str) -> Millis {
        self.get(tenant, source)
            .map_or(DEFAULT_GRACE_MS, |s| s.grace_ms)
    }
}
