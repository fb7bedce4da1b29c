//! The metric table: every metric clickpipe exports, once — its Prometheus name, type and help,
//! where its value comes from, and which CloudWatch EMF metrics are derived from it. The admin
//! API's `/metrics` ([`prometheus`]) and the EMF lines (`service::emf`) are both rendered from
//! [`METRICS`], so a metric cannot be added to one and forgotten in the other.

use std::sync::atomic::Ordering;
use std::time::Duration;

use clickpipe_actors::error::ErrorKind;
use clickpipe_actors::metrics::{header, label_value, sample, Histogram};
use clickpipe_actors::stats::Stats;
use clickpipe_actors::status::StatusBoard;

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever grows.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in fixed buckets.
    Histogram,
}

impl Kind {
    /// The name in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A CloudWatch EMF metric derived from a table entry, valued per EMF line (per interval).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Emf {
    /// How much the metric (summed over its labels) grew during the interval (unit `Count`).
    Delta(&'static str),
    /// The metric summed over its labels at the time of the line (unit `Count`).
    Total(&'static str),
    /// A quantile of the histogram's observations during the interval, in milliseconds (the
    /// upper bound of the bucket holding it); absent when nothing was observed.
    QuantileMs(&'static str, f64),
}

impl Emf {
    /// The EMF metric's name.
    pub fn name(self) -> &'static str {
        match self {
            Emf::Delta(n) | Emf::Total(n) | Emf::QuantileMs(n, _) => n,
        }
    }

    /// Its CloudWatch unit.
    pub fn unit(self) -> &'static str {
        match self {
            Emf::Delta(_) | Emf::Total(_) => "Count",
            Emf::QuantileMs(..) => "Milliseconds",
        }
    }
}

/// What the metrics are read from.
pub struct Sources<'a> {
    /// The pipeline's counters and histograms.
    pub stats: &'a Stats,
    /// The partitions and the circuit breaker.
    pub status: &'a StatusBoard,
    /// Time since the service started.
    pub uptime: Duration,
    /// ZIP cache hits and misses, when a pipeline runs.
    pub zip_cache: Option<(u64, u64)>,
}

/// A metric's current values.
pub enum Values<'a> {
    /// One number per label set (`""` for none).
    Samples(Vec<(String, f64)>),
    /// One histogram per label set.
    Histograms(Vec<(String, &'a Histogram)>),
}

/// One exported metric.
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// The Prometheus type.
    pub kind: Kind,
    /// The Prometheus help text.
    pub help: &'static str,
    /// Its values now; None leaves the metric out (e.g. the ZIP cache without a pipeline).
    pub read: for<'a> fn(&Sources<'a>) -> Option<Values<'a>>,
    /// The EMF metrics derived from it.
    pub emf: &'static [Emf],
}

/// Dead-letter kinds, in the order they are listed.
const KINDS: [ErrorKind; 4] = [
    ErrorKind::InvalidEvent,
    ErrorKind::LookupFailed,
    ErrorKind::InferenceFailed,
    ErrorKind::OutputFailed,
];

fn one(v: f64) -> Option<Values<'static>> {
    Some(Values::Samples(vec![(String::new(), v)]))
}

fn count(c: &std::sync::atomic::AtomicU64) -> f64 {
    c.load(Ordering::Relaxed) as f64
}

/// `topic` and `partition` labels.
fn partition_labels(topic: &str, partition: i32) -> String {
    format!("topic=\"{}\",partition=\"{partition}\"", label_value(topic))
}

/// One sample per assigned partition with `value` of its status (None: no sample).
fn per_partition<'a>(
    s: &Sources<'a>,
    value: fn(&clickpipe_actors::status::PartitionStatus) -> Option<f64>,
) -> Option<Values<'a>> {
    Some(Values::Samples(
        s.status
            .partitions()
            .iter()
            .filter_map(|p| value(p).map(|v| (partition_labels(&p.topic, p.partition), v)))
            .collect(),
    ))
}

