//! hookstream ingest: a thin actix-web service that verifies provider signatures and appends
//! each accepted webhook, byte for byte, to the `raw` topic.
//!
//! Data flows one way: HTTP → [`verify`] (a `Request<Unverified>` becomes a
//! `Request<Verified>`) → [`extract`] (event id, type, entity, event time) → [`append`]
//! (idempotent `acks=all` producer) → `202 Accepted`. Nothing is acknowledged to the provider
//! before the broker acknowledged it. Duplicate deliveries are appended and accepted; the
//! processor removes them.
//!
//! [`IngestService::start`] builds everything from the [`Config`] (secrets resolved and decoded
//! once), creates the topics it writes, binds, and serves until [`IngestService::stop`].

pub mod append;
pub mod error;
pub mod extract;
pub mod http;
pub mod request;
pub mod telemetry;
pub mod verify;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use metrics_exporter_prometheus::PrometheusHandle;
use schemas::config::Config;
use schemas::topics::Topic;

pub use error::IngestError;

use crate::append::Appender;
use crate::http::{AppState, SourceRuntime};
use crate::verify::Verifier;

pub struct IngestService {
    addrs: Vec<SocketAddr>,
    handle: ServerHandle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    appender: Appender,
}

/// Options that are not part of the configuration file.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Create the topics through the admin API first (off when the broker cannot, e.g. the
    /// embedded mock cluster, where the caller created them).
    pub create_topics: bool,
    pub workers: Option<usize>,
}

impl IngestService {
    pub async fn start(
        config: &Config,
        metrics: PrometheusHandle,
        options: StartOptions,
    ) -> Result<Self, IngestError> {
        let startup = |e: String| IngestError::Startup(e);
        if options.create_topics {
            let names = config.topics();
            schemas::kafka::ensure_topics(&config.kafka, &names, &[Topic::Raw, Topic::Rejected])
                .await
                .map_err(|e| startup(e.to_string()))?;
        }
        let mut tenants: HashMap<String, HashMap<String, SourceRuntime>> = HashMap::new();
        for tenant in &config.tenants {
            let sources = tenants.entry(tenant.id.clone()).or_default();
            for source in &tenant.sources {
                let at = format!("tenant `{}` source `{}`", tenant.id, source.id);
                let verifier =
                    Verifier::build(source).map_err(|e| startup(format!("{at}: {e}")))?;
                let rules = source.rules().map_err(|e| startup(format!("{at}: {e}")))?;
                sources.insert(source.id.clone(), SourceRuntime { verifier, rules });
            }
        }
        let appender = Appender::new(config).map_err(|e| startup(e.to_string()))?;
        let state = Arc::new(AppState {
            tenants,
            appender: appender.clone(),
            max_body_bytes: config.ingest.max_body_bytes,
            metrics,
        });
        let data = web::Data::new(state);
        let mut server =
            HttpServer::new(move || App::new().app_data(data.clone()).configure(http::routes))
                .disable_signals()
                .shutdown_timeout(10);
        if let Some(workers) = options.workers {
            server = server.workers(workers);
        }
        let server = server
            .bind(&config.ingest.listen)
            .map_err(|e| startup(format!("cannot listen on {}: {e}", config.ingest.listen)))?;
        let addrs = server.addrs();
        let server = server.run();
        let handle = server.handle();
        let server = tokio::spawn(server);
        Ok(Self {
            addrs,
            handle,
            server,
            appender,
        })
    }

    /// The bound addresses (useful when listening on port 0).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting, lets in-flight requests finish (their appends complete), then flushes.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.server.await;
        let appender = self.appender;
        let _ = tokio::task::spawn_blocking(move || appender.flush(Duration::from_secs(10))).await;
    }
}
