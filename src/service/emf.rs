//! CloudWatch Embedded Metric Format: with `metrics.emf_enabled`, one JSON line on stdout every
//! `metrics.emf_interval_ms`. CloudWatch Logs (the ECS `awslogs` driver, the CloudWatch agent)
//! turns such lines into metrics without any API call from clickpipe.
//!
//! Each line carries, for the interval since the previous line: `Processed`, `DeadLetters`,
//! `RecordsIn` (counts), `ConsumerLag` and `InFlight` (sums over the assigned partitions, at the
//! time of the line), `EndToEndLatencyP50` / `P99` and `ProcessingLatencyP99` (milliseconds,
//! upper bounds of the histogram buckets holding them; absent when nothing was processed), and
//! `Restarts`. Dimensions: `service`, `instance` and `metrics.emf_dimensions`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use clickpipe_actors::config::MetricsConfig;
use clickpipe_actors::stats::Stats;
use clickpipe_actors::status::StatusBoard;
use serde_json::{json, Map, Value};

/// Counter values and histogram buckets at the previous line.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    processed: u64,
    dead_letters: u64,
    records_in: u64,
    restarts: u64,
    end_to_end: Vec<u64>,
    processing: Vec<u64>,
}

impl Snapshot {
    /// The current values.
    pub fn take(stats: &Stats) -> Snapshot {
        Snapshot {
            processed: stats.outputs.load(Ordering::Relaxed),
            dead_letters: stats.dead_letters_total(),
            records_in: stats.records_in.load(Ordering::Relaxed),
            restarts: stats.restarts.load(Ordering::Relaxed),
            end_to_end: stats.end_to_end.bucket_counts(),
            processing: stats.processing.bucket_counts(),
        }
    }
}

fn diff(now: &[u64], before: &[u64]) -> Vec<u64> {
    now.iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(before.get(i).copied().unwrap_or(0)))
        .collect()
}

/// One EMF line for the interval from `prev` to now (which becomes the new `prev`).
pub fn line(
    cfg: &MetricsConfig,
    instance: &str,
    stats: &Stats,
    status: &StatusBoard,
    prev: &mut Snapshot,
    timestamp_ms: i64,
) -> String {
    let now = Snapshot::take(stats);
    let partitions = status.partitions();
    let lag: i64 = partitions.iter().filter_map(|p| p.lag).sum();
    let in_flight: usize = partitions.iter().map(|p| p.in_flight).sum();
    let ms = |v: Option<f64>| v.map(|s| s * 1000.0);
    let e2e = diff(&now.end_to_end, &prev.end_to_end);
    let proc = diff(&now.processing, &prev.processing);

    // Counters: what happened during the interval.
    let count =
        |name, now: u64, before: u64| (name, "Count", Some(now.saturating_sub(before) as f64));
    let mut values: Vec<(&str, &str, Option<f64>)> = vec![
        count("Processed", now.processed, prev.processed),
        count("DeadLetters", now.dead_letters, prev.dead_letters),
        count("RecordsIn", now.records_in, prev.records_in),
        count("Restarts", now.restarts, prev.restarts),
        ("ConsumerLag", "Count", Some(lag as f64)),
        ("InFlight", "Count", Some(in_flight as f64)),
    ];
    values.push((
        "EndToEndLatencyP50",
        "Milliseconds",
        ms(stats.end_to_end.quantile_of(&e2e, 0.5)),
    ));
    values.push((
        "EndToEndLatencyP99",
        "Milliseconds",
        ms(stats.end_to_end.quantile_of(&e2e, 0.99)),
    ));
    values.push((
        "ProcessingLatencyP99",
        "Milliseconds",
        ms(stats.processing.quantile_of(&proc, 0.99)),
    ));
    *prev = now;

    let mut dims: BTreeMap<&str, &str> = BTreeMap::new();
    dims.insert("service", "clickpipe");
    dims.insert("instance", instance);
    for (k, v) in &cfg.emf_dimensions {
        dims.insert(k, v);
    }
    let mut root = Map::new();
    let metrics: Vec<Value> = values
        .iter()
        .filter(|(_, _, v)| v.is_some())
        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
        .collect();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": cfg.emf_namespace,
                "Dimensions": [dims.keys().collect::<Vec<_>>()],
                "Metrics": metrics,
            }],
        }),
    );
    for (k, v) in dims {
        root.insert(k.to_string(), json!(v));
    }
    for (name, _, v) in values {
        if let Some(v) = v {
            root.insert(name.to_string(), json!(v));
        }
    }
    Value::Object(root).to_string()
}

/// Prints a line every `cfg.emf_interval_ms` until the task is dropped.
pub async fn run(
    cfg: MetricsConfig,
    instance: String,
    stats: Arc<Stats>,
    status: Arc<StatusBoard>,
) {
    let mut prev = Snapshot::take(&stats);
    let mut tick = actix_rt::time::interval(cfg.emf_interval_ms.get());
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        let text = line(
            &cfg,
            &instance,
            &stats,
            &status,
            &mut prev,
            chrono::Utc::now().timestamp_millis(),
        );
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            tracing::warn!("cannot write EMF metrics to stdout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpipe_actors::clients::breaker::CircuitBreaker;
    use clickpipe_actors::status::Policies;
    use std::time::Duration;

    fn board() -> StatusBoard {
        StatusBoard::new(
            Arc::new(CircuitBreaker::new(1, Duration::from_secs(1))),
            Policies {
                model_unavailable: "pause",
                redis_unavailable: "pause",
            },
        )
    }

    #[test]
    fn lines_are_emf_json_with_interval_values() {
        let cfg = MetricsConfig {
            emf_namespace: "Shop/clickpipe".into(),
            emf_dimensions: [("env".to_string(), "prod".to_string())].into(),
            ..MetricsConfig::default()
        };
        let stats = Stats::default();
        let status = board();
        let mut prev = Snapshot::take(&stats);
        let mut emit = |at_ms: i64| -> Value {
            serde_json::from_str(&line(&cfg, "i-1", &stats, &status, &mut prev, at_ms))
                .expect("JSON")
        };
        stats.outputs.fetch_add(40, Ordering::Relaxed);
        stats.invalid_event.fetch_add(2, Ordering::Relaxed);
        for _ in 0..40 {
            stats.end_to_end.observe_duration(Duration::from_millis(3));
        }
        let v = emit(1_700_000_000_000);
        let aws = &v["_aws"];
        assert_eq!(aws["Timestamp"], 1_700_000_000_000i64);
        let m = &aws["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "Shop/clickpipe");
        assert_eq!(m["Dimensions"], json!([["env", "instance", "service"]]));
        assert_eq!(
            (v["env"].as_str(), v["instance"].as_str()),
            (Some("prod"), Some("i-1"))
        );
        assert_eq!(v["Processed"], 40.0);
        assert_eq!(v["DeadLetters"], 2.0);
        assert_eq!(v["EndToEndLatencyP99"], 5.0);
        // Every metric named in the directive has a value at the top level.
        for metric in m["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("name");
            assert!(v[name].is_number(), "{name}");
        }
        // The next interval counts only what happened since.
        stats.outputs.fetch_add(5, Ordering::Relaxed);
        let v = emit(1_700_000_060_000);
        assert_eq!(v["Processed"], 5.0);
        assert_eq!(v["DeadLetters"], 0.0);
        assert!(
            v.get("EndToEndLatencyP99").is_none(),
            "no latency without outputs"
        );
    }
}
