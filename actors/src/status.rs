//! The state of the pipeline as the admin API shows it: one entry per assigned partition, kept up
//! to date by the partition actors, plus the model circuit breaker and the root's restart count.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;

use crate::clients::breaker::CircuitBreaker;

/// The lifecycle state of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartitionState {
    /// Reading and processing.
    Running,
    /// Not reading: backpressure or an unavailable dependency (see `paused_reason`).
    Paused,
    /// Stages are being restarted after a failure.
    Restarting,
    /// Finishing in-flight work before it is released (stop or revoke).
    Draining,
    /// Restart intensity exceeded: paused until the process restarts (see `failure`).
    Failed,
}

/// What the admin API shows for one partition.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartitionStatus {
    /// Input topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Lifecycle state.
    pub state: PartitionState,
    /// The next offset the group will read after a restart (committed or about to be).
    pub committed_offset: Option<i64>,
    /// One past the last offset read.
    pub position: Option<i64>,
    /// The partition's high watermark (one past its last record), from the consumer's statistics
    /// (every `statistics.interval.ms`, default 1 s).
    pub high_watermark: Option<i64>,
    /// Records not yet finished and committed: `high_watermark - committed_offset`.
    pub lag: Option<i64>,
    /// Records read and not yet finished.
    pub in_flight: usize,
    /// Whether the partition is paused at the consumer.
    pub paused: bool,
    /// Why it is paused or held (backpressure, model unavailable, Redis unavailable).
    pub paused_reason: Option<String>,
    /// Restarts of its stages since it was assigned.
    pub restarts: u64,
    /// Restarts within the current supervision window.
    pub restarts_in_window: u32,
    /// Why it failed, when it did.
    pub failure: Option<String>,
}

/// The failure policies in force, shown with the status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Policies {
    /// `model.on_unavailable`.
    #[schema(value_type = String)]
    pub model_unavailable: &'static str,
    /// `redis.on_unavailable`.
    #[schema(value_type = String)]
    pub redis_unavailable: &'static str,
}

/// Shared, process-wide status.
#[derive(Debug)]
pub struct StatusBoard {
    partitions: RwLock<BTreeMap<(String, i32), PartitionStatus>>,
    high_watermarks: RwLock<BTreeMap<(String, i32), i64>>,
    /// The model circuit breaker.
    pub breaker: Arc<CircuitBreaker>,
    /// The failure policies.
    pub policies: Policies,
    root_restarts: RwLock<u32>,
}

impl StatusBoard {
    /// An empty board around the process's circuit breaker.
    pub fn new(breaker: Arc<CircuitBreaker>, policies: Policies) -> Self {
        StatusBoard {
            partitions: RwLock::new(BTreeMap::new()),
            high_watermarks: RwLock::new(BTreeMap::new()),
            breaker,
            policies,
            root_restarts: RwLock::new(0),
        }
    }

    /// Publishes a partition's status.
    pub fn publish(&self, status: PartitionStatus) {
        self.partitions
            .write()
            .insert((status.topic.clone(), status.partition), status);
    }

    /// Forgets a partition (revoked or stopped).
    pub fn remove(&self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        self.partitions.write().remove(&key);
        self.high_watermarks.write().remove(&key);
    }

    /// Every assigned partition, in order, with its high watermark and lag when known.
    pub fn partitions(&self) -> Vec<PartitionStatus> {
        let hw = self.high_watermarks.read();
        self.partitions
            .read()
            .values()
            .cloned()
            .map(|mut p| {
                p.high_watermark = hw.get(&(p.topic.clone(), p.partition)).copied();
                let done = p.committed_offset.or(p.position);
                p.lag = match (p.high_watermark, done) {
                    (Some(hi), Some(done)) => Some((hi - done).max(0)),
                    (Some(hi), None) => Some(hi.max(0)),
                    _ => None,
                };
                p
            })
            .collect()
    }

    /// Notes a partition's high watermark (from the consumer's statistics).
    pub fn set_high_watermark(&self, topic: &str, partition: i32, high_watermark: i64) {
        self.high_watermarks
            .write()
            .insert((topic.to_string(), partition), high_watermark);
    }

    /// Sets the root's restarts within its window.
    pub fn set_root_restarts(&self, n: u32) {
        *self.root_restarts.write() = n;
    }

    /// The root's restarts within its window.
    pub fn root_restarts(&self) -> u32 {
        *self.root_restarts.read()
    }

    /// Reasons the instance is not ready (empty when it is): failed partitions.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        self.partitions
            .read()
            .values()
            .filter(|p| p.state == PartitionState::Failed)
            .map(|p| {
                format!(
                    "partition {} failed: {}",
                    p.partition,
                    p.failure.as_deref().unwrap_or("unknown")
                )
            })
            .collect()
    }
}
