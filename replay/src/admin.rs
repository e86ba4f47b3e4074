//! The admin HTTP API (`hookstream admin`): start, list and cancel replay jobs. Every request
//! under `/v1` must carry `Authorization: Bearer <admin.token>`; the token is compared in
//! constant time (as SHA-256 digests, so its length does not leak either). `GET /healthz`
//! (liveness, for probes) needs none and tells nothing but `{"status":"ok"}`.
//!
//! | method and path          | does |
//! |--------------------------|------|
//! | `GET /v1/config`         | the configuration file's reloads and failures, the problems of the last refused version, tenant and source counts |
//! | `POST /v1/jobs`          | starts a job from a [`JobSpec`] JSON body; 201 with the job |
//! | `GET /v1/jobs`           | every job with its state and progress |
//! | `GET /v1/jobs/{id}`      | one job |
//! | `DELETE /v1/jobs/{id}`   | asks a running job to stop; 202 with the job |
//! | `POST /v1/deliveries/redrive` | sends the dead letters of `delivery-dlq` a [`RedriveBody`] admits back to `hookstream deliver`; 200 with how many |
//!
//! A job's id is its redrive or rebuild id, so starting the same redrive twice is harmless:
//! the processor dedupes per redrive id (409 while the first run is still going). Jobs live
//! in memory; their effects are idempotent, so after a restart a job is simply started again.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpResponse, HttpServer};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use schemas::config::reload::{ReloadStatus, Watched};
use schemas::config::Config;

use crate::job::{execute, JobResult, JobSpec};
use crate::progress::{Snapshot, Tracker};
use crate::ReplayError;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded { result: JobResult },
    Cancelled { result: JobResult },
    Failed { error: String },
}

struct Job {
    spec: JobSpec,
    created_at: String,
    tracker: Arc<Tracker>,
    cancel: Arc<AtomicBool>,
    state: Arc<Mutex<JobState>>,
}

#[derive(Debug, Serialize)]
pub struct JobView {
    pub id: String,
    pub created_at: String,
    pub spec: JobSpec,
    pub progress: Snapshot,
    #[serde(flatten)]
    pub state: JobState,
}

/// The jobs of this admin process. They run on the multi-threaded runtime the admin was
/// started from (a rebuild runs a processor, which needs one), not on the HTTP workers.
#[derive(Clone)]
pub struct Jobs {
    jobs: Arc<Mutex<BTreeMap<String, Job>>>,
    runtime: tokio::runtime::Handle,
}

impl Jobs {
    pub fn new(runtime: tokio::runtime::Handle) -> Self {
        Self {
            jobs: Arc::default(),
            runtime,
        }
    }

    pub fn start(&self, config: Arc<Config>, spec: JobSpec) -> Result<JobView, ReplayError> {
        spec.validate(&config)?;
        let id = spec.id_or_new();
        let mut jobs = self.jobs.lock().expect("jobs lock");
        if jobs
            .get(&id)
            .is_some_and(|job| matches!(*job.state.lock().expect("job lock"), JobState::Running))
        {
            return Err(ReplayError::JobRunning(id));
        }
        let job = Job {
            spec: spec.clone(),
            created_at: schemas::time::to_rfc3339(schemas::time::now_millis()),
            tracker: Arc::default(),
            cancel: Arc::default(),
            state: Arc::new(Mutex::new(JobState::Running)),
        };
        let (tracker, cancel, state) = (job.tracker.clone(), job.cancel.clone(), job.state.clone());
        let job_id = id.clone();
        self.runtime.spawn(async move {
            let outcome = execute(&config, &spec, &job_id, tracker, cancel).await;
            let next = match outcome {
                Ok(result) if cancelled(&result) => JobState::Cancelled { result },
                Ok(result) => JobState::Succeeded { result },
                Err(error) => JobState::Failed {
                    error: error.to_string(),
                },
            };
            tracing::info!(job = %job_id, state = ?next, "replay job ended");
            *state.lock().expect("job lock") = next;
        });
        jobs.insert(id.clone(), job);
        Ok(view(&id, &jobs[&id]))
    }

    pub fn list(&self) -> Vec<JobView> {
        let jobs = self.jobs.lock().expect("jobs lock");
        jobs.iter().map(|(id, job)| view(id, job)).collect()
    }

    pub fn get(&self, id: &str) -> Result<JobView, ReplayError> {
        let jobs = self.jobs.lock().expect("jobs lock");
        jobs.get(id)
            .map(|job| view(id, job))
            .ok_or_else(|| ReplayError::NoSuchJob(id.to_owned()))
    }

    pub fn cancel(&self, id: &str) -> Result<JobView, ReplayError> {
        let jobs = self.jobs.lock().expect("jobs lock");
        let job = jobs
            .get(id)
            .ok_or_else(|| ReplayError::NoSuchJob(id.to_owned()))?;
        job.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(view(id, job))
    }
}

