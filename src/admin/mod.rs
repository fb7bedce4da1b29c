//! The admin HTTP API (actix-web on `admin.listen`), stopped with the service.
//!
//! | endpoint | |
//! |---|---|
//! | `GET /health/live` | 200 `{"status":"ok"}` while the actor system runs |
//! | `GET /health/ready` | 200 when no partition is failed or restarting and Redis and the model answer; else 503 with reasons |
//! | `GET /status` | instance, version, uptime, config summary, partitions, counters, breaker, latency |
//! | `GET /metrics` | Prometheus text |
//! | `GET /` | live status page (HTML, embedded) |
//! | `POST /replay`, `GET`/`DELETE /replay/{id}` | dead-letter replay (see [`replay`]) |
//! | `POST /partitions/{p}/pause`, `/resume`, `/seek` | operator control (bearer token) |
//!
//! Errors are JSON `{"error": "…", "field": "…"?}`: 400 for a bad body or parameter (naming the
//! field), 401/403 for authorization, 404 for an unknown route or partition, 413 for a body over
//! [`MAX_BODY_BYTES`], 429 for a replay beyond `admin.replay_max_jobs` running jobs.

mod auth;
pub mod error;
mod metrics;
pub mod replay;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::DateTime;
use clickpipe_actors::config::Config;
use clickpipe_actors::partition::{Control, ControlError};
use clickpipe_actors::pipeline::{CommandError, PipelineHandle};
use clickpipe_actors::stats::Stats;
use clickpipe_actors::status::{PartitionState, StatusBoard};
use clickpipe_actors::status::{PartitionStatus, Policies};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

pub use error::ApiError;

/// Largest request body the admin API reads.
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// What the handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// The pipeline's counters.
    pub stats: Arc<Stats>,
    /// Per-partition state and the circuit breaker.
    pub status: Arc<StatusBoard>,
    /// When the service started.
    pub started: Instant,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// This instance's id (host name and process id).
    pub instance_id: String,
    /// The running pipeline (partition commands, probes); None when only the read-only views are
    /// served (tests).
    pub pipeline: Option<PipelineHandle>,
    /// Dead-letter replay jobs.
    pub replays: Arc<replay::ReplayJobs>,
}

/// This instance's id: `{hostname}-{pid}` (the host name is the task id on ECS/Fargate).
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}-{}", std::process::id())
}

/// Registers the routes; the app is built by a function so tests need no socket.
pub fn routes(state: AdminState) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(state))
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BODY_BYTES)
                    .error_handler(error::json_error),
            )
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .route("/", web::get().to(status_page))
            .route("/health/live", web::get().to(live))
            .route("/health/ready", web::get().to(ready))
            .route("/status", web::get().to(status))
            .route("/metrics", web::get().to(metrics_text))
            .route("/openapi.json", web::get().to(openapi_json))
            .route("/partitions/{partition}/pause", web::post().to(pause))
            .route("/partitions/{partition}/resume", web::post().to(resume))
            .route("/partitions/{partition}/seek", web::post().to(seek))
            .route("/replay", web::post().to(replay_start))
            .route("/replay/{id}", web::get().to(replay_get))
            .route("/replay/{id}", web::delete().to(replay_cancel))
            .default_service(web::to(not_found));
    }
}

/// `GET /health/live` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveResponse {
    /// Always `ok`.
    pub status: String,
}

/// `GET /health/ready` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Why it is not ready (absent when ready).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The configuration summary in `/status` (no secrets: URLs are masked, the token is not shown).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigSummary {
    /// `kafka.brokers`.
    pub brokers: String,
    /// `kafka.group_id`.
    pub group_id: String,
    /// `kafka.input_topic`.
    pub input_topic: String,
    /// `kafka.output_topic`.
    pub output_topic: String,
    /// `kafka.dlq_topic`.
    pub dlq_topic: String,
    /// `redis.url`, credentials masked.
    pub redis_url: String,
    /// `model.url`, credentials masked.
    pub model_url: String,
    /// `model.max_batch_size`.
    pub model_max_batch_size: usize,
    /// `pipeline.max_in_flight`.
    pub max_in_flight: usize,
    /// `pipeline.workers` (0: one per core).
    pub workers: usize,
    /// Whether `admin.token` is set (the mutating endpoints are enabled).
    pub admin_token_set: bool,
}