/// Every metric, in the order `/metrics` lists them.
pub const METRICS: &[Metric] = &[
    Metric {
        name: "clickpipe_build_info",
        kind: Kind::Gauge,
        help: "Version of the running clickpipe.",
        read: |_| {
            Some(Values::Samples(vec![(
                format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
                1.0,
            )]))
        },
        emf: &[],
    },
    Metric {
        name: "clickpipe_uptime_seconds",
        kind: Kind::Gauge,
        help: "Seconds since the service started.",
        read: |s| one(s.uptime.as_secs_f64()),
        emf: &[],
    },
    Metric {
        name: "clickpipe_records_in_total",
        kind: Kind::Counter,
        help: "Records read from the input topic.",
        read: |s| one(count(&s.stats.records_in)),
        emf: &[Emf::Delta("RecordsIn")],
    },
    Metric {
        name: "clickpipe_processed_total",
        kind: Kind::Counter,
        help: "Output records (predictions) acknowledged by the broker.",
        read: |s| one(count(&s.stats.outputs)),
        emf: &[Emf::Delta("Processed")],
    },
    Metric {
        name: "clickpipe_dead_letters_total",
        kind: Kind::Counter,
        help: "Dead letters acknowledged by the broker, by kind.",
        read: |s| {
            Some(Values::Samples(
                KINDS
                    .iter()
                    .map(|k| {
                        let labels = format!("kind=\"{}\"", k.as_str());
                        (labels, count(s.stats.dead_letters(*k)))
                    })
                    .collect(),
            ))
        },
        emf: &[Emf::Delta("DeadLetters")],
    },
    Metric {
        name: "clickpipe_consumer_lag",
        kind: Kind::Gauge,
        help: "Records of an assigned partition not yet finished and committed (high watermark - committed offset).",
        read: |s| per_partition(s, |p| p.lag.map(|l| l as f64)),
        emf: &[Emf::Total("ConsumerLag")],
    },
    Metric {
        name: "clickpipe_in_flight",
        kind: Kind::Gauge,
        help: "Records of a partition read and not yet finished.",
        read: |s| per_partition(s, |p| Some(p.in_flight as f64)),
        emf: &[Emf::Total("InFlight")],
    },
    Metric {
        name: "clickpipe_partition_paused",
        kind: Kind::Gauge,
        help: "1 while a partition is paused at the consumer (backpressure, operator, failure).",
        read: |s| per_partition(s, |p| Some(f64::from(u8::from(p.paused)))),
        emf: &[],
    },
    Metric {
        name: "clickpipe_partition_restarts",
        kind: Kind::Gauge,
        help: "Restarts of a partition's stages since it was assigned.",
        read: |s| per_partition(s, |p| Some(p.restarts as f64)),
        emf: &[],
    },
    Metric {
        name: "clickpipe_restarts_total",
        kind: Kind::Counter,
        help: "Restarts of partitions' stages (caught failures), all partitions.",
        read: |s| one(count(&s.stats.restarts)),
        emf: &[Emf::Delta("Restarts")],
    },
    Metric {
        name: "clickpipe_feature_store_failures_total",
        kind: Kind::Counter,
        help: "Online feature-store writes ([[materialize]]) given up after the Redis retry budget.",
        read: |s| one(count(&s.stats.store_failures)),
        emf: &[],
    },
    Metric {
        name: "clickpipe_lookup_degraded_total",
        kind: Kind::Counter,
        help: "Records looked up degraded: Redis unavailable past its budget, ZIP data from the fallback table, sessions new.",
        read: |s| one(count(&s.stats.lookup_degraded)),
        emf: &[],
    },
    Metric {
        name: "clickpipe_root_restarts_in_window",
        kind: Kind::Gauge,
        help: "Partition failures counted against the root supervisor's intensity.",
        read: |s| one(f64::from(s.status.root_restarts())),
        emf: &[],
    },
    Metric {
        name: "clickpipe_stage_queued_records",
        kind: Kind::Gauge,
        help: "Records waiting in a stage's queue (its mailbox depth), all partitions.",
        read: |s| {
            Some(Values::Samples(
                s.stats
                    .queued
                    .all()
                    .iter()
                    .map(|(stage, g)| {
                        let depth = g.load(Ordering::Relaxed).max(0) as f64;
                        (format!("stage=\"{stage}\""), depth)
                    })
                    .collect(),
            ))
        },
        emf: &[],
    },
    Metric {
        name: "clickpipe_end_to_end_latency_seconds",
        kind: Kind::Histogram,
        help: "Input record timestamp to its output acknowledged by the broker.",
        read: |s| Some(Values::Histograms(vec![(String::new(), &s.stats.end_to_end)])),
        emf: &[
            Emf::QuantileMs("EndToEndLatencyP50", 0.5),
            Emf::QuantileMs("EndToEndLatencyP99", 0.99),
        ],
    },
    Metric {
        name: "clickpipe_processing_latency_seconds",
        kind: Kind::Histogram,
        help: "Record read by clickpipe to its output acknowledged by the broker.",
        read: |s| Some(Values::Histograms(vec![(String::new(), &s.stats.processing)])),
        emf: &[Emf::QuantileMs("ProcessingLatencyP99", 0.99)],
    },
    Metric {
        name: "clickpipe_stage_batch_duration_seconds",
        kind: Kind::Histogram,
        help: "Time a stage spent on one batch.",
        read: |s| {
            Some(Values::Histograms(
                s.stats
                    .stages
                    .all()
                    .into_iter()
                    .map(|(stage, h)| (format!("stage=\"{stage}\""), h))
                    .collect(),
            ))
        },
        emf: &[],
    },
    Metric {
        name: "clickpipe_model_requests_total",
        kind: Kind::Counter,
        help: "Model requests sent.",
        read: |s| one(count(&s.stats.model_batches)),
        emf: &[],
    },
    Metric {
        name: "clickpipe_model_batch_size",
        kind: Kind::Histogram,
        help: "Events per model request.",
        read: |s| {
            Some(Values::Histograms(vec![(
                String::new(),
                &s.stats.model_batch_size,
            )]))
        },
        emf: &[],
    },
    Metric {
        name: "clickpipe_circuit_breaker_state",
        kind: Kind::Gauge,
        help: "1 for the model circuit breaker's current state.",
        read: |s| {
            let current = s.status.breaker.state().as_str();
            Some(Values::Samples(
                ["closed", "open", "half_open"]
                    .iter()
                    .map(|st| (format!("state=\"{st}\""), f64::from(u8::from(current == *st))))
                    .collect(),
            ))
        },
        emf: &[],
    },
    Metric {
        name: "clickpipe_zip_cache_lookups_total",
        kind: Kind::Counter,
        help: "ZIP look-ups by result: answered by the in-process cache (hit) or sent to Redis (miss).",
        read: |s| {
            let (hits, misses) = s.zip_cache?;
            Some(Values::Samples(vec![
                ("result=\"hit\"".into(), hits as f64),
                ("result=\"miss\"".into(), misses as f64),
            ]))
        },
        emf: &[],
    },
    Metric {
        name: "clickpipe_zip_cache_hit_ratio",
        kind: Kind::Gauge,
        help: "Share of ZIP look-ups answered by the cache since start.",
        read: |s| {
            let (hits, misses) = s.zip_cache?;
            let total = hits + misses;
            one(if total == 0 {
                0.0
            } else {
                hits as f64 / total as f64
            })
        },
        emf: &[],
    },
];

/// The Prometheus text exposition of every metric.
pub fn prometheus(sources: &Sources<'_>) -> String {
    let mut out = String::with_capacity(8 << 10);
    for m in METRICS {
        let Some(values) = (m.read)(sources) else {
            continue;
        };
        header(&mut out, m.name, m.kind.as_str(), m.help);
        match values {
            Values::Samples(samples) => {
                for (labels, v) in samples {
                    sample(&mut out, m.name, &labels, v);
                }
            }
            Values::Histograms(histograms) => {
                for (labels, h) in histograms {
                    h.render(&mut out, m.name, &labels);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_emf_metric_has_one_name_and_a_table_entry_that_can_give_it() {
        let mut names = std::collections::HashSet::new();
        for m in METRICS {
            for e in m.emf {
                assert!(names.insert(e.name()), "{} twice", e.name());
                let histogram = m.kind == Kind::Histogram;
                assert_eq!(
                    histogram,
                    matches!(e, Emf::QuantileMs(..)),
                    "{}: quantiles come from histograms, counts from samples",
                    m.name
                );
            }
        }
        assert_eq!(names.len(), 9);
    }
}
