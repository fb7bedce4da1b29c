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

//!
//! Where things are: the request and response types (`dto.rs`), health (`health.rs`), status,
//! the status page and metrics (`status.rs`), partition control (`partitions.rs`), the replay
//! endpoints (`replay_handlers.rs`; the jobs themselves in [`replay`]), the OpenAPI document
//! (`openapi.rs`), authorization (`auth.rs`), errors (`error.rs`) and the Prometheus text
//! (`metrics.rs`).

mod auth;
mod dto;
pub mod error;
mod health;
mod metrics;
mod openapi;
mod partitions;
pub mod replay;
mod replay_handlers;
mod status;

use std::sync::Arc;
use std::time::Instant;

use crate::service::config::Config;
use actix_web::{web, HttpRequest};
use clickpipe_actors::pipeline::PipelineHandle;
use clickpipe_actors::stats::Stats;
use clickpipe_actors::status::StatusBoard;

pub use dto::{
    ConfigSummary, ControlResponse, Counters, DeadLetterCounts, LatencyMs, LiveResponse,
    ReadyResponse, ReplayStarted, SeekRequest, StatusResponse,
};
pub use error::ApiError;
pub use openapi::ApiDoc;

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

impl AdminState {
    /// Checks a mutating request's bearer token against `admin.token` (see `auth.rs`).
    fn authorize(&self, req: &HttpRequest) -> Result<(), ApiError> {
        auth::authorize(req, self.config.admin.token.as_deref())
    }

    /// The replay job `id`, or a 404.
    fn replay_job(&self, id: &str) -> Result<Arc<replay::ReplayJob>, ApiError> {
        self.replays
            .get(id)
            .ok_or_else(|| ApiError::not_found(format!("no replay job {id:?}")))
    }
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
            .route("/", web::get().to(status::status_page))
            .route("/health/live", web::get().to(health::live))
            .route("/health/ready", web::get().to(health::ready))
            .route("/status", web::get().to(status::status))
            .route("/metrics", web::get().to(status::metrics_text))
            .route("/openapi.json", web::get().to(openapi::openapi_json))
            .route(
                "/partitions/{partition}/pause",
                web::post().to(partitions::pause),
            )
            .route(
                "/partitions/{partition}/resume",
                web::post().to(partitions::resume),
            )
            .route(
                "/partitions/{partition}/seek",
                web::post().to(partitions::seek),
            )
            .route("/replay", web::post().to(replay_handlers::replay_start))
            .route("/replay/{id}", web::get().to(replay_handlers::replay_get))
            .route(
                "/replay/{id}",
                web::delete().to(replay_handlers::replay_cancel),
            )
            .default_service(web::to(status::not_found));
    }
}

#[cfg(test)]
mod tests;
