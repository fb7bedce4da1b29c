//! What the sink did, for its `/status` and `/metrics` ([`super::http`]): counters per kept
//! topic, the backlog not yet in S3, the store's health and the lag from a record's append to
//! the commit after its object.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use clickpipe_actors::metrics::Histogram;

use super::table::Source;

/// Upper bounds of the lag buckets, seconds: 100 ms … 1 h.
pub const LAG_BUCKETS_S: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Counters of one kept topic.
#[derive(Debug, Default)]
pub struct TopicCounters {
    /// Records read.
    pub read: AtomicU64,
    /// Records in objects whose offsets are committed.
    pub written: AtomicU64,
    /// Objects written (and committed after).
    pub objects: AtomicU64,
    /// Bytes of those objects.
    pub bytes: AtomicU64,
}

/// The sink's counters and gauges, shared with its HTTP endpoint.
#[derive(Debug)]
pub struct SinkStats {
    predictions: TopicCounters,
    dead_letters: TopicCounters,
    /// Object writes that failed (each retry counts).
    pub put_failures: AtomicU64,
    /// Offset commits that failed (each retry counts).
    pub commit_failures: AtomicU64,
    /// Records read and not yet committed after their object (held or being written).
    pub backlog_records: AtomicU64,
    /// Epoch ms at which the oldest of those was read; 0 when there are none.
    pub backlog_since_ms: AtomicI64,
    /// Partitions assigned to this sink.
    pub partitions: AtomicU64,
    /// Epoch ms of the last commit after a flush; 0 before the first.
    pub last_flush_ms: AtomicI64,
    /// The store's last attempt failed (and none succeeded since).
    pub store_failing: AtomicBool,
    /// The last failure, store or commit.
    pub last_error: Mutex<Option<String>>,
    /// Seconds from a record's append to the commit after its object.
    pub lag: Histogram,
}

impl Default for SinkStats {
    fn default() -> Self {
        SinkStats {
            predictions: TopicCounters::default(),
            dead_letters: TopicCounters::default(),
            put_failures: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            backlog_records: AtomicU64::new(0),
            backlog_since_ms: AtomicI64::new(0),
            partitions: AtomicU64::new(0),
            last_flush_ms: AtomicI64::new(0),
            store_failing: AtomicBool::new(false),
            last_error: Mutex::new(None),
            lag: Histogram::new(LAG_BUCKETS_S),
        }
    }
}

impl SinkStats {
    /// The counters of `source`'s topic.
    pub fn topic(&self, source: Source) -> &TopicCounters {
        match source {
            Source::Predictions => &self.predictions,
            Source::DeadLetters => &self.dead_letters,
        }
    }

    /// A failed object write.
    pub fn put_failed(&self, error: &str) {
        self.put_failures.fetch_add(1, Ordering::Relaxed);
        self.store_failing.store(true, Ordering::Relaxed);
        *self.last_error.lock() = Some(format!("writing an object: {error}"));
    }

    /// A successful object write.
    pub fn put_succeeded(&self) {
        self.store_failing.store(false, Ordering::Relaxed);
    }

    /// A failed offset commit.
    pub fn commit_failed(&self, error: &str) {
        self.commit_failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(format!("committing: {error}"));
    }

    /// Seconds the oldest record not yet in S3 has waited at `now_ms` (0 with none).
    pub fn backlog_age_s(&self, now_ms: i64) -> f64 {
        match self.backlog_since_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            since => (now_ms - since).max(0) as f64 / 1000.0,
        }
    }
}
