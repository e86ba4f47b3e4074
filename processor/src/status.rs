//! The processor's HTTP endpoint (`processor.listen`), for operators and their scrapers:
//!
//! - `GET /metrics`: Prometheus text. Throughput (`hookstream_processor_events_total`,
//!   duplicates, late, released, dead letters, deferred), commit and produce retries, batch
//!   sizes and durations, restores, and per tenant the caps' `hookstream_caps_used` /
//!   `hookstream_caps_limit` (by `cap`), `hookstream_caps_deferred_total` (by `reason`) and
//!   `hookstream_caps_breaker_open`.
//! - `GET /healthz`: 200 with each open partition task's next `raw` offset and how many
//!   events it holds back, as of its last durable batch.
//!
//! No endpoint unless `processor.listen` is set: several processors may share a host.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Serialize;

use crate::consumer::{Progress, TaskProgress};
use crate::error::ProcessorError;

/// Renders the metrics registry as Prometheus text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A running status endpoint; stops when dropped.
pub struct StatusServer {
    pub addrs: Vec<SocketAddr>,
    handle: ServerHandle,
}

struct State {
    render: Render,
    progress: Progress,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    partitions: std::collections::BTreeMap<i32, TaskProgress>,
}

impl StatusServer {
    /// Binds `listen` (`host:port`; port 0 picks a free one) and serves in the background.
    pub fn start(
        listen: &str,
        render: Render,
        progress: Progress,
    ) -> Result<StatusServer, ProcessorError> {
        let state = web::Data::new(State { render, progress });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/metrics", web::get().to(metrics))
                .route("/healthz", web::get().to(health))
        })
        .workers(1)
        .disable_signals()
        .bind(listen)
        .map_err(|e| ProcessorError::Startup(format!("processor.listen `{listen}`: {e}")))?;
        let addrs = server.addrs();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(StatusServer { addrs, handle })
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let handle = self.handle.clone();
            runtime.spawn(async move { handle.stop(true).await });
        }
    }
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body((state.render)())
}

async fn health(state: web::Data<State>) -> HttpResponse {
    let partitions = state.progress.lock().expect("progress lock").clone();
    HttpResponse::Ok().json(Health {
        status: "running",
        partitions,
    })
}
