//! The tenants' endpoints, resolved from the configuration: URL, event-type filter, signer,
//! timeout, and each endpoint's [`EndpointStatus`] (disabled, failing since).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use schemas::config::{Config, EndpointConfig};

use crate::error::DeliverError;
use crate::guard::{Guard, GuardedResolver};
use crate::sign::Signer;
use crate::status::{Disabled, EndpointStatus};
use crate::timing::ConnectTimes;

pub struct Endpoint {
    pub tenant: String,
    pub config: EndpointConfig,
    pub signer: Signer,
    /// Its own connections, through the tenant's SSRF guard.
    pub client: reqwest::Client,
    /// The set-up times of its client's new connections.
    pub connect_times: ConnectTimes,
    /// The class of its URL's IP literal host, when the tenant's guard refuses it (names
    /// are checked by the resolver, at each connection).
    pub refused: Option<&'static str>,
}

impl Endpoint {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }
}

type ByTenant = BTreeMap<String, Vec<Arc<Endpoint>>>;

/// The endpoints, swapped whole by a reload ([`Endpoints::replace`]): a delivery prepared
/// before it keeps the endpoint it was prepared with. Statuses (disabled, failing since) are
/// kept by `tenant/endpoint` across reloads.
#[derive(Default)]
pub struct Endpoints {
    by_tenant: ArcSwap<ByTenant>,
    statuses: Mutex<HashMap<String, EndpointStatus>>,
}

impl Endpoints {
    pub fn from_config(config: &Config) -> Result<Self, DeliverError> {
        Ok(Self {
            by_tenant: ArcSwap::from_pointee(Self::build(config)?),
            statuses: Mutex::default(),
        })
    }

    /// Replaces every endpoint with those of `config` (a reload): new ones are served, removed
    /// ones' deliveries are dead-lettered `endpoint_removed`, changed ones (URL, secrets,
    /// timeout, filters) apply from their next attempt.
    pub fn replace(&self, config: &Config) -> Result<(), DeliverError> {
        self.by_tenant.store(Arc::new(Self::build(config)?));
        Ok(())
    }

    fn build(config: &Config) -> Result<ByTenant, DeliverError> {
        let mut by_tenant: ByTenant = BTreeMap::new();
        for tenant in &config.tenants {
            let networks = tenant.delivery.networks().map_err(DeliverError::Config)?;
            let guard = Arc::new(Guard::new(networks));
            for endpoint in &tenant.endpoints {
                register_metrics(&tenant.id, &endpoint.id);
                let connect_times = ConnectTimes::default();
                let client = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
                    .connector_layer(connect_times.layer())
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
                    .push(Arc::new(Endpoint {
                        tenant: tenant.id.clone(),
                        config: endpoint.clone(),
                        signer: Signer::new(&secrets)?,
                        client: client.clone(),
                        connect_times,
                        refused: literal_refused(&endpoint.url, &guard),
                    }));
            }
        }
        Ok(by_tenant)
    }

    pub fn is_empty(&self) -> bool {
        self.by_tenant.load().is_empty()
    }

    /// The tenant's endpoints that want events of `event_type`.
    pub fn wanting(&self, tenant: &str, event_type: &str) -> Vec<Arc<Endpoint>> {
        self.by_tenant
            .load()
            .get(tenant)
            .into_iter()
            .flatten()
            .filter(|e| e.config.wants(event_type))
            .cloned()
            .collect()
    }

    pub fn get(&self, tenant: &str, id: &str) -> Option<Arc<Endpoint>> {
        self.by_tenant
            .load()
            .get(tenant)?
            .iter()
            .find(|e| e.config.id == id)
            .cloned()
    }

    /// Takes in a status written since start-up (by `--enable`, or another instance).
    pub fn apply(&self, status: EndpointStatus) {
        let mut statuses = self.statuses.lock().expect("endpoints lock");
        let was_disabled = statuses
            .get(&status.key())
            .is_some_and(|s| s.disabled.is_some());
        if was_disabled && status.disabled.is_none() {
            tracing::info!(tenant = %status.tenant, endpoint = %status.endpoint, "endpoint enabled");
        }
        metrics::gauge!("hookstream_deliver_endpoint_disabled", "tenant" => status.tenant.clone(), "endpoint" => status.endpoint.clone())
            .set(if status.disabled.is_some() { 1.0 } else { 0.0 });
        statuses.insert(status.key(), status);
    }

    /// Takes in the statuses read from `delivery-endpoints` at start-up.
    pub fn restore(&self, statuses: HashMap<String, EndpointStatus>) {
        for status in statuses.values() {
            metrics::gauge!("hookstream_deliver_endpoint_disabled", "tenant" => status.tenant.clone(), "endpoint" => status.endpoint.clone())
                .set(if status.disabled.is_some() { 1.0 } else { 0.0 });
        }
        *self.statuses.lock().expect("endpoints lock") = statuses;
    }

    fn status(
        statuses: &HashMap<String, EndpointStatus>,
        tenant: &str,
        id: &str,
    ) -> EndpointStatus {
        statuses
            .get(&format!("{tenant}/{id}"))
            .cloned()
            .unwrap_or_else(|| EndpointStatus::new(tenant, id))
    }

    /// Disables the endpoint; returns its new status, to publish.
    pub fn disable(&self, tenant: &str, id: &str, reason: &str, now: i64) -> EndpointStatus {
        let mut statuses = self.statuses.lock().expect("endpoints lock");
        let status = EndpointStatus {
            disabled: Some(Disabled {
                reason: reason.to_owned(),
                at: now,
            }),
            ..Self::status(&statuses, tenant, id)
        };
        statuses.insert(status.key(), status.clone());
        status
    }

    /// Records an attempt's result; returns the endpoint's new status when it changed.
    pub fn after_attempt(
        &self,
        endpoint: &Endpoint,
        failed: bool,
        now: i64,
    ) -> Option<EndpointStatus> {
        let mut statuses = self.statuses.lock().expect("endpoints lock");
        let span = Duration::from_secs(endpoint.config.disable_after_failing_secs);
        let next = Self::status(&statuses, &endpoint.tenant, &endpoint.config.id)
            .after_attempt(failed, now, span)?;
        statuses.insert(next.key(), next.clone());
        Some(next)
    }

    pub fn is_disabled(&self, tenant: &str, id: &str) -> bool {
        let statuses = self.statuses.lock().expect("endpoints lock");
        statuses
            .get(&format!("{tenant}/{id}"))
            .is_some_and(|s| s.disabled.is_some())
    }
}

/// The class of `url`'s IP literal host when `guard` refuses it.
fn literal_refused(url: &str, guard: &Guard) -> Option<&'static str> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    let ip: std::net::IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    guard.check(ip).err().map(|refused| refused.class)
}

/// Every configured endpoint's series exist from start-up (at 0), so dashboards and alert
/// rules see them before the first failure.
fn register_metrics(tenant: &str, endpoint: &str) {
    let labels = [
        ("tenant", tenant.to_owned()),
        ("endpoint", endpoint.to_owned()),
    ];
    // Registered, not reset: a reload must not clear an open breaker's gauge.
    metrics::gauge!("hookstream_deliver_breaker_open", &labels).increment(0.0);
    metrics::gauge!("hookstream_deliver_endpoint_disabled", &labels).increment(0.0);
    metrics::counter!("hookstream_deliver_dead_letters_total", &labels).increment(0);
}
