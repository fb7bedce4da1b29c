//! `GET /health/live` and `GET /health/ready`.

use actix_web::{web, HttpResponse};
use clickpipe_actors::status::PartitionState;

use super::dto::{LiveResponse, ReadyResponse};
use super::AdminState;

/// Liveness: 200 while the actor system runs.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "Alive", body = LiveResponse)))]
pub(super) async fn live() -> HttpResponse {
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
pub(super) async fn ready(state: web::Data<AdminState>) -> HttpResponse {
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