fn cancelled(result: &JobResult) -> bool {
    match result {
        JobResult::DryRun(counts) => counts.cancelled,
        JobResult::Rebuild(rebuilt) => rebuilt.cancelled,
        JobResult::Redrive { cancelled, .. } => *cancelled,
    }
}

fn view(id: &str, job: &Job) -> JobView {
    JobView {
        id: id.to_owned(),
        created_at: job.created_at.clone(),
        spec: job.spec.clone(),
        progress: job.tracker.snapshot(),
        state: job.state.lock().expect("job lock").clone(),
    }
}

struct AdminState {
    /// The newest valid configuration (new jobs use it; see `GET /v1/config`).
    config: tokio::sync::watch::Receiver<Arc<Config>>,
    reloads: Option<tokio::sync::watch::Receiver<ReloadStatus>>,
    jobs: Jobs,
    token_digest: [u8; 32],
    trail: trail::Trail,
}

impl AdminState {
    fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }
}

/// `GET /v1/config`: the configuration file's reloads, the problems of the last refused
/// version (until a reload succeeds), and what the running configuration holds.
async fn config_status(state: web::Data<AdminState>) -> HttpResponse {
    let status = state
        .reloads
        .as_ref()
        .map(|r| r.borrow().clone())
        .unwrap_or_default();
    let config = state.config();
    HttpResponse::Ok().json(serde_json::json!({
        "reloads": status.reloads,
        "failures": status.failures,
        "refused": status.refused,
        "tenants": config.tenants.len(),
        "sources": config.tenants.iter().map(|t| t.sources.len()).sum::<usize>(),
    }))
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn error(error: &ReplayError) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST))
        .json(serde_json::json!({"error": error.code(), "message": error.to_string()}))
}

/// Every route needs the bearer token; it is compared as SHA-256 digests, in constant time.
async fn authorized(
    state: web::Data<AdminState>,
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let presented = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(digest(presented.as_bytes()).ct_eq(&state.token_digest)) && !presented.is_empty()
    {
        return Ok(next.call(request).await?.map_into_left_body());
    }
    let denied = HttpResponse::Unauthorized()
        .insert_header(("www-authenticate", "Bearer"))
        .json(serde_json::json!({"error": "unauthorized", "message": "a valid bearer token (admin.token) is required"}));
    Ok(request.into_response(denied).map_into_right_body())
}

/// Liveness, without the token (for probes): 200 while the server answers.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn create(state: web::Data<AdminState>, body: web::Bytes) -> HttpResponse {
    let spec: JobSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => return error(&ReplayError::invalid(format!("job body: {e}"))),
    };
    match state.jobs.start(state.config(), spec) {
        Ok(job) => HttpResponse::Created().json(job),
        Err(e) => error(&e),
    }
}

/// Which dead letters of `delivery-dlq` to send again (every field optional).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveBody {
    /// `TENANT/ENDPOINT`
    pub endpoint: Option<String>,
    /// The dead letter's reason: `endpoint_disabled`, `http_404`, `timeout`…
    pub reason: Option<String>,
    /// RFC 3339: only dead letters whose last attempt was due at or after it.
    pub since: Option<String>,
}

async fn redrive_deliveries(state: web::Data<AdminState>, body: web::Bytes) -> HttpResponse {
    let body: RedriveBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return error(&ReplayError::invalid(format!("redrive body: {e}"))),
    };
    let since = match body.since.as_deref().map(schemas::time::parse_rfc3339) {
        Some(None) => {
            return error(&ReplayError::invalid(
                "since: not an RFC 3339 time like 2026-11-24T00:00:00Z",
            ))
        }
        Some(Some(ms)) => Some(ms),
        None => None,
    };
    let filter = deliver::RedriveFilter {
        endpoint: body.endpoint,
        reason: body.reason,
        since,
    };
    match deliver::redrive(&state.config(), &filter).await {
        Ok(count) => HttpResponse::Ok().json(serde_json::json!({ "redriven": count })),
        Err(e) => {
            let status = if e.is_retriable() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_REQUEST
            };
            HttpResponse::build(status)
                .json(serde_json::json!({"error": "redrive", "message": e.to_string()}))
        }
    }
}

/// `GET /v1/trail/{tenant}/{source}/{event_id}`: the event's timeline; 404 when the index
/// has no fact about it.
async fn trail_event(
    state: web::Data<AdminState>,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    let (tenant, source, event_id) = path.into_inner();
    let lookup = {
        let state = state.clone();
        web::block(move || state.trail.event(&tenant, &source, &event_id)).await
    };
    match lookup {
        Ok(Ok(timeline)) if timeline.lines.is_empty() => {
            HttpResponse::NotFound().json(serde_json::json!({
                "error": "not_found",
                "message": format!(
                    "no fact about this event in the trail index (it keeps {} h; indexed up to {})",
                    state.config().trail.retention_hours,
                    schemas::time::to_rfc3339(state.trail.caught_up_at())
                ),
            }))
        }
        Ok(Ok(timeline)) => HttpResponse::Ok().json(timeline),
        Ok(Err(e)) => error(&ReplayError::invalid(e)),
        Err(e) => error(&ReplayError::invalid(e)),
    }
}

