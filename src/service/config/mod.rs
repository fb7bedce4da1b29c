//! The whole configuration of `clickpipe`: the pipeline's sections (`clickpipe_actors::config`:
//! `[kafka]`, `[redis]`, `[model]`, `[features]`, `[pipeline]`, `[supervision]`, `[tracing]`)
//! and the service's own ([`sections`]: `[admin]`, `[model_server]`, `[loadgen]`, `[log]`,
//! `[metrics]`; [`ingest`]: `[ingest]`). Loading and layering is [`super::settings`].
//!
//! Every struct denies unknown keys, so a typo in a config file stops start-up with the key named.

pub mod ingest;
pub mod sections;

use clickpipe_actors::config::{
    mask_url, ConfigError, FeaturesConfig, KafkaConfig, ModelConfig, PipelineConfig, RedisConfig,
    SupervisionConfig, TracingConfig,
};
use serde::{Deserialize, Serialize};

pub use ingest::{IngestConfig, PitMode, StartFrom};
pub use sections::{
    AdminConfig, LoadgenConfig, LogConfig, LogFormat, MetricsConfig, ModelServerConfig,
};

/// The whole configuration (the sections in the order `/config` shows them).
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

impl Config {
    /// The pipeline's part, what `clickpipe_actors::pipeline::Pipeline` runs with.
    pub fn pipeline(&self) -> clickpipe_actors::config::Config {
        clickpipe_actors::config::Config {
            kafka: self.kafka.clone(),
            redis: self.redis.clone(),
            model: self.model.clone(),
            features: self.features.clone(),
            pipeline: self.pipeline.clone(),
            supervision: self.supervision.clone(),
            tracing: self.tracing.clone(),
        }
    }

    /// Checks every value and every relation between values; the first problem is returned with the
    /// key that holds it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pipeline().validate()?;
        self.admin.validate()?;
        self.metrics.validate()?;
        self.ingest.validate()?;
        self.model_server.validate()?;
        self.loadgen.validate()?;
        self.log.validate()
    }

    /// A copy safe to print or expose: passwords, tokens and secret properties replaced by `***`.
    pub fn masked(&self) -> Config {
        let p = self.pipeline().masked();
        let mut c = self.clone();
        (c.kafka, c.redis, c.model, c.tracing) = (p.kafka, p.redis, p.model, p.tracing);
        c.ingest.url = mask_url(&c.ingest.url);
        for secret in [
            &mut c.admin.token,
            &mut c.ingest.password,
            &mut c.ingest.api_key,
        ] {
            if secret.is_some() {
                *secret = Some("***".to_string());
            }
        }
        c
    }
}
