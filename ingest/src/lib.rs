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

pub mod admit;
pub mod append;
pub mod client_ip;
pub mod dead_letter;
pub mod error;
pub mod extract;
pub mod handshake;
pub mod http;
pub mod live;
pub mod request;
pub mod telemetry;
pub mod tenants;
pub mod tls;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use schemas::config::Config;
use schemas::topics::Topic;

pub use error::IngestError;

use crate::append::Appender;
use crate::http::AppState;
use crate::tenants::Tenants;

pub struct IngestService {
    addrs: Vec<SocketAddr>,
    metrics_addrs: Vec<SocketAddr>,
    servers: Vec<(ServerHandle, tokio::task::JoinHandle<std::io::Result<()>>)>,
    appender: Appender,
}

/// Options that are not part of the configuration file.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Create the topics through the admin API first (off when the broker cannot, e.g. the
    /// embedded mock cluster, where the caller created them).
    pub create_topics: bool,
    pub workers: Option<usize>,
    /// Benchmarks only: answer 202 without producing (the HTTP ceiling). Never durable.
    pub discard_appends: bool,
    /// Valid new configurations (see [`live`]); none: the tenants are fixed at start-up.
    pub reload: Option<tokio::sync::watch::Receiver<Arc<Config>>>,
}

/// Builds every source's verifier and rules, listing what fails (for `check-config`): bad
/// templates, secrets a scheme cannot use.
pub fn check_sources(config: &Config) -> Vec<String> {
    Tenants::build(config, None).err().unwrap_or_default()
}

/// Everything the ingest refuses to start with, beyond [`Config::problems`]: a
/// `max_body_bytes` that cannot be appended in one producer message, and
/// [`check_sources`]'s problems (for `check-config`).
pub fn check(config: &Config) -> Vec<String> {
    let mut problems: Vec<String> = append::Limits::problem(config).into_iter().collect();
    if let Err(e) = client_ip::Networks::parse(&config.ingest.trusted_proxies) {
        problems.push(format!("ingest.trusted_proxies: {e}"));
    }
    problems.extend(check_sources(config));
    problems
}

impl IngestService {
    pub async fn start(
        config: &Config,
        metrics: PrometheusHandle,
        options: StartOptions,
    ) -> Result<Self, IngestError> {
        let startup = |e: String| IngestError::Startup(e);
        if let Some(problem) = append::Limits::problem(config) {
            return Err(startup(problem));
        }
        if options.create_topics {
            let names = config.topics();
            schemas::kafka::ensure_topics_waiting(
                &config.kafka,
                &names,
                &[Topic::Raw, Topic::Rejected, Topic::Dlq],
                config.processor.snapshots.retention_ms(),
            )
            .await
            .map_err(|e| startup(e.to_string()))?;
        }
        let limits = append::Limits::of(config);
        tracing::info!(
            body_limit = limits.body_bytes,
            message_max_bytes = limits.message_max_bytes,
            "body limit"
        );
        let tenants =
            Tenants::build(config, None).map_err(|problems| startup(problems.join("; ")))?;
        let tenants = Arc::new(ArcSwap::from_pointee(tenants));
        telemetry::register(config);
        if let Some(updates) = options.reload {
            live::follow(tenants.clone(), updates);
        }
        let codecs = schemas::registry::codecs(config, &[Topic::Rejected])
            .await
            .map_err(|e| startup(e.to_string()))?;
        let mut appender = Appender::new(config)
            .map_err(|e| startup(e.to_string()))?
            .with_codecs(codecs);
        if options.discard_appends {
            tracing::warn!("appends are DISCARDED (benchmark mode): nothing is written to Kafka");
            appender = appender.discarding();
        }
        let state = Arc::new(AppState {
            tenants,
            appender: appender.clone(),
            max_body_bytes: limits.body_bytes,
            public_base_url: config.ingest.public_base_url.clone(),
            trust_forwarded_headers: config.ingest.trust_forwarded_headers,
            trusted_proxies: client_ip::Networks::parse(&config.ingest.trusted_proxies)
                .map_err(|e| startup(format!("ingest.trusted_proxies: {e}")))?,
            metrics,
        });
        let data = web::Data::new(state);
        let separate_metrics = config.ingest.metrics_listen.is_some();
        let app_data = data.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_data.clone())
                .configure(|cfg| http::routes(cfg, !separate_metrics))
        })
        .disable_signals()
        .shutdown_timeout(10);
        if let Some(workers) = options.workers.or(config.ingest.workers) {
            server = server.workers(workers);
        }
        let listen = &config.ingest.listen;
        let cannot_listen = |e: std::io::Error| startup(format!("cannot listen on {listen}: {e}"));
        let server = match &config.ingest.tls {
            None => server.bind(listen).map_err(cannot_listen)?,
            Some(settings) => {
                let (tls, reloader) = tls::server_config(settings)
                    .map_err(|e| startup(format!("ingest.tls: {e}")))?;
                reload_on_sighup(reloader);
                server
                    .on_connect(tls::on_connect)
                    .bind_rustls_0_23(listen, tls)
                    .map_err(cannot_listen)?
            }
        };
        let addrs = server.addrs();
        let server = server.run();
        let mut servers = vec![(server.handle(), tokio::spawn(server))];
        let mut metrics_addrs = Vec::new();
        if let Some(listen) = &config.ingest.metrics_listen {
            let metrics = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .configure(http::operator_routes)
            })
            .disable_signals()
            .workers(1)
            .bind(listen)
            .map_err(|e| {
                startup(format!(
                    "cannot listen on ingest.metrics_listen {listen}: {e}"
                ))
            })?;
            metrics_addrs = metrics.addrs();
            let metrics = metrics.run();
            servers.push((metrics.handle(), tokio::spawn(metrics)));
        }
        Ok(Self {
            addrs,
            metrics_addrs,
            servers,
            appender,
        })
    }

    /// The bound addresses of `ingest.metrics_listen` (empty when it is not set).
    pub fn metrics_addrs(&self) -> &[SocketAddr] {
        &self.metrics_addrs
    }

    /// The bound addresses (useful when listening on port 0).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting, lets in-flight requests finish (their appends complete), then flushes.
    pub async fn stop(self) {
        for (handle, server) in self.servers {
            handle.stop(true).await;
            let _ = server.await;
        }
        let appender = self.appender;
        let _ = tokio::task::spawn_blocking(move || appender.flush(Duration::from_secs(10))).await;
    }
}

/// Reloads the TLS certificate and key on each SIGHUP (new handshakes use them; open
/// connections keep theirs). A failed reload keeps the old pair.
fn reload_on_sighup(reloader: tls::Reloader) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP: the TLS certificate will not reload");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match reloader.reload() {
                Ok(()) => tracing::info!("TLS certificate and key reloaded"),
                Err(error) => {
                    tracing::error!(%error, "TLS certificate reload failed: the previous one stays")
                }
            }
        }
    });
}
