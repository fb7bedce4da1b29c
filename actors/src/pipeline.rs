//! Starting and stopping the whole actor tree.
//!
//! ```text
//! Pipeline
//! ├── DlqActor                      (one per process, on its own thread)
//! └── ConsumerGroup                 (own thread: consumer, rebalances)
//!     └── PartitionActor × assigned (spread over `pipeline.workers` threads)
//!         └── lookup → enrich → infer → emit   (StageActor each, same thread as the partition)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::Producer as _;

use crate::clients::aws::CredentialsProvider;
use crate::clients::breaker::CircuitBreaker;
use crate::clients::model::ModelClient;
use crate::clients::redis::create_pool;
use crate::clients::zip_cache::ZipCache;
use crate::config::{Config, Delivery, Millis};
use crate::deps::Deps;
use crate::dlq::DlqActor;
use crate::error::ClientError;
use crate::group::{ConsumerGroup, GroupShared, Shutdown};
use crate::kafka::auth::{AuthContext, MskAuth};
use crate::kafka::client::{pipeline_producer, transactional_id, transactional_producer};
use crate::kafka::produce::create_producer;
use crate::kafka::transaction::Transactions;
use crate::partition::{Control, ControlError, DrainReport};
use crate::stats::Stats;
use crate::status::{Policies, StatusBoard};
use crate::trace::Sampling;

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Kafka producer could not be created (bad `[kafka.client]` property, …).
    #[error("cannot create the Kafka producer: {0}")]
    Producer(#[from] rdkafka::error::KafkaError),
    /// The Redis pool could not be created (bad `redis.url`).
    #[error("{0}")]
    Redis(#[from] crate::error::ClientError),
    /// `features.set` names a feature set that cannot be read or is not valid.
    #[error("{0}")]
    Features(crate::config::ConfigError),
    /// Exactly-once mode: the producer's transactions could not be initialised (the broker is
    /// unreachable, refuses transactions, or the `transactional.id` is not allowed).
    #[error("cannot initialise Kafka transactions (transactional.id `{id}`): {source}")]
    Transactions {
        /// The producer's `transactional.id`.
        id: String,
        /// The broker's or librdkafka's answer.
        source: rdkafka::error::KafkaError,
    },
}

/// Why an operator's partition command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// This instance does not own the partition (not assigned, or an unknown partition).
    #[error("partition {0} is not assigned to this instance")]
    NotAssigned(i32),
    /// The partition refused it.
    #[error(transparent)]
    Refused(#[from] ControlError),
    /// The partition actor stopped before answering.
    #[error("partition {0} stopped before answering")]
    Gone(i32),
    /// Resolving a timestamp to an offset failed.
    #[error("cannot resolve the timestamp to an offset: {0}")]
    Timestamp(#[source] ResolveError),
}

/// Why a timestamp could not be resolved to an offset.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The pipeline's consumer is gone (the pipeline is stopping).
    #[error("the consumer has stopped")]
    ConsumerStopped,
    /// The broker's answer did not name the partition.
    #[error("no answer for the partition")]
    NoAnswer,
    /// The broker did not answer, or refused.
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// What the admin API holds of a running pipeline: partition commands, dependency probes and
/// cache counters. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct PipelineHandle {
    shared: Arc<GroupShared>,
    redis: deadpool_redis::Pool,
    zip_cache: Arc<ZipCache>,
    breaker: Arc<CircuitBreaker>,
    credentials: Arc<CredentialsProvider>,
    config: Arc<Config>,
    probes: Arc<tokio::sync::Mutex<Option<Probed>>>,
}

/// The last answers of the dependency probes: when, Redis's, the model's.
type Probed = (Instant, Result<(), ClientError>, Result<(), ClientError>);

/// How long the answers of the dependency probes are reused.
pub const PROBE_TTL: Duration = Duration::from_secs(1);

impl PipelineHandle {
    /// The configuration the pipeline runs with.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Whether `partition` of the input topic is assigned to this instance.
    pub fn is_assigned(&self, partition: i32) -> bool {
        self.shared
            .partition(&self.config.kafka.input_topic, partition)
            .is_some()
    }

    /// Sends an operator's command to a partition of the input topic.
    pub async fn command(&self, partition: i32, command: Control) -> Result<(), CommandError> {
        let addr = self
            .shared
            .partition(&self.config.kafka.input_topic, partition)
            .ok_or(CommandError::NotAssigned(partition))?;
        addr.send(command)
            .await
            .map_err(|_| CommandError::Gone(partition))?
            .map_err(CommandError::from)
    }

    /// The first offset of a partition of the input topic whose record timestamp is at or after
    /// `timestamp_ms` (the high watermark when there is none). Blocks on the broker: call it
    /// from a blocking thread.
    pub fn offset_for_timestamp(
        &self,
        partition: i32,
        timestamp_ms: i64,
    ) -> Result<i64, CommandError> {
        self.resolve_timestamp(partition, timestamp_ms)
            .map_err(CommandError::Timestamp)
    }

    fn resolve_timestamp(&self, partition: i32, timestamp_ms: i64) -> Result<i64, ResolveError> {
        let topic = &self.config.kafka.input_topic;
        let consumer = self
            .shared
            .consumer()
            .ok_or(ResolveError::ConsumerStopped)?;
        let timeout = Duration::from_secs(10);
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(timestamp_ms))?;
        let found = consumer.offsets_for_times(tpl, timeout)?;
        let offset = found
            .find_partition(topic, partition)
            .map(|p| p.offset())
            .ok_or(ResolveError::NoAnswer)?;
        match offset {
            rdkafka::Offset::Offset(o) if o >= 0 => Ok(o),
            _ => {
                let (_, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
                Ok(high)
            }
        }
    }

    /// Whether Redis and the model answer (`Err` with the reason when not), as `/health/ready`
    /// asks. The answers are reused for [`PROBE_TTL`] and concurrent callers share one probe, so
    /// a flood of readiness requests costs at most one Redis `PING` (on a pooled connection) and
    /// one model ping a second.
    pub async fn probe_dependencies(&self) -> (Result<(), ClientError>, Result<(), ClientError>) {
        let mut last = self.probes.lock().await;
        if let Some((at, redis, model)) = last.as_ref() {
            if at.elapsed() < PROBE_TTL {
                return (redis.clone(), model.clone());
            }
        }
        let (redis, model) = futures::join!(self.ping_redis(), self.ping_model());
        *last = Some((Instant::now(), redis.clone(), model.clone()));
        (redis, model)
    }

    /// `PING`s Redis on a pooled connection (given back to the pool afterwards).
    pub async fn ping_redis(&self) -> Result<(), ClientError> {
        let timeout = self
            .config
            .redis
            .timeout_ms
            .get()
            .min(Duration::from_secs(1));
        let ping = async {
            let mut conn = self
                .redis
                .get()
                .await
                .map_err(|e| ClientError::transient(format!("redis: cannot connect: {e}")))?;
            deadpool_redis::redis::cmd("PING")
                .query_async::<String>(&mut *conn)
                .await
                .map(|_| ())
                .map_err(|e| ClientError::transient(format!("redis: {e}")))
        };
        tokio::time::timeout(timeout, ping)
            .await
            .map_err(|_| ClientError::transient("redis: PING timed out"))?
    }

    /// `GET /ping` of the model (on the calling thread's runtime).
    pub async fn ping_model(&self) -> Result<(), ClientError> {
        let mut cfg = self.config.model.clone();
        cfg.timeout_ms = cfg.timeout_ms.min(Millis(1000));
        ModelClient::new(&cfg, self.breaker.clone(), self.credentials.clone())
            .ping()
            .await
    }

    /// ZIP look-ups answered by the in-process cache and those that went to Redis.
    pub fn zip_cache_hits_and_misses(&self) -> (u64, u64) {
        self.zip_cache.hits_and_misses()
    }
}

/// A running pipeline.
pub struct Pipeline {
    group: Addr<ConsumerGroup>,
    dlq: Addr<DlqActor>,
    shared: Arc<GroupShared>,
    producer: crate::kafka::produce::Producer,
    stats: Arc<Stats>,
    status: Arc<StatusBoard>,
    fatal: tokio::sync::watch::Receiver<Option<String>>,
    arbiters: Vec<Arbiter>,
    handle: PipelineHandle,
}

impl Pipeline {
    /// Starts the actor tree; must be called inside a running actix `System`.
    pub fn start(config: Arc<Config>) -> Result<Pipeline, StartError> {
        Self::start_inner(
            config,
            #[cfg(feature = "fault-injection")]
            Arc::default(),
        )
    }

    /// Starts with fault-injection hooks (tests arm them).
    #[cfg(feature = "fault-injection")]
    pub fn start_with_hooks(
        config: Arc<Config>,
        hooks: Arc<crate::fault_injection::FaultHooks>,
    ) -> Result<Pipeline, StartError> {
        Self::start_inner(config, hooks)
    }

    fn start_inner(
        config: Arc<Config>,
        #[cfg(feature = "fault-injection")] hooks: Arc<crate::fault_injection::FaultHooks>,
    ) -> Result<Pipeline, StartError> {
        let stats = Arc::new(Stats::default());
        let credentials = Arc::new(CredentialsProvider::default());
        let auth = AuthContext::new(MskAuth::for_config(&config.kafka, credentials.clone()));
        let (producer, txn) = match config.kafka.delivery {
            Delivery::AtLeastOnce => (
                create_producer(&pipeline_producer(&config.kafka), auth)?,
                None,
            ),
            Delivery::ExactlyOnce => {
                let id = transactional_id(&config.kafka);
                let client = transactional_producer(&config.kafka, &id);
                let make = move || create_producer(&client, auth.clone());
                let txn = Transactions::start(Box::new(make)).map_err(|source| {
                    StartError::Transactions {
                        id: id.clone(),
                        source,
                    }
                })?;
                tracing::info!(transactional_id = %id, "exactly-once delivery: transactions ready");
                (txn.producer(), Some(txn))
            }
        };
        let redis = create_pool(&config.redis)?;
        let zip_cache = Arc::new(ZipCache::new(
            config.redis.zip_cache_capacity,
            config.redis.zip_cache_ttl_ms.get(),
        ));

        let dlq_arbiter = Arbiter::new();
        let dlq = {
            let producer = producer.clone();
            let topic = config.kafka.dlq_topic.clone();
            let stats = stats.clone();
            let mailbox = config.pipeline.mailbox_capacity.max(64);
            let txn = txn.clone();
            DlqActor::start_in_arbiter(&dlq_arbiter.handle(), move |_| {
                DlqActor::new(producer, &topic, stats, mailbox).transactional(txn)
            })
        };
        let n_workers = match config.pipeline.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let workers: Vec<Arbiter> = (0..n_workers).map(|_| Arbiter::new()).collect();
        let breaker = Arc::new(CircuitBreaker::new(
            config.model.circuit_failure_threshold,
            config.model.circuit_open_ms.get(),
        ));
        let status = Arc::new(StatusBoard::new(
            breaker.clone(),
            Policies {
                model_unavailable: config.model.on_unavailable.as_str(),
                redis_unavailable: config.redis.on_unavailable.as_str(),
            },
        ));
        let deps = Deps {
            config: config.clone(),
            producer: producer.clone(),
            dlq: dlq.clone(),
            redis: redis.clone(),
            zip_cache: zip_cache.clone(),
            stats: stats.clone(),
            breaker: breaker.clone(),
            credentials: credentials.clone(),
            status: status.clone(),
            txn,
            #[cfg(feature = "fault-injection")]
            hooks,
            sampling: Sampling::from_config(&config.tracing),
            feature_set: config
                .features
                .feature_set()
                .map_err(StartError::Features)?
                .map(Arc::new),
        };
        let group_arbiter = Arbiter::new();
        let group = ConsumerGroup::new(deps, workers.iter().map(Arbiter::handle).collect());
        let shared = group.shared();
        let fatal = group.fatal();
        let group = ConsumerGroup::start_in_arbiter(&group_arbiter.handle(), move |_| group);
        let mut arbiters = workers;
        arbiters.push(dlq_arbiter);
        arbiters.push(group_arbiter);
        let handle = PipelineHandle {
            shared: shared.clone(),
            redis,
            zip_cache,
            breaker,
            credentials,
            config,
            probes: Arc::default(),
        };
        Ok(Pipeline {
            group,
            dlq,
            shared,
            handle,
            producer,
            stats,
            status,
            fatal,
            arbiters,
        })
    }

    /// The handle the admin API uses (partition commands, probes).
    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Per-partition state, the circuit breaker and the root's restarts.
    pub fn status(&self) -> Arc<StatusBoard> {
        self.status.clone()
    }

    /// Resolves when the root supervisor gives up, with the reason: its restart intensity was
    /// exceeded, or a child with restart policy "never" (the consumer-group or dead-letter actor)
    /// died. The process should then exit non-zero so its orchestrator restarts it.
    pub fn failed(&self) -> impl std::future::Future<Output = String> + 'static {
        let mut rx = self.fatal.clone();
        let group = self.group.clone();
        let dlq = self.dlq.clone();
        async move {
            let mut tick = actix_rt::time::interval(Duration::from_secs(1));
            loop {
                if let Some(reason) = rx.borrow_and_update().clone() {
                    return reason;
                }
                if !group.connected() {
                    return "the consumer-group actor died".to_string();
                }
                if !dlq.connected() {
                    return "the dead-letter actor died".to_string();
                }
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            // The group stopped (clean shutdown): nothing can fail any more.
                            std::future::pending::<()>().await;
                        }
                    }
                    _ = tick.tick() => {}
                }
            }
        }
    }

    /// Partitions currently assigned to this instance.
    pub fn assigned_partitions(&self) -> usize {
        self.shared.assigned()
    }

    /// Clean stop: stop reading, finish in-flight records (within `pipeline.drain_timeout_ms`),
    /// commit, leave the group, flush the producer. After a clean stop nothing is read twice.
    pub async fn shutdown(self) -> Vec<DrainReport> {
        let reports = self.group.send(Shutdown).await.unwrap_or_default();
        let producer = self.producer.clone();
        // Outputs are acknowledged before offsets are committed, so this flush only covers
        // writes of records that did not finish in time.
        let _ =
            actix_rt::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        for a in &self.arbiters {
            a.stop();
        }
        reports
    }
}
