//! The sink's own HTTP endpoint on `s3.listen`: `GET /health/live`, `GET /health/ready` (503 while
//! the object store is failing), `GET /status` (JSON) and `GET /metrics` (Prometheus text).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use chrono::{TimeZone as _, Utc};
use serde_json::json;

use clickpipe_actors::metrics::{header, sample};

use super::stats::SinkStats;
use super::table::Source;
use crate::service::config::Config;

/// What the handlers share.
#[derive(Clone)]
pub struct SinkState {
    /// The sink's counters.
    pub stats: Arc<SinkStats>,
    /// The configuration.
    pub config: Arc<Config>,
}

/// The routes.
pub fn routes(state: SinkState) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .route("/health/live", web::get().to(live))
            .route("/health/ready", web::get().to(ready))
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

async fn ready(state: web::Data<SinkState>) -> HttpResponse {
    let s = &state.stats;
    if s.store_failing.load(Ordering::Relaxed) {
        HttpResponse::ServiceUnavailable().json(json!({
            "status": "not_ready",
            "reason": "the object store is failing",
            "last_error": s.last_error.lock().clone(),
        }))
    } else {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    }
}

fn time(ms: i64) -> Option<String> {
    (ms > 0)
        .then(|| Utc.timestamp_millis_opt(ms).single())
        .flatten()
        .map(clickpipe_actors::event::rfc3339)
}

async fn status(state: web::Data<SinkState>) -> HttpResponse {
    let s = &state.stats;
    let c = &state.config;
    let topic = |source: Source, name: &str, prefix: String| {
        let t = s.topic(source);
        json!({
            "topic": name,
            "prefix": prefix,
            "records_read": t.read.load(Ordering::Relaxed),
            "records_written": t.written.load(Ordering::Relaxed),
            "objects": t.objects.load(Ordering::Relaxed),
            "bytes": t.bytes.load(Ordering::Relaxed),
        })
    };
    let mut topics = vec![topic(
        Source::Predictions,
        &c.kafka.output_topic,
        c.s3.prefix.clone(),
    )];
    if c.s3.include_dead_letters {
        topics.push(topic(
            Source::DeadLetters,
            &c.kafka.dlq_topic,
            c.s3.dead_letters_prefix(),
        ));
    }
    HttpResponse::Ok().json(json!({
        "bucket": c.s3.bucket.trim(),
        "format": c.s3.format.extension(),
        "group_id": c.s3.group_id,
        "partitions": s.partitions.load(Ordering::Relaxed),
        "topics": topics,
        "backlog_records": s.backlog_records.load(Ordering::Relaxed),
        "backlog_age_seconds": s.backlog_age_s(Utc::now().timestamp_millis()),
        "last_flush_at": time(s.last_flush_ms.load(Ordering::Relaxed)),
        "store_failing": s.store_failing.load(Ordering::Relaxed),
        "put_failures": s.put_failures.load(Ordering::Relaxed),
        "commit_failures": s.commit_failures.load(Ordering::Relaxed),
        "last_error": s.last_error.lock().clone(),
        "lag_p50_seconds": s.lag.quantile(0.5),
        "lag_p99_seconds": s.lag.quantile(0.99),
    }))
}

async fn metrics(state: web::Data<SinkState>) -> HttpResponse {
    let s = &state.stats;
    let c = &state.config;
    let mut kept = vec![(Source::Predictions, c.kafka.output_topic.as_str())];
    if c.s3.include_dead_letters {
        kept.push((Source::DeadLetters, c.kafka.dlq_topic.as_str()));
    }
    let mut out = String::new();
    type Pick = fn(&super::stats::TopicCounters) -> &AtomicU64;
    let per_topic: [(&str, &str, Pick); 4] = [
        (
            "clickpipe_sink_records_read_total",
            "Records read from a kept topic.",
            |t| &t.read,
        ),
        (
            "clickpipe_sink_records_written_total",
            "Records in objects whose offsets are committed.",
            |t| &t.written,
        ),
        (
            "clickpipe_sink_objects_total",
            "Objects written (their offsets committed after).",
            |t| &t.objects,
        ),
        (
            "clickpipe_sink_bytes_total",
            "Bytes of the objects written.",
            |t| &t.bytes,
        ),
    ];
    for (name, help, pick) in per_topic {
        header(&mut out, name, "counter", help);
        for (source, topic) in &kept {
            let labels = format!(
                "topic=\"{}\"",
                clickpipe_actors::metrics::label_value(topic)
            );
            sample(
                &mut out,
                name,
                &labels,
                pick(s.topic(*source)).load(Ordering::Relaxed),
            );
        }
    }
    for (name, help, value) in [
        (
            "clickpipe_sink_put_failures_total",
            "Object writes that failed (each retry counts).",
            &s.put_failures,
        ),
        (
            "clickpipe_sink_commit_failures_total",
            "Offset commits that failed (each retry counts).",
            &s.commit_failures,
        ),
    ] {
        header(&mut out, name, "counter", help);
        sample(&mut out, name, "", value.load(Ordering::Relaxed));
    }
    for (name, help, value) in [
        (
            "clickpipe_sink_backlog_records",
            "Records read and not yet committed after their object.",
            s.backlog_records.load(Ordering::Relaxed) as f64,
        ),
        (
            "clickpipe_sink_backlog_age_seconds",
            "How long the oldest record not yet in S3 has waited since it was read.",
            s.backlog_age_s(Utc::now().timestamp_millis()),
        ),
        (
            "clickpipe_sink_partitions",
            "Partitions assigned to this sink.",
            s.partitions.load(Ordering::Relaxed) as f64,
        ),
        (
            "clickpipe_sink_store_failing",
            "1 while the object store's last attempt failed.",
            f64::from(u8::from(s.store_failing.load(Ordering::Relaxed))),
        ),
    ] {
        header(&mut out, name, "gauge", help);
        sample(&mut out, name, "", value);
    }
    header(
        &mut out,
        "clickpipe_sink_lag_seconds",
        "histogram",
        "From a record's append to its topic to the commit after its object.",
    );
    s.lag.render(&mut out, "clickpipe_sink_lag_seconds", "");
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}
