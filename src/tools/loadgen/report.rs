//! What a load run reports: the end-to-end [`LatencySummary`], the [`LoadgenReport`] (printed as
//! a table and written as JSON by `--json`) and the per-second [`Sample`]s of `--timeline`.

use std::fmt;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

/// End-to-end latency percentiles of a run, milliseconds (microsecond resolution).
///
/// Latency of one event = when the summary consumer received its output (or dead letter) − when
/// the load generator handed the input record to its producer, both read from the same monotonic
/// clock of the load generator's process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl LatencySummary {
    /// Summarizes a histogram of microseconds; None when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<LatencySummary> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencySummary {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        })
    }
}

/// The outcome of a load run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadgenReport {
    /// The run id every `event_id` of the run starts with.
    pub run_id: String,
    /// Requested rate, events per second (0: unlimited).
    pub rate: u64,
    /// Events acknowledged by the broker.
    pub produced: u64,
    /// Events whose delivery failed.
    pub delivery_errors: u64,
    /// Events of this run seen on the output topic (each counted once).
    pub predictions: u64,
    /// Events of this run seen on the dead-letter topic (each counted once).
    pub dead_letters: u64,
    /// Records of this run seen more than once on the same topic.
    pub duplicates: u64,
    /// Produced events seen on neither topic when the summary stopped waiting.
    pub missing: u64,
    /// End-to-end latency (with the summary).
    pub latency: Option<LatencySummary>,
    /// Seconds from the first send until every delivery was settled.
    pub elapsed_s: f64,
    /// Events accounted for (output or dead letter) per second, from the first send to the last
    /// result received: the system's throughput when the input outpaces it.
    pub output_rate: Option<f64>,
}

impl LoadgenReport {
    /// Whether every event was delivered and accounted for (no delivery error, none missing).
    pub fn is_complete(&self) -> bool {
        self.delivery_errors == 0 && self.missing == 0
    }

    /// Writes the report as pretty-printed JSON to `path` (`--json`).
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        write_file(path, text + "\n")
    }

    /// Acknowledged events per second over `elapsed_s`.
    fn achieved_rate(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.produced as f64 / self.elapsed_s
        } else {
            0.0
        }
    }
}

impl fmt::Display for LoadgenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.latency.as_ref();
        let ms = |v: Option<f64>| match v {
            Some(v) if v < 10.0 => format!("{v:.2} ms"),
            Some(v) => format!("{v:.1} ms"),
            None => "-".to_string(),
        };
        writeln!(f, "{:<18}{:>14}", "events in", self.produced)?;
        writeln!(f, "{:<18}{:>14}", "delivery errors", self.delivery_errors)?;
        writeln!(f, "{:<18}{:>14}", "predictions out", self.predictions)?;
        writeln!(f, "{:<18}{:>14}", "dead letters", self.dead_letters)?;
        writeln!(f, "{:<18}{:>14}", "missing", self.missing)?;
        writeln!(f, "{:<18}{:>14}", "latency p50", ms(l.map(|l| l.p50_ms)))?;
        writeln!(f, "{:<18}{:>14}", "latency p90", ms(l.map(|l| l.p90_ms)))?;
        writeln!(f, "{:<18}{:>14}", "latency p99", ms(l.map(|l| l.p99_ms)))?;
        writeln!(f, "{:<18}{:>14}", "latency p99.9", ms(l.map(|l| l.p999_ms)))?;
        writeln!(f, "{:<18}{:>14}", "latency max", ms(l.map(|l| l.max_ms)))?;
        writeln!(
            f,
            "{:<18}{:>14}",
            "elapsed",
            format!("{:.2} s", self.elapsed_s)
        )?;
        writeln!(
            f,
            "{:<18}{:>14}",
            "achieved rate",
            format!("{:.1} ev/s", self.achieved_rate())
        )?;
        write!(
            f,
            "{:<18}{:>14}",
            "output rate",
            match self.output_rate {
                Some(r) => format!("{r:.1} ev/s"),
                None => "-".to_string(),
            }
        )
    }
}

/// One sample of a run's progress, taken every second (`--timeline`).
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Wall clock, epoch milliseconds.
    pub unix_ms: i64,
    /// Seconds since the first send.
    pub t_s: f64,
    /// Events handed to the producer.
    pub sent: u64,
    /// Events acknowledged by the broker.
    pub acked: u64,
    /// Distinct events seen on the output topic.
    pub predictions: u64,
    /// Distinct events seen on the dead-letter topic.
    pub dead_letters: u64,
    /// Acknowledged events not yet seen on either topic: the end-to-end backlog.
    pub lag: u64,
}

/// Writes one JSON line per sample to `path` (`--timeline`).
pub fn write_timeline(path: &Path, samples: &[Sample]) -> anyhow::Result<()> {
    let mut text = String::new();
    for s in samples {
        text.push_str(&serde_json::to_string(s)?);
        text.push('\n');
    }
    write_file(path, text)
}

fn write_file(path: &Path, text: String) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::super::collector::MAX_LATENCY_US;
    use super::*;

    #[test]
    fn latency_summary_reads_microseconds_as_milliseconds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap();
        assert_eq!(LatencySummary::of(&h), None);
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap(); // 10 µs … 10 ms
        }
        let l = LatencySummary::of(&h).unwrap();
        assert!((l.p50_ms - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.p99_ms - 9.9).abs() < 0.01, "{l:?}");
        assert!((l.max_ms - 10.0).abs() < 0.01, "{l:?}");
        assert!(l.p90_ms < l.p99_ms && l.p99_ms <= l.p999_ms && l.p999_ms <= l.max_ms);
    }

    #[test]
    fn report_prints_a_summary_table() {
        let mut r = LoadgenReport {
            run_id: "r1".into(),
            rate: 500,
            produced: 1000,
            delivery_errors: 0,
            predictions: 990,
            dead_letters: 8,
            duplicates: 0,
            missing: 2,
            latency: Some(LatencySummary {
                p50_ms: 4.0,
                p90_ms: 9.5,
                p99_ms: 21.0,
                p999_ms: 30.0,
                max_ms: 31.25,
                mean_ms: 5.0,
            }),
            elapsed_s: 2.0,
            output_rate: None,
        };
        let s = r.to_string();
        for needle in [
            "events in",
            "990",
            "dead letters",
            "missing",
            "4.00 ms",
            "9.50 ms",
            "21.0 ms",
            "31.2 ms",
            "500.0 ev/s",
        ] {
            assert!(s.contains(needle), "{needle} in\n{s}");
        }
        assert!(
            s.lines()
                .any(|l| l.starts_with("output rate") && l.ends_with('-')),
            "{s}"
        );
        r.latency = None;
        assert!(
            r.to_string()
                .lines()
                .any(|l| l.starts_with("latency p99.9") && l.ends_with('-')),
            "{r}"
        );
    }
}
