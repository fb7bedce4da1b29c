//! The typed configuration of clickpipe. Loading and layering (compiled-in defaults, a TOML file,
//! `CLICKPIPE__SECTION__KEY` environment variables) lives in the binary; this module only defines
//! the shape, the defaults a field falls back to, and the cross-field checks run once at start-up.
//!
//! Every struct denies unknown keys, so a typo in a config file stops start-up with the key named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The widest event-time window (`features.max_event_age_s`, `features.max_event_lead_s`) a
/// config may set on either side of now (100 years).
pub const MAX_WINDOW_S: u64 = 100 * 365 * 24 * 3600;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka connection, topics and librdkafka pass-through settings.
    pub kafka: KafkaConfig,
    /// Redis (ElastiCache) connection and key layout.
    pub redis: RedisConfig,
    /// The model endpoint and how it is called.
    pub model: ModelConfig,
    /// Feature computation settings.
    pub features: FeaturesConfig,
    /// Actor pipeline sizing: workers, batches, mailboxes, in-flight bound.
    pub pipeline: PipelineConfig,
    /// Restart intensity and backoff of the supervisors.
    pub supervision: SupervisionConfig,
    /// The admin HTTP API.
    pub admin: AdminConfig,
    /// The reference model server (`clickpipe model-server`).
    pub model_server: ModelServerConfig,
    /// The synthetic load generator (`clickpipe loadgen`).
    pub loadgen: LoadgenConfig,
    /// Logging.
    pub log: LogConfig,
    /// Metrics exported besides `/metrics` (CloudWatch Embedded Metric Format).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// OpenTelemetry trace export (OTLP/HTTP to a collector such as ADOT, then X-Ray).
    #[serde(default)]
    pub tracing: TracingConfig,
    /// The Elasticsearch / OpenSearch tailer (`clickpipe ingest`).
    #[serde(default)]
    pub ingest: IngestConfig,
}

/// The Elasticsearch / OpenSearch tailer: reads an index in `timestamp_field` order and writes
/// every document to `kafka.input_topic`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Base URL of the cluster, e.g. `http://localhost:9200` or `https://search-…:443`.
    pub url: String,
    /// Index (or alias, or pattern) to tail.
    pub index: String,
    /// Milliseconds between polls once caught up.
    pub poll_interval_ms: u64,
    /// The date field documents are ordered by.
    pub timestamp_field: String,
    /// A unique field to order documents with equal timestamps, when no point in time is used
    /// (`_id` works on OpenSearch; Elasticsearch 8 refuses to sort on `_id`: use a keyword field
    /// such as `event_id`, or a point in time).
    pub tiebreaker_field: String,
    /// Point in time for each poll's paging: `auto` (only when the cluster refuses to sort on
    /// `tiebreaker_field`), `always`, `never`.
    pub pit: String,
    /// Documents per search request.
    pub page_size: usize,
    /// How far behind the newest timestamp sent each poll looks again, for documents that became
    /// visible late (refresh, slow ingest); documents sent already are skipped by id.
    pub overlap_ms: u64,
    /// Where to begin with no checkpoint: `earliest` (the whole index) or `now`.
    pub start_from: String,
    /// The Redis key holding the checkpoint (cursor and the ids inside the overlap window).
    pub checkpoint_key: String,
    /// Basic auth user (with `password`).
    pub username: Option<String>,
    /// Basic auth password. Secret.
    pub password: Option<String>,
    /// API key (`Authorization: ApiKey …`, the base64 `id:key` form). Secret.
    pub api_key: Option<String>,
    /// PEM file of the CA that signed the cluster's certificate (default: the system's roots).
    pub tls_ca_file: Option<String>,
    /// Skip certificate verification (testing only).
    pub tls_insecure: bool,
    /// Per-request timeout in milliseconds.
    pub timeout_ms: u64,
    /// Address of the tailer's own HTTP endpoint (`/health/live`, `/status`, `/metrics`).
    pub listen: String,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            url: "http://127.0.0.1:9200".into(),
            index: "clicks".into(),
            poll_interval_ms: 250,
            timestamp_field: "@timestamp".into(),
            tiebreaker_field: "_id".into(),
            pit: "auto".into(),
            page_size: 1000,
            overlap_ms: 2000,
            start_from: "earliest".into(),
            checkpoint_key: "clickpipe:ingest:checkpoint".into(),
            username: None,
            password: None,
            api_key: None,
            tls_ca_file: None,
            tls_insecure: false,
            timeout_ms: 10_000,
            listen: "127.0.0.1:9091".into(),
        }
    }
}

