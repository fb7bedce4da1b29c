//! The service's own sections, outside the pipeline: `[admin]`, `[model_server]`, `[loadgen]`,
//! `[log]` and `[metrics]` (CloudWatch EMF).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use clickpipe_actors::config::{bad, positive, ConfigError, Millis};

/// Admin API settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address the admin API listens on.
    pub listen: String,
    /// Bearer token required by the mutating endpoints (replay, partition control). Without
    /// one they answer 403. Secret: masked in `config check` and `/status`.
    #[serde(default)]
    pub token: Option<String>,
    /// Replay loop guard: a dead letter already replayed this many times is not replayed again.
    #[serde(default = "default_replay_max_count")]
    pub replay_max_count: u32,
    /// Replay jobs running at once at most (each a thread and two Kafka clients); a request
    /// beyond it answers 429.
    #[serde(default = "default_replay_max_jobs")]
    pub replay_max_jobs: u32,
    /// Seconds a replay job may run; past them it stops (`failed`), keeping what it published.
    #[serde(default = "default_replay_timeout_s")]
    pub replay_timeout_s: u64,
}

fn default_replay_max_count() -> u32 {
    3
}

fn default_replay_max_jobs() -> u32 {
    2
}

fn default_replay_timeout_s() -> u64 {
    3600
}

/// Reference model server settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelServerConfig {
    /// Address the model server listens on.
    pub listen: String,
    /// Path of the model parameters file (JSON).
    pub model_path: String,
}

/// Load generator settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadgenConfig {
    /// CSV of ZIP reference data the generated events draw their ZIPs from.
    pub zip_csv: String,
    /// Share of events carrying a ZIP that is not in the reference data (0.0–1.0).
    pub unknown_zip_ratio: f64,
    /// Share of events without a ZIP (0.0–1.0).
    pub missing_zip_ratio: f64,
    /// Number of concurrently open synthetic sessions.
    pub concurrent_sessions: usize,
    /// Share of records that are poison: inputs the pipeline must dead-letter (0.0–1.0).
    #[serde(default)]
    pub poison_ratio: f64,
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable text.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `clickpipe=debug,rdkafka=warn`.
    pub level: String,
    /// `human` or `json`.
    pub format: LogFormat,
}

/// Metrics exported besides the admin API's `/metrics`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Print a CloudWatch Embedded Metric Format line to stdout every `emf_interval_ms`, so
    /// CloudWatch Logs turns it into metrics without API calls.
    pub emf_enabled: bool,
    /// Seconds between EMF lines, in milliseconds (at least 1000).
    pub emf_interval_ms: Millis,
    /// CloudWatch namespace of the EMF metrics.
    pub emf_namespace: String,
    /// Extra dimensions (name → value) on every EMF metric, besides `service` and `instance`.
    pub emf_dimensions: BTreeMap<String, String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            emf_enabled: false,
            emf_interval_ms: Millis(60_000),
            emf_namespace: "clickpipe".to_string(),
            emf_dimensions: BTreeMap::new(),
        }
    }
}

impl AdminConfig {
    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(bad("admin.listen", "must be an ip:port address"));
        }
        if self.replay_max_count == 0 {
            return Err(bad(
                "admin.replay_max_count",
                "must be at least 1 (a dead letter could never be replayed)",
            ));
        }
        if self.replay_max_jobs == 0 {
            return Err(bad(
                "admin.replay_max_jobs",
                "must be at least 1 (no replay could ever run)",
            ));
        }
        if self.replay_timeout_s == 0 {
            return Err(bad(
                "admin.replay_timeout_s",
                "must be at least 1 (every replay would stop at once)",
            ));
        }
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(bad(
                "admin.token",
                "must not be empty (leave it out to refuse every mutating request)",
            ));
        }
        Ok(())
    }
}

impl ModelServerConfig {
    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(bad("model_server.listen", "must be an ip:port address"));
        }
        Ok(())
    }
}

impl LoadgenConfig {
    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = self;
        for (key, v) in [
            ("loadgen.unknown_zip_ratio", l.unknown_zip_ratio),
            ("loadgen.missing_zip_ratio", l.missing_zip_ratio),
            ("loadgen.poison_ratio", l.poison_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(key, "must be between 0.0 and 1.0"));
            }
        }
        positive("loadgen.concurrent_sessions", l.concurrent_sessions)?;
        Ok(())
    }
}

impl LogConfig {
    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

impl MetricsConfig {
    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = self;
        if m.emf_interval_ms.ms() < 1000 {
            return Err(bad("metrics.emf_interval_ms", "must be at least 1000"));
        }
        if m.emf_namespace.trim().is_empty() || m.emf_namespace.len() > 255 {
            return Err(bad("metrics.emf_namespace", "must be 1 to 255 characters"));
        }
        // CloudWatch allows 30 dimensions per metric; `service` and `instance` are always there.
        if m.emf_dimensions.len() > 28 {
            return Err(bad(
                "metrics.emf_dimensions",
                "at most 28 (CloudWatch's limit is 30 with service and instance)",
            ));
        }
        if let Some(k) = m
            .emf_dimensions
            .keys()
            .find(|k| k.trim().is_empty() || *k == "service" || *k == "instance")
        {
            return Err(bad(
                "metrics.emf_dimensions",
                format!("dimension name {k:?} is empty or reserved (service, instance)"),
            ));
        }
        Ok(())
    }
}