/// Dead letters by kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterCounts {
    /// `invalid_event`.
    pub invalid_event: u64,
    /// `lookup_failed`.
    pub lookup_failed: u64,
    /// `inference_failed`.
    pub inference_failed: u64,
    /// `output_failed`.
    pub output_failed: u64,
}

/// The counters in `/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counters {
    /// Records read from the input topic.
    pub records_in: u64,
    /// Outputs acknowledged by the broker.
    pub processed: u64,
    /// Same as `processed` (kept for compatibility).
    pub outputs: u64,
    /// Dead letters acknowledged, by kind.
    pub dead_letters: DeadLetterCounts,
    /// Model requests.
    pub model_batches: u64,
    /// Events scored by the model.
    pub model_events: u64,
    /// Restarts of partitions' stages.
    pub restarts: u64,
}

/// Latency percentiles in `/status`, milliseconds: upper bounds of the histogram buckets
/// holding them (see `/metrics`); null before the first output.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyMs {
    /// Input record timestamp → output acknowledged, median.
    pub end_to_end_p50: Option<f64>,
    /// … 99th percentile.
    pub end_to_end_p99: Option<f64>,
    /// Read by clickpipe → output acknowledged, median.
    pub processing_p50: Option<f64>,
    /// … 99th percentile.
    pub processing_p99: Option<f64>,
}

/// `GET /status` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    /// `{hostname}-{pid}`.
    pub instance_id: String,
    /// clickpipe's version.
    pub version: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// What it runs with.
    pub config: ConfigSummary,
    /// The partitions assigned to this instance.
    pub partitions: Vec<PartitionStatus>,
    /// Model circuit breaker: `closed`, `open` or `half_open`.
    pub circuit_breaker: String,
    /// Failure policies in force.
    pub policies: Policies,
    /// Partition failures counted against the root supervisor's intensity.
    pub root_restarts_in_window: u32,
    /// Counters since start.
    pub counters: Counters,
    /// Latency percentiles.
    pub latency_ms: LatencyMs,
}

/// Answer of the partition commands: the partition's status after the command.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlResponse {
    /// The partition.
    pub partition: i32,
    /// Its status (null if it was revoked meanwhile).
    pub status: Option<PartitionStatus>,
}

/// `POST /replay` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayStarted {
    /// The job id, for `GET /replay/{id}`.
    pub id: String,
    /// `running` (or `failed` if it could not start).
    pub state: replay::JobState,
}

/// The live status page: one HTML file with its script inline, embedded in the binary.
const STATUS_PAGE: &str = include_str!("status.html");

/// The live status page (HTML with inline script; nothing loaded from elsewhere).
#[utoipa::path(get, path = "/", tag = "status",
    responses((status = 200, description = "HTML page", content_type = "text/html", body = String)))]
async fn status_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(STATUS_PAGE)
}

/// Liveness: 200 while the actor system runs.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "Alive", body = LiveResponse)))]
async fn live() -> HttpResponse {
    HttpResponse::Ok().json(LiveResponse {
        status: "ok".into(),
    })
}

/// Readiness: every assigned partition is consuming (none failed or restarting) and Redis and
/// the model answer a probe.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = ReadyResponse),
        (status = 503, description = "Not ready, with the reasons", body = ReadyResponse)))]
async fn ready(state: web::Data<AdminState>) -> HttpResponse {
    let mut reasons = state.status.not_ready_reasons();
    for p in state.status.partitions() {
        if p.state == PartitionState::Restarting {
            reasons.push(format!(
                "partition {} is restarting its stages",
                p.partition
            ));
        }
    }
    if let Some(pipeline) = &state.pipeline {
        let (redis, model) = pipeline.probe_dependencies().await;
        if let Err(e) = redis {
            reasons.push(format!("redis unreachable: {e}"));
        }
        if let Err(e) = model {
            reasons.push(format!("model unreachable: {e}"));
        }
    }
    if reasons.is_empty() {
        HttpResponse::Ok().json(ReadyResponse {
            status: "ready".into(),
            reasons,
        })
    } else {
        HttpResponse::ServiceUnavailable().json(ReadyResponse {
            status: "not_ready".into(),
            reasons,
        })
    }
}