impl IngestConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(
                "ingest.url",
                format!("`{url}` must start with http:// or https://"),
            ));
        }
        for (key, value) in [
            ("ingest.index", &self.index),
            ("ingest.timestamp_field", &self.timestamp_field),
            ("ingest.tiebreaker_field", &self.tiebreaker_field),
            ("ingest.checkpoint_key", &self.checkpoint_key),
        ] {
            if value.trim().is_empty() {
                return Err(bad(key, "must not be empty"));
            }
        }
        if self.poll_interval_ms == 0 {
            return Err(bad("ingest.poll_interval_ms", "must be greater than 0"));
        }
        if !(1..=10_000).contains(&self.page_size) {
            return Err(bad("ingest.page_size", "must be between 1 and 10000"));
        }
        if !["auto", "always", "never"].contains(&self.pit.as_str()) {
            return Err(bad("ingest.pit", "must be auto, always or never"));
        }
        if !["earliest", "now"].contains(&self.start_from.as_str()) {
            return Err(bad("ingest.start_from", "must be earliest or now"));
        }
        if self.timeout_ms == 0 {
            return Err(bad("ingest.timeout_ms", "must be greater than 0"));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(bad("ingest.username", "username and password go together"));
        }
        if self.username.is_some() && self.api_key.is_some() {
            return Err(bad(
                "ingest.api_key",
                "use either an API key or username/password",
            ));
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(bad("ingest.listen", "must be an ip:port address"));
        }
        Ok(())
    }
}

/// Kafka settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated (`host:port,host:port`).
    pub brokers: String,
    /// Consumer group id; scale out by running more instances with the same id.
    pub group_id: String,
    /// Topic the clickstream events are read from.
    pub input_topic: String,
    /// Topic predictions are written to.
    pub output_topic: String,
    /// Topic dead letters are written to.
    pub dlq_topic: String,
    /// Records larger than this many bytes are dead-lettered as `invalid_event`.
    pub max_payload_bytes: usize,
    /// Interval at which stored (fully processed) offsets are committed, in milliseconds.
    pub commit_interval_ms: u64,
    /// The consumer group protocol: `classic` (JoinGroup/SyncGroup with cooperative-sticky
    /// assignment, every broker version) or `consumer` (KIP-848: the broker assigns partitions
    /// incrementally, no group-wide barrier; Kafka 4.0+, session timeout set broker side).
    #[serde(default)]
    pub group_protocol: GroupProtocol,
    /// Static membership: this instance's `group.instance.id` (empty: dynamic membership). An
    /// instance restarted with the same id takes its partitions back at once instead of waiting
    /// for its old session to expire; but a stopped static member does not leave the group, so its
    /// partitions wait for the session timeout. Give each instance a stable, unique id.
    #[serde(default)]
    pub group_instance_id: String,
    /// Properties passed to librdkafka as-is, for both the consumer and the producers
    /// (TLS, SASL, `fetch.wait.max.ms`, `linger.ms`…). Keys clickpipe manages itself
    /// (`bootstrap.servers`, `group.id`, `enable.auto.offset.store`…) are rejected.
    #[serde(default, deserialize_with = "scalar_map")]
    pub client: BTreeMap<String, String>,
    /// Properties passed to the consumer only (e.g. `fetch.wait.max.ms`, `session.timeout.ms`).
    #[serde(default, deserialize_with = "scalar_map")]
    pub consumer: BTreeMap<String, String>,
    /// Properties passed to the producers only (e.g. `linger.ms`, `compression.type`).
    #[serde(default, deserialize_with = "scalar_map")]
    pub producer: BTreeMap<String, String>,
    /// `none`, or `msk_iam`: Amazon MSK IAM authentication (SASL_SSL + OAUTHBEARER with a token
    /// signed by the task's AWS credentials; MSK's IAM port is 9098).
    #[serde(default)]
    pub auth: KafkaAuth,
    /// The cluster's AWS region for `msk_iam` (default: `AWS_REGION`, else `AWS_DEFAULT_REGION`).
    #[serde(default)]
    pub region: String,
}

/// The consumer group protocol (`kafka.group_protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupProtocol {
    /// The classic protocol with the cooperative-sticky assignor.
    #[default]
    Classic,
    /// KIP-848's consumer protocol (Kafka 4.0+).
    Consumer,
}

