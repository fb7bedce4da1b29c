//! `[tracing]`: OpenTelemetry trace export and sampling.

use serde::{Deserialize, Serialize};

use super::{bad, non_empty, ConfigError};

/// OpenTelemetry trace export. Off until an endpoint is set; the standard `OTEL_*` environment
/// variables override these keys (the binary applies them at load time).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Base URL of an OTLP/HTTP collector, e.g. `http://localhost:4318`; `/v1/traces` is
    /// appended. Empty: no export (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: String,
    /// Full URL for traces, used as is; wins over `otlp_endpoint`
    /// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub otlp_traces_endpoint: String,
    /// The `service.name` resource attribute (`OTEL_SERVICE_NAME`).
    pub service_name: String,
    /// Head sampler, named as `OTEL_TRACES_SAMPLER` names them: `always_on`, `always_off`,
    /// `traceidratio`, `parentbased_always_on`, `parentbased_always_off`,
    /// `parentbased_traceidratio`.
    pub sampler: String,
    /// Share of records traced by the ratio samplers, 0.0 to 1.0 (`OTEL_TRACES_SAMPLER_ARG`).
    pub sampling_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: String::new(),
            otlp_traces_endpoint: String::new(),
            service_name: "clickpipe".to_string(),
            sampler: "parentbased_traceidratio".to_string(),
            sampling_ratio: 0.01,
        }
    }
}

/// The sampler names `tracing.sampler` accepts.
pub const SAMPLERS: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

impl TracingConfig {
    /// The URL spans are exported to, or None when export is off.
    pub fn traces_url(&self) -> Option<String> {
        let full = self.otlp_traces_endpoint.trim();
        if !full.is_empty() {
            return Some(full.to_string());
        }
        let base = self.otlp_endpoint.trim();
        (!base.is_empty()).then(|| format!("{}/v1/traces", base.trim_end_matches('/')))
    }

    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, url) in [
            ("tracing.otlp_endpoint", &self.otlp_endpoint),
            ("tracing.otlp_traces_endpoint", &self.otlp_traces_endpoint),
        ] {
            let url = url.trim();
            if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(
                    key,
                    format!("`{url}` must start with http:// or https://"),
                ));
            }
        }
        non_empty(&[("tracing.service_name", &self.service_name)])?;
        if !SAMPLERS.contains(&self.sampler.as_str()) {
            return Err(bad(
                "tracing.sampler",
                format!("`{}` is not one of {}", self.sampler, SAMPLERS.join(", ")),
            ));
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(bad("tracing.sampling_ratio", "must be between 0.0 and 1.0"));
        }
        Ok(())
    }
}