/// Instance, configuration summary, partitions, counters, circuit breaker, latency.
#[utoipa::path(get, path = "/status", tag = "status",
    responses((status = 200, description = "Status", body = StatusResponse)))]
async fn status(state: web::Data<AdminState>) -> HttpResponse {
    let s = &state.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let ms = |v: Option<f64>| v.map(|v| v * 1000.0);
    let c = state.config.masked();
    HttpResponse::Ok().json(StatusResponse {
        instance_id: state.instance_id.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: state.started.elapsed().as_secs(),
        config: ConfigSummary {
            brokers: c.kafka.brokers,
            group_id: c.kafka.group_id,
            input_topic: c.kafka.input_topic,
            output_topic: c.kafka.output_topic,
            dlq_topic: c.kafka.dlq_topic,
            redis_url: c.redis.url,
            model_url: c.model.url,
            model_max_batch_size: c.model.max_batch_size,
            max_in_flight: c.pipeline.max_in_flight,
            workers: c.pipeline.workers,
            admin_token_set: state.config.admin.token.is_some(),
        },
        partitions: state.status.partitions(),
        circuit_breaker: state.status.breaker.state().as_str().into(),
        policies: state.status.policies.clone(),
        root_restarts_in_window: state.status.root_restarts(),
        counters: Counters {
            records_in: load(&s.records_in),
            processed: load(&s.outputs),
            outputs: load(&s.outputs),
            dead_letters: DeadLetterCounts {
                invalid_event: load(&s.invalid_event),
                lookup_failed: load(&s.lookup_failed),
                inference_failed: load(&s.inference_failed),
                output_failed: load(&s.output_failed),
            },
            model_batches: load(&s.model_batches),
            model_events: load(&s.model_events),
            restarts: load(&s.restarts),
        },
        latency_ms: LatencyMs {
            end_to_end_p50: ms(s.end_to_end.quantile(0.5)),
            end_to_end_p99: ms(s.end_to_end.quantile(0.99)),
            processing_p50: ms(s.processing.quantile(0.5)),
            processing_p99: ms(s.processing.quantile(0.99)),
        },
    })
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "status",
    responses((status = 200, description = "Prometheus text format 0.0.4",
        content_type = "text/plain", body = String)))]
async fn metrics_text(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics::render(&state))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "error": format!("no such endpoint: {} {}", req.method(), req.path())
    }))
}

/// The OpenAPI document, generated from the handlers' annotations and the request and response
/// types.
#[derive(OpenApi)]
#[openapi(
    info(title = "clickpipe admin API", description = "Health, status, metrics, dead-letter replay and partition control of a clickpipe instance."),
    paths(status_page, live, ready, status, metrics_text, openapi_json, pause, resume, seek,
        replay_start, replay_get, replay_cancel),
    components(schemas(ApiError, LiveResponse, ReadyResponse, StatusResponse, ConfigSummary,
        Counters, DeadLetterCounts, LatencyMs, ControlResponse, ReplayStarted, SeekRequest,
        replay::ReplayRequest, replay::JobReport, replay::JobState, PartitionStatus,
        PartitionState, Policies)),
    modifiers(&BearerAuth),
    tags((name = "health"), (name = "status"), (name = "partitions"), (name = "replay"))
)]
pub struct ApiDoc;

/// Adds the bearer-token security scheme.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "status",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// The pipeline behind a mutating request, after authorization.
fn pipeline_for(req: &HttpRequest, state: &AdminState) -> Result<PipelineHandle, ApiError> {
    auth::authorize(req, state.config.admin.token.as_deref())?;
    state.pipeline.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pipeline is not running",
        )
    })
}

