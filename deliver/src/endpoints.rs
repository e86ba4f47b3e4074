//! The tenants' endpoints, resolved from the configuration: URL, event-type filter, signer,
//! timeout. An endpoint that answered 410 is disabled for the life of the process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemas::config::{Config, EndpointConfig};

use crate::error::DeliverError;
use crate::guard::{Guard, GuardedResolver};
use crate::sign::Signer;

pub struct Endpoint {
    pub tenant: String,
    pub config: EndpointConfig,
    pub signer: Signer,
    /// Its own connections, through the tenant's SSRF guard.
    pub client: reqwest::Client,
    pub guard: Arc<Guard>,
}

impl Endpoint {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }
}

#[derive(Default)]
pub struct Endpoints {
    by_tenant: BTreeMap<String, Vec<Endpoint>>,
    disabled: Mutex<BTreeSet<(String, String)>>,
}

impl Endpoints {
    pub fn from_config(config: &Config) -> Result<Self, DeliverError> {
        let mut by_tenant: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
        for tenant in &config.tenants {
            let networks = tenant.delivery.networks().map_err(DeliverError::Config)?;
            let guard = Arc::new(Guard::new(networks));
            for endpoint in &tenant.endpoints {
                let client = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
                    .build()
                    .map_err(|e| DeliverError::Client(e.to_string()))?;
                let secrets = endpoint
                    .secrets
                    .iter()
                    .map(|s| s.resolve().map_err(DeliverError::Config))
                    .collect::<Result<Vec<_>, _>>()?;
                by_tenant
                    .entry(tenant.id.clone())
                    .or_default()
                    .push(Endpoint {
                        tenant: tenant.id.clone(),
                        config: endpoint.clone(),
                        signer: Signer::new(&secrets)?,
                        client: client.clone(),
                        guard: guard.clone(),
                    });
            }
        }
        Ok(Self {
            by_tenant,
            disabled: Mutex::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_tenant.is_empty()
    }

    /// The tenant's endpoints that want events of `event_type`.
    pub fn wanting<'a>(
        &'a self,
        tenant: &str,
        event_type: &'a str,
    ) -> impl Iterator<Item = &'a Endpoint> {
        self.by_tenant
            .get(tenant)
            .into_iter()
            .flatten()
            .filter(move |e| e.config.wants(event_type))
    }

    pub fn get(&self, tenant: &str, id: &str) -> Option<&Endpoint> {
        self.by_tenant
            .get(tenant)?
            .iter()
            .find(|e| e.config.id == id)
    }

    pub fn disable(&self, tenant: &str, id: &str) {
        let mut disabled = self.disabled.lock().expect("endpoints lock");
        disabled.insert((tenant.to_owned(), id.to_owned()));
    }

    pub fn is_disabled(&self, tenant: &str, id: &str) -> bool {
        let disabled = self.disabled.lock().expect("endpoints lock");
        disabled.contains(&(tenant.to_owned(), id.to_owned()))
    }
}