/// How clickpipe authenticates to Kafka besides `kafka.client` properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaAuth {
    /// Whatever `kafka.client` says (plaintext, TLS, SCRAM…).
    #[default]
    None,
    /// Amazon MSK IAM.
    MskIam,
}

/// librdkafka takes every property as a string; accept TOML (and environment) strings, numbers and
/// booleans alike, so `"linger.ms" = 5` and `"linger.ms" = "5"` both work.
fn scalar_map<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::B(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// Redis settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Connection URL: `redis://[user:password@]host:port/db` or `rediss://` for TLS.
    pub url: String,
    /// Prefix of the ZIP hashes: `{zip_prefix}{zip}` with fields `median_income` and `timezone`.
    pub zip_prefix: String,
    /// Prefix of the per-session state hashes.
    pub session_prefix: String,
    /// Maximum connections in the pool (each partition keeps one multiplexed connection).
    pub pool_size: usize,
    /// Timeout of one round trip, in milliseconds.
    pub timeout_ms: u64,
    /// How long a ZIP lookup (hit or miss) stays in the in-process cache, in milliseconds.
    pub zip_cache_ttl_ms: u64,
    /// Maximum number of ZIPs in the in-process cache; 0 disables the cache.
    pub zip_cache_capacity: usize,
    /// With `on_unavailable = "dead_letter"`: how long a failing lookup is retried before its
    /// records are dead-lettered as `lookup_failed`, in milliseconds.
    pub retry_budget_ms: u64,
    /// What to do while Redis is unavailable: `pause` (retry with backoff, the partition pauses;
    /// nothing is dead-lettered) or `dead_letter` (after `retry_budget_ms`).
    pub on_unavailable: UnavailablePolicy,
}

/// What a stage does while the service it depends on is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailablePolicy {
    /// Keep the records, retry with backoff (probing), and let backpressure pause the partition.
    Pause,
    /// Dead-letter the records once the retry budget is spent (or at once while the circuit is open).
    DeadLetter,
}

impl UnavailablePolicy {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            UnavailablePolicy::Pause => "pause",
            UnavailablePolicy::DeadLetter => "dead_letter",
        }
    }
}

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
    pub max_wait_ms: u64,
    /// Timeout of one request, in milliseconds.
    pub timeout_ms: u64,
    /// Total time spent retrying a batch before its events are dead-lettered, in milliseconds.
    pub retry_budget_ms: u64,
    /// First retry backoff, in milliseconds; doubles each attempt, with full jitter.
    pub backoff_initial_ms: u64,
    /// Largest retry backoff, in milliseconds.
    pub backoff_max_ms: u64,
    /// Consecutive failed calls that open the circuit breaker.
    pub circuit_failure_threshold: u32,
    /// How long the circuit stays open before a probe (`GET /ping`), in milliseconds.
    pub circuit_open_ms: u64,
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
    pub drain_timeout_ms: u64,
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
    pub restart_window_ms: u64,
    /// Partition failures (restarts of any partition) the root allows within
    /// `root_restart_window_ms`; one more and the process exits with code 3.
    pub root_max_restarts: u32,
    /// The root's window, in milliseconds.
    pub root_restart_window_ms: u64,
    /// First backoff before a restart, in milliseconds (doubles, with full jitter).
    pub backoff_initial_ms: u64,
    /// Largest backoff before a restart, in milliseconds.
    pub backoff_max_ms: u64,
}

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

/// Logging settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `clickpipe=debug,rdkafka=warn`.
    pub level: String,
    /// `human` or `json`.
    pub format: String,
}