fn command_error(e: CommandError) -> ApiError {
    match e {
        CommandError::NotAssigned(p) => {
            ApiError::not_found(format!("partition {p} is not assigned to this instance"))
        }
        CommandError::Refused(e @ ControlError::PastTheEnd { .. }) => {
            ApiError::bad_field("offset", e.to_string())
        }
        CommandError::Refused(e) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        CommandError::Gone(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        CommandError::Timestamp(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// Runs `command` on a partition and answers with its status.
async fn control(
    req: HttpRequest,
    state: web::Data<AdminState>,
    partition: i32,
    command: Control,
) -> Result<HttpResponse, ApiError> {
    let pipeline = pipeline_for(&req, &state)?;
    pipeline
        .command(partition, command)
        .await
        .map_err(command_error)?;
    let status = state
        .status
        .partitions()
        .into_iter()
        .find(|p| p.partition == partition);
    Ok(HttpResponse::Ok().json(ControlResponse { partition, status }))
}

/// The error answers every partition command shares (documentation only).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum ControlErrors {
    /// A bad partition number or body field.
    #[response(status = 400, description = "Bad partition number or body field")]
    BadRequest(ApiError),
    /// Authorization.
    #[response(status = 401, description = "Missing or wrong token")]
    Unauthorized(ApiError),
    /// No token configured.
    #[response(status = 403, description = "No admin.token configured")]
    Forbidden(ApiError),
    /// Not this instance's partition.
    #[response(status = 404, description = "Partition not assigned here")]
    NotFound(ApiError),
    /// The partition refused the command.
    #[response(status = 409, description = "Partition draining or failed")]
    Conflict(ApiError),
    /// No pipeline behind the API.
    #[response(status = 503, description = "Pipeline not running")]
    Unavailable(ApiError),
}

/// Pauses a partition at the consumer until resumed (in-flight records finish).
#[utoipa::path(post, path = "/partitions/{partition}/pause", tag = "partitions",
    params(("partition" = i32, Path, minimum = 0, example = 0, description = "Partition of the input topic")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Paused", body = ControlResponse),
        ControlErrors))]
async fn pause(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<i32>,
) -> Result<HttpResponse, ApiError> {
    control(req, state, path.into_inner(), Control::Pause).await
}

/// Resumes a partition paused by an operator.
#[utoipa::path(post, path = "/partitions/{partition}/resume", tag = "partitions",
    params(("partition" = i32, Path, minimum = 0, example = 0, description = "Partition of the input topic")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Resumed", body = ControlResponse),
        ControlErrors))]
async fn resume(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<i32>,
) -> Result<HttpResponse, ApiError> {
    control(req, state, path.into_inner(), Control::Resume).await
}

/// Body of `POST /partitions/{p}/seek`: exactly one of `offset` and `timestamp`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeekRequest {
    /// Offset to continue reading at.
    pub offset: Option<i64>,
    /// RFC 3339 time: continue at the first record at or after it.
    pub timestamp: Option<String>,
}

/// Starts replaying dead letters into the input topic; 202 with the job id.
#[utoipa::path(post, path = "/replay", tag = "replay",
    request_body(content = replay::ReplayRequest, description = "Filter (every field optional; an empty body replays everything)"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Started", body = ReplayStarted),
        (status = 400, description = "Bad field", body = ApiError),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 403, description = "No admin.token configured", body = ApiError),
        (status = 413, description = "Body too large", body = ApiError),
        (status = 429, description = "admin.replay_max_jobs jobs are running already", body = ApiError)))]
async fn replay_start(
    req: HttpRequest,
    state: web::Data<AdminState>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    auth::authorize(&req, state.config.admin.token.as_deref())?;
    let request: replay::ReplayRequest = error::optional_json(body).await?;
    let filter = request.validate()?;
    let job = state.replays.start(state.config.clone(), filter)?;
    let report = job.report();
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/replay/{}", report.id)))
        .json(ReplayStarted {
            id: report.id,
            state: report.state,
        }))
}

/// A replay job's progress.
#[utoipa::path(get, path = "/replay/{id}", tag = "replay",
    params(("id" = String, Path, description = "Job id from POST /replay")),
    responses(
        (status = 200, description = "The job", body = replay::JobReport),
        (status = 404, description = "No such job", body = ApiError)))]
async fn replay_get(
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let job = state
        .replays
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no replay job {id:?}")))?;
    Ok(HttpResponse::Ok().json(job.report()))
}

