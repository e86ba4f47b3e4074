//! HTTP routes. A webhook goes bytes → verify → extract → append → 202:
//!
//! * `POST /v1/hooks/{tenant}/{source}` — 202 `{"status":"accepted","event_id","partition","offset"}`
//!   after the broker acknowledged; errors as in [`crate::error`].
//! * `GET /healthz` — the process is up. `GET /readyz` — the broker answers for `raw`.
//! * `GET /metrics` — Prometheus text.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use schemas::config::Rules;
use schemas::time::now_millis;
use serde::Serialize;

use crate::append::Appender;
use crate::error::IngestError;
use crate::extract::extract;
use crate::request::{Headers, Request, Unverified};
use crate::telemetry::IngestEvent;
use crate::verify::Verifier;

pub struct SourceRuntime {
    pub verifier: Verifier,
    pub rules: Rules,
}

pub struct AppState {
    pub tenants: HashMap<String, HashMap<String, SourceRuntime>>,
    pub appender: Appender,
    pub max_body_bytes: usize,
    pub metrics: PrometheusHandle,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/hooks/{tenant}/{source}", web::post().to(receive))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(IngestError::NotFound)
        }));
}

#[derive(Serialize)]
struct Accepted<'a> {
    status: &'static str,
    event_id: &'a str,
    partition: i32,
    offset: i64,
}

async fn receive(
    path: web::Path<(String, String)>,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<Arc<AppState>>,
) -> Result<HttpResponse, IngestError> {
    let started = Instant::now();
    let (tenant, source) = path.into_inner();
    let outcome = accept(&tenant, &source, &request, payload, &state).await;
    match outcome {
        Ok((event_id, appended, bytes)) => {
            IngestEvent::Accepted {
                tenant: &tenant,
                source: &source,
                event_id: &event_id,
                partition: appended.partition,
                offset: appended.offset,
                bytes,
                elapsed: started.elapsed(),
            }
            .emit();
            Ok(HttpResponse::Accepted().json(Accepted {
                status: "accepted",
                event_id: &event_id,
                partition: appended.partition,
                offset: appended.offset,
            }))
        }
        Err(error) => {
            IngestEvent::Refused {
                tenant: &tenant,
                source: &source,
                error: &error,
            }
            .emit();
            Err(error)
        }
    }
}

async fn accept(
    tenant: &str,
    source: &str,
    http: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(String, crate::append::Appended, usize), IngestError> {
    let sources = state
        .tenants
        .get(tenant)
        .ok_or_else(|| IngestError::UnknownTenant(tenant.to_owned()))?;
    let runtime = sources
        .get(source)
        .ok_or_else(|| IngestError::UnknownSource {
            tenant: tenant.to_owned(),
            source_id: source.to_owned(),
        })?;
    let body = read_body(http, payload, state.max_body_bytes).await?;
    let bytes = body.len();
    let mut headers = Headers::new();
    for (name, value) in http.headers() {
        headers.push(name.as_str(), value.as_bytes());
    }
    let now = now_millis();
    let request = Request::<Unverified>::new(tenant, source, headers, body.freeze(), now);
    let verified = request.verify(&runtime.verifier, now)?;
    let meta = extract(&verified, runtime.verifier.scheme(), &runtime.rules)?;
    let appended = state.appender.append(&verified, &meta).await?;
    Ok((meta.event_id, appended, bytes))
}

async fn read_body(
    http: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<BytesMut, IngestError> {
    let declared = http
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(IngestError::TooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| IngestError::BadBody(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(IngestError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<Arc<AppState>>) -> Result<HttpResponse, IngestError> {
    let appender = state.appender.clone();
    let check = web::block(move || appender.ready(Duration::from_secs(3)))
        .await
        .map_err(|e| IngestError::Unavailable {
            reason: e.to_string(),
            retry_after: 1,
        })?;
    match check {
        Ok(()) => Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))),
        Err(reason) => Err(IngestError::Unavailable {
            reason,
            retry_after: 1,
        }),
    }
}

async fn metrics(state: web::Data<Arc<AppState>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
