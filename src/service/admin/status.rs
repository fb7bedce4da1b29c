//! The read-only views: the live status page, `GET /status`, `GET /metrics`, and the JSON 404.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::dto::{ConfigSummary, Counters, DeadLetterCounts, LatencyMs, StatusResponse};
use super::{metrics, AdminState};

/// The live status page: one HTML file with its script inline, embedded in the binary.
const STATUS_PAGE: &str = include_str!("status.html");

/// The live status page (HTML with inline script; nothing loaded from elsewhere).
#[utoipa::path(get, path = "/", tag = "status",
    responses((status = 200, description = "HTML page", content_type = "text/html", body = String)))]
pub(super) async fn status_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(STATUS_PAGE)
}

/// Instance, configuration summary, partitions, counters, circuit breaker, latency.
#[utoipa::path(get, path = "/status", tag = "status",
    responses((status = 200, description = "Status", body = StatusResponse)))]
pub(super) async fn status(state: web::Data<AdminState>) -> HttpResponse {
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
pub(super) async fn metrics_text(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics::render(&state))
}

pub(super) async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "error": format!("no such endpoint: {} {}", req.method(), req.path())
    }))
}
