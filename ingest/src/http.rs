//! HTTP routes. A webhook goes bytes → verify → extract → append → 202:
//!
//! * `POST /v1/hooks/{tenant}/{source}` (and `…/{source}/{token}` for a source whose shared
//!   token is the last path segment) — 202 `{"status":"accepted","event_id","partition","offset"}`
//!   after the broker acknowledged (batch sources: `{"status":"accepted","count","events":[…]}`);
//!   errors as in [`crate::error`]. Every refusal but 503 is also audited to `rejected`.
//! * `GET /healthz` — the process is up. `GET /readyz` — the broker answers for `raw`.
//! * `GET /metrics` — Prometheus text.
//!
//! Order of checks, cheapest first: route → tenant/source (404) → admission: client address
//! (403) and shared token (401), [`crate::admit`] → rate limit (429) → declared
//! size (413, before reading) → body (413 as soon as it passes the limit) → signature (401) →
//! extraction → append (202; 413 if the broker refuses the record for good, 503 if it is
//! unavailable).
//!
//! The body limit is `min(ingest.max_body_bytes, message.max.bytes - overhead)` (see
//! [`crate::append::Limits`]), so a body that passes it fits in one producer message.
//!
//! A verified request whose extraction fails is not refused: it is appended to `dlq` and
//! answered 202 `{"status":"dead_lettered","reason":"unreadable","message","event_id"?,
//! "topic":"dlq","partition","offset"}` after the broker acknowledged it, audited to
//! `rejected` (status 202, reason `unreadable`) and counted in
//! `hookstream_ingest_dead_lettered_total{tenant,source,reason}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use arc_swap::ArcSwap;
use bytes::BytesMut;
use futures::StreamExt;
use governor::clock::{Clock, DefaultClock};
use metrics_exporter_prometheus::PrometheusHandle;
use schemas::records::RejectedRecord;
use schemas::time::{now_millis, to_rfc3339};
use schemas::trace::TraceParent;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::append::{Appended, Appender};
use crate::dead_letter::{self, UNREADABLE};
use crate::error::IngestError;
use crate::extract::{extract, ExtractError};
use crate::handshake;
use crate::request::{Headers, Request, Target, Unverified};
use crate::telemetry::IngestEvent;
use crate::tenants::Tenants;
use crate::verify::Verifier;

pub struct AppState {
    /// Swapped whole by a reload; each request keeps the ones it started with.
    pub tenants: Arc<ArcSwap<Tenants>>,
    pub appender: Appender,
    pub max_body_bytes: usize,
    pub public_base_url: Option<String>,
    pub trust_forwarded_headers: bool,
    /// `ingest.trusted_proxies`.
    pub trusted_proxies: crate::client_ip::Networks,
    pub metrics: PrometheusHandle,
}

/// The webhook listener's routes; `/metrics` among them unless `ingest.metrics_listen` serves it.
pub fn routes(cfg: &mut web::ServiceConfig, with_metrics: bool) {
    cfg.route("/v1/hooks/{tenant}/{source}", web::post().to(receive))
        .route(
            "/v1/hooks/{tenant}/{source}/{token}",
            web::post().to(receive_with_token),
        )
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
    if with_metrics {
        cfg.route("/metrics", web::get().to(metrics));
    }
    not_found(cfg);
}

/// `ingest.metrics_listen`'s routes: `/metrics`, `/healthz`, `/readyz`.
pub fn operator_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
    not_found(cfg);
}

fn not_found(cfg: &mut web::ServiceConfig) {
    cfg.default_service(web::to(|| async {
        Err::<HttpResponse, _>(IngestError::NotFound)
    }));
}

#[derive(Serialize)]
struct AcceptedOne<'a> {
    status: &'static str,
    event_id: &'a str,
    partition: i32,
    offset: i64,
}

#[derive(Serialize)]
struct DeadLettered<'a> {
    status: &'static str,
    reason: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a str>,
    topic: &'static str,
    partition: i32,
    offset: i64,
}

#[derive(Serialize)]
struct AcceptedEvent {
    event_id: String,
    partition: i32,
    offset: i64,
}

#[derive(Serialize)]
struct AcceptedBatch {
    status: &'static str,
    count: usize,
    events: Vec<AcceptedEvent>,
}

/// What an accepted request led to.
enum Outcome {
    /// Events appended: (event id, position) each, the body size, and whether the source
    /// sends batches (which shapes the answer).
    Appended {
        events: Vec<(String, Appended)>,
        bytes: usize,
        batch: bool,
    },
    /// A provider handshake, answered 200 with this body; nothing appended.
    Handshake(serde_json::Value),
    /// Verified, but the extraction rules could not read it: kept in `dlq`.
    DeadLettered {
        error: ExtractError,
        event_id: Option<String>,
        appended: Appended,
    },
}

/// What is known of the body when a request is refused (for the audit record). The body is
/// kept (a reference-counted handle, no copy) and hashed only if the request is refused.
#[derive(Default)]
struct BodySeen {
    body: Option<bytes::Bytes>,
    bytes: Option<u64>,
}

