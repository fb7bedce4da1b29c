//! `GET /metrics`: the Prometheus text exposition of the pipeline's counters, gauges and
//! histograms.

use std::sync::atomic::Ordering;

use clickpipe_actors::error::ErrorKind;
use clickpipe_actors::metrics::{header, label_value, sample};

use super::AdminState;

/// Dead-letter kinds, in the order they are listed.
const KINDS: [ErrorKind; 4] = [
    ErrorKind::InvalidEvent,
    ErrorKind::LookupFailed,
    ErrorKind::InferenceFailed,
    ErrorKind::OutputFailed,
];

/// Renders every metric.
pub(super) fn render(state: &AdminState) -> String {
    let s = &state.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::with_capacity(8 << 10);

    header(
        &mut out,
        "clickpipe_build_info",
        "gauge",
        "Version of the running clickpipe.",
    );
    sample(
        &mut out,
        "clickpipe_build_info",
        &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    );
    header(
        &mut out,
        "clickpipe_uptime_seconds",
        "gauge",
        "Seconds since the service started.",
    );
    sample(
        &mut out,
        "clickpipe_uptime_seconds",
        "",
        state.started.elapsed().as_secs_f64(),
    );

    header(
        &mut out,
        "clickpipe_records_in_total",
        "counter",
        "Records read from the input topic.",
    );
    sample(
        &mut out,
        "clickpipe_records_in_total",
        "",
        load(&s.records_in),
    );
    header(
        &mut out,
        "clickpipe_processed_total",
        "counter",
        "Output records (predictions) acknowledged by the broker.",
    );
    sample(&mut out, "clickpipe_processed_total", "", load(&s.outputs));
    header(
        &mut out,
        "clickpipe_dead_letters_total",
        "counter",
        "Dead letters acknowledged by the broker, by kind.",
    );
    for kind in KINDS {
        sample(
            &mut out,
            "clickpipe_dead_letters_total",
            &format!("kind=\"{}\"", kind.as_str()),
            load(s.dead_letters(kind)),
        );
    }

    let partitions = state.status.partitions();
    header(
        &mut out,
        "clickpipe_consumer_lag",
        "gauge",
        "Records of an assigned partition not yet finished and committed (high watermark - committed offset).",
    );
    for p in &partitions {
        if let Some(lag) = p.lag {
            sample(
                &mut out,
                "clickpipe_consumer_lag",
                &partition_labels(&p.topic, p.partition),
                lag,
            );
        }
    }
    header(
        &mut out,
        "clickpipe_in_flight",
        "gauge",
        "Records of a partition read and not yet finished.",
    );
    for p in &partitions {
        sample(
            &mut out,
            "clickpipe_in_flight",
            &partition_labels(&p.topic, p.partition),
            p.in_flight,
        );
    }
    header(
        &mut out,
        "clickpipe_partition_paused",
        "gauge",
        "1 while a partition is paused at the consumer (backpressure, operator, failure).",
    );
    for p in &partitions {
        sample(
            &mut out,
            "clickpipe_partition_paused",
            &partition_labels(&p.topic, p.partition),
            u8::from(p.paused),
        );
    }
    header(
        &mut out,
        "clickpipe_partition_restarts",
        "gauge",
        "Restarts of a partition's stages since it was assigned.",
    );
    for p in &partitions {
        sample(
            &mut out,
            "clickpipe_partition_restarts",
            &partition_labels(&p.topic, p.partition),
            p.restarts,
        );
    }
    header(
        &mut out,
        "clickpipe_restarts_total",
        "counter",
        "Restarts of partitions' stages (caught failures), all partitions.",
    );
    sample(&mut out, "clickpipe_restarts_total", "", load(&s.restarts));
    header(
        &mut out,
        "clickpipe_root_restarts_in_window",
        "gauge",
        "Partition failures counted against the root supervisor's intensity.",
    );
    sample(
        &mut out,
        "clickpipe_root_restarts_in_window",
        "",
        state.status.root_restarts(),
    );

    header(
        &mut out,
        "clickpipe_stage_queued_records",
        "gauge",
        "Records waiting in a stage's queue (its mailbox depth), all partitions.",
    );
    for (stage, g) in s.queued.all() {
        sample(
            &mut out,
            "clickpipe_stage_queued_records",
            &format!("stage=\"{stage}\""),
            g.load(Ordering::Relaxed).max(0),
        );
    }

    header(
        &mut out,
        "clickpipe_end_to_end_latency_seconds",
        "histogram",
        "Input record timestamp to its output acknowledged by the broker.",
    );
    s.end_to_end
        .render(&mut out, "clickpipe_end_to_end_latency_seconds", "");
    header(
        &mut out,
        "clickpipe_processing_latency_seconds",
        "histogram",
        "Record read by clickpipe to its output acknowledged by the broker.",
    );
    s.processing
        .render(&mut out, "clickpipe_processing_latency_seconds", "");
    header(
        &mut out,
        "clickpipe_stage_batch_duration_seconds",
        "histogram",
        "Time a stage spent on one batch.",
    );
    for (name, h) in s.stages.all() {
        h.render(
            &mut out,
            "clickpipe_stage_batch_duration_seconds",
            &format!("stage=\"{name}\""),
        );
    }

    header(
        &mut out,
        "clickpipe_model_requests_total",
        "counter",
        "Model requests sent.",
    );
    sample(
        &mut out,
        "clickpipe_model_requests_total",
        "",
        load(&s.model_batches),
    );
    header(
        &mut out,
        "clickpipe_model_batch_size",
        "histogram",
        "Events per model request.",
    );
    s.model_batch_size
        .render(&mut out, "clickpipe_model_batch_size", "");
    header(
        &mut out,
        "clickpipe_circuit_breaker_state",
        "gauge",
        "1 for the model circuit breaker's current state.",
    );
    let current = state.status.breaker.state().as_str();
    for st in ["closed", "open", "half_open"] {
        sample(
            &mut out,
            "clickpipe_circuit_breaker_state",
            &format!("state=\"{st}\""),
            u8::from(current == st),
        );
    }

    if let Some(p) = &state.pipeline {
        let (hits, misses) = p.zip_cache_hits_and_misses();
        header(
            &mut out,
            "clickpipe_zip_cache_lookups_total",
            "counter",
            "ZIP look-ups by result: answered by the in-process cache (hit) or sent to Redis (miss).",
        );
        sample(
            &mut out,
            "clickpipe_zip_cache_lookups_total",
            "result=\"hit\"",
            hits,
        );
        sample(
            &mut out,
            "clickpipe_zip_cache_lookups_total",
            "result=\"miss\"",
            misses,
        );
        header(
            &mut out,
            "clickpipe_zip_cache_hit_ratio",
            "gauge",
            "Share of ZIP look-ups answered by the cache since start.",
        );
        let total = hits + misses;
        sample(
            &mut out,
            "clickpipe_zip_cache_hit_ratio",
            "",
            if total == 0 {
                0.0
            } else {
                hits as f64 / total as f64
            },
        );
    }
    out
}

fn partition_labels(topic: &str, partition: i32) -> String {
    format!("topic=\"{}\",partition=\"{partition}\"", label_value(topic))
}
