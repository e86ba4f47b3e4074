//! The processor's HTTP endpoint (`processor.listen`), for operators and their scrapers:
//!
//! - `GET /metrics`: Prometheus text. Per tenant, `hookstream_processor_events_total`,
//!   duplicates, late, deferred and dead letters; released, commit and produce retries, batch
//!   sizes and durations, restores; per tenant `hookstream_processor_time_skewed_total`
//!   (untrusted event times) and `hookstream_processor_diverted_total` (inputs sent to `dlq`
//!   as too large or refused); `hookstream_processor_produce_refused_total`,
//!   `hookstream_processor_produce_backpressure_total` and
//!   `hookstream_processor_broker_retries_total` (by `operation`); and per tenant the caps'
//!   `hookstream_caps_used` /
//!   `hookstream_caps_limit` (by `cap`), `hookstream_caps_deferred_total` (by `reason`) and
//!   `hookstream_caps_breaker_open`.
//!   Per partition, `hookstream_processor_partition_phase` (1 for its phase, see
//!   [`crate::progress`]), `hookstream_processor_restore_remaining_records` and
//!   `hookstream_processor_consumer_lag_records`.
//! - `GET /healthz` (liveness): 200 with each assigned partition's phase, its task's next
//!   `raw` offset and how many events it holds back, as of its last durable batch; 503
//!   (`waiting_for_broker`, with the partitions and errors) while a partition task cannot
//!   open for broker trouble ([`crate::retry`]) or produced records are not being
//!   acknowledged. A restore, however long, is not a reason to restart: it answers 200.
//! - `GET /readyz` (readiness): the same body; 200 `ready` when every partition is
//!   `running`, else 503 `not_ready` (restoring, with records left; catching up; waiting;
//!   failed, with the error).
//!
//! No endpoint unless `processor.listen` is set: several processors may share a host.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Serialize;

use crate::error::ProcessorError;
use crate::progress::{self, Progress, TaskProgress};
use crate::retry::Waiting;

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
    waiting: Waiting,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    partitions: std::collections::BTreeMap<i32, TaskProgress>,
    /// What waits for the broker (a partition task that cannot open, outputs that are not
    /// acknowledged), with the last error.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    waiting: std::collections::BTreeMap<String, String>,
}

impl StatusServer {
    /// Binds `listen` (`host:port`; port 0 picks a free one) and serves in the background.
    pub fn start(
        listen: &str,
        render: Render,
        progress: Progress,
        waiting: Waiting,
    ) -> Result<StatusServer, ProcessorError> {
        let state = web::Data::new(State {
            render,
            progress,
            waiting,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/metrics", web::get().to(metrics))
                .route("/healthz", web::get().to(health))
                .route("/readyz", web::get().to(ready))
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
    let waiting = state.waiting.lock().expect("waiting lock").clone();
    if waiting.is_empty() {
        HttpResponse::Ok().json(Health {
            status: "running",
            partitions,
            waiting,
        })
    } else {
        HttpResponse::ServiceUnavailable().json(Health {
            status: "waiting_for_broker",
            partitions,
            waiting,
        })
    }
}

async fn ready(state: web::Data<State>) -> HttpResponse {
    let partitions = state.progress.lock().expect("progress lock").clone();
    let waiting = state.waiting.lock().expect("waiting lock").clone();
    if waiting.is_empty() && progress::ready(&partitions) {
        HttpResponse::Ok().json(Health {
            status: "ready",
            partitions,
            waiting,
        })
    } else {
        HttpResponse::ServiceUnavailable().json(Health {
            status: "not_ready",
            partitions,
            waiting,
        })
    }
}
