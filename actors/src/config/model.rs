//! `[model]`: the model endpoint (plain HTTP or SageMaker), batching, timeouts, retries and the
//! circuit breaker.

use serde::{Deserialize, Serialize};

use super::{bad, not_below, positive, ConfigError, Millis, UnavailablePolicy};

/// Model endpoint settings (SageMaker container convention: `/ping`, `/invocations`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Base URL of the model; `{url}/invocations` and `{url}/ping` are called.
    pub url: String,
    /// Maximum events in one request.
    pub max_batch_size: usize,
    /// How long a batch may wait for more events before it is sent, in milliseconds (0: send what
    /// is there as soon as the previous call returns).
    pub max_wait_ms: Millis,
    /// Timeout of one request, in milliseconds.
    pub timeout_ms: Millis,
    /// Total time spent retrying a batch before its events are dead-lettered, in milliseconds.
    pub retry_budget_ms: Millis,
    /// First retry backoff, in milliseconds; doubles each attempt, with full jitter.
    pub backoff_initial_ms: Millis,
    /// Largest retry backoff, in milliseconds.
    pub backoff_max_ms: Millis,
    /// Consecutive failed calls that open the circuit breaker.
    pub circuit_failure_threshold: u32,
    /// How long the circuit stays open before a probe (`GET /ping`), in milliseconds.
    pub circuit_open_ms: Millis,
    /// What to do while the model is unavailable: `pause` (hold the events, probe, resume; nothing
    /// is dead-lettered) or `dead_letter` (`inference_failed` after `retry_budget_ms`, and at once
    /// while the circuit is open).
    pub on_unavailable: UnavailablePolicy,
    /// `http`: `url` serves the SageMaker container contract. `sagemaker`: InvokeEndpoint on the
    /// endpoint `sagemaker_endpoint`, signed with SigV4 (same batching, retries and breaker).
    #[serde(default)]
    pub kind: ModelKind,
    /// `sagemaker`: the endpoint's name.
    #[serde(default)]
    pub sagemaker_endpoint: String,
    /// `sagemaker`: the AWS region (default: `AWS_REGION`, else `AWS_DEFAULT_REGION`).
    #[serde(default)]
    pub region: String,
    /// `sagemaker`: the runtime API's base URL when not `https://runtime.sagemaker.{region}.amazonaws.com`
    /// (a VPC interface endpoint).
    #[serde(default)]
    pub sagemaker_url: String,
}

/// How the model is called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Plain HTTP to `model.url`.
    #[default]
    Http,
    /// A SageMaker endpoint (InvokeEndpoint, SigV4).
    Sagemaker,
}

impl ModelConfig {
    /// The runtime API's base URL of a `sagemaker` model.
    pub fn sagemaker_base(&self) -> String {
        if self.sagemaker_url.trim().is_empty() {
            format!("https://runtime.sagemaker.{}.amazonaws.com", self.region)
        } else {
            self.sagemaker_url.trim().trim_end_matches('/').to_string()
        }
    }
}

impl ModelConfig {
    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = self;
        if !(m.url.starts_with("http://") || m.url.starts_with("https://")) {
            return Err(bad("model.url", "must start with http:// or https://"));
        }
        if m.url.parse::<awc::http::Uri>().is_err() {
            return Err(bad("model.url", "is not a valid URL"));
        }
        if m.kind == ModelKind::Sagemaker {
            let name_ok = !m.sagemaker_endpoint.is_empty()
                && m.sagemaker_endpoint.len() <= 63
                && m.sagemaker_endpoint
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !name_ok {
                return Err(bad(
                    "model.sagemaker_endpoint",
                    "must name the endpoint (1 to 63 letters, digits and hyphens)",
                ));
            }
            if m.region.trim().is_empty() {
                return Err(bad(
                    "model.region",
                    "must be set for model.kind = sagemaker (or AWS_REGION)",
                ));
            }
            let url = m.sagemaker_url.trim();
            if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(
                    "model.sagemaker_url",
                    "must start with http:// or https://",
                ));
            }
        }
        positive("model.max_batch_size", m.max_batch_size)?;
        positive("model.timeout_ms", m.timeout_ms)?;
        positive("model.backoff_initial_ms", m.backoff_initial_ms)?;
        not_below(
            ("model.backoff_max_ms", m.backoff_max_ms),
            ("model.backoff_initial_ms", m.backoff_initial_ms),
        )?;

        positive(
            "model.circuit_failure_threshold",
            m.circuit_failure_threshold,
        )?;
        positive("model.circuit_open_ms", m.circuit_open_ms)?;
        Ok(())
    }
}
