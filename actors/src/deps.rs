//! What every partition needs, built once at start-up and shared: config, the producer, the
//! dead-letter actor, the Redis pool, the ZIP cache and the counters. Passed down, never global.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::Addr;
use deadpool_redis::Pool;

use crate::clients::aws::CredentialsProvider;
use crate::clients::breaker::CircuitBreaker;
use crate::clients::zip_cache::ZipCache;
use crate::config::Config;
use crate::dlq::DlqActor;
use crate::stats::Stats;
use crate::status::StatusBoard;
use crate::trace::Sampling;

/// Shared dependencies of the pipeline's actors.
#[derive(Clone)]
pub struct Deps {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Producer for output records (idempotent; shared by all partitions).
    pub producer: crate::produce::Producer,
    /// The dead-letter actor.
    pub dlq: Addr<DlqActor>,
    /// Redis connection pool.
    pub redis: Pool,
    /// The process-wide ZIP cache.
    pub zip_cache: Arc<ZipCache>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// The model circuit breaker, shared by all partitions.
    pub breaker: Arc<CircuitBreaker>,
    /// AWS credentials (a SageMaker model), shared by all partitions.
    pub credentials: Arc<CredentialsProvider>,
    /// Per-partition state for the admin API.
    pub status: Arc<StatusBoard>,
    /// Fault injection for tests; inert unless a test arms it.
    pub hooks: Arc<FaultHooks>,
    /// Which records are traced.
    pub sampling: Sampling,
}

/// The `event_type` that makes the enrich stage panic while [`FaultHooks::enrich_panics`] is
/// above zero. Only tests arm it.
pub const PANIC_EVENT_TYPE: &str = "__clickpipe_injected_panic__";

/// Test-only fault injection points. Production never arms them (all counters start at zero).
#[derive(Debug, Default)]
pub struct FaultHooks {
    /// How many more times the enrich stage panics on a batch holding a [`PANIC_EVENT_TYPE`] event.
    pub enrich_panics: AtomicUsize,
}

impl FaultHooks {
    /// Takes one armed panic, if any is left.
    pub fn take_enrich_panic(&self) -> bool {
        self.enrich_panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}
