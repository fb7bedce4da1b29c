//! Process-wide counters, shared by every actor through an `Arc` (no globals). The admin API and the
//! run summary read them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::error::{ErrorKind, Stage};
use crate::metrics::Histogram;

/// One value per stage of a partition, in pipeline order.
#[derive(Debug, Default)]
pub struct PerStage<T> {
    /// Redis look-up (ZIP data and the session script).
    pub lookup: T,
    /// Feature computation.
    pub enrich: T,
    /// Model call, retries included.
    pub infer: T,
    /// Producing the outputs until the broker acknowledged them.
    pub emit: T,
}

impl<T> PerStage<T> {
    /// The value of `stage` (None for the stages outside a partition: decode, ingest).
    pub fn get(&self, stage: Stage) -> Option<&T> {
        match stage {
            Stage::Lookup => Some(&self.lookup),
            Stage::Enrich => Some(&self.enrich),
            Stage::Infer => Some(&self.infer),
            Stage::Emit => Some(&self.emit),
            Stage::Decode | Stage::Ingest => None,
        }
    }

    /// Every stage with its value, in pipeline order.
    pub fn all(&self) -> [(Stage, &T); 4] {
        [
            (Stage::Lookup, &self.lookup),
            (Stage::Enrich, &self.enrich),
            (Stage::Infer, &self.infer),
            (Stage::Emit, &self.emit),
        ]
    }
}

/// Time per batch in each stage, seconds.
pub type StageTimes = PerStage<Histogram>;

/// Records waiting in each stage's queue (all partitions): the mailbox depth.
pub type StageQueues = PerStage<AtomicI64>;

/// Counters and histograms of a running pipeline.
#[derive(Debug)]
pub struct Stats {
    /// Records read from the input topic.
    pub records_in: AtomicU64,
    /// Output records acknowledged by the broker.
    pub outputs: AtomicU64,
    /// Dead letters acknowledged, by kind.
    pub invalid_event: AtomicU64,
    /// Dead letters of kind `lookup_failed`.
    pub lookup_failed: AtomicU64,
    /// Dead letters of kind `inference_failed`.
    pub inference_failed: AtomicU64,
    /// Dead letters of kind `output_failed`.
    pub output_failed: AtomicU64,
    /// Model requests sent (batches, successful or not).
    pub model_batches: AtomicU64,
    /// Events scored by the model.
    pub model_events: AtomicU64,
    /// Events per model request.
    pub model_batch_size: Histogram,
    /// Input record timestamp → its output acknowledged by the broker, seconds (includes the
    /// time before clickpipe read the record).
    pub end_to_end: Histogram,
    /// Record read by clickpipe → its output acknowledged, seconds.
    pub processing: Histogram,
    /// Time per batch in each stage.
    pub stages: StageTimes,
    /// Records queued in each stage.
    pub queued: StageQueues,
    /// Restarts of partitions' stages (caught failures).
    pub restarts: AtomicU64,
    /// Online-store writes (`[[materialize]]`) given up after the Redis retry budget.
    pub store_failures: AtomicU64,
    /// Records looked up degraded (Redis unavailable, `redis.fallback` set).
    pub lookup_degraded: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            records_in: AtomicU64::new(0),
            outputs: AtomicU64::new(0),
            invalid_event: AtomicU64::new(0),
            lookup_failed: AtomicU64::new(0),
            inference_failed: AtomicU64::new(0),
            output_failed: AtomicU64::new(0),
            model_batches: AtomicU64::new(0),
            model_events: AtomicU64::new(0),
            model_batch_size: Histogram::sizes(),
            end_to_end: Histogram::latency(),
            processing: Histogram::latency(),
            stages: StageTimes {
                lookup: Histogram::latency(),
                enrich: Histogram::latency(),
                infer: Histogram::latency(),
                emit: Histogram::latency(),
            },
            queued: StageQueues::default(),
            restarts: AtomicU64::new(0),
            store_failures: AtomicU64::new(0),
            lookup_degraded: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// The counter of dead letters of `kind`.
    pub fn dead_letters(&self, kind: ErrorKind) -> &AtomicU64 {
        match kind {
            ErrorKind::InvalidEvent => &self.invalid_event,
            ErrorKind::LookupFailed => &self.lookup_failed,
            ErrorKind::InferenceFailed => &self.inference_failed,
            ErrorKind::OutputFailed => &self.output_failed,
        }
    }

    /// All dead letters.
    pub fn dead_letters_total(&self) -> u64 {
        [
            ErrorKind::InvalidEvent,
            ErrorKind::LookupFailed,
            ErrorKind::InferenceFailed,
            ErrorKind::OutputFailed,
        ]
        .iter()
        .map(|k| self.dead_letters(*k).load(Ordering::Relaxed))
        .sum()
    }
}