async fn receive(
    path: web::Path<(String, String)>,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<Arc<AppState>>,
) -> HttpResponse {
    let (tenant, source) = path.into_inner();
    handle(tenant, source, None, request, payload, state).await
}

/// `/v1/hooks/{tenant}/{source}/{token}`: a source whose token is the last path segment.
/// The segment is never logged or audited.
async fn receive_with_token(
    path: web::Path<(String, String, String)>,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<Arc<AppState>>,
) -> HttpResponse {
    let (tenant, source, token) = path.into_inner();
    handle(tenant, source, Some(token), request, payload, state).await
}

async fn handle(
    tenant: String,
    source: String,
    path_token: Option<String>,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<Arc<AppState>>,
) -> HttpResponse {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let incoming = request
        .headers()
        .get(schemas::trace::HEADER)
        .and_then(|v| TraceParent::parse(v.as_bytes()));
    let trace = incoming.map_or_else(TraceParent::root, |parent| parent.child());
    let span = tracing::info_span!("webhook", %tenant, %source, event_id = tracing::field::Empty, trace_id = %hex::encode(trace.trace_id));
    let mut seen = BodySeen::default();
    let path_token = path_token.as_deref();
    let route = Route {
        tenant: &tenant,
        source: &source,
        token: path_token,
    };
    let outcome = accept(route, &request, payload, &state, &mut seen, &trace)
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    let (response, outcome_label) = match outcome {
        Ok(Outcome::Handshake(answer)) => (HttpResponse::Ok().json(answer), "handshake"),
        Ok(Outcome::DeadLettered {
            error,
            event_id,
            appended,
        }) => {
            IngestEvent::DeadLettered {
                tenant: &tenant,
                source: &source,
                reason: UNREADABLE,
                error: &error,
                partition: appended.partition,
                offset: appended.offset,
            }
            .emit();
            state.appender.audit(&RejectedRecord {
                tenant: tenant.clone(),
                source: source.clone(),
                status: 202,
                reason: UNREADABLE.to_owned(),
                message: dead_letter::error_text(&error),
                remote_addr: request
                    .peer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                body_sha256: seen.body.map(|body| hex::encode(Sha256::digest(&body))),
                body_bytes: seen.bytes,
                received_at: to_rfc3339(now_millis()),
            });
            let response = HttpResponse::Accepted().json(DeadLettered {
                status: "dead_lettered",
                reason: UNREADABLE,
                message: format!(
                    "verified, but the source's extraction rules cannot read it ({error}); kept in dlq for redrive"
                ),
                event_id: event_id.as_deref(),
                topic: "dlq",
                partition: appended.partition,
                offset: appended.offset,
            });
            (response, "dead_lettered")
        }
        Ok(Outcome::Appended {
            events,
            bytes,
            batch,
        }) => {
            span.record("event_id", events[0].0.as_str());
            for (event_id, appended) in &events {
                IngestEvent::Accepted {
                    tenant: &tenant,
                    source: &source,
                    event_id,
                    partition: appended.partition,
                    offset: appended.offset,
                    bytes,
                    elapsed: started.elapsed(),
                }
                .emit();
            }
            let response = if batch {
                HttpResponse::Accepted().json(AcceptedBatch {
                    status: "accepted",
                    count: events.len(),
                    events: events
                        .into_iter()
                        .map(|(event_id, a)| AcceptedEvent {
                            event_id,
                            partition: a.partition,
                            offset: a.offset,
                        })
                        .collect(),
                })
            } else {
                let (event_id, appended) = &events[0];
                HttpResponse::Accepted().json(AcceptedOne {
                    status: "accepted",
                    event_id,
                    partition: appended.partition,
                    offset: appended.offset,
                })
            };
            (response, "accepted")
        }
        Err(error) => {
            IngestEvent::Refused {
                tenant: &tenant,
                source: &source,
                error: &error,
            }
            .emit();
            if error.status_code().is_client_error() {
                state.appender.audit(&RejectedRecord {
                    tenant: tenant.clone(),
                    source: source.clone(),
                    status: error.status_code().as_u16(),
                    reason: error.code().to_owned(),
                    message: error.to_string(),
                    remote_addr: request
                        .peer_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    body_sha256: seen.body.map(|body| hex::encode(Sha256::digest(&body))),
                    body_bytes: seen.bytes,
                    received_at: to_rfc3339(now_millis()),
                });
            }
            (error.error_response(), error.code())
        }
    };
    metrics::histogram!("hookstream_ingest_request_seconds", "outcome" => outcome_label)
        .record(started.elapsed().as_secs_f64());
    export_span(
        &trace,
        incoming,
        started_at,
        [tenant, source],
        outcome_label,
        &response,
    );
    response
}

