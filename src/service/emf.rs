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
use std::sync::Arc;
use std::time::Duration;

use crate::service::config::MetricsConfig;
use clickpipe_actors::stats::Stats;
use clickpipe_actors::status::StatusBoard;
use serde_json::{json, Map, Value};

use super::metrics::{Emf, Sources, Values, METRICS};

/// What each EMF metric's table entry stood at in the previous line: totals of counters and
/// bucket counts of histograms.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    totals: BTreeMap<&'static str, f64>,
    buckets: BTreeMap<&'static str, Vec<u64>>,
}

impl Snapshot {
    /// The current values.
    pub fn take(stats: &Stats, status: &StatusBoard) -> Snapshot {
        let sources = sources(stats, status);
        let mut snap = Snapshot::default();
        for m in METRICS.iter().filter(|m| !m.emf.is_empty()) {
            match (m.read)(&sources) {
                Some(Values::Samples(samples)) => {
                    snap.totals
                        .insert(m.name, samples.iter().map(|(_, v)| v).sum());
                }
                Some(Values::Histograms(h)) => {
                    if let Some((_, h)) = h.first() {
                        snap.buckets.insert(m.name, h.bucket_counts());
                    }
                }
                None => {}
            }
        }
        snap
    }
}

fn sources<'a>(stats: &'a Stats, status: &'a StatusBoard) -> Sources<'a> {
    Sources {
        stats,
        status,
        uptime: Duration::ZERO,
        zip_cache: None,
    }
}

fn diff(now: &[u64], before: &[u64]) -> Vec<u64> {
    now.iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(before.get(i).copied().unwrap_or(0)))
        .collect()
}

/// One EMF line for the interval from `prev` to now (which becomes the new `prev`): the EMF
/// metrics of the metric table ([`METRICS`]).
pub fn line(
    cfg: &MetricsConfig,
    instance: &str,
    stats: &Stats,
    status: &StatusBoard,
    prev: &mut Snapshot,
    timestamp_ms: i64,
) -> String {
    let now = Snapshot::take(stats, status);
    let sources = sources(stats, status);
    let mut values: Vec<(&str, &str, Option<f64>)> = Vec::new();
    for m in METRICS {
        for e in m.emf {
            let v = match *e {
                Emf::Delta(_) => {
                    let before = prev.totals.get(m.name).copied().unwrap_or(0.0);
                    let total = now.totals.get(m.name).copied().unwrap_or(0.0);
                    Some((total - before).max(0.0))
                }
                Emf::Total(_) => now.totals.get(m.name).copied(),
                Emf::QuantileMs(_, q) => match (m.read)(&sources) {
                    Some(Values::Histograms(h)) => h.first().and_then(|(_, h)| {
                        let before = prev.buckets.get(m.name).map_or(&[][..], Vec::as_slice);
                        let counts = diff(now.buckets.get(m.name)?, before);
                        h.quantile_of(&counts, q).map(|s| s * 1000.0)
                    }),
                    _ => None,
                },
            };
            values.push((e.name(), e.unit(), v));
        }
    }
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
    let mut prev = Snapshot::take(&stats, &status);
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
    use std::sync::atomic::Ordering;

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
        let mut prev = Snapshot::take(&stats, &status);
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
