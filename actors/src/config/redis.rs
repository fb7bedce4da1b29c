//! `[redis]`: the Redis (ElastiCache) connection, key layout, ZIP cache and outage policy.

use serde::{Deserialize, Serialize};

use super::{bad, positive, ConfigError, Millis};

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
    pub timeout_ms: Millis,
    /// How long a ZIP lookup (hit or miss) stays in the in-process cache, in milliseconds.
    pub zip_cache_ttl_ms: Millis,
    /// Maximum number of ZIPs in the in-process cache; 0 disables the cache.
    pub zip_cache_capacity: usize,
    /// With `on_unavailable = "dead_letter"`: how long a failing lookup is retried before its
    /// records are dead-lettered as `lookup_failed`, in milliseconds.
    pub retry_budget_ms: Millis,
    /// What to do while Redis is unavailable: `pause` (retry with backoff, the partition pauses;
    /// nothing is dead-lettered) or `dead_letter` (after `retry_budget_ms`).
    pub on_unavailable: UnavailablePolicy,
    /// Where ZIP data comes from when Redis does not have it or cannot answer: `none`, or
    /// `dynamodb` (the `[dynamodb]` table).
    #[serde(default)]
    pub fallback: LookupFallback,
}

/// The lookup fallback (`redis.fallback`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupFallback {
    /// Redis only.
    #[default]
    None,
    /// ZIP data Redis does not have, or cannot serve within `retry_budget_ms`, is read from the
    /// DynamoDB table `dynamodb.table`, cached, and written back to Redis.
    Dynamodb,
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

impl RedisConfig {
    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = self;
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
        positive("redis.pool_size", r.pool_size)?;
        positive("redis.timeout_ms", r.timeout_ms)?;
        if r.zip_prefix.is_empty() {
            return Err(bad("redis.zip_prefix", "must not be empty"));
        }
        if r.session_prefix.is_empty() || r.session_prefix == r.zip_prefix {
            return Err(bad(
                "redis.session_prefix",
                "must be non-empty and differ from redis.zip_prefix",
            ));
        }

        Ok(())
    }
}