/// The ingest's span of the trace (exported when OTLP export is on): the request, from its
/// first byte to the answer.
fn export_span(
    trace: &TraceParent,
    incoming: Option<TraceParent>,
    started_at: std::time::SystemTime,
    [tenant, source]: [String; 2],
    outcome: &str,
    response: &HttpResponse,
) {
    if !schemas::trace::exporting() {
        return;
    }
    let status = response.status();
    schemas::trace::export(schemas::trace::Span {
        name: "hookstream.ingest",
        kind: schemas::trace::Kind::Server,
        context: *trace,
        parent: incoming,
        start: started_at,
        end: std::time::SystemTime::now(),
        attributes: &[
            ("hookstream.tenant", tenant),
            ("hookstream.source", source),
            ("hookstream.outcome", outcome.to_owned()),
            ("http.response.status_code", status.as_u16().to_string()),
        ],
        error: status.is_server_error().then(|| outcome.to_owned()),
    });
}

/// What the path names: tenant, source and, for token-in-path sources, the token.
struct Route<'a> {
    tenant: &'a str,
    source: &'a str,
    token: Option<&'a str>,
}

async fn accept(
    Route {
        tenant,
        source,
        token: path_token,
    }: Route<'_>,
    http: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    seen: &mut BodySeen,
    trace: &TraceParent,
) -> Result<Outcome, IngestError> {
    let tenants = state.tenants.load_full();
    let runtime = tenants
        .get(tenant)
        .ok_or_else(|| IngestError::UnknownTenant(tenant.to_owned()))?;
    let source_runtime = runtime
        .sources
        .get(source)
        .ok_or_else(|| IngestError::UnknownSource {
            tenant: tenant.to_owned(),
            source_id: source.to_owned(),
        })?;
    let admitted = source_runtime
        .gate
        .admit(http, path_token, &state.trusted_proxies)?;
    if let Some(limiter) = &runtime.limiter {
        if let Err(not_until) = limiter.bucket.check() {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_millis().div_ceil(1000).max(1);
            return Err(IngestError::RateLimited {
                retry_after: u32::try_from(seconds).unwrap_or(u32::MAX),
            });
        }
    }
    let body = read_body(http, payload, state.max_body_bytes, seen).await?;
    let bytes = body.len();
    let body = body.freeze();
    seen.bytes = Some(bytes as u64);
    seen.body = Some(body.clone());
    let mut headers = Headers::new();
    for (name, value) in http.headers() {
        headers.push(name.as_str(), value.as_bytes());
    }
    let now = now_millis();
    let target = target(http, state);
    let request =
        Request::<Unverified>::new(tenant, source, headers, body, now).with_target(target);
    let verified = match &source_runtime.verifier {
        Verifier::None => request.admitted(admitted),
        verifier => request.verify(verifier, now)?,
    };
    if let Some(answer) = handshake::answer(source_runtime.verifier.scheme(), &verified) {
        return Ok(Outcome::Handshake(answer));
    }
    let scheme = source_runtime.verifier.scheme();
    let events = match extract(
        &verified,
        scheme,
        &source_runtime.rules,
        source_runtime.batch,
    ) {
        Ok(events) => events,
        Err(error) => {
            // Verified: the sender's data is kept even though our rules cannot read it.
            let letter = dead_letter::dead_letter(
                &verified,
                scheme,
                &source_runtime.rules,
                &error,
                &source_runtime
                    .secret_headers
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            );
            let event_id = letter
                .headers
                .iter()
                .find(|(n, _)| n == schemas::raw::header::EVENT_ID)
                .and_then(|(_, v)| String::from_utf8(v.clone()).ok());
            let appended = state.appender.dead_letter(&verified, &letter).await?;
            return Ok(Outcome::DeadLettered {
                error,
                event_id,
                appended,
            });
        }
    };
    tracing::Span::current().record("event_id", events[0].meta.event_id.as_str());
    let appended = state.appender.append(&verified, &events, trace).await?;
    Ok(Outcome::Appended {
        events: events
            .into_iter()
            .map(|e| e.meta.event_id)
            .zip(appended)
            .collect(),
        bytes,
        batch: source_runtime.batch,
    })
}

/// The URL the provider addressed, as providers sign it: the configured public base URL, or
/// the forwarded headers when trusted, or the `Host` header; then the path and query as sent.
fn target(http: &HttpRequest, state: &AppState) -> Target {
    let path_and_query = http
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let header = |name: &str| {
        http.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or(v).trim().to_owned())
    };
    let base = match &state.public_base_url {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => {
            let forwarded = |name| {
                if state.trust_forwarded_headers {
                    header(name)
                } else {
                    None
                }
            };
            let scheme = forwarded("x-forwarded-proto").unwrap_or_else(|| "http".to_owned());
            let host = forwarded("x-forwarded-host")
                .or_else(|| header("host"))
                .unwrap_or_default();
            format!("{scheme}://{host}")
        }
    };
    Target {
        method: http.method().as_str().to_owned(),
        url: format!("{base}{path_and_query}"),
    }
}

async fn read_body(
    http: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    seen: &mut BodySeen,
) -> Result<BytesMut, IngestError> {
    let declared = http
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    seen.bytes = declared.map(|d| d as u64);
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
