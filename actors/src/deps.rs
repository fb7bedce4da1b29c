//! What every partition needs, built once at start-up and shared: config, the producer, the
//! dead-letter actor, the Redis pool, the ZIP cache and the counters. Passed down, never global.

use std::sync::Arc;

use actix::Addr;
use deadpool_redis::Pool;

use crate::clients::aws::CredentialsProvider;
use crate::clients::breaker::CircuitBreaker;
use crate::clients::zip_cache::ZipCache;
use crate::config::Config;
use crate::dlq::DlqActor;
use crate::kafka::transaction::Transactions;
use crate::stats::Stats;
use crate::status::StatusBoard;
use crate::trace::Sampling;

/// Shared dependencies of the pipeline's actors.
#[derive(Clone)]
pub struct Deps {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Producer for output records (idempotent; shared by all partitions).
    pub producer: crate::kafka::produce::Producer,
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
    /// Exactly-once mode: the transactions every output and dead letter is written in.
    pub txn: Option<Arc<Transactions>>,
    /// Fault injection for tests; inert unless a test arms it.
    #[cfg(feature = "fault-injection")]
    pub hooks: Arc<crate::fault_injection::FaultHooks>,
    /// Which records are traced.
    pub sampling: Sampling,
    /// A declared feature set (`features.set`); None: the built-in features.
    pub feature_set: Option<Arc<crate::feature_set::FeatureSet>>,
}
