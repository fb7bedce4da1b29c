//! The typed configuration of the pipeline, one file per section, each with its own `validate()`.
//! Loading and layering (compiled-in defaults, a TOML file, `CLICKPIPE__SECTION__KEY` environment
//! variables) lives in the binary; this module only defines the shape, the defaults a field falls
//! back to, and the checks run once at start-up.
//!
//! Every struct denies unknown keys, so a typo in a config file stops start-up with the key named.

mod dynamodb;
mod kafka;
mod model;
mod pipeline;
mod redis;
mod tracing;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use dynamodb::DynamoConfig;
pub use kafka::{
    Delivery, GroupProtocol, KafkaAuth, KafkaConfig, CLASSIC_HEARTBEAT_INTERVAL_MS,
    CLASSIC_SESSION_TIMEOUT_MS, DEFAULT_TRANSACTION_INTERVAL_MS, MANAGED_CLIENT_KEYS,
};
pub use model::{ModelConfig, ModelKind};
pub use pipeline::{FeaturesConfig, PipelineConfig, SupervisionConfig};
pub use redis::{LookupFallback, RedisConfig, UnavailablePolicy};
pub use tracing::{TracingConfig, SAMPLERS};

/// The widest event-time window (`features.max_event_age_s`, `features.max_event_lead_s`) a
/// config may set on either side of now (100 years).
pub const MAX_WINDOW_S: u64 = 100 * 365 * 24 * 3600;

/// Declares a configuration struct made of the pipeline's sections (`kafka`, `redis`, `model`,
/// `features`, `pipeline`, `supervision`, `tracing`, in this order and with these docs) and the
/// caller's own: the fields in the braces stand between `supervision` and `tracing`, those in the
/// optional `after_tracing { … }` after `tracing`. The struct denies unknown keys (every section
/// is a plain field, so an error names the full key, e.g. `model.timeout_ms`) and gets a
/// `pipeline()` method returning the pipeline's sections as a [`Config`].
///
/// The one place the pipeline's sections are listed: [`Config`] is declared with it, and so is
/// the service's configuration, which adds its own sections around them.
#[macro_export]
macro_rules! pipeline_sections {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fattr:meta])* $fvis:vis $field:ident: $ty:ty,)*
        }
        $(after_tracing {
            $($(#[$aattr:meta])* $avis:vis $after:ident: $aty:ty,)*
        })?
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, ::serde::Deserialize, ::serde::Serialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            /// Kafka connection, topics and librdkafka pass-through settings.
            pub kafka: $crate::config::KafkaConfig,
            /// Redis (ElastiCache) connection and key layout.
            pub redis: $crate::config::RedisConfig,
            /// The model endpoint and how it is called.
            pub model: $crate::config::ModelConfig,
            /// Feature computation settings.
            pub features: $crate::config::FeaturesConfig,
            /// Actor pipeline sizing: workers, batches, mailboxes, in-flight bound.
            pub pipeline: $crate::config::PipelineConfig,
            /// Restart intensity and backoff of the supervisors.
            pub supervision: $crate::config::SupervisionConfig,
            $($(#[$fattr])* $fvis $field: $ty,)*
            /// OpenTelemetry trace export (OTLP/HTTP to a collector such as ADOT, then X-Ray).
            #[serde(default)]
            pub tracing: $crate::config::TracingConfig,
            /// The DynamoDB table ZIP data falls back to (`redis.fallback = "dynamodb"`).
            #[serde(default)]
            pub dynamodb: $crate::config::DynamoConfig,
            $($($(#[$aattr])* $avis $after: $aty,)*)?
        }

        impl $name {
            /// The pipeline's sections, what `clickpipe_actors::pipeline::Pipeline` runs with.
            pub fn pipeline(&self) -> $crate::config::Config {
                $crate::config::Config {
                    kafka: self.kafka.clone(),
                    redis: self.redis.clone(),
                    model: self.model.clone(),
                    features: self.features.clone(),
                    pipeline: self.pipeline.clone(),
                    supervision: self.supervision.clone(),
                    tracing: self.tracing.clone(),
                    dynamodb: self.dynamodb.clone(),
                }
            }
        }
    };
}

pipeline_sections! {
    /// The pipeline's configuration: the sections the actors read. The service's own sections
    /// (admin API, logging, EMF, the tailer, the tools) are the binary's
    /// (`clickpipe::service::config`).
    pub struct Config {}
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

/// A duration written in milliseconds (the `*_ms` keys): a whole number in the file, a
/// [`Duration`] to the code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// As a duration.
    pub fn get(self) -> Duration {
        Duration::from_millis(self.0)
    }

    /// The number of milliseconds.
    pub fn ms(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Refuses a value below another key's (`{value} is below {other} ({limit})`).
pub fn not_below<T: PartialOrd + std::fmt::Display>(
    (key, value): (&str, T),
    (other, limit): (&str, T),
) -> Result<(), ConfigError> {
    if value < limit {
        return Err(bad(key, format!("{value} is below {other} ({limit})")));
    }
    Ok(())
}

/// Refuses a zero `value` of `key`.
pub fn positive<T: PartialEq + Default>(key: &str, value: T) -> Result<(), ConfigError> {
    if value == T::default() {
        return Err(bad(key, "must be greater than 0"));
    }
    Ok(())
}

/// Refuses the first of `(key, value)` whose value is empty or only white space
/// (`must not be empty`).
pub fn non_empty(fields: &[(&str, &str)]) -> Result<(), ConfigError> {
    match fields.iter().find(|(_, value)| value.trim().is_empty()) {
        Some((key, _)) => Err(bad(key, "must not be empty")),
        None => Ok(()),
    }
}

/// A [`ConfigError`] for `key`.
pub fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        problem: problem.into(),
    }
}

impl Config {
    /// Checks every value and every relation between values; the first problem is returned with the
    /// key that holds it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.redis.validate()?;
        self.model.validate()?;
        self.supervision.validate()?;
        self.features.validate()?;
        self.pipeline.validate()?;
        self.validate_group_timing()?;
        let fallback = self.redis.fallback == LookupFallback::Dynamodb;
        if fallback && !cfg!(feature = "aws") {
            return Err(bad(
                "redis.fallback",
                "\"dynamodb\" needs a build with the `aws` feature (on by default)",
            ));
        }
        self.dynamodb.validate(fallback)?;
        self.tracing.validate()
    }

    /// The drain timeout against the consumer's poll interval and session.
    fn validate_group_timing(&self) -> Result<(), ConfigError> {
        let (k, p) = (&self.kafka, &self.pipeline);
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
        if p.drain_timeout_ms.ms() >= poll_ms {
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
        Ok(())
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
        c.tracing.otlp_endpoint = mask_url(&c.tracing.otlp_endpoint);
        c.tracing.otlp_traces_endpoint = mask_url(&c.tracing.otlp_traces_endpoint);
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
