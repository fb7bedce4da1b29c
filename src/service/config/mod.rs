//! The whole configuration of `clickpipe`: the pipeline's sections (`clickpipe_actors::config`:
//! `[kafka]`, `[redis]`, `[model]`, `[features]`, `[pipeline]`, `[supervision]`, `[tracing]`)
//! and the service's own ([`sections`]: `[admin]`, `[model_server]`, `[loadgen]`, `[log]`,
//! `[metrics]`; [`ingest`]: `[ingest]`). Loading and layering is [`super::settings`].
//!
//! Every struct denies unknown keys, so a typo in a config file stops start-up with the key named.

pub mod ingest;
pub mod s3;
pub mod sections;

use clickpipe_actors::config::{mask_url, ConfigError};

pub use ingest::{IngestConfig, PitMode, StartFrom};
pub use s3::{ObjectFormat, S3Config};
pub use sections::{
    AdminConfig, LoadgenConfig, LogConfig, LogFormat, MetricsConfig, ModelServerConfig,
};

clickpipe_actors::pipeline_sections! {
    /// The whole configuration (the sections in the order `/config` shows them).
    pub struct Config {
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
    }
    after_tracing {
        /// The Elasticsearch / OpenSearch tailer (`clickpipe ingest`).
        #[serde(default)]
        pub ingest: IngestConfig,
        /// The S3 sink (`clickpipe sink s3`).
        #[serde(default)]
        pub s3: S3Config,
    }
}

impl Config {
    /// Checks every value and every relation between values; the first problem is returned with the
    /// key that holds it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pipeline().validate()?;
        self.admin.validate()?;
        self.metrics.validate()?;
        self.ingest.validate()?;
        self.s3.validate()?;
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
