//! What every partition needs, built once at start-up and shared: config, the producer, the
//! dead-letter actor, the Redis pool, the ZIP cache and the counters. Passed down, never global.

use std::sync::Arc;

use actix::Addr;
use deadpool_redis::Pool;
use rdkafka::producer::FutureProducer;

use crate::clients::zip_cache::ZipCache;
use crate::config::Config;
use crate::dlq::DlqActor;
use crate::stats::Stats;

/// Shared dependencies of the pipeline's actors.
#[derive(Clone)]
pub struct Deps {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Producer for output records (idempotent; shared by all partitions).
    pub producer: FutureProducer,
    /// The dead-letter actor.
    pub dlq: Addr<DlqActor>,
    /// Redis connection pool.
    pub redis: Pool,
    /// The process-wide ZIP cache.
    pub zip_cache: Arc<ZipCache>,
    /// Counters.
    pub stats: Arc<Stats>,
}
