//! The tailer's own HTTP endpoint on `ingest.listen`: `GET /health/live`, `GET /status` (JSON)
//! and `GET /metrics` (Prometheus text).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::service::config::Config;
use actix_web::{web, HttpResponse};
use chrono::{TimeZone as _, Utc};
use clickpipe_actors::config::mask_url;
use clickpipe_actors::metrics::{header, sample};
use serde_json::json;

use super::IngestStats;

/// What the handlers share.
#[derive(Clone)]
pub struct IngestState {
    /// The tailer's counters.
    pub stats: Arc<IngestStats>,
    /// The configuration.
    pub config: Arc<Config>,
}

/// The routes.
pub fn routes(state: IngestState) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .route("/health/live", web::get().to(live))
            .route("/status", web::get().to(status))
            .route("/metrics", web::get().to(metrics))
            .default_service(web::to(|| async {
                HttpResponse::NotFound().json(json!({"error": "no such endpoint"}))
            }));
    }
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Seconds between now and the newest document sent (None before the first).
fn cursor_lag_s(stats: &IngestStats) -> Option<f64> {
    let newest = stats.newest_ms.load(Ordering::Relaxed);
    (newest > 0).then(|| (Utc::now().timestamp_millis() - newest).max(0) as f64 / 1000.0)
}

async fn status(state: web::Data<IngestState>) -> HttpResponse {
    let s = &state.stats;
    let c = &state.config.ingest;
    let newest = s.newest_ms.load(Ordering::Relaxed);
    HttpResponse::Ok().json(json!({
        "url": mask_url(&c.url),
        "index": c.index,
        "topic": state.config.kafka.input_topic,
        "point_in_time": *s.pit.lock(),
        "newest_sent": (newest > 0).then(|| Utc.timestamp_millis_opt(newest).single().map(clickpipe_actors::event::rfc3339)).flatten(),
        "cursor_lag_seconds": cursor_lag_s(s),
        "caught_up": s.caught_up.load(Ordering::Relaxed),
        "documents": s.documents.load(Ordering::Relaxed),
        "dead_letters": s.dead_letters.load(Ordering::Relaxed),
        "skipped_in_overlap": s.skipped.load(Ordering::Relaxed),
        "polls": s.polls.load(Ordering::Relaxed),
        "errors": s.errors.load(Ordering::Relaxed),
        "last_error": s.last_error.lock().clone(),
        "lag_p50_seconds": s.lag.quantile(0.5),
        "lag_p99_seconds": s.lag.quantile(0.99),
    }))
}

async fn metrics(state: web::Data<IngestState>) -> HttpResponse {
    let s = &state.stats;
    let mut out = String::new();
    for (name, help, value) in [
        (
            "clickpipe_ingest_documents_total",
            "Documents written to the input topic.",
            &s.documents,
        ),
        (
            "clickpipe_ingest_dead_letters_total",
            "Documents written to the dead-letter topic.",
            &s.dead_letters,
        ),
        (
            "clickpipe_ingest_skipped_total",
            "Documents read again in the overlap window and skipped (sent already).",
            &s.skipped,
        ),
        (
            "clickpipe_ingest_polls_total",
            "Polls of the index.",
            &s.polls,
        ),
        (
            "clickpipe_ingest_errors_total",
            "Failed searches and checkpoint writes.",
            &s.errors,
        ),
    ] {
        header(&mut out, name, "counter", help);
        sample(&mut out, name, "", value.load(Ordering::Relaxed));
    }
    header(
        &mut out,
        "clickpipe_ingest_cursor_lag_seconds",
        "gauge",
        "Now minus the timestamp of the newest document sent.",
    );
    sample(
        &mut out,
        "clickpipe_ingest_cursor_lag_seconds",
        "",
        cursor_lag_s(s).unwrap_or(0.0),
    );
    header(
        &mut out,
        "clickpipe_ingest_lag_seconds",
        "histogram",
        "From a document's timestamp to the broker's acknowledgement of its event.",
    );
    s.lag.render(&mut out, "clickpipe_ingest_lag_seconds", "");
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}