/// Which part of a tenant's trail: an entity's events, or a source's refusals.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrailQuery {
    entity: Option<String>,
    source: Option<String>,
    #[serde(default)]
    refused: bool,
    /// RFC 3339.
    since: Option<String>,
}

/// `GET /v1/trail/{tenant}?entity=E[&since=T]` (the entity's events) or
/// `?refused=true&source=S[&since=T]` (the source's refused requests).
async fn trail_query(
    state: web::Data<AdminState>,
    path: web::Path<String>,
    query: web::Query<TrailQuery>,
) -> HttpResponse {
    let tenant = path.into_inner();
    let query = query.into_inner();
    let since = match query.since.as_deref().map(schemas::time::parse_rfc3339) {
        Some(None) => return error(&ReplayError::invalid("since: not an RFC 3339 time")),
        Some(Some(ms)) => ms,
        None => i64::MIN,
    };
    let answer = {
        let state = state.clone();
        web::block(move || match (query.entity, query.source, query.refused) {
            (Some(entity), _, false) => state
                .trail
                .entity(&tenant, &entity, since)
                .map(|events| serde_json::json!({ "tenant": tenant, "entity": entity, "events": events }))
                .map_err(|e| e.to_string()),
            (None, Some(source), true) => state
                .trail
                .refusals(&tenant, &source, since)
                .map(|refusals| serde_json::json!({ "tenant": tenant, "source": source, "refusals": refusals }))
                .map_err(|e| e.to_string()),
            _ => Err("ask for `entity=…`, or `refused=true&source=…`".to_owned()),
        })
        .await
    };
    match answer {
        Ok(Ok(body)) => HttpResponse::Ok().json(body),
        Ok(Err(message)) => error(&ReplayError::invalid(message)),
        Err(e) => error(&ReplayError::invalid(e)),
    }
}

async fn list(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "jobs": state.jobs.list() }))
}

async fn show(state: web::Data<AdminState>, id: web::Path<String>) -> HttpResponse {
    match state.jobs.get(&id) {
        Ok(job) => HttpResponse::Ok().json(job),
        Err(e) => error(&e),
    }
}

async fn cancel(state: web::Data<AdminState>, id: web::Path<String>) -> HttpResponse {
    match state.jobs.cancel(&id) {
        Ok(job) => HttpResponse::Accepted().json(job),
        Err(e) => error(&e),
    }
}

/// A running admin API.
pub struct AdminServer {
    pub addrs: Vec<std::net::SocketAddr>,
    server: actix_web::dev::Server,
}

impl AdminServer {
    /// Serves `config`; with `reload`, the newest valid configuration and its reload status
    /// ([`schemas::config::reload::watch`]).
    pub fn start(config: Config, reload: Option<Watched>) -> Result<Self, ReplayError> {
        let token: SecretString = config
            .admin
            .token
            .as_ref()
            .ok_or_else(|| {
                ReplayError::invalid(
                    "admin.token is not set: the admin API needs a bearer token (value, env or file)",
                )
            })?
            .resolve()
            .map_err(|e| ReplayError::invalid(format!("admin.token: {e}")))?;
        let trail = trail::Trail::start(&config).map_err(|e| {
            ReplayError::invalid(format!("trail index ({}): {e}", config.trail.dir.display()))
        })?;
        let (config_rx, reloads) = match reload {
            Some(watched) => (watched.config, Some(watched.status)),
            None => (
                tokio::sync::watch::channel(Arc::new(config.clone())).1,
                None,
            ),
        };
        let state = web::Data::new(AdminState {
            config: config_rx,
            reloads,
            jobs: Jobs::new(tokio::runtime::Handle::current()),
            token_digest: digest(token.expose_secret().as_bytes()),
            trail,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(64 * 1024))
                .route("/healthz", web::get().to(healthz))
                .service(
                    web::scope("/v1")
                        .wrap(from_fn(authorized))
                        .route("/config", web::get().to(config_status))
                        .route("/jobs", web::post().to(create))
                        .route("/jobs", web::get().to(list))
                        .route("/jobs/{id}", web::get().to(show))
                        .route("/jobs/{id}", web::delete().to(cancel))
                        .route("/deliveries/redrive", web::post().to(redrive_deliveries))
                        .route("/trail/{tenant}", web::get().to(trail_query))
                        .route(
                            "/trail/{tenant}/{source}/{event_id:.*}",
                            web::get().to(trail_event),
                        ),
                )
        })
        .workers(1)
        .disable_signals()
        .bind(&config.admin.listen)
        .map_err(|e| {
            ReplayError::invalid(format!("admin.listen `{}`: {e}", config.admin.listen))
        })?;
        let addrs = server.addrs();
        let server = server.run();
        Ok(Self { addrs, server })
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run(self) -> Result<(), ReplayError> {
        Ok(self.server.await?)
    }
}