/// Metrics exported besides the admin API's `/metrics`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Print a CloudWatch Embedded Metric Format line to stdout every `emf_interval_ms`, so
    /// CloudWatch Logs turns it into metrics without API calls.
    pub emf_enabled: bool,
    /// Seconds between EMF lines, in milliseconds (at least 1000).
    pub emf_interval_ms: u64,
    /// CloudWatch namespace of the EMF metrics.
    pub emf_namespace: String,
    /// Extra dimensions (name → value) on every EMF metric, besides `service` and `instance`.
    pub emf_dimensions: BTreeMap<String, String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            emf_enabled: false,
            emf_interval_ms: 60_000,
            emf_namespace: "clickpipe".to_string(),
            emf_dimensions: BTreeMap::new(),
        }
    }
}

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

    fn validate(&self) -> Result<(), ConfigError> {
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
        if self.service_name.trim().is_empty() {
            return Err(bad("tracing.service_name", "must not be empty"));
        }
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

/// A configuration value that is not acceptable, with the key that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config key `{key}`: {problem}")]
pub struct ConfigError {
    /// The dotted key, e.g. `kafka.brokers`.
    pub key: String,
    /// What is wrong with its value.
    pub problem: String,
}

fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// librdkafka properties clickpipe sets itself; setting them in `[kafka.client]` would break the
/// delivery guarantees.
pub const MANAGED_CLIENT_KEYS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.idempotence",
    "group.protocol",
    "group.instance.id",
];

/// The classic protocol's session timeout unless `session.timeout.ms` says otherwise: a crashed
/// instance's partitions move to the others (or to its restarted self) within ~9 s instead of
/// librdkafka's 45 s. Heartbeats come from librdkafka's own thread every
/// [`CLASSIC_HEARTBEAT_INTERVAL_MS`], eight per session.
pub const CLASSIC_SESSION_TIMEOUT_MS: u64 = 8_000;
/// The classic protocol's heartbeat interval unless `heartbeat.interval.ms` says otherwise.
pub const CLASSIC_HEARTBEAT_INTERVAL_MS: u64 = 1_000;

/// Consumer properties the broker owns under `kafka.group_protocol = consumer` (librdkafka refuses
/// them there).
const CLASSIC_ONLY_CONSUMER_KEYS: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol.type",
];

