//! The admin API's request and response bodies (their JSON is the API's contract; their
//! schemas are in the OpenAPI document).

use clickpipe_actors::status::{PartitionStatus, Policies};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::replay;

/// `GET /health/live` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveResponse {
    /// Always `ok`.
    pub status: String,
}

/// `GET /health/ready` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Why it is not ready (absent when ready).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The configuration summary in `/status` (no secrets: URLs are masked, the token is not shown).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigSummary {
    /// `kafka.brokers`.
    pub brokers: String,
    /// `kafka.group_id`.
    pub group_id: String,
    /// `kafka.input_topic`.
    pub input_topic: String,
    /// `kafka.output_topic`.
    pub output_topic: String,
    /// `kafka.dlq_topic`.
    pub dlq_topic: String,
    /// `redis.url`, credentials masked.
    pub redis_url: String,
    /// `model.url`, credentials masked.
    pub model_url: String,
    /// `model.max_batch_size`.
    pub model_max_batch_size: usize,
    /// `pipeline.max_in_flight`.
    pub max_in_flight: usize,
    /// `pipeline.workers` (0: one per core).
    pub workers: usize,
    /// Whether `admin.token` is set (the mutating endpoints are enabled).
    pub admin_token_set: bool,
}

/// Dead letters by kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterCounts {
    /// `invalid_event`.
    pub invalid_event: u64,
    /// `lookup_failed`.
    pub lookup_failed: u64,
    /// `inference_failed`.
    pub inference_failed: u64,
    /// `output_failed`.
    pub output_failed: u64,
}

/// The counters in `/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counters {
    /// Records read from the input topic.
    pub records_in: u64,
    /// Outputs acknowledged by the broker.
    pub processed: u64,
    /// Same as `processed` (kept for compatibility).
    pub outputs: u64,
    /// Dead letters acknowledged, by kind.
    pub dead_letters: DeadLetterCounts,
    /// Model requests.
    pub model_batches: u64,
    /// Events scored by the model.
    pub model_events: u64,
    /// Restarts of partitions' stages.
    pub restarts: u64,
}

/// Latency percentiles in `/status`, milliseconds: upper bounds of the histogram buckets
/// holding them (see `/metrics`); null before the first output.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyMs {
    /// Input record timestamp → output acknowledged, median.
    pub end_to_end_p50: Option<f64>,
    /// … 99th percentile.
    pub end_to_end_p99: Option<f64>,
    /// Read by clickpipe → output acknowledged, median.
    pub processing_p50: Option<f64>,
    /// … 99th percentile.
    pub processing_p99: Option<f64>,
}

/// `GET /status` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    /// `{hostname}-{pid}`.
    pub instance_id: String,
    /// clickpipe's version.
    pub version: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// What it runs with.
    pub config: ConfigSummary,
    /// The partitions assigned to this instance.
    pub partitions: Vec<PartitionStatus>,
    /// Model circuit breaker: `closed`, `open` or `half_open`.
    pub circuit_breaker: String,
    /// Failure policies in force.
    pub policies: Policies,
    /// Partition failures counted against the root supervisor's intensity.
    pub root_restarts_in_window: u32,
    /// Counters since start.
    pub counters: Counters,
    /// Latency percentiles.
    pub latency_ms: LatencyMs,
}

/// Answer of the partition commands: the partition's status after the command.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlResponse {
    /// The partition.
    pub partition: i32,
    /// Its status (null if it was revoked meanwhile).
    pub status: Option<PartitionStatus>,
}

/// `POST /replay` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayStarted {
    /// The job id, for `GET /replay/{id}`.
    pub id: String,
    /// `running` (or `failed` if it could not start).
    pub state: replay::JobState,
}

/// Body of `POST /partitions/{p}/seek`: exactly one of `offset` and `timestamp`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeekRequest {
    /// Offset to continue reading at.
    pub offset: Option<i64>,
    /// RFC 3339 time: continue at the first record at or after it.
    pub timestamp: Option<String>,
}
