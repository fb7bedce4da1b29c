//! Clients of the services the pipeline calls: Redis (ZIP data and session state) and the model
//! (plain HTTP, or a SageMaker endpoint signed with AWS credentials), and the AWS SDK's shared
//! configuration.

pub mod aws;
pub mod breaker;
#[cfg(feature = "aws")]
pub mod dynamo;
/// Without the `aws` feature: no table (configuration refuses `redis.fallback = "dynamodb"`).
#[cfg(not(feature = "aws"))]
#[path = "dynamo_disabled.rs"]
pub mod dynamo;
pub mod model;
pub mod redis;
#[cfg(feature = "aws")]
pub mod sdk;
pub mod zip_cache;

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter: a random wait in `[0, min(max, initial · 2^attempt)]`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let cap = initial
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(max);
    let ms = cap.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(0..=ms))
}