impl Config {
    /// Checks every value and every relation between values; the first problem is returned with the
    /// key that holds it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(bad("kafka.brokers", "must list at least one host:port"));
        }
        for broker in k.brokers.split(',') {
            let broker = broker.trim();
            let ok = broker
                .rsplit_once(':')
                .map(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                .unwrap_or(false);
            if !ok {
                return Err(bad("kafka.brokers", format!("`{broker}` is not host:port")));
            }
        }
        for (key, value) in [
            ("kafka.group_id", &k.group_id),
            ("kafka.input_topic", &k.input_topic),
            ("kafka.output_topic", &k.output_topic),
            ("kafka.dlq_topic", &k.dlq_topic),
        ] {
            if value.trim().is_empty() {
                return Err(bad(key, "must not be empty"));
            }
        }
        if k.input_topic == k.output_topic || k.input_topic == k.dlq_topic {
            return Err(bad(
                "kafka.input_topic",
                "must differ from kafka.output_topic and kafka.dlq_topic",
            ));
        }
        if k.output_topic == k.dlq_topic {
            // Dead letters would be read as predictions, and replay would re-publish predictions.
            return Err(bad(
                "kafka.dlq_topic",
                "must differ from kafka.output_topic",
            ));
        }
        if k.auth == KafkaAuth::MskIam && k.region.trim().is_empty() {
            return Err(bad(
                "kafka.region",
                "must be set for kafka.auth = msk_iam (or AWS_REGION)",
            ));
        }
        if k.max_payload_bytes == 0 {
            return Err(bad("kafka.max_payload_bytes", "must be greater than 0"));
        }
        if k.commit_interval_ms == 0 {
            return Err(bad("kafka.commit_interval_ms", "must be greater than 0"));
        }
        for (table, key) in k
            .client
            .keys()
            .map(|key| ("client", key))
            .chain(k.consumer.keys().map(|key| ("consumer", key)))
            .chain(k.producer.keys().map(|key| ("producer", key)))
        {
            if MANAGED_CLIENT_KEYS.contains(&key.as_str()) {
                return Err(bad(
                    &format!("kafka.{table}.\"{key}\""),
                    "is managed by clickpipe; use the kafka.* keys instead",
                ));
            }
            if k.group_protocol == GroupProtocol::Consumer
                && CLASSIC_ONLY_CONSUMER_KEYS.contains(&key.as_str())
            {
                return Err(bad(
                    &format!("kafka.{table}.\"{key}\""),
                    "is set by the broker with kafka.group_protocol = consumer; remove it",
                ));
            }
        }
        // The broker's own rule (JoinGroupRequest.validateGroupInstanceId): refused here as a
        // config error rather than by the broker as a fatal group error at every start.
        let id = &k.group_instance_id;
        if id.len() > 249
            || id == "."
            || id == ".."
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(bad(
                "kafka.group_instance_id",
                "must be at most 249 characters of a-z, A-Z, 0-9, '.', '_' and '-' (not . or ..)",
            ));
        }

        let r = &self.redis;
        if !(r.url.starts_with("redis://")
            || r.url.starts_with("rediss://")
            || r.url.starts_with("redis+unix://")
            || r.url.starts_with("unix://"))
        {
            return Err(bad(
                "redis.url",
                "must start with redis://, rediss://, redis+unix:// or unix://",
            ));
        }
        if r.pool_size == 0 {
            return Err(bad("redis.pool_size", "must be greater than 0"));
        }
        if r.timeout_ms == 0 {
            return Err(bad("redis.timeout_ms", "must be greater than 0"));
        }
        if r.zip_prefix.is_empty() {
            return Err(bad("redis.zip_prefix", "must not be empty"));
        }
        if r.session_prefix.is_empty() || r.session_prefix == r.zip_prefix {
            return Err(bad(
                "redis.session_prefix",
                "must be non-empty and differ from redis.zip_prefix",
            ));
        }

        let m = &self.model;
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
        if m.max_batch_size == 0 {
            return Err(bad("model.max_batch_size", "must be greater than 0"));
        }
        if m.timeout_ms == 0 {
            return Err(bad("model.timeout_ms", "must be greater than 0"));
        }
        if m.backoff_initial_ms == 0 {
            return Err(bad("model.backoff_initial_ms", "must be greater than 0"));
        }
        if m.backoff_max_ms < m.backoff_initial_ms {
            return Err(bad(
                "model.backoff_max_ms",
                format!(
                    "{} is below model.backoff_initial_ms ({})",
                    m.backoff_max_ms, m.backoff_initial_ms
                ),
            ));
        }

        if m.circuit_failure_threshold == 0 {
            return Err(bad(
                "model.circuit_failure_threshold",
                "must be greater than 0",
            ));
        }
        if m.circuit_open_ms == 0 {
            return Err(bad("model.circuit_open_ms", "must be greater than 0"));
        }
        let sv = &self.supervision;
        if sv.restart_window_ms == 0 || sv.root_restart_window_ms == 0 {
            return Err(bad(
                "supervision.restart_window_ms",
                "windows must be greater than 0",
            ));
        }
        if sv.backoff_initial_ms == 0 {
            return Err(bad(
                "supervision.backoff_initial_ms",
                "must be greater than 0",
            ));
        }
        if sv.backoff_max_ms < sv.backoff_initial_ms {
            return Err(bad(
                "supervision.backoff_max_ms",
                format!(
                    "{} is below supervision.backoff_initial_ms ({})",
                    sv.backoff_max_ms, sv.backoff_initial_ms
                ),
            ));
        }
        let window = MAX_WINDOW_S;
        if self.features.session_gap_s == 0 || self.features.session_gap_s > window {
            return Err(bad(
                "features.session_gap_s",
                format!("must be between 1 and {window} (100 years)"),
            ));
        }
        for (key, value) in [
            ("features.max_event_age_s", self.features.max_event_age_s),
            ("features.max_event_lead_s", self.features.max_event_lead_s),
        ] {
            if value == 0 || value > window {
                return Err(bad(
                    key,
                    format!("must be between 1 and {window} (100 years)"),
                ));
            }
        }
        if !self.features.default_zip_median_income.is_finite() {
            return Err(bad(
                "features.default_zip_median_income",
                "must be a finite number",
            ));
        }

        let p = &self.pipeline;
        if p.max_in_flight == 0 {
            return Err(bad("pipeline.max_in_flight", "must be greater than 0"));
        }
        if p.mailbox_capacity == 0 {
            return Err(bad("pipeline.mailbox_capacity", "must be greater than 0"));
        }
        if p.max_batch == 0 {
            return Err(bad("pipeline.max_batch", "must be greater than 0"));
        }
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
        // librdkafka keeps heartbeating while a revoke callback drains (the session is safe),
        // but a member that has not rejoined within max.poll.interval.ms (the rebalance timeout)
        // is evicted mid-drain: its partitions move while it still works on them.
        let consumer_ms = |key: &str| {
            self.kafka
                .consumer
                .get(key)
                .or_else(|| self.kafka.client.get(key))
                .map(|v| v.parse::<u64>())
                .transpose()
                .map_err(|_| {
                    bad(
                        &format!("kafka.consumer.\"{key}\""),
                        "must be a number of milliseconds",
                    )
                })
        };
        let poll_ms = consumer_ms("max.poll.interval.ms")?.unwrap_or(300_000);
        if p.drain_timeout_ms >= poll_ms {
            return Err(bad(
                "pipeline.drain_timeout_ms",
                format!(
                    "{} must be below the consumer's max.poll.interval.ms ({poll_ms})",
                    p.drain_timeout_ms
                ),
            ));
        }
        if k.group_protocol == GroupProtocol::Classic {
            let session_ms =
                consumer_ms("session.timeout.ms")?.unwrap_or(CLASSIC_SESSION_TIMEOUT_MS);
            if poll_ms < session_ms {
                return Err(bad(
                    "kafka.consumer.\"max.poll.interval.ms\"",
                    format!("{poll_ms} must be at least the session.timeout.ms ({session_ms})"),
                ));
            }
        }
        if self.admin.listen.parse::<SocketAddr>().is_err() {
            return Err(bad("admin.listen", "must be an ip:port address"));
        }
        let m = &self.metrics;
        if m.emf_interval_ms < 1000 {
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
        self.tracing.validate()?;
        self.ingest.validate()?;
        if self.admin.replay_max_count == 0 {
            return Err(bad(
                "admin.replay_max_count",
                "must be at least 1 (a dead letter could never be replayed)",
            ));
        }
        if self.admin.replay_max_jobs == 0 {
            return Err(bad(
                "admin.replay_max_jobs",
                "must be at least 1 (no replay could ever run)",
            ));
        }
        if self.admin.replay_timeout_s == 0 {
            return Err(bad(
                "admin.replay_timeout_s",
                "must be at least 1 (every replay would stop at once)",
            ));
        }
        if self
            .admin
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(bad(
                "admin.token",
                "must not be empty (leave it out to refuse every mutating request)",
            ));
        }
        if self.model_server.listen.parse::<SocketAddr>().is_err() {
            return Err(bad("model_server.listen", "must be an ip:port address"));
        }
        let l = &self.loadgen;
        for (key, v) in [
            ("loadgen.unknown_zip_ratio", l.unknown_zip_ratio),
            ("loadgen.missing_zip_ratio", l.missing_zip_ratio),
            ("loadgen.poison_ratio", l.poison_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(key, "must be between 0.0 and 1.0"));
            }
        }
        if l.concurrent_sessions == 0 {
            return Err(bad("loadgen.concurrent_sessions", "must be greater than 0"));
        }
        if !matches!(self.log.format.as_str(), "human" | "json") {
            return Err(bad("log.format", "must be `human` or `json`"));
        }
        Ok(())
    }
}