/// Cancels a replay job (it stops after the record at hand, withdrawing what it has not sent).
#[utoipa::path(delete, path = "/replay/{id}", tag = "replay",
    params(("id" = String, Path, description = "Job id from POST /replay")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Cancelling", body = replay::JobReport),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 403, description = "No admin.token configured", body = ApiError),
        (status = 404, description = "No such job", body = ApiError)))]
async fn replay_cancel(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    auth::authorize(&req, state.config.admin.token.as_deref())?;
    let id = path.into_inner();
    let job = state
        .replays
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no replay job {id:?}")))?;
    job.cancel();
    Ok(HttpResponse::Accepted().json(job.report()))
}

/// Where a seek goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeekTarget {
    Offset(i64),
    /// Epoch milliseconds.
    Time(i64),
}

impl SeekRequest {
    fn target(&self) -> Result<SeekTarget, ApiError> {
        match (self.offset, self.timestamp.as_deref()) {
            (Some(_), Some(_)) => Err(ApiError::bad_field(
                "offset",
                "give either `offset` or `timestamp`, not both",
            )),
            (None, None) => Err(ApiError::bad_field(
                "offset",
                "give `offset` (a number) or `timestamp` (RFC 3339)",
            )),
            (Some(o), None) if o < 0 => Err(ApiError::bad_field("offset", "must be 0 or more")),
            (Some(o), None) => Ok(SeekTarget::Offset(o)),
            (None, Some(ts)) => DateTime::parse_from_rfc3339(ts)
                .map(|at| SeekTarget::Time(at.timestamp_millis()))
                .map_err(|e| {
                    ApiError::bad_field("timestamp", format!("not an RFC 3339 time: {e}"))
                }),
        }
    }
}

/// Drops the partition's in-flight records and continues at an offset, or at the first record
/// at or after a time; the new position is committed.
#[utoipa::path(post, path = "/partitions/{partition}/seek", tag = "partitions",
    params(("partition" = i32, Path, minimum = 0, example = 0, description = "Partition of the input topic")),
    request_body(content = SeekRequest, description = "Exactly one of `offset` and `timestamp`"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Repositioned", body = ControlResponse),
        (status = 413, description = "Body too large", body = ApiError),
        (status = 502, description = "The broker could not resolve the timestamp", body = ApiError),
        ControlErrors))]
