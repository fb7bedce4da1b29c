//! `[features]`, `[pipeline]` and `[supervision]`: feature computation, the actor pipeline's
//! sizing and backpressure, and restart intensity and backoff.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{bad, not_below, positive, ConfigError, Millis, MAX_WINDOW_S};

/// Feature computation settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesConfig {
    /// A session ends after this many seconds without events.
    pub session_gap_s: u64,
    /// `zip_median_income` when the ZIP is missing or unknown.
    pub default_zip_median_income: f64,
    /// Events older than this many seconds (by event time) are `invalid_event`.
    pub max_event_age_s: u64,
    /// Events more than this many seconds ahead of now (by event time) are `invalid_event`.
    pub max_event_lead_s: u64,
    /// A feature-set file (TOML) declaring the features; empty: the built-in features.
    #[serde(default)]
    pub set: String,
    /// The most events one entity's window state keeps (per `window` feature); beyond it the
    /// oldest are dropped, bounding the Redis memory and the per-event cost of a hot entity.
    #[serde(default = "default_max_window_events")]
    pub max_window_events: usize,
}

fn default_max_window_events() -> usize {
    10_000
}

/// Actor pipeline sizing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Worker threads (actix arbiters) that host partition actors; 0 means one per CPU core.
    pub workers: usize,
    /// Maximum records read from a partition and not yet finished (output or dead letter acked).
    pub max_in_flight: usize,
    /// Capacity of every stage mailbox, in batches.
    pub mailbox_capacity: usize,
    /// Maximum records in one batch between stages.
    pub max_batch: usize,
    /// How long a revoked or stopping partition may take to finish in-flight work, in milliseconds.
    pub drain_timeout_ms: Millis,
    /// Pause the partition at the consumer when in-flight records reach this share of
    /// `max_in_flight` (0.0–1.0].
    pub pause_high_watermark: f64,
    /// Resume it when in-flight records fall to this share of `max_in_flight` (below the high
    /// watermark, so pause and resume do not alternate on every record).
    pub resume_low_watermark: f64,
}

/// Supervision settings (see the vocabulary in `supervision`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    /// Restarts of a partition's stages allowed within `restart_window_ms`; one more and the
    /// partition is paused and reported failed.
    pub max_restarts: u32,
    /// The partition's restart window, in milliseconds.
    pub restart_window_ms: Millis,
    /// Partition failures (restarts of any partition) the root allows within
    /// `root_restart_window_ms`; one more and the process exits with code 3.
    pub root_max_restarts: u32,
    /// The root's window, in milliseconds.
    pub root_restart_window_ms: Millis,
    /// First backoff before a restart, in milliseconds (doubles, with full jitter).
    pub backoff_initial_ms: Millis,
    /// Largest backoff before a restart, in milliseconds.
    pub backoff_max_ms: Millis,
}

impl FeaturesConfig {
    /// The declared feature set of `features.set`, read and checked (None: the built-in
    /// features). A problem is reported on `features.set`, naming the file, the feature and its
    /// key.
    pub fn feature_set(&self) -> Result<Option<crate::feature_set::FeatureSet>, ConfigError> {
        let path = self.set.trim();
        if path.is_empty() {
            return Ok(None);
        }
        let problem =
            |e: crate::feature_set::FeatureSetError| bad("features.set", format!("{path}: {e}"));
        let mut set =
            crate::feature_set::FeatureSet::load(std::path::Path::new(path)).map_err(problem)?;
        set.max_window_events = self.max_window_events;
        Ok(Some(set))
    }

    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let window = MAX_WINDOW_S;
        if self.session_gap_s == 0 || self.session_gap_s > window {
            return Err(bad(
                "features.session_gap_s",
                format!("must be between 1 and {window} (100 years)"),
            ));
        }
        for (key, value) in [
            ("features.max_event_age_s", self.max_event_age_s),
            ("features.max_event_lead_s", self.max_event_lead_s),
        ] {
            if value == 0 || value > window {
                return Err(bad(
                    key,
                    format!("must be between 1 and {window} (100 years)"),
                ));
            }
        }
        if !self.default_zip_median_income.is_finite() {
            return Err(bad(
                "features.default_zip_median_income",
                "must be a finite number",
            ));
        }
        if self.max_window_events == 0 || self.max_window_events > 1_000_000 {
            return Err(bad(
                "features.max_window_events",
                "must be between 1 and 1000000",
            ));
        }
        self.feature_set()?;

        Ok(())
    }
}

impl PipelineConfig {
    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = self;
        positive("pipeline.max_in_flight", p.max_in_flight)?;
        positive("pipeline.mailbox_capacity", p.mailbox_capacity)?;
        positive("pipeline.max_batch", p.max_batch)?;
        if p.max_batch > p.max_in_flight {
            return Err(bad(
                "pipeline.max_batch",
                format!(
                    "{} is above pipeline.max_in_flight ({})",
                    p.max_batch, p.max_in_flight
                ),
            ));
        }

        if !(p.pause_high_watermark > 0.0 && p.pause_high_watermark <= 1.0) {
            return Err(bad(
                "pipeline.pause_high_watermark",
                "must be in (0.0, 1.0]",
            ));
        }
        if !(p.resume_low_watermark >= 0.0 && p.resume_low_watermark < p.pause_high_watermark) {
            return Err(bad(
                "pipeline.resume_low_watermark",
                format!(
                    "must be at least 0.0 and below pipeline.pause_high_watermark ({})",
                    p.pause_high_watermark
                ),
            ));
        }
        Ok(())
    }
}

impl SupervisionConfig {
    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sv = self;
        if sv.restart_window_ms.ms() == 0 || sv.root_restart_window_ms.ms() == 0 {
            return Err(bad(
                "supervision.restart_window_ms",
                "windows must be greater than 0",
            ));
        }
        positive("supervision.backoff_initial_ms", sv.backoff_initial_ms)?;
        not_below(
            ("supervision.backoff_max_ms", sv.backoff_max_ms),
            ("supervision.backoff_initial_ms", sv.backoff_initial_ms),
        )?;
        Ok(())
    }
}

impl PipelineConfig {
    /// How long a partition may take to drain.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout_ms.get()
    }
}