impl PipelineConfig {
    /// How long a partition may take to drain.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// Returns `value` with any password in a URL replaced by `***`.
pub fn mask_url(value: &str) -> String {
    if let Some((scheme, rest)) = value.split_once("://") {
        if let Some((auth, host)) = rest.rsplit_once('@') {
            let user = auth.split(':').next().unwrap_or("");
            return format!("{scheme}://{user}:***@{host}");
        }
    }
    value.to_string()
}

/// Whether a librdkafka property holds a secret that must never be printed.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "key.pem",
        "sasl.oauthbearer.config",
    ]
    .iter()
    .any(|s| key.contains(s))
}

impl Config {
    /// A copy safe to print or expose: passwords and secret properties replaced by `***`.
    pub fn masked(&self) -> Config {
        let mut c = self.clone();
        c.redis.url = mask_url(&c.redis.url);
        c.model.url = mask_url(&c.model.url);
        c.ingest.url = mask_url(&c.ingest.url);
        c.tracing.otlp_endpoint = mask_url(&c.tracing.otlp_endpoint);
        c.tracing.otlp_traces_endpoint = mask_url(&c.tracing.otlp_traces_endpoint);
        for secret in [
            &mut c.admin.token,
            &mut c.ingest.password,
            &mut c.ingest.api_key,
        ] {
            if secret.is_some() {
                *secret = Some("***".to_string());
            }
        }
        for (key, value) in c
            .kafka
            .client
            .iter_mut()
            .chain(c.kafka.consumer.iter_mut())
            .chain(c.kafka.producer.iter_mut())
        {
            if is_secret_key(key) {
                *value = "***".to_string();
            }
        }
        c
    }
}
