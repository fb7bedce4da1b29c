//! Fixed-bucket histograms: lock-free to record from any actor thread, rendered in the Prometheus
//! text exposition format by the admin API, and summarised as approximate quantiles for `/status`.
//! They live in the pipeline's `Stats`, shared through an `Arc` (no global recorder).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of latency buckets, seconds: 0.25 ms … 10 s.
pub const LATENCY_BUCKETS_S: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// Upper bounds of batch-size buckets, records.
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// A histogram with fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One counter per bound, then one for values above the last bound.
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum of observed values, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// A latency histogram ([`LATENCY_BUCKETS_S`]).
    pub fn latency() -> Self {
        Self::new(LATENCY_BUCKETS_S)
    }

    /// A batch-size histogram ([`SIZE_BUCKETS`]).
    pub fn sizes() -> Self {
        Self::new(SIZE_BUCKETS)
    }

    /// Records one value.
    pub fn observe(&self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut current = self.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match self.sum.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
    }

    /// Records a duration, in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Values recorded so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of the values recorded so far.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    /// The upper bound of the bucket holding quantile `q` (0–1): an upper estimate, exact to
    /// the bucket. `None` when empty; the last bound when the quantile is above it.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.quantile_of(&self.bucket_counts(), q)
    }

    /// The count of each bucket (one per bound, then the overflow bucket), for quantiles over an
    /// interval: subtract an earlier snapshot and pass the difference to [`Self::quantile_of`].
    pub fn bucket_counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// [`Self::quantile`] of bucket counts taken from this histogram (e.g. the difference of two
    /// [`Self::bucket_counts`] snapshots).
    pub fn quantile_of(&self, counts: &[u64], q: f64) -> Option<f64> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(*self.bounds.get(i).unwrap_or(self.bounds.last()?));
            }
        }
        self.bounds.last().copied()
    }

    /// Appends this histogram as one Prometheus series set (`_bucket`, `_sum`, `_count`) with
    /// `labels` (e.g. `stage="lookup"`, or empty). Write the `# HELP` / `# TYPE` lines once per
    /// metric name with [`header`].
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum());
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Appends the `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Appends one sample line: `name{labels} value`.
pub fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Escapes a label value for the exposition format.
pub fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_include_inf() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "stage=\"a\"");
        assert!(out.contains("x_bucket{stage=\"a\",le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{stage=\"a\",le=\"2\"} 3\n"), "{out}");
        assert!(
            out.contains("x_bucket{stage=\"a\",le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(out.contains("x_sum{stage=\"a\"} 6\n"), "{out}");
        assert!(out.contains("x_count{stage=\"a\"} 4\n"), "{out}");
        let mut plain = String::new();
        h.render(&mut plain, "y", "");
        assert!(plain.contains("y_bucket{le=\"+Inf\"} 4\n"), "{plain}");
        assert!(plain.contains("y_count 4\n"), "{plain}");
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let h = Histogram::latency();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..98 {
            h.observe_duration(Duration::from_micros(700)); // ≤ 1 ms
        }
        h.observe_duration(Duration::from_millis(40)); // ≤ 50 ms
        h.observe_duration(Duration::from_secs(60)); // above every bound
        assert_eq!(h.quantile(0.5), Some(0.001));
        assert_eq!(h.quantile(0.99), Some(0.05));
        assert_eq!(h.quantile(1.0), Some(10.0));
        assert_eq!(h.count(), 100);
        h.observe(f64::NAN);
        assert_eq!(h.count(), 100, "NaN is ignored");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