async fn seek(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<i32>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let partition = path.into_inner();
    auth::authorize(&req, state.config.admin.token.as_deref())?;
    let body: SeekRequest = error::json_body(body, false).await?;
    let target = body.target()?;
    let pipeline = pipeline_for(&req, &state)?;
    let offset = match target {
        SeekTarget::Offset(o) => o,
        SeekTarget::Time(ms) => {
            if !pipeline.is_assigned(partition) {
                return Err(command_error(CommandError::NotAssigned(partition)));
            }
            let p = pipeline.clone();
            web::block(move || p.offset_for_timestamp(partition, ms))
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(command_error)?
        }
    };
    control(req, state, partition, Control::Seek(offset)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};

    fn state(token: Option<&str>) -> AdminState {
        let breaker = Arc::new(clickpipe_actors::clients::breaker::CircuitBreaker::new(
            1,
            std::time::Duration::from_secs(1),
        ));
        let mut config = crate::settings::load_from(
            None,
            figment::providers::Env::prefixed("CLICKPIPE_ADMIN_TEST_UNUSED__"),
        )
        .expect("defaults");
        config.admin.token = token.map(str::to_string);
        AdminState {
            stats: Arc::new(Stats::default()),
            status: Arc::new(StatusBoard::new(
                breaker,
                clickpipe_actors::status::Policies {
                    model_unavailable: "pause",
                    redis_unavailable: "pause",
                },
            )),
            started: Instant::now(),
            config: Arc::new(config),
            instance_id: "test-1".into(),
            pipeline: None,
            replays: Arc::new(replay::ReplayJobs::default()),
        }
    }

    async fn call(state: AdminState, req: test::TestRequest) -> (StatusCode, serde_json::Value) {
        let app = test::init_service(App::new().configure(routes(state))).await;
        let resp = test::call_service(&app, req.to_request()).await;
        let status = resp.status();
        let body = test::read_body(resp).await;
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    #[actix_web::test]
    async fn live_answers_ok_and_unknown_paths_get_a_json_404() {
        let (code, body) = call(state(None), test::TestRequest::get().uri("/health/live")).await;
        assert_eq!(code, 200);
        assert_eq!(body, json!({"status": "ok"}));
        let (code, body) = call(state(None), test::TestRequest::get().uri("/nope")).await;
        assert_eq!(code, 404);
        assert!(body["error"].as_str().is_some_and(|e| e.contains("/nope")));
    }

    #[actix_web::test]
    async fn status_shows_instance_config_and_latency_without_secrets() {
        let st = state(Some("very-secret-token"));
        st.stats
            .end_to_end
            .observe_duration(std::time::Duration::from_millis(3));
        let (code, body) = call(st, test::TestRequest::get().uri("/status")).await;
        assert_eq!(code, 200);
        assert_eq!(body["instance_id"], "test-1");
        assert_eq!(body["config"]["input_topic"], "clicks");
        assert_eq!(body["config"]["admin_token_set"], true);
        assert_eq!(body["latency_ms"]["end_to_end_p50"], 5.0);
        assert!(!body.to_string().contains("very-secret-token"));
    }

    #[actix_web::test]
    async fn the_openapi_document_covers_every_route() {
        let (code, doc) = call(state(None), test::TestRequest::get().uri("/openapi.json")).await;
        assert_eq!(code, 200);
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        for (path, method) in [
            ("/", "get"),
            ("/health/live", "get"),
            ("/health/ready", "get"),
            ("/status", "get"),
            ("/metrics", "get"),
            ("/openapi.json", "get"),
            ("/partitions/{partition}/pause", "post"),
            ("/partitions/{partition}/resume", "post"),
            ("/partitions/{partition}/seek", "post"),
            ("/replay", "post"),
            ("/replay/{id}", "get"),
            ("/replay/{id}", "delete"),
        ] {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing from the OpenAPI document"
            );
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        let status = &doc["components"]["schemas"]["StatusResponse"]["properties"];
        for field in [
            "instance_id",
            "partitions",
            "counters",
            "latency_ms",
            "config",
        ] {
            assert!(status[field].is_object(), "StatusResponse.{field}");
        }
        let partition = &doc["components"]["schemas"]["PartitionStatus"]["properties"];
        for field in [
            "committed_offset",
            "position",
            "high_watermark",
            "lag",
            "in_flight",
        ] {
            assert!(partition[field].is_object(), "PartitionStatus.{field}");
        }
    }

    #[actix_web::test]
    async fn the_status_page_is_self_contained_html() {
        let app = test::init_service(App::new().configure(routes(state(None)))).await;
        let resp = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(resp.status(), 200);
        let html = String::from_utf8(test::read_body(resp).await.to_vec()).expect("utf-8");
        assert!(html.contains("<canvas"), "charts");
        assert!(html.contains("fetch(\"status\")"), "reads /status");
        for external in ["http://", "https://", "//cdn"] {
            assert!(
                !html.contains(external),
                "loads nothing from elsewhere ({external})"
            );
        }
    }

    #[actix_web::test]
    async fn replay_requests_are_authorized_and_validated() {
        let (code, _) = call(state(None), test::TestRequest::post().uri("/replay")).await;
        assert_eq!(code, 403);
        let (code, _) = call(
            state(Some("t0ken")),
            test::TestRequest::post().uri("/replay"),
        )
        .await;
        assert_eq!(code, 401);
        let (code, body) = call(
            state(Some("t0ken")),
            test::TestRequest::post()
                .uri("/replay")
                .insert_header(("Authorization", "Bearer t0ken"))
                .set_payload(r#"{"kinds": ["inference_failed", 3]}"#),
        )
        .await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["field"], "kinds[1]", "{body}");
        let (code, body) = call(
            state(Some("t0ken")),
            test::TestRequest::post()
                .uri("/replay")
                .insert_header(("Authorization", "Bearer t0ken"))
                .set_payload(r#"{"kinds": ["nope"]}"#),
        )
        .await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["field"], "kinds", "{body}");
        let (code, _) = call(state(None), test::TestRequest::get().uri("/replay/none")).await;
        assert_eq!(code, 404);
        let (code, _) = call(state(None), test::TestRequest::delete().uri("/replay/none")).await;
        assert_eq!(code, 403);
    }

    #[actix_web::test]
    async fn metrics_are_prometheus_text() {
        let st = state(None);
        st.stats.outputs.fetch_add(7, Ordering::Relaxed);
        st.stats.model_batch_size.observe(16.0);
        let app = test::init_service(App::new().configure(routes(st))).await;
        let resp =
            test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
        assert_eq!(resp.status(), 200);
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("text/plain"), "{ct}");
        let text = String::from_utf8(test::read_body(resp).await.to_vec()).expect("utf-8");
        assert!(text.contains("clickpipe_processed_total 7\n"), "{text}");
        assert!(text.contains("clickpipe_dead_letters_total{kind=\"invalid_event\"} 0\n"));
        assert!(text.contains("clickpipe_model_batch_size_bucket{le=\"16\"} 1\n"));
        assert!(text.contains("# TYPE clickpipe_end_to_end_latency_seconds histogram\n"));
        assert!(text.contains("clickpipe_stage_batch_duration_seconds_count{stage=\"emit\"} 0\n"));
        assert!(text.contains("clickpipe_circuit_breaker_state{state=\"closed\"} 1\n"));
        // Every line is a comment or `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
        }
    }

    #[actix_web::test]
    async fn mutating_endpoints_need_the_token_and_are_forbidden_without_one() {
        let (code, body) = call(
            state(None),
            test::TestRequest::post().uri("/partitions/0/pause"),
        )
        .await;
        assert_eq!(code, 403);
        assert!(body["error"]
            .as_str()
            .is_some_and(|e| e.contains("admin.token")));
        let (code, _) = call(
            state(Some("t0ken")),
            test::TestRequest::post().uri("/partitions/0/pause"),
        )
        .await;
        assert_eq!(code, 401);
        let (code, _) = call(
            state(Some("t0ken")),
            test::TestRequest::post()
                .uri("/partitions/0/resume")
                .insert_header(("Authorization", "Bearer wrong")),
        )
        .await;
        assert_eq!(code, 401);
        // Authorized, but no pipeline behind this test app.
        let (code, _) = call(
            state(Some("t0ken")),
            test::TestRequest::post()
                .uri("/partitions/0/resume")
                .insert_header(("Authorization", "Bearer t0ken")),
        )
        .await;
        assert_eq!(code, 503);
    }

    #[actix_web::test]
    async fn bad_seek_requests_get_a_400_naming_the_field() {
        let authorized = |body: &str| {
            test::TestRequest::post()
                .uri("/partitions/0/seek")
                .insert_header(("Authorization", "Bearer t0ken"))
                .insert_header(("Content-Type", "application/json"))
                .set_payload(body.to_string())
        };
        for (body, field) in [
            (r#"{"ofset": 5}"#, "ofset"),
            (r#"{"offset": "five"}"#, "offset"),
            (
                r#"{"offset": 5, "timestamp": "2026-01-01T00:00:00Z"}"#,
                "offset",
            ),
            (r#"{}"#, "offset"),
            (r#"{"offset": -1}"#, "offset"),
            (r#"{"timestamp": "yesterday"}"#, "timestamp"),
        ] {
            let (code, resp) = call(state(Some("t0ken")), authorized(body)).await;
            assert_eq!(code, 400, "{body}: {resp}");
            assert_eq!(resp["field"], field, "{body}: {resp}");
        }
        let (code, resp) = call(state(Some("t0ken")), authorized("{not json")).await;
        assert_eq!(code, 400, "{resp}");
        let (code, resp) = call(
            state(Some("t0ken")),
            test::TestRequest::post()
                .uri("/partitions/zero/pause")
                .insert_header(("Authorization", "Bearer t0ken")),
        )
        .await;
        assert_eq!(code, 400, "{resp}");
        assert_eq!(resp["field"], "partition");
        let big = format!(
            r#"{{"offset": 1, "pad": "{}"}}"#,
            "x".repeat(MAX_BODY_BYTES)
        );
        let (code, _) = call(state(Some("t0ken")), authorized(&big)).await;
        assert_eq!(code, 413);
    }
}
